//! What more than one MicroCourses crate needs (the `proxy` and `course-service` binaries, the
//! bench harness), and nothing else.
//!
//! - [`telemetry`]: one way to set up `tracing` logs, driven by `RUST_LOG`.
//! - [`shutdown`]: the SIGTERM/SIGINT future every server awaits before draining.
//! - [`health`]: the `/healthz` and `/readyz` vocabulary shared by the service and the
//!   proxy's health checker.
//! - [`config`]: reading a TOML file into typed, validated structs, with errors that name the
//!   file, line, column and field.
//! - [`testbed`]: for the tests and the bench harness that start real processes: free
//!   loopback ports below the ephemeral range, and the workspace's binaries.
//!
//! A thing goes here only when more than one crate uses it; this is not a junk drawer.

pub mod config;
pub mod health;
pub mod shutdown;
pub mod telemetry;
pub mod testbed;
