//! Entry points for the fuzz targets in `fuzz/` and for the test that replays their corpus
//! (`tests/fuzz_corpus.rs`): one function per parser of untrusted input, taking raw bytes. Each
//! runs the parser the way its handler does and then checks what the parser promises of its
//! result, panicking when a promise is broken; a panic is a finding. Not an API: the parsers
//! themselves stay private to their modules. How to run a campaign: `docs/fuzzing.md`.
//!
//! Inputs that carry headers use one plain-text shape, so corpus files can be written by hand:
//! header lines (`Name: value`), an empty line, then the body. Without an empty line the whole
//! input is the body. Header lines the HTTP parser would refuse are skipped, as no handler sees
//! them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use bytes::Bytes;
use serde_json::value::RawValue;

use crate::admission::RateLimiter;
use crate::api::extract::{
    attempt_header, json_object, require_json_content_type, timeout_header, token_header,
};
use crate::config::{Config, format_iso_duration, parse_duration, parse_iso_duration};
use crate::deploy::kubernetes::Manifests;
use crate::deploy::runtime_env::runtime_env;
use crate::function::{FunctionResponse, FunctionSpec, FunctionSpecRequest};
use crate::metrics::Metrics;
use crate::model::{AttemptResult, CallbackBody};
use crate::queue::SyncSettings;
use crate::runtime_config::{PatchError, PatchRequest, RuntimeConfigService};

/// The headers and body of a fuzz input (see the module comment for the shape).
pub fn split_request(data: &[u8]) -> (HeaderMap, &[u8]) {
    let Some(at) = find_blank_line(data) else {
        return (HeaderMap::new(), data);
    };
    let (head, body) = (&data[..at.0], &data[at.1..]);
    let mut headers = HeaderMap::new();
    for line in head.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let value = line[colon + 1..].trim_ascii_start();
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(value),
        ) {
            headers.append(name, value);
        }
    }
    (headers, body)
}

/// Where the header block ends and where the body starts (`\n\n` or `\r\n\r\n`).
fn find_blank_line(data: &[u8]) -> Option<(usize, usize)> {
    let lf = data.windows(2).position(|w| w == b"\n\n");
    let crlf = data.windows(4).position(|w| w == b"\r\n\r\n");
    match (lf, crlf) {
        (Some(a), Some(b)) if b < a => Some((b, b + 4)),
        (Some(a), _) => Some((a, a + 2)),
        (None, Some(b)) => Some((b, b + 4)),
        (None, None) => None,
    }
}

fn assert_json(text: &str, what: &str) {
    // RawValue: depth-unlimited like the body reader, so only malformed text fails.
    assert!(
        serde_json::from_str::<&RawValue>(text).is_ok(),
        "{what} is not JSON: {text:?}"
    );
}

/// A registration body (`POST /v1/functions`): read and resolved as the registry does. An
/// accepted spec must write a FunctionResponse that registers as the same spec, and must build
/// the Kubernetes objects and runtime environment of a DEPLOYMENT without panicking.
pub fn function_spec(data: &[u8]) {
    let Ok(request) = json_object::<FunctionSpecRequest>(data) else {
        return;
    };
    let config = Config::default();
    let Ok(spec) = request.resolve(&config.defaults) else {
        return;
    };
    let written = serde_json::to_string(&response_of(&spec)).expect("a FunctionResponse writes");
    // NaN and infinities (`"highLoadThreshold":"NaN"`, coerced from a string as Jackson does)
    // are written as null, which reads back as the default: no round trip to check.
    if thresholds_are_finite(&spec) {
        let again = json_object::<FunctionSpecRequest>(written.as_bytes())
            .expect("a FunctionResponse reads as a registration")
            .resolve(&config.defaults)
            .expect("a FunctionResponse registers");
        assert_eq!(
            again, spec,
            "the response {written} registers as another spec"
        );
    }
    let manifests = Manifests::from_config(&config.k8s);
    let _ = manifests.deployment(&spec);
    let _ = manifests.service(&spec);
    let _ = manifests.hpa(&spec);
    let _ = runtime_env(
        &spec,
        Some("http://control-plane:8080/v1/internal/executions"),
    );
}

/// The FunctionResponse of a function registered as requested (no backend, no degradation).
fn response_of(s: &FunctionSpec) -> FunctionResponse<'_> {
    FunctionResponse {
        name: &s.name,
        image: &s.image,
        command: &s.command,
        env: &s.env,
        resources: s.resources.as_ref(),
        timeout_ms: s.timeout_ms,
        concurrency: s.concurrency,
        queue_size: s.queue_size,
        max_retries: s.max_retries,
        endpoint_url: s.endpoint_url.as_deref(),
        requested_execution_mode: s.execution_mode,
        effective_execution_mode: s.execution_mode,
        deployment_backend: None,
        degradation_reason: None,
        runtime_mode: s.runtime_mode,
        runtime_command: s.runtime_command.as_deref(),
        scaling_config: s.scaling.to_request(),
        image_pull_secrets: s.image_pull_secrets.as_deref(),
    }
}

fn thresholds_are_finite(spec: &FunctionSpec) -> bool {
    let cc = spec
        .scaling
        .to_request()
        .and_then(|s| s.concurrency_control);
    cc.is_none_or(|c| {
        [c.high_load_threshold, c.low_load_threshold]
            .into_iter()
            .flatten()
            .all(f64::is_finite)
    })
}

/// An invocation (`POST /v1/functions/{name}:invoke` / `:enqueue`): headers and body read as the
/// handler reads them, then the body sent to the runtime built from the result, which must be
/// JSON with the input and metadata as accepted.
pub fn invocation_request(data: &[u8]) {
    let (headers, body) = split_request(data);
    let _ = timeout_header(&headers);
    let Ok(input) =
        crate::api::invocations::invoke_input("fn", &headers, Ok(Bytes::copy_from_slice(body)))
    else {
        return;
    };
    assert_json(input.input.get(), "the accepted input");
    if let Some(metadata) = &input.metadata {
        let map: Option<serde_json::Map<String, serde_json::Value>> =
            serde_json::from_str(metadata).expect("accepted metadata is an object or null");
        assert!(
            map.into_iter()
                .flatten()
                .all(|(_, v)| v.is_string() || v.is_null()),
            "metadata forwarded with a non-string value: {metadata}"
        );
    }
    for token in [&input.idempotency_key, &input.trace_id]
        .into_iter()
        .flatten()
    {
        assert!(
            !token.is_empty() && token.trim() == token,
            "token {token:?}"
        );
    }
    let sent = crate::dispatch::runtime_body(&input.input, input.metadata.as_deref());
    let sent = std::str::from_utf8(&sent).expect("the runtime body is UTF-8");
    assert_json(sent, "the runtime body");
}

/// A runtime callback (`POST /v1/internal/executions/{id}:complete`): its attempt header and
/// body, read as the handler reads them. A success's output must be JSON other than `null`.
pub fn callback(data: &[u8]) {
    let (headers, body) = split_request(data);
    if let Some(attempt) = attempt_header(&headers) {
        assert!(attempt > 0);
    }
    let Ok(callback) = json_object::<CallbackBody>(body) else {
        return;
    };
    match callback.into_result() {
        AttemptResult::Success(Some(output)) => {
            assert_json(output.get(), "a callback output");
            assert_ne!(output.get(), "null");
        }
        AttemptResult::Success(None) | AttemptResult::Failure(_) => {}
    }
}

/// The request headers the API reads: `Idempotency-Key`, `X-Trace-Id`, `X-Timeout-Ms`,
/// `X-Dispatch-Attempt` and `Content-Type`.
pub fn headers(data: &[u8]) {
    // A header-only input needs no empty line.
    let mut owned;
    let data = if find_blank_line(data).is_some() {
        data
    } else {
        owned = data.to_vec();
        owned.extend_from_slice(b"\n\n");
        &owned
    };
    let (headers, _) = split_request(data);
    for header in [
        &crate::support::headers::IDEMPOTENCY_KEY,
        &crate::support::headers::X_TRACE_ID,
    ] {
        let name = header.label;
        if let Ok(Some(token)) = token_header(&headers, header) {
            assert!(!token.is_empty() && token.len() <= 1024 && token.trim() == token);
            // Stored and forwarded as a header value: it must stay one.
            assert!(HeaderValue::from_str(&token).is_ok(), "{name}: {token:?}");
        }
    }
    let _ = timeout_header(&headers);
    if let Some(attempt) = attempt_header(&headers) {
        assert!(attempt > 0);
    }
    let _ = require_json_content_type(&headers);
}

/// A duration as configuration and the runtime-config API read it. Every duration accepted must
/// be usable as a deadline from now (the service adds them to `Instant::now()`), and an ISO-8601
/// duration must read back from how Java writes it.
pub fn duration(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let now = Instant::now();
    for bare_unit in [Duration::from_millis(1), Duration::from_secs(1)] {
        if let Ok(d) = parse_duration(text, bare_unit) {
            assert!(
                now.checked_add(d).is_some(),
                "{text:?} is {d:?}, past any deadline"
            );
        }
    }
    if let Some(d) = parse_iso_duration(text) {
        assert!(
            now.checked_add(d).is_some(),
            "{text:?} is {d:?}, past any deadline"
        );
        let written = format_iso_duration(d);
        assert_eq!(
            parse_iso_duration(&written),
            Some(d),
            "{text:?} written {written:?}"
        );
    }
}

/// The environment (`NAME=value` lines) read into a `Config`. Every duration it accepts must be
/// usable as a deadline from now.
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let vars: HashMap<String, String> = text
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let Ok(config) = Config::from_lookup(|name| vars.get(name).cloned()) else {
        return;
    };
    let now = Instant::now();
    let store = &config.execution_store;
    let sync = &config.sync_queue;
    for d in [
        store.ttl,
        store.cleanup_ttl,
        store.max_lifetime,
        store.janitor_period,
        config.shutdown_grace,
        sync.max_estimated_wait,
        sync.max_queue_wait,
        sync.throughput_window,
        config.scaling.scale_up_cooldown,
        config.scaling.scale_down_cooldown,
        config.container_local.readiness_timeout,
        config.container_local.readiness_poll_interval,
    ] {
        assert!(now.checked_add(d).is_some(), "{d:?} is past any deadline");
    }
}

/// A runtime-config patch (`PATCH /v1/admin/runtime-config` and `.../validate`) against the
/// default configuration. What validation accepts, applying accepts (revision permitting), and
/// what is applied is usable by the sync queue.
pub fn runtime_config_patch(data: &[u8]) {
    let Ok(patch) = json_object::<PatchRequest>(data) else {
        return;
    };
    let config = Config::default();
    let service = RuntimeConfigService::new(
        &config,
        Arc::new(RateLimiter::new(config.rate_max_per_second)),
        Arc::new(SyncSettings::new(&config.sync_queue)),
        Arc::new(Metrics::new()),
    );
    let valid = service.validate(&patch).is_ok();
    match service.apply(&patch) {
        Ok(applied) => {
            assert!(valid, "applied a patch validation refuses");
            let now = Instant::now();
            let c = &applied.effective_config;
            for d in [c.sync_queue_max_estimated_wait, c.sync_queue_max_queue_wait] {
                assert!(now.checked_add(d).is_some(), "{d:?} is past any deadline");
            }
            serde_json::to_string(&applied).expect("an applied patch writes");
        }
        Err(PatchError::MissingRevision | PatchError::RevisionMismatch { .. }) => {}
        Err(e) => assert!(!valid, "validation accepted what applying refused: {e}"),
    }
}
