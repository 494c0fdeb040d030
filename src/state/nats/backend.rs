//! The NATS backend as the app holds it: settings from the configuration, this replica's id, and
//! the connection once start-up made it. `lib.rs` builds one [`NatsBackend`] when
//! `NANOFAAS_STATE_BACKEND=nats`, keeps it in `AppState::nats`, and calls
//! [`NatsBackend::connect`] from `serve` after the ports are bound; the other adapters
//! (catalog, queue, leases, callbacks) take their [`NatsConnection`] from [`NatsBackend::connection`].
//!
//! Before the connection exists (start-up) and whenever the client is reconnecting, the backend
//! reports itself down: the health component says so and the adapters answer "unavailable".

use std::sync::OnceLock;

use serde_json::json;

use super::Placement;
use super::connect::{ConnectError, ConnectionState, NatsConnection, NatsSettings};
use crate::config::Config;

pub struct NatsBackend {
    settings: NatsSettings,
    placement: Placement,
    replica_id: String,
    connection: OnceLock<NatsConnection>,
}

impl std::fmt::Debug for NatsBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsBackend")
            .field("settings", &self.settings)
            .field("replica_id", &self.replica_id)
            .field("state", &self.state())
            .finish()
    }
}

impl NatsBackend {
    /// The backend for `config.state` (no I/O: nothing connects before `connect`).
    pub fn new(config: &Config) -> NatsBackend {
        let nats = &config.state.nats;
        let replica_id = config
            .state
            .replica_id
            .clone()
            .unwrap_or_else(default_replica_id);
        let mut settings = NatsSettings::new(&nats.urls.join(","));
        settings.prefix = nats.prefix.clone();
        settings.creds_file = nats.creds_file.clone();
        settings.user = nats.user.clone();
        settings.password = nats.password.clone();
        settings.token = nats.token.clone();
        settings.tls_ca_file = nats.tls_ca_file.clone();
        settings.tls_required = nats.tls_required;
        settings.connect_timeout = nats.connect_timeout;
        settings.client_name = replica_id.clone();
        NatsBackend {
            settings,
            placement: Placement {
                replicas: nats.replicas,
            },
            replica_id,
            connection: OnceLock::new(),
        }
    }

    /// Connects (bounded by `NANOFAAS_NATS_CONNECT_TIMEOUT`, each failed attempt logged with the
    /// URL) and keeps the connection for the adapters. Called once, by `serve`.
    pub async fn connect(&self) -> Result<&NatsConnection, ConnectError> {
        if let Some(conn) = self.connection.get() {
            return Ok(conn);
        }
        tracing::info!(
            url = %self.display_url(),
            prefix = %self.settings.prefix,
            replica = %self.replica_id,
            within = ?self.settings.connect_timeout,
            "connecting to NATS"
        );
        let conn = NatsConnection::connect(&self.settings).await?;
        Ok(self.connection.get_or_init(|| conn))
    }

    /// The connection, once start-up made it (it reconnects by itself after that).
    pub fn connection(&self) -> Option<&NatsConnection> {
        self.connection.get()
    }

    /// This replica's name (connection name, lease holder).
    pub fn replica_id(&self) -> &str {
        &self.replica_id
    }

    /// How many copies JetStream keeps of each stream and bucket (`NANOFAAS_NATS_REPLICAS`).
    pub fn placement(&self) -> Placement {
        self.placement
    }

    pub fn state(&self) -> ConnectionState {
        self.connection
            .get()
            .map_or(ConnectionState::Connecting, NatsConnection::state)
    }

    /// Connected now: writes may be tried. Adapters answer "unavailable" otherwise instead of
    /// letting a request wait out the client's request timeout.
    pub fn is_up(&self) -> bool {
        self.state().is_up()
    }

    /// (reconnects, disconnects) since start.
    pub fn connection_counts(&self) -> (u64, u64) {
        self.connection.get().map_or((0, 0), |c| {
            let r = c.reporter();
            (r.reconnects(), r.disconnects())
        })
    }

    /// The `nats` health component: up, and details (URL without credentials, state, counts).
    pub fn health(&self) -> (bool, serde_json::Value) {
        let state = self.state();
        let (reconnects, disconnects) = self.connection_counts();
        let state_name = match state {
            ConnectionState::Connecting => "CONNECTING",
            ConnectionState::Connected => "CONNECTED",
            ConnectionState::Disconnected => "RECONNECTING",
        };
        (
            state.is_up(),
            json!({
                "url": self.display_url(),
                "prefix": self.settings.prefix,
                "replica": self.replica_id,
                "connection": state_name,
                "reconnects": reconnects,
                "disconnects": disconnects,
            }),
        )
    }

    /// The server URLs with any `user:password@` removed, for logs and health.
    pub fn display_url(&self) -> String {
        self.settings
            .urls
            .iter()
            .map(|u| redact_userinfo(u))
            .collect::<Vec<_>>()
            .join(",")
    }
}

fn redact_userinfo(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((_, host)) => format!("{scheme}://{host}"),
            None => url.to_owned(),
        },
        None => url.rsplit_once('@').map_or(url, |(_, h)| h).to_owned(),
    }
}

/// `<host name>-<6 random hex>`: readable in `nats server report connections`, and distinct for
/// two processes on one host (the random part), so leases and logs tell replicas apart.
fn default_replica_id() -> String {
    let host = host_name().unwrap_or_else(|| "nanofaas".to_owned());
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}", &random[..6])
}

fn host_name() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates on success (and we
    // stop at the buffer end if it did not).
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name: String = String::from_utf8_lossy(&buf[..end])
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .collect();
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_shown() {
        assert_eq!(redact_userinfo("nats://u:p@h:4222"), "nats://h:4222");
        assert_eq!(redact_userinfo("tls://h:4222"), "tls://h:4222");
        assert_eq!(redact_userinfo("tok@h:4222"), "h:4222");
    }

    #[test]
    fn replica_ids_differ_on_one_host() {
        assert_ne!(default_replica_id(), default_replica_id());
    }
}
