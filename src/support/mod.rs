//! Small helpers every layer uses and none owns: poison-tolerant lock guards, the one-line
//! error-chain formatter, Jackson-style lenient scalar reading and the OpenAPI schemas of what it
//! accepts, and the outbound address policy (SSRF defaults) every client that calls out on a
//! user's behalf applies, and W3C trace context. Nothing here knows a domain type.

mod error_chain;
pub mod headers;
mod json_text;
pub mod lenient;
mod locks;
pub mod log_format;
pub mod net_policy;
pub mod schema;
pub mod trace_context;

pub use error_chain::error_chain;
pub use json_text::StringTracker;
pub use locks::{lock, read, write};
