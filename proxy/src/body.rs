//! Body types of the request path. Both directions stream chunk by chunk; nothing is
//! buffered whole.
//!
//! - [`RequestBody`]: the client's body on its way upstream, read from the client's HTTP/1
//!   connection ([`Http1Body`]: Content-Length or chunked) or from hyper's HTTP/2 stream, and
//!   cut off with [`BodyTooLarge`] past `limits.max_body_bytes` (the `Content-Length` check
//!   catches honest clients first; this catches chunked ones).
//! - [`ResponseBody`]: what an HTTP/2 client (or the admin listener's) gets: an upstream's
//!   body carrying the endpoint's [`InFlight`] handle, so the request counts as in flight until
//!   its body is done, or a short body the proxy wrote itself.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use tokio::io::{AsyncRead, AsyncReadExt};

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

/// Whether `BodyTooLarge` is somewhere in `err`'s source chain.
pub fn caused_by_body_limit(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(err);
    while let Some(e) = source {
        if e.is::<BodyTooLarge>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// A client's request body, limited to a number of bytes.
pub struct RequestBody<'a> {
    source: Source<'a>,
    /// Bytes still allowed by `limits.max_body_bytes`.
    remaining: u64,
}

enum Source<'a> {
    /// No body (or a request sent again, which is only done when its body was empty).
    Empty,
    Http1(Http1Body<'a>),
    Http2(Incoming),
}

impl<'a> RequestBody<'a> {
    pub fn empty() -> Self {
        RequestBody {
            source: Source::Empty,
            remaining: 0,
        }
    }

    pub fn http1(body: Http1Body<'a>, limit: u64) -> Self {
        RequestBody {
            source: Source::Http1(body),
            remaining: limit,
        }
    }

    pub fn http2(body: Incoming, limit: u64) -> Self {
        RequestBody {
            source: Source::Http2(body),
            remaining: limit,
        }
    }

    /// Whether the body is known to be over (so the request can be sent again as is).
    pub fn is_end_stream(&self) -> bool {
        match &self.source {
            Source::Empty => true,
            Source::Http1(b) => b.is_complete(),
            Source::Http2(b) => b.is_end_stream(),
        }
    }

    /// The next piece of the body; `None` once it is complete.
    pub async fn chunk(&mut self) -> Option<Result<Bytes, BoxError>> {
        let data = loop {
            let next = match &mut self.source {
                Source::Empty => return None,
                Source::Http1(b) => b.chunk().await,
                Source::Http2(b) => match b.frame().await {
                    // Request trailers are not forwarded.
                    Some(Ok(frame)) => match frame.into_data() {
                        Ok(data) => Some(Ok(data)),
                        Err(_) => continue,
                    },
                    Some(Err(e)) => Some(Err(Box::new(e) as BoxError)),
                    None => None,
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
}

enum Http1State {
    Length(u64),
    Chunked(ChunkedDecoder),
    Done,
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
    ) -> Self {
        let state = match framing {
            BodyFraming::None | BodyFraming::Length(0) => Http1State::Done,
            BodyFraming::Length(n) => Http1State::Length(n),
            BodyFraming::Chunked => Http1State::Chunked(ChunkedDecoder::default()),
        };
        Http1Body { io, buf, state }
    }

    /// Whether the whole body has been read (the connection is at the next request).
    pub fn is_complete(&self) -> bool {
        matches!(self.state, Http1State::Done)
    }

    async fn chunk(&mut self) -> Option<Result<Bytes, BoxError>> {
        loop {
            match &mut self.state {
                Http1State::Done => return None,
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
                    Err(e) => {
                        self.state = Http1State::Done;
                        return Some(Err(Box::new(e)));
                    }
                },
            }
            self.buf.reserve(READ_CHUNK);
            match self.io.read_buf(self.buf).await {
                Ok(0) => return Some(Err(Box::new(Truncated))),
                Ok(_) => {}
                Err(e) => return Some(Err(Box::new(e))),
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
    },
    /// Written by the proxy (errors, admin pages).
    Local(Full<Bytes>),
}

impl ResponseBody {
    pub fn upstream(inner: UpstreamBody, in_flight: InFlight) -> Self {
        ResponseBody::Upstream {
            inner,
            in_flight: Some(in_flight),
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
            ResponseBody::Upstream { inner, in_flight } => {
                let polled = Pin::new(inner).poll_frame(cx);
                if let Poll::Ready(None | Some(Err(_))) = polled {
                    // Done (or broken): the request is no longer in flight.
                    in_flight.take();
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
