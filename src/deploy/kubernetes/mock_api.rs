//! A scripted mock Kubernetes API server (the kube-rs testing pattern: a `Client` over a
//! `tower_test::mock::pair`): it asserts each request's method, path, query, content type and
//! body, and fails on any request it did not expect or any expected request that never came.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{Method, Request, Response, header};
use kube::client::Body;
use serde_json::{Value, json};
use tower_test::mock;

use super::KubernetesProvider;
use crate::config::KubernetesConfig;
use crate::support::lock;

pub(super) const NS: &str = "nanofaas";
pub(super) const APPLY_QUERY: &str = "force=true&fieldManager=nanofaas-control-plane";
pub(super) const APPLY_TYPE: &str = "application/apply-patch+yaml";
pub(super) const MERGE_TYPE: &str = "application/merge-patch+json";

pub(super) fn k8s_config() -> KubernetesConfig {
    KubernetesConfig {
        callback_service_port: 8080,
        namespace: Some(NS.to_owned()),
        pod_namespace: None,
        callback_url: String::new(),
        image_pull_policy: "IfNotPresent".to_owned(),
    }
}

pub(super) type Handle = mock::Handle<Request<Body>, Response<Body>>;
pub(super) type Check = Box<dyn Fn(&Value) + Send + Sync>;

/// Scripts are written in parts (provision, rollback, ...).
pub(super) trait Joined {
    fn joined(self) -> Vec<Exchange>;
}

impl<const N: usize> Joined for [Vec<Exchange>; N] {
    fn joined(self) -> Vec<Exchange> {
        self.into_iter().flatten().collect()
    }
}

pub(super) enum Reply {
    /// This status and JSON body.
    Json(u16, Value),
    /// 200 with the request body, as the API server answers an apply or a create.
    Echo,
    /// The connection fails: no HTTP answer at all.
    Transport(&'static str),
}

pub(super) struct Exchange {
    pub(super) method: Method,
    pub(super) path: String,
    /// `path` is a prefix (for generated names).
    pub(super) prefix: bool,
    pub(super) query: Option<&'static str>,
    pub(super) content_type: Option<&'static str>,
    pub(super) check: Option<Check>,
    pub(super) reply: Reply,
    /// Answer any number (≥ 1) of such requests.
    pub(super) repeated: bool,
}

pub(super) fn expect(method: Method, path: impl Into<String>) -> Exchange {
    Exchange {
        method,
        path: path.into(),
        prefix: false,
        query: None,
        content_type: None,
        check: None,
        reply: Reply::Json(200, json!({})),
        repeated: false,
    }
}

impl Exchange {
    pub(super) fn prefix(mut self) -> Self {
        self.prefix = true;
        self
    }
    pub(super) fn body(mut self, check: impl Fn(&Value) + Send + Sync + 'static) -> Self {
        self.check = Some(Box::new(check));
        self
    }
    pub(super) fn reply(mut self, reply: Reply) -> Self {
        self.reply = reply;
        self
    }
    pub(super) fn repeated(mut self) -> Self {
        self.repeated = true;
        self
    }
    fn matches(&self, request: &Request<Body>) -> bool {
        let path = request.uri().path();
        request.method() == self.method
            && if self.prefix {
                path.starts_with(&self.path)
            } else {
                path == self.path
            }
    }
}

pub(super) fn deployment_path(name: &str) -> String {
    format!("/apis/apps/v1/namespaces/{NS}/deployments/{name}")
}
pub(super) fn service_path(name: &str) -> String {
    format!("/api/v1/namespaces/{NS}/services/{name}")
}
pub(super) fn hpa_path(name: &str) -> String {
    format!("/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers/{name}")
}
pub(super) const PODS: &str = "/api/v1/namespaces/nanofaas/pods";

/// A server-side apply of the object at `path`; the API answers with the object.
pub(super) fn apply(path: String) -> Exchange {
    let mut e = expect(Method::PATCH, path).reply(Reply::Echo);
    e.query = Some(APPLY_QUERY);
    e.content_type = Some(APPLY_TYPE);
    e
}

/// A delete of the object at `path` (background propagation), answered with `code`.
pub(super) fn delete(path: String, code: u16) -> Exchange {
    expect(Method::DELETE, path)
        .body(|b| assert_eq!(b["propagationPolicy"], "Background", "{b}"))
        .reply(status(code))
}

pub(super) fn status(code: u16) -> Reply {
    match code {
        200 => Reply::Json(
            200,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
        ),
        404 => Reply::Json(
            404,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                "message": "not found", "reason": "NotFound", "code": 404}),
        ),
        code => Reply::Json(
            code,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                "message": format!("the API says no ({code})"), "reason": "InternalError",
                "code": code}),
        ),
    }
}

async fn answer(
    exchange: &Exchange,
    index: usize,
    request: Request<Body>,
    respond: mock::SendResponse<Response<Body>>,
) {
    let what = format!("exchange {index} ({} {})", exchange.method, exchange.path);
    assert_eq!(
        request.method(),
        exchange.method,
        "{what}: {}",
        request.uri()
    );
    assert!(
        exchange.matches(&request),
        "{what}: got {} {}",
        request.method(),
        request.uri()
    );
    if let Some(query) = exchange.query {
        // Compared as a set of parameters (kube writes a leading `&`).
        let pairs = |q: &str| {
            let mut p: Vec<String> = q
                .split('&')
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect();
            p.sort();
            p
        };
        assert_eq!(
            pairs(request.uri().query().unwrap_or_default()),
            pairs(query),
            "{what}"
        );
    }
    if let Some(content_type) = exchange.content_type {
        assert_eq!(
            request
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
            Some(content_type),
            "{what}"
        );
    }
    let bytes = request.into_body().collect_bytes().await.unwrap();
    let body: Value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    if let Some(check) = &exchange.check {
        check(&body);
    }
    let json_response = |code: u16, body: &Value| {
        Response::builder()
            .status(code)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(serde_json::to_vec(body).unwrap()))
            .unwrap()
    };
    match &exchange.reply {
        Reply::Json(code, value) => respond.send_response(json_response(*code, value)),
        Reply::Echo => respond.send_response(json_response(200, &body)),
        Reply::Transport(message) => respond.send_error(std::io::Error::other(*message)),
    }
}

async fn serve(mut handle: Handle, script: Vec<Exchange>) {
    let mut pending = None;
    let mut closed = false;
    for (index, exchange) in script.iter().enumerate() {
        let mut answered = 0;
        loop {
            let next = match pending.take() {
                Some(p) => Some(p),
                None if closed => None,
                None => handle.next_request().await,
            };
            let Some((request, respond)) = next else {
                closed = true;
                assert!(
                    exchange.repeated && answered > 0,
                    "exchange {index}: expected {} {}, but no request came",
                    exchange.method,
                    exchange.path
                );
                break;
            };
            if answered > 0 && !exchange.matches(&request) {
                pending = Some((request, respond));
                break;
            }
            answer(exchange, index, request, respond).await;
            answered += 1;
            if !exchange.repeated {
                break;
            }
        }
    }
    let extra = match pending {
        Some(p) => Some(p),
        None if closed => None,
        None => handle.next_request().await,
    };
    if let Some((request, _)) = extra {
        panic!("unexpected request {} {}", request.method(), request.uri());
    }
}

pub(super) fn provider(script: Vec<Exchange>) -> (KubernetesProvider, tokio::task::JoinHandle<()>) {
    provider_with(script, false)
}

pub(super) fn provider_with(
    script: Vec<Exchange>,
    validate_images: bool,
) -> (KubernetesProvider, tokio::task::JoinHandle<()>) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, NS);
    let provider = KubernetesProvider::new(client, &k8s_config(), validate_images)
        .with_validation_timing(Duration::from_millis(2), Duration::from_millis(60));
    (provider, tokio::spawn(serve(handle, script)))
}

/// Drops the provider (closing the mock connection) and waits for the script's verdict.
pub(super) async fn finish(provider: KubernetesProvider, server: tokio::task::JoinHandle<()>) {
    drop(provider);
    match tokio::time::timeout(Duration::from_secs(10), server).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => std::panic::resume_unwind(e.into_panic()),
        Err(_) => panic!("the mock API server did not finish"),
    }
}

pub(super) fn recorder() -> (
    Arc<Mutex<Vec<Value>>>,
    impl Fn(&Value) + Send + Clone + 'static,
) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    (seen, move |b: &Value| lock(&sink).push(b.clone()))
}
