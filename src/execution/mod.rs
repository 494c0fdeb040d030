//! Executions: the unit of work handed to dispatchers ([`Task`]), the execution record and its
//! state machine (REFERENCE §2.5), and the in-memory [`store::ExecutionStore`].
//!
//! State machine invariants: any non-terminal state may move anywhere (QUEUED→RUNNING,
//! →SUCCESS/ERROR/TIMEOUT, →QUEUED on retry); a terminal state (SUCCESS, ERROR, TIMEOUT) is final.

pub mod dead_letters;
pub mod notice;
pub mod store;

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::model::{
    ColdStart, ErrorInfo, ExecutionState, ExecutionStatus, InvocationResponse, InvocationStatus,
    Json, StartKind, format_instant,
};
use crate::registry::RegisteredFunction;
use crate::support::trace_context::TraceContext;

/// The request as received, and the exact body sent to runtimes, built once.
#[derive(Debug)]
pub struct Payload {
    pub input: Json,
    /// `{"input": …, "metadata": …}`.
    pub body: Bytes,
}

/// One dispatch of an execution: everything a dispatcher needs, cheap to clone.
#[derive(Debug, Clone)]
pub struct Task {
    pub execution_id: Arc<str>,
    pub function: Arc<RegisteredFunction>,
    pub payload: Arc<Payload>,
    /// Forwarded on the first attempt only.
    pub idempotency_key: Option<Arc<str>>,
    pub trace_id: Option<Arc<str>>,
    /// W3C trace context, sent to the runtime with every attempt (issue 11).
    pub trace: TraceContext,
    /// `:enqueue`'s `X-Callback-Url`: where the result is posted once the execution is terminal
    /// (issue 11). The store takes it when the record ends (see `store::ResultListener`).
    pub callback_url: Option<Arc<str>>,
    pub attempt: u32,
    pub enqueued_at: Instant,
    /// When the sync request that created the execution stops waiting (`None` for `:enqueue`).
    /// Its caller is answered 408 then, so the store starts no attempt and schedules no retry
    /// from that moment on: the execution ends as TIMEOUT instead (DECISIONS, lifecycle).
    pub caller_deadline: Option<Instant>,
    /// The generation of the function queue whose concurrency slot this attempt holds (set by
    /// the queue); the dispatch releases it when its exchange with the runtime ends. A queue
    /// re-created by delete + register has a new generation, so a late release cannot free a
    /// slot of the new one.
    pub slot: Option<u64>,
}

impl Task {
    /// Created by `:enqueue` (or a redrive): no caller waits for it. Such an execution that
    /// ends in ERROR or TIMEOUT becomes a dead letter (issue 11).
    pub fn is_async(&self) -> bool {
        self.caller_deadline.is_none()
    }

    /// The span of this attempt's work: every log line carries the trace id (issue 11). At
    /// ERROR level so that it is enabled whenever any line is logged.
    pub fn span(&self) -> tracing::Span {
        // A root: the execution outlives the request, and a retry's span must not nest in the
        // span of the attempt before it.
        tracing::error_span!(
            parent: None,
            "execution",
            trace_id = %self.trace.trace_id(),
            execution_id = %self.execution_id
        )
    }

    /// What the attempt holds besides its payload (trace context, result URL), for the store's
    /// byte budget.
    fn context_bytes(&self) -> usize {
        self.trace.held_bytes() + self.callback_url.as_ref().map_or(0, |u| u.len())
    }
}

/// How an execution ended, as delivered to the waiters of a sync invocation.
#[derive(Debug, Clone)]
pub enum Outcome {
    Success(Option<Json>),
    Error(ErrorInfo),
    Timeout,
    /// Waited in the sync queue past `max-queue-wait` (answered 429).
    QueueTimeout,
}

impl Outcome {
    pub fn response(&self, execution_id: Arc<str>) -> InvocationResponse {
        let (status, output, error) = match self {
            Outcome::Success(o) => (InvocationStatus::Success, o.clone(), None),
            Outcome::Error(e) => (InvocationStatus::Error, None, Some(e.clone())),
            Outcome::Timeout | Outcome::QueueTimeout => (InvocationStatus::Timeout, None, None),
        };
        InvocationResponse {
            execution_id,
            status,
            output,
            error,
        }
    }
}

/// A moment recorded both monotonically (for durations and TTLs) and on the wall clock (for JSON).
#[derive(Debug, Clone, Copy)]
pub struct Stamp {
    pub at: Instant,
    pub wall: DateTime<Utc>,
}

impl Stamp {
    pub fn now() -> Self {
        Stamp {
            at: Instant::now(),
            wall: Utc::now(),
        }
    }
}

#[derive(Debug)]
pub struct ExecutionRecord {
    pub execution_id: Arc<str>,
    pub function: Arc<RegisteredFunction>,
    /// The current attempt's task; dropped once terminal so payloads are not retained (an async
    /// failure's request moves to `dead_letter`).
    pub task: Option<Task>,
    pub attempt: u32,
    pub enqueued_at: Instant,
    pub state: ExecutionState,
    pub created_at: Instant,
    pub started: Option<Stamp>,
    pub finished: Option<Stamp>,
    pub output: Option<Json>,
    pub last_error: Option<ErrorInfo>,
    pub cold_start: bool,
    pub init_duration_ms: Option<i64>,
    /// Payload released by the janitor (`cleanup-ttl`): output reads back as null.
    pub cleaned: bool,
    /// Set once the cold/warm counter has been updated for the final completion.
    pub start_kind_counted: bool,
    /// The attempt that produced the final result, if it came from a completion.
    pub final_attempt: Option<u32>,
    pub waiters: Vec<oneshot::Sender<Outcome>>,
    /// A dead letter (issue 11): the request of an async execution that ended in ERROR or
    /// TIMEOUT, kept (and charged to the byte budget) until the record is evicted, for redrive.
    pub dead_letter: Option<Arc<Payload>>,
    /// Its place in the store's dead-letter index (newest first listing).
    pub dead_letter_seq: Option<u64>,
}

impl ExecutionRecord {
    pub fn new(task: Task) -> Self {
        ExecutionRecord {
            execution_id: task.execution_id.clone(),
            function: task.function.clone(),
            attempt: task.attempt,
            enqueued_at: task.enqueued_at,
            task: Some(task),
            state: ExecutionState::Queued,
            created_at: Instant::now(),
            started: None,
            finished: None,
            output: None,
            last_error: None,
            cold_start: false,
            init_duration_ms: None,
            cleaned: false,
            start_kind_counted: false,
            final_attempt: None,
            waiters: Vec::new(),
            dead_letter: None,
            dead_letter_seq: None,
        }
    }

    pub fn is_terminal(&self) -> bool {
        self.state.is_terminal()
    }

    /// What this record counts against the store's byte budget: a fixed cost for the record, its
    /// map slot and id, plus what it holds — the request while it may still be sent (payload
    /// text and runtime body), the output until cleaned, the error text. Depends only on those
    /// fields, so the store can charge and release it as they change.
    pub fn held_bytes(&self) -> usize {
        const FIXED: usize = std::mem::size_of::<ExecutionRecord>() + 64;
        let request = match (&self.task, &self.dead_letter) {
            (Some(t), _) => t.payload.input.get().len() + t.payload.body.len() + t.context_bytes(),
            (None, Some(p)) => p.input.get().len() + p.body.len(),
            (None, None) => 0,
        };
        let output = match (&self.output, self.cleaned) {
            (Some(o), false) => o.get().len(),
            _ => 0,
        };
        let error = self
            .last_error
            .as_ref()
            .map_or(0, |e| e.code.len() + e.message.len());
        FIXED + self.execution_id.len() + request + output + error
    }

    /// Whether the sync caller that created this (non-terminal) execution has stopped waiting.
    pub fn caller_gone(&self, now: Instant) -> bool {
        self.task
            .as_ref()
            .and_then(|t| t.caller_deadline)
            .is_some_and(|deadline| now >= deadline)
    }

    /// The terminal outcome, if any. An ERROR always carries its error (DECISIONS 4, B6).
    pub fn outcome(&self) -> Option<Outcome> {
        match self.state {
            ExecutionState::Success => Some(Outcome::Success(if self.cleaned {
                None
            } else {
                self.output.clone()
            })),
            ExecutionState::Error => {
                Some(Outcome::Error(self.last_error.clone().unwrap_or_else(
                    || ErrorInfo::new("EXECUTION_FAILED", "Execution failed"),
                )))
            }
            ExecutionState::Timeout => Some(Outcome::Timeout),
            ExecutionState::Queued | ExecutionState::Running => None,
        }
    }

    pub fn mark_running(&mut self, now: Stamp) {
        if self.is_terminal() {
            return;
        }
        self.state = ExecutionState::Running;
        self.started = Some(now);
    }

    /// Moves to a terminal state; returns false (and changes nothing) when already terminal.
    pub fn finish(
        &mut self,
        state: ExecutionState,
        output: Option<Json>,
        error: Option<ErrorInfo>,
    ) -> bool {
        debug_assert!(state.is_terminal());
        if self.is_terminal() {
            return false;
        }
        self.state = state;
        self.finished = Some(Stamp::now());
        self.output = output;
        self.last_error = error;
        // Nothing reads the request once the execution is over, except a redrive of a dead
        // letter: the failed end of an async execution.
        if let Some(task) = self.task.take()
            && task.is_async()
            && state != ExecutionState::Success
        {
            self.dead_letter = Some(task.payload);
        }
        true
    }

    /// Resets for the next attempt (REFERENCE §3.5): QUEUED, attempt+1, timestamps and results
    /// cleared, the idempotency key no longer forwarded.
    pub fn reset_for_retry(&mut self) -> Option<Task> {
        if self.is_terminal() {
            return None;
        }
        let mut task = self.task.clone()?;
        task.attempt += 1;
        task.idempotency_key = None;
        task.enqueued_at = Instant::now();
        task.slot = None;
        self.attempt = task.attempt;
        self.enqueued_at = task.enqueued_at;
        self.task = Some(task.clone());
        self.state = ExecutionState::Queued;
        self.started = None;
        self.finished = None;
        self.output = None;
        self.last_error = None;
        self.cold_start = false;
        self.init_duration_ms = None;
        self.cleaned = false;
        Some(task)
    }

    /// Records how the final attempt started (cold or warm), once; returns it for the metrics.
    pub fn count_start(&mut self, cold: Option<ColdStart>) -> StartKind {
        self.start_kind_counted = true;
        if let Some(c) = cold {
            self.cold_start = true;
            self.init_duration_ms = Some(c.init_duration_ms.unwrap_or(0));
        }
        StartKind::from(cold)
    }

    pub fn status(&self) -> ExecutionStatus {
        ExecutionStatus {
            execution_id: self.execution_id.clone(),
            status: self.state,
            started_at: self.started.map(|s| format_instant(s.wall)),
            finished_at: self.finished.map(|s| format_instant(s.wall)),
            output: if self.cleaned {
                None
            } else {
                self.output.clone()
            },
            error: self.last_error.clone(),
            cold_start: self.cold_start,
            init_duration_ms: self.init_duration_ms,
        }
    }
}

/// A first-attempt task of a LOCAL function `f`, for unit tests.
#[cfg(test)]
pub(crate) fn test_task(id: &str) -> Task {
    let spec: crate::function::FunctionSpecRequest =
        serde_json::from_str(r#"{"name":"f","image":"i","executionMode":"LOCAL"}"#)
            .expect("valid spec");
    let spec = spec
        .resolve(&crate::config::Config::default().defaults)
        .expect("resolves");
    Task {
        execution_id: Arc::from(id),
        function: Arc::new(RegisteredFunction {
            requested_mode: spec.execution_mode,
            effective_mode: spec.execution_mode,
            spec,
            deployment_backend: None,
            degradation_reason: None,
            endpoint: None,
            metrics: Default::default(),
            store_share: Default::default(),
        }),
        payload: Arc::new(Payload {
            input: crate::model::json_string("in"),
            body: Bytes::from_static(b"{}"),
        }),
        idempotency_key: None,
        trace_id: None,
        trace: TraceContext::start(None),
        callback_url: None,
        attempt: 1,
        enqueued_at: Instant::now(),
        caller_deadline: None,
        slot: None,
    }
}

#[cfg(test)]
mod tests;
