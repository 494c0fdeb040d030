//! Invocation API: E6 `:invoke`, E7 `:enqueue`, E8 execution status, E9 runtime callbacks.

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

use super::error::ApiError;
use super::extract::{
    Segment, attempt_header, body_bytes, json_body, json_object, timeout_header, token_header,
};
use super::functions::require_name;
use crate::AppState;
use crate::invocation::InvokeInput;
use crate::model::{CallbackBody, InvocationResponse, InvocationStatus, compact};

/// InvocationRequest: `{"input": <any JSON, required>, "metadata": {string: string} | null}`.
#[derive(Deserialize)]
struct InvocationRequest {
    #[serde(default)]
    input: Option<Box<RawValue>>,
    #[serde(default)]
    metadata: Option<Box<RawValue>>,
}

/// The function name and request of `:invoke` / `:enqueue`, validated.
pub(crate) fn invoke_input(
    name: &str,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<InvokeInput, ApiError> {
    require_name(name)?;
    let idempotency_key = token_header(headers, "Idempotency-Key")?;
    let trace_id = token_header(headers, "X-Trace-Id")?;
    let request: InvocationRequest = json_body(headers, body)?;
    let Some(input) = request.input else {
        return Err(ApiError::Validation(vec![
            "input: Input payload is required".into(),
        ]));
    };
    let metadata = request.metadata.as_deref().map(string_map).transpose()?;
    Ok(InvokeInput {
        input: std::sync::Arc::from(compact(input)),
        metadata,
        idempotency_key,
        trace_id,
    })
}

/// `metadata` as a string → string map, forwarded as received when it already is one; scalar
/// values are turned into their text as Jackson does (`true` → `"true"`).
fn string_map(raw: &RawValue) -> Result<String, ApiError> {
    let invalid =
        || ApiError::Validation(vec!["metadata: must be an object of string values".into()]);
    let map: Option<serde_json::Map<String, Value>> =
        serde_json::from_str(raw.get()).map_err(|_| invalid())?;
    let Some(map) = map else {
        return Ok("null".to_owned());
    };
    if map.values().all(|v| v.is_string() || v.is_null()) {
        return Ok(raw.get().to_owned());
    }
    let mut coerced = serde_json::Map::with_capacity(map.len());
    for (k, v) in map {
        let v = match v {
            Value::String(_) | Value::Null => v,
            Value::Bool(b) => Value::String(b.to_string()),
            Value::Number(n) => Value::String(n.to_string()),
            Value::Array(_) | Value::Object(_) => return Err(invalid()),
        };
        coerced.insert(k, v);
    }
    Ok(Value::Object(coerced).to_string())
}

/// Splits `name:action` (the name may itself contain `:`).
fn split_action(segment: &str) -> Option<(&str, &str)> {
    segment.rsplit_once(':')
}

/// `POST /v1/functions/{name}:invoke` and `POST /v1/functions/{name}:enqueue`.
pub async fn function_action(
    State(state): State<AppState>,
    Segment(segment): Segment,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (name, sync) = match split_action(&segment) {
        Some((name, "invoke")) => (name, true),
        Some((name, "enqueue")) => (name, false),
        _ => return Err(ApiError::MethodNotAllowed),
    };
    let input = invoke_input(name, &headers, body)?;
    if sync {
        invoke(state, name, &headers, input).await
    } else {
        enqueue(state, name, input).await
    }
}

async fn invoke(
    state: AppState,
    name: &str,
    headers: &HeaderMap,
    input: InvokeInput,
) -> Result<Response, ApiError> {
    let wait_ms = timeout_header(headers)?;
    let result = state.invocations.invoke_sync(name, input, wait_ms).await?;
    // DECISIONS 1: a wait that elapsed is a 408 with the normal body.
    let status = if result.timed_out {
        StatusCode::REQUEST_TIMEOUT
    } else {
        StatusCode::OK
    };
    Ok(invocation_response(status, &result.response, true))
}

async fn enqueue(state: AppState, name: &str, input: InvokeInput) -> Result<Response, ApiError> {
    let execution_id = state.invocations.invoke_async(name, input).await?;
    let response = InvocationResponse {
        execution_id,
        status: InvocationStatus::Queued,
        output: None,
        error: None,
    };
    Ok(invocation_response(StatusCode::ACCEPTED, &response, false))
}

fn invocation_response(
    status: StatusCode,
    body: &InvocationResponse,
    with_id_header: bool,
) -> Response {
    let mut response = (status, Json(body)).into_response();
    if with_id_header {
        if let Ok(v) = HeaderValue::from_str(&body.execution_id) {
            response.headers_mut().insert("X-Execution-Id", v);
        }
    }
    response
}

/// `GET /v1/executions/{executionId}`.
pub async fn get_execution(
    State(state): State<AppState>,
    Segment(id): Segment,
) -> Result<Response, ApiError> {
    if id.trim().is_empty() {
        return Err(ApiError::Validation(vec![
            "executionId: Execution ID is required".into(),
        ]));
    }
    let status = state
        .invocations
        .store()
        .status(&id)
        .ok_or_else(|| ApiError::NotFound(format!("Execution not found: {id}")))?;
    Ok(Json(status).into_response())
}

/// `POST /v1/internal/executions/{executionId}:complete`.
pub async fn complete(
    State(state): State<AppState>,
    Segment(segment): Segment,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    let Some(id) = segment.strip_suffix(":complete") else {
        return Err(ApiError::RouteNotFound(format!(
            "/v1/internal/executions/{segment}"
        )));
    };
    if id.trim().is_empty() {
        return Err(ApiError::Validation(vec![
            "executionId: Execution ID is required".into(),
        ]));
    }
    // Runtimes are trusted to send JSON; the content type is not insisted upon.
    let callback: CallbackBody = json_object(&body_bytes(body)?)?;
    state
        .invocations
        .complete_from_callback(id, attempt_header(&headers), callback.into_result());
    Ok(StatusCode::NO_CONTENT)
}
