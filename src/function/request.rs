//! The registration request as read from JSON (REFERENCE §2.1), read as Jackson reads it for the
//! Java control plane (§1.3): unknown fields are ignored and scalars are coerced (`"5"` → 5,
//! `1` → `"1"`). Every field is optional here; `resolve` turns a request into a `FunctionSpec`.
//! `ScalingConfigRequest` is also the `scalingConfig` shape the FunctionResponse writes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::limits::{MAX_CONCURRENCY, MAX_QUEUE_SIZE, MAX_RETRIES, MAX_TIMEOUT_MS, NAME_PATTERN};
use super::spec::{
    ConcurrencyControlMode, ExecutionMode, ResourceSpec, RuntimeMode, ScalingConfig, ScalingMetric,
    ScalingStrategy,
};
use crate::support::lenient::{
    lenient_float, lenient_int, lenient_string, lenient_string_list, lenient_string_map,
    object_only, object_only_list,
};
use crate::support::schema;

/// `concurrencyControl` (§2.8). Per-pod values are clamped at resolution, never refused. Schemas:
/// what the lenient readers take, since this is also a request shape.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = ConcurrencyControlConfig)]
pub struct ConcurrencyControlRequest {
    #[serde(default)]
    pub mode: Option<ConcurrencyControlMode>,
    #[serde(default, deserialize_with = "lenient_int")]
    #[schema(schema_with = any_int)]
    pub target_in_flight_per_pod: Option<i64>,
    #[serde(default, deserialize_with = "lenient_int")]
    #[schema(schema_with = any_int)]
    pub min_target_in_flight_per_pod: Option<i64>,
    #[serde(default, deserialize_with = "lenient_int")]
    #[schema(schema_with = any_int)]
    pub max_target_in_flight_per_pod: Option<i64>,
    #[serde(default, deserialize_with = "lenient_int")]
    #[schema(schema_with = any_int)]
    pub upscale_cooldown_ms: Option<i64>,
    #[serde(default, deserialize_with = "lenient_int")]
    #[schema(schema_with = any_int)]
    pub downscale_cooldown_ms: Option<i64>,
    #[serde(default, deserialize_with = "lenient_float")]
    #[schema(schema_with = any_float)]
    pub high_load_threshold: Option<f64>,
    #[serde(default, deserialize_with = "lenient_float")]
    #[schema(schema_with = any_float)]
    pub low_load_threshold: Option<f64>,
}

/// `scalingConfig` (§2.8), as requested and as a FunctionResponse writes it. For a DEPLOYMENT
/// function, `minReplicas <= maxReplicas` and (INTERNAL strategy) metric types among
/// `queue_depth`, `in_flight`, `rps` are checked at registration (400 otherwise).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = ScalingConfig)]
pub struct ScalingConfigRequest {
    #[serde(default)]
    pub strategy: Option<ScalingStrategy>,
    #[serde(default, deserialize_with = "lenient_int")]
    #[schema(schema_with = min_replicas)]
    pub min_replicas: Option<i64>,
    #[serde(default, deserialize_with = "lenient_int")]
    #[schema(schema_with = max_replicas)]
    pub max_replicas: Option<i64>,
    /// `null` items are kept (and refused by the INTERNAL strategy).
    #[serde(default, deserialize_with = "object_only_list")]
    pub metrics: Option<Vec<Option<ScalingMetric>>>,
    #[serde(default, deserialize_with = "object_only")]
    pub concurrency_control: Option<ConcurrencyControlRequest>,
}

/// The registration request body (REFERENCE §2.1). Unknown fields are ignored, scalars coerced.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = FunctionSpec)]
pub struct FunctionSpecRequest {
    #[serde(default, deserialize_with = "lenient_string")]
    #[schema(schema_with = name_schema, required)]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    #[schema(schema_with = image_schema, required)]
    pub image: Option<String>,
    #[serde(default, deserialize_with = "lenient_string_list")]
    #[schema(schema_with = command_schema)]
    pub command: Option<Vec<String>>,
    #[serde(default, deserialize_with = "lenient_string_map")]
    #[schema(schema_with = env_schema)]
    pub env: Option<BTreeMap<String, Option<String>>>,
    #[serde(default, deserialize_with = "object_only")]
    pub resources: Option<ResourceSpec>,
    #[serde(default, deserialize_with = "lenient_int")]
    #[schema(schema_with = timeout_ms)]
    pub timeout_ms: Option<i64>,
    #[serde(default, deserialize_with = "lenient_int")]
    #[schema(schema_with = concurrency)]
    pub concurrency: Option<i64>,
    #[serde(default, deserialize_with = "lenient_int")]
    #[schema(schema_with = queue_size)]
    pub queue_size: Option<i64>,
    #[serde(default, deserialize_with = "lenient_int")]
    #[schema(schema_with = max_retries)]
    pub max_retries: Option<i64>,
    #[serde(default, deserialize_with = "lenient_string")]
    #[schema(schema_with = endpoint_url)]
    pub endpoint_url: Option<String>,
    /// Defaults to `DEPLOYMENT`; without a deployment backend such a function needs an
    /// `endpointUrl` (it degrades to POOL) or registration answers 503.
    #[serde(default)]
    pub execution_mode: Option<ExecutionMode>,
    #[serde(default)]
    pub runtime_mode: Option<RuntimeMode>,
    #[serde(default, deserialize_with = "lenient_string")]
    #[schema(schema_with = runtime_command)]
    pub runtime_command: Option<String>,
    #[serde(default, deserialize_with = "object_only")]
    pub scaling_config: Option<ScalingConfigRequest>,
    #[serde(default, deserialize_with = "lenient_string_list")]
    #[schema(schema_with = pull_secrets)]
    pub image_pull_secrets: Option<Vec<String>>,
    // A FunctionResponse's `requestedExecutionMode` stands in for a missing `executionMode`, so a
    // GET result registers as it was.
    #[serde(default, rename = "requestedExecutionMode")]
    pub(super) requested_execution_mode: Option<ExecutionMode>,
}

// The schemas of the lenient fields above, with the bounds `resolve` checks.
fn any_int() -> utoipa::openapi::schema::Schema {
    schema::int(i64::MIN, i64::MAX, 18, "An integer")
}
fn any_float() -> utoipa::openapi::schema::Schema {
    schema::float("A number")
}
fn min_replicas() -> utoipa::openapi::schema::Schema {
    schema::int(0, i64::MAX, 18, "At least 0; default 1")
}
fn max_replicas() -> utoipa::openapi::schema::Schema {
    schema::int(1, i64::MAX, 18, "At least 1; default 10")
}
fn timeout_ms() -> utoipa::openapi::schema::Schema {
    schema::int(
        1,
        MAX_TIMEOUT_MS as i64,
        9,
        "Milliseconds; default from configuration",
    )
}
fn concurrency() -> utoipa::openapi::schema::Schema {
    schema::int(
        1,
        MAX_CONCURRENCY as i64,
        6,
        "Max concurrent in-flight invocations",
    )
}
fn queue_size() -> utoipa::openapi::schema::Schema {
    schema::int(1, MAX_QUEUE_SIZE as i64, 7, "Bounded in-memory queue size")
}
fn max_retries() -> utoipa::openapi::schema::Schema {
    schema::int(0, MAX_RETRIES as i64, 3, "Retries of a failed invocation")
}
fn name_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{AnyOfBuilder, ObjectBuilder, Type};
    // `lenient_string` turns `true`/`false` into text, which the pattern accepts.
    AnyOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(NAME_PATTERN)),
        )
        .item(ObjectBuilder::new().schema_type(Type::Boolean))
        .description(Some("Function name"))
        .build()
        .into()
}
fn image_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{AnyOfBuilder, ObjectBuilder, Type};
    AnyOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some("[^ \\t\\n\\x0b\\x0c\\r]")),
        )
        .item(ObjectBuilder::new().schema_type(Type::Number))
        .item(ObjectBuilder::new().schema_type(Type::Boolean))
        .description(Some(
            "Container image (required, not blank, even for LOCAL and POOL)",
        ))
        .build()
        .into()
}
fn command_schema() -> utoipa::openapi::schema::Schema {
    schema::string_list("Command of the function container")
}
fn env_schema() -> utoipa::openapi::schema::Schema {
    schema::string_map("Environment of the function container")
}
fn runtime_command() -> utoipa::openapi::schema::Schema {
    schema::string("Command that starts the function process")
}
fn pull_secrets() -> utoipa::openapi::schema::Schema {
    schema::string_list("Kubernetes imagePullSecrets names")
}
fn endpoint_url() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{AnyOfBuilder, ObjectBuilder, Type};
    // What `check_endpoint_url` accepts, narrowed to host names that parse as such (a last label
    // of digits would be read as an IPv4 address); a blank value is no endpoint.
    AnyOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .format(Some(utoipa::openapi::SchemaFormat::Custom("uri".into())))
                .pattern(Some(
                    "^[Hh][Tt][Tt][Pp][Ss]?://[A-Za-z][A-Za-z0-9-]{0,20}(\\.[A-Za-z][A-Za-z0-9-]{0,20}){0,3}(:[1-9][0-9]{0,3})?(/[A-Za-z0-9._~-]{0,20}){0,4}$",
                )),
        )
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some("^[ \\t\\n\\r]*$")),
        )
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .description(Some("HTTP endpoint of a POOL function (http or https, with a host; `NANOFAAS_POOL_ALLOWED_HOSTS` may restrict it, 400)"))
        .build()
        .into()
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
