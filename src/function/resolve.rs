//! Registration: field validation (REFERENCE §1.6, DECISIONS 3) then defaults resolution (§2.2),
//! in the Java order, turning a `FunctionSpecRequest` into a `FunctionSpec`.

use super::limits::{
    DEFAULT_DOWNSCALE_COOLDOWN_MS, DEFAULT_HIGH_LOAD_THRESHOLD, DEFAULT_LOW_LOAD_THRESHOLD,
    DEFAULT_MAX_REPLICAS, DEFAULT_MAX_TARGET_IN_FLIGHT_PER_POD, DEFAULT_METRIC_KIND,
    DEFAULT_METRIC_TARGET, DEFAULT_MIN_REPLICAS, DEFAULT_MIN_TARGET_IN_FLIGHT_PER_POD,
    DEFAULT_TARGET_IN_FLIGHT_PER_POD, DEFAULT_UPSCALE_COOLDOWN_MS, FunctionDefaults,
    INTERNAL_METRICS, MAX_CONCURRENCY, MAX_NAME_LEN, MAX_QUEUE_SIZE, MAX_RETRIES, MAX_TIMEOUT_MS,
    NAME_PATTERN,
};
use super::request::{ConcurrencyControlRequest, FunctionSpecRequest, ScalingConfigRequest};
use super::spec::{
    ConcurrencyControl, ConcurrencyControlMode, ExecutionMode, FunctionSpec, PerPodControl,
    RuntimeMode, Scaling, ScalingConfig, ScalingMetric, ScalingStrategy,
};

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
        && bytes.len() <= MAX_NAME_LEN
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
        let at_most = |field: &str, v: Option<i64>, max: u64, details: &mut Vec<String>| {
            if let Some(v) = v {
                if v > max as i64 {
                    details.push(format!("{field}: must be less than or equal to {max}"));
                }
            }
        };
        at_most("timeoutMs", self.timeout_ms, MAX_TIMEOUT_MS, &mut details);
        at_most(
            "concurrency",
            self.concurrency,
            MAX_CONCURRENCY,
            &mut details,
        );
        at_most("queueSize", self.queue_size, MAX_QUEUE_SIZE, &mut details);
        at_most("maxRetries", self.max_retries, MAX_RETRIES, &mut details);
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
        let scaling = if execution_mode == ExecutionMode::Deployment {
            Scaling::Resolved(resolve_scaling(self.scaling_config).map_err(SpecError::Resolution)?)
        } else {
            Scaling::AsGiven(self.scaling_config)
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
            scaling,
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

pub(super) fn default_metric() -> ScalingMetric {
    ScalingMetric {
        kind: Some(DEFAULT_METRIC_KIND.to_owned()),
        target: Some(DEFAULT_METRIC_TARGET.to_owned()),
        query: None,
    }
}

fn resolve_scaling(given: Option<ScalingConfigRequest>) -> Result<ScalingConfig, String> {
    let given = given.unwrap_or_default();
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
    let min = given.min_replicas.unwrap_or(DEFAULT_MIN_REPLICAS as i64);
    let max = given.max_replicas.unwrap_or(DEFAULT_MAX_REPLICAS as i64);
    if min < 0 {
        return Err("minReplicas must be >= 0".to_owned());
    }
    if max < 1 {
        return Err("maxReplicas must be >= 1".to_owned());
    }
    if min > max {
        return Err("minReplicas must be <= maxReplicas".to_owned());
    }
    // Checked above: 0 <= min <= max, 1 <= max.
    Ok(ScalingConfig {
        strategy,
        min_replicas: min as u64,
        max_replicas: max as u64,
        metrics,
        concurrency_control: resolve_concurrency_control(given.concurrency_control),
    })
}

fn resolve_concurrency_control(given: Option<ConcurrencyControlRequest>) -> ConcurrencyControl {
    let Some(c) = given else {
        return ConcurrencyControl::Fixed;
    };
    let per_pod = || {
        let max = c
            .max_target_in_flight_per_pod
            .map_or(DEFAULT_MAX_TARGET_IN_FLIGHT_PER_POD, |v| v.max(1));
        let min = c
            .min_target_in_flight_per_pod
            .map_or(DEFAULT_MIN_TARGET_IN_FLIGHT_PER_POD, |v| v.max(1))
            .min(max);
        let target = c
            .target_in_flight_per_pod
            .unwrap_or(DEFAULT_TARGET_IN_FLIGHT_PER_POD)
            .clamp(min, max);
        // All three are at least 1 here.
        PerPodControl {
            target_in_flight_per_pod: target as u64,
            min_target_in_flight_per_pod: min as u64,
            max_target_in_flight_per_pod: max as u64,
            upscale_cooldown_ms: c.upscale_cooldown_ms.unwrap_or(DEFAULT_UPSCALE_COOLDOWN_MS),
            downscale_cooldown_ms: c
                .downscale_cooldown_ms
                .unwrap_or(DEFAULT_DOWNSCALE_COOLDOWN_MS),
            high_load_threshold: c.high_load_threshold.unwrap_or(DEFAULT_HIGH_LOAD_THRESHOLD),
            low_load_threshold: c.low_load_threshold.unwrap_or(DEFAULT_LOW_LOAD_THRESHOLD),
        }
    };
    match c.mode {
        None | Some(ConcurrencyControlMode::Fixed) => ConcurrencyControl::Fixed,
        Some(ConcurrencyControlMode::StaticPerPod) => ConcurrencyControl::StaticPerPod(per_pod()),
        Some(ConcurrencyControlMode::AdaptivePerPod) => {
            ConcurrencyControl::AdaptivePerPod(per_pod())
        }
    }
}
