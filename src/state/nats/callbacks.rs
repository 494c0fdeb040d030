//! Cross-replica routing of what happens to an execution held in another replica's memory.
//!
//! - [`CompletionRoute`]: a runtime's `:complete` callback may land on any replica (the Service
//!   picks). A replica that does not hold the execution asks the others on the core-NATS subject
//!   `P.complete` (request/reply, no JetStream: the answer matters only while the caller
//!   waits). Every replica subscribes; only the holder answers; silence until the timeout (or no
//!   subscriber at all) means nobody holds it.
//! - [`DoneNotifier`]: `P.done.<execution id>` is published when an execution finishes, so a
//!   synchronous caller waiting on another replica (e.g. on an idempotency winner) wakes.
//!
//! Both are fire-and-forget on the broker: if NATS is down the request fails fast and the
//! caller answers as for an unknown execution; durable state lives in the KV buckets.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use futures_util::future::BoxFuture;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::names::decode_token;
use super::{Names, NatsConnection};

/// The header naming the execution a routed callback is for.
pub const EXECUTION_ID_HEADER: &str = "Nanofaas-Execution-Id";
/// Callbacks handled at once per replica; more wait for a permit (bounded memory).
const MAX_CONCURRENT_HANDLERS: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("NATS unavailable: {0}")]
    Unavailable(String),
}

/// A routed callback, as the holder receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletionRequest {
    pub execution_id: String,
    pub body: Bytes,
}

/// The answer to a routed callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteOutcome {
    /// The holder applied it; its reply, opaque (the core encodes its own answer).
    Applied(Bytes),
    /// No replica holds the execution (nobody answered in time).
    Unknown,
}

/// The holder side: `Some(reply)` when this replica holds the execution (and has applied the
/// callback), `None` to stay silent.
pub trait CompletionHandler: Send + Sync + 'static {
    fn handle(&self, request: CompletionRequest) -> BoxFuture<'static, Option<Bytes>>;
}

/// Request/reply route for `:complete` callbacks.
#[derive(Clone)]
pub struct CompletionRoute {
    client: async_nats::Client,
    subject: String,
}

impl CompletionRoute {
    pub fn new(conn: &NatsConnection) -> CompletionRoute {
        CompletionRoute {
            client: conn.client.clone(),
            subject: conn.names.complete_subject(),
        }
    }

    /// Asks the replica holding `execution_id` to apply `body`; waits at most `timeout`.
    pub async fn request(
        &self,
        execution_id: &str,
        body: Bytes,
        timeout: Duration,
    ) -> Result<RouteOutcome, RouteError> {
        if self.client.connection_state() != async_nats::connection::State::Connected {
            return Err(RouteError::Unavailable("not connected".to_owned()));
        }
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(EXECUTION_ID_HEADER, execution_id);
        let request = async_nats::Request::new()
            .headers(headers)
            .payload(body)
            .timeout(Some(timeout));
        match self
            .client
            .send_request(self.subject.clone(), request)
            .await
        {
            Ok(reply) => Ok(RouteOutcome::Applied(reply.payload)),
            Err(e) => match e.kind() {
                async_nats::RequestErrorKind::TimedOut
                | async_nats::RequestErrorKind::NoResponders => Ok(RouteOutcome::Unknown),
                _ => Err(RouteError::Unavailable(e.to_string())),
            },
        }
    }

    /// Answers routed callbacks for the executions this replica holds, until `stop`. The
    /// subscription is registered with the server before this returns, so a request sent
    /// afterwards reaches it.
    pub async fn serve(
        &self,
        handler: Arc<dyn CompletionHandler>,
        stop: CancellationToken,
    ) -> Result<JoinHandle<()>, RouteError> {
        let mut subscription = subscribe_registered(&self.client, self.subject.clone()).await?;
        let client = self.client.clone();
        let permits = Arc::new(Semaphore::new(MAX_CONCURRENT_HANDLERS));
        Ok(tokio::spawn(async move {
            loop {
                let message = tokio::select! {
                    _ = stop.cancelled() => break,
                    message = subscription.next() => message,
                };
                let Some(message) = message else { break };
                let (Some(reply_to), Some(execution_id)) = (
                    message.reply.clone(),
                    message
                        .headers
                        .as_ref()
                        .and_then(|h| h.get(EXECUTION_ID_HEADER))
                        .map(|v| v.as_str().to_owned()),
                ) else {
                    continue;
                };
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    break;
                };
                let handler = handler.clone();
                let client = client.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    let request = CompletionRequest {
                        execution_id,
                        body: message.payload,
                    };
                    if let Some(answer) = handler.handle(request).await
                        && let Err(e) = client.publish(reply_to, answer).await
                    {
                        tracing::warn!(error = %e, "replying to a routed callback failed");
                    }
                });
            }
            let _ = subscription.unsubscribe().await;
        }))
    }
}

/// Publish/subscribe of "execution finished" notifications.
#[derive(Clone)]
pub struct DoneNotifier {
    client: async_nats::Client,
    names: Names,
}

impl DoneNotifier {
    pub fn new(conn: &NatsConnection) -> DoneNotifier {
        DoneNotifier {
            client: conn.client.clone(),
            names: conn.names.clone(),
        }
    }

    /// Announces that `execution_id` finished; `payload` is opaque (e.g. the terminal record).
    /// Returns once the server has the message (flushed), so a waiter subscribed before the
    /// call is sure to be told.
    pub async fn publish(&self, execution_id: &str, payload: Bytes) -> Result<(), RouteError> {
        let unavailable = |e: &dyn std::fmt::Display| RouteError::Unavailable(e.to_string());
        self.client
            .publish(self.names.done_subject(execution_id), payload)
            .await
            .map_err(|e| unavailable(&e))?;
        self.client.flush().await.map_err(|e| unavailable(&e))
    }

    /// Subscribes to one execution's notification. Registered with the server when this
    /// returns: subscribe first, then check the record, then wait, and no finish is missed.
    pub async fn subscribe(&self, execution_id: &str) -> Result<DoneWaiter, RouteError> {
        let subscription =
            subscribe_registered(&self.client, self.names.done_subject(execution_id)).await?;
        Ok(DoneWaiter { subscription })
    }

    /// Subscribes to every notification (one subscription per replica, fanned out locally).
    pub async fn subscribe_all(&self) -> Result<DoneStream, RouteError> {
        let subscription = subscribe_registered(&self.client, self.names.done_wildcard()).await?;
        Ok(DoneStream { subscription })
    }
}

/// One execution's "finished" notification.
pub struct DoneWaiter {
    subscription: async_nats::Subscriber,
}

impl DoneWaiter {
    /// The notification's payload, or `None` if none came within `timeout`.
    pub async fn wait(mut self, timeout: Duration) -> Option<Bytes> {
        let message = tokio::time::timeout(timeout, self.subscription.next())
            .await
            .ok()
            .flatten();
        let _ = self.subscription.unsubscribe().await;
        message.map(|m| m.payload)
    }
}

/// Every "finished" notification, as `(execution id, payload)`.
pub struct DoneStream {
    subscription: async_nats::Subscriber,
}

impl DoneStream {
    /// The next notification; `None` when the client closed.
    pub async fn next(&mut self) -> Option<(String, Bytes)> {
        loop {
            let message = self.subscription.next().await?;
            let token = message
                .subject
                .as_str()
                .rsplit('.')
                .next()
                .unwrap_or_default();
            if let Some(execution_id) = decode_token(token) {
                return Some((execution_id, message.payload));
            }
        }
    }
}

/// Subscribes and waits until the server has registered the interest, so nothing published
/// after this returns is missed. `flush` only writes the socket; a request on the same
/// connection is a round trip, and the server handles a connection's operations in order, so
/// its answer ("no responders", to an inbox nobody listens on) comes after the subscription is in
/// place.
async fn subscribe_registered(
    client: &async_nats::Client,
    subject: String,
) -> Result<async_nats::Subscriber, RouteError> {
    let subscription = client
        .subscribe(subject)
        .await
        .map_err(|e| RouteError::Unavailable(e.to_string()))?;
    match client.request(client.new_inbox(), Bytes::new()).await {
        Ok(_) => Ok(subscription),
        Err(e) if e.kind() == async_nats::client::RequestErrorKind::NoResponders => {
            Ok(subscription)
        }
        Err(e) => Err(RouteError::Unavailable(e.to_string())),
    }
}
