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
//! something (its FIN); a bodiless request that still meets a dead reused connection before
//! any response byte is sent again on a fresh one, since nothing reached the upstream.

pub mod body;
pub mod codec;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use http::{HeaderMap, Method, Response, StatusCode};
use http_body::Body as _;
use http_body_util::BodyExt as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::body::{BoxError, RequestBody};
pub use body::UpstreamBody;
use codec::{RequestFraming, ResponseHead};

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
    /// The upstream's response is not valid HTTP/1.x.
    Malformed(codec::Malformed),
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
            Error::Malformed(m) => m.fmt(f),
            Error::RequestBody(e) => write!(f, "request body: {e}"),
        }
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

/// What a request sends: method, target (path and query) and the headers as rewritten for
/// the upstream. Borrowed, so a retry sends the same head without copying it.
#[derive(Debug, Clone, Copy)]
pub struct RequestHead<'a> {
    pub method: &'a Method,
    pub target: &'a str,
    pub headers: &'a HeaderMap,
}

/// An open connection to one upstream.
pub(crate) struct Conn {
    io: TcpStream,
    /// Bytes read from the upstream and not consumed yet.
    buf: BytesMut,
    /// The request head being written; kept across requests for its capacity.
    out: Vec<u8>,
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

/// One worker thread's upstream connections: the idle ones by endpoint address, and how to
/// open new ones.
pub struct Connections {
    idle: Mutex<HashMap<SocketAddr, Vec<Idle>>>,
    connect_timeout: Duration,
    idle_timeout: Duration,
}

impl Connections {
    pub fn new(connect_timeout: Duration, idle_timeout: Duration) -> Arc<Connections> {
        Arc::new(Connections {
            idle: Mutex::new(HashMap::new()),
            connect_timeout,
            idle_timeout,
        })
    }

    /// Sends one request to `addr` and returns the response once its head has arrived; the
    /// body streams from the connection as the caller reads it.
    pub async fn send(
        self: &Arc<Self>,
        addr: SocketAddr,
        head: RequestHead<'_>,
        body: RequestBody,
    ) -> Result<Response<UpstreamBody>, Error> {
        // A known-empty body means the request can be written again as is.
        let bodiless = body.is_end_stream();
        let mut body = Some(body);
        loop {
            let (conn, reused) = match self.checkout(addr) {
                Some(conn) => (conn, true),
                None => (self.connect(addr).await?, false),
            };
            let this_body = if bodiless {
                RequestBody::empty()
            } else {
                body.take().unwrap_or_else(RequestBody::empty)
            };
            match exchange(conn, head, this_body).await {
                Ok((res, conn)) => return Ok(self.response(res, conn)),
                Err(failure) if reused && bodiless && failure.nothing_received => {
                    // The upstream had closed this idle connection (and likely its siblings,
                    // as when it restarts): nothing reached it, so try a fresh connection.
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
            out: Vec::with_capacity(512),
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

    fn response(self: &Arc<Self>, head: ResponseHead, conn: Conn) -> Response<UpstreamBody> {
        let upgrade = head.status == StatusCode::SWITCHING_PROTOCOLS;
        let body = UpstreamBody::new(conn, head.framing, head.keep_alive, upgrade, self.clone());
        let mut res = Response::new(body);
        *res.status_mut() = head.status;
        *res.headers_mut() = head.headers;
        res
    }
}

/// A failed exchange, and whether the upstream sent anything at all before it failed.
struct Failure {
    error: Error,
    nothing_received: bool,
}

impl Failure {
    fn new(error: Error, buf: &BytesMut) -> Failure {
        let nothing_received = match &error {
            Error::Write(_) => true,
            Error::Read(_) | Error::Closed => buf.is_empty(),
            _ => false,
        };
        Failure {
            error,
            nothing_received,
        }
    }
}

/// How the body of this request goes on the wire.
fn request_framing(head: &RequestHead<'_>, body: &RequestBody) -> RequestFraming {
    if head.headers.contains_key(http::header::CONTENT_LENGTH) {
        RequestFraming::Length
    } else if !body.is_end_stream() {
        RequestFraming::Chunked
    } else if matches!(*head.method, Method::POST | Method::PUT | Method::PATCH) {
        RequestFraming::Zero
    } else {
        RequestFraming::None
    }
}

/// Writes the request and reads the response head on `conn`. A request without a body is one
/// write then reads; with a body, the body is sent while the response is awaited, so an
/// upstream that answers early (a 413, say) is heard.
async fn exchange(
    mut conn: Conn,
    head: RequestHead<'_>,
    body: RequestBody,
) -> Result<(ResponseHead, Conn), Failure> {
    let framing = request_framing(&head, &body);
    conn.out.clear();
    codec::encode_request_head(
        &mut conn.out,
        head.method,
        head.target,
        head.headers,
        framing,
    );
    let result = if body.is_end_stream() {
        match conn.io.write_all(&conn.out).await {
            Ok(()) => read_head(&mut conn.io, &mut conn.buf, head.method).await,
            Err(e) => Err(Error::Write(e)),
        }
    } else {
        send_body_and_read_head(&mut conn, head.method, body, framing).await
    };
    match result {
        Ok(res) => Ok((res, conn)),
        Err(e) => Err(Failure::new(e, &conn.buf)),
    }
}

/// Reads until a final response head is complete. Interim responses (100 Continue, 103 Early
/// Hints) are read and dropped; 101 is final here (the connection switches protocols).
async fn read_head(
    io: &mut (impl AsyncRead + Unpin),
    buf: &mut BytesMut,
    method: &Method,
) -> Result<ResponseHead, Error> {
    loop {
        if !buf.is_empty() {
            if let Some(head) = codec::parse_response_head(buf, method).map_err(Error::Malformed)? {
                if head.status.is_informational() && head.status != StatusCode::SWITCHING_PROTOCOLS
                {
                    continue;
                }
                return Ok(head);
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

/// Sends the head and the body while waiting for the response head. If the response comes
/// first, the rest of the body is not sent and the connection is not reused.
async fn send_body_and_read_head(
    conn: &mut Conn,
    method: &Method,
    mut body: RequestBody,
    framing: RequestFraming,
) -> Result<ResponseHead, Error> {
    let (mut rd, mut wr) = conn.io.split();
    let out = &conn.out;
    let sending = async move {
        wr.write_all(out).await.map_err(Error::Write)?;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(Error::RequestBody)?;
            let Ok(data) = frame.into_data() else {
                continue; // request trailers are not forwarded
            };
            if data.is_empty() {
                continue;
            }
            if framing == RequestFraming::Chunked {
                let mut chunk = codec::chunk_header(data.len());
                chunk.extend_from_slice(&data);
                chunk.extend_from_slice(b"\r\n");
                wr.write_all(&chunk).await.map_err(Error::Write)?;
            } else {
                wr.write_all(&data).await.map_err(Error::Write)?;
            }
        }
        if framing == RequestFraming::Chunked {
            wr.write_all(codec::LAST_CHUNK)
                .await
                .map_err(Error::Write)?;
        }
        Ok::<(), Error>(())
    };
    let receiving = read_head(&mut rd, &mut conn.buf, method);
    tokio::pin!(sending, receiving);
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
            }
            head = &mut receiving => {
                let body_sent = matches!(sent, Some(Ok(())));
                let mut head = match head {
                    Ok(head) => head,
                    Err(e) => return Err(match sent {
                        Some(Err(write)) => write,
                        _ => e,
                    }),
                };
                if !body_sent {
                    head.keep_alive = false;
                }
                return Ok(head);
            }
        }
    }
}

#[cfg(test)]
mod tests;
