//! Dead letters (issue 11, item 3) through HTTP: async executions that ended in error keep their
//! input, are listed newest first with a cursor, a status filter and a limit, and are re-driven
//! as new executions with the same input; bad parameters are 400, unknown names 404, executions
//! that are no dead letter 409. Real time, so this file also runs on the NATS backend
//! (`NANOFAAS_TEST_STATE_BACKEND=nats`, scripts/test.sh); the restart test is tests/ha_dead_letters.rs.

mod common;

use common::{Stub, TestApp, enqueue, eventually, status_of};
use serde_json::{Value, json};

async fn app() -> TestApp {
    TestApp::with_env(&[("NANOFAAS_ASYNC_QUEUE_ENABLED", "true")]).await
}

async fn enqueue_id(app: &TestApp, name: &str, body: Value) -> String {
    let r = enqueue(app, name, body).await;
    assert_eq!(r.status(), 202);
    r.json::<Value>().await.unwrap()["executionId"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn wait_for(app: &TestApp, id: &str, status: &str) {
    eventually(&format!("{id} is {status}"), || async {
        status_of(app, id).await == status
    })
    .await;
}

/// `GET /v1/functions/{name}/executions?<query>`.
async fn list(app: &TestApp, name: &str, query: &str) -> (u16, Value) {
    app.get_json(&format!("/v1/functions/{name}/executions?{query}"))
        .await
}

fn ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["executionId"].as_str().unwrap().to_owned())
        .collect()
}

async fn redrive(app: &TestApp, id: &str) -> (u16, Value) {
    let r = app
        .client
        .post(format!("{}/v1/executions/{id}:redrive", app.base))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// Five failed async executions of `f` (one attempt each, one at a time so they end in order).
async fn five_dead_letters(app: &TestApp, stub: &Stub) -> Vec<String> {
    app.pool(
        "f",
        &stub.url("/fail"),
        json!({"maxRetries": 1, "concurrency": 1}),
    )
    .await;
    let mut dead = Vec::new();
    for i in 0..5 {
        let id = enqueue_id(app, "f", json!({"input": {"n": i}})).await;
        wait_for(app, &id, "error").await;
        dead.push(id);
    }
    dead
}

#[tokio::test]
async fn dead_letters_are_listed_newest_first_page_by_page() {
    let app = app().await;
    let stub = Stub::start(&app.base).await;
    let dead = five_dead_letters(&app, &stub).await;
    // Not dead letters: a success, and a sync invocation that failed.
    app.pool("g", &stub.url("/reply"), json!({})).await;
    let ok = enqueue_id(&app, "g", json!({"input": 1})).await;
    wait_for(&app, &ok, "success").await;
    let sync = app.invoke("f", json!({"input": "sync"})).await;
    assert_eq!(sync.status(), 200);
    assert!(
        list(&app, "g", "").await.1["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    let newest_first: Vec<String> = dead.iter().rev().cloned().collect();
    let (status, all) = list(&app, "f", "").await;
    assert_eq!(status, 200);
    assert_eq!(ids(&all), newest_first);
    assert_eq!(all["nextCursor"], Value::Null);
    // Each item is the execution's status, as GET /v1/executions/{id} shows it.
    let item = &all["items"][0];
    assert_eq!(item["status"], "error");
    assert_eq!(item["error"]["code"], "POOL_ERROR");
    assert_eq!(item, &app.execution(&dead[4]).await.1);

    // Pages of two: 2 + 2 + 1, each cursor continuing where the last page stopped.
    let mut seen = Vec::new();
    let mut query = "limit=2".to_owned();
    let mut pages = 0;
    loop {
        let (status, page) = list(&app, "f", &query).await;
        assert_eq!(status, 200);
        assert!(ids(&page).len() <= 2);
        seen.extend(ids(&page));
        pages += 1;
        match page["nextCursor"].as_str() {
            Some(cursor) => query = format!("limit=2&after={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, newest_first);
    assert_eq!(pages, 3);

    // The status filter.
    assert_eq!(ids(&list(&app, "f", "status=error").await.1), newest_first);
    let (status, none) = list(&app, "f", "status=timeout").await;
    assert_eq!(status, 200);
    assert!(ids(&none).is_empty());
    assert_eq!(none["nextCursor"], Value::Null);
    assert_eq!(
        ids(&list(&app, "f", "status=error&limit=1").await.1),
        [newest_first[0].clone()]
    );
    app.assert_metrics("f", &[("function_dead_letter_total", 5.0)])
        .await;
}

#[tokio::test]
async fn bad_listing_parameters_are_400_and_unknown_functions_404() {
    let app = app().await;
    let stub = Stub::start(&app.base).await;
    app.pool("f", &stub.url("/fail"), json!({})).await;
    for query in [
        "status=success",
        "status=ERROR",
        "status=",
        "limit=0",
        "limit=201",
        "limit=-1",
        "limit=x",
        "after=0",
        "after=abc",
        "after=99999999999999999999",
    ] {
        let (status, body) = list(&app, "f", query).await;
        assert_eq!(status, 400, "{query}");
        assert_eq!(body["error"], "VALIDATION_ERROR", "{query}");
        assert!(body["message"].is_string(), "{query}");
    }
    let (status, body) = list(&app, "f", "limit=200&status=timeout&after=1").await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"items": [], "nextCursor": null}));
    let (status, body) = list(&app, "nope", "").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"], "NOT_FOUND");
    assert_eq!(body["message"], "Function not found: nope");
}

#[tokio::test]
async fn a_redrive_runs_the_same_input_again_as_a_new_execution() {
    let app = app().await;
    let stub = Stub::start(&app.base).await;
    app.pool("f", &stub.url("/switch"), json!({"maxRetries": 1}))
        .await;
    let body = json!({"input": {"order": 42}, "metadata": {"tenant": "t1"}});
    let dead = enqueue_id(&app, "f", body).await;
    wait_for(&app, &dead, "error").await;
    // The runtime is fixed, then the dead letter re-driven.
    stub.failing
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let (status, answer) = redrive(&app, &dead).await;
    assert_eq!(status, 202);
    assert_eq!(answer["status"], "queued");
    assert_eq!(answer["output"], Value::Null);
    let new = answer["executionId"].as_str().unwrap().to_owned();
    assert_ne!(new, dead);
    wait_for(&app, &new, "success").await;
    assert_eq!(
        app.execution(&new).await.1["output"],
        json!({"echo": {"order": 42}})
    );
    let sent: Vec<_> = stub
        .requests()
        .into_iter()
        .filter(|r| r.header("X-Execution-Id") == new)
        .collect();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0].body,
        json!({"input": {"order": 42}, "metadata": {"tenant": "t1"}})
    );
    // The dead letter is still there (and can be re-driven again).
    assert_eq!(status_of(&app, &dead).await, "error");
    assert_eq!(ids(&list(&app, "f", "").await.1), vec![dead.clone()]);
    assert_eq!(redrive(&app, &dead).await.0, 202);
    app.assert_metrics("f", &[("function_redrive_total", 2.0)])
        .await;
}

#[tokio::test]
async fn only_dead_letters_can_be_re_driven() {
    let app = app().await;
    let stub = Stub::start(&app.base).await;
    app.pool("ok", &stub.url("/reply"), json!({})).await;
    app.pool("failing", &stub.url("/fail"), json!({"maxRetries": 1}))
        .await;
    app.pool("slow", &stub.url("/slow/3000"), json!({})).await;
    let success = enqueue_id(&app, "ok", json!({"input": 1})).await;
    wait_for(&app, &success, "success").await;
    let sync = app.invoke("failing", json!({"input": 1})).await;
    let sync_id = sync.headers()["X-Execution-Id"]
        .to_str()
        .unwrap()
        .to_owned();
    let running = enqueue_id(&app, "slow", json!({"input": 1})).await;
    for id in [&success, &sync_id, &running] {
        let (status, body) = redrive(&app, id).await;
        assert_eq!(status, 409, "{id}");
        assert_eq!(body["error"], "CONFLICT");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("not a dead letter"),
            "{body}"
        );
    }
    let (status, body) = redrive(&app, "no-such-execution").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"], "NOT_FOUND");
    assert_eq!(body["message"], "Execution not found: no-such-execution");
    // Other actions, and POST on a bare id, are 405 with what the resource takes.
    for (path, allow) in [
        ("/v1/executions/x:retry", "GET,HEAD"),
        ("/v1/executions/x", "GET,HEAD"),
    ] {
        let r = app
            .client
            .post(format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 405, "{path}");
        assert_eq!(r.headers()["allow"], allow, "{path}");
    }
    let r = app
        .client
        .delete(format!("{}/v1/executions/x:redrive", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "POST");
}

#[tokio::test]
async fn without_the_async_queue_the_listing_is_empty_and_nothing_is_kept() {
    let app = TestApp::spawn().await;
    let stub = Stub::start(&app.base).await;
    app.pool("f", &stub.url("/fail"), json!({"maxRetries": 1}))
        .await;
    let r = app.invoke("f", json!({"input": 1})).await;
    let id = r.headers()["X-Execution-Id"].to_str().unwrap().to_owned();
    assert_eq!(
        list(&app, "f", "").await,
        (200, json!({"items": [], "nextCursor": null}))
    );
    assert_eq!(redrive(&app, &id).await.0, 409);
    // The scrape lists no dead-letter family until one exists.
    let scrape = app.scrape().await;
    assert!(!scrape.contains("function_dead_letter_total"));
    assert!(!scrape.contains("function_redrive_total"));
}

/// Memory backend (the NATS one ends a removed function's queued executions asynchronously, in
/// its lifecycle task): what a removal ended is re-driven once the function is back.
#[tokio::test]
async fn a_function_registered_again_re_drives_what_its_removal_ended() {
    let app = TestApp::with_env(&[
        ("NANOFAAS_STATE_BACKEND", "memory"),
        ("NANOFAAS_ASYNC_QUEUE_ENABLED", "true"),
    ])
    .await;
    let stub = Stub::start(&app.base).await;
    app.pool("f", &stub.url("/slow/2000"), json!({"concurrency": 1}))
        .await;
    let _running = enqueue_id(&app, "f", json!({"input": "first"})).await;
    let queued = enqueue_id(&app, "f", json!({"input": "second"})).await;
    assert_eq!(app.delete_function("f").await.status(), 204);
    let (_, removed) = app.execution(&queued).await;
    assert_eq!(removed["error"]["code"], "FUNCTION_REMOVED");
    // Gone with its function: 404 for the listing and for the redrive.
    assert_eq!(list(&app, "f", "").await.0, 404);
    assert_eq!(redrive(&app, &queued).await.0, 404);
    app.pool("f", &stub.url("/reply"), json!({})).await;
    assert_eq!(ids(&list(&app, "f", "").await.1), vec![queued.clone()]);
    let (status, answer) = redrive(&app, &queued).await;
    assert_eq!(status, 202);
    let new = answer["executionId"].as_str().unwrap().to_owned();
    wait_for(&app, &new, "success").await;
    assert_eq!(
        app.execution(&new).await.1["output"],
        json!({"echo": "second"})
    );
}
