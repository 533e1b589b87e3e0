//! Upstream response heads: parsed in place, with how the body ends (RFC 9112 §6.3) and
//! whether the connection may carry another request.

use http::{Method, StatusCode, Version};

use super::chunked::Malformed;
use super::{content_length, ends_chunked, lists, Fields, Slots};

/// Largest response head accepted from an upstream; past it the response is malformed.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// How the end of a response body is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body: the answer to HEAD, a 1xx, 204 or 304.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// The chunked transfer coding.
    Chunked,
    /// Everything until the upstream closes the connection.
    UntilClose,
}

/// A response head, its fields still in the buffer it arrived in.
#[derive(Debug)]
pub struct ResponseHead<'h, 'b> {
    pub status: StatusCode,
    pub version: Version,
    pub fields: &'h [httparse::Header<'b>],
    pub framing: Framing,
    /// The connection may carry another request once this response is complete.
    pub keep_alive: bool,
    /// The head's length: where the body starts in the buffer.
    pub len: usize,
}

impl ResponseHead<'_, '_> {
    /// The `Content-Length` a client of this response is told, as one number: the body's
    /// length, or for a bodiless answer to HEAD or a 304 the length the upstream declared
    /// (it describes the representation). `None` for a body the proxy re-frames, and for
    /// 1xx and 204, which must not carry one (RFC 9110 §8.6).
    pub fn length_field(&self) -> Option<u64> {
        match self.framing {
            Framing::Length(n) => Some(n),
            Framing::Chunked | Framing::UntilClose => None,
            Framing::Empty
                if self.status.is_informational() || self.status == StatusCode::NO_CONTENT =>
            {
                None
            }
            Framing::Empty => content_length(self.fields).ok().flatten(),
        }
    }

    /// The upstream's `Retry-After` in seconds, when it gave one as a number.
    pub fn retry_after_secs(&self) -> Option<u64> {
        let value = self.fields.values(b"retry-after").next()?;
        std::str::from_utf8(value).ok()?.trim().parse().ok()
    }
}

/// Parses the response head at the start of `buf`. `Ok(None)`: not complete yet.
pub fn parse<'h, 'b>(
    buf: &'b [u8],
    slots: &'h mut Slots<'b>,
    request_method: &Method,
) -> Result<Option<ResponseHead<'h, 'b>>, Malformed> {
    let mut res = httparse::Response::new(&mut []);
    let parsed =
        httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut res, buf, slots);
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD_BYTES => {
            return Err(Malformed::new(format!(
                "response head larger than {MAX_HEAD_BYTES} bytes"
            )));
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(Malformed::new(format!("response head: {e}"))),
    };
    let httparse::Response {
        version,
        code,
        headers: fields,
        ..
    } = res;
    let fields: &'h [httparse::Header<'b>] = fields;
    let version = match version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let status = code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or_else(|| Malformed::new("status code"))?;
    let framing = framing(status, request_method, fields)?;
    let keep_alive = keep_alive(version, fields, framing);
    Ok(Some(ResponseHead {
        status,
        version,
        fields,
        framing,
        keep_alive,
        len,
    }))
}

/// RFC 9112 §6.3: how this response's body ends.
fn framing(
    status: StatusCode,
    method: &Method,
    fields: &[httparse::Header<'_>],
) -> Result<Framing, Malformed> {
    if *method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok(Framing::Empty);
    }
    // Transfer-Encoding wins over Content-Length; only a final `chunked` is self-delimiting.
    match ends_chunked(fields) {
        Some(true) => return Ok(Framing::Chunked),
        Some(false) => return Ok(Framing::UntilClose),
        None => {}
    }
    Ok(
        match content_length(fields).map_err(|_| Malformed::new("content-length"))? {
            Some(0) => Framing::Empty,
            Some(n) => Framing::Length(n),
            None => Framing::UntilClose,
        },
    )
}

/// Whether the connection stays open after this response: HTTP/1.1 without `close`, or
/// HTTP/1.0 with `keep-alive`; never when the body runs until the close or the framing was
/// ambiguous (both Transfer-Encoding and Content-Length).
fn keep_alive(version: Version, fields: &[httparse::Header<'_>], framing: Framing) -> bool {
    if framing == Framing::UntilClose
        || (fields.values(b"transfer-encoding").next().is_some()
            && fields.values(b"content-length").next().is_some())
    {
        return false;
    }
    if version == Version::HTTP_10 {
        lists(fields, b"connection", b"keep-alive")
    } else {
        !lists(fields, b"connection", b"close")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head_of(
        text: &str,
        method: Method,
    ) -> Result<Option<(StatusCode, Framing, bool, usize)>, Malformed> {
        let mut slots = crate::wire::slots();
        parse(text.as_bytes(), &mut slots, &method)
            .map(|h| h.map(|h| (h.status, h.framing, h.keep_alive, h.len)))
    }

    fn framing_of(text: &str) -> Framing {
        head_of(text, Method::GET).unwrap().unwrap().1
    }

    #[test]
    fn a_head_is_parsed_in_place_and_the_body_follows() {
        let text = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Y: a b\r\n\r\nhello";
        let mut slots = crate::wire::slots();
        let h = parse(text, &mut slots, &Method::GET).unwrap().unwrap();
        assert_eq!(h.status, StatusCode::OK);
        assert_eq!(h.version, Version::HTTP_11);
        assert_eq!(h.fields.values(b"x-y").next(), Some(&b"a b"[..]));
        assert_eq!(h.framing, Framing::Length(5));
        assert!(h.keep_alive);
        assert_eq!(&text[h.len..], b"hello");
    }

    #[test]
    fn a_partial_head_asks_for_more_and_a_huge_one_is_refused() {
        assert!(head_of("HTTP/1.1 200 OK\r\nContent-Le", Method::GET)
            .unwrap()
            .is_none());
        let huge = format!("HTTP/1.1 200 OK\r\nx: {}", "a".repeat(MAX_HEAD_BYTES));
        assert!(head_of(&huge, Method::GET).is_err());
        assert!(head_of("SMTP ready\r\n\r\n", Method::GET).is_err());
    }

    #[test]
    fn framing_follows_rfc_9112() {
        assert_eq!(
            framing_of("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            Framing::Chunked
        );
        assert_eq!(
            framing_of("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"),
            Framing::UntilClose
        );
        // Transfer-Encoding wins over Content-Length, and the connection is not reused.
        let both = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n";
        let (_, framing, keep_alive, _) = head_of(both, Method::GET).unwrap().unwrap();
        assert_eq!((framing, keep_alive), (Framing::Chunked, false));
        assert_eq!(framing_of("HTTP/1.1 200 OK\r\n\r\n"), Framing::UntilClose);
        assert_eq!(
            framing_of("HTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\n"),
            Framing::Empty
        );
        assert_eq!(
            framing_of("HTTP/1.1 304 Not Modified\r\n\r\n"),
            Framing::Empty
        );
        assert_eq!(
            framing_of("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
            Framing::Empty
        );
        assert_eq!(
            framing_of("HTTP/1.1 200 OK\r\nContent-Length: 7, 7\r\nContent-Length: 7\r\n\r\n"),
            Framing::Length(7)
        );
        let to_head = head_of("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", Method::HEAD);
        assert_eq!(to_head.unwrap().unwrap().1, Framing::Empty);
    }

    #[test]
    fn bad_lengths_are_malformed() {
        for cl in ["-1", "1 2", "0x10", "", "7, 8", "99999999999999999999999"] {
            let text = format!("HTTP/1.1 200 OK\r\nContent-Length: {cl}\r\n\r\n");
            assert!(head_of(&text, Method::GET).is_err(), "{cl:?} accepted");
        }
    }

    #[test]
    fn keep_alive_by_version_and_connection() {
        let ka = |text: &str| head_of(text, Method::GET).unwrap().unwrap().2;
        assert!(ka("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n"));
        assert!(!ka(
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n"
        ));
        assert!(!ka("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n"));
        assert!(ka(
            "HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 1\r\n\r\n"
        ));
        assert!(!ka("HTTP/1.1 200 OK\r\n\r\n"));
    }

    #[test]
    fn retry_after_in_seconds() {
        let text = b"HTTP/1.1 503 Busy\r\nRetry-After: 3\r\nContent-Length: 0\r\n\r\n";
        let mut slots = crate::wire::slots();
        let h = parse(text, &mut slots, &Method::GET).unwrap().unwrap();
        assert_eq!(h.retry_after_secs(), Some(3));
    }

    proptest::proptest! {
        /// No input makes the parser panic.
        #[test]
        fn parsing_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let mut slots = crate::wire::slots();
            let _ = parse(&bytes, &mut slots, &Method::GET);
        }
    }
}
