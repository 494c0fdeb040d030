//! The data behind every Micrometer timer we export (a `<name>_seconds` summary and its `_max`
//! gauge): total count and sum, plus quantiles and max over a recent window, kept as a windowed
//! log-linear histogram.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::support::lock;

const LINEAR_BUCKETS: usize = 16;
const SUB_BUCKETS: usize = 8;
const OCTAVES: usize = 37;
pub(super) const BUCKETS: usize = LINEAR_BUCKETS + OCTAVES * SUB_BUCKETS;
/// Quantiles and max cover the last one to two windows, as Micrometer's decaying histograms do.
const WINDOW: Duration = Duration::from_secs(60);
/// The quantiles a timer reports, and their `quantile` label as Micrometer prints it.
pub const QUANTILES: [(f64, &str); 3] = [(0.5, "0.5"), (0.95, "0.95"), (0.99, "0.99")];

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

pub(super) fn bucket_of(micros: u64) -> usize {
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
pub(super) fn bucket_value(index: usize) -> f64 {
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

    pub fn snapshot(&self) -> TimerSnapshot {
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
        TimerSnapshot {
            count: s.count,
            sum_seconds: s.sum_seconds,
            quantiles,
            max_seconds: a.max_micros.max(b.max_micros) as f64 / 1e6,
        }
    }
}

/// A timer read at one instant; quantiles are in the order of [`QUANTILES`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TimerSnapshot {
    pub count: u64,
    pub sum_seconds: f64,
    pub quantiles: [f64; 3],
    pub max_seconds: f64,
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
