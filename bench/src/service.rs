//! The real stack for the `cache` scenario: SecantusDB (seeded with the shipped catalogue),
//! redis-server when installed, three `course-service` instances per cache mode, and our
//! proxy in front of them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;

use crate::systems::{free_port, on_path, spawn, workdir, System};

/// The admin token the bench's instances accept.
pub const TOKEN: &str = "bench-admin-token-0123456789";

/// Where the shipped seed catalogue is (50 courses).
pub fn seed_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/seed-courses.json")
}

/// `secantusd-py`: `$SECANTUSD`, else the workspace's `.venv`.
fn secantusd() -> PathBuf {
    std::env::var_os("SECANTUSD").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/secantusd-py"),
        PathBuf::from,
    )
}

/// What the database starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Catalogue {
    /// `configs/seed-courses.json`.
    Shipped,
    /// `course-service generate N` (seed 1: the same courses every run).
    Generated(usize),
}

/// A cache mode under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheMode {
    Off,
    Memory,
    /// Redis behind the in-process tier (the default).
    Redis,
    /// Redis alone: every read is a Redis round trip.
    RedisOnly,
}

impl CacheMode {
    pub fn label(self) -> &'static str {
        match self {
            CacheMode::Off => "no cache",
            CacheMode::Memory => "memory cache",
            CacheMode::Redis => "redis cache",
            CacheMode::RedisOnly => "redis cache, no local tier",
        }
    }

    pub fn uses_redis(self) -> bool {
        matches!(self, CacheMode::Redis | CacheMode::RedisOnly)
    }
}

/// The database (and Redis) the instances share.
pub struct Backing {
    pub mongodb_uri: String,
    /// `None` when redis-server is not installed.
    pub redis_url: Option<String>,
    _mongo: System,
    _redis: Option<System>,
}

impl Backing {
    /// Starts SecantusDB (in memory) and redis-server, and seeds the catalogue with
    /// `service_bin seed` (the 50 shipped courses).
    pub fn start(service_bin: &Path) -> Result<Backing, String> {
        Backing::start_with(service_bin, Catalogue::Shipped)
    }

    /// Starts SecantusDB (in memory) and redis-server, and fills the catalogue.
    pub fn start_with(service_bin: &Path, catalogue: Catalogue) -> Result<Backing, String> {
        let exe = secantusd();
        if !exe.is_file() {
            return Err(format!(
                "{} not found: run scripts/bench (it installs SecantusDB) or set SECANTUSD",
                exe.display()
            ));
        }
        let port = free_port();
        let mut cmd = Command::new(&exe);
        cmd.args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--storage-path", ":memory:", "--log-level", "WARNING"]);
        let mongo = spawn("secantusdb".into(), cmd, port, workdir("secantusdb"))?;
        let mongodb_uri = format!("mongodb://127.0.0.1:{port}/?directConnection=true");
        let redis = if on_path("redis-server") {
            let port = free_port();
            let mut cmd = Command::new("redis-server");
            cmd.args(["--bind", "127.0.0.1", "--port", &port.to_string()])
                .args(["--save", "", "--appendonly", "no"]);
            Some(spawn("redis".into(), cmd, port, workdir("redis"))?)
        } else {
            None
        };
        let redis_url = redis
            .as_ref()
            .map(|r| r.url.trim_end_matches('/').replace("http://", "redis://"));
        let dir = workdir("seed");
        let config = write_config(&dir, CacheMode::Off)?;
        let mut fill = Command::new(service_bin);
        match catalogue {
            Catalogue::Shipped => fill.arg("seed").arg(seed_file()),
            Catalogue::Generated(n) => fill.arg("generate").arg(n.to_string()),
        };
        let out = fill
            .arg("--config")
            .arg(&config)
            .env("MONGODB_URI", &mongodb_uri)
            .env_remove("REDIS_URL")
            .output();
        // Only the seeding used it: nothing the harness starts outlives the run, files neither.
        let _ = std::fs::remove_dir_all(&dir);
        let out = out.map_err(|e| format!("{}: cannot run: {e}", service_bin.display()))?;
        if !out.status.success() {
            return Err(format!(
                "seeding failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(Backing {
            mongodb_uri,
            redis_url,
            _mongo: mongo,
            _redis: redis,
        })
    }
}

fn write_config(dir: &Path, mode: CacheMode) -> Result<PathBuf, String> {
    let cache = match mode {
        CacheMode::Off => "enabled = false",
        CacheMode::Memory => "backend = \"memory\"",
        CacheMode::Redis => "backend = \"redis\"",
        CacheMode::RedisOnly => "backend = \"redis\"\nlocal_max_entries = 0",
    };
    let path = dir.join("course-service.toml");
    std::fs::write(
        &path,
        format!("[mongodb]\ndatabase = \"bench\"\n[cache]\n{cache}\n"),
    )
    .map_err(|e| e.to_string())?;
    Ok(path)
}

/// `n` instances of course-service with `mode`, ready (their cache following changes).
pub async fn instances(
    service_bin: &Path,
    backing: &Backing,
    mode: CacheMode,
    n: usize,
) -> Result<Vec<System>, String> {
    let mut list = Vec::with_capacity(n);
    for i in 0..n {
        let dir = workdir(&format!("course-service-{i}"));
        let config = write_config(&dir, mode)?;
        let port = free_port();
        let mut cmd = Command::new(service_bin);
        cmd.arg("serve")
            .arg("--config")
            .arg(&config)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .env("MONGODB_URI", &backing.mongodb_uri)
            .env("MC_ADMIN_TOKEN", TOKEN)
            .env("RUST_LOG", "warn");
        match (&backing.redis_url, mode.uses_redis()) {
            (Some(url), true) => cmd.env("REDIS_URL", url),
            (None, true) => return Err("redis-server is not installed".into()),
            (_, false) => cmd.env_remove("REDIS_URL"),
        };
        list.push(spawn(
            format!("course-service #{} ({})", i + 1, mode.label()),
            cmd,
            port,
            dir,
        )?);
    }
    let http = Http::new();
    for system in &list {
        let url = format!("{}api/courses?per_page=1", system.url);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok((200, headers, _)) = http.get(&url).await {
                let cache = headers.get("x-cache").and_then(|v| v.to_str().ok());
                if mode == CacheMode::Off || cache != Some("BYPASS") {
                    break;
                }
            }
            if Instant::now() > deadline {
                return Err(format!("{} did not become ready", system.name));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(list)
}

/// A small HTTP/1.1 client for the scenario's own requests.
pub struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Default for Http {
    fn default() -> Self {
        Http::new()
    }
}

impl Http {
    pub fn new() -> Http {
        Http {
            client: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
        }
    }

    pub async fn get(&self, url: &str) -> Result<(u16, http::HeaderMap, Bytes), String> {
        let req = http::Request::get(url)
            .body(Full::default())
            .map_err(|e| e.to_string())?;
        self.send(req).await
    }

    /// An admin `PATCH` with a JSON body.
    pub async fn patch(&self, url: &str, json: String) -> Result<(u16, Bytes), String> {
        let req = http::Request::patch(url)
            .header("authorization", format!("Bearer {TOKEN}"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(json)))
            .map_err(|e| e.to_string())?;
        self.send(req).await.map(|(s, _, b)| (s, b))
    }

    async fn send(
        &self,
        req: http::Request<Full<Bytes>>,
    ) -> Result<(u16, http::HeaderMap, Bytes), String> {
        let res = tokio::time::timeout(Duration::from_secs(10), self.client.request(req))
            .await
            .map_err(|_| "timed out".to_string())?
            .map_err(|e| e.to_string())?;
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let body = res
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, headers, body))
    }
}

/// The addresses of `systems` (for our proxy's upstream list).
/// Waits (30 s at most) until no instance is handling a request: a closed-loop run leaves the
/// database with a backlog of queries its clients gave up on, which must not be charged to
/// the next run.
pub async fn wait_idle(instances: &[System]) {
    let http = Http::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    for system in instances {
        let url = format!("{}metrics", system.url);
        while Instant::now() < deadline {
            let busy = match http.get(&url).await {
                Ok((200, _, body)) => String::from_utf8_lossy(&body)
                    .lines()
                    .filter(|l| l.starts_with("course_service_http_requests_in_flight "))
                    .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                    // The scrape itself is one.
                    .any(|n| n > 1.0),
                _ => false,
            };
            if !busy {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

pub fn addrs(systems: &[System]) -> Vec<SocketAddr> {
    systems
        .iter()
        .filter_map(|s| {
            s.url
                .trim_start_matches("http://")
                .trim_end_matches('/')
                .parse()
                .ok()
        })
        .collect()
}
