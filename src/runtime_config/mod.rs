//! Live configuration (REFERENCE §5.4): a revisioned snapshot of the settings that can change at
//! run time — the rate limit and the sync-queue switches and limits — with validation, optimistic
//! concurrency on `revision`, and application to the live components.
//!
//! Invariants: the revision grows by exactly one per applied patch; concurrent patches against
//! the same revision have one winner; a snapshot is validated as a whole before it is applied.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize, Serializer};

use crate::admission::RateLimiter;
use crate::config::{Config, format_iso_duration, parse_iso_duration};
use crate::metrics::Metrics;
use crate::queue::SyncSettings;
use crate::support::lenient::{lenient_bool, lenient_int, lenient_string};
use crate::support::{lock, schema};

/// The live settings (GET body; `effectiveConfig` of a PATCH answer).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = RuntimeConfigSnapshot)]
pub struct Snapshot {
    pub revision: u64,
    pub rate_max_per_second: u64,
    pub sync_queue_enabled: bool,
    pub sync_queue_admission_enabled: bool,
    /// ISO-8601 duration.
    #[serde(serialize_with = "iso")]
    #[schema(value_type = String)]
    pub sync_queue_max_estimated_wait: Duration,
    /// ISO-8601 duration.
    #[serde(serialize_with = "iso")]
    #[schema(value_type = String)]
    pub sync_queue_max_queue_wait: Duration,
    pub sync_queue_retry_after_seconds: u32,
}

fn iso<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_iso_duration(*d))
}

/// A PATCH / validate request as received: durations are ISO-8601 strings. The values are
/// checked together with the current ones (422 when the result is invalid, e.g.
/// `syncQueueMaxEstimatedWait > syncQueueMaxQueueWait`).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = RuntimeConfigPatchRequest)]
pub struct PatchRequest {
    #[serde(default, deserialize_with = "lenient_int")]
    #[schema(schema_with = expected_revision)]
    pub expected_revision: Option<i64>,
    #[serde(default, deserialize_with = "lenient_int")]
    #[schema(schema_with = rate_max_per_second)]
    pub rate_max_per_second: Option<i64>,
    #[serde(default, deserialize_with = "lenient_bool")]
    #[schema(schema_with = switch)]
    pub sync_queue_enabled: Option<bool>,
    #[serde(default, deserialize_with = "lenient_bool")]
    #[schema(schema_with = switch)]
    pub sync_queue_admission_enabled: Option<bool>,
    // Jackson binds a number to these String fields as its text (`5` → "5"), which then fails
    // as a duration with the field/value error body (REFERENCE §5.4), not as an unreadable body.
    #[serde(default, deserialize_with = "lenient_string")]
    #[schema(schema_with = duration)]
    pub sync_queue_max_estimated_wait: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    #[schema(schema_with = duration)]
    pub sync_queue_max_queue_wait: Option<String>,
    #[serde(default, deserialize_with = "lenient_int")]
    #[schema(schema_with = retry_after_seconds)]
    pub sync_queue_retry_after_seconds: Option<i64>,
}

fn expected_revision() -> utoipa::openapi::schema::Schema {
    schema::int(
        i64::MIN,
        i64::MAX,
        18,
        "Required by PATCH (400 without), ignored by validate",
    )
}
fn rate_max_per_second() -> utoipa::openapi::schema::Schema {
    schema::int(1, i64::MAX, 18, "Global invocations per second")
}
fn switch() -> utoipa::openapi::schema::Schema {
    schema::boolean("A module switch")
}
fn duration() -> utoipa::openapi::schema::Schema {
    schema::iso_duration("ISO-8601 duration, positive (400 when unreadable)")
}
fn retry_after_seconds() -> utoipa::openapi::schema::Schema {
    schema::int(1, 86_400, 4, "`Retry-After` of sync-queue rejections")
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    #[error("expectedRevision is required")]
    MissingRevision,
    #[error("Invalid duration for {field}")]
    InvalidDuration { field: &'static str, value: String },
    #[error("Runtime config validation failed")]
    Invalid(Vec<String>),
    #[error("Revision mismatch: expected {expected} but current is {current}")]
    RevisionMismatch { expected: i64, current: u64 },
}

/// The result of an applied PATCH.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = RuntimeConfigPatchResponse)]
pub struct Applied {
    pub revision: u64,
    pub effective_config: Snapshot,
    pub applied_at: String,
    pub change_id: String,
    pub warnings: Vec<String>,
}

pub struct RuntimeConfigService {
    current: Mutex<Snapshot>,
    limiter: Arc<RateLimiter>,
    sync: Arc<SyncSettings>,
    metrics: Arc<Metrics>,
}

/// A negative duration reads as zero, which validation then refuses as not positive.
fn parse_patch_duration(field: &'static str, value: &str) -> Result<Duration, PatchError> {
    let text = value.trim();
    if let Some(d) = parse_iso_duration(text) {
        return Ok(d);
    }
    let unsigned = text.replacen('-', "", 2);
    if unsigned != text && parse_iso_duration(&unsigned).is_some() {
        return Ok(Duration::ZERO);
    }
    Err(PatchError::InvalidDuration {
        field,
        value: value.to_owned(),
    })
}

impl RuntimeConfigService {
    pub fn new(
        config: &Config,
        limiter: Arc<RateLimiter>,
        sync: Arc<SyncSettings>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let snapshot = Snapshot {
            revision: 0,
            rate_max_per_second: limiter.max_per_second(),
            sync_queue_enabled: sync.enabled(),
            // A disabled module reads as its no-op (REFERENCE §0: admission off).
            sync_queue_admission_enabled: sync.enabled() && sync.admission_enabled(),
            sync_queue_max_estimated_wait: sync.max_estimated_wait(),
            sync_queue_max_queue_wait: sync.max_queue_wait(),
            sync_queue_retry_after_seconds: config.sync_queue.retry_after_seconds,
        };
        metrics.runtime_config_revision.set(0);
        RuntimeConfigService {
            current: Mutex::new(snapshot),
            limiter,
            sync,
            metrics,
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        lock(&self.current).clone()
    }

    /// The snapshot `patch` would produce from `base`, validated (REFERENCE §5.4 steps 2–3).
    fn merged(base: &Snapshot, patch: &PatchRequest) -> Result<Snapshot, PatchError> {
        let estimated = patch
            .sync_queue_max_estimated_wait
            .as_deref()
            .map(|v| parse_patch_duration("syncQueueMaxEstimatedWait", v))
            .transpose()?;
        let queue_wait = patch
            .sync_queue_max_queue_wait
            .as_deref()
            .map(|v| parse_patch_duration("syncQueueMaxQueueWait", v))
            .transpose()?;
        let mut errors = Vec::new();
        let rate = patch
            .rate_max_per_second
            .unwrap_or(base.rate_max_per_second as i64);
        if rate <= 0 {
            errors.push(format!("rateMaxPerSecond must be > 0, got {rate}"));
        }
        let estimated = estimated.unwrap_or(base.sync_queue_max_estimated_wait);
        let queue_wait = queue_wait.unwrap_or(base.sync_queue_max_queue_wait);
        if estimated.is_zero() {
            errors.push("syncQueueMaxEstimatedWait must be > 0".to_owned());
        }
        if queue_wait.is_zero() {
            errors.push("syncQueueMaxQueueWait must be > 0".to_owned());
        }
        if !estimated.is_zero() && !queue_wait.is_zero() && estimated > queue_wait {
            errors.push("syncQueueMaxEstimatedWait must be <= syncQueueMaxQueueWait".to_owned());
        }
        let retry_after = patch
            .sync_queue_retry_after_seconds
            .unwrap_or(i64::from(base.sync_queue_retry_after_seconds));
        if retry_after < 1 {
            errors.push(format!(
                "syncQueueRetryAfterSeconds must be >= 1, got {retry_after}"
            ));
        }
        if retry_after > 86_400 {
            errors.push(format!(
                "syncQueueRetryAfterSeconds must be <= 86400, got {retry_after}"
            ));
        }
        if !errors.is_empty() {
            return Err(PatchError::Invalid(errors));
        }
        Ok(Snapshot {
            revision: base.revision,
            rate_max_per_second: rate as u64,
            sync_queue_enabled: patch.sync_queue_enabled.unwrap_or(base.sync_queue_enabled),
            sync_queue_admission_enabled: patch
                .sync_queue_admission_enabled
                .unwrap_or(base.sync_queue_admission_enabled),
            sync_queue_max_estimated_wait: estimated,
            sync_queue_max_queue_wait: queue_wait,
            sync_queue_retry_after_seconds: retry_after as u32,
        })
    }

    /// `POST /v1/admin/runtime-config/validate`.
    pub fn validate(&self, patch: &PatchRequest) -> Result<(), PatchError> {
        Self::merged(&self.snapshot(), patch).map(|_| ())
    }

    /// `PATCH /v1/admin/runtime-config`.
    pub fn apply(&self, patch: &PatchRequest) -> Result<Applied, PatchError> {
        let expected = patch.expected_revision.ok_or(PatchError::MissingRevision)?;
        let started = Instant::now();
        let mut current = lock(&self.current);
        let mut next = Self::merged(&current, patch)?;
        if expected < 0 || expected as u64 != current.revision {
            return Err(PatchError::RevisionMismatch {
                expected,
                current: current.revision,
            });
        }
        next.revision = current.revision + 1;
        self.limiter.set_max_per_second(next.rate_max_per_second);
        self.sync.set_enabled(next.sync_queue_enabled);
        self.sync
            .set_admission_enabled(next.sync_queue_admission_enabled);
        self.sync
            .set_max_estimated_wait(next.sync_queue_max_estimated_wait);
        self.sync.set_max_queue_wait(next.sync_queue_max_queue_wait);
        self.sync
            .set_retry_after_seconds(next.sync_queue_retry_after_seconds);
        *current = next.clone();
        drop(current);
        self.metrics
            .runtime_config_revision
            .set(next.revision as i64);
        self.metrics.runtime_config_update("success");
        self.metrics.runtime_config_apply.record(started.elapsed());
        tracing::info!(revision = next.revision, "runtime configuration applied");
        Ok(Applied {
            revision: next.revision,
            effective_config: next,
            applied_at: crate::model::format_instant(chrono::Utc::now()),
            change_id: uuid::Uuid::new_v4().to_string(),
            warnings: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests;
