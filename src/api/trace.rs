//! The W3C trace context of `:invoke` and `:enqueue` (issue 11, docs/tracing.md), as a layer
//! around the whole request: it reads (or starts) the trace and runs the request as that
//! invocation (`support::log_format`), where the handler finds it and every line logged for it
//! carries the trace id, the edge's own request lines and error answers included. Other requests
//! pass through untouched.

use std::task::{Context, Poll};

use axum::http::{HeaderMap, HeaderValue, Method, Request};
use futures_util::future::Either;
use tokio::task::futures::TaskLocalFuture;
use tower::{Layer, Service};

use super::extract::token_header;
use crate::support::headers;
use crate::support::log_format::{in_invocation, in_invocation_sync};
use crate::support::trace_context::TraceContext;

#[derive(Debug, Clone, Copy, Default)]
pub struct TraceContextLayer;

impl<S> Layer<S> for TraceContextLayer {
    type Service = TraceContextService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TraceContextService(inner)
    }
}

#[derive(Debug, Clone)]
pub struct TraceContextService<S>(S);

impl<S, B> Service<Request<B>> for TraceContextService<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<TaskLocalFuture<TraceContext, S::Future>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if !is_invocation(&request) {
            return Either::Right(self.0.call(request));
        }
        // An invalid X-Trace-Id is the handler's 400; here it only names no trace.
        let x_trace_id = token_header(request.headers(), &headers::X_TRACE_ID)
            .ok()
            .flatten();
        let trace = trace_context(request.headers(), x_trace_id.as_deref());
        let future = in_invocation_sync(trace.clone(), || self.0.call(request));
        Either::Left(in_invocation(trace, future))
    }
}

/// `POST /v1/functions/{name}:invoke` or `:enqueue` (the colon possibly percent-encoded).
fn is_invocation<B>(request: &Request<B>) -> bool {
    if request.method() != Method::POST {
        return false;
    }
    let path = request.uri().path();
    let Some(rest) = path.strip_prefix("/v1/functions/") else {
        return false;
    };
    let ends = |suffix: &str| {
        rest.len() >= suffix.len()
            && rest.as_bytes()[rest.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
    };
    ends(":invoke") || ends(":enqueue") || ends("%3Ainvoke") || ends("%3Aenqueue")
}

/// The request's trace context: its `traceparent` (sent once) and `tracestate`, else a new
/// trace. Never an error: an invalid `traceparent` is ignored, as the recommendation says, and
/// a header that is not text reads as invalid.
pub fn trace_context(headers: &HeaderMap, x_trace_id: Option<&str>) -> TraceContext {
    fn text(v: &HeaderValue) -> &str {
        v.to_str().unwrap_or("\u{1}")
    }
    let mut values = headers.get_all(&headers::TRACEPARENT).iter();
    let one: [&str; 1];
    let parents: &[&str] = match (values.next(), values.next()) {
        (Some(v), None) => {
            one = [text(v)];
            &one
        }
        (None, _) => &[],
        // More than one: invalid, whatever they say.
        (Some(_), Some(_)) => &["", ""],
    };
    let states = headers.get_all(&headers::TRACESTATE).iter().map(text);
    TraceContext::from_request(parents, states, x_trace_id)
}
