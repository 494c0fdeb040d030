//! Management port, rate limiting, graceful shutdown and the binary's start-up behaviour
//! (REFERENCE §1.16, §4; issue scope items 2 and 7).

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Stub, TestApp};
use serde_json::{Value, json};

#[tokio::test]
async fn health_endpoints_answer_as_spring_actuator() {
    let app = TestApp::spawn().await;
    let get = |path: &str| app.client.get(format!("{}{path}", app.management)).send();
    let r = get("/actuator/health").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"],
        "application/vnd.spring-boot.actuator.v3+json"
    );
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"status":"UP","groups":["liveness","readiness"]})
    );
    for path in ["/actuator/health/liveness", "/actuator/health/readiness"] {
        let r = get(path).await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.json::<Value>().await.unwrap(), json!({"status":"UP"}));
    }
    // A client that asks for plain JSON gets it, as from Spring's content negotiation.
    for (accept, expected) in [
        ("application/json", "application/json"),
        ("*/*", "application/vnd.spring-boot.actuator.v3+json"),
        (
            "application/vnd.spring-boot.actuator.v3+json, application/json",
            "application/vnd.spring-boot.actuator.v3+json",
        ),
    ] {
        let r = app
            .client
            .get(format!("{}/actuator/health/readiness", app.management))
            .header("accept", accept)
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["content-type"], expected, "Accept: {accept}");
    }
    let links: Value = get("/actuator").await.unwrap().json().await.unwrap();
    assert!(
        links["_links"]["prometheus"]["href"]
            .as_str()
            .unwrap()
            .ends_with("/actuator/prometheus")
    );
    // The API is not served on the management port.
    assert_eq!(get("/v1/functions").await.unwrap().status(), 404);
    let r = app
        .client
        .get(format!("{}/modules/build-metadata", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"module":"build-metadata","status":"enabled"})
    );
}

#[tokio::test]
async fn the_scrape_is_prometheus_text_with_the_java_names() {
    let app = TestApp::spawn().await;
    app.local("echo").await;
    let r = app
        .client
        .get(format!("{}/actuator/prometheus", app.management))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let before = r.text().await.unwrap();
    assert!(
        !before.contains("function=\"echo\""),
        "no meters before the first invocation"
    );
    app.invoke("echo", json!({"input": 1})).await;
    let text = app.scrape().await;
    for name in [
        "function_enqueue_total",
        "function_dispatch_total",
        "function_success_total",
        "function_error_total",
        "function_retry_total",
        "function_timeout_total",
        "function_queue_rejected_total",
        "function_cold_start_total",
        "function_warm_start_total",
        "function_latency_ms_seconds_count",
        "function_latency_ms_seconds_sum",
        "function_latency_ms_seconds_max",
        "function_queue_wait_ms_seconds_count",
        "function_e2e_latency_ms_seconds_count",
    ] {
        assert!(
            app.metric(name, "echo").await.is_some(),
            "{name} missing:\n{text}"
        );
    }
    assert!(text.contains("# TYPE function_dispatch_total counter"));
    assert!(text.contains("# TYPE function_latency_ms_seconds summary"));
    assert!(text.contains("function_latency_ms_seconds{function=\"echo\",quantile=\"0.99\"}"));
    // Every non-comment line is `name{labels} value` or `name value`.
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').unwrap();
        assert!(value.parse::<f64>().is_ok() || value == "+Inf", "{line}");
        let name = series.split('{').next().unwrap();
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "{line}"
        );
    }
}

#[tokio::test]
async fn the_rate_limit_applies_to_invoke_and_enqueue_only() {
    let app = TestApp::with_env(&[("NANOFAAS_RATE_MAX_PER_SECOND", "2")]).await;
    app.local("echo").await;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(
            app.invoke("echo", json!({"input": 1}))
                .await
                .status()
                .as_u16(),
        );
    }
    let ok = statuses.iter().filter(|s| **s == 200).count();
    // Six quick calls span at most two one-second windows.
    assert!((2..=4).contains(&ok), "{statuses:?}");
    let r = app.invoke("echo", json!({"input": 1})).await;
    if r.status() == 429 {
        assert_eq!(r.headers()["retry-after"], "1");
        let b: Value = r.json().await.unwrap();
        assert_eq!(b["error"], "RATE_LIMITED");
    }
    // Registration and callbacks are never limited.
    for i in 0..5 {
        app.local(&format!("f{i}")).await;
        assert_eq!(app.callback("x", None, json!({})).await, 204);
    }
    let zero = TestApp::with_env(&[("NANOFAAS_RATE_MAX_PER_SECOND", "0")]).await;
    zero.local("echo").await;
    let r = zero.invoke("echo", json!({"input": 1})).await;
    assert_eq!(r.status(), 429);
    // The limit is checked before the function lookup.
    assert_eq!(
        zero.invoke("ghost", json!({"input": 1})).await.status(),
        429
    );
}

#[tokio::test]
async fn a_store_full_of_running_executions_refuses_new_work_with_503() {
    // The store's global cap, with no per-function share (tests/execution_store.rs covers it).
    let app = TestApp::with_env(&[
        ("NANOFAAS_EXECUTION_STORE_MAX_ENTRIES", "2"),
        ("NANOFAAS_EXECUTION_STORE_FUNCTION_SHARE_PERCENT", "100"),
    ])
    .await;
    let stub = Stub::start(&app.base).await;
    app.pool("f", &stub.url("/slow/400"), json!({})).await;
    let running = [
        app.spawn_invoke("f", &[], json!({"input": 1})),
        app.spawn_invoke("f", &[], json!({"input": 2})),
    ];
    while stub.requests().len() < 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let r = app.invoke("f", json!({"input": 3})).await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "OVERLOADED");
    // Nothing running was dropped, and once they finish there is room again.
    for call in running {
        assert_eq!(call.await.unwrap().0, 200);
    }
    assert_eq!(app.invoke("f", json!({"input": 4})).await.status(), 200);
}

#[tokio::test]
async fn shutdown_lets_in_flight_invocations_finish_and_stops_accepting() {
    let mut app = TestApp::spawn().await;
    let stub = Stub::start(&app.base).await;
    app.pool("f", &stub.url("/slow/300"), json!({})).await;
    let in_flight = app.spawn_invoke("f", &[], json!({"input": 1}));
    while stub.requests().is_empty() {
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let server = app.begin_shutdown();
    // While draining: not ready, and new connections to the API are refused.
    let ready = app
        .client
        .get(format!("{}/actuator/health/readiness", app.management))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    assert_eq!(
        ready.json::<Value>().await.unwrap(),
        json!({"status":"OUT_OF_SERVICE"})
    );

    let (status, body) = in_flight.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(body["output"], json!({"slow": 300}));
    assert!(server.await.unwrap().is_ok());
    let fresh = reqwest::Client::builder().no_proxy().build().unwrap();
    assert!(
        fresh
            .get(format!("{}/v1/functions", app.base))
            .send()
            .await
            .is_err()
    );
}

fn binary() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nanofaas-control-plane"));
    cmd.env_clear()
        .env("SERVER_PORT", "0")
        .env("MANAGEMENT_SERVER_PORT", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

#[test]
fn an_invalid_setting_stops_start_up_naming_the_variable_and_value() {
    let out = binary()
        .env("NANOFAAS_DEFAULTS_TIMEOUT_MS", "thirty")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("NANOFAAS_DEFAULTS_TIMEOUT_MS"), "{stderr}");
    assert!(stderr.contains("thirty"), "{stderr}");
}

/// Found by fuzzing (fuzz/corpus/config/huge_grace.env): a grace period no deadline can hold was
/// accepted, and the process panicked when told to stop. Now it does not start.
#[test]
fn a_grace_period_past_any_deadline_stops_start_up() {
    use std::io::{BufRead, BufReader};
    let mut child = binary()
        .env("NANOFAAS_SHUTDOWN_GRACE_PERIOD", "PT18446744073709551615S")
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // Had it started, stopping it shows what the grace period does.
    if lines
        .by_ref()
        .map_while(Result::ok)
        .any(|line| line.contains("control plane ready"))
    {
        let pid = child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
    }
    // Read to the end so that its logging never meets a closed pipe.
    lines.for_each(drop);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("NANOFAAS_SHUTDOWN_GRACE_PERIOD"),
        "{stderr}"
    );
}

#[test]
fn sigterm_exits_zero() {
    use std::io::{BufRead, BufReader};
    let mut child = binary().spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    loop {
        let line = lines.next().expect("binary printed nothing").unwrap();
        if line.contains("control plane ready") {
            break;
        }
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert_eq!(exit.code(), Some(0));
}
