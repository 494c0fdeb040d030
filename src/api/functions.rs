//! Function API: E1–E5 (list, register, get, delete, replicas).

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::extract::{Segment, json_body};
use crate::AppState;
use crate::function::{FunctionResponse, FunctionSpecRequest};
use crate::support::lenient::lenient_int;

pub async fn list(State(state): State<AppState>) -> Response {
    let functions = state.registry.list();
    let body: Vec<FunctionResponse<'_>> = functions.iter().map(|f| f.response()).collect();
    Json(body).into_response()
}

pub async fn register(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request: FunctionSpecRequest = json_body(&headers, body)?;
    let function = state.registry.register(request).await?;
    Ok((StatusCode::CREATED, Json(function.response())).into_response())
}

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

pub async fn delete(
    State(state): State<AppState>,
    Segment(name): Segment,
) -> Result<StatusCode, ApiError> {
    require_name(&name)?;
    state.registry.remove(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct ReplicaRequest {
    #[serde(default, deserialize_with = "lenient_int")]
    replicas: Option<i64>,
}

#[derive(Serialize)]
struct ReplicaResponse<'a> {
    function: &'a str,
    replicas: u32,
}

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

pub fn require_name(name: &str) -> Result<(), ApiError> {
    if name.trim().is_empty() {
        return Err(ApiError::Validation(vec![
            "name: Function name is required".into(),
        ]));
    }
    Ok(())
}
