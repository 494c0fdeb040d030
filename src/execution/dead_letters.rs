//! Dead letters (issue 11, item 3): async executions that ended in ERROR or TIMEOUT, kept with
//! their request so they can be listed (newest first, by function) and re-driven. The store
//! indexes its own here; a shared state backend lists them its own way (docs/dead-letters.md).
//!
//! Invariant: the index holds exactly the store's records that have a dead letter, each once, by
//! the sequence number it got when it became one (so newer dead letters have larger numbers).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::model::{ExecutionState, ExecutionStatus};

/// `limit` when the query gives none.
pub const DEFAULT_LIMIT: usize = 50;
/// The largest `limit` accepted.
pub const MAX_LIMIT: usize = 200;

/// One page request of `GET /v1/functions/{name}/executions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeadLetterQuery {
    /// `error` or `timeout`; `None` lists both.
    pub status: Option<ExecutionState>,
    /// The cursor of the previous page: only dead letters older than it.
    pub after: Option<u64>,
    /// 1 to [`MAX_LIMIT`].
    pub limit: usize,
}

impl DeadLetterQuery {
    pub fn admits(&self, state: ExecutionState) -> bool {
        is_dead_letter_state(state) && self.status.is_none_or(|s| s == state)
    }
}

/// Whether an execution that ended in `state` is a dead letter (when it was async).
pub fn is_dead_letter_state(state: ExecutionState) -> bool {
    matches!(state, ExecutionState::Error | ExecutionState::Timeout)
}

/// One page, newest first; `next_cursor` is set when older dead letters may follow.
#[derive(Debug, Clone, Default)]
pub struct DeadLetterPage {
    pub items: Vec<ExecutionStatus>,
    pub next_cursor: Option<u64>,
}

/// The store's index: per function, the ids of its dead letters by sequence number.
#[derive(Debug, Default)]
pub(crate) struct DeadLetterIndex {
    last_seq: u64,
    by_function: HashMap<String, BTreeMap<u64, (Arc<str>, ExecutionState)>>,
}

impl DeadLetterIndex {
    /// Indexes a new dead letter; its sequence number.
    pub(crate) fn add(&mut self, function: &str, id: Arc<str>, state: ExecutionState) -> u64 {
        self.last_seq += 1;
        let seq = self.last_seq;
        match self.by_function.get_mut(function) {
            Some(entries) => {
                entries.insert(seq, (id, state));
            }
            None => {
                self.by_function
                    .insert(function.to_owned(), BTreeMap::from([(seq, (id, state))]));
            }
        }
        seq
    }

    pub(crate) fn remove(&mut self, function: &str, seq: u64) {
        if let Some(entries) = self.by_function.get_mut(function) {
            entries.remove(&seq);
            if entries.is_empty() {
                self.by_function.remove(function);
            }
        }
    }

    /// The ids of one page, newest first, and the cursor of the next page. The walk visits at
    /// most the function's dead letters, bounded by the store's entry cap.
    pub(crate) fn page(
        &self,
        function: &str,
        query: &DeadLetterQuery,
    ) -> (Vec<Arc<str>>, Option<u64>) {
        let Some(entries) = self.by_function.get(function) else {
            return (Vec::new(), None);
        };
        let below = query.after.unwrap_or(u64::MAX);
        let mut matching = entries
            .range(..below)
            .rev()
            .filter(|(_, (_, state))| query.admits(*state));
        let mut ids = Vec::with_capacity(query.limit.min(entries.len()));
        let mut last = None;
        for (seq, (id, _)) in matching.by_ref().take(query.limit) {
            ids.push(id.clone());
            last = Some(*seq);
        }
        let next = last.filter(|_| matching.next().is_some());
        (ids, next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(status: Option<ExecutionState>, after: Option<u64>, limit: usize) -> DeadLetterQuery {
        DeadLetterQuery {
            status,
            after,
            limit,
        }
    }

    #[test]
    fn pages_newest_first_with_a_cursor_and_a_status_filter() {
        let mut index = DeadLetterIndex::default();
        let mut seqs = Vec::new();
        for i in 0..5 {
            let state = if i % 2 == 0 {
                ExecutionState::Error
            } else {
                ExecutionState::Timeout
            };
            seqs.push(index.add("f", Arc::from(format!("e{i}")), state));
        }
        index.add("g", Arc::from("other"), ExecutionState::Error);
        let names = |ids: Vec<Arc<str>>| ids.iter().map(|i| i.to_string()).collect::<Vec<_>>();

        let (ids, next) = index.page("f", &query(None, None, 2));
        assert_eq!(names(ids), ["e4", "e3"]);
        let (ids, next) = index.page("f", &query(None, next, 2));
        assert_eq!(names(ids), ["e2", "e1"]);
        let (ids, next) = index.page("f", &query(None, next, 2));
        assert_eq!(names(ids), ["e0"]);
        assert_eq!(next, None);

        let (ids, next) = index.page("f", &query(Some(ExecutionState::Error), None, 10));
        assert_eq!(names(ids), ["e4", "e2", "e0"]);
        assert_eq!(next, None);
        // An exact fit has no next page.
        let (_, next) = index.page("f", &query(Some(ExecutionState::Timeout), None, 2));
        assert_eq!(next, None);

        index.remove("f", seqs[4]);
        index.remove("f", seqs[3]);
        let (ids, _) = index.page("f", &query(None, None, 1));
        assert_eq!(names(ids), ["e2"]);
        assert_eq!(index.page("nobody", &query(None, None, 5)).0.len(), 0);
    }
}
