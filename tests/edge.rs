//! The HTTP edge under abuse (issue 10): POOL dispatch never follows redirects, slow or idle
//! clients are timed out, connection caps keep the management port answering, shutdown is not held
//! by stalled clients, bind addresses are honoured, JSON depth and number length are bounded, and
//! errors from the HTTP parser itself are JSON.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{any, post};
use common::TestApp;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An HTTP server on port 0 that counts the requests it gets.
async fn counting_server() -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let app = Router::new().fallback(any(move || {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            axum::Json(json!({"leaked": true}))
        }
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), hits)
}

/// A runtime that answers every invocation with a redirect `/<status>` to `target`.
async fn redirecting_runtime(target: String) -> String {
    let app = Router::new().route(
        "/{status}",
        post(
            move |axum::extract::Path(status): axum::extract::Path<u16>| {
                let target = target.clone();
                async move {
                    let status = StatusCode::from_u16(status).unwrap();
                    (status, [(header::LOCATION, format!("{target}/steal"))]).into_response()
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

#[tokio::test]
async fn pool_dispatch_does_not_follow_redirects() {
    let app = TestApp::spawn().await;
    let (target, hits) = counting_server().await;
    let runtime = redirecting_runtime(target).await;
    for status in [301u16, 302, 303, 307, 308] {
        let name = format!("redirect-{status}");
        app.pool(
            &name,
            &format!("{runtime}/{status}"),
            json!({"maxRetries": 1}),
        )
        .await;
        let r = app.invoke(&name, json!({"input": {"secret": 1}})).await;
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["status"], "error", "{status}: {body}");
        assert_eq!(body["error"]["code"], "POOL_ERROR", "{status}: {body}");
        assert_eq!(body["output"], Value::Null);
    }
    assert_eq!(hits.load(Ordering::SeqCst), 0, "a redirect was followed");
}

#[tokio::test]
async fn each_port_binds_its_configured_address() {
    let app = TestApp::with_env(&[("MANAGEMENT_SERVER_ADDRESS", "127.0.0.2")]).await;
    assert!(app.base.starts_with("http://127.0.0.1:"), "{}", app.base);
    assert!(
        app.management.starts_with("http://127.0.0.2:"),
        "{}",
        app.management
    );
    let health = app
        .client
        .get(format!("{}/actuator/health", app.management))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}

async fn expect_bad_request(r: reqwest::Response) -> Value {
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["content-type"], "application/json");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "BAD_REQUEST", "{body}");
    body
}

#[tokio::test]
async fn json_deeper_than_1000_levels_or_numbers_longer_than_1000_digits_are_refused() {
    let app = TestApp::spawn().await;
    app.local("echo").await;
    let nested = |levels: usize| {
        format!(
            "{{\"input\":{}7{}}}",
            "[".repeat(levels),
            "]".repeat(levels)
        )
    };
    // The request object is level 1: 999 arrays inside it make 1000 levels, Jackson's limit.
    let r = app.post_raw("/v1/functions/echo:invoke", nested(999)).await;
    assert_eq!(r.status(), 200);
    // Read as text: serde_json's own reader stops at 128 levels.
    let text = r.text().await.unwrap();
    assert!(text.contains(&format!(
        "\"status\":\"success\",\"output\":{}7",
        "[".repeat(999)
    )));
    let body = expect_bad_request(
        app.post_raw("/v1/functions/echo:invoke", nested(1000))
            .await,
    )
    .await;
    assert!(
        body["message"].as_str().unwrap().contains("nesting depth"),
        "{body}"
    );
    expect_bad_request(
        app.post_raw("/v1/functions/echo:invoke", nested(100_000))
            .await,
    )
    .await;

    let number = |digits: usize| format!("{{\"input\":{}}}", "1".repeat(digits));
    let r = app
        .post_raw("/v1/functions/echo:invoke", number(1000))
        .await;
    assert_eq!(r.status(), 200);
    expect_bad_request(
        app.post_raw("/v1/functions/echo:invoke", number(1001))
            .await,
    )
    .await;
    // The same rule for every body: registration and runtime callbacks.
    let deep_spec = format!(
        "{{\"name\":\"deep\",\"image\":\"i\",\"env\":{}{}}}",
        "[".repeat(2000),
        "]".repeat(2000)
    );
    expect_bad_request(app.post_raw("/v1/functions", deep_spec).await).await;
    let deep_callback = format!(
        "{{\"success\":true,\"output\":{}{}}}",
        "[".repeat(2000),
        "]".repeat(2000)
    );
    expect_bad_request(
        app.post_raw("/v1/internal/executions/some-id:complete", deep_callback)
            .await,
    )
    .await;
}
