//! Wire types shared by the API, the invocation core and the dispatchers: invocation requests and
//! responses, runtime results, error info and execution status. JSON shapes follow REFERENCE §2.6–2.7.

use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use utoipa::ToSchema;

use crate::support::schema;

use crate::support::StringTracker;

/// A JSON value kept as its validated text: parsed once, never rebuilt, cheap to clone.
pub type Json = Arc<RawValue>;

/// Validated JSON from text, compacted as Java's Jackson re-serialises it.
pub fn json_from_text(text: String) -> Result<Json, serde_json::Error> {
    RawValue::from_string(text).map(compact).map(Arc::from)
}

/// `raw` without insignificant whitespace, as Java's Jackson writes it; unchanged (no copy) when
/// it has none, which is what clients usually send.
pub fn compact(raw: Box<RawValue>) -> Box<RawValue> {
    let text = raw.get();
    let mut strings = StringTracker::default();
    let loose = text
        .bytes()
        .any(|b| strings.outside(b) && b.is_ascii_whitespace());
    if !loose {
        return raw;
    }
    serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|v| serde_json::value::to_raw_value(&v).ok())
        // serde_json's tree stops at 128 levels; deeper (up to Jackson's 1000, which the edge
        // enforces) the whitespace is dropped as text, leaving values as written.
        .or_else(|| RawValue::from_string(without_whitespace(text)).ok())
        .unwrap_or(raw)
}

/// `text` (valid JSON) without the whitespace outside its strings.
fn without_whitespace(text: &str) -> String {
    let mut strings = StringTracker::default();
    let bytes: Vec<u8> = text
        .bytes()
        .filter(|&b| !(strings.outside(b) && b.is_ascii_whitespace()))
        .collect();
    // Only ASCII bytes were dropped, so the rest is still UTF-8.
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// A JSON string value.
pub fn json_string(s: &str) -> Json {
    let text = serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned());
    json_from_text(text).unwrap_or_else(|_| json_null())
}

pub fn json_null() -> Json {
    Arc::from(RawValue::NULL.to_owned())
}

/// `{"code": ..., "message": ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorInfo {
    pub code: String,
    pub message: String,
}

impl ErrorInfo {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        ErrorInfo {
            code: code.into(),
            message: message.into(),
        }
    }
}

/// Lifecycle state of an execution (REFERENCE §2.5); serialised lower-case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionState {
    Queued,
    Running,
    Success,
    Error,
    Timeout,
}

impl ExecutionState {
    /// The lower-case name JSON uses (`success`).
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutionState::Queued => "queued",
            ExecutionState::Running => "running",
            ExecutionState::Success => "success",
            ExecutionState::Error => "error",
            ExecutionState::Timeout => "timeout",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            ExecutionState::Success | ExecutionState::Error | ExecutionState::Timeout
        )
    }
}

/// `status` of an InvocationResponse: `queued` only from `:enqueue`, `timeout` only with 408.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum InvocationStatus {
    Success,
    Error,
    Timeout,
    Queued,
}

/// Body of `:invoke` and `:enqueue` answers. Every field is written, nulls included.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InvocationResponse {
    #[schema(value_type = String)]
    pub execution_id: Arc<str>,
    pub status: InvocationStatus,
    /// The function's output (any JSON, `null` unless `status` is `success`).
    #[schema(schema_with = any_output, required)]
    pub output: Option<Json>,
    #[schema(required)]
    pub error: Option<ErrorInfo>,
}

fn any_output() -> utoipa::openapi::schema::Schema {
    schema::any_json("The function's output: any JSON value, null when there is none")
}

/// Body of `GET /v1/executions/{id}`. Every field is written, nulls included.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionStatus {
    #[schema(value_type = String)]
    pub execution_id: Arc<str>,
    pub status: ExecutionState,
    /// ISO-8601 UTC instant, as Java's `Instant.toString` writes it.
    #[schema(format = DateTime, required)]
    pub started_at: Option<String>,
    #[schema(format = DateTime, required)]
    pub finished_at: Option<String>,
    #[schema(schema_with = any_output, required)]
    pub output: Option<Json>,
    #[schema(required)]
    pub error: Option<ErrorInfo>,
    pub cold_start: bool,
    #[schema(required)]
    pub init_duration_ms: Option<i64>,
}

/// The final result of one attempt, from a dispatcher or a runtime callback.
#[derive(Debug, Clone)]
pub enum AttemptResult {
    Success(Option<Json>),
    Failure(ErrorInfo),
}

impl AttemptResult {
    pub fn is_success(&self) -> bool {
        matches!(self, AttemptResult::Success(_))
    }
}

/// Cold-start facts read from a runtime's reply headers (REFERENCE §3.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColdStart {
    pub init_duration_ms: Option<i64>,
}

/// How an execution's final attempt started, as the cold/warm counters record it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartKind {
    Cold(ColdStart),
    Warm,
}

impl From<Option<ColdStart>> for StartKind {
    fn from(cold: Option<ColdStart>) -> Self {
        cold.map_or(StartKind::Warm, StartKind::Cold)
    }
}

/// Body of `POST /v1/internal/executions/{id}:complete`, read tolerantly (DECISIONS 5): the Java
/// shape `{success, output, error}`, a `status` string instead of `success`, or neither (success
/// unless `error` is present). Unknown fields are ignored.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct CallbackBody {
    #[serde(default, deserialize_with = "lenient_opt_bool")]
    #[schema(schema_with = callback_success)]
    pub success: Option<bool>,
    /// `SUCCESS`, `ERROR` or `TIMEOUT` (any case) when `success` is absent; other values are
    /// read as absent.
    #[serde(default)]
    #[schema(nullable)]
    pub status: Option<String>,
    #[serde(default)]
    #[schema(schema_with = any_output)]
    pub output: Option<Box<RawValue>>,
    #[serde(default, deserialize_with = "callback_error")]
    #[schema(schema_with = callback_error_schema)]
    pub error: Option<ErrorInfo>,
}

fn callback_success() -> utoipa::openapi::schema::Schema {
    schema::boolean(
        "Whether the attempt succeeded; when absent, `status` decides, else the absence of `error`",
    )
}

/// What `callback_error` reads: an object with optional string `code`/`message`, a bare string
/// (the message), or null.
fn callback_error_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{AnyOfBuilder, ObjectBuilder, Type};
    let text = || {
        AnyOfBuilder::new()
            .item(ObjectBuilder::new().schema_type(Type::String))
            .item(ObjectBuilder::new().schema_type(Type::Null))
    };
    AnyOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .property("code", text())
                .property("message", text()),
        )
        .item(ObjectBuilder::new().schema_type(Type::String))
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .description(Some(
            "The failure: `{code, message}` (both optional) or a bare message",
        ))
        .build()
        .into()
}

impl CallbackBody {
    /// What the callback reports; a reported timeout is a `TIMEOUT` failure.
    pub fn into_result(self) -> AttemptResult {
        let (success, timed_out) = match (self.success, self.status.as_deref()) {
            (Some(s), _) => (s, false),
            // An unknown `status` is read as absent: refusing it would only make runtimes retry.
            (None, status) => match status.map(|s| s.trim().to_ascii_uppercase()).as_deref() {
                Some("SUCCESS") => (true, false),
                Some("ERROR") => (false, false),
                Some("TIMEOUT") => (false, true),
                _ => (self.error.is_none(), false),
            },
        };
        if success {
            let output = self
                .output
                .map(compact)
                .map(Arc::from)
                .filter(|o: &Json| o.get() != "null");
            AttemptResult::Success(output)
        } else {
            let error = self.error.unwrap_or_else(|| {
                if timed_out {
                    ErrorInfo::new("TIMEOUT", "Function reported a timeout")
                } else {
                    ErrorInfo::new("FUNCTION_ERROR", "Function reported a failure")
                }
            });
            AttemptResult::Failure(error)
        }
    }
}

fn lenient_opt_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum B {
        Bool(bool),
        Text(String),
    }
    match Option::<B>::deserialize(d)? {
        None => Ok(None),
        Some(B::Bool(b)) => Ok(Some(b)),
        Some(B::Text(t)) => match t.trim().to_ascii_lowercase().as_str() {
            "true" => Ok(Some(true)),
            "false" => Ok(Some(false)),
            _ => Err(serde::de::Error::custom("success must be a boolean")),
        },
    }
}

/// A callback's `error`: an object with optional `code`/`message`, a bare string, or null.
fn callback_error<'de, D: Deserializer<'de>>(d: D) -> Result<Option<ErrorInfo>, D::Error> {
    #[derive(Deserialize)]
    struct Partial {
        #[serde(default)]
        code: Option<String>,
        #[serde(default)]
        message: Option<String>,
    }
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum E {
        // Not `Partial` itself: serde would also read it from an array (`[null, null]`).
        Obj(crate::support::lenient::ObjectOnly<Partial>),
        Text(String),
    }
    Ok(match Option::<E>::deserialize(d)? {
        None | Some(E::Obj(crate::support::lenient::ObjectOnly(None))) => None,
        Some(E::Obj(crate::support::lenient::ObjectOnly(Some(p)))) => Some(ErrorInfo::new(
            p.code.unwrap_or_else(|| "FUNCTION_ERROR".to_owned()),
            p.message.unwrap_or_default(),
        )),
        Some(E::Text(t)) => Some(ErrorInfo::new("FUNCTION_ERROR", t)),
    })
}

/// Formats a wall-clock instant as Java's `Instant.toString` does (`…T12:00:01.123456Z`).
pub fn format_instant(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> AttemptResult {
        serde_json::from_str::<CallbackBody>(body)
            .unwrap()
            .into_result()
    }

    #[test]
    fn callbacks_accept_every_known_shape() {
        match parse(r#"{"success":true,"output":{"a":1},"error":null}"#) {
            AttemptResult::Success(Some(o)) => assert_eq!(o.get(), r#"{"a":1}"#),
            other => panic!("{other:?}"),
        }
        match parse(r#"{"success":false,"error":{"code":"HANDLER_ERROR","message":"boom"}}"#) {
            AttemptResult::Failure(e) => assert_eq!(e, ErrorInfo::new("HANDLER_ERROR", "boom")),
            other => panic!("{other:?}"),
        }
        // Go SDK: no `success` field.
        assert!(parse(r#"{"output":"x"}"#).is_success());
        assert!(!parse(r#"{"error":{"code":"E","message":"m"}}"#).is_success());
        assert!(parse(r#"{}"#).is_success());
        // `status` instead of `success`, any case.
        assert!(parse(r#"{"status":"success","output":1}"#).is_success());
        assert!(!parse(r#"{"status":"Error"}"#).is_success());
        match parse(r#"{"status":"TIMEOUT"}"#) {
            AttemptResult::Failure(e) => assert_eq!(e.code, "TIMEOUT"),
            other => panic!("{other:?}"),
        }
        // Unknown fields are ignored, a null output is no output.
        match parse(r#"{"success":true,"output":null,"extra":[1]}"#) {
            AttemptResult::Success(None) => {}
            other => panic!("{other:?}"),
        }
        // An unknown status is read as absent.
        assert!(parse(r#"{"status":"maybe","output":1}"#).is_success());
        assert!(!parse(r#"{"status":"maybe","error":{"code":"E","message":"m"}}"#).is_success());
    }

    #[test]
    fn text_from_a_runtime_is_compacted() {
        let j = json_from_text("{\n  \"hello\": \"w o\",\n  \"n\": [1, 2]\n}".to_owned()).unwrap();
        assert_eq!(j.get(), r#"{"hello":"w o","n":[1,2]}"#);
    }

    #[test]
    fn compact_drops_whitespace_outside_strings_only() {
        let c = |t: &str| {
            compact(RawValue::from_string(t.to_owned()).unwrap())
                .get()
                .to_owned()
        };
        assert_eq!(c(r#"{"a":[1,2],"b":"x y"}"#), r#"{"a":[1,2],"b":"x y"}"#);
        assert_eq!(
            c("{  \"z\" :\n 1, \"a\": \"s p\\\" q\" }"),
            r#"{"z":1,"a":"s p\" q"}"#
        );
        assert_eq!(c(" 7 "), "7");
        // Deeper than serde_json's tree goes.
        let deep = format!("{}\"a b\" {}", "[ ".repeat(300), "] ".repeat(300));
        let expected = format!("{}\"a b\"{}", "[".repeat(300), "]".repeat(300));
        assert_eq!(c(deep.trim()), expected);
    }

    #[test]
    fn instants_print_like_java() {
        use chrono::TimeZone;
        let t = chrono::Utc
            .timestamp_opt(1_781_611_201, 123_456_000)
            .unwrap();
        assert_eq!(format_instant(t), "2026-06-16T12:00:01.123456Z");
        let t = chrono::Utc.timestamp_opt(1_781_611_201, 0).unwrap();
        assert_eq!(format_instant(t), "2026-06-16T12:00:01Z");
    }
}
