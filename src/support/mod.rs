//! Small helpers every layer uses and none owns: poison-tolerant lock guards and the one-line
//! error-chain formatter. Nothing here knows a domain type.

mod error_chain;
mod locks;

pub use error_chain::error_chain;
pub use locks::{lock, read, write};
