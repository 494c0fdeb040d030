//! The registration request as read from JSON (REFERENCE §2.1), read as Jackson reads it for the
//! Java control plane (§1.3): unknown fields are ignored and scalars are coerced (`"5"` → 5,
//! `1` → `"1"`). Every field is optional here; `resolve` turns a request into a `FunctionSpec`.
//! `ScalingConfigRequest` is also the `scalingConfig` shape the FunctionResponse writes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::spec::{
    ConcurrencyControlMode, ExecutionMode, ResourceSpec, RuntimeMode, ScalingConfig, ScalingMetric,
    ScalingStrategy,
};
use crate::support::lenient::{
    lenient_float, lenient_int, lenient_string, lenient_string_list, lenient_string_map,
};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConcurrencyControlRequest {
    #[serde(default)]
    pub mode: Option<ConcurrencyControlMode>,
    #[serde(default, deserialize_with = "lenient_int")]
    pub target_in_flight_per_pod: Option<i64>,
    #[serde(default, deserialize_with = "lenient_int")]
    pub min_target_in_flight_per_pod: Option<i64>,
    #[serde(default, deserialize_with = "lenient_int")]
    pub max_target_in_flight_per_pod: Option<i64>,
    #[serde(default, deserialize_with = "lenient_int")]
    pub upscale_cooldown_ms: Option<i64>,
    #[serde(default, deserialize_with = "lenient_int")]
    pub downscale_cooldown_ms: Option<i64>,
    #[serde(default, deserialize_with = "lenient_float")]
    pub high_load_threshold: Option<f64>,
    #[serde(default, deserialize_with = "lenient_float")]
    pub low_load_threshold: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScalingConfigRequest {
    #[serde(default)]
    pub strategy: Option<ScalingStrategy>,
    #[serde(default, deserialize_with = "lenient_int")]
    pub min_replicas: Option<i64>,
    #[serde(default, deserialize_with = "lenient_int")]
    pub max_replicas: Option<i64>,
    #[serde(default)]
    pub metrics: Option<Vec<Option<ScalingMetric>>>,
    #[serde(default)]
    pub concurrency_control: Option<ConcurrencyControlRequest>,
}

/// The registration request body (REFERENCE §2.1).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionSpecRequest {
    #[serde(default, deserialize_with = "lenient_string")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub image: Option<String>,
    #[serde(default, deserialize_with = "lenient_string_list")]
    pub command: Option<Vec<String>>,
    #[serde(default, deserialize_with = "lenient_string_map")]
    pub env: Option<BTreeMap<String, Option<String>>>,
    #[serde(default)]
    pub resources: Option<ResourceSpec>,
    #[serde(default, deserialize_with = "lenient_int")]
    pub timeout_ms: Option<i64>,
    #[serde(default, deserialize_with = "lenient_int")]
    pub concurrency: Option<i64>,
    #[serde(default, deserialize_with = "lenient_int")]
    pub queue_size: Option<i64>,
    #[serde(default, deserialize_with = "lenient_int")]
    pub max_retries: Option<i64>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub endpoint_url: Option<String>,
    #[serde(default)]
    pub execution_mode: Option<ExecutionMode>,
    #[serde(default)]
    pub runtime_mode: Option<RuntimeMode>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub runtime_command: Option<String>,
    #[serde(default)]
    pub scaling_config: Option<ScalingConfigRequest>,
    #[serde(default, deserialize_with = "lenient_string_list")]
    pub image_pull_secrets: Option<Vec<String>>,
    // A FunctionResponse's `requestedExecutionMode` stands in for a missing `executionMode`, so a
    // GET result registers as it was.
    #[serde(default, rename = "requestedExecutionMode")]
    pub(super) requested_execution_mode: Option<ExecutionMode>,
}

impl From<&ScalingConfig> for ScalingConfigRequest {
    /// The resolved values in the request shape (FIXED writes its per-pod fields as null).
    fn from(s: &ScalingConfig) -> Self {
        let cc = &s.concurrency_control;
        let concurrency_control = match cc.per_pod() {
            None => ConcurrencyControlRequest {
                mode: Some(cc.mode()),
                ..Default::default()
            },
            Some(p) => ConcurrencyControlRequest {
                mode: Some(cc.mode()),
                target_in_flight_per_pod: Some(p.target_in_flight_per_pod as i64),
                min_target_in_flight_per_pod: Some(p.min_target_in_flight_per_pod as i64),
                max_target_in_flight_per_pod: Some(p.max_target_in_flight_per_pod as i64),
                upscale_cooldown_ms: Some(p.upscale_cooldown_ms),
                downscale_cooldown_ms: Some(p.downscale_cooldown_ms),
                high_load_threshold: Some(p.high_load_threshold),
                low_load_threshold: Some(p.low_load_threshold),
            },
        };
        ScalingConfigRequest {
            strategy: Some(s.strategy),
            min_replicas: Some(s.min_replicas as i64),
            max_replicas: Some(s.max_replicas as i64),
            metrics: Some(s.metrics.clone()),
            concurrency_control: Some(concurrency_control),
        }
    }
}
