//! Runtime callbacks (E9, DECISIONS 5) and idempotency keys (REFERENCE §3.6, DECISIONS 4 B8).

mod common;

use std::time::Duration;

use common::{Stub, TestApp, metric_value};
use serde_json::{Value, json};

/// Waits (bounded) until the stub has received `n` requests; returns them.
async fn received(stub: &Stub, n: usize) -> Vec<common::Received> {
    for _ in 0..300 {
        let r = stub.requests();
        if r.len() >= n {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("stub did not receive {n} requests");
}

fn id_of(r: &common::Received) -> String {
    r.headers["x-execution-id"].to_str().unwrap().to_owned()
}

#[tokio::test]
async fn unknown_execution_callbacks_are_204_and_counted() {
    let app = TestApp::spawn().await;
    assert_eq!(
        app.callback("no-such-id", None, json!({"success": true}))
            .await,
        204
    );
    assert_eq!(app.callback("no-such-id", Some(3), json!({})).await, 204);
    let scrape = app.scrape().await;
    assert_eq!(
        metric_value(
            &scrape,
            "controlplane_callbacks_total",
            "outcome=\"unknown\""
        ),
        Some(2.0)
    );
}

#[tokio::test]
async fn stale_attempts_are_ignored_and_the_current_attempt_completes() {
    let app = TestApp::spawn().await;
    let stub = Stub::start(&app.base).await;
    app.pool("f", &stub.url("/hang"), json!({})).await;
    let call = app.spawn_invoke("f", &[], json!({"input": 1}));
    let id = id_of(&received(&stub, 1).await[0]);

    assert_eq!(
        app.callback(&id, Some(2), json!({"success": true, "output": "stale"}))
            .await,
        204
    );
    assert_eq!(app.execution(&id).await.1["status"], "running");

    assert_eq!(
        app.callback(&id, Some(1), json!({"success": true, "output": "cb"}))
            .await,
        204
    );
    let (status, body) = call.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(body["output"], "cb");
    let scrape = app.scrape().await;
    assert_eq!(
        metric_value(&scrape, "controlplane_callbacks_total", "outcome=\"stale\""),
        Some(1.0)
    );
    assert_eq!(
        metric_value(
            &scrape,
            "controlplane_callbacks_total",
            "outcome=\"applied\""
        ),
        Some(1.0)
    );

    // Late duplicates after the end change nothing.
    assert_eq!(
        app.callback(
            &id,
            None,
            json!({"success": false, "error": {"code":"X","message":"y"}})
        )
        .await,
        204
    );
    let (_, exec) = app.execution(&id).await;
    assert_eq!(
        (exec["status"].clone(), exec["output"].clone()),
        (json!("success"), json!("cb"))
    );
}

#[tokio::test]
async fn callbacks_accept_every_runtime_shape() {
    let app = TestApp::spawn().await;
    let stub = Stub::start(&app.base).await;
    app.pool("f", &stub.url("/hang"), json!({"maxRetries": 1}))
        .await;
    let cases = [
        // Go SDK: no `success` field.
        (json!({"output": {"go": 1}}), "success", json!({"go": 1})),
        // `status` instead of `success`, any case.
        (
            json!({"status": "Success", "output": 7}),
            "success",
            json!(7),
        ),
        (
            json!({"status": "ERROR", "error": {"code": "HANDLER_ERROR", "message": "bad"}}),
            "error",
            Value::Null,
        ),
        (
            json!({"error": {"code": "E", "message": "m"}}),
            "error",
            Value::Null,
        ),
        // Java shape; unknown fields ignored.
        (
            json!({"success": true, "output": "j", "error": null, "extra": true}),
            "success",
            json!("j"),
        ),
        // An error without ErrorInfo still is an error (B6).
        (json!({"success": false}), "error", Value::Null),
    ];
    for (i, (payload, status, output)) in cases.into_iter().enumerate() {
        let call = app.spawn_invoke("f", &[], json!({"input": i}));
        let id = id_of(&received(&stub, i + 1).await[i]);
        // The JS SDK percent-encodes the id.
        let encoded: String = id.bytes().map(|b| format!("%{b:02X}")).collect();
        assert_eq!(app.callback(&encoded, None, payload.clone()).await, 204);
        let (_, body) = call.await.unwrap();
        assert_eq!(body["status"], status, "{payload}");
        assert_eq!(body["output"], output, "{payload}");
        let (_, exec) = app.execution(&id).await;
        assert_eq!(exec["status"], status);
        if status == "error" {
            assert!(exec["error"]["code"].is_string(), "{exec}");
            // A replay of the ERROR execution reports the error too.
        }
    }
}

#[tokio::test]
async fn malformed_callbacks_are_400_json() {
    let app = TestApp::spawn().await;
    for body in ["{oops", "", "[1,2]", r#"{"success":"maybe"}"#] {
        let r = app
            .post_raw("/v1/internal/executions/abc:complete", body)
            .await;
        assert_eq!(r.status(), 400, "{body}");
        let json: Value = r.json().await.unwrap();
        assert_eq!(json["error"], "BAD_REQUEST");
    }
    let r = app
        .client
        .post(format!("{}/v1/internal/executions/abc", app.base))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn the_same_key_replays_the_same_execution_without_dispatching_again() {
    let app = TestApp::spawn().await;
    app.local("echo").await;
    app.local("other").await;
    let call = |name: &'static str, key: &'static str, input: i64| {
        let app = &app;
        async move { app.invoke_keyed(name, key, json!({"input": input})).await }
    };
    let first = call("echo", "k1", 1).await;
    let again = call("echo", "k1", 2).await;
    assert_eq!(first["executionId"], again["executionId"]);
    assert_eq!(
        again["output"], 1,
        "the stored result is replayed, payload not compared"
    );
    let other = call("other", "k1", 1).await;
    assert_ne!(other["executionId"], first["executionId"]);
    let blank = app.invoke_keyed("echo", "  ", json!({"input": 1})).await;
    assert_ne!(blank["executionId"], first["executionId"]);
    assert_eq!(
        app.metric("function_dispatch_total", "echo").await,
        Some(2.0)
    );
}

#[tokio::test]
async fn concurrent_requests_with_one_key_dispatch_once() {
    let app = TestApp::spawn().await;
    let stub = Stub::start(&app.base).await;
    app.pool("f", &stub.url("/slow/100"), json!({})).await;
    let calls = (0..10).map(|i| {
        let app = &app;
        async move { app.invoke_keyed("f", "same", json!({"input": i})).await }
    });
    let results = futures::future::join_all(calls).await;
    let id = results[0]["executionId"].clone();
    for r in &results {
        assert_eq!(r["executionId"], id);
        assert_eq!(r["status"], "success");
    }
    assert_eq!(stub.requests().len(), 1);
}

#[tokio::test]
async fn a_replay_with_a_short_timeout_does_not_end_the_shared_execution() {
    let app = TestApp::spawn().await;
    let stub = Stub::start(&app.base).await;
    app.pool("f", &stub.url("/slow/300"), json!({})).await;
    let original = app.spawn_invoke("f", &[("Idempotency-Key", "k")], json!({"input": 1}));
    let id = id_of(&received(&stub, 1).await[0]);
    let replay = app
        .invoke_request("f")
        .header("Idempotency-Key", "k")
        .header("X-Timeout-Ms", "20")
        .json(&json!({"input": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), 408);
    let replay: Value = replay.json().await.unwrap();
    assert_eq!(
        (
            replay["executionId"].as_str().unwrap(),
            replay["status"].as_str().unwrap()
        ),
        (id.as_str(), "timeout")
    );
    assert_eq!(app.execution(&id).await.1["status"], "running");

    let (status, body) = original.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(body["status"], "success");
    // The replay's wait timed out (counted) but the execution was not ended.
    assert_eq!(app.metric("function_timeout_total", "f").await, Some(1.0));
    // A replay after the end gets the stored result at once.
    let late = app.invoke_keyed("f", "k", json!({"input": 1})).await;
    assert_eq!(late["output"], json!({"slow": 300}));
    assert_eq!(stub.requests().len(), 1);
}

#[tokio::test]
async fn an_error_execution_replays_as_an_error() {
    let app = TestApp::spawn().await;
    let stub = Stub::start(&app.base).await;
    app.pool("f", &stub.url("/fail"), json!({"maxRetries": 1}))
        .await;
    let call = || async { app.invoke_keyed("f", "k", json!({"input": 1})).await };
    let first = call().await;
    let replay = call().await;
    assert_eq!(first, replay);
    assert_eq!(replay["status"], "error");
    assert_eq!(replay["error"]["code"], "POOL_ERROR");
}

#[tokio::test]
async fn oversized_idempotency_keys_are_refused() {
    let app = TestApp::spawn().await;
    app.local("echo").await;
    let r = app
        .invoke_request("echo")
        .header("Idempotency-Key", "k".repeat(2000))
        .json(&json!({"input": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "BAD_REQUEST");
}
