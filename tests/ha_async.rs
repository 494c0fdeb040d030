//! Durable async invocations on NATS JetStream (issue 9, guarantees 2–6) with real processes:
//! control planes spawned from the built binary and SIGKILLed, a real `nats-server`
//! (tests/common/nats.rs), and the stub runtime counting dispatches per execution id and
//! concurrent requests. Each test counts what was accepted (202) and what reached a terminal
//! state; losses must be 0.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::Stub;
use common::nats::NatsServer;
use common::replica::Replica;
use serde_json::{Value, json};
use tokio::time::Instant;

/// One control-plane process on the given NATS (tests/common/replica.rs), with this suite's calls.
struct Cp(Replica);

impl std::ops::Deref for Cp {
    type Target = Replica;
    fn deref(&self) -> &Replica {
        &self.0
    }
}

impl Cp {
    async fn start(nats: &NatsServer, replica: &str) -> Cp {
        Cp(Replica::start(
            &nats.url,
            replica,
            &[("NANOFAAS_RATE_MAXPERSECOND", "100000")],
        )
        .await)
    }

    fn kill(&mut self) {
        self.0.kill();
    }

    async fn register(&self, spec: &Value) -> u16 {
        self.client
            .post(format!("{}/v1/functions", self.base))
            .json(spec)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// `:enqueue`: the status and the execution id (when 202).
    async fn enqueue(&self, name: &str, input: Value, key: Option<&str>) -> (u16, Option<String>) {
        let mut request = self
            .client
            .post(format!("{}/v1/functions/{name}:enqueue", self.base))
            .json(&json!({"input": input}));
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        match request.send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                let body: Value = r.json().await.unwrap_or(Value::Null);
                (status, body["executionId"].as_str().map(str::to_owned))
            }
            Err(_) => (0, None),
        }
    }

    async fn status(&self, id: &str) -> Option<String> {
        let r = self
            .client
            .get(format!("{}/v1/executions/{id}", self.base))
            .send()
            .await
            .ok()?;
        let body: Value = r.json().await.ok()?;
        body["status"].as_str().map(str::to_owned)
    }
}

fn pool_spec(name: &str, url: &str, concurrency: u32, queue_size: u32, timeout_ms: u64) -> Value {
    json!({
        "name": name, "image": "img", "executionMode": "POOL", "endpointUrl": url,
        "concurrency": concurrency, "queueSize": queue_size, "timeoutMs": timeout_ms,
        "maxRetries": 3
    })
}

/// Registers on the first replica; the others see it through the registry's replication, or
/// (while that is not there) get it registered too: 201 or 409 both mean "known".
async fn register_everywhere(cps: &[&Cp], spec: &Value) {
    for cp in cps {
        let status = cp.register(spec).await;
        assert!(
            status == 201 || status == 409,
            "registration answered {status}"
        );
    }
}

/// Polls every id on `cp` until all are terminal (bounded); returns the terminal states.
async fn wait_all_terminal(cp: &Cp, ids: &[String], within: Duration) -> HashMap<String, String> {
    let deadline = Instant::now() + within;
    let mut done: HashMap<String, String> = HashMap::new();
    loop {
        for id in ids {
            if done.contains_key(id) {
                continue;
            }
            if let Some(s) = cp.status(id).await
                && matches!(s.as_str(), "success" | "error" | "timeout")
            {
                done.insert(id.clone(), s);
            }
        }
        if done.len() == ids.len() || Instant::now() > deadline {
            return done;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Dispatches per execution id, with the attempts seen, from the stub's log.
fn dispatches(stub: &Stub) -> HashMap<String, Vec<u32>> {
    let mut out: HashMap<String, Vec<u32>> = HashMap::new();
    for r in stub.requests() {
        let id = r
            .headers
            .get("X-Execution-Id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let attempt = r
            .headers
            .get("X-Dispatch-Attempt")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        out.entry(id).or_default().push(attempt);
    }
    out
}

/// Enqueues `n` executions, `parallel` at a time, round-robin over `cps`; the accepted ids.
async fn enqueue_many(cps: &[&Cp], name: &str, n: usize, parallel: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    let mut i = 0;
    while i < n {
        let batch: Vec<_> = (i..(i + parallel).min(n))
            .map(|k| cps[k % cps.len()].enqueue(name, json!({"n": k}), None))
            .collect();
        for (status, id) in futures_util::future::join_all(batch).await {
            assert_eq!(status, 202, "enqueue refused");
            ids.push(id.expect("an execution id"));
        }
        i += parallel;
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_control_plane_loses_no_accepted_execution() {
    let nats = NatsServer::start().await;
    let mut first = Cp::start(&nats, "r1").await;
    let stub = Stub::start(&first.base).await;
    // 1000 executions of 100 ms, 20 at a time: ~5 s of work; the kill lands in the middle.
    let spec = pool_spec("slow", &stub.url("/track/100"), 20, 1000, 2000);
    register_everywhere(&[&first], &spec).await;
    let started = Instant::now();
    let ids = enqueue_many(&[&first], "slow", 1000, 32).await;
    let enqueue_took = started.elapsed();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before_kill = stub.requests().len();
    first.kill();
    let second = Cp::start(&nats, "r2").await;
    register_everywhere(&[&second], &spec).await;
    let done = wait_all_terminal(&second, &ids, Duration::from_secs(90)).await;
    let lost: Vec<_> = ids.iter().filter(|id| !done.contains_key(*id)).collect();
    let per_id = dispatches(&stub);
    let twice: Vec<_> = per_id.iter().filter(|(_, a)| a.len() > 1).collect();
    println!(
        "MEASURE restart: accepted {} (enqueue took {enqueue_took:?}), dispatched before kill {before_kill}, \
         terminal {}, lost {}, dispatched twice {}, in flight bound 20",
        ids.len(),
        done.len(),
        lost.len(),
        twice.len()
    );
    assert!(lost.is_empty(), "lost executions: {}", lost.len());
    assert!(
        done.values().all(|s| s == "success"),
        "all succeed: {done:?}"
    );
    let accepted: HashSet<&String> = ids.iter().collect();
    for id in &ids {
        assert!(per_id.contains_key(id), "{id} never dispatched");
    }
    // Only what was in flight at the kill runs again, and as a later attempt.
    assert!(twice.len() <= 20, "{} dispatched twice", twice.len());
    for (id, attempts) in &twice {
        assert!(accepted.contains(id));
        assert!(
            attempts.windows(2).all(|w| w[1] > w[0]),
            "{id}: {attempts:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_share_queues_callbacks_and_idempotency_keys() {
    let nats = NatsServer::start().await;
    let a = Cp::start(&nats, "a").await;
    let mut b = Cp::start(&nats, "b").await;
    let c = Cp::start(&nats, "c").await;
    let stub = Stub::start(&b.base).await;

    // Concurrency is cluster-wide: three replicas pulling never run more than 4 at once.
    let spec = pool_spec("tracked", &stub.url("/track/30"), 4, 500, 2000);
    register_everywhere(&[&a, &b, &c], &spec).await;
    let ids = enqueue_many(&[&a, &b, &c], "tracked", 300, 24).await;
    let done = wait_all_terminal(&a, &ids, Duration::from_secs(60)).await;
    assert_eq!(done.len(), ids.len());
    let highest = stub.in_flight.lock().unwrap().1;
    println!("MEASURE cluster-wide concurrency: highest {highest} of limit 4, 3 replicas");
    assert!(highest <= 4, "concurrency {highest} > 4");

    // One Idempotency-Key on two replicas: one execution.
    let (s1, id1) = a.enqueue("tracked", json!(1), Some("same-key")).await;
    let (s2, id2) = c.enqueue("tracked", json!(2), Some("same-key")).await;
    assert_eq!((s1, s2), (202, 202));
    assert_eq!(id1, id2);

    // A sync caller waiting on A is completed by a callback that lands on B.
    let spec = json!({"name": "cb", "image": "img", "executionMode": "POOL",
        "endpointUrl": stub.url("/callback-then-hang"), "timeoutMs": 10000});
    register_everywhere(&[&a, &b, &c], &spec).await;
    let t = Instant::now();
    let r = a
        .client
        .post(format!("{}/v1/functions/cb:invoke", a.base))
        .json(&json!({"input": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    println!(
        "MEASURE sync caller on A woken by a callback on B: {:?}",
        t.elapsed()
    );
    assert_eq!(body["output"], "from-callback");

    // One replica SIGKILLed mid-load: nothing accepted is lost.
    let ids = enqueue_many(&[&a, &b, &c], "tracked", 200, 24).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    b.kill();
    let done = wait_all_terminal(&a, &ids, Duration::from_secs(60)).await;
    println!(
        "MEASURE replica SIGKILL mid-load: accepted {}, terminal {}",
        ids.len(),
        done.len()
    );
    assert_eq!(done.len(), ids.len(), "lost executions");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn enqueues_during_a_nats_outage_get_503_and_nothing_accepted_is_lost() {
    let mut nats = NatsServer::start().await;
    let cp = Cp::start(&nats, "solo").await;
    let stub = Stub::start(&cp.base).await;
    // 200 executions of 50 ms, 4 at a time: ~2.5 s of work, most still queued at the kill.
    let spec = pool_spec("work", &stub.url("/track/50"), 4, 500, 2000);
    register_everywhere(&[&cp], &spec).await;
    let mut accepted = enqueue_many(&[&cp], "work", 200, 10).await;
    let dispatched_before = stub.requests().len();
    nats.kill();
    // The client notices the lost connection within a moment; from then on: 503 + Retry-After.
    // An enqueue caught in that moment waits for its publish ack up to the request timeout (5 s)
    // before its 503; under load a few can be (once: 1 refusal in 10 s), hence the margin.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut refused = 0;
    while Instant::now() < deadline && refused < 5 {
        let r = cp
            .client
            .post(format!("{}/v1/functions/work:enqueue", cp.base))
            .json(&json!({"input": "outage"}))
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            503 => {
                assert!(r.headers().get("Retry-After").is_some());
                let body: Value = r.json().await.unwrap();
                assert_eq!(body["error"], "SERVICE_UNAVAILABLE");
                refused += 1;
            }
            202 => {
                let body: Value = r.json().await.unwrap();
                accepted.push(body["executionId"].as_str().unwrap().to_owned());
            }
            other => panic!("enqueue during the outage answered {other}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(refused, 5, "enqueues during the outage were not refused");
    nats.restart().await;
    let done = wait_all_terminal(&cp, &accepted, Duration::from_secs(60)).await;
    println!(
        "MEASURE NATS outage: accepted {}, dispatched before the kill {dispatched_before}, \
         terminal {}, refused during the outage {refused}",
        accepted.len(),
        done.len()
    );
    assert_eq!(done.len(), accepted.len(), "lost executions");
}

/// `function_queue_depth` and `function_inFlight` are the cluster's on every replica: B, which
/// accepted nothing, shows the executions waiting in the stream and never more in flight than
/// the function's concurrency; both drain to 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queue_gauges_are_cluster_wide_on_every_replica() {
    let nats = NatsServer::start().await;
    let a = Cp::start(&nats, "a").await;
    let b = Cp::start(&nats, "b").await;
    let stub = Stub::start(&a.base).await;
    let spec = pool_spec("gauged", &stub.url("/track/400"), 2, 100, 5000);
    register_everywhere(&[&a, &b], &spec).await;
    let ids = enqueue_many(&[&a], "gauged", 16, 4).await;
    assert_eq!(ids.len(), 16);

    let scrape = |cp: &Cp| {
        let (client, url) = (
            cp.client.clone(),
            format!("{}/actuator/prometheus", cp.management),
        );
        async move {
            let text = client.get(url).send().await.unwrap().text().await.unwrap();
            let get = |name| common::metric_value(&text, name, "function=\"gauged\"");
            (
                get("function_queue_depth").unwrap_or(-1.0),
                get("function_inFlight").unwrap_or(-1.0),
                text,
            )
        }
    };
    let (depth, in_flight, text) = scrape(&b).await;
    println!(
        "MEASURE cluster-wide gauges on B right after 16 enqueues on A: depth {depth}, in flight {in_flight}"
    );
    assert!(depth >= 6.0, "B shows {depth} waiting");
    assert!(
        (0.0..=2.0).contains(&in_flight),
        "B shows {in_flight} in flight"
    );
    assert!(depth + in_flight <= 16.0);
    assert!(text.contains("\nnanofaas_nats_publish_errors_total 0\n"));

    wait_all_terminal(&b, &ids, Duration::from_secs(30)).await;
    let (depth, in_flight, _) = scrape(&b).await;
    assert_eq!((depth, in_flight), (0.0, 0.0));
}

/// One Idempotency-Key on sync invocations through two replicas: one execution, and every
/// request gets its answer (the winner's), also a later one on the other replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sync_idempotency_key_runs_once_across_replicas() {
    let nats = NatsServer::start().await;
    let a = Cp::start(&nats, "a").await;
    let b = Cp::start(&nats, "b").await;
    let stub = Stub::start(&a.base).await;
    let spec = json!({"name": "keyed", "image": "img", "executionMode": "POOL",
        "endpointUrl": stub.url("/script"), "timeoutMs": 10000});
    register_everywhere(&[&a, &b], &spec).await;
    let call = |cp: &Cp, n: u64| {
        let request = cp
            .client
            .post(format!("{}/v1/functions/keyed:invoke", cp.base))
            .header("Idempotency-Key", "sync-key")
            .json(&json!({"input": {"sleepMs": 400, "n": n}}));
        async move {
            let r = request.send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap())
        }
    };
    let ((sa, ba), (sb, bb)) = tokio::join!(call(&a, 1), call(&b, 2));
    assert_eq!((sa, sb), (200, 200), "{ba} {bb}");
    assert_eq!(ba["executionId"], bb["executionId"]);
    assert_eq!(ba["output"], bb["output"]);
    assert_eq!(stub.requests().len(), 1, "one execution for one key");

    // Later, on either replica: the same answer, no new dispatch.
    let (sc, bc) = call(&b, 3).await;
    let (sd, bd) = call(&a, 4).await;
    assert_eq!((sc, sd), (200, 200));
    assert_eq!(bc["executionId"], ba["executionId"]);
    assert_eq!(bd["output"], ba["output"]);
    assert_eq!(stub.requests().len(), 1);
}
