//! Several control-plane replicas on one real `nats-server` (NANOFAAS_STATE_BACKEND=nats):
//! the shared registry (docs/ha.md, guarantee 1), start-up and broker faults (guarantee 7).
//! Replicas are in-process apps on port 0; the start-up failure is also checked on the real
//! binary, whose exit code and message are what an operator sees.

mod common;

use std::time::Duration;

use common::nats::NatsServer;
use common::{Stub, TestApp, eventually};
use serde_json::{Value, json};
use tokio::time::Instant;

async fn replica(nats: &NatsServer) -> TestApp {
    replica_with(nats, &[]).await
}

async fn replica_with(nats: &NatsServer, extra: &[(&str, &str)]) -> TestApp {
    let mut env = vec![
        ("NANOFAAS_STATE_BACKEND", "nats"),
        ("NANOFAAS_NATS_URL", nats.url.as_str()),
        ("NANOFAAS_NATS_CONNECT_TIMEOUT", "10s"),
    ];
    env.extend_from_slice(extra);
    let app = TestApp::with_env(&env).await;
    wait_ready(&app).await;
    app
}

async fn readiness(app: &TestApp) -> u16 {
    app.client
        .get(format!("{}/actuator/health/readiness", app.management))
        .send()
        .await
        .map_or(0, |r| r.status().as_u16())
}

async fn wait_ready(app: &TestApp) {
    eventually("readiness UP", || async { readiness(app).await == 200 }).await;
}

async fn health(app: &TestApp) -> (u16, Value) {
    let r = app
        .client
        .get(format!("{}/actuator/health", app.management))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn nats_status(app: &TestApp) -> String {
    let (_, body) = health(app).await;
    body["components"]["nats"]["status"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

async fn status_of_function(app: &TestApp, name: &str) -> u16 {
    app.get_json(&format!("/v1/functions/{name}")).await.0
}

fn pool_spec(name: &str, url: &str) -> Value {
    json!({"name": name, "image": "img", "executionMode": "POOL", "endpointUrl": url})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_registered_on_one_replica_is_visible_on_all_and_a_delete_anywhere_removes_it() {
    let nats = NatsServer::start().await;
    let (a, b, c) = tokio::join!(replica(&nats), replica(&nats), replica(&nats));
    let stub = Stub::start(&a.base).await;

    // Propagation delay: from the 201 on A to the first 200 on B (B polled every millisecond).
    let mut delays = Vec::new();
    for i in 0..20 {
        let name = format!("fn-{i}");
        a.register_ok(pool_spec(&name, &stub.url("/reply"))).await;
        let registered = Instant::now();
        loop {
            if status_of_function(&b, &name).await == 200 {
                break;
            }
            assert!(
                registered.elapsed() < Duration::from_secs(5),
                "{name} not visible on B within 5 s"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        delays.push(registered.elapsed());
    }
    delays.sort();
    println!(
        "propagation register(A) -> visible(B): p50 {:?}, max {:?} over {} registrations",
        delays[delays.len() / 2],
        delays[delays.len() - 1],
        delays.len()
    );

    for app in [&a, &b, &c] {
        eventually("every function on every replica", || async {
            let (_, list) = app.get_json("/v1/functions").await;
            list.as_array().map_or(0, Vec::len) == 20
        })
        .await;
    }
    // The record carries the registration as registered: the same answer on every replica.
    let on_a = a.get_json("/v1/functions/fn-3").await.1;
    assert_eq!(c.get_json("/v1/functions/fn-3").await.1, on_a);

    // A function adopted from the catalog runs: a sync invocation through C reaches the stub.
    let r = c.invoke("fn-3", json!({"input": {"via": "c"}})).await;
    assert_eq!(r.status(), 200);

    // Deleted through B: gone on A and C too; a second delete anywhere is 404.
    assert_eq!(b.delete_function("fn-3").await.status(), 204);
    for app in [&a, &c] {
        eventually("fn-3 gone", || async {
            status_of_function(app, "fn-3").await == 404
        })
        .await;
    }
    assert_eq!(a.delete_function("fn-3").await.status(), 404);

    // Racing deletes of one function on two replicas: exactly one succeeds.
    let (x, y) = tokio::join!(a.delete_function("fn-4"), c.delete_function("fn-4"));
    let mut codes = [x.status().as_u16(), y.status().as_u16()];
    codes.sort();
    assert_eq!(codes, [204, 404]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_registrations_of_one_name_give_one_201_and_one_409() {
    let nats = NatsServer::start().await;
    let (a, b) = tokio::join!(replica(&nats), replica(&nats));
    for i in 0..10 {
        let name = format!("race-{i}");
        let (x, y) = tokio::join!(
            a.register(pool_spec(&name, "http://127.0.0.1:9/a")),
            b.register(pool_spec(&name, "http://127.0.0.1:9/b"))
        );
        let mut codes = [x.status().as_u16(), y.status().as_u16()];
        codes.sort();
        assert_eq!(codes, [201, 409], "{name}");
        // Both replicas end with the winner's registration.
        let winner = if x.status() == 201 { "/a" } else { "/b" };
        for app in [&a, &b] {
            eventually("the winner everywhere", || async {
                let (code, body) = app.get_json(&format!("/v1/functions/{name}")).await;
                code == 200
                    && body["endpointUrl"]
                        .as_str()
                        .is_some_and(|u| u.ends_with(winner))
            })
            .await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_of_every_replica_keeps_every_function() {
    let nats = NatsServer::start().await;
    let (mut a, mut b) = tokio::join!(replica(&nats), replica(&nats));
    for i in 0..5 {
        let app = if i % 2 == 0 { &a } else { &b };
        app.register_ok(pool_spec(&format!("keep-{i}"), "http://127.0.0.1:9/x"))
            .await;
    }
    a.local("keep-local").await;
    let (x, y) = (a.begin_shutdown(), b.begin_shutdown());
    x.await.unwrap().unwrap();
    y.await.unwrap().unwrap();

    let c = replica(&nats).await;
    let (_, list) = c.get_json("/v1/functions").await;
    let mut names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "keep-0",
            "keep-1",
            "keep-2",
            "keep-3",
            "keep-4",
            "keep-local"
        ]
    );
    let r = c.invoke("keep-local", json!({"input": 1})).await;
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_unreachable_at_start_keeps_readiness_down_then_serve_fails_with_the_url() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("nats://127.0.0.1:{port}");
    let mut app = TestApp::with_env(&[
        ("NANOFAAS_STATE_BACKEND", "nats"),
        ("NANOFAAS_NATS_URL", url.as_str()),
        ("NANOFAAS_NATS_CONNECT_TIMEOUT", "2s"),
    ])
    .await;
    // The ports answer while start-up retries: not ready, the nats component DOWN.
    assert_eq!(readiness(&app).await, 503);
    let (code, body) = health(&app).await;
    assert_eq!(code, 503);
    assert_eq!(body["status"], "DOWN");
    assert_eq!(body["components"]["nats"]["status"], "DOWN");
    assert_eq!(body["components"]["nats"]["details"]["url"], url.as_str());
    // Registration before the registry is loaded: 503 with Retry-After.
    let r = app
        .register(pool_spec("early", "http://127.0.0.1:9/x"))
        .await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));

    let started = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(15), app.server.take().unwrap())
        .await
        .expect("serve ends after the connect bound")
        .unwrap();
    let message = format!("{:#}", result.expect_err("serve fails"));
    assert!(message.contains("not reachable within"), "{message}");
    assert!(message.contains(&url), "{message}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_exits_non_zero_with_a_clear_message_when_nats_never_answers() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("nats://127.0.0.1:{port}");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_nanofaas-control-plane"))
        .env("SERVER_ADDRESS", "127.0.0.1")
        .env("SERVER_PORT", "0")
        .env("MANAGEMENT_SERVER_ADDRESS", "127.0.0.1")
        .env("MANAGEMENT_SERVER_PORT", "0")
        .env("NANOFAAS_STATE_BACKEND", "nats")
        .env("NANOFAAS_NATS_URL", &url)
        .env("NANOFAAS_NATS_CONNECT_TIMEOUT", "2s")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let waiting = tokio::task::spawn_blocking(move || child.wait_with_output());
    let out = match tokio::time::timeout(Duration::from_secs(20), waiting).await {
        Ok(out) => out.unwrap().unwrap(),
        Err(_) => {
            // SAFETY: signalling the child this test started, by its PID.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("the process did not exit by itself within 20 s");
        }
    };
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("NATS at {url} not reachable within 2s")),
        "{stderr}"
    );
    // Each failed attempt was logged with the URL.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("connecting to NATS"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_lost_while_running_shows_down_refuses_registration_and_keeps_sync_invocations() {
    let mut nats = NatsServer::start().await;
    let a = replica(&nats).await;
    let stub = Stub::start(&a.base).await;
    a.pool("known", &stub.url("/reply"), json!({})).await;
    assert_eq!(nats_status(&a).await, "UP");
    assert_eq!(health(&a).await.0, 200);

    let scrape = a.scrape().await;
    assert!(scrape.contains("nanofaas_nats_connected 1.0"), "{scrape}");
    nats.kill();
    eventually("nats component DOWN", || async {
        nats_status(&a).await == "DOWN"
    })
    .await;
    let scrape = a.scrape().await;
    assert!(scrape.contains("nanofaas_nats_connected 0.0"), "{scrape}");
    assert!(
        scrape.contains("nanofaas_nats_disconnects_total 1"),
        "{scrape}"
    );
    // Readiness stays UP: a broker outage must not take every replica out of the Service.
    assert_eq!(readiness(&a).await, 200);
    let r = a.register(pool_spec("late", &stub.url("/reply"))).await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "2");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "SERVICE_UNAVAILABLE");
    assert_eq!(a.delete_function("known").await.status(), 503);
    for i in 0..5 {
        let r = a.invoke("known", json!({"input": i})).await;
        assert_eq!(r.status(), 200, "sync invoke during the outage");
    }

    nats.restart().await;
    eventually("nats component UP", || async {
        nats_status(&a).await == "UP"
    })
    .await;
    let b = replica(&nats).await;
    a.register_ok(pool_spec("late", &stub.url("/reply"))).await;
    eventually("late visible on a new replica", || async {
        status_of_function(&b, "late").await == 200
    })
    .await;
    assert_eq!(status_of_function(&b, "known").await, 200);
}

#[tokio::test]
async fn an_adopting_replica_calls_the_runtime_with_the_endpoints_credentials_and_shows_them_masked()
 {
    let nats = NatsServer::start().await;
    let (a, b) = tokio::join!(replica(&nats), replica(&nats));
    let stub = Stub::start(&a.base).await;
    let url = stub
        .url("/reply")
        .replacen("http://", "http://alice:s3cret@", 1);
    a.register_ok(pool_spec("secret", &url)).await;
    eventually("B adopts the function", || async {
        status_of_function(&b, "secret").await == 200
    })
    .await;
    let (status, shown) = b.get_json("/v1/functions/secret").await;
    assert_eq!(status, 200);
    let shown = shown["endpointUrl"].as_str().unwrap().to_owned();
    assert!(!shown.contains("s3cret"), "{shown}");
    assert!(shown.contains("***"), "{shown}");
    let r = b.invoke("secret", json!({"input": 1})).await;
    assert_eq!(r.status(), 200);
    let received = stub.requests();
    let auth = received
        .last()
        .and_then(|r| r.headers.get("authorization"))
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    // alice:s3cret, base64.
    assert_eq!(auth.as_deref(), Some("Basic YWxpY2U6czNjcmV0"));
}
