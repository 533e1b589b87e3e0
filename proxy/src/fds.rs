//! File descriptors: the limit raised and the kernel's descriptor table sized once, at
//! start-up, before any worker thread exists.
//!
//! The kernel doubles a process's descriptor table when a new descriptor does not fit, and in
//! a process with more than one thread each doubling waits for an RCU grace period
//! (`expand_fdtable` calls `synchronize_rcu`): 5–20 ms on a small VM, spent inside the
//! `accept4` or `socket` call that needed the room. On a worker that is a stall of every
//! connection it serves, and under a burst of new clients the stall makes them open still more
//! connections, which crosses the next doubling (measured: a cold proxy at 20k req/s open
//! loop went from p99 3 ms to 60–370 ms whenever the burst crossed 256 descriptors). One
//! duplicate to the top slot while the process has a single thread is one doubling with
//! nothing to wait for; the table never shrinks.

use std::os::fd::RawFd;

use nix::fcntl::{fcntl, FcntlArg};
use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// What [`prepare`] arranged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prepared {
    /// The soft `RLIMIT_NOFILE` now in force.
    pub limit: u64,
    /// Descriptors the table holds without growing.
    pub table: u64,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (as HAProxy does for its `maxconn`), then
/// grows the descriptor table to hold `want` descriptors, or as many as the limit allows.
/// Call it before starting threads. Failures are logged and leave the process as it was.
pub fn prepare(want: u64) -> Prepared {
    let limit = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(e) => {
                tracing::warn!(error = %e, soft, hard, "cannot raise the open-files limit");
                soft
            }
        },
        Ok((soft, _)) => soft,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the open-files limit");
            return Prepared { limit: 0, table: 0 };
        }
    };
    let top = want.min(limit).saturating_sub(1);
    let table = match grow_table(top) {
        Ok(()) => top + 1,
        Err(e) => {
            tracing::warn!(error = %e, top, "cannot pre-size the descriptor table");
            0
        }
    };
    Prepared { limit, table }
}

/// Duplicates a descriptor to slot `top` (or the first free one above it) and closes it.
fn grow_table(top: u64) -> nix::Result<()> {
    let Ok(top) = RawFd::try_from(top) else {
        return Err(nix::errno::Errno::EINVAL);
    };
    let null = std::fs::File::open("/dev/null").map_err(|_| nix::errno::Errno::ENOENT)?;
    let duplicate = fcntl(&null, FcntlArg::F_DUPFD_CLOEXEC(top))?;
    nix::unistd::close(duplicate)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table size the kernel reports for this process.
    fn fd_size() -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .expect("/proc/self/status")
            .lines()
            .find_map(|l| l.strip_prefix("FDSize:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("an FDSize line")
    }

    #[test]
    fn the_table_is_grown_to_what_is_wanted_and_no_descriptor_is_left_open() {
        let prepared = prepare(3000);
        let want = 3000.min(prepared.limit);
        assert_eq!(prepared.table, want);
        assert!(fd_size() >= want, "FDSize {} < {want}", fd_size());
        // The duplicate that grew the table is closed again (other tests in this process
        // only ever hold low descriptors).
        let top = std::path::PathBuf::from(format!("/proc/self/fd/{}", want - 1));
        assert!(!top.exists(), "{} is still open", top.display());
        // The limit is now the hard one.
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
        assert_eq!((prepared.limit, soft), (hard, hard));
    }
}
