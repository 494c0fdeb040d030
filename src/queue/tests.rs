//! The queue's delayed retries (issue 11) on paused time: the delay is kept to the tick, the
//! retry holds its place of `queueSize` but no slot while it waits, and it leaves with its
//! caller or its function.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::config::Config;
use crate::execution::test_task;

/// Records when each task was started.
#[derive(Default)]
struct Started(Mutex<Vec<(String, Instant)>>);

impl TaskSink for Started {
    fn start(&self, task: Task) {
        self.0
            .lock()
            .unwrap()
            .push((task.execution_id.to_string(), Instant::now()));
    }
}

impl Started {
    fn ids(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|(id, _)| id.clone())
            .collect()
    }
}

/// A queue with function `f` (concurrency 1, queueSize 2) and what it started.
fn queue() -> (Arc<QueueManager>, Arc<Started>, Arc<ExecutionStore>, Task) {
    let config = Config::default();
    let started = Arc::new(Started::default());
    let store = Arc::new(ExecutionStore::new(config.execution_store.clone()));
    let queue = Arc::new(QueueManager::new(
        &config.sync_queue,
        true,
        Arc::new(SyncSettings::new(&config.sync_queue)),
        store.clone(),
        Arc::new(Metrics::new()),
        started.clone(),
    ));
    let mut template = test_task("t");
    let base = &template.function;
    let mut spec = base.spec.clone();
    spec.concurrency = 1;
    spec.queue_size = 2;
    template.function = Arc::new(RegisteredFunction {
        spec,
        requested_mode: base.requested_mode,
        effective_mode: base.effective_mode,
        deployment_backend: None,
        degradation_reason: None,
        endpoint: None,
        metrics: Default::default(),
        store_share: Default::default(),
    });
    queue.on_register(&template.function).unwrap();
    (queue, started, store, template)
}

/// Lets the timer tasks due now run (they woke with this one, in any order).
async fn settle() {
    for _ in 0..4 {
        tokio::task::yield_now().await;
    }
}

fn task(template: &Task, id: &str) -> Task {
    Task {
        execution_id: Arc::from(id),
        ..template.clone()
    }
}

#[tokio::test(start_paused = true)]
async fn a_delayed_retry_is_queued_when_its_delay_is_over_and_holds_no_slot_meanwhile() {
    let (queue, started, _, t) = queue();
    let t0 = Instant::now();
    queue
        .enqueue_after(task(&t, "retry"), Duration::from_millis(750))
        .unwrap();
    // No slot taken: fresh work starts at once, on the only slot.
    queue.enqueue(task(&t, "fresh")).unwrap();
    assert_eq!(started.ids(), ["fresh"]);
    tokio::time::sleep(Duration::from_millis(749)).await;
    settle().await;
    assert_eq!(queue.load("f"), (0, 1));
    // Due, but the slot is busy: queued, started when the slot comes back.
    tokio::time::sleep(Duration::from_millis(1)).await;
    settle().await;
    assert_eq!(started.ids(), ["fresh"]);
    assert_eq!(queue.load("f"), (1, 1));
    tokio::time::sleep(Duration::from_millis(250)).await;
    queue.release_slot("f", 1);
    assert_eq!(started.ids(), ["fresh", "retry"]);
    let at = started.0.lock().unwrap()[1].1;
    assert_eq!(at - t0, Duration::from_millis(1000));
}

#[tokio::test(start_paused = true)]
async fn delayed_retries_hold_a_place_of_queue_size() {
    let (queue, started, _, t) = queue();
    queue.enqueue(task(&t, "running")).unwrap();
    queue
        .enqueue_after(task(&t, "r1"), Duration::from_secs(5))
        .unwrap();
    queue
        .enqueue_after(task(&t, "r2"), Duration::from_secs(5))
        .unwrap();
    // queueSize 2: both places are taken by the waiting retries.
    assert_eq!(queue.enqueue(task(&t, "new")), Err(QueueError::Full));
    assert_eq!(
        queue.enqueue_after(task(&t, "r3"), Duration::from_secs(1)),
        Err(QueueError::Full)
    );
    // The gauge counts what is ready to run, not what waits out a delay.
    assert_eq!(queue.load("f"), (0, 1));
    // A caller that stops waiting takes its retry out, and its timer with it.
    assert!(queue.cancel("f", "r1", false));
    assert!(
        !queue.cancel("f", "r2", true),
        "a queue-wait expiry leaves retries alone"
    );
    queue.enqueue(task(&t, "new")).unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    settle().await;
    queue.release_slot("f", 1);
    queue.release_slot("f", 1);
    queue.release_slot("f", 1);
    assert_eq!(started.ids(), ["running", "new", "r2"]);
}

#[tokio::test(start_paused = true)]
async fn removing_the_function_ends_its_delayed_retries() {
    let (queue, started, store, t) = queue();
    let retry = task(&t, "r");
    store.insert(retry.clone()).unwrap();
    queue.enqueue_after(retry, Duration::from_secs(5)).unwrap();
    queue.on_remove("f");
    let status = store.status("r").unwrap();
    assert_eq!(status.status, crate::model::ExecutionState::Error);
    assert_eq!(status.error.unwrap().code, "FUNCTION_REMOVED");
    tokio::time::sleep(Duration::from_secs(10)).await;
    settle().await;
    assert!(started.ids().is_empty());
}
