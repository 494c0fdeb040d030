//! The dead-letter index on JetStream (issue 11): one stream per function whose messages say
//! "execution X became (or is about to become) a dead letter in state S". The execution records
//! (`kv_executions.rs`) stay the truth: the core writes an entry *before* the terminal record
//! and checks every entry against its record when listing, so an entry whose record did not end
//! as a dead letter (a crash between the two writes, a race lost to another result) is skipped,
//! and no dead letter is ever missing from the index.
//!
//! Listing walks the stream's sequence numbers downwards (newest first) with one direct read per
//! entry; the cursor is the sequence number. Entries expire with the records (`max_age` = the
//! execution store TTL) and the stream keeps at most `max_entries` of them (oldest dropped).

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use async_nats::jetstream::stream::{self, DiscardPolicy, RetentionPolicy, StorageType};
use async_nats::jetstream::{self, context::PublishErrorKind};
use bytes::Bytes;
use futures_util::future::join_all;

use super::queue::{DEDUPE_WINDOW, MSG_ID_HEADER};
use super::{Names, NatsConnection, Placement};
use crate::support::lock;

/// An index entry: an execution id, the state it ended in, and its place in the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub sequence: u64,
    pub execution_id: String,
    /// `error` or `timeout`, as written (the record decides).
    pub state: String,
}

#[derive(Debug, thiserror::Error)]
#[error("NATS unavailable: {0}")]
pub struct Unavailable(pub String);

/// One function's index entries are read this many at once.
const READ_BATCH: u64 = 32;

pub struct DeadLetterIndex {
    client: async_nats::Client,
    jetstream: jetstream::Context,
    names: Names,
    placement: Placement,
    max_age: Duration,
    max_entries: i64,
    /// Functions whose stream this process brought to its configuration (once per process, so
    /// a changed TTL or entry cap applies after a restart).
    ensured: Mutex<HashSet<String>>,
}

impl DeadLetterIndex {
    pub fn new(
        conn: &NatsConnection,
        placement: Placement,
        max_age: Duration,
        max_entries: usize,
    ) -> DeadLetterIndex {
        DeadLetterIndex {
            client: conn.client.clone(),
            jetstream: conn.jetstream.clone(),
            names: conn.names.clone(),
            placement,
            max_age,
            max_entries: i64::try_from(max_entries).unwrap_or(i64::MAX),
            ensured: Mutex::default(),
        }
    }

    /// Creates the function's index stream, or brings it to this configuration. Idempotent.
    async fn ensure(&self, function: &str) -> Result<(), Unavailable> {
        self.jetstream
            .create_or_update_stream(stream::Config {
                name: self.names.dead_letter_stream(function),
                subjects: vec![self.names.dead_letter_subject(function)],
                retention: RetentionPolicy::Limits,
                discard: DiscardPolicy::Old,
                max_messages: self.max_entries.max(1),
                max_age: self.max_age,
                max_message_size: 1024,
                // JetStream refuses a dedupe window longer than the stream's `max_age`.
                duplicate_window: DEDUPE_WINDOW.min(self.max_age),
                storage: StorageType::File,
                num_replicas: self.placement.replicas,
                description: Some(format!("nanofaas dead letters of {function}")),
                ..Default::default()
            })
            .await
            .map(|_| ())
            .map_err(|e| Unavailable(e.to_string()))
    }

    /// Adds an entry once it is stored (the stream is created, or brought to this configuration,
    /// on this process's first one). Writing the same execution again within the dedupe window
    /// stores it once.
    pub async fn add(
        &self,
        function: &str,
        execution_id: &str,
        state: &str,
    ) -> Result<(), Unavailable> {
        if self.client.connection_state() != async_nats::connection::State::Connected {
            return Err(Unavailable("not connected".to_owned()));
        }
        if !lock(&self.ensured).contains(function) {
            self.ensure(function).await?;
            lock(&self.ensured).insert(function.to_owned());
        }
        match self.publish(function, execution_id, state).await {
            Err(e) if matches!(e.kind(), PublishErrorKind::StreamNotFound) => {
                self.ensure(function).await?;
                self.publish(function, execution_id, state)
                    .await
                    .map_err(|e| Unavailable(e.to_string()))
            }
            other => other.map_err(|e| Unavailable(e.to_string())),
        }
    }

    async fn publish(
        &self,
        function: &str,
        execution_id: &str,
        state: &str,
    ) -> Result<(), jetstream::context::PublishError> {
        let message = jetstream::message::PublishMessage::build()
            .payload(Bytes::from(state.to_owned()))
            .message_id(execution_id);
        self.jetstream
            .send_publish(self.names.dead_letter_subject(function), message)
            .await?
            .await
            .map(|_| ())
    }

    /// Up to `max` entries older than `before` (all when `None`), newest first, and whether the
    /// walk reached the oldest entry. Costs one stream-info request and one direct read per
    /// sequence number visited.
    pub async fn older_than(
        &self,
        function: &str,
        before: Option<u64>,
        max: usize,
    ) -> Result<(Vec<Entry>, bool), Unavailable> {
        let mut stream = match self
            .jetstream
            .get_stream(self.names.dead_letter_stream(function))
            .await
        {
            Ok(stream) => stream,
            Err(e) if stream_missing(&e) => return Ok((Vec::new(), true)),
            Err(e) => return Err(Unavailable(e.to_string())),
        };
        let state = stream
            .info()
            .await
            .map_err(|e| Unavailable(e.to_string()))?
            .state
            .clone();
        if state.messages == 0 {
            return Ok((Vec::new(), true));
        }
        let first = state.first_sequence;
        let mut next = match before {
            Some(b) => b.saturating_sub(1).min(state.last_sequence),
            None => state.last_sequence,
        };
        let mut entries = Vec::new();
        while next >= first && next > 0 && entries.len() < max {
            let low = next.saturating_sub(READ_BATCH - 1).max(first);
            let reads = (low..=next)
                .rev()
                .map(|sequence| {
                    let stream = &stream;
                    async move { (sequence, stream.get_raw_message(sequence).await) }
                })
                .collect::<Vec<_>>();
            for (sequence, read) in join_all(reads).await {
                let message = match read {
                    Ok(message) => message,
                    // A gap: expired or dropped since the stream info was read.
                    Err(e)
                        if matches!(e.kind(), stream::LastRawMessageErrorKind::NoMessageFound) =>
                    {
                        continue;
                    }
                    Err(e) => return Err(Unavailable(e.to_string())),
                };
                let Some(id) = message.headers.get(MSG_ID_HEADER) else {
                    continue;
                };
                if entries.len() < max {
                    entries.push(Entry {
                        sequence,
                        execution_id: id.as_str().to_owned(),
                        state: String::from_utf8_lossy(&message.payload).into_owned(),
                    });
                } else {
                    // Not returned: the walk did not finish here.
                    return Ok((entries, false));
                }
            }
            next = low.saturating_sub(1);
        }
        let exhausted = next < first || next == 0;
        Ok((entries, exhausted))
    }
}

fn stream_missing(e: &jetstream::context::GetStreamError) -> bool {
    matches!(e.kind(), jetstream::context::GetStreamErrorKind::JetStream(err)
        if err.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND)
}
