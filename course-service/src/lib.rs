//! course-service: the MicroCourses catalogue as a stateless HTTP service.
//!
//! Start reading at [`server::run`] (what `course-service serve` does), then [`app::router`]
//! for the routes and [`routes::courses`] for the handlers. Input is checked at the edge by
//! [`extract`] (auth, body) and [`query`] (listing parameters), against the rules in
//! [`model`]; [`store`] is the only module that talks to MongoDB; [`error`] decides every
//! error status. [`routes::web`] serves the web page (the files of `web/`, compiled in).
//! [`cluster`] runs and supervises N instances; [`seed`] loads the catalogue; [`backup`]
//! exports and imports it.

pub mod app;
pub mod backup;
pub mod cache;
pub mod cluster;
pub mod config;
pub mod error;
pub mod extract;
pub mod metrics;
pub mod model;
pub mod openapi;
pub mod query;
pub mod readmodel;
pub mod routes;
pub mod seed;
pub mod server;
pub mod store;
