//! The function registry bucket: create-only registration, compare-and-set updates, delete, and
//! a watch every replica mirrors into its in-memory registry.
//!
//! Keys are function names through [`function_key`]; values are opaque bytes (the core's JSON
//! registration record). The revision of an entry is its stream sequence, so it grows with every
//! write to the bucket and orders events across keys.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::kv::{self, Operation};
use bytes::Bytes;
use futures_util::StreamExt as _;
use tokio_util::sync::CancellationToken;

use super::connect::{ConnectionReporter, ConnectionState};
use super::names::{decode_token, function_key};
use super::{BucketError, NatsConnection, Placement, bucket_config, ensure_bucket};

/// Largest registration record: a spec is a few kilobytes; this bounds the bucket.
pub const MAX_RECORD_BYTES: i32 = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FunctionStoreError {
    #[error("function {0} already exists")]
    AlreadyExists(String),
    /// The stored revision is not the expected one (someone else wrote first) or the key is gone.
    #[error("function {0} changed concurrently")]
    Conflict(String),
    #[error("NATS KV unavailable: {0}")]
    Unavailable(String),
}

/// One stored registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionEntry {
    pub name: String,
    pub value: Bytes,
    pub revision: u64,
}

/// A change seen by [`FunctionWatch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FunctionEvent {
    Put {
        name: String,
        value: Bytes,
        revision: u64,
    },
    Delete {
        name: String,
        revision: u64,
    },
}

/// The `P_functions` bucket.
#[derive(Clone)]
pub struct FunctionStore {
    kv: kv::Store,
    connection: ConnectionReporter,
}

impl FunctionStore {
    pub async fn open(
        conn: &NatsConnection,
        placement: Placement,
    ) -> Result<FunctionStore, BucketError> {
        let config = bucket_config(
            conn.names.functions_bucket(),
            "nanofaas function registrations",
            Duration::ZERO,
            MAX_RECORD_BYTES,
            placement,
        );
        Ok(FunctionStore {
            kv: ensure_bucket(&conn.jetstream, config).await?,
            connection: conn.reporter(),
        })
    }

    /// Stores a new function; `AlreadyExists` when the name is taken (a deleted name is free).
    pub async fn create(&self, name: &str, value: Bytes) -> Result<u64, FunctionStoreError> {
        self.kv
            .create(function_key(name), value)
            .await
            .map_err(|e| match e.kind() {
                kv::CreateErrorKind::AlreadyExists => {
                    FunctionStoreError::AlreadyExists(name.to_owned())
                }
                _ => FunctionStoreError::Unavailable(e.to_string()),
            })
    }

    /// Replaces the record if its revision is still `expected`; the new revision.
    pub async fn update(
        &self,
        name: &str,
        value: Bytes,
        expected: u64,
    ) -> Result<u64, FunctionStoreError> {
        self.kv
            .update(function_key(name), value, expected)
            .await
            .map_err(|e| match e.kind() {
                kv::UpdateErrorKind::WrongLastRevision => {
                    FunctionStoreError::Conflict(name.to_owned())
                }
                _ => FunctionStoreError::Unavailable(e.to_string()),
            })
    }

    /// The current record, `None` when absent or deleted.
    pub async fn get(&self, name: &str) -> Result<Option<FunctionEntry>, FunctionStoreError> {
        let entry = self
            .kv
            .entry(function_key(name))
            .await
            .map_err(|e| FunctionStoreError::Unavailable(e.to_string()))?;
        Ok(entry
            .filter(|e| e.operation == Operation::Put)
            .map(|e| FunctionEntry {
                name: name.to_owned(),
                value: e.value,
                revision: e.revision,
            }))
    }

    /// Deletes the record if its revision is still `expected` (so a delete racing an update
    /// of the same function is refused instead of erasing the newer record).
    pub async fn delete(&self, name: &str, expected: u64) -> Result<(), FunctionStoreError> {
        self.kv
            .delete_expect_revision(function_key(name), Some(expected))
            .await
            .map_err(|e| match e.kind() {
                kv::DeleteErrorKind::WrongLastRevision => {
                    FunctionStoreError::Conflict(name.to_owned())
                }
                _ => FunctionStoreError::Unavailable(e.to_string()),
            })
    }

    /// Every function now in the bucket, and a watch of every change after it.
    pub async fn watch(
        &self,
        stop: CancellationToken,
    ) -> Result<(Snapshot, FunctionWatch), FunctionStoreError> {
        let snapshot = load_snapshot(&self.kv).await?;
        let watch = FunctionWatch {
            kv: self.kv.clone(),
            connection: self.connection.clone(),
            connection_closed: false,
            inner: None,
            last_revision: snapshot.revision,
            stop,
        };
        Ok((snapshot, watch))
    }
}

/// The functions present when a watch was opened.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub entries: Vec<FunctionEntry>,
    /// The bucket revision the snapshot reflects; the watch yields only later changes.
    pub revision: u64,
}

/// How long the snapshot waits for the next entry before it checks whether the bucket emptied
/// meanwhile (entries expire or get purged): the watch itself says nothing about an empty bucket.
const SNAPSHOT_IDLE: Duration = Duration::from_secs(1);
/// Idle waits before the snapshot gives up (the caller retries, e.g. at start-up).
const MAX_IDLE_ROUNDS: u32 = 10;

/// Reads the latest entry of every key: a watch with "last per subject" delivery, read until
/// the server reports nothing pending.
async fn load_snapshot(kv: &kv::Store) -> Result<Snapshot, FunctionStoreError> {
    let unavailable = |e: &dyn std::fmt::Display| FunctionStoreError::Unavailable(e.to_string());
    let mut snapshot = Snapshot::default();
    let mut latest: BTreeMap<String, FunctionEntry> = BTreeMap::new();
    let mut idle_rounds = 0;
    if kv.status().await.map_err(|e| unavailable(&e))?.values() == 0 {
        return Ok(snapshot);
    }
    // "With history" is last-per-subject delivery; `watch_all` would deliver only new writes.
    let mut watch = kv
        .watch_with_history(">")
        .await
        .map_err(|e| unavailable(&e))?;
    loop {
        let entry = match tokio::time::timeout(SNAPSHOT_IDLE, watch.next()).await {
            Ok(Some(Ok(entry))) => entry,
            Ok(Some(Err(e))) => return Err(unavailable(&e)),
            Ok(None) => return Err(unavailable(&"the snapshot watch ended")),
            Err(_idle) => {
                if kv.status().await.map_err(|e| unavailable(&e))?.values() == 0 {
                    break;
                }
                idle_rounds += 1;
                if idle_rounds >= MAX_IDLE_ROUNDS {
                    return Err(unavailable(&"the snapshot stalled"));
                }
                continue;
            }
        };
        snapshot.revision = snapshot.revision.max(entry.revision);
        let pending = entry.delta;
        match (decode_token(&entry.key), entry.operation) {
            (Some(name), Operation::Put) => {
                latest.insert(
                    name.clone(),
                    FunctionEntry {
                        name,
                        value: entry.value,
                        revision: entry.revision,
                    },
                );
            }
            (Some(name), Operation::Delete | Operation::Purge) => {
                latest.remove(&name);
            }
            (None, _) => {
                tracing::warn!(key = %entry.key, "ignoring a foreign key in the functions bucket")
            }
        }
        if pending == 0 {
            break;
        }
    }
    snapshot.entries = latest.into_values().collect();
    Ok(snapshot)
}

/// How long to wait between attempts to re-open a broken watch.
const REWATCH_BACKOFF: Duration = Duration::from_millis(250);

/// The changes after a [`Snapshot`], in revision order.
///
/// Robust to connection losses and broker restarts: when the underlying watch ends or errors,
/// or the client reconnects, it is re-opened from the last revision seen plus one, so no change
/// is skipped or repeated (the bucket keeps each key's latest entry, delete markers included,
/// so a change made while this replica was cut off is still there to be read). Re-opening on
/// reconnect matters after a broker restart: the watch's ephemeral consumer died with the broker,
/// and the client would notice only after missing two idle heartbeats (about 10 s, measured).
pub struct FunctionWatch {
    kv: kv::Store,
    connection: ConnectionReporter,
    connection_closed: bool,
    inner: Option<kv::Watch>,
    last_revision: u64,
    stop: CancellationToken,
}

impl FunctionWatch {
    /// The next change; `None` once the stop token is cancelled.
    pub async fn next(&mut self) -> Option<FunctionEvent> {
        loop {
            if self.stop.is_cancelled() {
                return None;
            }
            let Some(inner) = self.inner.as_mut() else {
                match self
                    .kv
                    .watch_all_from_revision(self.last_revision + 1)
                    .await
                {
                    Ok(watch) => self.inner = Some(watch),
                    Err(e) => {
                        tracing::warn!(error = %e, "re-opening the functions watch failed");
                        Self::pause(&self.stop).await;
                    }
                }
                continue;
            };
            let item = tokio::select! {
                _ = self.stop.cancelled() => return None,
                item = inner.next() => item,
                state = self.connection.changed(), if !self.connection_closed => {
                    match state {
                        Some(ConnectionState::Connected) => {
                            tracing::info!(revision = self.last_revision, "reconnected; re-opening the functions watch");
                            self.inner = None;
                        }
                        Some(_) => {}
                        // The client is gone; the watch itself will end.
                        None => self.connection_closed = true,
                    }
                    continue;
                }
            };
            let entry = match item {
                Some(Ok(entry)) => entry,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, revision = self.last_revision, "functions watch broke; re-opening");
                    self.inner = None;
                    Self::pause(&self.stop).await;
                    continue;
                }
                None => {
                    tracing::warn!(
                        revision = self.last_revision,
                        "functions watch ended; re-opening"
                    );
                    self.inner = None;
                    Self::pause(&self.stop).await;
                    continue;
                }
            };
            if entry.revision <= self.last_revision {
                continue;
            }
            self.last_revision = entry.revision;
            let Some(name) = decode_token(&entry.key) else {
                tracing::warn!(key = %entry.key, "ignoring a foreign key in the functions bucket");
                continue;
            };
            return Some(match entry.operation {
                Operation::Put => FunctionEvent::Put {
                    name,
                    value: entry.value,
                    revision: entry.revision,
                },
                Operation::Delete | Operation::Purge => FunctionEvent::Delete {
                    name,
                    revision: entry.revision,
                },
            });
        }
    }

    /// The revision of the last change handed out (or of the snapshot).
    pub fn last_revision(&self) -> u64 {
        self.last_revision
    }

    /// Waits before re-opening. Takes the token, not `&self`, so `next` stays `Send` (the
    /// inner watch is not `Sync`) and the watch can run in a spawned task.
    async fn pause(stop: &CancellationToken) {
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(REWATCH_BACKOFF) => {}
        }
    }
}
