//! Balancer invariants (proptest) and behaviour under a simulated load with one slow endpoint.
//! Time is `tokio::time::Instant` under a paused clock and randomness is seeded, so every run
//! is the same.

use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use tokio::time::Instant;

use super::*;

fn endpoints(weights: &[u32], now: Instant) -> Vec<Arc<Endpoint>> {
    weights
        .iter()
        .enumerate()
        .map(|(i, w)| Endpoint::new(([127, 0, 0, 1], 10_000 + i as u16).into(), *w, now))
        .collect()
}

const ALL: [Algorithm; 3] = [
    Algorithm::RoundRobin,
    Algorithm::LeastConnections,
    Algorithm::PeakEwma,
];

// ===== invariants =====

fn paused_now() -> Instant {
    // Proptest bodies are synchronous; a paused current-thread runtime gives a frozen clock.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    rt.block_on(async { Instant::now() })
}

proptest! {
    #[test]
    fn two_distinct_never_repeats(n in 2usize..50, seed: u64) {
        let candidates: Vec<usize> = (0..n).collect();
        let mut rng = fastrand::Rng::with_seed(seed);
        for _ in 0..20 {
            let (a, b) = two_distinct(&candidates, &mut rng);
            prop_assert_ne!(a, b);
            prop_assert!(a < n && b < n);
        }
    }

    #[test]
    fn every_pick_is_a_candidate(
        weights in proptest::collection::vec(1u32..100, 1..12),
        in_flight in proptest::collection::vec(0usize..5, 12),
        mask in proptest::collection::vec(any::<bool>(), 12),
        seed: u64,
    ) {
        let now = paused_now();
        let eps = endpoints(&weights, now);
        let _held: Vec<_> = eps
            .iter()
            .zip(&in_flight)
            .flat_map(|(e, n)| (0..*n).map(|_| e.start(now)).collect::<Vec<_>>())
            .collect();
        let candidates: Vec<usize> = (0..eps.len()).filter(|i| mask[*i]).collect();
        let mut rng = fastrand::Rng::with_seed(seed);
        for alg in ALL {
            let b = alg.build(eps.len());
            for _ in 0..30 {
                match pick(b.as_ref(), &eps, &candidates, &mut rng, now) {
                    None => prop_assert!(candidates.is_empty()),
                    Some(i) => prop_assert!(candidates.contains(&i), "{alg:?} picked {i}"),
                }
            }
        }
    }

    #[test]
    fn round_robin_respects_weights_exactly_per_cycle(
        weights in proptest::collection::vec(1u32..20, 1..8),
        cycles in 1usize..5,
    ) {
        let now = paused_now();
        let eps = endpoints(&weights, now);
        let rr = Algorithm::RoundRobin.build(eps.len());
        let candidates: Vec<usize> = (0..eps.len()).collect();
        let mut rng = fastrand::Rng::with_seed(0);
        let total: u32 = weights.iter().sum();
        let mut counts = vec![0u32; eps.len()];
        for _ in 0..(total as usize * cycles) {
            counts[pick(rr.as_ref(), &eps, &candidates, &mut rng, now).unwrap()] += 1;
        }
        let expected: Vec<u32> = weights.iter().map(|w| w * cycles as u32).collect();
        prop_assert_eq!(counts, expected);
    }

    #[test]
    fn least_connections_full_scan_picks_a_best_score(
        weights in proptest::collection::vec(1u32..10, 2..=least_conn::FULL_SCAN_MAX),
        in_flight in proptest::collection::vec(0usize..6, least_conn::FULL_SCAN_MAX),
        seed: u64,
    ) {
        let now = paused_now();
        let eps = endpoints(&weights, now);
        let _held: Vec<_> = eps
            .iter()
            .zip(&in_flight)
            .flat_map(|(e, n)| (0..*n).map(|_| e.start(now)).collect::<Vec<_>>())
            .collect();
        let score =
            |i: usize| eps[i].effective_weight(now) as f64 / (eps[i].in_flight() as f64 + 1.0);
        let best = (0..eps.len()).map(score).fold(f64::MIN, f64::max);
        let candidates: Vec<usize> = (0..eps.len()).collect();
        let mut rng = fastrand::Rng::with_seed(seed);
        let lc = Algorithm::LeastConnections.build(eps.len());
        let i = pick(lc.as_ref(), &eps, &candidates, &mut rng, now).unwrap();
        prop_assert!((score(i) - best).abs() < 1e-9);
    }

    #[test]
    fn peak_ewma_never_picks_the_unique_costliest(
        rtts_ms in proptest::collection::vec(1u64..100, 2..10),
        seed: u64,
    ) {
        let now = paused_now();
        let eps = endpoints(&vec![1; rtts_ms.len()], now);
        for (e, ms) in eps.iter().zip(&rtts_ms) {
            e.start(now).responded(now + Duration::from_millis(*ms));
        }
        let costs: Vec<f64> = eps.iter().map(|e| e.cost(now)).collect();
        let worst = costs.iter().cloned().fold(f64::MIN, f64::max);
        let unique_worst = costs.iter().filter(|c| **c == worst).count() == 1;
        let candidates: Vec<usize> = (0..eps.len()).collect();
        let mut rng = fastrand::Rng::with_seed(seed);
        for _ in 0..20 {
            let i = pick(&peak_ewma::PeakEwma, &eps, &candidates, &mut rng, now).unwrap();
            prop_assert!(!(unique_worst && costs[i] == worst));
        }
    }
}

// ===== slow start =====

#[tokio::test(start_paused = true)]
async fn slow_start_ramps_the_weight_linearly_from_a_floor() {
    let t0 = Instant::now();
    let e = Endpoint::new(([127, 0, 0, 1], 1).into(), 2, t0);
    assert_eq!(e.effective_weight(t0), 2000);
    let window = Duration::from_secs(10);
    e.start_ramp(t0, window);
    assert_eq!(e.effective_weight(t0), 200, "10 % floor");
    assert_eq!(e.effective_weight(t0 + Duration::from_secs(5)), 1000);
    assert_eq!(e.effective_weight(t0 + window), 2000);
    assert_eq!(
        e.effective_weight(t0 + Duration::from_secs(1)),
        2000,
        "a ramp ends for good"
    );
    e.start_ramp(t0, Duration::ZERO);
    assert_eq!(
        e.effective_weight(t0),
        2000,
        "a zero window disables slow start"
    );
}

#[tokio::test(start_paused = true)]
async fn a_ramping_endpoint_gets_its_share_of_traffic() {
    let now = Instant::now();
    let eps = endpoints(&[1, 1], now);
    eps[1].start_ramp(now, Duration::from_secs(10));
    tokio::time::advance(Duration::from_secs(5)).await;
    let now = Instant::now();
    let rr = Algorithm::RoundRobin.build(2);
    let mut rng = fastrand::Rng::with_seed(5);
    let mut counts = [0; 2];
    for _ in 0..300 {
        counts[pick(rr.as_ref(), &eps, &[0, 1], &mut rng, now).unwrap()] += 1;
    }
    assert_eq!(
        counts,
        [200, 100],
        "half weight while half-way through the ramp"
    );
}

// ===== RAII accounting =====

#[tokio::test(start_paused = true)]
async fn in_flight_is_released_on_every_path() {
    let now = Instant::now();
    let e = Endpoint::new(([127, 0, 0, 1], 1).into(), 1, now);
    {
        let mut ok = e.start(now);
        let _failed = e.start(now);
        let _cancelled = e.start(now);
        ok.responded(now + Duration::from_millis(5));
        assert_eq!(e.in_flight(), 3);
    }
    assert_eq!(e.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_failure_is_recorded_as_a_penalty_not_as_a_fast_answer() {
    let now = Instant::now();
    let e = Endpoint::new(([127, 0, 0, 1], 1).into(), 1, now);
    let mut guard = e.start(now);
    guard.failed(FAILURE_PENALTY);
    drop(guard);
    assert_eq!(e.rtt_estimate(now), FAILURE_PENALTY);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_request_records_its_elapsed_time() {
    let e = Endpoint::new(([127, 0, 0, 1], 1).into(), 1, Instant::now());
    let guard = e.start(Instant::now());
    tokio::time::advance(Duration::from_millis(80)).await;
    drop(guard);
    assert_eq!(e.rtt_estimate(Instant::now()), Duration::from_millis(80));
}

// ===== one slow endpoint, simulated =====

/// A closed-loop simulation: `clients` each send a request, wait for its answer, and send the
/// next, `requests` in all. Endpoint `i` answers after `latency[i]`. Returns requests per
/// endpoint. Discrete-event, with the clock given to the balancer, so it runs in microseconds.
fn simulate(alg: Algorithm, latency: &[Duration], clients: usize, requests: usize) -> Vec<usize> {
    let t0 = paused_now();
    let eps = endpoints(&vec![1; latency.len()], t0);
    let balancer = alg.build(eps.len());
    let candidates: Vec<usize> = (0..eps.len()).collect();
    let mut rng = fastrand::Rng::with_seed(7);
    let mut counts = vec![0; eps.len()];
    let mut pending: Vec<(Instant, InFlight)> = Vec::new();
    let mut issue = |now: Instant, pending: &mut Vec<(Instant, InFlight)>| {
        let i = pick(balancer.as_ref(), &eps, &candidates, &mut rng, now).unwrap();
        counts[i] += 1;
        pending.push((now + latency[i], eps[i].start(now)));
    };
    for _ in 0..clients {
        issue(t0, &mut pending);
    }
    for _ in clients..requests {
        let next = (0..pending.len())
            .min_by_key(|&k| pending[k].0)
            .expect("a request is pending");
        let (done_at, mut guard) = pending.swap_remove(next);
        guard.responded(done_at);
        drop(guard);
        issue(done_at, &mut pending);
    }
    counts
}

const SLOW: [Duration; 3] = [
    Duration::from_millis(1),
    Duration::from_millis(1),
    Duration::from_millis(40),
];

#[test]
fn peak_ewma_sends_almost_nothing_to_a_40x_slower_endpoint() {
    let counts = simulate(Algorithm::PeakEwma, &SLOW, 8, 20_000);
    let share = counts[2] as f64 / 20_000.0;
    assert!(share < 0.01, "slow endpoint got {counts:?}");
}

#[test]
fn least_connections_sends_little_to_a_40x_slower_endpoint_under_concurrency() {
    let counts = simulate(Algorithm::LeastConnections, &SLOW, 8, 20_000);
    let share = counts[2] as f64 / 20_000.0;
    assert!(share < 0.05, "slow endpoint got {counts:?}");
}

#[test]
fn round_robin_ignores_latency() {
    let counts = simulate(Algorithm::RoundRobin, &SLOW, 8, 3_000);
    assert_eq!(counts, [1000, 1000, 1000]);
}
