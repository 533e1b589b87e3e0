//! Smooth weighted round-robin (nginx's algorithm): every pick adds each candidate's weight to
//! its running score, picks the highest, and subtracts the total from the winner. Weights
//! 5,1,1 give `a a b a c a a`, not `a a a a a b c`: heavy endpoints are interleaved, never
//! bursted.

use std::sync::{Arc, Mutex};

use tokio::time::Instant;

use super::{Balancer, Endpoint};

pub struct RoundRobin {
    /// Running score per endpoint index; the lock covers one pass over a small vector.
    current: Mutex<Vec<i64>>,
}

impl RoundRobin {
    pub fn new(n: usize) -> Self {
        RoundRobin {
            current: Mutex::new(vec![0; n]),
        }
    }
}

impl Balancer for RoundRobin {
    fn pick(
        &self,
        endpoints: &[Arc<Endpoint>],
        candidates: &[usize],
        _rng: &mut fastrand::Rng,
        now: Instant,
    ) -> usize {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if current.len() < endpoints.len() {
            current.resize(endpoints.len(), 0);
        }
        let mut total = 0i64;
        let mut best = candidates[0];
        for &i in candidates {
            let w = endpoints[i].effective_weight(now) as i64;
            current[i] += w;
            total += w;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::pick;

    #[tokio::test(start_paused = true)]
    async fn weights_are_interleaved_smoothly() {
        let now = Instant::now();
        let eps: Vec<_> = [5, 1, 1]
            .iter()
            .enumerate()
            .map(|(i, w)| Endpoint::new(([127, 0, 0, 1], 9000 + i as u16).into(), *w, now))
            .collect();
        let rr = RoundRobin::new(3);
        let mut rng = fastrand::Rng::with_seed(1);
        let seq: Vec<usize> = (0..7)
            .map(|_| pick(&rr, &eps, &[0, 1, 2], &mut rng, now).unwrap())
            .collect();
        assert_eq!(seq, [0, 0, 1, 0, 2, 0, 0]);
    }
}
