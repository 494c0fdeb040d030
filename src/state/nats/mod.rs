//! NATS JetStream building blocks for the shared-state backend (issue 9): connection, the
//! registry KV with its watch, the durable invocation queue, execution records, idempotency
//! claims, the leader lease and the cross-replica callback route.
//!
//! Each type here speaks bytes, `serde` values and small structs of its own, never the core's
//! domain types, so the core can put these behind its own ports. Every name (bucket, stream,
//! subject) derives from one [`Names`] so several control planes can share one NATS by prefix.
//! `docs/ha.md` lists the names and the guarantee each one gives.

pub mod backend;
pub mod callbacks;
pub mod catalog;
pub mod connect;
pub mod dead_letters;
pub mod delayed;
pub mod durable;
pub mod kv_executions;
pub mod kv_functions;
pub mod kv_idempotency;
pub mod leader;
pub mod lease;
pub mod metrics;
pub mod names;
pub mod queue;
pub mod queue_gauges;

pub use connect::{
    ConnectError, ConnectionReporter, ConnectionState, NatsConnection, NatsSettings,
};
pub use names::Names;

use std::time::Duration;

/// Why a bucket could not be opened or created.
#[derive(Debug, thiserror::Error)]
#[error("opening KV bucket {bucket}: {source}")]
pub struct BucketError {
    pub bucket: String,
    #[source]
    pub source: async_nats::jetstream::context::CreateKeyValueError,
}

/// Where buckets and streams keep their data and how many copies a cluster keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// Stream replicas in a JetStream cluster (1 for a single server; 3 is the usual HA value).
    pub replicas: usize,
}

impl Default for Placement {
    fn default() -> Self {
        Placement { replicas: 1 }
    }
}

/// Creates the bucket, or brings an existing one to this configuration (a changed TTL from the
/// configuration applies on the next start instead of failing it).
pub(crate) async fn ensure_bucket(
    jetstream: &async_nats::jetstream::Context,
    config: async_nats::jetstream::kv::Config,
) -> Result<async_nats::jetstream::kv::Store, BucketError> {
    let bucket = config.bucket.clone();
    jetstream
        .create_or_update_key_value(config)
        .await
        .map_err(|source| BucketError { bucket, source })
}

/// The KV configuration shared by every bucket here: file storage (survives a broker restart),
/// one value per key (history is not read, and a longer one only costs disk), bounded values.
pub(crate) fn bucket_config(
    bucket: String,
    description: &str,
    max_age: Duration,
    max_value_size: i32,
    placement: Placement,
) -> async_nats::jetstream::kv::Config {
    async_nats::jetstream::kv::Config {
        bucket,
        description: description.to_owned(),
        history: 1,
        max_age,
        max_value_size,
        storage: async_nats::jetstream::stream::StorageType::File,
        num_replicas: placement.replicas,
        ..Default::default()
    }
}
