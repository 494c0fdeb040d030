//! The internal autoscaler's policy (REFERENCE §5.3) as pure functions: no I/O, no clock reads.
//! The loop in `super` reads replicas and load, passes the time in, and carries out the result.
//!
//! A tick for one function has two steps:
//! 1. [`decide_replicas`]: `current` = ready replicas, or `max(1, minReplicas)` when none is
//!    ready; `desired` = ceil(maxRatio × current) clamped to [min, max]; a scale-up (scale-down)
//!    is held back while the last scale-up (scale-down) is younger than its cooldown. The two
//!    cooldowns are independent. The cooldown state to keep is returned with the decision and is
//!    meant to be kept only once the scaling was carried out.
//! 2. [`decide_concurrency`]: the effective concurrency pushed into the function's queue and the
//!    controller target gauge, for FIXED, STATIC_PER_POD and ADAPTIVE_PER_POD (the adaptive
//!    controller keeps a per-function [`AdaptiveState`]). The effective value is always within
//!    [1, configured concurrency].

use std::time::Duration;

use tokio::time::Instant;

use crate::function::limits::FALLBACK_METRIC_TARGET;
use crate::function::{ConcurrencyControl, ConcurrencyControlMode, PerPodControl, ScalingConfig};

/// Replica cooldowns (`nanofaas.scaling.scale-up-cooldown` / `scale-down-cooldown`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyConfig {
    pub scale_up_cooldown: Duration,
    pub scale_down_cooldown: Duration,
}

/// The load signals the internal scaler understands; anything else reads as 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Queued tasks of the function.
    QueueDepth,
    /// Dispatch slots held (executions in flight).
    InFlight,
    /// Dispatches per second since the previous tick.
    Rps,
    Unknown,
}

impl MetricKind {
    pub fn parse(kind: Option<&str>) -> MetricKind {
        match kind {
            Some("queue_depth") => MetricKind::QueueDepth,
            Some("in_flight") => MetricKind::InFlight,
            Some("rps") => MetricKind::Rps,
            _ => MetricKind::Unknown,
        }
    }
}

/// A metric's target as a number: missing, blank or unparsable → [`FALLBACK_METRIC_TARGET`].
pub fn parse_target(target: Option<&str>) -> f64 {
    target
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .and_then(|t| t.parse::<f64>().ok())
        .unwrap_or(f64::from(FALLBACK_METRIC_TARGET))
}

/// value / target, or `None` when the target is not positive (the metric is ignored).
pub fn ratio(value: f64, target: Option<&str>) -> Option<f64> {
    let target = parse_target(target);
    if target > 0.0 {
        let r = value / target;
        Some(if r.is_nan() { 0.0 } else { r })
    } else {
        None
    }
}

/// The largest ratio over `(value, target)` readings; 0 when there is none.
pub fn max_ratio<'a>(readings: impl IntoIterator<Item = (f64, Option<&'a str>)>) -> f64 {
    readings
        .into_iter()
        .filter_map(|(value, target)| ratio(value, target))
        .fold(0.0, f64::max)
}

/// A function's replica bounds, normalised so that `min <= max` and `max >= 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub min: u32,
    pub max: u32,
}

impl Bounds {
    /// `min`/`max` as replica counts (saturating at `u32::MAX`), normalised.
    pub fn new(min: u64, max: u64) -> Bounds {
        let to_u32 = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
        let max = to_u32(max).max(1);
        let min = to_u32(min).min(max);
        Bounds { min, max }
    }

    /// From a resolved scaling config.
    pub fn of(scaling: &ScalingConfig) -> Bounds {
        Bounds::new(scaling.min_replicas, scaling.max_replicas)
    }
}

/// The replica count the ratios are applied to: ready replicas, or `max(1, min)` when none is
/// ready (so from zero a ratio must exceed 1 to scale up).
pub fn current_replicas(ready: u32, bounds: Bounds) -> u32 {
    if ready > 0 { ready } else { bounds.min.max(1) }
}

/// ceil(max_ratio × current), clamped to the bounds.
pub fn desired_replicas(max_ratio: f64, current: u32, bounds: Bounds) -> u32 {
    let wanted = (max_ratio * f64::from(current)).ceil();
    let wanted = if wanted.is_nan() || wanted <= 0.0 {
        0
    } else if wanted >= f64::from(bounds.max) {
        bounds.max
    } else {
        wanted as u32
    };
    wanted.clamp(bounds.min, bounds.max)
}

/// When the function was last scaled up and down (`None` = never).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cooldowns {
    pub last_scale_up: Option<Instant>,
    pub last_scale_down: Option<Instant>,
}

fn elapsed_at_least(last: Option<Instant>, now: Instant, cooldown: Duration) -> bool {
    last.is_none_or(|t| now.saturating_duration_since(t) >= cooldown)
}

/// A scaling step to carry out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    Up(u32),
    Down(u32),
}

impl Scale {
    pub fn replicas(self) -> u32 {
        match self {
            Scale::Up(n) | Scale::Down(n) => n,
        }
    }
}

/// The outcome of [`decide_replicas`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReplicaDecision {
    pub current: u32,
    pub max_ratio: f64,
    pub desired: u32,
    /// What to do; `None` when desired equals current or a cooldown holds the change back.
    pub action: Option<Scale>,
    /// The cooldown state once `action` has been carried out (unchanged when there is none).
    pub cooldowns: Cooldowns,
}

impl ReplicaDecision {
    /// Desired is below current, whether or not a cooldown holds the scale-down back.
    pub fn downscale_signal(&self) -> bool {
        self.desired < self.current
    }
}

/// Steps 2–6 of REFERENCE §5.3 for one function.
pub fn decide_replicas(
    config: &PolicyConfig,
    ready: u32,
    bounds: Bounds,
    max_ratio: f64,
    cooldowns: Cooldowns,
    now: Instant,
) -> ReplicaDecision {
    let current = current_replicas(ready, bounds);
    let desired = desired_replicas(max_ratio, current, bounds);
    let mut next = cooldowns;
    let action = if desired > current {
        elapsed_at_least(cooldowns.last_scale_up, now, config.scale_up_cooldown).then(|| {
            next.last_scale_up = Some(now);
            Scale::Up(desired)
        })
    } else if desired < current {
        elapsed_at_least(cooldowns.last_scale_down, now, config.scale_down_cooldown).then(|| {
            next.last_scale_down = Some(now);
            Scale::Down(desired)
        })
    } else {
        None
    };
    ReplicaDecision {
        current,
        max_ratio,
        desired,
        action,
        cooldowns: next,
    }
}

/// The adaptive controller's per-function state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdaptiveState {
    /// Current target in-flight executions per replica, within [min, max] target.
    pub target: u32,
    pub last_decrease: Option<Instant>,
    pub last_increase: Option<Instant>,
    /// The last tick with a downscale signal.
    pub last_replica_down: Option<Instant>,
}

impl AdaptiveState {
    /// Initial target = the spec's target (resolved within [min, max]); no event has happened yet.
    pub fn new(control: &PerPodControl) -> Self {
        AdaptiveState {
            target: control
                .target()
                .clamp(control.min_target(), control.max_target()),
            last_decrease: None,
            last_increase: None,
            last_replica_down: None,
        }
    }
}

/// What the replica step saw, for the adaptive controller.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadSignal {
    pub current: u32,
    pub max_replicas: u32,
    pub max_ratio: f64,
    pub downscale_signal: bool,
}

impl LoadSignal {
    pub fn of(decision: &ReplicaDecision, bounds: Bounds) -> Self {
        LoadSignal {
            current: decision.current,
            max_replicas: bounds.max,
            max_ratio: decision.max_ratio,
            downscale_signal: decision.downscale_signal(),
        }
    }
}

/// The outcome of [`decide_concurrency`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConcurrencyDecision {
    pub mode: ConcurrencyControlMode,
    /// Pushed into the function's queue; within [1, configured].
    pub effective: u32,
    /// The `function_target_inflight_per_pod` gauge.
    pub target: u32,
    /// The adaptive state to keep (`None` unless the mode is ADAPTIVE_PER_POD).
    pub adaptive: Option<AdaptiveState>,
}

fn per_pod(replicas: u32, target: u32, configured: u32) -> u32 {
    let product = u64::from(replicas.max(1)) * u64::from(target.max(1));
    product.min(u64::from(configured)).max(1) as u32
}

/// Step 7 of REFERENCE §5.3: the effective concurrency for `replicas` (the new count if the
/// function was scaled this tick, else `current`), given the spec's `configured` concurrency.
pub fn decide_concurrency(
    control: &ConcurrencyControl,
    configured: u32,
    replicas: u32,
    signal: &LoadSignal,
    adaptive: Option<AdaptiveState>,
    now: Instant,
) -> ConcurrencyDecision {
    let configured = configured.max(1);
    match control {
        ConcurrencyControl::Fixed => ConcurrencyDecision {
            mode: ConcurrencyControlMode::Fixed,
            effective: configured,
            target: 0,
            adaptive: None,
        },
        ConcurrencyControl::StaticPerPod(settings) => ConcurrencyDecision {
            mode: ConcurrencyControlMode::StaticPerPod,
            effective: per_pod(replicas, settings.target(), configured),
            target: settings.target(),
            adaptive: None,
        },
        ConcurrencyControl::AdaptivePerPod(settings) => {
            let mut state = adaptive.unwrap_or_else(|| AdaptiveState::new(settings));
            if signal.downscale_signal {
                state.last_replica_down = Some(now);
            }
            if signal.current >= signal.max_replicas
                && signal.max_ratio >= settings.high_load_threshold
            {
                // Hot at the replica ceiling: fewer executions per replica.
                if elapsed_at_least(state.last_decrease, now, settings.downscale_cooldown()) {
                    state.target = state.target.saturating_sub(1).max(settings.min_target());
                    state.last_decrease = Some(now);
                }
            } else if signal.max_ratio <= settings.low_load_threshold
                && elapsed_at_least(state.last_replica_down, now, settings.downscale_cooldown())
                && elapsed_at_least(state.last_increase, now, settings.upscale_cooldown())
            {
                // Quiet and not shrinking: allow more executions per replica.
                state.target = (state.target + 1).min(settings.max_target());
                state.last_increase = Some(now);
            }
            ConcurrencyDecision {
                mode: ConcurrencyControlMode::AdaptivePerPod,
                effective: per_pod(replicas, state.target, configured),
                target: state.target,
                adaptive: Some(state),
            }
        }
    }
}

#[cfg(test)]
mod tests;
