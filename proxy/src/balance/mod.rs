//! Load balancing, separate from hyper: endpoints with their live state, and the algorithms
//! that pick one. The proxy calls [`Balancer::pick`] once per try; nothing here does I/O.
//!
//! - [`Endpoint`]: an upstream address with its weight, in-flight count and RTT estimate.
//!   Endpoints live in `Arc`s that a configuration reload carries over, so their state
//!   survives it (the lesson of pingora #269).
//! - [`InFlight`]: the RAII handle of one request to an endpoint. It counts the request in
//!   flight until dropped and records the RTT sample, so no error path, timeout or cancelled
//!   future can leak a count (as tower's `peak_ewma::Handle`).
//! - The algorithms, one module each: [`round_robin`] (smooth weighted), [`least_conn`]
//!   (power of two choices over in-flight, full scan for small pools), [`peak_ewma`]
//!   (latency-weighted, power of two choices).
//!
//! Time comes in as `tokio::time::Instant` and randomness as a `fastrand::Rng`, so tests pause
//! time and seed the RNG and assert exact picks.

pub mod ewma;
pub mod health;
pub mod least_conn;
pub mod peak_ewma;
pub mod round_robin;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

pub use ewma::RttEstimate;

/// The algorithms a pool can use (`algorithm = "..."` in upstreams.toml).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Algorithm {
    RoundRobin,
    LeastConnections,
    PeakEwma,
}

impl Algorithm {
    /// A fresh balancer of this kind for a pool of `n` endpoints.
    pub fn build(self, n: usize) -> Box<dyn Balancer> {
        match self {
            Algorithm::RoundRobin => Box::new(round_robin::RoundRobin::new(n)),
            Algorithm::LeastConnections => Box::new(least_conn::LeastConnections),
            Algorithm::PeakEwma => Box::new(peak_ewma::PeakEwma),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::RoundRobin => "round-robin",
            Algorithm::LeastConnections => "least-connections",
            Algorithm::PeakEwma => "peak-ewma",
        }
    }
}

/// Picks an endpoint for one request.
pub trait Balancer: Send + Sync {
    /// Picks one of `candidates` (indices into `endpoints`, never empty when called through
    /// [`pick`]), given the time now and a random source.
    fn pick(
        &self,
        endpoints: &[Arc<Endpoint>],
        candidates: &[usize],
        rng: &mut fastrand::Rng,
        now: Instant,
    ) -> usize;
}

/// Picks among `candidates`, or `None` when there are none.
pub fn pick(
    balancer: &dyn Balancer,
    endpoints: &[Arc<Endpoint>],
    candidates: &[usize],
    rng: &mut fastrand::Rng,
    now: Instant,
) -> Option<usize> {
    match candidates {
        [] => None,
        [only] => Some(*only),
        _ => Some(balancer.pick(endpoints, candidates, rng, now)),
    }
}

/// Two distinct random candidates (callers guarantee at least two).
pub(crate) fn two_distinct(candidates: &[usize], rng: &mut fastrand::Rng) -> (usize, usize) {
    let n = candidates.len();
    let a = rng.usize(..n);
    // Draw from the n-1 others, then skip over `a`: distinct with no retry loop.
    let mut b = rng.usize(..n - 1);
    if b >= a {
        b += 1;
    }
    (candidates[a], candidates[b])
}

/// Default RTT of an endpoint with no samples (linkerd's default): new endpoints are tried,
/// not flooded.
pub const DEFAULT_RTT: Duration = Duration::from_millis(30);
/// Decay time constant of the RTT estimate (linkerd's default τ).
pub const DEFAULT_DECAY: Duration = Duration::from_secs(10);
/// RTT recorded for a failed request or a 5xx without `Retry-After`: an endpoint that fails
/// fast must not look fast (linkerd's load-biaser idea).
pub const FAILURE_PENALTY: Duration = Duration::from_millis(500);

/// One upstream address and its live state.
#[derive(Debug)]
pub struct Endpoint {
    /// Where requests go.
    pub addr: SocketAddr,
    /// Configured weight (≥ 1); updated in place by a reload.
    weight: AtomicU32,
    /// Requests started and not yet finished.
    in_flight: AtomicU64,
    /// Peak-EWMA latency estimate; the lock is held for a few arithmetic operations only,
    /// never across an `.await`.
    rtt: Mutex<RttEstimate>,
    /// Decay time constant for `rtt`.
    decay: Duration,
    /// Active-check and passive-ejection state; its transitions go through the pool, which
    /// knows the pool-wide limits.
    pub health: Mutex<health::Health>,
    /// Whether a slow-start ramp is running: every pick reads this flag, and only a ramping
    /// endpoint takes the lock below.
    ramping: AtomicBool,
    /// The running ramp: when it began and how long it lasts.
    ramp: Mutex<Option<(Instant, Duration)>>,
}

/// Smallest share of its weight a ramping endpoint gets (Envoy's `min_weight_percent`).
pub const SLOW_START_MIN_FACTOR: f64 = 0.1;

/// Weights are compared in thousandths, so a ramping weight of 1 still orders exactly.
pub const WEIGHT_SCALE: f64 = 1000.0;

impl Endpoint {
    pub fn new(addr: SocketAddr, weight: u32, now: Instant) -> Arc<Endpoint> {
        Arc::new(Endpoint {
            addr,
            weight: AtomicU32::new(weight.max(1)),
            in_flight: AtomicU64::new(0),
            rtt: Mutex::new(RttEstimate::new(DEFAULT_RTT, now)),
            decay: DEFAULT_DECAY,
            health: Mutex::new(health::Health::default()),
            ramping: AtomicBool::new(false),
            ramp: Mutex::new(None),
        })
    }

    /// The configured weight.
    pub fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }

    pub fn set_weight(&self, weight: u32) {
        self.weight.store(weight.max(1), Ordering::Relaxed);
    }

    /// Starts a slow-start ramp at `now` over `window` (nothing when the window is zero).
    pub fn start_ramp(&self, now: Instant, window: Duration) {
        if window.is_zero() {
            return;
        }
        *self.ramp.lock().unwrap_or_else(|p| p.into_inner()) = Some((now, window));
        self.ramping.store(true, Ordering::Release);
    }

    /// The weight the balancers use, in thousandths: the configured weight, scaled down
    /// while slow start ramps it up linearly from [`SLOW_START_MIN_FACTOR`].
    pub fn effective_weight(&self, now: Instant) -> u64 {
        let full = f64::from(self.weight()) * WEIGHT_SCALE;
        if !self.ramping.load(Ordering::Acquire) {
            return full as u64;
        }
        let mut ramp = self.ramp.lock().unwrap_or_else(|p| p.into_inner());
        let Some((start, window)) = *ramp else {
            return full as u64;
        };
        let elapsed = now.saturating_duration_since(start);
        if elapsed >= window {
            *ramp = None;
            self.ramping.store(false, Ordering::Release);
            return full as u64;
        }
        let factor = (elapsed.as_secs_f64() / window.as_secs_f64()).max(SLOW_START_MIN_FACTOR);
        (full * factor).max(1.0) as u64
    }

    /// A snapshot of the health record.
    pub fn health(&self) -> health::Health {
        self.health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The RTT estimate as of `now`, decayed for the time since the last sample.
    pub fn rtt_estimate(&self, now: Instant) -> Duration {
        let mut est = self.rtt.lock().unwrap_or_else(|p| p.into_inner());
        Duration::from_nanos(est.decay(now, self.decay) as u64)
    }

    /// Peak-EWMA cost: `rtt × (in_flight + 1) / weight` (the effective weight).
    pub fn cost(&self, now: Instant) -> f64 {
        let rtt = {
            let mut est = self.rtt.lock().unwrap_or_else(|p| p.into_inner());
            est.decay(now, self.decay)
        };
        rtt * (self.in_flight() as f64 + 1.0) * WEIGHT_SCALE / self.effective_weight(now) as f64
    }

    /// Starts a request: counts it in flight until the returned handle is dropped.
    pub fn start(self: &Arc<Self>, now: Instant) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight {
            endpoint: self.clone(),
            sent_at: now,
            recorded: false,
        }
    }

    fn record_rtt(&self, sent_at: Instant, recv_at: Instant) {
        let mut est = self.rtt.lock().unwrap_or_else(|p| p.into_inner());
        est.update(sent_at, recv_at, self.decay);
    }
}

/// One request in flight to an endpoint.
#[derive(Debug)]
pub struct InFlight {
    endpoint: Arc<Endpoint>,
    sent_at: Instant,
    /// Whether an RTT sample was recorded already (only the first counts).
    recorded: bool,
}

impl InFlight {
    pub fn endpoint(&self) -> &Arc<Endpoint> {
        &self.endpoint
    }

    /// The response headers (or first body frame) arrived at `now`: records the RTT sample.
    /// The request stays in flight until the handle is dropped (its body is done).
    pub fn responded(&mut self, now: Instant) {
        if !self.recorded {
            self.recorded = true;
            self.endpoint.record_rtt(self.sent_at, now);
        }
    }

    /// The request failed (connect error, reset, timeout, 5xx): records a penalised RTT of
    /// `penalty` instead of the real one, so the endpoint stops looking cheap.
    pub fn failed(&mut self, penalty: Duration) {
        if !self.recorded {
            self.recorded = true;
            self.endpoint
                .record_rtt(self.sent_at, self.sent_at + penalty);
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if !self.recorded {
            // Cancelled or errored without a verdict: what we know is how long it took.
            self.endpoint.record_rtt(self.sent_at, Instant::now());
        }
        self.endpoint.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
