//! Completing executions (REFERENCE §3.4): runtime replies and callbacks go through the store's
//! completion protocol; its effects (wake waiters, schedule a retry §3.5 after its backoff delay,
//! record the final metrics §7.1) are carried out here, outside the store's lock.

use std::sync::Arc;
use std::time::Duration;

use super::{InvocationService, Route};
use crate::execution::Outcome;
use crate::execution::Task;
use crate::execution::store::{Abort, Completion, EffectKind, Finalized};
use crate::model::{AttemptResult, ErrorInfo, StartKind};
use crate::registry::RegisteredFunction;

/// What a completion did; runtime callbacks count it in `controlplane_callbacks_total{outcome}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CallbackOutcome {
    /// No such execution (never existed, or evicted).
    Unknown,
    /// For an attempt that is no longer current.
    Stale,
    /// The execution had already ended.
    Duplicate,
    /// The attempt failed and another was scheduled.
    Retried,
    /// The execution ended with this result.
    Applied,
}

impl CallbackOutcome {
    fn as_str(self) -> &'static str {
        match self {
            CallbackOutcome::Unknown => "unknown",
            CallbackOutcome::Stale => "stale",
            CallbackOutcome::Duplicate => "duplicate",
            CallbackOutcome::Retried => "retried",
            CallbackOutcome::Applied => "applied",
        }
    }
}

impl InvocationService {
    /// `POST /v1/internal/executions/{id}:complete` (DECISIONS 5): always accepted; unknown,
    /// stale and duplicate callbacks change nothing and are counted.
    pub fn complete_from_callback(
        self: &Arc<Self>,
        execution_id: &str,
        attempt: Option<u32>,
        result: AttemptResult,
    ) {
        let retry_delay = match result {
            AttemptResult::Failure(_) if self.backoff.enabled() => {
                let current = attempt.or_else(|| self.store.attempt(execution_id));
                self.retry_delay(&result, current.unwrap_or(1), None)
            }
            _ => Duration::ZERO,
        };
        let outcome = self.apply(Completion {
            execution_id,
            attempt,
            result,
            cold_start: None,
            from_dispatcher: false,
            retry_delay,
        });
        self.metrics.callback(outcome.as_str());
        if outcome == CallbackOutcome::Unknown {
            tracing::info!(execution_id, "callback for an unknown or evicted execution");
        }
    }

    /// How long the retry after a failed `attempt` waits (zero with the backoff off, and for a
    /// success, which is never retried).
    pub(super) fn retry_delay(
        &self,
        result: &AttemptResult,
        attempt: u32,
        retry_after: Option<Duration>,
    ) -> Duration {
        match result {
            AttemptResult::Failure(_) => self.backoff.delay(attempt, retry_after),
            AttemptResult::Success(_) => Duration::ZERO,
        }
    }

    /// Applies a completion and carries out its effects; returns what it did.
    pub(super) fn apply(self: &Arc<Self>, completion: Completion<'_>) -> CallbackOutcome {
        let (execution_id, from_dispatcher) = (completion.execution_id, completion.from_dispatcher);
        let retry_delay = completion.retry_delay;
        let failure = match &completion.result {
            AttemptResult::Failure(e) => Some(e.clone()),
            AttemptResult::Success(_) => None,
        };
        match self.store.complete(completion).kind {
            EffectKind::Missing => CallbackOutcome::Unknown,
            EffectKind::Stale => CallbackOutcome::Stale,
            EffectKind::Duplicate {
                function,
                late_start,
            } => {
                if let Some(cold) = late_start {
                    self.record_start_kind(&function, cold);
                }
                CallbackOutcome::Duplicate
            }
            EffectKind::Retry(task) => {
                // A durable execution with a delay goes back to the backend's queue instead.
                if !self.durable_retry(&task, retry_delay) {
                    self.schedule_retry(task, failure, retry_delay);
                }
                CallbackOutcome::Retried
            }
            // A failure past the sync caller's deadline, with retries left: ended as TIMEOUT
            // (the caller is answered 408), counted as the timed-out wait it stands for.
            EffectKind::Finalized(mut f) if matches!(f.outcome, Outcome::Timeout) => {
                f.function.meters(&self.metrics).timeout.inc();
                f.wake();
                CallbackOutcome::Applied
            }
            EffectKind::Finalized(mut f) => {
                self.record_final_metrics(&f);
                f.wake();
                self.durable_finished(execution_id, from_dispatcher);
                CallbackOutcome::Applied
            }
        }
    }

    /// Retries go where new work goes: the function's queue when a queue module is on (a full
    /// queue ends the execution with the original failure, REFERENCE §3.5), else inline. With a
    /// backoff `delay` the retry waits on a timer first, holding no concurrency slot: in the
    /// queue (where it holds its place of `queueSize`), or, inline, in a tracked task (a sync
    /// caller's deadline bounds it: the store ends as TIMEOUT a retry that would start later).
    fn schedule_retry(self: &Arc<Self>, task: Task, failure: Option<ErrorInfo>, delay: Duration) {
        if self.sync_route() == Route::Inline {
            if delay.is_zero() {
                self.spawn_dispatch(task);
            } else {
                let service = self.clone();
                self.tracker.spawn(async move {
                    tokio::time::sleep(delay).await;
                    service.dispatch(task).await;
                });
            }
            return;
        }
        let function = task.function.clone();
        let id = task.execution_id.clone();
        let queued = if delay.is_zero() {
            self.enqueue(task)
        } else {
            let queued = self.queue.enqueue_after(task, delay);
            self.count_enqueue(&function, queued)
        };
        if queued.is_err() {
            let error = failure
                .unwrap_or_else(|| ErrorInfo::new("QUEUE_FULL", "Retry rejected: queue full"));
            if let Some(mut f) = self.store.abort(&id, Abort::Error(error)) {
                let meters = function.meters(&self.metrics);
                meters.error.inc();
                if f.dead_letter {
                    meters.dead_letter.inc();
                }
                f.wake();
            }
            self.durable_finished(&id, true);
        }
    }

    fn record_start_kind(&self, function: &RegisteredFunction, start: StartKind) {
        let m = function.meters(&self.metrics);
        match start {
            StartKind::Cold(c) => {
                m.cold_start.inc();
                if let Some(ms) = c.init_duration_ms.filter(|ms| *ms >= 0) {
                    m.init_duration.record(Duration::from_millis(ms as u64));
                }
            }
            StartKind::Warm => {
                m.warm_start.inc();
            }
        }
    }

    fn record_final_metrics(&self, f: &Finalized) {
        let m = f.function.meters(&self.metrics);
        match f.outcome {
            Outcome::Success(_) => m.success.inc(),
            _ => m.error.inc(),
        };
        if f.dead_letter {
            m.dead_letter.inc();
        }
        if let Some(cold) = f.start {
            self.record_start_kind(&f.function, cold);
        }
        let finished = f.finished.at;
        if let Some(started) = f.started {
            m.latency
                .record(finished.saturating_duration_since(started.at));
            m.queue_wait
                .record(started.at.saturating_duration_since(f.enqueued_at));
        }
        m.e2e_latency
            .record(finished.saturating_duration_since(f.enqueued_at));
    }
}
