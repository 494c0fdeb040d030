//! Admission control on the invoke path: the global rate limiter (REFERENCE §4).

pub mod rate_limiter;

pub use rate_limiter::RateLimiter;
