//! The durable async invocation queue: one JetStream stream per function, one durable pull
//! consumer per stream, shared by every replica.
//!
//! Why one stream per function (the design draft had one stream with per-function subjects):
//! JetStream's message limits (`max_msgs`, `max_msgs_per_subject`) are properties of a stream,
//! one value for all its subjects, while `queueSize` differs per function. A per-function stream
//! gets its own `max_msgs` with discard-new, so the broker itself refuses the publish that would
//! exceed this function's bound, cluster-wide and without a read-then-write race. Deleting a
//! function deletes its stream, consumer and pending messages in one call.
//!
//! What the broker enforces, per function:
//! - capacity: stored messages (waiting + delivered-not-acked) ≤ `capacity`; the publish beyond
//!   it fails with [`PublishError::QueueFull`]. Work-queue retention removes a message when it is
//!   acked, so an execution occupies a place from `:enqueue` to its terminal state: the memory
//!   queue's `queueSize` counts only waiting tasks, so a caller wanting the same bound passes
//!   `queueSize + concurrency`.
//! - concurrency: `max_ack_pending` = the function's concurrency, so at most that many messages
//!   are delivered and not yet acked, across all replicas pulling.
//! - redelivery: a message not acked within `ack_wait` is delivered again (to any replica), with
//!   its delivery count raised; a nak with a delay schedules a retry.
//! - dedupe: the `Nats-Msg-Id` header is the execution id, so a publish retried after a lost
//!   acknowledgement stores the invocation once (within [`DEDUPE_WINDOW`]).

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::{AckKind, Acker};
use async_nats::jetstream::stream::{self, DiscardPolicy, RetentionPolicy, StorageType};
use async_nats::jetstream::{self, ErrorCode};
use bytes::Bytes;
use futures_util::StreamExt as _;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{Names, NatsConnection, Placement};

/// The durable consumer's name inside each function's stream.
pub const CONSUMER: &str = "dispatch";
/// How long a repeated execution id is recognised as a duplicate publish.
pub const DEDUPE_WINDOW: Duration = Duration::from_secs(120);
/// The message header carrying the execution id (JetStream's dedupe header).
pub const MSG_ID_HEADER: &str = "Nats-Msg-Id";
/// The execution id of a message whose `Nats-Msg-Id` is not it (a retry, `delayed.rs`).
pub const EXECUTION_ID_HEADER: &str = "Nanofaas-Execution-Id";

/// The broker-side bounds of one function's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FunctionQueueConfig {
    /// Stored messages at most (waiting plus delivered-not-acked).
    pub capacity: i64,
    /// Delivered-not-acked messages at most, cluster-wide.
    pub concurrency: i64,
    /// Redelivery deadline of a delivered message; see [`ack_wait_for`].
    pub ack_wait: Duration,
    /// Largest payload accepted (the broker's `max_payload` caps it too).
    pub max_payload_bytes: i32,
}

/// The ack deadline for a function whose attempts take at most `timeout`: the timeout plus a
/// margin (5 s + 10 %) for the dispatch itself and a late callback, so a live replica's
/// execution is never redelivered while it still runs.
pub fn ack_wait_for(timeout: Duration) -> Duration {
    timeout + Duration::from_secs(5) + timeout / 10
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("queue of {0} is full")]
    QueueFull(String),
    /// No stream: the function's queue was never set up, or it was removed.
    #[error("no queue for function {0}")]
    NoQueue(String),
    #[error("payload of {size} bytes exceeds the limit")]
    TooLarge { size: usize },
    #[error("NATS unavailable: {0}")]
    Unavailable(String),
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("no queue for function {0}")]
    NoQueue(String),
    #[error("NATS unavailable: {0}")]
    Unavailable(String),
}

#[derive(Debug, thiserror::Error)]
#[error("acknowledging delivery of {execution_id}: {reason}")]
pub struct AckError {
    pub execution_id: String,
    pub reason: String,
}

/// A stored invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    pub sequence: u64,
    /// The execution id was already stored (a retried publish): nothing new was queued.
    pub duplicate: bool,
}

/// Cluster-wide depth of one function's queue, for gauges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueDepth {
    /// Stored, not yet delivered.
    pub pending: u64,
    /// Delivered to some replica, not yet acked.
    pub in_flight: u64,
    /// Messages delivered more than once, currently outstanding.
    pub redelivered: u64,
}

/// One delivered invocation, owned by whoever runs it until it is acked or nak'd.
pub struct Delivery {
    pub function: Arc<str>,
    pub execution_id: String,
    pub payload: Bytes,
    /// 1 for the first delivery, then +1 on every redelivery (ack deadline passed, or nak).
    pub attempt: u64,
    pub stream_sequence: u64,
    /// When a delayed retry (`delayed.rs`) is due, in Unix milliseconds.
    pub due_unix_ms: Option<u64>,
    acker: Acker,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("function", &self.function)
            .field("execution_id", &self.execution_id)
            .field("attempt", &self.attempt)
            .field("stream_sequence", &self.stream_sequence)
            .finish_non_exhaustive()
    }
}

impl Delivery {
    /// The execution reached a terminal state: remove the message. Waits for the broker's
    /// confirmation, so an `Ok` means it will not be delivered again.
    pub async fn ack(&self) -> Result<(), AckError> {
        self.acker
            .double_ack_with(AckKind::Ack)
            .await
            .map_err(|e| self.ack_error(e))
    }

    /// Deliver again after `delay` (a retry), to any replica, with the attempt raised.
    pub async fn nak(&self, delay: Duration) -> Result<(), AckError> {
        self.acker
            .ack_with(AckKind::Nak(Some(delay)))
            .await
            .map_err(|e| self.ack_error(e))
    }

    /// Still running: push the redelivery deadline one `ack_wait` further.
    pub async fn in_progress(&self) -> Result<(), AckError> {
        self.acker
            .ack_with(AckKind::Progress)
            .await
            .map_err(|e| self.ack_error(e))
    }

    fn ack_error(&self, e: async_nats::Error) -> AckError {
        AckError {
            execution_id: self.execution_id.clone(),
            reason: e.to_string(),
        }
    }
}

/// Where the pull loop hands deliveries. Called on the pull task: it must not block (spawn the
/// work). The broker's `max_ack_pending` bounds how many deliveries are outstanding at once.
pub trait DeliverySink: Send + Sync + 'static {
    fn deliver(&self, delivery: Delivery);
}

impl<F: Fn(Delivery) + Send + Sync + 'static> DeliverySink for F {
    fn deliver(&self, delivery: Delivery) {
        self(delivery)
    }
}

/// The invocation queues of every function.
#[derive(Clone)]
pub struct InvocationQueue {
    client: async_nats::Client,
    jetstream: jetstream::Context,
    names: Names,
    placement: Placement,
}

impl InvocationQueue {
    pub fn new(conn: &NatsConnection, placement: Placement) -> InvocationQueue {
        InvocationQueue {
            client: conn.client.clone(),
            jetstream: conn.jetstream.clone(),
            names: conn.names.clone(),
            placement,
        }
    }

    pub(super) fn names(&self) -> &Names {
        &self.names
    }

    pub(super) fn jetstream(&self) -> &jetstream::Context {
        &self.jetstream
    }

    /// Creates the function's stream and consumer, or updates their bounds (a scale or a
    /// re-registration with another `queueSize`/`concurrency`/`timeoutMs`). Idempotent, so
    /// every replica may call it.
    pub async fn ensure_function(
        &self,
        function: &str,
        config: &FunctionQueueConfig,
    ) -> Result<(), QueueError> {
        let unavailable = |e: &dyn std::fmt::Display| QueueError::Unavailable(e.to_string());
        self.jetstream
            .create_or_update_stream(stream::Config {
                name: self.names.invocation_stream(function),
                // Delayed retries wait in the same stream, so they keep their place of its
                // capacity (`delayed.rs`).
                subjects: vec![
                    self.names.invoke_subject(function),
                    self.names.retry_subject(function),
                ],
                retention: RetentionPolicy::WorkQueue,
                discard: DiscardPolicy::New,
                max_messages: config.capacity.max(1),
                max_message_size: config.max_payload_bytes,
                duplicate_window: DEDUPE_WINDOW,
                storage: StorageType::File,
                num_replicas: self.placement.replicas,
                description: Some(format!("nanofaas invocations of {function}")),
                ..Default::default()
            })
            .await
            .map_err(|e| unavailable(&e))?;
        let stream = self.stream(function).await?;
        stream
            .create_consumer(pull::Config {
                durable_name: Some(CONSUMER.to_owned()),
                description: Some(format!("nanofaas dispatch of {function}")),
                filter_subject: self.names.invoke_subject(function),
                deliver_policy: DeliverPolicy::All,
                ack_policy: AckPolicy::Explicit,
                ack_wait: config.ack_wait,
                max_ack_pending: config.concurrency.max(1),
                // Attempts are counted and bounded by the core (maxRetries), which acks the
                // message at the terminal state; the broker never drops one on its own.
                max_deliver: -1,
                ..Default::default()
            })
            .await
            .map_err(|e| unavailable(&e))?;
        stream
            .create_consumer(super::delayed::retry_consumer(
                function,
                self.names.retry_subject(function),
                config,
            ))
            .await
            .map_err(|e| unavailable(&e))?;
        Ok(())
    }

    /// Stores one invocation. Refused at once, without a round trip, while disconnected.
    pub async fn publish(
        &self,
        function: &str,
        execution_id: &str,
        payload: Bytes,
    ) -> Result<Published, PublishError> {
        if self.client.connection_state() != async_nats::connection::State::Connected {
            return Err(PublishError::Unavailable("not connected".to_owned()));
        }
        let size = payload.len();
        let publish = jetstream::message::PublishMessage::build()
            .payload(payload)
            .message_id(execution_id);
        let ack = self
            .jetstream
            .send_publish(self.names.invoke_subject(function), publish)
            .await
            .map_err(|e| publish_error(function, size, e))?
            .await
            .map_err(|e| publish_error(function, size, e))?;
        Ok(Published {
            sequence: ack.sequence,
            duplicate: ack.duplicate,
        })
    }

    /// Removes the function's queue: its stream, consumer and every message not yet acked.
    /// Removing an absent queue succeeds.
    pub async fn remove_function(&self, function: &str) -> Result<(), QueueError> {
        match self
            .jetstream
            .delete_stream(self.names.invocation_stream(function))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if stream_missing(&e) => Ok(()),
            Err(e) => Err(QueueError::Unavailable(e.to_string())),
        }
    }

    /// The execution ids and payloads still stored in the function's queue (waiting, or
    /// delivered and not acked), oldest first. Reads at most the stream's sequence range, which
    /// the capacity bounds for a live queue; stops once every stored message was found.
    pub async fn stored(&self, function: &str) -> Result<Vec<(String, Bytes)>, QueueError> {
        const MAX_SCAN: u64 = 100_000;
        let mut stream = self.stream(function).await?;
        let state = stream
            .info()
            .await
            .map_err(|e| QueueError::Unavailable(e.to_string()))?
            .state
            .clone();
        let mut ids = Vec::new();
        if state.messages == 0 {
            return Ok(ids);
        }
        let last = state
            .last_sequence
            .min(state.first_sequence.saturating_add(MAX_SCAN));
        for sequence in state.first_sequence..=last {
            if ids.len() as u64 >= state.messages {
                break;
            }
            // A gap is a message acked in the meantime.
            if let Ok(message) = stream.get_raw_message(sequence).await
                && let Some(id) = execution_id_of(&message.headers)
            {
                ids.push((id, message.payload));
            }
        }
        Ok(ids)
    }

    /// Cluster-wide depth from the consumer's state on the broker.
    pub async fn depth(&self, function: &str) -> Result<QueueDepth, QueueError> {
        let stream = self.stream(function).await?;
        let mut consumer = stream
            .get_consumer::<pull::Config>(CONSUMER)
            .await
            .map_err(|e| QueueError::Unavailable(e.to_string()))?;
        let info = consumer
            .info()
            .await
            .map_err(|e| QueueError::Unavailable(e.to_string()))?;
        Ok(QueueDepth {
            pending: info.num_pending,
            in_flight: info.num_ack_pending as u64,
            redelivered: info.num_redelivered as u64,
        })
    }

    /// Pulls the function's deliveries into `sink` until `stop` is cancelled. Survives connection losses and broker restarts: the client re-issues
    /// its pull request on reconnect, and a pull that breaks anyway is re-opened after a pause.
    pub fn spawn_pull_loop(
        &self,
        function: &str,
        sink: Arc<dyn DeliverySink>,
        stop: CancellationToken,
    ) -> JoinHandle<()> {
        self.spawn_consumer_loop(function, CONSUMER, sink, stop)
    }

    /// [`Self::spawn_pull_loop`] on another of the function's consumers.
    pub(super) fn spawn_consumer_loop(
        &self,
        function: &str,
        consumer: &'static str,
        sink: Arc<dyn DeliverySink>,
        stop: CancellationToken,
    ) -> JoinHandle<()> {
        let queue = self.clone();
        let function: Arc<str> = Arc::from(function);
        tokio::spawn(async move { queue.pull_loop(function, consumer, sink, stop).await })
    }

    async fn pull_loop(
        &self,
        function: Arc<str>,
        consumer: &'static str,
        sink: Arc<dyn DeliverySink>,
        stop: CancellationToken,
    ) {
        const PAUSE: Duration = Duration::from_millis(250);
        let pause = || async {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = tokio::time::sleep(PAUSE) => {}
            }
        };
        while !stop.is_cancelled() {
            let messages = match self.open_pull(&function, consumer).await {
                Ok(messages) => messages,
                // Not an end: a broker that just restarted answers "not found" until it has
                // recovered its streams, and a loop that ended there would leave the queue
                // undrained for good. The loop ends with its token (the function's removal).
                Err(QueueError::NoQueue(_)) => {
                    tracing::info!(function = %function, "no stream or consumer (yet); retrying");
                    pause().await;
                    continue;
                }
                Err(e) => {
                    tracing::warn!(function = %function, error = %e, "opening the pull failed");
                    pause().await;
                    continue;
                }
            };
            let mut messages = std::pin::pin!(messages);
            loop {
                let next = tokio::select! {
                    _ = stop.cancelled() => return,
                    next = messages.next() => next,
                };
                match next {
                    Some(Ok(message)) => {
                        if let Some(delivery) = to_delivery(&function, message) {
                            sink.deliver(delivery);
                        }
                    }
                    Some(Err(e)) => {
                        tracing::warn!(function = %function, error = %e, "pull broke; re-opening");
                        break;
                    }
                    None => break,
                }
            }
            pause().await;
        }
    }

    async fn open_pull(
        &self,
        function: &str,
        consumer: &'static str,
    ) -> Result<pull::Stream, QueueError> {
        let stream = self.stream(function).await?;
        let consumer = stream
            .get_consumer::<pull::Config>(consumer)
            .await
            .map_err(|e| {
                if consumer_missing(e.as_ref()) {
                    QueueError::NoQueue(function.to_owned())
                } else {
                    QueueError::Unavailable(e.to_string())
                }
            })?;
        let batch = usize::try_from(consumer.cached_info().config.max_ack_pending)
            .unwrap_or(1)
            .clamp(1, 256);
        consumer
            .stream()
            .max_messages_per_batch(batch)
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await
            .map_err(|e| QueueError::Unavailable(e.to_string()))
    }

    pub(super) async fn stream(
        &self,
        function: &str,
    ) -> Result<jetstream::stream::Stream, QueueError> {
        self.jetstream
            .get_stream(self.names.invocation_stream(function))
            .await
            .map_err(|e| {
                if stream_missing(&e) {
                    QueueError::NoQueue(function.to_owned())
                } else {
                    QueueError::Unavailable(e.to_string())
                }
            })
    }
}

fn to_delivery(function: &Arc<str>, message: jetstream::Message) -> Option<Delivery> {
    let (attempt, stream_sequence) = match message.info() {
        Ok(info) => (info.delivered.max(1) as u64, info.stream_sequence),
        Err(e) => {
            tracing::warn!(function = %function, error = %e, "delivery without JetStream metadata");
            return None;
        }
    };
    let (message, acker) = message.split();
    let headers = message.headers.unwrap_or_default();
    Some(Delivery {
        function: function.clone(),
        execution_id: execution_id_of(&headers).unwrap_or_default(),
        due_unix_ms: headers
            .get(super::delayed::DUE_HEADER)
            .and_then(|v| v.as_str().parse().ok()),
        payload: message.payload,
        attempt,
        stream_sequence,
        acker,
    })
}

/// The execution a stored message is for: its own header, else its message id.
fn execution_id_of(headers: &async_nats::HeaderMap) -> Option<String> {
    headers
        .get(EXECUTION_ID_HEADER)
        .or_else(|| headers.get(MSG_ID_HEADER))
        .map(|v| v.as_str().to_owned())
}

/// Maps a publish failure: the broker refuses a publish beyond `max_msgs` (discard-new) with
/// error 10077 "maximum messages exceeded"; that, and only that, is a full queue.
pub(super) fn publish_error(
    function: &str,
    size: usize,
    e: jetstream::context::PublishError,
) -> PublishError {
    match e.kind() {
        PublishErrorKind::StreamNotFound => return PublishError::NoQueue(function.to_owned()),
        PublishErrorKind::MaxPayloadExceeded => return PublishError::TooLarge { size },
        _ => {}
    }
    let api_error = api_error(&e);
    match api_error {
        Some(err) if err.error_code() == ErrorCode::STREAM_STORE_FAILED => {
            let text = err.to_string();
            if text.contains("maximum messages") {
                PublishError::QueueFull(function.to_owned())
            } else if text.contains("message size exceeds") || text.contains("maximum bytes") {
                PublishError::TooLarge { size }
            } else {
                PublishError::Unavailable(text)
            }
        }
        Some(err) if err.error_code() == ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM => {
            PublishError::TooLarge { size }
        }
        _ => PublishError::Unavailable(e.to_string()),
    }
}

fn stream_missing(e: &jetstream::context::GetStreamError) -> bool {
    matches!(e.kind(), jetstream::context::GetStreamErrorKind::JetStream(err)
        if err.error_code() == ErrorCode::STREAM_NOT_FOUND)
}

fn consumer_missing(e: &(dyn std::error::Error + 'static)) -> bool {
    use jetstream::context::{ConsumerInfoError, ConsumerInfoErrorKind};
    e.downcast_ref::<ConsumerInfoError>().is_some_and(|e| {
        matches!(
            e.kind(),
            ConsumerInfoErrorKind::NotFound | ConsumerInfoErrorKind::StreamNotFound
        )
    })
}

/// The JetStream API error somewhere in `e`'s chain (a publish acknowledgement carries it as
/// the source).
fn api_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a jetstream::Error> {
    let mut current = Some(e);
    while let Some(err) = current {
        if let Some(api) = err.downcast_ref::<jetstream::Error>() {
            return Some(api);
        }
        current = err.source();
    }
    None
}
