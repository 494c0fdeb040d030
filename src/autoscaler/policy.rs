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

use crate::registry::spec::{ConcurrencyControl, ConcurrencyControlMode};

/// The target used when a metric's target is missing, blank or not a number.
pub const DEFAULT_TARGET: f64 = 50.0;
pub const DEFAULT_SCALE_UP_COOLDOWN: Duration = Duration::from_secs(30);
pub const DEFAULT_SCALE_DOWN_COOLDOWN: Duration = Duration::from_secs(60);

/// Replica cooldowns (`nanofaas.scaling.scale-up-cooldown` / `scale-down-cooldown`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyConfig {
    pub scale_up_cooldown: Duration,
    pub scale_down_cooldown: Duration,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            scale_up_cooldown: DEFAULT_SCALE_UP_COOLDOWN,
            scale_down_cooldown: DEFAULT_SCALE_DOWN_COOLDOWN,
        }
    }
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

/// A metric's target as a number: missing, blank or unparsable → [`DEFAULT_TARGET`].
pub fn parse_target(target: Option<&str>) -> f64 {
    target
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .and_then(|t| t.parse::<f64>().ok())
        .unwrap_or(DEFAULT_TARGET)
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
    /// From the (resolved) scaling config; missing values take the registration defaults 1 / 10.
    pub fn new(min: Option<i64>, max: Option<i64>) -> Bounds {
        let to_u32 = |v: i64| v.clamp(0, i64::from(u32::MAX)) as u32;
        let max = to_u32(max.unwrap_or(10)).max(1);
        let min = to_u32(min.unwrap_or(1)).min(max);
        Bounds { min, max }
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

/// A function's concurrency-control settings, read from its (resolved) `concurrencyControl`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConcurrencySettings {
    pub mode: ConcurrencyControlMode,
    /// `targetInFlightPerPod` as given (`None` when absent).
    pub target: Option<u32>,
    pub min_target: u32,
    pub max_target: u32,
    pub upscale_cooldown: Duration,
    pub downscale_cooldown: Duration,
    pub high_load_threshold: f64,
    pub low_load_threshold: f64,
    /// The adaptive controller's initial target when none is given
    /// (`nanofaas.scaling.default-target-in-flight-per-pod`).
    pub fallback_target: u32,
}

impl ConcurrencySettings {
    /// Missing values take the registration defaults of REFERENCE §2.2.
    pub fn from_spec(control: Option<&ConcurrencyControl>, fallback_target: u32) -> Self {
        let to_u32 = |v: i64| v.clamp(0, i64::from(u32::MAX)) as u32;
        let ms = |v: Option<i64>, default: u64| {
            Duration::from_millis(v.map_or(default, |v| v.max(0) as u64))
        };
        let mode = control
            .and_then(|c| c.mode)
            .unwrap_or(ConcurrencyControlMode::Fixed);
        let max_target = control
            .and_then(|c| c.max_target_in_flight_per_pod)
            .map_or(8, |v| to_u32(v).max(1));
        let min_target = control
            .and_then(|c| c.min_target_in_flight_per_pod)
            .map_or(1, |v| to_u32(v).max(1))
            .min(max_target);
        ConcurrencySettings {
            mode,
            target: control.and_then(|c| c.target_in_flight_per_pod).map(to_u32),
            min_target,
            max_target,
            upscale_cooldown: ms(control.and_then(|c| c.upscale_cooldown_ms), 30_000),
            downscale_cooldown: ms(control.and_then(|c| c.downscale_cooldown_ms), 60_000),
            high_load_threshold: control.and_then(|c| c.high_load_threshold).unwrap_or(0.85),
            low_load_threshold: control.and_then(|c| c.low_load_threshold).unwrap_or(0.35),
            fallback_target: fallback_target.max(1),
        }
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
    /// Initial target = clamp(target or fallback, min, max); no event has happened yet.
    pub fn new(settings: &ConcurrencySettings) -> Self {
        AdaptiveState {
            target: settings
                .target
                .unwrap_or(settings.fallback_target)
                .clamp(settings.min_target, settings.max_target),
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
    settings: &ConcurrencySettings,
    configured: u32,
    replicas: u32,
    signal: &LoadSignal,
    adaptive: Option<AdaptiveState>,
    now: Instant,
) -> ConcurrencyDecision {
    let configured = configured.max(1);
    match settings.mode {
        ConcurrencyControlMode::Fixed => ConcurrencyDecision {
            mode: settings.mode,
            effective: configured,
            target: 0,
            adaptive: None,
        },
        ConcurrencyControlMode::StaticPerPod => ConcurrencyDecision {
            mode: settings.mode,
            effective: per_pod(replicas, settings.target.unwrap_or(1), configured),
            target: settings.target.unwrap_or(0),
            adaptive: None,
        },
        ConcurrencyControlMode::AdaptivePerPod => {
            let mut state = adaptive.unwrap_or_else(|| AdaptiveState::new(settings));
            if signal.downscale_signal {
                state.last_replica_down = Some(now);
            }
            if signal.current >= signal.max_replicas
                && signal.max_ratio >= settings.high_load_threshold
            {
                // Hot at the replica ceiling: fewer executions per replica.
                if elapsed_at_least(state.last_decrease, now, settings.downscale_cooldown) {
                    state.target = state.target.saturating_sub(1).max(settings.min_target);
                    state.last_decrease = Some(now);
                }
            } else if signal.max_ratio <= settings.low_load_threshold
                && elapsed_at_least(state.last_replica_down, now, settings.downscale_cooldown)
                && elapsed_at_least(state.last_increase, now, settings.upscale_cooldown)
            {
                // Quiet and not shrinking: allow more executions per replica.
                state.target = (state.target + 1).min(settings.max_target);
                state.last_increase = Some(now);
            }
            ConcurrencyDecision {
                mode: settings.mode,
                effective: per_pod(replicas, state.target, configured),
                target: state.target,
                adaptive: Some(state),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const UP: Duration = DEFAULT_SCALE_UP_COOLDOWN;
    const DOWN: Duration = DEFAULT_SCALE_DOWN_COOLDOWN;

    fn t0() -> Instant {
        // Any instant will do; the policy only compares instants it is given.
        Instant::now()
    }

    fn bounds(min: u32, max: u32) -> Bounds {
        Bounds { min, max }
    }

    fn metric(value: f64, target: &str) -> (f64, Option<&str>) {
        (value, Some(target))
    }

    #[test]
    fn targets_parse_with_the_fallback_of_50() {
        let cases: [(Option<&str>, f64); 9] = [
            (Some("5"), 5.0),
            (Some("2.5"), 2.5),
            (Some(" 7 "), 7.0),
            (Some("0"), 0.0),
            (Some("-3"), -3.0),
            (None, 50.0),
            (Some(""), 50.0),
            (Some("   "), 50.0),
            (Some("five"), 50.0),
        ];
        for (target, expected) in cases {
            assert_eq!(parse_target(target), expected, "{target:?}");
        }
    }

    #[test]
    fn ratio_ignores_non_positive_targets_and_blank_invalid_fall_back_to_50() {
        assert_eq!(ratio(15.0, Some("5")), Some(3.0));
        assert_eq!(ratio(100.0, None), Some(2.0));
        assert_eq!(ratio(100.0, Some("")), Some(2.0));
        assert_eq!(ratio(100.0, Some("abc")), Some(2.0));
        assert_eq!(ratio(100.0, Some("0")), None);
        assert_eq!(ratio(100.0, Some("-5")), None);
        assert_eq!(ratio(100.0, Some("NaN")), None);
        assert_eq!(ratio(0.0, Some("5")), Some(0.0));
    }

    #[test]
    fn max_ratio_is_the_largest_across_metrics_and_zero_without_any() {
        type Readings<'a> = Vec<(f64, Option<&'a str>)>;
        let cases: Vec<(Readings, f64)> = vec![
            (vec![], 0.0),
            (vec![metric(15.0, "5")], 3.0),
            (
                vec![metric(2.0, "5"), metric(8.0, "2"), metric(1.0, "1")],
                4.0,
            ),
            (vec![metric(8.0, "0"), metric(1.0, "2")], 0.5),
            (vec![metric(8.0, "-1")], 0.0),
            (vec![(100.0, None), metric(1.0, "1")], 2.0),
        ];
        for (readings, expected) in cases {
            assert_eq!(max_ratio(readings.clone()), expected, "{readings:?}");
        }
    }

    #[test]
    fn bounds_normalise_like_the_registration_defaults() {
        assert_eq!(Bounds::new(None, None), bounds(1, 10));
        assert_eq!(Bounds::new(Some(0), Some(3)), bounds(0, 3));
        assert_eq!(Bounds::new(Some(5), Some(2)), bounds(2, 2));
        assert_eq!(Bounds::new(Some(-1), Some(0)), bounds(0, 1));
    }

    #[test]
    fn current_is_ready_or_at_least_one() {
        for (ready, b, expected) in [
            (3, bounds(1, 10), 3),
            (0, bounds(0, 10), 1),
            (0, bounds(1, 10), 1),
            (0, bounds(4, 10), 4),
            (2, bounds(4, 10), 2),
        ] {
            assert_eq!(current_replicas(ready, b), expected, "{ready} {b:?}");
        }
    }

    /// The replica rules of REFERENCE §5.3 and the InternalScalerTest examples of §9.4.
    #[test]
    fn replica_decisions() {
        struct Case {
            name: &'static str,
            ready: u32,
            bounds: Bounds,
            max_ratio: f64,
            desired: u32,
            action: Option<Scale>,
        }
        let cases = [
            Case {
                name: "15/5 with one replica scales to 3",
                ready: 1,
                bounds: bounds(1, 10),
                max_ratio: 15.0 / 5.0,
                desired: 3,
                action: Some(Scale::Up(3)),
            },
            Case {
                name: "ratio 1 keeps the replicas",
                ready: 2,
                bounds: bounds(1, 10),
                max_ratio: 1.0,
                desired: 2,
                action: None,
            },
            Case {
                name: "clamped to max",
                ready: 2,
                bounds: bounds(1, 4),
                max_ratio: 10.0,
                desired: 4,
                action: Some(Scale::Up(4)),
            },
            Case {
                name: "clamped to min",
                ready: 5,
                bounds: bounds(2, 10),
                max_ratio: 0.0,
                desired: 2,
                action: Some(Scale::Down(2)),
            },
            Case {
                name: "from zero, 4/2 scales to 2",
                ready: 0,
                bounds: bounds(0, 10),
                max_ratio: 4.0 / 2.0,
                desired: 2,
                action: Some(Scale::Up(2)),
            },
            Case {
                name: "from zero, queue depth 6 over target 5 scales to 2",
                ready: 0,
                bounds: bounds(0, 10),
                max_ratio: 6.0 / 5.0,
                desired: 2,
                action: Some(Scale::Up(2)),
            },
            Case {
                name: "from zero, a ratio of exactly 1 does not scale up",
                ready: 0,
                bounds: bounds(0, 10),
                max_ratio: 1.0,
                desired: 1,
                action: None,
            },
            Case {
                name: "scale to zero without load",
                ready: 2,
                bounds: bounds(0, 10),
                max_ratio: 0.0,
                desired: 0,
                action: Some(Scale::Down(0)),
            },
            Case {
                name: "ceil of a fractional product",
                ready: 3,
                bounds: bounds(1, 10),
                max_ratio: 1.1,
                desired: 4,
                action: Some(Scale::Up(4)),
            },
            Case {
                name: "half the load halves the replicas",
                ready: 4,
                bounds: bounds(1, 10),
                max_ratio: 0.5,
                desired: 2,
                action: Some(Scale::Down(2)),
            },
            Case {
                name: "no ready replica with min 3 counts as 3",
                ready: 0,
                bounds: bounds(3, 10),
                max_ratio: 1.0,
                desired: 3,
                action: None,
            },
            Case {
                name: "an enormous ratio stops at max",
                ready: 1,
                bounds: bounds(1, 7),
                max_ratio: f64::INFINITY,
                desired: 7,
                action: Some(Scale::Up(7)),
            },
        ];
        let now = t0();
        for c in cases {
            let d = decide_replicas(
                &PolicyConfig::default(),
                c.ready,
                c.bounds,
                c.max_ratio,
                Cooldowns::default(),
                now,
            );
            assert_eq!(d.desired, c.desired, "{}", c.name);
            assert_eq!(d.action, c.action, "{}", c.name);
            let expected = match c.action {
                Some(Scale::Up(_)) => Cooldowns {
                    last_scale_up: Some(now),
                    last_scale_down: None,
                },
                Some(Scale::Down(_)) => Cooldowns {
                    last_scale_up: None,
                    last_scale_down: Some(now),
                },
                None => Cooldowns::default(),
            };
            assert_eq!(d.cooldowns, expected, "{}", c.name);
        }
    }

    #[test]
    fn cooldowns_hold_back_repeated_scaling_in_the_same_direction() {
        let start = t0();
        let cfg = PolicyConfig::default();
        let at = |s: u64| start + Duration::from_secs(s);
        // (ready, ratio, seconds since start of this tick, cooldowns before, expected action)
        let up_at_0 = Cooldowns {
            last_scale_up: Some(start),
            last_scale_down: None,
        };
        let down_at_0 = Cooldowns {
            last_scale_up: None,
            last_scale_down: Some(start),
        };
        let cases = [
            ("up blocked 10 s after an up", 2, 3.0, 10, up_at_0, None),
            ("up blocked 29 s after an up", 2, 3.0, 29, up_at_0, None),
            (
                "up allowed 30 s after an up",
                2,
                3.0,
                30,
                up_at_0,
                Some(Scale::Up(6)),
            ),
            (
                "down not blocked by a recent up",
                4,
                0.5,
                1,
                up_at_0,
                Some(Scale::Down(2)),
            ),
            (
                "down blocked 59 s after a down",
                4,
                0.5,
                59,
                down_at_0,
                None,
            ),
            (
                "down allowed 60 s after a down",
                4,
                0.5,
                60,
                down_at_0,
                Some(Scale::Down(2)),
            ),
            (
                "up not blocked by a recent down",
                2,
                2.0,
                1,
                down_at_0,
                Some(Scale::Up(4)),
            ),
        ];
        for (name, ready, ratio, secs, before, expected) in cases {
            let d = decide_replicas(&cfg, ready, bounds(1, 10), ratio, before, at(secs));
            assert_eq!(d.action, expected, "{name}");
            if expected.is_none() {
                assert_eq!(
                    d.cooldowns, before,
                    "{name}: state unchanged when held back"
                );
            }
        }
        // Cooldowns are configurable.
        let short = PolicyConfig {
            scale_up_cooldown: Duration::from_secs(1),
            scale_down_cooldown: Duration::from_secs(2),
        };
        let d = decide_replicas(&short, 2, bounds(1, 10), 3.0, up_at_0, at(1));
        assert_eq!(d.action, Some(Scale::Up(6)));
        let d = decide_replicas(&short, 4, bounds(1, 10), 0.5, down_at_0, at(1));
        assert_eq!(d.action, None);
    }

    #[test]
    fn a_held_back_downscale_is_still_a_downscale_signal() {
        let now = t0();
        let before = Cooldowns {
            last_scale_up: None,
            last_scale_down: Some(now),
        };
        let d = decide_replicas(&PolicyConfig::default(), 4, bounds(1, 10), 0.0, before, now);
        assert_eq!(d.action, None);
        assert!(d.downscale_signal());
    }

    fn settings(
        mode: ConcurrencyControlMode,
        target: u32,
        min: u32,
        max: u32,
    ) -> ConcurrencySettings {
        ConcurrencySettings {
            mode,
            target: Some(target),
            min_target: min,
            max_target: max,
            upscale_cooldown: UP,
            downscale_cooldown: DOWN,
            high_load_threshold: 0.85,
            low_load_threshold: 0.35,
            fallback_target: 2,
        }
    }

    fn signal(current: u32, max_replicas: u32, max_ratio: f64, down: bool) -> LoadSignal {
        LoadSignal {
            current,
            max_replicas,
            max_ratio,
            downscale_signal: down,
        }
    }

    #[test]
    fn settings_read_the_spec_with_registration_defaults() {
        let fixed = ConcurrencySettings::from_spec(None, 2);
        assert_eq!(fixed.mode, ConcurrencyControlMode::Fixed);
        let c: ConcurrencyControl = serde_json::from_str(
            r#"{"mode":"ADAPTIVE_PER_POD","targetInFlightPerPod":4,"minTargetInFlightPerPod":0,
                "upscaleCooldownMs":-5,"highLoadThreshold":0.9}"#,
        )
        .unwrap();
        let s = ConcurrencySettings::from_spec(Some(&c), 2);
        assert_eq!(s.mode, ConcurrencyControlMode::AdaptivePerPod);
        assert_eq!(s.target, Some(4));
        assert_eq!((s.min_target, s.max_target), (1, 8));
        assert_eq!(s.upscale_cooldown, Duration::ZERO);
        assert_eq!(s.downscale_cooldown, Duration::from_secs(60));
        assert_eq!(s.high_load_threshold, 0.9);
        assert_eq!(s.low_load_threshold, 0.35);
        let c: ConcurrencyControl = serde_json::from_str(
            r#"{"mode":"STATIC_PER_POD","minTargetInFlightPerPod":10,"maxTargetInFlightPerPod":3}"#,
        )
        .unwrap();
        let s = ConcurrencySettings::from_spec(Some(&c), 2);
        assert_eq!((s.min_target, s.max_target), (3, 3));
        assert_eq!(AdaptiveState::new(&s).target, 3);
    }

    #[test]
    fn fixed_uses_the_configured_concurrency() {
        let s = settings(ConcurrencyControlMode::Fixed, 4, 1, 8);
        let d = decide_concurrency(&s, 7, 3, &signal(3, 10, 2.0, false), None, t0());
        assert_eq!(
            d,
            ConcurrencyDecision {
                mode: ConcurrencyControlMode::Fixed,
                effective: 7,
                target: 0,
                adaptive: None
            }
        );
    }

    #[test]
    fn static_per_pod_is_replicas_times_target_capped_by_configured() {
        // (replicas, target, configured, effective)
        for (replicas, target, configured, effective) in [
            (3, 4, 100, 12), // "static sets 12 and gauge 4"
            (3, 4, 10, 10),
            (0, 4, 100, 4),
            (2, 0, 100, 2),
            (1, 1, 1, 1),
            (u32::MAX, u32::MAX, 50, 50),
        ] {
            let s = settings(ConcurrencyControlMode::StaticPerPod, target, 1, 8);
            let d = decide_concurrency(
                &s,
                configured,
                replicas,
                &signal(1, 10, 0.0, false),
                None,
                t0(),
            );
            assert_eq!(d.effective, effective, "{replicas}×{target} ≤ {configured}");
            assert_eq!(d.target, target);
            assert_eq!(d.adaptive, None);
        }
    }

    #[test]
    fn adaptive_hot_at_max_replicas_lowers_the_target() {
        // "adaptive sets effective 12": 4 replicas at max, hot → target 4 → 3, effective 4 × 3.
        let s = settings(ConcurrencyControlMode::AdaptivePerPod, 4, 1, 8);
        let now = t0();
        let d = decide_concurrency(&s, 100, 4, &signal(4, 4, 1.0, false), None, now);
        assert_eq!(d.target, 3);
        assert_eq!(d.effective, 12);
        let state = d.adaptive.unwrap();
        assert_eq!(state.last_decrease, Some(now));
        // Within the downscale cooldown it stays at 3; after it, 2; never below min.
        let d = decide_concurrency(
            &s,
            100,
            4,
            &signal(4, 4, 1.0, false),
            Some(state),
            now + Duration::from_secs(59),
        );
        assert_eq!(d.target, 3);
        let d = decide_concurrency(
            &s,
            100,
            4,
            &signal(4, 4, 1.0, false),
            d.adaptive,
            now + Duration::from_secs(60),
        );
        assert_eq!(d.target, 2);
        let mut state = d.adaptive;
        for i in 2..6 {
            let d =
                decide_concurrency(&s, 100, 4, &signal(4, 4, 1.0, false), state, now + DOWN * i);
            state = d.adaptive;
        }
        assert_eq!(state.unwrap().target, 1);
        // Not at max replicas: no decrease however hot.
        let d = decide_concurrency(&s, 100, 3, &signal(3, 4, 5.0, false), None, now);
        assert_eq!(d.target, 4);
        assert_eq!(d.effective, 12);
    }

    #[test]
    fn adaptive_quiet_raises_the_target_after_both_cooldowns() {
        let s = settings(ConcurrencyControlMode::AdaptivePerPod, 2, 1, 8);
        let now = t0();
        // No history: the first quiet tick raises 2 → 3 (effective 2 × 3 = 6).
        let d = decide_concurrency(&s, 100, 2, &signal(2, 10, 0.1, false), None, now);
        assert_eq!((d.target, d.effective), (3, 6));
        let state = d.adaptive.unwrap();
        // Within the upscale cooldown: unchanged; after it: +1.
        let d = decide_concurrency(
            &s,
            100,
            2,
            &signal(2, 10, 0.1, false),
            Some(state),
            now + Duration::from_secs(29),
        );
        assert_eq!(d.target, 3);
        let d = decide_concurrency(
            &s,
            100,
            2,
            &signal(2, 10, 0.1, false),
            Some(state),
            now + UP,
        );
        assert_eq!(d.target, 4);
        // Between the thresholds: unchanged.
        let d = decide_concurrency(
            &s,
            100,
            2,
            &signal(2, 10, 0.5, false),
            Some(state),
            now + UP * 10,
        );
        assert_eq!(d.target, 3);
    }

    #[test]
    fn adaptive_recent_downscale_blocks_an_increase() {
        let s = settings(ConcurrencyControlMode::AdaptivePerPod, 2, 1, 8);
        let now = t0();
        // A downscale signal is remembered, and blocks the increase on that tick…
        let d = decide_concurrency(&s, 100, 2, &signal(3, 10, 0.0, true), None, now);
        assert_eq!(d.target, 2);
        assert_eq!(d.adaptive.unwrap().last_replica_down, Some(now));
        // …and for the downscale cooldown after it.
        let later = now + Duration::from_secs(59);
        let d2 = decide_concurrency(&s, 100, 2, &signal(2, 10, 0.0, false), d.adaptive, later);
        assert_eq!(d2.target, 2);
        let d3 = decide_concurrency(
            &s,
            100,
            2,
            &signal(2, 10, 0.0, false),
            d.adaptive,
            now + DOWN,
        );
        assert_eq!(d3.target, 3);
    }

    #[test]
    fn adaptive_target_stops_at_max_and_effective_at_configured() {
        let s = settings(ConcurrencyControlMode::AdaptivePerPod, 8, 1, 8);
        let d = decide_concurrency(&s, 20, 5, &signal(5, 10, 0.0, false), None, t0());
        assert_eq!(d.target, 8);
        assert_eq!(d.effective, 20);
        // Initial target falls back when none is given.
        let mut s = settings(ConcurrencyControlMode::AdaptivePerPod, 0, 3, 8);
        s.target = None;
        assert_eq!(AdaptiveState::new(&s).target, 3);
        s.fallback_target = 5;
        assert_eq!(AdaptiveState::new(&s).target, 5);
    }

    fn any_mode() -> impl Strategy<Value = ConcurrencyControlMode> {
        prop_oneof![
            Just(ConcurrencyControlMode::Fixed),
            Just(ConcurrencyControlMode::StaticPerPod),
            Just(ConcurrencyControlMode::AdaptivePerPod),
        ]
    }

    proptest! {
        #[test]
        fn desired_is_always_within_bounds(
            ready in 0u32..1000,
            min in 0u32..50,
            extra in 0u32..50,
            ratio in prop_oneof![0.0f64..1000.0, Just(f64::INFINITY), Just(0.0)],
        ) {
            let b = Bounds { min, max: (min + extra).max(1) };
            let d = decide_replicas(&PolicyConfig::default(), ready, b, ratio, Cooldowns::default(), t0());
            prop_assert!(d.desired >= b.min && d.desired <= b.max);
            if let Some(a) = d.action {
                prop_assert!(a.replicas() >= b.min && a.replicas() <= b.max);
                prop_assert_ne!(a.replicas(), d.current);
            }
        }

        #[test]
        fn from_zero_a_ratio_up_to_one_never_scales_up(
            max in 1u32..50,
            ratio in 0.0f64..=1.0,
        ) {
            let b = Bounds { min: 0, max };
            let d = decide_replicas(&PolicyConfig::default(), 0, b, ratio, Cooldowns::default(), t0());
            prop_assert!(!matches!(d.action, Some(Scale::Up(_))));
        }

        #[test]
        fn no_two_scale_ups_within_the_cooldown(
            gap_ms in 0u64..60_000,
            cooldown_ms in 0u64..60_000,
        ) {
            let cfg = PolicyConfig {
                scale_up_cooldown: Duration::from_millis(cooldown_ms),
                scale_down_cooldown: DOWN,
            };
            let start = t0();
            let b = Bounds { min: 1, max: 100 };
            let first = decide_replicas(&cfg, 1, b, 3.0, Cooldowns::default(), start);
            prop_assert_eq!(first.action, Some(Scale::Up(3)));
            let second = decide_replicas(&cfg, 3, b, 3.0, first.cooldowns, start + Duration::from_millis(gap_ms));
            prop_assert_eq!(second.action.is_some(), gap_ms >= cooldown_ms);
        }

        #[test]
        fn effective_concurrency_is_within_one_and_configured(
            mode in any_mode(),
            target in 0u32..100,
            min in 1u32..20,
            extra in 0u32..20,
            configured in 0u32..500,
            replicas in 0u32..100,
            current in 0u32..100,
            max_replicas in 1u32..100,
            ratio in 0.0f64..5.0,
            down: bool,
            steps in 1usize..8,
            step_s in 0u64..120,
        ) {
            let s = ConcurrencySettings {
                mode,
                target: Some(target),
                min_target: min,
                max_target: min + extra,
                upscale_cooldown: UP,
                downscale_cooldown: DOWN,
                high_load_threshold: 0.85,
                low_load_threshold: 0.35,
                fallback_target: 2,
            };
            let start = t0();
            let mut adaptive = None;
            for i in 0..steps {
                let now = start + Duration::from_secs(step_s * i as u64);
                let d = decide_concurrency(&s, configured, replicas, &signal(current, max_replicas, ratio, down), adaptive, now);
                prop_assert!(d.effective >= 1 && d.effective <= configured.max(1));
                if let Some(a) = d.adaptive {
                    prop_assert!(a.target >= s.min_target && a.target <= s.max_target);
                }
                adaptive = d.adaptive;
            }
        }
    }
}
