//! An example nanofaas function runtime: the contract of `shared/spec/RUNTIME.md` in one file.
//!
//! - `POST /invoke` with `{"input": …, "metadata": …}` and `X-Execution-Id` → 200 with the output.
//!   The function here is an echo that also says which replica served it. Input fields steer it
//!   for tests: `{"sleepMs": 500}` waits first, `{"fail": "message"}` answers 500.
//! - `X-Cold-Start: true` and `X-Init-Duration-Ms` on the first invocation of the process.
//! - With `CALLBACK_URL` set, the outcome is also posted to `<CALLBACK_URL>/<id>:complete` after
//!   the reply (3 tries, 100 ms then 500 ms apart), echoing `X-Dispatch-Attempt` and `X-Trace-Id`.
//! - `GET /health` → 200. `PORT` (default 8080). SIGTERM/SIGINT: finish in-flight work, exit 0.
//!
//! Write your own function by replacing `handle`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

struct Runtime {
    started: Instant,
    first_served: AtomicBool,
    function: String,
    replica: String,
    callback_url: Option<String>,
    client: reqwest::Client,
}

/// The function itself: an echo that can be told to wait or fail.
async fn handle(rt: &Runtime, input: &Value) -> Result<Value, String> {
    if let Some(ms) = input.get("sleepMs").and_then(Value::as_u64) {
        tokio::time::sleep(Duration::from_millis(ms.min(600_000))).await;
    }
    if let Some(message) = input.get("fail") {
        return Err(message
            .as_str()
            .map_or_else(|| message.to_string(), str::to_owned));
    }
    Ok(json!({"echo": input, "function": rt.function, "replica": rt.replica}))
}

async fn invoke(State(rt): State<Arc<Runtime>>, headers: HeaderMap, body: Bytes) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let Some(execution_id) =
        header("X-Execution-Id").or_else(|| std::env::var("EXECUTION_ID").ok())
    else {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "X-Execution-Id header is required"})),
        )
            .into_response();
    };
    let request: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({"error": e.to_string()})),
            )
                .into_response();
        }
    };
    let input = request.get("input").cloned().unwrap_or(Value::Null);
    let cold = !rt.first_served.swap(true, Ordering::SeqCst);
    let outcome = handle(&rt, &input).await;

    let mut response = match &outcome {
        Ok(output) => (StatusCode::OK, axum::Json(output.clone())).into_response(),
        Err(message) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(json!({"error": message})),
        )
            .into_response(),
    };
    if cold {
        let h = response.headers_mut();
        h.insert("X-Cold-Start", "true".parse().expect("static header"));
        let init = rt.started.elapsed().as_millis().to_string();
        if let Ok(v) = init.parse() {
            h.insert("X-Init-Duration-Ms", v);
        }
    }
    if let Some(base) = rt.callback_url.clone() {
        let rt = rt.clone();
        let attempt = header("X-Dispatch-Attempt");
        let trace = header("X-Trace-Id");
        tokio::spawn(async move {
            send_callback(&rt, &base, &execution_id, attempt, trace, outcome).await;
        });
    }
    response
}

async fn send_callback(
    rt: &Runtime,
    base: &str,
    execution_id: &str,
    attempt: Option<String>,
    trace: Option<String>,
    outcome: Result<Value, String>,
) {
    let url = format!("{}/{execution_id}:complete", base.trim_end_matches('/'));
    let body = match outcome {
        Ok(output) => json!({"success": true, "output": output, "error": null}),
        Err(message) => json!({"success": false, "output": null,
                               "error": {"code": "HANDLER_ERROR", "message": message}}),
    };
    for pause in [Some(100), Some(500), None] {
        let mut request = rt.client.post(&url).json(&body);
        if let Some(a) = &attempt {
            request = request.header("X-Dispatch-Attempt", a);
        }
        if let Some(t) = &trace {
            request = request.header("X-Trace-Id", t);
        }
        match request.send().await {
            Ok(r) if r.status().is_success() => return,
            Ok(r) if r.status().is_client_error() && r.status() != 408 && r.status() != 429 => {
                return;
            }
            _ => {}
        }
        match pause {
            Some(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
            None => eprintln!("callback for {execution_id} not delivered"),
        }
    }
}

async fn health() -> impl IntoResponse {
    axum::Json(json!({"status": "ok"}))
}

#[tokio::main]
async fn main() {
    let started = Instant::now();
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(8080);
    let rt = Arc::new(Runtime {
        started,
        first_served: AtomicBool::new(false),
        function: std::env::var("FUNCTION_NAME").unwrap_or_else(|_| "example".to_owned()),
        replica: std::env::var("HOSTNAME").unwrap_or_else(|_| "local".to_owned()),
        callback_url: std::env::var("CALLBACK_URL")
            .ok()
            .filter(|u| !u.trim().is_empty()),
        client: reqwest::Client::builder()
            .no_proxy()
            .hickory_dns(true)
            .timeout(Duration::from_secs(5))
            .build()
            .expect("HTTP client"),
    });
    let app = Router::new()
        .route("/invoke", post(invoke))
        .route("/health", get(health))
        .with_state(rt);
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", port))
        .await
        .unwrap_or_else(|e| panic!("cannot listen on port {port}: {e}"));
    eprintln!("example runtime listening on port {port}");
    let shutdown = async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
    };
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .expect("server");
}
