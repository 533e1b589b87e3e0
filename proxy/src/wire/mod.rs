//! HTTP/1.1 on the wire (RFC 9112), both directions, as pure functions over buffers: client
//! request heads ([`request`]), upstream response heads ([`response`]), the chunked
//! transfer coding ([`chunked`]) and the heads the proxy writes ([`write`](mod@write)). No I/O here,
//! so every rule is tested on bytes.
//!
//! Heads are parsed by httparse into slices of the buffer they arrived in; nothing is copied
//! into a `HeaderMap`. The proxy's header rules ([`crate::headers`]) read those slices and
//! write the forwarded head straight into the next buffer.

pub mod chunked;
pub mod request;
pub mod response;
pub mod write;

use std::mem::MaybeUninit;

/// Most header fields accepted in a head (hyper's default too).
pub const MAX_HEADERS: usize = 100;

/// Room for httparse to put a head's fields in, uninitialised (nothing is zeroed per head).
pub type Slots<'b> = [MaybeUninit<httparse::Header<'b>>; MAX_HEADERS];

/// Fresh, uninitialised field slots.
pub fn slots<'b>() -> Slots<'b> {
    [const { MaybeUninit::uninit() }; MAX_HEADERS]
}

/// The header fields of a head, as (name, value) byte pairs in the order they came; names
/// compare case-insensitively. Implemented for httparse's fields (HTTP/1, as received) and
/// for `http::HeaderMap` (HTTP/2, as hyper parsed them).
pub trait Fields {
    fn pairs(&self) -> impl Iterator<Item = (&[u8], &[u8])>;

    /// The values of every field called `name`.
    fn values<'s>(&'s self, name: &'s [u8]) -> impl Iterator<Item = &'s [u8]> {
        self.pairs()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }
}

impl Fields for [httparse::Header<'_>] {
    fn pairs(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.iter().map(|h| (h.name.as_bytes(), h.value))
    }
}

impl Fields for http::HeaderMap {
    fn pairs(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.iter()
            .map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes()))
    }
}

/// The comma-separated elements of a list-valued field (`Connection`, `Transfer-Encoding`),
/// trimmed, empty ones skipped.
pub fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|b| *b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// Whether any `name` field lists `token`.
pub fn lists<F: Fields + ?Sized>(fields: &F, name: &[u8], token: &[u8]) -> bool {
    fields
        .values(name)
        .any(|v| tokens(v).any(|t| t.eq_ignore_ascii_case(token)))
}

/// A `Content-Length` that is not one number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadLength;

/// A `Content-Length` made of one or more identical values (RFC 9110 §8.6); `Err` when a
/// value is not a number or two disagree, `Ok(None)` when there is none.
pub fn content_length<F: Fields + ?Sized>(fields: &F) -> Result<Option<u64>, BadLength> {
    let mut length: Option<u64> = None;
    for value in fields.values(b"content-length") {
        for part in value.split(|b| *b == b',') {
            let part = part.trim_ascii();
            if part.is_empty() || !part.iter().all(u8::is_ascii_digit) || part.len() > 19 {
                return Err(BadLength);
            }
            let n = part.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
            if length.is_some_and(|l| l != n) {
                return Err(BadLength);
            }
            length = Some(n);
        }
    }
    Ok(length)
}

/// Whether a `Transfer-Encoding` ends in `chunked` (the only coding that delimits a body).
/// `None` when there is no `Transfer-Encoding` at all.
pub fn ends_chunked<F: Fields + ?Sized>(fields: &F) -> Option<bool> {
    let mut last: Option<&[u8]> = None;
    for value in fields.values(b"transfer-encoding") {
        last = Some(tokens(value).last().unwrap_or(b""));
    }
    last.map(|t| t.eq_ignore_ascii_case(b"chunked"))
}

/// Where the first empty line ends a head that starts `buf` (CRLF or bare LF lines), if it
/// has arrived.
pub fn head_end(buf: &[u8]) -> Option<usize> {
    memchr::memchr_iter(b'\n', buf).find_map(|i| match buf.get(i + 1..) {
        Some([b'\n', ..]) => Some(i + 2),
        Some([b'\r', b'\n', ..]) => Some(i + 3),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&'static str, &'static [u8])]) -> Vec<httparse::Header<'static>> {
        pairs
            .iter()
            .map(|(name, value)| httparse::Header { name, value })
            .collect()
    }

    #[test]
    fn heads_end_at_the_first_empty_line() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nrest"), Some(27));
        assert_eq!(head_end(b"GET / HTTP/1.1\nHost: a\n\nrest"), Some(24));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n"), None);
        assert_eq!(head_end(b""), None);
    }

    #[test]
    fn content_lengths_agree_or_are_refused() {
        assert_eq!(content_length(&fields(&[])[..]), Ok(None));
        assert_eq!(
            content_length(&fields(&[("Content-Length", b"12")])[..]),
            Ok(Some(12))
        );
        assert_eq!(
            content_length(&fields(&[("content-length", b"7, 7"), ("CONTENT-LENGTH", b"7")])[..]),
            Ok(Some(7))
        );
        for bad in [
            &b"7, 8"[..],
            b"-1",
            b"0x1",
            b"",
            b"1 2",
            b"99999999999999999999",
        ] {
            assert_eq!(
                content_length(&fields(&[("content-length", bad)])[..]),
                Err(BadLength),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn only_a_final_chunked_delimits() {
        assert_eq!(ends_chunked(&fields(&[])[..]), None);
        let te = |v: &'static [u8]| ends_chunked(&fields(&[("Transfer-Encoding", v)])[..]);
        assert_eq!(te(b"chunked"), Some(true));
        assert_eq!(te(b"gzip, Chunked"), Some(true));
        assert_eq!(te(b"chunked, gzip"), Some(false));
        assert_eq!(te(b""), Some(false));
    }

    #[test]
    fn list_tokens_are_trimmed_and_matched_without_case() {
        let f = fields(&[("Connection", b" keep-alive , Upgrade,,")]);
        assert!(lists(&f[..], b"connection", b"upgrade"));
        assert!(!lists(&f[..], b"connection", b"close"));
        assert_eq!(tokens(b"a, ,b").collect::<Vec<_>>(), [&b"a"[..], b"b"]);
    }
}
