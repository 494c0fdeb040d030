//! Request reading for the handlers: JSON bodies (content type, size, syntax and shape errors all
//! become [`ApiError`]s), decoded path segments, and the invocation headers.

use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use bytes::Bytes;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::support::StringTracker;

/// Longest accepted `Idempotency-Key` / `X-Trace-Id`: they are stored and forwarded.
const MAX_KEY_HEADER_LEN: usize = 1024;

/// One decoded path segment (`{name}`, `{id}`), with a JSON 400 when it is not valid UTF-8.
pub struct Segment(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Segment {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<String>::from_request_parts(parts, state)
            .await
            .map(|Path(s)| Segment(s))
            .map_err(|e| ApiError::BadRequest(format!("Invalid path: {}", e.body_text())))
    }
}

/// Parses a JSON request body: `Content-Type` must be JSON (`application/json` or `+json`), the
/// body must be present, within the size limit, well-formed and of the expected shape.
pub fn json_body<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let bytes = body_bytes(body)?;
    require_json_content_type(headers)?;
    json_object(&bytes)
}

/// Parses a body that must be one JSON object (serde would also read a struct from an array).
pub fn json_object<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        None => Err(ApiError::BadRequest("No request body".to_owned())),
        Some(b'{') => {
            within_jackson_limits(bytes)?;
            serde_json::from_slice(bytes).map_err(json_error)
        }
        Some(_) => Err(ApiError::BadRequest(
            "Request body must be a JSON object".to_owned(),
        )),
    }
}

/// Jackson's `StreamReadConstraints` defaults, which the Java service applied to every body.
const MAX_NESTING_DEPTH: usize = 1000;
const MAX_NUMBER_LENGTH: usize = 1000;

/// Refuses a body nested deeper than 1000 levels or holding a number of more than 1000
/// characters, as Jackson did; serde_json keeps raw values (`input`, `output`) at any depth and
/// a runtime would then choke on them. One pass over the bytes, before serde reads them; a
/// malformed body is left for serde to describe.
fn within_jackson_limits(bytes: &[u8]) -> Result<(), ApiError> {
    // Exceeding either limit takes more than 1000 bytes: the usual small body is not scanned.
    if bytes.len() <= MAX_NESTING_DEPTH.min(MAX_NUMBER_LENGTH) {
        return Ok(());
    }
    let (mut depth, mut number_len) = (0usize, 0usize);
    let mut strings = StringTracker::default();
    for &b in bytes {
        if !strings.outside(b) {
            continue;
        }
        match b {
            b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E' => {
                number_len += 1;
                if number_len > MAX_NUMBER_LENGTH {
                    return Err(ApiError::BadRequest(format!(
                        "Malformed JSON: number value length exceeds the maximum allowed \
                         ({MAX_NUMBER_LENGTH})"
                    )));
                }
                continue;
            }
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_NESTING_DEPTH {
                    return Err(ApiError::BadRequest(format!(
                        "Malformed JSON: document nesting depth ({depth}) exceeds the maximum \
                         allowed ({MAX_NESTING_DEPTH})"
                    )));
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
        number_len = 0;
    }
    Ok(())
}

pub fn body_bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        if caused_by_body_timeout(&e) {
            ApiError::BodyReadTimeout
        } else if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge("Request body is too large".to_owned())
        } else {
            ApiError::BadRequest(format!("Failed to read request body: {}", e.body_text()))
        }
    })
}

/// Whether reading the body failed because the listener's body read timeout passed.
fn caused_by_body_timeout(e: &BytesRejection) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if c.is::<BodyReadTimeout>() {
            return true;
        }
        cause = c.source();
    }
    false
}

pub fn require_json_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = content_type.split(';').next().unwrap_or("").trim();
    // Compared without case, in place: this runs on every invocation.
    let starts = |prefix: &str| {
        mime.get(..prefix.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
    };
    let ends = |suffix: &str| {
        mime.len() >= suffix.len()
            && mime.as_bytes()[mime.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
    };
    if mime.eq_ignore_ascii_case("application/json") || (starts("application/") && ends("+json")) {
        Ok(())
    } else {
        let mime = mime.to_ascii_lowercase();
        let shown = if mime.is_empty() {
            "none".to_owned()
        } else {
            format!("'{mime}'")
        };
        Err(ApiError::UnsupportedMediaType(format!(
            "Content-Type {shown} is not supported; send application/json"
        )))
    }
}

pub fn json_error(e: serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    let text = without_type_names(&e.to_string());
    match e.classify() {
        Category::Syntax | Category::Eof => ApiError::BadRequest(format!("Malformed JSON: {text}")),
        Category::Data | Category::Io => {
            ApiError::BadRequest(format!("Invalid request body: {text}"))
        }
    }
}

/// serde names our Rust types in some messages (`expected struct ScalingConfig`, `untagged enum
/// B`); DECISIONS 2 says no response leaks a Rust type name, so those phrases become JSON terms.
fn without_type_names(message: &str) -> String {
    // Only serde's own phrasing: quoted user values may contain "struct " too.
    const PHRASES: [(&str, &str); 3] = [
        ("any variant of untagged enum ", "any accepted form"),
        ("expected struct ", "expected an object"),
        ("expected enum ", "expected a known value"),
    ];
    let mut text = message.to_owned();
    for (phrase, replacement) in PHRASES {
        while let Some(at) = text.find(phrase) {
            let name_start = at + phrase.len();
            let name_end = text[name_start..]
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .map_or(text.len(), |n| name_start + n);
            text.replace_range(at..name_end, replacement);
        }
    }
    text
}

/// A header holding a short opaque token; absent or blank is `None`.
pub fn token_header(
    headers: &HeaderMap,
    header: &crate::support::headers::Known,
) -> Result<Option<String>, ApiError> {
    let name = header.label;
    let Some(text) = headers
        .get(&header.name)
        .map(|value| header_text(value, name))
        .transpose()?
        .flatten()
    else {
        return Ok(None);
    };
    if text.len() > MAX_KEY_HEADER_LEN {
        return Err(ApiError::BadRequest(format!(
            "{name} is longer than {MAX_KEY_HEADER_LEN} characters"
        )));
    }
    Ok(Some(text.to_owned()))
}

/// A header's value as text, trimmed; blank is `None`, and a value that is not visible ASCII a
/// 400 naming the header (`name`).
pub fn header_text<'a>(value: &'a HeaderValue, name: &str) -> Result<Option<&'a str>, ApiError> {
    let text = value
        .to_str()
        .map_err(|_| ApiError::BadRequest(format!("{name} must be visible ASCII")))?
        .trim();
    Ok((!text.is_empty()).then_some(text))
}

/// `X-Timeout-Ms`: an integer (0 or negative means "do not wait").
pub fn timeout_header(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    let header = &crate::support::headers::X_TIMEOUT_MS;
    let Some(value) = headers.get(&header.name) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<i64>().ok())
        .map(Some)
        .ok_or_else(|| ApiError::BadRequest(format!("{} must be an integer", header.label)))
}

/// `X-Dispatch-Attempt` on a callback: a positive integer, else absent (legacy completion).
pub fn attempt_header(headers: &HeaderMap) -> Option<u32> {
    headers
        .get(crate::support::headers::X_DISPATCH_ATTEMPT)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u32>().ok())
        .filter(|n| *n > 0)
}

/// The request body did not arrive within `NANOFAAS_HTTP_BODY_READ_TIMEOUT`: the listener's
/// body reader fails with this, and body extraction answers 408.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
pub struct BodyReadTimeout;

#[cfg(test)]
mod tests {
    #[test]
    fn jackson_limits_on_depth_and_number_length() {
        let nested = |n: usize| format!("{{\"a\":{}1{}}}", "[".repeat(n), "]".repeat(n));
        // The object itself is level 1.
        assert!(super::within_jackson_limits(nested(999).as_bytes()).is_ok());
        assert!(super::within_jackson_limits(nested(1000).as_bytes()).is_err());
        // Brackets inside strings are text.
        let text = format!("{{\"a\":\"{}\\\"{}\"}}", "[".repeat(5000), "{".repeat(5000));
        assert!(super::within_jackson_limits(text.as_bytes()).is_ok());
        let number = |n: usize| format!("{{\"a\":-{}}}", "9".repeat(n));
        assert!(super::within_jackson_limits(number(999).as_bytes()).is_ok());
        assert!(super::within_jackson_limits(number(1000).as_bytes()).is_err());
        let digits_in_string = format!("{{\"a\":\"{}\"}}", "9".repeat(5000));
        assert!(super::within_jackson_limits(digits_in_string.as_bytes()).is_ok());
    }

    #[test]
    fn serde_messages_lose_rust_type_names() {
        assert_eq!(
            super::without_type_names(
                "invalid type: string \"x\", expected struct ScalingConfig at line 1 column 9"
            ),
            "invalid type: string \"x\", expected an object at line 1 column 9"
        );
        assert_eq!(
            super::without_type_names("data did not match any variant of untagged enum B"),
            "data did not match any accepted form"
        );
        assert_eq!(super::without_type_names("plain"), "plain");
        let quoted = r#"invalid type: string "a struct of mine", expected i64"#;
        assert_eq!(super::without_type_names(quoted), quoted);
    }
}
