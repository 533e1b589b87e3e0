//! The peak-EWMA round-trip-time estimate (Finagle; tower's `load/peak_ewma.rs`).
//!
//! Peak: a sample above the estimate replaces it at once, so a slowing endpoint is noticed on
//! its first slow answer. EWMA: a sample below it pulls the estimate down gradually,
//! `est = est·w + rtt·(1−w)` with `w = exp(−Δt/τ)`, Δt the time since the last update, so one
//! fast answer does not undo a history of slow ones. Idle time decays the estimate toward zero
//! (a zero-RTT sample at `now`), so an endpoint that was slow a minute ago is probed again.
//!
//! One refinement over tower: the default RTT of a new endpoint is a prior, not a measurement,
//! so the first real sample replaces it outright. Otherwise a 1 ms endpoint would carry the
//! 30 ms default for tens of seconds (it decays as e^(−t/τ)) and look costlier than a 40 ms
//! one while it has a few requests in flight.

use std::time::Duration;

use tokio::time::Instant;

/// A decaying, peak-sensitive RTT estimate. Pure: no clock inside, every call is given the
/// time, so it is tested exactly.
#[derive(Debug, Clone, Copy)]
pub struct RttEstimate {
    /// Current estimate in nanoseconds.
    rtt_ns: f64,
    /// When it was last updated.
    update_at: Instant,
    /// Whether a real sample has replaced the initial default.
    sampled: bool,
}

impl RttEstimate {
    pub fn new(initial: Duration, now: Instant) -> Self {
        RttEstimate {
            rtt_ns: nanos(initial),
            update_at: now,
            sampled: false,
        }
    }

    /// Folds in a sample measured from `sent_at` to `recv_at`; returns the new estimate (ns).
    pub fn update(&mut self, sent_at: Instant, recv_at: Instant, tau: Duration) -> f64 {
        let rtt = nanos(recv_at.saturating_duration_since(sent_at));
        let now = recv_at.max(self.update_at);
        if !self.sampled {
            self.sampled = true;
            self.rtt_ns = rtt;
        } else if rtt > self.rtt_ns {
            self.rtt_ns = rtt;
        } else {
            let elapsed = nanos(now.saturating_duration_since(self.update_at));
            let w = (-elapsed / nanos(tau)).exp();
            self.rtt_ns = self.rtt_ns * w + rtt * (1.0 - w);
        }
        self.update_at = now;
        self.rtt_ns
    }

    /// The estimate at `now`, decayed for the idle time since the last update. The default of
    /// an endpoint never sampled decays too, so under light load it is eventually tried.
    pub fn decay(&mut self, now: Instant, tau: Duration) -> f64 {
        let elapsed = nanos(now.saturating_duration_since(self.update_at));
        self.rtt_ns *= (-elapsed / nanos(tau)).exp();
        self.update_at = now.max(self.update_at);
        self.rtt_ns
    }

    pub fn get(&self) -> Duration {
        Duration::from_nanos(self.rtt_ns as u64)
    }
}

fn nanos(d: Duration) -> f64 {
    d.as_nanos() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAU: Duration = Duration::from_secs(10);

    /// An estimate whose first sample (`rtt`, answered at `t0`) has replaced the default.
    fn sampled(rtt: Duration, t0: Instant) -> RttEstimate {
        let mut est = RttEstimate::new(Duration::from_millis(30), t0);
        est.update(t0, t0, TAU); // zero-length first sample...
        est.rtt_ns = nanos(rtt); // ...then the estimate under test
        est
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_sample_replaces_the_default() {
        let t0 = Instant::now();
        let mut est = RttEstimate::new(Duration::from_millis(30), t0);
        let decayed = est.decay(t0 + TAU, TAU);
        assert!(
            (decayed - 30_000_000.0 * (-1.0f64).exp()).abs() < 1.0,
            "the default decays"
        );
        let v = est.update(t0 + TAU, t0 + TAU + Duration::from_millis(1), TAU);
        assert_eq!(
            v, 1_000_000.0,
            "the first sample replaces it, even when higher or lower"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_higher_sample_replaces_the_estimate_at_once() {
        let t0 = Instant::now();
        let mut est = RttEstimate::new(Duration::from_millis(30), t0);
        let v = est.update(t0, t0 + Duration::from_millis(400), TAU);
        assert_eq!(v, 400_000_000.0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lower_sample_decays_toward_it_by_exp_of_elapsed_over_tau() {
        let t0 = Instant::now();
        let mut est = sampled(Duration::from_millis(100), t0);
        // One τ after the last update: w = e^-1.
        let sent = t0 + TAU - Duration::from_millis(10);
        let v = est.update(sent, t0 + TAU, TAU);
        let w = (-1.0f64).exp();
        let expected = 100_000_000.0 * w + 10_000_000.0 * (1.0 - w);
        assert!((v - expected).abs() < 1.0, "{v} vs {expected}");
    }

    #[tokio::test(start_paused = true)]
    async fn idle_time_decays_toward_zero() {
        let t0 = Instant::now();
        let mut est = sampled(Duration::from_millis(40), t0);
        let v = est.decay(t0 + TAU * 2, TAU);
        let expected = 40_000_000.0 * (-2.0f64).exp();
        assert!((v - expected).abs() < 1.0);
        // Decaying twice over the same period gives the same result as once.
        let mut a = sampled(Duration::from_millis(40), t0);
        a.decay(t0 + TAU, TAU);
        let v2 = a.decay(t0 + TAU * 2, TAU);
        assert!((v - v2).abs() < 1.0);
    }

    #[tokio::test(start_paused = true)]
    async fn samples_with_no_elapsed_time_do_not_move_a_higher_estimate() {
        let t0 = Instant::now();
        let mut est = sampled(Duration::from_millis(50), t0);
        let v = est.update(t0, t0, TAU);
        assert_eq!(v, 50_000_000.0);
    }
}
