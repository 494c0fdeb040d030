//! The store's side of dead letters (issue 11): listing a function's, and finding one to re-drive.

use std::sync::Arc;

use super::ExecutionStore;
use crate::execution::dead_letters::{DeadLetterPage, DeadLetterQuery};
use crate::execution::{ExecutionRecord, Payload};
use crate::registry::RegisteredFunction;
use crate::support::lock;

/// What the store knows of an execution asked to be re-driven.
pub enum DeadLetterLookup {
    Missing,
    /// Not terminal, a success, or a sync invocation's.
    NotDeadLetter,
    Found {
        function: Arc<RegisteredFunction>,
        payload: Arc<Payload>,
    },
}

impl ExecutionStore {
    /// One page of `function`'s dead letters, newest first.
    pub fn dead_letters(&self, function: &str, query: &DeadLetterQuery) -> DeadLetterPage {
        let inner = lock(&self.inner);
        let (ids, next_cursor) = inner.dead_letters.page(function, query);
        DeadLetterPage {
            items: ids
                .iter()
                .filter_map(|id| inner.records.get(id).map(ExecutionRecord::status))
                .collect(),
            next_cursor,
        }
    }

    /// The request of a dead letter, for a redrive.
    pub fn dead_letter(&self, execution_id: &str) -> DeadLetterLookup {
        match lock(&self.inner).records.get(execution_id) {
            None => DeadLetterLookup::Missing,
            Some(r) => match &r.dead_letter {
                Some(payload) => DeadLetterLookup::Found {
                    function: r.function.clone(),
                    payload: payload.clone(),
                },
                None => DeadLetterLookup::NotDeadLetter,
            },
        }
    }
}
