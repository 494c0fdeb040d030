//! The listeners of both ports: the accept loop with its connection cap, per-connection timeouts
//! (request head, body, idle keep-alive), the early 413 for a declared oversized body, JSON bodies
//! for the errors hyper's parser answers by itself, and draining at shutdown.
//!
//! Each port has its own cap, so a saturated API port never starves the management port (health
//! checks, scrapes). A connection over the cap is not accepted: it waits in the kernel's backlog.

mod connection;
mod parse_error;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::HttpService;
use crate::config::Config;

/// File descriptors kept out of the API port's derived cap: the management port's connections,
/// the process's own files, the listeners, the Docker/Kubernetes clients.
const RESERVED_FDS: u64 = 256;

/// How one port treats its connections.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub idle_timeout: Duration,
    /// A request declaring a longer body gets 413 before any of it is read.
    pub max_body_bytes: Option<usize>,
}

impl Limits {
    pub fn api(config: &Config) -> Limits {
        let listener = &config.listener;
        Limits {
            max_connections: listener.api_max_connections.unwrap_or_else(|| {
                derived_api_cap(open_files_limit(), listener.management_max_connections)
            }),
            header_read_timeout: listener.header_read_timeout,
            body_read_timeout: listener.body_read_timeout,
            idle_timeout: listener.idle_timeout,
            max_body_bytes: Some(config.max_request_body_bytes),
        }
    }

    pub fn management(config: &Config) -> Limits {
        let listener = &config.listener;
        Limits {
            max_connections: listener.management_max_connections,
            header_read_timeout: listener.header_read_timeout,
            body_read_timeout: listener.body_read_timeout,
            idle_timeout: listener.idle_timeout,
            max_body_bytes: Some(config.max_request_body_bytes),
        }
    }
}

/// The API port's cap when none is configured: half of what the file-descriptor limit leaves
/// after the management port and a reserve, since each API request in flight may also hold an
/// outbound connection to a runtime.
fn derived_api_cap(fd_limit: u64, management_cap: usize) -> usize {
    let spare = fd_limit.saturating_sub(RESERVED_FDS + management_cap as u64);
    (spare / 2).clamp(16, 1 << 24) as usize
}

/// The soft `RLIMIT_NOFILE` (1024 when it cannot be read, the usual default).
pub fn open_files_limit() -> u64 {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit only writes the struct we own.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
            // `rlim_t` is not u64 on every platform.
            #[allow(clippy::unnecessary_cast)]
            return limit.rlim_cur as u64;
        }
    }
    1024
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit, as the JVM and Go runtimes do at start: a
/// soft limit of 1024 (systemd's default) would let a thousand idle clients exhaust the
/// descriptors. Returns the soft limit in force afterwards.
pub fn raise_open_files_limit() -> std::io::Result<u64> {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit read and write only the struct we own.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if limit.rlim_cur < limit.rlim_max {
                let raised = libc::rlimit {
                    rlim_cur: limit.rlim_max,
                    rlim_max: limit.rlim_max,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
        }
    }
    Ok(open_files_limit())
}

/// Serves `service` on `listener` until `stop` is cancelled, then drains: connections with no
/// request in progress close at once, requests in progress finish (the caller bounds the wait by
/// the grace period). Returns when every connection is closed.
pub async fn serve(
    listener: TcpListener,
    service: impl HttpService,
    limits: Limits,
    stop: CancellationToken,
) {
    let limits = Arc::new(limits);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let connections = TaskTracker::new();
    loop {
        let slot = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        let stream = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
        };
        connections.spawn(connection::serve(
            stream,
            service.clone(),
            limits.clone(),
            stop.clone(),
            slot,
        ));
    }
    // New connections are refused from here on.
    drop(listener);
    connections.close();
    connections.wait().await;
}

/// A failed `accept`: a peer that went away is nothing; anything else (out of descriptors) is
/// logged and retried after a pause rather than in a busy loop.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accept failed");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_derived_api_cap_leaves_room_for_management_and_runtimes() {
        assert_eq!(super::derived_api_cap(1024, 64), 352);
        assert_eq!(super::derived_api_cap(1_048_576, 64), 524_128);
        assert_eq!(super::derived_api_cap(100, 64), 16);
    }
}
