//! Every setting of the control plane: its property key (REFERENCE §8), the environment variables
//! it is read from, its default and its validation. Nothing else in the crate reads the environment.
//!
//! Each setting is named by its Spring property key. The canonical variable splits camelCase into
//! words, upper-cases and turns `.`/`-` into `_` (`nanofaas.rate.maxPerSecond` →
//! `NANOFAAS_RATE_MAX_PER_SECOND`); the forms Spring's relaxed binding accepted are read too
//! (`NANOFAAS_RATE_MAXPERSECOND`), the canonical one winning. Unprefixed `sync-queue.*` keys take the
//! `NANOFAAS_` prefix canonically and are also read without it.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;

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
pub struct FunctionDefaults {
    pub timeout_ms: u64,
    pub concurrency: u32,
    pub queue_size: u32,
    pub max_retries: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ExecutionStoreConfig {
    pub ttl: Duration,
    pub cleanup_ttl: Duration,
    pub max_lifetime: Duration,
    pub max_entries: usize,
    pub janitor_period: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HttpClientConfig {
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub max_response_bytes: usize,
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
                "http://control-plane.{}.svc.cluster.local:8080/v1/internal/executions",
                self.effective_namespace()
            )
        } else {
            self.callback_url.trim().to_owned()
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ScalingConfig {
    pub poll_interval: Duration,
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

/// The whole configuration, resolved and validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `server.address`: the API port's bind address (Spring's key).
    pub server_address: String,
    pub server_port: u16,
    /// `management.server.address`: the management port's bind address.
    pub management_address: String,
    pub management_port: u16,
    pub listener: ListenerConfig,
    pub defaults: FunctionDefaults,
    pub rate_max_per_second: u64,
    pub execution_store: ExecutionStoreConfig,
    pub http_client: HttpClientConfig,
    pub max_request_body_bytes: usize,
    pub shutdown_grace: Duration,
    pub pool_allowed_hosts: Option<Vec<HostRule>>,
    pub deployment_default_backend: Option<DeploymentBackend>,
    pub async_queue_enabled: bool,
    pub admin_runtime_config_enabled: bool,
    pub autoscaler_enabled: bool,
    pub image_validator_enabled: bool,
    pub sync_queue: SyncQueueConfig,
    pub k8s: KubernetesConfig,
    pub scaling: ScalingConfig,
    pub container_local: ContainerLocalConfig,
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
                timeout_ms: r.int(
                    "nanofaas.defaults.timeoutMs",
                    30_000,
                    1,
                    u64::from(u32::MAX),
                )?,
                concurrency: r.int("nanofaas.defaults.concurrency", 4, 1, 1_000_000)? as u32,
                queue_size: r.int("nanofaas.defaults.queueSize", 100, 1, 10_000_000)? as u32,
                max_retries: r.int("nanofaas.defaults.maxRetries", 3, 0, 1_000)? as u32,
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
            },
            max_request_body_bytes: (r.int("nanofaas.http.max-request-body-mb", 16, 1, 1024)?
                as usize)
                << 20,
            shutdown_grace: r
                .duration("nanofaas.shutdown.grace-period", Duration::from_secs(30))?,
            pool_allowed_hosts: r.host_rules("nanofaas.pool.allowed-hosts")?,
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
                image_pull_policy: r
                    .string("nanofaas.k8s.image-pull-policy")
                    .unwrap_or_else(|| "Always".to_owned()),
            },
            scaling: ScalingConfig {
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

/// Every environment variable name a property key is read from, canonical first.
pub fn env_names(key: &str) -> Vec<String> {
    let canonical_key = if key.starts_with("sync-queue.") {
        format!("nanofaas.{key}")
    } else {
        key.to_owned()
    };
    let mut names = vec![canonical_env_name(&canonical_key)];
    let mut push = |n: String| {
        if !names.contains(&n) {
            names.push(n);
        }
    };
    // Spring's relaxed forms: dashes removed, camelCase kept as one word; and the legacy form
    // with dashes turned into underscores.
    for k in [canonical_key.as_str(), key] {
        push(k.replace('-', "").replace('.', "_").to_ascii_uppercase());
        push(k.replace(['-', '.'], "_").to_ascii_uppercase());
    }
    names
}

fn canonical_env_name(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 8);
    let mut prev_lower = false;
    for c in key.chars() {
        if c == '.' || c == '-' {
            out.push('_');
            prev_lower = false;
        } else if c.is_ascii_uppercase() {
            if prev_lower {
                out.push('_');
            }
            out.push(c);
            prev_lower = false;
        } else {
            out.push(c.to_ascii_uppercase());
            prev_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        }
    }
    out
}

struct Reader<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
}

impl Reader<'_> {
    /// The first variable set for `key` (canonical wins), with its name.
    fn raw(&self, key: &str) -> Option<(String, String)> {
        env_names(key)
            .into_iter()
            .find_map(|name| (self.lookup)(&name).map(|value| (name, value)))
    }

    fn fail(name: String, value: String, reason: impl fmt::Display) -> ConfigError {
        ConfigError {
            variable: name,
            value,
            reason: reason.to_string(),
        }
    }

    fn string(&self, key: &str) -> Option<String> {
        self.raw(key)
            .map(|(_, v)| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    fn bool(&self, key: &str, default: bool) -> Result<bool, ConfigError> {
        match self.raw(key) {
            None => Ok(default),
            Some((name, value)) => match value.trim().to_ascii_lowercase().as_str() {
                "true" => Ok(true),
                "false" => Ok(false),
                "" => Ok(default),
                _ => Err(Self::fail(name, value, "expected true or false")),
            },
        }
    }

    fn int(&self, key: &str, default: u64, min: u64, max: u64) -> Result<u64, ConfigError> {
        match self.raw(key) {
            None => Ok(default),
            Some((name, value)) => {
                let trimmed = value.trim();
                if trimmed.is_empty() {
                    return Ok(default);
                }
                match trimmed.parse::<u64>() {
                    Ok(v) if (min..=max).contains(&v) => Ok(v),
                    Ok(_) => Err(Self::fail(
                        name,
                        value,
                        format!("expected an integer between {min} and {max}"),
                    )),
                    // A negative number is an integer, just not an accepted one.
                    Err(_) if trimmed.parse::<i64>().is_ok() => Err(Self::fail(
                        name,
                        value,
                        format!("expected an integer between {min} and {max}"),
                    )),
                    Err(_) => Err(Self::fail(name, value, "expected an integer")),
                }
            }
        }
    }

    /// An integer where zero or a negative value means "use the default".
    fn positive_int(&self, key: &str, default: u64, max: u64) -> Result<u64, ConfigError> {
        match self.raw(key) {
            None => Ok(default),
            Some((name, value)) => match value.trim().parse::<i64>() {
                _ if value.trim().is_empty() => Ok(default),
                Ok(v) if v <= 0 => Ok(default),
                Ok(v) if v as u64 <= max => Ok(v as u64),
                Ok(_) => Err(Self::fail(name, value, format!("expected at most {max}"))),
                Err(_) => Err(Self::fail(name, value, "expected an integer")),
            },
        }
    }

    /// A bind address: an IP literal or a host name; unset or blank = every interface.
    fn address(&self, key: &str) -> Result<String, ConfigError> {
        let Some((name, value)) = self.raw(key) else {
            return Ok("0.0.0.0".to_owned());
        };
        let v = value.trim().trim_start_matches('[').trim_end_matches(']');
        if v.is_empty() {
            return Ok("0.0.0.0".to_owned());
        }
        let is_name = v
            .split('.')
            .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
        if v.parse::<IpAddr>().is_ok() || is_name {
            Ok(v.to_owned())
        } else {
            Err(Self::fail(
                name,
                value,
                "expected an IP address or a host name",
            ))
        }
    }

    fn port(&self, key: &str, default: u16) -> Result<u16, ConfigError> {
        Ok(self.int(key, u64::from(default), 0, 65535)? as u16)
    }

    fn duration(&self, key: &str, default: Duration) -> Result<Duration, ConfigError> {
        match self.raw(key) {
            None => Ok(default),
            Some((_, value)) if value.trim().is_empty() => Ok(default),
            Some((name, value)) => parse_duration(&value, Duration::from_millis(1))
                .map_err(|reason| Self::fail(name, value, reason)),
        }
    }

    /// A duration where zero or negative means "use the default" (REFERENCE §3.7).
    fn positive_duration(&self, key: &str, default: Duration) -> Result<Duration, ConfigError> {
        if let Some((_, value)) = self.raw(key) {
            let v = value.trim().to_ascii_uppercase();
            let negative = v.starts_with('-') || v.starts_with("PT-");
            if negative && parse_duration(&v.replacen('-', "", 1), Duration::from_millis(1)).is_ok()
            {
                return Ok(default);
            }
        }
        let d = self.duration(key, default)?;
        Ok(if d.is_zero() { default } else { d })
    }

    fn host_rules(&self, key: &str) -> Result<Option<Vec<HostRule>>, ConfigError> {
        let Some((name, value)) = self.raw(key) else {
            return Ok(None);
        };
        let mut rules = Vec::new();
        for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let rule = if let Ok(net) = item.parse::<IpNet>() {
                HostRule::Net(net)
            } else if let Ok(ip) = item.parse::<IpAddr>() {
                HostRule::Net(IpNet::from(ip))
            } else if item
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
            {
                HostRule::Name(item.to_ascii_lowercase())
            } else {
                return Err(Self::fail(
                    name,
                    value.clone(),
                    format!("'{item}' is neither a host name, an IP address nor a CIDR"),
                ));
            };
            rules.push(rule);
        }
        Ok(if rules.is_empty() { None } else { Some(rules) })
    }

    fn backend(&self, key: &str) -> Result<Option<DeploymentBackend>, ConfigError> {
        match self.raw(key) {
            None => Ok(None),
            Some((name, value)) => match value.trim() {
                "" => Ok(None),
                "k8s" => Ok(Some(DeploymentBackend::Kubernetes)),
                "container-local" => Ok(Some(DeploymentBackend::ContainerLocal)),
                _ => Err(Self::fail(name, value, "expected k8s or container-local")),
            },
        }
    }
}

/// Parses a duration as Spring does: `500ms`, `2s`, `5m`, `1h`, `1d`, `10us`, `10ns`, ISO-8601
/// (`PT2S`, `PT0.5S`, `P1DT2H`), or a bare number in `bare_unit`.
pub fn parse_duration(text: &str, bare_unit: Duration) -> Result<Duration, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("empty duration".to_owned());
    }
    if t.starts_with(['P', 'p']) {
        return parse_iso_duration(t).ok_or_else(|| "not an ISO-8601 duration".to_owned());
    }
    let split = t.find(|c: char| !(c.is_ascii_digit())).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| "expected a duration such as 500ms, 2s, 5m or PT2S".to_owned())?;
    let d = match unit.trim().to_ascii_lowercase().as_str() {
        "" => bare_unit.checked_mul(u32::try_from(n).map_err(|_| "duration too large")?),
        "ns" => Some(Duration::from_nanos(n)),
        "us" => Some(Duration::from_micros(n)),
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" => n.checked_mul(60).map(Duration::from_secs),
        "h" => n.checked_mul(3600).map(Duration::from_secs),
        "d" => n.checked_mul(86_400).map(Duration::from_secs),
        _ => return Err(format!("unknown duration unit '{unit}'")),
    };
    d.ok_or_else(|| "duration too large".to_owned())
}

/// Parses the ISO-8601 duration forms Java's `Duration.parse` accepts (`PnDTnHnMn.nS`), without a
/// sign. Returns `None` for anything else, including negative durations.
pub fn parse_iso_duration(text: &str) -> Option<Duration> {
    let upper = text.trim().to_ascii_uppercase();
    let rest = upper.strip_prefix('P')?;
    let (date, time) = match rest.split_once('T') {
        Some((d, t)) => {
            if t.is_empty() {
                return None;
            }
            (d, Some(t))
        }
        None => (rest, None),
    };
    if date.is_empty() && time.is_none() {
        return None;
    }
    let mut nanos: u128 = 0;
    if !date.is_empty() {
        let days = date.strip_suffix('D')?;
        nanos += days.parse::<u128>().ok()? * 86_400 * 1_000_000_000;
    }
    if let Some(mut t) = time {
        for (unit, scale) in [('H', 3600u128), ('M', 60), ('S', 1)] {
            if let Some(pos) = t.find(unit) {
                let number = &t[..pos];
                t = &t[pos + 1..];
                if unit == 'S' {
                    let (whole, frac) = number.split_once(['.', ',']).unwrap_or((number, ""));
                    if whole.is_empty() || frac.len() > 9 {
                        return None;
                    }
                    let w = whole.parse::<u128>().ok()?;
                    let f = if frac.is_empty() {
                        0
                    } else {
                        format!("{frac:0<9}").parse::<u128>().ok()?
                    };
                    nanos += w * 1_000_000_000 + f;
                } else {
                    nanos += number.parse::<u128>().ok()? * scale * 1_000_000_000;
                }
            }
        }
        if !t.is_empty() {
            return None;
        }
    }
    let secs = u64::try_from(nanos / 1_000_000_000).ok()?;
    Some(Duration::new(secs, (nanos % 1_000_000_000) as u32))
}

/// Formats a duration as Java's `Duration.toString` does: `PT2S`, `PT0.5S`, `PT1M30S`, `PT0S`.
pub fn format_iso_duration(d: Duration) -> String {
    let total = d.as_secs();
    let nanos = d.subsec_nanos();
    if total == 0 && nanos == 0 {
        return "PT0S".to_owned();
    }
    let hours = total / 3600;
    let minutes = (total % 3600) / 60;
    let secs = total % 60;
    let mut out = String::from("PT");
    if hours > 0 {
        out.push_str(&format!("{hours}H"));
    }
    if minutes > 0 {
        out.push_str(&format!("{minutes}M"));
    }
    if secs > 0 || nanos > 0 {
        out.push_str(&secs.to_string());
        if nanos > 0 {
            let frac = format!("{nanos:09}");
            out.push('.');
            out.push_str(frac.trim_end_matches('0'));
        }
        out.push('S');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn env_names_follow_the_canonical_and_relaxed_forms() {
        assert_eq!(
            env_names("nanofaas.rate.maxPerSecond"),
            vec!["NANOFAAS_RATE_MAX_PER_SECOND", "NANOFAAS_RATE_MAXPERSECOND"]
        );
        assert_eq!(
            env_names("sync-queue.max-depth"),
            vec![
                "NANOFAAS_SYNC_QUEUE_MAX_DEPTH",
                "NANOFAAS_SYNCQUEUE_MAXDEPTH",
                "SYNCQUEUE_MAXDEPTH",
                "SYNC_QUEUE_MAX_DEPTH"
            ]
        );
        assert_eq!(env_names("server.port"), vec!["SERVER_PORT"]);
        assert_eq!(
            env_names("management.server.port"),
            vec!["MANAGEMENT_SERVER_PORT"]
        );
        assert_eq!(
            env_names("nanofaas.k8s.callbackUrl")[0],
            "NANOFAAS_K8S_CALLBACK_URL"
        );
        assert_eq!(
            env_names("nanofaas.admin.runtime-config.enabled"),
            vec![
                "NANOFAAS_ADMIN_RUNTIME_CONFIG_ENABLED",
                "NANOFAAS_ADMIN_RUNTIMECONFIG_ENABLED"
            ]
        );
    }

    #[test]
    fn bind_addresses_and_listener_limits() {
        let c = config(&[]).unwrap();
        assert_eq!(
            (c.server_address.as_str(), c.management_address.as_str()),
            ("0.0.0.0", "0.0.0.0")
        );
        assert_eq!(c.listener.header_read_timeout, Duration::from_secs(10));
        assert_eq!(c.listener.idle_timeout, Duration::from_secs(60));
        assert_eq!(c.listener.api_max_connections, None);
        let c = config(&[
            ("SERVER_ADDRESS", "127.0.0.1"),
            ("MANAGEMENT_SERVER_ADDRESS", "[::1]"),
            ("NANOFAAS_HTTP_MAXCONNECTIONS", "32"),
            ("NANOFAAS_HTTP_HEADER_READ_TIMEOUT", "250ms"),
        ])
        .unwrap();
        assert_eq!(c.server_address, "127.0.0.1");
        assert_eq!(c.management_address, "::1");
        assert_eq!(c.listener.api_max_connections, Some(32));
        assert_eq!(c.listener.header_read_timeout, Duration::from_millis(250));
        let err = config(&[("SERVER_ADDRESS", "not an/address")]).unwrap_err();
        assert_eq!(err.variable, "SERVER_ADDRESS");
    }

    #[test]
    fn defaults_match_the_java_control_plane_as_decided() {
        let c = config(&[]).unwrap();
        assert_eq!(c.server_port, 8080);
        assert_eq!(c.management_port, 8081);
        assert_eq!(
            c.defaults,
            FunctionDefaults {
                timeout_ms: 30_000,
                concurrency: 4,
                queue_size: 100,
                max_retries: 3
            }
        );
        assert_eq!(c.rate_max_per_second, 1000);
        assert_eq!(c.execution_store.ttl, Duration::from_secs(300));
        assert_eq!(c.execution_store.cleanup_ttl, Duration::from_secs(120));
        assert_eq!(c.execution_store.max_lifetime, Duration::from_secs(1800));
        assert_eq!(c.execution_store.max_entries, 100_000);
        assert_eq!(c.http_client.connect_timeout, Duration::from_secs(5));
        assert_eq!(c.http_client.max_response_bytes, 16 << 20);
        assert!(!c.async_queue_enabled && !c.sync_queue.enabled);
        assert_eq!(c.sync_queue.max_depth, 200);
        assert_eq!(c.pool_allowed_hosts, None);
        assert_eq!(c.deployment_default_backend, None);
        assert!(!c.autoscaler_enabled);
        assert_eq!(
            c.scaling,
            ScalingConfig {
                poll_interval: Duration::from_secs(5),
                default_target_in_flight_per_pod: 2,
                scale_up_cooldown: Duration::from_secs(30),
                scale_down_cooldown: Duration::from_secs(60),
            }
        );
    }

    #[test]
    fn autoscaler_settings_are_read_from_their_variables() {
        assert_eq!(
            env_names("nanofaas.scaling.scale-up-cooldown")[0],
            "NANOFAAS_SCALING_SCALE_UP_COOLDOWN"
        );
        let c = config(&[
            ("NANOFAAS_AUTOSCALER_ENABLED", "true"),
            ("NANOFAAS_SCALING_POLL_INTERVAL_MS", "200"),
            ("NANOFAAS_SCALING_SCALE_UP_COOLDOWN", "1s"),
            ("NANOFAAS_SCALING_SCALE_DOWN_COOLDOWN", "1500"),
        ])
        .unwrap();
        assert!(c.autoscaler_enabled);
        assert_eq!(c.scaling.poll_interval, Duration::from_millis(200));
        assert_eq!(c.scaling.scale_up_cooldown, Duration::from_secs(1));
        assert_eq!(c.scaling.scale_down_cooldown, Duration::from_millis(1500));
        // Spring's relaxed form, and ISO-8601; zero turns the cooldown off.
        let c = config(&[
            ("NANOFAAS_SCALING_SCALEUPCOOLDOWN", "PT0.5S"),
            ("NANOFAAS_SCALING_SCALE_DOWN_COOLDOWN", "0"),
        ])
        .unwrap();
        assert_eq!(c.scaling.scale_up_cooldown, Duration::from_millis(500));
        assert_eq!(c.scaling.scale_down_cooldown, Duration::ZERO);
        let err = config(&[("NANOFAAS_SCALING_SCALE_DOWN_COOLDOWN", "soon")]).unwrap_err();
        assert_eq!(err.variable, "NANOFAAS_SCALING_SCALE_DOWN_COOLDOWN");
    }

    #[test]
    fn canonical_name_wins_over_relaxed_form() {
        let c = config(&[
            ("NANOFAAS_RATE_MAXPERSECOND", "5"),
            ("NANOFAAS_RATE_MAX_PER_SECOND", "7"),
        ])
        .unwrap();
        assert_eq!(c.rate_max_per_second, 7);
        let c = config(&[("NANOFAAS_RATE_MAXPERSECOND", "5")]).unwrap();
        assert_eq!(c.rate_max_per_second, 5);
        let c = config(&[("SYNC_QUEUE_MAX_DEPTH", "9")]).unwrap();
        assert_eq!(c.sync_queue.max_depth, 9);
    }

    #[test]
    fn invalid_values_name_the_variable_and_value() {
        let err = config(&[("NANOFAAS_DEFAULTS_TIMEOUT_MS", "soon")]).unwrap_err();
        assert_eq!(err.variable, "NANOFAAS_DEFAULTS_TIMEOUT_MS");
        assert_eq!(err.value, "soon");
        assert!(err.to_string().contains("NANOFAAS_DEFAULTS_TIMEOUT_MS"));
        let err = config(&[("NANOFAAS_ASYNC_QUEUE_ENABLED", "yes")]).unwrap_err();
        assert_eq!(err.variable, "NANOFAAS_ASYNC_QUEUE_ENABLED");
        let err = config(&[("SERVER_PORT", "70000")]).unwrap_err();
        assert_eq!(err.variable, "SERVER_PORT");
        // A negative integer is out of range, not "not an integer".
        let err = config(&[("NANOFAAS_RATE_MAX_PER_SECOND", "-1")]).unwrap_err();
        assert!(
            err.to_string()
                .contains("expected an integer between 0 and"),
            "{err}"
        );
        let err = config(&[("NANOFAAS_DEFAULTS_CONCURRENCY", "0")]).unwrap_err();
        assert_eq!(err.variable, "NANOFAAS_DEFAULTS_CONCURRENCY");
        let err = config(&[("NANOFAAS_DEPLOYMENT_DEFAULT_BACKEND", "nomad")]).unwrap_err();
        assert_eq!(err.value, "nomad");
        let err = config(&[("NANOFAAS_POOL_ALLOWED_HOSTS", "ok.example, bad host")]).unwrap_err();
        assert_eq!(err.variable, "NANOFAAS_POOL_ALLOWED_HOSTS");
    }

    #[test]
    fn sync_queue_enables_the_async_queue() {
        let c = config(&[("NANOFAAS_SYNC_QUEUE_ENABLED", "TRUE")]).unwrap();
        assert!(c.sync_queue.enabled && c.async_queue_enabled);
    }

    #[test]
    fn durations_parse_like_spring() {
        let ms = Duration::from_millis(1);
        assert_eq!(parse_duration("500ms", ms), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s", ms), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("5m", ms), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("PT2S", ms), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("pt0.5s", ms), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1500", ms), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("2 fortnights", ms).is_err());
        assert!(parse_duration("P", ms).is_err());
        let c = config(&[("NANOFAAS_EXECUTION_STORE_TTL", "10s")]).unwrap();
        assert_eq!(c.execution_store.ttl, Duration::from_secs(10));
        let c = config(&[("NANOFAAS_EXECUTION_STORE_TTL", "0")]).unwrap();
        assert_eq!(c.execution_store.ttl, Duration::from_secs(300));
        let c = config(&[("NANOFAAS_EXECUTION_STORE_TTL", "-5s")]).unwrap();
        assert_eq!(c.execution_store.ttl, Duration::from_secs(300));
        // Non-positive HTTP client settings fall back to their defaults, as in Java.
        let c = config(&[
            ("NANOFAAS_HTTP_CLIENT_CONNECT_TIMEOUT_MS", "0"),
            ("NANOFAAS_HTTP_CLIENT_READ_TIMEOUT_MS", "-1"),
            ("NANOFAAS_HTTP_CLIENT_MAX_IN_MEMORY_SIZE_MB", "-1"),
        ])
        .unwrap();
        assert_eq!(c.http_client.connect_timeout, Duration::from_secs(5));
        assert_eq!(c.http_client.read_timeout, Duration::from_secs(30));
        assert_eq!(c.http_client.max_response_bytes, 16 << 20);
        let c = config(&[("NANOFAAS_HTTP_CLIENT_CONNECT_TIMEOUT_MS", "250")]).unwrap();
        assert_eq!(c.http_client.connect_timeout, Duration::from_millis(250));
    }

    #[test]
    fn iso_durations_round_trip_like_java() {
        for (text, d) in [
            ("PT2S", Duration::from_secs(2)),
            ("PT0.5S", Duration::from_millis(500)),
            ("PT1M30S", Duration::from_secs(90)),
            ("PT1H", Duration::from_secs(3600)),
            ("PT0S", Duration::ZERO),
        ] {
            assert_eq!(parse_iso_duration(text), Some(d), "{text}");
            assert_eq!(format_iso_duration(d), text);
        }
        assert_eq!(
            parse_iso_duration("P1DT1S"),
            Some(Duration::from_secs(86_401))
        );
        assert_eq!(parse_iso_duration("5s"), None);
        assert_eq!(parse_iso_duration("PT"), None);
        assert_eq!(parse_iso_duration("PT5X"), None);
    }

    #[test]
    fn allowed_hosts_match_names_and_networks() {
        let c = config(&[(
            "NANOFAAS_POOL_ALLOWED_HOSTS",
            "runtime.internal, 10.0.0.0/8,127.0.0.1",
        )])
        .unwrap();
        let rules = c.pool_allowed_hosts.unwrap();
        let allowed = |h: &str| rules.iter().any(|r| r.matches(h));
        assert!(allowed("RUNTIME.internal"));
        assert!(allowed("10.2.3.4"));
        assert!(allowed("127.0.0.1"));
        assert!(!allowed("127.0.0.2"));
        assert!(!allowed("evil.example"));
    }

    #[test]
    fn kubernetes_namespace_and_callback_url_fall_back_in_order() {
        let c = config(&[]).unwrap();
        assert_eq!(c.k8s.effective_namespace(), "default");
        assert_eq!(
            c.k8s.effective_callback_url(),
            "http://control-plane.default.svc.cluster.local:8080/v1/internal/executions"
        );
        assert_eq!(c.k8s.image_pull_policy, "Always");
        let c = config(&[("POD_NAMESPACE", " nanofaas ")]).unwrap();
        assert_eq!(c.k8s.effective_namespace(), "nanofaas");
        assert_eq!(
            c.k8s.effective_callback_url(),
            "http://control-plane.nanofaas.svc.cluster.local:8080/v1/internal/executions"
        );
        let c = config(&[
            ("POD_NAMESPACE", "nanofaas"),
            ("NANOFAAS_K8S_NAMESPACE", "functions"),
            (
                "NANOFAAS_K8S_CALLBACK_URL",
                "http://cp.example:8080/v1/internal/executions",
            ),
            ("NANOFAAS_K8S_IMAGE_PULL_POLICY", "IfNotPresent"),
        ])
        .unwrap();
        assert_eq!(c.k8s.effective_namespace(), "functions");
        assert_eq!(
            c.k8s.effective_callback_url(),
            "http://cp.example:8080/v1/internal/executions"
        );
        assert_eq!(c.k8s.image_pull_policy, "IfNotPresent");
    }
}
