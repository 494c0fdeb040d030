//! Per-function bounded queues, concurrency slots and the scheduler (REFERENCE §3.9, §5.1, §5.2).
//!
//! There is no polling loop: work becomes runnable only when a task is queued or a slot is
//! released, so those two events dispatch directly, under one short lock, as many tasks as the
//! function has free slots. Functions never share slots, so a hot function cannot delay another.
//! Sync-queue items (admission-controlled synchronous invocations) wait in the same per-function
//! FIFO as async tasks and share its slots; they count against the global `max-depth`.
//!
//! Retries waiting out their backoff (issue 11) are held here too, beside the FIFO: each has a
//! tokio timer that moves it to the back of the FIFO when its delay is over; it holds no slot
//! while it waits, but it holds a place of `queueSize`.
//!
//! Invariants: a function never has more than its effective concurrency in flight; each slot is
//! acquired here and released exactly once per dispatched attempt (by the completion protocol);
//! queue lengths never exceed `queueSize` (async items plus delayed retries) and `max-depth`
//! (sync, global).

pub mod estimator;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::SyncQueueConfig;
use crate::execution::Task;
use crate::execution::store::{Abort, ExecutionStore};
use crate::function::ConcurrencyControlMode;
use crate::metrics::{MetricWriter, Metrics, MetricsSection, SyncQueueMeters};
use crate::model::ErrorInfo;
use crate::registry::{FunctionLifecycle, RegisteredFunction};
use crate::support::lock;
use estimator::{RateWindow, estimate_wait};

/// The live (runtime-config mutable) sync-queue settings.
#[derive(Debug)]
pub struct SyncSettings {
    enabled: AtomicBool,
    admission_enabled: AtomicBool,
    max_estimated_wait_ns: AtomicU64,
    max_queue_wait_ns: AtomicU64,
    retry_after_seconds: AtomicU32,
}

impl SyncSettings {
    pub fn new(c: &SyncQueueConfig) -> Self {
        let s = SyncSettings {
            enabled: AtomicBool::new(c.enabled),
            admission_enabled: AtomicBool::new(c.admission_enabled),
            max_estimated_wait_ns: AtomicU64::new(0),
            max_queue_wait_ns: AtomicU64::new(0),
            retry_after_seconds: AtomicU32::new(c.retry_after_seconds),
        };
        s.set_max_estimated_wait(c.max_estimated_wait);
        s.set_max_queue_wait(c.max_queue_wait);
        s
    }
    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }
    pub fn set_enabled(&self, v: bool) {
        self.enabled.store(v, Ordering::Relaxed);
    }
    pub fn admission_enabled(&self) -> bool {
        self.admission_enabled.load(Ordering::Relaxed)
    }
    pub fn set_admission_enabled(&self, v: bool) {
        self.admission_enabled.store(v, Ordering::Relaxed);
    }
    pub fn max_estimated_wait(&self) -> Duration {
        Duration::from_nanos(self.max_estimated_wait_ns.load(Ordering::Relaxed))
    }
    pub fn set_max_estimated_wait(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.max_estimated_wait_ns.store(ns, Ordering::Relaxed);
    }
    pub fn max_queue_wait(&self) -> Duration {
        Duration::from_nanos(self.max_queue_wait_ns.load(Ordering::Relaxed))
    }
    pub fn set_max_queue_wait(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.max_queue_wait_ns.store(ns, Ordering::Relaxed);
    }
    pub fn retry_after_seconds(&self) -> u32 {
        self.retry_after_seconds.load(Ordering::Relaxed)
    }
    pub fn set_retry_after_seconds(&self, v: u32) {
        self.retry_after_seconds.store(v, Ordering::Relaxed);
    }
}

/// Why a sync-queue admission was refused (`X-Queue-Reject-Reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    Depth,
    EstWait,
    Timeout,
}

impl RejectReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::Depth => "depth",
            RejectReason::EstWait => "est_wait",
            RejectReason::Timeout => "timeout",
        }
    }
}

/// Why a queue did not take a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    /// The function's queue is full, or the function is gone.
    #[error("queue full or closed")]
    Full,
    /// Sync-queue admission refused it.
    #[error("sync queue rejected the invocation ({})", .reason.as_str())]
    SyncRejected {
        reason: RejectReason,
        retry_after_seconds: u32,
    },
}

/// Where tasks go when a slot frees up for them: the queue starts work, it does not run it.
pub trait TaskSink: Send + Sync {
    fn start(&self, task: Task);
}

/// Cluster-wide figures of a function's queue kept by a shared backend (issue 9): they replace
/// this replica's own in `function_queue_depth` and `function_inFlight`.
pub trait SharedQueueDepths: Send + Sync {
    /// (waiting, delivered and not yet settled), when known.
    fn depth(&self, function: &str) -> Option<(u64, u64)>;
}

pub struct QueueManager {
    inner: Mutex<Inner>,
    shared_depths: std::sync::OnceLock<Arc<dyn SharedQueueDepths>>,
    sink: Arc<dyn TaskSink>,
    store: Arc<ExecutionStore>,
    metrics: Arc<Metrics>,
    sync: Arc<SyncSettings>,
    max_depth: usize,
    min_samples: u64,
    window: Duration,
    /// The async-queue module is on: its gauges (REFERENCE §7.2) are exported.
    async_enabled: bool,
}

struct Inner {
    queues: HashMap<String, FunctionQueue>,
    sync_depth: usize,
    global_rate: RateWindow,
    next_generation: u64,
}

struct FunctionQueue {
    /// Tells this queue from an earlier one of a function of the same name.
    generation: u64,
    items: VecDeque<Queued>,
    async_len: usize,
    /// Retries waiting out their backoff delay, with the timer that releases each.
    delayed: HashMap<Arc<str>, Delayed>,
    capacity: usize,
    in_flight: u32,
    configured: u32,
    effective: u32,
    mode: ConcurrencyControlMode,
    target_per_pod: u32,
    rate: RateWindow,
    /// Taken at registration, after metrics has seen it (listener order in `lib.rs`), so a
    /// re-registered name counts into live series.
    sync_meters: Arc<SyncQueueMeters>,
}

struct Queued {
    task: Task,
    sync: bool,
}

/// A retry waiting for its delay; its timer is aborted when it leaves otherwise.
struct Delayed {
    task: Task,
    timer: tokio::task::AbortHandle,
}

impl FunctionQueue {
    fn remove_at(&mut self, index: usize, sync_depth: &mut usize) -> Option<Queued> {
        let item = self.items.remove(index)?;
        if item.sync {
            *sync_depth -= 1;
        } else {
            self.async_len -= 1;
        }
        Some(item)
    }
}

impl QueueManager {
    /// Installs the shared backend's cluster-wide figures for the queue gauges (once).
    pub fn set_shared_depths(&self, depths: Arc<dyn SharedQueueDepths>) {
        let _ = self.shared_depths.set(depths);
    }

    pub fn new(
        config: &SyncQueueConfig,
        async_enabled: bool,
        sync: Arc<SyncSettings>,
        store: Arc<ExecutionStore>,
        metrics: Arc<Metrics>,
        sink: Arc<dyn TaskSink>,
    ) -> Self {
        QueueManager {
            shared_depths: std::sync::OnceLock::new(),
            inner: Mutex::new(Inner {
                queues: HashMap::new(),
                sync_depth: 0,
                global_rate: RateWindow::new(config.throughput_window, Instant::now()),
                next_generation: 0,
            }),
            sink,
            store,
            metrics,
            sync,
            max_depth: config.max_depth,
            min_samples: u64::from(config.per_function_min_samples),
            window: config.throughput_window,
            async_enabled,
        }
    }

    pub fn sync_settings(&self) -> &Arc<SyncSettings> {
        &self.sync
    }

    fn start(&self, ready: Vec<Task>) {
        for task in ready {
            self.sink.start(task);
        }
    }

    /// Takes as many queued tasks as there are free slots.
    fn take_ready(&self, inner: &mut Inner, name: &str) -> Vec<Task> {
        let Inner {
            queues,
            sync_depth,
            global_rate,
            ..
        } = inner;
        let Some(q) = queues.get_mut(name) else {
            return Vec::new();
        };
        let mut ready = Vec::new();
        let now = Instant::now();
        while q.in_flight < q.effective {
            let Some(item) = q.remove_at(0, sync_depth) else {
                break;
            };
            if item.sync {
                self.metrics
                    .sync_wait
                    .record(now.saturating_duration_since(item.task.enqueued_at));
            }
            q.in_flight += 1;
            q.rate.record(now);
            global_rate.record(now);
            let mut task = item.task;
            task.slot = Some(q.generation);
            ready.push(task);
        }
        ready
    }

    /// Queues an async task (also retries); `Err` when the function's queue is full or gone.
    pub fn enqueue(&self, task: Task) -> Result<(), QueueError> {
        // The registration outlives the task: its name keys the lookup without a copy.
        let function = task.function.clone();
        let name = function.name();
        let ready = {
            let mut inner = lock(&self.inner);
            let q = inner.queues.get_mut(name).ok_or(QueueError::Full)?;
            if q.async_len + q.delayed.len() >= q.capacity {
                return Err(QueueError::Full);
            }
            q.items.push_back(Queued { task, sync: false });
            q.async_len += 1;
            self.take_ready(&mut inner, name)
        };
        self.start(ready);
        Ok(())
    }

    /// Holds a retry for `delay`, then queues it like [`Self::enqueue`]. It takes its place of
    /// `queueSize` now (`Err` when the queue is full or gone), and no slot until it is queued.
    pub fn enqueue_after(self: &Arc<Self>, task: Task, delay: Duration) -> Result<(), QueueError> {
        let function = task.function.clone();
        let name = function.name();
        let mut inner = lock(&self.inner);
        let q = inner.queues.get_mut(name).ok_or(QueueError::Full)?;
        if q.async_len + q.delayed.len() >= q.capacity {
            return Err(QueueError::Full);
        }
        let id = task.execution_id.clone();
        let generation = q.generation;
        let queue = Arc::downgrade(self);
        let (fire_id, fire_name) = (id.clone(), function.clone());
        // The timer cannot take the lock before this function returns, so it finds its entry.
        let timer = tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if let Some(queue) = queue.upgrade() {
                queue.release_delayed(fire_name.name(), generation, &fire_id);
            }
        });
        let delayed = Delayed {
            task,
            timer: timer.abort_handle(),
        };
        if let Some(replaced) = q.delayed.insert(id, delayed) {
            replaced.timer.abort();
        }
        Ok(())
    }

    /// A delayed retry's time has come: to the back of the FIFO, then whatever slots allow.
    fn release_delayed(&self, name: &str, generation: u64, execution_id: &str) {
        let ready = {
            let mut inner = lock(&self.inner);
            let Some(q) = inner
                .queues
                .get_mut(name)
                .filter(|q| q.generation == generation)
            else {
                return;
            };
            let Some(delayed) = q.delayed.remove(execution_id) else {
                return;
            };
            q.items.push_back(Queued {
                task: delayed.task,
                sync: false,
            });
            q.async_len += 1;
            self.take_ready(&mut inner, name)
        };
        self.start(ready);
    }

    /// Sync-queue admission (REFERENCE §5.2, without B4/B5): global depth, then the estimated
    /// wait of this function's queue against `max-estimated-wait` (compared exactly).
    pub fn admit_sync(&self, task: Task) -> Result<(), QueueError> {
        // The registration outlives the task: its name keys the lookup without a copy.
        let function = task.function.clone();
        let name = function.name();
        let reject = |meters: &SyncQueueMeters, reason| {
            meters.rejected.inc();
            Err(QueueError::SyncRejected {
                reason,
                retry_after_seconds: self.sync.retry_after_seconds(),
            })
        };
        let ready = {
            let mut inner = lock(&self.inner);
            let now = Instant::now();
            let sync_depth = inner.sync_depth;
            let global_rate = inner.global_rate.rate(now);
            let Some(q) = inner.queues.get_mut(name) else {
                drop(inner);
                return reject(&self.metrics.sync_queue(name), RejectReason::Depth);
            };
            if sync_depth >= self.max_depth {
                return reject(&q.sync_meters, RejectReason::Depth);
            }
            if self.sync.admission_enabled() {
                let ahead = q.items.len();
                let samples = q.rate.count(now);
                let function_rate = q.rate.rate(now);
                let estimate =
                    estimate_wait(ahead, samples, function_rate, global_rate, self.min_samples);
                if estimate >= self.sync.max_estimated_wait() {
                    return reject(&q.sync_meters, RejectReason::EstWait);
                }
            }
            q.sync_meters.admitted.inc();
            q.items.push_back(Queued { task, sync: true });
            inner.sync_depth += 1;
            self.take_ready(&mut inner, name)
        };
        self.start(ready);
        Ok(())
    }

    /// Returns one slot of `name` (taken from queue `generation`) and starts what it frees up.
    pub fn release_slot(&self, name: &str, generation: u64) {
        let ready = {
            let mut inner = lock(&self.inner);
            let Some(q) = inner
                .queues
                .get_mut(name)
                .filter(|q| q.generation == generation)
            else {
                return;
            };
            q.in_flight = q.in_flight.saturating_sub(1);
            self.take_ready(&mut inner, name)
        };
        self.start(ready);
    }

    /// Removes a still-queued execution (its caller gave up); true if it was queued. With
    /// `sync_only`, only a sync-queue item is removed: a retry waiting in the async queue has no
    /// queue-wait limit (REFERENCE §3.5, §5.2).
    pub fn cancel(&self, name: &str, execution_id: &str, sync_only: bool) -> bool {
        let mut inner = lock(&self.inner);
        let Inner {
            queues, sync_depth, ..
        } = &mut *inner;
        let Some(q) = queues.get_mut(name) else {
            return false;
        };
        if !sync_only && let Some(delayed) = q.delayed.remove(execution_id) {
            delayed.timer.abort();
            return true;
        }
        match q
            .items
            .iter()
            .position(|i| &*i.task.execution_id == execution_id && (i.sync || !sync_only))
        {
            Some(index) => q.remove_at(index, sync_depth).is_some(),
            None => false,
        }
    }

    /// Sets the effective concurrency (autoscaler), clamped to [1, configured].
    pub fn set_effective_concurrency(&self, name: &str, value: u32) {
        let ready = {
            let mut inner = lock(&self.inner);
            let Some(q) = inner.queues.get_mut(name) else {
                return;
            };
            q.effective = value.clamp(1, q.configured.max(1));
            self.take_ready(&mut inner, name)
        };
        self.start(ready);
    }

    /// Updates the concurrency-controller gauges (autoscaler).
    pub fn set_controller(&self, name: &str, mode: ConcurrencyControlMode, target: u32) {
        if let Some(q) = lock(&self.inner).queues.get_mut(name) {
            q.mode = mode;
            q.target_per_pod = target;
        }
    }

    /// (queued async tasks, in flight) of a function, for the autoscaler (REFERENCE §5.3).
    pub fn load(&self, name: &str) -> (usize, u32) {
        lock(&self.inner)
            .queues
            .get(name)
            .map_or((0, 0), |q| (q.async_len, q.in_flight))
    }
}

impl FunctionLifecycle for QueueManager {
    fn on_register(&self, function: &Arc<RegisteredFunction>) -> Result<(), String> {
        let spec = &function.spec;
        let (mode, target) = spec.scaling.initial_controller();
        let mut inner = lock(&self.inner);
        inner.next_generation += 1;
        let queue = FunctionQueue {
            generation: inner.next_generation,
            items: VecDeque::new(),
            async_len: 0,
            delayed: HashMap::new(),
            capacity: spec.queue_size as usize,
            in_flight: 0,
            configured: spec.concurrency,
            effective: spec.concurrency,
            mode,
            target_per_pod: target,
            rate: RateWindow::new(self.window, Instant::now()),
            sync_meters: self.metrics.sync_queue(function.name()),
        };
        inner.queues.insert(function.name().to_owned(), queue);
        Ok(())
    }

    /// Drops the function's queue; everything still queued ends with FUNCTION_REMOVED.
    fn on_remove(&self, name: &str) {
        let drained: Vec<Queued> = {
            let mut inner = lock(&self.inner);
            let Some(q) = inner.queues.remove(name) else {
                return;
            };
            let sync_items = q.items.iter().filter(|i| i.sync).count();
            inner.sync_depth -= sync_items;
            let delayed = q.delayed.into_values().map(|d| {
                d.timer.abort();
                Queued {
                    task: d.task,
                    sync: false,
                }
            });
            q.items.into_iter().chain(delayed).collect()
        };
        for item in drained {
            let error = ErrorInfo::new(
                "FUNCTION_REMOVED",
                format!("Function '{name}' was removed before queued execution could run"),
            );
            if let Some(mut f) = self
                .store
                .abort(&item.task.execution_id, Abort::Error(error))
            {
                f.wake();
            }
        }
    }
}

/// One function's queue gauges, read under the lock and written after it.
struct GaugeRow {
    function: String,
    queued: usize,
    in_flight: u32,
    effective: u32,
    target: u32,
    mode: ConcurrencyControlMode,
}

impl MetricsSection for QueueManager {
    fn render(&self, w: &mut MetricWriter) {
        if !self.async_enabled && !self.sync.enabled() {
            return;
        }
        let (mut rows, sync_depth) = {
            let inner = lock(&self.inner);
            let rows: Vec<GaugeRow> = inner
                .queues
                .iter()
                .map(|(name, q)| GaugeRow {
                    function: name.clone(),
                    queued: q.async_len,
                    in_flight: q.in_flight,
                    effective: q.effective,
                    target: q.target_per_pod,
                    mode: q.mode,
                })
                .collect();
            (rows, inner.sync_depth)
        };
        rows.sort_by(|a, b| a.function.cmp(&b.function));
        if let Some(shared) = self.shared_depths.get() {
            for row in &mut rows {
                if let Some((waiting, in_flight)) = shared.depth(&row.function) {
                    row.queued = usize::try_from(waiting).unwrap_or(usize::MAX);
                    row.in_flight = u32::try_from(in_flight).unwrap_or(u32::MAX);
                }
            }
        }
        let per_function = |w: &mut MetricWriter, name, value: fn(&GaugeRow) -> f64| {
            let series = rows
                .iter()
                .map(|r| ([("function", &*r.function)], value(r)));
            w.gauge(name, "", series);
        };
        per_function(w, "function_queue_depth", |r| r.queued as f64);
        per_function(w, "function_inFlight", |r| f64::from(r.in_flight));
        per_function(w, "function_effective_concurrency", |r| {
            f64::from(r.effective)
        });
        per_function(w, "function_target_inflight_per_pod", |r| {
            f64::from(r.target)
        });
        let modes = rows.iter().flat_map(|r| {
            ConcurrencyControlMode::ALL.into_iter().map(move |mode| {
                let on = if mode == r.mode { 1.0 } else { 0.0 };
                ([("function", &*r.function), ("mode", mode.as_str())], on)
            })
        });
        w.gauge("function_concurrency_controller_mode", "", modes);
        w.gauge("sync_queue_depth", "", [([], sync_depth as f64)]);
    }
}

#[cfg(test)]
mod tests;
