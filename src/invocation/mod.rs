//! The invocation service: synchronous and asynchronous invocation (REFERENCE §3.1–3.2),
//! dispatch (§3.3), completion from dispatch replies and runtime callbacks (§3.4), retries (§3.5)
//! and idempotency (§3.6). It knows nothing of HTTP; the API layer maps its errors.
//!
//! Each sync invocation waits on a `oneshot` registered in its execution record; whichever of the
//! runtime's HTTP reply and its `:complete` callback arrives first resolves it, the other is a
//! no-op. Dispatches run as tracked tasks so a client disconnect never cancels an execution and
//! shutdown can drain them.

pub mod backoff;
mod completion;
mod dead_letters;
mod driven;
pub mod durable;
use durable::SharedClaim;
mod error;
pub mod idempotency;
mod self_wake;

use driven::DrivenDispatch;
pub use error::InvokeError;

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use crate::admission::RateLimiter;
use crate::config::SyncQueueConfig;
use crate::dispatch::{Dispatcher, runtime_body};
use crate::execution::store::{
    Abort, BeginDispatch, Completion, ExecutionStore, Liveness, StoreFull, Subscription,
};
use crate::execution::{Outcome, Payload, Task};
use crate::metrics::Metrics;
use crate::model::{ErrorInfo, InvocationResponse, Json};
use crate::queue::{QueueManager, RejectReason, SyncSettings, TaskSink};
use crate::registry::{FunctionRegistry, RegisteredFunction};
use crate::support::trace_context::TraceContext;
use idempotency::{Claim, IdempotencyStore};

/// One invocation request, validated by the API layer.
pub struct InvokeInput {
    pub input: Json,
    /// The `metadata` object as JSON text, when given.
    pub metadata: Option<String>,
    /// Trimmed, never empty.
    pub idempotency_key: Option<String>,
    pub trace_id: Option<String>,
    /// W3C trace context (issue 11); `None` starts a new trace.
    pub trace: Option<TraceContext>,
    /// `:enqueue`'s `X-Callback-Url`, validated (issue 11): the result is posted there.
    pub callback_url: Option<Arc<str>>,
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

/// The deadlines of one sync wait.
struct Wait {
    deadline: Instant,
    queue_deadline: Option<Instant>,
    /// This request created the execution (only its creator ends it on timeout).
    created: bool,
}

enum Admitted {
    /// A new execution; `Some(task)` when the caller is to drive its dispatch (inline route);
    /// `true` when its Idempotency-Key is claimed cluster-wide (its result is then shared).
    New(Arc<str>, Option<Task>, bool),
    Existing(Arc<str>),
    /// The key belongs to another replica's execution (shared claims, NATS backend).
    Elsewhere(Arc<str>),
}

pub struct InvocationService {
    registry: Arc<FunctionRegistry>,
    store: Arc<ExecutionStore>,
    idempotency: Arc<IdempotencyStore>,
    limiter: Arc<RateLimiter>,
    dispatcher: Dispatcher,
    metrics: Arc<Metrics>,
    queue: Arc<QueueManager>,
    async_enabled: bool,
    tracker: TaskTracker,
    /// The shared state backend of the async path (issue 9); unset with the memory backend.
    durable: std::sync::OnceLock<Arc<dyn durable::DurableBackend>>,
    durable_expected: std::sync::atomic::AtomicBool,
    /// Deliveries of the backend's queue this replica is running.
    held: durable::Held,
    /// The delay before each retry (issue 11; off by default).
    backoff: backoff::RetryBackoff,
}

/// The shared components the service works with.
pub struct Parts<'a> {
    pub registry: Arc<FunctionRegistry>,
    pub store: Arc<ExecutionStore>,
    pub idempotency: Arc<IdempotencyStore>,
    pub limiter: Arc<RateLimiter>,
    pub dispatcher: Dispatcher,
    pub metrics: Arc<Metrics>,
    pub sync_queue: &'a SyncQueueConfig,
    pub sync_settings: Arc<SyncSettings>,
    pub async_enabled: bool,
    pub backoff: backoff::RetryBackoff,
}

/// The queue's sink: dequeued tasks become tracked dispatch tasks of the service.
struct SpawnDispatch(Weak<InvocationService>);

impl TaskSink for SpawnDispatch {
    fn start(&self, task: Task) {
        if let Some(service) = self.0.upgrade() {
            service.spawn_dispatch(task);
        }
    }
}

impl InvocationService {
    /// Builds the service with its queue, whose sink is the service's own dispatch.
    pub fn new(parts: Parts<'_>) -> Arc<Self> {
        Arc::new_cyclic(|service| InvocationService {
            queue: Arc::new(QueueManager::new(
                parts.sync_queue,
                parts.async_enabled,
                parts.sync_settings,
                parts.store.clone(),
                parts.metrics.clone(),
                Arc::new(SpawnDispatch(service.clone())),
            )),
            registry: parts.registry,
            store: parts.store,
            idempotency: parts.idempotency,
            limiter: parts.limiter,
            dispatcher: parts.dispatcher,
            metrics: parts.metrics,
            async_enabled: parts.async_enabled,
            tracker: TaskTracker::new(),
            durable: std::sync::OnceLock::new(),
            durable_expected: std::sync::atomic::AtomicBool::new(false),
            held: durable::Held::default(),
            backoff: parts.backoff,
        })
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

    /// What every invocation starts with: the rate limiter, then the function (REFERENCE §3.1
    /// steps 1–2).
    fn admit_request(&self, name: &str) -> Result<Arc<RegisteredFunction>, InvokeError> {
        if !self.limiter.try_acquire() {
            return Err(InvokeError::RateLimited);
        }
        self.registry
            .get(name)
            .ok_or_else(|| InvokeError::FunctionNotFound(name.to_owned()))
    }

    /// `POST /v1/functions/{name}:invoke` (REFERENCE §3.2).
    pub async fn invoke_sync(
        self: &Arc<Self>,
        name: &str,
        input: InvokeInput,
        wait_ms: Option<i64>,
    ) -> Result<SyncResult, InvokeError> {
        let function = self.admit_request(name)?;
        let route = self.sync_route();
        let wait = match wait_ms {
            Some(ms) => Duration::from_millis(ms.max(0) as u64),
            None => Duration::from_millis(function.spec.timeout_ms),
        };
        // Taken before the execution exists, so the wait never outlasts an attempt that shares
        // its `timeoutMs`: that attempt's failure then finds its caller gone and is not retried.
        let deadline = Instant::now() + wait;
        let key = input.idempotency_key.clone();
        let (execution_id, created, driven, shared) = match self
            .create_or_reuse(&function, input, route, Some(deadline))
            .await?
        {
            Admitted::New(id, task, shared) => (id, true, task, shared),
            Admitted::Existing(id) => (id, false, None, false),
            Admitted::Elsewhere(id) => {
                let outcome = self.wait_elsewhere(&function, &id, deadline).await;
                return Ok(SyncResult {
                    timed_out: matches!(outcome, Outcome::Timeout),
                    response: outcome.response(id),
                });
            }
        };
        let mut driven = DrivenDispatch::new(
            driven.map(|task| {
                let service = self.clone();
                async move { service.dispatch(task).await }
            }),
            self.tracker.clone(),
        );
        // Before subscribing: an attempt that finishes at once then needs no waiter.
        driven.start().await;
        let wait = Wait {
            deadline,
            // Only the request that queued an execution times its queue wait out.
            queue_deadline: (created && route == Route::SyncQueue)
                .then(|| Instant::now() + self.queue.sync_settings().max_queue_wait()),
            created,
        };
        let outcome = self
            .wait_for_outcome(&function, &execution_id, wait, driven)
            .await;
        if let (true, Some(key)) = (shared, &key) {
            self.publish_sync_result(&function, &execution_id, key);
        }
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

    /// Waits for an execution's outcome while driving its dispatch, up to the caller's deadline
    /// (then 408, DECISIONS 1) and, for a sync-queue item, its queue-wait deadline.
    async fn wait_for_outcome(
        &self,
        function: &RegisteredFunction,
        execution_id: &str,
        wait: Wait,
        mut driven: DrivenDispatch,
    ) -> Outcome {
        let Wait {
            deadline,
            mut queue_deadline,
            created,
        } = wait;
        let mut rx = match self.store.subscribe(execution_id) {
            Subscription::Done(outcome) => return outcome,
            Subscription::Missing => return Outcome::Error(evicted()),
            Subscription::Waiting(rx) => rx,
        };
        // The driven dispatch completes the execution inside this task's poll; its wake-up of
        // this very task is turned into a direct re-poll (see `self_wake`).
        self_wake::without_self_wakes(async {
            loop {
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
                        if created && !self.end_waiting(function, execution_id, Abort::Timeout) {
                            if let Subscription::Done(outcome) = self.store.subscribe(execution_id) {
                                break outcome;
                            }
                        }
                        // Every wait that times out counts (REFERENCE §3.2).
                        function.meters(&self.metrics).timeout.inc();
                        break Outcome::Timeout;
                    }
                    () = queue_wait => {
                        queue_deadline = None;
                        if self.end_waiting(function, execution_id, Abort::QueueTimeout) {
                            break Outcome::QueueTimeout;
                        }
                    }
                }
            }
        })
        .await
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
                self.metrics.sync_queue(function.name()).timedout.inc();
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
        let function = self.admit_request(name)?;
        if !self.async_enabled {
            return Err(InvokeError::AsyncDisabled);
        }
        if let Some(backend) = self.durable()? {
            return self.enqueue_durable(backend, &function, input).await;
        }
        match self
            .create_or_reuse(&function, input, Route::Queue, None)
            .await?
        {
            Admitted::New(id, ..) | Admitted::Existing(id) | Admitted::Elsewhere(id) => Ok(id),
        }
    }

    /// REFERENCE §3.1 steps 3–4: a new execution (admitted) or the replay of an existing one.
    async fn create_or_reuse(
        self: &Arc<Self>,
        function: &Arc<RegisteredFunction>,
        input: InvokeInput,
        route: Route,
        caller_deadline: Option<Instant>,
    ) -> Result<Admitted, InvokeError> {
        let key = input.idempotency_key;
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
        // Sync requests only: a durable `:enqueue` claims its key in `enqueue_durable`.
        let mut shared = false;
        if let (Some(k), Some(_)) = (&key, &claim) {
            match self
                .claim_shared_key(function.name(), k, &execution_id)
                .await
            {
                SharedClaim::Won => shared = true,
                // The local claim is abandoned (dropped): this replica does not run it.
                SharedClaim::Taken(winner) => return Ok(Admitted::Elsewhere(winner)),
                SharedClaim::LocalOnly => {}
            }
        }
        let task = Task {
            execution_id: execution_id.clone(),
            function: function.clone(),
            payload: Arc::new(Payload {
                body: runtime_body(&input.input, input.metadata.as_deref()),
                input: input.input,
            }),
            idempotency_key: key.map(Arc::from),
            trace_id: input.trace_id.map(Arc::from),
            trace: input.trace.unwrap_or_else(|| TraceContext::start(None)),
            callback_url: input.callback_url,
            attempt: 1,
            enqueued_at: Instant::now(),
            caller_deadline,
            slot: None,
        };
        let task_key = task.idempotency_key.clone();
        let admitted = match self.store.insert(task.clone()) {
            Ok(()) => self.admit(task, route).await,
            Err(StoreFull::InFlight) => Err(InvokeError::StoreFull),
            Err(StoreFull::FunctionShare) => {
                Err(InvokeError::FunctionShareFull(function.name().to_owned()))
            }
        };
        let driven = match admitted {
            Ok(driven) => driven,
            Err(e) => {
                // A refused admission leaves nothing behind; the claim is abandoned on drop
                // (and given up cluster-wide when it was shared).
                self.store.remove(&execution_id);
                if let (true, Some(backend), Some(k)) = (shared, self.durable.get(), &task_key) {
                    backend.release(function.name(), k, &execution_id).await;
                }
                return Err(e);
            }
        };
        if let Some(guard) = claim {
            guard.publish(execution_id.clone());
        }
        Ok(Admitted::New(execution_id, driven, shared))
    }

    /// Admits a new execution; returns the task when the caller is to drive its dispatch.
    async fn admit(
        self: &Arc<Self>,
        task: Task,
        route: Route,
    ) -> Result<Option<Task>, InvokeError> {
        match route {
            Route::SyncQueue => {
                let function = task.function.clone();
                self.queue
                    .admit_sync(task)
                    .map(|()| None)
                    .map_err(|e| InvokeError::from_queue(e, function.name()))
            }
            Route::Queue => self.enqueue(task).map(|()| None),
            Route::Inline => Ok(Some(task)),
        }
    }

    fn enqueue(&self, task: Task) -> Result<(), InvokeError> {
        let function = task.function.clone();
        let queued = self.queue.enqueue(task);
        self.count_enqueue(&function, queued)
    }

    /// Counts a queue's answer (REFERENCE §7.1) and maps a refusal to `QUEUE_FULL`.
    fn count_enqueue(
        &self,
        function: &RegisteredFunction,
        queued: Result<(), crate::queue::QueueError>,
    ) -> Result<(), InvokeError> {
        let metrics = function.meters(&self.metrics);
        match queued {
            Ok(()) => {
                metrics.enqueue.inc();
                Ok(())
            }
            Err(_) => {
                metrics.queue_rejected.inc();
                Err(InvokeError::QueueFull(function.name().to_owned()))
            }
        }
    }

    pub fn spawn_dispatch(self: &Arc<Self>, task: Task) {
        let service = self.clone();
        let span = task.span();
        self.tracker.spawn(tracing::Instrument::instrument(
            async move { service.dispatch(task).await },
            span,
        ));
    }

    /// Sends one attempt to its runtime and applies the reply (REFERENCE §3.3).
    ///
    /// A task from a queue holds one concurrency slot for exactly as long as its exchange with
    /// the runtime is open, and this is the one place that releases it: an early callback
    /// completes the execution but the runtime is still busy until it answers.
    pub async fn dispatch(self: &Arc<Self>, task: Task) {
        match self.store.begin_dispatch(&task) {
            // A durable execution is claimed in the shared record first; another replica's
            // claim skips it here (the slot is still released below).
            BeginDispatch::Proceed
                if self.durable.get().is_some() && !self.durable_begin(&task).await => {}
            BeginDispatch::Proceed => {
                let meters = task.function.meters(&self.metrics);
                meters.dispatch.inc();
                // Counted when sent, so a retry that never reaches the runtime (its caller's
                // deadline passed, its queue refused it) is not a retry (issue 10, defect 6).
                if task.attempt > 1 {
                    meters.retry.inc();
                }
                let reply = self.dispatcher.dispatch(&task).await;
                let retry_delay = self.retry_delay(&reply.result, task.attempt, reply.retry_after);
                self.apply(Completion {
                    execution_id: &task.execution_id,
                    attempt: Some(task.attempt),
                    result: reply.result,
                    cold_start: reply.cold_start,
                    from_dispatcher: true,
                    retry_delay,
                });
            }
            BeginDispatch::Skip => {}
            BeginDispatch::Expired(mut f) => {
                task.function.meters(&self.metrics).timeout.inc();
                f.wake();
            }
        }
        if let Some(generation) = task.slot {
            self.queue.release_slot(task.function.name(), generation);
        }
        // A durable execution that a callback ended (during the exchange, or while it waited in
        // the queue) is settled now that the runtime is free.
        if self.durable.get().is_some()
            && self.store.liveness(&task.execution_id) == Liveness::Finished
        {
            self.durable_finished(&task.execution_id, true);
        }
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
