//! `/healthz`, `/readyz`, `/metrics`.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use shared::health::{Check, Report, Status};

use crate::app::AppState;

/// Alive: answers without touching any dependency. A draining instance says 503, so a load
/// balancer's checks take it out while it finishes what it has.
pub async fn healthz(State(state): State<AppState>) -> Response {
    if state.is_draining() {
        return draining();
    }
    (StatusCode::OK, Json(Report::alive())).into_response()
}

fn draining() -> Response {
    let report = Report::from_checks(vec![Check {
        name: "draining".into(),
        status: Status::Unavailable,
        error: Some("shutting down: finishing requests in flight".into()),
    }]);
    (StatusCode::SERVICE_UNAVAILABLE, Json(report)).into_response()
}

/// Ready: the database answers a ping within the readiness deadline, the indexes exist and
/// the read model is loaded (and the instance is not draining).
pub async fn readyz(State(state): State<AppState>) -> Response {
    if state.is_draining() {
        return draining();
    }
    let mongodb = match state.store.ping(state.ready_timeout).await {
        Ok(()) => Check {
            name: "mongodb".into(),
            status: Status::Ok,
            error: None,
        },
        Err(e) => Check {
            name: "mongodb".into(),
            status: Status::Unavailable,
            error: Some(e.to_string()),
        },
    };
    let indexes = Check {
        name: "indexes".into(),
        status: if state.indexes_ready() {
            Status::Ok
        } else {
            Status::Unavailable
        },
        error: (!state.indexes_ready()).then(|| "not created yet; retrying".into()),
    };
    let read_model = Check {
        name: "read_model".into(),
        status: if state.model.has_followed() {
            Status::Ok
        } else {
            Status::Unavailable
        },
        error: (!state.model.has_followed()).then(|| "loading the catalogue into memory".into()),
    };
    let report = Report::from_checks(vec![mongodb, indexes, read_model]);
    let status = StatusCode::from_u16(report.http_status()).unwrap_or(StatusCode::OK);
    (status, Json(report)).into_response()
}

/// Prometheus text exposition.
pub async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}
