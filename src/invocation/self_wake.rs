//! Polling a future whose own poll may wake it.
//!
//! A synchronous invocation drives its dispatch inside the request's task and waits on the
//! execution's outcome in the same `select!`. When the runtime replies, the dispatch completes the
//! execution, and the outcome's channel wakes the waiting task, which is the task being polled
//! right then. tokio reschedules a task woken during its own poll through the run queue and, on
//! the multi-thread scheduler, wakes an idle worker to steal it: one futex or driver wake-up per
//! invocation for nothing, which is most of what a lone request costs beyond the HTTP work.
//! [`without_self_wakes`] polls the future again at once instead; wake-ups from elsewhere (a
//! callback, a timer) reach the task as usual.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

struct Guard {
    task: AtomicWaker,
    polling: AtomicBool,
    woken: AtomicBool,
}

impl Wake for Guard {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::SeqCst);
        if !self.polling.load(Ordering::SeqCst) {
            self.task.wake();
        }
    }
}

/// Runs `future` to completion, re-polling it directly when it wakes itself during its own poll.
pub async fn without_self_wakes<F: Future>(future: F) -> F::Output {
    let guard = Arc::new(Guard {
        task: AtomicWaker::new(),
        polling: AtomicBool::new(false),
        woken: AtomicBool::new(false),
    });
    let waker = Waker::from(guard.clone());
    let mut future = pin!(future);
    std::future::poll_fn(move |cx| {
        guard.task.register(cx.waker());
        loop {
            guard.woken.store(false, Ordering::SeqCst);
            guard.polling.store(true, Ordering::SeqCst);
            let poll = future.as_mut().poll(&mut Context::from_waker(&waker));
            guard.polling.store(false, Ordering::SeqCst);
            if poll.is_ready() {
                return poll;
            }
            // A wake during the poll (from this task or, racing with it, from elsewhere) did not
            // reach the task: poll again rather than lose it. A wake after `polling` was cleared
            // reached the task as well; the extra poll is harmless.
            if !guard.woken.swap(false, Ordering::SeqCst) {
                return Poll::Pending;
            }
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::AtomicUsize;

    #[derive(Default)]
    struct Counting(AtomicUsize);

    impl Wake for Counting {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Pending on its first poll after waking itself, ready on the second.
    fn wakes_itself_once() -> impl Future<Output = u32> {
        let mut polls = 0;
        std::future::poll_fn(move |cx| {
            polls += 1;
            if polls == 1 {
                cx.waker().wake_by_ref();
                Poll::Pending
            } else {
                Poll::Ready(polls)
            }
        })
    }

    #[test]
    fn a_wake_during_the_poll_is_a_direct_re_poll() {
        let outer = Arc::new(Counting::default());
        let waker = Waker::from(outer.clone());
        let mut fut = pin!(without_self_wakes(wakes_itself_once()));
        let poll = fut.as_mut().poll(&mut Context::from_waker(&waker));
        assert_eq!(poll, Poll::Ready(2));
        assert_eq!(
            outer.0.load(Ordering::SeqCst),
            0,
            "the task was not rescheduled"
        );
    }

    #[test]
    fn a_wake_from_elsewhere_reaches_the_task() {
        let stored: Arc<Mutex<Option<Waker>>> = Arc::default();
        let ready = Arc::new(AtomicBool::new(false));
        let inner = {
            let (stored, ready) = (stored.clone(), ready.clone());
            std::future::poll_fn(move |cx| {
                if ready.load(Ordering::SeqCst) {
                    Poll::Ready(())
                } else {
                    *stored.lock().unwrap() = Some(cx.waker().clone());
                    Poll::Pending
                }
            })
        };
        let outer = Arc::new(Counting::default());
        let waker = Waker::from(outer.clone());
        let mut fut = pin!(without_self_wakes(inner));
        assert!(
            fut.as_mut()
                .poll(&mut Context::from_waker(&waker))
                .is_pending()
        );
        assert_eq!(outer.0.load(Ordering::SeqCst), 0);
        ready.store(true, Ordering::SeqCst);
        let remote = stored.lock().unwrap().take().unwrap();
        std::thread::spawn(move || remote.wake()).join().unwrap();
        assert_eq!(outer.0.load(Ordering::SeqCst), 1, "the task was woken");
        assert!(
            fut.as_mut()
                .poll(&mut Context::from_waker(&waker))
                .is_ready()
        );
    }
}
