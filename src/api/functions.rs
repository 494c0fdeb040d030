//! Function API: E1–E5 (list, register, get, delete, replicas).

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::error::{ApiError, ErrorBody};
use super::extract::{Segment, json_body};
use super::openapi::{
    BadRequest, DeploymentUnavailable, Forbidden, NotFound, PayloadTooLarge, Unauthorized,
    UnsupportedMediaType,
};
use crate::AppState;
use crate::function::{FunctionResponse, FunctionSpecRequest};
use crate::support::lenient::lenient_int;

/// List functions (every registered function; order unspecified).
#[utoipa::path(
    get, path = "/v1/functions", tag = "functions",
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "Every registered function", body = [FunctionResponse]),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
    ),
)]
pub async fn list(State(state): State<AppState>) -> Response {
    let functions = state.registry.list();
    let body: Vec<FunctionResponse<'_>> = functions.iter().map(|f| f.response()).collect();
    Json(body).into_response()
}

/// Register a function (scope `admin` when authentication is enabled).
#[utoipa::path(
    post, path = "/v1/functions", tag = "functions",
    security((), ("bearer" = [])),
    request_body = FunctionSpecRequest,
    responses(
        (status = 201, description = "Registered", body = FunctionResponse),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 409, description = "`CONFLICT`: the name (or its derived Kubernetes name) is taken", body = ErrorBody),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, description = "`IMAGE_NOT_FOUND` (image validation)", body = ErrorBody),
        (status = 424, description = "`IMAGE_PULL_AUTH_REQUIRED` (image validation)", body = ErrorBody),
        (status = 502, description = "`BAD_GATEWAY`: the deployment backend refused", body = ErrorBody),
        (status = 503, description = "`SERVICE_UNAVAILABLE` (no deployment backend for a DEPLOYMENT function without `endpointUrl`, or the backend is unreachable) or `IMAGE_REGISTRY_UNAVAILABLE`", body = ErrorBody),
    ),
)]
pub async fn register(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request: FunctionSpecRequest = json_body(&headers, body)?;
    let function = state.registry.register(request).await?;
    Ok((StatusCode::CREATED, Json(function.response())).into_response())
}

/// Get a function.
#[utoipa::path(
    get, path = "/v1/functions/{name}", tag = "functions",
    security((), ("bearer" = [])),
    params(("name" = String, Path, description = "Function name (any text; registered names match the name pattern)", pattern = "\\S")),
    responses(
        (status = 200, description = "The function", body = FunctionResponse),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    ),
)]
pub async fn get(
    State(state): State<AppState>,
    Segment(name): Segment,
) -> Result<Response, ApiError> {
    require_name(&name)?;
    let function = state
        .registry
        .get(&name)
        .ok_or_else(|| ApiError::NotFound(format!("Function not found: {name}")))?;
    Ok(Json(function.response()).into_response())
}

/// Delete a function (scope `admin`); its queued executions end with `FUNCTION_REMOVED`.
#[utoipa::path(
    delete, path = "/v1/functions/{name}", tag = "functions",
    security((), ("bearer" = [])),
    params(("name" = String, Path, description = "Function name", pattern = "\\S")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 502, description = "`BAD_GATEWAY`: the deployment backend refused", body = ErrorBody),
        (status = 503, response = DeploymentUnavailable),
    ),
)]
pub async fn delete(
    State(state): State<AppState>,
    Segment(name): Segment,
) -> Result<StatusCode, ApiError> {
    require_name(&name)?;
    state.registry.remove(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, utoipa::ToSchema)]
pub(crate) struct ReplicaRequest {
    #[serde(default, deserialize_with = "lenient_int")]
    #[schema(schema_with = replicas_schema, required)]
    replicas: Option<i64>,
}

fn replicas_schema() -> utoipa::openapi::schema::Schema {
    crate::support::schema::required_int(0, 10_000, 4, "Replicas, 0 to 10000")
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ReplicaResponse<'a> {
    #[schema(value_type = String)]
    function: &'a str,
    replicas: u32,
}

/// Set the replicas of a DEPLOYMENT function (scope `admin`).
#[utoipa::path(
    put, path = "/v1/functions/{name}/replicas", tag = "functions",
    security((), ("bearer" = [])),
    params(("name" = String, Path, description = "Function name", pattern = "\\S")),
    request_body = ReplicaRequest,
    responses(
        (status = 200, description = "Scaled", body = ReplicaResponse),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 502, description = "`BAD_GATEWAY`: the deployment backend refused", body = ErrorBody),
        (status = 503, response = DeploymentUnavailable),
    ),
)]
pub async fn set_replicas(
    State(state): State<AppState>,
    Segment(name): Segment,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    require_name(&name)?;
    let request: ReplicaRequest = json_body(&headers, body)?;
    let replicas = match request.replicas {
        None => {
            return Err(ApiError::Validation(vec![
                "replicas: must not be null".into(),
            ]));
        }
        Some(n) if n < 0 => {
            return Err(ApiError::Validation(vec![
                "replicas: must be greater than or equal to 0".into(),
            ]));
        }
        Some(n) if n > 10_000 => {
            return Err(ApiError::Validation(vec![
                "replicas: must be less than or equal to 10000".into(),
            ]));
        }
        Some(n) => n as u32,
    };
    let replicas = state.registry.set_replicas(&name, replicas).await?;
    Ok(Json(ReplicaResponse {
        function: &name,
        replicas,
    })
    .into_response())
}

/// 405 on `/v1/functions/{name}`, with the methods of the resource the URL names: a colon action
/// (`{name}:invoke`, `{name}:enqueue`) takes POST, a name GET and DELETE (the route itself
/// serves all three, so axum's own `Allow` would list them all).
pub fn method_not_allowed(segment: &str) -> Response {
    let allow = match segment.rsplit_once(':') {
        Some((_, "invoke" | "enqueue")) => "POST",
        _ => "GET,HEAD,DELETE",
    };
    let mut response = ApiError::MethodNotAllowed.into_response();
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

/// The route's fallback for the methods it does not serve.
pub async fn name_method_not_allowed(Segment(segment): Segment) -> Response {
    method_not_allowed(&segment)
}

pub fn require_name(name: &str) -> Result<(), ApiError> {
    if name.trim().is_empty() {
        return Err(ApiError::Validation(vec![
            "name: Function name is required".into(),
        ]));
    }
    Ok(())
}
