//! HTTP/1.1 towards upstreams, as pure functions over buffers: the request head written, the
//! response head parsed (RFC 9112), how the response body ends, and the chunked decoder. No
//! I/O here, so every case is tested on bytes.

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version};

/// Most headers accepted in a response head or a trailer section (hyper's default too).
pub const MAX_HEADERS: usize = 100;
/// Largest response head accepted from an upstream; past it the response is malformed.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Longest chunk-size line (size, extensions, CRLF) accepted.
const MAX_CHUNK_LINE: usize = 4096;

/// A response (or trailer section) an upstream sent that is not valid HTTP/1.1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub String);

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed response: {}", self.0)
    }
}

impl std::error::Error for Malformed {}

fn malformed(what: impl Into<String>) -> Malformed {
    Malformed(what.into())
}

// ===== request =====

/// How the request body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestFraming {
    /// No body and nothing to say about it (GET, HEAD, DELETE… with no body).
    None,
    /// The headers carry a `Content-Length`; the body is written as is.
    Length,
    /// An empty body on a method that normally has one: `content-length: 0` is added.
    Zero,
    /// Length unknown: `transfer-encoding: chunked` is added and each frame chunk-encoded.
    Chunked,
}

/// Appends `METHOD target HTTP/1.1`, the headers, the framing header and the blank line.
pub fn encode_request_head(
    out: &mut Vec<u8>,
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    framing: RequestFraming,
) {
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match framing {
        RequestFraming::None | RequestFraming::Length => {}
        RequestFraming::Zero => out.extend_from_slice(b"content-length: 0\r\n"),
        RequestFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}

/// The chunk-size line that precedes `len` bytes of data.
pub fn chunk_header(len: usize) -> Vec<u8> {
    format!("{len:x}\r\n").into_bytes()
}

/// The last chunk and an empty trailer section.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

// ===== response =====

/// How the end of a response body is found (RFC 9112 §6.3).
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

/// A parsed response head.
#[derive(Debug)]
pub struct ResponseHead {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub framing: Framing,
    /// The connection may carry another request once this response is complete.
    pub keep_alive: bool,
}

/// Parses a response head at the start of `buf`. `Ok(None)`: not complete yet (read more).
/// On success the head's bytes are taken off `buf`, which then starts with the body; header
/// values share the head's memory instead of being copied.
pub fn parse_response_head(
    buf: &mut BytesMut,
    request_method: &Method,
) -> Result<Option<ResponseHead>, Malformed> {
    // Uninitialised slots: httparse fills what it uses, and nothing is zeroed per response.
    let mut slots =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut res, buf, &mut slots);
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD_BYTES => {
            return Err(malformed(format!(
                "head larger than {MAX_HEAD_BYTES} bytes"
            )));
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(malformed(e.to_string())),
    };
    let version = match res.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let status = res
        .code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or_else(|| malformed("status code"))?;
    // Names now; values as offsets into the head, so that once the head is split off they
    // become slices of its one shared buffer instead of copies.
    let base = buf.as_ptr() as usize;
    let mut fields = Vec::with_capacity(res.headers.len());
    for h in res.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| malformed(format!("header name {:?}", h.name)))?;
        let at = h.value.as_ptr() as usize - base;
        fields.push((name, at..at + h.value.len()));
    }
    let head = buf.split_to(len).freeze();
    // Room for what the proxy adds on the way back (Via, X-Request-Id).
    let mut headers = HeaderMap::with_capacity(fields.len() + 2);
    for (name, range) in fields {
        let value = HeaderValue::from_maybe_shared(head.slice(range))
            .map_err(|_| malformed(format!("value of header {name}")))?;
        headers.append(name, value);
    }
    let framing = framing(status, request_method, &headers)?;
    let keep_alive = keep_alive(version, &headers, framing);
    Ok(Some(ResponseHead {
        status,
        version,
        headers,
        framing,
        keep_alive,
    }))
}

/// RFC 9112 §6.3: how this response's body ends.
fn framing(status: StatusCode, method: &Method, headers: &HeaderMap) -> Result<Framing, Malformed> {
    if *method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok(Framing::Empty);
    }
    if headers.contains_key(header::TRANSFER_ENCODING) {
        // Transfer-Encoding wins over Content-Length; only a final `chunked` is self-delimiting.
        let last = headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .rfind(|t| !t.is_empty());
        return Ok(match last {
            Some(t) if t.eq_ignore_ascii_case("chunked") => Framing::Chunked,
            _ => Framing::UntilClose,
        });
    }
    let mut length: Option<u64> = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        // A list of identical values is one length (RFC 9110 §8.6); anything else is an error.
        for part in value.as_bytes().split(|b| *b == b',') {
            let part = part.trim_ascii();
            let n = (!part.is_empty() && part.iter().all(u8::is_ascii_digit))
                .then(|| std::str::from_utf8(part).ok()?.parse::<u64>().ok())
                .flatten()
                .ok_or_else(|| malformed("content-length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(malformed("conflicting content-length values"));
            }
            length = Some(n);
        }
    }
    Ok(match length {
        Some(0) => Framing::Empty,
        Some(n) => Framing::Length(n),
        None => Framing::UntilClose,
    })
}

/// Whether the connection stays open after this response: HTTP/1.1 without `close`, or
/// HTTP/1.0 with `keep-alive`; never when the body runs until the close.
fn keep_alive(version: Version, headers: &HeaderMap, framing: Framing) -> bool {
    if framing == Framing::UntilClose
        || (headers.contains_key(header::TRANSFER_ENCODING)
            && headers.contains_key(header::CONTENT_LENGTH))
    {
        return false;
    }
    let has = |token: &str| {
        headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    if version == Version::HTTP_10 {
        has("keep-alive")
    } else {
        !has("close")
    }
}

// ===== chunked bodies =====

/// What the chunked decoder found in the buffer.
#[derive(Debug, PartialEq)]
pub enum Decoded {
    /// Body bytes.
    Data(Bytes),
    /// The trailer section, after the last chunk (only when it has fields).
    Trailers(HeaderMap),
    /// The body is complete; nothing of it is left in the buffer.
    Done,
    /// Read more and call again.
    NeedMore,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk, this many bytes to go.
    Data(u64),
    /// After a chunk's data, expecting its CRLF.
    DataEnd,
    /// After the last chunk, expecting trailer fields and a blank line.
    Trailers,
    Done,
}

/// The chunked transfer coding, decoded incrementally from a buffer that fills up in pieces.
#[derive(Debug)]
pub struct ChunkedDecoder {
    state: ChunkState,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder {
            state: ChunkState::Size,
        }
    }
}

impl ChunkedDecoder {
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Takes what it can from the front of `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, Malformed> {
        loop {
            match self.state {
                ChunkState::Done => return Ok(Decoded::Done),
                ChunkState::Size => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    if !buf[0].is_ascii_hexdigit() {
                        return Err(malformed("chunk size"));
                    }
                    match httparse::parse_chunk_size(buf) {
                        Ok(httparse::Status::Complete((used, size))) => {
                            let _ = buf.split_to(used);
                            self.state = if size == 0 {
                                ChunkState::Trailers
                            } else {
                                ChunkState::Data(size)
                            };
                        }
                        Ok(httparse::Status::Partial) if buf.len() < MAX_CHUNK_LINE => {
                            return Ok(Decoded::NeedMore)
                        }
                        _ => return Err(malformed("chunk size")),
                    }
                }
                ChunkState::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    let data = buf.split_to(take).freeze();
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left)
                    };
                    return Ok(Decoded::Data(data));
                }
                ChunkState::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Decoded::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(malformed("chunk not followed by CRLF"));
                    }
                    let _ = buf.split_to(2);
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailers => {
                    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
                    let (used, trailers) = match httparse::parse_headers(buf, &mut slots) {
                        Ok(httparse::Status::Complete((used, fields))) => {
                            let mut trailers = HeaderMap::new();
                            for f in fields.iter() {
                                let name = HeaderName::from_bytes(f.name.as_bytes())
                                    .map_err(|_| malformed("trailer name"))?;
                                let value = HeaderValue::from_bytes(f.value)
                                    .map_err(|_| malformed("trailer value"))?;
                                trailers.append(name, value);
                            }
                            (used, trailers)
                        }
                        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD_BYTES => {
                            return Ok(Decoded::NeedMore)
                        }
                        _ => return Err(malformed("trailer section")),
                    };
                    let _ = buf.split_to(used);
                    self.state = ChunkState::Done;
                    if !trailers.is_empty() {
                        return Ok(Decoded::Trailers(trailers));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn head(text: &str, method: Method) -> Result<Option<ResponseHead>, Malformed> {
        let mut buf = BytesMut::from(text.as_bytes());
        parse_response_head(&mut buf, &method)
    }

    fn framing_of(text: &str) -> Framing {
        head(text, Method::GET).unwrap().unwrap().framing
    }

    #[test]
    fn request_heads_carry_every_header_and_the_framing() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("example.com"));
        headers.append("x-a", HeaderValue::from_static("1"));
        headers.append("x-a", HeaderValue::from_static("2"));
        let mut out = Vec::new();
        encode_request_head(
            &mut out,
            &Method::POST,
            "/p?q=1",
            &headers,
            RequestFraming::Chunked,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST /p?q=1 HTTP/1.1\r\nhost: example.com\r\nx-a: 1\r\nx-a: 2\r\n\
             transfer-encoding: chunked\r\n\r\n"
        );
        let mut out = Vec::new();
        encode_request_head(
            &mut out,
            &Method::PUT,
            "/",
            &HeaderMap::new(),
            RequestFraming::Zero,
        );
        assert_eq!(out, b"PUT / HTTP/1.1\r\ncontent-length: 0\r\n\r\n");
    }

    #[test]
    fn a_response_head_is_split_off_and_the_body_left() {
        let mut buf =
            BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Y: a b\r\n\r\nhello"[..]);
        let h = parse_response_head(&mut buf, &Method::GET)
            .unwrap()
            .unwrap();
        assert_eq!(h.status, StatusCode::OK);
        assert_eq!(h.version, Version::HTTP_11);
        assert_eq!(h.headers["x-y"], "a b");
        assert_eq!(h.framing, Framing::Length(5));
        assert!(h.keep_alive);
        assert_eq!(&buf[..], b"hello");
    }

    #[test]
    fn a_partial_head_asks_for_more_and_a_huge_one_is_refused() {
        assert!(head("HTTP/1.1 200 OK\r\nContent-Le", Method::GET)
            .unwrap()
            .is_none());
        let huge = format!("HTTP/1.1 200 OK\r\nx: {}", "a".repeat(MAX_HEAD_BYTES));
        assert!(head(&huge, Method::GET).is_err());
        assert!(head("SMTP ready\r\n\r\n", Method::GET).is_err());
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
        let h = head(
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            Method::GET,
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.framing, Framing::Chunked);
        assert!(!h.keep_alive);
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
        let to_head = head("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", Method::HEAD);
        assert_eq!(to_head.unwrap().unwrap().framing, Framing::Empty);
    }

    #[test]
    fn bad_lengths_are_malformed() {
        for cl in ["-1", "1 2", "0x10", "", "7, 8", "99999999999999999999999"] {
            let text = format!("HTTP/1.1 200 OK\r\nContent-Length: {cl}\r\n\r\n");
            assert!(head(&text, Method::GET).is_err(), "{cl:?} accepted");
        }
    }

    #[test]
    fn keep_alive_by_version_and_connection() {
        let ka = |text: &str| head(text, Method::GET).unwrap().unwrap().keep_alive;
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

    /// Decodes `wire` fed to the decoder in pieces of `step` bytes.
    fn decode_in_pieces(wire: &[u8], step: usize) -> Result<(Vec<u8>, HeaderMap), Malformed> {
        let mut dec = ChunkedDecoder::default();
        let mut buf = BytesMut::new();
        let (mut body, mut trailers) = (Vec::new(), HeaderMap::new());
        let mut fed = 0;
        loop {
            match dec.decode(&mut buf)? {
                Decoded::Data(d) => body.extend_from_slice(&d),
                Decoded::Trailers(t) => trailers = t,
                Decoded::Done => return Ok((body, trailers)),
                Decoded::NeedMore => {
                    if fed == wire.len() {
                        return Err(malformed("ended early"));
                    }
                    let end = (fed + step).min(wire.len());
                    buf.extend_from_slice(&wire[fed..end]);
                    fed = end;
                }
            }
        }
    }

    #[test]
    fn chunked_bodies_decode_with_extensions_and_trailers() {
        let wire = b"5;name=value\r\nhello\r\n1\r\n \r\n0\r\nX-Sum: 6\r\n\r\n";
        let (body, trailers) = decode_in_pieces(wire, 1).unwrap();
        assert_eq!(body, b"hello ");
        assert_eq!(trailers["x-sum"], "6");
        let (body, trailers) = decode_in_pieces(b"0\r\n\r\n", 100).unwrap();
        assert!(body.is_empty() && trailers.is_empty());
    }

    #[test]
    fn broken_chunked_bodies_are_malformed() {
        for wire in [
            &b"z\r\n"[..],
            b"\r\n",
            b"5\r\nhelloXX0\r\n\r\n",
            b"ffffffffffffffffff\r\n",
        ] {
            assert!(decode_in_pieces(wire, 3).is_err(), "{wire:?} accepted");
        }
        let endless_line = vec![b'1'; MAX_CHUNK_LINE + 1];
        assert!(decode_in_pieces(&endless_line, 512).is_err());
    }

    proptest! {
        /// Any body, chunked any way, read in pieces of any size, decodes to itself, and the
        /// decoder leaves what follows the body in the buffer.
        #[test]
        fn chunked_round_trip(
            body in proptest::collection::vec(any::<u8>(), 0..2000),
            cuts in proptest::collection::vec(1usize..300, 1..20),
            step in 1usize..64,
        ) {
            let mut wire = Vec::new();
            let mut rest = &body[..];
            let mut i = 0;
            while !rest.is_empty() {
                let n = cuts[i % cuts.len()].min(rest.len());
                wire.extend_from_slice(&chunk_header(n));
                wire.extend_from_slice(&rest[..n]);
                wire.extend_from_slice(b"\r\n");
                rest = &rest[n..];
                i += 1;
            }
            wire.extend_from_slice(LAST_CHUNK);
            let (decoded, _) = decode_in_pieces(&wire, step).unwrap();
            prop_assert_eq!(decoded, body);

            let mut buf = BytesMut::from(&wire[..]);
            buf.extend_from_slice(b"NEXT");
            let mut dec = ChunkedDecoder::default();
            while !matches!(dec.decode(&mut buf).unwrap(), Decoded::Done) {}
            prop_assert_eq!(&buf[..], b"NEXT");
        }

        /// No input makes the response parser panic.
        #[test]
        fn parsing_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut buf = BytesMut::from(&bytes[..]);
            let _ = parse_response_head(&mut buf, &Method::GET);
            let mut dec = ChunkedDecoder::default();
            let mut buf = BytesMut::from(&bytes[..]);
            for _ in 0..bytes.len() + 2 {
                if !matches!(dec.decode(&mut buf), Ok(Decoded::Data(_))) {
                    break;
                }
            }
        }
    }
}
