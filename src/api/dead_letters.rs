//! Dead-letter API (issue 11, item 3): list a function's dead letters, re-drive one.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::error::ApiError;
use super::extract::Segment;
use super::functions::require_name;
use super::openapi::{BadRequest, Forbidden, NotFound, Overloaded, TooManyRequests, Unauthorized};
use crate::AppState;
use crate::execution::dead_letters::{DEFAULT_LIMIT, DeadLetterQuery, MAX_LIMIT};
use crate::model::{ExecutionState, ExecutionStatus, InvocationResponse, InvocationStatus};

/// The query of the listing (documentation: [`list`] parses it).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct ListParams {
    /// `error` or `timeout`; absent lists both.
    #[param(required = false, pattern = "^(error|timeout)$")]
    status: String,
    /// Items per page, 1 to 200 (default 50).
    #[param(required = false, minimum = 1, maximum = 200)]
    limit: u32,
    /// `nextCursor` of the previous page (opaque).
    #[param(required = false, pattern = "^[1-9][0-9]{0,18}$")]
    after: String,
}

/// One page of dead letters, newest first.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DeadLetterList {
    items: Vec<ExecutionStatus>,
    /// Pass as `after` for the next (older) page; `null` on the last page. A page may hold
    /// fewer than `limit` items and still have a next one.
    #[schema(required)]
    next_cursor: Option<String>,
}

/// Lists a function's dead letters: its async executions (`:enqueue`) that ended in `error` or
/// `timeout` and still keep their input, newest first (scope `invoke`).
#[utoipa::path(
    get, path = "/v1/functions/{name}/executions", tag = "invocations",
    security((), ("bearer" = [])),
    params(
        ("name" = String, Path, description = "Function name", pattern = "\\S"),
        ListParams,
    ),
    responses(
        (status = 200, description = "One page of dead letters", body = DeadLetterList),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 503, description = "`SERVICE_UNAVAILABLE`: the shared state backend cannot be reached now", body = super::error::ErrorBody,
         headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))),
    ),
)]
pub async fn list(
    State(state): State<AppState>,
    Segment(name): Segment,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    require_name(&name)?;
    let Query(pairs) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let query = list_query(&pairs)?;
    let page = state.invocations.dead_letters(&name, query).await?;
    Ok(Json(DeadLetterList {
        items: page.items,
        next_cursor: page.next_cursor.map(|c| c.to_string()),
    })
    .into_response())
}

/// The listing's parameters, validated exactly as the document describes them (the first of a
/// repeated one counts; unknown ones are ignored).
fn list_query(pairs: &[(String, String)]) -> Result<DeadLetterQuery, ApiError> {
    let param = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    // Digits only: `str::parse` would also take a sign.
    let number = |v: &str| {
        (!v.is_empty() && v.len() <= 19 && v.bytes().all(|b| b.is_ascii_digit()))
            .then(|| v.parse::<u64>().ok())
            .flatten()
    };
    let mut errors = Vec::new();
    let status = match param("status") {
        None => None,
        Some("error") => Some(ExecutionState::Error),
        Some("timeout") => Some(ExecutionState::Timeout),
        Some(_) => {
            errors.push("status: must be error or timeout".to_owned());
            None
        }
    };
    let limit = match param("limit").map(number) {
        None => DEFAULT_LIMIT,
        Some(Some(n)) if (1..=MAX_LIMIT as u64).contains(&n) => n as usize,
        Some(_) => {
            errors.push(format!(
                "limit: must be an integer between 1 and {MAX_LIMIT}"
            ));
            DEFAULT_LIMIT
        }
    };
    let after = match param("after") {
        None => None,
        Some(v) => match number(v).filter(|_| !v.starts_with('0')) {
            Some(n) => Some(n),
            None => {
                errors.push("after: not a cursor this server returned (nextCursor)".to_owned());
                None
            }
        },
    };
    if errors.is_empty() {
        Ok(DeadLetterQuery {
            status,
            after,
            limit,
        })
    } else {
        Err(ApiError::Validation(errors))
    }
}

/// `POST /v1/executions/{id}:redrive` (documented as [`redrive`]); any other action, or none,
/// is 405.
pub async fn execution_action(
    State(state): State<AppState>,
    Segment(segment): Segment,
) -> Result<Response, ApiError> {
    match segment.rsplit_once(':') {
        Some((id, "redrive")) => redrive(state, id).await,
        _ => Ok(method_not_allowed(&segment)),
    }
}

/// Re-drives a dead letter: a new async execution of its function with the same input and
/// metadata, admitted as `:enqueue` admits one (scope `invoke`). The dead letter stays listed.
#[utoipa::path(
    post, path = "/v1/executions/{executionId}:redrive", tag = "invocations",
    security((), ("bearer" = [])),
    params(("executionId" = String, Path, description = "The dead letter's execution id", pattern = "\\S")),
    responses(
        (status = 202, description = "The new execution, queued (as `:enqueue` answers)", body = InvocationResponse),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, description = "`NOT_FOUND`: no such execution (or its function is gone)", body = super::error::ErrorBody),
        (status = 409, description = "`CONFLICT`: the execution is not a dead letter (not ended in error or timeout, or a sync invocation)", body = super::error::ErrorBody),
        (status = 429, response = TooManyRequests),
        (status = 501, description = "`NOT_IMPLEMENTED`: the async queue is disabled", body = super::error::ErrorBody),
        (status = 503, response = Overloaded),
    ),
)]
async fn redrive(state: AppState, id: &str) -> Result<Response, ApiError> {
    if id.trim().is_empty() {
        return Err(ApiError::Validation(vec![
            "executionId: Execution ID is required".into(),
        ]));
    }
    let execution_id = state.invocations.redrive(id).await?;
    let body = InvocationResponse {
        execution_id,
        status: InvocationStatus::Queued,
        output: None,
        error: None,
    };
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// 405 on `/v1/executions/{id}`: `{id}:redrive` takes POST, an id GET (the route serves both,
/// so axum's own `Allow` would list them all).
pub fn method_not_allowed(segment: &str) -> Response {
    let allow = match segment.rsplit_once(':') {
        Some((_, "redrive")) => "POST",
        _ => "GET,HEAD",
    };
    let mut response = ApiError::MethodNotAllowed.into_response();
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

/// The route's fallback for the methods it does not serve.
pub async fn execution_method_not_allowed(Segment(segment): Segment) -> Response {
    method_not_allowed(&segment)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(q: &[(&str, &str)]) -> Vec<(String, String)> {
        q.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn query_defaults_and_bounds() {
        let q = list_query(&[]).unwrap();
        assert_eq!((q.status, q.after, q.limit), (None, None, DEFAULT_LIMIT));
        let q = list_query(&pairs(&[
            ("status", "timeout"),
            ("limit", "200"),
            ("after", "7"),
        ]))
        .unwrap();
        assert_eq!(
            (q.status, q.after, q.limit),
            (Some(ExecutionState::Timeout), Some(7), 200)
        );
        let q = list_query(&pairs(&[("x", "y"), ("after", "9999999999999999999")])).unwrap();
        assert_eq!((q.status, q.after), (None, Some(9_999_999_999_999_999_999)));
        for bad in [
            ("status", ""),
            ("status", "ERROR"),
            ("status", "success"),
            ("status", "queued"),
            ("limit", "0"),
            ("limit", "201"),
            ("limit", "-1"),
            ("limit", "+5"),
            ("limit", " 5"),
            ("limit", "ten"),
            ("after", "0"),
            ("after", "07"),
            ("after", "abc"),
            ("after", "99999999999999999999"),
        ] {
            let e = list_query(&pairs(&[bad])).unwrap_err();
            assert!(matches!(e, ApiError::Validation(_)), "{bad:?}");
        }
    }
}
