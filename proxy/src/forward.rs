//! The request path, whatever protocol the client spoke, one function per phase:
//!
//! 1. [`Proxy::forward`]: limits the head alone decides (`request_filter`), then `route`
//!    (host and path → pool, from one `ArcSwap` load of the topology).
//! 2. `upstream_head`: the HTTP/1.1 head every try sends, written once: request line, the
//!    client's fields as the [`headers`] rules forward them, the body's framing.
//! 3. `forward`'s tries: pick an endpoint (503 when there is none); a replayable request that
//!    failed before any response byte goes to a different endpoint, within the pool's
//!    attempts, the retry budget and the request deadline.
//! 4. `send`: one try over the worker's upstream connections, under the per-try timeout. The
//!    endpoint's [`InFlight`] handle records the outcome (RTT, or a penalty) and the pool the
//!    success or failure (ejection); the front end's [`Respond`] gets the response head the
//!    moment it arrives, to write it (HTTP/1) or build it (HTTP/2) in place.
//!
//! The front ends (`front::http1`, `front::http2`) own the protocol: reading heads, the
//! proxy's own answers ([`LocalError`]), streaming the body back, switching protocols.
//! Nothing here blocks or holds a lock across an `.await`.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::{Method, StatusCode, Version};
use ipnet::IpNet;
use tokio::time::Instant;

use crate::access_log::{AccessLog, Trace};
use crate::balance::health::Outcome;
use crate::balance::{InFlight, FAILURE_PENALTY};
use crate::body::{caused_by, BodyStalled, BodyTooLarge, RequestBody};
use crate::config::{Limits, ProxyConfig, Timeouts};
use crate::headers::{self, Peer, RequestId, RequestRules};
use crate::metrics::{LocalError, Metrics};
use crate::topology::{Pool, Topology};
use crate::upstream::{self, is_idempotent, Connections, Outgoing, UpstreamBody};
use crate::wire::response::ResponseHead;
use crate::wire::{write, Fields};

/// Upper bound on the penalty taken from an upstream's own `Retry-After`.
pub const MAX_RETRY_AFTER_PENALTY: Duration = Duration::from_secs(10);

/// A worker thread's upstream connections: connect timeout from `timeouts.connect`, idle
/// connections kept for `timeouts.idle`.
pub fn upstream_connections(timeouts: &Timeouts) -> Arc<Connections> {
    Connections::new(timeouts.connect, timeouts.idle)
}

/// A client's request as the forwarding path sees it: HTTP/1 fields where they arrived, or
/// an HTTP/2 `HeaderMap`.
pub struct Request<'a, F: Fields + ?Sized> {
    pub method: &'a Method,
    /// Path and query (or `*`) for the upstream request line.
    pub target: &'a str,
    /// The path, for routing.
    pub path: &'a str,
    /// The authority asked for (`Host`, an absolute-form target's, or `:authority`).
    pub host: Option<&'a [u8]>,
    /// The client's protocol version.
    pub version: Version,
    pub fields: &'a F,
    /// The declared body length, if any.
    pub content_length: Option<u64>,
    /// The protocol an HTTP/1.1 client asked to switch to.
    pub upgrade: Option<&'a [u8]>,
}

/// The front end's side of a response: it gets the upstream's final response head the moment
/// it arrives, with the request's id to echo and whether the whole request body had been
/// sent (if not, the upstream answered early and the client connection cannot be reused).
pub trait Respond: Send {
    fn head(&mut self, head: &ResponseHead<'_, '_>, request_id: &[u8], request_sent: bool);
}

/// A request an upstream answered. The head went to [`Respond`]; the body is still to be
/// streamed, and the request counts as in flight on its endpoint until `in_flight` drops.
pub struct Answer {
    pub status: StatusCode,
    pub body: UpstreamBody,
    pub in_flight: InFlight,
    /// From the try's start (connect included) to its response head.
    pub upstream_ttfb: Duration,
}

/// The forwarding proxy's shared state: one per process, used by every worker thread.
pub struct Proxy {
    /// The routing table; swapped whole by a reload.
    pub topology: ArcSwap<Topology>,
    limits: Limits,
    timeouts: Timeouts,
    trusted: Vec<IpNet>,
    /// `forwarding.upgrades`: the protocols a client may switch to.
    upgrades: Vec<String>,
    pub metrics: Metrics,
    pub access_log: AccessLog,
}

impl Proxy {
    pub fn new(
        config: &ProxyConfig,
        topology: Topology,
        metrics: Metrics,
        access_log: AccessLog,
    ) -> Proxy {
        Proxy {
            access_log,
            topology: ArcSwap::from_pointee(topology),
            limits: config.limits,
            timeouts: config.timeouts,
            trusted: config.forwarding.trusted_proxies.clone(),
            upgrades: config.forwarding.upgrades.clone(),
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

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The protocol of a client's upgrade offer this proxy passes on, if any.
    pub fn upgrade<'b>(&self, offer: &'b [u8]) -> Option<&'b [u8]> {
        crate::wire::request::allowed_upgrade(offer, &self.upgrades)
    }

    /// Counts an answer the proxy gives itself (the front end writes it).
    pub fn answered_locally(&self, e: LocalError) {
        self.metrics.local(e);
    }

    /// Forwards one request: route, pick, send (with retries). The response head goes to
    /// `respond`; the body is the caller's to stream. `scratch` holds the upstream head;
    /// `trace` gets what happened, for the access log.
    #[allow(clippy::too_many_arguments)]
    pub async fn forward<F, R>(
        &self,
        upstream: &Arc<Connections>,
        req: &Request<'_, F>,
        body: &mut RequestBody<'_>,
        client: &Peer,
        scratch: &mut Vec<u8>,
        respond: &mut R,
        trace: &mut Trace,
    ) -> Result<Answer, LocalError>
    where
        F: Fields + ?Sized,
        R: Respond,
    {
        let started = Instant::now();
        let result = self
            .forward_inner(
                upstream, req, body, client, scratch, respond, trace, started,
            )
            .await;
        if let Err(e) = result {
            self.answered_locally(e);
        }
        result
    }

    #[allow(clippy::too_many_arguments)]
    async fn forward_inner<F, R>(
        &self,
        upstream: &Arc<Connections>,
        req: &Request<'_, F>,
        body: &mut RequestBody<'_>,
        client: &Peer,
        scratch: &mut Vec<u8>,
        respond: &mut R,
        trace: &mut Trace,
        started: Instant,
    ) -> Result<Answer, LocalError>
    where
        F: Fields + ?Sized,
        R: Respond,
    {
        self.request_filter(req)?;
        let pool = self.route(req).ok_or(LocalError::NoRoute)?;
        if trace.enabled {
            trace.pool.push_str(pool.name());
        }
        body.buffer(self.limits.buffer_body_bytes, req.content_length)
            .await
            .map_err(|e| body_error(e.as_ref()))?;
        let mut rng = fastrand::Rng::new();
        let length = req.content_length.or(body.buffered_len());
        let (chunked, id) = upstream_head(req, length, body, client, &mut rng, scratch);
        if trace.enabled {
            trace.request_id.extend_from_slice(id.as_bytes());
        }
        let mut outgoing = Outgoing {
            head: scratch,
            method: req.method,
            chunked,
            length: if chunked { None } else { length },
            wait: self.timeouts.per_try,
        };
        let attempts = pool.config.retry.attempts.max(1);
        // A request that may have reached an upstream is sent again only if it is
        // idempotent and its whole body is at hand (RFC 9110 §9.2.2); one that certainly
        // did not (no connection) goes again whatever it is, its body untouched.
        let idempotent = is_idempotent(req.method);
        let deadline = started + self.timeouts.request;
        pool.retry_budget.deposit();
        let mut tried: Vec<usize> = Vec::new();
        let mut last_error = LocalError::NoEndpoint;
        let mut last_reason = "";

        for attempt in 0..attempts {
            let now = Instant::now();
            let Some(endpoint) = pool.pick(&mut rng, now, &tried) else {
                break;
            };
            if attempt > 0 {
                if !pool.retry_budget.withdraw(now) {
                    self.metrics.retry_budget_exhausted(pool.name());
                    break;
                }
                self.metrics.retry(pool.name(), last_reason);
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
            outgoing.wait = self.timeouts.per_try.min(remaining);
            trace.try_started(
                pool.endpoints[endpoint].addr,
                (attempt > 0).then_some(last_reason),
            );
            match self
                .send(upstream, &pool, endpoint, outgoing, body, id, respond)
                .await
            {
                Ok(answer) => {
                    pool.duration.observe(started.elapsed().as_secs_f64());
                    trace.upstream_ttfb = Some(answer.upstream_ttfb);
                    return Ok(answer);
                }
                Err(failed) => {
                    last_error = failed.error;
                    last_reason = failed.reason;
                    let upstream_fault = matches!(
                        failed.error,
                        LocalError::UpstreamError | LocalError::UpstreamTimeout
                    );
                    let again = failed.unsent || (idempotent && body.replayable());
                    if !(upstream_fault && again && body.rewind()) {
                        break;
                    }
                    tried.push(endpoint);
                }
            }
        }
        Err(last_error)
    }

    /// Limits the request head decides: the declared body size.
    fn request_filter<F: Fields + ?Sized>(&self, req: &Request<'_, F>) -> Result<(), LocalError> {
        if req
            .content_length
            .is_some_and(|n| n > self.limits.max_body_bytes)
        {
            return Err(LocalError::BodyTooLarge);
        }
        Ok(())
    }

    /// Host and path → pool. `OPTIONS *` asks about the server as a whole: it routes as `/`.
    fn route<F: Fields + ?Sized>(&self, req: &Request<'_, F>) -> Option<Arc<Pool>> {
        let host = req
            .host
            .and_then(|h| std::str::from_utf8(h).ok())
            .map(strip_port);
        let path = if req.path == "*" { "/" } else { req.path };
        self.topology.load().route(host, path).cloned()
    }

    /// Sends one try and waits for the response head (`outgoing.wait` once the request is
    /// sent); records the outcome on the endpoint (RTT or penalty, and success or failure for
    /// ejection).
    #[allow(clippy::too_many_arguments)]
    async fn send<R: Respond>(
        &self,
        upstream: &Arc<Connections>,
        pool: &Arc<Pool>,
        endpoint: usize,
        outgoing: Outgoing<'_>,
        body: &mut RequestBody<'_>,
        id: RequestId<'_>,
        respond: &mut R,
    ) -> Result<Answer, TryFailed> {
        let addr = pool.endpoints[endpoint].addr;
        let sent = Instant::now();
        let mut in_flight = pool.endpoints[endpoint].start(sent);
        let mut on_head = |head: &ResponseHead<'_, '_>, request_sent: bool| {
            respond.head(head, id.as_bytes(), request_sent);
            (head.status, head.retry_after_secs())
        };
        match upstream.send(addr, outgoing, body, &mut on_head).await {
            Ok(((status, retry_after), body)) => {
                pool.endpoint_metrics[endpoint].response(status.as_u16());
                let now = Instant::now();
                if status.is_server_error() {
                    in_flight.failed(penalty(retry_after));
                    let error = format!("answered {status}");
                    pool.record_request(endpoint, Outcome::Failure, Some(&error), now);
                } else {
                    in_flight.responded(now);
                    pool.record_request(endpoint, Outcome::Success, None, now);
                }
                Ok(Answer {
                    status,
                    body,
                    in_flight,
                    upstream_ttfb: now.saturating_duration_since(sent),
                })
            }
            Err(upstream::Error::RequestBody(e)) => {
                // The client's fault (a body over the limit, a stall, a broken framing, a
                // client gone), not the endpoint's: nothing is recorded against it.
                Err(TryFailed {
                    error: body_error(e.as_ref()),
                    unsent: false,
                    reason: "client_body",
                })
            }
            Err(e) => {
                in_flight.failed(FAILURE_PENALTY);
                let text = e.to_string();
                tracing::debug!(endpoint = %addr, error = %text, "upstream error");
                pool.record_request(endpoint, Outcome::Failure, Some(&text), Instant::now());
                let error = match e {
                    upstream::Error::Timeout(_) => LocalError::UpstreamTimeout,
                    _ => LocalError::UpstreamError,
                };
                Err(TryFailed {
                    error,
                    unsent: e.unsent(),
                    reason: retry_reason(&e),
                })
            }
        }
    }
}

/// The answer to a client whose request body failed: over the limit (413), stalled (408),
/// or broken or cut short (400).
fn body_error(e: &(dyn std::error::Error + 'static)) -> LocalError {
    if caused_by::<BodyTooLarge>(e) {
        LocalError::BodyTooLarge
    } else if caused_by::<BodyStalled>(e) {
        LocalError::RequestTimeout
    } else {
        tracing::debug!(error = %e, "client request body failed");
        LocalError::BadRequest
    }
}

/// Why one try failed, and whether the request certainly never reached the endpoint.
#[derive(Debug, Clone, Copy)]
struct TryFailed {
    error: LocalError,
    unsent: bool,
    /// The `reason` label of the retry it may lead to.
    reason: &'static str,
}

/// The `reason` label of `proxy_retries_total` for a try that failed with `e`: `connect`
/// (refused or timed out: nothing was sent, so any method goes again), `reset` (the
/// connection broke before any response byte), `timeout` (no response head within
/// `per_try`), `malformed` (a response that is not HTTP/1.1).
fn retry_reason(e: &upstream::Error) -> &'static str {
    match e {
        upstream::Error::Connect(_) | upstream::Error::ConnectTimeout(_) => "connect",
        upstream::Error::Timeout(_) => "timeout",
        upstream::Error::Malformed(_) => "malformed",
        upstream::Error::Write(_)
        | upstream::Error::Read(_)
        | upstream::Error::Closed
        | upstream::Error::RequestBody(_) => "reset",
    }
}

/// Writes the HTTP/1.1 head every try of `req` sends into `out`: request line, forwarded
/// fields, framing (`length`, when known), blank line. Returns whether the body goes
/// chunk-encoded, and the id.
fn upstream_head<'f, F: Fields + ?Sized>(
    req: &Request<'f, F>,
    length: Option<u64>,
    body: &RequestBody<'_>,
    client: &Peer,
    rng: &mut fastrand::Rng,
    out: &mut Vec<u8>,
) -> (bool, RequestId<'f>) {
    out.clear();
    out.extend_from_slice(req.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(req.target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let rules = RequestRules {
        client,
        host: req.host,
        version: via_version(req.version),
        upgrade: req.upgrade,
    };
    let id = headers::forward_request(req.fields, &rules, rng, out);
    // The framing is the proxy's own (the client's Content-Length was not copied): one
    // normalised length, or chunked when the length is unknown.
    let chunked = length.is_none() && !body.is_end_stream();
    if chunked {
        write::push_field(out, b"transfer-encoding", b"chunked");
    } else if let Some(n) = length {
        write::push_field(out, b"content-length", write::decimal(n).as_bytes());
    } else if matches!(*req.method, Method::POST | Method::PUT | Method::PATCH) {
        write::push_field(out, b"content-length", b"0");
    }
    out.extend_from_slice(b"\r\n");
    (chunked, id)
}

/// The RTT to record for a 5xx: the upstream's `Retry-After` (seconds) if it gave one, else
/// the fixed penalty.
fn penalty(retry_after_secs: Option<u64>) -> Duration {
    retry_after_secs.map_or(FAILURE_PENALTY, |s| {
        Duration::from_secs(s).clamp(FAILURE_PENALTY, MAX_RETRY_AFTER_PENALTY)
    })
}

/// `example.com:8080` → `example.com`; `[::1]:80` → `[::1]`.
fn strip_port(authority: &str) -> &str {
    match authority.rfind(':') {
        Some(i) if !authority[i..].contains(']') => &authority[..i],
        _ => authority,
    }
}

/// The protocol version as `Via` writes it.
pub fn via_version(v: Version) -> &'static str {
    match v {
        Version::HTTP_2 => "2",
        Version::HTTP_10 => "1.0",
        Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

/// An error and its causes on one line: "connect: Connection refused (os error 111)".
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
        assert_eq!(penalty(None), FAILURE_PENALTY);
        assert_eq!(penalty(Some(3)), Duration::from_secs(3));
        assert_eq!(penalty(Some(3600)), MAX_RETRY_AFTER_PENALTY);
        assert_eq!(penalty(Some(0)), FAILURE_PENALTY);
    }
}
