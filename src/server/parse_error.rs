//! JSON bodies for the answers hyper's HTTP/1 parser writes by itself (400 bad request line or
//! header, 414 URI too long, 431 head too large), which reach no handler and carry no body
//! (DECISIONS 2 wants `{"error", "message"}` on every error).
//!
//! hyper writes such an answer only between requests, as a bare head (`connection: close`,
//! `content-length: 0`, `date`), and closes the connection after it. Every answer of ours to those statuses has a JSON body, so
//! a write of exactly that shape, while no request is in progress, can only be hyper's: it is
//! swapped for the same status with a JSON body. Anything else passes through untouched.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;

use crate::api::error::ApiError;

/// The longest head hyper writes for a parse error (status line, content-length, date).
const MAX_ERROR_HEAD: usize = 256;

#[derive(Default)]
pub(super) struct ParseErrorRewrite {
    /// Our answer, not yet all written.
    pending: Vec<u8>,
    written: usize,
}

impl ParseErrorRewrite {
    /// A cheap first look: could `bytes` begin one of hyper's error heads?
    pub(super) fn may_be(bytes: &[u8]) -> bool {
        bytes.starts_with(b"HTTP/1.1 4")
    }

    /// When `bytes` is one of hyper's error heads, queues its JSON replacement and says so.
    pub(super) fn replace(&mut self, bytes: &[u8]) -> bool {
        if !Self::may_be(bytes) || bytes.len() > MAX_ERROR_HEAD || !bytes.ends_with(b"\r\n\r\n") {
            return false;
        }
        let Ok(head) = std::str::from_utf8(bytes) else {
            return false;
        };
        let mut lines = head.split("\r\n").filter(|l| !l.is_empty());
        let Some(status_line) = lines.next() else {
            return false;
        };
        let mut date = None;
        for line in lines {
            let (name, value) = line.split_once(':').unwrap_or((line, ""));
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" if value.trim() == "0" => {}
                "connection" if value.trim().eq_ignore_ascii_case("close") => {}
                "date" => date = Some(value.trim()),
                // Any other header: not hyper's bare error head.
                _ => return false,
            }
        }
        let error = match status_line.get(9..12) {
            Some("400") => ApiError::BadRequest("Malformed request line or header".to_owned()),
            Some("414") => ApiError::UriTooLong,
            Some("431") => ApiError::HeadersTooLarge,
            _ => return false,
        };
        let body = error.body();
        let mut answer = format!(
            "{status_line}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
            body.len()
        );
        if let Some(date) = date {
            answer.push_str("date: ");
            answer.push_str(date);
            answer.push_str("\r\n");
        }
        answer.push_str("\r\n");
        self.pending = answer.into_bytes();
        self.pending.extend_from_slice(&body);
        self.written = 0;
        true
    }

    /// Writes what is left of our answer; ready when nothing is.
    pub(super) fn poll_drain<W: AsyncWrite + Unpin>(
        &mut self,
        out: &mut W,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        while self.written < self.pending.len() {
            match Pin::new(&mut *out).poll_write(cx, &self.pending[self.written..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => self.written += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        if !self.pending.is_empty() {
            self.pending = Vec::new();
            self.written = 0;
        }
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::ParseErrorRewrite;

    #[test]
    fn only_hypers_bare_error_heads_are_replaced() {
        let mut r = ParseErrorRewrite::default();
        let head = b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\ndate: Tue, 01 Dec 2026 12:00:00 GMT\r\n\r\n";
        assert!(r.replace(head));
        let text = String::from_utf8(r.pending.clone()).unwrap();
        assert!(text.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        assert!(text.contains("content-type: application/json\r\n"));
        assert!(text.contains("date: Tue, 01 Dec 2026 12:00:00 GMT\r\n"));
        assert!(text.ends_with(r#"{"error":"431 REQUEST_HEADER_FIELDS_TOO_LARGE","message":"Request header fields are too large"}"#));

        let mut r = ParseErrorRewrite::default();
        // Our own answers have bodies and other headers.
        assert!(!r.replace(b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"));
        assert!(!r.replace(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"));
        assert!(!r.replace(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"));
        assert!(r.pending.is_empty());
    }
}
