//! The async path's port (`invocation::durable`) on JetStream: execution records in
//! `P_executions`, one work-queue stream per function, Idempotency-Key claims in
//! `P_idempotency`, and runtime callbacks routed over `P.complete` to the replica holding the
//! execution. [`start`] opens all of it, installs it in the invocation service, and keeps one
//! pull loop per registered function (a registry listener, so functions registered on another
//! replica and mirrored here get theirs too).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use super::callbacks::{CompletionHandler, CompletionRequest, CompletionRoute, RouteOutcome};
use super::dead_letters::DeadLetterIndex;
use super::kv_executions::{ExecutionRecords, Transition};
use super::kv_idempotency::{CLAIM_TTL, Claim, IdempotencyClaims};
use super::queue::{FunctionQueueConfig, InvocationQueue, PublishError, QueueError, ack_wait_for};
use super::queue_gauges::ClusterQueueGauges;
use super::{NatsConnection, Placement};
use crate::invocation::InvocationService;
use crate::invocation::durable::{
    DeadLetterEntry, DeadLetterLog, DurableBackend, DurableError, DurableRecord, RecordStep,
};
use crate::metrics::Metrics;
use crate::model::ExecutionState;
use crate::registry::{FunctionRegistry, RegisteredFunction};

/// How long a replica that does not hold an execution waits for the holder to answer a routed
/// callback: the holder answers in about a millisecond (docs/ha.md); silence means nobody holds
/// it, and the callback's sender waits this long for its 204.
mod lifecycle;

const ROUTE_TIMEOUT: Duration = Duration::from_millis(100);

/// The JetStream side of durable async invocations.
pub struct NatsDurable {
    client: async_nats::Client,
    records: ExecutionRecords,
    queue: InvocationQueue,
    claims: IdempotencyClaims,
    route: CompletionRoute,
    registry: Arc<FunctionRegistry>,
    max_payload_bytes: i32,
    gauges: Arc<ClusterQueueGauges>,
    dead_letters: DeadLetterIndex,
}

/// What the durable path is wired into.
pub struct Wiring<'a> {
    pub registry: Arc<FunctionRegistry>,
    pub service: Arc<InvocationService>,
    pub metrics: &'a Metrics,
}

/// The store-wide bounds the shared records follow: their TTL, the largest request, and how
/// many dead letters a function's index keeps (the execution store's entry cap).
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub execution_ttl: Duration,
    pub max_payload_bytes: usize,
    pub max_dead_letters: usize,
}

/// Opens the buckets, installs the backend in `service`, serves routed callbacks and starts a
/// pull loop for every registered function (now and later), until `stop`.
pub async fn start(
    conn: &NatsConnection,
    placement: Placement,
    bounds: Bounds,
    wiring: Wiring<'_>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let Wiring {
        registry,
        service,
        metrics,
    } = wiring;
    let queue = InvocationQueue::new(conn, placement);
    let gauges = Arc::new(ClusterQueueGauges::new(queue.clone(), registry.clone()));
    service.queue().set_shared_depths(gauges.clone());
    metrics.add_section(gauges.clone());
    let durable = Arc::new(NatsDurable {
        client: conn.client.clone(),
        records: ExecutionRecords::open(conn, bounds.execution_ttl, placement).await?,
        queue,
        gauges,
        claims: IdempotencyClaims::open(conn, CLAIM_TTL, placement).await?,
        route: CompletionRoute::new(conn),
        registry: registry.clone(),
        // The broker refuses messages above its own `max_payload` (1 MiB by default) whatever
        // the stream says; the smaller bound is the real one.
        max_payload_bytes: i32::try_from(
            bounds
                .max_payload_bytes
                .min(conn.client.server_info().max_payload),
        )
        .unwrap_or(i32::MAX),
        dead_letters: DeadLetterIndex::new(
            conn,
            placement,
            bounds.execution_ttl,
            bounds.max_dead_letters,
        ),
    });
    durable
        .route
        .serve(
            Arc::new(RouteHandler(Arc::downgrade(&service))),
            stop.clone(),
        )
        .await
        .map_err(|e| anyhow::anyhow!("serving routed callbacks: {e}"))?;
    service.install_durable(durable.clone());
    lifecycle::follow(durable, service, &registry, stop);
    Ok(())
}

impl NatsDurable {
    fn connected(&self) -> Result<(), DurableError> {
        if self.client.connection_state() == async_nats::connection::State::Connected {
            Ok(())
        } else {
            Err(DurableError::Unavailable(
                "NATS is not connected".to_owned(),
            ))
        }
    }

    fn queue_config(&self, function: &RegisteredFunction) -> FunctionQueueConfig {
        let spec = &function.spec;
        FunctionQueueConfig {
            // Work-queue retention keeps a message until its execution is terminal, so a running
            // execution occupies a place: `queueSize` waiting plus `concurrency` running.
            capacity: i64::from(spec.queue_size) + i64::from(spec.concurrency),
            concurrency: i64::from(spec.concurrency),
            ack_wait: ack_wait_for(Duration::from_millis(spec.timeout_ms)),
            max_payload_bytes: self.max_payload_bytes,
        }
    }

    async fn ensure(&self, function: &RegisteredFunction) -> Result<(), QueueError> {
        self.queue
            .ensure_function(function.name(), &self.queue_config(function))
            .await
    }
}

fn unavailable(e: impl std::fmt::Display) -> DurableError {
    DurableError::Unavailable(e.to_string())
}

fn encode(record: &DurableRecord) -> Bytes {
    // A record of strings, numbers and validated raw JSON always serialises.
    serde_json::to_vec(record)
        .map(Bytes::from)
        .unwrap_or_default()
}

fn decode(bytes: &Bytes) -> Option<DurableRecord> {
    serde_json::from_slice(bytes).ok()
}

impl DurableBackend for NatsDurable {
    fn create(
        &self,
        execution_id: &str,
        record: &DurableRecord,
    ) -> BoxFuture<'_, Result<(), DurableError>> {
        let id = execution_id.to_owned();
        let value = encode(record);
        async move {
            self.connected()?;
            match self.records.create(&id, value).await {
                Ok(_) => Ok(()),
                Err(e) => Err(unavailable(e)),
            }
        }
        .boxed()
    }

    fn publish(
        &self,
        function: &str,
        execution_id: &str,
        body: Bytes,
    ) -> BoxFuture<'_, Result<(), DurableError>> {
        let (function, id) = (function.to_owned(), execution_id.to_owned());
        async move {
            let mut result = self.queue.publish(&function, &id, body.clone()).await;
            // The stream is created by the lifecycle task; a publish racing a registration
            // creates it here (idempotent) and tries once more.
            if let Err(PublishError::NoQueue(_)) = result {
                if let Some(f) = self.registry.get(&function) {
                    self.ensure(&f).await.map_err(unavailable)?;
                }
                result = self.queue.publish(&function, &id, body).await;
            }
            match result {
                Ok(_) => Ok(()),
                Err(PublishError::QueueFull(_)) => Err(DurableError::Full(function)),
                Err(e) => {
                    self.gauges.publish_failed();
                    Err(unavailable(e))
                }
            }
        }
        .boxed()
    }

    fn requeue(
        &self,
        function: &str,
        execution_id: &str,
        attempt: u32,
        body: Bytes,
        delay: Duration,
    ) -> BoxFuture<'_, Result<(), DurableError>> {
        let (function, id) = (function.to_owned(), execution_id.to_owned());
        async move {
            match self
                .queue
                .publish_retry(&function, &id, attempt, body, delay)
                .await
            {
                Ok(()) => Ok(()),
                Err(PublishError::QueueFull(_)) => Err(DurableError::Full(function)),
                Err(e) => Err(unavailable(e)),
            }
        }
        .boxed()
    }

    fn discard(&self, execution_id: &str) -> BoxFuture<'_, ()> {
        let id = execution_id.to_owned();
        async move {
            if let Err(e) = self.records.delete(&id).await {
                tracing::debug!(execution_id = %id, error = %e, "discarding a refused record");
            }
        }
        .boxed()
    }

    fn read(
        &self,
        execution_id: &str,
    ) -> BoxFuture<'_, Result<Option<DurableRecord>, DurableError>> {
        let id = execution_id.to_owned();
        async move {
            self.connected()?;
            let entry = self.records.get(&id).await.map_err(unavailable)?;
            Ok(entry.and_then(|v| decode(&v.value)))
        }
        .boxed()
    }

    fn transition(
        &self,
        execution_id: &str,
        mut step: RecordStep,
    ) -> BoxFuture<'_, Result<Option<DurableRecord>, DurableError>> {
        let id = execution_id.to_owned();
        async move {
            self.connected()?;
            let outcome = self
                .records
                .transition(&id, |bytes| {
                    decode(bytes).and_then(|r| step(&r)).map(|r| encode(&r))
                })
                .await;
            match outcome {
                Ok(Transition::Applied(v) | Transition::Unchanged(v)) => Ok(decode(&v.value)),
                Ok(Transition::Missing) => Ok(None),
                Err(e) => Err(unavailable(e)),
            }
        }
        .boxed()
    }

    fn claim(
        &self,
        function: &str,
        key: &str,
        execution_id: &str,
    ) -> BoxFuture<'_, Result<Option<String>, DurableError>> {
        let (function, key, id) = (function.to_owned(), key.to_owned(), execution_id.to_owned());
        async move {
            self.connected()?;
            match self.claims.claim(&function, &key, &id).await {
                Ok(Claim::Won { .. }) => Ok(None),
                Ok(Claim::Taken { execution_id }) => Ok(Some(execution_id)),
                Err(e) => Err(unavailable(e)),
            }
        }
        .boxed()
    }

    fn release(&self, function: &str, key: &str, execution_id: &str) -> BoxFuture<'_, ()> {
        let (function, key, id) = (function.to_owned(), key.to_owned(), execution_id.to_owned());
        async move {
            if let Err(e) = self.claims.release_for(&function, &key, &id).await {
                tracing::debug!(execution_id = %id, error = %e, "releasing a refused claim");
            }
        }
        .boxed()
    }

    fn wait_terminal(
        &self,
        execution_id: &str,
        until: tokio::time::Instant,
    ) -> BoxFuture<'_, Result<Option<DurableRecord>, DurableError>> {
        let id = execution_id.to_owned();
        async move {
            self.connected()?;
            let terminal = |v: &Bytes| decode(v).is_some_and(|r| r.state.is_terminal());
            let value = self
                .records
                .wait_for(&id, until, terminal)
                .await
                .map_err(unavailable)?;
            Ok(value.as_ref().and_then(decode))
        }
        .boxed()
    }

    fn route_callback(&self, execution_id: &str, body: Bytes) -> BoxFuture<'_, bool> {
        let id = execution_id.to_owned();
        async move {
            matches!(
                self.route.request(&id, body, ROUTE_TIMEOUT).await,
                Ok(RouteOutcome::Applied(_))
            )
        }
        .boxed()
    }
}

impl DeadLetterLog for NatsDurable {
    fn index_dead_letter(
        &self,
        function: &str,
        execution_id: &str,
        state: ExecutionState,
    ) -> BoxFuture<'_, Result<(), DurableError>> {
        let (function, id) = (function.to_owned(), execution_id.to_owned());
        async move {
            let state = if state == ExecutionState::Timeout {
                "timeout"
            } else {
                "error"
            };
            self.dead_letters
                .add(&function, &id, state)
                .await
                .map_err(|e| {
                    tracing::warn!(execution_id = %id, error = %e, "indexing a dead letter failed");
                    unavailable(e)
                })
        }
        .boxed()
    }

    fn dead_letter_entries(
        &self,
        function: &str,
        before: Option<u64>,
        max: usize,
    ) -> BoxFuture<'_, Result<(Vec<DeadLetterEntry>, bool), DurableError>> {
        let function = function.to_owned();
        async move {
            self.connected()?;
            let (entries, exhausted) = self
                .dead_letters
                .older_than(&function, before, max)
                .await
                .map_err(unavailable)?;
            let entries = entries
                .into_iter()
                .map(|e| DeadLetterEntry {
                    sequence: e.sequence,
                    execution_id: e.execution_id,
                    state: match e.state.as_str() {
                        "error" => Some(ExecutionState::Error),
                        "timeout" => Some(ExecutionState::Timeout),
                        _ => None,
                    },
                })
                .collect();
            Ok((entries, exhausted))
        }
        .boxed()
    }
}

/// The holder side of `P.complete`: answers only for executions this replica holds.
struct RouteHandler(std::sync::Weak<InvocationService>);

impl CompletionHandler for RouteHandler {
    fn handle(&self, request: CompletionRequest) -> BoxFuture<'static, Option<Bytes>> {
        let applied = self
            .0
            .upgrade()
            .is_some_and(|s| s.apply_routed_callback(&request.execution_id, &request.body));
        async move { applied.then(|| Bytes::from_static(b"applied")) }.boxed()
    }
}
