//! Admin runtime-config API: E10–E12 (REFERENCE §5.4), mounted only when
//! `NANOFAAS_ADMIN_RUNTIME_CONFIG_ENABLED=true` (404 otherwise). Its error bodies keep the Java
//! shapes (`errors`, `field`/`value`, `currentRevision`) and add our `error`/`message` pair.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use serde_json::json;

use super::extract::json_body;
use crate::AppState;
use crate::runtime_config::{PatchError, PatchRequest};

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/admin/runtime-config",
            get(get_config).patch(patch_config),
        )
        .route("/v1/admin/runtime-config/validate", post(validate_config))
}

async fn get_config(State(state): State<AppState>) -> Response {
    Json(state.runtime_config.snapshot()).into_response()
}

async fn patch_config(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Response> {
    let patch: PatchRequest = json_body(&headers, body).map_err(IntoResponse::into_response)?;
    match state.runtime_config.apply(&patch) {
        Ok(applied) => Ok(Json(applied).into_response()),
        Err(e) => Err(patch_error(e)),
    }
}

async fn validate_config(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Response> {
    let patch: PatchRequest = json_body(&headers, body).map_err(IntoResponse::into_response)?;
    match state.runtime_config.validate(&patch) {
        Ok(()) => Ok(Json(json!({"valid": true})).into_response()),
        Err(e) => Err(patch_error(e)),
    }
}

fn patch_error(e: PatchError) -> Response {
    let message = e.to_string();
    let (status, body) = match e {
        PatchError::MissingRevision => (
            StatusCode::BAD_REQUEST,
            json!({"error": message, "message": message}),
        ),
        PatchError::InvalidDuration { field, value } => (
            StatusCode::BAD_REQUEST,
            json!({"error": message, "field": field, "value": value,
                   "message": format!("{message}: use ISO-8601 such as PT5S")}),
        ),
        PatchError::Invalid(errors) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"errors": errors, "error": "VALIDATION_ERROR", "message": message}),
        ),
        PatchError::RevisionMismatch { current, .. } => (
            StatusCode::CONFLICT,
            json!({"error": message, "currentRevision": current, "message": message}),
        ),
    };
    (status, Json(body)).into_response()
}
