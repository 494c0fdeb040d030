//! Result webhooks of durable executions (issue 11). With a shared backend the terminal
//! transition that counts is the write that makes the shared record terminal (first result wins
//! cluster-wide), so the replica whose write it is announces the result, from the record: the
//! callback URL and trace context travel in it, and whichever replica finishes the execution
//! delivers, including one that never saw the `:enqueue`. The local store of that replica holds
//! no URL (see `accept_delivery`), so nothing is announced twice from one transition.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::{DurableBackend, DurableError, DurableRecord, RecordStep};
use crate::execution::notice::ResultNotice;
use crate::invocation::InvocationService;
use crate::support::trace_context::TraceContext;

impl InvocationService {
    /// A transition of the shared record that announces the result when this call's write is
    /// the one that made the record terminal.
    pub(super) async fn transition_announcing(
        &self,
        backend: &Arc<dyn DurableBackend>,
        execution_id: &str,
        mut step: RecordStep,
    ) -> Result<Option<DurableRecord>, DurableError> {
        // Set by the step's last run: the run whose compare-and-set succeeded (a conflict runs
        // the step again on the newer record).
        let ended_here = Arc::new(AtomicBool::new(false));
        let flag = ended_here.clone();
        let noted: RecordStep = Box::new(move |record: &DurableRecord| {
            let next = step(record);
            let ends =
                !record.state.is_terminal() && next.as_ref().is_some_and(|n| n.state.is_terminal());
            flag.store(ends, Ordering::Relaxed);
            next
        });
        let result = backend.transition(execution_id, noted).await;
        if let Ok(Some(record)) = &result {
            if ended_here.load(Ordering::Relaxed) {
                self.announce_record(execution_id, record);
            }
        }
        result
    }

    /// Announces a terminal shared record that this replica's write ended (also called by the
    /// backend for the executions of a removed function).
    pub fn announce_record(&self, execution_id: &str, record: &DurableRecord) {
        let (Some(listener), Some(url)) =
            (self.store.result_listener(), record.callback_url.as_deref())
        else {
            return;
        };
        if !record.state.is_terminal() {
            return;
        }
        listener.finished(ResultNotice {
            function: record.function.clone(),
            callback_url: Arc::from(url),
            status: record.status(execution_id),
            trace: TraceContext::from_stored(
                record.traceparent.as_deref(),
                record.tracestate.as_deref(),
            ),
            duration: record.run_duration(),
        });
    }
}
