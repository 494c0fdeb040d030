//! Dispatchers: run one attempt of a task and report its result. LOCAL echoes the input in
//! process; POOL and DEPLOYMENT send the runtime request of REFERENCE §6.1 on one shared, pooled
//! `reqwest` client and read the reply as §6.2 says. The client connects only where the outbound
//! policy permits (`support::net_policy`): its resolver filters DNS answers, and IP-literal hosts
//! are checked before the request.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, HeaderValue};

use crate::config::HttpClientConfig;
use crate::execution::Task;
use crate::function::ExecutionMode;
use crate::model::{AttemptResult, ColdStart, ErrorInfo, Json, json_from_text, json_string};
use crate::registry::Endpoint;
use crate::support::net_policy::{NetPolicy, PolicyResolver, refusal_in};
use crate::support::{error_chain, headers};

/// The result of one attempt, with the cold-start facts read from the reply.
#[derive(Debug, Clone)]
pub struct DispatchReply {
    pub result: AttemptResult,
    pub cold_start: Option<ColdStart>,
    /// The runtime's `Retry-After` on a 429 or 503 (issue 11): how long it asks to be left alone.
    pub retry_after: Option<Duration>,
}

impl DispatchReply {
    fn failure(code: &str, message: impl Into<String>) -> Self {
        DispatchReply {
            result: AttemptResult::Failure(ErrorInfo::new(code, message)),
            cold_start: None,
            retry_after: None,
        }
    }
}

pub struct Dispatcher {
    client: reqwest::Client,
    max_response_bytes: usize,
    policy: Arc<NetPolicy>,
}

impl Dispatcher {
    pub fn new(config: &HttpClientConfig, policy: Arc<NetPolicy>) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(1024)
            .tcp_nodelay(true)
            // Runtimes are reached directly, as the Java WebClient does; never via HTTP(S)_PROXY.
            .no_proxy()
            // A 3xx is the runtime's answer, a POOL_ERROR (REFERENCE §6.2), as with Java's
            // WebClient: following it would let a runtime send us to any address.
            .redirect(reqwest::redirect::Policy::none())
            // reqwest retries only HTTP/2 and HTTP/3 refusals, which an HTTP/1 runtime never
            // sends; its default policy still cloned every request to be able to (issue 12).
            // Our retries are the function's `maxRetries`.
            .retry(reqwest::retry::never().max_retries_per_request(0))
            // Pure-Rust DNS (hickory) filtered by the outbound policy, after resolution.
            .dns_resolver(Arc::new(PolicyResolver::new(
                policy.clone(),
                &config.resolve_overrides,
            )))
            .user_agent(concat!(
                "nanofaas-control-plane/",
                env!("CARGO_PKG_VERSION")
            ))
            .build()?;
        Ok(Dispatcher {
            client,
            max_response_bytes: config.max_response_bytes,
            policy,
        })
    }

    pub async fn dispatch(&self, task: &Task) -> DispatchReply {
        match task.function.effective_mode {
            ExecutionMode::Local => DispatchReply {
                result: AttemptResult::Success(Some(task.payload.input.clone())),
                cold_start: None,
                retry_after: None,
            },
            ExecutionMode::Pool | ExecutionMode::Deployment => self.call_runtime(task).await,
        }
    }

    async fn call_runtime(&self, task: &Task) -> DispatchReply {
        let url = match &task.function.endpoint {
            Some(Endpoint::Fixed(url)) => url.clone(),
            Some(Endpoint::Replicas(set)) => match set.pick() {
                Some(url) => url,
                None => return DispatchReply::failure("POOL_ERROR", "No ready container backends"),
            },
            None => {
                return DispatchReply::failure(
                    "POOL_ENDPOINT_MISSING",
                    "endpointUrl is required for POOL mode",
                );
            }
        };
        // IP literals never reach the resolver: checked here, before any connection.
        if let Err(refused) = self.policy.check_literal(&url) {
            return DispatchReply::failure("POOL_ERROR", refused.to_string());
        }
        let timeout_ms = task.function.spec.timeout_ms;
        let request = match self.request(url, task) {
            Ok(r) => r,
            Err(invalid) => return DispatchReply::failure("POOL_ERROR", invalid),
        };
        let response = match self.client.execute(request).await {
            Ok(r) => r,
            Err(e) => return transport_failure(&e, timeout_ms),
        };
        let cold_start = cold_start_of(response.headers());
        let status = response.status();
        let retry_after = retry_after_of(status, response.headers(), std::time::SystemTime::now());
        let is_text = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| {
                ct.trim_start()
                    .to_ascii_lowercase()
                    .starts_with("text/plain")
            });
        let body = match self.read_body(response).await {
            Ok(b) => b,
            Err(failure) => {
                return DispatchReply {
                    cold_start,
                    retry_after,
                    ..failure.into_reply(timeout_ms)
                };
            }
        };
        let result = if status.is_success() {
            if is_text {
                AttemptResult::Success(Some(json_string(&String::from_utf8_lossy(&body))))
            } else {
                parse_json_output(&body)
            }
        } else {
            let text = String::from_utf8_lossy(&body);
            let message = if text.trim().is_empty() {
                status_text(status)
            } else {
                text.into_owned()
            };
            AttemptResult::Failure(ErrorInfo::new("POOL_ERROR", message))
        };
        DispatchReply {
            result,
            cold_start,
            retry_after,
        }
    }

    /// The attempt's request (RUNTIME.md), built in place: the header map is sized once for
    /// every header it gets, reqwest's defaults (`user-agent`, `accept`) included, so that it never
    /// grows. The values come from validated input and our own ids; one that is not a valid
    /// header value fails the attempt.
    fn request(&self, url: reqwest::Url, task: &Task) -> Result<reqwest::Request, String> {
        // Through the builder: it turns the endpoint's userinfo into `Authorization`.
        let mut request = self.client.post(url).build().map_err(|e| e.to_string())?;
        let invalid = |e: reqwest::header::InvalidHeaderValue| e.to_string();
        *request.timeout_mut() = Some(Duration::from_millis(task.function.spec.timeout_ms));
        let map = request.headers_mut();
        map.reserve(12);
        map.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        map.insert(
            headers::X_EXECUTION_ID,
            HeaderValue::from_str(&task.execution_id).map_err(invalid)?,
        );
        map.insert(headers::X_DISPATCH_ATTEMPT, HeaderValue::from(task.attempt));
        if let Some(trace) = &task.trace_id {
            map.insert(
                headers::X_TRACE_ID.name.clone(),
                HeaderValue::from_str(trace).map_err(invalid)?,
            );
        }
        // W3C trace context on every attempt (issue 11): the caller's, or the one started for
        // the invocation.
        map.insert(
            headers::TRACEPARENT,
            HeaderValue::from_str(task.trace.traceparent()).map_err(invalid)?,
        );
        if let Some(state) = task.trace.tracestate() {
            map.insert(
                headers::TRACESTATE,
                HeaderValue::from_str(state).map_err(invalid)?,
            );
        }
        if task.attempt == 1 {
            if let Some(key) = &task.idempotency_key {
                map.insert(
                    headers::IDEMPOTENCY_KEY.name.clone(),
                    HeaderValue::from_str(key).map_err(invalid)?,
                );
            }
        }
        *request.body_mut() = Some(task.payload.body.clone().into());
        Ok(request)
    }

    async fn read_body(&self, mut response: reqwest::Response) -> Result<Vec<u8>, BodyFailure> {
        if response
            .content_length()
            .is_some_and(|n| n > self.max_response_bytes as u64)
        {
            return Err(BodyFailure::TooLarge(self.max_response_bytes));
        }
        let mut body =
            Vec::with_capacity(response.content_length().unwrap_or(256).min(65_536) as usize);
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > self.max_response_bytes {
                        return Err(BodyFailure::TooLarge(self.max_response_bytes));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => return Ok(body),
                Err(e) => return Err(BodyFailure::Transport(e)),
            }
        }
    }
}

enum BodyFailure {
    TooLarge(usize),
    Transport(reqwest::Error),
}

impl BodyFailure {
    fn into_reply(self, timeout_ms: u64) -> DispatchReply {
        match self {
            BodyFailure::TooLarge(limit) => DispatchReply::failure(
                "POOL_ERROR",
                format!("Function response exceeds the {limit}-byte limit"),
            ),
            BodyFailure::Transport(e) => transport_failure(&e, timeout_ms),
        }
    }
}

fn transport_failure(e: &reqwest::Error, timeout_ms: u64) -> DispatchReply {
    if e.is_timeout() {
        return DispatchReply::failure(
            "POOL_TIMEOUT",
            format!("Pool request timed out after {timeout_ms}ms"),
        );
    }
    if let Some(refused) = refusal_in(e) {
        return DispatchReply::failure("POOL_ERROR", refused.to_string());
    }
    // reqwest moves an endpoint's userinfo into an Authorization header before sending, so the
    // URL its errors quote carries no credentials.
    DispatchReply::failure("POOL_ERROR", error_chain(e))
}

/// A 2xx body: JSON, where empty or `null` is a success with no output (DECISIONS 4, B2).
fn parse_json_output(body: &[u8]) -> AttemptResult {
    let text = match std::str::from_utf8(body) {
        Ok(t) => t,
        Err(_) => {
            return AttemptResult::Failure(ErrorInfo::new(
                "POOL_ERROR",
                "Function response is not valid UTF-8 JSON",
            ));
        }
    };
    let trimmed = text.trim();
    if trimmed.is_empty() || trimmed == "null" {
        return AttemptResult::Success(None);
    }
    match json_from_text(trimmed.to_owned()) {
        Ok(json) => AttemptResult::Success(Some(json)),
        Err(e) => AttemptResult::Failure(ErrorInfo::new(
            "POOL_ERROR",
            format!("Function response is not valid JSON: {e}"),
        )),
    }
}

/// Spring's `HttpStatus` text, e.g. `500 INTERNAL_SERVER_ERROR`.
fn status_text(status: reqwest::StatusCode) -> String {
    let reason = status
        .canonical_reason()
        .unwrap_or("UNKNOWN")
        .to_ascii_uppercase()
        .replace([' ', '-'], "_");
    format!("{} {}", status.as_u16(), reason)
}

/// `X-Cold-Start: true` (any case) and `X-Init-Duration-Ms` (REFERENCE §3.8).
pub fn cold_start_of(headers: &reqwest::header::HeaderMap) -> Option<ColdStart> {
    let cold = headers
        .get("X-Cold-Start")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    cold.then(|| ColdStart {
        init_duration_ms: headers
            .get("X-Init-Duration-Ms")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<i64>().ok()),
    })
}

/// `Retry-After` of a 429 or 503 reply (RFC 9110 §10.2.3): delay-seconds or an HTTP-date (a
/// date in the past is no delay). Anything else, or another status, is ignored.
pub fn retry_after_of(
    status: reqwest::StatusCode,
    headers: &reqwest::header::HeaderMap,
    now: std::time::SystemTime,
) -> Option<Duration> {
    use reqwest::StatusCode;
    if status != StatusCode::TOO_MANY_REQUESTS && status != StatusCode::SERVICE_UNAVAILABLE {
        return None;
    }
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // More digits than a u64 holds is "a very long time"; the backoff's maximum caps it.
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The body sent to runtimes: `{"input": …, "metadata": …}`, built from validated JSON text.
pub fn runtime_body(input: &Json, metadata: Option<&str>) -> bytes::Bytes {
    let input = input.get();
    let metadata = metadata.unwrap_or("null");
    let mut body = String::with_capacity(input.len() + metadata.len() + 24);
    body.push_str("{\"input\":");
    body.push_str(input);
    body.push_str(",\"metadata\":");
    body.push_str(metadata);
    body.push('}');
    bytes::Bytes::from(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_null_bodies_are_successes_without_output() {
        assert!(matches!(
            parse_json_output(b""),
            AttemptResult::Success(None)
        ));
        assert!(matches!(
            parse_json_output(b" null "),
            AttemptResult::Success(None)
        ));
        assert!(matches!(
            parse_json_output(b"{\"a\":1}"),
            AttemptResult::Success(Some(_))
        ));
        assert!(
            matches!(parse_json_output(b"{oops"), AttemptResult::Failure(e) if e.code == "POOL_ERROR")
        );
    }

    #[test]
    fn status_text_matches_spring() {
        assert_eq!(
            status_text(reqwest::StatusCode::INTERNAL_SERVER_ERROR),
            "500 INTERNAL_SERVER_ERROR"
        );
        assert_eq!(status_text(reqwest::StatusCode::NOT_FOUND), "404 NOT_FOUND");
    }

    #[test]
    fn retry_after_on_429_and_503_only() {
        use reqwest::StatusCode;
        let now = std::time::UNIX_EPOCH + Duration::from_secs(784_111_777);
        let with = |v: &str| {
            let mut h = reqwest::header::HeaderMap::new();
            h.insert("Retry-After", HeaderValue::from_str(v).unwrap());
            h
        };
        let unavailable = StatusCode::SERVICE_UNAVAILABLE;
        assert_eq!(
            retry_after_of(unavailable, &with("1"), now),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            retry_after_of(StatusCode::TOO_MANY_REQUESTS, &with(" 120 "), now),
            Some(Duration::from_secs(120))
        );
        // HTTP-date, all three forms of RFC 9110; a past date is no delay.
        for date in [
            "Sun, 06 Nov 1994 08:49:47 GMT",
            "Sunday, 06-Nov-94 08:49:47 GMT",
            "Sun Nov  6 08:49:47 1994",
        ] {
            assert_eq!(
                retry_after_of(unavailable, &with(date), now),
                Some(Duration::from_secs(10)),
                "{date}"
            );
        }
        assert_eq!(
            retry_after_of(unavailable, &with("Sun, 06 Nov 1994 08:49:27 GMT"), now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            retry_after_of(unavailable, &with("99999999999999999999999"), now),
            Some(Duration::from_secs(u64::MAX))
        );
        for bad in ["", "-1", "1.5", "soon"] {
            assert_eq!(retry_after_of(unavailable, &with(bad), now), None, "{bad}");
        }
        assert_eq!(
            retry_after_of(StatusCode::INTERNAL_SERVER_ERROR, &with("1"), now),
            None
        );
        assert_eq!(
            retry_after_of(unavailable, &reqwest::header::HeaderMap::new(), now),
            None
        );
    }

    #[test]
    fn cold_start_headers() {
        let mut h = reqwest::header::HeaderMap::new();
        assert_eq!(cold_start_of(&h), None);
        h.insert("X-Cold-Start", HeaderValue::from_static("TRUE"));
        assert_eq!(
            cold_start_of(&h),
            Some(ColdStart {
                init_duration_ms: None
            })
        );
        h.insert("X-Init-Duration-Ms", HeaderValue::from_static("250"));
        assert_eq!(
            cold_start_of(&h),
            Some(ColdStart {
                init_duration_ms: Some(250)
            })
        );
        h.insert("X-Cold-Start", HeaderValue::from_static("false"));
        assert_eq!(cold_start_of(&h), None);
    }
}
