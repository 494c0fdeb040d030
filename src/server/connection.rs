//! One accepted connection: hyper's HTTP/1 server over a socket wrapper that notes when a request
//! head starts arriving, a service that counts requests in progress and bounds body reads, and a
//! watcher task with one timer that closes the connection when a head, or an idle keep-alive,
//! takes too long, and drains it at shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::http::{HeaderValue, Request, Response, header};
use axum::response::IntoResponse;
use futures_util::task::AtomicWaker;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use super::Limits;
use super::parse_error::ParseErrorRewrite;
use crate::api::HttpService;
use crate::api::error::ApiError;
use crate::api::extract::BodyReadTimeout;

/// At shutdown, how long a connection with no request in progress may still flush what it has
/// written (the tail of a response) before it is closed.
const DRAIN_LINGER: Duration = Duration::from_millis(250);

/// "No instant" in the millisecond fields of [`Activity`].
const NEVER: u64 = u64::MAX;

/// What the connection is doing, shared by the socket wrapper, the service and the timer.
/// Instants are milliseconds since the connection was accepted.
struct Activity {
    accepted: Instant,
    in_flight: AtomicU32,
    /// When the first byte of the next request head arrived (`NEVER` while idle).
    head_started: AtomicU64,
    /// When the last response was handed to hyper in full.
    last_done: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            accepted: Instant::now(),
            in_flight: AtomicU32::new(0),
            // A new connection owes its first head at once, as Tomcat's connectionTimeout says.
            head_started: AtomicU64::new(0),
            last_done: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        self.accepted.elapsed().as_millis() as u64
    }

    fn at(&self, ms: u64) -> Instant {
        self.accepted + Duration::from_millis(ms)
    }

    fn idle(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
    }
}

/// Counts one request as in progress until the response body is dropped (hyper has taken all of
/// it), so a connection streaming a response is not mistaken for an idle one.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: &Arc<Activity>) -> InFlight {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        activity.head_started.store(NEVER, Ordering::Release);
        InFlight(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.last_done.store(self.0.now_ms(), Ordering::Release);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

pub(super) async fn serve<S: HttpService>(
    stream: TcpStream,
    router: S,
    limits: Arc<Limits>,
    stop: CancellationToken,
    _slot: OwnedSemaphorePermit,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Socket {
        inner: stream,
        activity: activity.clone(),
        rewrite: ParseErrorRewrite::default(),
    });
    let service = Service {
        router,
        limits: limits.clone(),
        activity: activity.clone(),
    };
    let conn = http1::Builder::new().serve_connection(io, service);
    tokio::pin!(conn);
    let control = Arc::new(Control::default());
    // The timer and the shutdown signal live in a task of their own, so that the many wake-ups
    // of a busy connection cost one atomic load here rather than polls of both.
    // Aborted when this connection ends, however it ends.
    let _watcher =
        AbortOnDropHandle::new(tokio::spawn(watch(activity, limits, stop, control.clone())));
    let (mut seen, mut registered) = (RUN, false);
    std::future::poll_fn(|cx| {
        if !registered {
            control.waker.register(cx.waker());
            registered = true;
        }
        loop {
            let state = control.state.load(Ordering::Acquire);
            if state == seen {
                break;
            }
            seen = state;
            // `wake` took the registration: renew it before looking at the state again.
            control.waker.register(cx.waker());
            match state {
                CLOSE => return Poll::Ready(()),
                // Closes an idle keep-alive connection at once and ends the others after
                // their current request.
                DRAIN => conn.as_mut().graceful_shutdown(),
                _ => {}
            }
        }
        conn.as_mut().poll(cx).map(|result| {
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        })
    })
    .await;
}

const RUN: u8 = 0;
const DRAIN: u8 = 1;
const CLOSE: u8 = 2;

/// What the watcher tells the connection: keep running, drain, or close now.
#[derive(Default)]
struct Control {
    state: AtomicU8,
    waker: AtomicWaker,
}

impl Control {
    fn set(&self, state: u8) {
        self.state.store(state, Ordering::Release);
        self.waker.wake();
    }
}

/// Closes the connection when a head or an idle keep-alive takes too long, and drains it at
/// shutdown (a connection with no request in progress closes after a short linger).
async fn watch(
    activity: Arc<Activity>,
    limits: Arc<Limits>,
    stop: CancellationToken,
    control: Arc<Control>,
) {
    let timer = tokio::time::sleep(limits.header_read_timeout);
    tokio::pin!(timer);
    let mut drain_deadline: Option<Instant> = None;
    let mut draining = false;
    loop {
        tokio::select! {
            () = stop.cancelled(), if !draining => {
                draining = true;
                control.set(DRAIN);
                if activity.idle() {
                    let deadline = Instant::now() + DRAIN_LINGER;
                    drain_deadline = Some(deadline);
                    timer.as_mut().reset(deadline);
                }
            }
            () = &mut timer => match next_check(&activity, &limits, drain_deadline) {
                Some(at) => timer.as_mut().reset(at),
                None => {
                    control.set(CLOSE);
                    return;
                }
            },
        }
    }
}

/// When to look at the connection again, or `None` to close it now.
fn next_check(
    activity: &Activity,
    limits: &Limits,
    drain_deadline: Option<Instant>,
) -> Option<Instant> {
    let now = Instant::now();
    // Every `header_read_timeout` at the latest, so a head that starts while we sleep is caught
    // when its own deadline passes.
    let recheck = now + limits.header_read_timeout;
    if !activity.idle() {
        // A request in progress: its body has its own deadline, the handler its own timeouts.
        return Some(recheck);
    }
    if let Some(deadline) = drain_deadline {
        return (now < deadline).then_some(deadline);
    }
    let head_started = activity.head_started.load(Ordering::Acquire);
    if head_started != NEVER {
        let deadline = activity.at(head_started) + limits.header_read_timeout;
        if now >= deadline {
            tracing::debug!("request head not received in time; closing the connection");
            return None;
        }
        return Some(deadline);
    }
    let deadline = activity.at(activity.last_done.load(Ordering::Acquire)) + limits.idle_timeout;
    if now >= deadline {
        return None;
    }
    Some(deadline.min(recheck))
}

/// The socket as hyper sees it: notes the start of each request head, and replaces the bodiless
/// error answers hyper's parser writes by itself with JSON ones.
struct Socket {
    inner: TcpStream,
    activity: Arc<Activity>,
    rewrite: ParseErrorRewrite,
}

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        let activity = &this.activity;
        if buf.filled().len() > before
            && activity.idle()
            && activity.head_started.load(Ordering::Relaxed) == NEVER
        {
            activity
                .head_started
                .store(activity.now_ms(), Ordering::Release);
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.rewrite.poll_drain(&mut this.inner, cx))?;
        if this.activity.idle() && this.rewrite.replace(buf) {
            // hyper's bytes count as written: ours go out instead.
            let _ = this.rewrite.poll_drain(&mut this.inner, cx)?;
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.rewrite.poll_drain(&mut this.inner, cx))?;
        if this.activity.idle() && bufs.first().is_some_and(|b| ParseErrorRewrite::may_be(b)) {
            let joined: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
            if this.rewrite.replace(&joined) {
                let _ = this.rewrite.poll_drain(&mut this.inner, cx)?;
                return Poll::Ready(Ok(joined.len()));
            }
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.rewrite.poll_drain(&mut this.inner, cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.rewrite.poll_drain(&mut this.inner, cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

/// The per-connection service: the router, behind the declared-length check, with the request
/// body under its read deadline and the response body counted as in progress.
#[derive(Clone)]
struct Service<S> {
    router: S,
    limits: Arc<Limits>,
    activity: Arc<Activity>,
}

impl<S: HttpService> hyper::service::Service<Request<Incoming>> for Service<S> {
    type Response = Response<TrackedBody>;
    type Error = Infallible;
    type Future = Routed<S::Future>;

    fn call(&self, request: Request<Incoming>) -> Routed<S::Future> {
        let guard = InFlight::start(&self.activity);
        if let Some(limit) = self.limits.max_body_bytes {
            if declared_length(&request).is_some_and(|n| n > limit as u64) {
                // Refused before reading: holding the connection for a body we would refuse
                // anyway is what a slow client wants.
                let mut response =
                    ApiError::PayloadTooLarge("Request body is too large".to_owned())
                        .into_response();
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                return Routed::Refused {
                    response: Some(response),
                    guard: Some(guard),
                };
            }
        }
        let timeout = self.limits.body_read_timeout;
        let request = request.map(|inner| {
            Body::new(TimedBody {
                inner,
                timeout,
                deadline: None,
            })
        });
        Routed::Serving {
            future: tower::Service::call(&mut self.router.clone(), request),
            guard: Some(guard),
        }
    }
}

pin_project_lite::pin_project! {
    /// The answer to one request, with its in-progress count attached to the response body. A
    /// future of its own rather than a boxed one: hyper keeps it in place, so the router's
    /// future is neither allocated nor copied per request (issue 12).
    #[project = RoutedProj]
    enum Routed<F> {
        Refused { response: Option<Response<Body>>, guard: Option<InFlight> },
        Serving { #[pin] future: F, guard: Option<InFlight> },
    }
}

impl<F> Future for Routed<F>
where
    F: Future<Output = Result<Response<Body>, Infallible>>,
{
    type Output = Result<Response<TrackedBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let (response, guard) = match self.project() {
            RoutedProj::Refused { response, guard } => (response.take(), guard.take()),
            RoutedProj::Serving { future, guard } => match ready!(future.poll(cx)) {
                Ok(response) => (Some(response), guard.take()),
                Err(never) => match never {},
            },
        };
        // Polled again after its answer (hyper never does): an empty 500, not a panic.
        let response = response.unwrap_or_else(|| ApiError::Internal.into_response());
        Poll::Ready(Ok(response.map(|inner| TrackedBody {
            inner,
            _in_flight: guard,
        })))
    }
}

fn declared_length<B>(request: &Request<B>) -> Option<u64> {
    request
        .headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// A request body that fails with [`BodyReadTimeout`] once it has waited too long. The timer is
/// created only when the body is not already there, which is the usual case for small bodies.
struct TimedBody {
    inner: Incoming,
    timeout: Duration,
    deadline: Option<Pin<Box<Sleep>>>,
}

impl HttpBody for TimedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame.map(|f| f.map_err(Into::into))),
            Poll::Pending => {
                let timeout = this.timeout;
                let deadline = this
                    .deadline
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                ready!(deadline.as_mut().poll(cx));
                Poll::Ready(Some(Err(Box::new(BodyReadTimeout))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that keeps its request counted as in progress until hyper drops it.
pub(super) struct TrackedBody {
    inner: Body,
    _in_flight: Option<InFlight>,
}

impl HttpBody for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
