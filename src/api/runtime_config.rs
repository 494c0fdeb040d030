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
use super::openapi::{BadRequest, Forbidden, PayloadTooLarge, Unauthorized, UnsupportedMediaType};
use crate::AppState;
use crate::runtime_config::{Applied, PatchError, PatchRequest, Snapshot};

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/admin/runtime-config",
            get(get_config).patch(patch_config),
        )
        .route("/v1/admin/runtime-config/validate", post(validate_config))
}

/// The PATCH body, as documented: a `RuntimeConfigPatchRequest` whose `expectedRevision` is
/// required. (It is read as a `PatchRequest`, so that a missing revision gets its Java answer.)
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = RuntimeConfigPatch)]
#[allow(dead_code)]
pub(crate) struct PatchBody {
    #[schema(schema_with = revision)]
    expected_revision: i64,
    #[serde(flatten)]
    patch: PatchRequest,
}

fn revision() -> utoipa::openapi::schema::Schema {
    crate::support::schema::required_int(
        i64::MIN,
        i64::MAX,
        18,
        "The current revision (409 otherwise)",
    )
}

/// The error bodies of this API (`patch_error`): `error` and `message` always, plus `field` and
/// `value` (unreadable duration, 400), `errors` (invalid result, 422) or `currentRevision` (409).
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = RuntimeConfigError)]
#[allow(dead_code)]
pub(crate) struct PatchErrorBody {
    error: String,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    field: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    errors: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    current_revision: Option<u64>,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
#[allow(dead_code)]
pub(crate) struct Valid {
    valid: bool,
}

/// The live settings (scope `admin`); only when the admin runtime-config API is enabled.
#[utoipa::path(
    get, path = "/v1/admin/runtime-config", tag = "runtime-config",
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The current snapshot", body = Snapshot),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
    ),
)]
pub(super) async fn get_config(State(state): State<AppState>) -> Response {
    Json(state.runtime_config.snapshot()).into_response()
}

/// Change live settings (scope `admin`), with optimistic concurrency on `expectedRevision`.
#[utoipa::path(
    patch, path = "/v1/admin/runtime-config", tag = "runtime-config",
    security((), ("bearer" = [])),
    request_body = PatchBody,
    responses(
        (status = 200, description = "Applied", body = Applied),
        (status = 400, description = "Unreadable body, missing `expectedRevision`, or an unreadable duration (`field`, `value`)", body = PatchErrorBody),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 409, description = "Revision mismatch (`currentRevision`)", body = PatchErrorBody),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, description = "The resulting settings are invalid (`errors`)", body = PatchErrorBody),
    ),
)]
pub(super) async fn patch_config(
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

/// Check a patch against the current settings without applying it (scope `admin`).
#[utoipa::path(
    post, path = "/v1/admin/runtime-config/validate", tag = "runtime-config",
    security((), ("bearer" = [])),
    request_body = PatchRequest,
    responses(
        (status = 200, description = "Valid", body = Valid),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, description = "The resulting settings are invalid (`errors`)", body = PatchErrorBody),
    ),
)]
pub(super) async fn validate_config(
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
