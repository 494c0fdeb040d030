//! Dead letters and retry backoff on the NATS backend (issue 11) with real control-plane
//! processes on a real `nats-server` (tests/common/nats.rs): a dead letter survives a SIGKILL of
//! the replica that recorded it, is listed the same from every replica, and is re-driven from
//! another one; a delayed retry waits in JetStream, holding no place of the concurrency.

mod common;

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
    async fn start(nats: &NatsServer, replica: &str, env: &[(&str, &str)]) -> Cp {
        Cp(Replica::start(&nats.url, replica, env).await)
    }

    fn kill(&mut self) {
        self.0.kill();
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> (u16, Value) {
        let r = request.send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.send(self.client.get(format!("{}{path}", self.base)))
            .await
    }

    async fn post(&self, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self.client.post(format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(&body);
        }
        self.send(request).await
    }

    async fn register_pool(&self, name: &str, url: &str, extra: Value) {
        let mut spec =
            json!({"name": name, "image": "img", "executionMode": "POOL", "endpointUrl": url});
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        assert_eq!(self.post("/v1/functions", Some(spec)).await.0, 201);
    }

    async fn enqueue(&self, name: &str, input: Value) -> String {
        let (status, body) = self
            .post(
                &format!("/v1/functions/{name}:enqueue"),
                Some(json!({ "input": input })),
            )
            .await;
        assert_eq!(status, 202, "{body}");
        body["executionId"].as_str().unwrap().to_owned()
    }

    /// Waits (bounded) until the execution has `status` here.
    async fn wait_for(&self, id: &str, status: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (_, body) = self.get(&format!("/v1/executions/{id}")).await;
            if body["status"] == status {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{id} never became {status}: {body}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits (bounded) until this replica knows the function as registered with `url`.
    async fn wait_for_function(&self, name: &str, url: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.get(&format!("/v1/functions/{name}")).await.1["endpointUrl"] != url {
            assert!(
                Instant::now() < deadline,
                "{name} never reached this replica"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every dead letter of `name`, following the cursor with pages of `limit`.
    async fn dead_letters(&self, name: &str, limit: usize) -> (Vec<String>, usize) {
        let (mut ids, mut pages) = (Vec::new(), 0);
        let mut query = format!("limit={limit}");
        loop {
            let (status, page) = self
                .get(&format!("/v1/functions/{name}/executions?{query}"))
                .await;
            assert_eq!(status, 200, "{page}");
            pages += 1;
            for item in page["items"].as_array().unwrap() {
                assert_eq!(item["status"], "error");
                ids.push(item["executionId"].as_str().unwrap().to_owned());
            }
            match page["nextCursor"].as_str() {
                Some(cursor) => query = format!("limit={limit}&after={cursor}"),
                None => return (ids, pages),
            }
        }
    }
}

#[tokio::test]
async fn dead_letters_survive_a_restart_and_are_re_driven_from_another_replica() {
    let nats = NatsServer::start().await;
    let mut a = Cp::start(&nats, "a", &[]).await;
    let b = Cp::start(&nats, "b", &[]).await;
    let stub = Stub::start("http://127.0.0.1:1").await;
    let failing = stub.url("/switch");
    // One attempt each, one at a time cluster-wide: they become dead letters in order.
    a.register_pool("f", &failing, json!({"maxRetries": 1, "concurrency": 1}))
        .await;
    b.wait_for_function("f", &failing).await;
    let mut dead = Vec::new();
    for n in 0..3 {
        let id = a.enqueue("f", json!({"n": n})).await;
        a.wait_for(&id, "error").await;
        dead.push(id);
    }
    let newest_first: Vec<String> = dead.iter().rev().cloned().collect();
    assert_eq!(b.dead_letters("f", 50).await, (newest_first.clone(), 1));

    // The replica that recorded them dies; they are still listed, by every replica, after it
    // comes back too.
    a.kill();
    assert_eq!(b.dead_letters("f", 2).await, (newest_first.clone(), 2));
    let a = Cp::start(&nats, "a", &[]).await;
    assert_eq!(a.dead_letters("f", 1).await.0, newest_first);
    let (status, timeouts) = a.get("/v1/functions/f/executions?status=timeout").await;
    assert_eq!((status, timeouts["items"].clone()), (200, json!([])));

    // The runtime is fixed, and the oldest dead letter is re-driven through b: a new execution,
    // the same input, run by whichever replica pulls it.
    stub.failing
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let (status, answer) = b
        .post(&format!("/v1/executions/{}:redrive", dead[0]), None)
        .await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["status"], "queued");
    let new = answer["executionId"].as_str().unwrap().to_owned();
    assert_ne!(new, dead[0]);
    a.wait_for(&new, "success").await;
    assert_eq!(
        a.get(&format!("/v1/executions/{new}")).await.1["output"],
        json!({"echo": {"n": 0}})
    );
    let sent: Vec<Value> = stub
        .requests()
        .into_iter()
        .filter(|r| r.header("X-Execution-Id") == new)
        .map(|r| r.body)
        .collect();
    assert_eq!(sent, [json!({"input": {"n": 0}, "metadata": null})]);
    // Not a dead letter: 409 from either replica; an unknown id: 404.
    assert_eq!(
        a.post(&format!("/v1/executions/{new}:redrive"), None)
            .await
            .0,
        409
    );
    assert_eq!(b.post("/v1/executions/nope:redrive", None).await.0, 404);
}

#[tokio::test]
async fn on_nats_a_delayed_retry_waits_in_jetstream_without_holding_the_concurrency() {
    let nats = NatsServer::start().await;
    let backoff = [
        ("NANOFAAS_RETRY_BACKOFF_INITIAL", "1ms"),
        ("NANOFAAS_RETRY_BACKOFF_MAX", "10s"),
    ];
    let a = Cp::start(&nats, "a", &backoff).await;
    let b = Cp::start(&nats, "b", &backoff).await;
    let stub = Stub::start("http://127.0.0.1:1").await;
    let url = stub.url("/script");
    // Concurrency 1 cluster-wide.
    a.register_pool("f", &url, json!({"concurrency": 1})).await;
    b.wait_for_function("f", &url).await;
    let first = a.enqueue("f", json!({"retryAfterFirst": 2})).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while stub.requests().is_empty() {
        assert!(Instant::now() < deadline, "attempt 1 never came");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // While the first waits out the 2 s the runtime asked for, the second runs.
    let second = b.enqueue("f", json!({"n": 2})).await;
    a.wait_for(&second, "success").await;
    b.wait_for(&first, "success").await;
    let log: Vec<(String, String)> = stub
        .requests()
        .into_iter()
        .map(|r| {
            (
                r.header("X-Execution-Id").to_owned(),
                r.header("X-Dispatch-Attempt").to_owned(),
            )
        })
        .collect();
    let pair = |id: &str, attempt: &str| (id.to_owned(), attempt.to_owned());
    assert_eq!(
        log,
        [pair(&first, "1"), pair(&second, "1"), pair(&first, "2")]
    );
    let requests = stub.requests();
    let gap = requests[2].at - requests[0].at;
    assert!(gap >= Duration::from_secs(2), "{gap:?}");
    assert_eq!(requests[2].body["input"], json!({"retryAfterFirst": 2}));
    assert_eq!(
        a.get(&format!("/v1/executions/{first}")).await.1["output"]["attempt"],
        "2"
    );
}
