//! The execution store's bounds through HTTP (DECISIONS 7, issue 10 defect 9): a byte budget
//! beside the entry cap, the oldest finished executions evicted first, 503 `OVERLOADED` when only
//! in-flight work is left, and a share of the store no single function can exceed.

mod common;

use common::{Stub, TestApp};
use serde_json::{Value, json};

const ASYNC: (&str, &str) = ("NANOFAAS_ASYNC_QUEUE_ENABLED", "true");

async fn enqueue(app: &TestApp, name: &str) -> reqwest::Response {
    app.client
        .post(format!("{}/v1/functions/{name}:enqueue", app.base))
        .json(&json!({"input": 1}))
        .send()
        .await
        .unwrap()
}

async fn assert_overloaded(r: reqwest::Response, message: &str) {
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["Retry-After"], "1");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "OVERLOADED");
    assert_eq!(body["message"], message);
}

#[tokio::test]
async fn big_outputs_evict_the_oldest_finished_executions_under_the_byte_budget() {
    let app = TestApp::with_env(&[("NANOFAAS_EXECUTION_STORE_MAX_BYTES", "1048576")]).await;
    app.local("echo").await;
    // A LOCAL function echoes its input: 200 KB outputs, five fit in 1 MiB.
    let big = "x".repeat(200_000);
    let mut ids = Vec::new();
    for _ in 0..12 {
        let r = app.invoke("echo", json!({"input": big})).await;
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["status"], "success");
        ids.push(body["executionId"].as_str().unwrap().to_owned());
    }
    assert_eq!(app.execution(&ids[0]).await.0, 404, "the oldest went first");
    let (status, last) = app.execution(&ids[11]).await;
    assert_eq!(status, 200);
    assert_eq!(last["output"].as_str().map(str::len), Some(200_000));
    let mut kept = 0;
    for id in &ids {
        if app.execution(id).await.0 == 200 {
            kept += 1;
        }
    }
    assert!((3..=5).contains(&kept), "{kept} kept");
}

#[tokio::test]
async fn a_hanging_function_cannot_take_the_store_from_another() {
    let app = TestApp::with_env(&[ASYNC, ("NANOFAAS_EXECUTION_STORE_MAX_ENTRIES", "10")]).await;
    let stub = Stub::start(&app.base).await;
    app.pool(
        "hang",
        &stub.url("/hang"),
        json!({"timeoutMs": 60000, "concurrency": 2, "queueSize": 100}),
    )
    .await;
    app.local("other").await;
    // Half of the entry cap (the default share) in flight, then refused for this function only.
    for _ in 0..5 {
        assert_eq!(enqueue(&app, "hang").await.status(), 202);
    }
    assert_overloaded(
        enqueue(&app, "hang").await,
        "Too many executions of function 'hang' in flight; retry later",
    )
    .await;
    for _ in 0..20 {
        assert_eq!(app.invoke("other", json!({"input": 1})).await.status(), 200);
    }
}

#[tokio::test]
async fn when_only_in_flight_work_is_left_new_executions_get_503() {
    let app = TestApp::with_env(&[
        ASYNC,
        ("NANOFAAS_EXECUTION_STORE_MAX_ENTRIES", "4"),
        ("NANOFAAS_EXECUTION_STORE_FUNCTION_SHARE_PERCENT", "50"),
    ])
    .await;
    let stub = Stub::start(&app.base).await;
    for name in ["a", "b"] {
        app.pool(name, &stub.url("/hang"), json!({"timeoutMs": 60000}))
            .await;
        for _ in 0..2 {
            assert_eq!(enqueue(&app, name).await.status(), 202);
        }
    }
    app.local("c").await;
    assert_overloaded(
        app.invoke("c", json!({"input": 1})).await,
        "Too many executions in flight; retry later",
    )
    .await;
}

#[tokio::test]
async fn in_flight_requests_count_against_the_byte_budget() {
    let app = TestApp::with_env(&[
        ASYNC,
        ("NANOFAAS_EXECUTION_STORE_MAX_BYTES", "1048576"),
        ("NANOFAAS_EXECUTION_STORE_FUNCTION_SHARE_PERCENT", "100"),
    ])
    .await;
    let stub = Stub::start(&app.base).await;
    app.pool("f", &stub.url("/hang"), json!({"timeoutMs": 60000}))
        .await;
    // Each queued request is kept twice (the input and the body sent to the runtime): ~200 KB.
    let big = "x".repeat(100_000);
    let mut accepted = 0;
    loop {
        let r = app
            .client
            .post(format!("{}/v1/functions/f:enqueue", app.base))
            .json(&json!({"input": big}))
            .send()
            .await
            .unwrap();
        if r.status() == 503 {
            assert_overloaded(r, "Too many executions in flight; retry later").await;
            break;
        }
        assert_eq!(r.status(), 202);
        accepted += 1;
        assert!(accepted < 10, "the budget never refused");
    }
    assert!((4..=5).contains(&accepted), "{accepted}");
}
