//! The environment reader: the variable names a property key is read from (canonical, then
//! Spring's relaxed forms) and typed reads that name the variable and value when they fail.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;

use super::duration::parse_duration;
use super::{AuthConfig, ConfigError, DeploymentBackend, HostRule};

/// Every environment variable name a property key is read from, canonical first.
pub fn env_names(key: &str) -> Vec<String> {
    let canonical_key = if key.starts_with("sync-queue.") {
        format!("nanofaas.{key}")
    } else {
        key.to_owned()
    };
    let mut names = vec![canonical_env_name(&canonical_key)];
    let mut push = |n: String| {
        if !names.contains(&n) {
            names.push(n);
        }
    };
    // Spring's relaxed forms: dashes removed, camelCase kept as one word; and the legacy form
    // with dashes turned into underscores.
    for k in [canonical_key.as_str(), key] {
        push(k.replace('-', "").replace('.', "_").to_ascii_uppercase());
        push(k.replace(['-', '.'], "_").to_ascii_uppercase());
    }
    names
}

fn canonical_env_name(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 8);
    let mut prev_lower = false;
    for c in key.chars() {
        if c == '.' || c == '-' {
            out.push('_');
            prev_lower = false;
        } else if c.is_ascii_uppercase() {
            if prev_lower {
                out.push('_');
            }
            out.push(c);
            prev_lower = false;
        } else {
            out.push(c.to_ascii_uppercase());
            prev_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        }
    }
    out
}

pub(super) struct Reader<'a> {
    pub(super) lookup: &'a dyn Fn(&str) -> Option<String>,
}

impl Reader<'_> {
    /// The first variable set for `key` (canonical wins), with its name.
    pub(super) fn raw(&self, key: &str) -> Option<(String, String)> {
        env_names(key)
            .into_iter()
            .find_map(|name| (self.lookup)(&name).map(|value| (name, value)))
    }

    pub(super) fn fail(name: String, value: String, reason: impl fmt::Display) -> ConfigError {
        ConfigError {
            variable: name,
            value,
            reason: reason.to_string(),
        }
    }

    pub(super) fn string(&self, key: &str) -> Option<String> {
        self.raw(key)
            .map(|(_, v)| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    pub(super) fn bool(&self, key: &str, default: bool) -> Result<bool, ConfigError> {
        match self.raw(key) {
            None => Ok(default),
            Some((name, value)) => match value.trim().to_ascii_lowercase().as_str() {
                "true" => Ok(true),
                "false" => Ok(false),
                "" => Ok(default),
                _ => Err(Self::fail(name, value, "expected true or false")),
            },
        }
    }

    pub(super) fn int(
        &self,
        key: &str,
        default: u64,
        min: u64,
        max: u64,
    ) -> Result<u64, ConfigError> {
        match self.raw(key) {
            None => Ok(default),
            Some((name, value)) => {
                let trimmed = value.trim();
                if trimmed.is_empty() {
                    return Ok(default);
                }
                match trimmed.parse::<u64>() {
                    Ok(v) if (min..=max).contains(&v) => Ok(v),
                    Ok(_) => Err(Self::fail(
                        name,
                        value,
                        format!("expected an integer between {min} and {max}"),
                    )),
                    // A negative number is an integer, just not an accepted one.
                    Err(_) if trimmed.parse::<i64>().is_ok() => Err(Self::fail(
                        name,
                        value,
                        format!("expected an integer between {min} and {max}"),
                    )),
                    Err(_) => Err(Self::fail(name, value, "expected an integer")),
                }
            }
        }
    }

    /// An integer where zero or a negative value means "use the default".
    pub(super) fn positive_int(
        &self,
        key: &str,
        default: u64,
        max: u64,
    ) -> Result<u64, ConfigError> {
        match self.raw(key) {
            None => Ok(default),
            Some((name, value)) => match value.trim().parse::<i64>() {
                _ if value.trim().is_empty() => Ok(default),
                Ok(v) if v <= 0 => Ok(default),
                Ok(v) if v as u64 <= max => Ok(v as u64),
                Ok(_) => Err(Self::fail(name, value, format!("expected at most {max}"))),
                Err(_) => Err(Self::fail(name, value, "expected an integer")),
            },
        }
    }

    /// A bind address: an IP literal or a host name; unset or blank = every interface.
    pub(super) fn address(&self, key: &str) -> Result<String, ConfigError> {
        let Some((name, value)) = self.raw(key) else {
            return Ok("0.0.0.0".to_owned());
        };
        let v = value.trim().trim_start_matches('[').trim_end_matches(']');
        if v.is_empty() {
            return Ok("0.0.0.0".to_owned());
        }
        let is_name = v
            .split('.')
            .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
        if v.parse::<std::net::IpAddr>().is_ok() || is_name {
            Ok(v.to_owned())
        } else {
            Err(Self::fail(
                name,
                value,
                "expected an IP address or a host name",
            ))
        }
    }

    /// A port that is off unless set (blank = unset).
    pub(super) fn optional_port(&self, key: &str) -> Result<Option<u16>, ConfigError> {
        match self.raw(key) {
            Some((_, value)) if !value.trim().is_empty() => Ok(Some(self.port(key, 0)?)),
            _ => Ok(None),
        }
    }

    pub(super) fn port(&self, key: &str, default: u16) -> Result<u16, ConfigError> {
        Ok(self.int(key, u64::from(default), 0, 65535)? as u16)
    }

    pub(super) fn duration(&self, key: &str, default: Duration) -> Result<Duration, ConfigError> {
        match self.raw(key) {
            None => Ok(default),
            Some((_, value)) if value.trim().is_empty() => Ok(default),
            Some((name, value)) => parse_duration(&value, Duration::from_millis(1))
                .map_err(|reason| Self::fail(name, value, reason)),
        }
    }

    /// A duration where zero or negative means "use the default" (REFERENCE §3.7).
    pub(super) fn positive_duration(
        &self,
        key: &str,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        if let Some((_, value)) = self.raw(key) {
            let v = value.trim().to_ascii_uppercase();
            let negative = v.starts_with('-') || v.starts_with("PT-");
            if negative && parse_duration(&v.replacen('-', "", 1), Duration::from_millis(1)).is_ok()
            {
                return Ok(default);
            }
        }
        let d = self.duration(key, default)?;
        Ok(if d.is_zero() { default } else { d })
    }

    pub(super) fn host_rules(&self, key: &str) -> Result<Option<Vec<HostRule>>, ConfigError> {
        let Some((name, value)) = self.raw(key) else {
            return Ok(None);
        };
        let mut rules = Vec::new();
        for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let rule = if let Ok(net) = item.parse::<IpNet>() {
                HostRule::Net(net)
            } else if let Ok(ip) = item.parse::<IpAddr>() {
                HostRule::Net(IpNet::from(ip))
            } else if item
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
            {
                HostRule::Name(item.to_ascii_lowercase())
            } else {
                return Err(Self::fail(
                    name,
                    value.clone(),
                    format!("'{item}' is neither a host name, an IP address nor a CIDR"),
                ));
            };
            rules.push(rule);
        }
        Ok(if rules.is_empty() { None } else { Some(rules) })
    }

    /// A comma-separated list of CIDRs or IP addresses (an address is its own /32 or /128).
    /// Names are refused: what these lists are compared with is a resolved address.
    pub(super) fn networks(&self, key: &str) -> Result<Vec<IpNet>, ConfigError> {
        let Some((name, value)) = self.raw(key) else {
            return Ok(Vec::new());
        };
        let mut nets = Vec::new();
        for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let net = if let Ok(net) = item.parse::<IpNet>() {
                net
            } else if let Ok(ip) = item.parse::<IpAddr>() {
                IpNet::from(ip)
            } else {
                return Err(Self::fail(
                    name,
                    value.clone(),
                    format!("'{item}' is neither an IP address nor a CIDR"),
                ));
            };
            nets.push(net);
        }
        Ok(nets)
    }

    pub(super) fn backend(&self, key: &str) -> Result<Option<DeploymentBackend>, ConfigError> {
        match self.raw(key) {
            None => Ok(None),
            Some((name, value)) => match value.trim() {
                "" => Ok(None),
                "k8s" => Ok(Some(DeploymentBackend::Kubernetes)),
                "container-local" => Ok(Some(DeploymentBackend::ContainerLocal)),
                _ => Err(Self::fail(name, value, "expected k8s or container-local")),
            },
        }
    }

    pub(super) fn auth(&self) -> Result<AuthConfig, ConfigError> {
        let auth = AuthConfig {
            enabled: self.bool("nanofaas.auth.enabled", false)?,
            tokens_file: self.string("nanofaas.auth.tokens-file").map(Into::into),
            reload_interval: self
                .positive_duration("nanofaas.auth.reload-interval", Duration::from_secs(10))?,
            metrics_protected: self.bool("nanofaas.auth.metrics-protected", false)?,
            callbacks_protected: self.bool("nanofaas.auth.callbacks-protected", false)?,
        };
        if auth.any() && auth.tokens_file.is_none() {
            let name = env_names("nanofaas.auth.tokens-file").remove(0);
            return Err(Self::fail(
                name,
                String::new(),
                "required when authentication, metrics or callback protection is enabled",
            ));
        }
        Ok(auth)
    }
}
