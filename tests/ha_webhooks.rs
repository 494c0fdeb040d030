//! Result webhooks and trace context on the NATS backend with real processes (issue 11): the
//! replica that accepts `:enqueue` is SIGKILLed before the work is done; the replica that
//! finishes it posts the result, with the callback URL and trace context it found in the shared
//! record. Modelled on tests/ha_async.rs.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::Stub;
use common::nats::NatsServer;
use common::receiver::Receiver;
use common::replica::Replica;
use serde_json::{Value, json};
use tokio::time::Instant;

const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

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
        let env = [
            (
                "NANOFAAS_WEBHOOK_SECRET",
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            ),
            ("NANOFAAS_WEBHOOK_BACKOFF_INITIAL", "50ms"),
        ];
        Cp(Replica::start(&nats.url, replica, &env).await)
    }

    fn kill(&mut self) {
        self.0.kill();
    }

    async fn register(&self, spec: &Value) -> u16 {
        let url = format!("{}/v1/functions", self.base);
        let r = self.client.post(url).json(spec).send().await.unwrap();
        r.status().as_u16()
    }

    async fn execution(&self, id: &str) -> Value {
        let url = format!("{}/v1/executions/{id}", self.base);
        let r = self.client.get(url).send().await.unwrap();
        r.json().await.unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_replica_that_finishes_an_execution_posts_its_result_after_the_accepting_one_died() {
    let nats = NatsServer::start().await;
    let mut accepting = Cp::start(&nats, "accepting").await;
    let stub = Stub::start(&accepting.base).await;
    let receiver = Receiver::start().await;
    // One at a time, 300 ms each: at the kill one runs on the accepting replica, the rest wait
    // in the stream.
    let spec = json!({
        "name": "work", "image": "img", "executionMode": "POOL",
        "endpointUrl": stub.url("/track/300"), "concurrency": 1, "queueSize": 100,
        "timeoutMs": 2000, "maxRetries": 3
    });
    assert_eq!(accepting.register(&spec).await, 201);
    let mut ids = Vec::new();
    for n in 0..4 {
        let r = accepting
            .client
            .post(format!("{}/v1/functions/work:enqueue", accepting.base))
            .header("X-Callback-Url", receiver.url(&format!("/hook/{n}")))
            .header("traceparent", PARENT)
            .header("tracestate", "k=v")
            .json(&json!({"input": n}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        let body: Value = r.json().await.unwrap();
        ids.push(body["executionId"].as_str().unwrap().to_owned());
    }
    accepting.kill();
    let killed_at = Instant::now();
    assert!(
        receiver.hooks().is_empty(),
        "nothing finished before the kill"
    );

    let finishing = Cp::start(&nats, "finishing").await;
    let status = finishing.register(&spec).await;
    assert!(
        status == 201 || status == 409,
        "registration answered {status}"
    );
    // The one running at the kill is delivered again after its ack deadline (timeout + 5 s).
    let hooks = receiver
        .wait_for_within(ids.len(), Duration::from_secs(60))
        .await;
    println!(
        "MEASURE webhooks after the accepting replica's SIGKILL: {} results posted, the last {:?} after the kill",
        hooks.len(),
        killed_at.elapsed()
    );
    let by_id: HashMap<&str, usize> = hooks.iter().fold(HashMap::new(), |mut m, h| {
        *m.entry(h.header("webhook-id")).or_default() += 1;
        m
    });
    let expected: HashSet<&str> = ids.iter().map(String::as_str).collect();
    assert_eq!(by_id.keys().copied().collect::<HashSet<_>>(), expected);
    assert!(
        by_id.values().all(|n| *n == 1),
        "one delivery each: {by_id:?}"
    );
    for hook in &hooks {
        let id = hook.header("webhook-id");
        let n = ids.iter().position(|i| i == id).unwrap();
        assert_eq!(hook.path, format!("/hook/{n}"));
        assert_eq!(hook.json(), finishing.execution(id).await);
        assert_eq!(hook.json()["status"], "success");
        assert_eq!(hook.json()["output"], json!({"tracked": n}));
        assert_eq!(hook.header("x-function-name"), "work");
        assert_eq!(hook.header("x-function-status"), "success");
        assert!(hook.header("webhook-signature").starts_with("v1,"));
        assert_eq!(hook.header("traceparent"), PARENT);
        assert_eq!(hook.header("tracestate"), "k=v");
    }
    // Every attempt, on either replica, carried the enqueue's trace context.
    let requests = stub.requests();
    assert!(requests.len() >= ids.len());
    for r in &requests {
        assert_eq!(r.headers["traceparent"], PARENT);
        assert_eq!(r.headers["tracestate"], "k=v");
    }
}
