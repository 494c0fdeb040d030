//! The dispatch a sync request drives itself, so the common case needs no task hop.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio_util::task::TaskTracker;

/// A dispatch driven by the request that created the execution, so the common case needs no task
/// hop. If the request goes away first (client gone, callback answered, wait timed out), the
/// unfinished dispatch is detached onto the tracker and still completes.
pub(super) struct DrivenDispatch {
    future: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    tracker: TaskTracker,
}

impl DrivenDispatch {
    /// `dispatch` is `None` when someone else runs the execution (a queue, or the request that
    /// created it): then this only waits.
    pub(super) fn new(
        dispatch: Option<impl Future<Output = ()> + Send + 'static>,
        tracker: TaskTracker,
    ) -> Self {
        DrivenDispatch {
            future: dispatch.map(|f| Box::pin(f) as Pin<Box<dyn Future<Output = ()> + Send>>),
            tracker,
        }
    }

    /// Runs the dispatch's first step now. A LOCAL echo, or any attempt that ends without
    /// waiting on I/O, is then already complete when the caller subscribes to the outcome.
    pub(super) async fn start(&mut self) {
        std::future::poll_fn(|cx| {
            let _ = Pin::new(&mut *self).poll(cx);
            Poll::Ready(())
        })
        .await;
    }
}

/// Never resolves (its output type is uninhabited): it only drives the dispatch while the
/// request waits on the execution's outcome.
impl Future for DrivenDispatch {
    type Output = std::convert::Infallible;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(future) = self.future.as_mut() else {
            return Poll::Pending;
        };
        match future.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.future = None;
                // Done: the outcome arrives through the execution's waiter.
                Poll::Pending
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for DrivenDispatch {
    fn drop(&mut self) {
        if let Some(future) = self.future.take() {
            self.tracker.spawn(future);
        }
    }
}
