//! The durable path's lifecycle on this replica: one task that, in registry order, sets up each
//! function's stream and pull loop as it is registered (here or through the catalog) and tears
//! them down as it is removed, ending the removed registration's queued executions; and the ack
//! handle a delivery carries into the invocation service.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::super::kv_executions::Transition;
use super::super::queue::Delivery;
use super::{NatsDurable, decode, encode};
use crate::invocation::InvocationService;
use crate::invocation::durable::{DeadLetterLog as _, DeliveryAck, DurableDelivery};
use crate::model::ExecutionState;
use crate::registry::{FunctionLifecycle, FunctionRegistry, RegisteredFunction};

impl NatsDurable {
    /// The function's registration whose last catalog revision is `last` was removed: its
    /// queued executions end with FUNCTION_REMOVED, as the memory queue ends its own, each a
    /// dead letter with its message's body and announced (its result webhook). Executions a
    /// re-registration of the name accepted in the meantime share the stream and are left alone.
    async fn end_queued(&self, function: &str, last: Option<u64>, service: &InvocationService) {
        let stored = match self.queue.stored(function).await {
            Ok(stored) => stored,
            Err(e) => {
                tracing::warn!(function, error = %e, "listing queued executions failed");
                return;
            }
        };
        for (id, body) in stored {
            match self.records.get(&id).await {
                Ok(Some(current)) => {
                    if !decode(&current.value).is_some_and(|r| r.accepted_by_removed(last)) {
                        continue;
                    }
                }
                // Gone (expired): nothing to end.
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(execution_id = %id, error = %e, "reading a removed function's execution failed");
                    continue;
                }
            }
            if self
                .index_dead_letter(function, &id, ExecutionState::Error)
                .await
                .is_err()
            {
                continue;
            }
            let step = |bytes: &Bytes| {
                decode(bytes)
                    .and_then(|r| r.removed(&body))
                    .map(|r| encode(&r))
            };
            match self.records.transition(&id, step).await {
                Ok(Transition::Applied(entry)) => {
                    if let Some(record) = decode(&entry.value) {
                        service.announce_record(&id, &record);
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(execution_id = %id, error = %e, "ending a removed function's execution failed")
                }
            }
        }
    }
}

/// Follows `registry` from now on: every function registered (now, or later here or through the
/// catalog) gets its stream and pull loop, every removal ends them, in registry order.
pub(super) fn follow(
    durable: Arc<NatsDurable>,
    service: Arc<InvocationService>,
    registry: &Arc<FunctionRegistry>,
    stop: CancellationToken,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let loops = Arc::new(PullLoops {
        tx,
        registry: Arc::downgrade(registry),
    });
    registry.add_listener(loops.clone());
    for function in registry.list() {
        let _ = loops.on_register(&function);
    }
    tokio::spawn(run_lifecycle(durable, service, rx, stop));
}

/// A JetStream delivery as the core's [`DeliveryAck`].
struct Ack(Delivery);

impl DeliveryAck for Ack {
    fn ack(&self) -> BoxFuture<'_, ()> {
        async move {
            if let Err(e) = self.0.ack().await {
                tracing::warn!(error = %e, "ack failed; the message will be delivered again");
            }
        }
        .boxed()
    }

    fn nak(&self, delay: Duration) -> BoxFuture<'_, ()> {
        async move {
            if let Err(e) = self.0.nak(delay).await {
                tracing::debug!(error = %e, "nak failed; redelivered after the ack deadline");
            }
        }
        .boxed()
    }

    fn in_progress(&self) -> BoxFuture<'_, ()> {
        async move {
            if let Err(e) = self.0.in_progress().await {
                tracing::debug!(error = %e, "progress ack failed");
            }
        }
        .boxed()
    }
}

enum LifecycleEvent {
    Registered(Arc<RegisteredFunction>),
    /// A name and the removed registration's last catalog revision.
    Removed(String, Option<u64>),
}

/// Registry listener: lifecycle events go, in order, to one task that sets up or tears down
/// each function's stream and pull loop (the listener itself must not block).
struct PullLoops {
    tx: mpsc::UnboundedSender<LifecycleEvent>,
    registry: std::sync::Weak<FunctionRegistry>,
}

impl FunctionLifecycle for PullLoops {
    fn on_register(&self, function: &Arc<RegisteredFunction>) -> Result<(), String> {
        let _ = self.tx.send(LifecycleEvent::Registered(function.clone()));
        Ok(())
    }

    fn on_remove(&self, name: &str) {
        // Read now: the registry forgets the revision once its listeners are done.
        let last = self.registry.upgrade().and_then(|r| r.revision(name));
        let _ = self.tx.send(LifecycleEvent::Removed(name.to_owned(), last));
    }
}

async fn run_lifecycle(
    durable: Arc<NatsDurable>,
    service: Arc<InvocationService>,
    mut rx: mpsc::UnboundedReceiver<LifecycleEvent>,
    stop: CancellationToken,
) {
    let mut loops: HashMap<String, CancellationToken> = HashMap::new();
    loop {
        let event = tokio::select! {
            _ = stop.cancelled() => break,
            event = rx.recv() => event,
        };
        match event {
            None => break,
            Some(LifecycleEvent::Registered(function)) => {
                // A stream that cannot be set up now is set up by the first publish
                // (`publish` ensures it); the pull loop keeps trying to open it meanwhile.
                if let Err(e) = durable.ensure(&function).await {
                    tracing::warn!(function = %function.name(), error = %e, "setting up the durable queue failed");
                }
                let token = stop.child_token();
                if let Some(old) = loops.insert(function.name().to_owned(), token.clone()) {
                    old.cancel();
                }
                let weak = Arc::downgrade(&service);
                let tracker = service.tracker().clone();
                let gauges = durable.gauges.clone();
                let sink = move |delivery: Delivery| {
                    let Some(service) = weak.upgrade() else {
                        return;
                    };
                    if delivery.attempt > 1 {
                        gauges.redelivered();
                    }
                    let delivery = DurableDelivery {
                        function: delivery.function.clone(),
                        execution_id: delivery.execution_id.clone(),
                        body: delivery.payload.clone(),
                        ack: Box::new(Ack(delivery)),
                    };
                    tracker.spawn(async move { service.accept_delivery(delivery).await });
                };
                // The loops end with their token (removal, re-registration, shutdown).
                drop(
                    durable
                        .queue
                        .spawn_retry_mover(function.name(), token.clone()),
                );
                drop(
                    durable
                        .queue
                        .spawn_pull_loop(function.name(), Arc::new(sink), token),
                );
            }
            Some(LifecycleEvent::Removed(name, last)) => {
                if let Some(token) = loops.remove(&name) {
                    token.cancel();
                }
                // The stream itself is kept (bounded by its capacity): deleting it would race a
                // re-registration's first publish into it and lose an accepted execution. A
                // re-registered function's pull loop acks the removed executions' messages,
                // whose records are terminal.
                durable.end_queued(&name, last, &service).await;
            }
        }
    }
    for (_, token) in loops.drain() {
        token.cancel();
    }
}
