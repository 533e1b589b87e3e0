//! HTTP/2 clients (ALPN `h2` on the TLS listener, or the prior-knowledge preface on the plain
//! one): hyper's server, each request handed to [`Proxy::forward`] like an HTTP/1 one, the
//! response head built into a `HeaderMap` by the same header rules.

use std::convert::Infallible;
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Method, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::watch;

use crate::body::{RequestBody, ResponseBody};
use crate::config::ProxyConfig;
use crate::forward::{Proxy, Request, Respond};
use crate::headers::{self, MapSink, Peer, ResponseRules};
use crate::metrics::LocalError;
use crate::upstream::Connections;
use crate::wire::response::{Framing, ResponseHead};
use crate::wire::{self, write};

pub type Builder = hyper::server::conn::http2::Builder<TokioExecutor>;

/// HTTP/2 with the limits of `[limits]` and `[timeouts]`.
pub fn builder(config: &ProxyConfig) -> Builder {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(config.limits.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(Some(config.timeouts.idle / 2))
        .keep_alive_timeout(config.timeouts.header_read);
    builder
}

/// Serves HTTP/2 on `io` until the client closes it, or, once `stop` turns, until the
/// requests in progress are done (hyper's graceful shutdown: GOAWAY, then drain).
pub async fn serve<I>(
    io: I,
    client: Peer,
    proxy: Arc<Proxy>,
    upstream: Arc<Connections>,
    builder: &Builder,
    mut stop: watch::Receiver<bool>,
) -> Result<(), hyper::Error>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let client = Arc::new(client);
    let service = service_fn(move |req: hyper::Request<Incoming>| {
        let (proxy, upstream, client) = (proxy.clone(), upstream.clone(), client.clone());
        async move { Ok::<_, Infallible>(handle(&proxy, &upstream, &client, req).await) }
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

/// One HTTP/2 request, whatever happens: every failure becomes a response.
async fn handle(
    proxy: &Proxy,
    upstream: &Arc<Connections>,
    client: &Peer,
    req: hyper::Request<Incoming>,
) -> Response<ResponseBody> {
    let (mut parts, incoming) = req.into_parts();
    if parts.method == Method::CONNECT {
        return answer_locally(proxy, LocalError::MethodNotAllowed);
    }
    // The authority asked for; HTTP/1.1 upstreams need it as Host.
    let host = match parts.uri.authority() {
        Some(a) => HeaderValue::from_str(a.as_str()).ok(),
        None => parts.headers.get(header::HOST).cloned(),
    };
    if !parts.headers.contains_key(header::HOST) {
        if let Some(h) = &host {
            parts.headers.insert(header::HOST, h.clone());
        }
    }
    let Ok(content_length) = wire::content_length(&parts.headers) else {
        return answer_locally(proxy, LocalError::BadRequest);
    };
    let request = Request {
        method: &parts.method,
        target: parts.uri.path_and_query().map_or("/", |p| p.as_str()),
        path: parts.uri.path(),
        host: host.as_ref().map(HeaderValue::as_bytes),
        version: Version::HTTP_2,
        fields: &parts.headers,
        content_length,
        upgrade: None,
        answered_expect: false,
    };
    let mut body = RequestBody::http2(incoming, proxy.limits().max_body_bytes);
    let mut respond = Http2Respond::default();
    let mut scratch = Vec::with_capacity(1024);
    match proxy
        .forward(
            upstream,
            &request,
            &mut body,
            client,
            &mut scratch,
            &mut respond,
        )
        .await
    {
        // A protocol switch cannot be passed on over HTTP/2 (none is asked for).
        Ok(answer) if answer.status == StatusCode::SWITCHING_PROTOCOLS => {
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
            keep_length: !matches!(head.framing, Framing::Chunked | Framing::UntilClose),
            switching: false,
        };
        headers::forward_response(head.fields, &rules, &mut self.headers);
    }
}

fn answer_locally(proxy: &Proxy, e: LocalError) -> Response<ResponseBody> {
    proxy.answered_locally(e);
    local_response(e)
}

/// The proxy's own answer (already counted): status and a one-line body.
fn local_response(e: LocalError) -> Response<ResponseBody> {
    let mut res = Response::new(ResponseBody::local(e.text()));
    *res.status_mut() = e.status();
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
