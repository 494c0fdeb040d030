//! A function spec with every default applied (REFERENCE §2.2), and the value types it shares with
//! the registration request. Nothing here is optional that has a default; what stays optional
//! has none (resources, endpoint, runtime command, pull secrets).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::limits::DEFAULT_MIN_REPLICAS;
use super::request::ScalingConfigRequest;
use crate::support::lenient::lenient_string;
use crate::support::schema;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum ExecutionMode {
    Local,
    Pool,
    Deployment,
}

impl fmt::Display for ExecutionMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ExecutionMode::Local => "LOCAL",
            ExecutionMode::Pool => "POOL",
            ExecutionMode::Deployment => "DEPLOYMENT",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum RuntimeMode {
    Http,
    Stdio,
    File,
}

impl fmt::Display for RuntimeMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RuntimeMode::Http => "HTTP",
            RuntimeMode::Stdio => "STDIO",
            RuntimeMode::File => "FILE",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum ScalingStrategy {
    Hpa,
    Internal,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ConcurrencyControlMode {
    Fixed,
    StaticPerPod,
    AdaptivePerPod,
}

impl ConcurrencyControlMode {
    pub const ALL: [ConcurrencyControlMode; 3] = [
        ConcurrencyControlMode::Fixed,
        ConcurrencyControlMode::StaticPerPod,
        ConcurrencyControlMode::AdaptivePerPod,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ConcurrencyControlMode::Fixed => "FIXED",
            ConcurrencyControlMode::StaticPerPod => "STATIC_PER_POD",
            ConcurrencyControlMode::AdaptivePerPod => "ADAPTIVE_PER_POD",
        }
    }
}

/// `resources`: passed to the backend as given (no defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ResourceSpec {
    #[serde(default, deserialize_with = "lenient_string")]
    #[schema(schema_with = cpu_schema)]
    pub cpu: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    #[schema(schema_with = memory_schema)]
    pub memory: Option<String>,
}

fn cpu_schema() -> utoipa::openapi::schema::Schema {
    schema::string("Kubernetes CPU quantity (e.g. 250m)")
}
fn memory_schema() -> utoipa::openapi::schema::Schema {
    schema::string("Kubernetes memory quantity (e.g. 256Mi)")
}

/// One scaling metric, kept as given: its readers decide what a missing type or target means
/// (`limits::FALLBACK_METRIC_TARGET`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ScalingMetric {
    #[serde(rename = "type", default, deserialize_with = "lenient_string")]
    #[schema(schema_with = metric_type)]
    pub kind: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    #[schema(schema_with = metric_target)]
    pub target: Option<String>,
    #[serde(default, alias = "resource", deserialize_with = "lenient_string")]
    #[schema(schema_with = metric_query)]
    pub query: Option<String>,
}

fn metric_type() -> utoipa::openapi::schema::Schema {
    schema::string("`queue_depth`, `in_flight` or `rps` for the INTERNAL strategy; any for HPA")
}
fn metric_target() -> utoipa::openapi::schema::Schema {
    schema::string("Target value; not a number reads as 50")
}
fn metric_query() -> utoipa::openapi::schema::Schema {
    schema::string("Metric query; also read from `resource`")
}

/// A function spec with every default applied (REFERENCE §2.2).
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionSpec {
    pub name: String,
    pub image: String,
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub resources: Option<ResourceSpec>,
    pub timeout_ms: u64,
    pub concurrency: u32,
    pub queue_size: u32,
    pub max_retries: u32,
    pub endpoint_url: Option<String>,
    pub execution_mode: ExecutionMode,
    pub runtime_mode: RuntimeMode,
    pub runtime_command: Option<String>,
    pub scaling: Scaling,
    pub image_pull_secrets: Option<Vec<String>>,
}

impl FunctionSpec {
    /// The replicas a backend starts with: the resolved `minReplicas`, else the default.
    pub fn initial_replicas(&self) -> u64 {
        self.scaling
            .resolved()
            .map_or(DEFAULT_MIN_REPLICAS, |s| s.min_replicas)
    }
}

/// How a function scales.
#[derive(Debug, Clone, PartialEq)]
pub enum Scaling {
    /// DEPLOYMENT functions: `scalingConfig` with every default applied.
    Resolved(ScalingConfig),
    /// Other modes are not scaled: their `scalingConfig` (if any) is kept as given, for the
    /// FunctionResponse, the target-load gauges and the queue's controller-mode gauge.
    AsGiven(Option<ScalingConfigRequest>),
}

impl Scaling {
    pub fn resolved(&self) -> Option<&ScalingConfig> {
        match self {
            Scaling::Resolved(s) => Some(s),
            Scaling::AsGiven(_) => None,
        }
    }

    /// The metrics, null entries included (they are echoed as given).
    pub fn metrics(&self) -> &[Option<ScalingMetric>] {
        match self {
            Scaling::Resolved(s) => &s.metrics,
            Scaling::AsGiven(given) => given
                .as_ref()
                .and_then(|s| s.metrics.as_deref())
                .unwrap_or_default(),
        }
    }

    /// The concurrency controller the queue starts with (mode, per-pod target; 0 = none). A
    /// function that is not scaled reports the mode it was registered with, as Java does.
    pub fn initial_controller(&self) -> (ConcurrencyControlMode, u32) {
        match self {
            Scaling::Resolved(s) => (
                s.concurrency_control.mode(),
                s.concurrency_control
                    .per_pod()
                    .map_or(0, PerPodControl::target),
            ),
            Scaling::AsGiven(given) => given
                .as_ref()
                .and_then(|s| s.concurrency_control.as_ref())
                .and_then(|c| c.mode.map(|m| (m, c.target_in_flight_per_pod)))
                .map_or((ConcurrencyControlMode::Fixed, 0), |(m, t)| match m {
                    ConcurrencyControlMode::Fixed => (m, 0),
                    _ => (m, t.unwrap_or(0).clamp(0, i64::from(u32::MAX)) as u32),
                }),
        }
    }

    /// The `scalingConfig` of the FunctionResponse: the resolved values, or the request's as given.
    pub fn to_request(&self) -> Option<ScalingConfigRequest> {
        match self {
            Scaling::Resolved(s) => Some(ScalingConfigRequest::from(s)),
            Scaling::AsGiven(given) => given.clone(),
        }
    }
}

/// A DEPLOYMENT function's resolved `scalingConfig`; `min_replicas <= max_replicas`,
/// `max_replicas >= 1`.
#[derive(Debug, Clone, PartialEq)]
pub struct ScalingConfig {
    pub strategy: ScalingStrategy,
    pub min_replicas: u64,
    pub max_replicas: u64,
    /// Never empty; null entries of the request are kept (only INTERNAL refuses them).
    pub metrics: Vec<Option<ScalingMetric>>,
    pub concurrency_control: ConcurrencyControl,
}

/// The resolved `concurrencyControl`.
#[derive(Debug, Clone, PartialEq)]
pub enum ConcurrencyControl {
    /// Effective concurrency = the configured concurrency.
    Fixed,
    StaticPerPod(PerPodControl),
    AdaptivePerPod(PerPodControl),
}

impl ConcurrencyControl {
    pub fn mode(&self) -> ConcurrencyControlMode {
        match self {
            ConcurrencyControl::Fixed => ConcurrencyControlMode::Fixed,
            ConcurrencyControl::StaticPerPod(_) => ConcurrencyControlMode::StaticPerPod,
            ConcurrencyControl::AdaptivePerPod(_) => ConcurrencyControlMode::AdaptivePerPod,
        }
    }

    pub fn per_pod(&self) -> Option<&PerPodControl> {
        match self {
            ConcurrencyControl::Fixed => None,
            ConcurrencyControl::StaticPerPod(c) | ConcurrencyControl::AdaptivePerPod(c) => Some(c),
        }
    }
}

/// The per-pod modes' settings, resolved: `1 <= min <= target <= max`. Cooldowns and thresholds
/// are kept as given (the response echoes them); the accessors read them as the controller does.
#[derive(Debug, Clone, PartialEq)]
pub struct PerPodControl {
    pub target_in_flight_per_pod: u64,
    pub min_target_in_flight_per_pod: u64,
    pub max_target_in_flight_per_pod: u64,
    pub upscale_cooldown_ms: i64,
    pub downscale_cooldown_ms: i64,
    pub high_load_threshold: f64,
    pub low_load_threshold: f64,
}

fn to_u32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

fn non_negative_ms(ms: i64) -> Duration {
    Duration::from_millis(ms.max(0) as u64)
}

impl PerPodControl {
    pub fn target(&self) -> u32 {
        to_u32(self.target_in_flight_per_pod)
    }
    pub fn min_target(&self) -> u32 {
        to_u32(self.min_target_in_flight_per_pod)
    }
    pub fn max_target(&self) -> u32 {
        to_u32(self.max_target_in_flight_per_pod)
    }
    /// A negative cooldown holds nothing back.
    pub fn upscale_cooldown(&self) -> Duration {
        non_negative_ms(self.upscale_cooldown_ms)
    }
    pub fn downscale_cooldown(&self) -> Duration {
        non_negative_ms(self.downscale_cooldown_ms)
    }
}
