//! Structured logs through `tracing`, configured once per process.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs the global `tracing` subscriber: compact lines on stderr, filtered by `RUST_LOG`
/// (default `info`). Safe to call more than once (later calls do nothing), which tests rely on.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only on a terminal: log files and supervisors get plain text.
        .with_ansi(std::io::stderr().is_terminal())
        .compact()
        .try_init();
}
