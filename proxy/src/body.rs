//! Body types of the request path. Both directions stream chunk by chunk; nothing is
//! buffered whole.
//!
//! - [`RequestBody`]: the client's body on its way upstream, read from the client's HTTP/1
//!   connection ([`Http1Body`]: Content-Length or chunked) or from hyper's HTTP/2 stream, and
//!   cut off with [`BodyTooLarge`] past `limits.max_body_bytes` (the `Content-Length` check
//!   catches honest clients first; this catches chunked ones). A body of at most
//!   `limits.buffer_body_bytes` is read whole before an upstream is picked, so it can be
//!   sent again and a slow upload ties up no upstream connection; larger ones stream.
//! - [`ResponseBody`]: what an HTTP/2 client (or the admin listener's) gets: an upstream's
//!   body carrying the endpoint's [`InFlight`] handle, so the request counts as in flight until
//!   its body is done, or a short body the proxy wrote itself.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::access_log::Deferred;
use crate::balance::InFlight;
use crate::upstream::{self, UpstreamBody};
use crate::wire::chunked::{ChunkedDecoder, Decoded};
use crate::wire::request::BodyFraming;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Bytes reserved in a client connection's buffer before each body read.
const READ_CHUNK: usize = 16 * 1024;

/// The request body exceeded the configured limit.
#[derive(Debug)]
pub struct BodyTooLarge;

impl std::fmt::Display for BodyTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("request body exceeds limits.max_body_bytes")
    }
}

impl std::error::Error for BodyTooLarge {}

/// The client sent no body bytes for `timeouts.header_read`.
#[derive(Debug)]
pub struct BodyStalled;

impl std::fmt::Display for BodyStalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the client stopped sending its request body")
    }
}

impl std::error::Error for BodyStalled {}

/// Whether an error of type `E` is somewhere in `err`'s source chain.
pub fn caused_by<E: std::error::Error + 'static>(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(err);
    while let Some(e) = source {
        if e.is::<E>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// A client's request body, limited to a number of bytes. A small body may be read whole
/// before anything is sent ([`RequestBody::buffer`]); it can then be sent again.
pub struct RequestBody<'a> {
    source: Source<'a>,
    /// Bytes still allowed by `limits.max_body_bytes`.
    remaining: u64,
    /// `limits.max_body_bytes`.
    limit: u64,
    /// Read ahead of sending: the whole body when `complete`, else a prefix of it.
    kept: Vec<Bytes>,
    /// The next piece of `kept` to hand out.
    next: usize,
    /// The whole body is in `kept`.
    complete: bool,
    /// Some of the body went out since the last rewind.
    sent_any: bool,
}

enum Source<'a> {
    /// No body.
    Empty,
    Http1(Http1Body<'a>),
    /// An HTTP/2 stream's data, each frame awaited for at most the stall limit.
    Http2(Incoming, Duration),
}

impl<'a> RequestBody<'a> {
    pub fn empty() -> Self {
        Self::new(Source::Empty, 0)
    }

    pub fn http1(body: Http1Body<'a>, limit: u64) -> Self {
        Self::new(Source::Http1(body), limit)
    }

    /// An HTTP/2 request's body; a client that sends no frame for `stall` mid-body fails it.
    pub fn http2(body: Incoming, limit: u64, stall: Duration) -> Self {
        Self::new(Source::Http2(body, stall), limit)
    }

    fn new(source: Source<'a>, limit: u64) -> Self {
        RequestBody {
            source,
            remaining: limit,
            limit,
            kept: Vec::new(),
            next: 0,
            complete: false,
            sent_any: false,
        }
    }

    /// Whether nothing more is to be sent (a bodiless request, or a body all sent).
    pub fn is_end_stream(&self) -> bool {
        if self.next < self.kept.len() {
            return false;
        }
        self.complete || self.source_done()
    }

    /// Body bytes received from the client so far.
    pub fn received(&self) -> u64 {
        self.limit - self.remaining
    }

    /// Whether the client has sent its whole body (the connection is at its next request),
    /// whether or not it went upstream.
    pub fn fully_received(&self) -> bool {
        self.complete || self.source_done()
    }

    fn source_done(&self) -> bool {
        match &self.source {
            Source::Empty => true,
            Source::Http1(b) => b.is_complete(),
            Source::Http2(b, _) => b.is_end_stream(),
        }
    }

    /// Reads the whole body into memory if it is at most `limit` bytes (`declared`, its
    /// Content-Length, says so at once when there is one), so that it can be sent again
    /// ([`RequestBody::rewind`]) and a slow client holds no upstream connection while it
    /// uploads. A larger body keeps what was read as a prefix and streams the rest.
    pub async fn buffer(&mut self, limit: u64, declared: Option<u64>) -> Result<(), BoxError> {
        if self.complete || !self.kept.is_empty() {
            return Ok(());
        }
        if self.source_done() {
            self.complete = true;
            return Ok(());
        }
        if limit == 0 || declared.is_some_and(|n| n > limit) {
            return Ok(());
        }
        let mut total = 0u64;
        while let Some(piece) = self.read_source().await {
            let piece = piece?;
            total += piece.len() as u64;
            self.kept.push(piece);
            if total > limit {
                return Ok(());
            }
        }
        self.complete = true;
        Ok(())
    }

    /// The body's length when it was read whole and is not empty.
    pub fn buffered_len(&self) -> Option<u64> {
        let len: u64 = self.kept.iter().map(|b| b.len() as u64).sum();
        (self.complete && len > 0).then_some(len)
    }

    /// Whether the whole body is known (empty, or read whole), so the request can be sent
    /// again as it was.
    pub fn replayable(&self) -> bool {
        self.complete || (self.kept.is_empty() && self.source_done())
    }

    /// Starts the body over for another try; `false` if it cannot be (part of a streamed
    /// body is gone).
    pub fn rewind(&mut self) -> bool {
        if self.replayable() {
            self.next = 0;
            self.sent_any = false;
            true
        } else {
            !self.sent_any
        }
    }

    /// The next piece of the body; `None` once it is complete.
    pub async fn chunk(&mut self) -> Option<Result<Bytes, BoxError>> {
        if let Some(piece) = self.kept.get(self.next) {
            self.next += 1;
            self.sent_any = true;
            return Some(Ok(piece.clone()));
        }
        if self.complete {
            return None;
        }
        let piece = self.read_source().await;
        self.sent_any |= piece.is_some();
        piece
    }

    /// The next piece from the client, size-limited.
    async fn read_source(&mut self) -> Option<Result<Bytes, BoxError>> {
        let data = loop {
            let next = match &mut self.source {
                Source::Empty => return None,
                Source::Http1(b) => b.chunk().await,
                Source::Http2(b, stall) => match tokio::time::timeout(*stall, b.frame()).await {
                    // Request trailers are not forwarded.
                    Ok(Some(Ok(frame))) => match frame.into_data() {
                        Ok(data) => Some(Ok(data)),
                        Err(_) => continue,
                    },
                    Ok(Some(Err(e))) => Some(Err(Box::new(e) as BoxError)),
                    Ok(None) => None,
                    Err(_) => Some(Err(Box::new(BodyStalled) as BoxError)),
                },
            };
            match next {
                Some(Ok(data)) if data.is_empty() => continue,
                other => break other?,
            }
        };
        Some(data.and_then(|data| {
            let n = data.len() as u64;
            if n > self.remaining {
                return Err(Box::new(BodyTooLarge) as BoxError);
            }
            self.remaining -= n;
            Ok(data)
        }))
    }
}

/// A request body read from the client's HTTP/1 connection, after its head.
pub struct Http1Body<'a> {
    io: &'a mut (dyn AsyncRead + Unpin + Send),
    /// The connection's read buffer: what followed the head, then what is read.
    buf: &'a mut BytesMut,
    state: Http1State,
    /// How long the client may send nothing in the middle of its body (slow-body attacks).
    stall: Duration,
}

enum Http1State {
    Length(u64),
    Chunked(ChunkedDecoder),
    Done,
    /// The body's framing broke (or the client went away or stalled): where the next
    /// request would start is unknown, so the connection must close.
    Failed,
}

/// The client's HTTP/1 body ended before its length or last chunk.
#[derive(Debug)]
pub struct Truncated;

impl std::fmt::Display for Truncated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the client closed the connection before the end of its request body")
    }
}

impl std::error::Error for Truncated {}

impl<'a> Http1Body<'a> {
    pub fn new(
        io: &'a mut (dyn AsyncRead + Unpin + Send),
        buf: &'a mut BytesMut,
        framing: BodyFraming,
        stall: Duration,
    ) -> Self {
        let state = match framing {
            BodyFraming::None | BodyFraming::Length(0) => Http1State::Done,
            BodyFraming::Length(n) => Http1State::Length(n),
            BodyFraming::Chunked => Http1State::Chunked(ChunkedDecoder::default()),
        };
        Http1Body {
            io,
            buf,
            state,
            stall,
        }
    }

    /// Whether the whole body has been read (the connection is at the next request).
    pub fn is_complete(&self) -> bool {
        matches!(self.state, Http1State::Done)
    }

    async fn chunk(&mut self) -> Option<Result<Bytes, BoxError>> {
        let result = self.next_chunk().await;
        if let Some(Err(_)) = result {
            self.state = Http1State::Failed;
        }
        result
    }

    async fn next_chunk(&mut self) -> Option<Result<Bytes, BoxError>> {
        loop {
            match &mut self.state {
                Http1State::Done => return None,
                Http1State::Failed => return Some(Err(Box::new(Truncated))),
                Http1State::Length(left) => {
                    if !self.buf.is_empty() {
                        let take = self
                            .buf
                            .len()
                            .min(usize::try_from(*left).unwrap_or(usize::MAX));
                        let data = self.buf.split_to(take).freeze();
                        *left -= take as u64;
                        if *left == 0 {
                            self.state = Http1State::Done;
                        }
                        return Some(Ok(data));
                    }
                }
                Http1State::Chunked(decoder) => match decoder.decode(self.buf) {
                    Ok(Decoded::Data(data)) => return Some(Ok(data)),
                    Ok(Decoded::Trailers(_) | Decoded::Done) => {
                        self.state = Http1State::Done;
                        return None;
                    }
                    Ok(Decoded::NeedMore) => {}
                    Err(e) => return Some(Err(Box::new(e))),
                },
            }
            self.buf.reserve(READ_CHUNK);
            match tokio::time::timeout(self.stall, self.io.read_buf(self.buf)).await {
                Ok(Ok(0)) => return Some(Err(Box::new(Truncated))),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Some(Err(Box::new(e))),
                Err(_) => return Some(Err(Box::new(BodyStalled))),
            }
        }
    }
}

/// The body the proxy sends to an HTTP/2 client or from the admin listener.
pub enum ResponseBody {
    /// Streamed from an upstream; the handle ends the request's in-flight count when dropped.
    Upstream {
        inner: UpstreamBody,
        in_flight: Option<InFlight>,
        /// The request's access log line, written when the body ends.
        line: Option<Box<Deferred>>,
    },
    /// Written by the proxy (errors, admin pages).
    Local(Full<Bytes>),
}

impl ResponseBody {
    pub fn upstream(inner: UpstreamBody, in_flight: InFlight) -> Self {
        ResponseBody::Upstream {
            inner,
            in_flight: Some(in_flight),
            line: None,
        }
    }

    pub fn local(text: impl Into<Bytes>) -> Self {
        ResponseBody::Local(Full::new(text.into()))
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = upstream::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, upstream::Error>>> {
        match self.get_mut() {
            ResponseBody::Upstream {
                inner,
                in_flight,
                line,
            } => {
                let polled = Pin::new(inner).poll_frame(cx);
                match &polled {
                    Poll::Ready(None | Some(Err(_))) => {
                        // Done (or broken): the request is no longer in flight.
                        in_flight.take();
                        line.take();
                    }
                    Poll::Ready(Some(Ok(frame))) => {
                        if let (Some(line), Some(data)) = (line.as_mut(), frame.data_ref()) {
                            line.bytes_out += data.len() as u64;
                        }
                    }
                    Poll::Pending => {}
                }
                polled
            }
            ResponseBody::Local(full) => match Pin::new(full).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame))),
                Poll::Ready(Some(Err(never))) => match never {},
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Upstream { inner, .. } => inner.is_end_stream(),
            ResponseBody::Local(full) => full.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Upstream { inner, .. } => inner.size_hint(),
            ResponseBody::Local(full) => full.size_hint(),
        }
    }
}
