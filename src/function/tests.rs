use std::collections::BTreeMap;

use super::resolve::default_metric;
use super::*;

fn defaults() -> FunctionDefaults {
    FunctionDefaults {
        timeout_ms: 30_000,
        concurrency: 4,
        queue_size: 100,
        max_retries: 3,
    }
}

fn resolve(json: &str) -> Result<FunctionSpec, SpecError> {
    serde_json::from_str::<FunctionSpecRequest>(json)
        .unwrap()
        .resolve(&defaults())
}

#[test]
fn defaults_are_applied() {
    let s = resolve(r#"{"name":"f","image":"img"}"#).unwrap();
    assert_eq!(
        (s.timeout_ms, s.concurrency, s.queue_size, s.max_retries),
        (30_000, 4, 100, 3)
    );
    assert_eq!(s.execution_mode, ExecutionMode::Deployment);
    assert_eq!(s.runtime_mode, RuntimeMode::Http);
    assert!(s.command.is_empty() && s.env.is_empty());
    let sc = s.scaling.resolved().unwrap();
    assert_eq!(sc.strategy, ScalingStrategy::Internal);
    assert_eq!((sc.min_replicas, sc.max_replicas), (1, 10));
    assert_eq!(sc.metrics, vec![Some(default_metric())]);
    assert_eq!(sc.concurrency_control, ConcurrencyControl::Fixed);
}

#[test]
fn explicit_values_are_kept_even_zero_retries() {
    let s = resolve(
        r#"{"name":"f","image":"i","timeoutMs":"5","concurrency":2.0,"maxRetries":0,"executionMode":"LOCAL"}"#,
    )
    .unwrap();
    assert_eq!((s.timeout_ms, s.concurrency, s.max_retries), (5, 2, 0));
    assert_eq!(s.scaling, Scaling::AsGiven(None));
}

#[test]
fn field_validation_collects_every_failure() {
    let err = resolve(r#"{"name":" ","concurrency":0,"maxRetries":-1}"#).unwrap_err();
    assert_eq!(
        err,
        SpecError::Invalid(vec![
            "name: must not be blank".into(),
            "image: must not be blank".into(),
            "concurrency: must be greater than or equal to 1".into(),
            "maxRetries: must be greater than or equal to 0".into(),
        ])
    );
}

#[test]
fn names_follow_the_published_pattern() {
    for ok in ["a", "echo", "A.b_c-9", &"x".repeat(63)] {
        assert!(name_is_valid(ok), "{ok}");
    }
    for bad in ["", "9a", "-a", "a b", "a/b", "a:b", &"x".repeat(64), "é"] {
        assert!(!name_is_valid(bad), "{bad}");
    }
}

#[test]
fn scaling_rules_in_java_order() {
    let r = |sc: &str| {
        resolve(&format!(
            r#"{{"name":"f","image":"i","scalingConfig":{sc}}}"#
        ))
    };
    assert_eq!(
        r(r#"{"minReplicas":-1,"maxReplicas":0}"#).unwrap_err(),
        SpecError::Resolution("minReplicas must be >= 0".into())
    );
    assert_eq!(
        r(r#"{"maxReplicas":0}"#).unwrap_err(),
        SpecError::Resolution("maxReplicas must be >= 1".into())
    );
    assert_eq!(
        r(r#"{"minReplicas":5,"maxReplicas":2}"#).unwrap_err(),
        SpecError::Resolution("minReplicas must be <= maxReplicas".into())
    );
    assert_eq!(
        r(r#"{"metrics":[{"type":"cpu","target":"50"}]}"#).unwrap_err(),
        SpecError::Resolution("Unsupported INTERNAL scaling metric: cpu".into())
    );
    assert_eq!(
        r(r#"{"metrics":[null]}"#).unwrap_err(),
        SpecError::Resolution("Unsupported INTERNAL scaling metric: null".into())
    );
    assert!(r(r#"{"strategy":"HPA","metrics":[{"type":"cpu","target":50}]}"#).is_ok());
}

#[test]
fn static_per_pod_target_is_clamped() {
    let s = resolve(
        r#"{"name":"f","image":"i","scalingConfig":{"concurrencyControl":{"mode":"STATIC_PER_POD","targetInFlightPerPod":50,"minTargetInFlightPerPod":10,"maxTargetInFlightPerPod":3}}}"#,
    )
    .unwrap();
    let sc = s.scaling.resolved().unwrap();
    let ConcurrencyControl::StaticPerPod(cc) = &sc.concurrency_control else {
        panic!("{sc:?}");
    };
    assert_eq!(
        (
            cc.min_target_in_flight_per_pod,
            cc.max_target_in_flight_per_pod,
            cc.target_in_flight_per_pod
        ),
        (3, 3, 3)
    );
    assert_eq!(cc.upscale_cooldown_ms, 30_000);
    let s = resolve(
        r#"{"name":"f","image":"i","scalingConfig":{"concurrencyControl":{"mode":"ADAPTIVE_PER_POD"}}}"#,
    )
    .unwrap();
    let sc = s.scaling.resolved().unwrap();
    let ConcurrencyControl::AdaptivePerPod(cc) = &sc.concurrency_control else {
        panic!("{sc:?}");
    };
    assert_eq!(cc.target_in_flight_per_pod, 2);
    assert_eq!(cc.max_target_in_flight_per_pod, 8);
    assert_eq!(cc.upscale_cooldown(), std::time::Duration::from_secs(30));
}

#[test]
fn unknown_fields_are_ignored_and_wrong_types_refused() {
    let r = serde_json::from_str::<FunctionSpecRequest>(r#"{"name":"f","timeoutMS":1}"#).unwrap();
    assert_eq!(r.timeout_ms, None);
    let r = serde_json::from_str::<FunctionSpecRequest>(
        r#"{"name":"f","timeoutMs":2.7,"env":{"A":1,"B":null},"imagePullSecrets":["s",null,3]}"#,
    )
    .unwrap();
    assert_eq!(r.timeout_ms, Some(2));
    assert_eq!(
        r.env,
        Some(BTreeMap::from([
            ("A".into(), Some("1".into())),
            ("B".into(), None)
        ]))
    );
    assert_eq!(r.image_pull_secrets, Some(vec!["s".into(), "3".into()]));
    assert!(serde_json::from_str::<FunctionSpecRequest>(r#"{"name":"f","env":{"A":{}}}"#).is_err());
    assert!(
        serde_json::from_str::<FunctionSpecRequest>(r#"{"name":"f","timeoutMs":"soon"}"#).is_err()
    );
    assert!(serde_json::from_str::<FunctionSpecRequest>(r#"{"name":["f"]}"#).is_err());
    assert!(
        serde_json::from_str::<FunctionSpecRequest>(r#"{"name":"f","executionMode":"local"}"#)
            .is_err()
    );
    // A FunctionResponse's read-only fields are ignored like any unknown field.
    assert!(
        serde_json::from_str::<FunctionSpecRequest>(
            r#"{"name":"f","image":"i","effectiveExecutionMode":"POOL","deploymentBackend":"k8s"}"#
        )
        .is_ok()
    );
}

#[test]
fn endpoint_urls_must_be_http() {
    let r = resolve(r#"{"name":"f","image":"i","executionMode":"POOL","endpointUrl":"ftp://x/"}"#);
    assert!(matches!(r, Err(SpecError::Invalid(d)) if d[0].starts_with("endpointUrl:")));
    assert!(resolve(r#"{"name":"f","image":"i","executionMode":"POOL","endpointUrl":"http://127.0.0.1:9/invoke"}"#).is_ok());
    // Blank means absent.
    let s =
        resolve(r#"{"name":"f","image":"i","executionMode":"POOL","endpointUrl":" "}"#).unwrap();
    assert_eq!(s.endpoint_url, None);
}

#[test]
fn the_response_writes_scaling_as_resolved_or_as_given_byte_for_byte() {
    let json = |s: &FunctionSpec| serde_json::to_string(&s.scaling.to_request()).unwrap();
    let fixed = resolve(r#"{"name":"f","image":"i"}"#).unwrap();
    assert_eq!(
        json(&fixed),
        r#"{"strategy":"INTERNAL","minReplicas":1,"maxReplicas":10,"metrics":[{"type":"queue_depth","target":"5","query":null}],"concurrencyControl":{"mode":"FIXED","targetInFlightPerPod":null,"minTargetInFlightPerPod":null,"maxTargetInFlightPerPod":null,"upscaleCooldownMs":null,"downscaleCooldownMs":null,"highLoadThreshold":null,"lowLoadThreshold":null}}"#
    );
    let per_pod = resolve(
        r#"{"name":"f","image":"i","scalingConfig":{"strategy":"HPA","minReplicas":0,"metrics":[null,{"type":"cpu"}],
            "concurrencyControl":{"mode":"ADAPTIVE_PER_POD","upscaleCooldownMs":-1,"lowLoadThreshold":0.1}}}"#,
    )
    .unwrap();
    assert_eq!(
        json(&per_pod),
        r#"{"strategy":"HPA","minReplicas":0,"maxReplicas":10,"metrics":[null,{"type":"cpu","target":null,"query":null}],"concurrencyControl":{"mode":"ADAPTIVE_PER_POD","targetInFlightPerPod":2,"minTargetInFlightPerPod":1,"maxTargetInFlightPerPod":8,"upscaleCooldownMs":-1,"downscaleCooldownMs":60000,"highLoadThreshold":0.85,"lowLoadThreshold":0.1}}"#
    );
    // Not DEPLOYMENT: kept as given, nothing resolved.
    let pool = resolve(
        r#"{"name":"f","image":"i","executionMode":"POOL","endpointUrl":"http://h/",
            "scalingConfig":{"maxReplicas":"3","concurrencyControl":{"mode":"STATIC_PER_POD"}}}"#,
    )
    .unwrap();
    assert_eq!(
        json(&pool),
        r#"{"strategy":null,"minReplicas":null,"maxReplicas":3,"metrics":null,"concurrencyControl":{"mode":"STATIC_PER_POD","targetInFlightPerPod":null,"minTargetInFlightPerPod":null,"maxTargetInFlightPerPod":null,"upscaleCooldownMs":null,"downscaleCooldownMs":null,"highLoadThreshold":null,"lowLoadThreshold":null}}"#
    );
    assert_eq!(
        pool.scaling.initial_controller(),
        (ConcurrencyControlMode::StaticPerPod, 0)
    );
    assert_eq!(
        per_pod.scaling.initial_controller(),
        (ConcurrencyControlMode::AdaptivePerPod, 2)
    );
    assert_eq!(per_pod.initial_replicas(), 0);
    assert_eq!(pool.initial_replicas(), 1);
}
