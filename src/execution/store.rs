//! The execution store: every execution record in one `Mutex`-guarded map, with the completion
//! protocol of REFERENCE §3.4 and the retention of §3.7 plus a hard entry cap (DECISIONS 7), a
//! byte budget and a per-function share of both (issue 10, defect 9).
//!
//! Invariants: the lock is held only for map operations and state changes, never across `.await`
//! and never while sending to waiters; a terminal record never changes its result; when full
//! (entries or bytes), only terminal records are evicted (oldest first) and new executions are
//! refused rather than in-flight ones dropped; `Inner::bytes` is the sum of every record's
//! [`ExecutionRecord::held_bytes`], and a function's [`StoreShare`](crate::registry::StoreShare)
//! the sum over its in-flight records; the dead-letter index holds exactly the records that keep
//! a dead letter (issue 11).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::dead_letters::DeadLetterIndex;
use super::notice::{Announcement, ResultListener, ResultTarget};
use super::{ExecutionRecord, Outcome, Stamp, Task};
use crate::config::ExecutionStoreConfig;
use crate::model::{
    AttemptResult, ColdStart, ErrorInfo, ExecutionState, ExecutionStatus, StartKind,
};
use crate::registry::RegisteredFunction;
use crate::support::lock;

pub use dead_letters::DeadLetterLookup;

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
    /// What one function's in-flight records may hold: (records, bytes); `None` at 100%.
    share: Option<(usize, usize)>,
    /// Told when an execution with a result URL ends (the webhooks, issue 11).
    listener: OnceLock<Arc<dyn ResultListener>>,
}

#[derive(Default)]
struct Inner {
    /// Keyed by our own ids (random UUIDs), so a fast hasher: callers only look ids up.
    records: HashMap<Arc<str>, ExecutionRecord, foldhash::fast::RandomState>,
    /// Ids in the order they became terminal: eviction order when the store is full.
    terminal_order: VecDeque<Arc<str>>,
    /// What all records hold (see [`ExecutionRecord::held_bytes`]).
    bytes: usize,
    /// The records that keep a dead letter, by function, newest last.
    dead_letters: DeadLetterIndex,
}

impl Inner {
    /// Evicts the oldest terminal record; false when only in-flight ones are left.
    fn evict_oldest_finished(&mut self) -> bool {
        while let Some(oldest) = self.terminal_order.pop_front() {
            if self.records.get(&oldest).is_some_and(|r| r.is_terminal()) {
                if let Some(r) = self.records.remove(&oldest) {
                    self.bytes -= r.held_bytes();
                    unindex(&mut self.dead_letters, &r);
                }
                return true;
            }
        }
        false
    }

    /// Removes a record, releasing its bytes (and its function's share if it was in flight).
    fn remove(&mut self, execution_id: &str) -> Option<ExecutionRecord> {
        let record = self.records.remove(execution_id)?;
        let held = record.held_bytes();
        self.bytes -= held;
        if !record.is_terminal() {
            record.function.store_share.sub(held);
        }
        unindex(&mut self.dead_letters, &record);
        Some(record)
    }

    /// Stores a record's new terminal state: `held` was its charge while in flight. A record
    /// that kept a dead letter is indexed (the only case that looks the record up again).
    fn finished(
        &mut self,
        execution_id: Arc<str>,
        held: usize,
        now_held: usize,
        finalized: &Finalized,
    ) {
        finalized.function.store_share.sub(held);
        self.bytes = self.bytes - held + now_held;
        if finalized.dead_letter
            && let Some(record) = self.records.get_mut(&execution_id)
        {
            let seq =
                self.dead_letters
                    .add(record.function.name(), execution_id.clone(), record.state);
            record.dead_letter_seq = Some(seq);
        }
        self.terminal_order.push_back(execution_id);
    }
}

/// Takes an evicted record's dead letter out of the index.
fn unindex(index: &mut DeadLetterIndex, record: &ExecutionRecord) {
    if let Some(seq) = record.dead_letter_seq {
        index.remove(record.function.name(), seq);
    }
}

/// Why a new execution was refused (503 `OVERLOADED` either way).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StoreFull {
    /// Entry cap or byte budget reached and only in-flight executions are left to evict.
    #[error("the execution store is full of in-flight executions")]
    InFlight,
    /// The function's in-flight executions hold its whole share of the store.
    #[error("the function holds its whole share of the execution store")]
    FunctionShare,
}

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
    /// How long a retry of a failure would wait (the backoff, issue 11); zero when retries go
    /// at once. A retry that would start past the sync caller's deadline is not scheduled.
    pub retry_delay: std::time::Duration,
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
    /// The execution was async and failed: its request is kept as a dead letter.
    pub dead_letter: bool,
    /// The result notice of an execution with a result URL (issue 11), sent by `wake`.
    /// Boxed: rare, and large beside the rest.
    announcement: Option<Box<Announcement>>,
}

impl Finalized {
    /// What a record that just became terminal hands to the caller: its waiters and timings.
    fn take(
        record: &mut ExecutionRecord,
        outcome: Outcome,
        start: Option<StartKind>,
        target: Option<ResultTarget>,
    ) -> Self {
        Finalized {
            announcement: target.map(|t| Box::new(t.notice(record))),
            function: record.function.clone(),
            outcome,
            waiters: std::mem::take(&mut record.waiters),
            enqueued_at: record.enqueued_at,
            started: record.started,
            finished: record.finished.unwrap_or_else(Stamp::now),
            start,
            dead_letter: record.dead_letter.is_some(),
        }
    }

    /// Wakes the waiters and announces the result to the store's [`ResultListener`]; every
    /// path that ends an execution calls it.
    pub fn wake(&mut self) {
        for waiter in self.waiters.drain(..) {
            let _ = waiter.send(self.outcome.clone());
        }
        if let Some(announcement) = self.announcement.take() {
            announcement.send();
        }
    }
}

impl ExecutionStore {
    pub fn new(config: ExecutionStoreConfig) -> Self {
        // Sized for the cap up front: growing a large map rehashes it under the lock (a stall of
        // ~100 ms at 60k entries). Capacity that is never used is never touched, so not resident.
        let capacity = config.max_entries.min(1 << 20);
        let percent = config.function_share_percent.clamp(1, 100);
        let share = (percent < 100).then(|| {
            (
                (config.max_entries * percent / 100).max(1),
                config.max_bytes / 100 * percent,
            )
        });
        ExecutionStore {
            inner: Mutex::new(Inner {
                records: HashMap::with_capacity_and_hasher(capacity, Default::default()),
                terminal_order: VecDeque::new(),
                bytes: 0,
                dead_letters: DeadLetterIndex::default(),
            }),
            config,
            share,
            listener: OnceLock::new(),
        }
    }

    /// Installs the listener told of executions with a result URL (once, at build).
    pub fn set_result_listener(&self, listener: Arc<dyn ResultListener>) {
        let _ = self.listener.set(listener);
    }

    /// The result listener, for terminal transitions made outside this store (the shared
    /// records of a durable backend).
    pub fn result_listener(&self) -> Option<&Arc<dyn ResultListener>> {
        self.listener.get()
    }

    /// What all records hold, in bytes (for tests and measurements).
    pub fn held_bytes(&self) -> usize {
        lock(&self.inner).bytes
    }

    pub fn len(&self) -> usize {
        lock(&self.inner).records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stores a new QUEUED execution, evicting the oldest terminal records when at the entry cap
    /// or over the byte budget. Refused when the function already holds its share in flight, or
    /// when only in-flight records are left to evict.
    pub fn insert(&self, task: Task) -> Result<(), StoreFull> {
        let record = ExecutionRecord::new(task);
        let held = record.held_bytes();
        let share = &record.function.store_share;
        let mut inner = lock(&self.inner);
        if let Some((max_records, max_bytes)) = self.share {
            let (records, bytes) = share.get();
            if records >= max_records || bytes + held > max_bytes {
                return Err(StoreFull::FunctionShare);
            }
        }
        while inner.records.len() >= self.config.max_entries
            || inner.bytes + held > self.config.max_bytes
        {
            if !inner.evict_oldest_finished() {
                return Err(StoreFull::InFlight);
            }
        }
        share.add(held);
        inner.bytes += held;
        inner.records.insert(record.execution_id.clone(), record);
        Ok(())
    }

    /// Forgets an execution whose admission failed.
    pub fn remove(&self, execution_id: &str) -> bool {
        lock(&self.inner).remove(execution_id).is_some()
    }

    /// Whether an execution is gone, running (not terminal) or finished.
    pub fn liveness(&self, execution_id: &str) -> Liveness {
        match lock(&self.inner).records.get(execution_id) {
            None => Liveness::Gone,
            Some(r) if r.is_terminal() => Liveness::Finished,
            Some(_) => Liveness::Running,
        }
    }

    /// The current attempt of an execution.
    pub fn attempt(&self, execution_id: &str) -> Option<u32> {
        lock(&self.inner)
            .records
            .get(execution_id)
            .map(|r| r.attempt)
    }

    /// The trace id of a running execution (for the log lines of its callbacks).
    pub fn trace_id(&self, execution_id: &str) -> Option<String> {
        lock(&self.inner)
            .records
            .get(execution_id)
            .and_then(|r| r.task.as_ref())
            .map(|t| t.trace.trace_id().to_owned())
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
            let id = task.execution_id.clone();
            let finalized = Self::end(&mut inner, id, Abort::Timeout, self.listener.get());
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
        let held = record.held_bytes();
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
            // attempt share `timeoutMs`, so an attempt that timed out lands here), or passes
            // before the retry's backoff delay is over. Its caller is answered 408, so the
            // execution ends as TIMEOUT now instead of being sent again.
            if record.caller_gone(Instant::now() + c.retry_delay) {
                let id = record.execution_id.clone();
                return CompletionEffect {
                    kind: match Self::end(&mut inner, id, Abort::Timeout, self.listener.get()) {
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
        let target = ResultTarget::of(self.listener.get(), record);
        record.finish(state, output, error);
        record.final_attempt = Some(attempt);
        let now_held = record.held_bytes();
        // A callback that beats the runtime's HTTP reply cannot know about a cold start: the
        // reply still to come decides (DECISIONS 4, B11). Otherwise count now.
        let start = if c.from_dispatcher || !was_dispatched {
            Some(record.count_start(c.cold_start))
        } else {
            None
        };
        let finalized = Finalized::take(record, outcome, start, target);
        let id = record.execution_id.clone();
        inner.finished(id, held, now_held, &finalized);
        // An output may take the store over its byte budget: older finished records make room
        // (never this one, whose caller may still read it).
        while inner.bytes > self.config.max_bytes && inner.terminal_order.len() > 1 {
            if !inner.evict_oldest_finished() {
                break;
            }
        }
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
        Self::end(&mut inner, id, reason, self.listener.get())
    }

    /// Ends a non-terminal record without a runtime result (see [`Self::abort`]).
    fn end(
        inner: &mut Inner,
        execution_id: Arc<str>,
        reason: Abort,
        listener: Option<&Arc<dyn ResultListener>>,
    ) -> Option<Finalized> {
        let record = inner.records.get_mut(&execution_id)?;
        let target = ResultTarget::of(listener, record);
        let held = record.held_bytes();
        let (state, output, error, outcome) = match reason {
            Abort::Timeout => (ExecutionState::Timeout, None, None, Outcome::Timeout),
            Abort::QueueTimeout => (ExecutionState::Timeout, None, None, Outcome::QueueTimeout),
            Abort::Error(e) => (
                ExecutionState::Error,
                None,
                Some(e.clone()),
                Outcome::Error(e),
            ),
            Abort::Success(o) => (
                ExecutionState::Success,
                o.clone(),
                None,
                Outcome::Success(o),
            ),
        };
        if !record.finish(state, output, error) {
            return None;
        }
        // No runtime result will be accounted for this execution.
        record.start_kind_counted = true;
        let now_held = record.held_bytes();
        let finalized = Finalized::take(record, outcome, None, target);
        inner.finished(execution_id, held, now_held, &finalized);
        Some(finalized)
    }

    /// The janitor's pass (REFERENCE §3.7): deletes terminal records older than `ttl`, releases the
    /// payload of those older than `cleanup-ttl`, deletes non-terminal ones older than
    /// `max-lifetime`. Returns how many were deleted.
    pub fn evict_expired(&self) -> usize {
        let now = Instant::now();
        let cfg = &self.config;
        let mut inner = lock(&self.inner);
        let Inner {
            records,
            terminal_order,
            bytes,
            dead_letters,
        } = &mut *inner;
        let before = records.len();
        records.retain(|_, r| {
            let held = r.held_bytes();
            if r.is_terminal() {
                let anchor = r.finished.map_or(r.created_at, |f| f.at);
                let age = now.saturating_duration_since(anchor);
                if age > cfg.ttl {
                    *bytes -= held;
                    unindex(dead_letters, r);
                    return false;
                }
                // The output goes at `cleanup-ttl`; a dead letter's request stays until `ttl`.
                if age > cfg.cleanup_ttl && !r.cleaned {
                    r.cleaned = true;
                    r.output = None;
                    *bytes = *bytes - held + r.held_bytes();
                }
                true
            } else {
                let keep = now.saturating_duration_since(r.created_at) <= cfg.max_lifetime;
                if !keep {
                    *bytes -= held;
                    r.function.store_share.sub(held);
                }
                keep
            }
        });
        terminal_order.retain(|id| records.contains_key(id));
        before - records.len()
    }
}

/// Why an execution is ended by the control plane itself.
pub enum Abort {
    Timeout,
    QueueTimeout,
    Error(ErrorInfo),
    /// Another replica's result, already final in the shared record (issue 9).
    Success(Option<crate::model::Json>),
}

mod dead_letters;
#[cfg(test)]
mod tests;
