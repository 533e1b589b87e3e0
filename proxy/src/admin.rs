//! The admin listener (loopback by default): `GET /admin/status` (the status page, HAProxy's
//! stats page in spirit: it reads `/admin/upstreams` every 2 s and shows rates from the
//! counters' growth), `GET /metrics` (Prometheus text),
//! `GET /admin/upstreams` (JSON: the last reload, each pool and endpoint with weight, in
//! flight, RTT estimate) and `POST /admin/reload` (reload `upstreams.toml` now).
//!
//! Access ([`Access`]): a route that changes anything needs `Authorization: Bearer` with the
//! token in `PROXY_ADMIN_TOKEN` (compared in constant time); without that variable set, such
//! routes are refused (403) and the file watch and SIGHUP remain the ways to reload. Reads are
//! open to loopback peers; a peer from anywhere else needs the token for them too, so an
//! admin port bound beyond loopback (a Kubernetes pod IP) shows nothing to strangers.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use subtle::ConstantTimeEq;

use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Serialize;
use tokio::time::Instant;

use crate::balance::health::State;
use crate::body::ResponseBody;
use crate::forward::Proxy;
use crate::metrics::PoolCounts;
use crate::reload::{ReloadStatus, Reloader};

#[derive(Serialize)]
struct UpstreamsView {
    file: String,
    last_reload: ReloadStatus,
    pools: Vec<PoolView>,
    /// The https listener's certificate, when there is one.
    tls: Option<TlsView>,
}

#[derive(Serialize)]
struct TlsView {
    cert: String,
    key: String,
    /// When the served certificate expires (RFC 3339).
    not_after: String,
    last_reload: ReloadStatus,
}

#[derive(Serialize)]
struct ReloadAnswer<'a> {
    ok: bool,
    message: &'a str,
}

#[derive(Serialize)]
struct PoolView {
    name: String,
    algorithm: &'static str,
    /// No endpoint is available: requests are spread over all of them.
    panic: bool,
    /// Retries, retries refused by the budget and panic-mode requests so far.
    #[serde(flatten)]
    counts: PoolCounts,
    /// Retries the budget allows now.
    retry_budget: i64,
    endpoints: Vec<EndpointView>,
}

#[derive(Serialize)]
struct EndpointView {
    address: String,
    weight: u32,
    /// The weight balancing uses now: lower while slow start ramps the endpoint up.
    effective_weight: f64,
    in_flight: u64,
    rtt_estimate_ms: f64,
    /// `healthy`, `unhealthy` (failed active checks) or `ejected` (passive).
    state: &'static str,
    times_ejected: u32,
    /// Why it is in its current state.
    reason: Option<String>,
    last_error: Option<String>,
    /// Its responses so far, by status class.
    requests: BTreeMap<&'static str, u64>,
}

/// The status page: plain HTML and JavaScript that reads `/admin/upstreams` every 2 s.
const STATUS_PAGE: &str = include_str!("status.html");

/// The environment variable that holds the admin token.
pub const TOKEN_VAR: &str = "PROXY_ADMIN_TOKEN";

/// Who may use the admin routes.
#[derive(Debug, Default)]
pub struct Access {
    /// `PROXY_ADMIN_TOKEN`, if set and not empty.
    token: Option<String>,
}

/// Why a request was refused.
#[derive(Debug, PartialEq, Eq)]
enum Denied {
    /// 401: the token is missing or wrong.
    Unauthorized,
    /// 403: no token is configured, so the route is closed.
    NoToken,
}

impl Access {
    /// Read once at start-up, at the edge.
    pub fn from_env() -> Access {
        Access::new(std::env::var(TOKEN_VAR).ok())
    }

    pub fn new(token: Option<String>) -> Access {
        Access {
            token: token.filter(|t| !t.is_empty()),
        }
    }

    /// Whether `peer` presenting `authorization` may use a route (`mutating`: it changes
    /// something).
    fn check(
        &self,
        peer: SocketAddr,
        authorization: Option<&HeaderValue>,
        mutating: bool,
    ) -> Result<(), Denied> {
        if !mutating && peer.ip().to_canonical().is_loopback() {
            return Ok(());
        }
        let Some(token) = &self.token else {
            return Err(Denied::NoToken);
        };
        let presented = authorization
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
            .unwrap_or_default();
        if bool::from(presented.ct_eq(token.as_bytes())) {
            Ok(())
        } else {
            Err(Denied::Unauthorized)
        }
    }
}

pub async fn handle(
    proxy: &Proxy,
    reloader: &Reloader,
    access: &Access,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Response<ResponseBody> {
    let mutating = !matches!(*req.method(), Method::GET | Method::HEAD);
    match access.check(peer, req.headers().get(header::AUTHORIZATION), mutating) {
        Ok(()) => {}
        Err(Denied::NoToken) => {
            return text(
                StatusCode::FORBIDDEN,
                "text/plain",
                format!(
                    "this admin route is closed: start the proxy with {TOKEN_VAR} set and send \
                     Authorization: Bearer <token>\n"
                ),
            )
        }
        Err(Denied::Unauthorized) => {
            let mut res = text(
                StatusCode::UNAUTHORIZED,
                "text/plain",
                format!("send Authorization: Bearer <the {TOKEN_VAR} token>\n"),
            );
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"proxy admin\""),
            );
            return res;
        }
    }
    match (req.method(), req.uri().path()) {
        (&Method::POST, "/admin/reload") => {
            let result = reloader.reload_all("admin");
            let (status, ok, message) = match &result {
                Ok(m) => (StatusCode::OK, true, m.as_str()),
                Err(e) => (StatusCode::UNPROCESSABLE_ENTITY, false, e.as_str()),
            };
            let json = serde_json::to_string(&ReloadAnswer { ok, message }).unwrap_or_default();
            text(status, "application/json", json)
        }
        (&Method::GET, "/metrics") => {
            refresh_gauges(proxy);
            text(
                StatusCode::OK,
                "text/plain; version=0.0.4",
                proxy.metrics.render(),
            )
        }
        (&Method::GET, "/admin/status") => {
            let mut res = text(
                StatusCode::OK,
                "text/html; charset=utf-8",
                STATUS_PAGE.into(),
            );
            res.headers_mut().insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                     connect-src 'self'",
                ),
            );
            res
        }
        (&Method::GET, "/admin/upstreams") => {
            let json =
                serde_json::to_string_pretty(&upstreams(proxy, reloader)).unwrap_or_default();
            text(StatusCode::OK, "application/json", json)
        }
        (_, "/metrics" | "/admin/upstreams" | "/admin/status") => text(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "use GET\n".into(),
        ),
        (_, "/admin/reload") => text(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "use POST\n".into(),
        ),
        _ => text(
            StatusCode::NOT_FOUND,
            "text/plain",
            "admin endpoints: GET /admin/status (the status page), GET /metrics, \
             GET /admin/upstreams, POST /admin/reload\n"
                .into(),
        ),
    }
}

fn upstreams(proxy: &Proxy, reloader: &Reloader) -> UpstreamsView {
    let topology = proxy.topology.load_full();
    let now = Instant::now();
    let pools = topology
        .pools
        .iter()
        .map(|p| PoolView {
            name: p.name().to_string(),
            algorithm: p.config.algorithm.as_str(),
            panic: p.in_panic(),
            counts: proxy.metrics.pool_counts(p.name()),
            retry_budget: p.retry_budget.available(),
            endpoints: p
                .endpoints
                .iter()
                .zip(&p.endpoint_metrics)
                .map(|(e, counters)| {
                    let health = e.health();
                    EndpointView {
                        address: e.addr.to_string(),
                        weight: e.weight(),
                        effective_weight: e.effective_weight(now) as f64
                            / crate::balance::WEIGHT_SCALE,
                        in_flight: e.in_flight(),
                        rtt_estimate_ms: e.rtt_estimate(now).as_secs_f64() * 1000.0,
                        state: health.state().as_str(),
                        times_ejected: health.times_ejected,
                        reason: health.reason,
                        last_error: health.last_error,
                        requests: counters.counts().into_iter().collect(),
                    }
                })
                .collect(),
        })
        .collect();
    UpstreamsView {
        file: reloader.path().display().to_string(),
        last_reload: reloader.last(),
        pools,
        tls: reloader.certificates().map(|c| TlsView {
            cert: c.files().cert.display().to_string(),
            key: c.files().key.display().to_string(),
            not_after: c.not_after(),
            last_reload: c.last(),
        }),
    }
}

/// Mirrors endpoint state into the gauges just before a scrape.
fn refresh_gauges(proxy: &Proxy) {
    let topology = proxy.topology.load_full();
    let now = Instant::now();
    for p in &topology.pools {
        for e in &p.endpoints {
            let addr = e.addr.to_string();
            let labels = [p.name(), addr.as_str()];
            proxy
                .metrics
                .in_flight
                .with_label_values(&labels)
                .set(e.in_flight() as i64);
            proxy
                .metrics
                .rtt_estimate
                .with_label_values(&labels)
                .set(e.rtt_estimate(now).as_secs_f64());
            let current = e.health().state();
            for state in [State::Healthy, State::Unhealthy, State::Ejected] {
                proxy
                    .metrics
                    .state
                    .with_label_values(&[p.name(), addr.as_str(), state.as_str()])
                    .set(i64::from(state == current));
            }
        }
    }
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<ResponseBody> {
    let mut res = Response::new(ResponseBody::local(body));
    *res.status_mut() = status;
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), 40000)
    }

    #[test]
    fn writes_need_the_token_and_reads_are_open_on_loopback_only() {
        let access = Access::new(Some("s3cret".into()));
        let good = HeaderValue::from_static("Bearer s3cret");
        let bad = HeaderValue::from_static("Bearer s3cre");
        let local = peer("127.0.0.1");
        let remote = peer("10.1.2.3");
        assert_eq!(access.check(local, None, false), Ok(()));
        assert_eq!(access.check(peer("::ffff:127.0.0.1"), None, false), Ok(()));
        assert_eq!(access.check(local, None, true), Err(Denied::Unauthorized));
        assert_eq!(
            access.check(local, Some(&bad), true),
            Err(Denied::Unauthorized)
        );
        assert_eq!(access.check(local, Some(&good), true), Ok(()));
        assert_eq!(access.check(remote, None, false), Err(Denied::Unauthorized));
        assert_eq!(access.check(remote, Some(&good), false), Ok(()));
        let closed = Access::new(Some(String::new()));
        assert_eq!(closed.check(local, Some(&good), true), Err(Denied::NoToken));
        assert_eq!(closed.check(local, None, false), Ok(()));
        assert_eq!(closed.check(remote, None, false), Err(Denied::NoToken));
    }
}
