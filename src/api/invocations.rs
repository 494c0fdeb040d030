//! Invocation API: E6 `:invoke`, E7 `:enqueue`, E8 execution status, E9 runtime callbacks.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest as _, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::support::headers;

use super::error::{ApiError, ErrorBody};
use super::extract::{
    Segment, attempt_header, body_bytes, header_text, json_body, json_object, timeout_header,
    token_header,
};
use super::functions::require_name;
use super::openapi::{
    BadRequest, Forbidden, NotFound, Overloaded, PayloadTooLarge, TooManyRequests, Unauthorized,
    UnsupportedMediaType,
};
use crate::AppState;
use crate::invocation::InvokeInput;
use crate::model::{CallbackBody, ExecutionStatus, InvocationResponse, InvocationStatus, compact};
use crate::support::log_format::{current_invocation, in_invocation};
use crate::support::schema;
use crate::support::trace_context::parse_traceparent;
use tracing::Instrument as _;

/// InvocationRequest: `{"input": <any JSON, required>, "metadata": {string: string} | null}`.
#[derive(Deserialize, utoipa::ToSchema)]
pub(crate) struct InvocationRequest {
    #[serde(default)]
    #[schema(schema_with = input_schema, required)]
    input: Option<Box<RawValue>>,
    #[serde(default)]
    #[schema(schema_with = metadata_schema)]
    metadata: Option<Box<RawValue>>,
}

/// Any JSON value but null (`false`, `0`, `""`, `[]`, `{}` are inputs).
fn input_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{AnyOfBuilder, ObjectBuilder, Type};
    let kinds = [
        Type::Object,
        Type::Array,
        Type::String,
        Type::Number,
        Type::Boolean,
    ];
    kinds
        .into_iter()
        .fold(AnyOfBuilder::new(), |b, t| {
            b.item(ObjectBuilder::new().schema_type(t))
        })
        .description(Some("The function's input: any JSON value except null"))
        .build()
        .into()
}

fn metadata_schema() -> utoipa::openapi::schema::Schema {
    schema::string_map("Metadata forwarded with the invocation (scalar values become strings)")
}

/// The optional headers `:invoke` and `:enqueue` read (documentation: `token_header` reads them).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
struct KeyHeaders {
    /// Deduplicates invocations of this function for 5 minutes; blank is absent.
    #[param(
        rename = "Idempotency-Key",
        required = false,
        max_length = 1024,
        pattern = "^[\t -~]*$"
    )]
    idempotency_key: String,
    /// Forwarded to the function.
    #[param(
        rename = "X-Trace-Id",
        required = false,
        max_length = 1024,
        pattern = "^[\t -~]*$"
    )]
    trace_id: String,
    /// W3C trace context, forwarded to the function on every attempt. Invalid or absent: a new
    /// trace starts (its trace id is `X-Trace-Id` when that is 32 hex digits or a UUID); never
    /// an error (docs/tracing.md).
    #[param(rename = "traceparent", required = false)]
    traceparent: String,
    /// Vendor trace state, forwarded with a valid `traceparent` (at most 512 characters kept).
    #[param(rename = "tracestate", required = false)]
    tracestate: String,
}

/// `:enqueue`'s result webhook (documentation: `callback_url` reads it).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
struct CallbackHeader {
    /// Where the execution's result (the body of `GET /v1/executions/{id}`) is POSTed once it
    /// is terminal (docs/webhooks.md). An absolute http/https URL permitted by the outbound
    /// policy (docs/ssrf.md); anything else is a 400. Blank is absent.
    #[param(rename = "X-Callback-Url", required = false, max_length = 2048)]
    callback_url: String,
}

/// `:invoke`'s wait (documentation: `timeout_header` reads it).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
struct WaitHeader {
    /// Milliseconds this request waits (0 or less: not at all); default the function's
    /// `timeoutMs`. An integer (the header's text, so a string schema).
    #[param(
        rename = "X-Timeout-Ms",
        required = false,
        pattern = "^[ \t]*[+-]?[0-9]{1,18}[ \t]*$"
    )]
    timeout_ms: String,
}

/// The function name and request of `:invoke` / `:enqueue`, validated.
pub(crate) fn invoke_input(
    name: &str,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<InvokeInput, ApiError> {
    require_name(name)?;
    let idempotency_key = token_header(headers, &headers::IDEMPOTENCY_KEY)?;
    let trace_id = token_header(headers, &headers::X_TRACE_ID)?;
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
        // Set by the handler, from the trace layer (`api::trace`).
        trace: None,
        callback_url: None,
    })
}

/// `X-Callback-Url` of `:enqueue`: absent or blank is `None`; sent more than once, not text, or
/// refused by the webhook rules is a 400.
fn callback_url(state: &AppState, headers: &HeaderMap) -> Result<Option<Arc<str>>, ApiError> {
    let name = headers::X_CALLBACK_URL.label;
    let mut values = headers.get_all(&headers::X_CALLBACK_URL.name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::BadRequest(format!("{name} must be given once")));
    }
    let Some(text) = header_text(value, name)? else {
        return Ok(None);
    };
    state
        .webhooks
        .check_callback_url(text)
        .map_err(|reason| ApiError::BadRequest(format!("{name} {reason}")))?;
    Ok(Some(Arc::from(text)))
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

/// `POST /v1/functions/{name}:invoke` and `POST /v1/functions/{name}:enqueue` (documented as
/// [`invoke`] and [`enqueue`]); any other action is 405.
pub async fn function_action(
    State(state): State<AppState>,
    Segment(segment): Segment,
    mut request: Request,
) -> Result<Response, ApiError> {
    // Taken rather than extracted: the `HeaderMap` extractor clones.
    let headers = std::mem::take(request.headers_mut());
    let trace = current_invocation();
    let body = Bytes::from_request(request, &state).await;
    let (name, sync) = match split_action(&segment) {
        Some((name, "invoke")) => (name, true),
        Some((name, "enqueue")) => (name, false),
        _ => return Ok(super::functions::method_not_allowed(&segment)),
    };
    let mut input = invoke_input(name, &headers, body)?;
    // The trace layer read the trace context and runs this request as its invocation; a path
    // it did not recognise as an invocation gets both here.
    let (trace, from_layer) = match trace {
        Some(trace) => (trace, true),
        None => (
            super::trace::trace_context(&headers, input.trace_id.as_deref()),
            false,
        ),
    };
    input.trace = Some(trace.clone());
    if !sync {
        input.callback_url = callback_url(&state, &headers)?;
    }
    let work = async move {
        if sync {
            invoke(state, name, &headers, input).await
        } else {
            enqueue(state, name, input).await
        }
    };
    if from_layer {
        work.await
    } else {
        in_invocation(trace, work).await
    }
}

/// Invoke a function and wait for its result (scope `invoke`).
#[utoipa::path(
    post, path = "/v1/functions/{name}:invoke", tag = "invocations",
    security((), ("bearer" = [])),
    params(
        ("name" = String, Path, description = "Function name (may itself contain `:`)", pattern = "\\S"),
        KeyHeaders,
        WaitHeader,
    ),
    request_body = InvocationRequest,
    responses(
        (status = 200, description = "Finished: `success`, or `error` with `error` set", body = InvocationResponse,
         headers(("X-Execution-Id" = String, description = "The execution's id"))),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 408, description = "The wait elapsed: `status` is `timeout` (DECISIONS 1)", body = InvocationResponse,
         headers(("X-Execution-Id" = String, description = "The execution's id"))),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 429, description = "`RATE_LIMITED`, `QUEUE_FULL`, or `SYNC_QUEUE_REJECTED` (sync-queue admission)", body = ErrorBody,
         headers(
            ("Retry-After" = u32, description = "Seconds to wait before retrying"),
            ("X-Queue-Reject-Reason" = String, description = "`depth`, `est_wait` or `timeout` (SYNC_QUEUE_REJECTED only)"),
         )),
        (status = 503, response = Overloaded),
    ),
)]
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

/// Enqueue an invocation (scope `invoke`); poll its execution for the result.
#[utoipa::path(
    post, path = "/v1/functions/{name}:enqueue", tag = "invocations",
    security((), ("bearer" = [])),
    params(
        ("name" = String, Path, description = "Function name (may itself contain `:`)", pattern = "\\S"),
        KeyHeaders,
        CallbackHeader,
    ),
    request_body = InvocationRequest,
    responses(
        (status = 202, description = "Queued (a replay answers the original id, `queued`)", body = InvocationResponse),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 429, response = TooManyRequests),
        (status = 501, description = "`NOT_IMPLEMENTED`: the async queue is disabled (the message names the variable)", body = ErrorBody),
        (status = 503, response = Overloaded),
    ),
)]
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

/// The answer of `:invoke` and `:enqueue`: written into one buffer sized for it (axum's `Json`
/// writes through a growing `BytesMut` in many small copies, issue 12).
fn invocation_response(
    status: StatusCode,
    body: &InvocationResponse,
    with_id_header: bool,
) -> Response {
    let sized = 128 + body.output.as_ref().map_or(0, |o| o.get().len());
    let mut json = Vec::with_capacity(sized);
    if serde_json::to_writer(&mut json, body).is_err() {
        // Not reached (raw output is valid JSON); axum's answer to a failed serialisation.
        return Json(body).into_response();
    }
    let mut response = Response::new(axum::body::Body::from(json));
    *response.status_mut() = status;
    let map = response.headers_mut();
    map.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if with_id_header {
        if let Ok(v) = HeaderValue::from_str(&body.execution_id) {
            map.insert(headers::X_EXECUTION_ID, v);
        }
    }
    response
}

/// An execution's status and result (scope `invoke`).
#[utoipa::path(
    get, path = "/v1/executions/{executionId}", tag = "invocations",
    security((), ("bearer" = [])),
    params(("executionId" = String, Path, description = "Execution id", pattern = "\\S")),
    responses(
        (status = 200, description = "The execution (terminal states never change)", body = ExecutionStatus),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    ),
)]
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
        .execution_status(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("Execution not found: {id}")))?;
    Ok(Json(status).into_response())
}

/// A runtime reports an attempt's result. Unknown, stale and duplicate completions are answered
/// 204 and change nothing (DECISIONS 5). Not behind authentication (runtimes hold no token).
#[utoipa::path(
    post, path = "/v1/internal/executions/{executionId}:complete", tag = "runtime",
    params(
        ("executionId" = String, Path, description = "Execution id (may be percent-encoded)", pattern = "\\S"),
        ("X-Dispatch-Attempt" = Option<String>, Header, description = "The attempt this result is for; absent or not a positive integer: the current one"),
    ),
    request_body(content = CallbackBody, content_type = "application/json",
                 description = "Read as JSON whatever the Content-Type"),
    responses(
        (status = 204, description = "Accepted (or ignored)"),
        (status = 400, response = BadRequest),
        (status = 413, response = PayloadTooLarge),
    ),
)]
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
    // Logged with the execution's trace id: the runtime's traceparent, else the execution's.
    let trace_id = headers
        .get(&headers::TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_traceparent)
        .map(|tp| tp[3..35].to_owned())
        .or_else(|| state.invocations.store().trace_id(id));
    let span = tracing::error_span!("callback", trace_id, execution_id = id);
    async {
        // Runtimes are trusted to send JSON; the content type is not insisted upon.
        let raw = body_bytes(body)?;
        let callback: CallbackBody = json_object(&raw)?;
        state
            .invocations
            .complete_callback(id, attempt_header(&headers), callback.into_result(), raw)
            .await;
        Ok(StatusCode::NO_CONTENT)
    }
    .instrument(span)
    .await
}
