//! The autoscaler's [`LeaderGate`] on a NATS lease (docs/ha.md, guarantee 8): every replica runs
//! an election for the `autoscaler` lease; the holder scales, the others only watch.
//!
//! Fencing: before each scaling call the holder reads the lease and acts only if the stored
//! revision is still its own token (nobody took the lease since its last renew) and its own
//! clock says the lease has not lapsed (the elector steps down by itself when renews fail for a
//! TTL). A replica that dies frees the lease within its TTL; a graceful stop releases it at once.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::backend::NatsBackend;
use super::lease::{Leadership, Leases};
use crate::autoscaler::LeaderGate;
use crate::deploy::BoxFuture;

/// The lease the autoscaler's leader holds.
pub const AUTOSCALER_LEASE: &str = "autoscaler";

pub struct NatsLeader {
    backend: Arc<NatsBackend>,
    running: OnceLock<(Leases, watch::Receiver<Leadership>)>,
}

impl NatsLeader {
    pub fn new(backend: Arc<NatsBackend>) -> NatsLeader {
        NatsLeader {
            backend,
            running: OnceLock::new(),
        }
    }

    /// Opens the leases bucket and starts this replica's election; the returned task ends
    /// (after releasing a held lease) once `stop` is cancelled.
    pub async fn start(
        &self,
        ttl: Duration,
        stop: CancellationToken,
    ) -> anyhow::Result<JoinHandle<()>> {
        let conn = self
            .backend
            .connection()
            .ok_or_else(|| anyhow::anyhow!("NATS is not connected"))?;
        let leases = Leases::open(conn, ttl, self.backend.placement()).await?;
        let elector = leases.spawn_elector(AUTOSCALER_LEASE, self.backend.replica_id(), stop);
        let mut changes = elector.subscribe();
        let _ = self.running.set((leases, changes.clone()));
        let replica = self.backend.replica_id().to_owned();
        Ok(tokio::spawn(async move {
            let log = async {
                while changes.changed().await.is_ok() {
                    let now = *changes.borrow_and_update();
                    match now {
                        Leadership::Leader(token) => {
                            tracing::info!(
                                replica,
                                token = token.0,
                                "this replica now leads the autoscaler"
                            )
                        }
                        Leadership::Follower => {
                            tracing::info!(replica, "this replica follows (autoscaler off here)")
                        }
                    }
                }
            };
            // The elector ends when `stop` is cancelled (it releases a held lease first).
            tokio::join!(log, elector.join());
        }))
    }

    /// What this replica is now (follower until the election ran).
    pub fn leadership(&self) -> Leadership {
        self.running
            .get()
            .map_or(Leadership::Follower, |(_, state)| *state.borrow())
    }
}

impl LeaderGate for NatsLeader {
    fn is_leader(&self) -> bool {
        self.leadership().token().is_some()
    }

    fn confirm(&self) -> BoxFuture<'_, bool> {
        Box::pin(async move {
            let (Some((leases, _)), Some(token)) = (self.running.get(), self.leadership().token())
            else {
                return false;
            };
            match leases.holder(AUTOSCALER_LEASE).await {
                Ok(Some((_, current))) => current == token && self.is_leader(),
                Ok(None) => false,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot confirm the autoscaler lease; not scaling");
                    false
                }
            }
        })
    }
}
