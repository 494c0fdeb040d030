//! Cluster-wide queue figures on the NATS backend (issue 9, guarantee 9): each scrape asks the
//! broker for every function's consumer state, so `function_queue_depth` (stored, not yet
//! delivered) and `function_inFlight` (delivered to some replica, not yet settled) are the
//! cluster's, whichever replica is scraped. Also the backend's own series: publish errors,
//! redeliveries seen by this replica, and outstanding redelivered messages per function.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;

use super::queue::{InvocationQueue, QueueDepth};
use crate::metrics::{MetricWriter, MetricsSection};
use crate::queue::SharedQueueDepths;
use crate::registry::FunctionRegistry;
use crate::support::lock;

pub struct ClusterQueueGauges {
    queue: InvocationQueue,
    registry: Arc<FunctionRegistry>,
    /// The last figures fetched, by function (functions gone since are dropped at each fetch).
    depths: Mutex<HashMap<String, QueueDepth>>,
    publish_errors: AtomicU64,
    redeliveries: AtomicU64,
}

impl ClusterQueueGauges {
    pub fn new(queue: InvocationQueue, registry: Arc<FunctionRegistry>) -> ClusterQueueGauges {
        ClusterQueueGauges {
            queue,
            registry,
            depths: Mutex::default(),
            publish_errors: AtomicU64::new(0),
            redeliveries: AtomicU64::new(0),
        }
    }

    /// A publish to a function's stream failed (broker unreachable or refusing; a full queue
    /// is a `QUEUE_FULL` rejection, counted with the queue's own series).
    pub fn publish_failed(&self) {
        self.publish_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// This replica received a delivery that is not the message's first.
    pub fn redelivered(&self) {
        self.redeliveries.fetch_add(1, Ordering::Relaxed);
    }

    async fn fetch(&self) {
        let names: Vec<String> = self
            .registry
            .list()
            .iter()
            .map(|f| f.name().to_owned())
            .collect();
        let fetched = futures_util::future::join_all(names.iter().map(|name| async move {
            self.queue.depth(name).await.ok().map(|d| (name.clone(), d))
        }))
        .await;
        *lock(&self.depths) = fetched.into_iter().flatten().collect();
    }
}

impl SharedQueueDepths for ClusterQueueGauges {
    fn depth(&self, function: &str) -> Option<(u64, u64)> {
        lock(&self.depths)
            .get(function)
            .map(|d| (d.pending, d.in_flight))
    }
}

impl MetricsSection for ClusterQueueGauges {
    fn refresh(&self) -> Option<BoxFuture<'_, ()>> {
        Some(self.fetch().boxed())
    }

    fn render(&self, w: &mut MetricWriter) {
        w.counter(
            "nanofaas_nats_publish_errors_total",
            "invocations the broker did not store (unreachable or refusing)",
            [([], self.publish_errors.load(Ordering::Relaxed))],
        );
        w.counter(
            "nanofaas_nats_redeliveries_total",
            "deliveries received by this replica that were not a message's first",
            [([], self.redeliveries.load(Ordering::Relaxed))],
        );
        let mut rows: Vec<(String, u64)> = lock(&self.depths)
            .iter()
            .map(|(f, d)| (f.clone(), d.redelivered))
            .collect();
        rows.sort();
        w.gauge(
            "nanofaas_nats_queue_redelivered",
            "messages delivered more than once and not yet settled, cluster-wide",
            rows.iter()
                .map(|(f, n)| ([("function", f.as_str())], *n as f64)),
        );
    }
}
