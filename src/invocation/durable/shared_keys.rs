//! Idempotency-Key claims of synchronous invocations, shared through the backend (issue 9,
//! guarantee 5): the same key on two replicas gives one execution. The sync path stays
//! in-process: only a request that carries a key makes the claim's round trip before it
//! dispatches. The winner runs the execution as usual and writes its terminal record once it
//! is answered; a request that lost the claim to another replica's execution waits for that
//! record (a watch, no polling) up to its own deadline, then answers what it says, or 408.
//!
//! With the backend unreachable the claim stays on this replica (sync invocations keep
//! working through a broker outage, guarantee 7).

use std::sync::Arc;

use tokio::time::Instant;

use super::DurableRecord;
use crate::execution::Outcome;
use crate::invocation::InvocationService;
use crate::model::ExecutionState;
use crate::registry::RegisteredFunction;

/// The cluster-wide side of a sync request's key claim.
pub(in crate::invocation) enum SharedClaim {
    /// This request's execution owns the key cluster-wide.
    Won,
    /// Another execution (on any replica) owns it.
    Taken(Arc<str>),
    /// The backend could not be asked: the key is claimed on this replica only.
    LocalOnly,
}

impl InvocationService {
    pub(in crate::invocation) async fn claim_shared_key(
        &self,
        function: &str,
        key: &str,
        execution_id: &str,
    ) -> SharedClaim {
        let Some(backend) = self.durable.get() else {
            return SharedClaim::LocalOnly;
        };
        match backend.claim(function, key, execution_id).await {
            Ok(None) => SharedClaim::Won,
            Ok(Some(winner)) => SharedClaim::Taken(Arc::from(winner)),
            Err(e) => {
                tracing::warn!(function, error = %e, "Idempotency-Key claimed on this replica only");
                SharedClaim::LocalOnly
            }
        }
    }

    /// A sync request whose key another replica's execution owns: that execution's outcome,
    /// waited for until `deadline` (then a timeout, counted like every timed-out wait).
    pub(in crate::invocation) async fn wait_elsewhere(
        &self,
        function: &RegisteredFunction,
        execution_id: &str,
        deadline: Instant,
    ) -> Outcome {
        let record = match self.durable.get() {
            Some(backend) => backend.wait_terminal(execution_id, deadline).await,
            None => Ok(None),
        };
        match record {
            Ok(Some(record)) => match record.state {
                ExecutionState::Success => Outcome::Success(record.output.map(Arc::from)),
                ExecutionState::Error => Outcome::Error(record.error.unwrap_or_else(|| {
                    crate::model::ErrorInfo::new("EXECUTION_FAILED", "Execution failed")
                })),
                _ => Outcome::Timeout,
            },
            Ok(None) | Err(_) => {
                function.meters(&self.metrics).timeout.inc();
                Outcome::Timeout
            }
        }
    }

    /// The winner's terminal record, written once its caller is answered, for requests with the
    /// same key on other replicas (and `GET /v1/executions/{id}` anywhere).
    pub(in crate::invocation) fn publish_sync_result(
        self: &Arc<Self>,
        function: &RegisteredFunction,
        execution_id: &str,
        idempotency_key: &str,
    ) {
        let (Some(backend), Some(status)) =
            (self.durable.get().cloned(), self.store.status(execution_id))
        else {
            return;
        };
        if !status.status.is_terminal() {
            return;
        }
        let record = DurableRecord {
            function: function.name().to_owned(),
            state: ExecutionState::Queued,
            attempt: 1,
            idempotency_key: Some(idempotency_key.to_owned()),
            trace_id: None,
            traceparent: None,
            tracestate: None,
            callback_url: None,
            started_at: None,
            finished_at: None,
            output: None,
            error: None,
            cold_start: false,
            init_duration_ms: None,
            // A sync execution is never a dead letter.
            request: None,
            // Its record is terminal: no removal ends it.
            registration: None,
        }
        .finished_as(&status, self.store.attempt(execution_id).unwrap_or(1));
        let id = execution_id.to_owned();
        self.tracker.spawn(async move {
            if let Err(e) = backend.create(&id, &record).await {
                tracing::warn!(execution_id = %id, error = %e, "writing a keyed sync result failed");
            }
        });
    }
}
