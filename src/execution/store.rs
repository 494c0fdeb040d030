//! The execution store: every execution record in one `Mutex`-guarded map, with the completion
//! protocol of REFERENCE §3.4 and the retention of §3.7 plus a hard entry cap (DECISIONS 7).
//!
//! Invariants: the lock is held only for map operations and state changes, never across `.await`
//! and never while sending to waiters; a terminal record never changes its result; when full, only terminal records are evicted
//! (oldest first) and new executions are refused rather than in-flight ones dropped.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::{ExecutionRecord, Outcome, Stamp, Task};
use crate::config::ExecutionStoreConfig;
use crate::model::{
    AttemptResult, ColdStart, ErrorInfo, ExecutionState, ExecutionStatus, StartKind,
};
use crate::registry::RegisteredFunction;
use crate::support::lock;

/// What the store says of an execution id (read by the idempotency keys that point at it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// Evicted: the key may be claimed again.
    Gone,
    Running,
    Finished,
}

pub struct ExecutionStore {
    inner: Mutex<Inner>,
    config: ExecutionStoreConfig,
}

#[derive(Default)]
struct Inner {
    records: HashMap<Arc<str>, ExecutionRecord>,
    /// Ids in the order they became terminal: eviction order when the store is full.
    terminal_order: VecDeque<Arc<str>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the execution store is full of in-flight executions")]
pub struct StoreFull;

/// What a sync waiter gets back from [`ExecutionStore::subscribe`].
pub enum Subscription {
    Missing,
    Done(Outcome),
    Waiting(oneshot::Receiver<Outcome>),
}

/// Whether a dequeued task should still be sent to its runtime.
pub enum BeginDispatch {
    Proceed,
    /// The execution is gone, terminal, or has moved past this attempt: release the slot, skip.
    Skip,
    /// The sync caller's deadline passed before this attempt could start: the execution ended
    /// here as TIMEOUT (its caller is answered 408); wake the waiters, count the timeout.
    Expired(Finalized),
}

/// A completion to apply: a dispatcher reply or a runtime callback.
pub struct Completion<'a> {
    pub execution_id: &'a str,
    /// `None` for a callback without a usable `X-Dispatch-Attempt` (applies to the current attempt).
    pub attempt: Option<u32>,
    pub result: AttemptResult,
    pub cold_start: Option<ColdStart>,
    pub from_dispatcher: bool,
}

/// Everything the caller must do after a completion, outside the lock.
pub struct CompletionEffect {
    pub kind: EffectKind,
}

pub enum EffectKind {
    Missing,
    /// For an attempt that is no longer current.
    Stale,
    /// The execution was already terminal. `late_start` is set when this reply is the one that
    /// tells whether the (callback-finalised) execution was a cold start.
    Duplicate {
        function: Arc<RegisteredFunction>,
        late_start: Option<StartKind>,
    },
    Retry(Task),
    Finalized(Finalized),
}

/// A finished execution: who to wake and what to record in metrics.
pub struct Finalized {
    pub function: Arc<RegisteredFunction>,
    pub outcome: Outcome,
    pub waiters: Vec<oneshot::Sender<Outcome>>,
    pub enqueued_at: Instant,
    pub started: Option<Stamp>,
    pub finished: Stamp,
    /// Set when the cold/warm counter is to be updated now.
    pub start: Option<StartKind>,
}

impl Finalized {
    /// What a record that just became terminal hands to the caller: its waiters and timings.
    fn take(record: &mut ExecutionRecord, outcome: Outcome, start: Option<StartKind>) -> Self {
        Finalized {
            function: record.function.clone(),
            outcome,
            waiters: std::mem::take(&mut record.waiters),
            enqueued_at: record.enqueued_at,
            started: record.started,
            finished: record.finished.unwrap_or_else(Stamp::now),
            start,
        }
    }

    pub fn wake(&mut self) {
        for waiter in self.waiters.drain(..) {
            let _ = waiter.send(self.outcome.clone());
        }
    }
}

impl ExecutionStore {
    pub fn new(config: ExecutionStoreConfig) -> Self {
        // Sized for the cap up front: growing a large map rehashes it under the lock (a stall of
        // ~100 ms at 60k entries). Capacity that is never used is never touched, so not resident.
        let capacity = config.max_entries.min(1 << 20);
        ExecutionStore {
            inner: Mutex::new(Inner {
                records: HashMap::with_capacity(capacity),
                terminal_order: VecDeque::new(),
            }),
            config,
        }
    }

    pub fn len(&self) -> usize {
        lock(&self.inner).records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stores a new QUEUED execution, evicting the oldest terminal record when at the cap.
    pub fn insert(&self, task: Task) -> Result<(), StoreFull> {
        let mut inner = lock(&self.inner);
        while inner.records.len() >= self.config.max_entries {
            let Some(oldest) = inner.terminal_order.pop_front() else {
                return Err(StoreFull);
            };
            if inner.records.get(&oldest).is_some_and(|r| r.is_terminal()) {
                inner.records.remove(&oldest);
            }
        }
        let id = task.execution_id.clone();
        inner.records.insert(id, ExecutionRecord::new(task));
        Ok(())
    }

    /// Forgets an execution whose admission failed.
    pub fn remove(&self, execution_id: &str) -> bool {
        lock(&self.inner).records.remove(execution_id).is_some()
    }

    /// Whether an execution is gone, running (not terminal) or finished.
    pub fn liveness(&self, execution_id: &str) -> Liveness {
        match lock(&self.inner).records.get(execution_id) {
            None => Liveness::Gone,
            Some(r) if r.is_terminal() => Liveness::Finished,
            Some(_) => Liveness::Running,
        }
    }

    pub fn status(&self, execution_id: &str) -> Option<ExecutionStatus> {
        lock(&self.inner)
            .records
            .get(execution_id)
            .map(|r| r.status())
    }

    /// The outcome if terminal, else a receiver woken when it becomes terminal.
    pub fn subscribe(&self, execution_id: &str) -> Subscription {
        let mut inner = lock(&self.inner);
        let Some(record) = inner.records.get_mut(execution_id) else {
            return Subscription::Missing;
        };
        if let Some(outcome) = record.outcome() {
            return Subscription::Done(outcome);
        }
        let (tx, rx) = oneshot::channel();
        record.waiters.retain(|w| !w.is_closed());
        record.waiters.push(tx);
        Subscription::Waiting(rx)
    }

    /// Called right before a task is sent to its runtime: marks it RUNNING, or says to skip it
    /// (gone, already terminal — timed out or completed by an early callback — or superseded).
    /// Past the sync caller's deadline no attempt starts: decided here, under the same lock that
    /// stores the TIMEOUT, so an attempt is never sent for an execution its caller was told
    /// timed out.
    pub fn begin_dispatch(&self, task: &Task) -> BeginDispatch {
        let mut inner = lock(&self.inner);
        let Some(r) = inner.records.get_mut(&*task.execution_id) else {
            return BeginDispatch::Skip;
        };
        if r.attempt != task.attempt || r.is_terminal() {
            return BeginDispatch::Skip;
        }
        let now = Stamp::now();
        if r.caller_gone(now.at) {
            let finalized = Self::end(&mut inner, task.execution_id.clone(), Abort::Timeout);
            return finalized.map_or(BeginDispatch::Skip, BeginDispatch::Expired);
        }
        r.mark_running(now);
        BeginDispatch::Proceed
    }

    /// Applies a completion (REFERENCE §3.4, with DECISIONS 4–5).
    pub fn complete(&self, c: Completion<'_>) -> CompletionEffect {
        let mut inner = lock(&self.inner);
        let Some(record) = inner.records.get_mut(c.execution_id) else {
            return CompletionEffect {
                kind: EffectKind::Missing,
            };
        };
        let attempt = c.attempt.unwrap_or(record.attempt);
        if attempt != record.attempt {
            return CompletionEffect {
                kind: EffectKind::Stale,
            };
        }
        let was_dispatched = record.state == ExecutionState::Running;
        if record.is_terminal() {
            let late_start = if c.from_dispatcher
                && !record.start_kind_counted
                && record.final_attempt == Some(attempt)
            {
                Some(record.count_start(c.cold_start))
            } else {
                None
            };
            return CompletionEffect {
                kind: EffectKind::Duplicate {
                    function: record.function.clone(),
                    late_start,
                },
            };
        }

        if !c.result.is_success() && attempt < record.function.spec.max_retries {
            // A retry nobody waits for: the sync caller's deadline has passed (the wait and the
            // attempt share `timeoutMs`, so an attempt that timed out lands here). Its caller is
            // answered 408, so the execution ends as TIMEOUT now instead of being sent again.
            if record.caller_gone(Instant::now()) {
                let id = record.execution_id.clone();
                return CompletionEffect {
                    kind: match Self::end(&mut inner, id, Abort::Timeout) {
                        Some(f) => EffectKind::Finalized(f),
                        None => EffectKind::Missing,
                    },
                };
            }
            if let Some(task) = record.reset_for_retry() {
                return CompletionEffect {
                    kind: EffectKind::Retry(task),
                };
            }
        }

        let (state, output, error, outcome) = match c.result {
            AttemptResult::Success(output) => (
                ExecutionState::Success,
                output.clone(),
                None,
                Outcome::Success(output),
            ),
            AttemptResult::Failure(error) => (
                ExecutionState::Error,
                None,
                Some(error.clone()),
                Outcome::Error(error),
            ),
        };
        record.finish(state, output, error);
        record.final_attempt = Some(attempt);
        // A callback that beats the runtime's HTTP reply cannot know about a cold start: the
        // reply still to come decides (DECISIONS 4, B11). Otherwise count now.
        let start = if c.from_dispatcher || !was_dispatched {
            Some(record.count_start(c.cold_start))
        } else {
            None
        };
        let finalized = Finalized::take(record, outcome, start);
        let id = record.execution_id.clone();
        inner.terminal_order.push_back(id);
        CompletionEffect {
            kind: EffectKind::Finalized(finalized),
        }
    }

    /// Ends a non-terminal execution without a runtime result: sync wait timeout (TIMEOUT),
    /// function removal or queue-wait expiry (ERROR / QUEUE_TIMEOUT). Returns the waiters to wake
    /// and the function, or `None` if it was already terminal or gone.
    pub fn abort(&self, execution_id: &str, reason: Abort) -> Option<Finalized> {
        let mut inner = lock(&self.inner);
        let id = inner.records.get_key_value(execution_id)?.0.clone();
        Self::end(&mut inner, id, reason)
    }

    /// Ends a non-terminal record without a runtime result (see [`Self::abort`]).
    fn end(inner: &mut Inner, execution_id: Arc<str>, reason: Abort) -> Option<Finalized> {
        let record = inner.records.get_mut(&execution_id)?;
        let (state, error, outcome) = match reason {
            Abort::Timeout => (ExecutionState::Timeout, None, Outcome::Timeout),
            Abort::QueueTimeout => (ExecutionState::Timeout, None, Outcome::QueueTimeout),
            Abort::Error(e) => (ExecutionState::Error, Some(e.clone()), Outcome::Error(e)),
        };
        if !record.finish(state, None, error) {
            return None;
        }
        // No runtime result will be accounted for this execution.
        record.start_kind_counted = true;
        let finalized = Finalized::take(record, outcome, None);
        inner.terminal_order.push_back(execution_id);
        Some(finalized)
    }

    /// The janitor's pass (REFERENCE §3.7): deletes terminal records older than `ttl`, releases the
    /// payload of those older than `cleanup-ttl`, deletes non-terminal ones older than
    /// `max-lifetime`. Returns how many were deleted.
    pub fn evict_expired(&self) -> usize {
        let now = Instant::now();
        let cfg = &self.config;
        let mut inner = lock(&self.inner);
        let before = inner.records.len();
        inner.records.retain(|_, r| {
            if r.is_terminal() {
                let anchor = r.finished.map_or(r.created_at, |f| f.at);
                let age = now.saturating_duration_since(anchor);
                if age > cfg.ttl {
                    return false;
                }
                if age > cfg.cleanup_ttl && !r.cleaned {
                    r.cleaned = true;
                    r.output = None;
                }
                true
            } else {
                now.saturating_duration_since(r.created_at) <= cfg.max_lifetime
            }
        });
        let Inner {
            records,
            terminal_order,
        } = &mut *inner;
        terminal_order.retain(|id| records.contains_key(id));
        before - records.len()
    }
}

/// Why an execution is ended by the control plane itself.
pub enum Abort {
    Timeout,
    QueueTimeout,
    Error(ErrorInfo),
}

#[cfg(test)]
mod tests;
