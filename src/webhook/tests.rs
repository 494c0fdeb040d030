//! The delivery engine on paused time with a scripted transport (the HTTP side is tested
//! black-box in tests/webhooks.rs): backoff between attempts, the bounds on pending deliveries
//! and concurrent requests, refusals, signatures and URL checks.

use std::collections::VecDeque;
use std::sync::Mutex;

use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;
use reqwest::header::HeaderMap;

use super::*;
use crate::config::WebhookSecret;
use crate::model::{ExecutionState, ExecutionStatus};
use crate::support::trace_context::TraceContext;

/// Answers attempts from a script (then `Delivered`), recording when each came; `hold` makes
/// every attempt wait until released.
#[derive(Default)]
struct Scripted {
    outcomes: Mutex<VecDeque<AttemptOutcome>>,
    calls: Mutex<Vec<(Instant, HeaderMap, Bytes)>>,
    hold: Option<Arc<tokio::sync::Semaphore>>,
    in_flight: Arc<Mutex<(u32, u32)>>,
}

impl Scripted {
    fn failing(times: usize) -> Scripted {
        Scripted {
            outcomes: Mutex::new(
                (0..times)
                    .map(|_| AttemptOutcome::Failed("503".into()))
                    .collect(),
            ),
            ..Scripted::default()
        }
    }

    fn attempts_at(&self) -> Vec<Instant> {
        self.calls.lock().unwrap().iter().map(|c| c.0).collect()
    }
}

impl Transport for Scripted {
    fn post(
        &self,
        _url: Url,
        headers: HeaderMap,
        body: Bytes,
    ) -> BoxFuture<'static, AttemptOutcome> {
        self.calls
            .lock()
            .unwrap()
            .push((Instant::now(), headers, body));
        let outcome = self
            .outcomes
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(AttemptOutcome::Delivered);
        let hold = self.hold.clone();
        let in_flight = self.in_flight.clone();
        async move {
            {
                let mut f = in_flight.lock().unwrap();
                f.0 += 1;
                f.1 = f.1.max(f.0);
            }
            if let Some(hold) = hold {
                let _ = hold.acquire().await.map(|p| p.forget());
            }
            in_flight.lock().unwrap().0 -= 1;
            outcome
        }
        .boxed()
    }
}

fn config() -> WebhookConfig {
    WebhookConfig {
        max_attempts: 5,
        backoff_initial: Duration::from_secs(1),
        backoff_max: Duration::from_secs(4),
        ..WebhookConfig::default()
    }
}

fn webhooks(config: &WebhookConfig, transport: Arc<Scripted>) -> Webhooks {
    Webhooks::new(config, Arc::default(), transport)
}

fn notice(id: &str) -> ResultNotice {
    ResultNotice {
        function: "fn".to_owned(),
        callback_url: Arc::from("http://receiver.test/hook"),
        status: ExecutionStatus {
            execution_id: Arc::from(id),
            status: ExecutionState::Success,
            started_at: Some("2026-01-01T00:00:00Z".to_owned()),
            finished_at: Some("2026-01-01T00:00:01.5Z".to_owned()),
            output: Some(crate::model::json_string("out")),
            error: None,
            cold_start: false,
            init_duration_ms: None,
        },
        trace: TraceContext::from_request(
            &["00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"],
            ["k=v"],
            None,
        ),
        duration: Duration::from_millis(1500),
    }
}

/// Lets the spawned deliveries run until they wait on time (or are done).
async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

async fn until_idle(w: &Webhooks) {
    w.drain(Instant::now() + Duration::from_secs(3600)).await;
}

fn scrape(w: &Webhooks) -> String {
    let mut out = MetricWriter::default();
    w.render(&mut out);
    out.finish()
}

#[tokio::test(start_paused = true)]
async fn failed_attempts_are_retried_with_a_doubling_jittered_backoff() {
    let transport = Arc::new(Scripted::failing(4));
    let w = webhooks(&config(), transport.clone());
    let started = Instant::now();
    w.finished(notice("e1"));
    until_idle(&w).await;
    let at = transport.attempts_at();
    assert_eq!(at.len(), 5, "four failures, then delivered");
    assert_eq!(at[0], started, "the first attempt is immediate");
    // Waits of 1, 2, 4 and 4 s (the maximum), each jittered down to half at most.
    for (i, full) in [1u64, 2, 4, 4].into_iter().enumerate() {
        let gap = at[i + 1] - at[i];
        let full = Duration::from_secs(full);
        assert!(
            gap >= full / 2 && gap <= full,
            "wait {i}: {gap:?} not in [{:?}, {full:?}]",
            full / 2
        );
    }
    assert_eq!(w.pending(), 0);
    let text = scrape(&w);
    assert!(text.contains("controlplane_webhook_deliveries_total{outcome=\"delivered\"} 1\n"));
    assert!(text.contains("controlplane_webhook_attempts_total 5\n"));
    assert!(text.contains("controlplane_webhook_pending 0\n"));
}

#[tokio::test(start_paused = true)]
async fn a_delivery_is_dropped_and_counted_after_its_last_attempt() {
    let transport = Arc::new(Scripted::failing(100));
    let w = webhooks(&config(), transport.clone());
    let started = Instant::now();
    w.finished(notice("e1"));
    until_idle(&w).await;
    assert_eq!(transport.attempts_at().len(), 5);
    // Bounded: at most 1 + 2 + 4 + 4 seconds of waits.
    assert!(Instant::now() - started <= Duration::from_secs(11));
    assert_eq!(w.pending(), 0);
    let text = scrape(&w);
    assert!(text.contains("controlplane_webhook_deliveries_total{outcome=\"dropped\"} 1\n"));
    assert!(!text.contains("outcome=\"delivered\""));
}

#[tokio::test(start_paused = true)]
async fn a_refusal_is_not_retried() {
    let transport = Arc::new(Scripted {
        outcomes: Mutex::new(VecDeque::from([AttemptOutcome::Refused("no".into())])),
        ..Scripted::default()
    });
    let w = webhooks(&config(), transport.clone());
    w.finished(notice("e1"));
    until_idle(&w).await;
    assert_eq!(transport.attempts_at().len(), 1);
    assert!(scrape(&w).contains("controlplane_webhook_deliveries_total{outcome=\"refused\"} 1\n"));
}

#[tokio::test(start_paused = true)]
async fn pending_deliveries_and_concurrent_requests_are_bounded() {
    let hold = Arc::new(tokio::sync::Semaphore::new(0));
    let transport = Arc::new(Scripted {
        hold: Some(hold.clone()),
        ..Scripted::default()
    });
    let config = WebhookConfig {
        queue_size: 3,
        concurrency: 2,
        ..config()
    };
    let w = webhooks(&config, transport.clone());
    for i in 0..5 {
        w.finished(notice(&format!("e{i}")));
    }
    settle().await;
    // Three pending (two sending, one waiting for a request slot), two over the bound.
    assert_eq!(w.pending(), 3);
    assert_eq!(transport.attempts_at().len(), 2);
    let text = scrape(&w);
    assert!(text.contains("controlplane_webhook_deliveries_total{outcome=\"overflow\"} 2\n"));
    assert!(text.contains("controlplane_webhook_pending 3\n"));
    hold.add_permits(10);
    until_idle(&w).await;
    assert_eq!(transport.attempts_at().len(), 3);
    assert_eq!(transport.in_flight.lock().unwrap().1, 2);
    assert_eq!(w.pending(), 0);
    assert!(
        scrape(&w).contains("controlplane_webhook_deliveries_total{outcome=\"delivered\"} 3\n")
    );
}

#[tokio::test(start_paused = true)]
async fn nothing_is_exported_before_a_result_has_a_webhook() {
    let w = webhooks(&config(), Arc::default());
    assert_eq!(scrape(&w), "");
}

#[tokio::test(start_paused = true)]
async fn each_attempt_carries_the_result_headers_and_is_signed_at_its_time() {
    let transport = Arc::new(Scripted::failing(1));
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let config = WebhookConfig {
        signing_key: WebhookSecret::parse(secret),
        ..config()
    };
    let w = webhooks(&config, transport.clone());
    w.finished(notice("e-1"));
    until_idle(&w).await;
    let calls = transport.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 2);
    for (_, h, body) in &calls {
        let get = |name: &str| h.get(name).map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(get("content-type").as_deref(), Some("application/json"));
        assert_eq!(get("x-execution-id").as_deref(), Some("e-1"));
        assert_eq!(get("x-function-name").as_deref(), Some("fn"));
        assert_eq!(get("x-function-status").as_deref(), Some("success"));
        assert_eq!(get("x-duration-seconds").as_deref(), Some("1.500000"));
        assert_eq!(get("webhook-id").as_deref(), Some("e-1"));
        assert_eq!(
            get("traceparent").as_deref(),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        );
        assert_eq!(get("tracestate").as_deref(), Some("k=v"));
        let timestamp: i64 = get("webhook-timestamp").unwrap().parse().unwrap();
        let signer = Signer::new(config.signing_key.as_ref().unwrap());
        assert_eq!(
            get("webhook-signature").unwrap(),
            signer.sign("e-1", timestamp, body)
        );
        let json: serde_json::Value = serde_json::from_slice(body).unwrap();
        assert_eq!(json["executionId"], "e-1");
        assert_eq!(json["status"], "success");
        assert_eq!(json["output"], "out");
    }
    // Unsigned without a secret: no signature header, the id and timestamp still sent.
    let transport = Arc::new(Scripted::default());
    let w = webhooks(&WebhookConfig::default(), transport.clone());
    w.finished(notice("e-2"));
    until_idle(&w).await;
    let (_, h, _) = transport.calls.lock().unwrap()[0].clone();
    assert!(h.get("webhook-signature").is_none());
    assert!(h.get("webhook-timestamp").is_some());
    assert_eq!(h["webhook-id"], "e-2");
}

#[test]
fn signatures_match_the_standard_webhooks_example() {
    // The example of the Standard Webhooks specification.
    let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    let signature = Signer::new(&secret).sign(
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1614265330,
        br#"{"test": 2432232314}"#,
    );
    assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    // A plain secret is its own bytes; an undecodable whsec_ value or a blank one is none.
    assert_eq!(WebhookSecret::parse(" plain ").unwrap().key(), b"plain");
    assert!(WebhookSecret::parse("whsec_***").is_none());
    assert!(WebhookSecret::parse("   ").is_none());
    assert!(WebhookSecret::parse("whsec_").is_none());
}

#[test]
fn callback_urls_are_checked() {
    let config = WebhookConfig {
        allowed_hosts: Some(vec![
            HostRule::Name("hooks.example".into()),
            HostRule::Net("10.0.0.0/8".parse().unwrap()),
        ]),
        ..WebhookConfig::default()
    };
    let w = webhooks(&WebhookConfig::default(), Arc::default());
    let limited = webhooks(&config, Arc::default());
    for ok in [
        "http://127.0.0.1:9/hook",
        "https://hooks.example/x?token=1",
        "http://user:pw@localhost/",
    ] {
        assert!(w.check_callback_url(ok).is_ok(), "{ok}");
    }
    let refused = |w: &Webhooks, url: &str| w.check_callback_url(url).unwrap_err();
    assert!(refused(&w, "ftp://host/x").contains("http or https"));
    assert!(refused(&w, "/relative").contains("absolute URL"));
    assert!(refused(&w, "http://169.254.169.254/latest").contains("NANOFAAS_SSRF_ALLOWED_CIDRS"));
    assert!(refused(&w, "http://[fe80::1]/").contains("NANOFAAS_SSRF_ALLOWED_CIDRS"));
    let long = format!("http://h/{}", "a".repeat(MAX_CALLBACK_URL_LEN));
    assert!(refused(&w, &long).contains("longer than 2048"));
    assert!(
        limited
            .check_callback_url("https://HOOKS.example/x")
            .is_ok()
    );
    assert!(limited.check_callback_url("http://10.1.2.3/").is_ok());
    assert!(refused(&limited, "http://other.example/").contains("NANOFAAS_WEBHOOK_ALLOWED_HOSTS"));
}
