//! The web page at `/`: three static files compiled into the binary (`course-service/web/`),
//! served with a strong ETag from their content so a browser revalidates with a cheap 304,
//! and a Content-Security-Policy that allows only this origin's script and style.

use std::sync::LazyLock;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::courses::if_none_match;

/// One file of the page.
struct Asset {
    body: &'static [u8],
    content_type: &'static str,
    etag: HeaderValue,
}

impl Asset {
    fn new(body: &'static [u8], content_type: &'static str) -> Asset {
        let etag = format!("\"{:016x}\"", fnv1a(body));
        Asset {
            body,
            content_type,
            etag: HeaderValue::from_str(&etag).expect("hex digits are a valid header value"),
        }
    }

    fn respond(&self, headers: &HeaderMap) -> Response {
        let etag = self.etag.to_str().unwrap_or_default();
        let mut res = if if_none_match(headers, etag) {
            StatusCode::NOT_MODIFIED.into_response()
        } else {
            let mut res = self.body.into_response();
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(self.content_type),
            );
            res
        };
        let h = res.headers_mut();
        h.insert(header::ETAG, self.etag.clone());
        // Kept by the browser, revalidated on every use: a new build shows at once.
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        );
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        res
    }
}

/// Script, style, fetches and form posts from this origin only; no plugins, no framing.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; object-src 'none'; base-uri 'none'; \
     frame-ancestors 'none'; form-action 'self'";

/// FNV-1a: a content fingerprint for the ETag, computed once per file.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

static INDEX: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        include_bytes!("../../web/index.html"),
        "text/html; charset=utf-8",
    )
});
static SCRIPT: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        include_bytes!("../../web/app.js"),
        "text/javascript; charset=utf-8",
    )
});
static STYLE: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        include_bytes!("../../web/app.css"),
        "text/css; charset=utf-8",
    )
});

/// `GET /`: the page.
pub async fn index(headers: HeaderMap) -> Response {
    INDEX.respond(&headers)
}

/// `GET /static/app.js`.
pub async fn script(headers: HeaderMap) -> Response {
    SCRIPT.respond(&headers)
}

/// `GET /static/app.css`.
pub async fn style(headers: HeaderMap) -> Response {
    STYLE.respond(&headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_file_has_its_own_etag_and_a_matching_request_gets_304() {
        let etags = [&INDEX.etag, &SCRIPT.etag, &STYLE.etag];
        assert_ne!(etags[0], etags[1]);
        assert_ne!(etags[1], etags[2]);

        let mut headers = HeaderMap::new();
        assert_eq!(INDEX.respond(&headers).status(), StatusCode::OK);
        headers.insert(header::IF_NONE_MATCH, SCRIPT.etag.clone());
        assert_eq!(INDEX.respond(&headers).status(), StatusCode::OK);
        assert_eq!(SCRIPT.respond(&headers).status(), StatusCode::NOT_MODIFIED);
    }
}
