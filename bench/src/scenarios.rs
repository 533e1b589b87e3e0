//! Named scenarios. Each starts fresh upstreams and a fresh process per system, drives
//! open-loop load, and returns one row per system.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Mutex;

use crate::load::{open_loop, Stats};
use crate::systems::{self, on_path, System, Tuning};
use crate::upstream::Upstream;

/// Settings shared by every scenario.
#[derive(Debug, Clone)]
pub struct Options {
    /// Length of each measured run.
    pub duration: Duration,
    /// Our proxy's binary (release build for real numbers).
    pub proxy_bin: PathBuf,
    /// Multiplies every scenario's request rate (the CI smoke test runs at a fraction).
    pub rate_scale: f64,
}

/// One system's result in one scenario.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub scenario: String,
    pub system: String,
    pub rate: f64,
    #[serde(flatten)]
    pub stats: Stats,
    /// CPU seconds the system under test used during the run.
    pub cpu_seconds: f64,
    /// Our proxy only: retries made, and retries refused by the budget.
    pub retries: u64,
    pub retries_refused: u64,
}

/// A scenario's rows, and the peers it could not run.
#[derive(Debug, Default, Serialize)]
pub struct Outcome {
    pub rows: Vec<Row>,
    pub skipped: Vec<String>,
}

/// A system's label and how to start it in front of the given upstreams.
type Starter = (
    &'static str,
    Box<dyn Fn(&[std::net::SocketAddr]) -> Result<System, String>>,
);

/// Our three algorithms, HAProxy and nginx (when installed), under `tuning`.
fn systems(opts: &Options, tuning: Tuning, outcome: &mut Outcome) -> Vec<Starter> {
    let bin = opts.proxy_bin.clone();
    let mut list: Vec<Starter> = Vec::new();
    for algorithm in ["peak-ewma", "least-connections", "round-robin"] {
        let bin = bin.clone();
        list.push((
            "ours",
            Box::new(move |ups| systems::ours(&bin, ups, algorithm, tuning)),
        ));
    }
    if on_path("haproxy") {
        list.push((
            "haproxy",
            Box::new(move |ups| systems::haproxy(ups, "leastconn", tuning)),
        ));
    } else {
        outcome.skipped.push("haproxy (not on PATH)".into());
    }
    if on_path("nginx") {
        list.push((
            "nginx",
            Box::new(move |ups| systems::nginx(ups, "least_conn", tuning)),
        ));
    } else {
        outcome.skipped.push("nginx (not on PATH)".into());
    }
    list
}

/// Synthetic upstreams with these latencies in milliseconds.
async fn upstreams(latencies_ms: &[u64]) -> Result<Vec<Upstream>, String> {
    let mut ups = Vec::with_capacity(latencies_ms.len());
    for ms in latencies_ms {
        ups.push(
            Upstream::start(Duration::from_millis(*ms))
                .await
                .map_err(|e| format!("cannot start an upstream: {e}"))?,
        );
    }
    Ok(ups)
}

async fn measure(
    scenario: &str,
    system: System,
    rate: f64,
    duration: Duration,
    events: Vec<(Duration, Box<dyn FnOnce() + Send>)>,
) -> Row {
    let cpu_before = system.cpu_seconds();
    let stats = open_loop(&system.url, rate, duration, events).await;
    Row {
        scenario: scenario.into(),
        system: system.name.clone(),
        rate,
        cpu_seconds: system.cpu_seconds() - cpu_before,
        retries: system.counter("proxy_retries_total{"),
        retries_refused: system.counter("proxy_retry_budget_exhausted_total{"),
        stats,
    }
}

/// One of three upstreams 40× slower (40 ms vs 1 ms), 1500 req/s open-loop: does the
/// balancer keep the tail near the fast upstreams' latency?
pub async fn slow_upstream(opts: &Options, progress: &dyn Fn(&str)) -> Outcome {
    let mut outcome = Outcome::default();
    let rate = 1500.0 * opts.rate_scale;
    let starters = systems(opts, Tuning::Balance, &mut outcome);
    for (label, start) in starters {
        let ups = match upstreams(&[1, 1, 40]).await {
            Ok(u) => u,
            Err(e) => {
                outcome.skipped.push(format!("{label}: {e}"));
                continue;
            }
        };
        let addrs: Vec<_> = ups.iter().map(|u| u.addr).collect();
        match start(&addrs) {
            Ok(system) => {
                progress(&format!("slow-upstream: {}", system.name));
                let row = measure("slow-upstream", system, rate, opts.duration, Vec::new()).await;
                outcome.rows.push(row);
            }
            Err(e) => outcome.skipped.push(format!("{label}: {e}")),
        }
    }
    outcome
}

/// What happens to one upstream mid-run.
#[derive(Debug, Clone, Copy)]
pub enum Failure {
    /// Killed at 30 % of the run, restarted at 70 %.
    Kill,
    /// Hung (accepts, never answers) at 30 %, resumed at 70 %.
    Hang,
}

/// Three 1 ms upstreams at 2000 req/s open-loop; one fails mid-run and recovers.
pub async fn failover(opts: &Options, failure: Failure, progress: &dyn Fn(&str)) -> Outcome {
    let mut outcome = Outcome::default();
    let rate = 2000.0 * opts.rate_scale;
    let scenario = match failure {
        Failure::Kill => "failover-kill",
        Failure::Hang => "failover-hang",
    };
    let starters = systems(opts, Tuning::Failover, &mut outcome);
    for (label, start) in starters {
        let mut ups = match upstreams(&[1, 1, 1]).await {
            Ok(u) => u,
            Err(e) => {
                outcome.skipped.push(format!("{label}: {e}"));
                continue;
            }
        };
        let addrs: Vec<_> = ups.iter().map(|u| u.addr).collect();
        let victim = Arc::new(Mutex::new(ups.pop().expect("three upstreams")));
        let system = match start(&addrs) {
            Ok(s) => s,
            Err(e) => {
                outcome.skipped.push(format!("{label}: {e}"));
                continue;
            }
        };
        progress(&format!("{scenario}: {}", system.name));
        let (fail, recover) = (victim.clone(), victim.clone());
        let events: Vec<(Duration, Box<dyn FnOnce() + Send>)> = vec![
            (
                opts.duration.mul_f64(0.3),
                Box::new(move || {
                    tokio::spawn(async move {
                        let mut u = fail.lock().await;
                        match failure {
                            Failure::Kill => u.kill(),
                            Failure::Hang => u.set_hang(true),
                        }
                    });
                }),
            ),
            (
                opts.duration.mul_f64(0.7),
                Box::new(move || {
                    tokio::spawn(async move {
                        let mut u = recover.lock().await;
                        match failure {
                            Failure::Kill => {
                                let _ = u.restart().await;
                            }
                            Failure::Hang => u.set_hang(false),
                        }
                    });
                }),
            ),
        ];
        let row = measure(scenario, system, rate, opts.duration, events).await;
        outcome.rows.push(row);
    }
    outcome
}
