//! A webhook receiver on port 0 (issue 11): records every request it gets and answers 503 to
//! the first `fail_first` of them, then 204.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::Value;

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Hook {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Hook {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap())
            .unwrap_or_default()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    got: Arc<Mutex<Vec<Hook>>>,
    /// Requests still to be answered 503.
    pub fail_first: Arc<AtomicUsize>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Receiver::serve(listener)
    }

    /// Serves on `listener` (e.g. bound to a port that was down until now).
    pub fn serve(listener: tokio::net::TcpListener) -> Receiver {
        let receiver = Receiver {
            addr: listener.local_addr().unwrap(),
            got: Arc::default(),
            fail_first: Arc::default(),
        };
        let app = Router::new()
            .route("/{*path}", post(receive))
            .with_state(receiver.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        receiver
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn hooks(&self) -> Vec<Hook> {
        self.got.lock().unwrap().clone()
    }

    /// Waits (bounded, 10 s) for `n` requests; returns them.
    pub async fn wait_for(&self, n: usize) -> Vec<Hook> {
        self.wait_for_within(n, Duration::from_secs(10)).await
    }

    /// Waits for `n` requests, at most `within`; returns them.
    pub async fn wait_for_within(&self, n: usize, within: Duration) -> Vec<Hook> {
        let deadline = tokio::time::Instant::now() + within;
        while self.got.lock().unwrap().len() < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{n} webhook requests not received within {within:?}: {:#?}",
                self.hooks()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.hooks()
    }
}

async fn receive(
    State(r): State<Receiver>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    r.got.lock().unwrap().push(Hook {
        path: format!("/{path}"),
        headers,
        body,
    });
    let failing = r
        .fail_first
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if failing {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::NO_CONTENT
    }
}
