//! Retry backoff (issue 11, item 2) through HTTP: exponential backoff with full jitter between
//! attempts, a runtime's `Retry-After` honoured up to the maximum, the sync caller's deadline
//! still bounding everything, delayed retries holding no slot but a place of `queueSize`, and
//! Java's immediate retries when nothing is configured. Most tests run on tokio's paused clock
//! (`start_paused`): the app, the stub runtime and the client share it, so the gaps between
//! attempts are measured exactly; the memory backend is pinned for them (NATS runs in another
//! process, on real time). One test shows the delay on the wall clock, loosely.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Received, Stub, TestApp, enqueue, status_of};
use serde_json::{Value, json};
use tokio::time::Instant;

/// The app on the memory backend with the async queue and `extra` settings.
async fn app(extra: &[(&str, &str)]) -> TestApp {
    let mut env = vec![
        ("NANOFAAS_STATE_BACKEND", "memory"),
        ("NANOFAAS_ASYNC_QUEUE_ENABLED", "true"),
    ];
    env.extend_from_slice(extra);
    TestApp::with_env(&env).await
}

/// The attempts each execution sent to the stub, by execution id, in arrival order.
fn attempts_by_execution(stub: &Stub) -> BTreeMap<String, Vec<Received>> {
    let mut by_id: BTreeMap<String, Vec<Received>> = BTreeMap::new();
    for r in stub.requests() {
        by_id
            .entry(r.header("X-Execution-Id").to_owned())
            .or_default()
            .push(r);
    }
    by_id
}

/// Waits until `check` holds, polling every 100 ms of tokio's clock (on paused time, virtual
/// milliseconds: the polls cost no wall time but a request each), for at most two minutes of it.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..1200 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for: {what}");
}

fn gaps(attempts: &[Received]) -> Vec<Duration> {
    attempts.windows(2).map(|w| w[1].at - w[0].at).collect()
}

async fn enqueue_id(app: &TestApp, name: &str, input: Value) -> String {
    let r = enqueue(app, name, json!({ "input": input })).await;
    assert_eq!(r.status(), 202);
    r.json::<Value>().await.unwrap()["executionId"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(start_paused = true)]
async fn backoff_delays_measured_on_paused_time() {
    let app = app(&[
        ("NANOFAAS_RETRY_BACKOFF_INITIAL", "1s"),
        ("NANOFAAS_RETRY_BACKOFF_MAX", "3s"),
    ])
    .await;
    let stub = Stub::start(&app.base).await;
    app.pool(
        "f",
        &stub.url("/fail"),
        json!({"maxRetries": 5, "concurrency": 10}),
    )
    .await;
    let mut ids = Vec::new();
    for i in 0..30 {
        ids.push(enqueue_id(&app, "f", json!(i)).await);
    }
    for id in &ids {
        eventually("every attempt failed", || async {
            status_of(&app, id).await == "error"
        })
        .await;
    }
    let by_id = attempts_by_execution(&stub);
    assert_eq!(by_id.len(), 30);
    // min(max, initial · 2^(attempt-1)) before attempts 2..5: 1 s, 2 s, 3 s, 3 s.
    let caps = [1000, 2000, 3000, 3000].map(Duration::from_millis);
    let mut all = Vec::new();
    for (id, attempts) in &by_id {
        assert_eq!(attempts.len(), 5, "{id}");
        let numbers: Vec<&str> = attempts
            .iter()
            .map(|a| a.header("X-Dispatch-Attempt"))
            .collect();
        assert_eq!(numbers, ["1", "2", "3", "4", "5"], "{id}");
        for (k, (gap, cap)) in gaps(attempts).into_iter().zip(caps).enumerate() {
            assert!(gap <= cap, "{id}: gap {} is {gap:?}, over {cap:?}", k + 1);
            all.push((k, gap));
        }
    }
    // Full jitter: the delays spread over [0, cap], not one fixed value.
    for (k, cap) in caps.into_iter().enumerate() {
        let of_k: Vec<Duration> = all
            .iter()
            .filter(|(i, _)| *i == k)
            .map(|(_, g)| *g)
            .collect();
        let (low, high) = (cap / 3, cap * 2 / 3);
        assert!(of_k.iter().any(|g| *g < low), "gap {}: {of_k:?}", k + 1);
        assert!(of_k.iter().any(|g| *g > high), "gap {}: {of_k:?}", k + 1);
    }
    // Counted as Java counts retries: when sent.
    app.assert_metrics("f", &[("function_retry_total", 120.0)])
        .await;
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured_and_capped_by_the_maximum() {
    let app = app(&[
        ("NANOFAAS_RETRY_BACKOFF_INITIAL", "1ms"),
        ("NANOFAAS_RETRY_BACKOFF_MAX", "5s"),
    ])
    .await;
    let stub = Stub::start(&app.base).await;
    app.pool("asks-2s", &stub.url("/unavailable-once/2"), json!({}))
        .await;
    app.pool("asks-60s", &stub.url("/unavailable-once/60"), json!({}))
        .await;
    let two = enqueue_id(&app, "asks-2s", json!("a")).await;
    let sixty = enqueue_id(&app, "asks-60s", json!("b")).await;
    for id in [&two, &sixty] {
        eventually("the second attempt succeeded", || async {
            status_of(&app, id).await == "success"
        })
        .await;
    }
    let by_id = attempts_by_execution(&stub);
    // The jitter is at most 1 ms, so the runtime's wish decides; 60 s is capped at 5 s.
    let two_gap = gaps(&by_id[&two])[0];
    assert!(
        two_gap >= Duration::from_secs(2) && two_gap < Duration::from_millis(2050),
        "{two_gap:?}"
    );
    let sixty_gap = gaps(&by_id[&sixty])[0];
    assert!(
        sixty_gap >= Duration::from_secs(5) && sixty_gap < Duration::from_millis(5050),
        "{sixty_gap:?}"
    );
    assert_eq!(app.execution(&two).await.1["output"]["attempt"], "2");
}

#[tokio::test(start_paused = true)]
async fn without_the_settings_retries_go_at_once_whatever_retry_after_says() {
    let app = app(&[]).await;
    let stub = Stub::start(&app.base).await;
    app.pool("f", &stub.url("/unavailable-once/30"), json!({}))
        .await;
    let id = enqueue_id(&app, "f", json!(1)).await;
    eventually("retried", || async {
        status_of(&app, &id).await == "success"
    })
    .await;
    let attempts = &attempts_by_execution(&stub)[&id];
    assert_eq!(attempts.len(), 2);
    // Java's behaviour: no timer between the attempts, so no time passes on the paused clock.
    assert!(
        gaps(attempts)[0] < Duration::from_millis(10),
        "{:?}",
        gaps(attempts)
    );
    // A sync invocation too (inline dispatch, another app without the async queue).
    let sync_app = TestApp::with_env(&[("NANOFAAS_STATE_BACKEND", "memory")]).await;
    let sync_stub = Stub::start(&sync_app.base).await;
    sync_app
        .pool("f", &sync_stub.url("/unavailable-once/30"), json!({}))
        .await;
    let started = Instant::now();
    let r = sync_app.invoke("f", json!({"input": 2})).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["output"]["attempt"], "2");
    assert!(started.elapsed() < Duration::from_millis(10));
}

#[tokio::test(start_paused = true)]
async fn the_sync_callers_deadline_still_bounds_a_delayed_retry() {
    for async_queue in ["false", "true"] {
        let app = app(&[
            ("NANOFAAS_ASYNC_QUEUE_ENABLED", async_queue),
            ("NANOFAAS_RETRY_BACKOFF_INITIAL", "1ms"),
            ("NANOFAAS_RETRY_BACKOFF_MAX", "10s"),
        ])
        .await;
        let stub = Stub::start(&app.base).await;
        app.pool("busy", &stub.url("/unavailable/5"), json!({}))
            .await;
        app.pool("brief", &stub.url("/unavailable-once/1"), json!({}))
            .await;
        // The runtime asks for 5 s; the caller waits 2 s: no retry would start in time, so
        // the execution ends as TIMEOUT at once (408), and the runtime sees one attempt only.
        let started = Instant::now();
        let r = app
            .invoke_request("busy")
            .header("X-Timeout-Ms", "2000")
            .json(&json!({"input": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 408, "async queue {async_queue}");
        assert!(started.elapsed() < Duration::from_secs(2));
        let id = r.headers()["X-Execution-Id"].to_str().unwrap().to_owned();
        assert_eq!(r.json::<Value>().await.unwrap()["status"], "timeout");
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(stub.requests().len(), 1);
        assert_eq!(status_of(&app, &id).await, "timeout");
        app.assert_metrics(
            "busy",
            &[
                ("function_timeout_total", 1.0),
                ("function_retry_total", 0.0),
            ],
        )
        .await;
        // A delay that fits the wait is waited out: 200 after the second attempt.
        let started = Instant::now();
        let r = app
            .invoke_request("brief")
            .header("X-Timeout-Ms", "3000")
            .json(&json!({"input": 2}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "async queue {async_queue}");
        assert!(started.elapsed() >= Duration::from_secs(1));
        assert_eq!(r.json::<Value>().await.unwrap()["output"]["attempt"], "2");
    }
}

#[tokio::test(start_paused = true)]
async fn a_delayed_retry_holds_no_slot_but_its_place_in_the_queue() {
    let app = app(&[
        ("NANOFAAS_RETRY_BACKOFF_INITIAL", "1ms"),
        ("NANOFAAS_RETRY_BACKOFF_MAX", "10s"),
    ])
    .await;
    let stub = Stub::start(&app.base).await;
    app.pool(
        "one",
        &stub.url("/script"),
        json!({"concurrency": 1, "queueSize": 2}),
    )
    .await;
    let first = enqueue_id(&app, "one", json!({"retryAfterFirst": 5})).await;
    eventually("attempt 1 answered 503", || async {
        app.metric("function_enqueue_total", "one").await == Some(2.0)
    })
    .await;
    // Its retry waits 5 s without the only slot: the next execution runs at once.
    let t0 = Instant::now();
    let second = enqueue_id(&app, "one", json!({})).await;
    eventually("the second ran", || async {
        status_of(&app, &second).await == "success"
    })
    .await;
    assert!(
        t0.elapsed() < Duration::from_millis(100),
        "{:?}",
        t0.elapsed()
    );
    // But it holds one of the two places of queueSize: one running, one queued, one waiting
    // retry, and the next is refused.
    let _running = enqueue_id(&app, "one", json!({"sleepMs": 1000})).await;
    let _queued = enqueue_id(&app, "one", json!({})).await;
    let refused = enqueue(&app, "one", json!({"input": {}})).await;
    assert_eq!(refused.status(), 429);
    assert_eq!(
        refused.json::<Value>().await.unwrap()["error"],
        "QUEUE_FULL"
    );
    eventually("the retry ran", || async {
        status_of(&app, &first).await == "success"
    })
    .await;
    let attempts = &attempts_by_execution(&stub)[&first];
    assert!(gaps(attempts)[0] >= Duration::from_secs(5));
}

/// On the wall clock, loosely: the second attempt comes no sooner than `Retry-After` says.
#[tokio::test]
async fn retry_after_on_the_wall_clock() {
    let app = app(&[
        ("NANOFAAS_RETRY_BACKOFF_INITIAL", "1ms"),
        ("NANOFAAS_RETRY_BACKOFF_MAX", "5s"),
    ])
    .await;
    let stub = Stub::start(&app.base).await;
    app.pool("f", &stub.url("/unavailable-once/1"), json!({}))
        .await;
    let id = enqueue_id(&app, "f", json!("wall")).await;
    eventually("the retry succeeded", || async {
        status_of(&app, &id).await == "success"
    })
    .await;
    let attempts = &attempts_by_execution(&stub)[&id];
    assert_eq!(attempts.len(), 2);
    assert!(gaps(attempts)[0] >= Duration::from_secs(1));
    assert_eq!(attempts[1].body["input"], "wall");
}
