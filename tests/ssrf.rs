//! SSRF defaults through the HTTP surface: link-local and cloud-metadata addresses are refused at
//! registration (IP literals) and where the connection is made (names, after resolution) unless
//! `NANOFAAS_SSRF_ALLOWED_CIDRS` allows them; loopback stays reachable; credentials in an
//! `endpointUrl` are used but never echoed or logged.
//!
//! A listener on a refused address cannot be bound here, so names are pinned to addresses with
//! the client's resolve overrides, which pass through the same policy filter as DNS answers.

mod common;

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::{Stub, TestApp};
use nanofaas_control_plane::config::Config;
use serde_json::{Value, json};
use tracing_subscriber::fmt::MakeWriter;

const REFUSAL: &str = "refused unless NANOFAAS_SSRF_ALLOWED_CIDRS allows";

async fn app_with(env: &[(&str, &str)], pins: &[(&str, &[&str])]) -> TestApp {
    let mut vars: HashMap<String, String> = HashMap::from([
        ("SERVER_PORT".into(), "0".into()),
        ("MANAGEMENT_SERVER_PORT".into(), "0".into()),
        ("NANOFAAS_SHUTDOWN_GRACE_PERIOD".into(), "5s".into()),
    ]);
    for (k, v) in env {
        vars.insert((*k).to_owned(), (*v).to_owned());
    }
    let mut config = Config::from_lookup(|k| vars.get(k).cloned()).expect("valid test config");
    config.http_client.resolve_overrides = pins
        .iter()
        .map(|(name, addrs)| {
            let addrs = addrs.iter().map(|a| a.parse().unwrap()).collect();
            ((*name).to_owned(), addrs)
        })
        .collect();
    TestApp::with_config(config).await
}

fn pool_spec(name: &str, url: &str) -> Value {
    json!({"name": name, "image": "img", "executionMode": "POOL", "endpointUrl": url,
           "maxRetries": 0})
}

/// `:invoke`: the status, the execution id and the JSON answer.
async fn invoke(app: &TestApp, name: &str) -> (u16, String, Value) {
    let r = app.invoke(name, json!({"input": {"x": 1}})).await;
    let status = r.status().as_u16();
    let id = r.headers()["X-Execution-Id"].to_str().unwrap().to_owned();
    (status, id, r.json().await.unwrap())
}

#[tokio::test]
async fn link_local_and_metadata_literals_are_refused_at_registration() {
    let app = TestApp::spawn().await;
    for (url, shown) in [
        (
            "http://169.254.169.254/latest/meta-data/",
            "169.254.169.254",
        ),
        ("http://0xa9.0xfe.0xa9.0xfe/", "169.254.169.254"),
        ("http://[fe80::1]:8080/invoke", "fe80::1"),
        ("http://[fd00:ec2::254]/", "fd00:ec2::254"),
        ("http://[::ffff:169.254.169.254]/", "::ffff:169.254.169.254"),
    ] {
        let r = app.register(pool_spec("f", url)).await;
        assert_eq!(r.status(), 400, "{url}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], "VALIDATION_ERROR", "{url}: {body}");
        assert_eq!(
            body["details"],
            json!([format!(
                "endpointUrl: {shown} is a link-local or cloud-metadata address, {REFUSAL} it"
            )]),
            "{url}"
        );
    }
    let (_, list) = app.get_json("/v1/functions").await;
    assert_eq!(list, json!([]));
}

#[tokio::test]
async fn a_name_that_resolves_to_a_metadata_address_fails_at_dispatch_without_connecting() {
    let app = app_with(&[], &[("metadata.test", &["169.254.169.254"])]).await;
    // A name is not resolved at registration: it may point elsewhere by the time it is called.
    app.register_ok(pool_spec("f", "http://metadata.test/latest/meta-data/"))
        .await;

    let started = Instant::now();
    let (status, id, body) = invoke(&app, "f").await;
    assert_eq!(status, 200, "function errors stay 200");
    assert_eq!(body["status"], "error");
    assert_eq!(
        body["error"],
        json!({"code": "POOL_ERROR", "message": format!(
            "host 'metadata.test' resolves only to link-local or cloud-metadata addresses \
             (169.254.169.254), {REFUSAL} them"
        )})
    );
    // Refused in the resolver: no connect attempt, so no connect timeout (5 s) to wait for.
    assert!(started.elapsed() < Duration::from_secs(5));
    let (_, exec) = app.execution(&id).await;
    assert_eq!(exec["status"], "error");
    assert_eq!(exec["error"]["code"], "POOL_ERROR");
}

#[tokio::test]
async fn refused_answers_are_dropped_and_loopback_stays_reachable() {
    let app = app_with(&[], &[("mixed.test", &["169.254.1.1", "127.0.0.1"])]).await;
    let stub = Stub::start(&app.base).await;
    let url = format!("http://mixed.test:{}/reply", stub.addr.port());
    app.register_ok(pool_spec("f", &url)).await;
    let (status, _, body) = invoke(&app, "f").await;
    assert_eq!(
        (status, &body["status"]),
        (200, &json!("success")),
        "{body}"
    );
    assert_eq!(body["output"], json!({"echo": {"x": 1}}));
    assert_eq!(stub.requests().len(), 1);
}

#[tokio::test]
async fn loopback_by_name_goes_through_the_system_resolver() {
    // No override: `localhost` is answered by hickory (hosts file / built-in), then filtered.
    let app = TestApp::spawn().await;
    let stub = Stub::start(&app.base).await;
    let url = format!("http://localhost:{}/reply", stub.addr.port());
    app.register_ok(pool_spec("f", &url)).await;
    let (status, _, body) = invoke(&app, "f").await;
    assert_eq!(
        (status, &body["status"]),
        (200, &json!("success")),
        "{body}"
    );
    assert_eq!(stub.requests().len(), 1);
}

#[tokio::test]
async fn an_allowed_cidr_lifts_the_refusal() {
    // fe80::1 without a scope cannot be connected to, so "allowed" shows as a connect error
    // (or a timeout) rather than the policy's refusal, and no packet leaves the machine.
    let env = [
        ("NANOFAAS_SSRF_ALLOWED_CIDRS", "fe80::/10, 169.254.169.254"),
        ("NANOFAAS_HTTP_CLIENT_CONNECT_TIMEOUT_MS", "500"),
    ];
    let app = app_with(&env, &[("link-local.test", &["fe80::1"])]).await;
    app.register_ok(pool_spec("literal", "http://169.254.169.254/"))
        .await;
    app.register_ok(
        json!({"name": "named", "image": "img", "executionMode": "POOL",
            "endpointUrl": "http://link-local.test/", "maxRetries": 0, "timeoutMs": 1000}),
    )
    .await;
    let (_, _, body) = invoke(&app, "named").await;
    assert_eq!(body["status"], "error");
    let code = body["error"]["code"].as_str().unwrap();
    assert!(code == "POOL_ERROR" || code == "POOL_TIMEOUT", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(!message.contains(REFUSAL), "{message}");

    // Allowing one network leaves the rest refused.
    let r = app
        .register(pool_spec("other", "http://169.254.170.2/"))
        .await;
    assert_eq!(r.status(), 400);
}

/// Everything the process logs, at every level, from the moment the first test asks for it.
fn captured_logs() -> &'static Captured {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Captured::default();
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(logs.clone())
            .try_init();
        logs
    })
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

#[tokio::test]
async fn endpoint_credentials_are_used_but_never_echoed_or_logged() {
    let logs = captured_logs();
    let app = TestApp::spawn().await;
    let stub = Stub::start(&app.base).await;
    let port = stub.addr.port();
    let url = format!("http://alice:s3cret@127.0.0.1:{port}/reply");
    let masked = format!("http://***:***@127.0.0.1:{port}/reply");

    let registered = app.register_ok(pool_spec("f", &url)).await;
    assert_eq!(registered["endpointUrl"], masked.as_str());
    let (_, list) = app.get_json("/v1/functions").await;
    assert_eq!(list[0]["endpointUrl"], masked.as_str());
    let (_, one) = app.get_json("/v1/functions/f").await;
    assert_eq!(one["endpointUrl"], masked.as_str());

    // The runtime still gets them, as HTTP basic authentication.
    let (_, _, body) = invoke(&app, "f").await;
    assert_eq!(body["status"], "success", "{body}");
    let sent = stub.requests();
    assert_eq!(sent[0].headers["authorization"], "Basic YWxpY2U6czNjcmV0");

    // A failing call: its error message quotes the URL, without the credentials.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    app.register_ok(pool_spec(
        "down",
        &format!("http://alice:s3cret@127.0.0.1:{closed_port}/"),
    ))
    .await;
    let (_, id, body) = invoke(&app, "down").await;
    assert_eq!(body["error"]["code"], "POOL_ERROR");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("127.0.0.1:{closed_port}")),
        "{message}"
    );
    let record = app.execution_text(&id).await;

    let logs = logs.text();
    assert!(logs.contains("function registered"), "logs are captured");
    for (what, text) in [("error", message), ("execution", &record), ("logs", &logs)] {
        for secret in ["alice", "s3cret", "YWxpY2U6czNjcmV0"] {
            assert!(!text.contains(secret), "{what} shows {secret}: {text}");
        }
    }
}
