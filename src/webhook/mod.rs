//! Result webhooks (issue 11, docs/webhooks.md): when an execution started by `:enqueue` with
//! `X-Callback-Url` is terminal, its `ExecutionStatus` is POSTed there, signed per Standard
//! Webhooks when `NANOFAAS_WEBHOOK_SECRET` is set.
//!
//! [`Webhooks`] is the store's [`ResultListener`]: a notice becomes one delivery task (tracked,
//! so shutdown can wait for it) that makes up to `max-attempts` attempts with an exponential
//! backoff between them. Nothing here blocks the caller: a notice is queued or, when
//! `queue-size` deliveries are already pending (waiting, in flight or between attempts),
//! dropped and counted. At most `concurrency` requests are in flight at once. The URL was
//! checked at `:enqueue` (scheme, outbound policy on IP literals, allowed hosts) and is checked
//! again at delivery; names are checked after resolution by the transport.

mod sign;
#[cfg(test)]
mod tests;
pub mod transport;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use reqwest::Url;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::config::{HostRule, WebhookConfig};
use crate::execution::notice::{ResultListener, ResultNotice};
use crate::metrics::{Counter, MetricWriter, MetricsSection};
use crate::support::net_policy::NetPolicy;
use sign::Signer;
use transport::{AttemptOutcome, HttpTransport, Transport};

/// Longest accepted `X-Callback-Url`: it is stored with the execution.
pub const MAX_CALLBACK_URL_LEN: usize = 2048;

/// The webhook deliveries of this replica.
pub struct Webhooks {
    shared: Arc<Shared>,
}

struct Shared {
    transport: Arc<dyn Transport>,
    signer: Option<Signer>,
    max_attempts: u32,
    backoff_initial: Duration,
    backoff_max: Duration,
    queue_size: usize,
    /// Deliveries not finished yet.
    pending: AtomicUsize,
    /// Requests in flight.
    requests: Semaphore,
    tracker: TaskTracker,
    policy: Arc<NetPolicy>,
    allowed_hosts: Option<Vec<HostRule>>,
    counts: Counts,
}

#[derive(Default)]
struct Counts {
    /// A notice was received: the families are exported from then on.
    used: AtomicBool,
    delivered: Counter,
    dropped: Counter,
    refused: Counter,
    overflow: Counter,
    attempts: Counter,
}

/// Holds one place among the pending deliveries; released when the delivery ends.
struct PendingPlace(Arc<Shared>);

impl Drop for PendingPlace {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Webhooks {
    /// Deliveries over HTTP with the configured settings.
    pub fn http(
        config: &WebhookConfig,
        policy: Arc<NetPolicy>,
        resolve_overrides: &[(String, Vec<std::net::IpAddr>)],
    ) -> Result<Webhooks, reqwest::Error> {
        let transport = HttpTransport::new(config.timeout, policy.clone(), resolve_overrides)?;
        Ok(Webhooks::new(config, policy, Arc::new(transport)))
    }

    pub fn new(
        config: &WebhookConfig,
        policy: Arc<NetPolicy>,
        transport: Arc<dyn Transport>,
    ) -> Webhooks {
        Webhooks {
            shared: Arc::new(Shared {
                transport,
                signer: config.signing_key.as_ref().map(Signer::new),
                max_attempts: config.max_attempts.max(1),
                backoff_initial: config.backoff_initial,
                backoff_max: config.backoff_max.max(config.backoff_initial),
                queue_size: config.queue_size.max(1),
                pending: AtomicUsize::new(0),
                requests: Semaphore::new(config.concurrency.max(1)),
                tracker: TaskTracker::new(),
                policy,
                allowed_hosts: config.allowed_hosts.clone(),
                counts: Counts::default(),
            }),
        }
    }

    /// Checks an `X-Callback-Url` value (trimmed, not blank): an absolute http/https URL of at
    /// most [`MAX_CALLBACK_URL_LEN`] characters, whose host the outbound policy permits (IP
    /// literals; names are checked when resolved) and `NANOFAAS_WEBHOOK_ALLOWED_HOSTS` lists.
    /// The error completes the sentence "X-Callback-Url …".
    pub fn check_callback_url(&self, text: &str) -> Result<Url, String> {
        self.shared.check_url(text)
    }

    /// Deliveries not finished (waiting, in flight or between attempts).
    pub fn pending(&self) -> usize {
        self.shared.pending.load(Ordering::Acquire)
    }

    /// At shutdown: waits for pending deliveries until `deadline`; returns how many are left
    /// (they are abandoned with the process).
    pub async fn drain(&self, deadline: Instant) -> usize {
        self.shared.tracker.close();
        let _ = tokio::time::timeout_at(deadline, self.shared.tracker.wait()).await;
        self.pending()
    }

    /// Queues the delivery of `notice`, or counts it as overflow when `queue-size` deliveries
    /// are pending. Never blocks.
    fn submit(&self, notice: ResultNotice) {
        let shared = &self.shared;
        shared.counts.used.store(true, Ordering::Relaxed);
        let taken = shared
            .pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < shared.queue_size).then_some(n + 1)
            });
        let runtime = tokio::runtime::Handle::try_current();
        let (Ok(_), Ok(runtime)) = (taken, runtime) else {
            if taken.is_ok() {
                shared.pending.fetch_sub(1, Ordering::AcqRel);
            }
            shared.counts.overflow.inc();
            tracing::warn!(
                trace_id = %notice.trace.trace_id(),
                execution_id = %notice.status.execution_id,
                pending = self.pending(),
                "result webhook not delivered: the delivery queue is full"
            );
            return;
        };
        let place = PendingPlace(shared.clone());
        let span = tracing::error_span!(
            parent: None,
            "webhook",
            trace_id = %notice.trace.trace_id(),
            execution_id = %notice.status.execution_id
        );
        let delivery = shared
            .tracker
            .track_future(deliver(place, notice).instrument(span));
        runtime.spawn(delivery);
    }
}

impl ResultListener for Webhooks {
    fn finished(&self, notice: ResultNotice) {
        self.submit(notice);
    }
}

impl Shared {
    fn check_url(&self, text: &str) -> Result<Url, String> {
        if text.len() > MAX_CALLBACK_URL_LEN {
            return Err(format!("is longer than {MAX_CALLBACK_URL_LEN} characters"));
        }
        let url = Url::parse(text).map_err(|e| format!("is not an absolute URL ({e})"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err("must be an http or https URL".to_owned());
        }
        let host = url.host_str().unwrap_or_default();
        if host.is_empty() {
            return Err("must name a host".to_owned());
        }
        self.policy.check_literal(&url).map_err(|r| r.to_string())?;
        if let Some(rules) = &self.allowed_hosts {
            if !rules.iter().any(|r| r.matches(host)) {
                return Err(format!(
                    "names host '{host}', which NANOFAAS_WEBHOOK_ALLOWED_HOSTS does not list"
                ));
            }
        }
        Ok(url)
    }

    /// The wait after failed attempt `attempt` (1-based): `initial · 2^(attempt-1)`, at most
    /// `max`, jittered uniformly down to half so that receivers coming back are not hit by
    /// every retry at once.
    fn backoff(&self, attempt: u32) -> Duration {
        let doubling = 1u32 << attempt.saturating_sub(1).min(20);
        let full = self
            .backoff_initial
            .saturating_mul(doubling)
            .min(self.backoff_max);
        full.mul_f64(0.5 + 0.5 * fastrand::f64())
    }
}

/// One delivery: attempts until a 2xx, a refusal, or the last attempt.
async fn deliver(place: PendingPlace, notice: ResultNotice) {
    let shared = &place.0;
    // A status of ids, strings, numbers and validated raw JSON always serialises.
    let body = Bytes::from(serde_json::to_vec(&notice.status).unwrap_or_default());
    let url = match shared.check_url(&notice.callback_url) {
        Ok(url) => url,
        Err(reason) => {
            shared.counts.refused.inc();
            tracing::warn!(%reason, "result webhook not delivered: its URL is refused here");
            return;
        }
    };
    let host = url.host_str().unwrap_or_default().to_owned();
    let mut attempt = 1;
    loop {
        let outcome = {
            // Never closed, so never an error.
            let _permit = shared.requests.acquire().await;
            let timestamp = chrono::Utc::now().timestamp();
            let headers = sign::headers(&notice, &body, timestamp, shared.signer.as_ref());
            shared
                .transport
                .post(url.clone(), headers, body.clone())
                .await
        };
        shared.counts.attempts.inc();
        match outcome {
            AttemptOutcome::Delivered => {
                shared.counts.delivered.inc();
                tracing::debug!(attempt, %host, "result webhook delivered");
                return;
            }
            AttemptOutcome::Refused(reason) => {
                shared.counts.refused.inc();
                tracing::warn!(%host, %reason, "result webhook refused by the outbound policy");
                return;
            }
            AttemptOutcome::Failed(reason) if attempt >= shared.max_attempts => {
                shared.counts.dropped.inc();
                tracing::warn!(attempts = attempt, %host, %reason, "result webhook dropped after its last attempt");
                return;
            }
            AttemptOutcome::Failed(reason) => {
                let wait = shared.backoff(attempt);
                tracing::debug!(attempt, %host, %reason, ?wait, "result webhook attempt failed");
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
        }
    }
}

impl MetricsSection for Webhooks {
    /// Listed once a result with a webhook has ended on this replica, so a scrape without
    /// webhooks is what it always was.
    fn render(&self, w: &mut MetricWriter) {
        let c = &self.shared.counts;
        if !c.used.load(Ordering::Relaxed) {
            return;
        }
        let outcomes = [
            ("delivered", c.delivered.get()),
            ("dropped", c.dropped.get()),
            ("overflow", c.overflow.get()),
            ("refused", c.refused.get()),
        ];
        w.counter(
            "controlplane_webhook_deliveries_total",
            "Result webhooks by outcome: delivered, dropped after the last attempt, refused by \
             the outbound policy, overflow of the delivery queue.",
            outcomes
                .iter()
                .filter(|(_, n)| *n > 0)
                .map(|&(outcome, n)| ([("outcome", outcome)], n)),
        );
        let attempts = c.attempts.get();
        w.counter(
            "controlplane_webhook_attempts_total",
            "Result webhook requests sent to receivers.",
            (attempts > 0).then_some(([], attempts)),
        );
        w.gauge(
            "controlplane_webhook_pending",
            "Result webhooks waiting, in flight or between attempts.",
            [([], self.pending() as i64)],
        );
    }
}
