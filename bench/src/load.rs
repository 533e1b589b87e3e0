//! Load generation, two ways (and a third, [`crate::paced`], for high open-loop rates):
//! - open loop ([`open_loop`]): requests are sent on a fixed schedule (`rate` per second)
//!   whatever the answers do, and each latency is measured from the request's *intended* send
//!   time, so a stall is charged to every request it delayed (no coordinated omission; Gil
//!   Tene's point, wrk2's method);
//! - closed loop: N keep-alive connections, each sending its next request as soon as the last
//!   answered: the maximum throughput. With `wrk` on PATH it is wrk itself ([`wrk`], one
//!   thread, as the published HAProxy and nginx figures are measured), which costs far less
//!   CPU per request than a Rust HTTP client sharing the machine's two cores with the systems
//!   under test; without, the built-in [`closed_loop`].
//!
//! Percentiles come from an HdrHistogram; answers are also counted per 100 ms for throughput
//! over time. A progress line on stderr shows each run as it goes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// A request that has not answered after this long counts as failed.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Width of a [`Stats::timeline`] bucket.
pub const BUCKET: Duration = Duration::from_millis(100);

/// The percentiles a latency curve is drawn through.
pub const CURVE_QUANTILES: [f64; 9] = [0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9995, 0.9999];

/// What one run measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    pub sent: u64,
    pub ok: u64,
    /// Transport errors, timeouts and non-2xx answers.
    pub failed: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// Requests answered successfully per second over the run.
    pub throughput: f64,
    /// `(quantile, ms)` at each of [`CURVE_QUANTILES`], for the latency plot.
    pub curve: Vec<(f64, f64)>,
    /// Successful answers per [`BUCKET`], from the start of the run.
    pub timeline: Vec<u64>,
}

impl Stats {
    /// Summarises a histogram of microseconds.
    pub fn from_histogram(
        hist: &Histogram<u64>,
        sent: u64,
        failed: u64,
        elapsed: Duration,
        timeline: Vec<u64>,
    ) -> Stats {
        let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
        let ok = sent.saturating_sub(failed);
        Stats {
            sent,
            ok,
            failed,
            p50_ms: ms(0.5),
            p99_ms: ms(0.99),
            p999_ms: ms(0.999),
            max_ms: hist.max() as f64 / 1000.0,
            throughput: ok as f64 / elapsed.as_secs_f64().max(1e-9),
            curve: if hist.is_empty() {
                Vec::new()
            } else {
                CURVE_QUANTILES.iter().map(|&q| (q, ms(q))).collect()
            },
            timeline,
        }
    }
}

pub fn histogram() -> Histogram<u64> {
    Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

/// Counts answers per [`BUCKET`] since `start`.
#[derive(Default)]
pub(crate) struct Timeline(pub(crate) Vec<u64>);

impl Timeline {
    pub(crate) fn record(&mut self, start: Instant, at: Instant) {
        let i = (at.saturating_duration_since(start).as_millis() / BUCKET.as_millis()) as usize;
        if self.0.len() <= i {
            self.0.resize(i + 1, 0);
        }
        self.0[i] += 1;
    }
}

/// Prints `label: 3/10 s, 1234 answered` on one stderr line until dropped.
pub(crate) struct Progress {
    task: tokio::task::JoinHandle<()>,
}

impl Progress {
    pub(crate) fn start(label: &str, duration: Duration, answered: Arc<AtomicU64>) -> Progress {
        let label = label.to_string();
        let start = Instant::now();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tick.tick().await;
                eprint!(
                    "\r  {label}: {:.0}/{:.0} s, {} answered   ",
                    start.elapsed().as_secs_f64().min(duration.as_secs_f64()),
                    duration.as_secs_f64(),
                    answered.load(Ordering::Relaxed)
                );
            }
        });
        Progress { task }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.task.abort();
        eprint!("\r\x1b[K");
    }
}

/// Sends `rate` GETs per second to `url` for `duration`; `events` run at their offsets
/// (to kill or hang an upstream mid-run).
pub async fn open_loop(
    label: &str,
    url: &str,
    rate: f64,
    duration: Duration,
    events: Vec<(Duration, Box<dyn FnOnce() + Send>)>,
) -> Stats {
    let uri: http::Uri = url.parse().expect("valid url");
    let get = |_| {
        let req = http::Request::get(uri.clone()).body(Full::new(Bytes::new()));
        (0, req.expect("valid request"))
    };
    open_loop_mixed(label, rate, duration, events, 1, get)
        .await
        .remove(0)
}

/// The open-loop schedule of [`open_loop`] for any requests: request `i` is `request(i)`,
/// which also names its class (`0..classes`); one [`Stats`] per class. Latency runs from
/// each request's intended send time. `MC_BENCH_DEBUG=1` prints why a request failed.
pub async fn open_loop_mixed(
    label: &str,
    rate: f64,
    duration: Duration,
    mut events: Vec<(Duration, Box<dyn FnOnce() + Send>)>,
    classes: usize,
    request: impl Fn(u64) -> (usize, http::Request<Full<Bytes>>),
) -> Vec<Stats> {
    let client: Client<HttpConnector, Full<Bytes>> = {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(1024)
            .build(connector)
    };
    let debug = std::env::var_os("MC_BENCH_DEBUG").is_some();
    let total = (rate * duration.as_secs_f64()) as u64;
    let start = Instant::now() + Duration::from_millis(20);
    let (tx, mut rx) = mpsc::unbounded_channel::<(usize, Duration, Instant, bool)>();
    events.sort_by_key(|(at, _)| *at);
    let mut events = events.into_iter().peekable();
    let answered = Arc::new(AtomicU64::new(0));
    let progress = Progress::start(label, duration, answered.clone());

    for i in 0..total {
        let intended = start + Duration::from_secs_f64(i as f64 / rate);
        while let Some((at, _)) = events.peek() {
            if start + *at > intended {
                break;
            }
            let (_, event) = events.next().expect("peeked");
            event();
        }
        tokio::time::sleep_until(intended).await;
        let (class, req) = request(i);
        let (client, tx, answered) = (client.clone(), tx.clone(), answered.clone());
        tokio::spawn(async move {
            let ok = match tokio::time::timeout(REQUEST_TIMEOUT, async {
                let res = match client.request(req).await {
                    Ok(res) => res,
                    Err(e) => {
                        if debug {
                            eprintln!("\nrequest failed: {e:?}");
                        }
                        return None;
                    }
                };
                let success = res.status().is_success();
                if debug && !success {
                    eprintln!("\nanswered {}", res.status());
                }
                res.into_body().collect().await.ok()?;
                Some(success)
            })
            .await
            {
                Ok(Some(success)) => success,
                _ => false,
            };
            answered.fetch_add(1, Ordering::Relaxed);
            let _ = tx.send((class, intended.elapsed(), Instant::now(), ok));
        });
    }
    for (_, event) in events {
        event();
    }
    drop(tx);
    let mut hists: Vec<Histogram<u64>> = (0..classes).map(|_| histogram()).collect();
    let mut timelines: Vec<Timeline> = (0..classes).map(|_| Timeline::default()).collect();
    let (mut sent, mut failed) = (vec![0u64; classes], vec![0u64; classes]);
    while let Some((class, latency, at, success)) = rx.recv().await {
        sent[class] += 1;
        let _ = hists[class].record((latency.as_micros() as u64).max(1));
        if success {
            timelines[class].record(start, at);
        } else {
            failed[class] += 1;
        }
    }
    drop(progress);
    let elapsed = start.elapsed();
    timelines
        .into_iter()
        .enumerate()
        .map(|(c, timeline)| {
            Stats::from_histogram(&hists[c], sent[c], failed[c], elapsed, timeline.0)
        })
        .collect()
}

/// Who drove a run (see [`crate::scenarios::Row::generator`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Generator {
    Wrk,
    BuiltIn,
    /// Open loop over a fixed set of connections ([`crate::paced`]).
    Paced,
}

/// What wrk prints when its run is done: one line, read back by [`wrk`].
const WRK_SCRIPT: &str = r#"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("WRK %d %d %d %d %d %d %d %d", summary.requests, summary.duration,
    e.connect, e.read, e.write, e.status, e.timeout, latency.max))
  for _, p in ipairs({50, 75, 90, 95, 99, 99.5, 99.9, 99.95, 99.99}) do
    io.write(string.format(" %d", latency:percentile(p)))
  end
  io.write("\n")
end
"#;

/// wrk (`-t1 -c<connections>`) against `url` for `duration` (whole seconds, at least one),
/// or `None` when wrk cannot be run. Every error wrk counts (connect, read, write, timeout,
/// non-2xx/3xx) is a failed request; wrk keeps no timeline.
pub async fn wrk(label: &str, url: &str, connections: usize, duration: Duration) -> Option<Stats> {
    let script = std::env::temp_dir().join(format!("mc-bench-wrk-{}.lua", std::process::id()));
    std::fs::write(&script, WRK_SCRIPT).ok()?;
    let secs = duration.as_secs_f64().round().max(1.0) as u64;
    eprint!("\r  {label}: wrk -t1 -c{connections} -d{secs}s   ");
    let child = tokio::process::Command::new("wrk")
        .args(["-t1", &format!("-c{connections}"), &format!("-d{secs}s")])
        .args(["--timeout", &format!("{}s", REQUEST_TIMEOUT.as_secs())])
        .arg("-s")
        .arg(&script)
        .arg(url)
        .process_group(0)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .ok()?;
    let pid = child.id();
    if let Some(pid) = pid {
        crate::reaper::track(pid);
    }
    let output = child.wait_with_output().await;
    if let Some(pid) = pid {
        crate::reaper::untrack(pid);
    }
    let _ = std::fs::remove_file(&script);
    let output = output.ok()?;
    eprint!("\r\x1b[K");
    let text = String::from_utf8_lossy(&output.stdout);
    let numbers: Vec<u64> = text
        .lines()
        .find_map(|l| l.strip_prefix("WRK "))?
        .split_whitespace()
        .filter_map(|n| n.parse().ok())
        .collect();
    let [requests, duration_us, connect, read, write, status, timeout, max_us, ref percentiles @ ..] =
        numbers[..]
    else {
        return None;
    };
    let failed = (connect + read + write + status + timeout).min(requests);
    let ok = requests - failed;
    let ms = |us: u64| us as f64 / 1000.0;
    let at = |i: usize| percentiles.get(i).copied().map_or(0.0, ms);
    Some(Stats {
        sent: requests,
        ok,
        failed,
        p50_ms: at(0),
        p99_ms: at(4),
        p999_ms: at(6),
        max_ms: ms(max_us),
        throughput: ok as f64 / (duration_us.max(1) as f64 / 1e6),
        curve: CURVE_QUANTILES
            .iter()
            .zip(percentiles)
            .map(|(&q, &us)| (q, ms(us)))
            .collect(),
        timeline: Vec::new(),
    })
}

/// `connections` keep-alive connections to `url`, each sending a GET as soon as the last one
/// answered, for `duration`. A connection that fails is re-opened.
pub async fn closed_loop(label: &str, url: &str, connections: usize, duration: Duration) -> Stats {
    let uri: http::Uri = url.parse().expect("valid url");
    let authority = uri.authority().expect("url has a host").to_string();
    let start = Instant::now();
    let end = start + duration;
    let answered = Arc::new(AtomicU64::new(0));
    let progress = Progress::start(label, duration, answered.clone());
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let (uri, authority, answered) = (uri.clone(), authority.clone(), answered.clone());
        tasks.spawn(async move {
            let mut hist = histogram();
            let mut timeline = Timeline::default();
            let (mut sent, mut failed) = (0u64, 0u64);
            'connect: while Instant::now() < end {
                let Ok(Ok(stream)) = tokio::time::timeout(
                    REQUEST_TIMEOUT,
                    tokio::net::TcpStream::connect(&authority),
                )
                .await
                else {
                    sent += 1;
                    failed += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let Ok((mut sender, conn)) =
                    hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
                        .await
                else {
                    continue;
                };
                let driver = tokio::spawn(conn);
                while Instant::now() < end {
                    let req = http::Request::get(uri.clone())
                        .header(http::header::HOST, &authority)
                        .body(Empty::new())
                        .expect("valid request");
                    let sent_at = Instant::now();
                    sent += 1;
                    let answer = tokio::time::timeout(REQUEST_TIMEOUT, async {
                        let res = sender.send_request(req).await.ok()?;
                        let success = res.status().is_success();
                        res.into_body().collect().await.ok()?;
                        Some(success)
                    })
                    .await;
                    let now = Instant::now();
                    let _ = hist.record((now.duration_since(sent_at).as_micros() as u64).max(1));
                    answered.fetch_add(1, Ordering::Relaxed);
                    match answer {
                        Ok(Some(true)) => timeline.record(start, now),
                        Ok(Some(false)) => failed += 1,
                        _ => {
                            failed += 1;
                            driver.abort();
                            continue 'connect;
                        }
                    }
                }
                driver.abort();
            }
            (hist, timeline.0, sent, failed)
        });
    }
    let mut hist = histogram();
    let mut timeline: Vec<u64> = Vec::new();
    let (mut sent, mut failed) = (0u64, 0u64);
    while let Some(Ok((h, t, s, f))) = tasks.join_next().await {
        let _ = hist.add(&h);
        if timeline.len() < t.len() {
            timeline.resize(t.len(), 0);
        }
        for (acc, n) in timeline.iter_mut().zip(t) {
            *acc += n;
        }
        sent += s;
        failed += f;
    }
    drop(progress);
    Stats::from_histogram(&hist, sent, failed, start.elapsed(), timeline)
}
