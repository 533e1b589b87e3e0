//! What both MicroCourses binaries (`proxy` and `course-service`) need, and nothing else.
//!
//! - [`telemetry`]: one way to set up `tracing` logs, driven by `RUST_LOG`.
//! - [`shutdown`]: the SIGTERM/SIGINT future every server awaits before draining.
//! - [`health`]: the `/healthz` and `/readyz` vocabulary shared by the service and the
//!   proxy's health checker.
//! - [`config`]: reading a TOML file into typed, validated structs, with errors that name the
//!   file, line, column and field.
//!
//! A thing goes here only when both sides use it; this is not a junk drawer.

pub mod config;
pub mod health;
pub mod shutdown;
pub mod telemetry;
