//! Function specifications: the registration request as read from JSON, its validation
//! (REFERENCE §1.6, DECISIONS 3), defaults resolution (§2.2) and the FunctionResponse shape (§2.3).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

use crate::config::FunctionDefaults;

pub const NAME_PATTERN: &str = "^[a-zA-Z][a-zA-Z0-9._-]{0,62}$";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ScalingStrategy {
    Hpa,
    Internal,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceSpec {
    #[serde(default, deserialize_with = "lenient_string")]
    pub cpu: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub memory: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScalingMetric {
    #[serde(rename = "type", default, deserialize_with = "lenient_string")]
    pub kind: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub target: Option<String>,
    #[serde(default, alias = "resource", deserialize_with = "lenient_string")]
    pub query: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConcurrencyControl {
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

impl ConcurrencyControl {
    fn fixed() -> Self {
        ConcurrencyControl {
            mode: Some(ConcurrencyControlMode::Fixed),
            target_in_flight_per_pod: None,
            min_target_in_flight_per_pod: None,
            max_target_in_flight_per_pod: None,
            upscale_cooldown_ms: None,
            downscale_cooldown_ms: None,
            high_load_threshold: None,
            low_load_threshold: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScalingConfig {
    #[serde(default)]
    pub strategy: Option<ScalingStrategy>,
    #[serde(default, deserialize_with = "lenient_int")]
    pub min_replicas: Option<i64>,
    #[serde(default, deserialize_with = "lenient_int")]
    pub max_replicas: Option<i64>,
    #[serde(default)]
    pub metrics: Option<Vec<Option<ScalingMetric>>>,
    #[serde(default)]
    pub concurrency_control: Option<ConcurrencyControl>,
}

/// The registration request body (REFERENCE §2.1), read as Jackson reads it for the Java control
/// plane (§1.3): unknown fields are ignored and scalars are coerced (`"5"` → 5, `1` → `"1"`).
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
    pub scaling_config: Option<ScalingConfig>,
    #[serde(default, deserialize_with = "lenient_string_list")]
    pub image_pull_secrets: Option<Vec<String>>,
    // A FunctionResponse's `requestedExecutionMode` stands in for a missing `executionMode`, so a
    // GET result registers as it was.
    #[serde(default, rename = "requestedExecutionMode")]
    requested_execution_mode: Option<ExecutionMode>,
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
    pub scaling_config: Option<ScalingConfig>,
    pub image_pull_secrets: Option<Vec<String>>,
}

/// Why a registration request is refused with 400.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpecError {
    /// Field-level failures, each `"<field>: <message>"` (the Java validation shape).
    Invalid(Vec<String>),
    /// A failure of defaults resolution, with the Java message.
    Resolution(String),
}

pub fn name_is_valid(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_alphabetic()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl FunctionSpecRequest {
    /// Field validation then defaults resolution, in the Java order.
    pub fn resolve(self, defaults: &FunctionDefaults) -> Result<FunctionSpec, SpecError> {
        let mut details = Vec::new();
        let name = self.name.unwrap_or_default();
        if name.trim().is_empty() {
            details.push("name: must not be blank".to_owned());
        } else if !name_is_valid(&name) {
            details.push(format!("name: must match \"{NAME_PATTERN}\""));
        }
        let image = self.image.unwrap_or_default();
        if image.trim().is_empty() {
            details.push("image: must not be blank".to_owned());
        }
        let at_least = |field: &str, v: Option<i64>, min: i64, details: &mut Vec<String>| {
            if let Some(v) = v {
                if v < min {
                    details.push(format!("{field}: must be greater than or equal to {min}"));
                }
            }
        };
        at_least("timeoutMs", self.timeout_ms, 1, &mut details);
        at_least("concurrency", self.concurrency, 1, &mut details);
        at_least("queueSize", self.queue_size, 1, &mut details);
        at_least("maxRetries", self.max_retries, 0, &mut details);
        let at_most = |field: &str, v: Option<i64>, max: i64, details: &mut Vec<String>| {
            if let Some(v) = v {
                if v > max {
                    details.push(format!("{field}: must be less than or equal to {max}"));
                }
            }
        };
        // Bounds that keep every queue and timer finite; far above any real function.
        at_most(
            "timeoutMs",
            self.timeout_ms,
            i64::from(u32::MAX),
            &mut details,
        );
        at_most("concurrency", self.concurrency, 1_000_000, &mut details);
        at_most("queueSize", self.queue_size, 10_000_000, &mut details);
        at_most("maxRetries", self.max_retries, 1000, &mut details);
        if let Some(url) = self
            .endpoint_url
            .as_deref()
            .filter(|u| !u.trim().is_empty())
        {
            if let Err(reason) = check_endpoint_url(url) {
                details.push(format!("endpointUrl: {reason}"));
            }
        }
        if !details.is_empty() {
            return Err(SpecError::Invalid(details));
        }

        let execution_mode = self
            .execution_mode
            .or(self.requested_execution_mode)
            .unwrap_or(ExecutionMode::Deployment);
        let scaling_config = if execution_mode == ExecutionMode::Deployment {
            Some(resolve_scaling(self.scaling_config).map_err(SpecError::Resolution)?)
        } else {
            self.scaling_config
        };
        Ok(FunctionSpec {
            name,
            image,
            command: self.command.unwrap_or_default(),
            env: self
                .env
                .unwrap_or_default()
                .into_iter()
                .filter_map(|(k, v)| v.map(|v| (k, v)))
                .collect(),
            resources: self.resources,
            timeout_ms: self.timeout_ms.map_or(defaults.timeout_ms, |v| v as u64),
            concurrency: self.concurrency.map_or(defaults.concurrency, |v| v as u32),
            queue_size: self.queue_size.map_or(defaults.queue_size, |v| v as u32),
            max_retries: self.max_retries.map_or(defaults.max_retries, |v| v as u32),
            endpoint_url: self.endpoint_url.filter(|u| !u.trim().is_empty()),
            execution_mode,
            runtime_mode: self.runtime_mode.unwrap_or(RuntimeMode::Http),
            runtime_command: self.runtime_command,
            scaling_config,
            image_pull_secrets: self.image_pull_secrets,
        })
    }
}

/// An endpoint must be an absolute http(s) URL with a host.
pub fn check_endpoint_url(url: &str) -> Result<reqwest::Url, String> {
    let parsed = reqwest::Url::parse(url.trim()).map_err(|e| format!("not a valid URL ({e})"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err("must be an http or https URL".to_owned());
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("must name a host".to_owned());
    }
    Ok(parsed)
}

const INTERNAL_METRICS: [&str; 3] = ["queue_depth", "in_flight", "rps"];

fn default_metric() -> ScalingMetric {
    ScalingMetric {
        kind: Some("queue_depth".to_owned()),
        target: Some("5".to_owned()),
        query: None,
    }
}

fn resolve_scaling(given: Option<ScalingConfig>) -> Result<ScalingConfig, String> {
    let given = given.unwrap_or(ScalingConfig {
        strategy: None,
        min_replicas: None,
        max_replicas: None,
        metrics: None,
        concurrency_control: None,
    });
    let strategy = given.strategy.unwrap_or(ScalingStrategy::Internal);
    let metrics = match given.metrics {
        Some(m) if !m.is_empty() => m,
        _ => vec![Some(default_metric())],
    };
    if strategy == ScalingStrategy::Internal {
        for m in &metrics {
            let kind = m.as_ref().and_then(|m| m.kind.as_deref());
            if !kind.is_some_and(|k| INTERNAL_METRICS.contains(&k)) {
                return Err(format!(
                    "Unsupported INTERNAL scaling metric: {}",
                    kind.unwrap_or("null")
                ));
            }
        }
    }
    let min = given.min_replicas.unwrap_or(1);
    let max = given.max_replicas.unwrap_or(10);
    if min < 0 {
        return Err("minReplicas must be >= 0".to_owned());
    }
    if max < 1 {
        return Err("maxReplicas must be >= 1".to_owned());
    }
    if min > max {
        return Err("minReplicas must be <= maxReplicas".to_owned());
    }
    Ok(ScalingConfig {
        strategy: Some(strategy),
        min_replicas: Some(min),
        max_replicas: Some(max),
        metrics: Some(metrics),
        concurrency_control: Some(resolve_concurrency_control(given.concurrency_control)),
    })
}

fn resolve_concurrency_control(given: Option<ConcurrencyControl>) -> ConcurrencyControl {
    let Some(c) = given else {
        return ConcurrencyControl::fixed();
    };
    match c.mode {
        None | Some(ConcurrencyControlMode::Fixed) => ConcurrencyControl::fixed(),
        Some(mode) => {
            let max = c.max_target_in_flight_per_pod.map_or(8, |v| v.max(1));
            let min = c
                .min_target_in_flight_per_pod
                .map_or(1, |v| v.max(1))
                .min(max);
            let target = c.target_in_flight_per_pod.unwrap_or(2).clamp(min, max);
            ConcurrencyControl {
                mode: Some(mode),
                target_in_flight_per_pod: Some(target),
                min_target_in_flight_per_pod: Some(min),
                max_target_in_flight_per_pod: Some(max),
                upscale_cooldown_ms: Some(c.upscale_cooldown_ms.unwrap_or(30_000)),
                downscale_cooldown_ms: Some(c.downscale_cooldown_ms.unwrap_or(60_000)),
                high_load_threshold: Some(c.high_load_threshold.unwrap_or(0.85)),
                low_load_threshold: Some(c.low_load_threshold.unwrap_or(0.35)),
            }
        }
    }
}

/// The FunctionResponse JSON (REFERENCE §2.3): declaration order, top-level nulls omitted.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionResponse<'a> {
    pub name: &'a str,
    pub image: &'a str,
    pub command: &'a [String],
    pub env: &'a BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resources: Option<&'a ResourceSpec>,
    pub timeout_ms: u64,
    pub concurrency: u32,
    pub queue_size: u32,
    pub max_retries: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint_url: Option<&'a str>,
    pub requested_execution_mode: ExecutionMode,
    pub effective_execution_mode: ExecutionMode,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployment_backend: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub degradation_reason: Option<&'a str>,
    pub runtime_mode: RuntimeMode,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime_command: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scaling_config: Option<&'a ScalingConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_pull_secrets: Option<&'a [String]>,
}

/// Integers as Jackson reads them: a number (a fraction is truncated, as Jackson's
/// `ACCEPT_FLOAT_AS_INT` does: `1.9` → 1), or a string holding an integer.
pub(crate) fn lenient_int<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    use serde::de::Error;
    let v = Option::<serde_json::Value>::deserialize(d)?;
    match v {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Number(n)) => {
            if let Some(i) = n.as_i64() {
                Ok(Some(i))
            } else if let Some(f) = n.as_f64().filter(|f| f.abs() < 9.0e18) {
                Ok(Some(f.trunc() as i64))
            } else {
                Err(D::Error::custom(format!("expected an integer, got {n}")))
            }
        }
        Some(serde_json::Value::String(s)) => s
            .trim()
            .parse::<i64>()
            .map(Some)
            .map_err(|_| D::Error::custom(format!("expected an integer, got \"{s}\""))),
        Some(other) => Err(D::Error::custom(format!(
            "expected an integer, got {}",
            kind_of(&other)
        ))),
    }
}

pub(crate) fn lenient_float<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    use serde::de::Error;
    match Option::<serde_json::Value>::deserialize(d)? {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Number(n)) => Ok(n.as_f64()),
        Some(serde_json::Value::String(s)) => s
            .trim()
            .parse::<f64>()
            .map(Some)
            .map_err(|_| D::Error::custom(format!("expected a number, got \"{s}\""))),
        Some(other) => Err(D::Error::custom(format!(
            "expected a number, got {}",
            kind_of(&other)
        ))),
    }
}

/// Booleans as Jackson reads them: `true`/`false`, or a string holding one.
pub(crate) fn lenient_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    use serde::de::Error;
    match Option::<serde_json::Value>::deserialize(d)? {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Bool(b)) => Ok(Some(b)),
        Some(serde_json::Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "true" => Ok(Some(true)),
            "false" => Ok(Some(false)),
            _ => Err(D::Error::custom(format!("expected a boolean, got \"{s}\""))),
        },
        Some(other) => Err(D::Error::custom(format!(
            "expected a boolean, got {}",
            kind_of(&other)
        ))),
    }
}

/// Strings as Jackson reads them: a string, or a scalar number/boolean turned into its text.
pub(crate) fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    use serde::de::Error;
    match Option::<serde_json::Value>::deserialize(d)? {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s)),
        Some(serde_json::Value::Number(n)) => Ok(Some(n.to_string())),
        Some(serde_json::Value::Bool(b)) => Ok(Some(b.to_string())),
        Some(other) => Err(D::Error::custom(format!(
            "expected a string, got {}",
            kind_of(&other)
        ))),
    }
}

/// A scalar as the text Jackson binds to a `String`; `None` for JSON null.
fn scalar_text<E: serde::de::Error>(v: serde_json::Value, what: &str) -> Result<Option<String>, E> {
    match v {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::String(s) => Ok(Some(s)),
        serde_json::Value::Number(n) => Ok(Some(n.to_string())),
        serde_json::Value::Bool(b) => Ok(Some(b.to_string())),
        other => Err(E::custom(format!(
            "expected {what} of strings, got {} in it",
            kind_of(&other)
        ))),
    }
}

/// A list of strings as Jackson reads it: scalar items become their text, null items are dropped.
pub(crate) fn lenient_string_list<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<String>>, D::Error> {
    use serde::de::Error;
    match Option::<serde_json::Value>::deserialize(d)? {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Array(items)) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                out.extend(scalar_text::<D::Error>(item, "an array")?);
            }
            Ok(Some(out))
        }
        Some(other) => Err(D::Error::custom(format!(
            "expected an array of strings, got {}",
            kind_of(&other)
        ))),
    }
}

/// A string → string map as Jackson reads it: scalar values become their text, null stays null.
pub(crate) fn lenient_string_map<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<BTreeMap<String, Option<String>>>, D::Error> {
    use serde::de::Error;
    match Option::<serde_json::Value>::deserialize(d)? {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Object(map)) => map
            .into_iter()
            .map(|(k, v)| Ok((k, scalar_text::<D::Error>(v, "an object")?)))
            .collect::<Result<_, _>>()
            .map(Some),
        Some(other) => Err(D::Error::custom(format!(
            "expected an object of strings, got {}",
            kind_of(&other)
        ))),
    }
}

fn kind_of(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> FunctionDefaults {
        FunctionDefaults {
            timeout_ms: 30_000,
            concurrency: 4,
            queue_size: 100,
            max_retries: 3,
        }
    }

    fn resolve(json: &str) -> Result<FunctionSpec, SpecError> {
        serde_json::from_str::<FunctionSpecRequest>(json)
            .unwrap()
            .resolve(&defaults())
    }

    #[test]
    fn defaults_are_applied() {
        let s = resolve(r#"{"name":"f","image":"img"}"#).unwrap();
        assert_eq!(
            (s.timeout_ms, s.concurrency, s.queue_size, s.max_retries),
            (30_000, 4, 100, 3)
        );
        assert_eq!(s.execution_mode, ExecutionMode::Deployment);
        assert_eq!(s.runtime_mode, RuntimeMode::Http);
        assert!(s.command.is_empty() && s.env.is_empty());
        let sc = s.scaling_config.unwrap();
        assert_eq!(sc.strategy, Some(ScalingStrategy::Internal));
        assert_eq!((sc.min_replicas, sc.max_replicas), (Some(1), Some(10)));
        assert_eq!(sc.metrics, Some(vec![Some(default_metric())]));
        assert_eq!(sc.concurrency_control, Some(ConcurrencyControl::fixed()));
    }

    #[test]
    fn explicit_values_are_kept_even_zero_retries() {
        let s = resolve(
            r#"{"name":"f","image":"i","timeoutMs":"5","concurrency":2.0,"maxRetries":0,"executionMode":"LOCAL"}"#,
        )
        .unwrap();
        assert_eq!((s.timeout_ms, s.concurrency, s.max_retries), (5, 2, 0));
        assert_eq!(s.scaling_config, None);
    }

    #[test]
    fn field_validation_collects_every_failure() {
        let err = resolve(r#"{"name":" ","concurrency":0,"maxRetries":-1}"#).unwrap_err();
        assert_eq!(
            err,
            SpecError::Invalid(vec![
                "name: must not be blank".into(),
                "image: must not be blank".into(),
                "concurrency: must be greater than or equal to 1".into(),
                "maxRetries: must be greater than or equal to 0".into(),
            ])
        );
    }

    #[test]
    fn names_follow_the_published_pattern() {
        for ok in ["a", "echo", "A.b_c-9", &"x".repeat(63)] {
            assert!(name_is_valid(ok), "{ok}");
        }
        for bad in ["", "9a", "-a", "a b", "a/b", "a:b", &"x".repeat(64), "é"] {
            assert!(!name_is_valid(bad), "{bad}");
        }
    }

    #[test]
    fn scaling_rules_in_java_order() {
        let r = |sc: &str| {
            resolve(&format!(
                r#"{{"name":"f","image":"i","scalingConfig":{sc}}}"#
            ))
        };
        assert_eq!(
            r(r#"{"minReplicas":-1,"maxReplicas":0}"#).unwrap_err(),
            SpecError::Resolution("minReplicas must be >= 0".into())
        );
        assert_eq!(
            r(r#"{"maxReplicas":0}"#).unwrap_err(),
            SpecError::Resolution("maxReplicas must be >= 1".into())
        );
        assert_eq!(
            r(r#"{"minReplicas":5,"maxReplicas":2}"#).unwrap_err(),
            SpecError::Resolution("minReplicas must be <= maxReplicas".into())
        );
        assert_eq!(
            r(r#"{"metrics":[{"type":"cpu","target":"50"}]}"#).unwrap_err(),
            SpecError::Resolution("Unsupported INTERNAL scaling metric: cpu".into())
        );
        assert_eq!(
            r(r#"{"metrics":[null]}"#).unwrap_err(),
            SpecError::Resolution("Unsupported INTERNAL scaling metric: null".into())
        );
        assert!(r(r#"{"strategy":"HPA","metrics":[{"type":"cpu","target":50}]}"#).is_ok());
    }

    #[test]
    fn static_per_pod_target_is_clamped() {
        let s = resolve(
            r#"{"name":"f","image":"i","scalingConfig":{"concurrencyControl":{"mode":"STATIC_PER_POD","targetInFlightPerPod":50,"minTargetInFlightPerPod":10,"maxTargetInFlightPerPod":3}}}"#,
        )
        .unwrap();
        let cc = s.scaling_config.unwrap().concurrency_control.unwrap();
        assert_eq!(
            (
                cc.min_target_in_flight_per_pod,
                cc.max_target_in_flight_per_pod,
                cc.target_in_flight_per_pod
            ),
            (Some(3), Some(3), Some(3))
        );
        assert_eq!(cc.upscale_cooldown_ms, Some(30_000));
        let s = resolve(
            r#"{"name":"f","image":"i","scalingConfig":{"concurrencyControl":{"mode":"ADAPTIVE_PER_POD"}}}"#,
        )
        .unwrap();
        let cc = s.scaling_config.unwrap().concurrency_control.unwrap();
        assert_eq!(cc.target_in_flight_per_pod, Some(2));
        assert_eq!(cc.max_target_in_flight_per_pod, Some(8));
    }

    #[test]
    fn unknown_fields_are_ignored_and_wrong_types_refused() {
        let r =
            serde_json::from_str::<FunctionSpecRequest>(r#"{"name":"f","timeoutMS":1}"#).unwrap();
        assert_eq!(r.timeout_ms, None);
        let r = serde_json::from_str::<FunctionSpecRequest>(
            r#"{"name":"f","timeoutMs":2.7,"env":{"A":1,"B":null},"imagePullSecrets":["s",null,3]}"#,
        )
        .unwrap();
        assert_eq!(r.timeout_ms, Some(2));
        assert_eq!(
            r.env,
            Some(BTreeMap::from([
                ("A".into(), Some("1".into())),
                ("B".into(), None)
            ]))
        );
        assert_eq!(r.image_pull_secrets, Some(vec!["s".into(), "3".into()]));
        assert!(
            serde_json::from_str::<FunctionSpecRequest>(r#"{"name":"f","env":{"A":{}}}"#).is_err()
        );
        assert!(
            serde_json::from_str::<FunctionSpecRequest>(r#"{"name":"f","timeoutMs":"soon"}"#)
                .is_err()
        );
        assert!(serde_json::from_str::<FunctionSpecRequest>(r#"{"name":["f"]}"#).is_err());
        assert!(
            serde_json::from_str::<FunctionSpecRequest>(r#"{"name":"f","executionMode":"local"}"#)
                .is_err()
        );
        // A FunctionResponse's read-only fields are ignored like any unknown field.
        assert!(
            serde_json::from_str::<FunctionSpecRequest>(
                r#"{"name":"f","image":"i","effectiveExecutionMode":"POOL","deploymentBackend":"k8s"}"#
            )
            .is_ok()
        );
    }

    #[test]
    fn endpoint_urls_must_be_http() {
        let r =
            resolve(r#"{"name":"f","image":"i","executionMode":"POOL","endpointUrl":"ftp://x/"}"#);
        assert!(matches!(r, Err(SpecError::Invalid(d)) if d[0].starts_with("endpointUrl:")));
        assert!(resolve(r#"{"name":"f","image":"i","executionMode":"POOL","endpointUrl":"http://127.0.0.1:9/invoke"}"#).is_ok());
        // Blank means absent.
        let s = resolve(r#"{"name":"f","image":"i","executionMode":"POOL","endpointUrl":" "}"#)
            .unwrap();
        assert_eq!(s.endpoint_url, None);
    }
}
