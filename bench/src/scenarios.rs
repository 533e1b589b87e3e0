//! Named scenarios. Each starts fresh upstreams and a fresh process per system, drives
//! open-loop load, and returns one row per system.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Mutex;

use crate::load::{closed_loop, histogram, open_loop, wrk, Generator, Stats};
use crate::service::{self, Backing, CacheMode, Http};
use crate::systems::{self, on_path, System, Tuning};
use crate::upstream::{Profile, Upstream, UpstreamProcess};

/// Settings shared by every scenario.
#[derive(Debug, Clone)]
pub struct Options {
    /// Length of each measured run.
    pub duration: Duration,
    /// Our proxy's binary (release build for real numbers).
    pub proxy_bin: PathBuf,
    /// Multiplies every scenario's request rate (the CI smoke test runs at a fraction).
    pub rate_scale: f64,
    /// The course-service binary (the `cache` scenario).
    pub service_bin: PathBuf,
    /// The bench binary itself: `bench upstream` runs upstreams as processes of their own.
    pub bench_bin: PathBuf,
    /// How many times `overhead` measures each system's closed-loop maximum (the systems
    /// taking turns); the median run is reported.
    pub rounds: usize,
}

/// One system's result in one scenario.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Row {
    pub scenario: String,
    pub system: String,
    /// Open loop: the request rate; 0 for closed loop.
    pub rate: f64,
    /// Closed loop: the connections; 0 for open loop.
    pub connections: usize,
    /// Who drove it: for closed loop, wrk or the built-in loop; for open loop, `Paced`
    /// when the lean paced generator did (`None`: one connection per concurrent request).
    pub generator: Option<Generator>,
    #[serde(flatten)]
    pub stats: Stats,
    /// CPU seconds the system under test used during the run.
    pub cpu_seconds: f64,
    /// Our proxy only: retries made, and retries refused by the budget.
    pub retries: u64,
    pub retries_refused: u64,
    /// Our proxy only: configuration reloads applied during the run.
    pub reloads: u64,
    /// Closed loop measured several times: every run's req/s, in the order run (the row
    /// itself is the median run). Empty for a single run.
    pub rounds: Vec<f64>,
    /// The `catalogue` scenario: which cell of its grid this row is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub catalogue: Option<crate::catalogue::Cell>,
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
    systems_with(
        opts,
        &["peak-ewma", "least-connections", "round-robin"],
        Peers::LeastConnections,
        tuning,
        outcome,
    )
}

/// How HAProxy and nginx balance.
#[derive(Clone, Copy)]
enum Peers {
    /// `leastconn` / `least_conn`: the setup.
    LeastConnections,
    /// Their default round robin, against ours, to compare the request path with the
    /// balancing policy held equal.
    RoundRobin,
}

/// Ours with each of `algorithms`, HAProxy and nginx (when installed) balancing as `peers`
/// says, under `tuning`.
fn systems_with(
    opts: &Options,
    algorithms: &[&'static str],
    peers: Peers,
    tuning: Tuning,
    outcome: &mut Outcome,
) -> Vec<Starter> {
    let bin = opts.proxy_bin.clone();
    let mut list: Vec<Starter> = Vec::new();
    for &algorithm in algorithms {
        let bin = bin.clone();
        list.push((
            "ours",
            Box::new(move |ups| systems::ours(&bin, ups, algorithm, tuning)),
        ));
    }
    let (haproxy, nginx) = match peers {
        Peers::LeastConnections => ("leastconn", "least_conn"),
        Peers::RoundRobin => ("roundrobin", systems::NGINX_ROUND_ROBIN),
    };
    if on_path("haproxy") {
        list.push((
            "haproxy",
            Box::new(move |ups| systems::haproxy(ups, haproxy, tuning)),
        ));
    } else {
        skip_once(outcome, "haproxy (not on PATH)");
    }
    if on_path("nginx") {
        list.push((
            "nginx",
            Box::new(move |ups| systems::nginx(ups, nginx, tuning)),
        ));
    } else {
        skip_once(outcome, "nginx (not on PATH)");
    }
    list
}

fn skip_once(outcome: &mut Outcome, what: &str) {
    if !outcome.skipped.iter().any(|s| s == what) {
        outcome.skipped.push(what.into());
    }
}

/// Synthetic upstreams with these profiles (seeded 1, 2, 3…: every system meets the same
/// sequence of latencies and errors).
async fn upstreams(profiles: &[Profile]) -> Result<Vec<Upstream>, String> {
    let mut ups = Vec::with_capacity(profiles.len());
    for (i, profile) in profiles.iter().enumerate() {
        ups.push(
            Upstream::with_profile(*profile, i as u64 + 1)
                .await
                .map_err(|e| format!("cannot start an upstream: {e}"))?,
        );
    }
    Ok(ups)
}

/// Upstreams answering after these fixed latencies in milliseconds.
async fn fixed_upstreams(latencies_ms: &[u64]) -> Result<Vec<Upstream>, String> {
    let profiles: Vec<Profile> = latencies_ms
        .iter()
        .map(|ms| Profile::fixed(Duration::from_millis(*ms)))
        .collect();
    upstreams(&profiles).await
}

/// What a run measures: a name, a URL, and the process whose CPU and counters are read
/// (none for the direct run).
#[derive(Clone)]
struct Target<'a> {
    name: String,
    url: String,
    system: Option<&'a System>,
}

impl<'a> Target<'a> {
    fn of(system: &'a System) -> Self {
        Target {
            name: system.name.clone(),
            url: system.url.clone(),
            system: Some(system),
        }
    }

    fn cpu_seconds(&self) -> f64 {
        self.system.map_or(0.0, System::cpu_seconds)
    }

    fn counter(&self, prefix: &str) -> u64 {
        self.system.map_or(0, |s| s.counter(prefix))
    }

    /// The open-loop row of a run that began when the system had used `cpu_before`.
    fn row(&self, scenario: &str, rate: f64, cpu_before: f64, stats: Stats) -> Row {
        Row {
            scenario: scenario.into(),
            system: self.name.clone(),
            rate,
            cpu_seconds: self.cpu_seconds() - cpu_before,
            retries: self.counter("proxy_retries_total{"),
            retries_refused: self.counter("proxy_retry_budget_exhausted_total{"),
            stats,
            ..Row::default()
        }
    }
}

async fn measure(
    scenario: &str,
    target: &Target<'_>,
    rate: f64,
    duration: Duration,
    events: Vec<(Duration, Box<dyn FnOnce() + Send>)>,
) -> Row {
    let label = format!("{scenario}: {}", target.name);
    let cpu_before = target.cpu_seconds();
    let stats = open_loop(&label, &target.url, rate, duration, events).await;
    target.row(scenario, rate, cpu_before, stats)
}

/// Closed-loop maximum throughput at the target over [`MAX_CONNECTIONS`].
async fn measure_max(scenario: &str, target: &Target<'_>, duration: Duration) -> Row {
    let label = format!("{scenario}: {}", target.name);
    let (url, connections) = (&target.url, MAX_CONNECTIONS);
    let cpu_before = target.cpu_seconds();
    let by_wrk = if on_path("wrk") {
        wrk(&label, url, connections, duration).await
    } else {
        None
    };
    let (stats, generator) = match by_wrk {
        Some(stats) => (stats, Generator::Wrk),
        None => (
            closed_loop(&label, url, connections, duration).await,
            Generator::BuiltIn,
        ),
    };
    Row {
        scenario: scenario.into(),
        system: target.name.clone(),
        connections,
        generator: Some(generator),
        cpu_seconds: target.cpu_seconds() - cpu_before,
        stats,
        ..Row::default()
    }
}

/// One of three upstreams 40× slower (40 ms vs 1 ms), 1500 req/s open-loop: does the
/// balancer keep the tail near the fast upstreams' latency?
pub async fn slow_upstream(opts: &Options, progress: &dyn Fn(&str)) -> Outcome {
    let ms = |n| Profile::fixed(Duration::from_millis(n));
    balancing(
        "slow-upstream",
        &[ms(1), ms(1), ms(40)],
        1500.0,
        opts,
        progress,
    )
    .await
}

/// Every system in front of upstreams with these `profiles`, at `rate` req/s open-loop:
/// the `custom` scenario, and `slow-upstream`'s shape.
pub async fn balancing(
    scenario: &str,
    profiles: &[Profile],
    rate: f64,
    opts: &Options,
    progress: &dyn Fn(&str),
) -> Outcome {
    let mut outcome = Outcome::default();
    let rate = rate * opts.rate_scale;
    let starters = systems(opts, Tuning::Balance, &mut outcome);
    for (label, start) in starters {
        let ups = match upstreams(profiles).await {
            Ok(u) => u,
            Err(e) => {
                outcome.skipped.push(format!("{label}: {e}"));
                continue;
            }
        };
        let addrs: Vec<_> = ups.iter().map(|u| u.addr).collect();
        match start(&addrs) {
            Ok(system) => {
                progress(&format!("{scenario}: {}", system.name));
                let row = measure(
                    scenario,
                    &Target::of(&system),
                    rate,
                    opts.duration,
                    Vec::new(),
                )
                .await;
                outcome.rows.push(row);
            }
            Err(e) => outcome.skipped.push(format!("{label}: {e}")),
        }
    }
    outcome
}

/// What happens to one upstream (a process of its own) mid-run.
#[derive(Debug, Clone, Copy)]
pub enum Failure {
    /// SIGKILLed at 30 % of the run, restarted on its port at 70 %.
    Kill,
    /// SIGSTOPped at 30 % (the kernel still accepts, nothing answers), SIGCONTed at 70 %.
    Hang,
    /// Cut off by a network partition at 30 % (every packet to and from its port dropped:
    /// connects get no answer at all), healed at 70 %. Needs root and `nft`.
    Partition,
}

/// A partition the harness made, deleted (and forgotten by the reaper) when dropped.
struct Cut(shared::testbed::Partition);

impl Cut {
    fn new(port: u16) -> Result<Cut, String> {
        let cut = shared::testbed::Partition::try_cut(port)?;
        crate::reaper::track_table(cut.table());
        Ok(Cut(cut))
    }
}

impl Drop for Cut {
    fn drop(&mut self) {
        crate::reaper::untrack_table(self.0.table());
    }
}

/// Three 1 ms upstreams at 2000 req/s open-loop; one fails mid-run and recovers.
pub async fn failover(opts: &Options, failure: Failure, progress: &dyn Fn(&str)) -> Outcome {
    let mut outcome = Outcome::default();
    let rate = 2000.0 * opts.rate_scale;
    let scenario = match failure {
        Failure::Kill => "failover-kill",
        Failure::Hang => "failover-hang",
        Failure::Partition => "failover-partition",
    };
    if matches!(failure, Failure::Partition) {
        // Can this machine cut a port off at all (root, nft)?
        if let Err(e) = Cut::new(shared::testbed::free_port()) {
            outcome.skipped.push(format!("{scenario}: {e}"));
            return outcome;
        }
    }
    let starters = systems(opts, Tuning::Failover, &mut outcome);
    for (label, start) in starters {
        let ups: Result<Vec<UpstreamProcess>, String> = (1..=3)
            .map(|seed| UpstreamProcess::start(&opts.bench_bin, "1ms", seed))
            .collect();
        let mut ups = match ups {
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
        let port = addrs[2].port();
        let cut: Arc<std::sync::Mutex<Option<Cut>>> = Arc::default();
        let (cutting, healing) = (cut.clone(), cut.clone());
        // Signals and process starts block briefly: off the runtime's threads.
        let events: Vec<(Duration, Box<dyn FnOnce() + Send>)> = vec![
            (
                opts.duration.mul_f64(0.3),
                Box::new(move || {
                    tokio::task::spawn_blocking(move || {
                        let mut u = fail.blocking_lock();
                        match failure {
                            Failure::Kill => u.kill(),
                            Failure::Hang => u.freeze(true),
                            Failure::Partition => match Cut::new(port) {
                                Ok(c) => {
                                    *cutting.lock().unwrap_or_else(|p| p.into_inner()) = Some(c)
                                }
                                Err(e) => eprintln!("bench: {e}"),
                            },
                        }
                    });
                }),
            ),
            (
                opts.duration.mul_f64(0.7),
                Box::new(move || {
                    tokio::task::spawn_blocking(move || {
                        let mut u = recover.blocking_lock();
                        match failure {
                            Failure::Kill => {
                                let _ = u.restart();
                            }
                            Failure::Hang => u.freeze(false),
                            Failure::Partition => {
                                healing.lock().unwrap_or_else(|p| p.into_inner()).take();
                            }
                        }
                    });
                }),
            ),
        ];
        let row = measure(scenario, &Target::of(&system), rate, opts.duration, events).await;
        // Healed however the run ended.
        cut.lock().unwrap_or_else(|p| p.into_inner()).take();
        outcome.rows.push(row);
    }
    outcome
}

/// Connections of the closed-loop runs (wrk's usual `-c64`), and of the paced open-loop
/// ones.
pub const MAX_CONNECTIONS: usize = 64;

/// The `overhead-<N>k` rates: each system at the same high open-loop rates, with the lean
/// paced generator, for the latency each adds at a given throughput.
pub const PACED_RATES: [f64; 3] = [20_000.0, 40_000.0, 60_000.0];

/// Open loop at `rate` over [`MAX_CONNECTIONS`] connections with [`crate::paced`]. The
/// scenario is named after the rate (`overhead-40k`).
async fn measure_paced(target: &Target<'_>, rate: f64, duration: Duration) -> Row {
    let scenario = format!("overhead-{}k", (rate / 1000.0).round());
    let label = format!("{scenario}: {}", target.name);
    let cpu_before = target.cpu_seconds();
    let stats = crate::paced::run(&label, &target.url, rate, duration, MAX_CONNECTIONS).await;
    Row {
        generator: Some(Generator::Paced),
        ..target.row(&scenario, rate, cpu_before, stats)
    }
}

/// Each system in front of three upstreams, against the direct run (one client, one of the
/// upstreams): closed-loop maximum throughput, for the peers also without header work (the
/// published setup); latency at a fixed open-loop rate, then at each of [`PACED_RATES`]; last,
/// closed-loop throughput behind HTTPS.
pub async fn overhead(opts: &Options, progress: &dyn Fn(&str)) -> Outcome {
    let mut outcome = Outcome::default();
    let rate = 5000.0 * opts.rate_scale;
    // Upstreams in processes of their own, as they would be: not sharing the load
    // generator's runtime.
    let ups: Result<Vec<UpstreamProcess>, String> = (1..=3)
        .map(|seed| UpstreamProcess::start(&opts.bench_bin, "0ms", seed))
        .collect();
    let ups = match ups {
        Ok(u) => u,
        Err(e) => {
            outcome.skipped.push(format!("overhead: {e}"));
            return outcome;
        }
    };
    let addrs: Vec<_> = ups.iter().map(|u| u.addr).collect();
    let direct = Target {
        name: "direct (one upstream)".into(),
        url: format!("http://{}/", addrs[0]),
        system: None,
    };
    let algorithms = ["least-connections", "peak-ewma"];
    let peers = Peers::LeastConnections;
    let same_work = systems_with(opts, &algorithms, peers, Tuning::Balance, &mut outcome);
    let same_work = start_each(same_work, &addrs, None, &mut outcome);
    // Everyone round robin: the request path compared with the policy held equal.
    let rr = Peers::RoundRobin;
    let round_robin = systems_with(opts, &["round-robin"], rr, Tuning::Balance, &mut outcome);
    let round_robin = start_each(round_robin, &addrs, Some("round-robin"), &mut outcome);
    let bare = systems_with(opts, &[], peers, Tuning::Bare, &mut outcome);
    let bare = start_each(bare, &addrs, Some("no headers"), &mut outcome);
    // The access log's cost: the same proxy writing a JSON line per request to a file.
    let bin = opts.proxy_bin.clone();
    let logged: Vec<Starter> = vec![(
        "ours",
        Box::new(move |ups| systems::ours(&bin, ups, "peak-ewma", Tuning::AccessLog)),
    )];
    let logged = start_each(logged, &addrs, Some("access log"), &mut outcome);
    let targets: Vec<Target> = std::iter::once(direct.clone())
        .chain(
            same_work
                .iter()
                .chain(&logged)
                .chain(&round_robin)
                .chain(&bare)
                .map(Target::of),
        )
        .collect();
    let max = max_rounds("overhead-max", &targets, opts, progress).await;
    outcome.rows.extend(max);
    drop((round_robin, bare));

    for target in std::iter::once(direct).chain(same_work.iter().chain(&logged).map(Target::of)) {
        progress(&format!("overhead: {}, open loop", target.name));
        let row = measure("overhead-rate", &target, rate, opts.duration, Vec::new()).await;
        outcome.rows.push(row);
        for paced in PACED_RATES.map(|r| r * opts.rate_scale) {
            let row = measure_paced(&target, paced, opts.duration);
            outcome.rows.push(row.await);
        }
    }
    drop((same_work, logged));

    // The same systems behind HTTPS, closed loop (wrk speaks TLS; the built-in loop does not).
    if !on_path("wrk") {
        outcome
            .skipped
            .push("overhead-tls-max (wrk drives HTTPS; not on PATH)".into());
        return outcome;
    }
    let tls = systems_with(opts, &algorithms, peers, Tuning::Tls, &mut outcome);
    let tls = start_each(tls, &addrs, Some("https"), &mut outcome);
    let targets: Vec<Target> = tls.iter().map(Target::of).collect();
    let max = max_rounds("overhead-tls-max", &targets, opts, progress).await;
    outcome.rows.extend(max);
    outcome
}

/// Starts each of `starters` in front of `addrs`; a system that cannot start is reported as
/// skipped (marked with `how`, when given).
fn start_each(
    starters: Vec<Starter>,
    addrs: &[std::net::SocketAddr],
    how: Option<&str>,
    outcome: &mut Outcome,
) -> Vec<System> {
    let mut started = Vec::new();
    for (label, start) in starters {
        match start(addrs) {
            Ok(system) => started.push(system),
            Err(e) => outcome.skipped.push(match how {
                Some(how) => format!("{label} ({how}): {e}"),
                None => format!("{label}: {e}"),
            }),
        }
    }
    started
}

/// The closed-loop maximum of each target, measured `opts.rounds` times with the targets
/// taking turns, so that a slow spell of the machine (closed-loop req/s moves by about 8 %
/// between runs here) falls on all of them alike. Each target's row is its median run.
async fn max_rounds(
    scenario: &str,
    targets: &[Target<'_>],
    opts: &Options,
    progress: &dyn Fn(&str),
) -> Vec<Row> {
    let rounds = opts.rounds.max(1);
    let mut runs: Vec<Vec<Row>> = targets.iter().map(|_| Vec::new()).collect();
    for round in 1..=rounds {
        for (target, runs) in targets.iter().zip(&mut runs) {
            progress(&format!(
                "{scenario}: {} (run {round} of {rounds})",
                target.name
            ));
            runs.push(measure_max(scenario, target, opts.duration).await);
        }
    }
    runs.into_iter().map(median_run).collect()
}

/// The run with the median req/s (the lower of the middle two for an even count, the
/// conservative side), carrying every run's req/s in `rounds` when there was more than one.
fn median_run(mut runs: Vec<Row>) -> Row {
    let all: Vec<f64> = runs.iter().map(|r| r.stats.throughput).collect();
    runs.sort_by(|a, b| a.stats.throughput.total_cmp(&b.stats.throughput));
    let mut median = runs.swap_remove((runs.len() - 1) / 2);
    if all.len() > 1 {
        median.rounds = all;
    }
    median
}

/// Our proxy at 2000 req/s while `upstreams.toml` is edited three times (an endpoint
/// removed, added back, the algorithm changed), each saved by rename as editors do. HAProxy
/// and nginx reload by re-reading their whole configuration (a new worker), which is a
/// different operation, so they are not run.
pub async fn reload(opts: &Options, progress: &dyn Fn(&str)) -> Outcome {
    let mut outcome = Outcome::default();
    outcome
        .skipped
        .push("reload: haproxy, nginx (no equivalent live edit of one upstream list)".into());
    let rate = 2000.0 * opts.rate_scale;
    let ups = match fixed_upstreams(&[1, 1, 1]).await {
        Ok(u) => u,
        Err(e) => {
            outcome.skipped.push(format!("reload: {e}"));
            return outcome;
        }
    };
    let addrs: Vec<_> = ups.iter().map(|u| u.addr).collect();
    let system = match systems::ours(&opts.proxy_bin, &addrs, "peak-ewma", Tuning::Balance) {
        Ok(s) => s,
        Err(e) => {
            outcome.skipped.push(format!("reload: {e}"));
            return outcome;
        }
    };
    progress(&format!("reload: {}", system.name));
    let file = system.file("upstreams.toml");
    let pool = |algorithm: &str, addrs: &[std::net::SocketAddr]| {
        let endpoints: Vec<String> = addrs
            .iter()
            .map(|a| format!("{{ addr = \"{a}\" }}"))
            .collect();
        format!(
            "[pool.bench]\nalgorithm = \"{algorithm}\"\nendpoints = [{}]\n",
            endpoints.join(", ")
        )
    };
    let edits = [
        (0.25, pool("peak-ewma", &addrs[..2])),
        (0.5, pool("peak-ewma", &addrs)),
        (0.75, pool("round-robin", &addrs)),
    ];
    let events: Vec<(Duration, Box<dyn FnOnce() + Send>)> = edits
        .into_iter()
        .map(|(at, text)| {
            let file = file.clone();
            let event: Box<dyn FnOnce() + Send> = Box::new(move || {
                let tmp = file.with_extension("toml.new");
                if std::fs::write(&tmp, text).is_ok() {
                    let _ = std::fs::rename(&tmp, &file);
                }
            });
            (opts.duration.mul_f64(at), event)
        })
        .collect();
    let reloads_before = system.counter("proxy_config_reloads_total{result=\"ok\"}");
    let mut row = measure("reload", &Target::of(&system), rate, opts.duration, events).await;
    row.reloads = system.counter("proxy_config_reloads_total{result=\"ok\"}") - reloads_before;
    outcome.rows.push(row);
    outcome
}

/// Cached vs uncached `GET /api/courses` through the real service (SecantusDB seeded with the
/// 50 shipped courses; three instances per mode): closed-loop throughput on one instance and
/// through our proxy, and, with a cache, how long after a write's answer every other instance
/// serves the new data.
pub async fn cache(opts: &Options, progress: &dyn Fn(&str)) -> Outcome {
    let mut outcome = Outcome::default();
    if !opts.service_bin.is_file() {
        outcome.skipped.push(format!(
            "cache: {} not found (cargo build --release -p course-service)",
            opts.service_bin.display()
        ));
        return outcome;
    }
    progress("cache: starting SecantusDB and redis-server, seeding");
    let backing = match Backing::start(&opts.service_bin) {
        Ok(b) => b,
        Err(e) => {
            outcome.skipped.push(format!("cache: {e}"));
            return outcome;
        }
    };
    for mode in [
        CacheMode::Off,
        CacheMode::Memory,
        CacheMode::Redis,
        CacheMode::RedisOnly,
    ] {
        if mode.uses_redis() && backing.redis_url.is_none() {
            outcome.skipped.push(format!(
                "cache: {} (redis-server not installed)",
                mode.label()
            ));
            continue;
        }
        let instances = match service::instances(&opts.service_bin, &backing, mode, 3).await {
            Ok(i) => i,
            Err(e) => {
                outcome
                    .skipped
                    .push(format!("cache: {}: {e}", mode.label()));
                continue;
            }
        };
        progress(&format!("cache: {}", mode.label()));
        let one = &instances[0];
        let target = Target {
            name: mode.label().into(),
            url: format!("{}api/courses", one.url),
            system: Some(one),
        };
        let row = measure_max("cache-one-instance", &target, opts.duration).await;
        outcome.rows.push(row);
        let proxy = match systems::ours(
            &opts.proxy_bin,
            &service::addrs(&instances),
            "least-connections",
            Tuning::Balance,
        ) {
            Ok(p) => p,
            Err(e) => {
                outcome.skipped.push(format!("cache: proxy: {e}"));
                continue;
            }
        };
        service::wait_idle(&instances).await;
        // CPU is left out: it is spread over the proxy and three instances.
        let target = Target {
            name: mode.label().into(),
            url: format!("{}api/courses", proxy.url),
            system: None,
        };
        let row = measure_max("cache-via-proxy", &target, opts.duration).await;
        outcome.rows.push(row);
        if mode != CacheMode::Off {
            service::wait_idle(&instances).await;
            let urls: Vec<String> = instances.iter().map(|s| s.url.clone()).collect();
            match freshness(&urls, mode.label(), opts.duration).await {
                Ok(row) => outcome.rows.push(row),
                Err(e) => outcome.skipped.push(format!("cache-freshness: {e}")),
            }
        }
    }
    outcome
}

/// Writes through the first instance, one after another for `duration` (at most 2000), each
/// followed by polling every other instance until it serves the new price: the time from the
/// write's answer until all of them do.
pub(crate) async fn freshness(
    instances: &[String],
    label: &str,
    duration: Duration,
) -> Result<Row, String> {
    const GIVE_UP: Duration = Duration::from_secs(5);
    let http = Http::new();
    let (_, _, body) = http
        .get(&format!("{}api/courses?per_page=1", instances[0]))
        .await?;
    let listing: serde_json::Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
    let id = listing["items"][0]["id"]
        .as_str()
        .ok_or("the seeded catalogue is empty")?
        .to_string();
    let item = |base: &String| format!("{base}api/courses/{id}");
    let mut hist = histogram();
    let (mut sent, mut failed) = (0u64, 0u64);
    let start = tokio::time::Instant::now();
    let mut shown = start;
    while start.elapsed() < duration && sent < 2000 {
        if shown.elapsed() >= Duration::from_millis(500) {
            eprint!("\r  cache-freshness: {label}: {sent} writes   ");
            shown = tokio::time::Instant::now();
        }
        // Every reader has the current version cached before the write.
        for s in &instances[1..] {
            http.get(&item(s)).await?;
        }
        sent += 1;
        let price = 100 + sent;
        let (status, _) = http
            .patch(&item(&instances[0]), format!("{{\"price_cents\":{price}}}"))
            .await?;
        let written = tokio::time::Instant::now();
        if status != 200 {
            failed += 1;
            continue;
        }
        let needle = format!("\"price_cents\":{price}");
        let mut seen_everywhere = true;
        for s in &instances[1..] {
            loop {
                let (_, _, body) = http.get(&item(s)).await?;
                if String::from_utf8_lossy(&body).contains(&needle) {
                    break;
                }
                if written.elapsed() > GIVE_UP {
                    seen_everywhere = false;
                    break;
                }
                tokio::time::sleep(Duration::from_micros(250)).await;
            }
        }
        if seen_everywhere {
            let _ = hist.record((written.elapsed().as_micros() as u64).max(1));
        } else {
            failed += 1;
        }
    }
    eprint!("\r\x1b[K");
    Ok(Row {
        scenario: "cache-freshness".into(),
        system: label.into(),
        stats: Stats::from_histogram(&hist, sent, failed, start.elapsed(), Vec::new()),
        ..Row::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(throughput: f64) -> Row {
        let mut row = Row::default();
        row.stats.throughput = throughput;
        row
    }

    #[test]
    fn the_median_run_is_reported_with_every_run() {
        let row = median_run(vec![run(70.0), run(90.0), run(80.0)]);
        assert_eq!(row.stats.throughput, 80.0);
        assert_eq!(row.rounds, [70.0, 90.0, 80.0], "in the order run");
        // An even count reports the lower of the middle two.
        let row = median_run(vec![run(75.0), run(60.0), run(90.0), run(80.0)]);
        assert_eq!(row.stats.throughput, 75.0);
        // A single run is just that run.
        let row = median_run(vec![run(5.0)]);
        assert_eq!((row.stats.throughput, row.rounds.len()), (5.0, 0));
    }
}
