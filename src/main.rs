//! `nanofaas-control-plane`: reads the configuration from the environment, serves, and shuts down
//! gracefully on SIGTERM or SIGINT.

use std::process::ExitCode;

use nanofaas_control_plane::App;
use nanofaas_control_plane::config::Config;
use tracing_subscriber::EnvFilter;

/// The invoke path allocates a little per request on both cores; mimalloc's thread-local free
/// lists cost less than glibc malloc's arenas there (see docs/perf).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("healthcheck") {
        return healthcheck().await;
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .event_format(nanofaas_control_plane::support::log_format::LineFormat::default())
        .init();

    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("nanofaas-control-plane: {e}");
            return ExitCode::from(2);
        }
    };
    // Before anything opens sockets: the connection caps are derived from this limit.
    match nanofaas_control_plane::server::raise_open_files_limit() {
        Ok(limit) => tracing::debug!(limit, "open files limit"),
        Err(e) => tracing::warn!(error = %e, "could not raise the open files limit"),
    }
    let (api_port, management_port) = (config.server_port, config.management_port);
    let shutdown = shutdown_signal();
    let run = async move {
        let bound = App::build(config)?.bind().await?;
        tracing::info!(
            api = %bound.api_addr,
            management = %bound.management_addr,
            "listening"
        );
        bound.serve(shutdown).await
    };
    match run.await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nanofaas-control-plane (ports {api_port}/{management_port}): {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `nanofaas-control-plane healthcheck`: exit 0 when the local instance is ready. For container
/// health checks in images that have no shell or curl.
async fn healthcheck() -> ExitCode {
    let port = Config::from_env().map_or(8081, |c| c.management_port);
    let url = format!("http://127.0.0.1:{port}/actuator/health/readiness");
    let ready = match reqwest::Client::builder()
        .no_proxy()
        .timeout(std::time::Duration::from_secs(2))
        .build()
    {
        Ok(client) => client
            .get(&url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success()),
        Err(_) => false,
    };
    if ready {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Installs the SIGTERM/SIGINT handlers now (so a signal that arrives during start-up is not
/// fatal) and returns a future that resolves on the first of them.
fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let terminate = signal(SignalKind::terminate());
        let interrupt = signal(SignalKind::interrupt());
        async move {
            let wait = |s: std::io::Result<tokio::signal::unix::Signal>| async move {
                match s {
                    Ok(mut s) => {
                        s.recv().await;
                    }
                    Err(_) => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = wait(terminate) => {},
                () = wait(interrupt) => {},
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}
