//! The request path: one function per phase, in the order a request meets them.
//!
//! 1. [`Proxy::handle`]: snapshot the topology (one `ArcSwap` load), time the request.
//! 2. `request_filter`: limits the proxy can check from the head alone (body size).
//! 3. `route`: host and path → pool (404 when nothing matches).
//! 4. `upstream_request`: pick an endpoint (503 with `Retry-After` when none), rewrite the
//!    head for it (headers, absolute URI, HTTP/1.1).
//! 5. `send`: forward over the pooled keep-alive client under the per-try timeout; the
//!    endpoint's [`InFlight`] handle records the outcome (RTT, or a penalty on failure).
//! 6. `response_filter`: rewrite the response head and stream the body back, the in-flight
//!    handle riding along until the body ends; or, when the upstream accepted an HTTP/1.1
//!    `Upgrade` (WebSocket), `tunnel`: a 101 to the client and the bytes copied both ways.
//!
//! No lock is held across an `.await`, and nothing here blocks.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use ipnet::IpNet;
use tokio::time::Instant;

use crate::balance::health::Outcome;
use crate::balance::{InFlight, FAILURE_PENALTY};
use crate::body::{caused_by_body_limit, RequestBody, ResponseBody};
use crate::config::{Limits, ProxyConfig, Timeouts};
use crate::headers::{self, X_REQUEST_ID};
use crate::metrics::{LocalError, Metrics};
use crate::topology::{Pool, Topology};
use crate::upstream::{self, Connections, RequestHead, UpstreamBody};
/// Seconds a client is told to wait when no endpoint is available.
pub const NO_ENDPOINT_RETRY_AFTER: &str = "1";
/// Upper bound on the penalty taken from an upstream's own `Retry-After`.
pub const MAX_RETRY_AFTER_PENALTY: Duration = Duration::from_secs(10);

/// A worker thread's upstream connections: connect timeout from `timeouts.connect`, idle
/// connections kept for `timeouts.idle`.
pub fn upstream_connections(timeouts: &Timeouts) -> Arc<Connections> {
    Connections::new(timeouts.connect, timeouts.idle)
}

/// The forwarding proxy's shared state: one per process, used by every worker thread.
pub struct Proxy {
    /// The routing table; swapped whole by a reload.
    pub topology: ArcSwap<Topology>,
    limits: Limits,
    timeouts: Timeouts,
    trusted: Vec<IpNet>,
    pub metrics: Metrics,
}

impl Proxy {
    pub fn new(config: &ProxyConfig, topology: Topology, metrics: Metrics) -> Proxy {
        Proxy {
            topology: ArcSwap::from_pointee(topology),
            limits: config.limits,
            timeouts: config.timeouts,
            trusted: config.forwarding.trusted_proxies.clone(),
            metrics,
        }
    }

    /// Whether a peer's forwarding headers are to be trusted (decided once per connection).
    pub fn trusts(&self, ip: std::net::IpAddr) -> bool {
        headers::is_trusted(ip, &self.trusted)
    }

    pub fn timeouts(&self) -> &Timeouts {
        &self.timeouts
    }

    /// Handles one client request, whatever happens: every failure becomes a response.
    pub async fn handle(
        &self,
        upstream: &Arc<Connections>,
        req: Request<Incoming>,
        client: &headers::Peer,
    ) -> Response<ResponseBody> {
        let started = Instant::now();
        let topology = self.topology.load_full();
        let version = via_version(req.version());
        let mut rng = fastrand::Rng::new();
        let mut req = req;
        let upgrade = Upgrade::requested(&mut req);

        if let Err(e) = self.request_filter(&req) {
            return self.local(e, version);
        }
        let pool = match route(&topology, &req) {
            Some(pool) => pool.clone(),
            None => return self.local(LocalError::NoRoute, version),
        };
        let res = match self
            .forward(upstream, &pool, req, client, &mut rng, started)
            .await
        {
            Ok((res, in_flight)) => match upgrade {
                Some(up) if res.status() == StatusCode::SWITCHING_PROTOCOLS => {
                    tunnel(res, in_flight, up, version)
                }
                _ => response_filter(res, in_flight, version),
            },
            Err(e) => self.local(e, version),
        };
        pool.duration.observe(started.elapsed().as_secs_f64());
        res
    }

    /// Limits checked on the request head.
    fn request_filter(&self, req: &Request<Incoming>) -> Result<(), LocalError> {
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.limits.max_body_bytes) {
            return Err(LocalError::BodyTooLarge);
        }
        Ok(())
    }

    /// Rewrites the head once, then tries endpoints: the first pick, and, for a replayable
    /// request that failed before any response byte, a different endpoint per retry, within
    /// the pool's attempts, the retry budget and the request deadline.
    async fn forward(
        &self,
        upstream: &Arc<Connections>,
        pool: &Arc<Pool>,
        req: Request<Incoming>,
        client: &headers::Peer,
        rng: &mut fastrand::Rng,
        started: Instant,
    ) -> Result<(Response<UpstreamBody>, InFlight), LocalError> {
        let (mut head, body) = req.into_parts();
        let upgrade = upgrade_protocol(head.version, &head.headers);
        // The authority the client asked for: the URI's (HTTP/2, absolute-form) or `Host`.
        let host = match head.uri.authority() {
            Some(a) => HeaderValue::from_str(a.as_str()).ok(),
            None => head.headers.get(header::HOST).cloned(),
        };
        if head.version == Version::HTTP_2 && !head.headers.contains_key(header::HOST) {
            // HTTP/1.1 upstreams need Host; HTTP/2 clients send :authority instead.
            if let Some(h) = &host {
                head.headers.insert(header::HOST, h.clone());
            }
        }
        headers::prepare_request(
            &mut head.headers,
            client,
            host.as_ref(),
            via_version(head.version),
            || headers::request_id(rng),
        );
        if let Some(protocol) = upgrade {
            // Hop-by-hop, but this hop is the one asked to switch protocols.
            head.headers.insert(header::UPGRADE, protocol);
            head.headers
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        }
        let target = head
            .uri
            .path_and_query()
            .map_or("/", http::uri::PathAndQuery::as_str);
        let request = RequestHead {
            method: &head.method,
            target,
            headers: &head.headers,
        };
        let attempts = pool.config.retry.attempts.max(1);
        // Only a request whose whole body is known to be empty can be sent again.
        let replayable = attempts > 1 && is_idempotent(&head.method) && body.is_end_stream();
        let mut body = Some(RequestBody::new(body, self.limits.max_body_bytes));
        let deadline = started + self.timeouts.request;
        pool.retry_budget.deposit();
        let mut tried: Vec<usize> = Vec::new();
        let mut last_error = LocalError::NoEndpoint;

        for attempt in 0..attempts {
            let Some(endpoint) = pool.pick(rng, Instant::now(), &tried) else {
                break;
            };
            if attempt > 0 {
                if !pool.retry_budget.withdraw(Instant::now()) {
                    self.metrics.retry_budget_exhausted(pool.name());
                    break;
                }
                self.metrics.retry(pool.name());
                if attempt > 1 {
                    // Envoy's default back-off: full jitter between 25 and 250 ms.
                    tokio::time::sleep(Duration::from_millis(rng.u64(25..=250))).await;
                }
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                last_error = LocalError::UpstreamTimeout;
                break;
            }
            let Some(try_body) = (if replayable {
                Some(RequestBody::empty())
            } else {
                body.take()
            }) else {
                break;
            };
            let limit = self.timeouts.per_try.min(remaining);
            match self
                .send(upstream, pool, endpoint, request, try_body, limit)
                .await
            {
                Ok(answer) => return Ok(answer),
                Err(e) => {
                    last_error = e;
                    let retriable =
                        matches!(e, LocalError::UpstreamError | LocalError::UpstreamTimeout);
                    if !(replayable && retriable) {
                        break;
                    }
                    tried.push(endpoint);
                }
            }
        }
        Err(last_error)
    }

    /// Sends one try and waits for the response head, bounded by `limit`; records the outcome
    /// on the endpoint (RTT or penalty, and success or failure for ejection).
    async fn send(
        &self,
        upstream: &Arc<Connections>,
        pool: &Arc<Pool>,
        endpoint: usize,
        request: RequestHead<'_>,
        body: RequestBody,
        limit: Duration,
    ) -> Result<(Response<UpstreamBody>, InFlight), LocalError> {
        let addr = pool.endpoints[endpoint].addr;
        let mut in_flight = pool.endpoints[endpoint].start(Instant::now());
        match tokio::time::timeout(limit, upstream.send(addr, request, body)).await {
            Ok(Ok(mut res)) => {
                let status = res.status();
                pool.endpoint_metrics[endpoint].response(status.as_u16());
                let now = Instant::now();
                if status.is_server_error() {
                    in_flight.failed(penalty(&res));
                    let error = format!("answered {status}");
                    pool.record_request(endpoint, Outcome::Failure, Some(&error), now);
                } else {
                    in_flight.responded(now);
                    pool.record_request(endpoint, Outcome::Success, None, now);
                }
                if let Some(id) = request.headers.get(&X_REQUEST_ID) {
                    res.headers_mut()
                        .entry(&X_REQUEST_ID)
                        .or_insert_with(|| id.clone());
                }
                Ok((res, in_flight))
            }
            Ok(Err(upstream::Error::RequestBody(e))) => {
                // The client's fault (a body over the limit, or a client gone), not the
                // endpoint's: nothing is recorded against it.
                if caused_by_body_limit(e.as_ref()) {
                    return Err(LocalError::BodyTooLarge);
                }
                tracing::debug!(error = %e, "client request body failed");
                Err(LocalError::BadRequest)
            }
            Ok(Err(e)) => {
                in_flight.failed(FAILURE_PENALTY);
                let error = error_chain(&e);
                tracing::debug!(endpoint = %pool.endpoints[endpoint].addr, %error, "upstream error");
                pool.record_request(endpoint, Outcome::Failure, Some(&error), Instant::now());
                Err(LocalError::UpstreamError)
            }
            Err(_) => {
                in_flight.failed(FAILURE_PENALTY);
                let error = format!("no response within {limit:?}");
                tracing::debug!(endpoint = %pool.endpoints[endpoint].addr, %error, "upstream timed out");
                pool.record_request(endpoint, Outcome::Failure, Some(&error), Instant::now());
                Err(LocalError::UpstreamTimeout)
            }
        }
    }

    /// A response the proxy writes itself: the right status and a one-line reason.
    fn local(&self, e: LocalError, version: &'static str) -> Response<ResponseBody> {
        self.metrics.local(e);
        let (status, text) = match e {
            LocalError::NoRoute => (StatusCode::NOT_FOUND, "no route for this host and path\n"),
            LocalError::NoEndpoint => (
                StatusCode::SERVICE_UNAVAILABLE,
                "no upstream available; retry shortly\n",
            ),
            LocalError::UpstreamError => (StatusCode::BAD_GATEWAY, "upstream connection failed\n"),
            LocalError::UpstreamTimeout => (
                StatusCode::GATEWAY_TIMEOUT,
                "upstream did not answer in time\n",
            ),
            LocalError::BodyTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body is larger than this proxy accepts\n",
            ),
            LocalError::BadRequest => (StatusCode::BAD_REQUEST, "request cannot be forwarded\n"),
        };
        let mut res = Response::new(ResponseBody::local(text));
        *res.status_mut() = status;
        let h = res.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if e == LocalError::NoEndpoint {
            h.insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(NO_ENDPOINT_RETRY_AFTER),
            );
        }
        headers::prepare_response(h, version);
        if e == LocalError::BodyTooLarge {
            // The rest of the body is not read: the connection cannot be reused.
            h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        res
    }
}

/// Methods whose repetition has the same effect as one request (RFC 9110 §9.2.2).
fn is_idempotent(m: &http::Method) -> bool {
    matches!(
        *m,
        http::Method::GET
            | http::Method::HEAD
            | http::Method::OPTIONS
            | http::Method::PUT
            | http::Method::DELETE
            | http::Method::TRACE
    )
}

/// Host and path → pool.
fn route<'t>(topology: &'t Topology, req: &Request<Incoming>) -> Option<&'t Arc<Pool>> {
    let host = authority_of(req.uri(), req.headers()).map(strip_port);
    topology.route(host, req.uri().path())
}

/// The response head for the client; the body streams with its in-flight handle.
fn response_filter(
    res: Response<UpstreamBody>,
    in_flight: InFlight,
    version: &'static str,
) -> Response<ResponseBody> {
    let (mut parts, body) = res.into_parts();
    headers::prepare_response(&mut parts.headers, version);
    Response::from_parts(parts, ResponseBody::upstream(body, in_flight))
}

/// A client's request to switch protocols (`Connection: upgrade` and `Upgrade: …` on
/// HTTP/1.1), and the handle to its connection once it switches.
struct Upgrade {
    protocol: HeaderValue,
    client: hyper::upgrade::OnUpgrade,
}

impl Upgrade {
    fn requested(req: &mut Request<Incoming>) -> Option<Upgrade> {
        let protocol = upgrade_protocol(req.version(), req.headers())?;
        Some(Upgrade {
            protocol,
            client: hyper::upgrade::on(req),
        })
    }
}

/// The protocol an HTTP/1.1 request asks to switch to, if it asks.
fn upgrade_protocol(version: Version, headers: &http::HeaderMap) -> Option<HeaderValue> {
    let asked = version == Version::HTTP_11
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    asked
        .then(|| headers.get(header::UPGRADE).cloned())
        .flatten()
}

/// The upstream switched protocols: answer the client's 101 the same way, then copy bytes
/// both ways until either side closes. The tunnel counts as in flight on its endpoint for as
/// long as it is open (its RTT sample was the handshake's).
fn tunnel(
    res: Response<UpstreamBody>,
    in_flight: InFlight,
    upgrade: Upgrade,
    version: &'static str,
) -> Response<ResponseBody> {
    let (mut parts, body) = res.into_parts();
    let protocol = parts.headers.get(header::UPGRADE).cloned();
    headers::prepare_response(&mut parts.headers, version);
    parts
        .headers
        .insert(header::UPGRADE, protocol.unwrap_or(upgrade.protocol));
    parts
        .headers
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    let Some((mut upstream, early)) = body.into_upgraded() else {
        return Response::from_parts(parts, ResponseBody::local(bytes::Bytes::new()));
    };
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let _in_flight = in_flight;
        let mut client = match upgrade.client.await {
            Ok(client) => TokioIo::new(client),
            Err(e) => return tracing::debug!(error = %e, "protocol switch failed"),
        };
        // Bytes the upstream sent right after its 101 belong to the new protocol.
        if let Err(e) = client.write_all(&early).await {
            return tracing::debug!(error = %e, "upgraded connection ended with an error");
        }
        if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
            tracing::debug!(error = %e, "upgraded connection ended with an error");
        }
    });
    Response::from_parts(parts, ResponseBody::local(bytes::Bytes::new()))
}

/// An error and its causes on one line: "client error (Connect): tcp connect error: Connection
/// refused (os error 111)".
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The RTT to record for a 5xx: the upstream's `Retry-After` (seconds) if it gave one, else
/// the fixed penalty.
fn penalty<B>(res: &Response<B>) -> Duration {
    res.headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(FAILURE_PENALTY, |s| {
            Duration::from_secs(s).clamp(FAILURE_PENALTY, MAX_RETRY_AFTER_PENALTY)
        })
}

/// The authority the client asked for: the URI's (HTTP/2, absolute-form) or `Host`.
fn authority_of<'a>(uri: &'a Uri, headers: &'a http::HeaderMap) -> Option<&'a str> {
    uri.authority()
        .map(|a| a.as_str())
        .or_else(|| headers.get(header::HOST).and_then(|h| h.to_str().ok()))
}

/// `example.com:8080` → `example.com`; `[::1]:80` → `[::1]`.
fn strip_port(authority: &str) -> &str {
    match authority.rfind(':') {
        Some(i) if !authority[i..].contains(']') => &authority[..i],
        _ => authority,
    }
}

/// The protocol version as `Via` writes it.
fn via_version(v: Version) -> &'static str {
    match v {
        Version::HTTP_2 => "2",
        Version::HTTP_10 => "1.0",
        Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_stripped_from_hosts() {
        assert_eq!(strip_port("example.com:8080"), "example.com");
        assert_eq!(strip_port("example.com"), "example.com");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
    }

    #[test]
    fn a_retry_after_sets_the_penalty_within_bounds() {
        let with = |v: &str| {
            let mut r = Response::new(());
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_str(v).unwrap());
            penalty(&r)
        };
        assert_eq!(penalty(&Response::new(())), FAILURE_PENALTY);
        assert_eq!(with("3"), Duration::from_secs(3));
        assert_eq!(with("3600"), MAX_RETRY_AFTER_PENALTY);
        assert_eq!(with("Wed, 21 Oct 2015 07:28:00 GMT"), FAILURE_PENALTY);
    }
}
