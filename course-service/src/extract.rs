//! Request extractors: they parse and check, so handlers only ever see valid input.
//!
//! - [`AdminAuth`]: the bearer token, compared in constant time.
//! - [`JsonBody`]: a JSON body with the right content type, under the size limit, with no
//!   unknown fields.
//! - [`IfMatch`]: the optimistic-concurrency precondition.

use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{header, request::Parts, HeaderMap};
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq;

use crate::app::AppState;
use crate::error::ApiError;

/// Proof that the request carries the admin token. Take it as a handler argument to make the
/// route admin-only.
pub struct AdminAuth;

impl FromRequestParts<AppState> for AdminAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(expected) = state.admin_token.as_deref() else {
            return Err(ApiError::Forbidden(
                "writes are disabled: this server runs without MC_ADMIN_TOKEN".into(),
            ));
        };
        let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
            return Err(ApiError::Unauthorized);
        };
        let presented = value
            .to_str()
            .ok()
            .and_then(|v| {
                let (scheme, token) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .ok_or(ApiError::Unauthorized)?;
        if bool::from(presented.as_bytes().ct_eq(expected.as_bytes())) {
            Ok(AdminAuth)
        } else {
            Err(ApiError::Forbidden("the admin token is not valid".into()))
        }
    }
}

/// A JSON request body parsed into `T`.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        if !is_json(req.headers()) {
            return Err(ApiError::UnsupportedMediaType);
        }
        let limit = state.max_body_bytes;
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(ApiError::PayloadTooLarge(limit));
        }
        let bytes = axum::body::to_bytes(Body::new(req.into_body()), limit)
            .await
            .map_err(|e| {
                if is_length_limit(&e) {
                    ApiError::PayloadTooLarge(limit)
                } else {
                    ApiError::BadRequest(format!("could not read the request body: {e}"))
                }
            })?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
    }
}

fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = err.source();
    }
    false
}

fn is_json(headers: &HeaderMap) -> bool {
    let Some(ct) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mime = ct.split(';').next().unwrap_or("").trim();
    mime.eq_ignore_ascii_case("application/json")
        || (mime.len() > 5 && mime[mime.len() - 5..].eq_ignore_ascii_case("+json"))
}

/// The `If-Match` precondition: `None` when absent, `Any` for `*`, else the versions listed.
#[derive(Debug, PartialEq, Eq)]
pub enum IfMatch {
    None,
    Any,
    Versions(Vec<i64>),
}

impl IfMatch {
    /// Whether a course at `version` satisfies the precondition.
    pub fn matches(&self, version: i64) -> bool {
        match self {
            IfMatch::None | IfMatch::Any => true,
            IfMatch::Versions(vs) => vs.contains(&version),
        }
    }

    /// The version a write must be conditioned on, when the client named exactly one.
    pub fn single(&self) -> Option<i64> {
        match self {
            IfMatch::Versions(vs) if vs.len() == 1 => Some(vs[0]),
            _ => None,
        }
    }

    pub fn parse(headers: &HeaderMap) -> Result<IfMatch, ApiError> {
        let mut versions = Vec::new();
        let mut any = false;
        let mut present = false;
        for value in headers.get_all(header::IF_MATCH) {
            present = true;
            let text = value.to_str().map_err(|_| bad_if_match())?;
            for tag in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                if tag == "*" {
                    any = true;
                    continue;
                }
                // A weak tag never matches for If-Match (RFC 9110 §13.1.1: strong comparison).
                let version = tag
                    .strip_prefix("\"v")
                    .and_then(|t| t.strip_suffix('"'))
                    .and_then(|t| t.parse::<i64>().ok())
                    .ok_or_else(bad_if_match)?;
                versions.push(version);
            }
        }
        Ok(match (present, any) {
            (false, _) => IfMatch::None,
            (true, true) => IfMatch::Any,
            (true, false) => IfMatch::Versions(versions),
        })
    }
}

fn bad_if_match() -> ApiError {
    ApiError::BadRequest(
        "If-Match must be `*` or the ETag of the course you read, e.g. `\"v3\"`".into(),
    )
}

impl FromRequestParts<AppState> for IfMatch {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, ApiError> {
        IfMatch::parse(&parts.headers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn if_match(v: &str) -> Result<IfMatch, ApiError> {
        let mut h = HeaderMap::new();
        h.insert(header::IF_MATCH, HeaderValue::from_str(v).unwrap());
        IfMatch::parse(&h)
    }

    #[test]
    fn if_match_forms() {
        assert_eq!(IfMatch::parse(&HeaderMap::new()).unwrap(), IfMatch::None);
        assert_eq!(if_match("*").unwrap(), IfMatch::Any);
        assert_eq!(if_match("\"v3\"").unwrap().single(), Some(3));
        assert!(if_match("\"v3\", \"v4\"").unwrap().matches(4));
        assert!(!if_match("\"v3\"").unwrap().matches(4));
        assert!(if_match("W/\"v3\"").is_err());
        assert!(if_match("3").is_err());
    }

    #[test]
    fn json_content_types() {
        let mut h = HeaderMap::new();
        assert!(!is_json(&h));
        for (ct, ok) in [
            ("application/json", true),
            ("application/json; charset=utf-8", true),
            ("Application/JSON", true),
            ("application/merge-patch+json", true),
            ("text/plain", false),
            ("application/x-www-form-urlencoded", false),
        ] {
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
            assert_eq!(is_json(&h), ok, "{ct}");
        }
    }
}
