//! Sending one attempt: the [`Transport`] port and its `reqwest` implementation, which connects
//! only where the outbound policy permits (the same `PolicyResolver` and IP-literal check as the
//! dispatch client) and follows no redirect.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;
use reqwest::Url;
use reqwest::header::HeaderMap;

use crate::support::error_chain;
use crate::support::net_policy::{NetPolicy, PolicyResolver, refusal_in};

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// The receiver answered 2xx.
    Delivered,
    /// The outbound policy refused every address: not retried.
    Refused(String),
    /// Connection error, timeout or a non-2xx answer: retried.
    Failed(String),
}

/// Posts one attempt to a receiver.
pub trait Transport: Send + Sync + 'static {
    fn post(&self, url: Url, headers: HeaderMap, body: Bytes)
    -> BoxFuture<'static, AttemptOutcome>;
}

/// The HTTP client of webhook deliveries.
pub struct HttpTransport {
    client: reqwest::Client,
    policy: Arc<NetPolicy>,
}

impl HttpTransport {
    /// `timeout` bounds each attempt; `overrides`: fixed DNS answers (see `HttpClientConfig`).
    pub fn new(
        timeout: Duration,
        policy: Arc<NetPolicy>,
        overrides: &[(String, Vec<std::net::IpAddr>)],
    ) -> Result<HttpTransport, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            // A proxy would resolve the name itself, past the policy's resolver.
            .no_proxy()
            // A redirect is a failed attempt: following it would let a receiver send the
            // control plane anywhere.
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(PolicyResolver::new(policy.clone(), overrides)))
            .user_agent(concat!(
                "nanofaas-control-plane/",
                env!("CARGO_PKG_VERSION")
            ))
            .build()?;
        Ok(HttpTransport { client, policy })
    }
}

impl Transport for HttpTransport {
    fn post(
        &self,
        url: Url,
        headers: HeaderMap,
        body: Bytes,
    ) -> BoxFuture<'static, AttemptOutcome> {
        if let Err(refused) = self.policy.check_literal(&url) {
            return std::future::ready(AttemptOutcome::Refused(refused.to_string())).boxed();
        }
        let request = self.client.post(url).headers(headers).body(body);
        async move {
            match request.send().await {
                Ok(r) if r.status().is_success() => AttemptOutcome::Delivered,
                Ok(r) => AttemptOutcome::Failed(format!("the receiver answered {}", r.status())),
                Err(e) => match refusal_in(&e) {
                    Some(refused) => AttemptOutcome::Refused(refused.to_string()),
                    None if e.is_timeout() => AttemptOutcome::Failed("timed out".to_owned()),
                    // Without the URL: its query may hold the receiver's token.
                    None => AttemptOutcome::Failed(error_chain(&e.without_url())),
                },
            }
        }
        .boxed()
    }
}
