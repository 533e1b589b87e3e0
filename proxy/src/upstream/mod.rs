//! HTTP/1.1 to upstreams over pooled keep-alive connections, each driven by the request using
//! it (Pingora's way).
//!
//! A general-purpose client (hyper-util's) runs every connection as a task of its own and
//! hands it requests through a channel, behind a shared pool keyed by a hashed URI: two task
//! wake-ups and a locked checkout per request. Here a worker thread owns its [`Connections`]:
//! a request takes an idle connection to its endpoint (or opens one), writes its head and
//! body, and reads the response head, all in the request's own task; the connection then
//! rides in the response's [`UpstreamBody`], which reads the rest of the body and puts the
//! connection back when the body is complete. A body abandoned half-way closes it.
//!
//! An idle connection may have been closed by the upstream since it was parked. Taking one
//! checks the socket's readiness first, which costs no system call unless the peer sent
//! something (its FIN). A request that still meets a dead reused connection goes again on a
//! fresh one only when that is safe (RFC 9110 §9.2.2): whatever the method, when not one
//! byte of it was written; an idempotent bodiless one also when it was written but nothing
//! came back. A request that may have been processed is never sent twice.
//!
//! An upstream that answers `Connection: close` (as a draining instance does) has its other
//! idle connections on this worker closed by the proxy at once, so the next request opens a
//! fresh one instead of racing the upstream's close of an idle one.
//!
//! Timing: the connect has `timeouts.connect`; the wait for the response head
//! (`Outgoing::wait`, the per-try timeout) starts once the whole request is sent, so a slow
//! client upload is not blamed on the upstream. The upload itself is bounded by the client
//! body's own stall limit.

pub mod body;

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use http::{Method, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::body::{BoxError, RequestBody};
use crate::wire::chunked::{push_chunk_header, Malformed, LAST_CHUNK};
use crate::wire::response::{self, Framing, ResponseHead};
pub use body::UpstreamBody;

/// Idle connections kept per endpoint and worker: enough for a burst on 2 cores.
pub const MAX_IDLE_PER_ENDPOINT: usize = 256;
/// Bytes reserved in a connection's read buffer before each read.
pub const READ_CHUNK: usize = 16 * 1024;
/// How often idle connections are checked for expiry and for upstreams that closed them.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Why a request to an upstream failed.
#[derive(Debug)]
pub enum Error {
    /// The TCP connection could not be opened (refused, unreachable…).
    Connect(std::io::Error),
    /// The TCP connection was not open within `timeouts.connect`.
    ConnectTimeout(Duration),
    /// Writing the request failed (the upstream reset or closed the connection).
    Write(std::io::Error),
    /// Reading the response failed.
    Read(std::io::Error),
    /// The upstream closed the connection before the response was complete.
    Closed,
    /// The response head did not come within `Outgoing::wait` of the request being sent.
    Timeout(Duration),
    /// The upstream's response is not valid HTTP/1.x.
    Malformed(Malformed),
    /// The client's request body failed: over the size limit, or the client went away.
    RequestBody(BoxError),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Connect(e) => write!(f, "connect: {e}"),
            Error::ConnectTimeout(d) => write!(f, "connect: no connection within {d:?}"),
            Error::Write(e) => write!(f, "sending the request: {e}"),
            Error::Read(e) => write!(f, "reading the response: {e}"),
            Error::Closed => f.write_str("connection closed before the response was complete"),
            Error::Timeout(d) => write!(f, "no response within {d:?}"),
            Error::Malformed(m) => m.fmt(f),
            Error::RequestBody(e) => write!(f, "request body: {e}"),
        }
    }
}

impl Error {
    /// Whether the request certainly did not reach the upstream (no connection was made), so
    /// it may go to another endpoint whatever its method, its body untouched.
    pub fn unsent(&self) -> bool {
        matches!(self, Error::Connect(_) | Error::ConnectTimeout(_))
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::RequestBody(e) => Some(e.as_ref()),
            _ => None,
        }
    }
}

/// One request as it goes to an upstream.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    /// The complete request head (request line, fields, blank line).
    pub head: &'a [u8],
    /// The request's method (a response to HEAD has no body).
    pub method: &'a Method,
    /// The body is sent chunk-encoded (its head says `transfer-encoding: chunked`).
    pub chunked: bool,
    /// The `Content-Length` the head declares: exactly this many body bytes are sent, or the
    /// request fails (a body that does not match its framing never reaches an upstream).
    pub length: Option<u64>,
    /// How long to wait for the response head once the request is sent.
    pub wait: Duration,
}

/// An open connection to one upstream.
pub(crate) struct Conn {
    io: TcpStream,
    /// Bytes read from the upstream and not consumed yet.
    buf: BytesMut,
    addr: SocketAddr,
}

impl Conn {
    /// Whether the upstream has neither closed the connection nor sent anything unasked.
    /// Reads only when the socket is marked readable, so a healthy idle connection costs no
    /// system call.
    fn is_reusable(&self) -> bool {
        let mut probe = [0u8; 1];
        matches!(self.io.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }
}

struct Idle {
    conn: Conn,
    since: Instant,
}

/// FNV-1a for the idle map's keys: a handful of endpoint addresses the proxy chose itself,
/// looked up twice per request, need no protection against crafted collisions, and SipHash
/// costs more than the rest of the lookup.
#[derive(Default)]
struct AddrHasher(u64);

impl Hasher for AddrHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// One worker thread's upstream connections: the idle ones by endpoint address, and how to
/// open new ones.
pub struct Connections {
    idle: Mutex<HashMap<SocketAddr, Vec<Idle>, BuildHasherDefault<AddrHasher>>>,
    connect_timeout: Duration,
    idle_timeout: Duration,
}

impl Connections {
    pub fn new(connect_timeout: Duration, idle_timeout: Duration) -> Arc<Connections> {
        Arc::new(Connections {
            idle: Mutex::new(HashMap::default()),
            connect_timeout,
            idle_timeout,
        })
    }

    /// Sends one request to `addr`. When the response head arrives, `on_head` gets it (to
    /// write or build the client's head from it, in place), and whether the whole request
    /// body had been sent by then; the body then streams from the returned [`UpstreamBody`]
    /// as the caller reads it.
    pub async fn send<R>(
        self: &Arc<Self>,
        addr: SocketAddr,
        request: Outgoing<'_>,
        body: &mut RequestBody<'_>,
        on_head: &mut (dyn FnMut(&ResponseHead<'_, '_>, bool) -> R + Send),
    ) -> Result<(R, UpstreamBody), Error> {
        // Writes wait for this pass of the worker's reads (see `batch`).
        crate::batch::requeue().await;
        let idempotent = is_idempotent(request.method);
        loop {
            let (conn, reused) = match self.checkout(addr) {
                Some(conn) => (conn, true),
                None => (self.connect(addr).await?, false),
            };
            match exchange(conn, request, body, on_head).await {
                Ok((answer, conn, head)) => {
                    if !head.keep_alive {
                        // An upstream that closes this connection (a draining instance says
                        // `Connection: close`) is about to close its idle siblings too: drop
                        // them now, rather than race its close with the next request.
                        self.forget(addr);
                    }
                    let body = UpstreamBody::new(
                        conn,
                        head.framing,
                        head.keep_alive,
                        head.switching,
                        self.clone(),
                    );
                    return Ok((answer, body));
                }
                Err(failure)
                    if reused
                        && (failure.unwritten
                            || (idempotent && failure.nothing_received && body.replayable()))
                        && body.rewind() =>
                {
                    // The upstream had closed this idle connection (and likely its siblings,
                    // as when it restarts), and sending again is safe: try a fresh one.
                    tracing::debug!(%addr, error = %failure.error, "reused connection was dead; reconnecting");
                    self.forget(addr);
                }
                Err(failure) => return Err(failure.error),
            }
        }
    }

    async fn connect(&self, addr: SocketAddr) -> Result<Conn, Error> {
        let io = match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(io)) => io,
            Ok(Err(e)) => return Err(Error::Connect(e)),
            Err(_) => return Err(Error::ConnectTimeout(self.connect_timeout)),
        };
        let _ = io.set_nodelay(true);
        Ok(Conn {
            io,
            buf: BytesMut::with_capacity(READ_CHUNK),
            addr,
        })
    }

    /// The most recently parked live connection to `addr`; expired or dead ones found on the
    /// way are closed.
    fn checkout(&self, addr: SocketAddr) -> Option<Conn> {
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let parked = idle.get_mut(&addr)?;
        while let Some(Idle { conn, since }) = parked.pop() {
            if now.saturating_duration_since(since) < self.idle_timeout && conn.is_reusable() {
                return Some(conn);
            }
        }
        None
    }

    /// Parks a connection whose last response is complete.
    fn put(&self, conn: Conn) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let parked = idle.entry(conn.addr).or_default();
        if parked.len() >= MAX_IDLE_PER_ENDPOINT {
            parked.remove(0);
        }
        parked.push(Idle {
            conn,
            since: Instant::now(),
        });
    }

    /// Closes every idle connection to `addr`.
    fn forget(&self, addr: SocketAddr) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.remove(&addr);
    }

    /// Idle connections, all endpoints together.
    pub fn idle_count(&self) -> usize {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.values().map(Vec::len).sum()
    }

    /// Closes idle connections past `timeouts.idle` or closed by their upstream, every
    /// second, for as long as the worker runs.
    pub async fn sweep(self: Arc<Self>) {
        let mut tick = tokio::time::interval(SWEEP_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = Instant::now();
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            for parked in idle.values_mut() {
                parked.retain(|i| {
                    now.saturating_duration_since(i.since) < self.idle_timeout
                        && i.conn.is_reusable()
                });
            }
            idle.retain(|_, parked| !parked.is_empty());
        }
    }
}

/// Methods whose repetition has the same effect as one request (RFC 9110 §9.2.2).
pub fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// A failed exchange: whether not one request byte was written, and whether the upstream
/// sent anything at all before it failed.
struct Failure {
    error: Error,
    unwritten: bool,
    nothing_received: bool,
}

impl Failure {
    fn new(error: Error, buf: &BytesMut, written: &AtomicBool) -> Failure {
        let nothing_received = match &error {
            Error::Write(_) => true,
            Error::Read(_) | Error::Closed => buf.is_empty(),
            _ => false,
        };
        Failure {
            unwritten: matches!(error, Error::Write(_)) && !written.load(Ordering::Acquire),
            error,
            nothing_received,
        }
    }
}

/// Writes the request head; `written` turns true once any byte of it is out.
async fn write_head(
    wr: &mut (impl tokio::io::AsyncWrite + Unpin),
    head: &[u8],
    written: &AtomicBool,
) -> Result<(), Error> {
    let n = wr.write(head).await.map_err(Error::Write)?;
    if n == 0 {
        return Err(Error::Write(std::io::ErrorKind::WriteZero.into()));
    }
    written.store(true, Ordering::Release);
    wr.write_all(&head[n..]).await.map_err(Error::Write)
}

/// What of a response head the body needs once the head itself is gone.
struct HeadSummary {
    framing: Framing,
    keep_alive: bool,
    /// `101 Switching Protocols`: the connection becomes the tunnel's.
    switching: bool,
}

/// Writes the request and reads the response head on `conn`. A request without a body is one
/// write then reads; with a body, the body is sent while the response is awaited, so an
/// upstream that answers early (a 413, say) is heard.
async fn exchange<R>(
    mut conn: Conn,
    request: Outgoing<'_>,
    body: &mut RequestBody<'_>,
    on_head: &mut (dyn FnMut(&ResponseHead<'_, '_>, bool) -> R + Send),
) -> Result<(R, Conn, HeadSummary), Failure> {
    let written = AtomicBool::new(false);
    let result = if body.is_end_stream() && request.length.unwrap_or(0) == 0 {
        match write_head(&mut conn.io, request.head, &written).await {
            Ok(()) => {
                let sent = AtomicBool::new(true);
                let reading =
                    read_head(&mut conn.io, &mut conn.buf, request.method, &sent, on_head);
                match tokio::time::timeout(request.wait, reading).await {
                    Ok(read) => read,
                    Err(_) => Err(Error::Timeout(request.wait)),
                }
            }
            Err(e) => Err(e),
        }
    } else {
        send_body_and_read_head(&mut conn, request, body, &written, on_head).await
    };
    match result {
        Ok((answer, head)) => Ok((answer, conn, head)),
        Err(e) => Err(Failure::new(e, &conn.buf, &written)),
    }
}

/// Reads until a final response head is complete and hands it to `on_head`. Interim
/// responses (100 Continue, 103 Early Hints) are read and dropped; 101 is final here.
async fn read_head<R>(
    io: &mut (impl AsyncRead + Unpin),
    buf: &mut BytesMut,
    method: &Method,
    sent: &AtomicBool,
    on_head: &mut (dyn FnMut(&ResponseHead<'_, '_>, bool) -> R + Send),
) -> Result<(R, HeadSummary), Error> {
    loop {
        if !buf.is_empty() {
            if let Some(done) = take_head(buf, method, sent.load(Ordering::Acquire), on_head)? {
                return Ok(done);
            }
        }
        buf.reserve(READ_CHUNK);
        match io.read_buf(buf).await {
            Ok(0) => return Err(Error::Closed),
            Ok(_) => {}
            Err(e) => return Err(Error::Read(e)),
        }
    }
}

/// A final response head at the start of `buf`, handed to `on_head` and taken off the
/// buffer; `None` when no complete final head is there yet.
fn take_head<R>(
    buf: &mut BytesMut,
    method: &Method,
    sent: bool,
    on_head: &mut (dyn FnMut(&ResponseHead<'_, '_>, bool) -> R + Send),
) -> Result<Option<(R, HeadSummary)>, Error> {
    loop {
        let mut slots = crate::wire::slots();
        let Some(head) = response::parse(buf, &mut slots, method).map_err(Error::Malformed)? else {
            return Ok(None);
        };
        let len = head.len;
        if head.status.is_informational() && head.status != StatusCode::SWITCHING_PROTOCOLS {
            buf.advance(len);
            continue;
        }
        let summary = HeadSummary {
            framing: head.framing,
            keep_alive: head.keep_alive,
            switching: head.status == StatusCode::SWITCHING_PROTOCOLS,
        };
        let answer = on_head(&head, sent);
        buf.advance(len);
        return Ok(Some((answer, summary)));
    }
}

/// The client's body did not match the length the proxy declared upstream.
#[derive(Debug)]
pub struct LengthMismatch;

impl std::fmt::Display for LengthMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("request body length differs from its Content-Length")
    }
}

impl std::error::Error for LengthMismatch {}

/// Sends the head and the body while waiting for the response head. If the response comes
/// first, the rest of the body is not sent and the connection is not reused. The wait for
/// the head is bounded by `request.wait` from the moment the body is all sent.
async fn send_body_and_read_head<R>(
    conn: &mut Conn,
    request: Outgoing<'_>,
    body: &mut RequestBody<'_>,
    written: &AtomicBool,
    on_head: &mut (dyn FnMut(&ResponseHead<'_, '_>, bool) -> R + Send),
) -> Result<(R, HeadSummary), Error> {
    let (mut rd, mut wr) = conn.io.split();
    let body_sent = AtomicBool::new(false);
    let sending = async {
        write_head(&mut wr, request.head, written).await?;
        let mut framing = Vec::new();
        let mut left = request.length;
        while let Some(data) = body.chunk().await {
            let data = data.map_err(Error::RequestBody)?;
            if let Some(left) = &mut left {
                *left = left
                    .checked_sub(data.len() as u64)
                    .ok_or_else(|| Error::RequestBody(Box::new(LengthMismatch)))?;
            }
            if request.chunked {
                framing.clear();
                push_chunk_header(&mut framing, data.len());
                wr.write_all(&framing).await.map_err(Error::Write)?;
                wr.write_all(&data).await.map_err(Error::Write)?;
                wr.write_all(b"\r\n").await.map_err(Error::Write)?;
            } else {
                wr.write_all(&data).await.map_err(Error::Write)?;
            }
        }
        if left.is_some_and(|left| left > 0) {
            return Err(Error::RequestBody(Box::new(LengthMismatch)));
        }
        if request.chunked {
            wr.write_all(LAST_CHUNK).await.map_err(Error::Write)?;
        }
        body_sent.store(true, Ordering::Release);
        Ok::<(), Error>(())
    };
    let receiving = read_head(&mut rd, &mut conn.buf, request.method, &body_sent, on_head);
    // Armed when the request is all sent.
    let waited = tokio::time::sleep(Duration::MAX);
    tokio::pin!(sending, receiving, waited);
    let mut sent: Option<Result<(), Error>> = None;
    loop {
        tokio::select! {
            r = &mut sending, if sent.is_none() => {
                if let Err(Error::RequestBody(e)) = r {
                    return Err(Error::RequestBody(e));
                }
                // A write error is reported only if no response follows (an upstream may
                // answer and close without reading the whole body).
                sent = Some(r);
                waited.as_mut().reset(Instant::now() + request.wait);
            }
            () = &mut waited, if sent.is_some() => {
                return Err(match sent {
                    Some(Err(write)) => write,
                    _ => Error::Timeout(request.wait),
                });
            }
            head = &mut receiving => {
                let body_sent = matches!(sent, Some(Ok(())));
                let (answer, mut head) = match head {
                    Ok(done) => done,
                    Err(e) => return Err(match sent {
                        Some(Err(write)) => write,
                        _ => e,
                    }),
                };
                if !body_sent {
                    head.keep_alive = false;
                }
                return Ok((answer, head));
            }
        }
    }
}

#[cfg(test)]
mod tests;
