//! Test harness: the real control plane on port 0, a stub runtime that behaves as told by the
//! path it is called on, and helpers to read JSON and Prometheus metrics.
#![allow(dead_code)]

pub mod docker;
pub mod nats;
pub mod receiver;
pub mod replica;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use nanofaas_control_plane::config::Config;
use nanofaas_control_plane::{App, AppState};
use serde_json::{Value, json};
use tokio::sync::{Notify, oneshot};

pub struct TestApp {
    pub base: String,
    pub management: String,
    /// The runtime-callback listener, when the test configured one.
    pub callbacks: Option<String>,
    pub client: reqwest::Client,
    /// The app's handles (e.g. the token store's reload handle).
    pub state: AppState,
    shutdown: Option<oneshot::Sender<()>>,
    pub server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    /// The app's own `nats-server` when the tests run against the nats backend.
    pub nats: Option<nats::NatsServer>,
}

/// `NANOFAAS_TEST_STATE_BACKEND=nats` runs every [`TestApp`] on the NATS state backend, each
/// with a `nats-server` of its own (`scripts/test.sh` runs the async, callback and sync-queue
/// test files a second time so).
pub fn nats_backend_requested() -> bool {
    std::env::var("NANOFAAS_TEST_STATE_BACKEND").is_ok_and(|v| v == "nats")
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        TestApp::with_env(&[]).await
    }

    pub async fn with_env(env: &[(&str, &str)]) -> TestApp {
        let mut vars: HashMap<String, String> = HashMap::from([
            ("SERVER_ADDRESS".into(), "127.0.0.1".into()),
            ("SERVER_PORT".into(), "0".into()),
            ("MANAGEMENT_SERVER_ADDRESS".into(), "127.0.0.1".into()),
            ("MANAGEMENT_SERVER_PORT".into(), "0".into()),
            ("NANOFAAS_SHUTDOWN_GRACE_PERIOD".into(), "5s".into()),
        ]);
        for (k, v) in env {
            vars.insert((*k).to_owned(), (*v).to_owned());
        }
        let nats = if nats_backend_requested() && !vars.contains_key("NANOFAAS_STATE_BACKEND") {
            let server = nats::NatsServer::start().await;
            vars.insert("NANOFAAS_STATE_BACKEND".into(), "nats".into());
            vars.insert("NANOFAAS_NATS_URL".into(), server.url.clone());
            Some(server)
        } else {
            None
        };
        let config = Config::from_lookup(|k| vars.get(k).cloned()).expect("valid test config");
        TestApp::start(config, nats).await
    }

    /// The app from `config`, for settings no environment variable holds; give it port 0.
    pub async fn with_config(config: Config) -> TestApp {
        TestApp::start(config, None).await
    }

    async fn start(config: Config, nats: Option<nats::NatsServer>) -> TestApp {
        let bound = App::build(config)
            .expect("app builds")
            .bind()
            .await
            .expect("binds");
        let state = bound.state().clone();
        let base = format!("http://{}", bound.api_addr);
        let management = format!("http://{}", bound.management_addr);
        let callbacks = bound.callback_addr.map(|a| format!("http://{a}"));
        let (tx, rx) = oneshot::channel::<()>();
        let server = tokio::spawn(bound.serve(async move {
            let _ = rx.await;
        }));
        let app = TestApp {
            base,
            management,
            callbacks,
            client: reqwest::Client::builder().no_proxy().build().unwrap(),
            state,
            shutdown: Some(tx),
            server: Some(server),
            nats,
        };
        if app.nats.is_some() {
            // With NATS, readiness follows the connection and the adapters' start-up.
            let ready = format!("{}/actuator/health/readiness", app.management);
            eventually("the app on nats is ready", || async {
                app.client
                    .get(&ready)
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200)
            })
            .await;
        }
        app
    }

    /// Triggers graceful shutdown and returns the server task.
    pub fn begin_shutdown(&mut self) -> tokio::task::JoinHandle<anyhow::Result<()>> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.server.take().expect("server running")
    }

    pub async fn register(&self, spec: Value) -> reqwest::Response {
        self.client
            .post(format!("{}/v1/functions", self.base))
            .json(&spec)
            .send()
            .await
            .unwrap()
    }

    pub async fn register_ok(&self, spec: Value) -> Value {
        let r = self.register(spec).await;
        assert_eq!(r.status(), 201, "registration failed");
        r.json().await.unwrap()
    }

    pub async fn local(&self, name: &str) {
        self.register_ok(json!({"name": name, "image": "local", "executionMode": "LOCAL"}))
            .await;
    }

    pub async fn pool(&self, name: &str, url: &str, extra: Value) {
        let mut spec =
            json!({"name": name, "image": "img", "executionMode": "POOL", "endpointUrl": url});
        if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                s.insert(k.clone(), v.clone());
            }
        }
        self.register_ok(spec).await;
    }

    pub fn invoke_request(&self, name: &str) -> reqwest::RequestBuilder {
        self.client
            .post(format!("{}/v1/functions/{name}:invoke", self.base))
    }

    /// `:invoke` with an `Idempotency-Key`; the JSON answer.
    pub async fn invoke_keyed(&self, name: &str, key: &str, body: Value) -> Value {
        self.invoke_request(name)
            .header("Idempotency-Key", key)
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// `:invoke` running in the background; resolves to the status and the JSON answer.
    pub fn spawn_invoke(
        &self,
        name: &str,
        headers: &[(&str, &str)],
        body: Value,
    ) -> tokio::task::JoinHandle<(u16, Value)> {
        let mut request = self.invoke_request(name).json(&body);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        tokio::spawn(async move {
            let r = request.send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json().await.unwrap_or(Value::Null))
        })
    }

    /// `GET <base><path>`: the status and the JSON answer (null when not JSON).
    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Asserts each `(metric, value)` of `function` in one scrape.
    pub async fn assert_metrics(&self, function: &str, expected: &[(&str, f64)]) {
        let scrape = self.scrape().await;
        let label = format!("function=\"{function}\"");
        for (name, value) in expected {
            assert_eq!(
                metric_value(&scrape, name, &label),
                Some(*value),
                "{name}{{{label}}}"
            );
        }
    }

    pub async fn delete_function(&self, name: &str) -> reqwest::Response {
        self.client
            .delete(format!("{}/v1/functions/{name}", self.base))
            .send()
            .await
            .unwrap()
    }

    pub async fn invoke(&self, name: &str, body: Value) -> reqwest::Response {
        self.invoke_request(name).json(&body).send().await.unwrap()
    }

    pub async fn execution(&self, id: &str) -> (StatusCode, Value) {
        let r = self
            .client
            .get(format!("{}/v1/executions/{id}", self.base))
            .send()
            .await
            .unwrap();
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// `POST {path}` with a body sent as given (malformed JSON, exact whitespace, huge sizes) and
    /// `Content-Type: application/json`.
    pub async fn post_raw(&self, path: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap()
    }

    /// `GET /v1/executions/{id}` as the raw text (for checks on the exact JSON written).
    pub async fn execution_text(&self, id: &str) -> String {
        let url = format!("{}/v1/executions/{id}", self.base);
        let r = self.client.get(url).send().await.unwrap();
        r.text().await.unwrap()
    }

    pub async fn callback(&self, id: &str, attempt: Option<u32>, body: Value) -> StatusCode {
        let mut req = self
            .client
            .post(format!(
                "{}/v1/internal/executions/{id}:complete",
                self.base
            ))
            .json(&body);
        if let Some(a) = attempt {
            req = req.header("X-Dispatch-Attempt", a.to_string());
        }
        req.send().await.unwrap().status()
    }

    pub async fn scrape(&self) -> String {
        self.client
            .get(format!("{}/actuator/prometheus", self.management))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The value of `name{function="f"}` in the scrape, if present.
    pub async fn metric(&self, name: &str, function: &str) -> Option<f64> {
        metric_value(
            &self.scrape().await,
            name,
            &format!("function=\"{function}\""),
        )
    }
}

/// `:enqueue` (the async-queue module).
pub async fn enqueue(app: &TestApp, name: &str, body: Value) -> reqwest::Response {
    app.client
        .post(format!("{}/v1/functions/{name}:enqueue", app.base))
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// The `status` of an execution ("" when it has none).
pub async fn status_of(app: &TestApp, id: &str) -> String {
    app.execution(id).await.1["status"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

/// Waits (bounded, 10 s) until `check` holds: for effects that land after an HTTP answer, such
/// as the runtime's reply that follows an early callback.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..1000 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// Finds `name{<labels>} value` (labels given exactly as printed) in Prometheus text.
pub fn metric_value(text: &str, name: &str, labels: &str) -> Option<f64> {
    let prefix = format!("{name}{{{labels}}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

/// One request the stub runtime received.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Value,
    /// When it arrived (tokio's clock: virtual under `tokio::time::pause`).
    pub at: tokio::time::Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// A runtime on port 0. Its behaviour is chosen by the endpoint path:
/// `/reply`, `/text`, `/empty`, `/null`, `/badjson`, `/fail`, `/cold`, `/slow/<ms>`, `/hang`,
/// `/callback-first`, `/callback-twice`, `/late-callback/<ms>`, `/flaky` (fails attempt 1), `/observe/<ms>`,
/// `/callback-only-error` (callback error, then 200), `/unavailable/<s>` (503 with
/// `Retry-After: <s>`), `/unavailable-once/<s>` (that on attempt 1 only, then 200), `/switch`
/// (500 while [`Stub::failing`], then as `/reply`).
#[derive(Clone)]
pub struct Stub {
    pub addr: SocketAddr,
    pub received: Arc<Mutex<Vec<Received>>>,
    /// Notified after the stub has delivered a callback and got its answer.
    pub callback_done: Arc<Notify>,
    pub callback_statuses: Arc<Mutex<Vec<u16>>>,
    /// (current, highest) concurrent requests on `/track/<ms>`.
    pub in_flight: Arc<Mutex<(u32, u32)>>,
    /// `/observe/<ms>`: (execution id, attempt, the execution's stored status when it arrived).
    pub observed: Arc<Mutex<Vec<(String, String, String)>>>,
    /// `/switch` fails (500) while this is set, then echoes like `/reply`.
    pub failing: Arc<std::sync::atomic::AtomicBool>,
}

#[derive(Clone)]
struct StubState {
    cp: String,
    received: Arc<Mutex<Vec<Received>>>,
    callback_done: Arc<Notify>,
    callback_statuses: Arc<Mutex<Vec<u16>>>,
    in_flight: Arc<Mutex<(u32, u32)>>,
    observed: Arc<Mutex<Vec<(String, String, String)>>>,
    failing: Arc<std::sync::atomic::AtomicBool>,
    client: reqwest::Client,
}

impl Stub {
    pub async fn start(cp_base: &str) -> Stub {
        let received = Arc::new(Mutex::new(Vec::new()));
        let callback_done = Arc::new(Notify::new());
        let callback_statuses = Arc::new(Mutex::new(Vec::new()));
        let in_flight = Arc::new(Mutex::new((0, 0)));
        let observed = Arc::new(Mutex::new(Vec::new()));
        let failing = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let state = StubState {
            failing: failing.clone(),
            observed: observed.clone(),
            in_flight: in_flight.clone(),
            cp: cp_base.to_owned(),
            received: received.clone(),
            callback_done: callback_done.clone(),
            callback_statuses: callback_statuses.clone(),
            client: reqwest::Client::builder().no_proxy().build().unwrap(),
        };
        let app = Router::new()
            .route("/health", get(|| async { "ok" }))
            .route("/{*path}", post(stub_handler))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Stub {
            addr,
            received,
            callback_done,
            callback_statuses,
            in_flight,
            observed,
            failing,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn requests(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

async fn stub_handler(
    State(st): State<StubState>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    st.received.lock().unwrap().push(Received {
        path: path.clone(),
        headers: headers.clone(),
        body: parsed.clone(),
        at: tokio::time::Instant::now(),
    });
    let id = headers
        .get("X-Execution-Id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let attempt = headers
        .get("X-Dispatch-Attempt")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("1")
        .to_owned();
    let input = parsed.get("input").cloned().unwrap_or(Value::Null);
    let mut parts = path.split('/');
    let behaviour = parts.next().unwrap_or("");
    let arg: u64 = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let callback = |payload: Value| {
        let st = st.clone();
        let id = id.clone();
        let attempt = attempt.clone();
        async move {
            let status = st
                .client
                .post(format!("{}/v1/internal/executions/{id}:complete", st.cp))
                .header("X-Dispatch-Attempt", attempt)
                .json(&payload)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0);
            st.callback_statuses.lock().unwrap().push(status);
            st.callback_done.notify_waiters();
        }
    };
    match behaviour {
        "reply" => axum::Json(json!({"echo": input})).into_response(),
        "text" => ([("content-type", "text/plain")], "hello text").into_response(),
        "pretty" => (
            [("content-type", "application/json")],
            "{\n  \"hello\": \"w o\",\n  \"n\": [1, 2]\n}\n",
        )
            .into_response(),
        "empty" => StatusCode::OK.into_response(),
        "null" => ([("content-type", "application/json")], "null").into_response(),
        "badjson" => ([("content-type", "application/json")], "{not json").into_response(),
        "fail" => (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response(),
        "fail-empty" => StatusCode::SERVICE_UNAVAILABLE.into_response(),
        "switch" if st.failing.load(std::sync::atomic::Ordering::SeqCst) => {
            (StatusCode::INTERNAL_SERVER_ERROR, "switched off").into_response()
        }
        "switch" => axum::Json(json!({"echo": input})).into_response(),
        "unavailable" => (
            StatusCode::SERVICE_UNAVAILABLE,
            [("Retry-After", arg.to_string())],
            "busy",
        )
            .into_response(),
        "unavailable-once" if attempt == "1" => (
            StatusCode::SERVICE_UNAVAILABLE,
            [("Retry-After", arg.to_string())],
            "busy",
        )
            .into_response(),
        "unavailable-once" => {
            axum::Json(json!({"attempt": attempt, "input": input})).into_response()
        }
        "cold" => (
            [("X-Cold-Start", "true"), ("X-Init-Duration-Ms", "250")],
            axum::Json(json!({"cold": true})),
        )
            .into_response(),
        "slow" => {
            tokio::time::sleep(Duration::from_millis(arg)).await;
            axum::Json(json!({"slow": arg})).into_response()
        }
        // Steered by the input: `sleepMs`, then on attempt 1 a 500 if `failFirst`, a 503 with
        // `Retry-After: <n>` if `retryAfterFirst: n`.
        "script" => {
            let ms = input.get("sleepMs").and_then(Value::as_u64).unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            let retry_after = input.get("retryAfterFirst").and_then(Value::as_u64);
            if let (Some(secs), "1") = (retry_after, attempt.as_str()) {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [("Retry-After", secs.to_string())],
                    "busy",
                )
                    .into_response()
            } else if input.get("failFirst") == Some(&json!(true)) && attempt == "1" {
                (StatusCode::INTERNAL_SERVER_ERROR, "scripted failure").into_response()
            } else {
                axum::Json(json!({"attempt": attempt, "input": input})).into_response()
            }
        }
        "track" => {
            {
                let mut f = st.in_flight.lock().unwrap();
                f.0 += 1;
                f.1 = f.1.max(f.0);
            }
            tokio::time::sleep(Duration::from_millis(arg)).await;
            st.in_flight.lock().unwrap().0 -= 1;
            axum::Json(json!({"tracked": input})).into_response()
        }
        // Reads the execution's stored status on arrival, then fails after `<ms>`.
        "observe" => {
            let status = st
                .client
                .get(format!("{}/v1/executions/{id}", st.cp))
                .send()
                .await
                .ok();
            let status = match status {
                Some(r) => r.json::<Value>().await.unwrap_or(Value::Null)["status"]
                    .as_str()
                    .unwrap_or("?")
                    .to_owned(),
                None => "?".to_owned(),
            };
            st.observed
                .lock()
                .unwrap()
                .push((id.clone(), attempt.clone(), status));
            tokio::time::sleep(Duration::from_millis(arg)).await;
            (StatusCode::INTERNAL_SERVER_ERROR, "slow failure").into_response()
        }
        "hang" => {
            std::future::pending::<()>().await;
            unreachable!()
        }
        "flaky" => {
            if attempt == "1" {
                (StatusCode::BAD_GATEWAY, "first attempt fails").into_response()
            } else {
                axum::Json(json!({"attempt": attempt})).into_response()
            }
        }
        "callback-first" => {
            callback(json!({"success": true, "output": "from-callback", "error": null})).await;
            axum::Json(json!("from-reply")).into_response()
        }
        "callback-twice" => {
            callback(json!({"success": true, "output": "first"})).await;
            callback(json!({"success": false, "error": {"code": "LATE", "message": "second"}}))
                .await;
            axum::Json(json!("from-reply")).into_response()
        }
        // The result arrives only by callback (to the control plane the stub was started
        // with); the HTTP exchange never ends.
        "callback-then-hang" => {
            callback(json!({"success": true, "output": "from-callback"})).await;
            std::future::pending::<()>().await;
            unreachable!()
        }
        "late-callback" => {
            tokio::time::sleep(Duration::from_millis(arg)).await;
            callback(json!({"success": true, "output": "late"})).await;
            axum::Json(json!("late-reply")).into_response()
        }
        "cold-after-callback" => {
            callback(json!({"success": true, "output": "cb"})).await;
            (
                [("X-Cold-Start", "true"), ("X-Init-Duration-Ms", "40")],
                axum::Json(json!("reply")),
            )
                .into_response()
        }
        _ => (StatusCode::NOT_FOUND, "unknown stub behaviour").into_response(),
    }
}

/// A TCP server that accepts connections, reads the request and closes without answering.
pub async fn closing_server() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                drop(sock);
            });
        }
    });
    addr
}

/// An address nothing listens on.
pub async fn dead_address() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr
}
