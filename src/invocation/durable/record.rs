//! The shared execution record and the pure steps applied to it (compare-and-set steps of the
//! backend's transitions), apart from the service's use of them.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::RecordStep;
use crate::model::{AttemptResult, ErrorInfo, ExecutionState, ExecutionStatus};

/// The shared execution record: what `GET /v1/executions/{id}` shows on every replica, plus
/// what a replica needs to run the next attempt.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DurableRecord {
    pub function: String,
    pub state: ExecutionState,
    pub attempt: u32,
    #[serde(default)]
    pub idempotency_key: Option<String>,
    #[serde(default)]
    pub trace_id: Option<String>,
    /// W3C trace context of the enqueue (issue 11), forwarded on every attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracestate: Option<String>,
    /// `X-Callback-Url` (issue 11): the replica whose write makes the record terminal posts the
    /// result there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
    #[serde(default)]
    pub started_at: Option<String>,
    #[serde(default)]
    pub finished_at: Option<String>,
    #[serde(default)]
    pub output: Option<Box<RawValue>>,
    #[serde(default)]
    pub error: Option<ErrorInfo>,
    #[serde(default)]
    pub cold_start: bool,
    #[serde(default)]
    pub init_duration_ms: Option<i64>,
    /// A dead letter's request (issue 11): the runtime body `{"input":…,"metadata":…}` of an
    /// execution that ended in ERROR or TIMEOUT, kept for a redrive; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<Box<RawValue>>,
    /// The catalog revision of the function's registration when the execution was accepted:
    /// removing that registration ends the execution while it is queued, removing an earlier
    /// one (a delete racing a re-registration of the name) does not. Absent: ended by any
    /// removal of the name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration: Option<u64>,
}

impl DurableRecord {
    pub fn status(&self, execution_id: &str) -> ExecutionStatus {
        ExecutionStatus {
            execution_id: Arc::from(execution_id),
            status: self.state,
            started_at: self.started_at.clone(),
            finished_at: self.finished_at.clone(),
            output: self.output.clone().map(Arc::from),
            error: self.error.clone(),
            cold_start: self.cold_start,
            init_duration_ms: self.init_duration_ms,
        }
    }

    /// Whether this record is a dead letter that can be re-driven.
    pub fn is_dead_letter(&self) -> bool {
        crate::execution::dead_letters::is_dead_letter_state(self.state) && self.request.is_some()
    }

    /// The final attempt's run time, from its start to its end; zero when it never started.
    pub fn run_duration(&self) -> std::time::Duration {
        let instant = |text: &Option<String>| {
            text.as_deref()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        };
        match (instant(&self.started_at), instant(&self.finished_at)) {
            (Some(started), Some(finished)) => (finished - started).to_std().unwrap_or_default(),
            _ => std::time::Duration::ZERO,
        }
    }

    /// Whether removing the registration whose last catalog revision is `last` ends this
    /// execution: it was accepted by that registration or an earlier one, not a later one. A
    /// removal without a revision (a registration rolled back before it was recorded) ends
    /// only records from before revisions were stamped.
    pub fn accepted_by_removed(&self, last: Option<u64>) -> bool {
        match (self.registration, last) {
            (Some(accepted), Some(last)) => accepted <= last,
            (Some(_), None) => false,
            (None, _) => true,
        }
    }

    /// Ends a record still QUEUED because its function was removed (the queue's message is
    /// gone with it), keeping `request` (the message's body) as its dead letter; `None` for any
    /// other state (a running attempt finishes by itself).
    pub fn removed(&self, request: &[u8]) -> Option<DurableRecord> {
        (self.state == ExecutionState::Queued).then(|| DurableRecord {
            request: raw_json(request),
            state: ExecutionState::Error,
            error: Some(ErrorInfo::new(
                "FUNCTION_REMOVED",
                format!(
                    "Function '{}' was removed before queued execution could run",
                    self.function
                ),
            )),
            finished_at: Some(crate::model::format_instant(chrono::Utc::now())),
            ..self.clone()
        })
    }

    /// This record with a terminal local status applied (the state, timestamps and result).
    pub(super) fn finished_as(&self, status: &ExecutionStatus, attempt: u32) -> DurableRecord {
        DurableRecord {
            state: status.status,
            attempt,
            started_at: status.started_at.clone(),
            finished_at: status.finished_at.clone(),
            output: status.output.as_deref().map(boxed_raw),
            error: status.error.clone(),
            cold_start: status.cold_start,
            init_duration_ms: status.init_duration_ms,
            ..self.clone()
        }
    }
}

pub(super) fn boxed_raw(raw: &RawValue) -> Box<RawValue> {
    raw.to_owned()
}

/// The step a callback applies to a record nobody holds: a success or a final failure of the
/// current attempt ends it; an earlier attempt's, or a failure with retries left (the
/// redelivery retries), changes nothing.
pub(super) fn callback_step(
    record: &DurableRecord,
    attempt: Option<u32>,
    result: &AttemptResult,
) -> Option<DurableRecord> {
    if record.state.is_terminal() || attempt.is_some_and(|a| a != record.attempt) {
        return None;
    }
    let finished_at = Some(crate::model::format_instant(chrono::Utc::now()));
    match result {
        AttemptResult::Success(output) => Some(DurableRecord {
            state: ExecutionState::Success,
            output: output.as_deref().map(boxed_raw),
            error: None,
            finished_at,
            ..record.clone()
        }),
        AttemptResult::Failure(_) => None,
    }
}

/// Ends a record whose last attempt's replica was lost, keeping `request` as its dead letter.
pub(super) fn lost_step(error: ErrorInfo, request: Option<Box<RawValue>>) -> RecordStep {
    Box::new(move |r: &DurableRecord| {
        (!r.state.is_terminal()).then(|| DurableRecord {
            state: ExecutionState::Error,
            error: Some(error.clone()),
            request: request.clone(),
            output: None,
            finished_at: Some(crate::model::format_instant(chrono::Utc::now())),
            ..r.clone()
        })
    })
}

pub(super) fn raw_or_null(raw: &[u8]) -> Box<RawValue> {
    raw_json(raw).unwrap_or_else(|| boxed_raw(RawValue::NULL))
}

/// `raw` as JSON text, if it is.
pub(crate) fn raw_json(raw: &[u8]) -> Option<Box<RawValue>> {
    std::str::from_utf8(raw)
        .ok()
        .and_then(|s| RawValue::from_string(s.to_owned()).ok())
}

/// A callback routed to the replica holding the execution.
#[derive(Serialize)]
pub(super) struct RoutedCallback {
    pub attempt: Option<u32>,
    pub body: Box<RawValue>,
}

#[derive(Deserialize)]
pub(super) struct RoutedCallbackIn {
    pub attempt: Option<u32>,
    pub body: Box<RawValue>,
}
