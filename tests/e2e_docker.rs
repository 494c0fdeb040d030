//! End-to-end tests on a real Docker Engine: the control plane and the example runtime as
//! FROM-scratch images (`scripts/build-images.sh`), POOL functions in runtime containers,
//! DEPLOYMENT functions on the container-local backend, callbacks across containers, timeouts, a
//! runtime killed mid-flight, scaling under load, and the control plane on the host.
//!
//! Each test creates its own network and containers, labelled with a unique id, and removes
//! exactly those. Without Docker or the images the tests fail when `CI=true` and skip otherwise.
//! Traffic stays on loopback (published ports bound to 127.0.0.1) and the networks made here.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::docker::{E2e, client, cp_image, docker_ok, runtime_image, wait_ready};
use serde_json::{Value, json};

async fn post(url: String, body: Value) -> (u16, Value) {
    let r = client().post(url).json(&body).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn wait_status(api: &str, id: &str, want: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let exec: Value = client()
            .get(format!("{api}/v1/executions/{id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if exec["status"] == want {
            return exec;
        }
        assert!(
            Instant::now() < deadline,
            "{id} never reached {want}: {exec}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_in_a_container_runs_pool_and_deployment_functions() {
    let Some(e) = E2e::setup(&[cp_image(), runtime_image()]) else {
        return;
    };
    let cp_name = e.name("cp");
    let callback = format!("CALLBACK_URL=http://{cp_name}:8080/v1/internal/executions");
    let rt = e.run("rt", &["-e", &callback], &runtime_image());
    let fragile = e.run("fragile", &[], &runtime_image());
    let gid = std::fs::metadata("/var/run/docker.sock")
        .map(|m| std::os::unix::fs::MetadataExt::gid(&m).to_string())
        .unwrap_or_else(|_| "0".to_owned());
    let env = [
        "NANOFAAS_DEPLOYMENT_DEFAULT_BACKEND=container-local".to_owned(),
        format!("NANOFAAS_CONTAINER_LOCAL_NETWORK={}", e.network),
        format!("NANOFAAS_CONTAINER_LOCAL_INSTANCE={}", e.id),
        format!(
            "NANOFAAS_CONTAINER_LOCAL_CALLBACK_URL=http://{cp_name}:8080/v1/internal/executions"
        ),
        "NANOFAAS_ASYNC_QUEUE_ENABLED=true".to_owned(),
    ];
    let mut args: Vec<&str> = vec![
        "-v",
        "/var/run/docker.sock:/var/run/docker.sock",
        "--group-add",
        &gid,
        "-p",
        "127.0.0.1::8080",
        "-p",
        "127.0.0.1::8081",
    ];
    for kv in &env {
        args.push("-e");
        args.push(kv);
    }
    let cp = e.run("cp", &args, &cp_image());
    let api = format!("http://127.0.0.1:{}", e.published(&cp, 8080));
    let management = format!("http://127.0.0.1:{}", e.published(&cp, 8081));
    wait_ready(&management).await;

    // POOL function in a runtime container, reached by name on the test network.
    let (status, f) = post(
        format!("{api}/v1/functions"),
        json!({"name":"pool","image":"unused","executionMode":"POOL","endpointUrl": format!("http://{rt}:8080/invoke")}),
    )
    .await;
    assert_eq!(status, 201, "{f}");
    let (status, body) = post(
        format!("{api}/v1/functions/pool:invoke"),
        json!({"input": {"hello": "world"}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "success");
    assert_eq!(body["output"]["echo"], json!({"hello": "world"}));

    // Async: enqueue, then poll.
    let (status, queued) = post(
        format!("{api}/v1/functions/pool:enqueue"),
        json!({"input": "async"}),
    )
    .await;
    assert_eq!(status, 202);
    let exec = wait_status(&api, queued["executionId"].as_str().unwrap(), "success").await;
    assert_eq!(exec["output"]["echo"], "async");

    // Callbacks from the runtime container reach the control plane by name.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let scrape = client()
            .get(format!("{management}/actuator/prometheus"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let delivered = scrape
            .lines()
            .filter(|l| l.starts_with("controlplane_callbacks_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
        if delivered >= 2.0 {
            break;
        }
        assert!(Instant::now() < deadline, "no callbacks arrived:\n{scrape}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A wait shorter than the function is a 408.
    let r = client()
        .post(format!("{api}/v1/functions/pool:invoke"))
        .header("X-Timeout-Ms", "300")
        .json(&json!({"input": {"sleepMs": 1500}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 408);
    // A failing function is an error result: from its 500 reply (POOL_ERROR) or from its error
    // callback (HANDLER_ERROR), whichever reaches the control plane first.
    let (status, body) = post(
        format!("{api}/v1/functions/pool:invoke"),
        json!({"input": {"fail": "boom"}}),
    )
    .await;
    assert_eq!((status, body["status"].clone()), (200, json!("error")));
    let code = body["error"]["code"].as_str().unwrap_or("");
    assert!(code == "POOL_ERROR" || code == "HANDLER_ERROR", "{body}");

    // DEPLOYMENT on the container-local backend.
    let (status, f) = post(
        format!("{api}/v1/functions"),
        json!({"name":"dep","image": runtime_image(),"scalingConfig":{"minReplicas":1,"maxReplicas":5}}),
    )
    .await;
    assert_eq!(status, 201, "{f}");
    assert_eq!(f["effectiveExecutionMode"], "DEPLOYMENT");
    assert_eq!(f["deploymentBackend"], "container-local");
    assert_eq!(e.managed("dep").len(), 1);
    let (status, body) = post(
        format!("{api}/v1/functions/dep:invoke"),
        json!({"input": 1}),
    )
    .await;
    assert_eq!(
        (status, body["status"].clone()),
        (200, json!("success")),
        "{body}"
    );

    // Scale up: invocations spread over the replicas.
    let r = client()
        .put(format!("{api}/v1/functions/dep/replicas"))
        .json(&json!({"replicas": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"function":"dep","replicas":3})
    );
    assert_eq!(e.managed("dep").len(), 3);
    let mut replicas = std::collections::HashSet::new();
    for i in 0..9 {
        let (_, body) = post(
            format!("{api}/v1/functions/dep:invoke"),
            json!({"input": i}),
        )
        .await;
        replicas.insert(body["output"]["replica"].as_str().unwrap_or("").to_owned());
    }
    assert_eq!(replicas.len(), 3, "{replicas:?}");

    // Scale down under load: every invocation still succeeds.
    let load = (0..30).map(|i| {
        let api = api.clone();
        tokio::spawn(async move {
            post(
                format!("{api}/v1/functions/dep:invoke"),
                json!({"input": {"sleepMs": 200, "i": i}}),
            )
            .await
        })
    });
    let load: Vec<_> = load.collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r = client()
        .put(format!("{api}/v1/functions/dep/replicas"))
        .json(&json!({"replicas": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    for handle in load {
        let (status, body) = handle.await.unwrap();
        assert_eq!(
            (status, body["status"].clone()),
            (200, json!("success")),
            "{body}"
        );
    }
    assert_eq!(e.managed("dep").len(), 1);

    // An image the engine does not have.
    let (status, body) = post(
        format!("{api}/v1/functions"),
        json!({"name":"ghost","image":"nanofaas/does-not-exist:never"}),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"], "IMAGE_NOT_FOUND");

    // A runtime killed mid-flight: the invocation ends, nothing hangs.
    post(
        format!("{api}/v1/functions"),
        json!({"name":"fragile","image":"unused","executionMode":"POOL","maxRetries":1,
               "endpointUrl": format!("http://{fragile}:8080/invoke")}),
    )
    .await;
    let started = Instant::now();
    let call = tokio::spawn({
        let api = api.clone();
        async move {
            post(
                format!("{api}/v1/functions/fragile:invoke"),
                json!({"input": {"sleepMs": 5000}}),
            )
            .await
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    docker_ok(&["kill", &fragile]);
    let (status, body) = call.await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the caller waited for a dead runtime"
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "error");
    assert_eq!(body["error"]["code"], "POOL_ERROR");

    // Delete removes every container of the function.
    let r = client()
        .delete(format!("{api}/v1/functions/dep"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert!(e.managed("dep").is_empty());

    // The image's HEALTHCHECK (the binary's own `healthcheck` subcommand) reports healthy.
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let health = docker_ok(&["inspect", "-f", "{{.State.Health.Status}}", &cp]);
        if health == "healthy" {
            break;
        }
        assert!(Instant::now() < deadline, "container health: {health}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_on_the_host_runs_deployment_functions_and_cleans_up_on_shutdown() {
    let Some(e) = E2e::setup(&[cp_image(), runtime_image()]) else {
        return;
    };
    let mut cp = Command::new(env!("CARGO_BIN_EXE_nanofaas-control-plane"))
        .env_clear()
        .env("SERVER_PORT", "0")
        .env("MANAGEMENT_SERVER_PORT", "0")
        .env("NANOFAAS_DEPLOYMENT_DEFAULT_BACKEND", "container-local")
        .env("NANOFAAS_CONTAINER_LOCAL_INSTANCE", &e.id)
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = cp.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let (api_port, mgmt_port) = loop {
        let line = lines
            .next()
            .expect("control plane printed nothing")
            .unwrap();
        if let Some(rest) = line.split("api=").nth(1) {
            let port = |s: &str| {
                s.split_whitespace()
                    .next()
                    .unwrap()
                    .rsplit(':')
                    .next()
                    .unwrap()
                    .parse::<u16>()
                    .unwrap()
            };
            let api = port(rest);
            let mgmt = port(line.split("management=").nth(1).unwrap());
            break (api, mgmt);
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let api = format!("http://127.0.0.1:{api_port}");
    wait_ready(&format!("http://127.0.0.1:{mgmt_port}")).await;

    let (status, f) = post(
        format!("{api}/v1/functions"),
        json!({"name":"hostfn","image": runtime_image()}),
    )
    .await;
    assert_eq!(status, 201, "{f}");
    assert!(
        f["endpointUrl"]
            .as_str()
            .unwrap()
            .starts_with("http://127.0.0.1:"),
        "{f}"
    );
    let (status, body) = post(
        format!("{api}/v1/functions/hostfn:invoke"),
        json!({"input": "on the host"}),
    )
    .await;
    assert_eq!(
        (status, body["output"]["echo"].clone()),
        (200, json!("on the host")),
        "{body}"
    );
    assert_eq!(e.managed("hostfn").len(), 1);

    // Graceful stop removes the containers this control plane started.
    let killed = Command::new("kill")
        .args(["-TERM", &cp.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = cp.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(e.managed("hostfn").is_empty());
}
