//! A durable execution's retry (issue 11 for the delay): written to the record, then run here at
//! once, or stored in the backend for later.

use std::sync::Arc;
use std::time::Duration;

use super::DurableRecord;
use crate::execution::Task;
use crate::invocation::InvocationService;
use crate::model::ExecutionState;

impl InvocationService {
    /// A held execution moved to its next attempt. Without a backoff delay the retry runs on
    /// this replica (`false`: the caller schedules it). With one (issue 11) it goes back to the
    /// backend's queue (`true`): this replica lets go of it, the record says QUEUED with the next
    /// attempt, the backend stores the retry to be delivered after the delay, to any replica,
    /// holding no slot meanwhile, and the delivery is acked. If the backend cannot store it,
    /// the delivery is nak'd with the delay instead (it then keeps its place of the function's
    /// concurrency while it waits).
    pub(in crate::invocation) fn durable_retry(
        self: &Arc<Self>,
        task: &Task,
        delay: Duration,
    ) -> bool {
        let Some(backend) = self.durable.get().cloned() else {
            return false;
        };
        let Some(ack) = self.held.get(&task.execution_id) else {
            return false;
        };
        let requeue = !delay.is_zero();
        if requeue {
            self.held.take(&task.execution_id);
            self.store.remove(&task.execution_id);
        }
        let id = task.execution_id.clone();
        let attempt = task.attempt;
        let (function, body) = (task.function.clone(), task.payload.body.clone());
        self.tracker.spawn(async move {
            // Written first, so the redelivery reads the attempt it is to run.
            let _ = backend
                .transition(
                    &id,
                    Box::new(move |r: &DurableRecord| {
                        (!r.state.is_terminal() && r.attempt < attempt).then(|| DurableRecord {
                            state: ExecutionState::Queued,
                            attempt,
                            idempotency_key: None,
                            started_at: None,
                            ..r.clone()
                        })
                    }),
                )
                .await;
            if !requeue {
                ack.in_progress().await;
                return;
            }
            match backend
                .requeue(function.name(), &id, attempt, body, delay)
                .await
            {
                Ok(()) => ack.ack().await,
                Err(e) => {
                    tracing::warn!(execution_id = %id, error = %e, "storing a delayed retry failed; the delivery waits instead");
                    ack.nak(delay).await;
                }
            }
        });
        requeue
    }
}
