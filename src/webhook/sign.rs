//! What one delivery attempt sends: the headers, and the Standard Webhooks signature
//! (<https://www.standardwebhooks.com/>): `webhook-signature: v1,<base64 HMAC-SHA256 of
//! "{webhook-id}.{webhook-timestamp}.{body}">`.

use base64::Engine as _;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};

use crate::config::WebhookSecret;
use crate::execution::notice::ResultNotice;

/// Signs deliveries with the configured secret.
pub(super) struct Signer(ring::hmac::Key);

impl Signer {
    pub(super) fn new(secret: &WebhookSecret) -> Signer {
        Signer(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.key()))
    }

    /// `v1,` + base64 of the HMAC-SHA256 of `{id}.{timestamp}.{body}`.
    pub(super) fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut context = ring::hmac::Context::with_key(&self.0);
        context.update(id.as_bytes());
        context.update(b".");
        context.update(timestamp.to_string().as_bytes());
        context.update(b".");
        context.update(body);
        let tag = context.sign();
        format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
        )
    }
}

/// The headers of one attempt at `timestamp` (seconds since the epoch): the result's, the
/// Standard Webhooks id and timestamp (the id is the execution id: the same on every attempt,
/// for de-duplication by the receiver), the signature when signing, and the trace context.
pub(super) fn headers(
    notice: &ResultNotice,
    body: &[u8],
    timestamp: i64,
    signer: Option<&Signer>,
) -> HeaderMap {
    let id = &*notice.status.execution_id;
    let mut h = HeaderMap::with_capacity(10);
    let mut put = |name: &'static str, value: &str| {
        // Every value is ours (ids, a validated function name, numbers); one that is not a
        // header value is left out rather than failing the delivery.
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(HeaderName::from_static(name), v);
        }
    };
    put("x-execution-id", id);
    put("x-function-name", &notice.function);
    put("x-function-status", notice.status.status.as_str());
    put(
        "x-duration-seconds",
        &format!("{:.6}", notice.duration.as_secs_f64()),
    );
    put("webhook-id", id);
    put("webhook-timestamp", &timestamp.to_string());
    if let Some(signer) = signer {
        put("webhook-signature", &signer.sign(id, timestamp, body));
    }
    put("traceparent", notice.trace.traceparent());
    if let Some(state) = notice.trace.tracestate() {
        put("tracestate", state);
    }
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h
}
