//! Open loop at rates the hyper-based generator in [`crate::load`] cannot reach on two cores:
//! wrk2's model, done lean. A fixed set of keep-alive connections shares one schedule
//! (request `i` is due at `start + i / rate`); a free connection takes the next request, waits
//! for its due time, writes a prepared head and reads the answer with `httparse`. A request
//! that waited for a free connection is charged from its due time (no coordinated omission).
//! tokio's timers have millisecond ticks, so a connection wakes up to [`TICK`] before the due
//! time and sends then, and that request's latency counts from when it was sent: requests go
//! out in millisecond batches (as with wrk2's timers), and no tick is added to any latency.
//! Everything runs on one thread, as `wrk -t1` does, so the generator takes at most one of
//! the cores it shares with the systems under test.

use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::load::{histogram, Progress, Stats, Timeline};

/// Requests still unanswered this long after the run's last due time count as failed, with
/// the time they had waited so far as their latency (a lower bound).
pub const GRACE: Duration = Duration::from_secs(2);

/// The resolution of tokio's timers.
pub const TICK: Duration = Duration::from_millis(1);

/// `rate` GETs per second to `url` (`http://ip:port/path`) over `connections` keep-alive
/// connections for `duration`, on a thread of its own.
pub async fn run(
    label: &str,
    url: &str,
    rate: f64,
    duration: Duration,
    connections: usize,
) -> Stats {
    let (label, url) = (label.to_owned(), url.to_owned());
    tokio::task::spawn_blocking(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for the paced generator");
        let local = tokio::task::LocalSet::new();
        runtime.block_on(local.run_until(paced(&label, &url, rate, duration, connections)))
    })
    .await
    .expect("the paced generator ran")
}

/// What every connection shares: the schedule and the results.
struct Run {
    addr: SocketAddr,
    head: Vec<u8>,
    rate: f64,
    total: u64,
    start: Instant,
    give_up: Instant,
    next: Cell<u64>,
    hist: RefCell<Histogram<u64>>,
    timeline: RefCell<Timeline>,
    failed: Cell<u64>,
    answered: Arc<AtomicU64>,
}

impl Run {
    /// The next request and its due time, or `None` when all have been taken.
    fn take(&self) -> Option<Instant> {
        let i = self.next.get();
        if i >= self.total {
            return None;
        }
        self.next.set(i + 1);
        Some(self.start + Duration::from_secs_f64(i as f64 / self.rate))
    }

    /// Records an answer (or a failure) to a request due at `due` and sent at `sent`.
    fn record(&self, due: Instant, sent: Instant, ok: bool) {
        let now = Instant::now();
        let micros = now.saturating_duration_since(due.min(sent)).as_micros() as u64;
        let _ = self.hist.borrow_mut().record(micros.max(1));
        if ok {
            self.timeline.borrow_mut().record(self.start, now);
        } else {
            self.failed.set(self.failed.get() + 1);
        }
        self.answered.fetch_add(1, Ordering::Relaxed);
    }
}

async fn paced(label: &str, url: &str, rate: f64, duration: Duration, connections: usize) -> Stats {
    let uri: http::Uri = url.parse().expect("a valid url");
    let authority = uri.authority().expect("url has a host").as_str().to_owned();
    let total = (rate * duration.as_secs_f64()) as u64;
    let resolved = tokio::net::lookup_host(&authority).await.ok();
    let Some(addr) = resolved.and_then(|mut a| a.next()) else {
        eprintln!("{label}: {authority} does not resolve; every request failed");
        return Stats {
            sent: total,
            failed: total,
            ..Stats::default()
        };
    };
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let start = Instant::now() + Duration::from_millis(20);
    let run = Rc::new(Run {
        addr,
        head: format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\n\r\n").into_bytes(),
        rate,
        total,
        start,
        give_up: start + duration + GRACE,
        next: Cell::new(0),
        hist: RefCell::new(histogram()),
        timeline: RefCell::new(Timeline::default()),
        failed: Cell::new(0),
        answered: Arc::new(AtomicU64::new(0)),
    });
    let progress = Progress::start(label, duration, run.answered.clone());
    let tasks: Vec<_> = (0..connections.max(1))
        .map(|_| tokio::task::spawn_local(connection(run.clone())))
        .collect();
    for task in tasks {
        let _ = task.await;
    }
    drop(progress);
    let elapsed = start.elapsed();
    let hist = run.hist.borrow();
    let timeline = std::mem::take(&mut run.timeline.borrow_mut().0);
    Stats::from_histogram(&hist, run.total, run.failed.get(), elapsed, timeline)
}

/// One connection: takes the next request, waits for its due time, sends it, reads the
/// answer; reconnects after an error.
async fn connection(run: Rc<Run>) {
    let mut conn: Option<TcpStream> = None;
    let mut buf = Vec::with_capacity(4096);
    while let Some(due) = run.take() {
        if Instant::now() >= run.give_up {
            run.record(due, due, false);
            continue;
        }
        if let Some(early) = due.checked_sub(TICK) {
            tokio::time::sleep_until(early).await;
        }
        let sent = Instant::now();
        let answer = tokio::time::timeout_at(run.give_up, exchange(&run, &mut conn, &mut buf));
        match answer.await {
            Ok(Ok(())) => run.record(due, sent, true),
            _ => {
                conn = None;
                run.record(due, sent, false);
            }
        }
    }
}

/// One request and its whole answer on `conn` (opened first when `None`). The answer must
/// be a 2xx with a `Content-Length`; anything else is an error and the connection is dropped.
async fn exchange(run: &Run, conn: &mut Option<TcpStream>, buf: &mut Vec<u8>) -> io::Result<()> {
    let stream = match conn {
        Some(s) => s,
        None => {
            let s = TcpStream::connect(run.addr).await?;
            s.set_nodelay(true)?;
            buf.clear();
            conn.insert(s)
        }
    };
    stream.write_all(&run.head).await?;
    loop {
        if let Some((len, keep_alive)) = complete_answer(buf)? {
            buf.drain(..len);
            if !keep_alive {
                *conn = None;
            }
            return Ok(());
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
}

/// The length of the answer at the start of `buf` and whether its connection stays open,
/// once it is all there.
fn complete_answer(buf: &[u8]) -> io::Result<Option<(usize, bool)>> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let head = match response.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
    };
    if !response.code.is_some_and(|c| (200..300).contains(&c)) {
        return Err(io::Error::other(format!("status {:?}", response.code)));
    }
    let field = |name: &str| {
        response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    let length: usize = field("content-length")
        .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no Content-Length"))?;
    let keep_alive = !field("connection").is_some_and(|v| v.eq_ignore_ascii_case(b"close"));
    Ok((buf.len() >= head + length).then_some((head + length, keep_alive)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::Upstream;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_request_that_waits_for_a_connection_is_charged_from_its_due_time() {
        // One connection, answers after 50 ms, a request due every 10 ms: the 20th request
        // is due at 190 ms but cannot go before ~950 ms. A generator measuring from the send
        // would report ~50 ms for every request.
        let up = Upstream::start(Duration::from_millis(50)).await.unwrap();
        let url = format!("http://{}/", up.addr);
        let stats = run("test", &url, 100.0, Duration::from_millis(200), 1).await;
        assert_eq!((stats.sent, stats.ok, stats.failed), (20, 20, 0));
        assert!(stats.p50_ms >= 50.0, "{stats:?}");
        assert!(stats.max_ms >= 700.0, "{stats:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_that_cannot_be_answered_count_as_failed() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", closed.local_addr().unwrap());
        drop(closed);
        let stats = run("test", &url, 100.0, Duration::from_millis(100), 4).await;
        assert_eq!((stats.sent, stats.ok, stats.failed), (10, 0, 10));
    }

    #[test]
    fn an_answer_is_complete_once_its_body_is_there() {
        let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        assert_eq!(complete_answer(&answer[..20]).unwrap(), None);
        assert_eq!(complete_answer(&answer[..answer.len() - 1]).unwrap(), None);
        assert_eq!(complete_answer(answer).unwrap(), Some((answer.len(), true)));
        let closing = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(
            complete_answer(closing).unwrap(),
            Some((closing.len(), false))
        );
    }

    #[test]
    fn an_error_status_or_an_unframed_body_is_an_error() {
        assert!(complete_answer(b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n").is_err());
        assert!(complete_answer(b"HTTP/1.1 200 OK\r\n\r\n").is_err());
    }
}
