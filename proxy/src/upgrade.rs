//! Restarting or upgrading the proxy's own binary without refusing a connection or losing a
//! request (nginx's `USR2` binary upgrade, HAProxy's `-x`, Pingora's graceful upgrade).
//!
//! On SIGUSR2 the running proxy starts its binary again (the file at the path it was started
//! from, so a newly installed binary), with the same arguments and its listening sockets
//! handed over as fds 3.. (`LISTEN_FDS`, names in `LISTEN_FDNAMES`: `http`, `https`,
//! `admin`). The new process takes those sockets instead of binding (both processes now hold
//! the same sockets, so a connection waiting in a backlog is accepted by whichever accepts
//! first, and none is refused), starts its workers, and once it serves tells the old one to
//! stop with SIGTERM (its parent, named in `PROXY_UPGRADE_FROM`). The old one then drains as
//! on any SIGTERM: no new connections, in-flight requests finished. A new process that fails
//! (a bad configuration, a binary that does not start) exits, and the old one goes on
//! serving as if nothing had happened.
//!
//! Under systemd (`Type=notify`, `NotifyAccess=all`) each process reports `READY=1` and its
//! `MAINPID`, so the unit follows the new process.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::path::PathBuf;

use command_fds::{CommandFdExt, FdMapping};

/// The variable naming the process a new one replaces.
pub const FROM_VAR: &str = "PROXY_UPGRADE_FROM";
/// The names of the sockets handed over, in fd order (systemd's variable).
pub const NAMES_VAR: &str = "LISTEN_FDNAMES";

/// Listening sockets handed over by the process this one replaces, by name.
#[derive(Default)]
pub struct Inherited {
    sockets: HashMap<String, std::net::TcpListener>,
}

impl Inherited {
    /// The sockets in `LISTEN_FDS` / `LISTEN_FDNAMES`, if any. (A process this one starts
    /// later gets its own values of these variables, so stale ones are never read twice.)
    pub fn from_env() -> Result<Inherited, String> {
        let names = std::env::var(NAMES_VAR).unwrap_or_default();
        let mut fds = listenfd::ListenFd::from_env();
        let mut sockets = HashMap::new();
        for (i, name) in names.split(':').filter(|n| !n.is_empty()).enumerate() {
            if let Some(listener) = fds
                .take_tcp_listener(i)
                .map_err(|e| format!("inherited socket {name} (fd {}): {e}", 3 + i))?
            {
                sockets.insert(name.to_string(), listener);
            }
        }
        Ok(Inherited { sockets })
    }

    /// The inherited socket `name`, if it listens on `addr` (a configuration that moved the
    /// listener binds anew).
    pub fn take(&mut self, name: &str, addr: SocketAddr) -> Option<std::net::TcpListener> {
        let listener = self.sockets.remove(name)?;
        if listener.local_addr().ok()? != addr {
            tracing::info!(name, %addr, "listener moved; binding the new address");
            return None;
        }
        listener.set_nonblocking(true).ok()?;
        Some(listener)
    }
}

/// What a new process needs to be started with.
pub struct Relauncher {
    /// The binary's path as this process was started (not `/proc/self/exe`, which still
    /// names the old file after a new one is installed over it).
    exe: PathBuf,
    args: Vec<std::ffi::OsString>,
}

impl Relauncher {
    /// Remembers how this process was started; call before anything can change the path.
    pub fn capture() -> Result<Relauncher, String> {
        let mut args = std::env::args_os();
        let argv0 = args.next().ok_or("no argv[0]")?;
        let exe = match std::env::current_dir() {
            Ok(dir) if PathBuf::from(&argv0).components().count() > 1 => dir.join(&argv0),
            _ => std::env::current_exe().map_err(|e| format!("cannot find own executable: {e}"))?,
        };
        Ok(Relauncher {
            exe,
            args: args.collect(),
        })
    }

    /// Starts the new process with `sockets` (name, socket) as fds 3... Returns its child.
    pub fn start(
        &self,
        sockets: &[(&str, &std::net::TcpListener)],
    ) -> Result<tokio::process::Child, String> {
        let mut names = Vec::new();
        let mut mappings = Vec::new();
        for (i, (name, socket)) in sockets.iter().enumerate() {
            let fd = socket
                .try_clone()
                .map_err(|e| format!("cannot hand over {name}: {e}"))?;
            names.push(*name);
            mappings.push(FdMapping {
                parent_fd: OwnedFd::from(fd),
                child_fd: 3 + i as i32,
            });
        }
        let mut cmd = tokio::process::Command::new(&self.exe);
        cmd.args(&self.args)
            .env("LISTEN_FDS", sockets.len().to_string())
            .env(NAMES_VAR, names.join(":"))
            .env(FROM_VAR, std::process::id().to_string())
            .env_remove("LISTEN_PID")
            .stdin(std::process::Stdio::null());
        cmd.fd_mappings(mappings)
            .map_err(|e| format!("cannot hand the sockets over: {e}"))?;
        cmd.spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.exe.display()))
    }
}

/// Called once this process serves: writes `pid_file`, tells the process it replaces (if
/// any, and only if it is our parent) to drain and exit, and tells systemd this is the main
/// process now.
pub fn serving(pid_file: Option<&std::path::Path>) {
    if let Some(path) = pid_file {
        // Written whole under another name, then renamed: a reader never sees half a pid.
        let tmp = path.with_extension("new");
        let written = std::fs::write(&tmp, format!("{}\n", std::process::id()))
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = written {
            tracing::warn!(path = %path.display(), error = %e, "cannot write the pid file");
        }
    }
    if let Some(old) = std::env::var(FROM_VAR)
        .ok()
        .and_then(|p| p.parse::<i32>().ok())
    {
        let parent = nix::unistd::getppid().as_raw();
        if parent == old {
            tracing::info!(old, "serving; telling the old process to drain");
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(old),
                nix::sys::signal::Signal::SIGTERM,
            );
        } else {
            tracing::warn!(
                old,
                parent,
                "{FROM_VAR} is not this process's parent; ignored"
            );
        }
    }
    notify_systemd(&format!("READY=1\nMAINPID={}", std::process::id()));
}

/// `sd_notify`: one datagram to `NOTIFY_SOCKET`, when systemd set one.
fn notify_systemd(state: &str) {
    let Ok(path) = std::env::var("NOTIFY_SOCKET") else {
        return;
    };
    let sent = std::os::unix::net::UnixDatagram::unbound().and_then(|s| {
        if let Some(abstract_name) = path.strip_prefix('@') {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(abstract_name)?;
            s.send_to_addr(state.as_bytes(), &addr)
        } else {
            s.send_to(state.as_bytes(), &path)
        }
    });
    if let Err(e) = sent {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}
