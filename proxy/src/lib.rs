//! The MicroCourses proxy: a Layer-7 load-balancing reverse proxy on tokio and rustls, with
//! its own HTTP/1.1 on both sides (the hot path) and hyper for HTTP/2 clients.
//!
//! Start at [`server::run`] (listeners, workers, connections), then [`front::http1::serve`]
//! (one client connection) and [`forward::Proxy::forward`] (the request path, phase by
//! phase). [`wire`] is HTTP/1.1 on the wire, pure; [`headers`] the forwarding rules over raw
//! fields; [`upstream`] the per-worker upstream connections; [`balance`] the load-balancing
//! library, independent of HTTP; [`topology`] turns `upstreams.toml` into pools and routes
//! swapped through `ArcSwap`; [`config`] parses and validates both files; [`body`] the
//! streaming body types; [`admin`], [`metrics`] and [`access_log`] the operator's view; [`tls`] the rustls
//! set-up; [`tunnel`] upgraded connections; [`upgrade`] the binary
//! replacing itself without losing a connection; [`fds`] the open-files limit and descriptor table, sized at start-up.

pub mod access_log;
pub mod admin;
pub mod balance;
pub mod batch;
pub mod body;
pub mod checker;
pub mod config;
pub mod fds;
pub mod forward;
pub mod front;
pub mod headers;
pub mod metrics;
pub mod reload;
pub mod retry;
pub mod server;
pub mod tls;
pub mod topology;
pub mod tunnel;
pub mod upgrade;
pub mod upstream;
pub mod wire;
