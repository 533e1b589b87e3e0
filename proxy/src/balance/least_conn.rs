//! Least connections (Envoy's `least_request`): the endpoint with the best
//! `weight / (in_flight + 1)`. Large pools sample two distinct endpoints at random and keep
//! the better (power of two choices: nearly as good as a full scan, O(1), and it avoids the
//! herd that a strict minimum sends to one endpoint). Pools of up to [`FULL_SCAN_MAX`]
//! endpoints are scanned exactly, ties broken at random.

use std::cmp::Ordering;
use std::sync::Arc;

use tokio::time::Instant;

use super::{two_distinct, Balancer, Endpoint};

/// Pools this small are scanned in full: the exact answer costs no more than sampling.
pub const FULL_SCAN_MAX: usize = 4;

pub struct LeastConnections;

/// Compares `weight / (in_flight + 1)` of `a` and `b` exactly, in integers.
fn compare(a: &Endpoint, b: &Endpoint, now: Instant) -> Ordering {
    let lhs = u128::from(a.effective_weight(now)) * (u128::from(b.in_flight()) + 1);
    let rhs = u128::from(b.effective_weight(now)) * (u128::from(a.in_flight()) + 1);
    lhs.cmp(&rhs)
}

impl Balancer for LeastConnections {
    fn pick(
        &self,
        endpoints: &[Arc<Endpoint>],
        candidates: &[usize],
        rng: &mut fastrand::Rng,
        now: Instant,
    ) -> usize {
        if candidates.len() <= FULL_SCAN_MAX {
            let mut best = candidates[0];
            let mut ties = 1u32;
            for &i in &candidates[1..] {
                match compare(&endpoints[i], &endpoints[best], now) {
                    Ordering::Greater => {
                        best = i;
                        ties = 1;
                    }
                    Ordering::Equal => {
                        // Reservoir sampling: each of the k tied endpoints wins with 1/k.
                        ties += 1;
                        if rng.u32(..ties) == 0 {
                            best = i;
                        }
                    }
                    Ordering::Less => {}
                }
            }
            return best;
        }
        let (a, b) = two_distinct(candidates, rng);
        match compare(&endpoints[a], &endpoints[b], now) {
            Ordering::Less => b,
            _ => a,
        }
    }
}
