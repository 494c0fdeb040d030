//! The FunctionResponse JSON (REFERENCE §2.3).

use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::ToSchema;

use super::request::ScalingConfigRequest;
use super::spec::{ExecutionMode, ResourceSpec, RuntimeMode};

/// Declaration order, top-level nulls omitted.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FunctionResponse<'a> {
    #[schema(value_type = String)]
    pub name: &'a str,
    #[schema(value_type = String)]
    pub image: &'a str,
    #[schema(value_type = Vec<String>)]
    pub command: &'a [String],
    #[schema(value_type = BTreeMap<String, String>)]
    pub env: &'a BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<ResourceSpec>, nullable = false)]
    pub resources: Option<&'a ResourceSpec>,
    pub timeout_ms: u64,
    pub concurrency: u32,
    pub queue_size: u32,
    pub max_retries: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, nullable = false)]
    pub endpoint_url: Option<&'a str>,
    pub requested_execution_mode: ExecutionMode,
    pub effective_execution_mode: ExecutionMode,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, nullable = false)]
    pub deployment_backend: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, nullable = false)]
    pub degradation_reason: Option<&'a str>,
    pub runtime_mode: RuntimeMode,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, nullable = false)]
    pub runtime_command: Option<&'a str>,
    /// `Scaling::to_request`: the resolved values, or the request's as given.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub scaling_config: Option<ScalingConfigRequest>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<String>>, nullable = false)]
    pub image_pull_secrets: Option<&'a [String]>,
}
