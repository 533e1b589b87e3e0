//! The one error type of the HTTP API. Every status code and problem body is decided here
//! (RFC 9457 `application/problem+json`), so handlers just return `Err(ApiError::…)`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::model::FieldError;
use crate::store::StoreError;

pub const PROBLEM_JSON: &str = "application/problem+json";
/// Seconds a client should wait before retrying when the database is unreachable.
pub const RETRY_AFTER_SECS: u32 = 5;

/// Everything the API can refuse a request for.
#[derive(Debug)]
pub enum ApiError {
    /// 400: a malformed body, query string or id.
    BadRequest(String),
    /// 422: well-formed, but breaks the course rules; lists every broken rule.
    Validation(Vec<FieldError>),
    /// 401: a write without credentials.
    Unauthorized,
    /// 403: wrong credentials, or writes disabled on this server.
    Forbidden(String),
    /// 404.
    NotFound(String),
    /// 405.
    MethodNotAllowed,
    /// 409: a duplicate slug or title, or a concurrent modification.
    Conflict(String),
    /// 412: `If-Match` does not match the current version.
    PreconditionFailed(String),
    /// 413: the body is larger than the configured limit (bytes).
    PayloadTooLarge(usize),
    /// 415: a body that is not JSON.
    UnsupportedMediaType,
    /// 503: the database is unreachable or too slow; try again later.
    Unavailable(String),
    /// 500: a bug or an unexpected database answer; details are logged, not shown.
    Internal(String),
}

/// An RFC 9457 problem: what every refused request gets, as `application/problem+json`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Problem<'a> {
    /// A stable, machine-readable problem type (`urn:microcourses:problem:validation`).
    #[serde(rename = "type")]
    kind: &'a str,
    title: &'a str,
    status: u16,
    /// What went wrong and what to do about it.
    detail: String,
    /// Every broken rule (validation problems only).
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<&'a [FieldError]>,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A stable, machine-readable problem type.
    fn kind(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "urn:microcourses:problem:bad-request",
            ApiError::Validation(_) => "urn:microcourses:problem:validation",
            ApiError::Unauthorized => "urn:microcourses:problem:unauthorized",
            ApiError::Forbidden(_) => "urn:microcourses:problem:forbidden",
            ApiError::NotFound(_) => "urn:microcourses:problem:not-found",
            ApiError::MethodNotAllowed => "urn:microcourses:problem:method-not-allowed",
            ApiError::Conflict(_) => "urn:microcourses:problem:conflict",
            ApiError::PreconditionFailed(_) => "urn:microcourses:problem:precondition-failed",
            ApiError::PayloadTooLarge(_) => "urn:microcourses:problem:payload-too-large",
            ApiError::UnsupportedMediaType => "urn:microcourses:problem:unsupported-media-type",
            ApiError::Unavailable(_) => "urn:microcourses:problem:unavailable",
            ApiError::Internal(_) => "urn:microcourses:problem:internal",
        }
    }

    /// What a person should know or do, in a sentence.
    fn detail(&self) -> String {
        match self {
            ApiError::BadRequest(m)
            | ApiError::Forbidden(m)
            | ApiError::NotFound(m)
            | ApiError::Conflict(m)
            | ApiError::PreconditionFailed(m) => m.clone(),
            ApiError::Validation(errors) => {
                let fields: Vec<_> = errors.iter().map(|e| e.field).collect();
                format!(
                    "the course breaks {} rule(s); fix the fields listed in `errors`: {}",
                    errors.len(),
                    fields.join(", ")
                )
            }
            ApiError::Unauthorized => {
                "writes need `Authorization: Bearer <admin token>` (the MC_ADMIN_TOKEN the \
                 server runs with)"
                    .into()
            }
            ApiError::MethodNotAllowed => "this resource does not support that method".into(),
            ApiError::PayloadTooLarge(limit) => {
                format!("the request body is larger than the {limit}-byte limit")
            }
            ApiError::UnsupportedMediaType => {
                "send the body as JSON with `Content-Type: application/json`".into()
            }
            ApiError::Unavailable(_) => format!(
                "the course database is unreachable right now; retry in {RETRY_AFTER_SECS} s"
            ),
            ApiError::Internal(_) => "an unexpected error occurred; it has been logged".into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        match &self {
            ApiError::Internal(cause) => tracing::error!(%cause, "internal error"),
            ApiError::Unavailable(cause) => tracing::warn!(%cause, "database unavailable"),
            _ => {}
        }
        let errors = match &self {
            ApiError::Validation(e) => Some(e.as_slice()),
            _ => None,
        };
        let body = Problem {
            kind: self.kind(),
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail: self.detail(),
            errors,
        };
        let json = serde_json::to_vec(&body).unwrap_or_default();
        let mut res = (status, json).into_response();
        let headers = res.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        match self {
            ApiError::Unauthorized => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"microcourses\""),
                );
            }
            ApiError::Unavailable(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
            }
            _ => {}
        }
        res
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Duplicate { field, value } => ApiError::Conflict(format!(
                "a course with {field} `{value}` already exists; choose another {field}"
            )),
            StoreError::Unavailable(cause) => ApiError::Unavailable(cause),
            StoreError::Other(cause) => ApiError::Internal(cause),
        }
    }
}
