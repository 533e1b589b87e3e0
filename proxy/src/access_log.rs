//! The access log: one line per request, JSON lines or logfmt, to stdout or a file.
//!
//! It is written off the request path. A request formats its line into its worker's buffer
//! ([`Writer`], one per worker thread, so the lock is never contended); the buffer goes to the
//! log thread when it holds [`FLUSH_BYTES`], and every [`FLUSH_EVERY`] otherwise, through a
//! bounded channel. A worker never waits for the disk: when the channel is full (the disk is
//! slower than the traffic), the batch is dropped and counted in
//! `proxy_access_log_lines_total{result="dropped"}`, as HAProxy drops log lines rather than
//! block. SIGUSR1 makes the log thread reopen the file (logrotate's `postrotate`), and
//! `sample` keeps a fraction of the requests, every 5xx and every answer of the proxy's own
//! (`error`) always included.
//!
//! A request fills a [`Trace`] on its way through [`Proxy::forward`](crate::forward::Proxy):
//! the pool, the endpoint that answered, the tries and why each one before the last failed,
//! the upstream's time to first byte. The front end adds what it knows ([`Entry`]) once the
//! response is sent.

use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use http::{Method, Version};
use prometheus::IntCounterVec;
use serde::Deserialize;

use crate::headers::Peer;
use crate::metrics::LocalError;

/// A worker's buffer goes to the log thread once it holds this much.
pub const FLUSH_BYTES: usize = 32 * 1024;
/// ... and at least this often while it holds anything.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Batches the log thread may have queued before workers drop theirs: 8 MiB of lines.
const QUEUE: usize = 256;
/// The most retry reasons a line lists (a pool's `attempts` is small).
pub const MAX_REASONS: usize = 8;

/// `[access_log] format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// One JSON object per line.
    #[default]
    Json,
    /// `key=value` pairs, values quoted when they need it (Heroku's and Grafana Loki's logfmt).
    Logfmt,
}

/// `[access_log] output`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Output {
    #[default]
    Off,
    Stdout,
    File(PathBuf),
}

/// `[access_log]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub output: Output,
    pub format: Format,
    /// The fraction of requests logged, 0 to 1; 5xx and the proxy's own answers always are.
    pub sample: f64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            output: Output::Off,
            format: Format::Json,
            sample: 1.0,
        }
    }
}

/// What one request did upstream, filled in by the forwarding path.
#[derive(Debug, Default)]
pub struct Trace {
    /// Whether the text fields below are wanted (the log is on): the rest costs nothing.
    pub enabled: bool,
    pub pool: String,
    /// The endpoint of the last try.
    pub endpoint: Option<SocketAddr>,
    pub tries: u8,
    /// Why each try before the last failed (`connect`, `reset`, `timeout`, `malformed`).
    pub reasons: [&'static str; MAX_REASONS],
    /// The upstream's time to its response head, on the try that answered.
    pub upstream_ttfb: Option<Duration>,
    pub request_id: Vec<u8>,
    /// Request body bytes received (HTTP/2; the HTTP/1 front end counts its own).
    pub request_bytes: u64,
}

impl Trace {
    pub fn new(enabled: bool) -> Trace {
        Trace {
            enabled,
            ..Trace::default()
        }
    }

    /// Ready for the connection's next request.
    pub fn clear(&mut self) {
        self.pool.clear();
        self.endpoint = None;
        self.tries = 0;
        self.upstream_ttfb = None;
        self.request_id.clear();
    }

    /// A try starts on `endpoint`; `failed_before` is why the previous one failed, if any.
    pub fn try_started(&mut self, endpoint: SocketAddr, failed_before: Option<&'static str>) {
        if let (Some(reason), Some(previous)) = (failed_before, self.tries.checked_sub(1)) {
            if let Some(slot) = self.reasons.get_mut(usize::from(previous)) {
                *slot = reason;
            }
        }
        self.endpoint = Some(endpoint);
        self.tries = self.tries.saturating_add(1);
    }

    fn reasons(&self) -> &[&'static str] {
        let n = usize::from(self.tries.saturating_sub(1)).min(MAX_REASONS);
        &self.reasons[..n]
    }
}

/// One finished request, as the front end saw it.
pub struct Entry<'a> {
    pub client: &'a Peer,
    /// `None` when the request head could not be read or parsed.
    pub method: Option<&'a str>,
    pub authority: Option<&'a [u8]>,
    /// The request target (path and query).
    pub target: Option<&'a str>,
    pub version: Version,
    pub status: u16,
    /// Request body bytes received from the client.
    pub bytes_in: u64,
    /// Response body bytes sent to the client.
    pub bytes_out: u64,
    pub trace: &'a Trace,
    /// Why the proxy answered itself, if it did.
    pub error: Option<LocalError>,
    /// From the request head read to the last response byte written.
    pub duration: Duration,
}

/// An HTTP/2 request's line, written when dropped: hyper sends the response body after the
/// handler has returned, so the line rides along with the body, which counts the bytes sent
/// and drops it once the body ends (or the client goes).
pub struct Deferred {
    pub log: Arc<Writer>,
    pub client: Arc<Peer>,
    pub method: Method,
    pub authority: Option<Vec<u8>>,
    pub target: String,
    pub status: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub trace: Trace,
    pub error: Option<LocalError>,
    pub started: tokio::time::Instant,
}

impl Drop for Deferred {
    fn drop(&mut self) {
        self.log.log(&Entry {
            client: &self.client,
            method: Some(self.method.as_str()),
            authority: self.authority.as_deref(),
            target: Some(&self.target),
            version: Version::HTTP_2,
            status: self.status,
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_out,
            trace: &self.trace,
            error: self.error,
            duration: self.started.elapsed(),
        });
    }
}

/// Whether a request makes a line: all of them at `sample = 1`, else a fraction `sample` of
/// them (`draw` is uniform in [0, 1)), and every 5xx and answer of the proxy's own.
pub fn keep(sample: f64, status: u16, error: Option<LocalError>, draw: f64) -> bool {
    sample >= 1.0 || status >= 500 || error.is_some() || draw < sample
}

/// The process's access log: off, or the log thread and how to reach it.
pub struct AccessLog {
    sink: Option<Arc<Sink>>,
    format: Format,
    sample: f64,
}

struct Sink {
    tx: SyncSender<Message>,
    reopen: Arc<AtomicBool>,
    /// `proxy_access_log_lines_total{result}`.
    lines: IntCounterVec,
}

enum Message {
    Lines(Vec<u8>),
    /// Write what is queued, flush, answer, and stop.
    Close(mpsc::Sender<()>),
}

impl AccessLog {
    pub fn off() -> AccessLog {
        AccessLog {
            sink: None,
            format: Format::Json,
            sample: 1.0,
        }
    }

    /// Opens the output and starts the log thread. An output that cannot be opened is an
    /// error naming it.
    pub fn start(config: &Config, lines: IntCounterVec) -> Result<AccessLog, String> {
        let out = match open(&config.output) {
            Ok(Some(out)) => out,
            Ok(None) => return Ok(AccessLog::off()),
            Err(e) => return Err(format!("access_log.output: {e}")),
        };
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let reopen = Arc::new(AtomicBool::new(false));
        let output = config.output.clone();
        let flag = reopen.clone();
        std::thread::Builder::new()
            .name("proxy-access-log".into())
            .spawn(move || log_thread(rx, out, output, flag))
            .map_err(|e| format!("access_log: cannot start the log thread: {e}"))?;
        Ok(AccessLog {
            sink: Some(Arc::new(Sink { tx, reopen, lines })),
            format: config.format,
            sample: config.sample,
        })
    }

    pub fn enabled(&self) -> bool {
        self.sink.is_some()
    }

    /// A buffer for one worker thread.
    pub fn writer(&self) -> Writer {
        Writer {
            sink: self.sink.clone(),
            format: self.format,
            sample: self.sample,
            pending: Mutex::new(Vec::new()),
        }
    }

    /// Reopens the file before the next write (SIGUSR1, after logrotate moved it).
    pub fn reopen(&self) {
        if let Some(sink) = &self.sink {
            sink.reopen.store(true, Ordering::Relaxed);
        }
    }

    /// Writes out what the log thread holds and stops it; the workers flushed theirs first.
    pub fn close(&self, within: Duration) {
        if let Some(sink) = &self.sink {
            let (ack, done) = mpsc::channel();
            if sink.tx.send(Message::Close(ack)).is_ok() {
                let _ = done.recv_timeout(within);
            }
        }
    }
}

/// One worker's buffer of formatted lines.
pub struct Writer {
    sink: Option<Arc<Sink>>,
    format: Format,
    sample: f64,
    pending: Mutex<Vec<u8>>,
}

impl Writer {
    pub fn enabled(&self) -> bool {
        self.sink.is_some()
    }

    /// Formats `entry` into the buffer if it is kept (see [`keep`]).
    pub fn log(&self, entry: &Entry<'_>) {
        let Some(sink) = &self.sink else { return };
        if !keep(self.sample, entry.status, entry.error, fastrand::f64()) {
            return;
        }
        let time = SystemTime::now()
            .checked_sub(entry.duration)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let full = {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            format_entry(&mut pending, self.format, time, entry);
            (pending.len() >= FLUSH_BYTES).then(|| std::mem::take(&mut *pending))
        };
        if let Some(batch) = full {
            send(sink, batch);
        }
    }

    /// Sends what the buffer holds to the log thread.
    pub fn flush(&self) {
        let Some(sink) = &self.sink else { return };
        let batch = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        if !batch.is_empty() {
            send(sink, batch);
        }
    }

    /// Flushes every [`FLUSH_EVERY`]; the worker spawns it and aborts it when done.
    pub async fn flush_periodically(self: Arc<Self>) {
        if !self.enabled() {
            return;
        }
        let mut tick = tokio::time::interval(FLUSH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.flush();
        }
    }
}

fn send(sink: &Sink, batch: Vec<u8>) {
    let lines = batch.iter().filter(|b| **b == b'\n').count() as u64;
    match sink.tx.try_send(Message::Lines(batch)) {
        Ok(()) => sink.lines.with_label_values(&["written"]).inc_by(lines),
        Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
            sink.lines.with_label_values(&["dropped"]).inc_by(lines);
        }
    }
}

type Out = BufWriter<Box<dyn Write + Send>>;

fn open(output: &Output) -> Result<Option<Out>, String> {
    let out: Box<dyn Write + Send> = match output {
        Output::Off => return Ok(None),
        Output::Stdout => Box::new(std::io::stdout()),
        Output::File(path) => Box::new(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| format!("cannot open {}: {e}", path.display()))?,
        ),
    };
    Ok(Some(BufWriter::with_capacity(64 * 1024, out)))
}

/// The log thread: writes batches as they come, flushes when the queue is empty, reopens
/// the file when asked.
fn log_thread(rx: Receiver<Message>, mut out: Out, output: Output, reopen: Arc<AtomicBool>) {
    let mut failing = false;
    let mut report = |result: std::io::Result<()>| match result {
        Ok(()) => failing = false,
        Err(e) => {
            if !std::mem::replace(&mut failing, true) {
                tracing::error!(error = %e, "cannot write the access log; lines are lost until it can");
            }
        }
    };
    loop {
        match rx.recv_timeout(FLUSH_EVERY * 2) {
            Ok(Message::Lines(batch)) => {
                report(out.write_all(&batch));
                loop {
                    match rx.try_recv() {
                        Ok(Message::Lines(batch)) => report(out.write_all(&batch)),
                        Ok(Message::Close(ack)) => {
                            report(out.flush());
                            let _ = ack.send(());
                            return;
                        }
                        Err(_) => break,
                    }
                }
                report(out.flush());
            }
            Ok(Message::Close(ack)) => {
                report(out.flush());
                let _ = ack.send(());
                return;
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                report(out.flush());
                return;
            }
        }
        if reopen.swap(false, Ordering::Relaxed) {
            report(out.flush());
            match open(&output) {
                Ok(Some(new)) => {
                    out = new;
                    tracing::info!("access log reopened");
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(error = %e, "cannot reopen the access log; still writing to the old file")
                }
            }
        }
    }
}

/// A value in a line.
enum Value<'a> {
    Str(&'a str),
    /// Bytes from the request, shown as text (lossy where not UTF-8).
    Bytes(&'a [u8]),
    Int(u64),
    Millis(Duration),
    List(&'a [&'static str]),
    Null,
}

/// Every field of a line, in order, for either format.
fn fields(entry: &Entry<'_>, time: &str, each: &mut dyn FnMut(&str, Value<'_>)) {
    use Value::*;
    let trace = entry.trace;
    fn opt(s: Option<&str>) -> Value<'_> {
        s.map_or(Value::Null, Value::Str)
    }
    each("time", Str(time));
    let client = entry.client.peer.to_string();
    each("client", Str(&client));
    each("method", opt(entry.method));
    each("authority", entry.authority.map_or(Null, Bytes));
    each("path", opt(entry.target));
    each("protocol", Str(protocol(entry.version)));
    each("status", Int(u64::from(entry.status)));
    each("bytes_in", Int(entry.bytes_in));
    each("bytes_out", Int(entry.bytes_out));
    each(
        "pool",
        if trace.pool.is_empty() {
            Null
        } else {
            Str(&trace.pool)
        },
    );
    let endpoint = trace.endpoint.map(|e| e.to_string());
    each("endpoint", opt(endpoint.as_deref()));
    each("tries", Int(u64::from(trace.tries)));
    each("retried", List(trace.reasons()));
    each("upstream_ttfb_ms", trace.upstream_ttfb.map_or(Null, Millis));
    each("duration_ms", Millis(entry.duration));
    each(
        "request_id",
        if trace.request_id.is_empty() {
            Null
        } else {
            Bytes(&trace.request_id)
        },
    );
    each("tls", opt(entry.client.tls_version));
    each("alpn", opt(entry.client.alpn));
    each("error", opt(entry.error.map(LocalError::as_str)));
}

fn protocol(v: Version) -> &'static str {
    match v {
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

/// Appends `entry` as one line.
fn format_entry(out: &mut Vec<u8>, format: Format, time: SystemTime, entry: &Entry<'_>) {
    let time = humantime::format_rfc3339_millis(time).to_string();
    match format {
        Format::Json => {
            out.push(b'{');
            let mut first = true;
            fields(entry, &time, &mut |key, value| {
                if !std::mem::replace(&mut first, false) {
                    out.push(b',');
                }
                json_string(out, key);
                out.push(b':');
                json_value(out, &value);
            });
            out.extend_from_slice(b"}\n");
        }
        Format::Logfmt => {
            let mut first = true;
            fields(entry, &time, &mut |key, value| {
                if matches!(value, Value::Null | Value::List([])) {
                    return;
                }
                if !std::mem::replace(&mut first, false) {
                    out.push(b' ');
                }
                out.extend_from_slice(key.as_bytes());
                out.push(b'=');
                logfmt_value(out, &value);
            });
            out.push(b'\n');
        }
    }
}

fn json_string(out: &mut Vec<u8>, s: &str) {
    // Writing a `str` to a `Vec` cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

fn json_value(out: &mut Vec<u8>, value: &Value<'_>) {
    match value {
        Value::Str(s) => json_string(out, s),
        Value::Bytes(b) => json_string(out, &String::from_utf8_lossy(b)),
        Value::Int(n) => {
            let _ = write!(out, "{n}");
        }
        Value::Millis(d) => {
            let _ = write!(out, "{:.3}", d.as_secs_f64() * 1000.0);
        }
        Value::List(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                json_string(out, item);
            }
            out.push(b']');
        }
        Value::Null => out.extend_from_slice(b"null"),
    }
}

fn logfmt_value(out: &mut Vec<u8>, value: &Value<'_>) {
    match value {
        Value::Str(s) => logfmt_text(out, s),
        Value::Bytes(b) => logfmt_text(out, &String::from_utf8_lossy(b)),
        Value::List(items) => logfmt_text(out, &items.join(",")),
        Value::Int(_) | Value::Millis(_) | Value::Null => json_value(out, value),
    }
}

/// A logfmt value: bare when it is a plain word, else quoted with JSON's escapes.
fn logfmt_text(out: &mut Vec<u8>, s: &str) {
    let bare = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'=' && b != b'\\');
    if bare {
        out.extend_from_slice(s.as_bytes());
    } else {
        json_string(out, s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry<'a>(client: &'a Peer, trace: &'a Trace) -> Entry<'a> {
        Entry {
            client,
            method: Some("GET"),
            authority: Some(b"courses.example"),
            target: Some("/api/courses?q=a \"b\""),
            version: Version::HTTP_11,
            status: 200,
            bytes_in: 0,
            bytes_out: 1234,
            trace,
            error: None,
            duration: Duration::from_micros(2500),
        }
    }

    fn traced() -> Trace {
        let mut trace = Trace::new(true);
        trace.pool.push_str("main");
        trace.try_started("127.0.0.1:3001".parse().unwrap(), None);
        trace.try_started("127.0.0.1:3002".parse().unwrap(), Some("connect"));
        trace.upstream_ttfb = Some(Duration::from_micros(1500));
        trace.request_id.extend_from_slice(b"abc123");
        trace
    }

    #[test]
    fn a_json_line_has_every_field() {
        let client = Peer::new("192.0.2.7:40000".parse().unwrap(), false, false);
        let trace = traced();
        let mut out = Vec::new();
        let time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        format_entry(&mut out, Format::Json, time, &entry(&client, &trace));
        assert_eq!(out.last(), Some(&b'\n'));
        let line: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(line["time"], "2023-11-14T22:13:20.000Z");
        assert_eq!(line["client"], "192.0.2.7:40000");
        assert_eq!(line["method"], "GET");
        assert_eq!(line["authority"], "courses.example");
        assert_eq!(line["path"], "/api/courses?q=a \"b\"");
        assert_eq!(line["protocol"], "HTTP/1.1");
        assert_eq!(line["status"], 200);
        assert_eq!(line["bytes_out"], 1234);
        assert_eq!(line["pool"], "main");
        assert_eq!(line["endpoint"], "127.0.0.1:3002");
        assert_eq!(line["tries"], 2);
        assert_eq!(line["retried"], serde_json::json!(["connect"]));
        assert_eq!(line["upstream_ttfb_ms"], 1.5);
        assert_eq!(line["duration_ms"], 2.5);
        assert_eq!(line["request_id"], "abc123");
        assert_eq!(line["tls"], serde_json::Value::Null);
        assert_eq!(line["error"], serde_json::Value::Null);
    }

    #[test]
    fn a_logfmt_line_quotes_what_needs_it_and_leaves_out_nulls() {
        let client = Peer::new("[::1]:40000".parse().unwrap(), false, false);
        let trace = traced();
        let mut out = Vec::new();
        let time = SystemTime::UNIX_EPOCH;
        format_entry(&mut out, Format::Logfmt, time, &entry(&client, &trace));
        let line = String::from_utf8(out).unwrap();
        assert!(
            line.starts_with("time=1970-01-01T00:00:00.000Z client=[::1]:40000 method=GET "),
            "{line}"
        );
        assert!(
            line.contains(r#" path="/api/courses?q=a \"b\"" "#),
            "{line}"
        );
        assert!(line.contains(" retried=connect "), "{line}");
        assert!(!line.contains("tls="), "{line}");
        assert!(line.ends_with(" request_id=abc123\n"), "{line}");
    }

    #[test]
    fn a_request_the_proxy_could_not_parse_still_makes_a_line() {
        let client = Peer::new("127.0.0.1:1".parse().unwrap(), false, false);
        let trace = Trace::new(true);
        let e = Entry {
            client: &client,
            method: None,
            authority: None,
            target: None,
            version: Version::HTTP_11,
            status: 400,
            bytes_in: 0,
            bytes_out: 0,
            trace: &trace,
            error: Some(LocalError::BadRequest),
            duration: Duration::ZERO,
        };
        let mut out = Vec::new();
        format_entry(&mut out, Format::Json, SystemTime::UNIX_EPOCH, &e);
        let line: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(line["method"], serde_json::Value::Null);
        assert_eq!(line["tries"], 0);
        assert_eq!(line["retried"], serde_json::json!([]));
        assert_eq!(line["error"], "bad_request");
    }

    #[test]
    fn sampling_keeps_a_fraction_and_every_error() {
        assert!(keep(1.0, 200, None, 0.99));
        assert!(!keep(0.0, 200, None, 0.0));
        assert!(keep(0.0, 503, None, 0.5));
        assert!(keep(0.0, 404, Some(LocalError::NoRoute), 0.5));
        let mut rng = fastrand::Rng::with_seed(42);
        let kept = (0..10_000)
            .filter(|_| keep(0.1, 200, None, rng.f64()))
            .count();
        assert!((800..1200).contains(&kept), "{kept} of 10 000 at 0.1");
    }

    #[test]
    fn retry_reasons_are_bounded() {
        let mut trace = Trace::new(true);
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        trace.try_started(addr, None);
        for _ in 0..20 {
            trace.try_started(addr, Some("reset"));
        }
        assert_eq!(trace.tries, 21);
        assert_eq!(trace.reasons().len(), MAX_REASONS);
    }
}
