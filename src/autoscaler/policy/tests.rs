use super::*;
use proptest::prelude::*;

const UP: Duration = Duration::from_secs(30);
const DOWN: Duration = Duration::from_secs(60);

/// The configured replica cooldowns' defaults.
fn policy() -> PolicyConfig {
    PolicyConfig {
        scale_up_cooldown: UP,
        scale_down_cooldown: DOWN,
    }
}

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
fn bounds_are_normalised_replica_counts() {
    assert_eq!(Bounds::new(1, 10), bounds(1, 10));
    assert_eq!(Bounds::new(0, 3), bounds(0, 3));
    assert_eq!(Bounds::new(5, 2), bounds(2, 2));
    assert_eq!(Bounds::new(0, 0), bounds(0, 1));
    assert_eq!(Bounds::new(u64::MAX, u64::MAX), bounds(u32::MAX, u32::MAX));
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
            &policy(),
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
    let cfg = policy();
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
    let d = decide_replicas(&policy(), 4, bounds(1, 10), 0.0, before, now);
    assert_eq!(d.action, None);
    assert!(d.downscale_signal());
}

fn settings(mode: ConcurrencyControlMode, target: u32, min: u32, max: u32) -> ConcurrencyControl {
    let per_pod = PerPodControl {
        target_in_flight_per_pod: target.into(),
        min_target_in_flight_per_pod: min.into(),
        max_target_in_flight_per_pod: max.into(),
        upscale_cooldown_ms: UP.as_millis() as i64,
        downscale_cooldown_ms: DOWN.as_millis() as i64,
        high_load_threshold: 0.85,
        low_load_threshold: 0.35,
    };
    match mode {
        ConcurrencyControlMode::Fixed => ConcurrencyControl::Fixed,
        ConcurrencyControlMode::StaticPerPod => ConcurrencyControl::StaticPerPod(per_pod),
        ConcurrencyControlMode::AdaptivePerPod => ConcurrencyControl::AdaptivePerPod(per_pod),
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
fn per_pod_settings_are_read_as_the_controller_needs_them() {
    // What registration resolved is used as is; only units change (a negative cooldown is 0).
    let spec: crate::function::FunctionSpecRequest = serde_json::from_str(
        r#"{"name":"f","image":"i","scalingConfig":{"concurrencyControl":{"mode":"ADAPTIVE_PER_POD",
            "targetInFlightPerPod":4,"minTargetInFlightPerPod":0,"upscaleCooldownMs":-5,
            "highLoadThreshold":0.9}}}"#,
    )
    .unwrap();
    let spec = spec
        .resolve(&crate::config::Config::default().defaults)
        .unwrap();
    let control = &spec.scaling.resolved().unwrap().concurrency_control;
    let ConcurrencyControl::AdaptivePerPod(c) = control else {
        panic!("{control:?}");
    };
    assert_eq!((c.target(), c.min_target(), c.max_target()), (4, 1, 8));
    assert_eq!(c.upscale_cooldown(), Duration::ZERO);
    assert_eq!(c.downscale_cooldown(), Duration::from_secs(60));
    assert_eq!(AdaptiveState::new(c).target, 4);
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
        let d = decide_concurrency(&s, 100, 4, &signal(4, 4, 1.0, false), state, now + DOWN * i);
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
        let d = decide_replicas(&policy(), ready, b, ratio, Cooldowns::default(), t0());
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
        let d = decide_replicas(&policy(), 0, b, ratio, Cooldowns::default(), t0());
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
        let s = settings(mode, target, min, min + extra);
        let start = t0();
        let mut adaptive = None;
        for i in 0..steps {
            let now = start + Duration::from_secs(step_s * i as u64);
            let d = decide_concurrency(&s, configured, replicas, &signal(current, max_replicas, ratio, down), adaptive, now);
            prop_assert!(d.effective >= 1 && d.effective <= configured.max(1));
            if let Some(a) = d.adaptive {
                prop_assert!(a.target >= min && a.target <= min + extra);
            }
            adaptive = d.adaptive;
        }
    }
}
