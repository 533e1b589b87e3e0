//! The retry budget (tower's `TpsBudget`, Envoy's retry budget): retries may be at most
//! `budget_percent` of requests, plus a small floor so a quiet pool can still retry. It
//! stops retries from multiplying the load on a pool that is already failing.
//!
//! A token bucket in thousandths: every request deposits `budget_percent × 10`, every retry
//! withdraws 1000, and time adds [`MIN_RETRIES_PER_SEC`]. The bucket is capped at
//! [`MAX_RETRY_BURST`] retries, so a long calm period cannot fund a retry storm. Deposits are
//! one atomic add on the request path; the lock is taken by retries only.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;

use tokio::time::Instant;

/// Retries allowed per second whatever the traffic (tower's `min_per_sec` default).
pub const MIN_RETRIES_PER_SEC: u32 = 10;
/// Most retries the bucket can hold: about what tower's 10 s window holds at 500 req/s
/// (20 % × 10 s). Enough to retry every request a hung endpoint swallows before it is found
/// out, small enough that a pool failing as a whole gets at most this many extra requests
/// on top of 20 %.
pub const MAX_RETRY_BURST: i64 = 1000;
const MILLI: i64 = 1000;

pub struct RetryBudget {
    /// Thousandths of a retry available.
    tokens: AtomicI64,
    /// Deposit per request, in thousandths.
    deposit: i64,
    /// When the floor was last credited.
    floor_credited: Mutex<Instant>,
}

impl RetryBudget {
    /// A budget of `percent` % of requests, starting with one second's floor.
    pub fn new(percent: u32, now: Instant) -> Self {
        RetryBudget {
            tokens: AtomicI64::new(i64::from(MIN_RETRIES_PER_SEC) * MILLI),
            deposit: i64::from(percent) * MILLI / 100,
            floor_credited: Mutex::new(now),
        }
    }

    /// A request was sent: it earns a fraction of a retry.
    pub fn deposit(&self) {
        self.add(self.deposit);
    }

    /// Takes one retry from the budget if there is one.
    pub fn withdraw(&self, now: Instant) -> bool {
        {
            let mut credited = self
                .floor_credited
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let elapsed = now.saturating_duration_since(*credited);
            let earned =
                (elapsed.as_secs_f64() * f64::from(MIN_RETRIES_PER_SEC) * MILLI as f64) as i64;
            if earned > 0 {
                self.add(earned);
                *credited = now;
            }
        }
        self.tokens
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                (t >= MILLI).then_some(t - MILLI)
            })
            .is_ok()
    }

    fn add(&self, amount: i64) {
        let cap = MAX_RETRY_BURST * MILLI;
        if self.tokens.fetch_add(amount, Ordering::AcqRel) + amount > cap {
            self.tokens.fetch_min(cap, Ordering::AcqRel);
        }
    }

    /// Retries available now (whole ones), for tests and the admin view.
    pub fn available(&self) -> i64 {
        self.tokens.load(Ordering::Acquire) / MILLI
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const SECOND: Duration = Duration::from_secs(1);

    #[tokio::test(start_paused = true)]
    async fn twenty_percent_of_requests_can_be_retried() {
        let t0 = Instant::now();
        let b = RetryBudget::new(20, t0);
        // Spend the starting floor.
        while b.withdraw(t0) {}
        for _ in 0..100 {
            b.deposit();
        }
        let retries = (0..100).filter(|_| b.withdraw(t0)).count();
        assert_eq!(retries, 20);
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_pool_still_gets_ten_retries_a_second() {
        let t0 = Instant::now();
        let b = RetryBudget::new(20, t0);
        while b.withdraw(t0) {}
        assert!(!b.withdraw(t0));
        let t1 = t0 + SECOND;
        let retries = (0..50).filter(|_| b.withdraw(t1)).count();
        assert_eq!(retries, MIN_RETRIES_PER_SEC as usize);
    }

    #[tokio::test(start_paused = true)]
    async fn calm_periods_do_not_fund_a_storm() {
        let t0 = Instant::now();
        let b = RetryBudget::new(20, t0);
        for _ in 0..1_000_000 {
            b.deposit();
        }
        assert_eq!(b.available(), MAX_RETRY_BURST);
        let t1 = t0 + SECOND * 3600;
        let retries = (0..10_000).filter(|_| b.withdraw(t1)).count();
        assert_eq!(retries as i64, MAX_RETRY_BURST);
    }

    #[tokio::test(start_paused = true)]
    async fn a_zero_percent_budget_leaves_only_the_floor() {
        let t0 = Instant::now();
        let b = RetryBudget::new(0, t0);
        while b.withdraw(t0) {}
        for _ in 0..1000 {
            b.deposit();
        }
        assert!(!b.withdraw(t0));
    }
}
