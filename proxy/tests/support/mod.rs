//! Test support: synthetic upstreams (real hyper servers on loopback ports, with a latency,
//! a status, echo, sink, source and hang behaviours) and the real `proxy` binary started on
//! free ports with generated config files. Builders keep each test a few readable lines.
#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

/// The admin token every test proxy starts with (`PROXY_ADMIN_TOKEN`).
pub const ADMIN_TOKEN: &str = "test-admin-token";

pub use shared::testbed::free_port;

/// Polls `cond` until true or the deadline passes (then panics naming `what`).
pub async fn eventually<F, Fut>(what: &str, deadline: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = Instant::now() + deadline;
    while !cond().await {
        assert!(
            Instant::now() < end,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ===== synthetic upstreams =====

/// How a synthetic upstream answers `GET /` and `/healthz`; switchable while it runs.
pub struct Behaviour {
    pub latency: Duration,
    pub status: std::sync::atomic::AtomicU16,
    /// Accept connections and requests but never answer (a hung process).
    pub hang: std::sync::atomic::AtomicBool,
}

/// A running synthetic upstream. Dropping it (or `kill`) closes its listener and every
/// connection, as a killed process would.
pub struct Upstream {
    pub name: String,
    pub addr: SocketAddr,
    /// Requests received, health probes excepted.
    pub hits: Arc<AtomicUsize>,
    /// Health probes received.
    pub probes: Arc<AtomicUsize>,
    pub behaviour: Arc<Behaviour>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    pub fn builder(name: &str) -> UpstreamBuilder {
        UpstreamBuilder {
            name: name.into(),
            latency: Duration::ZERO,
            status: 200,
            hang: false,
            port: 0,
        }
    }

    pub async fn start(name: &str) -> Upstream {
        Upstream::builder(name).start().await
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    pub fn probes(&self) -> usize {
        self.probes.load(Ordering::SeqCst)
    }

    pub fn set_hang(&self, hang: bool) {
        self.behaviour.hang.store(hang, Ordering::SeqCst);
    }

    pub fn set_status(&self, status: u16) {
        self.behaviour.status.store(status, Ordering::SeqCst);
    }

    /// Stops listening and closes every connection.
    pub fn kill(self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub struct UpstreamBuilder {
    name: String,
    latency: Duration,
    status: u16,
    hang: bool,
    port: u16,
}

impl UpstreamBuilder {
    pub fn latency(mut self, d: Duration) -> Self {
        self.latency = d;
        self
    }

    pub fn status(mut self, s: u16) -> Self {
        self.status = s;
        self
    }

    pub fn hang(mut self) -> Self {
        self.hang = true;
        self
    }

    /// Listen on this port (to restart a killed upstream where it was).
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    pub async fn start(self) -> Upstream {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let counters = Counters {
            hits: Arc::new(AtomicUsize::new(0)),
            probes: Arc::new(AtomicUsize::new(0)),
        };
        let behaviour = Arc::new(Behaviour {
            latency: self.latency,
            status: std::sync::atomic::AtomicU16::new(self.status),
            hang: std::sync::atomic::AtomicBool::new(self.hang),
        });
        let (name, b, c) = (self.name.clone(), behaviour.clone(), counters.clone());
        let task = tokio::spawn(async move {
            // Connections live in this set: aborting the task closes them all.
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (name, b, c) = (name.clone(), b.clone(), c.clone());
                connections.spawn(async move {
                    let svc = service_fn(move |req| {
                        let (name, b, c) = (name.clone(), b.clone(), c.clone());
                        async move { Ok::<_, Infallible>(respond(&name, &b, &c, req).await) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                        .await;
                });
                while connections.try_join_next().is_some() {}
            }
        });
        Upstream {
            name: self.name,
            addr,
            hits: counters.hits,
            probes: counters.probes,
            behaviour,
            task,
        }
    }
}

type UpBody = http_body_util::Either<Full<Bytes>, Source>;

#[derive(Clone)]
struct Counters {
    hits: Arc<AtomicUsize>,
    probes: Arc<AtomicUsize>,
}

/// `GET /healthz`: like `/`, counted as a probe. `GET /echo`: the request head as JSON.
/// `POST /sink`: counts the body, answers the count. `GET /upgrade` with `Upgrade: echo`:
/// switches protocols, then echoes every byte back.
/// `GET /source?bytes=N`: streams N bytes. Anything else: after the latency, the status with
/// the upstream's name as body.
async fn respond(
    name: &str,
    b: &Behaviour,
    counters: &Counters,
    mut req: Request<Incoming>,
) -> Response<UpBody> {
    // Health probes see the same behaviour (hang, status) but are counted apart.
    if req.uri().path() == "/healthz" {
        counters.probes.fetch_add(1, Ordering::SeqCst);
    } else {
        counters.hits.fetch_add(1, Ordering::SeqCst);
    }
    if b.hang.load(Ordering::SeqCst) {
        std::future::pending::<()>().await;
    }
    let full = |status: u16, body: String| {
        let mut res = Response::new(http_body_util::Either::Left(Full::new(Bytes::from(body))));
        *res.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
        res
    };
    match req.uri().path() {
        "/echo" => {
            let mut headers: HashMap<String, Vec<String>> = HashMap::new();
            for (k, v) in req.headers() {
                headers
                    .entry(k.as_str().to_string())
                    .or_default()
                    .push(v.to_str().unwrap_or("").to_string());
            }
            let body = serde_json::json!({
                "upstream": name,
                "uri": req.uri().to_string(),
                "version": format!("{:?}", req.version()),
                "headers": headers,
            });
            full(200, body.to_string())
        }
        "/upgrade"
            if req
                .headers()
                .get("upgrade")
                .is_some_and(|v| v == "echo" || v == "websocket") =>
        {
            let websocket = req.headers()["upgrade"] == "websocket";
            let key = req.headers().get("sec-websocket-key").cloned();
            // A WebSocket server refuses a handshake without a key or in another version.
            if websocket
                && (key.is_none()
                    || req
                        .headers()
                        .get("sec-websocket-version")
                        .is_none_or(|v| v != "13"))
            {
                return full(400, "not a WebSocket handshake".into());
            }
            let switched = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let Ok(io) = switched.await else { return };
                let mut io = TokioIo::new(io);
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = io.read(&mut buf).await {
                    if io.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
            let mut res = full(101, String::new());
            let protocol = if websocket { "websocket" } else { "echo" };
            res.headers_mut()
                .insert("upgrade", hyper::header::HeaderValue::from_static(protocol));
            if let Some(key) = key {
                // Not the real SHA-1 proof: the test wants to see which key arrived.
                res.headers_mut()
                    .insert("sec-websocket-accept", key.clone());
                res.headers_mut().insert("x-seen-key", key);
            }
            res.headers_mut().insert(
                "connection",
                hyper::header::HeaderValue::from_static("upgrade"),
            );
            res
        }
        "/sink" => {
            let mut body = req.into_body();
            let mut n: u64 = 0;
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(f) => n += f.data_ref().map_or(0, |d| d.len() as u64),
                    Err(_) => return full(400, "broken body".into()),
                }
            }
            full(200, n.to_string())
        }
        "/source" => {
            let n: u64 = req
                .uri()
                .query()
                .and_then(|q| q.strip_prefix("bytes="))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            Response::new(http_body_util::Either::Right(Source { remaining: n }))
        }
        _ => {
            if !b.latency.is_zero() {
                tokio::time::sleep(b.latency).await;
            }
            full(b.status.load(Ordering::SeqCst), name.to_string())
        }
    }
}

/// A body of `remaining` bytes, generated 64 KiB at a time.
pub struct Source {
    pub remaining: u64,
}

const CHUNK: usize = 64 * 1024;
static ZEROS: [u8; CHUNK] = [b'x'; CHUNK];

impl Body for Source {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if this.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = this.remaining.min(CHUNK as u64) as usize;
        this.remaining -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&ZEROS[..n])))))
    }
}

/// An upstream that answers every request head it reads with the same raw bytes, for
/// framings hyper would not produce (a body delimited by the close, say). Request bodies are
/// not read.
pub struct RawUpstream {
    pub addr: SocketAddr,
    /// Request heads received.
    pub hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts a [`RawUpstream`] answering `reply`, closing the connection after it if `close`.
pub async fn raw_upstream(reply: &'static [u8], close: bool) -> RawUpstream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let task = tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            let counter = counter.clone();
            connections.spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n @ 1..) = stream.read(&mut chunk).await else {
                        return;
                    };
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        counter.fetch_add(1, Ordering::SeqCst);
                        if stream.write_all(reply).await.is_err() || close {
                            return;
                        }
                    }
                }
            });
            while connections.try_join_next().is_some() {}
        }
    });
    RawUpstream { addr, hits, task }
}

/// One request as a strict origin parsed it off the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub method: String,
    pub target: String,
    /// Fields in order, names lower-cased.
    pub fields: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Seen {
    /// Every value of field `name`.
    pub fn values(&self, name: &str) -> Vec<&str> {
        self.fields
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// An upstream that parses what the proxy sends as a strict HTTP/1.1 origin would (heads by
/// httparse, bodies by Content-Length or chunked, exactly) and records every request, so a
/// test sees how many requests the forwarded bytes make and what each carried. Answers each
/// with `200 ok`, except a target starting `/vanish`: recorded, then the connection closes
/// without an answer (a request that was processed, whose answer was lost).
pub struct RecordingUpstream {
    pub addr: SocketAddr,
    pub seen: Arc<std::sync::Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RecordingUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RecordingUpstream {
    /// The requests received, health checks left out.
    pub fn requests(&self) -> Vec<Seen> {
        let seen = self.seen.lock().unwrap();
        seen.iter()
            .filter(|r| r.target != "/healthz")
            .cloned()
            .collect()
    }
}

pub async fn recording_upstream() -> RecordingUpstream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    let task = tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            let record = record.clone();
            connections.spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    loop {
                        match parse_one(&buf) {
                            Parsed::Request(req, used) => {
                                buf.drain(..used);
                                let vanish = req.target.starts_with("/vanish");
                                record.lock().unwrap().push(req);
                                if vanish {
                                    return;
                                }
                                let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                                if stream.write_all(ok).await.is_err() {
                                    return;
                                }
                            }
                            Parsed::Partial => break,
                            Parsed::Invalid => {
                                let _ = stream
                                    .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                                    .await;
                                return;
                            }
                        }
                    }
                    let Ok(n @ 1..) = stream.read(&mut chunk).await else {
                        return;
                    };
                    buf.extend_from_slice(&chunk[..n]);
                }
            });
            while connections.try_join_next().is_some() {}
        }
    });
    RecordingUpstream { addr, seen, task }
}

enum Parsed {
    Request(Seen, usize),
    Partial,
    Invalid,
}

/// One request off the front of `buf`, strictly (CRLF lines only, one framing).
fn parse_one(buf: &[u8]) -> Parsed {
    let mut fields = [httparse::EMPTY_HEADER; 128];
    let mut req = httparse::Request::new(&mut fields);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Invalid,
    };
    let fields: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).to_string(),
            )
        })
        .collect();
    let value = |name: &str| {
        fields
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .collect::<Vec<_>>()
    };
    let (te, cl) = (value("transfer-encoding"), value("content-length"));
    let mut seen = Seen {
        method: req.method.unwrap_or_default().to_string(),
        target: req.path.unwrap_or_default().to_string(),
        fields: fields.clone(),
        body: Vec::new(),
    };
    let rest = &buf[head_len..];
    if !te.is_empty() {
        if te != ["chunked"] || !cl.is_empty() {
            return Parsed::Invalid;
        }
        let mut at = 0;
        loop {
            let Some(lf) = rest[at..].windows(2).position(|w| w == b"\r\n") else {
                return Parsed::Partial;
            };
            let Ok(size) =
                usize::from_str_radix(std::str::from_utf8(&rest[at..at + lf]).unwrap_or("x"), 16)
            else {
                return Parsed::Invalid;
            };
            at += lf + 2;
            if size == 0 {
                if rest.len() < at + 2 {
                    return Parsed::Partial;
                }
                if &rest[at..at + 2] != b"\r\n" {
                    return Parsed::Invalid;
                }
                return Parsed::Request(seen, head_len + at + 2);
            }
            if rest.len() < at + size + 2 {
                return Parsed::Partial;
            }
            seen.body.extend_from_slice(&rest[at..at + size]);
            if &rest[at + size..at + size + 2] != b"\r\n" {
                return Parsed::Invalid;
            }
            at += size + 2;
        }
    }
    let len = match cl.as_slice() {
        [] => 0,
        [one] => match one.parse::<usize>() {
            Ok(n) if one.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => return Parsed::Invalid,
        },
        _ => return Parsed::Invalid,
    };
    if rest.len() < len {
        return Parsed::Partial;
    }
    seen.body.extend_from_slice(&rest[..len]);
    Parsed::Request(seen, head_len + len)
}

/// Reads one response (head, and a body by Content-Length or chunked, or none) from a raw
/// client connection; returns the head as text and the body bytes as sent (chunk framing
/// included).
pub fn read_response(conn: &mut TcpStream) -> (String, Vec<u8>) {
    use std::io::Read;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        conn.read_exact(&mut byte).expect("a response head");
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).to_string();
    let lower = text.to_ascii_lowercase();
    let mut body = Vec::new();
    if let Some(len) = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        if !lower.starts_with("http/1.1 304") && !lower.starts_with("http/1.1 204") {
            body.resize(len, 0);
            conn.read_exact(&mut body).expect("the body");
        }
    } else if lower.contains("transfer-encoding: chunked") {
        while !body.ends_with(b"0\r\n\r\n") {
            conn.read_exact(&mut byte).expect("a chunked body");
            body.push(byte[0]);
        }
    }
    (text, body)
}

/// An HTTP/2 client over `io` (plain TCP with prior knowledge, or TLS with ALPN `h2`).
pub struct H2Client {
    sender: hyper::client::conn::http2::SendRequest<http_body_util::Empty<Bytes>>,
}

/// What an HTTP/2 GET got: the head, and the body as the upstream's echo JSON.
pub struct H2Answer {
    pub status: u16,
    pub version: hyper::Version,
    pub headers: hyper::HeaderMap,
    pub echo: serde_json::Value,
}

impl H2Client {
    pub async fn handshake<I>(io: I) -> H2Client
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
                .await
                .expect("HTTP/2 handshake");
        tokio::spawn(conn);
        H2Client { sender }
    }

    /// Sends an extended CONNECT (RFC 8441) for `protocol` to `url`: the response, and the
    /// stream as a byte tunnel when it is a 2xx.
    pub async fn connect(
        &mut self,
        url: &str,
        protocol: &'static str,
    ) -> (
        hyper::Response<hyper::body::Incoming>,
        Option<TokioIo<hyper::upgrade::Upgraded>>,
    ) {
        let mut req = hyper::Request::builder()
            .method(hyper::Method::CONNECT)
            .uri(url)
            .header("sec-websocket-version", "13")
            .body(http_body_util::Empty::new())
            .unwrap();
        req.extensions_mut()
            .insert(hyper::ext::Protocol::from_static(protocol));
        let mut res = self.sender.send_request(req).await.expect("HTTP/2 answer");
        let tunnel = if res.status().is_success() {
            Some(TokioIo::new(
                hyper::upgrade::on(&mut res).await.expect("a tunnel"),
            ))
        } else {
            None
        };
        (res, tunnel)
    }

    /// Sends a classic CONNECT (a forward-proxy tunnel to `authority`); returns the status.
    pub async fn connect_plain(&mut self, authority: &str) -> u16 {
        let req = hyper::Request::builder()
            .method(hyper::Method::CONNECT)
            .uri(authority)
            .body(http_body_util::Empty::new())
            .unwrap();
        let res = self.sender.send_request(req).await.expect("HTTP/2 answer");
        res.status().as_u16()
    }

    /// GETs `url` (an `/echo` of the synthetic upstream) and reads the whole answer.
    pub async fn get_echo(&mut self, url: &str) -> H2Answer {
        self.get_echo_with(url, &[]).await
    }

    /// `get_echo` with extra request fields.
    pub async fn get_echo_with(&mut self, url: &str, fields: &[(&str, &str)]) -> H2Answer {
        let mut req = hyper::Request::get(url);
        for (name, value) in fields {
            req = req.header(*name, *value);
        }
        let req = req.body(http_body_util::Empty::new()).unwrap();
        let res = self.sender.send_request(req).await.expect("HTTP/2 answer");
        let (status, version, headers) =
            (res.status().as_u16(), res.version(), res.headers().clone());
        let body = res.into_body().collect().await.unwrap().to_bytes();
        H2Answer {
            status,
            version,
            headers,
            echo: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        }
    }
}

// ===== the proxy binary =====

pub struct ProxyBuilder {
    algorithm: String,
    endpoints: Vec<(SocketAddr, u32)>,
    extra_proxy_toml: String,
    https: bool,
    upstreams_toml: Option<String>,
    kubernetes: bool,
}

/// A running `proxy` process with its ports and files.
/// A directory the test wrote, removed when dropped unless [`Scratch::keep`] hands it on.
pub struct Scratch(Option<PathBuf>);

impl Scratch {
    pub fn keep(mut self) -> PathBuf {
        self.0.take().expect("kept once")
    }
}

impl std::ops::Deref for Scratch {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        self.0.as_deref().expect("not kept")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(dir) = &self.0 {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

pub struct ProxyProcess {
    pub http: SocketAddr,
    pub https: Option<SocketAddr>,
    pub admin: SocketAddr,
    pub dir: PathBuf,
    pub child: Child,
}

pub fn proxy() -> ProxyBuilder {
    ProxyBuilder {
        algorithm: "round-robin".into(),
        endpoints: Vec::new(),
        extra_proxy_toml: String::new(),
        https: false,
        upstreams_toml: None,
        kubernetes: false,
    }
}

static NEXT_DIR: AtomicU64 = AtomicU64::new(0);

impl ProxyBuilder {
    pub fn algorithm(mut self, a: &str) -> Self {
        self.algorithm = a.into();
        self
    }

    pub fn upstream(mut self, u: &Upstream) -> Self {
        self.endpoints.push((u.addr, 1));
        self
    }

    pub fn endpoint(mut self, addr: SocketAddr, weight: u32) -> Self {
        self.endpoints.push((addr, weight));
        self
    }

    /// Extra TOML appended to proxy.toml (sections like `[timeouts]`).
    pub fn proxy_toml(mut self, text: &str) -> Self {
        self.extra_proxy_toml.push_str(text);
        self.extra_proxy_toml.push('\n');
        self
    }

    pub fn upstreams_toml(mut self, text: &str) -> Self {
        self.upstreams_toml = Some(text.into());
        self
    }

    pub fn https(mut self) -> Self {
        self.https = true;
        self
    }

    /// Lays upstreams.toml out as a mounted Kubernetes ConfigMap: a symlink through `..data`,
    /// itself a symlink to a versioned directory (see [`ProxyProcess::swap_configmap`]).
    pub fn kubernetes_layout(mut self) -> Self {
        self.kubernetes = true;
        self
    }

    /// Writes the files and returns the directory (removed when dropped) and proxy.toml
    /// path, without starting.
    pub fn write(&self) -> (Scratch, PathBuf, SocketAddr, Option<SocketAddr>, SocketAddr) {
        let dir = std::env::temp_dir().join(format!(
            "mc-proxy-{}-{}",
            std::process::id(),
            NEXT_DIR.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let http: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let admin: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let https: Option<SocketAddr> = self.https.then(|| ([127, 0, 0, 1], free_port()).into());
        let mut listen = format!("[listen]\nhttp = \"{http}\"\nadmin = \"{admin}\"\n");
        if let Some(h) = https {
            listen.push_str(&format!("https = \"{h}\"\n"));
        }
        let proxy_toml = format!(
            "upstreams_file = \"upstreams.toml\"\n{listen}\n[tls]\nself_signed = true\n{}",
            self.extra_proxy_toml
        );
        let upstreams = self.upstreams_toml.clone().unwrap_or_else(|| {
            let eps: Vec<String> = self
                .endpoints
                .iter()
                .map(|(a, w)| format!("  {{ addr = \"{a}\", weight = {w} }},"))
                .collect();
            format!(
                "[pool.main]\nalgorithm = \"{}\"\nendpoints = [\n{}\n]\n",
                self.algorithm,
                eps.join("\n")
            )
        });
        std::fs::write(dir.join("proxy.toml"), proxy_toml).unwrap();
        if self.kubernetes {
            std::fs::create_dir(dir.join("..v0")).unwrap();
            std::fs::write(dir.join("..v0/upstreams.toml"), upstreams).unwrap();
            std::os::unix::fs::symlink("..v0", dir.join("..data")).unwrap();
            std::os::unix::fs::symlink("..data/upstreams.toml", dir.join("upstreams.toml"))
                .unwrap();
        } else {
            std::fs::write(dir.join("upstreams.toml"), upstreams).unwrap();
        }
        let path = dir.join("proxy.toml");
        (Scratch(Some(dir)), path, http, https, admin)
    }

    pub async fn start(self) -> ProxyProcess {
        let (dir, path, http, https, admin) = self.write();
        let child = Command::new(env!("CARGO_BIN_EXE_proxy"))
            .arg("--config")
            .arg(&path)
            .arg("--pid-file")
            .arg(dir.join("proxy.pid"))
            .env("RUST_LOG", "warn")
            .env("PROXY_ADMIN_TOKEN", ADMIN_TOKEN)
            .stdin(Stdio::null())
            .spawn()
            .expect("start proxy");
        let mut p = ProxyProcess {
            http,
            https,
            admin,
            // The process removes it when dropped.
            dir: dir.keep(),
            child,
        };
        let ports: Vec<SocketAddr> = [Some(http), https, Some(admin)]
            .into_iter()
            .flatten()
            .collect();
        let end = Instant::now() + Duration::from_secs(20);
        while !ports.iter().all(|a| TcpStream::connect(a).is_ok()) {
            // A proxy that exits (its error is on stderr above) will never listen.
            if let Some(status) = p.child.try_wait().expect("proxy status") {
                panic!("the proxy exited before listening on {ports:?}: {status}");
            }
            assert!(
                Instant::now() < end,
                "timed out after 20 s waiting for the proxy to listen on {ports:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        p
    }
}

impl ProxyProcess {
    /// `proxy.pid` in the proxy's directory (the proxy runs with `--pid-file` there).
    pub fn pid_file(&self) -> PathBuf {
        self.dir.join("proxy.pid")
    }

    /// The pid the serving process wrote, once it serves.
    pub fn pid_from_file(&self) -> Option<i32> {
        std::fs::read_to_string(self.pid_file())
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    /// `POST` to an admin route with the admin token.
    pub async fn admin_post(&self, path: &str) -> reqwest::Response {
        http_client()
            .post(self.admin_url(path))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("admin POST")
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    pub fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.child.id() as i32)
    }

    /// Peak resident memory of the proxy process, in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM")
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        // A process that took over after a binary upgrade is not our child: its pid file says.
        if let Some(pid) = self
            .pid_from_file()
            .filter(|p| *p != self.child.id() as i32)
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A client without connection pooling quirks: keep-alive, no proxy, no redirects.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

pub async fn get_text(client: &reqwest::Client, url: &str) -> (u16, String) {
    match client.get(url).send().await {
        Ok(res) => {
            let status = res.status().as_u16();
            (status, res.text().await.unwrap_or_default())
        }
        Err(e) => (0, e.to_string()),
    }
}

/// `clients` concurrent loops, `per_client` GETs each (bounded); returns status and body of
/// each.
pub async fn load(url: String, clients: usize, per_client: usize) -> Vec<(u16, String)> {
    let client = http_client();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (client, url) = (client.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::with_capacity(per_client);
            for _ in 0..per_client {
                out.push(get_text(&client, &url).await);
            }
            out
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

/// Load running in the background until stopped: `clients` loops of GETs, each bounded to
/// `max_per_client` requests and `max_time`, so it always ends by itself.
pub struct BackgroundLoad {
    stop: Arc<std::sync::atomic::AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Vec<(u16, String)>>>,
    /// The slowest request so far, in microseconds.
    max_latency_us: Arc<AtomicU64>,
}

impl BackgroundLoad {
    pub fn start(url: String, clients: usize, max_per_client: usize, max_time: Duration) -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let max_latency_us = Arc::new(AtomicU64::new(0));
        let client = http_client();
        let tasks = (0..clients)
            .map(|_| {
                let (client, url, stop) = (client.clone(), url.clone(), stop.clone());
                let max_latency_us = max_latency_us.clone();
                tokio::spawn(async move {
                    let end = Instant::now() + max_time;
                    let mut out = Vec::new();
                    while !stop.load(Ordering::SeqCst)
                        && out.len() < max_per_client
                        && Instant::now() < end
                    {
                        let sent = Instant::now();
                        out.push(get_text(&client, &url).await);
                        let us = sent.elapsed().as_micros() as u64;
                        max_latency_us.fetch_max(us, Ordering::SeqCst);
                    }
                    out
                })
            })
            .collect();
        BackgroundLoad {
            stop,
            tasks,
            max_latency_us,
        }
    }

    /// The slowest request so far.
    pub fn max_latency(&self) -> Duration {
        Duration::from_micros(self.max_latency_us.load(Ordering::SeqCst))
    }

    /// Stops the loops and returns every result.
    pub async fn finish(self) -> Vec<(u16, String)> {
        self.stop.store(true, Ordering::SeqCst);
        let mut all = Vec::new();
        for t in self.tasks {
            all.extend(t.await.unwrap());
        }
        all
    }
}

impl ProxyProcess {
    pub fn upstreams_path(&self) -> PathBuf {
        self.dir.join("upstreams.toml")
    }

    /// Replaces upstreams.toml the way most editors save: write a new file, rename it over.
    pub fn replace_upstreams(&self, text: &str) {
        let tmp = self.dir.join(".upstreams.toml.swp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.upstreams_path()).unwrap();
    }

    /// Updates upstreams.toml the way the kubelet updates a mounted ConfigMap (the proxy was
    /// started with [`ProxyBuilder::kubernetes_layout`]): the new file goes into a fresh
    /// directory, and a new `..data` symlink to it is renamed over the old one.
    pub fn swap_configmap(&self, version: u32, text: &str) {
        let data = format!("..v{version}");
        std::fs::create_dir(self.dir.join(&data)).unwrap();
        std::fs::write(self.dir.join(&data).join("upstreams.toml"), text).unwrap();
        std::os::unix::fs::symlink(&data, self.dir.join("..data_tmp")).unwrap();
        std::fs::rename(self.dir.join("..data_tmp"), self.dir.join("..data")).unwrap();
    }

    /// Rewrites upstreams.toml in place (truncate and write).
    pub fn rewrite_upstreams(&self, text: &str) {
        std::fs::write(self.upstreams_path(), text).unwrap();
    }

    pub async fn admin_json(&self, path: &str) -> serde_json::Value {
        http_client()
            .get(self.admin_url(path))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn metrics(&self) -> String {
        http_client()
            .get(self.admin_url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The endpoint addresses of the first pool, as `/admin/upstreams` shows them.
    pub async fn endpoints(&self) -> Vec<String> {
        let view = self.admin_json("/admin/upstreams").await;
        view["pools"][0]["endpoints"]
            .as_array()
            .map(|eps| {
                eps.iter()
                    .map(|e| e["address"].as_str().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// An upstreams.toml with one pool of `addrs`.
pub fn pool_toml(algorithm: &str, addrs: &[SocketAddr]) -> String {
    let eps: Vec<String> = addrs
        .iter()
        .map(|a| format!("{{ addr = \"{a}\" }}"))
        .collect();
    format!(
        "[pool.main]\nalgorithm = \"{algorithm}\"\nendpoints = [{}]\n",
        eps.join(", ")
    )
}

/// An upstreams.toml with one pool of `addrs` and fast health checking, for failure tests.
pub fn resilient_pool_toml(algorithm: &str, addrs: &[SocketAddr]) -> String {
    format!(
        "{}
[pool.main.health]
interval = \"200ms\"
timeout = \"150ms\"
healthy_threshold = 2
unhealthy_threshold = 2

[pool.main.ejection]
consecutive_failures = 3
base_time = \"500ms\"
max_time = \"5s\"
max_ejected_percent = 50

[pool.main.retry]
attempts = 2
budget_percent = 20
",
        pool_toml(algorithm, addrs)
    )
}

impl ProxyProcess {
    /// The `/admin/upstreams` entry of endpoint `addr` in the first pool.
    pub async fn endpoint_view(&self, addr: SocketAddr) -> serde_json::Value {
        let view = self.admin_json("/admin/upstreams").await;
        view["pools"][0]["endpoints"]
            .as_array()
            .and_then(|eps| {
                eps.iter()
                    .find(|e| e["address"] == addr.to_string())
                    .cloned()
            })
            .unwrap_or(serde_json::Value::Null)
    }
}

/// A TLS connection to `addr` offering `alpn`, trusting only the certificate in `trusted`
/// (a PEM file: the proxy's development certificate).
pub async fn tls_connect(
    addr: SocketAddr,
    trusted: &std::path::Path,
    alpn: &[&[u8]],
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};

    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(trusted).expect("a PEM file") {
        roots
            .add(cert.expect("a certificate"))
            .expect("a usable root");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    connector
        .connect(ServerName::try_from("localhost").expect("a name"), tcp)
        .await
}

/// The lines of a text file, empty if it does not exist yet.
pub fn file_lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// The sum of the series in a Prometheus text exposition whose line starts with `series`
/// (a name, or a name and the start of its labels).
pub fn metric_sum(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(series))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
