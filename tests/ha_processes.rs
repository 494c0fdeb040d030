//! Control-plane PROCESSES (the real binary) on one real `nats-server`: what survives a SIGKILL
//! (docs/ha.md, guarantees 1 and 8). Each process gets free ports picked here.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::nats::NatsServer;
use serde_json::{Value, json};
use tokio::time::Instant;

struct Replica {
    id: &'static str,
    base: String,
    management: String,
    child: Child,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap()
}

async fn start(nats: &NatsServer, id: &'static str) -> Replica {
    let (api, management) = (free_port(), free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_nanofaas-control-plane"))
        .env("SERVER_ADDRESS", "127.0.0.1")
        .env("SERVER_PORT", api.to_string())
        .env("MANAGEMENT_SERVER_ADDRESS", "127.0.0.1")
        .env("MANAGEMENT_SERVER_PORT", management.to_string())
        .env("NANOFAAS_STATE_BACKEND", "nats")
        .env("NANOFAAS_NATS_URL", &nats.url)
        .env("NANOFAAS_NATS_LEASE_TTL", "2s")
        .env("NANOFAAS_AUTOSCALER_ENABLED", "true")
        .env("NANOFAAS_REPLICA_ID", id)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let replica = Replica {
        id,
        base: format!("http://127.0.0.1:{api}"),
        management: format!("http://127.0.0.1:{management}"),
        child,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ready = client()
            .get(format!("{}/actuator/health/readiness", replica.management))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200);
        if ready {
            return replica;
        }
        assert!(Instant::now() < deadline, "{id} not ready within 20 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `Some(true)` when the replica says it holds the autoscaler lease; `None` when it does not answer.
async fn leads(r: &Replica) -> Option<bool> {
    let body: Value = client()
        .get(format!("{}/actuator/health", r.management))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    body["components"]["nats"]["details"]["leader"].as_bool()
}

async fn functions(r: &Replica) -> Vec<String> {
    let list: Value = client()
        .get(format!("{}/v1/functions", r.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut names: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_leader_is_replaced_within_the_lease_ttl_and_its_registrations_survive() {
    let nats = NatsServer::start().await;
    let a = start(&nats, "replica-a").await;
    let mut b = Some(start(&nats, "replica-b").await);

    // Exactly one leader, and never two at once while we watch.
    let deadline = Instant::now() + Duration::from_secs(10);
    let leader = loop {
        let (la, lb) = (leads(&a).await, leads(b.as_ref().unwrap()).await);
        assert!(
            !(la == Some(true) && lb == Some(true)),
            "two leaders at once"
        );
        match (la, lb) {
            (Some(true), _) => break a.id,
            (_, Some(true)) => break b.as_ref().unwrap().id,
            _ => {}
        }
        assert!(Instant::now() < deadline, "no leader within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    for _ in 0..20 {
        let (la, lb) = (leads(&a).await, leads(b.as_ref().unwrap()).await);
        assert_ne!((la, lb), (Some(true), Some(true)), "two leaders at once");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    // Registrations through both; then SIGKILL the leader.
    for (i, r) in [&a, b.as_ref().unwrap()].into_iter().enumerate() {
        let spec = json!({"name": format!("kept-{i}"), "image": "img", "executionMode": "LOCAL"});
        let resp = client()
            .post(format!("{}/v1/functions", r.base))
            .json(&spec)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
    }
    let (killed, survivor) = if leader == a.id {
        // Keep `b` running; kill `a` below by moving it.
        (a, b.take().unwrap())
    } else {
        (b.take().unwrap(), a)
    };
    let mut killed = killed;
    killed.child.kill().unwrap(); // SIGKILL
    let _ = killed.child.wait();
    let killed_at = Instant::now();
    loop {
        if leads(&survivor).await == Some(true) {
            break;
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(6),
            "no failover within 6 s (TTL 2 s)"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "leader {} SIGKILLed; {} leads after {:?} (lease TTL 2 s)",
        killed.id,
        survivor.id,
        killed_at.elapsed()
    );

    assert_eq!(functions(&survivor).await, ["kept-0", "kept-1"]);
    let fresh = start(&nats, "replica-c").await;
    assert_eq!(functions(&fresh).await, ["kept-0", "kept-1"]);
    assert_eq!(leads(&fresh).await, Some(false));
}
