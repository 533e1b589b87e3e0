//! The forwarding header rules on arbitrary request and response heads: nothing panics, no
//! hop-by-hop header reaches the other side, and the forwarding headers always name the
//! client.
#![no_main]

use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use proxy::headers::{prepare_request, prepare_response, Peer};

/// `name: value` lines; lines that are not a valid header are skipped, as hyper would refuse
/// them before the proxy saw them.
fn head(text: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for line in text.lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.trim().as_bytes()),
            HeaderValue::from_str(value.trim()),
        ) {
            headers.append(name, value);
        }
    }
    headers
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let (host, lines) = text.split_once('\n').unwrap_or((&text, ""));
    let client = Peer::new(
        ([192, 0, 2, flags], 40000).into(),
        flags & 1 == 1,
        flags & 2 == 2,
    );
    let mut headers = head(lines);
    // The host comes from a `Host` header or an `:authority`, both already valid values.
    let host = HeaderValue::from_str(host).ok().filter(|_| !host.is_empty());
    prepare_request(&mut headers, &client, host.as_ref(), "1.1", || {
        HeaderValue::from_static("id")
    });
    for hop in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "upgrade",
        "transfer-encoding",
    ] {
        assert!(!headers.contains_key(hop), "{hop} forwarded");
    }
    let xff = headers["x-forwarded-for"].to_str().unwrap_or("");
    assert!(xff.ends_with(&client.peer.ip().to_string()), "{xff}");
    assert!(headers.contains_key("x-request-id") && headers.contains_key("forwarded"));

    let mut response = head(lines);
    prepare_response(&mut response, "1.1");
    assert!(!response.contains_key("connection") && !response.contains_key("keep-alive"));
});
