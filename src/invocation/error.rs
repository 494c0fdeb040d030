//! What an invocation can be refused with; the API layer maps each to its HTTP answer.

use crate::queue::{QueueError, RejectReason};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvokeError {
    #[error("Rate limit exceeded")]
    RateLimited,
    #[error("Function not found: {0}")]
    FunctionNotFound(String),
    #[error("Queue for function '{0}' is full")]
    QueueFull(String),
    #[error(
        "Async invocation requires the async-queue module: set NANOFAAS_ASYNC_QUEUE_ENABLED=true"
    )]
    AsyncDisabled,
    #[error("Too many executions in flight; retry later")]
    StoreFull,
    #[error("Too many executions of function '{0}' in flight; retry later")]
    FunctionShareFull(String),
    /// The shared state backend cannot be reached now (503 with `Retry-After`).
    #[error("State backend unavailable: {0}")]
    StateUnavailable(String),
    #[error("Sync queue rejected the invocation ({})", .reason.as_str())]
    SyncQueueRejected {
        reason: RejectReason,
        retry_after_seconds: u32,
    },
    #[error("Execution not found: {0}")]
    ExecutionNotFound(String),
    /// A redrive of an execution that is not a dead letter (issue 11).
    #[error(
        "Execution {0} is not a dead letter: only an async execution that ended in error or timeout can be re-driven"
    )]
    NotDeadLetter(String),
}

impl InvokeError {
    pub(super) fn from_queue(e: QueueError, function: &str) -> Self {
        match e {
            QueueError::Full => InvokeError::QueueFull(function.to_owned()),
            QueueError::SyncRejected {
                reason,
                retry_after_seconds,
            } => InvokeError::SyncQueueRejected {
                reason,
                retry_after_seconds,
            },
        }
    }
}
