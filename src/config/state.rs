//! The state backend settings (issue 9): `NANOFAAS_STATE_BACKEND` and, for `nats`, how to reach
//! NATS JetStream. The adapter in `state::nats` turns them into its connection settings; this
//! module only reads and validates.

use std::path::PathBuf;
use std::time::Duration;

use super::ConfigError;
use super::env::Reader;

/// Where the control plane keeps its shared state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StateBackendKind {
    /// Everything in this process's memory (the default; no NATS code runs).
    #[default]
    Memory,
    /// NATS JetStream: registry, durable queue, execution records and leases shared by replicas.
    Nats,
}

/// `nanofaas.nats.*`: how to reach NATS. Read whatever the backend, used only with `nats`.
#[derive(Clone, PartialEq)]
pub struct NatsConfig {
    /// `NANOFAAS_NATS_URL`: one or more comma-separated server URLs.
    pub urls: Vec<String>,
    /// `NANOFAAS_NATS_PREFIX`: prefix of every stream, bucket and subject.
    pub prefix: String,
    pub creds_file: Option<PathBuf>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    pub tls_ca_file: Option<PathBuf>,
    pub tls_required: bool,
    /// Start-up bound: not connected within this, the process exits.
    pub connect_timeout: Duration,
    /// `NANOFAAS_NATS_REPLICAS`: copies JetStream keeps of every stream and bucket (1 on a single
    /// server, 3 in a three-node cluster).
    pub replicas: usize,
    /// `NANOFAAS_NATS_LEASE_TTL`: the leader lease's lifetime; a dead leader is replaced within
    /// about this (docs/ha.md).
    pub lease_ttl: Duration,
}

// Secrets stay out of logs and panic messages.
impl std::fmt::Debug for NatsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = |v: &Option<String>| v.as_ref().map(|_| "<set>");
        f.debug_struct("NatsConfig")
            .field("urls", &self.urls)
            .field("prefix", &self.prefix)
            .field("creds_file", &self.creds_file)
            .field("user", &self.user)
            .field("password", &set(&self.password))
            .field("token", &set(&self.token))
            .field("tls_ca_file", &self.tls_ca_file)
            .field("tls_required", &self.tls_required)
            .field("connect_timeout", &self.connect_timeout)
            .field("replicas", &self.replicas)
            .field("lease_ttl", &self.lease_ttl)
            .finish()
    }
}

/// The state backend and, for `nats`, its connection and this replica's identity.
#[derive(Debug, Clone, PartialEq)]
pub struct StateConfig {
    pub backend: StateBackendKind,
    pub nats: NatsConfig,
    /// `NANOFAAS_REPLICA_ID`: this replica's name in NATS (connection name, lease holder).
    /// Unset = derived at start-up from the host name and a random suffix (`state::nats`), so
    /// two processes on one host differ.
    pub replica_id: Option<String>,
}

pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";
/// JetStream allows at most 5 replicas of a stream.
const MAX_NATS_REPLICAS: u64 = 5;
const MAX_PREFIX: usize = 32;

pub(super) fn read(r: &Reader<'_>) -> Result<StateConfig, ConfigError> {
    let backend = match r.raw("nanofaas.state.backend") {
        None => StateBackendKind::Memory,
        Some((name, value)) => match value.trim().to_ascii_lowercase().as_str() {
            "" | "memory" => StateBackendKind::Memory,
            "nats" => StateBackendKind::Nats,
            _ => return Err(Reader::fail(name, value, "expected memory or nats")),
        },
    };
    let urls = match r.raw("nanofaas.nats.url") {
        None => vec![DEFAULT_NATS_URL.to_owned()],
        Some((name, value)) => {
            let urls: Vec<String> = value
                .split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(str::to_owned)
                .collect();
            if let Some(bad) = urls.iter().find(|u| !valid_server_url(u)) {
                return Err(Reader::fail(
                    name,
                    value.clone(),
                    format!("'{bad}' is not a NATS URL (nats://host:port, tls://host:port)"),
                ));
            }
            if urls.is_empty() {
                vec![DEFAULT_NATS_URL.to_owned()]
            } else {
                urls
            }
        }
    };
    let prefix = match r.raw("nanofaas.nats.prefix") {
        Some((name, value)) if !value.trim().is_empty() => {
            let p = value.trim();
            let ok = p.len() <= MAX_PREFIX
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !ok {
                return Err(Reader::fail(
                    name,
                    value.clone(),
                    "expected 1-32 characters of [A-Za-z0-9_-]",
                ));
            }
            p.to_owned()
        }
        _ => "nanofaas".to_owned(),
    };
    let user = r.string("nanofaas.nats.user");
    let password = r.string("nanofaas.nats.password");
    if user.is_some() != password.is_some() {
        let (missing, given) = if user.is_some() {
            ("NANOFAAS_NATS_PASSWORD", "nanofaas.nats.user")
        } else {
            ("NANOFAAS_NATS_USER", "nanofaas.nats.password")
        };
        let (name, _) = r.raw(given).unwrap_or_default();
        // The value may be a secret: never echo it.
        return Err(Reader::fail(
            name,
            "<set>".to_owned(),
            format!("{missing} must be set too"),
        ));
    }
    let replica_id = match r.raw("nanofaas.replica-id") {
        Some((name, value)) if !value.trim().is_empty() => {
            let id = value.trim();
            let ok = id.len() <= 128
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
            if !ok {
                return Err(Reader::fail(
                    name,
                    value.clone(),
                    "expected at most 128 characters of [A-Za-z0-9_.-]",
                ));
            }
            Some(id.to_owned())
        }
        _ => None,
    };
    let lease_ttl = r.positive_duration("nanofaas.nats.lease-ttl", Duration::from_secs(10))?;
    if lease_ttl < Duration::from_secs(1) {
        // Renewed every TTL/3 against a broker whose expiry timer lags by up to ~0.3 s.
        let (name, value) = r.raw("nanofaas.nats.lease-ttl").unwrap_or_default();
        return Err(Reader::fail(name, value, "expected at least 1s"));
    }
    Ok(StateConfig {
        backend,
        nats: NatsConfig {
            urls,
            prefix,
            creds_file: r.string("nanofaas.nats.creds-file").map(PathBuf::from),
            user,
            password,
            token: r.string("nanofaas.nats.token"),
            tls_ca_file: r.string("nanofaas.nats.tls-ca-file").map(PathBuf::from),
            tls_required: r.bool("nanofaas.nats.tls-required", false)?,
            connect_timeout: r
                .positive_duration("nanofaas.nats.connect-timeout", Duration::from_secs(30))?,
            replicas: r.int("nanofaas.nats.replicas", 1, 1, MAX_NATS_REPLICAS)? as usize,
            lease_ttl,
        },
        replica_id,
    })
}

/// `scheme://host[:port]` with a NATS scheme, or a bare `host:port` (the client's own default
/// scheme is `nats`).
fn valid_server_url(u: &str) -> bool {
    let with_scheme = if u.contains("://") {
        u.to_owned()
    } else {
        format!("nats://{u}")
    };
    match reqwest::Url::parse(&with_scheme) {
        Ok(url) => {
            matches!(url.scheme(), "nats" | "tls" | "ws" | "wss")
                && url.host_str().is_some_and(|h| !h.is_empty())
        }
        Err(_) => false,
    }
}
