//! Durable async invocations (issue 9, guarantees 2–4): the ports a shared state backend
//! implements, and how the service uses them. With no backend installed (memory, the default)
//! nothing here runs and `:enqueue` keeps its in-memory queue.
//!
//! With a backend, `:enqueue` writes the execution record (QUEUED, attempt 1) and stores the
//! invocation in the backend's queue; it answers 202 only once both are stored, and nothing is
//! kept in this replica's memory. Any replica's pull loop later hands the invocation back as a
//! [`DurableDelivery`]; [`InvocationService::accept_delivery`] reads the record first (a broker
//! crash can redeliver already-acked messages, with the delivery count restarting at 1), takes
//! the attempt from the record, and runs it through the local store and queue, so the existing
//! completion protocol, callbacks and retries apply. Each transition is written back to the
//! record (RUNNING at dispatch, QUEUED with the next attempt on a retry, the terminal state);
//! a terminal record is never overwritten, so the first result wins cluster-wide. The delivery
//! is acknowledged once the record is terminal.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::time::Instant;

mod announce;
mod record;
mod retry;
mod shared_keys;

pub use record::DurableRecord;
use record::{
    RoutedCallback, RoutedCallbackIn, boxed_raw, callback_step, lost_step, raw_json, raw_or_null,
};
pub(super) use shared_keys::SharedClaim;

pub use super::dead_letters::{DeadLetterEntry, DeadLetterLog};
use super::{InvocationService, InvokeError};
use crate::execution::store::{Abort, DeadLetterLookup, Liveness};
use crate::execution::{Payload, Task};
use crate::model::{AttemptResult, ErrorInfo, ExecutionState, ExecutionStatus};
use crate::support::lock;
use crate::support::trace_context::TraceContext;

/// Why a backend call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurableError {
    /// The function's durable queue is at its capacity (`queueSize` + `concurrency`).
    #[error("queue of {0} is full")]
    Full(String),
    /// The backend cannot be reached now (answered 503 with `Retry-After`).
    #[error("state backend unavailable: {0}")]
    Unavailable(String),
}

/// A step of a compare-and-set loop over one record: the new record, or `None` to leave it.
pub type RecordStep = Box<dyn FnMut(&DurableRecord) -> Option<DurableRecord> + Send>;

/// The backend's execution records and queues (implemented by `state::nats`), and its index
/// of dead letters.
pub trait DurableBackend: DeadLetterLog + Send + Sync + 'static {
    /// Creates the record of a new execution (create-only).
    fn create(
        &self,
        execution_id: &str,
        record: &DurableRecord,
    ) -> BoxFuture<'_, Result<(), DurableError>>;
    /// Stores the invocation in the function's queue; returns once it is stored.
    fn publish(
        &self,
        function: &str,
        execution_id: &str,
        body: Bytes,
    ) -> BoxFuture<'_, Result<(), DurableError>>;
    /// Stores the next `attempt` of a held execution, to be delivered again (to any replica)
    /// after `delay`, without holding a place of the function's concurrency meanwhile.
    fn requeue(
        &self,
        function: &str,
        execution_id: &str,
        attempt: u32,
        body: Bytes,
        delay: Duration,
    ) -> BoxFuture<'_, Result<(), DurableError>>;
    /// Best effort: forgets the record of an execution whose enqueue was refused.
    fn discard(&self, execution_id: &str) -> BoxFuture<'_, ()>;
    fn read(
        &self,
        execution_id: &str,
    ) -> BoxFuture<'_, Result<Option<DurableRecord>, DurableError>>;
    /// Read → step → compare-and-set, repeated on a conflict; the record as it stands after.
    fn transition(
        &self,
        execution_id: &str,
        step: RecordStep,
    ) -> BoxFuture<'_, Result<Option<DurableRecord>, DurableError>>;
    /// Claims `(function, key)` for `execution_id` cluster-wide: `None` if won, else the
    /// winner's execution id.
    fn claim(
        &self,
        function: &str,
        key: &str,
        execution_id: &str,
    ) -> BoxFuture<'_, Result<Option<String>, DurableError>>;
    /// Best effort: gives `(function, key)` up if `execution_id` still holds it (its
    /// invocation was refused after the claim was won).
    fn release(&self, function: &str, key: &str, execution_id: &str) -> BoxFuture<'_, ()>;
    /// Waits until the record of `execution_id` is terminal (it may not exist yet), at most
    /// until `until`; the terminal record, else `None`. Watches, never polls.
    fn wait_terminal(
        &self,
        execution_id: &str,
        until: Instant,
    ) -> BoxFuture<'_, Result<Option<DurableRecord>, DurableError>>;
    /// Asks the replica holding `execution_id` in memory to apply a runtime callback; `true`
    /// if one did.
    fn route_callback(&self, execution_id: &str, body: Bytes) -> BoxFuture<'_, bool>;
}

/// What settles a delivery on the backend; implemented by the backend's message.
pub trait DeliveryAck: Send + Sync + 'static {
    /// The execution is terminal: never deliver it again.
    fn ack(&self) -> BoxFuture<'_, ()>;
    /// Not run here: deliver again after `delay`, to any replica.
    fn nak(&self, delay: Duration) -> BoxFuture<'_, ()>;
    /// Still being worked on: push the redelivery deadline further.
    fn in_progress(&self) -> BoxFuture<'_, ()>;
}

/// One invocation handed back by the backend's queue.
pub struct DurableDelivery {
    pub function: Arc<str>,
    pub execution_id: String,
    /// The runtime body as `:enqueue` built it.
    pub body: Bytes,
    pub ack: Box<dyn DeliveryAck>,
}

/// The deliveries this replica is running, by execution id (bounded by the backend's
/// cluster-wide `max_ack_pending`, the functions' concurrency).
#[derive(Default)]
pub(super) struct Held(Mutex<HashMap<Arc<str>, Arc<dyn DeliveryAck>>>);

impl Held {
    fn insert(&self, id: Arc<str>, ack: Arc<dyn DeliveryAck>) {
        lock(&self.0).insert(id, ack);
    }

    fn get(&self, id: &str) -> Option<Arc<dyn DeliveryAck>> {
        lock(&self.0).get(id).cloned()
    }

    fn take(&self, id: &str) -> Option<Arc<dyn DeliveryAck>> {
        lock(&self.0).remove(id)
    }
}

/// How long a delivery that cannot run now (record unreadable, function unknown here yet)
/// waits before it is delivered again.
const RETRY_DELIVERY: Duration = Duration::from_secs(1);

/// The runtime body's parts; the input is what a LOCAL function echoes.
#[derive(Deserialize)]
struct BodyInput {
    input: Option<Box<RawValue>>,
}

impl InvocationService {
    /// Installs the backend (once, at start-up after it connected).
    pub fn install_durable(&self, backend: Arc<dyn DurableBackend>) {
        if self.durable.set(backend).is_err() {
            tracing::warn!("a durable backend was already installed");
        }
    }

    /// Marks this service as one whose async path is durable: until the backend is installed
    /// (start-up), `:enqueue` answers 503 instead of falling back to memory.
    pub fn expect_durable(&self) {
        self.durable_expected
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    pub(super) fn durable(&self) -> Result<Option<&Arc<dyn DurableBackend>>, InvokeError> {
        match self.durable.get() {
            Some(d) => Ok(Some(d)),
            None if self
                .durable_expected
                .load(std::sync::atomic::Ordering::Relaxed) =>
            {
                Err(InvokeError::StateUnavailable(
                    "the state backend is not connected yet".to_owned(),
                ))
            }
            None => Ok(None),
        }
    }

    /// `:enqueue` with a backend: claim the key, write the record, store the invocation.
    pub(super) async fn enqueue_durable(
        &self,
        backend: &Arc<dyn DurableBackend>,
        registered: &Arc<crate::registry::RegisteredFunction>,
        input: super::InvokeInput,
    ) -> Result<Arc<str>, InvokeError> {
        let function = registered.name();
        let execution_id = super::new_execution_id();
        if let Some(key) = &input.idempotency_key {
            match backend.claim(function, key, &execution_id).await {
                Ok(None) => {}
                Ok(Some(winner)) => return Ok(Arc::from(winner)),
                Err(e) => return Err(durable_error(e, function)),
            }
        }
        let trace = input
            .trace
            .clone()
            .unwrap_or_else(|| TraceContext::start(None));
        let record = DurableRecord {
            function: function.to_owned(),
            state: ExecutionState::Queued,
            attempt: 1,
            idempotency_key: input.idempotency_key.clone(),
            trace_id: input.trace_id.clone(),
            traceparent: Some(trace.traceparent().to_owned()),
            tracestate: trace.tracestate().map(str::to_owned),
            callback_url: input.callback_url.as_deref().map(str::to_owned),
            started_at: None,
            finished_at: None,
            output: None,
            error: None,
            cold_start: false,
            init_duration_ms: None,
            request: None,
            registration: self.registry.revision(function),
        };
        if let Err(e) = backend.create(&execution_id, &record).await {
            if let Some(key) = &input.idempotency_key {
                backend.release(function, key, &execution_id).await;
            }
            return Err(durable_error(e, function));
        }
        let body = crate::dispatch::runtime_body(&input.input, input.metadata.as_deref());
        if let Err(e) = backend.publish(function, &execution_id, body).await {
            backend.discard(&execution_id).await;
            if let Some(key) = &input.idempotency_key {
                backend.release(function, key, &execution_id).await;
            }
            if let DurableError::Full(_) = e {
                registered.meters(&self.metrics).queue_rejected.inc();
            }
            return Err(durable_error(e, function));
        }
        registered.meters(&self.metrics).enqueue.inc();
        Ok(execution_id)
    }

    /// `GET /v1/executions/{id}`: this replica's store first, then the shared record.
    pub async fn execution_status(
        &self,
        execution_id: &str,
    ) -> Result<Option<ExecutionStatus>, InvokeError> {
        if let Some(status) = self.store.status(execution_id) {
            return Ok(Some(status));
        }
        let Some(backend) = self.durable.get() else {
            return Ok(None);
        };
        match backend.read(execution_id).await {
            Ok(record) => Ok(record.map(|r| r.status(execution_id))),
            Err(e) => Err(durable_error(e, "")),
        }
    }

    /// A runtime callback: applied here when this replica holds the execution, else routed to
    /// the replica that does, else (nobody holds it: its replica died, or it is not delivered
    /// yet) written to the shared record when it is a final result.
    pub async fn complete_callback(
        self: &Arc<Self>,
        execution_id: &str,
        attempt: Option<u32>,
        result: AttemptResult,
        raw: Bytes,
    ) {
        let Some(backend) = self.durable.get().cloned() else {
            self.complete_from_callback(execution_id, attempt, result);
            return;
        };
        if self.store.liveness(execution_id) != Liveness::Gone {
            self.complete_from_callback(execution_id, attempt, result);
            return;
        }
        let routed = RoutedCallback {
            attempt,
            body: raw_or_null(&raw),
        };
        let body = serde_json::to_vec(&routed)
            .map(Bytes::from)
            .unwrap_or_default();
        if backend.route_callback(execution_id, body).await {
            self.metrics.callback("routed");
            return;
        }
        let applied = self
            .transition_announcing(
                &backend,
                execution_id,
                Box::new(move |record: &DurableRecord| callback_step(record, attempt, &result)),
            )
            .await;
        let outcome = match applied {
            Ok(Some(r)) if r.state.is_terminal() => "applied",
            Ok(_) => "unknown",
            Err(_) => "unknown",
        };
        self.metrics.callback(outcome);
    }

    /// The holder side of a routed callback: `true` if this replica holds the execution (and
    /// applied it).
    pub fn apply_routed_callback(self: &Arc<Self>, execution_id: &str, body: &[u8]) -> bool {
        if self.store.liveness(execution_id) == Liveness::Gone {
            return false;
        }
        let Ok(routed) = serde_json::from_slice::<RoutedCallbackIn>(body) else {
            return false;
        };
        let Ok(callback) = serde_json::from_str::<crate::model::CallbackBody>(routed.body.get())
        else {
            return false;
        };
        self.complete_from_callback(execution_id, routed.attempt, callback.into_result());
        true
    }

    /// A delivery from the backend's queue (any replica's enqueue, or a redelivery).
    pub async fn accept_delivery(self: &Arc<Self>, delivery: DurableDelivery) {
        let DurableDelivery {
            function,
            execution_id,
            body,
            ack,
        } = delivery;
        let ack: Arc<dyn DeliveryAck> = Arc::from(ack);
        let Some(backend) = self.durable.get().cloned() else {
            ack.nak(RETRY_DELIVERY).await;
            return;
        };
        match self.store.liveness(&execution_id) {
            // Redelivered while this replica still runs it (it waited past the ack deadline):
            // keep the newest handle and extend the deadline.
            Liveness::Running => {
                self.held
                    .insert(Arc::from(execution_id.as_str()), ack.clone());
                ack.in_progress().await;
                return;
            }
            // Finished here, but its record or ack did not reach the backend: write it again.
            Liveness::Finished => {
                self.held
                    .insert(Arc::from(execution_id.as_str()), ack.clone());
                self.durable_finished(&execution_id, true);
                return;
            }
            Liveness::Gone => {}
        }
        let record = match backend.read(&execution_id).await {
            Ok(Some(record)) => record,
            // Expired, or its enqueue was refused after the publish: nothing to run.
            Ok(None) => {
                ack.ack().await;
                return;
            }
            Err(e) => {
                tracing::warn!(execution_id, error = %e, "reading the record of a delivery failed");
                ack.nak(RETRY_DELIVERY).await;
                return;
            }
        };
        // A broker crash redelivers acknowledged messages: a terminal record is done.
        if record.state.is_terminal() {
            ack.ack().await;
            return;
        }
        let Some(registered) = self.registry.get(&function) else {
            ack.nak(RETRY_DELIVERY).await;
            return;
        };
        // RUNNING means the replica that ran the last attempt died mid-attempt: this delivery is
        // the next attempt. Beyond maxRetries the execution ends as an error (no record may stay
        // RUNNING forever).
        let attempt = if record.state == ExecutionState::Running {
            record.attempt + 1
        } else {
            record.attempt
        };
        if attempt > registered.spec.max_retries.max(1) {
            let error = ErrorInfo::new(
                "EXECUTION_FAILED",
                "The replica running the last attempt was lost",
            );
            // A dead letter: indexed first, so that it is listed whatever happens next.
            if backend
                .index_dead_letter(&function, &execution_id, ExecutionState::Error)
                .await
                .is_err()
            {
                ack.nak(RETRY_DELIVERY).await;
                return;
            }
            let step = lost_step(error, raw_json(&body));
            let ended = self
                .transition_announcing(&backend, &execution_id, step)
                .await;
            self.count_lost(&registered, ended.ok().flatten().as_ref());
            ack.ack().await;
            return;
        }
        let input = serde_json::from_slice::<BodyInput>(&body)
            .ok()
            .and_then(|b| b.input)
            .unwrap_or_else(|| boxed_raw(RawValue::NULL));
        let id: Arc<str> = Arc::from(execution_id.as_str());
        let task = Task {
            execution_id: id.clone(),
            function: registered.clone(),
            payload: Arc::new(Payload {
                input: Arc::from(input),
                body,
            }),
            idempotency_key: (attempt == 1)
                .then(|| record.idempotency_key.as_deref().map(Arc::from))
                .flatten(),
            trace_id: record.trace_id.as_deref().map(Arc::from),
            trace: TraceContext::from_stored(
                record.traceparent.as_deref(),
                record.tracestate.as_deref(),
            ),
            // The result is announced from the shared record's terminal write (by whichever
            // replica makes it), not from this replica's store.
            callback_url: None,
            attempt,
            enqueued_at: Instant::now(),
            slot: None,
            caller_deadline: None,
        };
        if self.store.insert(task.clone()).is_err() {
            ack.nak(RETRY_DELIVERY).await;
            return;
        }
        self.held.insert(id.clone(), ack.clone());
        // Straight to the local queue: `:enqueue` counted it already, on its own replica.
        if self.queue.enqueue(task).is_err() {
            self.held.take(&id);
            self.store.remove(&id);
            ack.nak(RETRY_DELIVERY).await;
        }
    }

    /// Right before a held execution's attempt goes to its runtime: records RUNNING with the
    /// attempt. `false` if the shared record is already terminal (skip the dispatch).
    pub(super) async fn durable_begin(&self, task: &Task) -> bool {
        let (Some(backend), Some(_)) = (self.durable.get(), self.held.get(&task.execution_id))
        else {
            return true;
        };
        let attempt = task.attempt;
        let started_at = crate::model::format_instant(chrono::Utc::now());
        let result = backend
            .transition(
                &task.execution_id,
                Box::new(move |r: &DurableRecord| {
                    (!r.state.is_terminal() && r.attempt <= attempt).then(|| DurableRecord {
                        state: ExecutionState::Running,
                        attempt,
                        started_at: Some(started_at.clone()),
                        ..r.clone()
                    })
                }),
            )
            .await;
        match result {
            Ok(Some(r)) if r.state.is_terminal() => {
                // Finished elsewhere (a callback while nobody held it): settle here too.
                self.settle_from_record(&task.execution_id, &r);
                false
            }
            // Unreachable now: the attempt runs; its end is written when the backend is back.
            _ => true,
        }
    }

    /// A held execution became terminal here: write the result (unless the record already has
    /// one: first result wins) and, when `settle`, acknowledge the delivery. A callback that
    /// ends an execution while its runtime exchange is still open writes the record but does
    /// not settle: the message keeps its place in `max_ack_pending` until the exchange ends
    /// (`dispatch` settles then), so the cluster-wide concurrency counts busy runtimes as the
    /// memory queue's slots do.
    pub(super) fn durable_finished(self: &Arc<Self>, execution_id: &str, settle: bool) {
        let Some(backend) = self.durable.get().cloned() else {
            return;
        };
        let held = if settle {
            self.held.take(execution_id)
        } else {
            self.held.get(execution_id)
        };
        let Some(ack) = held else {
            return;
        };
        let Some(status) = self.store.status(execution_id) else {
            return;
        };
        let attempt = self.store.attempt(execution_id).unwrap_or(1);
        // An async failure's request is kept in the record as its dead letter (issue 11).
        let dead_letter = match self.store.dead_letter(execution_id) {
            DeadLetterLookup::Found { function, payload } => {
                Some((function, raw_json(&payload.body)))
            }
            _ => None,
        };
        let id = execution_id.to_owned();
        let service = self.clone();
        self.tracker.spawn(async move {
            // Indexed before the record is written (see `index_dead_letter`); if that fails,
            // nothing is written and the redelivery tries again.
            if let Some((function, _)) = &dead_letter
                && backend
                    .index_dead_letter(function.name(), &id, status.status)
                    .await
                    .is_err()
            {
                return;
            }
            let request = dead_letter.as_ref().and_then(|(_, r)| r.clone());
            let written = service
                .transition_announcing(
                    &backend,
                    &id,
                    Box::new(move |r: &DurableRecord| {
                        (!r.state.is_terminal()).then(|| DurableRecord {
                            request: request.clone(),
                            ..r.finished_as(&status, attempt)
                        })
                    }),
                )
                .await;
            match written {
                Ok(_) if settle => ack.ack().await,
                Ok(_) => {}
                // Not written: leave the message unacked so a later delivery (after the ack
                // deadline) finds the record and finishes it.
                Err(e) => tracing::warn!(execution_id = %id, error = %e, "writing a terminal record failed"),
            }
        });
    }

    /// The shared record is terminal while this replica still held the execution.
    fn settle_from_record(&self, execution_id: &str, record: &DurableRecord) {
        let reason = match record.state {
            ExecutionState::Success => Abort::Success(record.output.clone().map(Arc::from)),
            _ => Abort::Error(
                record
                    .error
                    .clone()
                    .unwrap_or_else(|| ErrorInfo::new("EXECUTION_FAILED", "Execution failed")),
            ),
        };
        if let Some(mut f) = self.store.abort(execution_id, reason) {
            f.wake();
        }
        if let Some(ack) = self.held.take(execution_id) {
            self.tracker.spawn(async move { ack.ack().await });
        }
    }
}

fn durable_error(e: DurableError, function: &str) -> InvokeError {
    match e {
        DurableError::Full(_) => InvokeError::QueueFull(function.to_owned()),
        DurableError::Unavailable(m) => InvokeError::StateUnavailable(m),
    }
}
