//! `proxy.toml` (read at start-up) and `upstreams.toml` (hot-reloaded), parsed and validated at
//! the edge into typed structs; the rest of the proxy never sees raw strings.
//!
//! Type errors (a bad address, duration or algorithm) come from the TOML deserializer with
//! their position; cross-field rules (an empty pool, a route to a missing pool, a repeated
//! endpoint) are checked here, on `Spanned` values, so every error names file, line, column and
//! field. Validation collects every semantic error rather than stopping at the first, for
//! `proxy --check`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use shared::config::{line_col, ConfigError};
use toml::Spanned;

use crate::access_log;
use crate::balance::Algorithm;

// ===== proxy.toml =====

pub const DEFAULT_HTTP: &str = "127.0.0.1:8080";
pub const DEFAULT_ADMIN: &str = "127.0.0.1:9090";
/// Headers beyond 16 KiB are an attack or a bug (nginx's large_client_header_buffers is 8 KiB).
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;
pub const DEFAULT_MAX_BODY_BYTES: u64 = 10 * 1024 * 1024;
/// Request bodies up to this size are read whole before an upstream is picked (nginx's and
/// HAProxy's request buffering): a slow upload holds no upstream connection, and the request
/// can be sent again when a try fails. 64 KiB covers every course write many times over.
pub const DEFAULT_BUFFER_BODY_BYTES: u64 = 64 * 1024;
/// Far above what 2 cores serve, low enough to keep file descriptors in check.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Slowloris defence: a client gets this long to send a request's headers.
pub const DEFAULT_HEADER_READ: Duration = Duration::from_secs(10);
pub const DEFAULT_CONNECT: Duration = Duration::from_secs(1);
pub const DEFAULT_PER_TRY: Duration = Duration::from_secs(5);
pub const DEFAULT_REQUEST: Duration = Duration::from_secs(30);
pub const DEFAULT_IDLE: Duration = Duration::from_secs(60);
/// A client that sends nothing for this long in the middle of its request body gets 408
/// (nginx's `client_body_timeout` is 60 s; half that is plenty for a live client).
pub const DEFAULT_BODY_READ: Duration = Duration::from_secs(30);
/// An upgraded connection (WebSocket) with no byte either way for this long is closed
/// (Envoy's stream idle timeout is 5 minutes too).
pub const DEFAULT_TUNNEL_IDLE: Duration = Duration::from_secs(300);
/// The upgrade protocols passed on by default: WebSocket only. Anything else (`h2c`, say)
/// would let a client talk a protocol to the upstream past every rule of this proxy.
pub const DEFAULT_UPGRADES: &[&str] = &["websocket"];
/// hyper's HTTP/1 parser needs at least this much buffer.
const MIN_HEADER_BYTES: usize = 8192;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProxy {
    #[serde(default = "default_upstreams_file")]
    upstreams_file: PathBuf,
    #[serde(default)]
    listen: RawListen,
    #[serde(default)]
    tls: RawTls,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    timeouts: Timeouts,
    #[serde(default)]
    forwarding: Forwarding,
    #[serde(default)]
    runtime: Runtime,
    #[serde(default)]
    access_log: RawAccessLog,
}

/// `[access_log]` as written: `output` is `"off"`, `"stdout"` or a file path.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawAccessLog {
    output: String,
    format: access_log::Format,
    sample: Spanned<f64>,
}

impl Default for RawAccessLog {
    fn default() -> Self {
        RawAccessLog {
            output: "off".into(),
            format: access_log::Format::Json,
            sample: Spanned::new(0..0, 1.0),
        }
    }
}

fn default_upstreams_file() -> PathBuf {
    PathBuf::from("upstreams.toml")
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawListen {
    http: SocketAddr,
    https: Option<SocketAddr>,
    admin: SocketAddr,
}

impl Default for RawListen {
    fn default() -> Self {
        RawListen {
            http: DEFAULT_HTTP.parse().expect("valid default"),
            https: None,
            admin: DEFAULT_ADMIN.parse().expect("valid default"),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawTls {
    cert: PathBuf,
    key: PathBuf,
    self_signed: bool,
}

impl Default for RawTls {
    fn default() -> Self {
        RawTls {
            cert: "certs/proxy.pem".into(),
            key: "certs/proxy-key.pem".into(),
            self_signed: false,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLimits {
    max_header_bytes: Spanned<usize>,
    max_body_bytes: Spanned<u64>,
    buffer_body_bytes: Spanned<u64>,
    max_connections: Spanned<usize>,
}

impl Default for RawLimits {
    fn default() -> Self {
        RawLimits {
            max_header_bytes: Spanned::new(0..0, DEFAULT_MAX_HEADER_BYTES),
            max_body_bytes: Spanned::new(0..0, DEFAULT_MAX_BODY_BYTES),
            buffer_body_bytes: Spanned::new(0..0, DEFAULT_BUFFER_BODY_BYTES),
            max_connections: Spanned::new(0..0, DEFAULT_MAX_CONNECTIONS),
        }
    }
}

/// `[timeouts]`: each bounds one phase of a request.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// Time a client has to send a request's headers (slowloris: 408 and close); also the
    /// keep-alive wait for the next request on an HTTP/1 connection (then a silent close).
    #[serde(with = "humantime_serde")]
    pub header_read: Duration,
    /// TCP connect to an upstream.
    #[serde(with = "humantime_serde")]
    pub connect: Duration,
    /// The longest a client may send nothing in the middle of its request body (408 after).
    #[serde(with = "humantime_serde")]
    pub body_read: Duration,
    /// One try: from the whole request being sent upstream until its response headers (a
    /// slow client upload does not count against it).
    #[serde(with = "humantime_serde")]
    pub per_try: Duration,
    /// The whole request at the proxy, all tries included, until response headers.
    #[serde(with = "humantime_serde")]
    pub request: Duration,
    /// Idle pooled upstream connections and idle HTTP/2 client connections are closed after.
    #[serde(with = "humantime_serde")]
    pub idle: Duration,
    /// An upgraded connection (a WebSocket tunnel) with no traffic either way is closed after.
    #[serde(with = "humantime_serde")]
    pub tunnel_idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            header_read: DEFAULT_HEADER_READ,
            body_read: DEFAULT_BODY_READ,
            connect: DEFAULT_CONNECT,
            per_try: DEFAULT_PER_TRY,
            request: DEFAULT_REQUEST,
            idle: DEFAULT_IDLE,
            tunnel_idle: DEFAULT_TUNNEL_IDLE,
        }
    }
}

/// `[forwarding]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Forwarding {
    /// Peers whose `X-Forwarded-*` and `Forwarded` headers are kept (and appended to);
    /// from anyone else they are replaced.
    pub trusted_proxies: Vec<IpNet>,
    /// Protocols a client may upgrade to (`Upgrade`, or HTTP/2's extended CONNECT), by name
    /// without case. Any other upgrade request goes upstream as a plain request (HTTP/1) or
    /// gets 501 (HTTP/2).
    pub upgrades: Vec<String>,
}

impl Default for Forwarding {
    fn default() -> Self {
        Forwarding {
            trusted_proxies: vec![
                "127.0.0.1/32".parse().expect("valid"),
                "::1/128".parse().expect("valid"),
            ],
            upgrades: DEFAULT_UPGRADES.iter().map(|p| p.to_string()).collect(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Runtime {
    /// Tokio worker threads; 0: `TOKIO_WORKER_THREADS` if set, else one per core.
    pub workers: usize,
}

/// `[listen]`.
#[derive(Debug, Clone)]
pub struct Listen {
    pub http: SocketAddr,
    pub https: Option<SocketAddr>,
    pub admin: SocketAddr,
}

/// `[tls]` with paths resolved against the config file's directory.
#[derive(Debug, Clone)]
pub struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Generate a self-signed pair at `cert`/`key` when they are absent (development).
    pub self_signed: bool,
}

/// `[limits]`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_header_bytes: usize,
    pub max_body_bytes: u64,
    /// Request bodies up to this size are read whole before an upstream is picked (0: every
    /// body streams); never more than `max_body_bytes`.
    pub buffer_body_bytes: u64,
    pub max_connections: usize,
}

/// `proxy.toml`, validated.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// The file it was read from.
    pub path: PathBuf,
    /// `upstreams.toml`, resolved against this file's directory.
    pub upstreams_file: PathBuf,
    pub listen: Listen,
    pub tls: Tls,
    pub limits: Limits,
    pub timeouts: Timeouts,
    pub forwarding: Forwarding,
    pub runtime: Runtime,
    pub access_log: access_log::Config,
    /// `--pid-file`: where the serving process writes its pid (not a file key).
    pub pid_file: Option<PathBuf>,
}

impl ProxyConfig {
    pub fn load(path: &Path) -> Result<ProxyConfig, Vec<ConfigError>> {
        let text = read(path)?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<ProxyConfig, Vec<ConfigError>> {
        let raw: RawProxy = shared::config::parse(path, text).map_err(|e| vec![e])?;
        let mut errors = Errors::new(path, text);
        let l = &raw.limits;
        if *l.max_header_bytes.get_ref() < MIN_HEADER_BYTES {
            errors.at(
                &l.max_header_bytes,
                "limits.max_header_bytes",
                format!("must be at least {MIN_HEADER_BYTES}"),
            );
        }
        if *l.max_connections.get_ref() == 0 {
            errors.at(
                &l.max_connections,
                "limits.max_connections",
                "must be at least 1",
            );
        }
        if *l.max_body_bytes.get_ref() == 0 {
            errors.at(
                &l.max_body_bytes,
                "limits.max_body_bytes",
                "must be at least 1",
            );
        }
        let t = &raw.timeouts;
        for (name, d) in [
            ("timeouts.header_read", t.header_read),
            ("timeouts.body_read", t.body_read),
            ("timeouts.connect", t.connect),
            ("timeouts.per_try", t.per_try),
            ("timeouts.request", t.request),
            ("timeouts.idle", t.idle),
            ("timeouts.tunnel_idle", t.tunnel_idle),
        ] {
            if d.is_zero() {
                errors.field(name, "must be greater than 0");
            }
        }
        if t.per_try > t.request {
            errors.field("timeouts.per_try", "must not exceed timeouts.request");
        }
        for protocol in &raw.forwarding.upgrades {
            if protocol.is_empty()
                || !protocol
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
            {
                errors.field(
                    "forwarding.upgrades",
                    format!("{protocol:?} is not a protocol name (a token such as \"websocket\")"),
                );
            }
        }
        let sample = *raw.access_log.sample.get_ref();
        if !(0.0..=1.0).contains(&sample) {
            errors.at(
                &raw.access_log.sample,
                "access_log.sample",
                "must be between 0 and 1 (the fraction of requests logged)",
            );
        }
        if raw.access_log.output.is_empty() {
            errors.field(
                "access_log.output",
                "must be \"off\", \"stdout\" or a file path",
            );
        }
        errors.finish()?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let output = match raw.access_log.output.as_str() {
            "off" => access_log::Output::Off,
            "stdout" => access_log::Output::Stdout,
            file => access_log::Output::File(dir.join(file)),
        };
        Ok(ProxyConfig {
            path: path.to_path_buf(),
            upstreams_file: dir.join(&raw.upstreams_file),
            listen: Listen {
                http: raw.listen.http,
                https: raw.listen.https,
                admin: raw.listen.admin,
            },
            tls: Tls {
                cert: dir.join(&raw.tls.cert),
                key: dir.join(&raw.tls.key),
                self_signed: raw.tls.self_signed,
            },
            limits: Limits {
                max_header_bytes: *l.max_header_bytes.get_ref(),
                max_body_bytes: *l.max_body_bytes.get_ref(),
                buffer_body_bytes: (*l.buffer_body_bytes.get_ref())
                    .min(*l.max_body_bytes.get_ref()),
                max_connections: *l.max_connections.get_ref(),
            },
            timeouts: raw.timeouts,
            forwarding: raw.forwarding,
            runtime: raw.runtime,
            access_log: access_log::Config {
                output,
                format: raw.access_log.format,
                sample,
            },
            pid_file: None,
        })
    }
}

// ===== upstreams.toml =====

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstreams {
    #[serde(default)]
    route: Vec<RawRoute>,
    #[serde(default)]
    pool: BTreeMap<String, RawPool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    #[serde(default = "any_host")]
    host: Spanned<String>,
    #[serde(default = "root_prefix")]
    path_prefix: Spanned<String>,
    pool: Spanned<String>,
}

fn any_host() -> Spanned<String> {
    Spanned::new(0..0, "*".into())
}

fn root_prefix() -> Spanned<String> {
    Spanned::new(0..0, "/".into())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPool {
    #[serde(default = "default_algorithm")]
    algorithm: Algorithm,
    endpoints: Spanned<Vec<RawEndpoint>>,
    #[serde(default)]
    health: HealthConfig,
    #[serde(default)]
    ejection: EjectionConfig,
    #[serde(default)]
    retry: RetryConfig,
    #[serde(default)]
    slow_start: SlowStartConfig,
}

fn default_algorithm() -> Algorithm {
    Algorithm::PeakEwma
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEndpoint {
    addr: Spanned<SocketAddr>,
    #[serde(default = "one")]
    weight: Spanned<u32>,
}

fn one() -> Spanned<u32> {
    Spanned::new(0..0, 1)
}

/// The largest weight: enough for any ratio that matters, small enough that sums never
/// overflow.
pub const MAX_WEIGHT: u32 = 1000;

/// `[pool.X.health]`: active checks.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    pub path: String,
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            path: shared::health::HEALTHZ_PATH.into(),
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            healthy_threshold: 2,
            unhealthy_threshold: 3,
        }
    }
}

/// `[pool.X.ejection]`: passive outlier detection.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EjectionConfig {
    pub consecutive_failures: u32,
    #[serde(with = "humantime_serde")]
    pub base_time: Duration,
    #[serde(with = "humantime_serde")]
    pub max_time: Duration,
    pub max_ejected_percent: u32,
    /// With every endpoint out: route across all of them anyway (Envoy's panic mode, the
    /// default), or answer 503 with `Retry-After` (HAProxy's way).
    pub panic: bool,
}

impl Default for EjectionConfig {
    fn default() -> Self {
        EjectionConfig {
            consecutive_failures: 5,
            base_time: Duration::from_secs(10),
            max_time: Duration::from_secs(300),
            max_ejected_percent: 50,
            panic: true,
        }
    }
}

/// `[pool.X.retry]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Tries in all, each on a different endpoint.
    pub attempts: u32,
    pub budget_percent: u32,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            attempts: 2,
            budget_percent: 20,
        }
    }
}

/// `[pool.X.slow_start]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SlowStartConfig {
    /// Ramp-up of a new or re-admitted endpoint's weight; 0 disables.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
}

impl Default for SlowStartConfig {
    fn default() -> Self {
        SlowStartConfig {
            window: Duration::ZERO,
        }
    }
}

/// One `[[route]]`: requests whose host and path match go to `pool`.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfig {
    /// Lower-case host without port, or `None` for `*`.
    pub host: Option<String>,
    pub path_prefix: String,
    pub pool: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EndpointConfig {
    pub addr: SocketAddr,
    pub weight: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    pub name: String,
    pub algorithm: Algorithm,
    pub endpoints: Vec<EndpointConfig>,
    pub health: HealthConfig,
    pub ejection: EjectionConfig,
    pub retry: RetryConfig,
    pub slow_start: SlowStartConfig,
}

/// `upstreams.toml`, validated: routes most specific first, then the pools.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamsConfig {
    pub routes: Vec<RouteConfig>,
    pub pools: Vec<PoolConfig>,
}

impl UpstreamsConfig {
    pub fn load(path: &Path) -> Result<UpstreamsConfig, Vec<ConfigError>> {
        let text = read(path)?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<UpstreamsConfig, Vec<ConfigError>> {
        let raw: RawUpstreams = shared::config::parse(path, text).map_err(|e| vec![e])?;
        let mut errors = Errors::new(path, text);
        if raw.pool.is_empty() {
            errors.field("pool", "define at least one [pool.NAME] with endpoints");
        }
        let mut pools = Vec::with_capacity(raw.pool.len());
        for (name, p) in raw.pool {
            pools.push(validate_pool(&mut errors, name, p));
        }
        let mut routes = Vec::with_capacity(raw.route.len());
        for (i, r) in raw.route.into_iter().enumerate() {
            let field = |f: &str| format!("route[{i}].{f}");
            if !pools.iter().any(|p| p.name == *r.pool.get_ref()) {
                errors.at(
                    &r.pool,
                    &field("pool"),
                    format!("no pool named `{}`", r.pool.get_ref()),
                );
            }
            if !r.path_prefix.get_ref().starts_with('/') {
                errors.at(&r.path_prefix, &field("path_prefix"), "must start with /");
            }
            let host = r.host.get_ref().trim().to_ascii_lowercase();
            if host.is_empty() || host.contains(['/', ' ', ':']) {
                errors.at(
                    &r.host,
                    &field("host"),
                    "must be a host name without port, or \"*\"",
                );
            }
            routes.push(RouteConfig {
                host: (host != "*").then_some(host),
                path_prefix: r.path_prefix.into_inner(),
                pool: r.pool.into_inner(),
            });
        }
        if routes.is_empty() {
            match pools.as_slice() {
                [only] => routes.push(RouteConfig {
                    host: None,
                    path_prefix: "/".into(),
                    pool: only.name.clone(),
                }),
                [] => {}
                _ => errors.field(
                    "route",
                    "with several pools, add [[route]] entries saying which requests go where",
                ),
            }
        }
        errors.finish()?;
        // Most specific first: exact hosts before `*`, then longer prefixes.
        routes.sort_by(|a, b| {
            b.host
                .is_some()
                .cmp(&a.host.is_some())
                .then(b.path_prefix.len().cmp(&a.path_prefix.len()))
        });
        Ok(UpstreamsConfig { routes, pools })
    }

    pub fn pool(&self, name: &str) -> Option<&PoolConfig> {
        self.pools.iter().find(|p| p.name == name)
    }
}

fn validate_pool(errors: &mut Errors<'_>, name: String, p: RawPool) -> PoolConfig {
    let f = |field: &str| format!("pool.{name}.{field}");
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        errors.field(
            &format!("pool.{name}"),
            "pool names use letters, digits, - and _",
        );
    }
    if p.endpoints.get_ref().is_empty() {
        errors.at(
            &p.endpoints,
            &f("endpoints"),
            "a pool needs at least one endpoint",
        );
    }
    let mut endpoints: Vec<EndpointConfig> = Vec::with_capacity(p.endpoints.get_ref().len());
    for (i, e) in p.endpoints.into_inner().into_iter().enumerate() {
        let addr = *e.addr.get_ref();
        if endpoints.iter().any(|o| o.addr == addr) {
            errors.at(
                &e.addr,
                &f(&format!("endpoints[{i}].addr")),
                format!("{addr} is listed twice"),
            );
        }
        if addr.port() == 0 || addr.ip().is_unspecified() {
            errors.at(
                &e.addr,
                &f(&format!("endpoints[{i}].addr")),
                format!("{addr} is not an address requests can be sent to"),
            );
        }
        let weight = *e.weight.get_ref();
        if !(1..=MAX_WEIGHT).contains(&weight) {
            errors.at(
                &e.weight,
                &f(&format!("endpoints[{i}].weight")),
                format!("must be 1 to {MAX_WEIGHT}"),
            );
        }
        endpoints.push(EndpointConfig { addr, weight });
    }
    let h = &p.health;
    if !h.path.starts_with('/') {
        errors.field(&f("health.path"), "must start with /");
    }
    if h.interval.is_zero() || h.timeout.is_zero() {
        errors.field(&f("health"), "interval and timeout must be greater than 0");
    }
    if h.timeout > h.interval {
        errors.field(&f("health.timeout"), "must not exceed health.interval");
    }
    if h.healthy_threshold == 0 || h.unhealthy_threshold == 0 {
        errors.field(&f("health"), "thresholds must be at least 1");
    }
    let e = &p.ejection;
    if e.consecutive_failures == 0 {
        errors.field(&f("ejection.consecutive_failures"), "must be at least 1");
    }
    if e.base_time.is_zero() || e.max_time < e.base_time {
        errors.field(
            &f("ejection"),
            "base_time must be greater than 0 and max_time at least base_time",
        );
    }
    if e.max_ejected_percent > 100 {
        errors.field(&f("ejection.max_ejected_percent"), "must be 0 to 100");
    }
    if p.retry.attempts == 0 || p.retry.attempts > 5 {
        errors.field(&f("retry.attempts"), "must be 1 (no retry) to 5");
    }
    if p.retry.budget_percent > 100 {
        errors.field(&f("retry.budget_percent"), "must be 0 to 100");
    }
    PoolConfig {
        name,
        algorithm: p.algorithm,
        endpoints,
        health: p.health,
        ejection: p.ejection,
        retry: p.retry,
        slow_start: p.slow_start,
    }
}

// ===== errors =====

fn read(path: &Path) -> Result<String, Vec<ConfigError>> {
    std::fs::read_to_string(path).map_err(|e| {
        vec![ConfigError {
            file: path.to_path_buf(),
            position: None,
            message: format!("cannot read file: {e}"),
        }]
    })
}

/// Collects validation errors for one file.
struct Errors<'a> {
    path: &'a Path,
    text: &'a str,
    list: Vec<ConfigError>,
}

impl<'a> Errors<'a> {
    fn new(path: &'a Path, text: &'a str) -> Self {
        Errors {
            path,
            text,
            list: Vec::new(),
        }
    }

    /// An error at a spanned value (a default value has an empty span: no position).
    fn at<T>(&mut self, value: &Spanned<T>, field: &str, message: impl std::fmt::Display) {
        let span = value.span();
        let position = (!span.is_empty()).then(|| line_col(self.text, span.start));
        self.list.push(ConfigError {
            file: self.path.to_path_buf(),
            position,
            message: format!("field `{field}`: {message}"),
        });
    }

    fn field(&mut self, field: &str, message: impl std::fmt::Display) {
        self.list
            .push(ConfigError::field(self.path, field, message));
    }

    fn finish(self) -> Result<(), Vec<ConfigError>> {
        if self.list.is_empty() {
            Ok(())
        } else {
            Err(self.list)
        }
    }
}

#[cfg(test)]
mod tests;
