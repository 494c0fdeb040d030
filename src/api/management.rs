//! The management port (REFERENCE §1.16): health groups and the Prometheus scrape, plus the
//! build-metadata endpoint of the main port (§1.15).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::AppState;
use crate::auth::{self, GuardParts, Protected};
use crate::support::{read, write};

const ACTUATOR_JSON: &str = "application/vnd.spring-boot.actuator.v3+json";

/// A health contributor besides the process itself (e.g. the `nats` state backend): whether it
/// is up, and details shown under its name. Called on every `/actuator/health` request.
pub type ComponentCheck = Arc<dyn Fn() -> (bool, serde_json::Value) + Send + Sync>;

/// Liveness and readiness of the process, and the named components `/actuator/health` lists.
///
/// Readiness is the process's own state only: a component that goes down (a lost broker) shows
/// in `/actuator/health` but does not take the replica out of a Service, as Spring's readiness
/// group without that contributor would not.
#[derive(Default)]
pub struct Health {
    ready: AtomicBool,
    components: RwLock<Vec<(&'static str, ComponentCheck)>>,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = read(&self.components).iter().map(|(n, _)| *n).collect();
        f.debug_struct("Health")
            .field("ready", &self.is_ready())
            .field("components", &names)
            .finish()
    }
}

impl Health {
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// Adds a component to `/actuator/health` (with none, the body is exactly as before).
    pub fn add_component(&self, name: &'static str, check: ComponentCheck) {
        write(&self.components).push((name, check));
    }

    /// Each component's status now.
    fn components(&self) -> Vec<(&'static str, bool, serde_json::Value)> {
        let checks = read(&self.components).clone();
        checks
            .into_iter()
            .map(|(name, check)| {
                let (up, details) = check();
                (name, up, details)
            })
            .collect()
    }
}

pub fn router(state: AppState) -> Router {
    let router = Router::new()
        .route("/actuator", get(links))
        .route("/actuator/health", get(health))
        .route("/actuator/health/liveness", get(liveness))
        .route("/actuator/health/readiness", get(readiness))
        .route("/actuator/prometheus", get(prometheus))
        .fallback(|uri: axum::http::Uri| async move {
            super::error::ApiError::RouteNotFound(uri.path().to_owned())
        })
        .method_not_allowed_fallback(|| async { super::error::ApiError::MethodNotAllowed });
    let router = match state.auth.clone() {
        Some(store) if state.config.auth.metrics_protected => auth::protect(
            router,
            GuardParts {
                store,
                access: auth::management_access,
                protected: Protected::default(),
                reject: super::reject_request,
            },
        ),
        _ => router,
    };
    router.with_state(state)
}

/// Spring's actuator media type, or plain `application/json` when the client asks for that one
/// (and not the actuator type), as Spring's content negotiation answers.
fn actuator_content_type(headers: &HeaderMap) -> &'static str {
    let accept = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .collect::<Vec<_>>();
    let asks = |t: &str| accept.iter().any(|a| a == t);
    if asks("application/json") && !asks(ACTUATOR_JSON) {
        "application/json"
    } else {
        ACTUATOR_JSON
    }
}

fn actuator(headers: &HeaderMap, status: StatusCode, body: serde_json::Value) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(actuator_content_type(headers)),
        )],
        body.to_string(),
    )
        .into_response()
}

async fn health(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let actuator = |status, body| actuator(&headers, status, body);
    let components = state.health.components();
    if components.is_empty() {
        return if state.health.is_ready() {
            actuator(
                StatusCode::OK,
                json!({"status": "UP", "groups": ["liveness", "readiness"]}),
            )
        } else {
            actuator(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"status": "OUT_OF_SERVICE", "groups": ["liveness", "readiness"]}),
            )
        };
    }
    // Spring's aggregation: DOWN outranks OUT_OF_SERVICE outranks UP; both are 503.
    let any_down = components.iter().any(|(_, up, _)| !up);
    let (code, status) = if any_down {
        (StatusCode::SERVICE_UNAVAILABLE, "DOWN")
    } else if !state.health.is_ready() {
        (StatusCode::SERVICE_UNAVAILABLE, "OUT_OF_SERVICE")
    } else {
        (StatusCode::OK, "UP")
    };
    let readiness = if state.health.is_ready() {
        "UP"
    } else {
        "OUT_OF_SERVICE"
    };
    let mut listed = serde_json::Map::new();
    listed.insert("livenessState".into(), json!({"status": "UP"}));
    listed.insert("readinessState".into(), json!({"status": readiness}));
    for (name, up, details) in components {
        let status = if up { "UP" } else { "DOWN" };
        listed.insert(name.into(), json!({"status": status, "details": details}));
    }
    actuator(
        code,
        json!({"status": status, "components": listed, "groups": ["liveness", "readiness"]}),
    )
}

async fn liveness(headers: HeaderMap) -> Response {
    actuator(&headers, StatusCode::OK, json!({"status": "UP"}))
}

async fn readiness(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let actuator = |status, body| actuator(&headers, status, body);
    if state.health.is_ready() {
        actuator(StatusCode::OK, json!({"status": "UP"}))
    } else {
        actuator(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"status": "OUT_OF_SERVICE"}),
        )
    }
}

/// How long a scrape waits for figures fetched from elsewhere before it shows the last ones.
const SCRAPE_FETCH_BUDGET: std::time::Duration = std::time::Duration::from_millis(500);

async fn prometheus(State(state): State<AppState>) -> Response {
    // Cluster-wide figures (the NATS backend's queue gauges) are fetched per scrape, bounded.
    state.metrics.refresh(SCRAPE_FETCH_BUDGET).await;
    state
        .metrics
        .execution_store_entries
        .set(state.invocations.store().len() as i64);
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        state.metrics.render(),
    )
        .into_response()
}

async fn links(headers: HeaderMap) -> Response {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let base = format!("http://{host}/actuator");
    let link = |path: &str, templated: bool| json!({"href": format!("{base}{path}"), "templated": templated});
    actuator(
        &headers,
        StatusCode::OK,
        json!({"_links": {
            "self": link("", false),
            "health": link("/health", false),
            "health-path": link("/health/{*path}", true),
            "prometheus": link("/prometheus", false),
        }}),
    )
}

/// Build metadata module marker (E13).
#[utoipa::path(
    get, path = "/modules/build-metadata", tag = "meta",
    responses((status = 200, description = "`{\"module\":\"build-metadata\",\"status\":\"enabled\"}`", body = Object)),
)]
pub async fn build_metadata() -> Response {
    axum::Json(json!({"module": "build-metadata", "status": "enabled"})).into_response()
}
