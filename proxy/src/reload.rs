//! Hot reload of `upstreams.toml`, from three triggers: file events (the directory is
//! watched, so an editor that writes a new file and renames it over the old one is seen),
//! SIGHUP, and `POST /admin/reload`.
//!
//! A reload parses and validates the whole file first; only a valid one is turned into a new
//! [`Topology`] (built from the old one, so kept endpoints keep their state) and swapped in
//! through `ArcSwap`, atomically: a request sees the old topology or the new one, never a mix,
//! and requests in flight finish on what they hold. An invalid file changes nothing: the error,
//! with file, line, column and field, is logged, kept for `/admin/upstreams`, and counted.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::checker::HealthChecker;
use crate::config::UpstreamsConfig;
use crate::forward::Proxy;
use crate::tls::Certificates;
use crate::topology::Topology;

/// File events arrive in bursts (truncate, write, rename); they are coalesced over this long
/// before the file is read, so a half-written file is not what gets validated.
pub const DEBOUNCE: Duration = Duration::from_millis(100);

/// The message of a reload that found the file equal to the running configuration.
pub const UNCHANGED: &str = "unchanged";

/// The outcome of the last reload attempt, as `/admin/upstreams` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadStatus {
    /// RFC 3339 time of the attempt.
    pub at: String,
    /// What triggered it: `file`, `sighup`, `admin` or `startup`.
    pub trigger: &'static str,
    pub ok: bool,
    /// What changed, or every error found.
    pub message: String,
}

/// Reloads the upstreams file into the proxy.
pub struct Reloader {
    proxy: Arc<Proxy>,
    /// Restarted with each new topology.
    checker: Arc<HealthChecker>,
    path: PathBuf,
    last: Mutex<ReloadStatus>,
    /// The https listener's certificate and key, reloaded with the file on SIGHUP and
    /// `POST /admin/reload`, and on their own file events.
    certificates: Option<Arc<Certificates>>,
}

impl Reloader {
    pub fn new(
        proxy: Arc<Proxy>,
        checker: Arc<HealthChecker>,
        path: PathBuf,
        certificates: Option<Arc<Certificates>>,
    ) -> Reloader {
        Reloader {
            proxy,
            checker,
            certificates,
            last: Mutex::new(ReloadStatus {
                at: now_rfc3339(),
                trigger: "startup",
                ok: true,
                message: format!("loaded {}", path.display()),
            }),
            path,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn certificates(&self) -> Option<&Arc<Certificates>> {
        self.certificates.as_ref()
    }

    /// Reloads everything a running proxy can take again: `upstreams.toml`, then the TLS
    /// pair. Returns what changed, or every error.
    pub fn reload_all(&self, trigger: &'static str) -> Result<String, String> {
        let upstreams = self.reload(trigger);
        let Some(certs) = &self.certificates else {
            return upstreams;
        };
        match (upstreams, certs.reload(trigger)) {
            (Ok(u), Ok(c)) => Ok(format!("{u}; certificate: {c}")),
            (Err(e), Ok(_)) | (Ok(_), Err(e)) => Err(e),
            (Err(u), Err(c)) => Err(format!("{u}\n{c}")),
        }
    }

    pub fn last(&self) -> ReloadStatus {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Reads, validates and applies the file. Returns what changed, or every error.
    pub fn reload(&self, trigger: &'static str) -> Result<String, String> {
        let result = UpstreamsConfig::load(&self.path)
            .map_err(|errors| {
                errors
                    .iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .map(|config| self.apply(config));
        if trigger == "file" && result.as_deref() == Ok(UNCHANGED) {
            // A touch, or an event for a save already applied: nothing to report.
            return result;
        }
        let metrics = &self.proxy.metrics;
        let status = match &result {
            Ok(message) => {
                metrics.config_reloads.with_label_values(&["ok"]).inc();
                tracing::info!(trigger, file = %self.path.display(), "{message}");
                ReloadStatus {
                    at: now_rfc3339(),
                    trigger,
                    ok: true,
                    message: message.clone(),
                }
            }
            Err(errors) => {
                metrics.config_reloads.with_label_values(&["error"]).inc();
                metrics.config_reload_failures.inc();
                tracing::error!(
                    trigger,
                    "reload refused, previous configuration kept:\n{errors}"
                );
                ReloadStatus {
                    at: now_rfc3339(),
                    trigger,
                    ok: false,
                    message: errors.clone(),
                }
            }
        };
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = status;
        result
    }

    /// Builds the new topology from the old one and swaps it in.
    fn apply(&self, config: UpstreamsConfig) -> String {
        let old = self.proxy.topology.load_full();
        if old.config == config {
            return UNCHANGED.into();
        }
        let metrics = &self.proxy.metrics;
        let new = Topology::build(&config, Some(&old), metrics, Instant::now());
        let mut changes = Vec::new();
        for pool in &old.pools {
            for e in &pool.endpoints {
                if new.endpoint(pool.name(), e.addr).is_none() {
                    changes.push(format!("-{}/{}", pool.name(), e.addr));
                    metrics.forget_endpoint(pool.name(), &e.addr.to_string());
                }
            }
        }
        for pool in &new.pools {
            for e in &pool.endpoints {
                if old.endpoint(pool.name(), e.addr).is_none() {
                    changes.push(format!("+{}/{}", pool.name(), e.addr));
                }
            }
            if let Some(before) = old.config.pool(pool.name()) {
                if before.algorithm != pool.config.algorithm {
                    changes.push(format!(
                        "{}: {} -> {}",
                        pool.name(),
                        before.algorithm.as_str(),
                        pool.config.algorithm.as_str()
                    ));
                }
            }
        }
        let new = Arc::new(new);
        self.proxy.topology.store(new.clone());
        self.checker.sync(&new);
        if changes.is_empty() {
            "applied (settings changed)".into()
        } else {
            format!("applied: {}", changes.join(", "))
        }
    }
}

/// Kubernetes updates a mounted ConfigMap by writing the new files into a fresh directory
/// and renaming a symlink of this name over the old one; `upstreams.toml` itself is a symlink
/// through it and appears in no event.
const KUBERNETES_SWAP: &str = "..data";

/// Starts watching the directories of `paths`; returns the loop that calls `changed` after
/// each burst of events touching one of the files (spawn it). The watch is in place when
/// this returns, and the loop calls `changed` once at start, so an edit made while the proxy
/// was starting is not lost.
pub fn watch_files(
    paths: &[&Path],
    changed: impl Fn() + Send + 'static,
) -> Result<impl std::future::Future<Output = ()>, String> {
    use notify::{RecursiveMode, Watcher};

    let mut dirs: Vec<PathBuf> = Vec::new();
    let mut names: Vec<std::ffi::OsString> = vec![KUBERNETES_SWAP.into()];
    for path in paths {
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
        names.extend(path.file_name().map(|n| n.to_os_string()));
    }
    let (tx, mut rx) = mpsc::channel::<()>(16);
    let initial = tx.clone();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(event) = res {
            let ours = event
                .paths
                .iter()
                .any(|p| p.file_name().is_some_and(|n| names.iter().any(|m| m == n)));
            let relevant = matches!(
                event.kind,
                notify::EventKind::Create(_)
                    | notify::EventKind::Modify(_)
                    | notify::EventKind::Remove(_)
            );
            if ours && relevant {
                let _ = tx.try_send(());
            }
        }
    })
    .map_err(|e| format!("cannot watch files: {e}"))?;
    for dir in &dirs {
        watcher
            .watch(dir, RecursiveMode::NonRecursive)
            .map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;
    }
    let _ = initial.try_send(());
    Ok(async move {
        // The watcher lives as long as the loop.
        let _watcher = watcher;
        while rx.recv().await.is_some() {
            // Coalesce the rest of the burst.
            tokio::time::sleep(DEBOUNCE).await;
            while rx.try_recv().is_ok() {}
            changed();
        }
    })
}

/// [`watch_files`] for `upstreams.toml`: reloads it after each change.
pub fn watch_file(
    reloader: Arc<Reloader>,
) -> Result<impl std::future::Future<Output = ()>, String> {
    let path = reloader.path().to_path_buf();
    watch_files(&[&path], move || {
        if reloader.path().exists() {
            let _ = reloader.reload("file");
        }
    })
}

/// Installs the SIGHUP handler (at once: from here on SIGHUP no longer ends the process).
pub fn sighup() -> Option<tokio::signal::unix::Signal> {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::hangup()) {
        Ok(hup) => Some(hup),
        Err(e) => {
            tracing::warn!(error = %e, "cannot install a SIGHUP handler; reload through the file or the admin API");
            None
        }
    }
}

/// Reloads on every SIGHUP received through `hup`.
pub async fn on_sighup(hup: Option<tokio::signal::unix::Signal>, reloader: Arc<Reloader>) {
    let Some(mut hup) = hup else {
        return;
    };
    while hup.recv().await.is_some() {
        let _ = reloader.reload_all("sighup");
    }
}

pub(crate) fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}
