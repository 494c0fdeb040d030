//! Result webhooks (issue 11, docs/webhooks.md): `nanofaas.webhook.*`, read and validated here;
//! `webhook` delivers.

use std::time::Duration;

use base64::Engine as _;

use super::env::Reader;
use super::{ConfigError, HostRule};

/// The HMAC key webhooks are signed with. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(Vec<u8>);

impl WebhookSecret {
    /// A Standard Webhooks secret, `whsec_` + base64 of the key, is decoded; any other text is
    /// the key itself (its UTF-8 bytes). `None` for a blank or undecodable value.
    pub fn parse(text: &str) -> Option<WebhookSecret> {
        let text = text.trim();
        let key = match text.strip_prefix("whsec_") {
            Some(encoded) => base64::engine::general_purpose::GeneralPurpose::new(
                &base64::alphabet::STANDARD,
                base64::engine::GeneralPurposeConfig::new()
                    .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
            )
            .decode(encoded)
            .ok()?,
            None => text.as_bytes().to_vec(),
        };
        (!key.is_empty()).then_some(WebhookSecret(key))
    }

    pub fn key(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<set>")
    }
}

/// `nanofaas.webhook.*`.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookConfig {
    /// `NANOFAAS_WEBHOOK_SECRET`: deliveries are signed (Standard Webhooks) when set.
    pub signing_key: Option<WebhookSecret>,
    /// `NANOFAAS_WEBHOOK_MAX_ATTEMPTS`: attempts per delivery, the first included.
    pub max_attempts: u32,
    /// `NANOFAAS_WEBHOOK_TIMEOUT`: how long one attempt may take (connect to response head).
    pub timeout: Duration,
    /// `NANOFAAS_WEBHOOK_BACKOFF_INITIAL` / `_MAX`: the wait after the first failed attempt,
    /// doubling per attempt up to the maximum (each wait jittered down to half).
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// `NANOFAAS_WEBHOOK_QUEUE_SIZE`: deliveries pending at once (waiting, in flight, or between
    /// attempts); a result beyond it is not delivered, and counted.
    pub queue_size: usize,
    /// `NANOFAAS_WEBHOOK_CONCURRENCY`: requests to receivers in flight at once.
    pub concurrency: usize,
    /// `NANOFAAS_WEBHOOK_ALLOWED_HOSTS`: hosts or CIDRs `X-Callback-Url` may name (unset = any),
    /// matched as `NANOFAAS_POOL_ALLOWED_HOSTS` is.
    pub allowed_hosts: Option<Vec<HostRule>>,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            signing_key: None,
            max_attempts: 8,
            timeout: Duration::from_secs(10),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            queue_size: 10_000,
            concurrency: 32,
            allowed_hosts: None,
        }
    }
}

pub(super) fn read(r: &Reader<'_>) -> Result<WebhookConfig, ConfigError> {
    let d = WebhookConfig::default();
    let signing_key = match r.raw("nanofaas.webhook.secret") {
        None => None,
        Some((_, value)) if value.trim().is_empty() => None,
        Some((name, value)) => Some(WebhookSecret::parse(&value).ok_or_else(|| {
            // The value is a secret: the message never shows it.
            Reader::fail(
                name,
                "<redacted>".to_owned(),
                "expected whsec_ followed by base64, or a plain secret",
            )
        })?),
    };
    let config = WebhookConfig {
        signing_key,
        max_attempts: r.int("nanofaas.webhook.max-attempts", 8, 1, 100)? as u32,
        timeout: r.positive_duration("nanofaas.webhook.timeout", d.timeout)?,
        backoff_initial: r
            .positive_duration("nanofaas.webhook.backoff-initial", d.backoff_initial)?,
        backoff_max: r.positive_duration("nanofaas.webhook.backoff-max", d.backoff_max)?,
        queue_size: r.int("nanofaas.webhook.queue-size", 10_000, 1, 10_000_000)? as usize,
        concurrency: r.int("nanofaas.webhook.concurrency", 32, 1, 10_000)? as usize,
        allowed_hosts: r.host_rules("nanofaas.webhook.allowed-hosts")?,
    };
    if config.backoff_max < config.backoff_initial {
        let (name, value) = r
            .raw("nanofaas.webhook.backoff-max")
            .unwrap_or_else(|| ("NANOFAAS_WEBHOOK_BACKOFF_MAX".to_owned(), String::new()));
        return Err(Reader::fail(
            name,
            value,
            "must not be shorter than NANOFAAS_WEBHOOK_BACKOFF_INITIAL",
        ));
    }
    Ok(config)
}
