//! Every bucket, stream and subject name, derived from one prefix.
//!
//! Function names may contain `.` (a subject token separator, forbidden in stream names and at
//! the end of a KV key) and `_`; execution ids and prefixes are free text in principle. So any
//! user-provided part goes through [`encode_token`], which maps it injectively onto
//! `[A-Za-z0-9_-]`, a charset valid as a stream name, a consumer name, a subject token and a KV
//! key alike.

use std::fmt::Write as _;

/// The names of one control plane's state in NATS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    prefix: String,
}

/// A prefix that cannot name a stream, a bucket and a subject token at once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("NATS prefix {0:?} must be 1-32 characters of [A-Za-z0-9_-]")]
pub struct InvalidPrefix(pub String);

/// The longest prefix: stream names are capped by the server, and the prefix is repeated in
/// every name built here.
const MAX_PREFIX: usize = 32;

impl Names {
    pub fn new(prefix: &str) -> Result<Names, InvalidPrefix> {
        let ok = !prefix.is_empty()
            && prefix.len() <= MAX_PREFIX
            && prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if ok {
            Ok(Names {
                prefix: prefix.to_owned(),
            })
        } else {
            Err(InvalidPrefix(prefix.to_owned()))
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// KV bucket of function registrations (key: [`Names::function_key`]).
    pub fn functions_bucket(&self) -> String {
        format!("{}_functions", self.prefix)
    }

    /// KV bucket of async execution records (key: [`Names::execution_key`]).
    pub fn executions_bucket(&self) -> String {
        format!("{}_executions", self.prefix)
    }

    /// KV bucket of idempotency claims.
    pub fn idempotency_bucket(&self) -> String {
        format!("{}_idempotency", self.prefix)
    }

    /// KV bucket of leader leases.
    pub fn leases_bucket(&self) -> String {
        format!("{}_leases", self.prefix)
    }

    /// The invocation stream of one function. One stream per function, not one shared stream:
    /// `queueSize` differs per function and JetStream's message limits are per stream (see
    /// `queue.rs`).
    pub fn invocation_stream(&self, function: &str) -> String {
        format!("{}_invocations_{}", self.prefix, encode_token(function))
    }

    /// The subject a function's invocations are published on.
    pub fn invoke_subject(&self, function: &str) -> String {
        format!("{}.invoke.{}", self.prefix, encode_token(function))
    }

    /// The dead-letter index of one function (issue 11): which executions became dead letters,
    /// newest last. Per function for the same reason as [`Names::invocation_stream`], and so that
    /// a listing walks only that function's entries.
    pub fn dead_letter_stream(&self, function: &str) -> String {
        format!("{}_deadletters_{}", self.prefix, encode_token(function))
    }

    /// The subject a function's dead-letter index entries are published on.
    pub fn dead_letter_subject(&self, function: &str) -> String {
        format!("{}.deadletter.{}", self.prefix, encode_token(function))
    }

    /// The subject a function's delayed retries wait on, in its invocation stream.
    pub fn retry_subject(&self, function: &str) -> String {
        format!("{}.retry.{}", self.prefix, encode_token(function))
    }

    /// Core-NATS request subject for `:complete` callbacks that reached a non-holder.
    pub fn complete_subject(&self) -> String {
        format!("{}.complete", self.prefix)
    }

    /// Core-NATS subject announcing that an execution finished.
    pub fn done_subject(&self, execution_id: &str) -> String {
        format!("{}.done.{}", self.prefix, encode_token(execution_id))
    }

    /// Wildcard matching every [`Names::done_subject`].
    pub fn done_wildcard(&self) -> String {
        format!("{}.done.*", self.prefix)
    }
}

/// The KV key of a function name.
pub fn function_key(function: &str) -> String {
    encode_token(function)
}

/// The KV key of an execution id.
pub fn execution_key(execution_id: &str) -> String {
    encode_token(execution_id)
}

/// Maps any string injectively onto `[A-Za-z0-9_-]+`: ASCII letters, digits and `-` stay, every
/// other byte (including `_` itself, so the escape is unambiguous) becomes `_XX` (upper-case hex).
/// The empty string becomes `_`, which no non-empty input produces.
pub fn encode_token(raw: &str) -> String {
    if raw.is_empty() {
        return "_".to_owned();
    }
    let mut out = String::with_capacity(raw.len());
    for b in raw.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' {
            out.push(b as char);
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "_{b:02X}");
        }
    }
    out
}

/// The inverse of [`encode_token`]; `None` for a string it cannot have produced.
pub fn decode_token(encoded: &str) -> Option<String> {
    if encoded == "_" {
        return Some(String::new());
    }
    let bytes = encoded.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'_' => {
                let hex = encoded.get(i + 1..i + 3)?;
                if !hex
                    .bytes()
                    .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
                {
                    return None;
                }
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b if b.is_ascii_alphanumeric() || b == b'-' => {
                out.push(b);
                i += 1;
            }
            _ => return None,
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests;
