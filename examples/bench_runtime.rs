//! A minimal function runtime for the load benchmark (`bench/run.sh`, `docs/perf/README.md`).
//!
//! It answers `POST /invoke` with `200 application/json` and a fixed small body,
//! `{"message":"hi"}` (the request body is read in full and dropped, so it costs what a real
//! runtime's read costs), and `GET /health` with `200`. Nothing else is served.
//!
//! It serves two roles in the benchmark: the runtime the control plane calls for POOL functions,
//! and the same-run baseline "minimal HTTP server" that wrk calls directly. It is built on axum
//! (hyper 1.x underneath), the same stack the control plane serves with, so the direct figures
//! measure a bare hyper server rather than a different technology.
//!
//! The tokio runtime is pinned to ONE worker thread: the benchmark machine has two cores and the
//! other one is left to the control plane (wrk shares both). Because of that, figures at high
//! concurrency are bounded by this single thread; they are a baseline, not a ceiling.
//!
//! Usage: `bench_runtime [PORT]` or `BENCH_RUNTIME_PORT=PORT bench_runtime` (default 19090).
//! It listens on 127.0.0.1 only (`BENCH_RUNTIME_HOST` overrides) and stops on SIGINT/SIGTERM.

#[path = "shared/signals.rs"]
mod signals;
use signals::shutdown;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

const REPLY: &[u8] = br#"{"message":"hi"}"#;

fn main() -> anyhow::Result<()> {
    let port: u16 = match std::env::args().nth(1) {
        Some(p) => p.parse()?,
        None => match std::env::var("BENCH_RUNTIME_PORT") {
            Ok(p) => p.parse()?,
            Err(_) => 19090,
        },
    };
    let host: IpAddr = match std::env::var("BENCH_RUNTIME_HOST") {
        Ok(h) => h.parse()?,
        Err(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
    };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?
        .block_on(serve(SocketAddr::new(host, port)))
}

async fn serve(addr: SocketAddr) -> anyhow::Result<()> {
    let app = Router::new()
        .route("/invoke", post(invoke))
        .route("/health", get(health));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    eprintln!("bench_runtime listening on {}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown())
        .await?;
    Ok(())
}

async fn invoke(_body: Bytes) -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        REPLY,
    )
        .into_response()
}

async fn health() -> StatusCode {
    StatusCode::OK
}
