//! `course-service cluster`: runs N `serve` workers on consecutive ports and keeps them up,
//! as PM2's cluster mode does for Node.
//!
//! The supervisor binds every instance's port itself and hands the socket to the worker
//! (fd 3, `LISTEN_FDS`), keeping it open: the port never refuses a connection, not while a
//! crashed worker restarts, not during a reload; connections wait in the backlog for the
//! next worker to accept. Each worker also gets a private port (fd 4) the supervisor probes
//! for `/readyz`.
//!
//! A worker that exits is restarted after an exponential backoff (reset once it has stayed
//! up for a while). A worker that crashes too often within a window is abandoned with an
//! error; when every worker is abandoned the supervisor exits non-zero, so systemd or
//! Kubernetes can take over. SIGTERM is forwarded to every worker, which drains and exits;
//! a worker whose supervisor was killed outright notices it was re-parented and drains too
//! (`server::run`).
//! SIGHUP reloads (PM2's `reload`): workers are replaced one at a time, each new one ready
//! before the old one drains ([`replace`]), so a deploy of a new binary loses nothing.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use command_fds::{CommandFdExt, FdMapping};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

/// First restart delay; doubles per consecutive crash.
pub const BACKOFF_START: Duration = Duration::from_millis(100);
pub const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A worker up this long is considered stable: its backoff starts over.
pub const STABLE_AFTER: Duration = Duration::from_secs(30);
/// More than `MAX_CRASHES` crashes within `CRASH_WINDOW` abandons the worker.
pub const MAX_CRASHES: usize = 5;
pub const CRASH_WINDOW: Duration = Duration::from_secs(60);
/// How long a worker may drain after SIGTERM before it is killed.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(25);

/// What the supervisor runs.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    pub instances: u16,
    pub base_port: u16,
    pub host: IpAddr,
    /// Passed to every worker as `--config`.
    pub config: Option<PathBuf>,
}

/// Restart policy state for one worker: pure, so it is tested without processes.
#[derive(Debug, Default)]
pub struct RestartPolicy {
    crashes: Vec<Instant>,
    consecutive: u32,
}

impl RestartPolicy {
    /// Records an exit at `now` after the worker ran for `uptime`; returns the delay before
    /// the next start, or `None` to give up.
    pub fn on_exit(&mut self, now: Instant, uptime: Duration) -> Option<Duration> {
        if uptime >= STABLE_AFTER {
            self.consecutive = 0;
        }
        self.crashes
            .retain(|t| now.duration_since(*t) < CRASH_WINDOW);
        self.crashes.push(now);
        if self.crashes.len() > MAX_CRASHES {
            return None;
        }
        let delay = BACKOFF_START
            .saturating_mul(2u32.saturating_pow(self.consecutive))
            .min(BACKOFF_MAX);
        self.consecutive = self.consecutive.saturating_add(1);
        Some(delay)
    }
}

/// One instance's place in the cluster: its public port, held open by the supervisor for
/// the cluster's life, so the port accepts connections while its worker restarts or is
/// replaced (they wait in the backlog for the next worker to accept).
struct Slot {
    n: u16,
    addr: SocketAddr,
    listener: std::net::TcpListener,
}

/// Where the reload of one slot reports how it went.
type ReloadDone = oneshot::Sender<Result<(), String>>;

/// Runs the cluster until `shutdown` fires (then drains every worker) or every worker has
/// been abandoned (an error). SIGHUP replaces the workers one at a time (see [`replace`]).
pub async fn run(
    spec: ClusterSpec,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find own executable: {e}"))?;
    let last_port = u32::from(spec.base_port) + u32::from(spec.instances) - 1;
    if spec.instances == 0 || last_port > u32::from(u16::MAX) {
        return Err(format!(
            "--instances {} from --base-port {} does not fit in the port range",
            spec.instances, spec.base_port
        ));
    }
    let mut hangup =
        signal(SignalKind::hangup()).map_err(|e| format!("cannot listen for SIGHUP: {e}"))?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut workers = tokio::task::JoinSet::new();
    let mut reloads = Vec::new();
    for i in 0..spec.instances {
        let addr = SocketAddr::new(spec.host, spec.base_port + i);
        let listener = std::net::TcpListener::bind(addr)
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        let slot = Slot {
            n: i + 1,
            addr,
            listener,
        };
        let (reload_tx, reload_rx) = mpsc::channel::<ReloadDone>(1);
        reloads.push(reload_tx);
        let launcher = Launcher {
            exe: exe.clone(),
            config: spec.config.clone(),
        };
        workers.spawn(supervise(slot, launcher, stop_rx.clone(), reload_rx));
    }
    tracing::info!(
        instances = spec.instances,
        base_port = spec.base_port,
        "cluster started"
    );

    tokio::pin!(shutdown);
    let mut abandoned = 0;
    loop {
        tokio::select! {
            _ = &mut shutdown => {
                tracing::info!("forwarding shutdown to every worker");
                let _ = stop_tx.send(true);
                while workers.join_next().await.is_some() {}
                return Ok(());
            }
            _ = hangup.recv() => {
                tracing::info!("SIGHUP: replacing the workers one at a time");
                for (i, reload) in reloads.iter().enumerate() {
                    let (done_tx, done_rx) = oneshot::channel();
                    if reload.send(done_tx).await.is_err() {
                        continue; // an abandoned worker
                    }
                    match done_rx.await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => {
                            tracing::error!(worker = i + 1, error = %e, "reload stopped: the new worker did not become ready; the old one keeps serving");
                            break;
                        }
                        Err(_) => break,
                    }
                }
                tracing::info!("reload finished");
            }
            done = workers.join_next() => match done {
                Some(_) => {
                    abandoned += 1;
                    if abandoned == spec.instances {
                        return Err("every worker crashed too often; giving up".into());
                    }
                }
                None => return Ok(()),
            }
        }
    }
}

/// How a worker process is started.
struct Launcher {
    exe: PathBuf,
    config: Option<PathBuf>,
}

/// A running worker and its private port.
struct Worker {
    child: Child,
    pid: u32,
    /// Where the supervisor asks this worker (not its siblings) whether it is ready.
    private: SocketAddr,
    started: Instant,
}

impl Launcher {
    /// Starts a `serve` worker for `slot`, handing it the slot's public socket as fd 3 and a
    /// fresh private one as fd 4 (`LISTEN_FDS=2`).
    fn start(&self, slot: &Slot) -> Result<Worker, String> {
        let private = std::net::TcpListener::bind(SocketAddr::new(slot.addr.ip(), 0))
            .map_err(|e| format!("cannot open a private port: {e}"))?;
        let private_addr = private
            .local_addr()
            .map_err(|e| format!("private port: {e}"))?;
        let public = slot
            .listener
            .try_clone()
            .map_err(|e| format!("cannot share {}: {e}", slot.addr))?;
        let mut cmd = Command::new(&self.exe);
        cmd.arg("serve")
            .arg("--listen")
            .arg(slot.addr.to_string())
            .env("LISTEN_FDS", "2")
            .env_remove("LISTEN_PID")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        if let Some(c) = &self.config {
            cmd.arg("--config").arg(c);
        }
        cmd.fd_mappings(vec![
            FdMapping {
                parent_fd: OwnedFd::from(public),
                child_fd: 3,
            },
            FdMapping {
                parent_fd: OwnedFd::from(private),
                child_fd: 4,
            },
        ])
        .map_err(|e| format!("cannot hand the sockets over: {e}"))?;
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start a worker: {e}"))?;
        let pid = child.id().unwrap_or(0);
        tracing::info!(worker = slot.n, pid, port = slot.addr.port(), private = %private_addr, "worker started");
        Ok(Worker {
            child,
            pid,
            private: private_addr,
            started: Instant::now(),
        })
    }
}

/// Keeps slot `n`'s worker running until told to stop or until it crashes too often; on a
/// reload request, replaces it ([`replace`]).
async fn supervise(
    slot: Slot,
    launcher: Launcher,
    mut stop: watch::Receiver<bool>,
    mut reloads: mpsc::Receiver<ReloadDone>,
) {
    let mut policy = RestartPolicy::default();
    let n = slot.n;
    let port = slot.addr.port();
    loop {
        let mut worker = match launcher.start(&slot) {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(worker = n, error = %e, "cannot start worker");
                return;
            }
        };
        loop {
            tokio::select! {
                status = worker.child.wait() => {
                    let uptime = worker.started.elapsed();
                    tracing::warn!(worker = n, pid = worker.pid, port, ?status, ?uptime, "worker exited");
                    break;
                }
                Some(done) = reloads.recv() => {
                    let outcome = replace(&slot, &launcher, &mut worker).await;
                    let _ = done.send(outcome);
                }
                _ = stop.changed() => {
                    drain(n, &mut worker.child).await;
                    return;
                }
            }
        }
        match policy.on_exit(Instant::now(), worker.started.elapsed()) {
            Some(delay) => {
                tracing::info!(worker = n, ?delay, "restarting worker after backoff");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.changed() => return,
                }
            }
            None => {
                tracing::error!(
                    worker = n, port, crashes = MAX_CRASHES + 1, window = ?CRASH_WINDOW,
                    "WORKER ABANDONED: it crashed too often; fix the cause and restart the cluster"
                );
                return;
            }
        }
    }
}

/// PM2's `reload` for one slot: start a new worker on the same public socket, wait until it
/// answers `/readyz` on its private port, then drain the old one. Both accept on the shared
/// socket meanwhile, so no connection is refused; the old one stops accepting as it drains
/// and its open connections hear `Connection: close`. A new worker that is not ready within
/// [`READY_TIMEOUT`] is stopped and the old one kept.
async fn replace(slot: &Slot, launcher: &Launcher, current: &mut Worker) -> Result<(), String> {
    let mut fresh = launcher.start(slot)?;
    let ready = tokio::select! {
        ready = wait_ready(fresh.private, READY_TIMEOUT) => ready,
        status = fresh.child.wait() => Err(format!("the new worker exited: {status:?}")),
    };
    if let Err(e) = ready {
        drain(slot.n, &mut fresh.child).await;
        return Err(e);
    }
    let mut old = std::mem::replace(current, fresh);
    tracing::info!(
        worker = slot.n,
        old = old.pid,
        new = current.pid,
        "new worker ready; draining the old one"
    );
    drain(slot.n, &mut old.child).await;
    Ok(())
}

/// How long a new worker may take to be ready during a reload.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Polls `GET /readyz` on `addr` until it answers 200.
async fn wait_ready(addr: SocketAddr, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    loop {
        if probe_ready(addr).await {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("not ready on {addr} within {limit:?}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn probe_ready(addr: SocketAddr) -> bool {
    let probe = async {
        let mut io = tokio::net::TcpStream::connect(addr).await.ok()?;
        io.write_all(b"GET /readyz HTTP/1.1\r\nhost: supervisor\r\nconnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut head = [0u8; 12];
        io.read_exact(&mut head).await.ok()?;
        Some(&head == b"HTTP/1.1 200")
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), probe).await,
        Ok(Some(true))
    )
}

/// Sends SIGTERM and waits for the worker to drain; kills it if it takes too long.
async fn drain(n: u16, child: &mut Child) {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
    match tokio::time::timeout(DRAIN_TIMEOUT, child.wait()).await {
        Ok(status) => tracing::info!(worker = n, ?status, "worker stopped"),
        Err(_) => {
            tracing::warn!(worker = n, "worker did not drain in time; killing it");
            let _ = child.kill().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn backoff_doubles_then_caps_and_resets_when_stable() {
        let mut p = RestartPolicy::default();
        let quick = Duration::from_millis(10);
        let mut now = Instant::now();
        let mut delays = Vec::new();
        for _ in 0..5 {
            now += Duration::from_secs(20); // outside the crash window after 3 steps
            delays.push(p.on_exit(now, quick).unwrap());
        }
        assert_eq!(
            delays,
            [100, 200, 400, 800, 1600]
                .map(Duration::from_millis)
                .to_vec()
        );
        now += Duration::from_secs(20);
        assert_eq!(p.on_exit(now, STABLE_AFTER), Some(BACKOFF_START));
    }

    #[tokio::test(start_paused = true)]
    async fn too_many_crashes_in_the_window_gives_up() {
        let mut p = RestartPolicy::default();
        let now = Instant::now();
        for i in 0..MAX_CRASHES {
            assert!(p
                .on_exit(now + Duration::from_secs(i as u64), Duration::ZERO)
                .is_some());
        }
        assert_eq!(
            p.on_exit(now + Duration::from_secs(10), Duration::ZERO),
            None
        );
    }

    #[tokio::test(start_paused = true)]
    async fn crashes_outside_the_window_are_forgotten() {
        let mut p = RestartPolicy::default();
        let mut now = Instant::now();
        for _ in 0..(MAX_CRASHES * 3) {
            now += CRASH_WINDOW / 4;
            assert!(p.on_exit(now, Duration::ZERO).is_some());
        }
    }
}
