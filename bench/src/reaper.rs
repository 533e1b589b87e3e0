//! Every process the harness starts ends with it, on any signal.
//!
//! Each child is started in a process group of its own (so nginx's workers and HAProxy's
//! threads go with their master) and registered here until it is stopped. When the harness
//! gets SIGTERM, SIGINT or SIGHUP (a `timeout` around `scripts/bench`, Ctrl-C, a closed
//! terminal), [`on_signals`] sends SIGTERM to every registered group, SIGKILL to what is
//! left after a grace period, removes the work directories, and exits. (SIGKILL of the
//! harness itself cannot be caught; nothing can clean up after that.) The network
//! partitions a scenario makes (nftables tables, [`track_table`]) are deleted too, so no
//! port stays cut off.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// Process groups started and not yet stopped.
static LIVE: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// How long the groups get to stop after SIGTERM.
const GRACE: Duration = Duration::from_secs(2);

/// Registers the process group led by `pid` (a child started with `process_group(0)`).
pub fn track(pid: u32) {
    LIVE.lock().unwrap_or_else(|p| p.into_inner()).push(pid);
}

/// The group led by `pid` has been stopped.
pub fn untrack(pid: u32) {
    LIVE.lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|p| *p != pid);
}

/// nftables tables (family `inet`) made and not yet deleted.
static TABLES: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Registers an nftables table to delete should the harness be interrupted.
pub fn track_table(name: &str) {
    TABLES
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(name.to_string());
}

/// The table `name` has been deleted.
pub fn untrack_table(name: &str) {
    TABLES
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|t| t != name);
}

/// Waits for SIGTERM, SIGINT or SIGHUP, stops every registered group and exits with
/// 128 + the signal's number. Spawn it once, first thing.
pub async fn on_signals() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        eprintln!("bench: cannot watch for signals; children may outlive an interrupted run");
        return;
    };
    let code = tokio::select! {
        _ = term.recv() => 143,
        _ = int.recv() => 130,
        _ = hup.recv() => 129,
    };
    stop_all();
    crate::systems::remove_workdirs();
    std::process::exit(code);
}

/// Deletes every registered table; SIGTERM to every registered group, then SIGKILL to any
/// still there after [`GRACE`].
pub fn stop_all() {
    for table in std::mem::take(&mut *TABLES.lock().unwrap_or_else(|p| p.into_inner())) {
        let _ = shared::testbed::nft(&["delete", "table", "inet", &table], None);
    }
    let groups: Vec<u32> = LIVE.lock().unwrap_or_else(|p| p.into_inner()).clone();
    if groups.is_empty() {
        return;
    }
    eprintln!(
        "\nbench: stopping {} process group(s) it started",
        groups.len()
    );
    let group = |pid: u32| Pid::from_raw(pid as i32);
    for pid in &groups {
        let _ = killpg(group(*pid), Signal::SIGTERM);
    }
    let deadline = Instant::now() + GRACE;
    // `killpg` with no signal: does anything of the group remain?
    let remaining = || {
        groups
            .iter()
            .filter(|p| killpg(group(**p), None).is_ok())
            .count()
    };
    while remaining() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    for pid in &groups {
        let _ = killpg(group(*pid), Signal::SIGKILL);
    }
}
