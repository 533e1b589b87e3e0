//! HTTP/2 clients (ALPN `h2` on the TLS listener, or the prior-knowledge preface on the plain
//! one): hyper's server, each request handed to [`Proxy::forward`] like an HTTP/1 one, the
//! response head built into a `HeaderMap` by the same header rules.
//!
//! WebSocket over HTTP/2 (RFC 8441's extended CONNECT, `:protocol = websocket`) goes to the
//! HTTP/1.1 upstream as the HTTP/1.1 handshake (a GET with `Upgrade`, and the
//! `Sec-WebSocket-Key` HTTP/2 does without), as Envoy does; the upstream's 101 becomes the
//! client's 200 and the stream a tunnel to the upstream connection.

use std::convert::Infallible;
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Method, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper::ext::Protocol;
use hyper::service::service_fn;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use crate::access_log::{self, Deferred, Trace};
use crate::body::{RequestBody, ResponseBody};
use crate::config::ProxyConfig;
use crate::forward::{Answer, Proxy, Request, Respond};
use crate::headers::{self, MapSink, Peer, ResponseRules};
use crate::metrics::LocalError;
use crate::upstream::Connections;
use crate::wire::response::ResponseHead;
use crate::wire::{self, write};

pub type Builder = hyper::server::conn::http2::Builder<TokioExecutor>;

/// HTTP/2 with the limits of `[limits]` and `[timeouts]`.
pub fn builder(config: &ProxyConfig) -> Builder {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(config.limits.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(Some(config.timeouts.idle / 2))
        .keep_alive_timeout(config.timeouts.header_read)
        .enable_connect_protocol();
    builder
}

/// Serves HTTP/2 on `io` until the client closes it, or, once `stop` turns, until the
/// requests in progress are done (hyper's graceful shutdown: GOAWAY, then drain).
pub async fn serve<I>(
    io: I,
    client: Peer,
    proxy: Arc<Proxy>,
    upstream: Arc<Connections>,
    log: Arc<access_log::Writer>,
    builder: &Builder,
    mut stop: watch::Receiver<bool>,
) -> Result<(), hyper::Error>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let client = Arc::new(client);
    let service = service_fn(move |req: hyper::Request<Incoming>| {
        let (proxy, upstream, client) = (proxy.clone(), upstream.clone(), client.clone());
        let log = log.clone();
        async move { Ok::<_, Infallible>(logged(&proxy, &upstream, &client, &log, req).await) }
    });
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => result,
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    }
}

/// [`handle`], and its access log line once the response body is sent (or given up).
async fn logged(
    proxy: &Proxy,
    upstream: &Arc<Connections>,
    client: &Arc<Peer>,
    log: &Arc<access_log::Writer>,
    req: hyper::Request<Incoming>,
) -> Response<ResponseBody> {
    if !log.enabled() {
        return handle(proxy, upstream, client, req, &mut Trace::new(false)).await;
    }
    let started = tokio::time::Instant::now();
    let method = req.method().clone();
    let target = req
        .uri()
        .path_and_query()
        .map_or_else(|| "/".to_string(), |p| p.as_str().to_string());
    let authority = match req.uri().authority() {
        Some(a) => Some(a.as_str().as_bytes().to_vec()),
        None => req
            .headers()
            .get(header::HOST)
            .map(|h| h.as_bytes().to_vec()),
    };
    let mut trace = Trace::new(true);
    let mut res = handle(proxy, upstream, client, req, &mut trace).await;
    let error = res.extensions().get::<LocalError>().copied();
    let mut line = Box::new(Deferred {
        log: log.clone(),
        client: client.clone(),
        method,
        authority,
        target,
        status: res.status().as_u16(),
        bytes_in: trace.request_bytes,
        bytes_out: http_body::Body::size_hint(res.body()).exact().unwrap_or(0),
        trace,
        error,
        started,
    });
    if let ResponseBody::Upstream { line: slot, .. } = res.body_mut() {
        // Counted and written as the body goes out.
        line.bytes_out = 0;
        *slot = Some(line);
    }
    res
}

/// One HTTP/2 request, whatever happens: every failure becomes a response.
async fn handle(
    proxy: &Proxy,
    upstream: &Arc<Connections>,
    client: &Peer,
    req: hyper::Request<Incoming>,
    trace: &mut Trace,
) -> Response<ResponseBody> {
    let (mut parts, incoming) = req.into_parts();
    // Extended CONNECT: the protocol to switch to, and the stream that becomes the tunnel.
    let mut switch: Option<(Protocol, OnUpgrade)> = None;
    if parts.method == Method::CONNECT {
        let protocol = parts.extensions.remove::<Protocol>();
        let stream = parts.extensions.remove::<OnUpgrade>();
        let (Some(protocol), Some(stream)) = (protocol, stream) else {
            return answer_locally(proxy, LocalError::MethodNotAllowed);
        };
        if proxy.upgrade(protocol.as_str().as_bytes()).is_none() {
            return answer_locally(proxy, LocalError::NotImplemented);
        }
        parts.method = Method::GET;
        if protocol.as_str().eq_ignore_ascii_case("websocket") {
            parts.headers.insert(
                "sec-websocket-key",
                HeaderValue::from_str(&websocket_key(&mut fastrand::Rng::new()))
                    .expect("base64 is a valid header value"),
            );
        }
        switch = Some((protocol, stream));
    }
    // The authority asked for: routed on, and the upstream's Host.
    let authority = parts.uri.authority().map(http::uri::Authority::as_str);
    let https = parts.uri.scheme() == Some(&http::uri::Scheme::HTTPS);
    let Ok(host) = wire::request::check_http2(authority, https, &parts.headers) else {
        return answer_locally(proxy, LocalError::BadRequest);
    };
    let Ok(content_length) = wire::content_length(&parts.headers) else {
        return answer_locally(proxy, LocalError::BadRequest);
    };
    let request = Request {
        method: &parts.method,
        target: parts.uri.path_and_query().map_or("/", |p| p.as_str()),
        path: parts.uri.path(),
        host: Some(host),
        version: Version::HTTP_2,
        fields: &parts.headers,
        content_length,
        upgrade: switch.as_ref().map(|(p, _)| p.as_str().as_bytes()),
    };
    let mut body = RequestBody::http2(
        incoming,
        proxy.limits().max_body_bytes,
        proxy.timeouts().body_read,
    );
    let mut respond = Http2Respond::default();
    let mut scratch = Vec::with_capacity(1024);
    let forwarded = proxy
        .forward(
            upstream,
            &request,
            &mut body,
            client,
            &mut scratch,
            &mut respond,
            trace,
        )
        .await;
    trace.request_bytes = body.received();
    match forwarded {
        Ok(answer) if answer.status == StatusCode::SWITCHING_PROTOCOLS => match switch {
            Some((_, stream)) => {
                tunnel(proxy, answer, respond, stream, proxy.timeouts().tunnel_idle)
            }
            // A protocol switch nobody asked for: a broken upstream.
            None => answer_locally(proxy, LocalError::UpstreamError),
        },
        // Asked to switch, the upstream answered as to a plain GET: a 2xx would tell the
        // client its tunnel is open.
        Ok(answer) if switch.is_some() && answer.status.is_success() => {
            answer_locally(proxy, LocalError::UpstreamError)
        }
        Ok(answer) => {
            let mut res = Response::new(ResponseBody::upstream(answer.body, answer.in_flight));
            *res.status_mut() = answer.status;
            *res.headers_mut() = respond.headers.map;
            res
        }
        Err(e) => local_response(e),
    }
}

/// The upstream switched protocols: the client gets a 200 (the HTTP/2 form of a 101), and
/// once hyper has sent it, bytes are copied between the stream and the upstream connection
/// until either side closes. The tunnel counts as in flight on its endpoint while open.
fn tunnel(
    proxy: &Proxy,
    answer: Answer,
    respond: Http2Respond,
    stream: OnUpgrade,
    idle: std::time::Duration,
) -> Response<ResponseBody> {
    let Answer {
        body, in_flight, ..
    } = answer;
    let Some((mut upstream, early)) = body.into_upgraded() else {
        // A 101 whose connection is not ours to keep: no tunnel to offer.
        return answer_locally(proxy, LocalError::UpstreamError);
    };
    tokio::spawn(async move {
        let Ok(client) = stream.await else { return };
        let mut client = TokioIo::new(client);
        if client.write_all(&early).await.is_err() {
            return;
        }
        if let Err(e) = crate::tunnel::relay(&mut client, &mut upstream, idle).await {
            tracing::debug!(error = %e, "HTTP/2 tunnel ended with an error");
        }
        drop(in_flight);
    });
    let mut headers = respond.headers.map;
    // The HTTP/1.1 proof of the handshake; HTTP/2 has none (RFC 8441 §5).
    headers.remove("sec-websocket-accept");
    let mut res = Response::new(ResponseBody::local(bytes::Bytes::new()));
    *res.headers_mut() = headers;
    res
}

/// A fresh `Sec-WebSocket-Key`: 16 random bytes in base64 (RFC 6455 §4.1).
fn websocket_key(rng: &mut fastrand::Rng) -> String {
    let nonce: [u8; 16] = std::array::from_fn(|_| rng.u8(..));
    base64(&nonce)
}

/// Standard base64 with padding (RFC 4648 §4).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Builds the client's response head from the upstream's.
#[derive(Default)]
struct Http2Respond {
    headers: MapSink,
}

impl Respond for Http2Respond {
    fn head(&mut self, head: &ResponseHead<'_, '_>, request_id: &[u8], _request_sent: bool) {
        let rules = ResponseRules {
            version: "2",
            request_id,
            length: head.length_field(),
            switching: false,
        };
        headers::forward_response(head.fields, &rules, &mut self.headers);
    }
}

fn answer_locally(proxy: &Proxy, e: LocalError) -> Response<ResponseBody> {
    proxy.answered_locally(e);
    local_response(e)
}

/// The proxy's own answer (already counted): status and a one-line body; the reason rides
/// along in the extensions, for the access log.
fn local_response(e: LocalError) -> Response<ResponseBody> {
    let mut res = Response::new(ResponseBody::local(e.text()));
    *res.status_mut() = e.status();
    res.extensions_mut().insert(e);
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Some(seconds) = e.retry_after() {
        h.insert(header::RETRY_AFTER, HeaderValue::from_static(seconds));
    }
    h.insert(header::VIA, HeaderValue::from_static("2 microcourses"));
    if let Ok(date) = HeaderValue::from_bytes(&write::http_date()) {
        h.insert(header::DATE, date);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_rfc_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
            // RFC 6455 §1.3's sample nonce.
            ("the sample nonce", "dGhlIHNhbXBsZSBub25jZQ=="),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain:?}");
        }
    }

    #[test]
    fn websocket_keys_are_fresh_16_byte_nonces() {
        let mut rng = fastrand::Rng::with_seed(7);
        let (a, b) = (websocket_key(&mut rng), websocket_key(&mut rng));
        assert_eq!(a.len(), 24);
        assert!(a.ends_with("=="), "{a}");
        assert_ne!(a, b);
    }
}
