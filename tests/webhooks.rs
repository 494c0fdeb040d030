//! Result webhooks of `:enqueue` (issue 11, docs/webhooks.md) through the real HTTP surface: a
//! stub runtime and a stub webhook receiver on port 0. Delivery on success, error and timeout
//! and from a runtime callback; signatures checked by an independent implementation (Python's
//! `hmac`); a receiver that is down, then up; URLs refused by the outbound rules. Runs on the
//! nats backend too (NANOFAAS_TEST_STATE_BACKEND=nats, scripts/test.sh).

mod common;

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use common::receiver::{Hook, Receiver};
use common::{Stub, TestApp, eventually, metric_value};
use nanofaas_control_plane::config::Config;
use serde_json::{Value, json};

/// `:enqueue` with `X-Callback-Url` (and extra headers): the status and the JSON answer.
async fn enqueue_with(
    app: &TestApp,
    name: &str,
    callback: &str,
    headers: &[(&str, &str)],
) -> (u16, Value) {
    let mut request = app
        .client
        .post(format!("{}/v1/functions/{name}:enqueue", app.base))
        .header("X-Callback-Url", callback)
        .json(&json!({"input": {"n": name}}));
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let r = request.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn enqueue_ok(app: &TestApp, name: &str, callback: &str) -> String {
    let (status, body) = enqueue_with(app, name, callback, &[]).await;
    assert_eq!(status, 202, "{body}");
    body["executionId"].as_str().unwrap().to_owned()
}

async fn webhook_metric(app: &TestApp, series: &str) -> Option<f64> {
    let scrape = app.scrape().await;
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{series} ")))
        .and_then(|v| v.parse().ok())
}

fn async_app_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("NANOFAAS_ASYNC_QUEUE_ENABLED", "true"),
        ("NANOFAAS_WEBHOOK_BACKOFF_INITIAL", "20ms"),
        ("NANOFAAS_WEBHOOK_BACKOFF_MAX", "100ms"),
        ("NANOFAAS_WEBHOOK_MAX_ATTEMPTS", "100"),
    ]
}

#[tokio::test]
async fn results_are_posted_on_success_error_timeout_and_callback() {
    let app = TestApp::with_env(&async_app_env()).await;
    let stub = Stub::start(&app.base).await;
    let receiver = Receiver::start().await;
    app.pool("ok", &stub.url("/reply"), json!({})).await;
    app.pool("bad", &stub.url("/fail"), json!({"maxRetries": 2}))
        .await;
    app.pool(
        "slow",
        &stub.url("/hang"),
        json!({"timeoutMs": 300, "maxRetries": 1}),
    )
    .await;
    app.pool("cb", &stub.url("/callback-first"), json!({}))
        .await;
    let mut ids = HashMap::new();
    for name in ["ok", "bad", "slow", "cb"] {
        let id = enqueue_ok(&app, name, &receiver.url(&format!("/hook/{name}"))).await;
        ids.insert(name, id);
    }
    let hooks = receiver.wait_for(4).await;
    let by_path: HashMap<&str, &Hook> = hooks.iter().map(|h| (h.path.as_str(), h)).collect();
    assert_eq!(by_path.len(), 4, "one delivery per execution: {hooks:#?}");
    let expect = [
        ("ok", "success", None),
        ("bad", "error", Some("POOL_ERROR")),
        ("slow", "error", Some("POOL_TIMEOUT")),
        ("cb", "success", None),
    ];
    for (name, status, code) in expect {
        let hook = by_path[format!("/hook/{name}").as_str()];
        let id = &ids[name];
        // The body is the execution's status, as GET /v1/executions/{id} answers it.
        let (get_status, get_body) = app.execution(id).await;
        assert_eq!(get_status, 200);
        assert_eq!(hook.json(), get_body, "{name}");
        assert_eq!(hook.json()["status"], status, "{name}");
        assert_eq!(hook.json()["error"]["code"].as_str(), code, "{name}");
        assert_eq!(hook.header("content-type"), "application/json");
        assert_eq!(hook.header("x-execution-id"), id);
        assert_eq!(hook.header("x-function-name"), name);
        assert_eq!(hook.header("x-function-status"), status);
        assert_eq!(hook.header("webhook-id"), id);
        let timestamp: i64 = hook.header("webhook-timestamp").parse().unwrap();
        assert!((timestamp - chrono_now()).abs() < 60);
        // Unsigned without NANOFAAS_WEBHOOK_SECRET.
        assert!(hook.headers.get("webhook-signature").is_none());
        let seconds: f64 = hook.header("x-duration-seconds").parse().unwrap();
        assert!(seconds >= 0.0, "{name}: {seconds}");
        if name == "slow" {
            // The last attempt ran into its 300 ms timeout.
            assert!(seconds >= 0.29, "{seconds}");
        }
        assert!(hook.header("traceparent").starts_with("00-"));
    }
    assert_eq!(
        by_path["/hook/ok"].json()["output"],
        json!({"echo": {"n": "ok"}})
    );
    assert_eq!(by_path["/hook/cb"].json()["output"], "from-callback");
    assert_eq!(
        webhook_metric(
            &app,
            "controlplane_webhook_deliveries_total{outcome=\"delivered\"}"
        )
        .await,
        Some(4.0)
    );
    assert_eq!(
        webhook_metric(&app, "controlplane_webhook_attempts_total").await,
        Some(4.0)
    );
    assert_eq!(
        webhook_metric(&app, "controlplane_webhook_pending").await,
        Some(0.0)
    );
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The signature Python's `hmac` computes for a delivery (Standard Webhooks: the key is the
/// base64 after `whsec_`, or the secret's own bytes).
fn python_signature(secret: &str, id: &str, timestamp: &str, body: &[u8]) -> String {
    use std::io::Write as _;
    let script = r#"
import base64, hashlib, hmac, sys
secret, msg_id, ts = sys.argv[1:4]
key = base64.b64decode(secret[len("whsec_"):]) if secret.startswith("whsec_") else secret.encode()
body = sys.stdin.buffer.read()
mac = hmac.new(key, msg_id.encode() + b"." + ts.encode() + b"." + body, hashlib.sha256).digest()
print("v1," + base64.b64encode(mac).decode())
"#;
    let mut child = std::process::Command::new("python3")
        .args(["-c", script, secret, id, timestamp])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 is needed to check signatures independently");
    child.stdin.take().unwrap().write_all(body).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[tokio::test]
async fn signatures_verify_with_pythons_hmac() {
    for secret in [
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "a plain shared secret",
    ] {
        let mut env = async_app_env();
        env.push(("NANOFAAS_WEBHOOK_SECRET", secret));
        let app = TestApp::with_env(&env).await;
        let stub = Stub::start(&app.base).await;
        let receiver = Receiver::start().await;
        // The first attempt is answered 503: each attempt is signed at its own time.
        receiver.fail_first.store(1, Ordering::SeqCst);
        app.pool("f", &stub.url("/reply"), json!({})).await;
        let id = enqueue_ok(&app, "f", &receiver.url("/hook")).await;
        let hooks = receiver.wait_for(2).await;
        for hook in &hooks {
            assert_eq!(hook.header("webhook-id"), id);
            let expected = python_signature(
                secret,
                hook.header("webhook-id"),
                hook.header("webhook-timestamp"),
                &hook.body,
            );
            assert_eq!(hook.header("webhook-signature"), expected, "{secret}");
        }
        // A body changed by one byte no longer verifies.
        let mut tampered = hooks[1].body.to_vec();
        tampered[0] = b' ';
        assert_ne!(
            python_signature(secret, &id, hooks[1].header("webhook-timestamp"), &tampered),
            hooks[1].header("webhook-signature")
        );
    }
}

#[tokio::test]
async fn a_receiver_that_is_down_gets_the_result_once_it_is_up() {
    let app = TestApp::with_env(&async_app_env()).await;
    let stub = Stub::start(&app.base).await;
    app.pool("f", &stub.url("/reply"), json!({})).await;
    // Nothing listens on this port yet.
    let addr = common::dead_address().await;
    let id = enqueue_ok(&app, "f", &format!("http://{addr}/hook")).await;
    eventually(
        "delivery attempts fail while the receiver is down",
        || async {
            webhook_metric(&app, "controlplane_webhook_attempts_total")
                .await
                .is_some_and(|n| n >= 3.0)
        },
    )
    .await;
    assert_eq!(
        webhook_metric(&app, "controlplane_webhook_pending").await,
        Some(1.0)
    );
    let receiver = Receiver::serve(tokio::net::TcpListener::bind(addr).await.unwrap());
    let hooks = receiver.wait_for(1).await;
    assert_eq!(hooks[0].header("webhook-id"), id);
    assert_eq!(hooks[0].json()["status"], "success");
    eventually("counted as delivered", || async {
        webhook_metric(
            &app,
            "controlplane_webhook_deliveries_total{outcome=\"delivered\"}",
        )
        .await
            == Some(1.0)
    })
    .await;
    assert_eq!(
        webhook_metric(&app, "controlplane_webhook_pending").await,
        Some(0.0)
    );
}

#[tokio::test]
async fn a_receiver_that_never_answers_2xx_is_given_up_and_counted() {
    let mut env = async_app_env();
    env.retain(|(k, _)| *k != "NANOFAAS_WEBHOOK_MAX_ATTEMPTS");
    env.push(("NANOFAAS_WEBHOOK_MAX_ATTEMPTS", "3"));
    let app = TestApp::with_env(&env).await;
    let stub = Stub::start(&app.base).await;
    let receiver = Receiver::start().await;
    receiver.fail_first.store(usize::MAX, Ordering::SeqCst);
    app.pool("f", &stub.url("/reply"), json!({})).await;
    let id = enqueue_ok(&app, "f", &receiver.url("/hook")).await;
    eventually("dropped after three attempts", || async {
        webhook_metric(
            &app,
            "controlplane_webhook_deliveries_total{outcome=\"dropped\"}",
        )
        .await
            == Some(1.0)
    })
    .await;
    let hooks = receiver.hooks();
    assert_eq!(hooks.len(), 3);
    assert!(hooks.iter().all(|h| h.header("webhook-id") == id));
    assert_eq!(
        webhook_metric(&app, "controlplane_webhook_pending").await,
        Some(0.0)
    );
}

#[tokio::test]
async fn refused_callback_urls_are_a_400_and_enqueue_nothing() {
    let app = TestApp::with_env(&async_app_env()).await;
    let stub = Stub::start(&app.base).await;
    app.pool("f", &stub.url("/reply"), json!({})).await;
    let long = format!("http://example.com/{}", "a".repeat(2100));
    let cases: Vec<(&str, String)> = vec![
        (
            "cloud metadata",
            "http://169.254.169.254/latest/meta-data".into(),
        ),
        ("metadata over IPv6", "http://[fd00:ec2::254]/".into()),
        (
            "link-local, hex spelling",
            "http://0xa9.0xfe.0xa9.0xfe/".into(),
        ),
        ("not http", "ftp://example.com/x".into()),
        ("relative", "/hook".into()),
        ("not a URL", "not a url".into()),
        ("too long", long),
    ];
    for (what, url) in &cases {
        let (status, body) = enqueue_with(&app, "f", url, &[]).await;
        assert_eq!(status, 400, "{what}: {body}");
        assert_eq!(body["error"], "BAD_REQUEST", "{what}");
        let message = body["message"].as_str().unwrap();
        assert!(message.starts_with("X-Callback-Url "), "{what}: {message}");
    }
    let (_, body) = enqueue_with(&app, "f", "http://169.254.169.254/", &[]).await;
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("NANOFAAS_SSRF_ALLOWED_CIDRS"),
        "{body}"
    );
    // Sent twice, or not text.
    let twice = app
        .client
        .post(format!("{}/v1/functions/f:enqueue", app.base))
        .header("X-Callback-Url", "http://127.0.0.1:1/a")
        .header("X-Callback-Url", "http://127.0.0.1:1/b")
        .json(&json!({"input": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(twice.status(), 400);
    let binary = app
        .client
        .post(format!("{}/v1/functions/f:enqueue", app.base))
        .header(
            "X-Callback-Url",
            reqwest::header::HeaderValue::from_bytes(b"http://h/\xe9").unwrap(),
        )
        .json(&json!({"input": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(binary.status(), 400);
    let body: Value = binary.json().await.unwrap();
    assert_eq!(body["message"], "X-Callback-Url must be visible ASCII");
    // Nothing was enqueued or sent.
    assert_eq!(app.metric("function_enqueue_total", "f").await, None);
    assert!(stub.requests().is_empty());
    // A blank header is no header.
    let (status, _) = enqueue_with(&app, "f", "  ", &[]).await;
    assert_eq!(status, 202);
}

#[tokio::test]
async fn a_name_that_resolves_to_a_refused_address_is_refused_at_delivery() {
    let mut vars: HashMap<String, String> = [
        ("SERVER_ADDRESS", "127.0.0.1"),
        ("SERVER_PORT", "0"),
        ("MANAGEMENT_SERVER_ADDRESS", "127.0.0.1"),
        ("MANAGEMENT_SERVER_PORT", "0"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    for (k, v) in async_app_env() {
        vars.insert(k.to_owned(), v.to_owned());
    }
    let mut config = Config::from_lookup(|k| vars.get(k).cloned()).unwrap();
    config.http_client.resolve_overrides = vec![(
        "metadata.test".to_owned(),
        vec!["169.254.169.254".parse().unwrap()],
    )];
    let app = TestApp::with_config(config).await;
    app.local("echo").await;
    // A name is not resolved at :enqueue; it is checked where the connection is made.
    let (status, _) = enqueue_with(&app, "echo", "http://metadata.test/hook", &[]).await;
    assert_eq!(status, 202);
    eventually("the delivery is refused", || async {
        webhook_metric(
            &app,
            "controlplane_webhook_deliveries_total{outcome=\"refused\"}",
        )
        .await
            == Some(1.0)
    })
    .await;
    // Refused at once, not retried.
    assert_eq!(
        webhook_metric(&app, "controlplane_webhook_attempts_total").await,
        Some(1.0)
    );
}

#[tokio::test]
async fn invoke_ignores_x_callback_url_and_nothing_changes_without_one() {
    let app = TestApp::with_env(&async_app_env()).await;
    let receiver = Receiver::start().await;
    app.local("echo").await;
    // Without X-Callback-Url: no webhook family in the scrape, the same answer as ever.
    let r = common::enqueue(&app, "echo", json!({"input": 1})).await;
    assert_eq!(r.status(), 202);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], "queued");
    assert!(!app.scrape().await.contains("controlplane_webhook"));
    // :invoke is synchronous: the caller has the result, nothing is posted.
    let r = app
        .invoke_request("echo")
        .header("X-Callback-Url", receiver.url("/sync"))
        .json(&json!({"input": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let id = enqueue_ok(&app, "echo", &receiver.url("/async")).await;
    let hooks = receiver.wait_for(1).await;
    assert_eq!(hooks.len(), 1);
    assert_eq!(hooks[0].path, "/async");
    assert_eq!(hooks[0].header("x-execution-id"), id);
    assert_eq!(
        metric_value(
            &app.scrape().await,
            "controlplane_webhook_deliveries_total",
            "outcome=\"delivered\""
        ),
        Some(1.0)
    );
}
