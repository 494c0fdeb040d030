//! Leader leases with fencing, for work that must run on one replica at a time (the autoscaler,
//! deprovisioning, clean-up).
//!
//! A lease is one key in the `P_leases` bucket, whose `max_age` is the lease TTL:
//! - acquire = create-only put (fails while another holder's entry exists);
//! - renew = update with the revision last written (fails once anyone else wrote the key);
//! - the entry expires `ttl` after the last renew, so a holder that dies or is cut off frees the
//!   key within `ttl` (plus the broker's expiry timer and the followers' poll interval);
//! - the revision is the fencing token: it grows with every write to the bucket, so a newer
//!   holder's token is always larger, and a stale holder's renew with its old token is refused.
//!
//! The holder also steps down on its own clock: when no renew succeeded for `ttl`, it reports
//! [`Leadership::Follower`] even if it cannot reach NATS to learn that it lost, so two replicas
//! never both believe they lead for longer than the clock drift over one TTL.

use std::time::Duration;

use async_nats::jetstream::kv::{self, Operation};
use bytes::Bytes;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::names::encode_token;
use super::{BucketError, NatsConnection, Placement, bucket_config, ensure_bucket};

/// A lease's fencing token: the revision of the holder's last write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FencingToken(pub u64);

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// Someone else holds the lease now (or it expired): this holder is no longer the leader.
    #[error("lease {0} lost")]
    Lost(String),
    #[error("NATS KV unavailable: {0}")]
    Unavailable(String),
}

/// What an elector currently is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leadership {
    Follower,
    Leader(FencingToken),
}

impl Leadership {
    pub fn token(self) -> Option<FencingToken> {
        match self {
            Leadership::Leader(token) => Some(token),
            Leadership::Follower => None,
        }
    }
}

/// The `P_leases` bucket; every lease in it has the same TTL.
#[derive(Clone)]
pub struct Leases {
    kv: kv::Store,
    ttl: Duration,
}

impl Leases {
    pub async fn open(
        conn: &NatsConnection,
        ttl: Duration,
        placement: Placement,
    ) -> Result<Leases, BucketError> {
        let config = bucket_config(
            conn.names.leases_bucket(),
            "nanofaas leader leases",
            ttl,
            1024,
            placement,
        );
        Ok(Leases {
            kv: ensure_bucket(&conn.jetstream, config).await?,
            ttl,
        })
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Takes the lease if nobody holds it; `None` while someone does.
    pub async fn try_acquire(
        &self,
        lease: &str,
        holder: &str,
    ) -> Result<Option<FencingToken>, LeaseError> {
        match self
            .kv
            .create(
                encode_token(lease),
                Bytes::copy_from_slice(holder.as_bytes()),
            )
            .await
        {
            Ok(revision) => Ok(Some(FencingToken(revision))),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(None),
            Err(e) => Err(LeaseError::Unavailable(e.to_string())),
        }
    }

    /// Extends the lease held with `token`; the new token. `Lost` if anyone wrote the key since
    /// (another holder took it after it expired) or it expired and is gone.
    pub async fn renew(
        &self,
        lease: &str,
        holder: &str,
        token: FencingToken,
    ) -> Result<FencingToken, LeaseError> {
        self.kv
            .update(
                encode_token(lease),
                Bytes::copy_from_slice(holder.as_bytes()),
                token.0,
            )
            .await
            .map(FencingToken)
            .map_err(|e| match e.kind() {
                kv::UpdateErrorKind::WrongLastRevision => LeaseError::Lost(lease.to_owned()),
                _ => LeaseError::Unavailable(e.to_string()),
            })
    }

    /// Gives the lease up if `token` still holds it, so a follower takes over at once instead
    /// of after the TTL (graceful shutdown).
    pub async fn release(&self, lease: &str, token: FencingToken) -> Result<(), LeaseError> {
        match self
            .kv
            .delete_expect_revision(encode_token(lease), Some(token.0))
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == kv::DeleteErrorKind::WrongLastRevision => {
                Err(LeaseError::Lost(lease.to_owned()))
            }
            Err(e) => Err(LeaseError::Unavailable(e.to_string())),
        }
    }

    /// The current holder and its token, if the lease is held.
    pub async fn holder(&self, lease: &str) -> Result<Option<(String, FencingToken)>, LeaseError> {
        let entry = self
            .kv
            .entry(encode_token(lease))
            .await
            .map_err(|e| LeaseError::Unavailable(e.to_string()))?;
        Ok(entry.filter(|e| e.operation == Operation::Put).map(|e| {
            (
                String::from_utf8_lossy(&e.value).into_owned(),
                FencingToken(e.revision),
            )
        }))
    }

    /// Runs an election for `lease` as `holder` until `stop`: followers try to acquire every
    /// `ttl / 5`, the leader renews every `ttl / 3` and releases on stop.
    pub fn spawn_elector(&self, lease: &str, holder: &str, stop: CancellationToken) -> Elector {
        let (tx, rx) = watch::channel(Leadership::Follower);
        let task = tokio::spawn(run_elector(
            self.clone(),
            lease.to_owned(),
            holder.to_owned(),
            tx,
            stop,
        ));
        Elector { state: rx, task }
    }
}

/// A running election.
pub struct Elector {
    state: watch::Receiver<Leadership>,
    task: JoinHandle<()>,
}

impl Elector {
    pub fn leadership(&self) -> Leadership {
        *self.state.borrow()
    }

    /// A receiver of leadership changes (e.g. to start and stop the autoscaler).
    pub fn subscribe(&self) -> watch::Receiver<Leadership> {
        self.state.clone()
    }

    /// Waits for the elector to finish (after its stop token was cancelled).
    pub async fn join(self) {
        let _ = self.task.await;
    }
}

async fn run_elector(
    leases: Leases,
    lease: String,
    holder: String,
    state: watch::Sender<Leadership>,
    stop: CancellationToken,
) {
    let ttl = leases.ttl;
    let acquire_every = ttl / 5;
    let renew_every = ttl / 3;
    // While leading: the token to renew with, and when the lease lapses by this replica's clock
    // (measured from when the last successful renew was sent, so it errs early).
    let mut held: Option<(FencingToken, Instant)> = None;
    while !stop.is_cancelled() {
        if held.is_some_and(|(_, deadline)| Instant::now() >= deadline) {
            // Lapsed while a renew kept failing: stop leading before anything else.
            tracing::warn!(lease, holder, "lease lapsed: no renew within the TTL");
            held = None;
            state.send_replace(Leadership::Follower);
        }
        let sent = Instant::now();
        held = match held {
            None => match leases.try_acquire(&lease, &holder).await {
                Ok(Some(token)) => {
                    tracing::info!(lease, holder, token = token.0, "lease acquired");
                    Some((token, sent + ttl))
                }
                Ok(None) => None,
                Err(e) => {
                    tracing::debug!(lease, error = %e, "lease acquire failed");
                    None
                }
            },
            Some((token, deadline)) => match leases.renew(&lease, &holder, token).await {
                Ok(token) => Some((token, sent + ttl)),
                Err(LeaseError::Lost(_)) => {
                    tracing::warn!(lease, holder, "lease lost to another holder");
                    None
                }
                Err(e) => {
                    tracing::warn!(lease, error = %e, "lease renew failed; retrying before it lapses");
                    Some((token, deadline))
                }
            },
        };
        // A lease past its local deadline is not leadership, whatever NATS would say.
        if held.is_some_and(|(_, deadline)| Instant::now() >= deadline) {
            held = None;
        }
        let now = held.map_or(Leadership::Follower, |(token, _)| Leadership::Leader(token));
        state.send_if_modified(|s| {
            let changed = *s != now;
            *s = now;
            changed
        });
        let wake = match held {
            None => Instant::now() + acquire_every,
            // Wake at the local deadline too, to step down without hearing from NATS.
            Some((_, deadline)) => (Instant::now() + renew_every).min(deadline),
        };
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep_until(wake) => {}
        }
    }
    if let Some((token, _)) = held {
        if let Err(e) = leases.release(&lease, token).await {
            tracing::warn!(lease, error = %e, "lease release on stop failed; it expires with its TTL");
        }
    }
    state.send_replace(Leadership::Follower);
}
