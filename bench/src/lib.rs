//! The MicroCourses benchmark harness: starts synthetic upstreams and each system under test
//! (our proxy; HAProxy and nginx when installed) as separate processes on loopback, drives
//! open-loop load, and reports latency percentiles, failures and CPU per request.
//!
//! [`scenarios`] holds the named runs ([`deploy`] the deploy drill, [`catalogue`] reads at
//! scale while writes flow); [`load`] the open-loop generator; [`systems`] the
//! generated configs and processes; [`upstream`] the synthetic upstreams; [`report`] the
//! Markdown and JSON output; [`reaper`] stops every child on any signal.

pub mod catalogue;
pub mod deploy;
pub mod load;
pub mod paced;
pub mod plot;
pub mod reaper;
pub mod report;
pub mod scenarios;
pub mod service;
pub mod systems;
pub mod upstream;
