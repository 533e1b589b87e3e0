//! What the tests and the bench harness need to start real processes: free loopback ports
//! for them to bind, the workspace's binaries, and a network partition to cut one off.
//!
//! Ports: asking the kernel (`bind 127.0.0.1:0`) hands out a port from the ephemeral range,
//! the range `connect()` also draws client ports from. Between closing that probe and the
//! child's own `bind`, an outgoing connection, or one of the thousands left in TIME_WAIT by
//! a load test, can take the port, and the child fails with "address in use". The kernel
//! never picks a port below the ephemeral range by itself, so the ports come from there:
//! each process walks that range from its own starting point (derived from its pid) and
//! probes every port before handing it out.

use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

/// The lowest port handed out: above the well-known and the common development ports.
const FIRST: u32 = 15_000;
/// Where the ephemeral range starts when `/proc` does not say (Linux's default).
const DEFAULT_EPHEMERAL_START: u32 = 32_768;

/// A loopback TCP port nothing is bound to, that no other call in this process returns.
///
/// # Panics
/// If no free port is left below the ephemeral range (a test-harness failure).
pub fn free_port() -> u16 {
    free_ports(1)
}

/// The first of `count` consecutive free loopback TCP ports (for a server that binds
/// `base`, `base + 1`, …).
///
/// # Panics
/// If no such run of ports is free below the ephemeral range, or `count` is 0.
pub fn free_ports(count: u16) -> u16 {
    assert!(count > 0, "free_ports(0)");
    let range = range();
    let span = range.end - range.start;
    let count = u32::from(count);
    static NEXT: AtomicU32 = AtomicU32::new(0);
    for _ in 0..span / count {
        let offset = NEXT.fetch_add(count, Ordering::Relaxed);
        let base = range.start + (start_offset(span) + offset) % span;
        if base + count > range.end {
            continue; // a run may not wrap around the end of the range
        }
        if (base..base + count).all(|p| is_free(p as u16)) {
            return base as u16;
        }
    }
    panic!("no {count} consecutive free loopback ports in {range:?}");
}

/// From `FIRST` up to the start of the kernel's ephemeral range.
fn range() -> std::ops::Range<u32> {
    static RANGE: OnceLock<std::ops::Range<u32>> = OnceLock::new();
    RANGE
        .get_or_init(|| {
            let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
                .unwrap_or(DEFAULT_EPHEMERAL_START);
            // A machine whose ephemeral range starts low still gets a usable range; the
            // probe below then guards alone, as `bind :0` would.
            FIRST..ephemeral_start.clamp(FIRST + 1_000, 65_536)
        })
        .clone()
}

/// Where this process starts walking: spread by pid, so that processes running at the same
/// time (a test and the harness it starts) rarely probe the same ports.
fn start_offset(span: u32) -> u32 {
    std::process::id().wrapping_mul(2_654_435_761) % span
}

/// Whether a listener could bind the port now (with `SO_REUSEADDR`, as `std` and our
/// servers set it).
fn is_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// The debug build of a workspace binary (`proxy`, `course-service`), built now if it is
/// missing: for a test of one crate that runs another crate's binary.
///
/// # Panics
/// If cargo cannot build it.
pub fn workspace_bin(package: &str) -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("shared sits in the workspace")
        .to_path_buf();
    let bin = root.join("target/debug").join(package);
    if !bin.is_file() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = std::process::Command::new(cargo)
            .args(["build", "-q", "-p", package])
            .current_dir(&root)
            .status()
            .expect("cargo runs");
        assert!(status.success(), "cannot build {package}");
    }
    bin
}

/// A network partition between this host's processes and a loopback port: every packet to
/// or from it is dropped (nothing is refused or reset; packets vanish, as on a cut link).
/// An nftables table of its own, deleted when this is dropped, however the test ends. Needs
/// root and `nft` (apt `nftables`; `scripts/test` installs it).
pub struct Partition {
    table: String,
}

impl Partition {
    /// # Panics
    /// If `nft` cannot add the table (not root, `nft` missing).
    pub fn cut(port: u16) -> Partition {
        Partition::try_cut(port).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Cuts `port` off, or says why it cannot (not root, `nft` missing).
    pub fn try_cut(port: u16) -> Result<Partition, String> {
        let table = format!("mc_partition_{}_{port}", std::process::id());
        let rules = format!(
            "table inet {table} {{\n  chain input {{\n    type filter hook input priority -10; policy accept;\n    \
             tcp dport {port} drop\n    tcp sport {port} drop\n  }}\n}}\n"
        );
        nft(&["-f", "-"], Some(&rules))?;
        Ok(Partition { table })
    }

    /// The nftables table (family `inet`) holding the rules.
    pub fn table(&self) -> &str {
        &self.table
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        if let Err(e) = nft(&["delete", "table", "inet", &self.table], None) {
            assert!(std::thread::panicking(), "{e}");
        }
    }
}

/// Runs `nft args` (with `stdin`); nft's words when it fails.
pub fn nft(args: &[&str], stdin: Option<&str>) -> Result<(), String> {
    use std::io::Write;
    let mut child = std::process::Command::new("nft")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run nft (apt nftables): {e}"))?;
    if let Some(text) = stdin {
        if let Some(mut input) = child.stdin.take() {
            input
                .write_all(text.as_bytes())
                .map_err(|e| format!("nft {args:?}: {e}"))?;
        }
    }
    drop(child.stdin.take());
    let out = child
        .wait_with_output()
        .map_err(|e| format!("nft {args:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "nft {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_free_and_below_the_ephemeral_range() {
        let range = range();
        let ports: Vec<u16> = (0..50).map(|_| free_port()).collect();
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(
            unique.len(),
            ports.len(),
            "a port handed out twice: {ports:?}"
        );
        for p in ports {
            assert!(range.contains(&u32::from(p)), "{p} outside {range:?}");
            assert!(is_free(p), "{p} is taken");
        }
    }

    #[test]
    fn a_run_of_ports_is_consecutive_and_a_held_port_is_not_free() {
        let base = free_ports(3);
        let held: Vec<TcpListener> = (base..base + 3)
            .map(|p| TcpListener::bind(("127.0.0.1", p)).expect("each port of the run binds"))
            .collect();
        assert!(
            (base..base + 3).all(|p| !is_free(p)),
            "held ports probed as free"
        );
        drop(held);
        assert!(is_free(base), "{base} is free again once released");
    }
}
