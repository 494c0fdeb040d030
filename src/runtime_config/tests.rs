use super::*;

fn service() -> RuntimeConfigService {
    let config = Config::default();
    RuntimeConfigService::new(
        &config,
        Arc::new(RateLimiter::new(config.rate_max_per_second)),
        Arc::new(SyncSettings::new(&config.sync_queue)),
        Arc::new(Metrics::new()),
    )
}

fn patch(json: &str) -> PatchRequest {
    serde_json::from_str(json).unwrap()
}

#[test]
fn the_seeded_snapshot_reflects_the_configuration() {
    let s = service().snapshot();
    assert_eq!(
        serde_json::to_value(&s).unwrap(),
        serde_json::json!({"revision":0,"rateMaxPerSecond":1000,"syncQueueEnabled":false,
          "syncQueueAdmissionEnabled":false,"syncQueueMaxEstimatedWait":"PT2S",
          "syncQueueMaxQueueWait":"PT2S","syncQueueRetryAfterSeconds":2})
    );
}

#[test]
fn patches_apply_partially_and_bump_the_revision() {
    let svc = service();
    let a = svc
        .apply(&patch(r#"{"expectedRevision":0,"rateMaxPerSecond":5}"#))
        .unwrap();
    assert_eq!(a.revision, 1);
    assert_eq!(a.effective_config.rate_max_per_second, 5);
    assert!(!a.effective_config.sync_queue_enabled);
    assert_eq!(svc.limiter.max_per_second(), 5);
    let b = svc
        .apply(&patch(
            r#"{"expectedRevision":1,"syncQueueEnabled":true,"syncQueueMaxQueueWait":"PT5S"}"#,
        ))
        .unwrap();
    assert_eq!(b.revision, 2);
    assert_eq!(b.effective_config.rate_max_per_second, 5);
    assert!(svc.sync.enabled());
    assert_eq!(svc.sync.max_queue_wait(), Duration::from_secs(5));
}

#[test]
fn each_validation_rule_and_error_collection() {
    let svc = service();
    let invalid = |json: &str| match svc.validate(&patch(json)) {
        Err(PatchError::Invalid(e)) => e,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        invalid(r#"{"rateMaxPerSecond":0}"#),
        ["rateMaxPerSecond must be > 0, got 0"]
    );
    assert_eq!(
        invalid(r#"{"syncQueueMaxEstimatedWait":"PT0S"}"#),
        ["syncQueueMaxEstimatedWait must be > 0"]
    );
    assert_eq!(
        invalid(r#"{"syncQueueMaxQueueWait":"PT-1S"}"#),
        ["syncQueueMaxQueueWait must be > 0"]
    );
    assert_eq!(
        invalid(r#"{"syncQueueMaxEstimatedWait":"PT3S"}"#),
        ["syncQueueMaxEstimatedWait must be <= syncQueueMaxQueueWait"]
    );
    assert_eq!(
        invalid(r#"{"syncQueueRetryAfterSeconds":0,"rateMaxPerSecond":-1}"#),
        [
            "rateMaxPerSecond must be > 0, got -1",
            "syncQueueRetryAfterSeconds must be >= 1, got 0"
        ]
    );
    assert_eq!(
        svc.validate(&patch(r#"{"syncQueueMaxQueueWait":"5s"}"#)),
        Err(PatchError::InvalidDuration {
            field: "syncQueueMaxQueueWait",
            value: "5s".into()
        })
    );
    assert_eq!(
        svc.validate(&patch(r#"{"syncQueueMaxEstimatedWait":"PT0.5S"}"#)),
        Ok(())
    );
}

#[test]
fn revisions_are_compare_and_set() {
    let svc = service();
    assert_eq!(
        svc.apply(&patch(r#"{"rateMaxPerSecond":5}"#)).unwrap_err(),
        PatchError::MissingRevision
    );
    assert_eq!(
        svc.apply(&patch(r#"{"expectedRevision":3}"#)).unwrap_err(),
        PatchError::RevisionMismatch {
            expected: 3,
            current: 0
        }
    );
    let svc = Arc::new(svc);
    let winners: usize = (0..8)
        .map(|_| {
            let svc = svc.clone();
            std::thread::spawn(move || {
                svc.apply(&patch(r#"{"expectedRevision":0,"rateMaxPerSecond":7}"#))
                    .is_ok() as usize
            })
        })
        .map(|h| h.join().unwrap())
        .sum();
    assert_eq!(winners, 1);
    assert_eq!(svc.snapshot().revision, 1);
}
