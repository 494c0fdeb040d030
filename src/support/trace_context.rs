//! W3C Trace Context (<https://www.w3.org/TR/trace-context/>): reading `traceparent` and
//! `tracestate`, starting a trace when none came, and the header text forwarded to runtimes.
//!
//! Processing follows the recommendation's rules for a receiver: a `traceparent` that does not
//! parse (or is sent more than once) is ignored and a new trace starts; `tracestate` is kept only
//! with a valid `traceparent`, and dropped when it does not parse. What is forwarded is always a
//! version-00 `traceparent` (a higher version is read by its first four fields, as the
//! recommendation says, and written back as 00) and a normalised `tracestate` of at most 512
//! characters. The control plane records no spans of its own, so the parent id is forwarded
//! unchanged: the runtime's span is a child of the caller's.

use std::sync::Arc;

/// Longest `tracestate` forwarded (the recommendation's propagation minimum).
const MAX_TRACESTATE: usize = 512;
/// Members longer than this are the first to go when `tracestate` is over its limit.
const LONG_MEMBER: usize = 128;
const MAX_MEMBERS: usize = 32;

/// One execution's trace context, cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`, lower case.
    traceparent: Arc<str>,
    tracestate: Option<Arc<str>>,
}

impl TraceContext {
    /// The context of a request: its `traceparent` values (a header sent more than once is
    /// invalid) and `tracestate` values (combined, as HTTP combines repeated list headers). With
    /// no valid `traceparent` a new trace starts; its trace id is `x_trace_id` when that is a W3C
    /// trace id (32 hex digits, or a UUID), so that both headers name the same trace.
    pub fn from_request<'a>(
        traceparent: &[&str],
        tracestate: impl IntoIterator<Item = &'a str>,
        x_trace_id: Option<&str>,
    ) -> TraceContext {
        match traceparent {
            [one] => match parse_traceparent(one) {
                Some(traceparent) => TraceContext {
                    traceparent: Arc::from(traceparent),
                    tracestate: normalise_tracestate(tracestate).map(Arc::from),
                },
                None => TraceContext::start(x_trace_id),
            },
            _ => TraceContext::start(x_trace_id),
        }
    }

    /// A context stored with queued work (the durable record): used as stored when it is
    /// still valid, else a new trace.
    pub fn from_stored(traceparent: Option<&str>, tracestate: Option<&str>) -> TraceContext {
        match traceparent {
            Some(tp) => TraceContext::from_request(&[tp], tracestate, None),
            None => TraceContext::start(None),
        }
    }

    /// A new trace: `trace_id` when it reads as a W3C trace id, else a random one; a random
    /// parent id; sampled (flags `01`), so that a runtime which records traces records this one.
    pub fn start(trace_id: Option<&str>) -> TraceContext {
        // Written in place: this runs for every invocation without a traceparent.
        let mut text = *b"00-________________________________-________________-01";
        match trace_id.and_then(as_trace_id) {
            Some(id) => text[3..35].copy_from_slice(id.as_bytes()),
            None => write_hex(&mut text[3..35], &nonzero_random::<16>()),
        }
        write_hex(&mut text[36..52], &nonzero_random::<8>());
        TraceContext {
            // Lower-case hex digits and dashes only.
            traceparent: Arc::from(std::str::from_utf8(&text).unwrap_or_default()),
            tracestate: None,
        }
    }

    pub fn traceparent(&self) -> &str {
        &self.traceparent
    }

    pub fn tracestate(&self) -> Option<&str> {
        self.tracestate.as_deref()
    }

    /// The 32 hex digits of the trace id (the log field `trace_id`).
    pub fn trace_id(&self) -> &str {
        &self.traceparent[3..35]
    }

    /// What the context holds, for memory accounting.
    pub fn held_bytes(&self) -> usize {
        self.traceparent.len() + self.tracestate.as_ref().map_or(0, |s| s.len())
    }
}

/// A valid `traceparent`, written back as version 00; `None` when it must be ignored.
pub fn parse_traceparent(value: &str) -> Option<String> {
    let v = value.trim_matches([' ', '\t']).as_bytes();
    if v.len() < 55 {
        return None;
    }
    let version = &v[0..2];
    if !is_lower_hex(version) || version == b"ff" {
        return None;
    }
    // Version 00 is exactly 55 characters; a later version may append fields after a dash.
    if version == b"00" && v.len() != 55 || v.len() > 55 && v[55] != b'-' {
        return None;
    }
    if v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let (trace_id, parent_id, flags) = (&v[3..35], &v[36..52], &v[53..55]);
    let valid = is_lower_hex(trace_id)
        && is_lower_hex(parent_id)
        && is_lower_hex(flags)
        && !all_zero(trace_id)
        && !all_zero(parent_id);
    valid.then(|| {
        // All ASCII: checked above.
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        format!("00-{}-{}-{}", text(trace_id), text(parent_id), text(flags))
    })
}

/// `tracestate` from its header values: members checked and re-joined, empty members dropped,
/// cut to 512 characters as the recommendation says (members over 128 characters first, then
/// from the end). `None` when absent, empty or invalid (the whole header is then dropped).
pub fn normalise_tracestate<'a>(values: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let mut members: Vec<&str> = Vec::new();
    for value in values {
        for member in value.split(',') {
            let member = member.trim_matches([' ', '\t']);
            if member.is_empty() {
                continue;
            }
            if members.len() == MAX_MEMBERS || !valid_member(member) {
                return None;
            }
            let key = member.split_once('=').map_or(member, |(k, _)| k);
            if members
                .iter()
                .any(|m| m.split_once('=').map(|(k, _)| k) == Some(key))
            {
                return None;
            }
            members.push(member);
        }
    }
    let joined_len =
        |m: &[&str]| m.iter().map(|s| s.len()).sum::<usize>() + m.len().saturating_sub(1);
    while joined_len(&members) > MAX_TRACESTATE {
        match members.iter().rposition(|m| m.len() > LONG_MEMBER) {
            Some(at) => {
                members.remove(at);
            }
            None => {
                members.pop();
            }
        }
    }
    (!members.is_empty()).then(|| members.join(","))
}

/// `key=value` with the recommendation's grammar (simple or multi-tenant key; a value of
/// printable characters but `,` and `=`, not ending in a space).
fn valid_member(member: &str) -> bool {
    let Some((key, value)) = member.split_once('=') else {
        return false;
    };
    let value_ok = !value.is_empty()
        && value.len() <= 256
        && value
            .bytes()
            .all(|b| (0x20..=0x7e).contains(&b) && b != b',' && b != b'=')
        && !value.ends_with(' ');
    value_ok && valid_key(key)
}

fn valid_key(key: &str) -> bool {
    let rest_ok = |s: &[u8]| {
        s.iter().all(|&b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'*' | b'/')
        })
    };
    match key.split_once('@') {
        None => {
            let k = key.as_bytes();
            (1..=256).contains(&k.len()) && k[0].is_ascii_lowercase() && rest_ok(&k[1..])
        }
        Some((tenant, system)) => {
            let (t, s) = (tenant.as_bytes(), system.as_bytes());
            (1..=241).contains(&t.len())
                && (t[0].is_ascii_lowercase() || t[0].is_ascii_digit())
                && rest_ok(&t[1..])
                && (1..=14).contains(&s.len())
                && s[0].is_ascii_lowercase()
                && rest_ok(&s[1..])
        }
    }
}

/// `X-Trace-Id` as a W3C trace id: 32 hex digits (any case), or a UUID in its dashed form;
/// never all zeros.
fn as_trace_id(text: &str) -> Option<String> {
    let text = text.trim();
    let digits: String =
        if text.len() == 36 && [8, 13, 18, 23].iter().all(|&i| text.as_bytes()[i] == b'-') {
            text.chars().filter(|&c| c != '-').collect()
        } else {
            text.to_owned()
        };
    let digits = digits.to_ascii_lowercase();
    (digits.len() == 32 && is_lower_hex(digits.as_bytes()) && !all_zero(digits.as_bytes()))
        .then_some(digits)
}

fn is_lower_hex(b: &[u8]) -> bool {
    b.iter()
        .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
}

fn all_zero(b: &[u8]) -> bool {
    b.iter().all(|&c| c == b'0')
}

fn nonzero_random<const N: usize>() -> [u8; N] {
    loop {
        let mut bytes = [0u8; N];
        fastrand::fill(&mut bytes);
        if bytes.iter().any(|&b| b != 0) {
            return bytes;
        }
    }
}

/// Lower-case hex of `bytes` into `out` (twice as long).
fn write_hex(out: &mut [u8], bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0xf)];
    }
}

#[cfg(test)]
mod tests;
