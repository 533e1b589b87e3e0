//! The chunked transfer coding (RFC 9112 §7.1): decoded from upstream responses and client
//! requests, encoded towards clients and upstreams whose body length is unknown.

use bytes::{Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};

use super::MAX_HEADERS;

/// Longest chunk-size line (size, extensions, CRLF) accepted.
const MAX_CHUNK_LINE: usize = 4096;
/// Largest trailer section accepted.
const MAX_TRAILER_BYTES: usize = 64 * 1024;

/// A body or head that is not valid HTTP/1.1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub String);

impl Malformed {
    pub fn new(what: impl Into<String>) -> Malformed {
        Malformed(what.into())
    }
}

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed HTTP/1.1: {}", self.0)
    }
}

impl std::error::Error for Malformed {}

/// Appends the chunk-size line for `len` bytes of data.
pub fn push_chunk_header(out: &mut Vec<u8>, len: usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digits = (usize::BITS - len.leading_zeros()).div_ceil(4).max(1);
    for i in (0..digits).rev() {
        out.push(HEX[(len >> (4 * i)) & 0xf]);
    }
    out.extend_from_slice(b"\r\n");
}

/// The last chunk and an empty trailer section.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Fields that must not come in a trailer section (RFC 9110 §6.5.1): framing, routing,
/// connection control, authentication, cookies, and what a recipient acts on before the body
/// (content type and coding, caching, redirects). They are dropped, so a trailer can never
/// reframe, reroute or re-authenticate anything after the head was checked.
const NOT_IN_TRAILERS: &[&str] = &[
    "age",
    "authorization",
    "cache-control",
    "connection",
    "content-encoding",
    "content-length",
    "content-location",
    "content-range",
    "content-type",
    "cookie",
    "date",
    "expect",
    "expires",
    "forwarded",
    "host",
    "keep-alive",
    "location",
    "max-forwards",
    "pragma",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "range",
    "retry-after",
    "set-cookie",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "vary",
    "via",
    "www-authenticate",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
];

/// Whether a field may be passed on in a trailer section.
pub fn allowed_in_trailers(name: &str) -> bool {
    !NOT_IN_TRAILERS.iter().any(|n| n.eq_ignore_ascii_case(name))
        && !name.get(..3).is_some_and(|p| p.eq_ignore_ascii_case("if-"))
}

/// Most hex digits in a chunk size: 16 fill a `u64`.
const MAX_SIZE_DIGITS: usize = 16;

/// A chunk-size line at the start of `buf`, strictly by RFC 9112 §7.1: `1*HEXDIG`, then
/// `*( BWS ";" BWS token [ BWS "=" BWS ( token / quoted-string ) ] )`, then CRLF.
/// `Ok(None)`: not complete yet. A bare CR or LF anywhere, whitespace after the size without
/// an extension, or an extension that is not a token or quoted string is malformed: parsers
/// that disagree on such lines are how chunk-extension smuggling works, so none is passed on.
pub fn chunk_line(buf: &[u8]) -> Result<Option<(usize, u64)>, Malformed> {
    let bad = || Malformed::new("chunk size line");
    let Some(lf) = memchr::memchr(b'\n', &buf[..buf.len().min(MAX_CHUNK_LINE)]) else {
        return if buf.len() >= MAX_CHUNK_LINE {
            Err(bad())
        } else if memchr::memchr(b'\r', buf).is_some_and(|cr| cr + 1 < buf.len()) {
            // A CR not followed by LF.
            Err(bad())
        } else {
            Ok(None)
        };
    };
    let line = match buf[..lf].split_last() {
        Some((b'\r', line)) => line,
        _ => return Err(bad()),
    };
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(bad());
    }
    let significant = &line[..digits];
    let significant = &significant[significant
        .iter()
        .position(|b| *b != b'0')
        .unwrap_or(digits)..];
    if significant.len() > MAX_SIZE_DIGITS {
        return Err(bad());
    }
    let size = significant.iter().fold(0u64, |n, d| {
        n << 4 | u64::from(char::from(*d).to_digit(16).unwrap_or(0))
    });
    if !valid_extensions(&line[digits..]) {
        return Err(bad());
    }
    Ok(Some((lf + 1, size)))
}

/// Whether `rest` is a well-formed (possibly empty) list of chunk extensions.
fn valid_extensions(mut rest: &[u8]) -> bool {
    let bws = |r: &mut &[u8]| {
        while let [b' ' | b'\t', tail @ ..] = *r {
            *r = tail;
        }
    };
    let token = |r: &mut &[u8]| {
        let n = r.iter().take_while(|b| is_tchar(**b)).count();
        *r = &r[n..];
        n > 0
    };
    while !rest.is_empty() {
        bws(&mut rest);
        let [b';', tail @ ..] = rest else {
            return false;
        };
        rest = tail;
        bws(&mut rest);
        if !token(&mut rest) {
            return false;
        }
        let mut ahead = rest;
        bws(&mut ahead);
        if let [b'=', tail @ ..] = ahead {
            rest = tail;
            bws(&mut rest);
            if let [b'"', tail @ ..] = rest {
                rest = tail;
                loop {
                    match rest {
                        [b'"', tail @ ..] => {
                            rest = tail;
                            break;
                        }
                        [b'\\', c, tail @ ..] if is_qdtext(*c) || *c == b'"' || *c == b'\\' => {
                            rest = tail
                        }
                        [c, tail @ ..] if is_qdtext(*c) => rest = tail,
                        _ => return false,
                    }
                }
            } else if !token(&mut rest) {
                return false;
            }
        }
    }
    true
}

/// Whether a LF in `bytes` is not preceded by CR.
fn has_bare_lf(bytes: &[u8]) -> bool {
    memchr::memchr_iter(b'\n', bytes).any(|i| i == 0 || bytes[i - 1] != b'\r')
}

/// A `tchar` of RFC 9110 §5.6.2.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// What may stand unescaped in a quoted string (RFC 9110 §5.6.4), obs-text included.
fn is_qdtext(b: u8) -> bool {
    matches!(b, b'\t' | b' ' | 0x21 | 0x23..=0x5b | 0x5d..=0x7e | 0x80..=0xff)
}

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
                ChunkState::Size => match chunk_line(buf)? {
                    None => return Ok(Decoded::NeedMore),
                    Some((used, size)) => {
                        let _ = buf.split_to(used);
                        self.state = if size == 0 {
                            ChunkState::Trailers
                        } else {
                            ChunkState::Data(size)
                        };
                    }
                },
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
                        return Err(Malformed::new("chunk not followed by CRLF"));
                    }
                    let _ = buf.split_to(2);
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailers => {
                    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
                    let (used, trailers) = match httparse::parse_headers(buf, &mut slots) {
                        Ok(httparse::Status::Complete((used, fields))) => {
                            let mut trailers = HeaderMap::new();
                            for f in fields.iter().filter(|f| allowed_in_trailers(f.name)) {
                                let name = HeaderName::from_bytes(f.name.as_bytes())
                                    .map_err(|_| Malformed::new("trailer name"))?;
                                let value = HeaderValue::from_bytes(f.value)
                                    .map_err(|_| Malformed::new("trailer value"))?;
                                trailers.append(name, value);
                            }
                            (used, trailers)
                        }
                        Ok(httparse::Status::Partial) if buf.len() < MAX_TRAILER_BYTES => {
                            return Ok(Decoded::NeedMore)
                        }
                        _ => return Err(Malformed::new("trailer section")),
                    };
                    // httparse takes bare LF line ends; a trailer section is framing, and
                    // parsers that disagree on its end desync, so only CRLF is accepted.
                    if has_bare_lf(&buf[..used]) {
                        return Err(Malformed::new("bare LF in the trailer section"));
                    }
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
                        return Err(Malformed::new("ended early"));
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
        let endless_line = [b"1;a=".as_slice(), &vec![b'b'; MAX_CHUNK_LINE]].concat();
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
                push_chunk_header(&mut wire, n);
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

        /// No input makes the decoder panic.
        #[test]
        fn decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut dec = ChunkedDecoder::default();
            let mut buf = BytesMut::from(&bytes[..]);
            for _ in 0..bytes.len() + 2 {
                if !matches!(dec.decode(&mut buf), Ok(Decoded::Data(_))) {
                    break;
                }
            }
        }
    }

    #[test]
    fn trailers_cannot_carry_framing_routing_or_credentials() {
        let wire = b"0\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\nHost: evil\r\n\
                     Set-Cookie: a=b\r\nIf-Match: *\r\nX-Checksum: 1\r\n\r\n";
        let (_, trailers) = decode_in_pieces(wire, 7).unwrap();
        assert_eq!(trailers.len(), 1, "{trailers:?}");
        assert_eq!(trailers["x-checksum"], "1");
        // Only forbidden fields: no trailer section at all.
        let (_, trailers) = decode_in_pieces(b"0\r\nHost: a\r\n\r\n", 3).unwrap();
        assert!(trailers.is_empty());
    }

    #[test]
    fn a_trailer_section_ends_lines_with_crlf_only() {
        for wire in [&b"0\r\nX: y\n\r\n"[..], b"0\r\n\n", b"0\r\nX: y\r\n\n"] {
            assert!(decode_in_pieces(wire, 2).is_err(), "{wire:?} accepted");
        }
    }

    #[test]
    fn chunk_size_lines_are_strict() {
        let ok = |line: &[u8]| chunk_line(line).unwrap().map(|(_, size)| size);
        assert_eq!(ok(b"1a\r\n"), Some(26));
        assert_eq!(ok(b"0000000000000000000005\r\n"), Some(5));
        assert_eq!(ok(b"5;a\r\n"), Some(5));
        assert_eq!(ok(b"5 ; a = b ;c=\"q \\\" ;\"\r\n"), Some(5));
        assert_eq!(ok(b"5;a=b"), None);
        assert_eq!(ok(b"5\r"), None);
        for bad in [
            &b"5\n"[..],
            b"5;a\nb\r\n",
            b"5;a=\"x\ny\"\r\n",
            b"5\rX\r\n",
            b"5\rX",
            b"5 \r\n",
            b"5\t\r\n",
            b" 5\r\n",
            b"0x5\r\n",
            b"5;\r\n",
            b"5;a=\r\n",
            b"5;a=\"open\r\n",
            b"5;a b\r\n",
            b"5;a=b c\r\n",
            b"5,a\r\n",
            b"-5\r\n",
            b"+5\r\n",
            b"10000000000000000\r\n",
            b"5;a=\x00\r\n",
        ] {
            assert!(
                chunk_line(bad).is_err(),
                "{:?} accepted",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(ok(b"ffffffffffffffff\r\n"), Some(u64::MAX));
    }

    #[test]
    fn chunk_headers_are_lower_hex() {
        for (len, text) in [(0, "0"), (9, "9"), (255, "ff"), (4096, "1000")] {
            let mut out = Vec::new();
            push_chunk_header(&mut out, len);
            assert_eq!(out, format!("{text}\r\n").into_bytes());
        }
    }
}
