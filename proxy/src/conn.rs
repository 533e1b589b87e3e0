//! The request-head deadline of an HTTP/1 client connection, with a `408 Request Timeout`.
//!
//! hyper's own header-read timeout closes the connection without a word. HAProxy's behaviour
//! is what clients and operators expect: a client that started a request head and did not
//! finish it within `timeouts.header_read` gets a 408 before the close; a keep-alive
//! connection that merely sat idle for that long is closed silently.
//!
//! [`HeadDeadline`] wraps the connection's stream (plain TCP or TLS) under hyper and keeps
//! the clock. It learns where the connection is from [`Requests`], which the service updates:
//! a request *started* when hyper handed its head to the service, *finished* when its response
//! body was dropped. While every started request has finished, the connection awaits a head,
//! and reads are timed; while one is in progress (its body streaming either way), they are
//! not. HTTP/2 connections (ALPN `h2`, or the prior-knowledge preface) and upgraded ones are
//! left alone: their own protocols keep time.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// What a client that was too slow with its request head gets before the close.
const REQUEST_TIMEOUT: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

/// The HTTP/2 connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n";

/// Requests of one connection, as the service sees them.
#[derive(Debug, Default)]
pub struct Requests {
    started: AtomicU64,
    finished: AtomicU64,
    /// A `101 Switching Protocols` went out: the connection is no longer HTTP/1.
    upgraded: AtomicBool,
}

impl Requests {
    /// hyper handed a request head to the service.
    pub fn start(&self) {
        self.started.fetch_add(1, Ordering::AcqRel);
    }

    /// Marks the connection as upgraded (the response is `101`).
    pub fn upgrade(&self) {
        self.upgraded.store(true, Ordering::Release);
    }

    fn finish(&self) {
        self.finished.fetch_add(1, Ordering::AcqRel);
    }

    /// `Some(n)` when the connection awaits its next head, `n` requests having finished.
    fn awaiting_head(&self) -> Option<u64> {
        let finished = self.finished.load(Ordering::Acquire);
        (self.started.load(Ordering::Acquire) == finished).then_some(finished)
    }
}

/// A response body that marks its request finished when dropped (sent, or abandoned).
pub struct Tracked<B> {
    inner: B,
    requests: Arc<Requests>,
}

impl<B> Tracked<B> {
    pub fn new(inner: B, requests: Arc<Requests>) -> Self {
        Tracked { inner, requests }
    }
}

impl<B> Drop for Tracked<B> {
    fn drop(&mut self) {
        self.requests.finish();
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for Tracked<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The head being awaited.
struct Wait {
    /// `finished` when the wait began: a later request means this wait is over.
    epoch: u64,
    /// Bytes of the head already received.
    got_bytes: bool,
}

/// A client stream under hyper, with the request-head deadline.
pub struct HeadDeadline<S> {
    inner: S,
    requests: Arc<Requests>,
    timeout: Duration,
    /// HTTP/2, upgraded or timed out: nothing more to time.
    off: bool,
    /// No byte read yet (the HTTP/2 preface is looked for in the first read).
    first_read: bool,
    wait: Option<Wait>,
    /// The deadline of the current wait: one timer per connection, reset for each head.
    deadline: Pin<Box<Sleep>>,
}

impl<S> HeadDeadline<S> {
    /// `h2` when ALPN already chose HTTP/2.
    pub fn new(inner: S, requests: Arc<Requests>, timeout: Duration, h2: bool) -> Self {
        HeadDeadline {
            inner,
            requests,
            timeout,
            off: h2,
            first_read: true,
            wait: None,
            deadline: Box::pin(tokio::time::sleep(timeout)),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for HeadDeadline<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.off || this.requests.upgraded.load(Ordering::Acquire) {
            this.off = true;
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        let Some(epoch) = this.requests.awaiting_head() else {
            // A request is in progress: its body is not timed here.
            this.wait = None;
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        };
        if this.wait.as_ref().is_none_or(|w| w.epoch != epoch) {
            this.deadline.as_mut().reset(Instant::now() + this.timeout);
            this.wait = Some(Wait {
                epoch,
                got_bytes: false,
            });
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let read = &buf.filled()[before..];
                if this.first_read && !read.is_empty() {
                    this.first_read = false;
                    if read.starts_with(&H2_PREFACE[..read.len().min(H2_PREFACE.len())]) {
                        this.off = true;
                        this.wait = None;
                        return Poll::Ready(Ok(()));
                    }
                }
                if let Some(wait) = &mut this.wait {
                    wait.got_bytes |= !read.is_empty();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let Some(wait) = &mut this.wait else {
                    return Poll::Pending;
                };
                if this.deadline.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                // Out of time. Half a head gets its 408 (best effort: a client that does
                // not read gets the close alone); an idle connection just the close.
                if wait.got_bytes {
                    if let Poll::Ready(Ok(n)) =
                        Pin::new(&mut this.inner).poll_write(cx, REQUEST_TIMEOUT)
                    {
                        if n == REQUEST_TIMEOUT.len() {
                            let _ = Pin::new(&mut this.inner).poll_flush(cx);
                        }
                    }
                }
                this.off = true;
                this.wait = None;
                // hyper ends the connection with this error (counted as a header timeout).
                Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "no complete request head within timeouts.header_read",
                )))
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for HeadDeadline<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
