//! The invocation service: synchronous and asynchronous invocation (REFERENCE §3.1–3.2),
//! dispatch (§3.3), completion from dispatch replies and runtime callbacks (§3.4), retries (§3.5)
//! and idempotency (§3.6). It knows nothing of HTTP; the API layer maps its errors.
//!
//! Each sync invocation waits on a `oneshot` registered in its execution record; whichever of the
//! runtime's HTTP reply and its `:complete` callback arrives first resolves it, the other is a
//! no-op. Dispatches run as tracked tasks so a client disconnect never cancels an execution and
//! shutdown can drain them.

pub mod idempotency;
mod self_wake;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use crate::admission::RateLimiter;
use crate::dispatch::Dispatcher;
use crate::execution::store::{
    Abort, BeginDispatch, Completion, EffectKind, ExecutionStore, Finalized, Subscription,
};
use crate::execution::{Outcome, Payload, Task};
use crate::function::ExecutionMode;
use crate::metrics::{FunctionLabel, Metrics};
use crate::model::{AttemptResult, ColdStart, ErrorInfo, InvocationResponse, Json};
use crate::queue::QueueManager;
use crate::registry::{RegisteredFunction, Registry};
use idempotency::{Claim, IdempotencyStore};

/// Why a sync-queue admission was refused (`X-Queue-Reject-Reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    Depth,
    EstWait,
    Timeout,
}

impl RejectReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::Depth => "depth",
            RejectReason::EstWait => "est_wait",
            RejectReason::Timeout => "timeout",
        }
    }
}

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
    #[error("Sync queue rejected the invocation ({})", .reason.as_str())]
    SyncQueueRejected {
        reason: RejectReason,
        retry_after_seconds: u32,
    },
}

/// A function's queue refused a task: it is full, or the function is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("queue full or closed")]
pub struct QueueRejected;

/// One invocation request, validated by the API layer.
pub struct InvokeInput {
    pub input: Json,
    /// The runtime request body, `{"input": …, "metadata": …}`.
    pub body: Bytes,
    pub idempotency_key: Option<String>,
    pub trace_id: Option<String>,
}

/// The answer to a sync invocation.
pub struct SyncResult {
    pub response: InvocationResponse,
    pub timed_out: bool,
}

/// Where a new execution goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// Core only: dispatched at once, no concurrency limit.
    Inline,
    /// The function's bounded queue and concurrency slots.
    Queue,
    /// Sync-queue admission, then the function's queue.
    SyncQueue,
}

enum Admitted {
    /// A new execution; `Some(task)` when the caller is to drive its dispatch (inline route).
    New(Arc<str>, Option<Task>),
    Existing(Arc<str>),
}

/// A dispatch driven by the request that created the execution, so the common case needs no task
/// hop. If the request goes away first (client gone, callback answered, wait timed out), the
/// unfinished dispatch is detached onto the tracker and still completes.
struct DrivenDispatch {
    future: Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>>,
    tracker: TaskTracker,
}

/// Never resolves (its output type is uninhabited): it only drives the dispatch while the
/// request waits on the execution's outcome.
impl std::future::Future for DrivenDispatch {
    type Output = std::convert::Infallible;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let Some(future) = self.future.as_mut() else {
            return std::task::Poll::Pending;
        };
        match future.as_mut().poll(cx) {
            std::task::Poll::Ready(()) => {
                self.future = None;
                // Done: the outcome arrives through the execution's waiter.
                std::task::Poll::Pending
            }
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }
}

impl Drop for DrivenDispatch {
    fn drop(&mut self) {
        if let Some(future) = self.future.take() {
            self.tracker.spawn(future);
        }
    }
}

pub struct InvocationService {
    registry: Arc<Registry>,
    store: Arc<ExecutionStore>,
    idempotency: Arc<IdempotencyStore>,
    limiter: Arc<RateLimiter>,
    dispatcher: Dispatcher,
    metrics: Arc<Metrics>,
    queue: Arc<QueueManager>,
    async_enabled: bool,
    tracker: TaskTracker,
}

/// The shared components the service works with.
pub struct Parts {
    pub registry: Arc<Registry>,
    pub store: Arc<ExecutionStore>,
    pub idempotency: Arc<IdempotencyStore>,
    pub limiter: Arc<RateLimiter>,
    pub dispatcher: Dispatcher,
    pub metrics: Arc<Metrics>,
    pub queue: Arc<QueueManager>,
    pub async_enabled: bool,
}

impl InvocationService {
    /// Builds the service and connects the queue's scheduler to its dispatch.
    pub fn new(parts: Parts) -> Arc<Self> {
        let service = Arc::new(InvocationService {
            registry: parts.registry,
            store: parts.store,
            idempotency: parts.idempotency,
            limiter: parts.limiter,
            dispatcher: parts.dispatcher,
            metrics: parts.metrics,
            queue: parts.queue,
            async_enabled: parts.async_enabled,
            tracker: TaskTracker::new(),
        });
        let weak = Arc::downgrade(&service);
        service.queue.set_spawner(move |task| {
            if let Some(service) = weak.upgrade() {
                service.spawn_dispatch(task);
            }
        });
        service
    }

    pub fn store(&self) -> &Arc<ExecutionStore> {
        &self.store
    }

    pub fn queue(&self) -> &Arc<QueueManager> {
        &self.queue
    }

    pub fn tracker(&self) -> &TaskTracker {
        &self.tracker
    }

    /// REFERENCE §0.1: the sync queue when on (a live switch), else the function's queue when
    /// the async-queue module is on, else inline.
    fn sync_route(&self) -> Route {
        if self.queue.sync_settings().enabled() {
            Route::SyncQueue
        } else if self.async_enabled {
            Route::Queue
        } else {
            Route::Inline
        }
    }

    /// `POST /v1/functions/{name}:invoke` (REFERENCE §3.2).
    pub async fn invoke_sync(
        self: &Arc<Self>,
        name: &str,
        input: InvokeInput,
        wait_ms: Option<i64>,
    ) -> Result<SyncResult, InvokeError> {
        if !self.limiter.try_acquire() {
            return Err(InvokeError::RateLimited);
        }
        let function = self
            .registry
            .get(name)
            .ok_or_else(|| InvokeError::FunctionNotFound(name.to_owned()))?;
        let route = self.sync_route();
        let (execution_id, created, driven) =
            match self.create_or_reuse(&function, input, route).await? {
                Admitted::New(id, task) => (id, true, task),
                Admitted::Existing(id) => (id, false, None),
            };
        let mut driven = DrivenDispatch {
            future: driven.map(|task| {
                let service = self.clone();
                Box::pin(async move { service.dispatch(task).await })
                    as std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
            }),
            tracker: self.tracker.clone(),
        };
        let wait = match wait_ms {
            Some(ms) => Duration::from_millis(ms.max(0) as u64),
            None => Duration::from_millis(function.spec.timeout_ms),
        };
        let deadline = Instant::now() + wait;
        // Only the request that queued an execution times its queue wait out.
        let mut queue_deadline = (created && route == Route::SyncQueue)
            .then(|| Instant::now() + self.queue.sync_settings().max_queue_wait());
        let outcome = match self.store.subscribe(&execution_id) {
            Subscription::Done(outcome) => outcome,
            Subscription::Missing => Outcome::Error(evicted()),
            // The driven dispatch completes the execution inside this task's poll; its wake-up
            // of this very task is turned into a direct re-poll (see `self_wake`).
            Subscription::Waiting(mut rx) => self_wake::without_self_wakes(async { loop {
                let queue_wait = async {
                    match queue_deadline {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    // An outcome that is ready wins over a deadline that is ready too.
                    biased;
                    result = &mut rx => break result.unwrap_or_else(|_| Outcome::Error(evicted())),
                    never = &mut driven => match never {},
                    () = tokio::time::sleep_until(deadline) => {
                        if let Ok(outcome) = rx.try_recv() {
                            break outcome;
                        }
                        // Only the request that created the execution ends it; a replay with a
                        // shorter timeout just stops waiting (DECISIONS 4, B8). If it ended by
                        // itself in the meantime (say the runtime call failed at the same
                        // deadline), the answer is what it became, never a 408 that the
                        // execution's own status would contradict.
                        if created
                            && !self.end_waiting(&function, &execution_id, Abort::Timeout)
                        {
                            if let Subscription::Done(outcome) = self.store.subscribe(&execution_id) {
                                break outcome;
                            }
                        }
                        // Every wait that times out counts (REFERENCE §3.2).
                        self.metrics.for_function(&function).timeout.inc();
                        break Outcome::Timeout;
                    }
                    () = queue_wait => {
                        queue_deadline = None;
                        if self.end_waiting(&function, &execution_id, Abort::QueueTimeout) {
                            break Outcome::QueueTimeout;
                        }
                    }
                }
            }})
            .await,
        };
        if let Outcome::QueueTimeout = outcome {
            return Err(InvokeError::SyncQueueRejected {
                reason: RejectReason::Timeout,
                retry_after_seconds: self.queue.sync_settings().retry_after_seconds(),
            });
        }
        Ok(SyncResult {
            timed_out: matches!(outcome, Outcome::Timeout),
            response: outcome.response(execution_id),
        })
    }

    /// Ends an execution its caller stopped waiting for. A still-queued task leaves its queue so
    /// it is never dispatched (DECISIONS 4, B7). A queue-wait expiry ends only a task that was
    /// still queued. Returns whether the execution was ended here.
    fn end_waiting(&self, function: &RegisteredFunction, id: &str, reason: Abort) -> bool {
        let queue_wait = matches!(reason, Abort::QueueTimeout);
        let was_queued = self.queue.cancel(function.name(), id, queue_wait);
        match reason {
            Abort::QueueTimeout if !was_queued => false,
            Abort::QueueTimeout => {
                self.metrics
                    .sync_timedout
                    .get_or_create(&FunctionLabel {
                        function: function.name().to_owned(),
                    })
                    .inc();
                if let Some(mut f) = self.store.abort(id, Abort::QueueTimeout) {
                    f.wake();
                }
                true
            }
            reason => match self.store.abort(id, reason) {
                Some(mut f) => {
                    f.wake();
                    true
                }
                None => false,
            },
        }
    }

    /// `POST /v1/functions/{name}:enqueue` (REFERENCE §1.11). Returns the execution id.
    pub async fn invoke_async(
        self: &Arc<Self>,
        name: &str,
        input: InvokeInput,
    ) -> Result<Arc<str>, InvokeError> {
        if !self.limiter.try_acquire() {
            return Err(InvokeError::RateLimited);
        }
        let function = self
            .registry
            .get(name)
            .ok_or_else(|| InvokeError::FunctionNotFound(name.to_owned()))?;
        if !self.async_enabled {
            return Err(InvokeError::AsyncDisabled);
        }
        match self.create_or_reuse(&function, input, Route::Queue).await? {
            Admitted::New(id, _) | Admitted::Existing(id) => Ok(id),
        }
    }

    /// REFERENCE §3.1 steps 3–4: a new execution (admitted) or the replay of an existing one.
    async fn create_or_reuse(
        self: &Arc<Self>,
        function: &Arc<RegisteredFunction>,
        input: InvokeInput,
        route: Route,
    ) -> Result<Admitted, InvokeError> {
        let key = input.idempotency_key.filter(|k| !k.trim().is_empty());
        let claim = match &key {
            Some(k) => {
                let store = &self.store;
                match self
                    .idempotency
                    .claim(function.name(), k, |id| store.liveness(id))
                    .await
                {
                    Claim::Replay(id) => return Ok(Admitted::Existing(id)),
                    Claim::Owner(guard) => Some(guard),
                }
            }
            None => None,
        };
        let execution_id = new_execution_id();
        let task = Task {
            execution_id: execution_id.clone(),
            function: function.clone(),
            payload: Arc::new(Payload {
                input: input.input,
                body: input.body,
            }),
            idempotency_key: key.map(Arc::from),
            trace_id: input.trace_id.map(Arc::from),
            attempt: 1,
            enqueued_at: Instant::now(),
            slot: None,
        };
        self.store
            .insert(task.clone())
            .map_err(|_| InvokeError::StoreFull)?;
        let driven = match self.admit(task, route).await {
            Ok(driven) => driven,
            Err(e) => {
                // A refused admission leaves nothing behind; the claim is abandoned on drop.
                self.store.remove(&execution_id);
                return Err(e);
            }
        };
        if let Some(guard) = claim {
            guard.publish(execution_id.clone());
        }
        Ok(Admitted::New(execution_id, driven))
    }

    /// Admits a new execution; returns the task when the caller is to drive its dispatch.
    async fn admit(
        self: &Arc<Self>,
        task: Task,
        route: Route,
    ) -> Result<Option<Task>, InvokeError> {
        match route {
            Route::SyncQueue => self.queue.admit_sync(task).map(|()| None),
            Route::Queue => self.enqueue(task).map(|()| None),
            Route::Inline if task.function.effective_mode == ExecutionMode::Local => {
                // An in-process echo completes at once.
                self.dispatch(task).await;
                Ok(None)
            }
            Route::Inline => Ok(Some(task)),
        }
    }

    fn enqueue(&self, task: Task) -> Result<(), InvokeError> {
        let function = task.function.clone();
        let metrics = self.metrics.for_function(&function);
        match self.queue.enqueue(task) {
            Ok(()) => {
                metrics.enqueue.inc();
                Ok(())
            }
            Err(QueueRejected) => {
                metrics.queue_rejected.inc();
                Err(InvokeError::QueueFull(function.name().to_owned()))
            }
        }
    }

    pub fn spawn_dispatch(self: &Arc<Self>, task: Task) {
        let service = self.clone();
        self.tracker
            .spawn(async move { service.dispatch(task).await });
    }

    /// Sends one attempt to its runtime and applies the reply (REFERENCE §3.3).
    ///
    /// A task from a queue holds one concurrency slot for exactly as long as its exchange with
    /// the runtime is open, and this is the one place that releases it: an early callback
    /// completes the execution but the runtime is still busy until it answers.
    pub async fn dispatch(self: &Arc<Self>, task: Task) {
        if self.store.begin_dispatch(&task) == BeginDispatch::Proceed {
            self.metrics.for_function(&task.function).dispatch.inc();
            let reply = self.dispatcher.dispatch(&task).await;
            self.apply(Completion {
                execution_id: &task.execution_id,
                attempt: Some(task.attempt),
                result: reply.result,
                cold_start: reply.cold_start,
                from_dispatcher: true,
            });
        }
        if let Some(generation) = task.slot {
            self.queue.release_slot(task.function.name(), generation);
        }
    }

    /// `POST /v1/internal/executions/{id}:complete` (DECISIONS 5): always accepted; unknown,
    /// stale and duplicate callbacks change nothing and are counted.
    pub fn complete_from_callback(
        self: &Arc<Self>,
        execution_id: &str,
        attempt: Option<u32>,
        result: AttemptResult,
    ) {
        let outcome = self.apply(Completion {
            execution_id,
            attempt,
            result,
            cold_start: None,
            from_dispatcher: false,
        });
        self.metrics.callback(outcome);
        if outcome == "unknown" {
            tracing::info!(execution_id, "callback for an unknown or evicted execution");
        }
    }

    /// Applies a completion and carries out its effects; returns the callback outcome label.
    fn apply(self: &Arc<Self>, completion: Completion<'_>) -> &'static str {
        let failure = match &completion.result {
            AttemptResult::Failure(e) => Some(e.clone()),
            AttemptResult::Success(_) => None,
        };
        match self.store.complete(completion).kind {
            EffectKind::Missing => "unknown",
            EffectKind::Stale => "stale",
            EffectKind::Duplicate {
                function,
                late_start,
            } => {
                if let Some(cold) = late_start {
                    self.record_start_kind(&function, cold);
                }
                "duplicate"
            }
            EffectKind::Retry(task) => {
                self.metrics.for_function(&task.function).retry.inc();
                self.schedule_retry(task, failure);
                "retried"
            }
            EffectKind::Finalized(mut f) => {
                self.record_final_metrics(&f);
                f.wake();
                "applied"
            }
        }
    }

    /// Retries go where new work goes: the function's queue when a queue module is on (a full
    /// queue ends the execution with the original failure, REFERENCE §3.5), else inline.
    fn schedule_retry(self: &Arc<Self>, task: Task, failure: Option<ErrorInfo>) {
        if self.sync_route() == Route::Inline {
            self.spawn_dispatch(task);
            return;
        }
        let function = task.function.clone();
        let id = task.execution_id.clone();
        if self.enqueue(task).is_err() {
            let error = failure
                .unwrap_or_else(|| ErrorInfo::new("QUEUE_FULL", "Retry rejected: queue full"));
            if let Some(mut f) = self.store.abort(&id, Abort::Error(error)) {
                self.metrics.for_function(&function).error.inc();
                f.wake();
            }
        }
    }

    fn record_start_kind(&self, function: &RegisteredFunction, cold: Option<ColdStart>) {
        let m = self.metrics.for_function(function);
        match cold {
            Some(c) => {
                m.cold_start.inc();
                if let Some(ms) = c.init_duration_ms.filter(|ms| *ms >= 0) {
                    m.init_duration.record(Duration::from_millis(ms as u64));
                }
            }
            None => {
                m.warm_start.inc();
            }
        }
    }

    fn record_final_metrics(&self, f: &Finalized) {
        let m = self.metrics.for_function(&f.function);
        match f.outcome {
            Outcome::Success(_) => m.success.inc(),
            _ => m.error.inc(),
        };
        if let Some(cold) = f.start {
            self.record_start_kind(&f.function, cold);
        }
        let finished = f.finished.at;
        if let Some(started) = f.started {
            m.latency
                .record(finished.saturating_duration_since(started.at));
            m.queue_wait
                .record(started.at.saturating_duration_since(f.enqueued_at));
        }
        m.e2e_latency
            .record(finished.saturating_duration_since(f.enqueued_at));
    }
}

fn evicted() -> ErrorInfo {
    ErrorInfo::new(
        "EXECUTION_FAILED",
        "Execution was evicted before it completed",
    )
}

/// A random RFC-4122 version-4 UUID, lower-case and dashed.
pub fn new_execution_id() -> Arc<str> {
    let mut buf = uuid::Uuid::encode_buffer();
    Arc::from(&*uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf))
}
