//! The routing table and pools built from `upstreams.toml`: what one request consults, through
//! one `ArcSwap` load, to find its endpoint.
//!
//! A topology is immutable once built. A reload builds a new one from the new file *and the
//! old topology*: an endpoint present in both (same pool, same address) keeps its `Arc`, so its
//! in-flight count, RTT estimate and, later, health survive the swap; requests in flight on a
//! removed endpoint finish on the `Arc` they hold.

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::time::Instant;

use crate::balance::health::{Outcome, Transition};
use crate::balance::{self, Balancer, Endpoint};
use crate::config::{PoolConfig, UpstreamsConfig};
use crate::metrics::{EndpointMetrics, Metrics};
use crate::retry::RetryBudget;

/// A named set of endpoints and the balancer that picks among them.
pub struct Pool {
    pub config: PoolConfig,
    pub endpoints: Vec<Arc<Endpoint>>,
    /// Each endpoint's address as a URI authority, parallel to `endpoints` (built once, so
    /// the request path does not format addresses).
    pub authorities: Vec<http::uri::Authority>,
    /// Per-endpoint counters, parallel to `endpoints`.
    pub endpoint_metrics: Vec<EndpointMetrics>,
    /// The pool's latency histogram.
    pub duration: prometheus::Histogram,
    /// Every endpoint index: where requests go in panic mode.
    all: Vec<usize>,
    /// Indices of the endpoints that may receive requests; rebuilt on each health transition
    /// (rare), read with one atomic load per request.
    available: ArcSwap<Vec<usize>>,
    balancer: Box<dyn Balancer>,
    metrics: Metrics,
    /// Retries may be at most `retry.budget_percent` of requests (plus a floor).
    pub retry_budget: RetryBudget,
}

impl Pool {
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Picks an endpoint among the available ones, avoiding those in `exclude` (endpoints
    /// already tried). With none available, the pool panics: it routes across all endpoints
    /// rather than fail every request (Envoy's panic mode); unless `ejection.panic` is off,
    /// and then there is no endpoint (the caller answers 503).
    pub fn pick(&self, rng: &mut fastrand::Rng, now: Instant, exclude: &[usize]) -> Option<usize> {
        let available = self.available.load();
        let candidates: &[usize] = if available.is_empty() {
            if !self.config.ejection.panic {
                return None;
            }
            self.metrics.pool_panic(self.name());
            &self.all
        } else {
            &available
        };
        if exclude.is_empty() {
            return balance::pick(
                self.balancer.as_ref(),
                &self.endpoints,
                candidates,
                rng,
                now,
            );
        }
        let rest: Vec<usize> = candidates
            .iter()
            .copied()
            .filter(|i| !exclude.contains(i))
            .collect();
        balance::pick(self.balancer.as_ref(), &self.endpoints, &rest, rng, now)
    }

    /// Whether no endpoint is available (requests are spread over all of them).
    pub fn in_panic(&self) -> bool {
        self.config.ejection.panic && self.available.load().is_empty()
    }

    /// Records a request's outcome on endpoint `i`: resets or counts its failures and ejects
    /// it when it crosses the threshold, unless that would eject more than
    /// `max_ejected_percent` of the pool.
    pub fn record_request(&self, i: usize, outcome: Outcome, error: Option<&str>, now: Instant) {
        let cfg = &self.config.ejection;
        // Only a failure can eject. The endpoint's lock is released before the pool-wide
        // count takes every lock in turn.
        let may_eject = outcome == Outcome::Failure
            && self.endpoints[i]
                .health
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .would_eject(outcome, cfg)
            && self.ejection_allowed();
        let transition = self.endpoints[i]
            .health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .on_request(outcome, error, may_eject, cfg, now);
        if let Some(t) = transition {
            self.metrics
                .ejection(self.name(), &self.endpoints[i].addr.to_string());
            self.transitioned(i, &t);
        }
    }

    /// Records an active probe's result on endpoint `i`.
    pub fn record_check(&self, i: usize, passed: bool, error: Option<String>, now: Instant) {
        let transition = self.endpoints[i]
            .health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .on_check(passed, error, &self.config.health, now);
        if let Some(t) = transition {
            self.transitioned(i, &t);
        }
    }

    /// One more ejection keeps the ejected share within `max_ejected_percent`.
    fn ejection_allowed(&self) -> bool {
        let ejected = self
            .endpoints
            .iter()
            .filter(|e| e.health().state() == balance::health::State::Ejected)
            .count();
        let n = self.endpoints.len();
        (ejected + 1) * 100 <= self.config.ejection.max_ejected_percent as usize * n
    }

    fn transitioned(&self, i: usize, t: &Transition) {
        let addr = self.endpoints[i].addr;
        tracing::info!(
            pool = self.name(),
            endpoint = %addr,
            from = t.from.as_str(),
            to = t.to.as_str(),
            reason = %t.reason,
            "endpoint state changed"
        );
        self.metrics
            .transition(self.name(), &addr.to_string(), t.to.as_str());
        if t.to == balance::health::State::Healthy {
            // Re-admitted: ramp up again.
            self.endpoints[i].start_ramp(Instant::now(), self.config.slow_start.window);
        }
        self.refresh_available();
    }

    /// Rebuilds the list of available endpoints from their health.
    pub fn refresh_available(&self) {
        let available: Vec<usize> = (0..self.endpoints.len())
            .filter(|&i| self.endpoints[i].health().is_available())
            .collect();
        if available.is_empty() {
            tracing::warn!(
                pool = self.name(),
                "no endpoint available: panic mode, routing across all"
            );
        }
        self.available.store(Arc::new(available));
    }
}

/// One route, resolved to its pool.
struct Route {
    host: Option<String>,
    path_prefix: String,
    pool: usize,
}

/// Routes and pools: everything the request path reads.
pub struct Topology {
    routes: Vec<Route>,
    pub pools: Vec<Arc<Pool>>,
    /// The configuration it was built from (a reload that changes nothing is skipped).
    pub config: UpstreamsConfig,
}

impl Topology {
    /// Builds a topology from `config`, reusing the endpoints of `previous` that are kept.
    pub fn build(
        config: &UpstreamsConfig,
        previous: Option<&Topology>,
        metrics: &Metrics,
        now: Instant,
    ) -> Topology {
        let pools: Vec<Arc<Pool>> = config
            .pools
            .iter()
            .map(|pc| {
                let endpoints: Vec<Arc<Endpoint>> = pc
                    .endpoints
                    .iter()
                    .map(
                        |ec| match previous.and_then(|p| p.endpoint(&pc.name, ec.addr)) {
                            Some(kept) => {
                                kept.set_weight(ec.weight);
                                kept
                            }
                            None => {
                                let e = Endpoint::new(ec.addr, ec.weight, now);
                                // Added to a running proxy: ramp up rather than take a full share
                                // of traffic while cold.
                                if previous.is_some() {
                                    e.start_ramp(now, pc.slow_start.window);
                                }
                                e
                            }
                        },
                    )
                    .collect();
                let endpoint_metrics = endpoints
                    .iter()
                    .map(|e| metrics.endpoint(&pc.name, &e.addr.to_string()))
                    .collect();
                let authorities = endpoints
                    .iter()
                    .map(|e| {
                        http::uri::Authority::try_from(e.addr.to_string())
                            .expect("a socket address is a valid authority")
                    })
                    .collect();
                let available = (0..endpoints.len())
                    .filter(|&i| endpoints[i].health().is_available())
                    .collect();
                Arc::new(Pool {
                    authorities,
                    balancer: pc.algorithm.build(endpoints.len()),
                    all: (0..endpoints.len()).collect(),
                    available: ArcSwap::from_pointee(available),
                    metrics: metrics.clone(),
                    retry_budget: RetryBudget::new(pc.retry.budget_percent, now),
                    duration: metrics.pool_duration(&pc.name),
                    endpoint_metrics,
                    endpoints,
                    config: pc.clone(),
                })
            })
            .collect();
        let routes = config
            .routes
            .iter()
            .filter_map(|r| {
                let pool = pools.iter().position(|p| p.name() == r.pool)?;
                Some(Route {
                    host: r.host.clone(),
                    path_prefix: r.path_prefix.clone(),
                    pool,
                })
            })
            .collect();
        Topology {
            routes,
            pools,
            config: config.clone(),
        }
    }

    /// The endpoint at `addr` in pool `pool`, if any.
    pub fn endpoint(&self, pool: &str, addr: SocketAddr) -> Option<Arc<Endpoint>> {
        self.pools
            .iter()
            .find(|p| p.name() == pool)?
            .endpoints
            .iter()
            .find(|e| e.addr == addr)
            .cloned()
    }

    /// The pool for a request to `host` (without port, any case) and `path`.
    pub fn route(&self, host: Option<&str>, path: &str) -> Option<&Arc<Pool>> {
        self.routes
            .iter()
            .find(|r| {
                let host_ok = match (&r.host, host) {
                    (None, _) => true,
                    (Some(want), Some(h)) => want.eq_ignore_ascii_case(h),
                    (Some(_), None) => false,
                };
                host_ok && path.starts_with(&r.path_prefix)
            })
            .map(|r| &self.pools[r.pool])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn topo(text: &str, previous: Option<&Topology>, metrics: &Metrics) -> Topology {
        let cfg = UpstreamsConfig::parse(Path::new("u.toml"), text).expect("valid");
        Topology::build(&cfg, previous, metrics, Instant::now())
    }

    const TWO_POOLS: &str = r#"
[[route]]
host = "api.example"
path_prefix = "/v2/"
pool = "b"
[[route]]
pool = "a"
[pool.a]
endpoints = [{ addr = "127.0.0.1:1" }, { addr = "127.0.0.1:2" }]
[pool.b]
endpoints = [{ addr = "127.0.0.1:3" }]
"#;

    #[tokio::test(start_paused = true)]
    async fn routes_by_host_and_prefix() {
        let m = Metrics::new();
        let t = topo(TWO_POOLS, None, &m);
        assert_eq!(t.route(Some("API.example"), "/v2/x").unwrap().name(), "b");
        assert_eq!(t.route(Some("api.example"), "/v1/x").unwrap().name(), "a");
        assert_eq!(t.route(None, "/v2/x").unwrap().name(), "a");
    }

    #[tokio::test(start_paused = true)]
    async fn kept_endpoints_keep_their_state_across_a_rebuild() {
        let m = Metrics::new();
        let old = topo(TWO_POOLS, None, &m);
        let kept = old.endpoint("a", "127.0.0.1:2".parse().unwrap()).unwrap();
        let _in_flight = kept.start(Instant::now());
        let new = topo(
            r#"
[pool.a]
endpoints = [{ addr = "127.0.0.1:2", weight = 5 }, { addr = "127.0.0.1:4" }]
"#,
            Some(&old),
            &m,
        );
        let again = new.endpoint("a", "127.0.0.1:2".parse().unwrap()).unwrap();
        assert!(Arc::ptr_eq(&kept, &again));
        assert_eq!(again.in_flight(), 1);
        assert_eq!(again.weight(), 5);
        assert!(new.endpoint("a", "127.0.0.1:1".parse().unwrap()).is_none());
        assert_eq!(
            new.endpoint("a", "127.0.0.1:4".parse().unwrap())
                .unwrap()
                .in_flight(),
            0
        );
    }

    #[tokio::test(start_paused = true)]
    async fn never_more_than_max_ejected_percent_is_ejected_and_none_left_means_panic() {
        use crate::balance::health::{Outcome, State};
        let m = Metrics::new();
        let t = topo(
            r#"
[pool.a]
endpoints = [{ addr = "127.0.0.1:1" }, { addr = "127.0.0.1:2" }, { addr = "127.0.0.1:3" }]
[pool.a.ejection]
consecutive_failures = 2
max_ejected_percent = 50
"#,
            None,
            &m,
        );
        let pool = t.route(None, "/").unwrap();
        let now = Instant::now();
        for i in 0..3 {
            for _ in 0..5 {
                pool.record_request(i, Outcome::Failure, Some("reset"), now);
            }
        }
        let states: Vec<State> = pool.endpoints.iter().map(|e| e.health().state()).collect();
        assert_eq!(
            states,
            [State::Ejected, State::Healthy, State::Healthy],
            "50 % of 3 is 1"
        );
        let mut rng = fastrand::Rng::with_seed(2);
        assert!((0..20).all(|_| pool.pick(&mut rng, now, &[]) != Some(0)));

        // Active checks take the other two out: nothing is available, so the pool panics and
        // routes across all three rather than refuse.
        for i in 1..3 {
            for _ in 0..3 {
                pool.record_check(i, false, Some("refused".into()), now);
            }
        }
        assert!(pool.in_panic());
        let picked: std::collections::HashSet<_> = (0..50)
            .filter_map(|_| pool.pick(&mut rng, now, &[]))
            .collect();
        assert_eq!(picked.len(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn pick_avoids_excluded_endpoints() {
        let m = Metrics::new();
        let t = topo(TWO_POOLS, None, &m);
        let pool = t.route(None, "/").unwrap();
        let mut rng = fastrand::Rng::with_seed(1);
        for _ in 0..20 {
            assert_eq!(pool.pick(&mut rng, Instant::now(), &[0]), Some(1));
        }
        assert_eq!(pool.pick(&mut rng, Instant::now(), &[0, 1]), None);
    }
}
