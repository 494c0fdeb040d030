//! Synchronous POOL invocation against a real stub runtime on port 0: every reply kind of
//! REFERENCE §6.2, callbacks racing the reply (§3.4, DECISIONS 5), timeouts (DECISIONS 1) and
//! retries (§3.5). Each case checks the HTTP answer, `GET /v1/executions/{id}` and the metrics.

mod common;

use std::time::Duration;

use common::{Stub, TestApp, closing_server, dead_address, eventually};
use serde_json::{Value, json};

async fn setup() -> (TestApp, Stub) {
    let app = TestApp::spawn().await;
    let stub = Stub::start(&app.base).await;
    (app, stub)
}

async fn invoke_json(app: &TestApp, name: &str) -> (u16, Option<String>, Value) {
    let r = app.invoke(name, json!({"input": {"n": 1}})).await;
    let status = r.status().as_u16();
    let header = r
        .headers()
        .get("X-Execution-Id")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, header, r.json().await.unwrap())
}

#[tokio::test]
async fn reply_is_the_output_and_the_runtime_gets_the_contract_request() {
    let (app, stub) = setup().await;
    app.pool("f", &stub.url("/reply"), json!({})).await;
    let r = app
        .invoke_request("f")
        .header("X-Trace-Id", "trace-1")
        .header("Idempotency-Key", "key-1")
        .json(&json!({"input": {"msg": "hi"}, "metadata": {"k": "v"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let id = r.headers()["X-Execution-Id"].to_str().unwrap().to_owned();
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body,
        json!({"executionId": id, "status": "success", "output": {"echo": {"msg": "hi"}}, "error": null})
    );
    assert_eq!(id.len(), 36);
    assert_eq!(&id[14..15], "4", "UUID v4: {id}");

    let sent = stub.requests();
    assert_eq!(sent.len(), 1);
    let h = &sent[0].headers;
    assert_eq!(h["content-type"], "application/json");
    assert_eq!(h["x-execution-id"], id.as_str());
    assert_eq!(h["x-dispatch-attempt"], "1");
    assert_eq!(h["x-trace-id"], "trace-1");
    assert_eq!(h["idempotency-key"], "key-1");
    assert_eq!(
        sent[0].body,
        json!({"input": {"msg": "hi"}, "metadata": {"k": "v"}})
    );

    let (status, exec) = app.execution(&id).await;
    assert_eq!(status, 200);
    assert_eq!(exec["status"], "success");
    assert_eq!(exec["output"], json!({"echo": {"msg": "hi"}}));
    assert_eq!(exec["coldStart"], false);
    assert_eq!(exec["initDurationMs"], Value::Null);
    assert_eq!(exec["error"], Value::Null);
    let started = exec["startedAt"].as_str().unwrap();
    let finished = exec["finishedAt"].as_str().unwrap();
    assert!(
        started.ends_with('Z') && finished >= started,
        "{started} {finished}"
    );

    app.assert_metrics(
        "f",
        &[
            ("function_dispatch_total", 1.0),
            ("function_success_total", 1.0),
            ("function_warm_start_total", 1.0),
            ("function_latency_ms_seconds_count", 1.0),
        ],
    )
    .await;
    assert_eq!(
        app.metric("function_e2e_latency_ms_seconds_count", "f")
            .await,
        Some(1.0)
    );
}

#[tokio::test]
async fn metadata_absent_is_forwarded_as_null() {
    let (app, stub) = setup().await;
    app.pool("f", &stub.url("/reply"), json!({})).await;
    let (status, _, _) = invoke_json(&app, "f").await;
    assert_eq!(status, 200);
    assert_eq!(
        stub.requests()[0].body,
        json!({"input": {"n": 1}, "metadata": null})
    );
    assert!(stub.requests()[0].headers.get("idempotency-key").is_none());
    assert!(stub.requests()[0].headers.get("x-trace-id").is_none());
}

#[tokio::test]
async fn scalar_metadata_values_are_forwarded_as_strings() {
    let (app, stub) = setup().await;
    app.pool("f", &stub.url("/reply"), json!({})).await;
    let r = app
        .invoke(
            "f",
            json!({"input": 1, "metadata": {"flag": true, "n": 2, "s": "x"}}),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        stub.requests()[0].body["metadata"],
        json!({"flag": "true", "n": "2", "s": "x"})
    );
}

#[tokio::test]
async fn text_plain_replies_are_string_outputs() {
    let (app, stub) = setup().await;
    app.pool("f", &stub.url("/text"), json!({})).await;
    let (status, _, body) = invoke_json(&app, "f").await;
    assert_eq!((status, body["output"].clone()), (200, json!("hello text")));
}

#[tokio::test]
async fn empty_and_null_replies_are_successes_with_null_output() {
    let (app, stub) = setup().await;
    app.pool("e", &stub.url("/empty"), json!({})).await;
    app.pool("n", &stub.url("/null"), json!({})).await;
    for name in ["e", "n"] {
        let (status, id, body) = invoke_json(&app, name).await;
        assert_eq!(status, 200);
        assert_eq!(body["status"], "success", "{name}");
        assert_eq!(body["output"], Value::Null);
        let (_, exec) = app.execution(&id.unwrap()).await;
        assert_eq!(exec["status"], "success");
        assert_eq!(app.metric("function_success_total", name).await, Some(1.0));
    }
}

#[tokio::test]
async fn a_500_is_retried_up_to_max_retries_attempts_then_is_an_error() {
    let (app, stub) = setup().await;
    app.pool("f", &stub.url("/fail"), json!({})).await;
    let r = app
        .invoke_request("f")
        .header("Idempotency-Key", "k")
        .json(&json!({"input": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "function errors stay 200 (DECISIONS 1)");
    let id = r.headers()["X-Execution-Id"].to_str().unwrap().to_owned();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], "error");
    assert_eq!(body["output"], Value::Null);
    assert_eq!(
        body["error"],
        json!({"code": "POOL_ERROR", "message": "boom"})
    );

    let sent = stub.requests();
    let attempts: Vec<&str> = sent
        .iter()
        .map(|r| r.headers["x-dispatch-attempt"].to_str().unwrap())
        .collect();
    assert_eq!(attempts, ["1", "2", "3"]);
    assert!(sent[0].headers.get("idempotency-key").is_some());
    assert!(sent[1].headers.get("idempotency-key").is_none());
    assert!(
        sent.iter()
            .all(|r| r.headers["x-execution-id"] == id.as_str())
    );

    let (_, exec) = app.execution(&id).await;
    assert_eq!(exec["status"], "error");
    assert_eq!(exec["error"]["code"], "POOL_ERROR");
    app.assert_metrics(
        "f",
        &[
            ("function_dispatch_total", 3.0),
            ("function_retry_total", 2.0),
            ("function_error_total", 1.0),
            ("function_success_total", 0.0),
        ],
    )
    .await;
}

#[tokio::test]
async fn an_empty_error_reply_reports_the_status_text() {
    let (app, stub) = setup().await;
    app.pool("f", &stub.url("/fail-empty"), json!({"maxRetries": 1}))
        .await;
    let (_, _, body) = invoke_json(&app, "f").await;
    assert_eq!(
        body["error"],
        json!({"code":"POOL_ERROR","message":"503 SERVICE_UNAVAILABLE"})
    );
    assert_eq!(
        stub.requests().len(),
        1,
        "maxRetries 1 means a single attempt"
    );
}

#[tokio::test]
async fn a_retry_that_succeeds_is_a_success() {
    let (app, stub) = setup().await;
    app.pool("f", &stub.url("/flaky"), json!({})).await;
    let (status, id, body) = invoke_json(&app, "f").await;
    assert_eq!(status, 200);
    assert_eq!(body["output"], json!({"attempt": "2"}));
    let (_, exec) = app.execution(&id.unwrap()).await;
    assert_eq!(exec["status"], "success");
    app.assert_metrics(
        "f",
        &[
            ("function_retry_total", 1.0),
            ("function_success_total", 1.0),
        ],
    )
    .await;
}

#[tokio::test]
async fn invalid_json_replies_are_pool_errors() {
    let (app, stub) = setup().await;
    app.pool("f", &stub.url("/badjson"), json!({"maxRetries": 0}))
        .await;
    let (status, _, body) = invoke_json(&app, "f").await;
    assert_eq!(status, 200);
    assert_eq!(body["error"]["code"], "POOL_ERROR");
    assert_eq!(
        stub.requests().len(),
        1,
        "maxRetries 0 means a single attempt"
    );
}

#[tokio::test]
async fn cold_start_headers_are_recorded() {
    let (app, stub) = setup().await;
    app.pool("f", &stub.url("/cold"), json!({})).await;
    let (_, id, _) = invoke_json(&app, "f").await;
    let (_, exec) = app.execution(&id.unwrap()).await;
    assert_eq!(exec["coldStart"], true);
    assert_eq!(exec["initDurationMs"], 250);
    app.assert_metrics(
        "f",
        &[
            ("function_cold_start_total", 1.0),
            ("function_warm_start_total", 0.0),
            ("function_init_duration_ms_seconds_count", 1.0),
            ("function_init_duration_ms_seconds_sum", 0.25),
        ],
    )
    .await;
}

#[tokio::test]
async fn a_callback_before_the_reply_wins() {
    let (app, stub) = setup().await;
    app.pool("f", &stub.url("/callback-first"), json!({})).await;
    let (status, id, body) = invoke_json(&app, "f").await;
    assert_eq!(status, 200);
    assert_eq!(body["output"], "from-callback");
    assert_eq!(*stub.callback_statuses.lock().unwrap(), [204]);
    let id = id.unwrap();
    // The reply that follows changes nothing but is accounted for once.
    eventually("warm start counted", || async {
        app.metric("function_warm_start_total", "f").await == Some(1.0)
    })
    .await;
    let (_, exec) = app.execution(&id).await;
    assert_eq!(exec["status"], "success");
    assert_eq!(exec["output"], "from-callback");
    app.assert_metrics(
        "f",
        &[
            ("function_success_total", 1.0),
            ("function_dispatch_total", 1.0),
        ],
    )
    .await;
}

#[tokio::test]
async fn a_second_callback_changes_nothing() {
    let (app, stub) = setup().await;
    app.pool("f", &stub.url("/callback-twice"), json!({})).await;
    let (status, id, body) = invoke_json(&app, "f").await;
    assert_eq!((status, body["output"].clone()), (200, json!("first")));
    // The caller is answered on the first callback; the runtime sends the second after.
    eventually("second callback delivered", || async {
        stub.callback_statuses.lock().unwrap().len() == 2
    })
    .await;
    assert_eq!(*stub.callback_statuses.lock().unwrap(), [204, 204]);
    let (_, exec) = app.execution(&id.unwrap()).await;
    assert_eq!(
        (exec["status"].clone(), exec["output"].clone()),
        (json!("success"), json!("first"))
    );
    app.assert_metrics(
        "f",
        &[
            ("function_error_total", 0.0),
            ("function_success_total", 1.0),
        ],
    )
    .await;
}

#[tokio::test]
async fn a_cold_start_reported_after_the_callback_is_still_counted() {
    let (app, stub) = setup().await;
    app.pool("f", &stub.url("/cold-after-callback"), json!({}))
        .await;
    let (_, id, body) = invoke_json(&app, "f").await;
    assert_eq!(body["output"], "cb");
    let id = id.unwrap();
    eventually("cold start recorded", || async {
        app.execution(&id).await.1["coldStart"] == true
    })
    .await;
    assert_eq!(app.execution(&id).await.1["initDurationMs"], 40);
    app.assert_metrics(
        "f",
        &[
            ("function_cold_start_total", 1.0),
            ("function_warm_start_total", 0.0),
        ],
    )
    .await;
}

#[tokio::test]
async fn a_wait_timeout_is_408_and_a_late_callback_does_not_rewrite_it() {
    let (app, stub) = setup().await;
    app.pool("f", &stub.url("/late-callback/300"), json!({}))
        .await;
    let done = stub.callback_done.notified();
    tokio::pin!(done);
    done.as_mut().enable();
    let r = app
        .invoke_request("f")
        .header("X-Timeout-Ms", "100")
        .json(&json!({"input": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 408);
    let id = r.headers()["X-Execution-Id"].to_str().unwrap().to_owned();
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body,
        json!({"executionId": id, "status": "timeout", "output": null, "error": null})
    );
    assert_eq!(app.execution(&id).await.1["status"], "timeout");

    done.await;
    assert_eq!(*stub.callback_statuses.lock().unwrap(), [204]);
    let (_, exec) = app.execution(&id).await;
    assert_eq!(exec["status"], "timeout");
    assert_eq!(exec["output"], Value::Null);
    assert!(exec["finishedAt"].is_string());
    app.assert_metrics(
        "f",
        &[
            ("function_timeout_total", 1.0),
            ("function_success_total", 0.0),
        ],
    )
    .await;
}

#[tokio::test]
async fn a_runtime_that_never_answers_times_out_per_timeout_ms() {
    let (app, stub) = setup().await;
    app.pool(
        "f",
        &stub.url("/hang"),
        json!({"timeoutMs": 200, "maxRetries": 1}),
    )
    .await;
    // The dispatch's own timeout (timeoutMs) ends the attempt before this longer wait.
    let r = app
        .invoke_request("f")
        .header("X-Timeout-Ms", "5000")
        .json(&json!({"input": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["error"],
        json!({"code": "POOL_TIMEOUT", "message": "Pool request timed out after 200ms"})
    );
    // And with the default wait (= timeoutMs), the caller is answered no later than that.
    let started = std::time::Instant::now();
    let r = app.invoke("f", json!({"input": 2})).await;
    assert!(matches!(r.status().as_u16(), 200 | 408));
    assert!(started.elapsed() < Duration::from_secs(3));
}

/// Java's Jackson re-serialises a runtime's JSON; so do we: the output comes back compact, from
/// the reply and from a callback alike (whitespace inside strings is kept).
#[tokio::test]
async fn pretty_printed_outputs_come_back_compact() {
    let (app, stub) = setup().await;
    app.pool("f", &stub.url("/pretty"), json!({})).await;
    let r = app.invoke("f", json!({"input": 1})).await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(
        text.contains(r#""output":{"hello":"w o","n":[1,2]}"#),
        "{text}"
    );
    let id: Value = serde_json::from_str(&text).unwrap();
    let id = id["executionId"].as_str().unwrap().to_owned();
    let stored = app.execution_text(&id).await;
    assert!(
        stored.contains(r#""output":{"hello":"w o","n":[1,2]}"#),
        "{stored}"
    );

    // A callback's output is compacted too.
    app.pool("g", &stub.url("/hang"), json!({"timeoutMs": 5000}))
        .await;
    let pending = app.spawn_invoke("g", &[], json!({"input": 1}));
    let mut id = None;
    eventually("the runtime to receive the request", || {
        id = stub
            .requests()
            .iter()
            .find(|r| r.path == "hang")
            .and_then(|r| r.headers.get("X-Execution-Id"))
            .map(|v| v.to_str().unwrap().to_owned());
        std::future::ready(id.is_some())
    })
    .await;
    let id = id.unwrap();
    let body = r#"{"success": true, "output": { "a" : [ 1 , "x y" ] }}"#;
    let r = app
        .post_raw(&format!("/v1/internal/executions/{id}:complete"), body)
        .await;
    assert_eq!(r.status(), 204);
    assert_eq!(pending.await.unwrap().0, 200);
    let stored = app.execution_text(&id).await;
    assert!(stored.contains(r#""output":{"a":[1,"x y"]}"#), "{stored}");
}

/// The wait and the runtime call share one deadline by default (both timeoutMs), so either may
/// end first; whichever does, the caller's answer and the execution's status must agree.
#[tokio::test]
async fn a_wait_and_a_dispatch_ending_together_agree_with_the_stored_status() {
    let (app, stub) = setup().await;
    app.pool(
        "f",
        &stub.url("/hang"),
        json!({"timeoutMs": 60, "maxRetries": 1}),
    )
    .await;
    for _ in 0..15 {
        let (status, id, body) = invoke_json(&app, "f").await;
        let stored = app.execution(&id.unwrap()).await.1;
        match status {
            408 => assert_eq!(
                (body["status"].as_str(), stored["status"].as_str()),
                (Some("timeout"), Some("timeout")),
                "{stored}"
            ),
            200 => {
                assert_eq!(body["status"], "error");
                assert_eq!(stored["status"], "error");
                assert_eq!(body["error"], stored["error"]);
            }
            other => panic!("unexpected status {other}: {body}"),
        }
    }
}

#[tokio::test]
async fn a_closed_connection_is_a_pool_error() {
    let app = TestApp::spawn().await;
    let addr = closing_server().await;
    app.pool(
        "f",
        &format!("http://{addr}/invoke"),
        json!({"maxRetries": 2}),
    )
    .await;
    let (status, id, body) = invoke_json(&app, "f").await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "error");
    assert_eq!(body["error"]["code"], "POOL_ERROR");
    assert_eq!(app.execution(&id.unwrap()).await.1["status"], "error");
    assert_eq!(app.metric("function_dispatch_total", "f").await, Some(2.0));

    let dead = dead_address().await;
    app.pool(
        "g",
        &format!("http://{dead}/invoke"),
        json!({"maxRetries": 1}),
    )
    .await;
    let (_, _, body) = invoke_json(&app, "g").await;
    assert_eq!(body["error"]["code"], "POOL_ERROR");
    assert!(!body["error"]["message"].as_str().unwrap().is_empty());
}

#[tokio::test]
async fn pool_without_endpoint_fails_with_endpoint_missing() {
    let app = TestApp::spawn().await;
    app.register_ok(json!({"name":"p","image":"i","executionMode":"POOL","maxRetries":1}))
        .await;
    let (_, _, body) = invoke_json(&app, "p").await;
    assert_eq!(
        body["error"],
        json!({"code":"POOL_ENDPOINT_MISSING","message":"endpointUrl is required for POOL mode"})
    );
}

#[tokio::test]
async fn concurrent_invocations_each_get_their_own_result() {
    let (app, stub) = setup().await;
    app.pool("f", &stub.url("/slow/50"), json!({})).await;
    let calls = (0..20).map(|i| {
        let app = &app;
        async move {
            let r = app.invoke("f", json!({"input": i})).await;
            (r.status(), r.json::<Value>().await.unwrap())
        }
    });
    let results = futures::future::join_all(calls).await;
    let mut ids: Vec<String> = results
        .iter()
        .map(|(s, b)| {
            assert_eq!(*s, 200);
            b["executionId"].as_str().unwrap().to_owned()
        })
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 20);
    assert_eq!(app.metric("function_success_total", "f").await, Some(20.0));
}

/// Issue 10, defect 6: the runtime fails slowly, at the deadline the sync wait shares with the
/// attempt (both `timeoutMs`), with retries left. The caller is answered 408, so no retry may be
/// sent for an execution that is (or is about to be) stored as TIMEOUT, and
/// `function_retry_total` counts only retries that reached the runtime. Checked in the core
/// route (dispatch inline) and the queued route, over many concurrent calls.
async fn no_retry_after_the_shared_deadline(env: &[(&str, &str)]) {
    const CALLS: usize = 60;
    let app = TestApp::with_env(env).await;
    let stub = Stub::start(&app.base).await;
    // The runtime answers 500 only after the attempt's own timeout (POOL_TIMEOUT at the deadline).
    app.pool(
        "f",
        &stub.url("/observe/400"),
        json!({"timeoutMs": 150, "maxRetries": 3, "concurrency": CALLS}),
    )
    .await;
    let calls: Vec<_> = (0..CALLS)
        .map(|i| app.spawn_invoke("f", &[], json!({"input": i})))
        .collect();
    let mut ids = Vec::new();
    for call in calls {
        let (status, body) = call.await.unwrap();
        assert!(matches!(status, 200 | 408), "{status} {body}");
        ids.push((status, body));
    }
    // Let every attempt that was started reach the runtime.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (status, body) in &ids {
        let stored = app.execution(body["executionId"].as_str().unwrap()).await.1;
        let expected = if *status == 408 { "timeout" } else { "error" };
        assert_eq!(stored["status"], expected, "{body} {stored}");
    }
    let observed = stub.observed.lock().unwrap().clone();
    let late: Vec<_> = observed.iter().filter(|o| o.2 == "timeout").collect();
    assert!(late.is_empty(), "attempts sent after TIMEOUT: {late:?}");
    // Attempts sent, and the executions that had at least one (an execution whose caller's
    // deadline passed before its first attempt could start has none).
    let sent = stub.requests();
    let executions: std::collections::HashSet<_> = sent
        .iter()
        .map(|r| r.headers["X-Execution-Id"].to_str().unwrap().to_owned())
        .collect();
    let retries = app.metric("function_retry_total", "f").await.unwrap_or(0.0);
    assert_eq!(
        retries as usize,
        sent.len() - executions.len(),
        "retries counted vs attempts sent ({} executions)",
        executions.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_retry_is_sent_or_counted_after_the_shared_deadline_inline() {
    no_retry_after_the_shared_deadline(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_retry_is_sent_or_counted_after_the_shared_deadline_queued() {
    no_retry_after_the_shared_deadline(&[("NANOFAAS_ASYNC_QUEUE_ENABLED", "true")]).await;
}
