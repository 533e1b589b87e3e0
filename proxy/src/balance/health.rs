//! An endpoint's health: what active checks and passive outlier detection concluded, as one
//! small state machine with no I/O and no clock of its own (every call is given `now`), so it
//! is tested exactly under paused time.
//!
//! - Active checks: `unhealthy_threshold` failed probes in a row mark the endpoint down;
//!   `healthy_threshold` passing probes in a row bring it back.
//! - Passive ejection (Envoy's outlier detection): `consecutive_failures` failed requests in a
//!   row (connect error, reset, timeout, 5xx) eject it at once, for
//!   `base_time × times_ejected`, capped at `max_time`. It returns once that time has passed
//!   *and* an active probe has passed since, so a still-broken endpoint is not handed traffic
//!   just because a timer ran out. The pool decides whether an ejection is allowed
//!   (`max_ejected_percent`).

use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::config::{EjectionConfig, HealthConfig};

/// How an endpoint stands, as `/admin/upstreams` and the state gauge show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Receives traffic.
    Healthy,
    /// Failed its active checks.
    Unhealthy,
    /// Ejected by passive outlier detection.
    Ejected,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Healthy => "healthy",
            State::Unhealthy => "unhealthy",
            State::Ejected => "ejected",
        }
    }
}

/// A change of state, to be logged and counted by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub from: State,
    pub to: State,
    pub reason: String,
}

/// What one request told us about the endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Any response below 500.
    Success,
    /// Connect error, reset, timeout, or a 5xx.
    Failure,
}

/// The health record of one endpoint.
#[derive(Debug, Clone)]
pub struct Health {
    /// Verdict of the active checks (starts healthy: a new endpoint is tried at once).
    checks_ok: bool,
    check_failures: u32,
    check_successes: u32,
    /// Failed requests in a row.
    request_failures: u32,
    /// Set while ejected: until when, at least.
    ejected_until: Option<Instant>,
    /// How many times it has been ejected (multiplies the ejection time).
    pub times_ejected: u32,
    /// The last thing that went wrong, for the operator.
    pub last_error: Option<String>,
    /// Why the endpoint is in its current state (the last transition's reason).
    pub reason: Option<String>,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            checks_ok: true,
            check_failures: 0,
            check_successes: 0,
            request_failures: 0,
            ejected_until: None,
            times_ejected: 0,
            last_error: None,
            reason: None,
        }
    }
}

impl Health {
    pub fn state(&self) -> State {
        if self.ejected_until.is_some() {
            State::Ejected
        } else if !self.checks_ok {
            State::Unhealthy
        } else {
            State::Healthy
        }
    }

    pub fn is_available(&self) -> bool {
        self.state() == State::Healthy
    }

    /// Records an active probe's result.
    pub fn on_check(
        &mut self,
        passed: bool,
        error: Option<String>,
        cfg: &HealthConfig,
        now: Instant,
    ) -> Option<Transition> {
        let before = self.state();
        if passed {
            self.check_failures = 0;
            self.check_successes = self.check_successes.saturating_add(1);
            if !self.checks_ok && self.check_successes >= cfg.healthy_threshold {
                self.checks_ok = true;
            }
            if self.ejected_until.is_some_and(|until| now >= until) {
                self.ejected_until = None;
                self.request_failures = 0;
            }
        } else {
            self.check_successes = 0;
            self.check_failures = self.check_failures.saturating_add(1);
            if error.is_some() {
                self.last_error = error;
            }
            if self.checks_ok && self.check_failures >= cfg.unhealthy_threshold {
                self.checks_ok = false;
            }
        }
        self.transition(before, "active check")
    }

    /// Whether this outcome would eject the endpoint (so the pool can check its limit first).
    pub fn would_eject(&self, outcome: Outcome, cfg: &EjectionConfig) -> bool {
        outcome == Outcome::Failure
            && self.ejected_until.is_none()
            && self.request_failures.saturating_add(1) >= cfg.consecutive_failures
    }

    /// Records a request's outcome; `may_eject` is the pool's permission.
    pub fn on_request(
        &mut self,
        outcome: Outcome,
        error: Option<&str>,
        may_eject: bool,
        cfg: &EjectionConfig,
        now: Instant,
    ) -> Option<Transition> {
        match outcome {
            Outcome::Success => {
                self.request_failures = 0;
                None
            }
            Outcome::Failure => {
                let before = self.state();
                if let Some(e) = error {
                    self.last_error = Some(e.to_string());
                }
                self.request_failures = self.request_failures.saturating_add(1);
                if may_eject && self.would_eject_now(cfg) {
                    self.times_ejected = self.times_ejected.saturating_add(1);
                    self.ejected_until = Some(now + self.ejection_time(cfg));
                    return self.transition(
                        before,
                        &format!("{} failed requests in a row", self.request_failures),
                    );
                }
                None
            }
        }
    }

    fn would_eject_now(&self, cfg: &EjectionConfig) -> bool {
        self.ejected_until.is_none() && self.request_failures >= cfg.consecutive_failures
    }

    /// `base_time × times_ejected`, capped at `max_time`.
    pub fn ejection_time(&self, cfg: &EjectionConfig) -> Duration {
        cfg.base_time
            .saturating_mul(self.times_ejected.max(1))
            .min(cfg.max_time)
    }

    fn transition(&mut self, before: State, cause: &str) -> Option<Transition> {
        let after = self.state();
        if before == after {
            return None;
        }
        let reason = match (&self.last_error, after) {
            (Some(e), State::Ejected | State::Unhealthy) => format!("{cause}: {e}"),
            _ => format!("{cause} passed"),
        };
        self.reason = Some(reason.clone());
        Some(Transition {
            from: before,
            to: after,
            reason,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health_cfg() -> HealthConfig {
        HealthConfig::default() // unhealthy after 3, healthy after 2
    }

    fn ejection_cfg() -> EjectionConfig {
        EjectionConfig {
            consecutive_failures: 5,
            base_time: Duration::from_secs(10),
            max_time: Duration::from_secs(25),
            max_ejected_percent: 50,
            ..EjectionConfig::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn active_checks_use_both_thresholds() {
        let (mut h, cfg, now) = (Health::default(), health_cfg(), Instant::now());
        assert!(h
            .on_check(false, Some("refused".into()), &cfg, now)
            .is_none());
        assert!(h.on_check(false, None, &cfg, now).is_none());
        let t = h.on_check(false, None, &cfg, now).unwrap();
        assert_eq!((t.from, t.to), (State::Healthy, State::Unhealthy));
        assert!(t.reason.contains("refused"), "{}", t.reason);
        assert_eq!(h.reason.as_deref(), Some(t.reason.as_str()));
        assert!(h.on_check(true, None, &cfg, now).is_none());
        let t = h.on_check(true, None, &cfg, now).unwrap();
        assert_eq!(t.to, State::Healthy);
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_between_failures_resets_the_count() {
        let (mut h, cfg, now) = (Health::default(), ejection_cfg(), Instant::now());
        for _ in 0..4 {
            h.on_request(Outcome::Failure, None, true, &cfg, now);
        }
        h.on_request(Outcome::Success, None, true, &cfg, now);
        for _ in 0..4 {
            assert!(h
                .on_request(Outcome::Failure, None, true, &cfg, now)
                .is_none());
        }
        assert_eq!(h.state(), State::Healthy);
    }

    #[tokio::test(start_paused = true)]
    async fn ejection_grows_with_each_time_capped_and_needs_a_check_to_end() {
        let (mut h, hc, ec) = (Health::default(), health_cfg(), ejection_cfg());
        let t0 = Instant::now();
        let eject = |h: &mut Health, at: Instant| {
            (0..5)
                .filter_map(|_| h.on_request(Outcome::Failure, Some("reset"), true, &ec, at))
                .last()
        };
        let t = eject(&mut h, t0).expect("ejected on the fifth failure");
        assert_eq!((t.from, t.to), (State::Healthy, State::Ejected));
        assert_eq!(h.ejection_time(&ec), Duration::from_secs(10));

        // A passing check before the time is up does not end it.
        assert!(h
            .on_check(true, None, &hc, t0 + Duration::from_secs(9))
            .is_none());
        // Time alone does not end it either; a passing check after it does.
        assert_eq!(h.state(), State::Ejected);
        let t = h
            .on_check(true, None, &hc, t0 + Duration::from_secs(10))
            .unwrap();
        assert_eq!(t.to, State::Healthy);

        let t1 = t0 + Duration::from_secs(11);
        eject(&mut h, t1).unwrap();
        assert_eq!(h.ejection_time(&ec), Duration::from_secs(20));
        h.on_check(true, None, &hc, t1 + Duration::from_secs(20));
        let t2 = t1 + Duration::from_secs(21);
        eject(&mut h, t2).unwrap();
        assert_eq!(
            h.ejection_time(&ec),
            Duration::from_secs(25),
            "capped at max_time"
        );
        assert_eq!(h.times_ejected, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn without_the_pools_permission_nothing_is_ejected() {
        let (mut h, ec, now) = (Health::default(), ejection_cfg(), Instant::now());
        for _ in 0..10 {
            assert!(h
                .on_request(Outcome::Failure, None, false, &ec, now)
                .is_none());
        }
        assert_eq!(h.state(), State::Healthy);
        assert!(h.would_eject(Outcome::Failure, &ec));
    }
}
