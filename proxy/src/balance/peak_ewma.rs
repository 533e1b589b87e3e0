//! Peak-EWMA (Finagle, tower, linkerd2-proxy): the cost of an endpoint is its RTT estimate
//! times its in-flight requests plus one (divided by its weight), and the cheaper of two
//! distinct random endpoints wins. Especially sensitive to worst-case latency: a slow endpoint
//! is noticed on its first slow answer and then receives almost nothing until its estimate has
//! decayed, while a fast endpoint that is building a queue is spread away from as well.
//! See [`super::ewma`] for the estimate.

use std::sync::Arc;

use tokio::time::Instant;

use super::{two_distinct, Balancer, Endpoint};

pub struct PeakEwma;

impl Balancer for PeakEwma {
    fn pick(
        &self,
        endpoints: &[Arc<Endpoint>],
        candidates: &[usize],
        rng: &mut fastrand::Rng,
        now: Instant,
    ) -> usize {
        let (a, b) = two_distinct(candidates, rng);
        if endpoints[b].cost(now) < endpoints[a].cost(now) {
            b
        } else {
            a
        }
    }
}
