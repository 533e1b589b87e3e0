//! Our HTTP/1.1 server side: one task per client connection reads each request head,
//! has [`Proxy::forward`] carry it upstream, and writes the response straight back: the
//! response head is written into this connection's buffer from the upstream's fields as they
//! lie in the upstream's buffer, and a small body goes out in the same write. No `HeaderMap`,
//! no task or channel per request, no allocation on the common path (the buffers live as
//! long as the connection).
//!
//! The connection's clock: a request head must arrive within `timeouts.header_read` of the
//! wait for it starting. Half a head then gets `408 Request Timeout`; an idle keep-alive
//! connection is closed without a word. The timer is armed once and only moved when it fires
//! early, so a request costs a clock read, not a timer-wheel update.
//!
//! Shutdown (`stop`): a request in progress finishes, says `Connection: close`, and the
//! connection closes; an idle connection waits [`DRAIN_NOTICE`] for one more request (answered
//! the same way) before it closes, so a client that was about to reuse it is answered rather
//! than reset (as after a binary upgrade, when another process already accepts new ones).

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::BytesMut;
use http::{Method, StatusCode, Version};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

use crate::access_log::{self, Entry, Trace};
use crate::balance::InFlight;
use crate::body::{Http1Body, RequestBody};
use crate::forward::{via_version, Answer, Proxy, Request, Respond};
use crate::headers::{self, Peer, ResponseRules};
use crate::metrics::LocalError;
use crate::upstream::{self, Connections, UpstreamBody};
use crate::wire::chunked::{push_chunk_header, LAST_CHUNK};
use crate::wire::request::{self, BodyFraming, Refusal};
use crate::wire::response::{Framing, ResponseHead};
use crate::wire::{self, write};

/// Bytes reserved in the read buffer before each read.
const READ_CHUNK: usize = 8 * 1024;
/// Body pieces up to this size are copied behind the head (one write); larger ones are
/// written on their own, without a copy.
const INLINE_BODY: usize = 16 * 1024;
/// What a closing connection reads and drops of a request body the proxy did not forward
/// (so the client is not reset before it has read the answer), and for how long at most.
const LINGER_BYTES: usize = 1024 * 1024;
const LINGER_TIME: Duration = Duration::from_secs(2);
/// How long the proxy's own short answer may take to go out before the connection is dropped.
const LOCAL_ANSWER_TIME: Duration = Duration::from_secs(5);
/// How long an idle connection of a stopping proxy waits for one last request.
pub const DRAIN_NOTICE: Duration = Duration::from_secs(1);
/// The first bytes of the HTTP/2 connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What the connections of one worker share.
pub struct Context {
    pub proxy: Arc<Proxy>,
    pub upstream: Arc<Connections>,
    /// The worker's access log buffer.
    pub log: Arc<access_log::Writer>,
    /// Turns `true` when the proxy shuts down.
    pub stop: watch::Receiver<bool>,
}

/// How a connection ended.
pub enum Ended {
    /// Closed (or switched protocols and the tunnel closed).
    Closed,
    /// The client opened with the HTTP/2 preface: the connection is hyper's, with `buf`.
    Http2,
}

/// Serves HTTP/1.1 on `io` until the connection ends. `buf` holds what was read so far.
pub async fn serve<S>(io: &mut S, buf: &mut BytesMut, client: &Peer, ctx: &Context) -> Ended
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let timeouts = ctx.proxy.timeouts();
    let mut conn = Connection {
        out: Vec::with_capacity(4096),
        scratch: Vec::with_capacity(1024),
        deadline: Box::pin(tokio::time::sleep(timeouts.header_read)),
        stop: ctx.stop.clone(),
        first: true,
        trace: Trace::new(ctx.log.enabled()),
    };
    loop {
        let end = match conn.await_head(io, buf, ctx).await {
            Wait::Head(end) => end,
            Wait::Http2 => return Ended::Http2,
            Wait::Idle => break,
            Wait::TimedOut => {
                ctx.proxy
                    .metrics
                    .connection_errors
                    .with_label_values(&["header_timeout"])
                    .inc();
                ctx.proxy.answered_locally(LocalError::RequestTimeout);
                conn.answer_locally(
                    io,
                    LocalError::RequestTimeout,
                    Version::HTTP_11,
                    true,
                    false,
                )
                .await;
                conn.log_unparsed(client, ctx, LocalError::RequestTimeout, None);
                break;
            }
            Wait::TooLarge => {
                ctx.proxy
                    .metrics
                    .connection_errors
                    .with_label_values(&["bad_request"])
                    .inc();
                ctx.proxy.answered_locally(LocalError::HeadTooLarge);
                conn.answer_locally(io, LocalError::HeadTooLarge, Version::HTTP_11, true, false)
                    .await;
                conn.log_unparsed(client, ctx, LocalError::HeadTooLarge, None);
                linger(io).await;
                break;
            }
        };
        conn.first = false;
        match conn.exchange(io, buf, end, client, ctx).await {
            Next::KeepAlive => continue,
            Next::Close => break,
            Next::Linger => {
                linger(io).await;
                break;
            }
            Next::Switched => return Ended::Closed,
        }
    }
    // A TLS close-notify may not go out to a client that stopped reading: bounded too.
    let _ = within(LOCAL_ANSWER_TIME, io.shutdown()).await;
    Ended::Closed
}

/// One connection's buffers and clock.
struct Connection {
    /// What goes to the client next: a head, and as much body as fits behind it.
    out: Vec<u8>,
    /// The head being sent upstream.
    scratch: Vec<u8>,
    /// The head deadline (see the module doc).
    deadline: Pin<Box<Sleep>>,
    stop: watch::Receiver<bool>,
    /// No request yet (the HTTP/2 preface can only come first).
    first: bool,
    /// What the request in progress did upstream, for the access log.
    trace: Trace,
}

/// How a request ended, for the access log.
struct Done {
    status: StatusCode,
    /// Why the proxy answered itself, if it did.
    error: Option<LocalError>,
    bytes_in: u64,
    bytes_out: u64,
}

impl Done {
    fn local(e: LocalError, bytes_in: u64) -> Done {
        Done {
            status: e.status(),
            error: Some(e),
            bytes_in,
            bytes_out: e.text().len() as u64,
        }
    }
}

enum Wait {
    /// A complete head, this long.
    Head(usize),
    Http2,
    /// The client closed, or the proxy is stopping, with no head begun.
    Idle,
    /// Half a head when `header_read` ran out.
    TimedOut,
    /// A head over `limits.max_header_bytes`.
    TooLarge,
}

enum Next {
    KeepAlive,
    Close,
    /// Close, after reading what the client may still be sending.
    Linger,
    Switched,
}

impl Connection {
    /// Waits for a complete request head at the start of `buf`.
    async fn await_head<S>(&mut self, io: &mut S, buf: &mut BytesMut, ctx: &Context) -> Wait
    where
        S: AsyncRead + Unpin,
    {
        let timeout = ctx.proxy.timeouts().header_read;
        let max = ctx.proxy.limits().max_header_bytes;
        let started = Instant::now();
        // Set when the proxy stops while this connection is idle: the end of its notice.
        let mut notice: Option<Instant> = None;
        loop {
            if self.first
                && buf.len() >= 3
                && H2_PREFACE.starts_with(&buf[..buf.len().min(H2_PREFACE.len())])
            {
                if buf.len() >= H2_PREFACE.len() {
                    return Wait::Http2;
                }
            } else if let Some(end) = wire::head_end(buf) {
                return if end > max {
                    Wait::TooLarge
                } else {
                    Wait::Head(end)
                };
            } else if buf.len() > max {
                return Wait::TooLarge;
            }
            if *self.stop.borrow() && buf.is_empty() {
                let end = *notice.get_or_insert_with(|| Instant::now() + DRAIN_NOTICE);
                if Instant::now() >= end {
                    return Wait::Idle;
                }
            }
            buf.reserve(READ_CHUNK);
            let notice_over = async {
                match notice {
                    Some(end) => tokio::time::sleep_until(end).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                read = io.read_buf(buf) => match read {
                    Ok(0) | Err(_) => return Wait::Idle,
                    Ok(_) => {}
                },
                () = notice_over, if buf.is_empty() => return Wait::Idle,
                () = self.deadline.as_mut() => {
                    if started.elapsed() >= timeout {
                        return if buf.is_empty() { Wait::Idle } else { Wait::TimedOut };
                    }
                    // Armed for an earlier wait: move it to this one's end.
                    self.deadline.as_mut().reset(started + timeout);
                }
                changed = self.stop.changed(), if buf.is_empty() && notice.is_none() => {
                    if changed.is_err() {
                        return Wait::Idle;
                    }
                }
            }
        }
    }

    /// One request and its response; the head is the first `end` bytes of `buf`.
    async fn exchange<S>(
        &mut self,
        io: &mut S,
        buf: &mut BytesMut,
        end: usize,
        client: &Peer,
        ctx: &Context,
    ) -> Next
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let proxy = &ctx.proxy;
        let started = ctx.log.enabled().then(Instant::now);
        let head = buf.split_to(end);
        let mut slots = wire::slots();
        let req = match request::parse(&head, &mut slots) {
            Ok(req) => req,
            Err(refusal) => {
                proxy
                    .metrics
                    .connection_errors
                    .with_label_values(&["bad_request"])
                    .inc();
                let e = match refusal {
                    Refusal::TooLarge => LocalError::HeadTooLarge,
                    Refusal::Bad(why) => {
                        tracing::debug!(peer = %client.peer, why, "malformed request");
                        LocalError::BadRequest
                    }
                    Refusal::MethodNotAllowed => LocalError::MethodNotAllowed,
                    Refusal::NotImplemented(why) => {
                        tracing::debug!(peer = %client.peer, why, "unsupported request framing");
                        LocalError::NotImplemented
                    }
                    Refusal::ExpectationFailed => LocalError::ExpectationFailed,
                };
                proxy.answered_locally(e);
                self.answer_locally(io, e, Version::HTTP_11, true, false)
                    .await;
                self.log_unparsed(client, ctx, e, started);
                return Next::Linger;
            }
        };
        self.trace.clear();
        let (next, done) = self.forward_one(io, buf, &req, client, ctx).await;
        if let Some(started) = started {
            ctx.log.log(&Entry {
                client,
                method: Some(req.method.as_str()),
                authority: req.host,
                target: Some(&req.target),
                version: req.version,
                status: done.status.as_u16(),
                bytes_in: done.bytes_in,
                bytes_out: done.bytes_out,
                trace: &self.trace,
                error: done.error,
                duration: started.elapsed(),
            });
        }
        next
    }

    /// A request whose head could not be read or parsed, for the access log.
    fn log_unparsed(&self, client: &Peer, ctx: &Context, e: LocalError, started: Option<Instant>) {
        if ctx.log.enabled() {
            ctx.log.log(&Entry {
                client,
                method: None,
                authority: None,
                target: None,
                version: Version::HTTP_11,
                status: e.status().as_u16(),
                bytes_in: 0,
                bytes_out: e.text().len() as u64,
                trace: &Trace::default(),
                error: Some(e),
                duration: started.map_or(Duration::ZERO, |s| s.elapsed()),
            });
        }
    }

    /// Forwards a parsed request and sends its response.
    async fn forward_one<S>(
        &mut self,
        io: &mut S,
        buf: &mut BytesMut,
        req: &request::RequestHead<'_, '_>,
        client: &Peer,
        ctx: &Context,
    ) -> (Next, Done)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let proxy = &ctx.proxy;
        let keep_alive = req.keep_alive && !*self.stop.borrow();
        let content_length = match req.body {
            BodyFraming::Length(n) => Some(n),
            BodyFraming::Chunked => None,
            BodyFraming::None => wire::content_length(req.fields).ok().flatten(),
        };
        let has_body = req.body != BodyFraming::None;
        let answered_expect = req.expect_continue && has_body;
        let too_large = content_length.is_some_and(|n| n > proxy.limits().max_body_bytes);
        if answered_expect && !too_large {
            let go_ahead = within(LOCAL_ANSWER_TIME, io.write_all(write::CONTINUE)).await;
            if !matches!(go_ahead, Ok(Ok(()))) {
                let gone = Done {
                    status: StatusCode::CONTINUE,
                    error: None,
                    bytes_in: 0,
                    bytes_out: 0,
                };
                return (Next::Close, gone);
            }
        }

        // Only the upgrades the configuration names go on; any other (h2c, say) is dropped
        // and the request goes as a plain one.
        let upgrade = req.upgrade.and_then(|offer| proxy.upgrade(offer));
        let request = Request {
            method: &req.method,
            target: &req.target,
            path: req.path,
            host: req.host,
            version: req.version,
            fields: req.fields,
            content_length,
            upgrade,
        };
        let mut respond = Http1Respond {
            out: &mut self.out,
            version: req.version,
            head_request: req.method == Method::HEAD,
            keep_alive,
            framing: ToClient::None,
        };
        let limit = proxy.limits().max_body_bytes;
        let stall = proxy.timeouts().body_read;
        let mut body = RequestBody::http1(Http1Body::new(io, buf, req.body, stall), limit);
        let result = proxy
            .forward(
                &ctx.upstream,
                &request,
                &mut body,
                client,
                &mut self.scratch,
                &mut respond,
                &mut self.trace,
            )
            .await;
        let body_read = body.fully_received();
        let bytes_in = body.received();
        drop(body);
        let (framing, keep_alive) = (respond.framing, respond.keep_alive && body_read);

        let head_request = req.method == Method::HEAD;
        let mut answer = match result {
            // A protocol switch nobody asked for (the proxy passes `Upgrade` on only when the
            // client sent it): a broken upstream.
            Ok(answer) if answer.status == StatusCode::SWITCHING_PROTOCOLS && upgrade.is_none() => {
                proxy.answered_locally(LocalError::UpstreamError);
                let e = LocalError::UpstreamError;
                self.answer_locally(io, e, req.version, true, head_request)
                    .await;
                let next = if body_read { Next::Close } else { Next::Linger };
                return (next, Done::local(e, bytes_in));
            }
            Ok(answer) => answer,
            Err(e) => {
                let close = !keep_alive || e == LocalError::BodyTooLarge;
                self.answer_locally(io, e, req.version, close, head_request)
                    .await;
                let next = match (close, body_read) {
                    (false, _) => Next::KeepAlive,
                    (true, true) => Next::Close,
                    (true, false) => Next::Linger,
                };
                return (next, Done::local(e, bytes_in));
            }
        };
        let mut done = Done {
            status: answer.status,
            error: None,
            bytes_in,
            bytes_out: 0,
        };
        if answer.status == StatusCode::SWITCHING_PROTOCOLS {
            self.tunnel(io, buf, answer, proxy.timeouts().tunnel_idle)
                .await;
            return (Next::Switched, done);
        }
        let stall = proxy.timeouts().idle;
        // Writes wait for this pass of the worker's reads (see `batch`).
        crate::batch::requeue().await;
        let mut in_flight = Some(answer.in_flight);
        let written = write_body(
            io,
            &mut self.out,
            &mut answer.body,
            &mut in_flight,
            framing,
            stall,
            &mut done.bytes_out,
        )
        .await;
        drop(in_flight);
        let next = match (written.is_ok() && keep_alive, body_read) {
            (true, _) => Next::KeepAlive,
            (false, true) => Next::Close,
            (false, false) => Next::Linger,
        };
        (next, done)
    }

    /// The proxy's own answer (counted by the caller): status, a one-line body (none for
    /// HEAD), and `Connection: close` if `close`.
    async fn answer_locally<S: AsyncWrite + Unpin>(
        &mut self,
        io: &mut S,
        e: LocalError,
        version: Version,
        close: bool,
        head_request: bool,
    ) {
        let out = &mut self.out;
        out.clear();
        write::push_status_line(out, e.status());
        write::push_field(out, b"content-type", b"text/plain; charset=utf-8");
        out.extend_from_slice(b"content-length: ");
        write::push_decimal(out, e.text().len() as u64);
        out.extend_from_slice(b"\r\n");
        if let Some(seconds) = e.retry_after() {
            write::push_field(out, b"retry-after", seconds.as_bytes());
        }
        out.extend_from_slice(b"via: ");
        out.extend_from_slice(via_version(version).as_bytes());
        out.extend_from_slice(b" ");
        out.extend_from_slice(headers::VIA_NAME.as_bytes());
        out.extend_from_slice(b"\r\n");
        write::push_field(out, b"date", &write::http_date());
        if close {
            write::push_field(out, b"connection", b"close");
        } else if version == Version::HTTP_10 {
            write::push_field(out, b"connection", b"keep-alive");
        }
        out.extend_from_slice(b"\r\n");
        if !head_request {
            out.extend_from_slice(e.text().as_bytes());
        }
        let _ = within(LOCAL_ANSWER_TIME, io.write_all(out)).await;
    }

    /// The upstream switched protocols: the 101 goes to the client, then bytes are copied
    /// both ways until either side closes or the tunnel is idle for `idle`. The tunnel counts
    /// as in flight on its endpoint for as long as it is open.
    async fn tunnel<S>(&mut self, io: &mut S, buf: &mut BytesMut, answer: Answer, idle: Duration)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let Answer {
            body, in_flight, ..
        } = answer;
        let Some((mut upstream, early)) = body.into_upgraded() else {
            return;
        };
        self.out.extend_from_slice(&early);
        if io.write_all(&self.out).await.is_err() {
            return;
        }
        if !buf.is_empty() && upstream.write_all(buf).await.is_err() {
            return;
        }
        buf.clear();
        if let Err(e) = crate::tunnel::relay(io, &mut upstream, idle).await {
            tracing::debug!(error = %e, "upgraded connection ended with an error");
        }
        drop(in_flight);
    }
}

/// How the body goes to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ToClient {
    /// No body (HEAD, 204, 304, 101…).
    None,
    /// As it comes: its length is in the head.
    Length,
    /// Chunk-encoded (its length is not known; an HTTP/1.1 client).
    Chunked,
    /// Until the connection closes (its length is not known; an HTTP/1.0 client).
    UntilClose,
}

/// Writes the client's response head from the upstream's, in place.
struct Http1Respond<'a> {
    out: &'a mut Vec<u8>,
    /// The client's version.
    version: Version,
    head_request: bool,
    /// The connection stays open after this response (updated by the head).
    keep_alive: bool,
    /// Decided by the head.
    framing: ToClient,
}

impl Respond for Http1Respond<'_> {
    fn head(&mut self, head: &ResponseHead<'_, '_>, request_id: &[u8], request_sent: bool) {
        let switching = head.status == StatusCode::SWITCHING_PROTOCOLS;
        // Whatever is left of an unsent request body is still on its way: close after this.
        self.keep_alive &= request_sent;
        self.framing = match head.framing {
            _ if switching || self.head_request => ToClient::None,
            Framing::Empty => ToClient::None,
            Framing::Length(_) => ToClient::Length,
            Framing::Chunked | Framing::UntilClose if self.version == Version::HTTP_11 => {
                ToClient::Chunked
            }
            Framing::Chunked | Framing::UntilClose => ToClient::UntilClose,
        };
        self.keep_alive &= !switching && self.framing != ToClient::UntilClose;
        let out = &mut *self.out;
        out.clear();
        write::push_status_line(out, head.status);
        let rules = ResponseRules {
            version: via_version(self.version),
            request_id,
            length: head.length_field(),
            switching,
        };
        headers::forward_response(head.fields, &rules, out);
        if self.framing == ToClient::Chunked {
            write::push_field(out, b"transfer-encoding", b"chunked");
        }
        if !switching {
            if !self.keep_alive {
                write::push_field(out, b"connection", b"close");
            } else if self.version == Version::HTTP_10 {
                write::push_field(out, b"connection", b"keep-alive");
            }
        }
        out.extend_from_slice(b"\r\n");
    }
}

/// Streams `body` to the client behind the head already in `out`: what the upstream has
/// sent by now goes in the same write as the head; the rest as it comes.
async fn write_body<S: AsyncWrite + Unpin>(
    io: &mut S,
    out: &mut Vec<u8>,
    body: &mut UpstreamBody,
    in_flight: &mut Option<InFlight>,
    framing: ToClient,
    stall: Duration,
    sent: &mut u64,
) -> Result<(), ()> {
    let chunked = framing == ToClient::Chunked;
    if framing == ToClient::None {
        in_flight.take();
        return flush(io, out, stall).await;
    }
    loop {
        let frame = match frame_now(body).await {
            Some(frame) => frame,
            None => {
                // Nothing more yet: send what there is, then wait (an upstream that stalls
                // mid-body for `stall` ends the response).
                flush(io, out, stall).await?;
                within(stall, body.frame()).await.map_err(|()| {
                    tracing::debug!(?stall, "upstream body stalled");
                })?
            }
        };
        match frame {
            None => {
                // The upstream's part is over: it no longer counts this request in flight,
                // however long the client takes to read the rest.
                in_flight.take();
                if chunked {
                    out.extend_from_slice(LAST_CHUNK);
                }
                return flush(io, out, stall).await;
            }
            Some(Err(e)) => {
                tracing::debug!(error = %e, "upstream body failed");
                let _ = flush(io, out, stall).await;
                return Err(());
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) if data.is_empty() => {}
                Ok(data) => {
                    *sent += data.len() as u64;
                    if chunked {
                        push_chunk_header(out, data.len());
                    }
                    if data.len() <= INLINE_BODY {
                        out.extend_from_slice(&data);
                    } else {
                        flush(io, out, stall).await?;
                        within(stall, io.write_all(&data))
                            .await
                            .and_then(|r| r.map_err(|_| ()))?;
                    }
                    if chunked {
                        out.extend_from_slice(b"\r\n");
                    }
                    if out.len() >= INLINE_BODY {
                        flush(io, out, stall).await?;
                    }
                }
                Err(frame) => {
                    // Trailers end a chunked body; a client without chunking cannot get them.
                    if let (true, Ok(trailers)) = (chunked, frame.into_trailers()) {
                        out.extend_from_slice(b"0\r\n");
                        for (name, value) in &trailers {
                            write::push_field(out, name.as_str().as_bytes(), value.as_bytes());
                        }
                        out.extend_from_slice(b"\r\n");
                        return flush(io, out, stall).await;
                    }
                }
            },
        }
    }
}

/// The body's next frame if it is there without waiting.
async fn frame_now(
    body: &mut UpstreamBody,
) -> Option<Option<Result<Frame<bytes::Bytes>, upstream::Error>>> {
    poll_fn(|cx| match Pin::new(&mut *body).poll_frame(cx) {
        Poll::Ready(frame) => Poll::Ready(Some(frame)),
        Poll::Pending => Poll::Ready(None),
    })
    .await
}

/// Writes `out` to the client, giving up if the client takes in nothing for `stall`.
async fn flush<S: AsyncWrite + Unpin>(
    io: &mut S,
    out: &mut Vec<u8>,
    stall: Duration,
) -> Result<(), ()> {
    if !out.is_empty() {
        match within(stall, io.write_all(out)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(()),
            Err(()) => {
                tracing::debug!(?stall, "client stopped reading");
                return Err(());
            }
        }
        out.clear();
    }
    Ok(())
}

/// `fut`, bounded by `limit`; the timer is only armed if `fut` does not finish at once (the
/// common case for a write into a socket with room, or a body already buffered), so the
/// bound costs nothing on the fast path.
async fn within<F: std::future::Future>(limit: Duration, fut: F) -> Result<F::Output, ()> {
    let mut fut = std::pin::pin!(fut);
    let first = poll_fn(|cx| match fut.as_mut().poll(cx) {
        Poll::Ready(out) => Poll::Ready(Some(out)),
        Poll::Pending => Poll::Ready(None),
    })
    .await;
    match first {
        Some(out) => Ok(out),
        None => tokio::time::timeout(limit, fut).await.map_err(|_| ()),
    }
}

/// Before closing on a client that may still be sending (a body the proxy did not read):
/// stop writing, then read and drop what comes for a little while, so the client reads the
/// answer instead of a reset.
async fn linger<S: AsyncRead + AsyncWrite + Unpin>(io: &mut S) {
    let _ = within(LOCAL_ANSWER_TIME, io.shutdown()).await;
    let drain = async {
        let mut sink = [0u8; 16 * 1024];
        let mut total = 0;
        while total < LINGER_BYTES {
            match io.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_TIME, drain).await;
}
