//! Small helpers every layer uses and none owns: poison-tolerant lock guards, the one-line
//! error-chain formatter and Jackson-style lenient scalar reading. Nothing here knows a domain
//! type.

mod error_chain;
mod json_text;
pub mod lenient;
mod locks;

pub use error_chain::error_chain;
pub use json_text::StringTracker;
pub use locks::{lock, read, write};
