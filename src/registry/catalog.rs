//! The registry's port to a shared function catalog (issue 9, guarantee 1 of docs/ha.md), and
//! the record format every replica reads.
//!
//! With a catalog, every registration is first claimed there (create-only: of two replicas
//! racing on one name, one wins and the other answers 409), replica changes are compare-and-set
//! on the record's revision, and a delete removes the record before anything is torn down, so
//! exactly one replica deprovisions. Other replicas learn of each change through
//! [`RemoteChange`]s that the adapter's watch hands to `FunctionRegistry::apply_remote`.
//! Without a catalog (the memory backend) none of this runs.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::deploy::BoxFuture;
use crate::function::{ExecutionMode, FunctionResponse, FunctionSpecRequest};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    #[error("the name is taken in the catalog")]
    AlreadyExists,
    /// The record changed (or went) since the revision given.
    #[error("the catalog record changed concurrently")]
    Conflict,
    #[error("function catalog unavailable: {0}")]
    Unavailable(String),
}

/// Where registrations live so that every replica sees them. Values are [`encode`]d records;
/// revisions grow with every write.
pub trait FunctionCatalog: Send + Sync {
    /// Whether a write can be tried now (a lost broker answers `false` at once, so a request
    /// does not wait out a client timeout).
    fn is_available(&self) -> bool;
    /// Stores a new record; `AlreadyExists` when the name is taken.
    fn create<'a>(
        &'a self,
        name: &'a str,
        record: Bytes,
    ) -> BoxFuture<'a, Result<u64, CatalogError>>;
    /// Replaces the record if its revision is still `expected`; the new revision.
    fn update<'a>(
        &'a self,
        name: &'a str,
        record: Bytes,
        expected: u64,
    ) -> BoxFuture<'a, Result<u64, CatalogError>>;
    /// Deletes the record if its revision is still `expected`.
    fn delete<'a>(
        &'a self,
        name: &'a str,
        expected: u64,
    ) -> BoxFuture<'a, Result<(), CatalogError>>;
    /// The current record and its revision.
    fn get<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<(Bytes, u64)>, CatalogError>>;
}

/// A change another replica (or this one) made, as the catalog's watch reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteChange {
    Put {
        name: String,
        record: Bytes,
        revision: u64,
    },
    Delete {
        name: String,
        revision: u64,
    },
}

/// Record format version; a reader skips records of a version it does not know.
const VERSION: u32 = 1;

#[derive(Serialize)]
struct RecordOut<'a> {
    v: u32,
    /// A claim taken before provisioning: the name is taken but the function is not usable yet,
    /// so other replicas do not adopt it.
    pending: bool,
    /// When a pending claim was taken (Unix milliseconds): a claim older than
    /// [`STALE_PENDING_CLAIM`] belongs to a replica that died while provisioning.
    #[serde(rename = "claimedAt", skip_serializing_if = "Option::is_none")]
    claimed_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    replicas: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    function: Option<FunctionResponse<'a>>,
}

/// How old a pending claim must be before another registration of the name may take it over:
/// longer than any provisioning takes (container-local and Kubernetes readiness waits are
/// minutes at most), so a live registration is never overtaken.
pub const STALE_PENDING_CLAIM: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// The claim written before a DEPLOYMENT function is provisioned.
pub fn encode_pending() -> Bytes {
    encode_record(None, None, true)
}

/// The record of a registered function: its response body (which registers as it was: the
/// request fields with every default applied, the endpoint and modes) and, once scaled through
/// the API or the autoscaler, its replica count.
pub fn encode(function: FunctionResponse<'_>, replicas: Option<u32>) -> Bytes {
    encode_record(Some(function), replicas, false)
}

fn encode_record(
    function: Option<FunctionResponse<'_>>,
    replicas: Option<u32>,
    pending: bool,
) -> Bytes {
    let out = RecordOut {
        v: VERSION,
        pending,
        claimed_at: pending.then(|| chrono::Utc::now().timestamp_millis()),
        replicas,
        function,
    };
    // Serialising plain strings, numbers and enums cannot fail.
    Bytes::from(serde_json::to_vec(&out).unwrap_or_default())
}

#[derive(Deserialize)]
struct RecordIn {
    v: u32,
    #[serde(default)]
    pending: bool,
    #[serde(default, rename = "claimedAt")]
    claimed_at: Option<i64>,
    #[serde(default)]
    function: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Modes {
    requested_execution_mode: ExecutionMode,
    effective_execution_mode: ExecutionMode,
    #[serde(default)]
    deployment_backend: Option<String>,
    #[serde(default)]
    degradation_reason: Option<String>,
    #[serde(default)]
    endpoint_url: Option<String>,
}

/// A decoded record.
pub enum Record {
    /// A claim taken before provisioning, and when (Unix milliseconds; absent in older records).
    Pending {
        claimed_at: Option<i64>,
    },
    Ready(Box<ReadyRecord>),
}

pub struct ReadyRecord {
    pub request: FunctionSpecRequest,
    pub requested_mode: ExecutionMode,
    pub effective_mode: ExecutionMode,
    pub deployment_backend: Option<String>,
    pub degradation_reason: Option<String>,
    pub endpoint_url: Option<String>,
}

pub fn decode(bytes: &[u8]) -> Result<Record, String> {
    let record: RecordIn = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if record.v != VERSION {
        return Err(format!("unknown record version {}", record.v));
    }
    if record.pending {
        return Ok(Record::Pending {
            claimed_at: record.claimed_at,
        });
    }
    let function = record.function.ok_or("record without a function")?;
    let modes: Modes = serde_json::from_value(function.clone()).map_err(|e| e.to_string())?;
    let request: FunctionSpecRequest =
        serde_json::from_value(function).map_err(|e| e.to_string())?;
    Ok(Record::Ready(Box::new(ReadyRecord {
        request,
        requested_mode: modes.requested_execution_mode,
        effective_mode: modes.effective_execution_mode,
        deployment_backend: modes.deployment_backend,
        degradation_reason: modes.degradation_reason,
        endpoint_url: modes.endpoint_url,
    })))
}

/// Whether a pending claim taken at `claimed_at` (Unix milliseconds) is stale at `now_ms`; a
/// claim without a time (an older record) counts as stale.
pub fn pending_claim_is_stale(claimed_at: Option<i64>, now_ms: i64) -> bool {
    claimed_at.is_none_or(|at| now_ms.saturating_sub(at) > STALE_PENDING_CLAIM.as_millis() as i64)
}
