use std::time::Duration;

use super::*;
use crate::model::json_string;

fn config(max_entries: usize) -> ExecutionStoreConfig {
    ExecutionStoreConfig {
        ttl: Duration::from_secs(300),
        cleanup_ttl: Duration::from_secs(120),
        max_lifetime: Duration::from_secs(1800),
        max_entries,
        janitor_period: Duration::from_secs(60),
    }
}

fn task(id: &str) -> Task {
    crate::execution::test_task(id)
}

fn succeed(store: &ExecutionStore, id: &str) {
    let effect = store.complete(Completion {
        execution_id: id,
        attempt: Some(1),
        result: AttemptResult::Success(Some(json_string("out"))),
        cold_start: None,
        from_dispatcher: true,
    });
    assert!(matches!(effect.kind, EffectKind::Finalized(_)));
}

#[tokio::test(start_paused = true)]
async fn terminal_records_are_cleaned_then_evicted_on_their_finish_time() {
    let store = ExecutionStore::new(config(100));
    store.insert(task("a")).unwrap();
    // Queued for a long time before finishing: the TTL counts from the finish.
    tokio::time::advance(Duration::from_secs(200)).await;
    succeed(&store, "a");
    tokio::time::advance(Duration::from_secs(119)).await;
    assert_eq!(store.evict_expired(), 0);
    assert!(store.status("a").unwrap().output.is_some());
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(store.evict_expired(), 0);
    let s = store.status("a").unwrap();
    assert_eq!(s.status, ExecutionState::Success);
    assert!(s.output.is_none(), "output released after cleanup-ttl");
    // Cleaning again changes nothing.
    assert_eq!(store.evict_expired(), 0);
    tokio::time::advance(Duration::from_secs(180)).await;
    assert_eq!(store.evict_expired(), 1);
    assert!(store.status("a").is_none());
}

#[tokio::test(start_paused = true)]
async fn stuck_executions_are_evicted_after_the_max_lifetime() {
    let store = ExecutionStore::new(config(100));
    store.insert(task("stuck")).unwrap();
    tokio::time::advance(Duration::from_secs(1700)).await;
    store.insert(task("fresh")).unwrap();
    assert_eq!(store.evict_expired(), 0);
    tokio::time::advance(Duration::from_secs(101)).await;
    assert_eq!(store.evict_expired(), 1);
    assert!(store.status("stuck").is_none());
    assert!(store.status("fresh").is_some());
}

#[tokio::test]
async fn at_the_cap_the_oldest_finished_go_first_and_in_flight_work_is_never_dropped() {
    let store = ExecutionStore::new(config(3));
    for id in ["a", "b", "c"] {
        store.insert(task(id)).unwrap();
    }
    assert_eq!(store.insert(task("d")), Err(StoreFull));
    succeed(&store, "b");
    succeed(&store, "a");
    store.insert(task("d")).unwrap();
    assert!(store.status("b").is_none(), "b finished first");
    assert!(store.status("a").is_some() && store.status("c").is_some());
    store.insert(task("e")).unwrap();
    assert!(store.status("a").is_none());
    assert_eq!(store.len(), 3);
    assert_eq!(store.insert(task("f")), Err(StoreFull));
}

#[tokio::test]
async fn completions_follow_the_attempt_protocol() {
    let store = ExecutionStore::new(config(10));
    store.insert(task("x")).unwrap();
    assert!(matches!(
        store.begin_dispatch(&task("x")),
        BeginDispatch::Proceed
    ));
    let stale = store.complete(Completion {
        execution_id: "x",
        attempt: Some(2),
        result: AttemptResult::Success(None),
        cold_start: None,
        from_dispatcher: false,
    });
    assert!(matches!(stale.kind, EffectKind::Stale));
    let retry = store.complete(Completion {
        execution_id: "x",
        attempt: None,
        result: AttemptResult::Failure(ErrorInfo::new("E", "m")),
        cold_start: None,
        from_dispatcher: false,
    });
    assert!(matches!(retry.kind, EffectKind::Retry(ref t) if t.attempt == 2));
    // The first attempt's task no longer dispatches.
    assert!(matches!(
        store.begin_dispatch(&task("x")),
        BeginDispatch::Skip
    ));
    let missing = store.complete(Completion {
        execution_id: "nope",
        attempt: None,
        result: AttemptResult::Success(None),
        cold_start: None,
        from_dispatcher: false,
    });
    assert!(matches!(missing.kind, EffectKind::Missing));
}
