//! The whole `/actuator/prometheus` body of a representative run, compared line for line with a
//! golden file: every family, HELP/TYPE line, label order and value format that the Java parity
//! tests and Prometheus scrapers read (REFERENCE §7). Only timings are normalised, and the series
//! of counter families, whose order the format leaves free, are compared sorted.

mod common;

use common::{Stub, TestApp, enqueue, eventually, status_of};
use serde_json::{Value, json};

const GOLDEN: &str = include_str!("golden/prometheus_scrape.txt");
const GOLDEN_SYNC_PRESSURE: &str = include_str!("golden/prometheus_scrape_sync_pressure.txt");

/// Replaces measured durations with `<t>` and sorts the series of each counter family.
fn normalise(scrape: &str) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut counter_series: Vec<String> = Vec::new();
    let flush = |out: &mut Vec<String>, series: &mut Vec<String>| {
        series.sort();
        out.append(series);
    };
    let mut in_counter = false;
    for line in scrape.lines() {
        if line.starts_with('#') {
            flush(&mut out, &mut counter_series);
            if line.starts_with("# TYPE ") {
                in_counter = line.ends_with(" counter");
            }
            out.push(line.to_owned());
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or((line, ""));
        let name = series.split('{').next().unwrap_or(series);
        let timing = series.contains("quantile=\"")
            || name.ends_with("_seconds_sum")
            || name.ends_with("_seconds_max");
        let line = if timing {
            format!("{series} <t>")
        } else {
            format!("{series} {value}")
        };
        if in_counter {
            counter_series.push(line);
        } else {
            out.push(line);
        }
    }
    flush(&mut out, &mut counter_series);
    out.join("\n") + "\n"
}

#[tokio::test]
async fn a_representative_scrape_is_byte_for_byte_the_golden_text() {
    let app = TestApp::with_env(&[
        ("NANOFAAS_ASYNC_QUEUE_ENABLED", "true"),
        ("NANOFAAS_SYNC_QUEUE_ENABLED", "true"),
        ("NANOFAAS_AUTOSCALER_ENABLED", "true"),
        ("NANOFAAS_ADMIN_RUNTIME_CONFIG_ENABLED", "true"),
    ])
    .await;
    let stub = Stub::start(&app.base).await;

    // Sync invocations through the sync queue, LOCAL and POOL.
    app.local("echo").await;
    for i in 0..3 {
        assert_eq!(app.invoke("echo", json!({"input": i})).await.status(), 200);
    }
    app.pool(
        "scaled",
        &stub.url("/reply"),
        json!({"scalingConfig": {"strategy": "HPA", "metrics": [
            {"type": "queue_depth", "target": "5"}, {"type": "rps", "target": "2.5"},
            {"type": "in_flight", "target": "3"}]}}),
    )
    .await;
    for i in 0..2 {
        assert_eq!(
            app.invoke("scaled", json!({"input": i})).await.status(),
            200
        );
    }
    // An async invocation, waited for.
    let r = enqueue(&app, "scaled", json!({"input": "async"})).await;
    assert_eq!(r.status(), 202);
    let id = r.json::<Value>().await.unwrap()["executionId"]
        .as_str()
        .unwrap()
        .to_owned();
    eventually("async success", || async {
        status_of(&app, &id).await == "success"
    })
    .await;
    // An error, a cold start.
    app.pool("failing", &stub.url("/fail"), json!({"maxRetries": 0}))
        .await;
    app.invoke("failing", json!({"input": 1})).await;
    app.pool("cold", &stub.url("/cold"), json!({})).await;
    app.invoke("cold", json!({"input": 1})).await;
    // A full queue: one in flight, one queued, one refused.
    app.pool(
        "stuck",
        &stub.url("/hang"),
        json!({"concurrency": 1, "queueSize": 1}),
    )
    .await;
    for i in 0..2 {
        assert_eq!(
            enqueue(&app, "stuck", json!({"input": i})).await.status(),
            202
        );
    }
    assert_eq!(
        enqueue(&app, "stuck", json!({"input": 2})).await.status(),
        429
    );
    // A deleted function leaves no series behind.
    app.local("gone").await;
    app.invoke("gone", json!({"input": 1})).await;
    assert_eq!(app.delete_function("gone").await.status(), 204);
    // A callback for an unknown execution, a runtime-config update.
    app.callback("nope", Some(1), json!({"success": true, "output": 1}))
        .await;
    let r = app
        .client
        .patch(format!("{}/v1/admin/runtime-config", app.base))
        .json(&json!({"expectedRevision": 0, "rateMaxPerSecond": 500}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    assert_golden(&app.scrape().await, GOLDEN, "prometheus_scrape.txt");
}

/// Sync-queue rejections and a queue-wait expiry: the counters that appear only once counted, and
/// a function refused before any other event has no core meters.
#[tokio::test]
async fn sync_queue_pressure_is_byte_for_byte_the_golden_text() {
    let app = TestApp::with_env(&[
        ("NANOFAAS_SYNC_QUEUE_ENABLED", "true"),
        ("SYNC_QUEUE_MAX_DEPTH", "1"),
        ("SYNC_QUEUE_ADMISSION_ENABLED", "false"),
        ("SYNC_QUEUE_MAX_QUEUE_WAIT", "150ms"),
    ])
    .await;
    let stub = Stub::start(&app.base).await;
    app.pool("f", &stub.url("/hang"), json!({"concurrency": 1}))
        .await;
    app.local("refused").await;
    let _running = app.spawn_invoke("f", &[], json!({"input": 1}));
    eventually("dispatched", || async { stub.requests().len() == 1 }).await;
    let queued = app.spawn_invoke("f", &[], json!({"input": 2}));
    eventually("one queued", || async {
        app.scrape().await.contains("sync_queue_depth 1.0")
    })
    .await;
    assert_eq!(app.invoke("f", json!({"input": 3})).await.status(), 429);
    assert_eq!(
        app.invoke("refused", json!({"input": 4})).await.status(),
        429
    );
    let (status, body) = queued.await.unwrap();
    assert_eq!(
        (status, body["error"].clone()),
        (429, json!("SYNC_QUEUE_REJECTED"))
    );
    assert_golden(
        &app.scrape().await,
        GOLDEN_SYNC_PRESSURE,
        "prometheus_scrape_sync_pressure.txt",
    );
}

fn assert_golden(scrape: &str, golden: &str, file: &str) {
    assert!(!scrape.contains("# EOF"));
    let actual = normalise(scrape);
    if actual != golden {
        // The whole text, so a reviewer sees the difference in context.
        panic!("scrape differs from tests/golden/{file}:\n{actual}");
    }
}
