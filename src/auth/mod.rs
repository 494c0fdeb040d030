//! Bearer-token authentication (off by default): the token file (`tokens.rs`), the store that
//! holds its current version and reloads it without a restart (here), and the middleware that
//! checks each request against the scope its route needs (`layer.rs`). The routers install the
//! middleware only when a protection is configured, so an open deployment pays nothing.
//! `docs/security.md` is the trust model.

mod layer;
#[cfg(test)]
mod tests;
mod tokens;

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ring::digest;
use tokio_util::sync::CancellationToken;

pub use layer::{Access, GuardParts, Protected, Rejection, api_access, management_access, protect};
pub use tokens::{MAX_FILE_BYTES, Scope, Scopes, TokenFileError, TokenSet};

use crate::support::{read, write};

/// The tokens in force and the file they come from.
pub struct TokenStore {
    path: PathBuf,
    current: RwLock<Loaded>,
    /// One reload at a time, so a slower read of an older file never replaces a newer one.
    reloading: tokio::sync::Mutex<()>,
}

struct Loaded {
    tokens: Arc<TokenSet>,
    /// SHA-256 of the file's bytes last read, accepted or refused: a reload that finds the same
    /// content changes nothing (and a refused file is logged once, not at every interval).
    content: [u8; 32],
}

/// What a reload did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reloaded {
    Unchanged,
    Replaced { tokens: usize },
}

impl TokenStore {
    /// Reads the file at start-up; an unreadable or invalid file stops the start.
    pub fn load(path: &Path) -> Result<TokenStore, TokenFileError> {
        let bytes = read_bounded(path)?;
        let tokens = parse(&bytes)?;
        if tokens.is_empty() {
            tracing::warn!(path = %path.display(), "the token file lists no token: every protected request will be refused");
        }
        Ok(TokenStore {
            path: path.to_owned(),
            current: RwLock::new(Loaded {
                tokens: Arc::new(tokens),
                content: content_digest(&bytes),
            }),
            reloading: tokio::sync::Mutex::new(()),
        })
    }

    /// The scopes of a presented bearer secret, if it is a known token.
    pub fn scopes_of(&self, presented: &str) -> Option<Scopes> {
        let tokens = read(&self.current).tokens.clone();
        tokens.scopes_of(presented.as_bytes())
    }

    /// Reads the file again and replaces the tokens if its content changed. On any error the
    /// tokens in force stay as they are; the same refused content again is `Unchanged`.
    pub async fn reload(&self) -> Result<Reloaded, TokenFileError> {
        let _one_at_a_time = self.reloading.lock().await;
        let path = self.path.clone();
        // File I/O off the async workers.
        let bytes = tokio::task::spawn_blocking(move || read_bounded(&path))
            .await
            .map_err(|e| TokenFileError::Read(e.to_string()))??;
        let content = content_digest(&bytes);
        if read(&self.current).content == content {
            return Ok(Reloaded::Unchanged);
        }
        let parsed = parse(&bytes);
        let mut current = write(&self.current);
        current.content = content;
        let tokens = parsed?;
        let count = tokens.len();
        current.tokens = Arc::new(tokens);
        Ok(Reloaded::Replaced { tokens: count })
    }

    /// Reloads the file every `interval` until `stop`. Each tick reads one small file (bounded by
    /// [`MAX_FILE_BYTES`]), so rotating a token takes at most one interval, with no file-system
    /// notification machinery and no dependence on mtime granularity.
    pub async fn watch(self: Arc<Self>, interval: Duration, stop: CancellationToken) {
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = ticks.tick() => match self.reload().await {
                    Ok(Reloaded::Unchanged) => {}
                    Ok(Reloaded::Replaced { tokens }) => {
                        tracing::info!(path = %self.path.display(), tokens, "token file reloaded");
                    }
                    Err(error) => tracing::error!(
                        path = %self.path.display(),
                        %error,
                        "token file not reloaded; the previous tokens stay in force"
                    ),
                },
            }
        }
    }
}

fn read_bounded(path: &Path) -> Result<Vec<u8>, TokenFileError> {
    let file = std::fs::File::open(path).map_err(|e| TokenFileError::Read(e.to_string()))?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| TokenFileError::Read(e.to_string()))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(TokenFileError::TooLarge);
    }
    Ok(bytes)
}

fn parse(bytes: &[u8]) -> Result<TokenSet, TokenFileError> {
    TokenSet::parse(std::str::from_utf8(bytes).map_err(|_| TokenFileError::NotUtf8)?)
}

fn content_digest(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, bytes).as_ref());
    out
}
