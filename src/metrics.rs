//! Prometheus metrics with the exact names and labels of the Java control plane (REFERENCE §7).
//!
//! Meters are plain atomics and [`Timer`]s (Micrometer timers: a summary plus a `_max` gauge).
//! [`Metrics::render`] walks them in a fixed family order and hands typed rows to the one
//! [`MetricWriter`]; the queue and the autoscaler contribute their gauges as a
//! [`MetricsSection`] through the same writer. The scrape is Prometheus text format 0.0.4.
//!
//! Per-function meters are created together on a function's first metric event, removed when the
//! function is deleted, and a deleted ("tombstoned") name gets detached meters until it is
//! registered again, so late events of a deleted function never resurrect its series. The
//! sync-queue counters of a function follow the same lifecycle but each is exported only from its
//! first increment, as Micrometer registers them lazily.

mod exposition;
mod timer;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use exposition::{Labels, MetricWriter, SampleValue};
pub use timer::{Timer, TimerSnapshot};

use crate::support::lock;

/// A monotonic count; an update is one relaxed atomic add.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.inc_by(1);
    }

    pub fn inc_by(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down, exported as an integer.
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }

    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// One function's core meters (REFERENCE §7.1), shared by handle; updates are atomics.
#[derive(Debug, Default)]
pub struct FunctionMetrics {
    pub enqueue: Counter,
    pub dispatch: Counter,
    pub success: Counter,
    pub error: Counter,
    pub retry: Counter,
    pub timeout: Counter,
    pub queue_rejected: Counter,
    pub cold_start: Counter,
    pub warm_start: Counter,
    /// Async executions that ended in ERROR or TIMEOUT, kept as dead letters (issue 11).
    pub dead_letter: Counter,
    /// Dead letters re-driven as new executions (issue 11).
    pub redrive: Counter,
    pub latency: Timer,
    pub init_duration: Timer,
    pub queue_wait: Timer,
    pub e2e_latency: Timer,
}

/// One function's sync-queue counters (REFERENCE §7.3), held by its queue.
#[derive(Debug, Default)]
pub struct SyncQueueMeters {
    pub admitted: Counter,
    pub rejected: Counter,
    pub timedout: Counter,
}

/// How a family reads its meter out of a function's meters.
type Meter<M, T> = fn(&M) -> &T;

/// The core counter families, in scrape order: name, help, meter.
const CORE_COUNTERS: [(&str, &str, Meter<FunctionMetrics, Counter>); 9] = [
    (
        "function_enqueue_total",
        "Invocations put in a function queue.",
        |m| &m.enqueue,
    ),
    ("function_dispatch_total", "Dispatch attempts.", |m| {
        &m.dispatch
    }),
    (
        "function_success_total",
        "Executions finished successfully.",
        |m| &m.success,
    ),
    (
        "function_error_total",
        "Executions finished with an error.",
        |m| &m.error,
    ),
    ("function_retry_total", "Retries scheduled.", |m| &m.retry),
    (
        "function_timeout_total",
        "Synchronous waits that timed out.",
        |m| &m.timeout,
    ),
    (
        "function_queue_rejected_total",
        "Invocations refused by a full queue.",
        |m| &m.queue_rejected,
    ),
    (
        "function_cold_start_total",
        "Completions reporting a cold start.",
        |m| &m.cold_start,
    ),
    (
        "function_warm_start_total",
        "Completions without a cold start.",
        |m| &m.warm_start,
    ),
];

/// Counter families of features the Java control plane did not have (issue 11): a series is
/// listed only once it counted something, so a scrape without those events is unchanged.
const LAZY_COUNTERS: [(&str, &str, Meter<FunctionMetrics, Counter>); 2] = [
    (
        "function_dead_letter_total",
        "Async executions that ended in error or timeout, kept as dead letters.",
        |m| &m.dead_letter,
    ),
    (
        "function_redrive_total",
        "Dead letters re-driven as new executions.",
        |m| &m.redrive,
    ),
];

const SYNC_COUNTERS: [(&str, &str, Meter<SyncQueueMeters, Counter>); 3] = [
    ("sync_queue_admitted_total", "Sync-queue admissions.", |m| {
        &m.admitted
    }),
    (
        "sync_queue_rejected_total",
        "Sync-queue rejections (depth, est_wait).",
        |m| &m.rejected,
    ),
    (
        "sync_queue_timedout_total",
        "Sync-queue items that waited too long.",
        |m| &m.timedout,
    ),
];

const FUNCTION_TIMERS: [(&str, Meter<FunctionMetrics, Timer>); 4] = [
    ("function_latency_ms_seconds", |m| &m.latency),
    ("function_init_duration_ms_seconds", |m| &m.init_duration),
    ("function_queue_wait_ms_seconds", |m| &m.queue_wait),
    ("function_e2e_latency_ms_seconds", |m| &m.e2e_latency),
];

pub struct Metrics {
    functions: Mutex<FunctionMeterState>,
    callbacks: CountersByLabel,
    pub execution_store_entries: Gauge,
    /// `sync_queue_wait_seconds`: admission to dispatch, all functions.
    pub sync_wait: Timer,
    pub runtime_config_revision: Gauge,
    runtime_config_updates: CountersByLabel,
    pub runtime_config_apply: Timer,
    sections: Mutex<Vec<Arc<dyn MetricsSection>>>,
}

#[derive(Default)]
struct FunctionMeterState {
    live: HashMap<String, Arc<FunctionMetrics>>,
    sync_queue: HashMap<String, Arc<SyncQueueMeters>>,
    tombstoned: HashSet<String>,
}

/// Counters keyed by one fixed label value (callback outcome, update status); a series exists
/// from its first increment.
#[derive(Debug, Default)]
struct CountersByLabel(Mutex<Vec<(&'static str, u64)>>);

impl CountersByLabel {
    fn inc(&self, value: &'static str) {
        let mut counts = lock(&self.0);
        match counts.iter_mut().find(|(v, _)| *v == value) {
            Some((_, n)) => *n += 1,
            None => counts.push((value, 1)),
        }
    }

    fn rows(&self) -> Vec<(&'static str, u64)> {
        let mut rows = lock(&self.0).clone();
        rows.sort_unstable();
        rows
    }
}

/// Gauges another module owns (queues, autoscaler), written into the scrape after ours.
pub trait MetricsSection: Send + Sync {
    fn render(&self, out: &mut MetricWriter);

    /// Figures this section reads from elsewhere (a broker), fetched before each scrape;
    /// `None` (the default) when it has nothing to fetch.
    fn refresh(&self) -> Option<futures_util::future::BoxFuture<'_, ()>> {
        None
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        Metrics {
            functions: Mutex::default(),
            callbacks: CountersByLabel::default(),
            execution_store_entries: Gauge::default(),
            sync_wait: Timer::default(),
            runtime_config_revision: Gauge::default(),
            runtime_config_updates: CountersByLabel::default(),
            runtime_config_apply: Timer::default(),
            sections: Mutex::default(),
        }
    }

    pub fn add_section(&self, section: Arc<dyn MetricsSection>) {
        lock(&self.sections).push(section);
    }

    /// Lets every section fetch what it reads from elsewhere, for at most `within`; a scrape
    /// then shows the last figures fetched. Free when no section fetches anything (memory).
    pub async fn refresh(&self, within: Duration) {
        let sections = lock(&self.sections).clone();
        let fetches: Vec<_> = sections.iter().filter_map(|s| s.refresh()).collect();
        if fetches.is_empty() {
            return;
        }
        let _ = tokio::time::timeout(within, futures_util::future::join_all(fetches)).await;
    }

    /// The meters of the function `name`, created on first use; a deleted name gets detached
    /// meters until it is registered again.
    pub fn function_meters(&self, name: &str) -> Arc<FunctionMetrics> {
        let state = &mut *lock(&self.functions);
        live_or_detached(&mut state.live, &state.tombstoned, name)
    }

    /// The sync-queue counters of `name`, created on first use; the queue keeps them as its
    /// handle. None of them is exported before it is first incremented.
    pub fn sync_queue(&self, name: &str) -> Arc<SyncQueueMeters> {
        let state = &mut *lock(&self.functions);
        live_or_detached(&mut state.sync_queue, &state.tombstoned, name)
    }

    pub fn runtime_config_update(&self, status: &'static str) {
        self.runtime_config_updates.inc(status);
    }

    pub fn callback(&self, outcome: &'static str) {
        self.callbacks.inc(outcome);
    }

    /// The `/actuator/prometheus` body: our families in a fixed order, then each section's.
    pub fn render(&self) -> String {
        let (functions, sync_queue) = {
            let state = lock(&self.functions);
            (sorted(&state.live), sorted(&state.sync_queue))
        };
        let mut w = MetricWriter::with_capacity(8192);
        for (name, help, counter) in CORE_COUNTERS {
            let rows = functions
                .iter()
                .map(|(f, m)| ([("function", f.as_str())], counter(m).get()));
            w.counter(name, help, rows);
        }
        for (name, help, counter) in LAZY_COUNTERS {
            let rows = functions
                .iter()
                .map(|(f, m)| ([("function", f.as_str())], counter(m).get()))
                .filter(|(_, n)| *n > 0);
            w.counter(name, help, rows);
        }
        for (name, help, counter) in SYNC_COUNTERS {
            let rows = sync_queue
                .iter()
                .map(|(f, m)| ([("function", f.as_str())], counter(m).get()))
                .filter(|(_, n)| *n > 0);
            w.counter(name, help, rows);
        }
        let callbacks = self.callbacks.rows();
        w.counter(
            "controlplane_callbacks_total",
            "Completion callbacks received, by outcome.",
            callbacks
                .iter()
                .map(|&(outcome, n)| ([("outcome", outcome)], n)),
        );
        w.gauge(
            "controlplane_runtime_config_revision",
            "Revision of the live runtime configuration.",
            [([], self.runtime_config_revision.get())],
        );
        let updates = self.runtime_config_updates.rows();
        w.counter(
            "controlplane_runtime_config_updates_total",
            "Runtime configuration updates, by status.",
            updates.iter().map(|&(status, n)| ([("status", status)], n)),
        );
        w.gauge(
            "controlplane_execution_store_entries",
            "Execution records held in memory.",
            [([], self.execution_store_entries.get())],
        );
        for (name, timer) in FUNCTION_TIMERS {
            let rows: Vec<_> = functions
                .iter()
                .map(|(f, m)| ([("function", f.as_str())], timer(m).snapshot()))
                .collect();
            w.summary(name, &rows);
        }
        w.summary(
            "sync_queue_wait_seconds",
            &[([], self.sync_wait.snapshot())],
        );
        w.summary(
            "controlplane_runtime_config_apply_duration_seconds",
            &[([], self.runtime_config_apply.snapshot())],
        );
        let sections = lock(&self.sections).clone();
        for section in sections {
            section.render(&mut w);
        }
        w.finish()
    }
}

impl Metrics {
    /// A (re-)registered name exports its series again.
    pub fn function_registered(&self, name: &str) {
        lock(&self.functions).tombstoned.remove(name);
    }

    /// Drops a deleted function's series; its late events go to detached meters.
    pub fn function_removed(&self, name: &str) {
        let mut state = lock(&self.functions);
        state.live.remove(name);
        state.sync_queue.remove(name);
        state.tombstoned.insert(name.to_owned());
    }
}

/// The meters of `name` in `live`, created on first use; a tombstoned name gets meters that no
/// scrape lists.
fn live_or_detached<T: Default>(
    live: &mut HashMap<String, Arc<T>>,
    tombstoned: &HashSet<String>,
    name: &str,
) -> Arc<T> {
    if let Some(m) = live.get(name) {
        return m.clone();
    }
    let m = Arc::<T>::default();
    if !tombstoned.contains(name) {
        live.insert(name.to_owned(), m.clone());
    }
    m
}

/// The meters of a map, by function name, as the scrape lists them.
fn sorted<T>(meters: &HashMap<String, Arc<T>>) -> Vec<(String, Arc<T>)> {
    let mut rows: Vec<_> = meters
        .iter()
        .map(|(name, m)| (name.clone(), m.clone()))
        .collect();
    rows.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    rows
}

#[cfg(test)]
mod tests;
