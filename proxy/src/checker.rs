//! Active health checks: every endpoint of every pool is probed with `GET <health.path>` every
//! `health.interval` (±10 % jitter, first probes spread over one interval, so checks do not
//! align), each probe bounded by `health.timeout`. A 2xx or 3xx passes. Results go to
//! [`Pool::record_check`], which owns the thresholds and the state machine.
//!
//! Probes use a fresh connection each time: a kept-alive connection could hide a listener
//! that stopped accepting. The probe tasks belong to the current topology: a reload restarts
//! them (the health state itself lives in the endpoints and carries over).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::HealthConfig;
use crate::forward::error_chain;
use crate::topology::{Pool, Topology};

/// `User-Agent` of probes, so upstream logs can tell them apart.
pub const PROBE_USER_AGENT: &str = "microcourses-proxy-health-check";

type ProbeClient = Client<HttpConnector, Empty<Bytes>>;

/// Runs the probe tasks of the current topology.
pub struct HealthChecker {
    client: ProbeClient,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    runtime: tokio::runtime::Handle,
}

impl HealthChecker {
    /// Must be called inside the runtime the probes should run on.
    pub fn new() -> Arc<HealthChecker> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector);
        Arc::new(HealthChecker {
            client,
            tasks: Mutex::new(Vec::new()),
            runtime: tokio::runtime::Handle::current(),
        })
    }

    /// Replaces the probe tasks with one per endpoint of `topology`.
    pub fn sync(&self, topology: &Topology) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        for t in tasks.drain(..) {
            t.abort();
        }
        for pool in &topology.pools {
            for i in 0..pool.endpoints.len() {
                let (pool, client) = (pool.clone(), self.client.clone());
                tasks.push(self.runtime.spawn(probe_loop(pool, i, client)));
            }
        }
    }
}

impl Drop for HealthChecker {
    fn drop(&mut self) {
        for t in self
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            t.abort();
        }
    }
}

async fn probe_loop(pool: Arc<Pool>, i: usize, client: ProbeClient) {
    let cfg = pool.config.health.clone();
    let addr = pool.endpoints[i].addr;
    let mut rng = fastrand::Rng::new();
    tokio::time::sleep(cfg.interval.mul_f64(rng.f64())).await;
    loop {
        let (passed, error) = probe(&client, addr, &cfg).await;
        pool.record_check(i, passed, error, Instant::now());
        tokio::time::sleep(cfg.interval.mul_f64(0.9 + 0.2 * rng.f64())).await;
    }
}

/// One probe: whether it passed, and why not.
pub async fn probe(
    client: &ProbeClient,
    addr: SocketAddr,
    cfg: &HealthConfig,
) -> (bool, Option<String>) {
    let request = http::Request::get(format!("http://{addr}{}", cfg.path))
        .header(http::header::USER_AGENT, PROBE_USER_AGENT)
        .body(Empty::new());
    let request = match request {
        Ok(r) => r,
        Err(e) => return (false, Some(format!("health check request: {e}"))),
    };
    match tokio::time::timeout(cfg.timeout, client.request(request)).await {
        Ok(Ok(res)) if res.status().is_success() || res.status().is_redirection() => (true, None),
        Ok(Ok(res)) => (
            false,
            Some(format!("health check answered {}", res.status())),
        ),
        Ok(Err(e)) => (false, Some(format!("health check: {}", error_chain(&e)))),
        Err(_) => (
            false,
            Some(format!("health check: no answer within {:?}", cfg.timeout)),
        ),
    }
}
