//! The names of the headers the control plane reads and writes beyond HTTP's own, parsed once:
//! a lookup or an insert by a `&str` name parses (and for a custom name, allocates) it on every
//! request (issue 12).

use axum::http::HeaderName;

/// A header read from requests: its name, and its spelling in error messages.
pub struct Known {
    pub name: HeaderName,
    pub label: &'static str,
}

pub const IDEMPOTENCY_KEY: Known = Known {
    name: HeaderName::from_static("idempotency-key"),
    label: "Idempotency-Key",
};
pub const X_TRACE_ID: Known = Known {
    name: HeaderName::from_static("x-trace-id"),
    label: "X-Trace-Id",
};
pub const X_CALLBACK_URL: Known = Known {
    name: HeaderName::from_static("x-callback-url"),
    label: "X-Callback-Url",
};
pub const X_TIMEOUT_MS: Known = Known {
    name: HeaderName::from_static("x-timeout-ms"),
    label: "X-Timeout-Ms",
};
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
pub const X_EXECUTION_ID: HeaderName = HeaderName::from_static("x-execution-id");
pub const X_DISPATCH_ATTEMPT: HeaderName = HeaderName::from_static("x-dispatch-attempt");
