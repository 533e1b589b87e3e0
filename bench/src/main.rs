//! `bench [scenario]`: run named benchmark scenarios and write a report.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bench::report;
use bench::scenarios::{self, Failure, Options, Outcome};
use bench::service::Catalogue;
use bench::upstream::Profile;
use clap::{Parser, ValueEnum};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// Direct vs through each proxy: closed-loop max req/s, then p50/p99 at 5000 req/s.
    Overhead,
    /// One of three upstreams 40x slower, 1500 req/s.
    SlowUpstream,
    /// Kill and restart an upstream, then hang and resume one, at 2000 req/s.
    Failover,
    /// Edit upstreams.toml three times under 2000 req/s (ours).
    Reload,
    /// Cached vs uncached listing through the real course-service; write-to-visible delay.
    Cache,
    /// Reads and writes through each proxy while the instances are reloaded one by one, one
    /// is killed, and the proxy restarts its own binary (`--courses N`: on N generated
    /// courses instead of the 50 shipped).
    Deploy,
    /// Reads at 2000 req/s through our proxy while 0, 1 and 10 writes a second flow, with
    /// 1k, 10k and 100k courses (memory cache; Redis at the largest size).
    Catalogue,
    /// Every scenario above.
    All,
    /// Every system in front of `--upstreams` at `--rate` (not part of `all`).
    Custom,
    /// Open-loop load at `--rate` against `--url`, a server you run yourself (not part of
    /// `all`): prints what clients saw.
    Load,
    /// Internal: serve one synthetic upstream (`--upstreams`, `--port`, `--seed`) until killed.
    #[value(hide = true)]
    Upstream,
}

#[derive(Parser)]
#[command(
    name = "bench",
    about = "Open-loop benchmarks of our proxy against nginx and HAProxy"
)]
struct Cli {
    #[arg(value_enum, default_value = "all")]
    scenario: Scenario,
    /// Seconds per measured run.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Our proxy's binary.
    #[arg(long, default_value = "target/release/proxy")]
    proxy_bin: PathBuf,
    /// The course-service binary (the cache scenario).
    #[arg(long, default_value = "target/release/course-service")]
    service_bin: PathBuf,
    /// Where `<timestamp>/report.md` and `results.json` go.
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
    /// `overhead`: closed-loop runs of each system, taking turns; the median is reported
    /// (closed-loop req/s moves by about 8 % from run to run on a shared machine).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..))]
    rounds: u16,
    /// Multiplies every scenario's request rate.
    #[arg(long, default_value_t = 1.0)]
    rate_scale: f64,
    /// `custom`: the upstreams, each `LATENCY[/ERROR_RATE]`: `1ms`, `exp:2ms` (exponential,
    /// 2 ms mean), `exp:2ms/0.05` (and 5 % of answers are 500).
    #[arg(long, value_delimiter = ',', default_value = "1ms,1ms,40ms", value_parser = Profile::parse)]
    upstreams: Vec<Profile>,
    /// `custom`, `load`: requests per second, open loop.
    #[arg(long, default_value_t = 1500.0)]
    rate: f64,
    /// `load`: the URL to send GETs to.
    #[arg(long)]
    url: Option<String>,
    /// `load`: send over this many keep-alive connections with the lean paced generator
    /// (wrk2's model; for rates the default generator cannot reach), instead of a connection
    /// per concurrent request.
    #[arg(long)]
    connections: Option<usize>,
    /// `catalogue`: the catalogue sizes (default 1000,10000,100000; the largest runs again
    /// with Redis). `deploy`: generate this many courses instead of the 50 shipped ones.
    #[arg(long, value_delimiter = ',')]
    courses: Vec<usize>,
    #[arg(long, hide = true, default_value_t = 0)]
    port: u16,
    #[arg(long, hide = true, default_value_t = 1)]
    seed: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.scenario == Scenario::Upstream {
        // One thread: an upstream process should take as little of the machine as it can,
        // leaving it to the systems under test.
        return match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt.block_on(serve_upstream(&cli)),
            Err(e) => {
                eprintln!("bench upstream: cannot start a runtime: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match tokio::runtime::Runtime::new() {
        Ok(rt) => rt.block_on(bench(cli)),
        Err(e) => {
            eprintln!("bench: cannot start a runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn bench(cli: Cli) -> ExitCode {
    tokio::spawn(bench::reaper::on_signals());
    if cli.scenario == Scenario::Load {
        let Some(url) = cli.url.as_deref() else {
            eprintln!("bench load: --url is required");
            return ExitCode::FAILURE;
        };
        let valid = url.parse::<http::Uri>().ok().is_some_and(|u| {
            u.scheme_str() == Some("http") && u.authority().is_some_and(|a| a.port_u16().is_some())
        });
        if !valid {
            eprintln!("bench load: --url {url}: expected http://HOST:PORT/PATH");
            return ExitCode::FAILURE;
        }
        let duration = Duration::from_secs_f64(cli.duration);
        let stats = match cli.connections {
            Some(n) => bench::paced::run("load", url, cli.rate, duration, n).await,
            None => bench::load::open_loop("load", url, cli.rate, duration, Vec::new()).await,
        };
        println!(
            "sent {} failed {} req/s {:.0} p50 {:.2} ms p99 {:.2} ms p99.9 {:.2} ms max {:.1} ms",
            stats.sent,
            stats.failed,
            stats.throughput,
            stats.p50_ms,
            stats.p99_ms,
            stats.p999_ms,
            stats.max_ms
        );
        return ExitCode::SUCCESS;
    }
    if !cli.proxy_bin.is_file() {
        eprintln!(
            "bench: {} not found; build it first (cargo build --release -p proxy) or pass --proxy-bin",
            cli.proxy_bin.display()
        );
        return ExitCode::FAILURE;
    }
    let opts = Options {
        duration: Duration::from_secs_f64(cli.duration),
        proxy_bin: cli.proxy_bin,
        rate_scale: cli.rate_scale,
        service_bin: cli.service_bin,
        bench_bin: std::env::current_exe().unwrap_or_else(|_| "bench".into()),
        rounds: usize::from(cli.rounds),
    };
    let outcome = run(cli.scenario, &opts, &cli.upstreams, cli.rate, &cli.courses).await;
    // Every system has stopped: what is left of their directories goes.
    bench::systems::remove_workdirs();
    let table = report::markdown(&outcome);
    println!("\n{table}");
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let dir = cli.out.join(stamp.to_string());
    // `scripts/bench` names itself, so the report shows the command a reader would type.
    let command = std::env::var("MC_BENCH_COMMAND")
        .unwrap_or_else(|_| std::env::args().collect::<Vec<_>>().join(" "));
    match report::write(&dir, &outcome, &command) {
        Ok(()) => {
            println!("\nreport: {}", dir.join("report.md").display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench: cannot write {}: {e}", dir.display());
            ExitCode::FAILURE
        }
    }
}

/// `bench upstream`: one synthetic upstream in this process, until it is killed.
async fn serve_upstream(cli: &Cli) -> ExitCode {
    let profile = cli
        .upstreams
        .first()
        .copied()
        .unwrap_or(Profile::fixed(Duration::ZERO));
    match bench::upstream::Upstream::on_port(profile, cli.seed, cli.port).await {
        Ok(_upstream) => std::future::pending().await,
        Err(e) => {
            eprintln!("bench upstream: cannot listen on port {}: {e}", cli.port);
            ExitCode::FAILURE
        }
    }
}

async fn run(
    scenario: Scenario,
    opts: &Options,
    custom: &[Profile],
    rate: f64,
    courses: &[usize],
) -> Outcome {
    let progress = |s: &str| eprintln!("running {s}");
    let wanted = |s: Scenario| {
        scenario == s
            || (scenario == Scenario::All && !matches!(s, Scenario::Custom | Scenario::Load))
    };
    let mut all = Outcome::default();
    let mut add = |o: Outcome| {
        all.rows.extend(o.rows);
        for s in o.skipped {
            if !all.skipped.contains(&s) {
                all.skipped.push(s);
            }
        }
    };
    if wanted(Scenario::Overhead) {
        add(scenarios::overhead(opts, &progress).await);
    }
    if wanted(Scenario::SlowUpstream) {
        add(scenarios::slow_upstream(opts, &progress).await);
    }
    if wanted(Scenario::Failover) {
        add(scenarios::failover(opts, Failure::Kill, &progress).await);
        add(scenarios::failover(opts, Failure::Hang, &progress).await);
        add(scenarios::failover(opts, Failure::Partition, &progress).await);
    }
    if wanted(Scenario::Reload) {
        add(scenarios::reload(opts, &progress).await);
    }
    if wanted(Scenario::Cache) {
        add(scenarios::cache(opts, &progress).await);
    }
    if wanted(Scenario::Deploy) {
        let catalogue = courses
            .iter()
            .max()
            .map_or(Catalogue::Shipped, |&n| Catalogue::Generated(n));
        add(bench::deploy::deploy(opts, catalogue, &progress).await);
    }
    if wanted(Scenario::Catalogue) {
        let sizes = if courses.is_empty() {
            &bench::catalogue::SIZES[..]
        } else {
            courses
        };
        add(bench::catalogue::catalogue_with(opts, sizes, &progress).await);
    }
    if wanted(Scenario::Custom) {
        add(scenarios::balancing("custom", custom, rate, opts, &progress).await);
    }
    all
}
