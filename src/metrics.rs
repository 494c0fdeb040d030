//! Prometheus metrics with the exact names and labels of the Java control plane (REFERENCE §7).
//!
//! Counters and gauges are prometheus-client families. Micrometer timers are exported as
//! summaries (`<name>_seconds{quantile=…}`, `_count`, `_sum`) plus a `<name>_seconds_max` gauge;
//! prometheus-client has no summary type, so [`Timer`] keeps a small windowed log-linear
//! histogram and renders itself. The scrape is Prometheus text format 0.0.4.
//!
//! Per-function meters are created together on a function's first metric event, removed when the
//! function is deleted, and a deleted ("tombstoned") name gets detached meters until it is
//! registered again, so late events of a deleted function never resurrect its series.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::atomic::AtomicI64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::support::lock;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FunctionLabel {
    pub function: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    pub status: &'static str,
}

type CounterFamily = Family<FunctionLabel, Counter>;

/// Handles to one function's core meters (REFERENCE §7.1); cloning is cheap, updates are atomics.
#[derive(Debug)]
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
    pub latency: Arc<Timer>,
    pub init_duration: Arc<Timer>,
    pub queue_wait: Arc<Timer>,
    pub e2e_latency: Arc<Timer>,
}

struct CoreFamilies {
    enqueue: CounterFamily,
    dispatch: CounterFamily,
    success: CounterFamily,
    error: CounterFamily,
    retry: CounterFamily,
    timeout: CounterFamily,
    queue_rejected: CounterFamily,
    cold_start: CounterFamily,
    warm_start: CounterFamily,
}

impl CoreFamilies {
    fn all(&self) -> [&CounterFamily; 9] {
        [
            &self.enqueue,
            &self.dispatch,
            &self.success,
            &self.error,
            &self.retry,
            &self.timeout,
            &self.queue_rejected,
            &self.cold_start,
            &self.warm_start,
        ]
    }
}

pub struct Metrics {
    registry: Registry,
    core: CoreFamilies,
    timers: [TimerFamily; 4],
    functions: Mutex<FunctionMeterState>,
    pub callbacks: Family<OutcomeLabel, Counter>,
    pub execution_store_entries: Gauge<i64, AtomicI64>,
    pub sync_admitted: CounterFamily,
    pub sync_rejected: CounterFamily,
    pub sync_timedout: CounterFamily,
    /// `sync_queue_wait_seconds`: admission to dispatch, all functions.
    pub sync_wait: Arc<Timer>,
    pub runtime_config_revision: Gauge<i64, AtomicI64>,
    runtime_config_updates: Family<StatusLabel, Counter>,
    pub runtime_config_apply: Arc<Timer>,
    extra: Mutex<Vec<Arc<dyn MetricsSection>>>,
}

#[derive(Default)]
struct FunctionMeterState {
    live: HashMap<String, Arc<FunctionMetrics>>,
    tombstoned: HashSet<String>,
}

/// A block of exposition text rendered by another module (queues, runtime config, autoscaler).
pub trait MetricsSection: Send + Sync {
    fn render(&self, out: &mut String);
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let mut counter = |name: &str, help: &str| {
            let family = CounterFamily::default();
            registry.register(name, help, family.clone());
            family
        };
        let core = CoreFamilies {
            enqueue: counter("function_enqueue", "Invocations put in a function queue"),
            dispatch: counter("function_dispatch", "Dispatch attempts"),
            success: counter("function_success", "Executions finished successfully"),
            error: counter("function_error", "Executions finished with an error"),
            retry: counter("function_retry", "Retries scheduled"),
            timeout: counter("function_timeout", "Synchronous waits that timed out"),
            queue_rejected: counter(
                "function_queue_rejected",
                "Invocations refused by a full queue",
            ),
            cold_start: counter("function_cold_start", "Completions reporting a cold start"),
            warm_start: counter("function_warm_start", "Completions without a cold start"),
        };
        let sync_admitted = counter("sync_queue_admitted", "Sync-queue admissions");
        let sync_rejected = counter(
            "sync_queue_rejected",
            "Sync-queue rejections (depth, est_wait)",
        );
        let sync_timedout = counter(
            "sync_queue_timedout",
            "Sync-queue items that waited too long",
        );
        let callbacks = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "controlplane_callbacks",
            "Completion callbacks received, by outcome",
            callbacks.clone(),
        );
        let runtime_config_revision = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "controlplane_runtime_config_revision",
            "Revision of the live runtime configuration",
            runtime_config_revision.clone(),
        );
        let runtime_config_updates = Family::<StatusLabel, Counter>::default();
        registry.register(
            "controlplane_runtime_config_updates",
            "Runtime configuration updates, by status",
            runtime_config_updates.clone(),
        );
        let execution_store_entries = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "controlplane_execution_store_entries",
            "Execution records held in memory",
            execution_store_entries.clone(),
        );
        Metrics {
            registry,
            core,
            timers: [
                TimerFamily::new("function_latency_ms_seconds"),
                TimerFamily::new("function_init_duration_ms_seconds"),
                TimerFamily::new("function_queue_wait_ms_seconds"),
                TimerFamily::new("function_e2e_latency_ms_seconds"),
            ],
            functions: Mutex::default(),
            callbacks,
            execution_store_entries,
            sync_admitted,
            sync_rejected,
            sync_timedout,
            sync_wait: Arc::default(),
            runtime_config_revision,
            runtime_config_updates,
            runtime_config_apply: Arc::default(),
            extra: Mutex::default(),
        }
    }

    pub fn add_section(&self, section: Arc<dyn MetricsSection>) {
        lock(&self.extra).push(section);
    }

    /// The meters of the function `name`, created on first use; a deleted name gets detached
    /// meters until it is registered again.
    pub fn function_meters(&self, name: &str) -> Arc<FunctionMetrics> {
        let mut state = lock(&self.functions);
        if let Some(m) = state.live.get(name) {
            return m.clone();
        }
        if state.tombstoned.contains(name) {
            return Arc::new(detached());
        }
        let label = FunctionLabel {
            function: name.to_owned(),
        };
        let c = |f: &CounterFamily| f.get_or_create(&label).clone();
        let t = |f: &TimerFamily| f.get_or_create(name);
        let [latency, init, queue_wait, e2e] = &self.timers;
        let m = Arc::new(FunctionMetrics {
            enqueue: c(&self.core.enqueue),
            dispatch: c(&self.core.dispatch),
            success: c(&self.core.success),
            error: c(&self.core.error),
            retry: c(&self.core.retry),
            timeout: c(&self.core.timeout),
            queue_rejected: c(&self.core.queue_rejected),
            cold_start: c(&self.core.cold_start),
            warm_start: c(&self.core.warm_start),
            latency: t(latency),
            init_duration: t(init),
            queue_wait: t(queue_wait),
            e2e_latency: t(e2e),
        });
        state.live.insert(name.to_owned(), m.clone());
        m
    }

    pub fn runtime_config_update(&self, status: &'static str) {
        self.runtime_config_updates
            .get_or_create(&StatusLabel { status })
            .inc();
    }

    pub fn callback(&self, outcome: &'static str) {
        self.callbacks
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    /// The `/actuator/prometheus` body.
    pub fn render(&self) -> String {
        let mut raw = String::with_capacity(8192);
        if prometheus_client::encoding::text::encode_registry(&mut raw, &self.registry).is_err() {
            raw.clear();
        }
        let mut out = counters_as_prometheus_text(&raw);
        for family in &self.timers {
            family.render(&mut out);
        }
        render_summary(
            &mut out,
            "sync_queue_wait_seconds",
            &[(String::new(), self.sync_wait.snapshot())],
        );
        render_summary(
            &mut out,
            "controlplane_runtime_config_apply_duration_seconds",
            &[(String::new(), self.runtime_config_apply.snapshot())],
        );
        let sections = lock(&self.extra).clone();
        for section in sections {
            section.render(&mut out);
        }
        out
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
        state.tombstoned.insert(name.to_owned());
        let label = FunctionLabel {
            function: name.to_owned(),
        };
        for family in self.core.all() {
            family.remove(&label);
        }
        for family in [
            &self.sync_admitted,
            &self.sync_rejected,
            &self.sync_timedout,
        ] {
            family.remove(&label);
        }
        for family in &self.timers {
            family.remove(name);
        }
    }
}

fn detached() -> FunctionMetrics {
    FunctionMetrics {
        enqueue: Counter::default(),
        dispatch: Counter::default(),
        success: Counter::default(),
        error: Counter::default(),
        retry: Counter::default(),
        timeout: Counter::default(),
        queue_rejected: Counter::default(),
        cold_start: Counter::default(),
        warm_start: Counter::default(),
        latency: Arc::default(),
        init_duration: Arc::default(),
        queue_wait: Arc::default(),
        e2e_latency: Arc::default(),
    }
}

/// prometheus-client writes OpenMetrics-style counter metadata (`# TYPE x counter` for samples
/// named `x_total`); Prometheus text 0.0.4, as Micrometer writes it, names the family `x_total`.
fn counters_as_prometheus_text(raw: &str) -> String {
    let lines: Vec<&str> = raw.lines().collect();
    let mut out = String::with_capacity(raw.len() + 256);
    for (i, line) in lines.iter().enumerate() {
        let counter_name = |l: &str| {
            l.strip_prefix("# TYPE ")
                .and_then(|rest| rest.strip_suffix(" counter"))
                .map(str::to_owned)
        };
        if let Some(name) = counter_name(line) {
            let _ = writeln!(out, "# TYPE {name}_total counter");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap_or("");
            let next_is_counter = lines
                .get(i + 1)
                .and_then(|l| counter_name(l))
                .is_some_and(|n| n == name);
            if next_is_counter {
                let help = &rest[name.len()..];
                let _ = writeln!(out, "# HELP {name}_total{help}");
                continue;
            }
        }
        if *line == "# EOF" {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Escapes a label value for the text format.
pub fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Formats a float as Prometheus text does (`1.0`, `0.25`, `+Inf`).
pub fn format_float(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else if v.is_nan() {
        "NaN".into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.1}")
    } else {
        format!("{v}")
    }
}

// ---- Timers -----------------------------------------------------------------------------------

const LINEAR_BUCKETS: usize = 16;
const SUB_BUCKETS: usize = 8;
const OCTAVES: usize = 37;
const BUCKETS: usize = LINEAR_BUCKETS + OCTAVES * SUB_BUCKETS;
/// Quantiles and max cover the last one to two windows, as Micrometer's decaying histograms do.
const WINDOW: Duration = Duration::from_secs(60);
const QUANTILES: [(f64, &str); 3] = [(0.5, "0.5"), (0.95, "0.95"), (0.99, "0.99")];

/// A Micrometer-style timer: total count and sum, plus quantiles and max over a recent window,
/// kept as a log-linear histogram of microseconds (relative error under 7%).
#[derive(Debug)]
pub struct Timer {
    state: Mutex<TimerState>,
}

#[derive(Debug)]
struct TimerState {
    count: u64,
    sum_seconds: f64,
    windows: [Window; 2],
    current: usize,
    window_started: Instant,
}

#[derive(Debug)]
struct Window {
    buckets: Box<[u32; BUCKETS]>,
    max_micros: u64,
}

impl Window {
    fn new() -> Self {
        Window {
            buckets: Box::new([0; BUCKETS]),
            max_micros: 0,
        }
    }

    fn clear(&mut self) {
        self.buckets.fill(0);
        self.max_micros = 0;
    }
}

impl Default for Timer {
    fn default() -> Self {
        Timer {
            state: Mutex::new(TimerState {
                count: 0,
                sum_seconds: 0.0,
                windows: [Window::new(), Window::new()],
                current: 0,
                window_started: Instant::now(),
            }),
        }
    }
}

fn bucket_of(micros: u64) -> usize {
    if micros < LINEAR_BUCKETS as u64 {
        return micros as usize;
    }
    let msb = 63 - micros.leading_zeros() as usize; // >= 4
    let octave = (msb - 4).min(OCTAVES - 1);
    let sub = if msb - 4 >= OCTAVES {
        SUB_BUCKETS - 1
    } else {
        ((micros >> (msb - 3)) & 7) as usize
    };
    LINEAR_BUCKETS + octave * SUB_BUCKETS + sub
}

/// A representative value (the bucket's midpoint), in microseconds.
fn bucket_value(index: usize) -> f64 {
    if index < LINEAR_BUCKETS {
        return index as f64;
    }
    let octave = (index - LINEAR_BUCKETS) / SUB_BUCKETS;
    let sub = (index - LINEAR_BUCKETS) % SUB_BUCKETS;
    let msb = octave + 4;
    let width = 1u64 << (msb - 3);
    let low = (1u64 << msb) + sub as u64 * width;
    low as f64 + width as f64 / 2.0
}

impl Timer {
    pub fn record(&self, d: Duration) {
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let mut s = lock(&self.state);
        s.rotate(Instant::now());
        s.count += 1;
        s.sum_seconds += d.as_secs_f64();
        let cur = s.current;
        let w = &mut s.windows[cur];
        let b = &mut w.buckets[bucket_of(micros)];
        *b = b.saturating_add(1);
        w.max_micros = w.max_micros.max(micros);
    }

    /// (count, sum in seconds, [p50, p95, p99] in seconds, max in seconds).
    pub fn snapshot(&self) -> (u64, f64, [f64; 3], f64) {
        let mut s = lock(&self.state);
        s.rotate(Instant::now());
        let [a, b] = &s.windows;
        let total: u64 = a
            .buckets
            .iter()
            .zip(b.buckets.iter())
            .map(|(x, y)| u64::from(*x) + u64::from(*y))
            .sum();
        let mut quantiles = [0.0; 3];
        if total > 0 {
            for (slot, (q, _)) in quantiles.iter_mut().zip(QUANTILES) {
                let rank = ((q * total as f64).ceil() as u64).max(1);
                let mut seen = 0u64;
                for i in 0..BUCKETS {
                    seen += u64::from(a.buckets[i]) + u64::from(b.buckets[i]);
                    if seen >= rank {
                        *slot = bucket_value(i) / 1e6;
                        break;
                    }
                }
            }
        }
        let max = a.max_micros.max(b.max_micros) as f64 / 1e6;
        (s.count, s.sum_seconds, quantiles, max)
    }
}

impl TimerState {
    fn rotate(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.window_started);
        if elapsed < WINDOW {
            return;
        }
        if elapsed >= WINDOW * 2 {
            self.windows[0].clear();
            self.windows[1].clear();
        } else {
            let next = 1 - self.current;
            self.windows[next].clear();
            self.current = next;
        }
        self.window_started = now;
    }
}

/// All timers of one name, keyed by function.
struct TimerFamily {
    name: &'static str,
    timers: Mutex<HashMap<String, Arc<Timer>>>,
}

impl TimerFamily {
    fn new(name: &'static str) -> Self {
        TimerFamily {
            name,
            timers: Mutex::default(),
        }
    }

    fn get_or_create(&self, function: &str) -> Arc<Timer> {
        lock(&self.timers)
            .entry(function.to_owned())
            .or_default()
            .clone()
    }

    fn remove(&self, function: &str) {
        lock(&self.timers).remove(function);
    }

    fn render(&self, out: &mut String) {
        let mut timers: Vec<(String, Arc<Timer>)> = lock(&self.timers)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        timers.sort_by(|a, b| a.0.cmp(&b.0));
        let rows: Vec<_> = timers
            .iter()
            .map(|(f, t)| (format!("function=\"{}\"", escape_label(f)), t.snapshot()))
            .collect();
        render_summary(out, self.name, &rows);
    }
}

type Snapshot = (u64, f64, [f64; 3], f64);

/// Writes one summary family (quantiles, `_count`, `_sum`) and its `_max` gauge; `labels` is the
/// label text of each series (`function="x"`, or empty).
fn render_summary(out: &mut String, name: &str, rows: &[(String, Snapshot)]) {
    if rows.is_empty() {
        return;
    }
    let braces = |labels: &str| {
        if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        }
    };
    let _ = writeln!(out, "# HELP {name} ");
    let _ = writeln!(out, "# TYPE {name} summary");
    for (labels, (count, sum, q, _)) in rows {
        let sep = if labels.is_empty() { "" } else { "," };
        for ((_, quantile), v) in QUANTILES.iter().zip(q) {
            let _ = writeln!(
                out,
                "{name}{{{labels}{sep}quantile=\"{quantile}\"}} {}",
                format_float(*v)
            );
        }
        let b = braces(labels);
        let _ = writeln!(out, "{name}_count{b} {count}");
        let _ = writeln!(out, "{name}_sum{b} {}", format_float(*sum));
    }
    let _ = writeln!(out, "# HELP {name}_max ");
    let _ = writeln!(out, "# TYPE {name}_max gauge");
    for (labels, (_, _, _, max)) in rows {
        let _ = writeln!(out, "{name}_max{} {}", braces(labels), format_float(*max));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_close() {
        let mut last = 0;
        for v in [
            0u64, 1, 15, 16, 17, 31, 32, 100, 1000, 12_345, 1_000_000, 60_000_000,
        ] {
            let b = bucket_of(v);
            assert!(b >= last, "{v}");
            last = b;
            let rep = bucket_value(b);
            let err = (rep - v as f64).abs() / (v.max(1) as f64);
            assert!(err <= 0.07 || v < 16, "{v} -> {rep}");
        }
        assert!(bucket_of(u64::MAX) < BUCKETS);
    }

    #[test]
    fn timer_reports_count_sum_quantiles_and_max() {
        let t = Timer::default();
        for ms in 1..=100u64 {
            t.record(Duration::from_millis(ms));
        }
        let (count, sum, q, max) = t.snapshot();
        assert_eq!(count, 100);
        assert!((sum - 5.05).abs() < 1e-9);
        assert!((q[0] - 0.050).abs() < 0.004, "{q:?}");
        assert!((q[2] - 0.099).abs() < 0.007, "{q:?}");
        assert!((max - 0.100).abs() < 1e-9);
    }

    #[test]
    fn counters_are_exported_with_prometheus_text_names() {
        let raw = "# HELP function_dispatch Dispatch attempts.\n# TYPE function_dispatch counter\nfunction_dispatch_total{function=\"a\"} 1\n# TYPE g gauge\ng 2\n# EOF\n";
        assert_eq!(
            counters_as_prometheus_text(raw),
            "# HELP function_dispatch_total Dispatch attempts.\n# TYPE function_dispatch_total counter\nfunction_dispatch_total{function=\"a\"} 1\n# TYPE g gauge\ng 2\n"
        );
    }
}
