//! The middleware: which scope each route needs ([`api_access`], [`management_access`]) and the
//! check of the `Authorization: Bearer` header against the [`TokenStore`]. It is installed with
//! `Router::layer`, so it runs after routing and reads the matched route template: the decision
//! is made on the same route the request will reach, not on a second parse of the raw path.

use std::sync::Arc;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::Response;

use super::{Scope, Scopes, TokenStore};

/// What a request must present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Open,
    /// Any token with `admin` or `invoke`: reading function definitions, the build metadata, and
    /// the 404/405 answers (so that nothing about the routes is revealed without a token).
    AdminOrInvoke,
    Scope(Scope),
}

/// Why a request was refused; `api::error` maps it to the 401/403 answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// No `Authorization: Bearer` header (or more than one).
    Missing,
    /// A bearer token that is not in the token file.
    Invalid,
    /// A known token without the scope the route needs.
    InsufficientScope(Access),
}

/// The access rule of a router, the store it checks against and how it answers a refusal.
pub struct GuardParts {
    pub store: Arc<TokenStore>,
    pub access: fn(&Method, Option<&str>, &Protected) -> Access,
    pub protected: Protected,
    /// The one mapping of rejections to responses (it lives in `api::error`).
    pub reject: fn(Rejection) -> Response,
}

/// What the configuration protects.
#[derive(Debug, Clone, Copy, Default)]
pub struct Protected {
    pub api: bool,
    pub callbacks: bool,
}

/// Installs the check on every route and fallback `router` has so far: call it after the last
/// route is added.
pub fn protect<S>(router: Router<S>, parts: GuardParts) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    router.layer(axum::middleware::from_fn_with_state(
        Guard(Arc::new(parts)),
        Guard::check,
    ))
}

/// The middleware's state.
#[derive(Clone)]
struct Guard(Arc<GuardParts>);

impl Guard {
    async fn check(State(guard): State<Guard>, request: Request, next: Next) -> Response {
        let matched = request
            .extensions()
            .get::<MatchedPath>()
            .map(MatchedPath::as_str);
        let access = (guard.0.access)(request.method(), matched, &guard.0.protected);
        match guard.decide(access, request.headers()) {
            Ok(()) => next.run(request).await,
            Err(rejection) => (guard.0.reject)(rejection),
        }
    }

    fn decide(&self, access: Access, headers: &HeaderMap) -> Result<(), Rejection> {
        if access == Access::Open {
            return Ok(());
        }
        let presented = bearer(headers).ok_or(Rejection::Missing)?;
        let scopes = self
            .0
            .store
            .scopes_of(presented)
            .ok_or(Rejection::Invalid)?;
        if grants(scopes, access) {
            Ok(())
        } else {
            Err(Rejection::InsufficientScope(access))
        }
    }
}

fn grants(scopes: Scopes, access: Access) -> bool {
    match access {
        Access::Open => true,
        Access::AdminOrInvoke => scopes.contains(Scope::Admin) || scopes.contains(Scope::Invoke),
        Access::Scope(scope) => scopes.contains(scope),
    }
}

/// The secret of the one `Authorization: Bearer <secret>` header (scheme case-insensitive, RFC
/// 7235). Several `Authorization` headers are ambiguous and count as none.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let value = value.to_str().ok()?.trim();
    let (scheme, secret) = value.split_once(' ')?;
    let secret = secret.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !secret.is_empty()).then_some(secret)
}

/// The scope each route of the API port needs. `matched` is the route template (`None` when no
/// route matched: the 404 answer). A route missing from this table needs `admin`, so a route
/// added without a thought about its scope is closed rather than open.
pub fn api_access(method: &Method, matched: Option<&str>, protected: &Protected) -> Access {
    let Some(route) = matched else {
        return if protected.api {
            Access::AdminOrInvoke
        } else {
            Access::Open
        };
    };
    if route == "/v1/internal/executions/{id}" {
        // Runtimes have no API token; callbacks have their own switch (docs/security.md).
        return if protected.callbacks {
            Access::Scope(Scope::Callback)
        } else {
            Access::Open
        };
    }
    if !protected.api {
        return Access::Open;
    }
    let admin = Access::Scope(Scope::Admin);
    let invoke = Access::Scope(Scope::Invoke);
    // A method the route does not serve gets its 405 with any token.
    let other = Access::AdminOrInvoke;
    let on = |m: Method, access: Access| if *method == m { access } else { other };
    match route {
        "/v1/functions" => on(Method::POST, admin),
        // POST is `{name}:invoke` / `{name}:enqueue`.
        "/v1/functions/{name}" if *method == Method::DELETE => admin,
        "/v1/functions/{name}" => on(Method::POST, invoke),
        "/v1/functions/{name}/replicas" => on(Method::PUT, admin),
        // Dead letters (issue 11): listing reads executions, a redrive creates one.
        "/v1/functions/{name}/executions" => on(Method::GET, invoke),
        // GET reads an execution, POST is `{id}:redrive`.
        "/v1/executions/{id}" => invoke,
        "/modules/build-metadata" => other,
        // The API description is the same for every deployment and says nothing about its state.
        r if r.starts_with("/v3/api-docs") => Access::Open,
        // `/v1/admin/...` (runtime config) and anything not listed above.
        _ => admin,
    }
}

/// The management port: health is always open; the scrape needs `metrics` when protected.
pub fn management_access(_: &Method, matched: Option<&str>, _: &Protected) -> Access {
    match matched {
        Some("/actuator/prometheus") => Access::Scope(Scope::Metrics),
        _ => Access::Open,
    }
}
