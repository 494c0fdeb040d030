//! Result notices (issue 11): an execution started by `:enqueue` with `X-Callback-Url` tells a
//! [`ResultListener`] (the webhooks) when it is terminal. The store hands the notice over with
//! the waiters it wakes ([`super::store::Finalized::wake`]), so every path that ends an execution
//! (runtime reply, callback, retries exhausted, refused retry, removal, timeout) announces it,
//! exactly once since a record becomes terminal once.

use std::sync::Arc;
use std::time::Duration;

use super::ExecutionRecord;
use crate::model::ExecutionStatus;
use crate::support::trace_context::TraceContext;

/// What a terminal execution's webhook carries.
#[derive(Debug, Clone)]
pub struct ResultNotice {
    pub function: String,
    /// Validated at `:enqueue` (http/https, permitted by the outbound policy).
    pub callback_url: Arc<str>,
    /// The body of `GET /v1/executions/{id}` at the moment it became terminal.
    pub status: ExecutionStatus,
    pub trace: TraceContext,
    /// The final attempt's run time, start to end; zero when no attempt started.
    pub duration: Duration,
}

/// Told of every execution that has a result URL once it is terminal. Called outside the
/// store's lock; must not block (the webhooks queue the delivery).
pub trait ResultListener: Send + Sync {
    fn finished(&self, notice: ResultNotice);
}

/// A record's result URL and trace, taken before the record ends (ending drops its task).
pub(super) struct ResultTarget {
    listener: Arc<dyn ResultListener>,
    url: Arc<str>,
    trace: TraceContext,
}

impl ResultTarget {
    pub(super) fn of(
        listener: Option<&Arc<dyn ResultListener>>,
        record: &ExecutionRecord,
    ) -> Option<ResultTarget> {
        let listener = listener?;
        let task = record.task.as_ref()?;
        Some(ResultTarget {
            listener: listener.clone(),
            url: task.callback_url.clone()?,
            trace: task.trace.clone(),
        })
    }

    /// The notice of the record, now terminal.
    pub(super) fn notice(self, record: &ExecutionRecord) -> Announcement {
        let duration = match (record.started, record.finished) {
            (Some(s), Some(f)) => f.at.saturating_duration_since(s.at),
            _ => Duration::ZERO,
        };
        Announcement {
            listener: self.listener,
            notice: ResultNotice {
                function: record.function.name().to_owned(),
                callback_url: self.url,
                status: record.status(),
                trace: self.trace,
                duration,
            },
        }
    }
}

/// A notice with the listener it goes to, carried by `Finalized` until it wakes its waiters.
pub struct Announcement {
    listener: Arc<dyn ResultListener>,
    notice: ResultNotice,
}

impl Announcement {
    pub fn send(self) {
        self.listener.finished(self.notice);
    }
}
