//! End to end: the internal autoscaler scales a container-local function from 1 to 3 replicas
//! under load and back to 1 once the load is gone, with the control plane running in-process and
//! the example runtime (`nanofaas/example-runtime:local`) in Docker. Timings are shortened
//! through configuration (poll 200 ms, cooldowns 1 s).
//!
//! Needs Docker and the image (`TAG=local scripts/build-images.sh`). Without them the test is
//! skipped, unless `CI=true`, where it fails saying what is missing.

mod common;

use std::collections::HashSet;
use std::future::Future;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{TestApp, metric_value};
use serde_json::{Value, json};

const IMAGE: &str = "nanofaas/example-runtime:local";
const FUNCTION: &str = "scaled";
const LABEL_INSTANCE: &str = "nanofaas.io/instance";

/// Runs the `docker` CLI (blocking, on the blocking pool, at most 30 s).
async fn docker(args: &[&str]) -> Result<String, String> {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let shown = args.join(" ");
    let run = tokio::task::spawn_blocking(move || Command::new("docker").args(&args).output());
    match tokio::time::timeout(Duration::from_secs(30), run).await {
        Err(_) => Err(format!("`docker {shown}` took more than 30 s")),
        Ok(Err(e)) => Err(format!("`docker {shown}` panicked: {e}")),
        Ok(Ok(Err(e))) => Err(format!("cannot run `docker {shown}`: {e}")),
        Ok(Ok(Ok(out))) if out.status.success() => {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        }
        Ok(Ok(Ok(out))) => Err(format!(
            "`docker {shown}` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}

/// Why the test cannot run here, if it cannot.
async fn missing_prerequisite() -> Option<String> {
    if let Err(e) = docker(&["version", "--format", "{{.Server.Version}}"]).await {
        return Some(format!("Docker is not usable: {e}"));
    }
    if docker(&["image", "inspect", "--format", "{{.Id}}", IMAGE])
        .await
        .is_err()
    {
        return Some(format!(
            "image {IMAGE} is missing; build it with `TAG=local scripts/build-images.sh`"
        ));
    }
    None
}

/// Removes every container of the instance, also when the test fails.
struct Cleanup {
    instance: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let filter = format!("label={LABEL_INSTANCE}={}", self.instance);
        let ids = Command::new("docker")
            .args(["ps", "-aq", "--filter", &filter])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let _ = Command::new("docker")
                .arg("rm")
                .arg("-f")
                .args(&ids)
                .output();
        }
    }
}

/// Containers of the instance: the running ones, or all of them (also stopped) when `all`.
async fn running(instance: &str, all: bool) -> usize {
    let filter = format!("label={LABEL_INSTANCE}={instance}");
    let mut args = vec!["ps", "-q", "--filter", &filter];
    if all {
        args[1] = "-aq";
    }
    docker(&args)
        .await
        .expect("listing containers")
        .split_whitespace()
        .count()
}

/// Polls `check` every 100 ms until it holds, for at most `limit`.
async fn wait_for<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn enqueue(app: &TestApp, sleep_ms: u64) -> String {
    let r = app
        .client
        .post(format!("{}/v1/functions/{FUNCTION}:enqueue", app.base))
        .json(&json!({"input": {"sleepMs": sleep_ms}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "enqueue");
    r.json::<Value>().await.unwrap()["executionId"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn function_scales_up_under_load_and_back_down_after_the_cooldown() {
    if let Some(reason) = missing_prerequisite().await {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("autoscaler e2e cannot run on CI: {reason}");
        }
        eprintln!("skipping autoscaler e2e: {reason}");
        return;
    }
    let started = Instant::now();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let instance = format!("as-e2e-{}-{nanos}", std::process::id());
    let _cleanup = Cleanup {
        instance: instance.clone(),
    };
    let mut app = TestApp::with_env(&[
        ("NANOFAAS_DEPLOYMENT_DEFAULT_BACKEND", "container-local"),
        ("NANOFAAS_CONTAINER_LOCAL_INSTANCE", &instance),
        ("NANOFAAS_ASYNC_QUEUE_ENABLED", "true"),
        ("NANOFAAS_AUTOSCALER_ENABLED", "true"),
        ("NANOFAAS_SCALING_POLL_INTERVAL_MS", "200"),
        ("NANOFAAS_SCALING_SCALE_UP_COOLDOWN", "1s"),
        ("NANOFAAS_SCALING_SCALE_DOWN_COOLDOWN", "1s"),
    ])
    .await;

    let registered = app
        .register(json!({
            "name": FUNCTION,
            "image": IMAGE,
            "concurrency": 32,
            "queueSize": 100,
            "scalingConfig": {"minReplicas": 1, "maxReplicas": 3,
                              "metrics": [{"type": "in_flight", "target": "1"}]}
        }))
        .await;
    let status = registered.status();
    let body = registered.text().await.unwrap_or_default();
    assert_eq!(status, 201, "registration failed: {body}");
    assert_eq!(running(&instance, false).await, 1, "one replica at start");
    let scrape = app.scrape().await;
    assert_eq!(
        metric_value(
            &scrape,
            "gateway_service_target_load",
            &format!("function=\"{FUNCTION}\",scaling_type=\"capacity\"")
        ),
        Some(1.0),
        "target-load gauge"
    );

    // Load: 12 executions of 3 s each are in flight on the single replica → ratio 12.
    let mut ids = Vec::new();
    for _ in 0..12 {
        ids.push(enqueue(&app, 3000).await);
    }
    wait_for("3 replicas", Duration::from_secs(30), || async {
        running(&instance, false).await == 3
    })
    .await;
    let scaled_up_after = started.elapsed();

    // New work is spread over the new replicas.
    let mut late = Vec::new();
    for _ in 0..6 {
        late.push(enqueue(&app, 100).await);
    }
    let mut outputs = Vec::new();
    for id in ids.iter().chain(&late) {
        wait_for(
            &format!("execution {id}"),
            Duration::from_secs(30),
            || async { app.execution(id).await.1["status"] == "success" },
        )
        .await;
        outputs.push(app.execution(id).await.1["output"].clone());
    }
    let served_by: HashSet<String> = outputs[ids.len()..]
        .iter()
        .filter_map(|o| o["replica"].as_str().map(str::to_owned))
        .collect();
    assert!(
        served_by.len() >= 2,
        "later executions served by more than one replica: {served_by:?}"
    );

    // No load: back to minReplicas once the scale-down cooldown allows.
    wait_for("1 replica", Duration::from_secs(30), || async {
        running(&instance, false).await == 1
    })
    .await;
    let scaled_down_after = started.elapsed();
    assert_eq!(
        app.metric("function_effective_concurrency", FUNCTION).await,
        Some(32.0)
    );

    // Delete: the containers go, and so does the gauge.
    let r = app
        .client
        .delete(format!("{}/v1/functions/{FUNCTION}", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    wait_for("no container left", Duration::from_secs(30), || async {
        running(&instance, true).await == 0
    })
    .await;
    assert!(
        !app.scrape().await.contains(&format!(
            "gateway_service_target_load{{function=\"{FUNCTION}\""
        )),
        "target-load gauge removed"
    );
    eprintln!(
        "autoscaler e2e: 3 replicas after {scaled_up_after:?}, back to 1 after \
         {scaled_down_after:?}, total {:?}",
        started.elapsed()
    );
    let server = app.begin_shutdown();
    tokio::time::timeout(Duration::from_secs(20), server)
        .await
        .expect("shutdown in time")
        .unwrap()
        .unwrap();
}
