//! Retry backoff (issue 11, item 2): `NANOFAAS_RETRY_BACKOFF_INITIAL` and
//! `NANOFAAS_RETRY_BACKOFF_MAX`. Unset (the default) means Java's behaviour: a failed attempt is
//! retried at once. The invocation service turns these into its backoff policy; this module only
//! reads and validates.

use std::time::Duration;

use super::ConfigError;
use super::env::Reader;

/// `nanofaas.retry.backoff.*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetryConfig {
    /// The cap of the first retry's delay; zero = no backoff (every retry at once).
    pub backoff_initial: Duration,
    /// The largest delay between two attempts, also the cap of a runtime's `Retry-After`.
    pub backoff_max: Duration,
}

impl RetryConfig {
    pub fn backoff_enabled(&self) -> bool {
        !self.backoff_initial.is_zero()
    }
}

/// `NANOFAAS_RETRY_BACKOFF_MAX` when only the initial delay is set.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// The longest delay accepted: a delayed retry keeps its execution in flight (the store's
/// `max-lifetime`, 30 min by default, still bounds the whole execution).
pub const MAX_BACKOFF: Duration = Duration::from_secs(3600);

const INITIAL: &str = "nanofaas.retry.backoff.initial";
const MAX: &str = "nanofaas.retry.backoff.max";

pub(super) fn read(r: &Reader<'_>) -> Result<RetryConfig, ConfigError> {
    let initial = r.duration(INITIAL, Duration::ZERO)?;
    let max_set = r.raw(MAX).filter(|(_, v)| !v.trim().is_empty());
    let max = r.duration(MAX, DEFAULT_BACKOFF_MAX.max(initial))?;
    let fail = |key: &str, reason: String| {
        let (name, value) = r
            .raw(key)
            .unwrap_or_else(|| (super::env_names(key).remove(0), String::new()));
        Err(Reader::fail(name, value, reason))
    };
    if initial.is_zero() {
        if max_set.is_some() {
            return fail(
                MAX,
                format!(
                    "needs {} (the backoff is off without it)",
                    super::env_names(INITIAL).remove(0)
                ),
            );
        }
        return Ok(RetryConfig::default());
    }
    if initial > MAX_BACKOFF {
        return fail(INITIAL, "at most 1h".to_owned());
    }
    if max > MAX_BACKOFF {
        return fail(MAX, "at most 1h".to_owned());
    }
    if max < initial {
        return fail(
            MAX,
            format!(
                "must be at least {} ({})",
                super::env_names(INITIAL).remove(0),
                super::format_iso_duration(initial)
            ),
        );
    }
    Ok(RetryConfig {
        backoff_initial: initial,
        backoff_max: max,
    })
}
