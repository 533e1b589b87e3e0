//! Request extractors: they parse and check, so handlers only ever see valid input.
//!
//! - [`AdminAuth`]: the bearer token, compared in constant time.
//! - [`JsonBody`]: a JSON body with the right content type, under the size limit, with no
//!   unknown fields.
//! - [`IfMatch`]: the optimistic-concurrency precondition.

use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{header, request::Parts, HeaderMap};
use subtle::ConstantTimeEq;

use crate::app::AppState;
use crate::error::ApiError;
use crate::model::FromJson;

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

/// A JSON request body read into `T`: a body that is not JSON at all is a 400; JSON whose
/// fields are missing, mistyped, unknown or break a rule is a 422 listing every problem.
pub struct JsonBody<T>(pub T);

impl<T: FromJson> FromRequest<AppState> for JsonBody<T> {
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
        let value: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))?;
        T::from_json(value)
            .map(JsonBody)
            .map_err(ApiError::Validation)
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

    /// Parses `If-Match` (RFC 9110 §13.1.1). Our tags are strong, `"v<version>"`; any other
    /// well-formed entity-tag (`"999"`, a weak `W/"v3"`) can never match by the strong
    /// comparison `If-Match` uses, so it is kept out of the list and the precondition fails
    /// (412). Only a value that is not an entity-tag list at all is a 400.
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
                let (weak, opaque) = match tag.strip_prefix("W/") {
                    Some(rest) => (true, rest),
                    None => (false, tag),
                };
                let inner = opaque
                    .strip_prefix('"')
                    .and_then(|t| t.strip_suffix('"'))
                    .filter(|t| t.bytes().all(is_etagc))
                    .ok_or_else(bad_if_match)?;
                let ours = inner
                    .strip_prefix('v')
                    .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|n| n.parse::<i64>().ok());
                if let (false, Some(version)) = (weak, ours) {
                    versions.push(version);
                }
            }
        }
        Ok(match (present, any) {
            (false, _) => IfMatch::None,
            (true, true) => IfMatch::Any,
            (true, false) => IfMatch::Versions(versions),
        })
    }
}

/// A character of an opaque entity-tag (RFC 9110 §8.8.3: `%x21 / %x23-7E / obs-text`).
fn is_etagc(b: u8) -> bool {
    b == 0x21 || (0x23..=0x7e).contains(&b) || b >= 0x80
}

fn bad_if_match() -> ApiError {
    ApiError::BadRequest(
        "If-Match must be `*` or a list of entity-tags, e.g. `\"v3\"` (the ETag of the course \
         you read)"
            .into(),
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
        // Well-formed tags that are not ours never match: a failed precondition, not a 400.
        for foreign in ["\"999\"", "W/\"v3\"", "\"v\"", "\"v-1\"", "\"\""] {
            let m = if_match(foreign).unwrap();
            assert!(!m.matches(3) && m.single().is_none(), "{foreign}");
        }
        assert_eq!(if_match("\"x\", \"v4\"").unwrap().single(), Some(4));
        for malformed in ["3", "v3", "\"v3", "W/v3", "\"a\"b\""] {
            assert!(if_match(malformed).is_err(), "{malformed}");
        }
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
