//! The systems under test, each a separate process on a free loopback port in front of the
//! same synthetic upstreams: our proxy, and HAProxy and nginx when they are on PATH, with
//! equivalent generated configs (one thread or worker each, the closest algorithm,
//! keep-alive to the upstreams, comparable timeouts, checks and retries, and the same
//! header work: see [`HAPROXY_HEADERS`] and [`NGINX_HEADERS`]).

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How the proxies are tuned for a scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tuning {
    /// Plain balancing.
    Balance,
    /// Health checks every 1 s (fall 2, rise 2), 1 s upstream timeouts, 2 tries.
    Failover,
    /// HAProxy and nginx without the header work our proxy always does (the setup the
    /// published figures use), for reference.
    Bare,
    /// Plain balancing behind an HTTPS listener (TLS 1.2/1.3, ALPN `http/1.1`), every
    /// system with the same [`dev_cert`].
    Tls,
    /// [`Tuning::Failover`], and HAProxy in master-worker mode so SIGUSR2 reloads it (the
    /// `deploy` scenario restarts every proxy).
    Deploy,
    /// [`Tuning::Balance`] with our access log on: a JSON line per request to a file (the
    /// `overhead` scenario measures what it costs).
    AccessLog,
}

impl Tuning {
    /// Health checks, short timeouts and retries.
    pub fn is_failover(self) -> bool {
        matches!(self, Tuning::Failover | Tuning::Deploy)
    }
}

/// A self-signed certificate for `localhost` and `127.0.0.1` (rcgen, ECDSA P-256), made
/// once per process: the certificate, the key, and both in one file (HAProxy's `crt`).
pub fn dev_cert() -> Result<&'static DevCert, String> {
    static CERT: std::sync::OnceLock<Result<DevCert, String>> = std::sync::OnceLock::new();
    CERT.get_or_init(|| {
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let made = rcgen::generate_simple_self_signed(names).map_err(|e| e.to_string())?;
        let (cert, key) = (made.cert.pem(), made.signing_key.serialize_pem());
        let dir = workdir("tls");
        let paths = DevCert {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            both: dir.join("both.pem"),
        };
        for (path, text) in [
            (&paths.cert, cert.clone()),
            (&paths.key, key.clone()),
            (&paths.both, cert + &key),
        ] {
            std::fs::write(path, text).map_err(|e| e.to_string())?;
        }
        Ok(paths)
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// Where [`dev_cert`] wrote its files.
pub struct DevCert {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub both: PathBuf,
}

/// A running system under test.
pub struct System {
    pub name: String,
    pub url: String,
    /// Our proxy's admin listener, for its counters.
    pub admin: Option<SocketAddr>,
    /// The process under test, for its CPU time.
    pub pid: u32,
    child: Child,
    dir: PathBuf,
}

impl Drop for System {
    /// Stops the whole process group: nginx's workers outlive a killed master otherwise.
    /// SIGTERM first (each system shuts down in order), SIGKILL after a grace period.
    fn drop(&mut self) {
        use nix::sys::signal::{killpg, Signal};
        let group = nix::unistd::Pid::from_raw(self.pid as i32);
        let _ = killpg(group, Signal::SIGTERM);
        let deadline = Instant::now() + STOP_GRACE;
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = killpg(group, Signal::SIGKILL);
        let _ = self.child.wait();
        crate::reaper::untrack(self.pid);
        let _ = std::fs::remove_dir_all(&self.dir);
        // The run's directory too, once it holds nothing else.
        let _ = std::fs::remove_dir(workroot());
    }
}

/// How long a stopped system gets to exit before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(3);

impl System {
    /// User + system CPU seconds used so far by the process and its children (nginx serves
    /// from a worker process), from /proc.
    pub fn cpu_seconds(&self) -> f64 {
        let mut total = 0.0;
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return 0.0;
        };
        for entry in entries.flatten() {
            let Some(stat) = proc_stat(&entry.path().join("stat")) else {
                continue;
            };
            if stat.pid == self.pid || stat.ppid == self.pid {
                total += stat.cpu_seconds;
            }
        }
        total
    }
}

impl System {
    /// A file in the system's work directory (our proxy: `upstreams.toml`, `proxy.toml`).
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The sum of our proxy's counters whose lines start with `metric` (0 for peers).
    pub fn counter(&self, metric: &str) -> u64 {
        use std::io::{Read, Write};
        let Some(admin) = self.admin else {
            return 0;
        };
        let Ok(mut conn) = TcpStream::connect(admin) else {
            return 0;
        };
        let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = conn.write_all(b"GET /metrics HTTP/1.0\r\n\r\n");
        let mut text = String::new();
        let _ = conn.read_to_string(&mut text);
        text.lines()
            .filter(|l| l.starts_with(metric))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }
}

struct ProcStat {
    pid: u32,
    ppid: u32,
    cpu_seconds: f64,
}

/// Pid, parent pid and CPU time from a `/proc/<pid>/stat` file.
fn proc_stat(path: &Path) -> Option<ProcStat> {
    let stat = std::fs::read_to_string(path).ok()?;
    let pid = stat.split_whitespace().next()?.parse().ok()?;
    // Fields after the parenthesised command name: state, ppid, ..., utime (12th), stime.
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let num = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    Some(ProcStat {
        pid,
        ppid: num(1)? as u32,
        cpu_seconds: (num(11)? + num(12)?) / 100.0,
    })
}

pub use shared::testbed::free_port;

pub fn on_path(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(cmd).is_file()))
}

/// Where this process's work directories are ([`workdir`]), removed when the harness ends
/// ([`remove_workdirs`]).
fn workroot() -> PathBuf {
    std::env::temp_dir().join(format!("mc-bench-{}", std::process::id()))
}

/// A fresh directory for one system's files, unique within the process.
pub fn workdir(name: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = workroot().join(format!("{n}-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("bench work directory");
    dir
}

/// Removes what is left of this process's work directories: each system removes its own when
/// dropped, but not one the harness was interrupted before dropping, nor [`dev_cert`]'s.
pub fn remove_workdirs() {
    let _ = std::fs::remove_dir_all(workroot());
}

/// Starts `cmd` as a system under test and waits (60 s at most) until `port` accepts.
pub fn spawn(name: String, mut cmd: Command, port: u16, dir: PathBuf) -> Result<System, String> {
    use std::os::unix::process::CommandExt;
    let started = std::fs::File::create(dir.join("stderr.log"))
        .map_err(|e| e.to_string())
        .and_then(|log| {
            cmd.process_group(0)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::from(log))
                .spawn()
                .map_err(|e| format!("{name}: cannot start: {e}"))
        });
    let child = match started {
        Ok(child) => child,
        Err(e) => {
            // Nothing runs: its work directory goes now (a `System` removes it when dropped).
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
    };
    crate::reaper::track(child.id());
    let system = System {
        url: format!("http://127.0.0.1:{port}/"),
        admin: None,
        pid: child.id(),
        name,
        child,
        dir,
    };
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(addr).is_err() {
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(system.dir.join("stderr.log")).unwrap_or_default();
            return Err(format!("{}: did not listen on {addr}: {log}", system.name));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(system)
}

/// Our proxy, one worker thread, with `algorithm`.
pub fn ours(
    bin: &Path,
    upstreams: &[SocketAddr],
    algorithm: &str,
    tuning: Tuning,
) -> Result<System, String> {
    let name = if tuning == Tuning::AccessLog {
        format!("ours ({algorithm}, access log)")
    } else {
        format!("ours ({algorithm})")
    };
    let dir = workdir(&format!("ours-{algorithm}"));
    let (port, admin) = (free_port(), free_port());
    let per_try = if tuning == Tuning::Failover {
        "1s"
    } else {
        "5s"
    };
    // With TLS the measured port is the https listener; http goes to a port of its own.
    let listen = if tuning == Tuning::Tls {
        let cert = dev_cert()?;
        format!(
            "http = \"127.0.0.1:{}\"\nhttps = \"127.0.0.1:{port}\"\nadmin = \"127.0.0.1:{admin}\"\n\
             [tls]\ncert = \"{}\"\nkey = \"{}\"\n",
            free_port(),
            cert.cert.display(),
            cert.key.display()
        )
    } else {
        format!("http = \"127.0.0.1:{port}\"\nadmin = \"127.0.0.1:{admin}\"\n")
    };
    let access_log = if tuning == Tuning::AccessLog {
        "[access_log]\noutput = \"access.log\"\nformat = \"json\"\n"
    } else {
        ""
    };
    std::fs::write(
        dir.join("proxy.toml"),
        format!(
            "[listen]\n{listen}[runtime]\nworkers = 1\n[timeouts]\nper_try = \"{per_try}\"\n\
             {access_log}"
        ),
    )
    .map_err(|e| e.to_string())?;
    let endpoints: Vec<String> = upstreams
        .iter()
        .map(|a| format!("{{ addr = \"{a}\" }}"))
        .collect();
    let mut upstreams_toml = format!(
        "[pool.bench]\nalgorithm = \"{algorithm}\"\nendpoints = [{}]\n",
        endpoints.join(", ")
    );
    if tuning == Tuning::Failover {
        upstreams_toml.push_str(
            "[pool.bench.health]\ninterval = \"1s\"\ntimeout = \"500ms\"\n\
             healthy_threshold = 2\nunhealthy_threshold = 2\n\
             [pool.bench.retry]\nattempts = 2\n",
        );
    }
    std::fs::write(dir.join("upstreams.toml"), upstreams_toml).map_err(|e| e.to_string())?;
    let mut cmd = Command::new(bin);
    cmd.arg("--config")
        .arg(dir.join("proxy.toml"))
        .env("RUST_LOG", "warn");
    let mut system = spawn(name, cmd, port, dir)?;
    system.admin = Some(([127, 0, 0, 1], admin).into());
    Ok(with_scheme(system, tuning, port))
}

/// What our proxy does to every request and response (DESIGN.md, "Request path"), in
/// HAProxy's words, so that each proxy does the same work per request: `X-Forwarded-For`,
/// `-Proto`, `-Host`, `Forwarded` and `Via` on the way in; an `X-Request-Id` made when the
/// client sent none, echoed on the way out with `Via`; `Date` when the upstream gave none.
pub const HAPROXY_HEADERS: &str = "\
  option forwardfor
  unique-id-format %[uuid()]
  http-request set-var(txn.rid) req.hdr(x-request-id)
  http-request set-var(txn.rid) unique-id unless { var(txn.rid) -m found }
  http-request set-header X-Request-Id %[var(txn.rid)]
  http-request set-header X-Forwarded-Proto %[ssl_fc,iif(https,http)]
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
  http-request set-header Forwarded for=%[src];host=%[req.hdr(host)];proto=%[ssl_fc,iif(https,http)]
  http-request add-header Via \"1.1 haproxy\"
  http-response add-header Via \"1.1 haproxy\"
  http-response set-header X-Request-Id %[var(txn.rid)]
  http-response set-header Date %[date,http_date] unless { res.hdr(date) -m found }
";

/// [`HAPROXY_HEADERS`] for nginx (which adds `Date` itself). `$rid` is the client's
/// `X-Request-Id` or a fresh `$request_id` (a `map` in the `http` block).
pub const NGINX_HEADERS: &str = "\
proxy_set_header Host $http_host; \
proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; \
proxy_set_header X-Forwarded-Proto $scheme; \
proxy_set_header X-Forwarded-Host $http_host; \
proxy_set_header Forwarded \"for=$remote_addr;host=$http_host;proto=$scheme\"; \
proxy_set_header Via \"1.1 nginx\"; \
proxy_set_header X-Request-Id $rid; \
add_header Via \"1.1 nginx\" always; \
add_header X-Request-Id $rid always;";

/// HAProxy with one thread, `balance` (e.g. `leastconn`), keep-alive to the upstreams.
pub fn haproxy(upstreams: &[SocketAddr], balance: &str, tuning: Tuning) -> Result<System, String> {
    let name = bare_name("haproxy", balance, tuning);
    let headers = if tuning == Tuning::Bare {
        ""
    } else {
        HAPROXY_HEADERS
    };
    let dir = workdir(&format!("haproxy-{balance}"));
    let port = free_port();
    let servers: Vec<String> = upstreams
        .iter()
        .enumerate()
        .map(|(i, a)| {
            format!(
                "  server s{i} {a}{}",
                if tuning.is_failover() { " check" } else { "" }
            )
        })
        .collect();
    let failover = if tuning.is_failover() {
        "  option httpchk GET /\n  default-server inter 1s fall 2 rise 2\n  retries 2\n  option redispatch 1\n"
    } else {
        ""
    };
    let server_timeout = if tuning.is_failover() { "1s" } else { "30s" };
    let ssl = if tuning == Tuning::Tls {
        format!(" ssl crt {} alpn http/1.1", dev_cert()?.both.display())
    } else {
        String::new()
    };
    let cfg = format!(
        "global\n  nbthread 1\n  maxconn 4000\n\
         defaults\n  mode http\n  timeout connect 1s\n  timeout client 30s\n  timeout server {server_timeout}\n\
         \x20 option http-keep-alive\n  http-reuse always\n\
         frontend fe\n  bind 127.0.0.1:{port}{ssl}\n{headers}  default_backend be\n\
         backend be\n  balance {balance}\n{failover}{}\n",
        servers.join("\n")
    );
    std::fs::write(dir.join("haproxy.cfg"), cfg).map_err(|e| e.to_string())?;
    let mut cmd = Command::new("haproxy");
    if tuning == Tuning::Deploy {
        // Master-worker: SIGUSR2 to the master reloads (new workers take the sockets).
        cmd.arg("-W");
    }
    cmd.arg("-db").arg("-f").arg(dir.join("haproxy.cfg"));
    Ok(with_scheme(spawn(name, cmd, port, dir)?, tuning, port))
}

/// The `method` for [`nginx`] that names no balancing directive: nginx's default, weighted
/// round robin.
pub const NGINX_ROUND_ROBIN: &str = "round-robin";

/// nginx with one worker, `method` (e.g. `least_conn`, or [`NGINX_ROUND_ROBIN`]), upstream
/// keep-alive.
pub fn nginx(upstreams: &[SocketAddr], method: &str, tuning: Tuning) -> Result<System, String> {
    let name = bare_name("nginx", method, tuning);
    let headers = if tuning == Tuning::Bare {
        ""
    } else {
        NGINX_HEADERS
    };
    let dir = workdir(&format!("nginx-{method}"));
    let port = free_port();
    let fails = if tuning == Tuning::Failover {
        " max_fails=1 fail_timeout=10s"
    } else {
        ""
    };
    let servers: Vec<String> = upstreams
        .iter()
        .map(|a| format!("    server {a}{fails};"))
        .collect();
    let timeouts = if tuning == Tuning::Failover {
        "proxy_connect_timeout 1s; proxy_read_timeout 1s; proxy_next_upstream error timeout;"
    } else {
        ""
    };
    let directive = if method == NGINX_ROUND_ROBIN {
        String::new()
    } else {
        format!("    {method};\n")
    };
    let d = dir.display();
    let ssl = if tuning == Tuning::Tls {
        let cert = dev_cert()?;
        format!(
            " ssl;\n    ssl_certificate {};\n    ssl_certificate_key {}",
            cert.cert.display(),
            cert.key.display()
        )
    } else {
        String::new()
    };
    let cfg = format!(
        "worker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  keepalive_requests 1000000;\n\
         \x20 client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d}; uwsgi_temp_path {d}; scgi_temp_path {d};\n\
         \x20 map $http_x_request_id $rid {{ \"\" $request_id; default $http_x_request_id; }}\n\
         \x20 upstream app {{\n{directive}{}\n    keepalive 64;\n  }}\n\
         \x20 server {{\n    listen 127.0.0.1:{port}{ssl};\n    location / {{ proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection \"\"; {headers} {timeouts} }}\n  }}\n}}\n",
        servers.join("\n")
    );
    std::fs::write(dir.join("nginx.conf"), cfg).map_err(|e| e.to_string())?;
    let mut cmd = Command::new("nginx");
    cmd.arg("-c")
        .arg(dir.join("nginx.conf"))
        .arg("-p")
        .arg(&dir);
    Ok(with_scheme(spawn(name, cmd, port, dir)?, tuning, port))
}

/// `haproxy (leastconn)`, or `haproxy (leastconn, no headers)` for [`Tuning::Bare`].
fn bare_name(peer: &str, algorithm: &str, tuning: Tuning) -> String {
    if tuning == Tuning::Bare {
        format!("{peer} ({algorithm}, no headers)")
    } else {
        format!("{peer} ({algorithm})")
    }
}

/// Points `system.url` at its https listener when `tuning` is [`Tuning::Tls`].
fn with_scheme(mut system: System, tuning: Tuning, port: u16) -> System {
    if tuning == Tuning::Tls {
        system.url = format!("https://127.0.0.1:{port}/");
    }
    system
}
