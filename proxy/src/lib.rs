//! The MicroCourses proxy: a Layer-7 load-balancing reverse proxy on hyper.
//!
//! Start at [`server::run`] (listeners and connections), then [`forward::Proxy::handle`] (the
//! request path, phase by phase). [`balance`] is the load-balancing library, independent of
//! hyper; [`topology`] turns `upstreams.toml` into pools and routes swapped through `ArcSwap`;
//! [`config`] parses and validates both files; [`headers`] holds the forwarding header rules;
//! [`body`] the streaming body types; [`conn`] the request-head deadline (408); [`admin`] and [`metrics`] the operator's view; [`tls`]
//! the rustls set-up.

pub mod admin;
pub mod balance;
pub mod body;
pub mod checker;
pub mod config;
pub mod forward;
pub mod front;
pub mod headers;
pub mod metrics;
pub mod reload;
pub mod retry;
pub mod server;
pub mod tls;
pub mod topology;
pub mod upstream;
pub mod wire;
