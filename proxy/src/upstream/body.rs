//! [`UpstreamBody`]: a response body read straight from its upstream connection, which goes
//! back to the worker's idle connections as soon as the body is complete.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::net::TcpStream;

use super::{Conn, Connections, Error, READ_CHUNK};
use crate::wire::chunked::{ChunkedDecoder, Decoded};
use crate::wire::response::Framing;

/// Where the body is.
#[derive(Debug)]
enum State {
    /// This many bytes to go.
    Length(u64),
    Chunked(ChunkedDecoder),
    /// Until the upstream closes the connection.
    UntilClose,
    /// Complete: the connection is back in the pool, or closed.
    Done,
    /// The upstream switched protocols: the connection is the tunnel's, not a body's.
    Upgraded,
}

/// A response body streamed from its upstream connection.
pub struct UpstreamBody {
    /// The connection, until the body is complete (or abandoned, which closes it).
    conn: Option<Conn>,
    state: State,
    /// The connection may carry another request once this body is complete.
    keep_alive: bool,
    /// Where the connection goes back to.
    pool: Arc<Connections>,
}

impl UpstreamBody {
    pub(crate) fn new(
        conn: Conn,
        framing: Framing,
        keep_alive: bool,
        upgrade: bool,
        pool: Arc<Connections>,
    ) -> Self {
        let state = match framing {
            _ if upgrade => State::Upgraded,
            Framing::Empty => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::Chunked(ChunkedDecoder::default()),
            Framing::UntilClose => State::UntilClose,
        };
        let mut body = UpstreamBody {
            conn: Some(conn),
            state,
            keep_alive,
            pool,
        };
        if matches!(body.state, State::Done) {
            // Nothing to read: the connection can serve the next request right away.
            body.release();
        }
        body
    }

    /// The connection of a `101 Switching Protocols`, and whatever the upstream sent after
    /// the head (already the new protocol's bytes).
    pub fn into_upgraded(mut self) -> Option<(TcpStream, Bytes)> {
        if !matches!(self.state, State::Upgraded) {
            return None;
        }
        let conn = self.conn.take()?;
        Some((conn.io, conn.buf.freeze()))
    }

    /// The body is complete: park the connection if it can carry another request.
    fn release(&mut self) {
        self.state = State::Done;
        if let Some(conn) = self.conn.take() {
            if self.keep_alive && conn.buf.is_empty() {
                self.pool.put(conn);
            }
        }
    }

    /// The body is broken: close the connection.
    fn fail(&mut self, e: Error) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        self.state = State::Done;
        self.conn = None;
        Poll::Ready(Some(Err(e)))
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = self.get_mut();
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            // Serve from what is buffered first.
            match &mut this.state {
                State::Done | State::Upgraded => return Poll::Ready(None),
                State::Length(left) => {
                    if !conn.buf.is_empty() {
                        let take = conn
                            .buf
                            .len()
                            .min(usize::try_from(*left).unwrap_or(usize::MAX));
                        let data = conn.buf.split_to(take).freeze();
                        *left -= take as u64;
                        if *left == 0 {
                            this.release();
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
                State::Chunked(decoder) => match decoder.decode(&mut conn.buf) {
                    Ok(Decoded::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(Decoded::Trailers(trailers)) => {
                        this.release();
                        return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                    }
                    Ok(Decoded::Done) => {
                        this.release();
                        return Poll::Ready(None);
                    }
                    Ok(Decoded::NeedMore) => {}
                    Err(e) => return this.fail(Error::Malformed(e)),
                },
                State::UntilClose => {
                    if !conn.buf.is_empty() {
                        let data = conn.buf.split().freeze();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
            }
            // Then read more.
            conn.buf.reserve(READ_CHUNK);
            let read = ready!(tokio_util::io::poll_read_buf(
                Pin::new(&mut conn.io),
                cx,
                &mut conn.buf
            ));
            match read {
                Ok(0) if matches!(this.state, State::UntilClose) => {
                    this.state = State::Done;
                    this.conn = None;
                    return Poll::Ready(None);
                }
                Ok(0) => return this.fail(Error::Closed),
                Ok(_) => {}
                Err(e) => return this.fail(Error::Read(e)),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done | State::Upgraded)
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Length(n) => SizeHint::with_exact(n),
            State::Done | State::Upgraded => SizeHint::with_exact(0),
            State::Chunked(_) | State::UntilClose => SizeHint::default(),
        }
    }
}
