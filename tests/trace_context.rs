//! W3C trace context (issue 11, docs/tracing.md), end to end: what the stub runtime receives on
//! `:invoke` and `:enqueue`, across retries, with and without the caller's headers; `X-Trace-Id`
//! exactly as before; the trace id in the log lines of a request.

mod common;

use common::{Received, Stub, TestApp, enqueue, eventually, status_of};
use serde_json::{Value, json};

const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn header(r: &Received, name: &str) -> Option<String> {
    r.headers.get(name).map(|v| v.to_str().unwrap().to_owned())
}

/// A version-00 traceparent with non-zero ids, lower-case hex, sampled.
fn is_new_valid_traceparent(tp: &str) -> bool {
    let parts: Vec<&str> = tp.split('-').collect();
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            && s.bytes().any(|b| b != b'0')
    };
    parts.len() == 4
        && parts[0] == "00"
        && hex(parts[1], 32)
        && hex(parts[2], 16)
        && parts[3] == "01"
}

/// The requests the stub got for one execution, in arrival order.
fn attempts_of(stub: &Stub, id: &str) -> Vec<Received> {
    stub.requests()
        .into_iter()
        .filter(|r| header(r, "X-Execution-Id").as_deref() == Some(id))
        .collect()
}

#[tokio::test]
async fn the_runtime_gets_the_callers_trace_context_on_invoke() {
    let app = TestApp::spawn().await;
    let stub = Stub::start(&app.base).await;
    app.pool("f", &stub.url("/reply"), json!({})).await;
    let r = app
        .invoke_request("f")
        .header("traceparent", PARENT)
        .header("tracestate", "rojo=00f067aa0ba902b7, congo=t61rcWkgMzE")
        .json(&json!({"input": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let id = r.headers()["X-Execution-Id"].to_str().unwrap().to_owned();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["output"], json!({"echo": 1}));
    let got = attempts_of(&stub, &id);
    assert_eq!(got.len(), 1);
    assert_eq!(header(&got[0], "traceparent").as_deref(), Some(PARENT));
    assert_eq!(
        header(&got[0], "tracestate").as_deref(),
        Some("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE")
    );
    // X-Trace-Id is still sent only when the caller sent one.
    assert_eq!(header(&got[0], "X-Trace-Id"), None);
}

#[tokio::test]
async fn without_a_valid_traceparent_each_invocation_starts_its_own_trace() {
    let app = TestApp::spawn().await;
    let stub = Stub::start(&app.base).await;
    app.pool("f", &stub.url("/reply"), json!({})).await;
    let mut seen = Vec::new();
    // None; an invalid one (ignored, with its tracestate, never a 400); one sent twice.
    let cases: [&[(&str, &str)]; 3] = [
        &[],
        &[
            ("traceparent", "00-NOT-A-VALID-TRACEPARENT-01"),
            ("tracestate", "a=b"),
        ],
        &[("traceparent", PARENT), ("traceparent", PARENT)],
    ];
    for headers in cases {
        let mut request = app.invoke_request("f").json(&json!({"input": "x"}));
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let r = request.send().await.unwrap();
        assert_eq!(r.status(), 200, "{headers:?}");
        let id = r.headers()["X-Execution-Id"].to_str().unwrap().to_owned();
        let got = attempts_of(&stub, &id);
        let tp = header(&got[0], "traceparent").expect("a traceparent is always sent");
        assert!(is_new_valid_traceparent(&tp), "{tp}");
        assert_ne!(tp, PARENT);
        assert_eq!(header(&got[0], "tracestate"), None);
        seen.push(tp);
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 3, "every new trace is its own");
}

#[tokio::test]
async fn x_trace_id_is_forwarded_as_before_and_names_a_new_trace() {
    let app = TestApp::spawn().await;
    let stub = Stub::start(&app.base).await;
    app.pool("f", &stub.url("/reply"), json!({})).await;
    let stub = &stub;
    let send = |x_trace_id: &'static str, traceparent: Option<&'static str>| {
        let mut request = app
            .invoke_request("f")
            .header("X-Trace-Id", x_trace_id)
            .json(&json!({"input": 1}));
        if let Some(tp) = traceparent {
            request = request.header("traceparent", tp);
        }
        async move {
            let r = request.send().await.unwrap();
            assert_eq!(r.status(), 200);
            let id = r.headers()["X-Execution-Id"].to_str().unwrap().to_owned();
            attempts_of(stub, &id).remove(0)
        }
    };
    // A W3C-shaped X-Trace-Id (32 hex digits or a UUID) is the new trace's id.
    let got = send("0F8FAD5B-D9CB-469F-A165-70867728950E", None).await;
    assert_eq!(
        header(&got, "X-Trace-Id").as_deref(),
        Some("0F8FAD5B-D9CB-469F-A165-70867728950E")
    );
    let tp = header(&got, "traceparent").unwrap();
    assert!(is_new_valid_traceparent(&tp));
    assert_eq!(&tp[3..35], "0f8fad5bd9cb469fa16570867728950e");
    // Any other X-Trace-Id is forwarded unchanged beside a random trace.
    let got = send("my-trace-7", None).await;
    assert_eq!(header(&got, "X-Trace-Id").as_deref(), Some("my-trace-7"));
    assert!(is_new_valid_traceparent(
        &header(&got, "traceparent").unwrap()
    ));
    // A valid traceparent wins; X-Trace-Id still goes as given.
    let got = send("0f8fad5bd9cb469fa16570867728950e", Some(PARENT)).await;
    assert_eq!(header(&got, "traceparent").as_deref(), Some(PARENT));
    assert_eq!(
        header(&got, "X-Trace-Id").as_deref(),
        Some("0f8fad5bd9cb469fa16570867728950e")
    );
}

#[tokio::test]
async fn every_retry_carries_the_same_trace_context() {
    let app = TestApp::with_env(&[("NANOFAAS_ASYNC_QUEUE_ENABLED", "true")]).await;
    let stub = Stub::start(&app.base).await;
    app.pool("flaky", &stub.url("/flaky"), json!({"maxRetries": 3}))
        .await;
    // Sync, through the function's queue: attempt 1 fails, attempt 2 succeeds.
    let r = app
        .invoke_request("flaky")
        .header("traceparent", PARENT)
        .header("tracestate", "k=v")
        .json(&json!({"input": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let id = r.headers()["X-Execution-Id"].to_str().unwrap().to_owned();
    let got = attempts_of(&stub, &id);
    assert_eq!(got.len(), 2);
    for attempt in &got {
        assert_eq!(header(attempt, "traceparent").as_deref(), Some(PARENT));
        assert_eq!(header(attempt, "tracestate").as_deref(), Some("k=v"));
    }
    // Async, without a traceparent: the one started at :enqueue is sent with both attempts.
    let r = enqueue(&app, "flaky", json!({"input": 2})).await;
    assert_eq!(r.status(), 202);
    let id = r.json::<Value>().await.unwrap()["executionId"]
        .as_str()
        .unwrap()
        .to_owned();
    eventually("the enqueued execution succeeds", || async {
        status_of(&app, &id).await == "success"
    })
    .await;
    let got = attempts_of(&stub, &id);
    assert_eq!(got.len(), 2);
    let first = header(&got[0], "traceparent").unwrap();
    assert!(is_new_valid_traceparent(&first));
    assert_eq!(
        header(&got[1], "traceparent").as_deref(),
        Some(first.as_str())
    );
    assert_eq!(
        (
            header(&got[0], "X-Dispatch-Attempt"),
            header(&got[1], "X-Dispatch-Attempt")
        ),
        (Some("1".to_owned()), Some("2".to_owned()))
    );
}

#[tokio::test]
async fn answers_are_unchanged_by_trace_headers() {
    let app = TestApp::spawn().await;
    app.local("echo").await;
    let plain = app.invoke("echo", json!({"input": {"a": 1}})).await;
    let traced = app
        .invoke_request("echo")
        .header("traceparent", PARENT)
        .header("tracestate", "k=v")
        .json(&json!({"input": {"a": 1}}))
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), traced.status());
    let names = |r: &reqwest::Response| {
        let mut n: Vec<String> = r.headers().keys().map(|k| k.to_string()).collect();
        n.sort();
        n
    };
    assert_eq!(names(&plain), names(&traced));
    let strip = |mut v: Value| {
        v["executionId"] = Value::Null;
        v
    };
    assert_eq!(
        strip(plain.json().await.unwrap()),
        strip(traced.json().await.unwrap())
    );
    // An invalid traceparent is not a client error.
    let r = app
        .invoke_request("echo")
        .header("traceparent", "garbage")
        .json(&json!({"input": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// Log lines of this test binary, captured by a subscriber installed once.
fn captured_logs() -> &'static std::sync::Mutex<Vec<u8>> {
    static LOGS: std::sync::OnceLock<std::sync::Mutex<Vec<u8>>> = std::sync::OnceLock::new();
    static INSTALL: std::sync::Once = std::sync::Once::new();
    let logs = LOGS.get_or_init(Default::default);
    INSTALL.call_once(|| {
        struct Sink;
        impl std::io::Write for Sink {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                captured_logs().lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let _ = tracing_subscriber::fmt()
            .with_env_filter("nanofaas_control_plane=debug,tower_http=debug")
            .with_ansi(false)
            .event_format(nanofaas_control_plane::support::log_format::LineFormat::default())
            .with_writer(|| Sink)
            .try_init();
    });
    logs
}

#[tokio::test]
async fn the_trace_id_is_in_every_log_line_of_the_request_and_the_execution() {
    let logs = captured_logs();
    let app = TestApp::with_env(&[
        ("NANOFAAS_ASYNC_QUEUE_ENABLED", "true"),
        ("NANOFAAS_WEBHOOK_MAX_ATTEMPTS", "1"),
    ])
    .await;
    let stub = Stub::start(&app.base).await;
    app.pool("logged", &stub.url("/flaky"), json!({"maxRetries": 2}))
        .await;
    let dead = common::dead_address().await;
    let r = app
        .client
        .post(format!("{}/v1/functions/logged:enqueue", app.base))
        .header("traceparent", PARENT)
        .header("X-Callback-Url", format!("http://{dead}/hook"))
        .json(&json!({"input": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let id = r.json::<Value>().await.unwrap()["executionId"]
        .as_str()
        .unwrap()
        .to_owned();
    // The webhook's only attempt fails (nothing listens): it is dropped, and says so.
    eventually("the webhook is dropped", || async {
        String::from_utf8_lossy(&logs.lock().unwrap())
            .lines()
            .any(|l| l.contains(&id) && l.contains("result webhook dropped after its last attempt"))
    })
    .await;
    let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    let trace = "trace_id=4bf92f3577b34da6a3ce929d0e0e4736";
    let request: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("/v1/functions/logged:enqueue"))
        .collect();
    let execution: Vec<&str> = text.lines().filter(|l| l.contains(&id)).collect();
    assert!(
        request
            .iter()
            .any(|l| l.contains("finished processing request")),
        "{request:#?}"
    );
    assert!(!execution.is_empty());
    for line in request.iter().chain(&execution) {
        assert!(line.contains(trace), "no trace id in: {line}");
    }
}
