//! Body types of the request path. Both stream frame by frame; nothing is buffered whole.
//!
//! - [`RequestBody`]: the client's body on its way upstream, cut off with [`BodyTooLarge`]
//!   past `limits.max_body_bytes` (the `Content-Length` check catches honest clients first;
//!   this catches chunked ones).
//! - [`ResponseBody`]: an upstream's body on its way to the client, carrying the endpoint's
//!   [`InFlight`] handle so the request counts as in flight until its body is done, or a short
//!   body the proxy wrote itself.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;

use crate::balance::InFlight;
use crate::upstream::{self, UpstreamBody};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

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

/// A client's request body, limited to `remaining` bytes; or no body at all (a request sent
/// again on another endpoint, which is only done when its body was empty).
pub struct RequestBody {
    inner: Option<Incoming>,
    remaining: u64,
}

impl RequestBody {
    pub fn new(inner: Incoming, limit: u64) -> Self {
        RequestBody {
            inner: Some(inner),
            remaining: limit,
        }
    }

    pub fn empty() -> Self {
        RequestBody {
            inner: None,
            remaining: 0,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    if n > this.remaining {
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge))));
                    }
                    this.remaining -= n;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), |b| b.size_hint())
    }
}

/// The body the proxy sends to a client.
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
