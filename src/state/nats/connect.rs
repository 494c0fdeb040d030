//! The connection to NATS: settings → a connected client and JetStream context, and a reporter
//! of the connection state for the health endpoint and metrics.
//!
//! Reconnection belongs to the client: `retry_on_initial_connect` makes `connect` return at once
//! and the client keeps trying in the background, with no cap on reconnect attempts, both at
//! start-up and after a loss. Start-up waits for the first connection only up to
//! `connect_timeout`, so a missing broker ends the process with a clear message instead of a
//! replica that never becomes ready.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream;
use tokio::sync::watch;

use super::names::{InvalidPrefix, Names};

/// How to reach NATS (`NANOFAAS_NATS_*`).
#[derive(Clone)]
pub struct NatsSettings {
    /// Server URLs (`nats://host:port`, `tls://…`); the client picks among them on reconnect.
    pub urls: Vec<String>,
    /// Prefix of every stream, bucket and subject name.
    pub prefix: String,
    pub creds_file: Option<PathBuf>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    /// A CA bundle (PEM) to trust for the server's certificate.
    pub tls_ca_file: Option<PathBuf>,
    /// Refuse a connection that is not TLS.
    pub tls_required: bool,
    /// Bound on the first connection at start-up.
    pub connect_timeout: Duration,
    /// Bound on every JetStream API call and publish acknowledgement.
    pub request_timeout: Duration,
    /// The connection name the server shows (`NANOFAAS_REPLICA_ID`).
    pub client_name: String,
}

// Secrets stay out of logs: Debug names which credentials are set, never their values.
impl std::fmt::Debug for NatsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsSettings")
            .field("urls", &self.urls)
            .field("prefix", &self.prefix)
            .field("creds_file", &self.creds_file)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<set>"))
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("tls_ca_file", &self.tls_ca_file)
            .field("tls_required", &self.tls_required)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("client_name", &self.client_name)
            .finish()
    }
}

impl NatsSettings {
    /// Settings for `url` (comma-separated URLs allowed) with the documented defaults.
    pub fn new(url: &str) -> NatsSettings {
        NatsSettings {
            urls: url
                .split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(str::to_owned)
                .collect(),
            prefix: "nanofaas".to_owned(),
            creds_file: None,
            user: None,
            password: None,
            token: None,
            tls_ca_file: None,
            tls_required: false,
            connect_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(5),
            client_name: "nanofaas-control-plane".to_owned(),
        }
    }

    /// The URLs as one string for logs and error messages.
    pub fn url_list(&self) -> String {
        self.urls.join(",")
    }
}

/// Why the control plane could not get a usable connection at start-up.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("NANOFAAS_NATS_URL is empty")]
    NoUrl,
    #[error(transparent)]
    Prefix(#[from] InvalidPrefix),
    #[error("NATS user and password must be set together")]
    HalfUserPassword,
    #[error("reading the NATS credentials file {path}: {source}")]
    CredsFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid NATS connect options for {url}: {source}")]
    Options {
        url: String,
        #[source]
        source: async_nats::ConnectError,
    },
    #[error("NATS at {url} not reachable within {after:?} (last error: {last_error})")]
    Timeout {
        url: String,
        after: Duration,
        last_error: String,
    },
    #[error(
        "NATS at {url} has no JetStream for this account (start nats-server with -js): {source}"
    )]
    NoJetStream {
        url: String,
        #[source]
        source: async_nats::jetstream::context::AccountError,
    },
}

/// The client's connection state as the health endpoint shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionState {
    /// Never connected yet (start-up).
    Connecting,
    Connected,
    /// Lost; the client is reconnecting.
    Disconnected,
}

impl ConnectionState {
    pub fn is_up(self) -> bool {
        self == ConnectionState::Connected
    }
}

#[derive(Debug, Default)]
struct Counters {
    connects: AtomicU64,
    disconnects: AtomicU64,
}

/// Cheap, cloneable view of the connection for health and metrics.
#[derive(Clone)]
pub struct ConnectionReporter {
    state: watch::Receiver<ConnectionState>,
    counters: Arc<Counters>,
}

impl ConnectionReporter {
    pub fn state(&self) -> ConnectionState {
        *self.state.borrow()
    }

    /// Connections re-established after a loss (the first connection is not counted).
    pub fn reconnects(&self) -> u64 {
        self.counters
            .connects
            .load(Ordering::Relaxed)
            .saturating_sub(1)
    }

    /// Connection losses seen.
    pub fn disconnects(&self) -> u64 {
        self.counters.disconnects.load(Ordering::Relaxed)
    }

    /// Resolves at the next state change; `None` once the client is gone.
    pub async fn changed(&mut self) -> Option<ConnectionState> {
        self.state.changed().await.ok()?;
        Some(*self.state.borrow_and_update())
    }

    /// Waits until connected, at most `within`; whether it is.
    pub async fn wait_connected(&mut self, within: Duration) -> bool {
        tokio::time::timeout(within, self.state.wait_for(|s| s.is_up()))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

/// A connected client with its JetStream context and the names of this control plane's state.
#[derive(Clone)]
pub struct NatsConnection {
    pub client: async_nats::Client,
    pub jetstream: jetstream::Context,
    pub names: Names,
    reporter: ConnectionReporter,
}

impl std::fmt::Debug for NatsConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsConnection")
            .field("names", &self.names)
            .field("state", &self.reporter.state())
            .finish()
    }
}

impl NatsConnection {
    /// Connects, waiting for the first connection at most `settings.connect_timeout` (each
    /// failed attempt is logged with the URL), then checks that JetStream answers.
    pub async fn connect(settings: &NatsSettings) -> Result<NatsConnection, ConnectError> {
        let names = Names::new(&settings.prefix)?;
        if settings.urls.is_empty() {
            return Err(ConnectError::NoUrl);
        }
        let url = settings.url_list();
        let (state_tx, state_rx) = watch::channel(ConnectionState::Connecting);
        let counters = Arc::new(Counters::default());
        let (error_tx, error_rx) = watch::channel(String::from("none yet"));
        let options = connect_options(settings, state_tx, counters.clone(), error_tx).await?;
        let client = options
            .connect(settings.urls.as_slice())
            .await
            .map_err(|source| ConnectError::Options {
                url: url.clone(),
                source,
            })?;
        let mut reporter = ConnectionReporter {
            state: state_rx,
            counters,
        };
        if !reporter.wait_connected(settings.connect_timeout).await {
            let last_error = error_rx.borrow().clone();
            // The background task would otherwise keep retrying in a process about to exit.
            drop(client);
            return Err(ConnectError::Timeout {
                url,
                after: settings.connect_timeout,
                last_error,
            });
        }
        let jetstream = jetstream::ContextBuilder::new()
            .timeout(settings.request_timeout)
            .build(client.clone());
        jetstream
            .query_account()
            .await
            .map_err(|source| ConnectError::NoJetStream {
                url: url.clone(),
                source,
            })?;
        tracing::info!(%url, prefix = names.prefix(), "connected to NATS JetStream");
        Ok(NatsConnection {
            client,
            jetstream,
            names,
            reporter,
        })
    }

    pub fn reporter(&self) -> ConnectionReporter {
        self.reporter.clone()
    }

    pub fn state(&self) -> ConnectionState {
        self.reporter.state()
    }
}

async fn connect_options(
    settings: &NatsSettings,
    state: watch::Sender<ConnectionState>,
    counters: Arc<Counters>,
    last_error: watch::Sender<String>,
) -> Result<async_nats::ConnectOptions, ConnectError> {
    let mut options = async_nats::ConnectOptions::new();
    if let Some(path) = &settings.creds_file {
        options =
            options
                .credentials_file(path)
                .await
                .map_err(|source| ConnectError::CredsFile {
                    path: path.clone(),
                    source,
                })?;
    }
    match (&settings.user, &settings.password) {
        (Some(user), Some(password)) => {
            options = options.user_and_password(user.clone(), password.clone());
        }
        (None, None) => {}
        _ => return Err(ConnectError::HalfUserPassword),
    }
    if let Some(token) = &settings.token {
        options = options.token(token.clone());
    }
    if let Some(ca) = &settings.tls_ca_file {
        options = options.add_root_certificates(ca.clone());
    }
    let url = settings.url_list();
    Ok(options
        .require_tls(settings.tls_required)
        .name(&settings.client_name)
        .retry_on_initial_connect()
        .max_reconnects(None)
        // One attempt's TCP/TLS handshake; the start-up bound is `connect_timeout`.
        .connection_timeout(settings.connect_timeout.min(Duration::from_secs(5)))
        .request_timeout(Some(settings.request_timeout))
        .event_callback(move |event| {
            let changed = match event {
                async_nats::Event::Connected => {
                    counters.connects.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(url = %url, "NATS connected");
                    Some(ConnectionState::Connected)
                }
                async_nats::Event::Disconnected => {
                    counters.disconnects.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(url = %url, "NATS connection lost; reconnecting");
                    Some(ConnectionState::Disconnected)
                }
                async_nats::Event::Closed => Some(ConnectionState::Disconnected),
                async_nats::Event::ClientError(err) => {
                    tracing::warn!(url = %url, error = %err, "NATS connection attempt failed");
                    last_error.send_replace(err.to_string());
                    None
                }
                async_nats::Event::ServerError(err) => {
                    tracing::warn!(url = %url, error = %err, "NATS server error");
                    last_error.send_replace(err.to_string());
                    None
                }
                other => {
                    tracing::info!(url = %url, event = %other, "NATS event");
                    None
                }
            };
            if let Some(new) = changed {
                state.send_replace(new);
            }
            async {}
        }))
}
