use std::time::Duration;

use super::*;
use crate::execution::dead_letters::DeadLetterQuery;
use crate::model::json_string;

fn config(max_entries: usize) -> ExecutionStoreConfig {
    ExecutionStoreConfig {
        ttl: Duration::from_secs(300),
        cleanup_ttl: Duration::from_secs(120),
        max_lifetime: Duration::from_secs(1800),
        max_entries,
        max_bytes: 1 << 30,
        function_share_percent: 100,
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
        retry_delay: Duration::ZERO,
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
    assert_eq!(store.insert(task("d")), Err(StoreFull::InFlight));
    succeed(&store, "b");
    succeed(&store, "a");
    store.insert(task("d")).unwrap();
    assert!(store.status("b").is_none(), "b finished first");
    assert!(store.status("a").is_some() && store.status("c").is_some());
    store.insert(task("e")).unwrap();
    assert!(store.status("a").is_none());
    assert_eq!(store.len(), 3);
    assert_eq!(store.insert(task("f")), Err(StoreFull::InFlight));
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
        retry_delay: Duration::ZERO,
    });
    assert!(matches!(stale.kind, EffectKind::Stale));
    let retry = store.complete(Completion {
        execution_id: "x",
        attempt: None,
        result: AttemptResult::Failure(ErrorInfo::new("E", "m")),
        cold_start: None,
        from_dispatcher: false,
        retry_delay: Duration::ZERO,
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
        retry_delay: Duration::ZERO,
    });
    assert!(matches!(missing.kind, EffectKind::Missing));
}

/// `n` first-attempt tasks of one function (one registration), ids `{prefix}0..`.
fn tasks_of_one_function(prefix: &str, n: usize, input_len: usize) -> Vec<Task> {
    let base = task("base");
    let payload = Arc::new(crate::execution::Payload {
        input: json_string(&"x".repeat(input_len)),
        body: bytes::Bytes::from(vec![b'x'; input_len]),
    });
    (0..n)
        .map(|i| Task {
            execution_id: Arc::from(format!("{prefix}{i}")),
            payload: payload.clone(),
            ..base.clone()
        })
        .collect()
}

fn succeed_with(store: &ExecutionStore, id: &str, output_len: usize) {
    let effect = store.complete(Completion {
        execution_id: id,
        attempt: Some(1),
        result: AttemptResult::Success(Some(json_string(&"o".repeat(output_len)))),
        cold_start: None,
        from_dispatcher: true,
        retry_delay: Duration::ZERO,
    });
    assert!(matches!(effect.kind, EffectKind::Finalized(_)));
}

#[tokio::test(start_paused = true)]
async fn bytes_are_charged_while_held_and_released_when_dropped() {
    let store = ExecutionStore::new(config(100));
    let t = tasks_of_one_function("a", 1, 10_000).remove(0);
    let function = t.function.clone();
    store.insert(t).unwrap();
    let in_flight = store.held_bytes();
    assert!(in_flight > 20_000, "the request is charged: {in_flight}");
    assert_eq!(function.store_share.get(), (1, in_flight));
    succeed_with(&store, "a0", 5_000);
    let finished = store.held_bytes();
    assert!(
        finished > 5_000 && finished < 10_000,
        "output only: {finished}"
    );
    assert_eq!(function.store_share.get(), (0, 0), "no longer in flight");
    // cleanup-ttl releases the output, ttl the record.
    tokio::time::advance(Duration::from_secs(121)).await;
    store.evict_expired();
    assert!(store.held_bytes() < 1_000);
    tokio::time::advance(Duration::from_secs(200)).await;
    store.evict_expired();
    assert_eq!(store.held_bytes(), 0);
}

#[tokio::test]
async fn over_the_byte_budget_the_oldest_finished_go_first_then_new_work_is_refused() {
    let store = ExecutionStore::new(ExecutionStoreConfig {
        max_bytes: 1 << 20,
        ..config(1000)
    });
    // 100 KiB outputs: the budget holds about ten of them.
    for (i, t) in tasks_of_one_function("a", 30, 10).into_iter().enumerate() {
        store.insert(t).unwrap();
        succeed_with(&store, &format!("a{i}"), 100 << 10);
        assert!(store.held_bytes() <= 1 << 20);
    }
    assert!(store.status("a0").is_none(), "the oldest went first");
    assert!(store.status("a29").is_some());
    assert!(store.len() < 12);
    // In-flight requests of 200 KiB (input + body): once they fill the budget, refused.
    let mut refused = None;
    for (i, t) in tasks_of_one_function("b", 10, 100 << 10)
        .into_iter()
        .enumerate()
    {
        if let Err(e) = store.insert(t) {
            refused = Some((i, e));
            break;
        }
    }
    let (i, e) = refused.expect("the budget refuses in-flight work beyond it");
    assert_eq!(e, StoreFull::InFlight);
    assert!((4..=5).contains(&i), "{i}");
    assert!(
        store.status("a29").is_none(),
        "every finished record made room first"
    );
}

#[tokio::test]
async fn one_function_cannot_take_more_than_its_share() {
    let store = ExecutionStore::new(ExecutionStoreConfig {
        function_share_percent: 50,
        ..config(10)
    });
    let mut hanging = tasks_of_one_function("h", 6, 10).into_iter();
    for t in hanging.by_ref().take(5) {
        store.insert(t).unwrap();
    }
    let sixth = hanging.next().unwrap();
    assert_eq!(store.insert(sixth.clone()), Err(StoreFull::FunctionShare));
    // Another function still gets in; once one of the first ends, so does the sixth.
    for t in tasks_of_one_function("o", 5, 10) {
        store.insert(t).unwrap();
    }
    succeed(&store, "h0");
    store.insert(sixth).unwrap();
}

#[tokio::test(start_paused = true)]
async fn past_the_caller_deadline_no_attempt_starts_and_no_retry_is_scheduled() {
    let store = ExecutionStore::new(config(10));
    let deadline = Instant::now() + Duration::from_millis(100);
    let mut queued = task("q");
    queued.caller_deadline = Some(deadline);
    let mut running = task("r");
    running.caller_deadline = Some(deadline);
    store.insert(queued.clone()).unwrap();
    store.insert(running.clone()).unwrap();
    assert!(matches!(
        store.begin_dispatch(&running),
        BeginDispatch::Proceed
    ));
    tokio::time::advance(Duration::from_millis(100)).await;
    match store.begin_dispatch(&queued) {
        BeginDispatch::Expired(f) => assert!(matches!(f.outcome, Outcome::Timeout)),
        _ => panic!("an attempt past the caller's deadline must not start"),
    }
    let failed = store.complete(Completion {
        execution_id: "r",
        attempt: Some(1),
        result: AttemptResult::Failure(ErrorInfo::new("POOL_TIMEOUT", "t")),
        cold_start: None,
        from_dispatcher: true,
        retry_delay: Duration::ZERO,
    });
    assert!(matches!(
        failed.kind,
        EffectKind::Finalized(Finalized {
            outcome: Outcome::Timeout,
            ..
        })
    ));
    assert_eq!(store.status("r").unwrap().status, ExecutionState::Timeout);
}

/// Fails attempt after attempt until the execution ends (`maxRetries` 3 of the test function);
/// whether it ended as a dead letter.
fn fail_to_the_end(store: &ExecutionStore, id: &str) -> bool {
    for attempt in 1..=3 {
        let effect = store.complete(Completion {
            execution_id: id,
            attempt: Some(attempt),
            result: AttemptResult::Failure(ErrorInfo::new("POOL_ERROR", "boom")),
            cold_start: None,
            from_dispatcher: true,
            retry_delay: Duration::ZERO,
        });
        match effect.kind {
            EffectKind::Retry(_) if attempt < 3 => {}
            EffectKind::Finalized(f) if attempt == 3 => return f.dead_letter,
            _ => panic!("attempt {attempt} of {id}: unexpected effect"),
        }
    }
    unreachable!()
}

fn dead_letter_ids(store: &ExecutionStore, status: Option<ExecutionState>) -> Vec<String> {
    let query = DeadLetterQuery {
        status,
        after: None,
        limit: 100,
    };
    store
        .dead_letters("f", &query)
        .items
        .iter()
        .map(|s| s.execution_id.to_string())
        .collect()
}

fn sync_task(id: &str) -> Task {
    let mut t = task(id);
    t.caller_deadline = Some(Instant::now() + Duration::from_secs(60));
    t
}

#[tokio::test(start_paused = true)]
async fn async_failures_keep_their_request_as_dead_letters_until_evicted() {
    let store = ExecutionStore::new(config(100));
    // Async (no caller deadline): a dead letter. Sync: not. A success: not.
    store.insert(task("a1")).unwrap();
    store.insert(sync_task("s1")).unwrap();
    store.insert(task("ok")).unwrap();
    assert!(fail_to_the_end(&store, "a1"));
    assert!(!fail_to_the_end(&store, "s1"));
    succeed(&store, "ok");
    assert!(matches!(
        store.dead_letter("a1"),
        DeadLetterLookup::Found { ref payload, .. } if payload.input.get() == "\"in\""
    ));
    assert!(matches!(
        store.dead_letter("s1"),
        DeadLetterLookup::NotDeadLetter
    ));
    assert!(matches!(
        store.dead_letter("ok"),
        DeadLetterLookup::NotDeadLetter
    ));
    assert!(matches!(store.dead_letter("no"), DeadLetterLookup::Missing));
    assert_eq!(dead_letter_ids(&store, None), ["a1"]);
    assert_eq!(dead_letter_ids(&store, Some(ExecutionState::Error)), ["a1"]);
    assert!(dead_letter_ids(&store, Some(ExecutionState::Timeout)).is_empty());
    // The kept request is charged to the byte budget: what the sync twin holds, plus it.
    let t = task("a1");
    let request = t.payload.input.get().len() + t.payload.body.len();
    store.remove("ok");
    let both = store.held_bytes();
    store.remove("s1");
    let async_only = store.held_bytes();
    assert_eq!(async_only, (both - async_only) + request);
    // `cleanup-ttl` releases outputs, not a dead letter's request; `ttl` ends it.
    tokio::time::advance(Duration::from_secs(121)).await;
    store.evict_expired();
    assert!(matches!(
        store.dead_letter("a1"),
        DeadLetterLookup::Found { .. }
    ));
    assert_eq!(store.held_bytes(), async_only);
    tokio::time::advance(Duration::from_secs(180)).await;
    assert_eq!(store.evict_expired(), 1);
    assert!(dead_letter_ids(&store, None).is_empty());
    assert_eq!(store.held_bytes(), 0);
}

#[test]
fn at_the_cap_the_oldest_dead_letters_go_first_and_leave_the_index() {
    let store = ExecutionStore::new(config(3));
    for id in ["d1", "d2", "d3"] {
        store.insert(task(id)).unwrap();
        store
            .abort(id, Abort::Error(ErrorInfo::new("E", "e")))
            .unwrap();
    }
    assert_eq!(dead_letter_ids(&store, None), ["d3", "d2", "d1"]);
    store.insert(task("d4")).unwrap();
    assert_eq!(dead_letter_ids(&store, None), ["d3", "d2"]);
    // Paging: newest first, the cursor continues below the last item.
    let page = store.dead_letters(
        "f",
        &DeadLetterQuery {
            status: None,
            after: None,
            limit: 1,
        },
    );
    assert_eq!(&*page.items[0].execution_id, "d3");
    let next = store.dead_letters(
        "f",
        &DeadLetterQuery {
            status: None,
            after: page.next_cursor,
            limit: 1,
        },
    );
    assert_eq!(&*next.items[0].execution_id, "d2");
    assert_eq!(next.next_cursor, None);
}

#[tokio::test(start_paused = true)]
async fn a_retry_whose_delay_passes_the_caller_deadline_ends_as_timeout() {
    let store = ExecutionStore::new(config(10));
    let mut early = task("early");
    early.caller_deadline = Some(Instant::now() + Duration::from_millis(500));
    let late = Task {
        execution_id: Arc::from("late"),
        ..early.clone()
    };
    store.insert(early).unwrap();
    store.insert(late).unwrap();
    let fail = |id, delay| {
        store
            .complete(Completion {
                execution_id: id,
                attempt: Some(1),
                result: AttemptResult::Failure(ErrorInfo::new("POOL_ERROR", "503")),
                cold_start: None,
                from_dispatcher: true,
                retry_delay: Duration::from_millis(delay),
            })
            .kind
    };
    // Starts before the deadline: scheduled. Would start at or after it: TIMEOUT now.
    assert!(matches!(fail("early", 499), EffectKind::Retry(_)));
    assert!(matches!(
        fail("late", 500),
        EffectKind::Finalized(Finalized {
            outcome: Outcome::Timeout,
            dead_letter: false,
            ..
        })
    ));
    assert_eq!(
        store.status("late").unwrap().status,
        ExecutionState::Timeout
    );
}

/// Records every result notice (issue 11).
#[derive(Default)]
struct Notices(Mutex<Vec<crate::execution::notice::ResultNotice>>);

impl ResultListener for Notices {
    fn finished(&self, notice: crate::execution::notice::ResultNotice) {
        lock(&self.0).push(notice);
    }
}

fn with_url(id: &str) -> Task {
    Task {
        callback_url: Some(Arc::from("http://receiver/hook")),
        ..task(id)
    }
}

#[tokio::test(start_paused = true)]
async fn every_terminal_path_announces_an_execution_with_a_url_once() {
    let store = ExecutionStore::new(config(100));
    let notices = Arc::new(Notices::default());
    store.set_result_listener(notices.clone());
    let wake = |f: Option<Finalized>| f.expect("ended here").wake();
    // A success, 1.5 s after the attempt started.
    store.insert(with_url("ok")).unwrap();
    assert!(matches!(
        store.begin_dispatch(&with_url("ok")),
        BeginDispatch::Proceed
    ));
    tokio::time::advance(Duration::from_millis(1500)).await;
    let EffectKind::Finalized(mut f) = store
        .complete(Completion {
            execution_id: "ok",
            attempt: Some(1),
            result: AttemptResult::Success(Some(json_string("out"))),
            cold_start: None,
            from_dispatcher: true,
            retry_delay: Duration::ZERO,
        })
        .kind
    else {
        panic!("not finalized");
    };
    assert!(
        lock(&notices.0).is_empty(),
        "announced when woken, outside the lock"
    );
    f.wake();
    // The failure of the last attempt (the default maxRetries is 3: two retries first), and
    // ends without a result (removal, a refused retry).
    store.insert(with_url("failed")).unwrap();
    for attempt in 1..=3 {
        let effect = store.complete(Completion {
            execution_id: "failed",
            attempt: Some(attempt),
            result: AttemptResult::Failure(ErrorInfo::new("POOL_ERROR", "boom")),
            cold_start: None,
            from_dispatcher: true,
            retry_delay: Duration::ZERO,
        });
        match effect.kind {
            EffectKind::Retry(_) if attempt < 3 => assert!(lock(&notices.0).len() == 1),
            EffectKind::Finalized(mut f) if attempt == 3 => f.wake(),
            _ => panic!("attempt {attempt}"),
        }
    }
    store.insert(with_url("removed")).unwrap();
    wake(store.abort(
        "removed",
        Abort::Error(ErrorInfo::new("FUNCTION_REMOVED", "gone")),
    ));
    // A second end of the same execution changes nothing and announces nothing.
    assert!(store.abort("removed", Abort::Timeout).is_none());
    // Without a URL nothing is announced.
    store.insert(task("plain")).unwrap();
    wake(store.abort("plain", Abort::Timeout));

    let notices = lock(&notices.0);
    let seen: Vec<(&str, ExecutionState)> = notices
        .iter()
        .map(|n| (&*n.status.execution_id, n.status.status))
        .collect();
    assert_eq!(
        seen,
        [
            ("ok", ExecutionState::Success),
            ("failed", ExecutionState::Error),
            ("removed", ExecutionState::Error)
        ]
    );
    assert_eq!(notices[0].duration, Duration::from_millis(1500));
    assert_eq!(notices[0].function, "f");
    assert_eq!(&*notices[0].callback_url, "http://receiver/hook");
    assert_eq!(notices[2].duration, Duration::ZERO, "never started");
    assert_eq!(notices[1].status.error.as_ref().unwrap().code, "POOL_ERROR");
}
