//! A control-plane process spawned from this build's binary on a given NATS, for the suites that
//! SIGKILL or restart replicas (ha_async, ha_webhooks, ha_dead_letters). Killed when dropped.

use std::net::{Ipv4Addr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::time::Instant;

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

pub struct Replica {
    /// `http://127.0.0.1:<API port>`.
    pub base: String,
    /// `http://127.0.0.1:<management port>`.
    pub management: String,
    pub client: reqwest::Client,
    child: Option<Child>,
}

impl Replica {
    /// Starts replica `name` with the async queue on NATS `nats_url`, `env` added (or
    /// overriding), and returns once it is ready (30 s at most).
    pub async fn start(nats_url: &str, name: &str, env: &[(&str, &str)]) -> Replica {
        let (port, management_port) = (free_port(), free_port());
        let mut command = Command::new(env!("CARGO_BIN_EXE_nanofaas-control-plane"));
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("SERVER_ADDRESS", "127.0.0.1")
            .env("SERVER_PORT", port.to_string())
            .env("MANAGEMENT_SERVER_ADDRESS", "127.0.0.1")
            .env("MANAGEMENT_SERVER_PORT", management_port.to_string())
            .env("NANOFAAS_ASYNC_QUEUE_ENABLED", "true")
            .env("NANOFAAS_STATE_BACKEND", "nats")
            .env("NANOFAAS_NATS_URL", nats_url)
            .env("NANOFAAS_REPLICA_ID", name)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            command.env(k, v);
        }
        let replica = Replica {
            base: format!("http://127.0.0.1:{port}"),
            management: format!("http://127.0.0.1:{management_port}"),
            client: reqwest::Client::builder().no_proxy().build().unwrap(),
            child: Some(command.spawn().expect("starting the control plane")),
        };
        let ready = format!("{}/actuator/health/readiness", replica.management);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !replica
            .client
            .get(&ready)
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            assert!(Instant::now() < deadline, "{name} not ready in 30 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        replica
    }

    /// SIGKILL: no drain, no graceful anything.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}
