//! The floor of the control plane's stack, for the load benchmark (`bench/run.sh`,
//! `docs/perf/README.md`): a relay with no logic at all.
//!
//! `POST /invoke` reads the request body, sends it with one shared, pooled `reqwest` client to
//! `BENCH_PROXY_UPSTREAM` (default `http://127.0.0.1:19090/invoke`, the minimal runtime) and
//! answers with the upstream's status and body as `application/json`. No execution record, no
//! idempotency, no metrics, no tracing: exactly the two HTTP exchanges a POOL invocation needs, on
//! the same crates (axum and hyper serving, reqwest calling, tokio's multi-thread runtime with one
//! worker per core, mimalloc) the control plane uses.
//!
//! The benchmark runs it next to the control plane so that the report can say, in one run, what
//! any axum + reqwest relay costs on this machine (CPU per request, added latency) and how much the
//! control plane adds on top of that floor.
//!
//! `BENCH_PROXY_CLIENT=hyper` swaps reqwest for the bare `hyper-util` pooled client reqwest is
//! built on, to show what reqwest's own layers (redirect policy, retry policy, URL handling) cost.
//! `BENCH_PROXY_CLIENT=echo` calls nothing and answers the request's body: the logic-free axum
//! echo a LOCAL invocation is compared with (issue 12).
//!
//! Usage: `bench_proxy [PORT]` or `BENCH_PROXY_PORT=PORT bench_proxy` (default 19091).

#[path = "shared/signals.rs"]
mod signals;
use signals::shutdown;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

type HyperClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Full<Bytes>,
>;

struct Relay {
    client: reqwest::Client,
    upstream: reqwest::Url,
    hyper: Option<(HyperClient, axum::http::Uri)>,
    echo: bool,
}

fn main() -> anyhow::Result<()> {
    let port: u16 = match std::env::args().nth(1) {
        Some(p) => p.parse()?,
        None => match std::env::var("BENCH_PROXY_PORT") {
            Ok(p) => p.parse()?,
            Err(_) => 19091,
        },
    };
    let upstream: reqwest::Url = std::env::var("BENCH_PROXY_UPSTREAM")
        .unwrap_or_else(|_| "http://127.0.0.1:19090/invoke".to_string())
        .parse()?;
    let client = reqwest::Client::builder()
        .tcp_nodelay(true)
        .no_proxy()
        .pool_max_idle_per_host(1024)
        .build()?;
    let hyper = match std::env::var("BENCH_PROXY_CLIENT").as_deref() {
        Ok("hyper") => {
            let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
            connector.set_nodelay(true);
            let client =
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .pool_max_idle_per_host(1024)
                    .build(connector);
            Some((client, upstream.as_str().parse()?))
        }
        Ok("reqwest" | "echo") | Err(_) => None,
        Ok(other) => {
            anyhow::bail!("BENCH_PROXY_CLIENT must be reqwest, hyper or echo, not {other}")
        }
    };
    let echo = std::env::var("BENCH_PROXY_CLIENT").as_deref() == Ok("echo");
    let relay = Arc::new(Relay {
        client,
        upstream,
        hyper,
        echo,
    });
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(serve(
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
            relay,
        ))
}

async fn serve(addr: SocketAddr, relay: Arc<Relay>) -> anyhow::Result<()> {
    let app = Router::new()
        .route("/invoke", post(invoke))
        .with_state(relay);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    eprintln!("bench_proxy listening on {}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown())
        .await?;
    Ok(())
}

async fn invoke(State(relay): State<Arc<Relay>>, body: Bytes) -> Response {
    if relay.echo {
        return answer(Ok((StatusCode::OK, body)));
    }
    if let Some((client, uri)) = &relay.hyper {
        return relay_hyper(client, uri, body).await;
    }
    let reply = async {
        let response = relay
            .client
            .post(relay.upstream.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await?;
        let status = response.status();
        Ok::<_, reqwest::Error>((status, response.bytes().await?))
    }
    .await;
    answer(reply.map_err(|e| e.to_string()))
}

async fn relay_hyper(client: &HyperClient, uri: &axum::http::Uri, body: Bytes) -> Response {
    use http_body_util::BodyExt;
    let request = axum::http::Request::post(uri.clone())
        .header(header::CONTENT_TYPE, "application/json")
        .body(http_body_util::Full::new(body));
    let reply = async {
        let response = client.request(request?).await?;
        let status = response.status();
        let bytes = response.into_body().collect().await?.to_bytes();
        Ok::<_, anyhow::Error>((status, bytes))
    }
    .await;
    answer(reply.map_err(|e| e.to_string()))
}

/// The upstream's status and body as JSON, or 502 with the failure.
fn answer(reply: Result<(StatusCode, Bytes), String>) -> Response {
    match reply {
        Ok((status, bytes)) => (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            bytes,
        )
            .into_response(),
        Err(e) => (StatusCode::BAD_GATEWAY, e).into_response(),
    }
}
