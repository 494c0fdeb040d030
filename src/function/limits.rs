//! Every bound and default of a function spec, in one place: the registration request is
//! validated against these bounds and resolved with these defaults (REFERENCE §1.6, §2.2), and the
//! `nanofaas.defaults.*` settings are checked against the same bounds.

/// The function-name pattern as the Java validation message prints it.
pub const NAME_PATTERN: &str = "^[a-zA-Z][a-zA-Z0-9._-]{0,62}$";
/// The longest function name (a DNS label).
pub const MAX_NAME_LEN: usize = 63;

// Upper bounds that keep every queue and timer finite; far above any real function.
pub const MAX_TIMEOUT_MS: u64 = u32::MAX as u64;
pub const MAX_CONCURRENCY: u64 = 1_000_000;
pub const MAX_QUEUE_SIZE: u64 = 10_000_000;
pub const MAX_RETRIES: u64 = 1000;

/// `scalingConfig` defaults of a DEPLOYMENT function.
pub const DEFAULT_MIN_REPLICAS: u64 = 1;
pub const DEFAULT_MAX_REPLICAS: u64 = 10;
/// The metric a DEPLOYMENT function scales on when it names none: `queue_depth` with target 5.
pub const DEFAULT_METRIC_KIND: &str = "queue_depth";
pub const DEFAULT_METRIC_TARGET: &str = "5";
/// The metric types the INTERNAL strategy understands.
pub const INTERNAL_METRICS: [&str; 3] = ["queue_depth", "in_flight", "rps"];
/// The target of a scaling metric whose target is missing or not a number (HPA and INTERNAL).
pub const FALLBACK_METRIC_TARGET: i32 = 50;

/// `concurrencyControl` defaults of the per-pod modes.
pub const DEFAULT_TARGET_IN_FLIGHT_PER_POD: i64 = 2;
pub const DEFAULT_MIN_TARGET_IN_FLIGHT_PER_POD: i64 = 1;
pub const DEFAULT_MAX_TARGET_IN_FLIGHT_PER_POD: i64 = 8;
pub const DEFAULT_UPSCALE_COOLDOWN_MS: i64 = 30_000;
pub const DEFAULT_DOWNSCALE_COOLDOWN_MS: i64 = 60_000;
pub const DEFAULT_HIGH_LOAD_THRESHOLD: f64 = 0.85;
pub const DEFAULT_LOW_LOAD_THRESHOLD: f64 = 0.35;

/// The values of the fields a registration may leave out, configured by `nanofaas.defaults.*`
/// (within the bounds above).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionDefaults {
    pub timeout_ms: u64,
    pub concurrency: u32,
    pub queue_size: u32,
    pub max_retries: u32,
}
