//! 10,000 async invocations across 100 functions against a runtime that records in-flight counts:
//! every execution reaches a terminal state exactly once, no function ever exceeds its
//! concurrency, and nothing is dispatched once terminal — with retries and early callbacks mixed
//! in.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use common::{TestApp, metric_value};
use futures::StreamExt;
use serde_json::{Value, json};

const FUNCTIONS: usize = 100;
const PER_FUNCTION: usize = 100;

#[derive(Default)]
struct Record {
    in_flight: HashMap<String, (u32, u32)>,
    dispatches: HashMap<String, u32>,
    violations: Vec<String>,
}

#[derive(Clone)]
struct RuntimeState {
    cp: String,
    client: reqwest::Client,
    record: Arc<Mutex<Record>>,
}

async fn runtime(
    State(st): State<RuntimeState>,
    Path(function): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let id = headers["x-execution-id"].to_str().unwrap().to_owned();
    let attempt = headers["x-dispatch-attempt"].to_str().unwrap().to_owned();
    let input: Value = serde_json::from_slice::<Value>(&body).unwrap()["input"].clone();
    {
        let mut r = st.record.lock().unwrap();
        let slot = r.in_flight.entry(function.clone()).or_default();
        slot.0 += 1;
        slot.1 = slot.1.max(slot.0);
        *r.dispatches.entry(id.clone()).or_default() += 1;
    }
    // The execution must be running while its runtime works on it.
    let status: Value = st
        .client
        .get(format!("{}/v1/executions/{id}", st.cp))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    if status["status"] != "running" {
        st.record
            .lock()
            .unwrap()
            .violations
            .push(format!("{id} dispatched while {}", status["status"]));
    }
    let kind = input["kind"].as_str().unwrap_or("");
    let response = if kind == "fail_first" && attempt == "1" {
        (StatusCode::INTERNAL_SERVER_ERROR, "first attempt fails").into_response()
    } else {
        if kind == "callback" {
            st.client
                .post(format!("{}/v1/internal/executions/{id}:complete", st.cp))
                .header("X-Dispatch-Attempt", &attempt)
                .json(&json!({"success": true, "output": input}))
                .send()
                .await
                .unwrap();
        }
        axum::Json(input).into_response()
    };
    st.record
        .lock()
        .unwrap()
        .in_flight
        .get_mut(&function)
        .unwrap()
        .0 -= 1;
    response
}

async fn start_runtime(cp: &str, record: Arc<Mutex<Record>>) -> SocketAddr {
    let state = RuntimeState {
        cp: cp.to_owned(),
        client: reqwest::Client::builder().no_proxy().build().unwrap(),
        record,
    };
    let app = Router::new()
        .route("/{function}", post(runtime))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn concurrency_of(i: usize) -> u32 {
    1 + (i % 4) as u32
}

fn kind_of(n: usize) -> &'static str {
    match n % 5 {
        0 => "fail_first",
        1 => "callback",
        _ => "plain",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_async_invocations_across_one_hundred_functions() {
    let app = TestApp::with_env(&[
        ("NANOFAAS_ASYNC_QUEUE_ENABLED", "true"),
        ("NANOFAAS_RATE_MAX_PER_SECOND", "1000000"),
    ])
    .await;
    let record = Arc::new(Mutex::new(Record::default()));
    let addr = start_runtime(&app.base, record.clone()).await;
    for i in 0..FUNCTIONS {
        app.pool(
            &format!("f{i}"),
            &format!("http://{addr}/f{i}"),
            json!({"concurrency": concurrency_of(i), "queueSize": PER_FUNCTION, "maxRetries": 2}),
        )
        .await;
    }

    let jobs: Vec<(usize, usize)> = (0..PER_FUNCTION)
        .flat_map(|n| (0..FUNCTIONS).map(move |f| (f, n)))
        .collect();
    let ids: Vec<(usize, usize, String)> = futures::stream::iter(jobs)
        .map(|(f, n)| {
            let app = &app;
            async move {
                let r = app
                    .client
                    .post(format!("{}/v1/functions/f{f}:enqueue", app.base))
                    .json(&json!({"input": {"kind": kind_of(n), "n": n}}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 202);
                let body: Value = r.json().await.unwrap();
                (f, n, body["executionId"].as_str().unwrap().to_owned())
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    assert_eq!(ids.len(), FUNCTIONS * PER_FUNCTION);

    // Wait (bounded) until every execution is terminal.
    let mut done = false;
    for _ in 0..600 {
        let scrape = app.scrape().await;
        let finished: f64 = (0..FUNCTIONS)
            .map(|f| {
                let label = format!("function=\"f{f}\"");
                metric_value(&scrape, "function_success_total", &label).unwrap_or(0.0)
                    + metric_value(&scrape, "function_error_total", &label).unwrap_or(0.0)
            })
            .sum();
        if finished as usize == FUNCTIONS * PER_FUNCTION {
            done = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(done, "not every execution finished");

    let statuses: Vec<(usize, usize, Value)> = futures::stream::iter(ids)
        .map(|(f, n, id)| {
            let app = &app;
            async move { (f, n, app.execution(&id).await.1) }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let record = std::mem::take(&mut *record.lock().unwrap());
    assert!(
        record.violations.is_empty(),
        "{:?}",
        &record.violations[..record.violations.len().min(5)]
    );
    for (f, n, status) in &statuses {
        assert_eq!(status["status"], "success", "f{f} #{n}: {status}");
        assert_eq!(status["output"]["n"], *n);
        let id = status["executionId"].as_str().unwrap();
        let expected = if kind_of(*n) == "fail_first" { 2 } else { 1 };
        assert_eq!(record.dispatches[id], expected, "dispatches of f{f} #{n}");
    }
    for f in 0..FUNCTIONS {
        let (now, max) = record.in_flight[&format!("f{f}")];
        assert_eq!(now, 0);
        assert!(
            max <= concurrency_of(f),
            "f{f} reached {max} > {}",
            concurrency_of(f)
        );
    }
    let scrape = app.scrape().await;
    for f in 0..FUNCTIONS {
        let label = format!("function=\"f{f}\"");
        assert_eq!(
            metric_value(&scrape, "function_success_total", &label),
            Some(PER_FUNCTION as f64)
        );
        assert_eq!(
            metric_value(&scrape, "function_error_total", &label),
            Some(0.0)
        );
        assert_eq!(
            metric_value(&scrape, "function_inFlight", &label),
            Some(0.0)
        );
        assert_eq!(
            metric_value(&scrape, "function_queue_depth", &label),
            Some(0.0)
        );
    }
}
