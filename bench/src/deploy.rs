//! `deploy`: what clients see while everything behind and including the proxy is replaced.
//!
//! For each system (ours; HAProxy and nginx when installed), a fresh `course-service
//! cluster` of three instances on SecantusDB, the system in front of it with its failover
//! settings, and open-loop load at 45 req/s: one request in three a POST creating a
//! course, the rest `GET /api/courses`. During the run:
//! - at 15 %: SIGHUP to the cluster, a rolling reload of every instance;
//! - at 55 %: SIGKILL to one instance (the supervisor restarts it);
//! - at 75 %: the proxy itself restarts its binary the way each does it without downtime:
//!   ours SIGUSR2 (sockets handed to the new process), HAProxy SIGUSR2 to its master
//!   (master-worker reload), nginx SIGUSR2 (binary upgrade) then SIGQUIT to the old master.
//!
//! Reads and writes are reported as rows of their own (`deploy-reads`, `deploy-writes`):
//! failures, latency (from the intended send time) and answers per 100 ms for the plot.
//! `MC_BENCH_DEBUG=1` prints why each failed request failed ([`open_loop_mixed`]).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::time::Instant;

use crate::load::{open_loop_mixed, Stats};
use crate::scenarios::{Options, Outcome, Row};
use crate::service::{Backing, Catalogue, TOKEN};
use crate::systems::{self, on_path, spawn, workdir, System, Tuning};

/// Requests per second, reads and writes together, before `--rate-scale`: 15 writes a
/// second (the rate the five runs in README were measured at).
const RATE: f64 = 45.0;
/// One request in this many is a write.
const WRITE_EVERY: u64 = 3;

/// Which proxy, and how it restarts itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ours,
    Haproxy,
    Nginx,
}

/// `catalogue`: what the database holds (the shipped 50 courses, or `--courses N`
/// generated: the same drill at scale).
pub async fn deploy(opts: &Options, catalogue: Catalogue, progress: &dyn Fn(&str)) -> Outcome {
    let mut outcome = Outcome::default();
    if !opts.service_bin.is_file() {
        outcome.skipped.push(format!(
            "deploy: {} not found (cargo build --release -p course-service)",
            opts.service_bin.display()
        ));
        return outcome;
    }
    progress("deploy: starting SecantusDB, seeding");
    let backing = match Backing::start_with(&opts.service_bin, catalogue) {
        Ok(b) => b,
        Err(e) => {
            outcome.skipped.push(format!("deploy: {e}"));
            return outcome;
        }
    };
    for kind in [Kind::Ours, Kind::Haproxy, Kind::Nginx] {
        let peer = match kind {
            Kind::Ours => None,
            Kind::Haproxy => Some("haproxy"),
            Kind::Nginx => Some("nginx"),
        };
        if let Some(bin) = peer.filter(|b| !on_path(b)) {
            outcome
                .skipped
                .push(format!("deploy: {bin} (not installed)"));
            continue;
        }
        match run_one(kind, opts, &backing, progress).await {
            Ok(rows) => outcome.rows.extend(rows),
            Err(e) => outcome.skipped.push(format!("deploy ({kind:?}): {e}")),
        }
    }
    outcome
}

async fn run_one(
    kind: Kind,
    opts: &Options,
    backing: &Backing,
    progress: &dyn Fn(&str),
) -> Result<Vec<Row>, String> {
    let cluster = start_cluster(
        &opts.service_bin,
        backing,
        // An instance started again (the reload, the crash) resumes from the fleet's snapshot
        // instead of reading the whole catalogue from the database, as `scripts/up` does.
        "[mongodb]\ndatabase = \"bench\"\n[read_model]\nsnapshot = \"catalogue.snapshot\"\n",
        // Three instances load 100 000 courses in about 15 s.
        Duration::from_secs(90),
    )?;
    let addrs = cluster.1.clone();
    let cluster = cluster.0;
    let system = match kind {
        Kind::Ours => systems::ours(&opts.proxy_bin, &addrs, "peak-ewma", Tuning::Failover)?,
        Kind::Haproxy => systems::haproxy(&addrs, "leastconn", Tuning::Deploy)?,
        Kind::Nginx => systems::nginx(&addrs, "least_conn", Tuning::Failover)?,
    };
    wait_serving(&format!("{}api/courses", system.url)).await?;
    progress(&format!("deploy: {}", system.name));

    let duration = opts.duration;
    let at = |share: f64| duration.mul_f64(share);
    let supervisor = cluster.pid;
    let proxy_pid = system.pid;
    let mut events: Vec<(Duration, Box<dyn FnOnce() + Send>)> = vec![
        (
            at(0.15),
            Box::new(move || signal(supervisor, Signal::SIGHUP)),
        ),
        (
            at(0.55),
            Box::new(move || {
                if let Some(worker) = children(supervisor).first() {
                    signal(*worker, Signal::SIGKILL);
                }
            }),
        ),
    ];
    events.push((
        at(0.75),
        Box::new(move || match kind {
            Kind::Ours | Kind::Haproxy => signal(proxy_pid, Signal::SIGUSR2),
            Kind::Nginx => {
                // The binary upgrade: a new master with new workers, then the old master
                // told to finish gracefully once the new one runs.
                signal(proxy_pid, Signal::SIGUSR2);
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_secs(1));
                    signal(proxy_pid, Signal::SIGQUIT);
                });
            }
        }),
    ));
    let rate = RATE * opts.rate_scale;
    let (reads, writes) = mixed_load(&system.name, &system.url, rate, duration, events).await;
    drop(system);
    drop(cluster);
    let row = |scenario: &str, stats: Stats, share: f64| Row {
        scenario: scenario.into(),
        system: match kind {
            Kind::Ours => "ours (peak-ewma)".into(),
            Kind::Haproxy => "haproxy (leastconn)".into(),
            Kind::Nginx => "nginx (least_conn)".into(),
        },
        rate: rate * share,
        stats,
        ..Row::default()
    };
    let write_share = 1.0 / WRITE_EVERY as f64;
    Ok(vec![
        row("deploy-reads", reads, 1.0 - write_share),
        row("deploy-writes", writes, write_share),
    ])
}

/// `course-service cluster` of three on consecutive free ports with the configuration file
/// `config` (`REDIS_URL` set when it asks for Redis): the supervisor, and the instances'
/// addresses once each answers `/readyz` (within `ready_within`).
pub(crate) fn start_cluster(
    service_bin: &Path,
    backing: &Backing,
    config: &str,
    ready_within: Duration,
) -> Result<(System, Vec<std::net::SocketAddr>), String> {
    let base = shared::testbed::free_ports(3);
    let dir = workdir("cluster");
    let config_text = config;
    let config = dir.join("course-service.toml");
    std::fs::write(&config, config_text).map_err(|e| e.to_string())?;
    // Absolute: the cluster runs in its work directory.
    let mut cmd = Command::new(std::path::absolute(service_bin).map_err(|e| e.to_string())?);
    cmd.args([
        "cluster",
        "--instances",
        "3",
        "--base-port",
        &base.to_string(),
    ])
    .arg("--config")
    .arg(&config)
    // Relative paths of the configuration (the snapshot) are in the work directory, which
    // goes with the cluster.
    .current_dir(&dir)
    .env("MONGODB_URI", &backing.mongodb_uri)
    .env("MC_ADMIN_TOKEN", TOKEN)
    .env("RUST_LOG", "warn");
    match (&backing.redis_url, config_text.contains("\"redis\"")) {
        (Some(url), true) => cmd.env("REDIS_URL", url),
        (None, true) => return Err("redis-server is not installed".into()),
        (_, false) => cmd.env_remove("REDIS_URL"),
    };
    let system = spawn("course-service cluster".into(), cmd, base, dir)?;
    let addrs: Vec<std::net::SocketAddr> =
        (0..3).map(|i| ([127, 0, 0, 1], base + i).into()).collect();
    for addr in &addrs {
        let deadline = std::time::Instant::now() + ready_within;
        while !ready(*addr) {
            if std::time::Instant::now() > deadline {
                return Err(format!("instance {addr} not ready within {ready_within:?}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok((system, addrs))
}

fn ready(addr: std::net::SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /readyz HTTP/1.1\r\nhost: b\r\nconnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && &head == b"HTTP/1.1 200"
}

pub(crate) async fn wait_serving(url: &str) -> Result<(), String> {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let uri: http::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(res) = client.get(uri.clone()).await {
            if res.status().is_success() {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            return Err(format!("{url} did not answer 200 within 30 s"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(crate) fn signal(pid: u32, sig: Signal) {
    let _ = kill(Pid::from_raw(pid as i32), sig);
}

/// The children of `pid`, from /proc.
pub(crate) fn children(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    let ppid = s.rsplit_once(')')?.1.split_whitespace().nth(1)?;
                    ppid.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

/// Open-loop load on `base` (`…/api/courses`): every [`WRITE_EVERY`]th request a POST of a
/// new course, the others GETs; `events` run at their offsets. Returns (reads, writes).
async fn mixed_load(
    label: &str,
    base: &str,
    rate: f64,
    duration: Duration,
    events: Vec<(Duration, Box<dyn FnOnce() + Send>)>,
) -> (Stats, Stats) {
    let uri: http::Uri = format!("{base}api/courses").parse().expect("valid url");
    let run = format!("{:x}", fastrand::u64(..));
    let request = |i: u64| {
        if i.is_multiple_of(WRITE_EVERY) {
            let body = format!(
                "{{\"title\":\"Deploy {run} {i}\",\"instructor\":\"Bench\",\
                 \"duration_minutes\":5,\"level\":\"beginner\"}}"
            );
            let req = http::Request::post(uri.clone())
                .header("authorization", format!("Bearer {TOKEN}"))
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body)));
            (1, req.expect("valid request"))
        } else {
            let req = http::Request::get(uri.clone()).body(Full::new(Bytes::new()));
            (0, req.expect("valid request"))
        }
    };
    let mut stats = open_loop_mixed(label, rate, duration, events, 2, request).await;
    let writes = stats.pop().expect("two classes");
    let reads = stats.pop().expect("two classes");
    (reads, writes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_of_this_process_are_found() {
        let mut child = Command::new("sleep").arg("5").spawn().unwrap();
        let found = children(std::process::id());
        let _ = child.kill();
        let _ = child.wait();
        assert!(found.contains(&child.id()), "{found:?}");
    }
}
