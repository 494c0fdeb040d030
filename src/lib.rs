//! nanofaas control plane: a drop-in Rust replacement for the Java/Spring control plane.
//!
//! [`App::build`] wires every component from a [`Config`]; [`App::serve`] runs the main and
//! management listeners until a shutdown signal, then drains. Tests and `main` use the same path.
//! `docs/ARCHITECTURE.md` is the codemap.

pub mod admission;
pub mod api;
pub mod auth;
pub mod autoscaler;
pub mod config;
pub mod deploy;
pub mod dispatch;
pub mod execution;
pub mod function;
pub mod invocation;
pub mod metrics;
pub mod model;
pub mod queue;
pub mod registry;
pub mod runtime_config;
pub mod server;
pub mod state;
pub mod support;
pub mod webhook;

// Entry points for fuzz targets and the corpus replay test; not an API.
#[doc(hidden)]
pub mod fuzzing;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::admission::RateLimiter;
use crate::api::management::Health;
use crate::auth::TokenStore;
use crate::autoscaler::Autoscaler;
use crate::config::{Config, DeploymentBackend, StateBackendKind};
use crate::deploy::container_local::ContainerLocalProvider;
use crate::deploy::{DeploymentProvider, Providers};
use crate::dispatch::Dispatcher;
use crate::execution::store::ExecutionStore;
use crate::invocation::InvocationService;
use crate::invocation::idempotency::IdempotencyStore;
use crate::metrics::Metrics;
use crate::queue::SyncSettings;
use crate::registry::FunctionRegistry;
use crate::runtime_config::RuntimeConfigService;
use crate::state::nats::backend::NatsBackend;
use crate::state::nats::catalog::NatsCatalog;
use crate::state::nats::leader::NatsLeader;
use crate::support::net_policy::NetPolicy;
use crate::webhook::Webhooks;

/// Shared handles given to every handler. axum clones the state for every request, so it is one
/// `Arc` (one reference-count update per clone) that derefs to the handles.
#[derive(Clone)]
pub struct AppState(Arc<Handles>);

impl std::ops::Deref for AppState {
    type Target = Handles;

    fn deref(&self) -> &Handles {
        &self.0
    }
}

/// The handles behind [`AppState`].
pub struct Handles {
    pub config: Arc<Config>,
    pub registry: Arc<FunctionRegistry>,
    pub invocations: Arc<InvocationService>,
    pub idempotency: Arc<IdempotencyStore>,
    pub metrics: Arc<Metrics>,
    pub runtime_config: Arc<RuntimeConfigService>,
    pub health: Arc<Health>,
    /// The bearer tokens, when any surface is protected; `reload()` is the reload handle.
    pub auth: Option<Arc<TokenStore>>,
    /// The NATS state backend when `NANOFAAS_STATE_BACKEND=nats` (`None` = memory: no NATS code
    /// runs). Its connection exists once `serve` connected; adapters take it from here.
    pub nats: Option<Arc<NatsBackend>>,
    /// Result webhooks of `:enqueue` (issue 11): checks `X-Callback-Url`, delivers results.
    pub webhooks: Arc<Webhooks>,
}

/// The assembled control plane, not yet listening.
pub struct App {
    pub state: AppState,
    management: Router,
    /// The internal autoscaler, when `NANOFAAS_AUTOSCALER_ENABLED` (started by `serve`).
    autoscaler: Option<Arc<Autoscaler>>,
    /// The NATS adapters `serve` starts once connected.
    nats: Option<NatsParts>,
}

/// The NATS adapters wired at build and started by `serve` (see [`start_nats`]).
struct NatsParts {
    catalog: Arc<NatsCatalog>,
    leader: Arc<NatsLeader>,
}

impl App {
    pub fn build(config: Config) -> anyhow::Result<App> {
        let config = Arc::new(config);
        let metrics = Arc::new(Metrics::new());
        let providers = Providers::new(
            deploy_providers(&config)?,
            config.deployment_default_backend,
        );
        let net_policy = Arc::new(NetPolicy::new(config.ssrf_allowed_cidrs.clone()));
        let registry = Arc::new(FunctionRegistry::new(
            config.defaults.clone(),
            config.pool_allowed_hosts.clone(),
            net_policy.clone(),
            providers,
        ));
        let store = Arc::new(ExecutionStore::new(config.execution_store.clone()));
        let idempotency = IdempotencyStore::new(config.execution_store.max_entries);
        let limiter = Arc::new(RateLimiter::new(config.rate_max_per_second));
        let sync_settings = Arc::new(SyncSettings::new(&config.sync_queue));
        let runtime_config = Arc::new(RuntimeConfigService::new(
            &config,
            limiter.clone(),
            sync_settings.clone(),
            metrics.clone(),
        ));
        let webhooks = Arc::new(
            Webhooks::http(
                &config.webhook,
                net_policy.clone(),
                &config.http_client.resolve_overrides,
            )
            .context("building the webhook HTTP client")?,
        );
        store.set_result_listener(webhooks.clone());
        let dispatcher = Dispatcher::new(&config.http_client, net_policy)
            .context("building the runtime HTTP client")?;
        let invocations = InvocationService::new(invocation::Parts {
            registry: registry.clone(),
            store,
            idempotency: idempotency.clone(),
            limiter: limiter.clone(),
            dispatcher,
            metrics: metrics.clone(),
            sync_queue: &config.sync_queue,
            sync_settings,
            async_enabled: config.async_queue_enabled,
            backoff: config.retry.into(),
        });
        let queue = invocations.queue().clone();
        registry.add_listener(metrics.clone());
        registry.add_listener(queue.clone());
        metrics.add_section(queue.clone());
        let autoscaler = config.autoscaler_enabled.then(|| {
            let autoscaler = Arc::new(Autoscaler::new(
                registry.clone(),
                queue.clone(),
                &config.scaling,
            ));
            registry.add_listener(autoscaler.clone());
            metrics.add_section(autoscaler.clone());
            autoscaler
        });
        let auth = match &config.auth.tokens_file {
            Some(path) if config.auth.any() => {
                Some(Arc::new(TokenStore::load(path).with_context(|| {
                    format!("loading the token file {}", path.display())
                })?))
            }
            _ => None,
        };
        let health = Arc::new(Health::default());
        let nats = (config.state.backend == StateBackendKind::Nats)
            .then(|| Arc::new(NatsBackend::new(&config)));
        let nats_parts = nats.as_ref().map(|nats| {
            // `:enqueue` answers 503 until start-up installed the durable queue.
            invocations.expect_durable();
            let catalog = Arc::new(NatsCatalog::new(nats.clone()));
            registry.set_catalog(catalog.clone());
            let leader = Arc::new(NatsLeader::new(nats.clone()));
            if let Some(autoscaler) = &autoscaler {
                autoscaler.set_leader_gate(leader.clone());
            }
            let (check, elected) = (nats.clone(), leader.clone());
            health.add_component(
                "nats",
                Arc::new(move || {
                    let (up, mut details) = check.health();
                    details["leader"] =
                        serde_json::Value::Bool(elected.leadership().token().is_some());
                    (up, details)
                }),
            );
            metrics.add_section(Arc::new(crate::state::nats::metrics::NatsMetrics {
                backend: nats.clone(),
                leader: leader.clone(),
            }));
            NatsParts { catalog, leader }
        });
        metrics.add_section(webhooks.clone());
        let state = AppState(Arc::new(Handles {
            config,
            registry,
            invocations,
            idempotency,
            metrics,
            runtime_config,
            auth,
            health,
            nats,
            webhooks,
        }));
        Ok(App {
            management: api::management::router(state.clone()),
            state,
            autoscaler,
            nats: nats_parts,
        })
    }

    /// Binds both ports at their configured addresses (port `0` picks a free port).
    pub async fn bind(self) -> anyhow::Result<BoundApp> {
        let config = &self.state.config;
        let (api_at, management_at) = (
            (config.server_address.as_str(), config.server_port),
            (config.management_address.as_str(), config.management_port),
        );
        let api = TcpListener::bind(api_at)
            .await
            .with_context(|| format!("binding the API port {api_at:?}"))?;
        let management = TcpListener::bind(management_at)
            .await
            .with_context(|| format!("binding the management port {management_at:?}"))?;
        let callback = match config.callback_port {
            Some(port) => {
                let at = (config.callback_address.as_str(), port);
                Some(
                    TcpListener::bind(at)
                        .await
                        .with_context(|| format!("binding the callback port {at:?}"))?,
                )
            }
            None => None,
        };
        Ok(BoundApp {
            api_addr: api.local_addr()?,
            management_addr: management.local_addr()?,
            callback_addr: callback.as_ref().map(TcpListener::local_addr).transpose()?,
            app: self,
            api,
            management,
            callback,
        })
    }
}

/// The deployment backend chosen by `NANOFAAS_DEPLOYMENT_DEFAULT_BACKEND` (none when unset).
fn deploy_providers(config: &Config) -> anyhow::Result<Vec<Arc<dyn DeploymentProvider>>> {
    Ok(match config.deployment_default_backend {
        None => Vec::new(),
        Some(DeploymentBackend::ContainerLocal) => vec![Arc::new(
            ContainerLocalProvider::new(config.container_local.clone())
                .context("connecting to the container engine")?
                .with_shared_state(config.state.backend == StateBackendKind::Nats),
        )],
        Some(DeploymentBackend::Kubernetes) => vec![Arc::new(
            crate::deploy::kubernetes::KubernetesProvider::connect(
                &config.k8s,
                config.image_validator_enabled,
            )
            .map_err(anyhow::Error::msg)
            .context("NANOFAAS_DEPLOYMENT_DEFAULT_BACKEND=k8s")?,
        )],
    })
}

/// An app with its listeners bound.
pub struct BoundApp {
    pub api_addr: SocketAddr,
    pub management_addr: SocketAddr,
    /// The runtime-callback listener, when `NANOFAAS_CALLBACK_SERVER_PORT` is set.
    pub callback_addr: Option<SocketAddr>,
    app: App,
    api: TcpListener,
    management: TcpListener,
    callback: Option<TcpListener>,
}

impl BoundApp {
    pub fn state(&self) -> &AppState {
        &self.app.state
    }

    /// Serves until `shutdown` resolves, then: readiness goes OUT_OF_SERVICE, the API stops
    /// accepting and lets in-flight requests finish, running dispatches drain, all within the
    /// configured grace period.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let BoundApp {
            app,
            api,
            management,
            callback,
            ..
        } = self;
        let mut shutdown = std::pin::pin!(shutdown);
        let state = app.state.clone();
        let grace = state.config.shutdown_grace;
        let stop_api = CancellationToken::new();
        let stop_rest = CancellationToken::new();

        let janitor = tokio::spawn(run_janitor(state.clone(), stop_rest.clone()));
        if let Some(tokens) = state.auth.clone() {
            tokio::spawn(tokens.watch(state.config.auth.reload_interval, stop_rest.clone()));
        }
        let api_server = tokio::spawn(server::serve(
            api,
            api::router(state.clone()),
            server::Limits::api(&state.config),
            stop_api.clone(),
        ));
        // Callbacks keep being accepted while the API drains: in-flight executions still finish.
        let callback_server = callback.map(|listener| {
            tokio::spawn(server::serve(
                listener,
                api::callback_router(state.clone()),
                server::Limits::api(&state.config),
                stop_rest.clone(),
            ))
        });
        let management_server = tokio::spawn(server::serve(
            management,
            app.management,
            server::Limits::management(&state.config),
            stop_rest.clone(),
        ));
        // With NATS: the ports answer (readiness DOWN, the `nats` component DOWN) while start-up
        // connects; not connected within the bound, or a shutdown signal first, ends `serve`.
        let mut state_tasks = Vec::new();
        if let Some(nats) = &state.nats {
            let started = tokio::select! {
                started = start_nats(&state, nats, app.nats.as_ref(), &stop_rest) => {
                    started.map(|tasks| state_tasks = tasks).map(|()| true)
                }
                () = &mut shutdown => Ok(false),
            };
            if !matches!(started, Ok(true)) {
                stop_api.cancel();
                stop_rest.cancel();
                let _ = tokio::time::timeout(Duration::from_secs(1), api_server).await;
                let _ = tokio::time::timeout(Duration::from_secs(1), management_server).await;
                janitor.abort();
                return started.map(|_| ());
            }
        }
        for provider in state.registry.providers().all() {
            provider.start().await;
        }
        // After the backends started: the autoscaler reads and scales through them.
        let autoscaler = app.autoscaler.map(Autoscaler::spawn);
        state.health.set_ready(true);
        tracing::info!("control plane ready");

        shutdown.as_mut().await;
        tracing::info!(grace_ms = grace.as_millis() as u64, "shutting down");
        state.health.set_ready(false);
        stop_api.cancel();
        if let Some(autoscaler) = &autoscaler {
            autoscaler.cancel();
        }
        let deadline = tokio::time::Instant::now() + grace;
        let api_result = tokio::time::timeout_at(deadline, api_server).await;
        if api_result.is_err() {
            tracing::warn!("grace period over with requests still in flight");
        }
        let tracker = state.invocations.tracker();
        tracker.close();
        if tokio::time::timeout_at(deadline, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                in_flight = tracker.len(),
                "grace period over with dispatches still running"
            );
        }
        // Results of the drained dispatches are announced; their webhooks get what is left.
        let undelivered = state.webhooks.drain(deadline).await;
        if undelivered > 0 {
            tracing::warn!(
                undelivered,
                "grace period over with result webhooks still pending"
            );
        }
        if let Some(autoscaler) = autoscaler {
            // A scaling step in progress finishes before the backends stop.
            autoscaler.join(Duration::from_secs(10)).await;
        }
        for provider in state.registry.providers().all() {
            if tokio::time::timeout_at(deadline + Duration::from_secs(10), provider.stop())
                .await
                .is_err()
            {
                tracing::warn!(backend = provider.id(), "backend did not stop in time");
            }
        }
        stop_rest.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(1), management_server).await;
        if let Some(callback_server) = callback_server {
            let _ = tokio::time::timeout(Duration::from_secs(1), callback_server).await;
        }
        janitor.abort();
        for task in state_tasks {
            let _ = tokio::time::timeout(Duration::from_secs(1), task).await;
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// Start-up of the NATS backend, before readiness: the connection (bounded by
/// `NANOFAAS_NATS_CONNECT_TIMEOUT`). Adapters that need the connection start here too.
async fn start_nats(
    state: &AppState,
    nats: &NatsBackend,
    parts: Option<&NatsParts>,
    stop: &CancellationToken,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let context = "state backend nats (NANOFAAS_STATE_BACKEND=nats)";
    let conn = nats.connect().await.context(context)?;
    let mut tasks = Vec::new();
    if let Some(parts) = parts {
        // Every function registered through any replica, adopted before readiness.
        tasks.push(
            parts
                .catalog
                .start(state.registry.clone(), stop.clone())
                .await
                .context("loading the function registry from NATS")
                .context(context)?,
        );
        // The election for the work done once cluster-wide (the autoscaler).
        tasks.push(
            parts
                .leader
                .start(state.config.state.nats.lease_ttl, stop.clone())
                .await
                .context("opening the leader lease in NATS")
                .context(context)?,
        );
    }
    // Durable async invocations, shared execution records, routed callbacks, shared
    // Idempotency-Key claims (docs/ha.md); after the registry is loaded, so every function
    // known at start gets its pull loop at once.
    let bounds = state::nats::durable::Bounds {
        execution_ttl: state.config.execution_store.ttl,
        max_payload_bytes: state.config.max_request_body_bytes,
        max_dead_letters: state.config.execution_store.max_entries,
    };
    state::nats::durable::start(
        conn,
        nats.placement(),
        bounds,
        state::nats::durable::Wiring {
            registry: state.registry.clone(),
            service: state.invocations.clone(),
            metrics: &state.metrics,
        },
        stop.clone(),
    )
    .await
    .context("starting durable async invocations on NATS")
    .context(context)?;
    Ok(tasks)
}

/// Evicts expired executions and idempotency keys every janitor period (REFERENCE §3.7).
async fn run_janitor(state: AppState, stop: CancellationToken) {
    let period = state.config.execution_store.janitor_period;
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = interval.tick() => {
                let evicted = state.invocations.store().evict_expired();
                state.idempotency.evict_expired();
                if evicted > 0 {
                    tracing::debug!(evicted, "janitor evicted executions");
                }
            }
        }
    }
}
