//! Sync-queue admission (REFERENCE §5.2 without B4/B5) and the runtime-config admin API (§5.4)
//! through HTTP.

mod common;

use common::{Stub, TestApp, eventually, metric_value};
use serde_json::{Value, json};

const SYNC: (&str, &str) = ("NANOFAAS_SYNC_QUEUE_ENABLED", "true");
const ADMIN: (&str, &str) = ("NANOFAAS_ADMIN_RUNTIME_CONFIG_ENABLED", "true");

async fn assert_rejected(r: reqwest::Response, reason: &str, retry_after: &str) {
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["x-queue-reject-reason"], reason);
    assert_eq!(r.headers()["retry-after"], retry_after);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "SYNC_QUEUE_REJECTED");
}

#[tokio::test]
async fn a_zero_estimated_wait_rejects_with_est_wait() {
    let app = TestApp::with_env(&[SYNC, ("SYNC_QUEUE_MAX_ESTIMATED_WAIT", "0s")]).await;
    app.local("echo").await;
    assert_rejected(
        app.invoke("echo", json!({"input": 1})).await,
        "est_wait",
        "2",
    )
    .await;
    let scrape = app.scrape().await;
    assert_eq!(
        metric_value(&scrape, "sync_queue_rejected_total", "function=\"echo\""),
        Some(1.0)
    );
}

#[tokio::test]
async fn sub_second_limits_and_an_empty_history_admit() {
    let app = TestApp::with_env(&[SYNC, ("NANOFAAS_SYNC_QUEUE_MAX_ESTIMATED_WAIT", "500ms")]).await;
    app.local("echo").await;
    for i in 0..3 {
        let r = app.invoke("echo", json!({"input": i})).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.json::<Value>().await.unwrap()["output"], i);
    }
    let scrape = app.scrape().await;
    assert_eq!(
        metric_value(&scrape, "sync_queue_admitted_total", "function=\"echo\""),
        Some(3.0)
    );
    assert_eq!(
        metric_value(&scrape, "sync_queue_wait_seconds_count", ""),
        None
    );
    assert!(
        scrape.contains("sync_queue_wait_seconds_count 3"),
        "{scrape}"
    );
    assert!(scrape.contains("sync_queue_depth 0.0"), "{scrape}");
    // The sync queue does not count as async enqueues.
    assert_eq!(
        metric_value(&scrape, "function_enqueue_total", "function=\"echo\""),
        Some(0.0)
    );
}

#[tokio::test]
async fn the_global_depth_limit_rejects_with_depth() {
    let app = TestApp::with_env(&[
        SYNC,
        ("SYNC_QUEUE_MAX_DEPTH", "2"),
        ("SYNC_QUEUE_ADMISSION_ENABLED", "false"),
        ("SYNC_QUEUE_MAX_QUEUE_WAIT", "10s"),
        ("SYNC_QUEUE_RETRY_AFTER_SECONDS", "7"),
    ])
    .await;
    let stub = Stub::start(&app.base).await;
    app.pool("f", &stub.url("/hang"), json!({"concurrency": 1}))
        .await;
    let _running = app.spawn_invoke("f", &[], json!({"input": 1}));
    eventually("dispatched", || async { stub.requests().len() == 1 }).await;
    let _q1 = app.spawn_invoke("f", &[], json!({"input": 1}));
    let _q2 = app.spawn_invoke("f", &[], json!({"input": 1}));
    eventually("two queued", || async {
        app.scrape().await.contains("sync_queue_depth 2.0")
    })
    .await;
    assert_rejected(app.invoke("f", json!({"input": 9})).await, "depth", "7").await;
}

#[tokio::test]
async fn sync_queue_counters_die_with_the_function_and_restart_on_re_registration() {
    let app = TestApp::with_env(&[SYNC]).await;
    let admitted =
        |scrape: &str| metric_value(scrape, "sync_queue_admitted_total", "function=\"echo\"");
    app.local("echo").await;
    for i in 0..2 {
        assert_eq!(app.invoke("echo", json!({"input": i})).await.status(), 200);
    }
    assert_eq!(admitted(&app.scrape().await), Some(2.0));
    assert_eq!(app.delete_function("echo").await.status(), 204);
    let scrape = app.scrape().await;
    assert!(!scrape.contains("sync_queue_admitted_total"), "{scrape}");
    app.local("echo").await;
    assert_eq!(app.invoke("echo", json!({"input": 3})).await.status(), 200);
    assert_eq!(admitted(&app.scrape().await), Some(1.0));
}

#[tokio::test]
async fn a_long_queue_wait_is_429_timeout() {
    // Admission off: this is about the queue-wait limit alone.
    let app = TestApp::with_env(&[
        SYNC,
        ("SYNC_QUEUE_MAX_QUEUE_WAIT", "150ms"),
        ("SYNC_QUEUE_ADMISSION_ENABLED", "false"),
    ])
    .await;
    let stub = Stub::start(&app.base).await;
    app.pool("f", &stub.url("/hang"), json!({"concurrency": 1}))
        .await;
    let _running = app.spawn_invoke("f", &[], json!({"input": 1}));
    eventually("dispatched", || async { stub.requests().len() == 1 }).await;
    let r = app.invoke("f", json!({"input": 2})).await;
    assert_rejected(r, "timeout", "2").await;
    let scrape = app.scrape().await;
    assert_eq!(
        metric_value(&scrape, "sync_queue_timedout_total", "function=\"f\""),
        Some(1.0)
    );
    assert!(scrape.contains("sync_queue_depth 0.0"));
    assert_eq!(stub.requests().len(), 1);
}

#[tokio::test]
async fn a_retry_waiting_in_the_queue_is_not_timed_out_by_the_sync_queue_wait() {
    let app = TestApp::with_env(&[
        SYNC,
        ("SYNC_QUEUE_MAX_QUEUE_WAIT", "500ms"),
        ("SYNC_QUEUE_ADMISSION_ENABLED", "false"),
    ])
    .await;
    let stub = Stub::start(&app.base).await;
    app.pool(
        "f",
        &stub.url("/script"),
        json!({"concurrency": 1, "maxRetries": 2}),
    )
    .await;
    // B fails its first attempt after 200 ms; A takes the slot for 1.5 s meanwhile, so B's
    // retry waits in the (async) queue past B's sync-queue wait limit.
    let b = app.spawn_invoke(
        "f",
        &[],
        json!({"input": {"sleepMs": 200, "failFirst": true}}),
    );
    eventually("B dispatched", || async { stub.requests().len() == 1 }).await;
    let a = app.invoke("f", json!({"input": {"sleepMs": 1500}})).await;
    assert_eq!(a.status(), 200);
    let (status, body) = b.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["output"]["attempt"], "2");
}

#[tokio::test]
async fn an_empty_queue_admits_even_when_the_slots_are_busy() {
    let app = TestApp::with_env(&[SYNC, ("SYNC_QUEUE_MAX_QUEUE_WAIT", "10s")]).await;
    let stub = Stub::start(&app.base).await;
    app.pool("f", &stub.url("/slow/300"), json!({"concurrency": 1}))
        .await;
    let first = app.spawn_invoke("f", &[], json!({"input": 1}));
    eventually("dispatched", || async { stub.requests().len() == 1 }).await;
    // Nothing is queued: admitted, it waits for the slot.
    let second = app.spawn_invoke("f", &[], json!({"input": 1}));
    eventually("queued", || async {
        app.scrape().await.contains("sync_queue_depth 1.0")
    })
    .await;
    // One queued ahead at one dispatch per 30 s: the estimate is far past 2 s.
    let third = app.invoke("f", json!({"input": 3})).await;
    assert_rejected(third, "est_wait", "2").await;
    assert_eq!(first.await.unwrap().0, 200);
    assert_eq!(second.await.unwrap().0, 200);
}

#[tokio::test]
async fn runtime_config_is_404_unless_enabled() {
    let app = TestApp::spawn().await;
    let r = app
        .client
        .get(format!("{}/v1/admin/runtime-config", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "404 NOT_FOUND");
}

#[tokio::test]
async fn runtime_config_get_validate_and_patch() {
    let app = TestApp::with_env(&[ADMIN]).await;
    let url = format!("{}/v1/admin/runtime-config", app.base);
    let snapshot: Value = app
        .client
        .get(&url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        snapshot,
        json!({"revision":0,"rateMaxPerSecond":1000,"syncQueueEnabled":false,"syncQueueAdmissionEnabled":false,
               "syncQueueMaxEstimatedWait":"PT2S","syncQueueMaxQueueWait":"PT2S","syncQueueRetryAfterSeconds":2})
    );
    let post = |path: &str, body: Value| app.client.post(format!("{url}{path}")).json(&body).send();
    let patch = |body: Value| app.client.patch(&url).json(&body).send();

    let r = post("/validate", json!({"syncQueueMaxEstimatedWait":"PT1S"}))
        .await
        .unwrap();
    assert_eq!(
        (r.status().as_u16(), r.json::<Value>().await.unwrap()),
        (200, json!({"valid": true}))
    );
    let r = post("/validate", json!({"syncQueueMaxEstimatedWait":"PT3S"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    assert_eq!(
        r.json::<Value>().await.unwrap()["errors"],
        json!(["syncQueueMaxEstimatedWait must be <= syncQueueMaxQueueWait"])
    );
    let r = post("/validate", json!({"syncQueueMaxQueueWait":"5s"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let b: Value = r.json().await.unwrap();
    assert_eq!(
        (b["error"].clone(), b["field"].clone(), b["value"].clone()),
        (
            json!("Invalid duration for syncQueueMaxQueueWait"),
            json!("syncQueueMaxQueueWait"),
            json!("5s")
        )
    );
    // A number is read as its text (Jackson's coercion), then refused as a duration the same way.
    let r = post("/validate", json!({"syncQueueMaxEstimatedWait": 5}))
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let b: Value = r.json().await.unwrap();
    assert_eq!(
        (b["field"].clone(), b["value"].clone()),
        (json!("syncQueueMaxEstimatedWait"), json!("5"))
    );

    let r = patch(json!({"rateMaxPerSecond": 5})).await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"],
        "expectedRevision is required"
    );
    let r = patch(json!({"expectedRevision": 4, "rateMaxPerSecond": 5}))
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["error"], "Revision mismatch: expected 4 but current is 0");
    assert_eq!(b["currentRevision"], 0);
    let r = patch(json!({"expectedRevision": 0, "rateMaxPerSecond": 0}))
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    assert_eq!(
        r.json::<Value>().await.unwrap()["errors"],
        json!(["rateMaxPerSecond must be > 0, got 0"])
    );
    let r = patch(json!({"expectedRevision": "x"})).await.unwrap();
    assert_eq!(r.status(), 400);

    let r = patch(
        json!({"expectedRevision": 0, "syncQueueMaxEstimatedWait": "PT0.5S",
                         "syncQueueAdmissionEnabled": false, "syncQueueRetryAfterSeconds": 3}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["revision"], 1);
    assert_eq!(b["effectiveConfig"]["revision"], 1);
    assert_eq!(b["effectiveConfig"]["syncQueueMaxEstimatedWait"], "PT0.5S");
    assert_eq!(b["effectiveConfig"]["syncQueueAdmissionEnabled"], false);
    assert_eq!(b["effectiveConfig"]["rateMaxPerSecond"], 1000);
    assert_eq!(b["warnings"], json!([]));
    assert!(b["appliedAt"].as_str().unwrap().ends_with('Z'));
    assert_eq!(b["changeId"].as_str().unwrap().len(), 36);
    let snapshot: Value = app
        .client
        .get(&url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(snapshot, b["effectiveConfig"]);

    let scrape = app.scrape().await;
    assert!(
        scrape.contains("controlplane_runtime_config_revision 1"),
        "{scrape}"
    );
    assert_eq!(
        metric_value(
            &scrape,
            "controlplane_runtime_config_updates_total",
            "status=\"success\""
        ),
        Some(1.0)
    );
    assert!(scrape.contains("controlplane_runtime_config_apply_duration_seconds_count 1"));
}

#[tokio::test]
async fn patches_apply_live_to_the_rate_limiter() {
    let app = TestApp::with_env(&[ADMIN]).await;
    app.local("echo").await;
    let r = app
        .client
        .patch(format!("{}/v1/admin/runtime-config", app.base))
        .json(&json!({"expectedRevision": 0, "rateMaxPerSecond": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(
            app.invoke("echo", json!({"input": 1}))
                .await
                .status()
                .as_u16(),
        );
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    assert!(
        statuses.iter().filter(|s| **s == 200).count() <= 2,
        "{statuses:?}"
    );
}

#[tokio::test]
async fn the_sync_queue_can_be_enabled_at_run_time() {
    let app = TestApp::with_env(&[ADMIN]).await;
    app.local("echo").await;
    let r = app
        .client
        .patch(format!("{}/v1/admin/runtime-config", app.base))
        .json(&json!({"expectedRevision": 0, "syncQueueEnabled": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = app.invoke("echo", json!({"input": "queued"})).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["output"], "queued");
    let scrape = app.scrape().await;
    assert_eq!(
        metric_value(&scrape, "sync_queue_admitted_total", "function=\"echo\""),
        Some(1.0)
    );

    // And turned off again: sync invocations are dispatched inline.
    let r = app
        .client
        .patch(format!("{}/v1/admin/runtime-config", app.base))
        .json(&json!({"expectedRevision": 1, "syncQueueEnabled": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(app.invoke("echo", json!({"input": 1})).await.status(), 200);
    let scrape = app.scrape().await;
    assert_eq!(
        metric_value(&scrape, "sync_queue_admitted_total", "function=\"echo\""),
        Some(1.0)
    );
}

/// Found by fuzzing (fuzz/corpus/runtime_config_patch/huge_wait.json): a wait longer than any
/// deadline can hold was applied (and shown) although the queue kept 584 years of it. Java's
/// `Duration.parse` refuses it too.
#[tokio::test]
async fn a_queue_wait_past_any_deadline_is_refused() {
    let app = TestApp::with_env(&[ADMIN]).await;
    app.local("echo").await;
    let r = app
        .client
        .patch(format!("{}/v1/admin/runtime-config", app.base))
        .json(&json!({"expectedRevision": 0, "syncQueueEnabled": true,
                      "syncQueueMaxQueueWait": "PT18446744073709551615S"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let b: Value = r.json().await.unwrap();
    assert_eq!(
        (b["field"].clone(), b["value"].clone()),
        (
            json!("syncQueueMaxQueueWait"),
            json!("PT18446744073709551615S")
        )
    );
    let r = app.invoke("echo", json!({"input": 1})).await;
    assert_eq!(r.status(), 200);
}
