//! Runtime callbacks on a listener of their own (`NANOFAAS_CALLBACK_SERVER_PORT`): only
//! `/v1/internal/...` is served there, and the API port no longer serves it.

mod common;

use common::{Stub, TestApp};
use serde_json::{Value, json};

async fn app_with_callback_listener() -> (TestApp, String) {
    let app = TestApp::with_env(&[
        ("NANOFAAS_CALLBACK_SERVER_PORT", "0"),
        ("NANOFAAS_CALLBACK_SERVER_ADDRESS", "127.0.0.1"),
    ])
    .await;
    let callbacks = app.callbacks.clone().expect("callback listener bound");
    assert_ne!(callbacks, app.base);
    (app, callbacks)
}

#[tokio::test]
async fn without_the_setting_callbacks_stay_on_the_api_port() {
    let app = TestApp::spawn().await;
    assert!(app.callbacks.is_none());
    assert_eq!(app.callback("unknown", None, json!({})).await, 204);
}

#[tokio::test]
async fn callbacks_move_to_their_own_listener() {
    let (app, callbacks) = app_with_callback_listener().await;
    // The API port no longer knows the route.
    let on_api = app
        .post_raw("/v1/internal/executions/x:complete", "{}")
        .await;
    assert_eq!(on_api.status(), 404);
    let body: Value = on_api.json().await.unwrap();
    assert_eq!(body["error"], "404 NOT_FOUND");
    // The callback port serves only callbacks, with the same JSON errors.
    let answer = app
        .client
        .post(format!("{callbacks}/v1/internal/executions/x:complete"))
        .json(&json!({"success": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 204);
    let other = app
        .client
        .get(format!("{callbacks}/v1/functions"))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404);
    let body: Value = other.json().await.unwrap();
    assert_eq!(body["error"], "404 NOT_FOUND");
    let bad = app
        .client
        .post(format!("{callbacks}/v1/internal/executions/x:complete"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
}

#[tokio::test]
async fn a_runtime_completes_a_sync_invocation_through_the_callback_listener() {
    let (app, callbacks) = app_with_callback_listener().await;
    // The stub posts its callbacks to the callback listener, as a function pod would.
    let stub = Stub::start(&callbacks).await;
    app.pool("cb", &stub.url("/callback-first"), json!({}))
        .await;
    let r = app.invoke("cb", json!({"input": 1})).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], "success");
    assert_eq!(body["output"], "from-callback");
    assert_eq!(*stub.callback_statuses.lock().unwrap(), vec![204]);
}
