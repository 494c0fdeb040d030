//! Async execution records, readable from every replica: key = execution id, value = the
//! core's record (opaque bytes), one revision per write.
//!
//! Every transition is a compare-and-set on the revision read, so two replicas racing on one
//! execution (a callback and a timeout, two attempts) cannot both win: the loser re-reads and
//! sees the winner's state. [`ExecutionRecords::transition`] packages that loop; as long as the
//! caller's step refuses to change a terminal record, a terminal state stays final cluster-wide.
//!
//! The bucket's `max_age` is the execution store TTL, counted from a record's last write.

use std::time::Duration;

use async_nats::jetstream::kv::{self, Operation};
use bytes::Bytes;

use super::names::execution_key;
use super::{BucketError, NatsConnection, Placement, bucket_config, ensure_bucket};

/// Largest record: an execution keeps its input and output, both bounded by the body limit.
pub const MAX_RECORD_BYTES: i32 = 8 * 1024 * 1024;
/// Compare-and-set attempts before a transition gives up (only under heavy contention on one
/// execution, which the protocol does not produce).
const MAX_CAS_ATTEMPTS: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum ExecutionStoreError {
    #[error("execution {0} already exists")]
    AlreadyExists(String),
    /// The record was written by someone else since it was read (or it expired).
    #[error("execution {0} changed concurrently")]
    Conflict(String),
    #[error("NATS KV unavailable: {0}")]
    Unavailable(String),
}

/// A record and the revision it was read at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    pub value: Bytes,
    pub revision: u64,
}

/// What [`ExecutionRecords::transition`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// The step's new value was written.
    Applied(Versioned),
    /// The step declined (e.g. the record is already terminal); the record as it stands.
    Unchanged(Versioned),
    /// No such record (never created, or expired).
    Missing,
}

/// The `P_executions` bucket.
#[derive(Clone)]
pub struct ExecutionRecords {
    kv: kv::Store,
}

impl ExecutionRecords {
    /// Opens the bucket; records expire `ttl` after their last write.
    pub async fn open(
        conn: &NatsConnection,
        ttl: Duration,
        placement: Placement,
    ) -> Result<ExecutionRecords, BucketError> {
        let config = bucket_config(
            conn.names.executions_bucket(),
            "nanofaas async execution records",
            ttl,
            MAX_RECORD_BYTES,
            placement,
        );
        Ok(ExecutionRecords {
            kv: ensure_bucket(&conn.jetstream, config).await?,
        })
    }

    pub async fn get(&self, execution_id: &str) -> Result<Option<Versioned>, ExecutionStoreError> {
        let entry = self
            .kv
            .entry(execution_key(execution_id))
            .await
            .map_err(|e| ExecutionStoreError::Unavailable(e.to_string()))?;
        Ok(entry
            .filter(|e| e.operation == Operation::Put)
            .map(|e| Versioned {
                value: e.value,
                revision: e.revision,
            }))
    }

    /// The record's values as they are written, starting with the current one (if any), until
    /// `accept` takes one or `until` passes; the value taken, else `None`.
    pub async fn wait_for(
        &self,
        execution_id: &str,
        until: tokio::time::Instant,
        mut accept: impl FnMut(&Bytes) -> bool,
    ) -> Result<Option<Bytes>, ExecutionStoreError> {
        use futures_util::StreamExt as _;
        let watching = async {
            let mut watch = self
                .kv
                .watch_with_history(execution_key(execution_id))
                .await
                .map_err(|e| ExecutionStoreError::Unavailable(e.to_string()))?;
            while let Some(entry) = watch.next().await {
                let entry = entry.map_err(|e| ExecutionStoreError::Unavailable(e.to_string()))?;
                if entry.operation == Operation::Put && accept(&entry.value) {
                    return Ok(Some(entry.value));
                }
            }
            Ok(None)
        };
        tokio::time::timeout_at(until, watching)
            .await
            .unwrap_or(Ok(None))
    }

    /// Stores a new record; `AlreadyExists` if the id is taken.
    pub async fn create(
        &self,
        execution_id: &str,
        value: Bytes,
    ) -> Result<u64, ExecutionStoreError> {
        self.kv
            .create(execution_key(execution_id), value)
            .await
            .map_err(|e| match e.kind() {
                kv::CreateErrorKind::AlreadyExists => {
                    ExecutionStoreError::AlreadyExists(execution_id.to_owned())
                }
                _ => ExecutionStoreError::Unavailable(e.to_string()),
            })
    }

    /// Removes a record (an enqueue refused after its record was written).
    pub async fn delete(&self, execution_id: &str) -> Result<(), ExecutionStoreError> {
        self.kv
            .delete(execution_key(execution_id))
            .await
            .map_err(|e| ExecutionStoreError::Unavailable(e.to_string()))
    }

    /// Replaces the record if it is still at `expected`; the new revision.
    pub async fn update(
        &self,
        execution_id: &str,
        value: Bytes,
        expected: u64,
    ) -> Result<u64, ExecutionStoreError> {
        self.kv
            .update(execution_key(execution_id), value, expected)
            .await
            .map_err(|e| match e.kind() {
                kv::UpdateErrorKind::WrongLastRevision => {
                    ExecutionStoreError::Conflict(execution_id.to_owned())
                }
                _ => ExecutionStoreError::Unavailable(e.to_string()),
            })
    }

    /// Read, apply `step`, compare-and-set; on a conflict re-read and apply again. `step` gets
    /// the current record and returns the new one, or `None` to leave it (a terminal record).
    pub async fn transition(
        &self,
        execution_id: &str,
        mut step: impl FnMut(&Bytes) -> Option<Bytes>,
    ) -> Result<Transition, ExecutionStoreError> {
        for _ in 0..MAX_CAS_ATTEMPTS {
            let Some(current) = self.get(execution_id).await? else {
                return Ok(Transition::Missing);
            };
            let Some(next) = step(&current.value) else {
                return Ok(Transition::Unchanged(current));
            };
            match self
                .update(execution_id, next.clone(), current.revision)
                .await
            {
                Ok(revision) => {
                    return Ok(Transition::Applied(Versioned {
                        value: next,
                        revision,
                    }));
                }
                Err(ExecutionStoreError::Conflict(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(ExecutionStoreError::Conflict(execution_id.to_owned()))
    }
}
