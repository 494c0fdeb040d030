//! Every setting of the control plane: its property key (REFERENCE §8), the environment variables
//! it is read from, its default and its validation. Nothing else in the crate reads the environment.
//!
//! Each setting is named by its Spring property key. The canonical variable splits camelCase into
//! words, upper-cases and turns `.`/`-` into `_` (`nanofaas.rate.maxPerSecond` →
//! `NANOFAAS_RATE_MAX_PER_SECOND`); the forms Spring's relaxed binding accepted are read too
//! (`NANOFAAS_RATE_MAXPERSECOND`), the canonical one winning. Unprefixed `sync-queue.*` keys take the
//! `NANOFAAS_` prefix canonically and are also read without it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

use crate::function::FunctionDefaults;
use crate::function::limits::{MAX_CONCURRENCY, MAX_QUEUE_SIZE, MAX_RETRIES, MAX_TIMEOUT_MS};

use env::Reader;

mod duration;
mod env;
mod retry;
mod state;
#[cfg(test)]
mod tests;
mod webhook;

pub use duration::{format_iso_duration, parse_duration, parse_iso_duration};
pub use env::env_names;
pub use retry::{DEFAULT_BACKOFF_MAX, MAX_BACKOFF, RetryConfig};
pub use state::{DEFAULT_NATS_URL, NatsConfig, StateBackendKind, StateConfig};
pub use webhook::{WebhookConfig, WebhookSecret};

/// A setting that could not be parsed; start-up stops with this message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {variable}={value:?}: {reason}")]
pub struct ConfigError {
    pub variable: String,
    pub value: String,
    pub reason: String,
}

/// Where a managed DEPLOYMENT function runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeploymentBackend {
    Kubernetes,
    ContainerLocal,
}

impl DeploymentBackend {
    pub fn id(self) -> &'static str {
        match self {
            DeploymentBackend::Kubernetes => "k8s",
            DeploymentBackend::ContainerLocal => "container-local",
        }
    }
}

/// One entry of `NANOFAAS_POOL_ALLOWED_HOSTS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostRule {
    Name(String),
    Net(IpNet),
}

impl HostRule {
    pub fn matches(&self, host: &str) -> bool {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        match self {
            HostRule::Name(name) => name.eq_ignore_ascii_case(bare),
            HostRule::Net(net) => bare.parse::<IpAddr>().is_ok_and(|ip| net.contains(&ip)),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ExecutionStoreConfig {
    pub ttl: Duration,
    pub cleanup_ttl: Duration,
    pub max_lifetime: Duration,
    pub max_entries: usize,
    /// Budget for what records hold (requests kept for retries, outputs, errors, and a fixed
    /// cost per record), beside the entry cap (issue 10, defect 9).
    pub max_bytes: usize,
    /// The share (percent) of both the entry cap and the byte budget that one function's
    /// in-flight executions may hold.
    pub function_share_percent: usize,
    pub janitor_period: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HttpClientConfig {
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub max_response_bytes: usize,
    /// Fixed answers for host names, consulted instead of DNS and filtered by the outbound
    /// policy like any DNS answer (curl's `--resolve`). Not read from the environment: it lets
    /// tests and embedders pin a name to an address without a DNS server.
    pub resolve_overrides: Vec<(String, Vec<IpAddr>)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SyncQueueConfig {
    pub enabled: bool,
    pub admission_enabled: bool,
    pub max_depth: usize,
    pub max_estimated_wait: Duration,
    pub max_queue_wait: Duration,
    pub retry_after_seconds: u32,
    pub throughput_window: Duration,
    pub per_function_min_samples: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct KubernetesConfig {
    /// `nanofaas.k8s.namespace`; unset = `pod_namespace`, else `default`.
    pub namespace: Option<String>,
    /// `POD_NAMESPACE` (set from the downward API when the control plane runs in a cluster).
    pub pod_namespace: Option<String>,
    /// `nanofaas.k8s.callbackUrl`; blank = derived from the namespace (see `callback_url()`).
    pub callback_url: String,
    /// The Service port runtime callbacks go to when the URL is derived: the callback listener's
    /// port when one is configured, else 8080 (the API).
    pub callback_service_port: u16,
    pub image_pull_policy: String,
}

impl KubernetesConfig {
    /// Where function resources live: `nanofaas.k8s.namespace`, else `POD_NAMESPACE`, else
    /// `default` (REFERENCE §5.6).
    pub fn effective_namespace(&self) -> &str {
        self.namespace
            .as_deref()
            .or(self.pod_namespace.as_deref())
            .unwrap_or("default")
    }

    /// `CALLBACK_URL` for function pods: the configured URL, else the `control-plane` Service
    /// of the effective namespace (DECISIONS 4, fixing B12's hard-coded `default`).
    pub fn effective_callback_url(&self) -> String {
        if self.callback_url.trim().is_empty() {
            format!(
                "http://control-plane.{}.svc.cluster.local:{}/v1/internal/executions",
                self.effective_namespace(),
                self.callback_service_port
            )
        } else {
            self.callback_url.trim().to_owned()
        }
    }
}

/// The internal autoscaler's settings (`nanofaas.scaling.*`); a function's own scaling is its
/// spec's `ScalingConfig`.
#[derive(Debug, Clone, PartialEq)]
pub struct AutoscalerConfig {
    pub poll_interval: Duration,
    /// Read and validated for parity with the Java settings (REFERENCE §8: "adaptive gauge
    /// fallback only"); registration always resolves a per-pod target, so nothing consults it.
    pub default_target_in_flight_per_pod: u32,
    /// The internal autoscaler does not scale up again sooner than this after a scale-up.
    pub scale_up_cooldown: Duration,
    /// The internal autoscaler does not scale down again sooner than this after a scale-down.
    pub scale_down_cooldown: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ContainerLocalConfig {
    pub bind_host: String,
    pub readiness_timeout: Duration,
    pub readiness_poll_interval: Duration,
    pub callback_url: Option<String>,
    /// Docker network the replicas join (addressed by name); unset = publish ports on bind-host.
    pub network: Option<String>,
    /// Label value that tells this control plane's containers from others'.
    pub instance: String,
}

/// How the two listeners treat connections (src/server/): timeouts and connection caps.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerConfig {
    /// A request head (or a new connection's first one) must arrive within this.
    pub header_read_timeout: Duration,
    /// A request body must arrive within this once the server waits for it.
    pub body_read_timeout: Duration,
    /// A keep-alive connection with no request is closed after this.
    pub idle_timeout: Duration,
    /// Concurrent connections on the API port; `None` = derived from the file-descriptor limit.
    pub api_max_connections: Option<usize>,
    /// Concurrent connections on the management port.
    pub management_max_connections: usize,
}

/// Bearer-token authentication (`nanofaas.auth.*`, docs/security.md). Each switch protects one
/// surface; all are off by default, as the Java service had no authentication.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthConfig {
    /// The API routes need a token (`admin` or `invoke` scope by route).
    pub enabled: bool,
    /// The SHA-256 token file; required when any switch is on.
    pub tokens_file: Option<PathBuf>,
    /// How often the token file is read again for changes.
    pub reload_interval: Duration,
    /// The Prometheus scrape needs a token with the `metrics` scope.
    pub metrics_protected: bool,
    /// Runtime callbacks need a token with the `callback` scope (stock runtimes send none).
    pub callbacks_protected: bool,
}

impl AuthConfig {
    /// Whether any surface is protected (the token file is loaded only then).
    pub fn any(&self) -> bool {
        self.enabled || self.metrics_protected || self.callbacks_protected
    }
}

/// The whole configuration, resolved and validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `server.address`: the API port's bind address (Spring's key).
    pub server_address: String,
    pub server_port: u16,
    /// `management.server.address`: the management port's bind address.
    pub management_address: String,
    pub management_port: u16,
    /// `nanofaas.callback.server.port`: when set, runtime callbacks (`/v1/internal/...`) are
    /// served on this port only, and no longer on the API port.
    pub callback_port: Option<u16>,
    /// `nanofaas.callback.server.address`: the callback port's bind address.
    pub callback_address: String,
    pub listener: ListenerConfig,
    pub defaults: FunctionDefaults,
    pub rate_max_per_second: u64,
    pub execution_store: ExecutionStoreConfig,
    pub http_client: HttpClientConfig,
    pub max_request_body_bytes: usize,
    pub shutdown_grace: Duration,
    pub pool_allowed_hosts: Option<Vec<HostRule>>,
    /// `NANOFAAS_SSRF_ALLOWED_CIDRS`: networks exempt from the outbound policy's built-in
    /// refusal of link-local and cloud-metadata addresses (`support::net_policy`).
    pub ssrf_allowed_cidrs: Vec<IpNet>,
    pub deployment_default_backend: Option<DeploymentBackend>,
    pub async_queue_enabled: bool,
    pub admin_runtime_config_enabled: bool,
    pub autoscaler_enabled: bool,
    pub image_validator_enabled: bool,
    pub sync_queue: SyncQueueConfig,
    pub k8s: KubernetesConfig,
    pub scaling: AutoscalerConfig,
    pub container_local: ContainerLocalConfig,
    pub auth: AuthConfig,
    /// `NANOFAAS_STATE_BACKEND` and the NATS settings (issue 9, docs/ha.md).
    pub state: StateConfig,
    /// Backoff between the attempts of an execution (issue 11, docs/retries.md).
    pub retry: RetryConfig,
    /// Result webhooks of `:enqueue` (issue 11, docs/webhooks.md).
    pub webhook: WebhookConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config::from_lookup(|_| None).expect("defaults are valid")
    }
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        let vars: HashMap<String, String> = std::env::vars().collect();
        Config::from_lookup(|name| vars.get(name).cloned())
    }

    /// Reads settings through `lookup` (a variable name → its value); tests pass a map.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let r = Reader { lookup: &lookup };
        let sync_queue_enabled = r.bool("sync-queue.enabled", false)?;
        let config = Config {
            server_address: r.address("server.address")?,
            server_port: r.port("server.port", 8080)?,
            management_address: r.address("management.server.address")?,
            management_port: r.port("management.server.port", 8081)?,
            callback_port: r.optional_port("nanofaas.callback.server.port")?,
            callback_address: r.address("nanofaas.callback.server.address")?,
            listener: ListenerConfig {
                header_read_timeout: r
                    .positive_duration("nanofaas.http.header-read-timeout", secs(10))?,
                body_read_timeout: r
                    .positive_duration("nanofaas.http.body-read-timeout", secs(30))?,
                idle_timeout: r.positive_duration("nanofaas.http.idle-timeout", secs(60))?,
                api_max_connections: match r.int("nanofaas.http.max-connections", 0, 0, 1 << 24)? {
                    0 => None,
                    n => Some(n as usize),
                },
                management_max_connections: r.int(
                    "nanofaas.http.management-max-connections",
                    64,
                    1,
                    1 << 24,
                )? as usize,
            },
            defaults: FunctionDefaults {
                timeout_ms: r.int("nanofaas.defaults.timeoutMs", 30_000, 1, MAX_TIMEOUT_MS)?,
                concurrency: r.int("nanofaas.defaults.concurrency", 4, 1, MAX_CONCURRENCY)? as u32,
                queue_size: r.int("nanofaas.defaults.queueSize", 100, 1, MAX_QUEUE_SIZE)? as u32,
                max_retries: r.int("nanofaas.defaults.maxRetries", 3, 0, MAX_RETRIES)? as u32,
            },
            rate_max_per_second: r.int("nanofaas.rate.maxPerSecond", 1000, 0, u64::MAX >> 1)?,
            execution_store: ExecutionStoreConfig {
                ttl: r.positive_duration("nanofaas.execution-store.ttl", mins(5))?,
                cleanup_ttl: r
                    .positive_duration("nanofaas.execution-store.cleanup-ttl", mins(2))?,
                max_lifetime: r
                    .positive_duration("nanofaas.execution-store.max-lifetime", mins(30))?,
                max_entries: r.int(
                    "nanofaas.execution-store.max-entries",
                    100_000,
                    1,
                    100_000_000,
                )? as usize,
                max_bytes: r.int(
                    "nanofaas.execution-store.max-bytes",
                    256 << 20,
                    1 << 20,
                    1 << 50,
                )? as usize,
                function_share_percent: r.int(
                    "nanofaas.execution-store.function-share-percent",
                    50,
                    1,
                    100,
                )? as usize,
                janitor_period: r.positive_duration(
                    "nanofaas.execution-store.janitor-period",
                    Duration::from_secs(60),
                )?,
            },
            // Non-positive HTTP client values mean "the default", as in Java.
            http_client: HttpClientConfig {
                connect_timeout: Duration::from_millis(r.positive_int(
                    "nanofaas.http-client.connect-timeout-ms",
                    5000,
                    3_600_000,
                )?),
                read_timeout: Duration::from_millis(r.positive_int(
                    "nanofaas.http-client.read-timeout-ms",
                    30_000,
                    u64::from(u32::MAX),
                )?),
                max_response_bytes: (r.positive_int(
                    "nanofaas.http-client.max-in-memory-size-mb",
                    16,
                    1024,
                )? as usize)
                    << 20,
                resolve_overrides: Vec::new(),
            },
            max_request_body_bytes: (r.int("nanofaas.http.max-request-body-mb", 16, 1, 1024)?
                as usize)
                << 20,
            shutdown_grace: r
                .duration("nanofaas.shutdown.grace-period", Duration::from_secs(30))?,
            pool_allowed_hosts: r.host_rules("nanofaas.pool.allowed-hosts")?,
            ssrf_allowed_cidrs: r.networks("nanofaas.ssrf.allowed-cidrs")?,
            deployment_default_backend: r.backend("nanofaas.deployment.default-backend")?,
            async_queue_enabled: r.bool("nanofaas.async-queue.enabled", false)?
                || sync_queue_enabled,
            admin_runtime_config_enabled: r.bool("nanofaas.admin.runtime-config.enabled", false)?,
            autoscaler_enabled: r.bool("nanofaas.autoscaler.enabled", false)?,
            image_validator_enabled: r.bool("nanofaas.image-validator.enabled", false)?,
            sync_queue: SyncQueueConfig {
                enabled: sync_queue_enabled,
                admission_enabled: r.bool("sync-queue.admission-enabled", true)?,
                max_depth: r.int("sync-queue.max-depth", 200, 1, 10_000_000)? as usize,
                max_estimated_wait: r
                    .duration("sync-queue.max-estimated-wait", Duration::from_secs(2))?,
                max_queue_wait: r.duration("sync-queue.max-queue-wait", Duration::from_secs(2))?,
                retry_after_seconds: r.int("sync-queue.retry-after-seconds", 2, 1, 86_400)? as u32,
                throughput_window: r
                    .positive_duration("sync-queue.throughput-window", Duration::from_secs(30))?,
                per_function_min_samples: r.int(
                    "sync-queue.per-function-min-samples",
                    50,
                    1,
                    1 << 30,
                )? as u32,
            },
            k8s: KubernetesConfig {
                namespace: r.string("nanofaas.k8s.namespace"),
                pod_namespace: lookup("POD_NAMESPACE")
                    .map(|v| v.trim().to_owned())
                    .filter(|v| !v.is_empty()),
                callback_url: r.string("nanofaas.k8s.callbackUrl").unwrap_or_default(),
                callback_service_port: r
                    .optional_port("nanofaas.callback.server.port")?
                    .unwrap_or(8080),
                image_pull_policy: r
                    .string("nanofaas.k8s.image-pull-policy")
                    .unwrap_or_else(|| "Always".to_owned()),
            },
            scaling: AutoscalerConfig {
                poll_interval: Duration::from_millis(r.int(
                    "nanofaas.scaling.poll-interval-ms",
                    5000,
                    1,
                    86_400_000,
                )?),
                default_target_in_flight_per_pod: r.int(
                    "nanofaas.scaling.default-target-in-flight-per-pod",
                    2,
                    1,
                    1_000_000,
                )? as u32,
                scale_up_cooldown: r.duration(
                    "nanofaas.scaling.scale-up-cooldown",
                    Duration::from_secs(30),
                )?,
                scale_down_cooldown: r.duration(
                    "nanofaas.scaling.scale-down-cooldown",
                    Duration::from_secs(60),
                )?,
            },
            container_local: ContainerLocalConfig {
                bind_host: r
                    .string("nanofaas.container-local.bind-host")
                    .unwrap_or_else(|| "127.0.0.1".to_owned()),
                readiness_timeout: r.positive_duration(
                    "nanofaas.container-local.readiness-timeout",
                    Duration::from_secs(20),
                )?,
                readiness_poll_interval: r.positive_duration(
                    "nanofaas.container-local.readiness-poll-interval",
                    Duration::from_millis(250),
                )?,
                callback_url: r.string("nanofaas.container-local.callback-url"),
                network: r.string("nanofaas.container-local.network"),
                instance: r
                    .string("nanofaas.container-local.instance")
                    .unwrap_or_else(|| "default".to_owned()),
            },
            auth: r.auth()?,
            state: state::read(&r)?,
            retry: retry::read(&r)?,
            webhook: webhook::read(&r)?,
        };
        Ok(config)
    }
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn mins(n: u64) -> Duration {
    Duration::from_secs(n * 60)
}
