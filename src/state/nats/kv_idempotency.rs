//! Idempotency-Key claims shared by every replica: the first `:invoke`/`:enqueue` with a key
//! creates the claim and runs; any other, on any replica, reads the winner's execution id.
//!
//! The key is SHA-256 of the function name and the client's key, hex-encoded: a client key is
//! free text of any length, a KV key is a bounded subject token. Claims expire with the bucket's
//! `max_age` (5 minutes, the contract's TTL), counted from the claim.

use std::time::Duration;

use async_nats::jetstream::kv::{self, Operation};
use bytes::Bytes;

use super::{BucketError, NatsConnection, Placement, bucket_config, ensure_bucket};

/// How long a claim holds (REFERENCE: idempotency keys live 5 minutes).
pub const CLAIM_TTL: Duration = Duration::from_secs(300);
/// An execution id is a UUID; this leaves room for any id scheme.
const MAX_VALUE_BYTES: i32 = 1024;
/// A claim that vanishes between "exists" and "read" (it expired) is retried this often.
const MAX_ATTEMPTS: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error("NATS KV unavailable: {0}")]
    Unavailable(String),
    #[error("idempotency claim kept changing under contention")]
    Contended,
}

/// The outcome of [`IdempotencyClaims::claim`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This caller owns the key; `revision` lets it release the claim.
    Won { revision: u64 },
    /// Another invocation owns the key: its execution id.
    Taken { execution_id: String },
}

/// The `P_idempotency` bucket.
#[derive(Clone)]
pub struct IdempotencyClaims {
    kv: kv::Store,
}

impl IdempotencyClaims {
    pub async fn open(
        conn: &NatsConnection,
        ttl: Duration,
        placement: Placement,
    ) -> Result<IdempotencyClaims, BucketError> {
        let config = bucket_config(
            conn.names.idempotency_bucket(),
            "nanofaas idempotency claims",
            ttl,
            MAX_VALUE_BYTES,
            placement,
        );
        Ok(IdempotencyClaims {
            kv: ensure_bucket(&conn.jetstream, config).await?,
        })
    }

    /// Claims `(function, key)` for `execution_id`, create-only.
    pub async fn claim(
        &self,
        function: &str,
        key: &str,
        execution_id: &str,
    ) -> Result<Claim, ClaimError> {
        let kv_key = claim_key(function, key);
        for _ in 0..MAX_ATTEMPTS {
            match self
                .kv
                .create(&kv_key, Bytes::copy_from_slice(execution_id.as_bytes()))
                .await
            {
                Ok(revision) => return Ok(Claim::Won { revision }),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
                Err(e) => return Err(ClaimError::Unavailable(e.to_string())),
            }
            if let Some(execution_id) = self.read(&kv_key).await? {
                return Ok(Claim::Taken { execution_id });
            }
        }
        Err(ClaimError::Contended)
    }

    /// The execution id holding `(function, key)`, if any.
    pub async fn winner(&self, function: &str, key: &str) -> Result<Option<String>, ClaimError> {
        self.read(&claim_key(function, key)).await
    }

    /// Gives the key up (the invocation was refused before it ran), if this claim still holds it.
    pub async fn release(
        &self,
        function: &str,
        key: &str,
        revision: u64,
    ) -> Result<(), ClaimError> {
        match self
            .kv
            .delete_expect_revision(claim_key(function, key), Some(revision))
            .await
        {
            Ok(()) => Ok(()),
            // Someone else's claim now (ours expired): not ours to delete.
            Err(e) if e.kind() == kv::DeleteErrorKind::WrongLastRevision => Ok(()),
            Err(e) => Err(ClaimError::Unavailable(e.to_string())),
        }
    }

    /// Gives the key up if it still names `execution_id`: the enqueue that claimed it was
    /// refused (queue full, NATS unavailable), so a retry with the key must start afresh.
    pub async fn release_for(
        &self,
        function: &str,
        key: &str,
        execution_id: &str,
    ) -> Result<(), ClaimError> {
        let entry = self
            .kv
            .entry(claim_key(function, key))
            .await
            .map_err(|e| ClaimError::Unavailable(e.to_string()))?;
        match entry {
            Some(e) if e.operation == Operation::Put && e.value == execution_id.as_bytes() => {
                self.release(function, key, e.revision).await
            }
            _ => Ok(()),
        }
    }

    async fn read(&self, kv_key: &str) -> Result<Option<String>, ClaimError> {
        let entry = self
            .kv
            .entry(kv_key)
            .await
            .map_err(|e| ClaimError::Unavailable(e.to_string()))?;
        Ok(entry
            .filter(|e| e.operation == Operation::Put)
            .map(|e| String::from_utf8_lossy(&e.value).into_owned()))
    }
}

/// `hex(sha256(function NUL key))`: NUL cannot occur in a function name, so no two pairs share
/// an input.
pub fn claim_key(function: &str, key: &str) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(function.as_bytes());
    ctx.update(&[0]);
    ctx.update(key.as_bytes());
    let digest = ctx.finish();
    let mut out = String::with_capacity(64);
    for b in digest.as_ref() {
        use std::fmt::Write as _;
        // Writing to a String cannot fail.
        let _ = write!(out, "{b:02x}");
    }
    out
}
