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

/// Everything the server sends until it closes the connection; `None` if it is still open after
/// `limit` (the client gives up, the test fails on it).
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    let mut received = Vec::new();
    tokio::time::timeout(limit, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .ok()?;
    Some(received)
}

fn addr_of(base: &str) -> String {
    base.trim_start_matches("http://").to_owned()
}

/// Connects and sends `bytes`.
async fn send_raw(base: &str, bytes: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr_of(base)).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    stream
}

/// The status and the JSON body of a raw HTTP/1.1 answer.
fn parse_answer(raw: &[u8]) -> (u16, String, Value) {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete answer");
    let status = head[9..12].parse().unwrap();
    let json = serde_json::from_str(body).unwrap_or(Value::Null);
    (status, head.to_ascii_lowercase(), json)
}

const WAIT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn slow_and_idle_clients_are_timed_out() {
    let app = TestApp::with_env(&[
        ("NANOFAAS_HTTP_HEADER_READ_TIMEOUT", "300ms"),
        ("NANOFAAS_HTTP_BODY_READ_TIMEOUT", "300ms"),
        ("NANOFAAS_HTTP_IDLE_TIMEOUT", "600ms"),
    ])
    .await;
    app.local("echo").await;

    // A connection that never sends a request.
    let started = Instant::now();
    let mut silent = send_raw(&app.base, b"").await;
    let answer = read_until_closed(&mut silent, WAIT).await;
    assert_eq!(answer, Some(Vec::new()), "a silent connection stayed open");
    assert!(started.elapsed() >= Duration::from_millis(250));

    // Half a request head (slowloris).
    let mut half = send_raw(&app.base, b"GET /v1/functions HTTP/1.1\r\nHost: x\r\n").await;
    assert!(
        read_until_closed(&mut half, WAIT).await.is_some(),
        "a half-sent head held the connection"
    );

    // A keep-alive connection after its answer: closed once idle for the idle timeout, which is
    // longer than the header timeout.
    let mut keep_alive =
        send_raw(&app.base, b"GET /v1/functions HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let mut buf = [0u8; 1024];
    let n = keep_alive.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let idle_since = Instant::now();
    assert_eq!(
        read_until_closed(&mut keep_alive, WAIT).await,
        Some(Vec::new())
    );
    assert!(
        idle_since.elapsed() >= Duration::from_millis(500),
        "closed before the idle timeout"
    );

    // A body that never comes in full: 408 with a JSON body.
    let mut slow_body = send_raw(
        &app.base,
        b"POST /v1/functions/echo:invoke HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"input\":",
    )
    .await;
    let answer = read_until_closed(&mut slow_body, WAIT)
        .await
        .expect("a stalled body held the connection");
    let (status, _, body) = parse_answer(&answer);
    assert_eq!(status, 408);
    assert_eq!(body["error"], "408 REQUEST_TIMEOUT", "{body}");

    // A declared body beyond the limit is refused before any of it is sent.
    let mut huge = send_raw(
        &app.base,
        b"POST /v1/functions/echo:invoke HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1073741824\r\n\r\n",
    )
    .await;
    let answer = read_until_closed(&mut huge, WAIT)
        .await
        .expect("a 1 GiB declaration held the connection");
    let (status, head, body) = parse_answer(&answer);
    assert_eq!(status, 413);
    assert!(head.contains("content-type: application/json"), "{head}");
    assert_eq!(body["error"], "PAYLOAD_TOO_LARGE");

    // The same on the management port.
    let mut management_silent =
        send_raw(&app.management, b"GET /actuator/health HTTP/1.1\r\n").await;
    assert!(
        read_until_closed(&mut management_silent, WAIT)
            .await
            .is_some()
    );
}

#[tokio::test]
async fn a_saturated_api_port_leaves_the_management_port_answering() {
    let app = TestApp::with_env(&[("NANOFAAS_HTTP_MAX_CONNECTIONS", "8")]).await;
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(send_raw(&app.base, b"").await);
    }
    // Over the cap: the connection is not served while the others are held...
    let mut extra = Vec::new();
    for _ in 0..20 {
        extra.push(
            send_raw(
                &app.base,
                b"GET /v1/functions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            )
            .await,
        );
    }
    let mut buf = [0u8; 256];
    let waited = tokio::time::timeout(Duration::from_millis(300), extra[0].read(&mut buf)).await;
    assert!(waited.is_err(), "a connection over the cap was served");
    // ...while health checks answer at once.
    let started = Instant::now();
    let health = app
        .client
        .get(format!("{}/actuator/health", app.management))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert!(started.elapsed() < Duration::from_secs(1));
    // Freed slots serve the waiting connections, in order.
    held.clear();
    for stream in &mut extra {
        let n = tokio::time::timeout(WAIT, stream.read(&mut buf))
            .await
            .expect("a waiting connection was never served")
            .unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    }
}

#[test]
fn the_open_files_soft_limit_is_raised_to_the_hard_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: reads into a struct we own.
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
        0
    );
    let raised = nanofaas_control_plane::server::raise_open_files_limit().unwrap();
    #[allow(clippy::unnecessary_cast)]
    let hard = limit.rlim_max as u64;
    assert_eq!(raised, hard);
}

#[tokio::test]
async fn a_stalled_client_does_not_hold_shutdown() {
    let mut app = TestApp::with_env(&[("NANOFAAS_SHUTDOWN_GRACE_PERIOD", "10s")]).await;
    let stub = common::Stub::start(&app.base).await;
    app.pool("slow", &stub.url("/slow/400"), json!({})).await;
    let in_flight = app.spawn_invoke("slow", &[], json!({"input": 1}));
    // Half a head, and an idle keep-alive connection.
    let mut stalled = send_raw(
        &app.base,
        b"POST /v1/functions/slow:invoke HTTP/1.1\r\nHost",
    )
    .await;
    let mut idle = send_raw(&app.base, b"GET /v1/functions HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let mut buf = [0u8; 1024];
    let _ = idle.read(&mut buf).await.unwrap();
    common::eventually("the slow invocation reaches the runtime", || async {
        !stub.requests().is_empty()
    })
    .await;

    let started = Instant::now();
    let server = app.begin_shutdown();
    tokio::time::timeout(Duration::from_secs(3), server)
        .await
        .expect("shutdown waited for a stalled client")
        .unwrap()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(3));
    // The request in progress finished; the others were closed.
    let (status, body) = in_flight.await.unwrap();
    assert_eq!((status, &body["status"]), (200, &json!("success")));
    assert!(read_until_closed(&mut stalled, WAIT).await.is_some());
    assert!(read_until_closed(&mut idle, WAIT).await.is_some());
}

#[tokio::test]
async fn errors_of_the_http_parser_have_json_bodies() {
    let app = TestApp::spawn().await;
    let cases: [(Vec<u8>, u16, &str); 3] = [
        (
            b"GET /v1/functions HTTP/1.1\r\nHost: x\r\nbad header\r\n\r\n".to_vec(),
            400,
            "BAD_REQUEST",
        ),
        (
            format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(70_000)).into_bytes(),
            414,
            "414 URI_TOO_LONG",
        ),
        (
            format!(
                "GET /v1/functions HTTP/1.1\r\nHost: x\r\n{}\r\n",
                (0..120)
                    .map(|i| format!("X-H{i}: v\r\n"))
                    .collect::<String>()
            )
            .into_bytes(),
            431,
            "431 REQUEST_HEADER_FIELDS_TOO_LARGE",
        ),
    ];
    for (request, status, code) in cases {
        let mut stream = send_raw(&app.base, &request).await;
        let answer = read_until_closed(&mut stream, WAIT).await.unwrap();
        let (got, head, body) = parse_answer(&answer);
        assert_eq!(got, status, "{head}");
        assert!(head.contains("content-type: application/json"), "{head}");
        assert_eq!(body["error"], code, "{body}");
        assert!(body["message"].is_string());
    }
    // A well-formed request on a kept-alive connection, then a malformed one.
    let mut stream = send_raw(
        &app.base,
        b"GET /v1/functions HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nbad header\r\n\r\n",
    )
    .await;
    let answer = read_until_closed(&mut stream, WAIT).await.unwrap();
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("\"error\":\"BAD_REQUEST\""), "{text}");
}

#[tokio::test]
async fn method_not_allowed_lists_the_allowed_methods() {
    let app = TestApp::spawn().await;
    let cases = [
        (reqwest::Method::PUT, "/v1/functions", "GET,HEAD,POST"),
        (reqwest::Method::DELETE, "/v1/executions/x", "GET,HEAD"),
        (
            reqwest::Method::POST,
            "/v1/functions/f:unknown",
            "GET,HEAD,DELETE",
        ),
        (reqwest::Method::POST, "/v1/functions/f", "GET,HEAD,DELETE"),
    ];
    for (method, path, allow) in cases {
        let r = app
            .client
            .request(method.clone(), format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 405, "{method} {path}");
        let header = r
            .headers()
            .get("allow")
            .map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(header.as_deref(), Some(allow), "{method} {path}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], "405 METHOD_NOT_ALLOWED");
    }
    let r = app
        .client
        .post(format!("{}/actuator/health", app.management))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "GET,HEAD");
}
