//! The async-queue module through HTTP: `:enqueue`, bounded queues, concurrency slots,
//! scheduler fairness, retries through the queue, removal of queued work, and the B7/B9 fixes
//! (REFERENCE §1.11, §3.5, §3.9, §5.1, §7.2; DECISIONS 4).

mod common;

use common::{Stub, TestApp, enqueue, eventually, metric_value, status_of};
use serde_json::{Value, json};

const ASYNC: (&str, &str) = ("NANOFAAS_ASYNC_QUEUE_ENABLED", "true");

async fn enqueue_id(app: &TestApp, name: &str, input: Value) -> String {
    let r = enqueue(app, name, json!({"input": input})).await;
    assert_eq!(r.status(), 202);
    r.json::<Value>().await.unwrap()["executionId"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn enqueue_without_the_module_is_501_naming_the_variable() {
    let app = TestApp::spawn().await;
    app.local("echo").await;
    let r = enqueue(&app, "echo", json!({"input": 1})).await;
    assert_eq!(r.status(), 501);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "NOT_IMPLEMENTED");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("NANOFAAS_ASYNC_QUEUE_ENABLED")
    );
    // Unknown functions are 404 first.
    assert_eq!(
        enqueue(&app, "ghost", json!({"input": 1})).await.status(),
        404
    );
}

#[tokio::test]
async fn enqueue_answers_202_queued_and_the_execution_completes() {
    let app = TestApp::with_env(&[ASYNC]).await;
    app.local("echo").await;
    let r = enqueue(&app, "echo", json!({"input": {"a": 1}})).await;
    assert_eq!(r.status(), 202);
    assert!(r.headers().get("X-Execution-Id").is_none());
    let body: Value = r.json().await.unwrap();
    let id = body["executionId"].as_str().unwrap().to_owned();
    assert_eq!(
        body,
        json!({"executionId": id, "status": "queued", "output": null, "error": null})
    );
    eventually("success", || async {
        status_of(&app, &id).await == "success"
    })
    .await;
    assert_eq!(app.execution(&id).await.1["output"], json!({"a": 1}));
    app.assert_metrics(
        "echo",
        &[
            ("function_enqueue_total", 1.0),
            ("function_queue_wait_ms_seconds_count", 1.0),
        ],
    )
    .await;
    // Sync invocations go through the queue too.
    let r = app.invoke("echo", json!({"input": 2})).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        app.metric("function_enqueue_total", "echo").await,
        Some(2.0)
    );
}

#[tokio::test]
async fn a_full_queue_is_429_and_leaves_no_execution_behind() {
    let app = TestApp::with_env(&[ASYNC]).await;
    let stub = Stub::start(&app.base).await;
    app.pool(
        "f",
        &stub.url("/hang"),
        json!({"concurrency": 1, "queueSize": 2}),
    )
    .await;
    for i in 0..3 {
        enqueue_id(&app, "f", json!(i)).await;
    }
    let r = enqueue(&app, "f", json!({"input": 3})).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "QUEUE_FULL");
    if common::nats_backend_requested() {
        // On NATS the async queue lives in the broker; sync admission and the queue gauges
        // below are this replica's own (docs/ha.md), so its local queue is not full.
        return;
    }
    // Sync invocations are refused the same way.
    let r = app.invoke("f", json!({"input": 4})).await;
    assert_eq!(r.status(), 429);

    let scrape = app.scrape().await;
    let f = "function=\"f\"";
    assert_eq!(metric_value(&scrape, "function_queue_depth", f), Some(2.0));
    assert_eq!(metric_value(&scrape, "function_inFlight", f), Some(1.0));
    assert_eq!(
        metric_value(&scrape, "function_effective_concurrency", f),
        Some(1.0)
    );
    assert_eq!(
        metric_value(&scrape, "function_target_inflight_per_pod", f),
        Some(0.0)
    );
    assert_eq!(
        metric_value(
            &scrape,
            "function_concurrency_controller_mode",
            "function=\"f\",mode=\"FIXED\""
        ),
        Some(1.0)
    );
    assert_eq!(
        metric_value(&scrape, "function_queue_rejected_total", f),
        Some(2.0)
    );
    assert_eq!(
        metric_value(&scrape, "function_enqueue_total", f),
        Some(3.0)
    );
    assert_eq!(
        metric_value(&scrape, "controlplane_execution_store_entries", ""),
        None
    );
    assert!(
        scrape.contains("controlplane_execution_store_entries 3"),
        "{scrape}"
    );
}

#[tokio::test]
async fn an_enqueue_refused_as_queue_full_leaves_its_idempotency_key_free() {
    let app = TestApp::with_env(&[ASYNC]).await;
    let stub = Stub::start(&app.base).await;
    app.pool(
        "f",
        &stub.url("/script"),
        json!({"concurrency": 1, "queueSize": 1}),
    )
    .await;
    let running = enqueue_id(&app, "f", json!({"sleepMs": 300})).await;
    let waiting = enqueue_id(&app, "f", json!({"sleepMs": 300})).await;
    let keyed = || {
        app.client
            .post(format!("{}/v1/functions/f:enqueue", app.base))
            .header("Idempotency-Key", "retry-me")
            .json(&json!({"input": {"retried": true}}))
            .send()
    };
    let r = keyed().await.unwrap();
    assert_eq!(r.status(), 429);
    for id in [&running, &waiting] {
        eventually("the queue drains", || async {
            status_of(&app, id).await == "success"
        })
        .await;
    }
    // The client retries with its key once there is room: a new execution that runs, not the
    // id of the refused one.
    let r = keyed().await.unwrap();
    assert_eq!(r.status(), 202);
    let id = r.json::<Value>().await.unwrap()["executionId"]
        .as_str()
        .unwrap()
        .to_owned();
    eventually("the retried execution succeeds", || async {
        status_of(&app, &id).await == "success"
    })
    .await;
    let (_, exec) = app.execution(&id).await;
    assert_eq!(exec["output"]["input"], json!({"retried": true}));
}

#[tokio::test]
async fn concurrency_is_never_exceeded() {
    let app = TestApp::with_env(&[ASYNC]).await;
    let stub = Stub::start(&app.base).await;
    app.pool("f", &stub.url("/track/30"), json!({"concurrency": 2}))
        .await;
    let mut ids = Vec::new();
    for i in 0..12 {
        ids.push(enqueue_id(&app, "f", json!(i)).await);
    }
    for id in &ids {
        eventually("success", || async {
            status_of(&app, id).await == "success"
        })
        .await;
    }
    let (now, max) = *stub.in_flight.lock().unwrap();
    assert_eq!((now, max), (0, 2));
    assert_eq!(app.metric("function_inFlight", "f").await, Some(0.0));
}

#[tokio::test]
async fn a_quiet_function_is_not_starved_by_a_busy_one() {
    let app = TestApp::with_env(&[ASYNC]).await;
    let stub = Stub::start(&app.base).await;
    app.pool("hot", &stub.url("/slow/40"), json!({"concurrency": 1}))
        .await;
    app.pool("cold", &stub.url("/reply"), json!({"concurrency": 1}))
        .await;
    let mut hot = Vec::new();
    for i in 0..10 {
        hot.push(enqueue_id(&app, "hot", json!(i)).await);
    }
    let cold = enqueue_id(&app, "cold", json!("quick")).await;
    eventually("cold done", || async {
        status_of(&app, &cold).await == "success"
    })
    .await;
    let hot_done = futures::future::join_all(hot.iter().map(|id| status_of(&app, id))).await;
    let finished = hot_done.iter().filter(|s| *s == "success").count();
    assert!(finished < 5, "cold waited behind {finished} hot executions");
}

#[tokio::test]
async fn retries_go_through_the_queue_with_incremented_attempts() {
    let app = TestApp::with_env(&[ASYNC]).await;
    let stub = Stub::start(&app.base).await;
    app.pool("f", &stub.url("/fail"), json!({})).await;
    let id = enqueue_id(&app, "f", json!(1)).await;
    eventually("error", || async { status_of(&app, &id).await == "error" }).await;
    let attempts: Vec<String> = stub
        .requests()
        .iter()
        .map(|r| r.headers["x-dispatch-attempt"].to_str().unwrap().to_owned())
        .collect();
    assert_eq!(attempts, ["1", "2", "3"]);
    assert_eq!(app.execution(&id).await.1["error"]["code"], "POOL_ERROR");
    app.assert_metrics(
        "f",
        &[
            ("function_enqueue_total", 3.0),
            ("function_retry_total", 2.0),
            ("function_error_total", 1.0),
        ],
    )
    .await;
}

#[tokio::test]
async fn async_replays_answer_queued_with_the_original_id() {
    let app = TestApp::with_env(&[ASYNC]).await;
    app.local("echo").await;
    let send = || async {
        app.client
            .post(format!("{}/v1/functions/echo:enqueue", app.base))
            .header("Idempotency-Key", "k")
            .json(&json!({"input": 1}))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    let first = send().await;
    let id = first["executionId"].as_str().unwrap().to_owned();
    eventually("success", || async {
        status_of(&app, &id).await == "success"
    })
    .await;
    let again = send().await;
    assert_eq!(
        again,
        json!({"executionId": id, "status": "queued", "output": null, "error": null})
    );
    if common::nats_backend_requested() {
        // On NATS only `:enqueue` claims are shared; a sync request's key is claimed per
        // replica (docs/ha.md), so it does not replay an async execution.
        return;
    }
    // A sync request with the same key replays the finished execution.
    let sync = app.invoke_keyed("echo", "k", json!({"input": 2})).await;
    assert_eq!(
        (sync["executionId"].as_str(), sync["output"].clone()),
        (Some(id.as_str()), json!(1))
    );
    assert_eq!(
        app.metric("function_dispatch_total", "echo").await,
        Some(1.0)
    );
}

#[tokio::test]
async fn deleting_a_function_ends_its_queued_executions() {
    let app = TestApp::with_env(&[ASYNC]).await;
    let stub = Stub::start(&app.base).await;
    app.pool("f", &stub.url("/hang"), json!({"concurrency": 1}))
        .await;
    let running = enqueue_id(&app, "f", json!(0)).await;
    eventually("first dispatched", || async {
        status_of(&app, &running).await == "running"
    })
    .await;
    let queued = enqueue_id(&app, "f", json!(1)).await;
    let r = app
        .client
        .delete(format!("{}/v1/functions/f", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    // On NATS the queued execution's record is ended by the removal task, just after the 204.
    eventually("queued execution ended", || async {
        status_of(&app, &queued).await == "error"
    })
    .await;
    let (_, exec) = app.execution(&queued).await;
    assert_eq!(exec["status"], "error");
    assert_eq!(
        exec["error"],
        json!({"code": "FUNCTION_REMOVED", "message": "Function 'f' was removed before queued execution could run"})
    );
    // The one already dispatched is not cancelled.
    assert_eq!(status_of(&app, &running).await, "running");
    assert_eq!(stub.requests().len(), 1);
}

#[tokio::test]
async fn a_timed_out_sync_invocation_is_never_dispatched() {
    let app = TestApp::with_env(&[ASYNC]).await;
    let stub = Stub::start(&app.base).await;
    app.pool("f", &stub.url("/slow/300"), json!({"concurrency": 1}))
        .await;
    let blocker = enqueue_id(&app, "f", json!(0)).await;
    // Dispatched at once in memory; on NATS once the pull loop delivered it.
    eventually("blocker running", || async {
        status_of(&app, &blocker).await == "running"
    })
    .await;
    let r = app
        .invoke_request("f")
        .header("X-Timeout-Ms", "50")
        .json(&json!({"input": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 408);
    let timed_out = r.json::<Value>().await.unwrap()["executionId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(app.metric("function_queue_depth", "f").await, Some(0.0));
    // Once the blocker's slot is free, nothing else may be dispatched.
    eventually("blocker done", || async {
        status_of(&app, &blocker).await == "success"
    })
    .await;
    eventually("slot free", || async {
        app.metric("function_inFlight", "f").await == Some(0.0)
    })
    .await;
    assert_eq!(stub.requests().len(), 1);
    assert_eq!(status_of(&app, &timed_out).await, "timeout");
}

#[tokio::test]
async fn a_callback_for_a_queued_execution_completes_it_without_dispatch() {
    let app = TestApp::with_env(&[ASYNC]).await;
    let stub = Stub::start(&app.base).await;
    // The blocker outlasts the callback below by far (on NATS a callback for an execution no
    // replica holds waits for the route's timeout before it is written to the shared record).
    app.pool("f", &stub.url("/slow/1000"), json!({"concurrency": 1}))
        .await;
    let blocker = enqueue_id(&app, "f", json!(0)).await;
    eventually("blocker running", || async {
        status_of(&app, &blocker).await == "running"
    })
    .await;
    let queued = enqueue_id(&app, "f", json!(1)).await;
    assert_eq!(
        app.callback(&queued, None, json!({"success": true, "output": "early"}))
            .await,
        204
    );
    let (code, exec) = app.execution(&queued).await;
    assert_eq!(exec["output"], "early", "{code} {exec}");
    // The queued execution held no slot: the blocker still does.
    assert_eq!(app.metric("function_inFlight", "f").await, Some(1.0));
    eventually("blocker done", || async {
        status_of(&app, &blocker).await == "success"
    })
    .await;
    eventually("slot free", || async {
        app.metric("function_inFlight", "f").await == Some(0.0)
    })
    .await;
    assert_eq!(
        stub.requests().len(),
        1,
        "the completed execution was dispatched"
    );
}

#[tokio::test]
async fn an_early_callback_keeps_the_slot_until_the_runtime_answers() {
    let app = TestApp::with_env(&[ASYNC]).await;
    let stub = Stub::start(&app.base).await;
    app.pool(
        "f",
        &stub.url("/hang"),
        json!({"concurrency": 1, "timeoutMs": 300, "maxRetries": 1}),
    )
    .await;
    let first = enqueue_id(&app, "f", json!(0)).await;
    eventually("dispatched", || async { stub.requests().len() == 1 }).await;
    assert_eq!(
        app.callback(&first, Some(1), json!({"success": true}))
            .await,
        204
    );
    assert_eq!(status_of(&app, &first).await, "success");
    let second = enqueue_id(&app, "f", json!(1)).await;
    // The runtime has not answered the first request: the second waits for the slot (on
    // NATS it waits in the broker: the first's message stays unacked until the exchange ends).
    if !common::nats_backend_requested() {
        assert_eq!(app.metric("function_queue_depth", "f").await, Some(1.0));
    }
    // The first exchange ends at its timeout; then the second runs.
    eventually("second dispatched", || async { stub.requests().len() == 2 }).await;
    assert_eq!(
        stub.requests()[1].headers["x-execution-id"],
        second.as_str()
    );
    assert_eq!(status_of(&app, &first).await, "success");
}

#[tokio::test]
async fn a_late_slot_release_of_a_deleted_function_does_not_free_a_slot_of_its_successor() {
    let app = TestApp::with_env(&[ASYNC]).await;
    let old = Stub::start(&app.base).await;
    let new = Stub::start(&app.base).await;
    app.pool("f", &old.url("/slow/400"), json!({"concurrency": 1}))
        .await;
    enqueue_id(&app, "f", json!(0)).await;
    eventually("old dispatched", || async { old.requests().len() == 1 }).await;
    // Queued behind it: ended by the removal, unlike what the successor accepts meanwhile.
    let queued = enqueue_id(&app, "f", json!("queued")).await;
    let r = app
        .client
        .delete(format!("{}/v1/functions/f", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    app.pool("f", &new.url("/track/300"), json!({"concurrency": 1}))
        .await;
    let ids = [
        enqueue_id(&app, "f", json!(1)).await,
        enqueue_id(&app, "f", json!(2)).await,
        enqueue_id(&app, "f", json!(3)).await,
    ];
    for id in &ids {
        eventually("success", || async {
            status_of(&app, id).await == "success"
        })
        .await;
    }
    assert_eq!(
        *new.in_flight.lock().unwrap(),
        (0, 1),
        "the new function exceeded its concurrency"
    );
    eventually("the old queued execution ended", || async {
        status_of(&app, &queued).await == "error"
    })
    .await;
    let (_, ended) = app.get_json(&format!("/v1/executions/{queued}")).await;
    assert_eq!(ended["error"]["code"], "FUNCTION_REMOVED");
    assert_eq!(
        old.requests().len(),
        1,
        "the removed function ran only its first"
    );
}
