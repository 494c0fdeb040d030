//! The HTTP edge: the main API router (port 8080) and the management router (port 8081).
//! Handlers parse and map; all behaviour lives in the core modules.

pub mod dead_letters;
pub mod error;
pub mod extract;
pub mod functions;
pub mod invocations;
pub mod management;
pub mod openapi;
pub mod runtime_config;
pub mod trace;

use std::any::Any;
use std::convert::Infallible;

use axum::Router;
use axum::body::Body;
use axum::extract::DefaultBodyLimit;
use axum::http::{Request, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use tower::Layer as _;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::{DefaultOnFailure, TraceLayer};

use crate::AppState;
use crate::auth::{self, GuardParts, Protected, Rejection};
use error::ApiError;

/// What a listener serves: a router, possibly behind edge layers wrapped around it as a whole
/// (`router`). Called without `poll_ready`: routers and the edge layers are always ready.
pub trait HttpService:
    tower::Service<Request<Body>, Response = Response, Error = Infallible, Future: Send + 'static>
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<S> HttpService for S where
    S: tower::Service<
            Request<Body>,
            Response = Response,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + Sync
        + 'static
{
}

/// Routes of the main port (REFERENCE §1.2). Colon actions (`{name}:invoke`) are split inside the
/// handlers, since the name itself may contain `:`. Runtime callbacks are served here unless
/// they have a listener of their own (`NANOFAAS_CALLBACK_SERVER_PORT`).
pub fn router(state: AppState) -> impl HttpService {
    let mut router = Router::new()
        .route(
            "/v1/functions",
            get(functions::list).post(functions::register),
        )
        .route(
            "/v1/functions/{name}",
            get(functions::get)
                .delete(functions::delete)
                .post(invocations::function_action)
                .fallback(functions::name_method_not_allowed),
        )
        .route(
            "/v1/functions/{name}/replicas",
            put(functions::set_replicas),
        )
        .route("/v1/functions/{name}/executions", get(dead_letters::list))
        .route(
            "/v1/executions/{id}",
            get(invocations::get_execution)
                .post(dead_letters::execution_action)
                .fallback(dead_letters::execution_method_not_allowed),
        )
        .route("/modules/build-metadata", get(management::build_metadata))
        .route("/v3/api-docs", {
            let doc = bytes::Bytes::from(openapi::document_json(
                state.config.admin_runtime_config_enabled,
            ));
            get(move || openapi::api_docs(doc.clone()))
        });
    if state.config.callback_port.is_none() {
        router = router.merge(callback_routes());
    }
    if state.config.admin_runtime_config_enabled {
        router = router.merge(runtime_config::router());
    }
    // Outermost: the whole request, edge layers included, runs in the invocation's trace span.
    trace::TraceContextLayer.layer(with_edge_layers(router, state))
}

/// The callback listener's routes: runtime callbacks only, so that a NetworkPolicy can admit
/// function pods to this port and nothing else (docs/security.md).
pub fn callback_router(state: AppState) -> impl HttpService {
    with_edge_layers(callback_routes(), state)
}

fn callback_routes() -> Router<AppState> {
    Router::new().route("/v1/internal/executions/{id}", post(invocations::complete))
}

/// What every API-facing router shares: JSON 404/405, the body limit, panics as 500 JSON, and
/// request tracing. The last three wrap the router as a whole, once: `Router::layer` would wrap
/// every route in a boxed service per layer, and each box costs a clone and an allocation per
/// request (docs/perf/RESULTS.md, issue 12). Authentication stays a router layer: it reads the
/// matched route.
fn with_edge_layers(router: Router<AppState>, state: AppState) -> impl HttpService {
    let body_limit = state.config.max_request_body_bytes;
    let mut router = router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed);
    // After every route and the fallbacks, so that it covers them all; not installed when off.
    let settings = &state.config.auth;
    if let Some(store) = state
        .auth
        .clone()
        .filter(|_| settings.enabled || settings.callbacks_protected)
    {
        let protected = Protected {
            api: settings.enabled,
            callbacks: settings.callbacks_protected,
        };
        router = auth::protect(
            router,
            GuardParts {
                store,
                access: auth::api_access,
                protected,
                reject: reject_request,
            },
        );
    }
    ServiceBuilder::new()
        .map_response(|response: Response<_>| response.map(Body::new))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request<_>| {
                    tracing::debug_span!("request", method = %req.method(), uri = %req.uri())
                })
                // Error answers are part of the API, not server faults: keep them out of ERROR logs.
                .on_failure(DefaultOnFailure::new().level(tracing::Level::DEBUG)),
        )
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(DefaultBodyLimit::max(body_limit))
        .service(router.with_state(state))
}

/// Authentication rejections answer through the one error mapping.
pub(crate) fn reject_request(rejection: Rejection) -> Response {
    ApiError::from(rejection).into_response()
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::RouteNotFound(uri.path().to_owned())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let detail = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    tracing::error!(detail, "handler panicked");
    ApiError::Internal.into_response()
}
