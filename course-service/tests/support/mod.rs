//! Test support: a real SecantusDB (the MongoDB-compatible server `scripts/test` installs into
//! `.venv`) shared by every test in a binary, a fresh database per test so tests run in
//! parallel, and builders that start the service in-process or as the real binary.
#![allow(dead_code)]

pub mod browser;
pub mod proxy;

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use course_service::app::AppState;
use course_service::config::{Config, Env, FileConfig};
use course_service::{server, store};
use serde_json::{json, Value};

pub const TOKEN: &str = "test-admin-token-0123456789";

/// The workspace root (where `.venv` lives).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("crate sits in the workspace")
        .to_path_buf()
}

pub use shared::testbed::free_port;

/// Polls `cond` until it holds or `deadline` passes; panics with `what` on timeout.
pub fn wait_until(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + deadline;
    while !cond() {
        assert!(
            Instant::now() < end,
            "timed out after {deadline:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Async twin of [`wait_until`].
pub async fn wait_until_async<F, Fut>(what: &str, deadline: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + deadline;
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < end,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A running SecantusDB with in-memory storage.
pub struct MongoServer {
    pub port: u16,
    child: Child,
}

impl MongoServer {
    /// Starts a server on a free port and waits until it accepts connections. A small shell
    /// watchdog kills it when the test process exits, even if no destructor runs.
    pub fn start() -> MongoServer {
        MongoServer::start_on(free_port())
    }

    /// Starts a server on `port` (to bring a stopped one back where it was).
    pub fn start_on(port: u16) -> MongoServer {
        // `configureFailPoint`: the failover tests stage primary step-downs and network
        // errors with it, against the real driver.
        MongoServer::start_with(
            port,
            &["--storage-path", ":memory:", "--enable-test-commands"],
        )
    }

    /// A server keeping its data in `dir`, every commit synced to disk (`--sync-on-commit`,
    /// as `scripts/up` runs it), so it can crash and come back with what it acknowledged.
    pub fn start_durable(port: u16, dir: &std::path::Path) -> MongoServer {
        let dir = dir.to_string_lossy().to_string();
        MongoServer::start_with(port, &["--storage-path", &dir, "--sync-on-commit"])
    }

    fn start_with(port: u16, storage: &[&str]) -> MongoServer {
        let exe = secantusd();
        let port_text = port.to_string();
        let mut args = vec![
            "--host",
            "127.0.0.1",
            "--port",
            &port_text,
            "--log-level",
            "WARNING",
        ];
        args.extend_from_slice(storage);
        let child = spawn_watched(exe.as_os_str(), &args);
        wait_for_port("SecantusDB", port, true);
        MongoServer { port, child }
    }

    /// A crash: SIGKILL to the server process itself (not its watchdog), then waits until
    /// the port refuses.
    pub fn crash(&mut self) {
        let watchdog = self.child.id();
        for pid in children_of(watchdog) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        wait_for_port("SecantusDB", self.port, false);
        let _ = self.child.wait();
    }

    pub fn uri(&self) -> String {
        format!("mongodb://127.0.0.1:{}/?directConnection=true", self.port)
    }

    /// Arms `failCommand` for the next `times` commands named `commands` (a server started
    /// with `start`, which enables test commands; fail points are server-wide).
    pub async fn fail_next(&self, commands: &[&str], times: u32, data: mongodb::bson::Document) {
        let client = mongodb::Client::with_uri_str(self.uri()).await.unwrap();
        let mut spec = mongodb::bson::doc! { "failCommands": commands.to_vec() };
        spec.extend(data);
        client
            .database("admin")
            .run_command(mongodb::bson::doc! {
                "configureFailPoint": "failCommand",
                "mode": { "times": times },
                "data": spec,
            })
            .await
            .expect("configureFailPoint (SecantusDB --enable-test-commands)");
    }

    /// Stops the server (its watchdog forwards SIGTERM) and waits until the port refuses.
    pub fn stop(&mut self) {
        terminate(&mut self.child);
        wait_for_port("SecantusDB", self.port, false);
    }
}

impl Drop for MongoServer {
    fn drop(&mut self) {
        terminate(&mut self.child);
    }
}

/// Starts `exe args` under a small shell watchdog that kills it when the test process exits,
/// even if no destructor runs.
fn spawn_watched(exe: &std::ffi::OsStr, args: &[&str]) -> Child {
    let script = r#""$0" "$@" & child=$!
trap 'kill $child 2>/dev/null' EXIT INT TERM
while kill -0 "$PPID" 2>/dev/null && kill -0 "$child" 2>/dev/null; do sleep 0.5; done"#;
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg(exe)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        // Not the test's stderr: a server outliving the test must not hold its pipe open.
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", exe.to_string_lossy()))
}

/// The processes whose parent is `pid`, from /proc.
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
                == Some(pid)
        })
        .collect()
}

/// SIGTERM, not SIGKILL: the watchdog's trap stops the server before it exits.
fn terminate(child: &mut Child) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let _ = child.wait();
}

/// Waits until `port` accepts connections (`open`) or refuses them.
fn wait_for_port(what: &str, port: u16, open: bool) {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let state = if open { "accept connections" } else { "stop" };
    wait_until(
        &format!("{what} to {state}"),
        Duration::from_secs(60),
        || TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() == open,
    );
}

/// A running `redis-server` (what `scripts/test` installs), persistence off.
pub struct RedisServer {
    pub port: u16,
    child: Child,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        RedisServer::start_on(free_port())
    }

    /// Starts a server on `port` (to bring a stopped one back where it was).
    pub fn start_on(port: u16) -> RedisServer {
        let exe = std::env::var_os("REDIS_SERVER").unwrap_or_else(|| "redis-server".into());
        let child = spawn_watched(
            &exe,
            &[
                "--bind",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ],
        );
        wait_for_port("redis-server", port, true);
        RedisServer { port, child }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops the server and waits until the port refuses.
    pub fn stop(&mut self) {
        terminate(&mut self.child);
        wait_for_port("redis-server", self.port, false);
    }

    /// Freezes (`SIGSTOP`) or thaws (`SIGCONT`) the server process: a Redis that hangs.
    pub fn freeze(&self, frozen: bool) {
        // The child is the watchdog shell; the server is its only child.
        let sh = self.child.id();
        let children = std::fs::read_to_string(format!("/proc/{sh}/task/{sh}/children"))
            .expect("the watchdog's children");
        let pid: i32 = children
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
            .expect("redis-server runs under the watchdog");
        let signal = if frozen {
            nix::sys::signal::Signal::SIGSTOP
        } else {
            nix::sys::signal::Signal::SIGCONT
        };
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal).expect("signal redis");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        terminate(&mut self.child);
    }
}

/// `secantusd-py`: `$SECANTUSD`, else the workspace's `.venv`, else `PATH`.
fn secantusd() -> PathBuf {
    if let Some(p) = std::env::var_os("SECANTUSD") {
        return p.into();
    }
    let venv = workspace_root().join(".venv/bin/secantusd-py");
    if venv.exists() {
        return venv;
    }
    PathBuf::from("secantusd-py")
}

/// The server shared by every test of this binary.
pub fn mongo() -> &'static MongoServer {
    static SERVER: OnceLock<MongoServer> = OnceLock::new();
    SERVER.get_or_init(MongoServer::start)
}

/// A database name no other test uses.
pub fn unique_db(tag: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "t_{tag}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// How a test wants its service configured.
pub struct AppBuilder {
    uri: String,
    database: String,
    token: Option<String>,
    max_body_bytes: Option<usize>,
    server_selection_timeout: Option<Duration>,
    redis_url: Option<String>,
    local_entries: Option<u64>,
    cache_enabled: bool,
    read_model: bool,
    snapshot: Option<std::path::PathBuf>,
}

/// A course-service running in-process on a free port, against its own database.
pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub database: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl TestApp {
    pub fn builder() -> AppBuilder {
        AppBuilder {
            uri: mongo().uri(),
            database: unique_db("api"),
            token: Some(TOKEN.into()),
            max_body_bytes: None,
            server_selection_timeout: None,
            redis_url: None,
            local_entries: None,
            cache_enabled: true,
            read_model: true,
            snapshot: None,
        }
    }

    pub async fn spawn() -> TestApp {
        TestApp::builder().spawn().await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).send().await.expect("GET")
    }

    /// Waits until the cache is in use (its change stream is open): reads stop saying BYPASS.
    pub async fn wait_cache_ready(&self) {
        wait_until_async(
            "the cache to follow changes",
            Duration::from_secs(20),
            || async {
                let res = self.get("/api/courses?per_page=1").await;
                res.headers().get("x-cache").is_some_and(|v| v != "BYPASS")
            },
        )
        .await;
    }

    pub async fn get_json(&self, path: &str) -> Value {
        let res = self.get(path).await;
        assert_eq!(res.status(), 200, "GET {path}");
        res.json().await.expect("JSON body")
    }

    /// A request with the admin token.
    pub fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, self.url(path)).bearer_auth(TOKEN)
    }

    /// Creates a course (admin) and returns its JSON; fails the test unless 201.
    pub async fn create(&self, course: Value) -> Value {
        let res = self
            .admin(reqwest::Method::POST, "/api/courses")
            .json(&course)
            .send()
            .await
            .expect("POST");
        let status = res.status();
        let body: Value = res.json().await.expect("JSON body");
        assert_eq!(status, 201, "create failed: {body}");
        body
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl AppBuilder {
    pub fn token(mut self, token: Option<&str>) -> Self {
        self.token = token.map(str::to_string);
        self
    }

    pub fn database(mut self, name: &str) -> Self {
        self.database = name.to_string();
        self
    }

    pub fn uri(mut self, uri: String) -> Self {
        self.uri = uri;
        self
    }

    pub fn max_body_bytes(mut self, n: usize) -> Self {
        self.max_body_bytes = Some(n);
        self
    }

    /// Uses the Redis backend at `url`.
    pub fn redis(mut self, url: String) -> Self {
        self.redis_url = Some(url);
        self
    }

    /// `[read_model] enabled = false`: reads go to the database through the cache.
    pub fn without_read_model(mut self) -> Self {
        self.read_model = false;
        self
    }

    /// `[read_model] snapshot = path`.
    pub fn snapshot(mut self, path: &std::path::Path) -> Self {
        self.snapshot = Some(path.to_path_buf());
        self
    }

    /// `[cache] enabled = false`.
    pub fn without_cache(mut self) -> Self {
        self.cache_enabled = false;
        self
    }

    /// Entries of the in-process tier in front of Redis (0: every read goes to Redis).
    pub fn local_entries(mut self, n: u64) -> Self {
        self.local_entries = Some(n);
        self
    }

    pub fn server_selection_timeout(mut self, d: Duration) -> Self {
        self.server_selection_timeout = Some(d);
        self
    }

    pub fn config(&self) -> Config {
        let mut file = FileConfig::default();
        file.mongodb.database = self.database.clone();
        if let Some(n) = self.max_body_bytes {
            file.http.max_body_bytes = n;
        }
        if let Some(d) = self.server_selection_timeout {
            file.mongodb.server_selection_timeout = d;
            file.mongodb.operation_timeout = d * 2;
        }
        let env = Env {
            mongodb_uri: Some(self.uri.clone()),
            admin_token: self.token.clone(),
            listen: None,
            redis_url: self.redis_url.clone(),
        };
        if let Some(n) = self.local_entries {
            file.cache.local_max_entries = n;
        }
        file.cache.enabled = self.cache_enabled;
        file.read_model.enabled = self.read_model;
        file.read_model.snapshot = self.snapshot.clone();
        Config::resolve(
            file,
            std::path::Path::new("<test>"),
            &env,
            Some("127.0.0.1:0"),
        )
        .expect("test config is valid")
    }

    /// Starts the service and, when the database is reachable, waits for its indexes.
    pub async fn spawn(self) -> TestApp {
        let config = self.config();
        let client = store::connect(&config).await.expect("client");
        let state = AppState::new(&config, &client).expect("state");
        if state.store.ensure_indexes().await.is_ok() {
            state
                .indexes_ready
                .store(true, std::sync::atomic::Ordering::Release);
        }
        state.spawn_followers();
        if state.indexes_ready() && state.model.is_enabled() {
            let model = state.model.clone();
            wait_until_async("the read model to follow", Duration::from_secs(30), || {
                let following = model.is_following();
                async move { following }
            })
            .await;
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let listeners = server::Listeners {
                public: listener,
                private: None,
            };
            // Opens at once: the model (when the database is up) follows already, above.
            server::serve(listeners, state, &config, std::future::ready(()), async {
                let _ = stopped.await;
            })
            .await;
        });
        TestApp {
            base,
            http: reqwest::Client::new(),
            database: self.database,
            stop: Some(stop),
        }
    }
}

/// A valid course body; `n` makes title and slug unique.
pub fn course(n: usize) -> Value {
    json!({
        "title": format!("Course number {n}"),
        "description": "A short course written for the tests.",
        "instructor": "Grace Hopper",
        "duration_minutes": 60,
        "level": "beginner",
        "tags": ["testing"],
        "price_cents": 1000,
    })
}

/// Asserts a problem+json answer with `status`, returning its body.
pub async fn problem(res: reqwest::Response, status: u16) -> Value {
    assert_eq!(res.status(), status, "unexpected status");
    let ct = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert_eq!(ct, "application/problem+json");
    let body: Value = res.json().await.expect("problem body");
    assert_eq!(body["status"], status);
    assert!(
        body["detail"].as_str().is_some_and(|d| d.len() > 10),
        "problem without an actionable detail: {body}"
    );
    body
}

/// The titles of a listing's items, in order.
pub fn titles(listing: &Value) -> Vec<String> {
    listing["items"]
        .as_array()
        .expect("a listing has items")
        .iter()
        .map(|c| c["title"].as_str().unwrap_or("").to_string())
        .collect()
}
