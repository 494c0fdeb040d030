//! Issue 9 end to end on a real Docker Engine: NATS JetStream (`nanofaas/nats`, the static
//! `nats-server` FROM scratch), two control-plane containers on the `nats` state backend and two
//! example-runtime containers serving POOL functions, each runtime posting its callbacks to a
//! different control plane. Async executions are enqueued on both control planes while one of
//! them is SIGKILLed (`docker kill`) mid-load; every execution that got a 202 must end in SUCCESS with its
//! own output, read through the survivor. The killed container is then started again and
//! rejoins: same registry, same execution records, takes new work.
//!
//! Harness, naming, clean-up and the skip/fail rule (Docker required when `CI=true`):
//! `tests/common/docker.rs`.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::docker::{E2e, client, cp_image, docker_ok, nats_image, runtime_image, wait_ready};
use futures::StreamExt;
use serde_json::{Value, json};

/// Executions enqueued in all, one every `PACE` (100 per second, a little faster than the
/// runtimes drain them), so the load runs for about 4 s and the kill lands in its middle.
const EXECUTIONS: usize = 400;
const PACE: Duration = Duration::from_millis(10);
/// Each execution sleeps this long in its runtime.
const RUN_MS: u64 = 200;
/// Per function, cluster-wide: 2 functions × 8 / 200 ms = 80 executions per second.
const CONCURRENCY: u32 = 8;
const FUNCTIONS: [&str; 2] = ["echo-a", "echo-b"];
/// Callbacks a control plane passed on to the replica running the execution.
const ROUTED: &str = "controlplane_callbacks_total{outcome=\"routed\"}";

/// One control-plane container and the loopback URLs Docker published for it.
struct ControlPlane {
    container: String,
    api: String,
    management: String,
}

impl ControlPlane {
    fn start(e: &E2e, role: &str, replica: &str, nats_url: &str) -> ControlPlane {
        let env = [
            "NANOFAAS_STATE_BACKEND=nats".to_owned(),
            format!("NANOFAAS_NATS_URL={nats_url}"),
            format!("NANOFAAS_REPLICA_ID={replica}"),
            "NANOFAAS_ASYNC_QUEUE_ENABLED=true".to_owned(),
            "NANOFAAS_RATE_MAX_PER_SECOND=100000".to_owned(),
        ];
        let mut args: Vec<&str> = vec!["-p", "127.0.0.1::8080", "-p", "127.0.0.1::8081"];
        for kv in &env {
            args.push("-e");
            args.push(kv);
        }
        let container = e.run(role, &args, &cp_image());
        ControlPlane::locate(e, container)
    }

    /// The published ports (they change when a container is started again).
    fn locate(e: &E2e, container: String) -> ControlPlane {
        ControlPlane {
            api: format!("http://127.0.0.1:{}", e.published(&container, 8080)),
            management: format!("http://127.0.0.1:{}", e.published(&container, 8081)),
            container,
        }
    }
}

fn pool_spec(name: &str, runtime: &str) -> Value {
    json!({
        "name": name, "image": "unused", "executionMode": "POOL",
        "endpointUrl": format!("http://{runtime}:8080/invoke"),
        "concurrency": CONCURRENCY, "queueSize": 1000, "timeoutMs": 2000, "maxRetries": 3
    })
}

/// `:enqueue` of execution `n`: its id when answered 202, else what happened.
async fn enqueue(
    http: &reqwest::Client,
    api: &str,
    function: &str,
    n: usize,
) -> Result<String, String> {
    let r = http
        .post(format!("{api}/v1/functions/{function}:enqueue"))
        .json(&json!({"input": {"sleepMs": RUN_MS, "n": n}}))
        .send()
        .await
        .map_err(|e| format!("no answer: {e}"))?;
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    match (status, body["executionId"].as_str()) {
        (202, Some(id)) => Ok(id.to_owned()),
        _ => Err(format!("{status} {body}")),
    }
}

async fn execution(http: &reqwest::Client, api: &str, id: &str) -> Option<Value> {
    let r = http
        .get(format!("{api}/v1/executions/{id}"))
        .send()
        .await
        .ok()?;
    if r.status() != 200 {
        return None;
    }
    r.json().await.ok()
}

/// Polls `ids` on `api` until every one is terminal or `within` passed; the terminal ones.
async fn wait_terminal(api: &str, ids: &[String], within: Duration) -> HashMap<String, Value> {
    let http = client();
    let deadline = Instant::now() + within;
    let mut done: HashMap<String, Value> = HashMap::new();
    while done.len() < ids.len() && Instant::now() < deadline {
        let pending = ids.iter().filter(|id| !done.contains_key(*id));
        let polled: Vec<(String, Option<Value>)> = futures::stream::iter(pending)
            .map(|id| {
                let http = &http;
                async move { (id.clone(), execution(http, api, id).await) }
            })
            .buffer_unordered(16)
            .collect()
            .await;
        for (id, exec) in polled {
            if let Some(exec) = exec
                && matches!(
                    exec["status"].as_str(),
                    Some("success" | "error" | "timeout")
                )
            {
                done.insert(id, exec);
            }
        }
        if done.len() < ids.len() {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    done
}

/// The sum of the series that start with `series` (a metric name and `{`, or a name and its
/// first labels), from one scrape.
async fn metric_sum(management: &str, series: &str) -> f64 {
    let Ok(r) = client()
        .get(format!("{management}/actuator/prometheus"))
        .send()
        .await
    else {
        return 0.0;
    };
    let text = r.text().await.unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with(series))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .fold(0.0, |sum, v| sum + v)
}

/// Waits until `api` knows `function` (the registry replicates through NATS).
async fn wait_known(api: &str, function: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = client()
            .get(format!("{api}/v1/functions/{function}"))
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            return;
        }
        assert!(Instant::now() < deadline, "{function} never reached {api}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Where one accepted execution came from.
struct Accepted {
    n: usize,
    id: String,
    function: &'static str,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_control_plane_container_killed_mid_load_loses_no_accepted_execution() {
    let Some(e) = E2e::setup(&[cp_image(), runtime_image(), nats_image()]) else {
        return;
    };
    let test_started = Instant::now();
    let nats = e.run("nats", &[], &nats_image());
    let nats_url = format!("nats://{nats}:4222");
    // rt-a posts its callbacks to cp-a (the one killed), rt-b to cp-b: a callback for an
    // execution the other replica runs is routed to it over NATS.
    let mut runtimes = Vec::new();
    for (function, role, cp) in [
        (FUNCTIONS[0], "rt-a", "cp-a"),
        (FUNCTIONS[1], "rt-b", "cp-b"),
    ] {
        let env = [
            format!("FUNCTION_NAME={function}"),
            format!(
                "CALLBACK_URL=http://{}:8080/v1/internal/executions",
                e.name(cp)
            ),
        ];
        runtimes.push(e.run(role, &["-e", &env[0], "-e", &env[1]], &runtime_image()));
    }
    let a = ControlPlane::start(&e, "cp-a", "replica-a", &nats_url);
    let b = ControlPlane::start(&e, "cp-b", "replica-b", &nats_url);
    tokio::join!(wait_ready(&a.management), wait_ready(&b.management));

    // One function registered through each replica; both replicas know both.
    for ((function, runtime), cp) in FUNCTIONS.iter().zip(&runtimes).zip([&a, &b]) {
        let r = client()
            .post(format!("{}/v1/functions", cp.api))
            .json(&pool_spec(function, runtime))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
    }
    for cp in [&a, &b] {
        for function in FUNCTIONS {
            wait_known(&cp.api, function).await;
        }
    }

    // The load: execution n goes to cp-a when n is even, to cp-b when odd, alternating the
    // functions by pairs. A request cp-a does not answer 202 (it is being killed, or dead) is
    // sent to cp-b, as a client behind a load balancer would; only 202s count as accepted.
    let accepted_so_far = Arc::new(AtomicUsize::new(0));
    let sent_to_b_instead = Arc::new(AtomicUsize::new(0));
    let load = tokio::spawn({
        let (api_a, api_b): (Arc<str>, Arc<str>) = (a.api.as_str().into(), b.api.as_str().into());
        let (accepted_so_far, sent_to_b_instead) =
            (accepted_so_far.clone(), sent_to_b_instead.clone());
        async move {
            let http = reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap();
            let mut tasks = tokio::task::JoinSet::new();
            let mut tick = tokio::time::interval(PACE);
            for n in 0..EXECUTIONS {
                tick.tick().await;
                let function = FUNCTIONS[(n / 2) % 2];
                let (http, api_a, api_b) = (http.clone(), api_a.clone(), api_b.clone());
                let (accepted_so_far, sent_to_b_instead) =
                    (accepted_so_far.clone(), sent_to_b_instead.clone());
                tasks.spawn(async move {
                    let first = if n % 2 == 0 { &api_a } else { &api_b };
                    let mut outcome = enqueue(&http, first, function, n).await;
                    if outcome.is_err() && n % 2 == 0 {
                        sent_to_b_instead.fetch_add(1, Ordering::Relaxed);
                        outcome = enqueue(&http, &api_b, function, n).await;
                    }
                    if outcome.is_ok() {
                        accepted_so_far.fetch_add(1, Ordering::Relaxed);
                    }
                    outcome
                        .map(|id| Accepted { n, id, function })
                        .map_err(|why| format!("execution {n} refused by both: {why}"))
                });
            }
            tasks.join_all().await
        }
    });

    // The kill, mid-load: once a quarter of the load is accepted, as soon as cp-a is running
    // executions (they come back to cp-b after their ack deadline); at three quarters, whatever
    // cp-a holds then.
    let deadline = Instant::now() + Duration::from_secs(20);
    let in_flight_on_a = loop {
        let accepted = accepted_so_far.load(Ordering::Relaxed);
        if accepted >= EXECUTIONS / 4 {
            let in_flight = metric_sum(&a.management, "function_inFlight{").await;
            if in_flight >= 1.0 || accepted >= EXECUTIONS * 3 / 4 {
                break in_flight;
            }
        }
        assert!(
            Instant::now() < deadline && !load.is_finished(),
            "the load ended before the kill"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let dispatched_by_a = metric_sum(&a.management, "function_dispatch_total{").await;
    let routed_by_a = metric_sum(&a.management, ROUTED).await;
    // Read before the call: the signal lands within it, and `docker kill` takes a while to
    // return (~0.1-0.5 s measured) while the load goes on.
    let accepted_at_kill = accepted_so_far.load(Ordering::Relaxed);
    let killed_at = Instant::now();
    docker_ok(&["kill", "--signal", "KILL", &a.container]);

    let outcomes = load.await.unwrap();
    let load_done_at = Instant::now();
    let refused: Vec<&String> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
    assert!(
        refused.is_empty(),
        "the surviving replica refused: {refused:?}"
    );
    // Mid-load: enqueues went on after the kill, and some of them met the dead replica.
    assert!(
        accepted_at_kill < EXECUTIONS,
        "the load was over before the kill"
    );
    assert!(
        sent_to_b_instead.load(Ordering::Relaxed) > 0,
        "no request met the dead cp-a"
    );
    let accepted: Vec<Accepted> = outcomes.into_iter().filter_map(Result::ok).collect();
    let ids: Vec<String> = accepted.iter().map(|x| x.id.clone()).collect();

    // Every accepted execution ends, read through the survivor, with its own output.
    // Expected within ~8 s: what cp-a held comes back after its ack deadline (timeoutMs + 5 s + 10 %).
    let done = wait_terminal(&b.api, &ids, Duration::from_secs(60)).await;
    let drained_after_kill = killed_at.elapsed();
    let lost: Vec<&String> = ids.iter().filter(|id| !done.contains_key(*id)).collect();
    let dispatched_by_b = metric_sum(&b.management, "function_dispatch_total{").await;
    let routed_by_b = metric_sum(&b.management, ROUTED).await;
    println!(
        "MEASURE docker HA: accepted {} ({accepted_at_kill} before the kill, {} sent to cp-b after \
         cp-a failed them), cp-a in flight at the kill {in_flight_on_a}, dispatched by cp-a before \
         the kill {dispatched_by_a}, by cp-b {dispatched_by_b}; terminal {}, lost {}; load ended \
         {:?} after the kill, all terminal {drained_after_kill:?} after it; callbacks routed to \
         the other replica: by cp-a {routed_by_a}, by cp-b {routed_by_b}",
        ids.len(),
        sent_to_b_instead.load(Ordering::Relaxed),
        done.len(),
        lost.len(),
        load_done_at - killed_at,
    );
    assert!(
        lost.is_empty(),
        "{} accepted executions lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    // A runtime's callback that lands on the replica not running the execution reaches it.
    assert!(
        routed_by_a + routed_by_b >= 1.0,
        "no callback was routed between the replicas"
    );
    assert_eq!(
        ids.len(),
        EXECUTIONS,
        "every request was accepted by one replica"
    );
    for x in &accepted {
        let exec = &done[&x.id];
        assert_eq!(exec["status"], "success", "{}: {exec}", x.id);
        assert_eq!(exec["output"]["echo"]["n"], x.n, "{}: {exec}", x.id);
        assert_eq!(exec["output"]["function"], x.function, "{}: {exec}", x.id);
    }
    // The killed container starts again (same replica id) and rejoins: it loads the registry,
    // reads the records written meanwhile, and runs new work.
    docker_ok(&["start", &a.container]);
    let a = ControlPlane::locate(&e, a.container);
    let restarted_at = Instant::now();
    wait_ready(&a.management).await;
    let rejoined_in = restarted_at.elapsed();
    let health: Value = client()
        .get(format!("{}/actuator/health", a.management))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["components"]["nats"]["status"], "UP", "{health}");
    assert_eq!(
        health["components"]["nats"]["details"]["replica"],
        "replica-a"
    );
    for function in FUNCTIONS {
        wait_known(&a.api, function).await;
    }
    let http = client();
    for x in accepted.iter().step_by(20) {
        let exec = execution(&http, &a.api, &x.id).await;
        assert_eq!(
            exec.as_ref(),
            Some(&done[&x.id]),
            "{} differs on cp-a",
            x.id
        );
    }
    let mut more = Vec::new();
    for n in EXECUTIONS..EXECUTIONS + 20 {
        let function = FUNCTIONS[n % 2];
        more.push(
            enqueue(&http, &a.api, function, n)
                .await
                .expect("cp-a accepts again"),
        );
    }
    let done_more = wait_terminal(&a.api, &more, Duration::from_secs(30)).await;
    assert_eq!(
        done_more.len(),
        more.len(),
        "work enqueued on the restarted cp-a"
    );
    assert!(
        done_more.values().all(|x| x["status"] == "success"),
        "{done_more:?}"
    );
    println!(
        "MEASURE docker HA: killed cp-a ready again {rejoined_in:?} after docker start; \
         test took {:?}",
        test_started.elapsed()
    );
}
