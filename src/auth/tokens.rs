//! The token file: one token per line as the SHA-256 of its secret, so the file itself holds no
//! secret. Format (one entry a line, `#` starts a comment, blank lines ignored):
//!
//! ```text
//! # <sha256 of the token, 64 hex digits>  <scope>[,<scope>...]  [name]
//! 516d878a977e8b0d8888e5e7afc797da84d066ebce829f7553a75a2179dfdb3e  admin,invoke  ci-deployer
//! ```
//!
//! Errors name the line and what is wrong with it, never the line's content.

use std::fmt;

use ring::digest;
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};

/// A file larger than this is refused (about 10,000 entries): reads stay bounded.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// What a token may do. A token holds any set of scopes; none implies another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Function registration and deletion, replicas, runtime config.
    Admin,
    /// Invoke, enqueue, read executions.
    Invoke,
    /// The Prometheus scrape, when it is protected.
    Metrics,
    /// Runtime callbacks, when they are protected.
    Callback,
}

impl Scope {
    const ALL: [Scope; 4] = [Scope::Admin, Scope::Invoke, Scope::Metrics, Scope::Callback];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Admin => "admin",
            Scope::Invoke => "invoke",
            Scope::Metrics => "metrics",
            Scope::Callback => "callback",
        }
    }

    fn bit(self) -> u8 {
        match self {
            Scope::Admin => 1,
            Scope::Invoke => 2,
            Scope::Metrics => 4,
            Scope::Callback => 8,
        }
    }
}

/// A set of scopes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scopes(u8);

impl Scopes {
    pub fn of(scopes: &[Scope]) -> Scopes {
        Scopes(scopes.iter().fold(0, |acc, s| acc | s.bit()))
    }

    pub fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// Why a token file was refused; the previous tokens stay in force on a reload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenFileError {
    #[error("cannot read the token file: {0}")]
    Read(String),
    #[error("the token file is larger than {MAX_FILE_BYTES} bytes")]
    TooLarge,
    #[error("the token file is not UTF-8")]
    NotUtf8,
    #[error("line {line}: {reason}")]
    Line { line: usize, reason: LineError },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineError {
    NotADigest,
    MissingScopes,
    UnknownScope,
    TrailingFields,
    Duplicate(usize),
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LineError::NotADigest => {
                f.write_str("the first field is not a SHA-256 digest (64 hex digits)")
            }
            LineError::MissingScopes => f.write_str("no scopes (admin, invoke, metrics, callback)"),
            // Not echoed: a secret pasted into the wrong column must not reach the log.
            LineError::UnknownScope => {
                f.write_str("unknown scope (expected admin, invoke, metrics or callback)")
            }
            LineError::TrailingFields => {
                f.write_str("expected `<sha256> <scope>[,<scope>...] [name]`")
            }
            LineError::Duplicate(first) => write!(f, "the same digest as line {first}"),
        }
    }
}

struct Entry {
    digest: [u8; 32],
    scopes: Scopes,
}

/// The tokens of one version of the file.
#[derive(Default)]
pub struct TokenSet {
    entries: Vec<Entry>,
}

impl fmt::Debug for TokenSet {
    // Digests are not secrets, but nothing about tokens goes to logs or panics either.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenSet({} tokens)", self.entries.len())
    }
}

impl TokenSet {
    pub fn parse(text: &str) -> Result<TokenSet, TokenFileError> {
        let mut entries: Vec<(usize, Entry)> = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let fail = |reason| TokenFileError::Line { line, reason };
            let content = raw.split('#').next().unwrap_or("").trim();
            if content.is_empty() {
                continue;
            }
            let mut fields = content.split_ascii_whitespace();
            let digest = fields
                .next()
                .and_then(parse_digest)
                .ok_or(fail(LineError::NotADigest))?;
            let scopes =
                parse_scopes(fields.next().ok_or(fail(LineError::MissingScopes))?).map_err(fail)?;
            // The optional name is for the people who edit the file; it is not used or logged.
            let _name = fields.next();
            if fields.next().is_some() {
                return Err(fail(LineError::TrailingFields));
            }
            if let Some((first, _)) = entries.iter().find(|(_, e)| e.digest == digest) {
                return Err(fail(LineError::Duplicate(*first)));
            }
            entries.push((line, Entry { digest, scopes }));
        }
        Ok(TokenSet {
            entries: entries.into_iter().map(|(_, e)| e).collect(),
        })
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The scopes of the token whose secret is `presented`, if it is one of ours. The presented
    /// secret is hashed first and compared with every digest in constant time, without stopping
    /// at a match: the time taken says nothing about which digest, or how much of one, matched.
    pub fn scopes_of(&self, presented: &[u8]) -> Option<Scopes> {
        let hash = digest::digest(&digest::SHA256, presented);
        let presented: &[u8] = hash.as_ref();
        let mut found = Choice::from(0);
        let mut scopes = 0u8;
        for entry in &self.entries {
            let equal = entry.digest[..].ct_eq(presented);
            scopes = u8::conditional_select(&scopes, &entry.scopes.0, equal);
            found |= equal;
        }
        bool::from(found).then_some(Scopes(scopes))
    }
}

fn parse_digest(field: &str) -> Option<[u8; 32]> {
    let bytes = field.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi << 4 | lo) as u8;
    }
    Some(out)
}

fn parse_scopes(field: &str) -> Result<Scopes, LineError> {
    let mut scopes = Vec::new();
    for name in field.split(',').filter(|s| !s.is_empty()) {
        let scope = Scope::ALL
            .into_iter()
            .find(|s| s.as_str() == name)
            .ok_or(LineError::UnknownScope)?;
        scopes.push(scope);
    }
    let scopes = Scopes::of(&scopes);
    if scopes.is_empty() {
        return Err(LineError::MissingScopes);
    }
    Ok(scopes)
}
