//! `course-service cluster`: runs N `serve` workers on consecutive ports and keeps them up,
//! as PM2's cluster mode does for Node.
//!
//! A worker that exits is restarted after an exponential backoff (reset once it has stayed
//! up for a while). A worker that crashes too often within a window is abandoned with an
//! error; when every worker is abandoned the supervisor exits non-zero, so systemd or
//! Kubernetes can take over. SIGTERM is forwarded to every worker, which drains and exits.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::sync::watch;
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

/// Runs the cluster until `shutdown` fires (then drains every worker) or every worker has
/// been abandoned (an error).
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
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut workers = tokio::task::JoinSet::new();
    for i in 0..spec.instances {
        let port = spec.base_port + i;
        let mut cmd = Command::new(&exe);
        cmd.arg("serve")
            .arg("--listen")
            .arg(std::net::SocketAddr::new(spec.host, port).to_string())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        if let Some(c) = &spec.config {
            cmd.arg("--config").arg(c);
        }
        workers.spawn(supervise(i + 1, port, cmd, stop_rx.clone()));
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

/// Keeps worker `n` running until told to stop or until it crashes too often.
async fn supervise(n: u16, port: u16, mut cmd: Command, mut stop: watch::Receiver<bool>) {
    let mut policy = RestartPolicy::default();
    loop {
        let started = Instant::now();
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(worker = n, error = %e, "cannot start worker");
                return;
            }
        };
        let pid = child.id().unwrap_or(0);
        tracing::info!(worker = n, pid, port, "worker started");
        tokio::select! {
            status = child.wait() => {
                let uptime = started.elapsed();
                tracing::warn!(worker = n, pid, port, ?status, ?uptime, "worker exited");
                match policy.on_exit(Instant::now(), uptime) {
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
            _ = stop.changed() => {
                drain(n, &mut child).await;
                return;
            }
        }
    }
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
