//! Retries that wait out a backoff delay (issue 11) on JetStream, without holding the function's
//! concurrency meanwhile.
//!
//! Why not just nak the delivery with the delay: a nak'd message stays "ack pending" until it is
//! delivered again, so it keeps one of the `max_ack_pending` (= concurrency) places of the
//! `dispatch` consumer, and with concurrency 1 nothing else of the function runs until the delay
//! is over (measured: the next message came only after the nak's 3 s). So a delayed retry is a
//! message of its own on the function's retry subject, in the same stream (it keeps its place of
//! the stream's capacity), with the time it is due. A second consumer, `retry`, with room for
//! every stored message, hands it to a replica, which naks it until it is due and then moves it
//! to the invocation subject (publish, then ack), where `dispatch` delivers it like any
//! invocation. Each step is stored before the previous one is let go, so a crash repeats a step
//! (deduplicated by message id), never loses the retry.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use bytes::Bytes;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::queue::{
    Delivery, EXECUTION_ID_HEADER, FunctionQueueConfig, InvocationQueue, PublishError,
    publish_error,
};

/// The consumer of a function's delayed retries.
pub const RETRY_CONSUMER: &str = "retry";
/// When a delayed retry is due, in Unix milliseconds.
pub const DUE_HEADER: &str = "Nanofaas-Due";
/// How long a due retry that cannot be moved (the stream is full, NATS is away) waits before
/// the next try.
const MOVE_AGAIN: Duration = Duration::from_secs(1);

/// The `retry` consumer: every stored message may be pending at once (a waiting retry never
/// blocks another), and a replica that dies holding one lets it come back after `ack_wait`.
pub(super) fn retry_consumer(
    function: &str,
    subject: String,
    config: &FunctionQueueConfig,
) -> pull::Config {
    pull::Config {
        durable_name: Some(RETRY_CONSUMER.to_owned()),
        description: Some(format!("nanofaas delayed retries of {function}")),
        filter_subject: subject,
        deliver_policy: DeliverPolicy::All,
        ack_policy: AckPolicy::Explicit,
        ack_wait: Duration::from_secs(30),
        max_ack_pending: config.capacity.max(1),
        max_deliver: -1,
        ..Default::default()
    }
}

fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl InvocationQueue {
    /// Stores the retry of `execution_id` (its `attempt`) to be run after `delay`; returns once
    /// JetStream stored it. Refused like a publish when the stream is at its capacity.
    pub async fn publish_retry(
        &self,
        function: &str,
        execution_id: &str,
        attempt: u32,
        payload: Bytes,
        delay: Duration,
    ) -> Result<(), PublishError> {
        let due = unix_ms(SystemTime::now() + delay);
        let message = jetstream::message::PublishMessage::build()
            .payload(payload.clone())
            .header(EXECUTION_ID_HEADER, execution_id)
            .header(DUE_HEADER, due.to_string().as_str())
            .message_id(format!("{execution_id}.retry{attempt}"));
        self.send(
            self.names().retry_subject(function),
            message,
            function,
            payload.len(),
        )
        .await
    }

    /// Moves `function`'s due retries to its invocations until `stop` (or the function's queue
    /// is removed).
    pub fn spawn_retry_mover(&self, function: &str, stop: CancellationToken) -> JoinHandle<()> {
        let queue = self.clone();
        let sink = move |delivery: Delivery| {
            let queue = queue.clone();
            tokio::spawn(async move { queue.move_when_due(delivery).await });
        };
        self.spawn_consumer_loop(function, RETRY_CONSUMER, Arc::new(sink), stop)
    }

    async fn move_when_due(&self, retry: Delivery) {
        let now = unix_ms(SystemTime::now());
        let due = retry.due_unix_ms.unwrap_or(0);
        if due > now {
            let _ = retry.nak(Duration::from_millis(due - now)).await;
            return;
        }
        // A message id of its own: the first publish's (the execution id) may still be inside
        // the dedupe window; this one dedupes a move repeated after a crash.
        let message = jetstream::message::PublishMessage::build()
            .payload(retry.payload.clone())
            .header(EXECUTION_ID_HEADER, retry.execution_id.as_str())
            .message_id(format!(
                "{}.moved{}",
                retry.execution_id, retry.stream_sequence
            ));
        let subject = self.names().invoke_subject(&retry.function);
        match self
            .send(subject, message, &retry.function, retry.payload.len())
            .await
        {
            Ok(()) => {
                if let Err(e) = retry.ack().await {
                    tracing::debug!(error = %e, "ack of a moved retry failed; moved again later, deduplicated");
                }
            }
            Err(e) => {
                tracing::debug!(execution_id = %retry.execution_id, error = %e, "moving a due retry failed; trying again");
                let _ = retry.nak(MOVE_AGAIN).await;
            }
        }
    }

    async fn send(
        &self,
        subject: String,
        message: jetstream::message::PublishMessage,
        function: &str,
        size: usize,
    ) -> Result<(), PublishError> {
        self.jetstream()
            .send_publish(subject, message)
            .await
            .map_err(|e| publish_error(function, size, e))?
            .await
            .map_err(|e| publish_error(function, size, e))?;
        Ok(())
    }
}
