//! Small helpers every layer uses and none owns: poison-tolerant lock guards, the one-line
//! error-chain formatter, Jackson-style lenient scalar reading and the OpenAPI schemas of what it
//! accepts. Nothing here knows a domain type.

mod error_chain;
pub mod lenient;
mod locks;
pub mod schema;

pub use error_chain::error_chain;
pub use locks::{lock, read, write};
