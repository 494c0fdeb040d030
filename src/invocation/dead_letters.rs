//! Dead letters (issue 11, item 3): an async execution that ended in ERROR or TIMEOUT keeps its
//! request; a function's dead letters are listed newest first, and one can be re-driven as a new
//! execution with the same request. With the memory backend both read the execution store
//! (`execution::dead_letters`); with a shared backend, its index and records, so they survive a
//! restart and every replica lists the same (docs/dead-letters.md).

use std::collections::HashSet;
use std::sync::Arc;

use futures_util::future::{BoxFuture, join_all};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::durable::{DurableBackend, DurableError, DurableRecord};
use super::{InvocationService, InvokeError, InvokeInput};
use crate::execution::dead_letters::{DeadLetterPage, DeadLetterQuery};
use crate::execution::store::DeadLetterLookup;
use crate::model::ExecutionState;
use crate::registry::RegisteredFunction;

/// A shared backend's index of dead letters, by function, in the order they were written.
pub trait DeadLetterLog {
    /// Adds `execution_id` to `function`'s index before its record is written as the dead
    /// letter: the index may name a record that is no dead letter (the listing checks each
    /// record), never miss one that is.
    fn index_dead_letter(
        &self,
        function: &str,
        execution_id: &str,
        state: ExecutionState,
    ) -> BoxFuture<'_, Result<(), DurableError>>;
    /// Up to `max` entries of `function` older than the cursor `before` (all when `None`),
    /// newest first, and whether they reach the oldest one.
    fn dead_letter_entries(
        &self,
        function: &str,
        before: Option<u64>,
        max: usize,
    ) -> BoxFuture<'_, Result<(Vec<DeadLetterEntry>, bool), DurableError>>;
}

/// One entry of a backend's dead-letter index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterEntry {
    /// Its place in the index: the listing's cursor.
    pub sequence: u64,
    pub execution_id: String,
    /// The state it was written with (`None` if unreadable); the record decides.
    pub state: Option<ExecutionState>,
}

/// Index entries one page visits at most on a shared backend; a page that reaches it comes back
/// short, with a cursor to go on from (only a `status` filter that few entries match does).
const MAX_SCAN_PER_PAGE: usize = 1000;

/// The runtime body a dead letter keeps, split back into what `:enqueue` received.
#[derive(Deserialize)]
struct Request {
    input: Box<RawValue>,
    #[serde(default)]
    metadata: Option<Box<RawValue>>,
}

impl InvocationService {
    /// `GET /v1/functions/{name}/executions`: one page of the function's dead letters.
    pub async fn dead_letters(
        &self,
        function: &str,
        query: DeadLetterQuery,
    ) -> Result<DeadLetterPage, InvokeError> {
        if self.registry.get(function).is_none() {
            return Err(InvokeError::FunctionNotFound(function.to_owned()));
        }
        match self.durable()? {
            Some(backend) => list_shared(backend, function, &query).await,
            None => Ok(self.store.dead_letters(function, &query)),
        }
    }

    /// `POST /v1/executions/{id}:redrive`: a new async execution of the dead letter's function
    /// with its request, admitted as `:enqueue` admits one (rate limit, queue bound). Its id.
    pub async fn redrive(self: &Arc<Self>, execution_id: &str) -> Result<Arc<str>, InvokeError> {
        let (function, body) = self.dead_letter_request(execution_id).await?;
        let not_dead_letter = || InvokeError::NotDeadLetter(execution_id.to_owned());
        let request: Request = serde_json::from_slice(&body).map_err(|_| not_dead_letter())?;
        let input = InvokeInput {
            input: Arc::from(request.input),
            metadata: request
                .metadata
                .filter(|m| m.get() != "null")
                .map(|m| m.get().to_owned()),
            idempotency_key: None,
            trace_id: None,
            // A new execution: a new trace, and no result URL (docs/dead-letters.md).
            trace: None,
            callback_url: None,
        };
        let id = self.invoke_async(&function, input).await?;
        if let Some(f) = self.registry.get(&function) {
            f.meters(&self.metrics).redrive.inc();
        }
        Ok(id)
    }

    /// The function and runtime body of a dead letter: the shared record first (the truth for
    /// async executions on a shared backend), then this replica's store (sync executions).
    async fn dead_letter_request(
        &self,
        execution_id: &str,
    ) -> Result<(String, bytes::Bytes), InvokeError> {
        let not_dead_letter = || InvokeError::NotDeadLetter(execution_id.to_owned());
        let mut shared = false;
        if let Some(backend) = self.durable()? {
            match backend.read(execution_id).await {
                Ok(Some(record)) if record.state.is_terminal() => {
                    return match (record.is_dead_letter(), record.request) {
                        (true, Some(request)) => Ok((
                            record.function,
                            bytes::Bytes::from(String::from(Box::<str>::from(request))),
                        )),
                        _ => Err(not_dead_letter()),
                    };
                }
                // Not terminal in the shared record yet: this replica may have just ended it
                // (its terminal write is on its way); its own store then has the dead letter.
                // If it does not know the execution at all, the execution is in progress.
                Ok(record) => shared = record.is_some(),
                Err(e) => return Err(InvokeError::StateUnavailable(e.to_string())),
            }
        }
        match self.store.dead_letter(execution_id) {
            DeadLetterLookup::Missing if shared => Err(not_dead_letter()),
            DeadLetterLookup::Missing => {
                Err(InvokeError::ExecutionNotFound(execution_id.to_owned()))
            }
            DeadLetterLookup::NotDeadLetter => Err(not_dead_letter()),
            DeadLetterLookup::Found { function, payload } => {
                Ok((function.name().to_owned(), payload.body.clone()))
            }
        }
    }

    /// A delivery whose replica was lost once too often ended (as `record`, when written):
    /// counted as an error, and as a dead letter when it is one.
    pub(super) fn count_lost(&self, function: &RegisteredFunction, record: Option<&DurableRecord>) {
        let meters = function.meters(&self.metrics);
        meters.error.inc();
        if record.is_some_and(DurableRecord::is_dead_letter) {
            meters.dead_letter.inc();
        }
    }
}

/// One page from a shared backend: its index entries newest first, each checked against its
/// record (the function, a dead letter, the status asked for), read concurrently batch by batch.
async fn list_shared(
    backend: &Arc<dyn DurableBackend>,
    function: &str,
    query: &DeadLetterQuery,
) -> Result<DeadLetterPage, InvokeError> {
    let unavailable = |e: DurableError| InvokeError::StateUnavailable(e.to_string());
    let mut page = DeadLetterPage::default();
    let mut seen = HashSet::new();
    let mut before = query.after;
    let mut scanned = 0;
    loop {
        let want = (query.limit - page.items.len()).clamp(8, 64);
        let (entries, exhausted) = backend
            .dead_letter_entries(function, before, want)
            .await
            .map_err(unavailable)?;
        let candidates: Vec<&DeadLetterEntry> = entries
            .iter()
            .filter(|e| e.state.is_none_or(|s| query.admits(s)))
            .filter(|e| seen.insert(e.execution_id.clone()))
            .collect();
        let records = join_all(candidates.iter().map(|e| backend.read(&e.execution_id))).await;
        for (entry, record) in candidates.iter().zip(records) {
            let Some(record) = record.map_err(unavailable)? else {
                continue;
            };
            if record.function != function || !record.is_dead_letter() {
                continue;
            }
            if !query.admits(record.state) {
                continue;
            }
            page.items.push(record.status(&entry.execution_id));
            if page.items.len() == query.limit {
                let last = entries.last().map(|e| e.sequence);
                let at_the_end = exhausted && last == Some(entry.sequence);
                page.next_cursor = (!at_the_end).then_some(entry.sequence);
                return Ok(page);
            }
        }
        scanned += entries.len();
        let Some(last) = entries.last() else {
            return Ok(page);
        };
        if exhausted {
            return Ok(page);
        }
        before = Some(last.sequence);
        if scanned >= MAX_SCAN_PER_PAGE {
            page.next_cursor = before;
            return Ok(page);
        }
    }
}
