//! The real `course-service` binary: configuration errors, seeding, graceful shutdown, and
//! cluster supervision, with real processes and signals.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use support::{mongo, unique_db, wait_until, wait_until_async, RedisServer, TestApp, TOKEN};

const BIN: &str = env!("CARGO_BIN_EXE_course-service");

/// A file under Cargo's scratch directory for integration tests (`target/tmp`), not /tmp:
/// the tests share the files, so none can remove them when it ends.
fn temp_file(name: &str, contents: &str) -> PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("mc-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

fn config_for(db: &str) -> PathBuf {
    temp_file(
        &format!("{db}.toml"),
        &format!("[mongodb]\ndatabase = \"{db}\"\n"),
    )
}

fn course_service() -> Command {
    course_service_on(&mongo().uri())
}

/// The binary against the database server at `uri`.
fn course_service_on(uri: &str) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env("MONGODB_URI", uri)
        .env("MC_ADMIN_TOKEN", TOKEN)
        .env("RUST_LOG", "info")
        .env_remove("MC_LISTEN")
        .env_remove("REDIS_URL")
        .stdin(Stdio::null());
    cmd
}

fn signal(child: &Child, sig: Signal) {
    kill(Pid::from_raw(child.id() as i32), sig).expect("signal delivered");
}

/// A process this test started, stopped when the test ends however it ends: SIGTERM (a
/// cluster drains its workers on it), SIGKILL if it is still there after 20 s. A failed
/// test must not leave a cluster loading the database the other tests share.
struct Running(Child);

impl std::ops::Deref for Running {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if !matches!(self.0.try_wait(), Ok(None)) {
            return;
        }
        let _ = kill(Pid::from_raw(self.0.id() as i32), Signal::SIGTERM);
        let end = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < end {
            if !matches!(self.0.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn healthy(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let req = "GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n";
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200")
}

/// `course_service_http_requests_in_flight` of the instance on `port` (0 if unreadable).
fn in_flight(port: u16) -> u64 {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return 0;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let req = "GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n";
    if s.write_all(req.as_bytes()).is_err() {
        return 0;
    }
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer
        .lines()
        .find_map(|l| l.strip_prefix("course_service_http_requests_in_flight "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn refuses(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_err()
}

// ===== configuration =====

#[test]
fn bad_config_exits_non_zero_naming_file_line_and_field() {
    let path = temp_file("bad.toml", "[http]\nmax_body = 1\n");
    let out = course_service()
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:2:1", path.display())), "{err}");
    assert!(err.contains("max_body"), "{err}");

    let out = course_service()
        .args(["serve", "--listen", "localhost-ish"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--listen") && err.contains("localhost-ish"),
        "{err}"
    );

    let out = course_service()
        .args(["serve"])
        .env("MC_ADMIN_TOKEN", "short")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("MC_ADMIN_TOKEN"));

    let out = course_service()
        .args(["serve"])
        .env("REDIS_URL", "http://cache:6379")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("REDIS_URL") && err.contains("redis://"),
        "{err}"
    );
}

// ===== seed =====

#[tokio::test]
async fn seeding_is_idempotent_and_fills_the_catalogue_seen_by_running_instances() {
    let db = unique_db("seed");
    let config = config_for(&db);
    // A running instance with the (empty) listing cached in Redis (no read model: the seed
    // must reach the cache on its own).
    let redis = RedisServer::start();
    let app = TestApp::builder()
        .database(&db)
        .redis(redis.url())
        .without_read_model()
        .spawn()
        .await;
    app.wait_cache_ready().await;
    app.get("/api/courses?per_page=100").await;
    let res = app.get("/api/courses?per_page=100").await;
    assert_eq!(res.headers()["x-cache"], "HIT");

    let seed_file = support::workspace_root().join("configs/seed-courses.json");
    let run = || {
        course_service()
            .env("REDIS_URL", redis.url())
            .arg("seed")
            .arg(&seed_file)
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap()
    };
    let first = run();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(String::from_utf8_lossy(&first.stdout).contains("50 new, 0 already present"));
    let second = run();
    assert!(String::from_utf8_lossy(&second.stdout).contains("0 new, 50 already present"));

    // The seed bumped the shared generation: the instance lists the courses as soon as the
    // message arrives.
    wait_until_async(
        "the seeded courses listed",
        Duration::from_secs(5),
        || async { app.get_json("/api/courses?per_page=100").await["total"] == 50 },
    )
    .await;
    let rust = app.get_json("/api/courses?tag=rust").await;
    assert!(rust["total"].as_u64().unwrap() >= 5);
}

#[tokio::test]
async fn generating_a_catalogue_is_deterministic_and_idempotent() {
    let db = unique_db("generate");
    let config = config_for(&db);
    let app = TestApp::builder().database(&db).spawn().await;
    let run = || {
        course_service()
            .args(["generate", "500", "--seed", "3", "--config"])
            .arg(&config)
            .output()
            .unwrap()
    };
    let first = run();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(String::from_utf8_lossy(&first.stdout).contains("500 new, 0 already present"));
    let second = run();
    assert!(String::from_utf8_lossy(&second.stdout).contains("0 new, 500 already present"));
    // The running instance's read model follows the bulk insert.
    wait_until_async("500 courses listed", Duration::from_secs(10), || async {
        app.get_json("/api/courses?per_page=1").await["total"] == 500
    })
    .await;
    // The same seed gives the same courses (ids included).
    let expected = course_service::seed::synthetic(500, 3);
    let listed = app.get_json("/api/courses?sort=title&per_page=1").await;
    let first_title = expected.iter().map(|c| &c.title_key).min().unwrap();
    assert_eq!(
        listed["items"][0]["title"].as_str().unwrap().to_lowercase(),
        *first_title
    );
    let id = expected[0].id.to_hex();
    assert_eq!(app.get_json(&format!("/api/courses/{id}")).await["id"], id);
}

#[tokio::test]
async fn a_bad_seed_file_loads_nothing() {
    let db = unique_db("badseed");
    let config = config_for(&db);
    let file = temp_file(
        "bad-seed.json",
        r#"[{"title":"Fine","instructor":"A","duration_minutes":5,"level":"beginner"},
            {"title":"","instructor":"B","duration_minutes":0,"level":"beginner"}]"#,
    );
    let out = course_service()
        .arg("seed")
        .arg(&file)
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("course #1") && err.contains("duration_minutes"),
        "{err}"
    );
    let app = TestApp::builder().database(&db).spawn().await;
    assert_eq!(app.get_json("/api/courses").await["total"], 0);
}

// ===== graceful shutdown =====

#[test]
fn sigterm_finishes_the_in_flight_request_then_exits_zero() {
    let port = support::free_port();
    let mut child = Running(
        course_service()
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--config")
            .arg(config_for(&unique_db("drain")))
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until("the service to be healthy", Duration::from_secs(30), || {
        healthy(port)
    });

    // A create whose body is only half sent when SIGTERM arrives.
    let body = serde_json::to_string(&support::course(1)).unwrap();
    let (first, rest) = body.split_at(body.len() / 2);
    let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    write!(
        conn,
        "POST /api/courses HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {TOKEN}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{first}",
        body.len()
    )
    .unwrap();
    conn.flush().unwrap();
    // Until the server is handling it, the connection would be closed as idle by the drain.
    wait_until(
        "the request to be in flight",
        Duration::from_secs(10),
        || in_flight(port) >= 2, // the create, and this scrape
    );

    signal(&child, Signal::SIGTERM);
    wait_until("the listener to close", Duration::from_secs(10), || {
        refuses(port)
    });
    assert!(
        child.try_wait().unwrap().is_none(),
        "exited before draining"
    );

    conn.write_all(rest.as_bytes()).unwrap();
    let mut answer = String::new();
    let _ = conn.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    // Answered while draining: the client is told its connection closes.
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );

    let mut status = None;
    wait_until("the process to exit", Duration::from_secs(10), || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    assert!(status.unwrap().success(), "exit status {status:?}");
}

// ===== start =====

/// `GET /api/courses?per_page=1` on `port`: the status and `X-Cache`, or `None` if the
/// connection is refused (or closed unanswered).
fn first_listing(port: u16) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let req = "GET /api/courses?per_page=1 HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n";
    s.write_all(req.as_bytes()).ok()?;
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    let status = answer.get(9..12)?.parse().ok()?;
    let source = answer
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("x-cache:"))
        .map(|l| l["x-cache:".len()..].trim().to_owned())
        .unwrap_or_default();
    Some((status, source))
}

/// Starts `args` (a `serve` or a one-instance `cluster` on `port`) on a database whose
/// catalogue load is held back 4 s, and returns the first listing it answers.
async fn first_answer_while_loading(args: &[&str], port: u16) -> (u16, String) {
    let server = support::MongoServer::start();
    let db = unique_db("start");
    let config = temp_file(
        &format!("{db}.toml"),
        // Without the cache, the load's is the only `getMore` the fail point can meet.
        &format!("[mongodb]\ndatabase = \"{db}\"\n[cache]\nenabled = false\n"),
    );
    let (ok, _, err) = run_on_server(&server.uri(), &config, &["generate", "2500"]);
    assert!(ok, "{err}");
    // The load's second batch is held back 4 s.
    server
        .fail_next(
            &["getMore"],
            1,
            mongodb::bson::doc! { "blockConnection": true, "blockTimeMS": 4000 },
        )
        .await;
    let _running = Running(
        course_service_on(&server.uri())
            .args(args)
            .arg("--config")
            .arg(&config)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut first = None;
    wait_until("a first answer", Duration::from_secs(40), || {
        first = first_listing(port);
        first.is_some()
    });
    first.unwrap()
}

/// `course-service ARGS --config CONFIG` against the database server at `uri`: (success,
/// stdout, stderr).
fn run_on_server<S: AsRef<std::ffi::OsStr>>(
    uri: &str,
    config: &std::path::Path,
    args: &[S],
) -> (bool, String, String) {
    let out = course_service_on(uri)
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn a_starting_instance_answers_its_first_request_from_its_catalogue_in_memory() {
    // Run alone: connections are refused until the model follows (a proxy sends them to
    // another instance at once), never answered from a database that may need seconds.
    let port = support::free_port();
    let listen = format!("127.0.0.1:{port}");
    let first = first_answer_while_loading(&["serve", "--listen", &listen], port).await;
    assert_eq!(first, (200, "MODEL".into()));
    // Under the supervisor, whose socket never refuses: the connection waits in the
    // backlog until the worker's model follows.
    let base = shared::testbed::free_port();
    let first = first_answer_while_loading(
        &[
            "cluster",
            "--instances",
            "1",
            "--base-port",
            &base.to_string(),
        ],
        base,
    )
    .await;
    assert_eq!(first, (200, "MODEL".into()));
}

#[test]
fn a_starting_instance_whose_database_is_down_takes_traffic_to_say_so() {
    // The first attempt to load fails (server selection, 2 s): the port opens well before
    // `read_model.startup_wait` (30 s), and reads are refused with 503, not left hanging.
    let dead = format!("mongodb://127.0.0.1:{}/", support::free_port());
    let port = support::free_port();
    let _running = Running(
        course_service_on(&dead)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--config")
            .arg(config_for(&unique_db("start-dead")))
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut first = None;
    wait_until("a first answer", Duration::from_secs(20), || {
        first = first_listing(port);
        first.is_some()
    });
    assert_eq!(first.unwrap().0, 503);
}

// ===== cluster =====

/// Polls `cond` until it holds (true) or `deadline` passes (false), for a test that says
/// more than [`wait_until`] when it gives up.
fn wait_for(deadline: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + deadline;
    while !cond() {
        if std::time::Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// Collects a child's stderr lines in the background.
fn capture_stderr(child: &mut Child) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    lines
}

/// Pids of "worker started" lines for worker `n`, in order.
fn worker_pids(lines: &Mutex<Vec<String>>, n: u16) -> Vec<i32> {
    let tag = format!("worker={n} ");
    lines
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("worker started") && l.contains(&tag))
        .filter_map(|l| {
            let pid = l.split("pid=").nth(1)?;
            pid.split_whitespace().next()?.parse().ok()
        })
        .collect()
}

/// `course-service cluster --instances n` on free ports, against the database server at
/// `uri`, with its stderr captured; returns the process, its log lines and the first port,
/// once every instance is healthy.
fn start_cluster(n: u16, uri: &str, db: &str) -> (Running, Arc<Mutex<Vec<String>>>, u16) {
    let base = shared::testbed::free_ports(n);
    let mut cluster = course_service_on(uri)
        .args([
            "cluster",
            "--instances",
            &n.to_string(),
            "--base-port",
            &base.to_string(),
        ])
        .arg("--config")
        .arg(config_for(&unique_db(db)))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let logs = capture_stderr(&mut cluster);
    let cluster = Running(cluster);
    wait_until(
        "every worker to be healthy",
        Duration::from_secs(30),
        || (0..n).all(|i| healthy(base + i)),
    );
    (cluster, logs, base)
}

/// SIGTERM to the cluster; its exit status once every worker has drained.
fn stop_cluster(cluster: &mut Running) -> std::process::ExitStatus {
    signal(cluster, Signal::SIGTERM);
    let mut status = None;
    wait_until("the cluster to exit", Duration::from_secs(30), || {
        status = cluster.try_wait().unwrap();
        status.is_some()
    });
    status.expect("exited")
}

#[test]
fn cluster_restarts_a_killed_worker_and_drains_on_sigterm() {
    let (mut cluster, logs, base) = start_cluster(2, &mongo().uri(), "cluster");

    let first_pid = worker_pids(&logs, 1)[0];
    kill(Pid::from_raw(first_pid), Signal::SIGKILL).unwrap();
    wait_until("worker 1 to be restarted", Duration::from_secs(30), || {
        worker_pids(&logs, 1).len() == 2 && healthy(base)
    });
    assert_ne!(worker_pids(&logs, 1)[1], first_pid);
    assert_eq!(worker_pids(&logs, 2).len(), 1, "worker 2 was left alone");

    assert!(stop_cluster(&mut cluster).success());
    assert!(refuses(base) && refuses(base + 1), "workers left running");
}

#[test]
fn workers_drain_and_exit_when_their_supervisor_is_killed() {
    let (mut cluster, logs, base) = start_cluster(2, &mongo().uri(), "orphans");
    let workers = [worker_pids(&logs, 1)[0], worker_pids(&logs, 2)[0]];
    // Should the fix regress, the orphans must not outlive the test (they hold its stdout).
    struct Reap([i32; 2]);
    impl Drop for Reap {
        fn drop(&mut self) {
            for pid in self.0 {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
    let _reap = Reap(workers);
    // SIGKILL: the supervisor cannot forward anything.
    cluster.kill().unwrap();
    cluster.wait().unwrap();
    wait_until(
        "the orphaned workers to exit",
        Duration::from_secs(30),
        || workers.iter().all(|&w| exited(w)),
    );
    assert!(
        refuses(base) && refuses(base + 1),
        "their ports are still held"
    );
}

/// Whether process `pid` has exited (gone, or a zombie nobody reaped yet).
fn exited(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
    })
}

/// A client that keeps one keep-alive connection to `port` and reconnects when the server
/// says `Connection: close`; every failure (refused, reset, a status other than `ok`) is
/// kept with what it was.
struct Client {
    port: u16,
    conn: Option<BufReader<TcpStream>>,
}

impl Client {
    fn new(port: u16) -> Client {
        Client { port, conn: None }
    }

    /// One request; `Ok(status)` or why it failed.
    fn send(&mut self, method: &str, path: &str, body: &str) -> Result<u16, String> {
        if self.conn.is_none() {
            let io = TcpStream::connect(("127.0.0.1", self.port))
                .map_err(|e| format!("connect: {e}"))?;
            io.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            self.conn = Some(BufReader::new(io));
        }
        let conn = self.conn.as_mut().unwrap();
        let auth = if method == "GET" {
            String::new()
        } else {
            format!("authorization: Bearer {TOKEN}\r\ncontent-type: application/json\r\n")
        };
        let request = format!(
            "{method} {path} HTTP/1.1\r\nhost: x\r\n{auth}content-length: {}\r\n\r\n{body}",
            body.len()
        );
        let result = (|| {
            conn.get_mut()
                .write_all(request.as_bytes())
                .map_err(|e| format!("write: {e}"))?;
            let mut line = String::new();
            conn.read_line(&mut line)
                .map_err(|e| format!("read: {e}"))?;
            let status: u16 = line
                .get(9..12)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| format!("no status line: {line:?}"))?;
            let (mut length, mut close) = (0usize, false);
            loop {
                let mut field = String::new();
                conn.read_line(&mut field)
                    .map_err(|e| format!("read: {e}"))?;
                let lower = field.trim_end().to_ascii_lowercase();
                if lower.is_empty() {
                    break;
                }
                if let Some(v) = lower.strip_prefix("content-length: ") {
                    length = v.parse().unwrap_or(0);
                }
                close |= lower == "connection: close";
            }
            let mut body = vec![0u8; length];
            conn.read_exact(&mut body)
                .map_err(|e| format!("read body: {e}"))?;
            Ok((status, close))
        })();
        match result {
            Ok((status, close)) => {
                if close {
                    self.conn = None;
                }
                Ok(status)
            }
            Err(e) => {
                self.conn = None;
                Err(e)
            }
        }
    }
}

#[test]
fn a_sighup_reload_replaces_every_worker_without_refusing_or_failing_a_request() {
    // A database server of its own: the writers below load it as much as it takes, and
    // that must neither slow the other tests nor be slowed by them.
    let server = support::MongoServer::start();
    let (mut cluster, logs, base) = start_cluster(2, &server.uri(), "reload");
    let before = [worker_pids(&logs, 1), worker_pids(&logs, 2)];

    // Readers and writers on both ports, each on its own keep-alive connection, until the
    // reload is over (bounded: 120 s at most).
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..4u16)
        .map(|i| {
            let done = done.clone();
            std::thread::spawn(move || {
                let mut client = Client::new(base + i % 2);
                let (mut ok, mut failures) = (0usize, Vec::new());
                let started = std::time::Instant::now();
                let mut n = 0usize;
                while !done.load(std::sync::atomic::Ordering::Acquire)
                    && started.elapsed() < Duration::from_secs(120)
                {
                    n += 1;
                    let outcome = if i < 2 {
                        client.send("GET", "/api/courses", "")
                    } else {
                        let body =
                            serde_json::to_string(&support::course(1000 * usize::from(i) + n))
                                .unwrap();
                        client.send("POST", "/api/courses", &body)
                    };
                    match outcome {
                        Ok(200 | 201) => ok += 1,
                        other => failures.push(format!("{other:?}")),
                    }
                }
                (ok, failures)
            })
        })
        .collect();

    std::thread::sleep(Duration::from_millis(300));
    signal(&cluster, Signal::SIGHUP);
    let finished = wait_for(Duration::from_secs(90), || {
        logs.lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("reload finished"))
    });
    done.store(true, std::sync::atomic::Ordering::Release);
    assert!(
        finished,
        "the reload did not finish within 90 s; the cluster said:\n{}",
        logs.lock().unwrap().join("\n")
    );
    assert!(
        !logs
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("reload stopped")),
        "a new worker was refused; the cluster said:\n{}",
        logs.lock().unwrap().join("\n")
    );
    let mut total = 0;
    for c in clients {
        let (ok, failures) = c.join().unwrap();
        assert!(
            failures.is_empty(),
            "failed during the reload: {failures:?}"
        );
        total += ok;
    }
    assert!(total > 20, "too little traffic to tell: {total}");
    for n in 1..=2u16 {
        let pids = worker_pids(&logs, n);
        assert_eq!(pids.len(), 2, "worker {n} replaced once: {pids:?}");
        assert_ne!(pids[1], before[usize::from(n) - 1][0]);
        let old = Pid::from_raw(pids[0]);
        assert!(kill(old, None).is_err(), "the old worker {old} still runs");
    }

    // A crash: the supervisor holds the port, so it never refuses while the worker restarts.
    kill(Pid::from_raw(worker_pids(&logs, 1)[1]), Signal::SIGKILL).unwrap();
    for _ in 0..20 {
        assert!(
            !refuses(base),
            "the port refused a connection after a crash"
        );
    }
    let mut client = Client::new(base);
    assert_eq!(
        client.send("GET", "/healthz", ""),
        Ok(200),
        "served after the restart"
    );

    assert!(stop_cluster(&mut cluster).success());
}

// ===== backups =====

/// Runs `course-service ARGS --config <db's config>`; returns (success, stdout, stderr).
fn run_on(db: &str, args: &[&std::ffi::OsStr]) -> (bool, String, String) {
    run_on_server(&mongo().uri(), &config_for(db), args)
}

#[tokio::test]
async fn export_then_import_round_trips_byte_for_byte_and_a_corrupt_file_writes_nothing() {
    let source = unique_db("export");
    let app = TestApp::builder().database(&source).spawn().await;
    for n in 0..5 {
        app.create(support::course(n)).await;
    }
    // One edited course: its version and timestamps must survive.
    let first = app.get_json("/api/courses?sort=title").await["items"][0].clone();
    let path = format!("/api/courses/{}", first["id"].as_str().unwrap());
    let res = app
        .admin(reqwest::Method::PATCH, &path)
        .json(&serde_json::json!({ "price_cents": 777 }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    let dump = temp_file("export.jsonl", "");
    let (ok, out, err) = run_on(&source, &["export".as_ref(), dump.as_os_str()]);
    assert!(ok, "{err}");
    assert!(out.contains("exported 5 courses"), "{out}");
    let exported = std::fs::read_to_string(&dump).unwrap();
    assert_eq!(exported.lines().count(), 5);
    assert!(
        exported.contains("\"$oid\"") && exported.contains("\"$date\""),
        "{exported}"
    );

    // Into an empty database, twice (idempotent), then out again: the same bytes.
    let copy = unique_db("import");
    for (round, expect) in [(1, "5 added, 0 replaced"), (2, "0 added, 5 replaced")] {
        let (ok, out, err) = run_on(&copy, &["import".as_ref(), dump.as_os_str()]);
        assert!(ok, "import {round}: {err}");
        assert!(out.contains(expect), "import {round}: {out}");
    }
    let again = temp_file("export-again.jsonl", "");
    let (ok, _, err) = run_on(&copy, &["export".as_ref(), again.as_os_str()]);
    assert!(ok, "{err}");
    assert_eq!(std::fs::read_to_string(&again).unwrap(), exported);
    let copied = TestApp::builder().database(&copy).spawn().await;
    let edited = copied.get_json(&path).await;
    assert_eq!(
        (edited["price_cents"].as_i64(), edited["version"].as_i64()),
        (Some(777), Some(2))
    );

    // A file broken on its third line: refused with the line, nothing written.
    let mut lines: Vec<String> = exported.lines().map(str::to_string).collect();
    lines[2] = lines[2].replace("\"level\":\"", "\"level\":\"expert-");
    let corrupt = temp_file("corrupt.jsonl", &(lines.join("\n") + "\n"));
    let empty = unique_db("corrupt");
    let (ok, _, err) = run_on(&empty, &["import".as_ref(), corrupt.as_os_str()]);
    assert!(!ok, "a corrupt file was accepted");
    assert!(err.contains("corrupt.jsonl:3:"), "{err}");
    let check = temp_file("empty.jsonl", "");
    let (ok, out, err) = run_on(&empty, &["export".as_ref(), check.as_os_str()]);
    assert!(ok, "{err}");
    assert!(
        out.contains("exported 0 courses"),
        "nothing was written: {out}"
    );
    let not_json = temp_file("garbage.jsonl", &format!("{}\n{{oops\n", lines[0]));
    let (ok, _, err) = run_on(&empty, &["import".as_ref(), not_json.as_os_str()]);
    assert!(!ok && err.contains("garbage.jsonl:2: not JSON"), "{err}");
}
