//! The outbound address policy (SSRF defaults): where the control plane may connect on a user's
//! behalf. POOL endpoints use it today, the webhook client (issue 11) is meant to.
//!
//! Link-local and cloud-metadata addresses (169.254.0.0/16, fe80::/10, fd00:ec2::254, and the same
//! addresses IPv4-mapped or behind the NAT64 prefix) are refused unless
//! `NANOFAAS_SSRF_ALLOWED_CIDRS` names them. Everything else, loopback included (POOL runtimes on
//! localhost are the common case), is permitted. The check runs where the connection is made:
//! [`PolicyResolver`] filters every DNS answer, and IP-literal hosts, which never reach a resolver,
//! are checked with [`NetPolicy::check_literal`] before the request. A registration-time check
//! alone could be bypassed by a name that resolves differently later.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::LookupIpStrategy;
use ipnet::IpNet;
use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// AWS's IPv6 instance-metadata address.
const AWS_IMDS_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);

/// What outbound connections may reach: everything but the built-in refusals, minus the
/// explicitly allowed networks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetPolicy {
    allowed: Vec<IpNet>,
}

impl NetPolicy {
    /// `allowed`: networks exempt from the built-in refusals (`NANOFAAS_SSRF_ALLOWED_CIDRS`).
    pub fn new(allowed: Vec<IpNet>) -> Self {
        NetPolicy { allowed }
    }

    pub fn permits(&self, ip: IpAddr) -> bool {
        !refused_by_default(ip)
            || self
                .allowed
                .iter()
                .any(|net| net.contains(&ip) || net.contains(&ip.to_canonical()))
    }

    /// The check for a URL whose host is an IP literal (no resolver sees those); a host name
    /// passes here and is checked by [`PolicyResolver`] once resolved.
    pub fn check_literal(&self, url: &Url) -> Result<(), Refused> {
        // The URL parser has already turned every IPv4 spelling (hex, octal, one number) into
        // dotted decimal, so a host that does not parse as an address is a name.
        let host = url.host_str().unwrap_or_default();
        let Ok(ip) = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        else {
            return Ok(());
        };
        if self.permits(ip) {
            Ok(())
        } else {
            Err(Refused {
                host: None,
                addrs: vec![ip],
            })
        }
    }
}

/// Link-local and cloud-metadata addresses, in any of the spellings that reach them.
fn refused_by_default(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            // 64:ff9b::/96 is translated to the embedded IPv4 address by a NAT64 gateway.
            let nat64 = s[..6] == [0x64, 0xff9b, 0, 0, 0, 0]
                && Ipv4Addr::from(((s[6] as u32) << 16) | s[7] as u32).is_link_local();
            v6.is_unicast_link_local() || v6 == AWS_IMDS_V6 || nat64
        }
    }
}

/// A connection the policy refused: the JSON message of a 400 at registration, the
/// `POOL_ERROR` message at dispatch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The name that resolved to `addrs`; `None` for an IP literal.
    host: Option<String>,
    addrs: Vec<IpAddr>,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A DNS answer is bounded, but a message need not list all of it.
        let shown: Vec<String> = self.addrs.iter().take(4).map(IpAddr::to_string).collect();
        let shown = shown.join(", ");
        match &self.host {
            None => write!(
                f,
                "{shown} is a link-local or cloud-metadata address, refused unless \
                 NANOFAAS_SSRF_ALLOWED_CIDRS allows it"
            ),
            Some(host) => write!(
                f,
                "host '{host}' resolves only to link-local or cloud-metadata addresses ({shown}), \
                 refused unless NANOFAAS_SSRF_ALLOWED_CIDRS allows them"
            ),
        }
    }
}

impl std::error::Error for Refused {}

/// A `reqwest` DNS resolver that answers only with addresses the policy permits: hickory-dns
/// (pure Rust, so static binaries in FROM-scratch images resolve without glibc NSS), or a fixed
/// override, then the policy's filter. A name whose every address is refused fails with
/// [`Refused`], so no connection is attempted.
#[derive(Clone)]
pub struct PolicyResolver {
    policy: Arc<NetPolicy>,
    overrides: Arc<HashMap<String, Vec<IpAddr>>>,
    /// Built on first use: a client may be built outside the runtime the resolver needs.
    dns: Arc<tokio::sync::OnceCell<TokioResolver>>,
}

impl PolicyResolver {
    /// `overrides`: fixed answers for names (lower-cased), consulted instead of DNS.
    pub fn new(policy: Arc<NetPolicy>, overrides: &[(String, Vec<IpAddr>)]) -> Self {
        PolicyResolver {
            policy,
            overrides: Arc::new(
                overrides
                    .iter()
                    .map(|(name, addrs)| (name.to_ascii_lowercase(), addrs.clone()))
                    .collect(),
            ),
            dns: Arc::default(),
        }
    }

    async fn lookup(&self, host: &str) -> Result<Vec<IpAddr>, hickory_resolver::ResolveError> {
        if let Some(addrs) = self.overrides.get(host) {
            return Ok(addrs.clone());
        }
        let dns = self.dns.get_or_try_init(system_resolver).await?;
        Ok(dns.lookup_ip(host).await?.iter().collect())
    }
}

/// The system's DNS configuration (`/etc/resolv.conf`, `/etc/hosts`), asking for both address
/// families so happy eyeballs can choose, as reqwest's own hickory resolver does.
async fn system_resolver() -> Result<TokioResolver, hickory_resolver::ResolveError> {
    let mut builder = TokioResolver::builder_tokio()?;
    builder.options_mut().ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    Ok(builder.build())
}

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let this = self.clone();
        Box::pin(async move {
            let host = name.as_str().to_ascii_lowercase();
            let found = this.lookup(&host).await?;
            let (permitted, refused): (Vec<IpAddr>, Vec<IpAddr>) =
                found.into_iter().partition(|ip| this.policy.permits(*ip));
            if permitted.is_empty() && !refused.is_empty() {
                return Err(Box::new(Refused {
                    host: Some(host),
                    addrs: refused,
                })
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            let addrs: Addrs = Box::new(permitted.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

/// The [`Refused`] somewhere in an error's cause chain (a resolver's refusal reaches the caller
/// wrapped in the client's connect errors).
pub fn refusal_in<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a Refused> {
    let mut current = Some(e);
    while let Some(err) = current {
        if let Some(refused) = err.downcast_ref::<Refused>() {
            return Some(refused);
        }
        current = err.source();
    }
    None
}

/// `url` with its credentials masked (`http://***:***@host/`), or `None` when it has none (the
/// caller keeps the text as given). Credentials in an `endpointUrl` are never echoed or logged.
pub fn redact_userinfo(url: &str) -> Option<String> {
    let mut parsed = Url::parse(url.trim()).ok()?;
    let has_user = !parsed.username().is_empty();
    let has_password = parsed.password().is_some();
    if !has_user && !has_password {
        return None;
    }
    // Setting userinfo fails only for URLs that cannot have one, which this one does.
    let _ = parsed.set_username(if has_user { "***" } else { "" });
    let _ = parsed.set_password(has_password.then_some("***"));
    Some(parsed.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn link_local_and_metadata_addresses_are_refused_by_default() {
        let p = NetPolicy::default();
        for refused in [
            "169.254.169.254",
            "169.254.0.1",
            "fe80::1",
            "febf::1",
            "fd00:ec2::254",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
        ] {
            assert!(!p.permits(ip(refused)), "{refused} must be refused");
        }
        for permitted in [
            "127.0.0.1",
            "::1",
            "10.0.0.1",
            "169.253.255.255",
            "169.255.0.0",
            "fec0::1",
            "fd00:ec2::253",
            "8.8.8.8",
            "64:ff9b::808:808",
        ] {
            assert!(p.permits(ip(permitted)), "{permitted} must be permitted");
        }
    }

    #[test]
    fn allowed_networks_lift_the_refusal_only_where_they_reach() {
        let p = NetPolicy::new(vec!["169.254.10.0/24".parse().unwrap()]);
        assert!(p.permits(ip("169.254.10.7")));
        assert!(p.permits(ip("::ffff:169.254.10.7")));
        assert!(!p.permits(ip("169.254.169.254")));
        assert!(!p.permits(ip("fe80::1")));
    }

    #[test]
    fn literal_hosts_are_checked_in_every_spelling_the_url_parser_accepts() {
        let p = NetPolicy::default();
        for url in [
            "http://169.254.169.254/latest/meta-data",
            "http://0xa9.0xfe.0xa9.0xfe/",
            "http://2852039166/",
            "http://[fe80::1]:8080/",
            "http://[::ffff:169.254.169.254]/",
            "http://[fd00:ec2::254]/",
        ] {
            let refused = p.check_literal(&Url::parse(url).unwrap()).unwrap_err();
            assert!(
                refused.to_string().contains("NANOFAAS_SSRF_ALLOWED_CIDRS"),
                "{url}: {refused}"
            );
        }
        for url in ["http://127.0.0.1:8080/", "http://metadata.internal/"] {
            assert!(p.check_literal(&Url::parse(url).unwrap()).is_ok(), "{url}");
        }
    }

    #[test]
    fn credentials_are_masked_and_other_urls_kept_as_given() {
        assert_eq!(
            redact_userinfo("http://alice:s3cret@runtime:8080/invoke").as_deref(),
            Some("http://***:***@runtime:8080/invoke")
        );
        assert_eq!(
            redact_userinfo("https://token@runtime/").as_deref(),
            Some("https://***@runtime/")
        );
        assert_eq!(
            redact_userinfo("http://:pw@runtime").as_deref(),
            Some("http://:***@runtime/")
        );
        assert_eq!(redact_userinfo("http://runtime:8080"), None);
    }

    #[tokio::test]
    async fn the_resolver_drops_refused_answers_and_fails_when_none_is_left() {
        let resolver = PolicyResolver::new(
            Arc::default(),
            &[
                (
                    "Mixed.test".to_owned(),
                    vec![ip("169.254.1.1"), ip("127.0.0.1")],
                ),
                ("metadata.test".to_owned(), vec![ip("169.254.169.254")]),
            ],
        );
        let addrs: Vec<SocketAddr> = resolver
            .resolve("mixed.test".parse().unwrap())
            .await
            .unwrap()
            .collect();
        assert_eq!(addrs, vec![SocketAddr::new(ip("127.0.0.1"), 0)]);
        let Err(e) = resolver.resolve("metadata.test".parse().unwrap()).await else {
            panic!("a name with only refused addresses must fail");
        };
        let refused = refusal_in(e.as_ref()).expect("the refusal is in the chain");
        assert_eq!(
            refused.to_string(),
            "host 'metadata.test' resolves only to link-local or cloud-metadata addresses \
             (169.254.169.254), refused unless NANOFAAS_SSRF_ALLOWED_CIDRS allows them"
        );
    }
}
