//! HTTP handlers, one module per resource.

pub mod courses;
pub mod health;
pub mod web;
