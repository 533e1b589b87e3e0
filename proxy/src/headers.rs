//! Header rules of a forwarding proxy (RFC 9110 §7.6), as pure functions over `HeaderMap`.
//!
//! Requests: drop hop-by-hop headers (Connection and every header it names, Keep-Alive,
//! Proxy-Connection, TE except `trailers`, Transfer-Encoding, Upgrade), then say who the client
//! was: `X-Forwarded-For/-Proto/-Host` and `Forwarded` (RFC 7239) are appended to when the
//! peer is a trusted proxy and replaced otherwise, so a client cannot forge its address. `Via`
//! is appended, and an `X-Request-Id` is added when absent. Responses: hop-by-hop headers are
//! dropped and `Via` appended.

use std::net::{IpAddr, SocketAddr};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// The name this proxy gives itself in `Via`.
pub const VIA_NAME: &str = "microcourses";

/// What the proxy knows about the client connection a request came in on, with the values
/// every request of the connection sends worked out once.
#[derive(Debug, Clone)]
pub struct Peer {
    pub peer: SocketAddr,
    /// `true` when the request arrived over TLS.
    pub tls: bool,
    /// Whether the peer is a trusted proxy whose forwarding headers are kept.
    pub trusted: bool,
    /// The client's address as `X-Forwarded-For` writes it.
    ip_value: HeaderValue,
    /// The client's address as a `Forwarded` node (IPv6 quoted and bracketed).
    node: String,
}

impl Peer {
    pub fn new(peer: SocketAddr, tls: bool, trusted: bool) -> Peer {
        let ip = canonical(peer.ip());
        let text = ip.to_string();
        let node = match ip {
            IpAddr::V4(_) => text.clone(),
            IpAddr::V6(_) => format!("\"[{text}]\""),
        };
        Peer {
            peer,
            tls,
            trusted,
            ip_value: HeaderValue::from_maybe_shared(bytes::Bytes::from(text))
                .expect("an IP address is a valid header value"),
            node,
        }
    }

    pub fn proto(&self) -> &'static str {
        if self.tls {
            "https"
        } else {
            "http"
        }
    }
}

/// Whether `ip` is inside one of `trusted`.
pub fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    let ip = canonical(ip);
    trusted.iter().any(|net| net.contains(&ip))
}

/// IPv4-mapped IPv6 (`::ffff:1.2.3.4`, as a dual-stack socket reports) as plain IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Whether `name` is hop-by-hop whatever `Connection` says.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TE
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
        || name == header::PROXY_AUTHENTICATE
        || name == header::TRAILER
        || name == KEEP_ALIVE
        || name == PROXY_CONNECTION
}

/// Removes the hop-by-hop headers of `headers`, keeping `TE: trailers` on requests.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_te_trailers: bool) {
    // The common case, one pass over the names: nothing to remove (headers named by
    // Connection can only be there if Connection is).
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    // Headers named by Connection are hop-by-hop too (collect first: can't borrow while removing).
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    let te_trailers = keep_te_trailers
        && headers
            .get_all(header::TE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("trailers"));
    for name in [
        &header::CONNECTION,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &header::TE,
        &header::TRANSFER_ENCODING,
        &header::UPGRADE,
        &header::PROXY_AUTHENTICATE,
        &header::TRAILER,
    ] {
        headers.remove(name);
    }
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// Rewrites a request's headers for the upstream. `host` is the authority the client asked
/// for (`Host`, or the `:authority` of HTTP/2); `version` is the client's protocol version
/// as `Via` writes it (`1.1`, `2`); `new_request_id` makes an id when the client sent none.
///
/// This runs on every request: the common case (no forwarding headers from the client)
/// formats nothing and allocates only the `Forwarded` value and the request id.
pub fn prepare_request(
    headers: &mut HeaderMap,
    client: &Peer,
    host: Option<&HeaderValue>,
    version: &'static str,
    new_request_id: impl FnOnce() -> HeaderValue,
) {
    strip_hop_by_hop(headers, true);
    // Room for what is added below, in one step.
    headers.reserve(6);

    let xff = match client
        .trusted
        .then(|| joined(headers, &X_FORWARDED_FOR))
        .flatten()
    {
        Some(prior) => value(&format!("{prior}, {}", client.node_ip())),
        None => Some(client.ip_value.clone()),
    };
    if let Some(xff) = xff {
        headers.insert(&X_FORWARDED_FOR, xff);
    }

    if !(client.trusted && headers.contains_key(&X_FORWARDED_PROTO)) {
        headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static(client.proto()));
    }
    if !(client.trusted && headers.contains_key(&X_FORWARDED_HOST)) {
        match host {
            Some(h) => {
                headers.insert(&X_FORWARDED_HOST, h.clone());
            }
            None => {
                headers.remove(&X_FORWARDED_HOST);
            }
        }
    }

    let mut element = String::with_capacity(64);
    element.push_str("for=");
    element.push_str(&client.node);
    if let Some(h) = host.and_then(|h| h.to_str().ok()) {
        element.push_str(";host=");
        push_forwarded_value(&mut element, h);
    }
    element.push_str(";proto=");
    element.push_str(client.proto());
    let forwarded = match client
        .trusted
        .then(|| joined(headers, &header::FORWARDED))
        .flatten()
    {
        Some(prior) => value(&format!("{prior}, {element}")),
        None => HeaderValue::from_maybe_shared(bytes::Bytes::from(element)).ok(),
    };
    if let Some(forwarded) = forwarded {
        headers.insert(header::FORWARDED, forwarded);
    }

    append_via(headers, version);
    if !headers.contains_key(&X_REQUEST_ID) {
        headers.insert(&X_REQUEST_ID, new_request_id());
    }
}

impl Peer {
    /// The client's address as text (for appending to a trusted `X-Forwarded-For`).
    fn node_ip(&self) -> &str {
        self.ip_value.to_str().unwrap_or("")
    }
}

/// Rewrites a response's headers for the client.
pub fn prepare_response(headers: &mut HeaderMap, version: &'static str) {
    strip_hop_by_hop(headers, false);
    append_via(headers, version);
}

fn append_via(headers: &mut HeaderMap, version: &'static str) {
    if headers.contains_key(header::VIA) {
        if let Some(v) = joined(headers, &header::VIA)
            .and_then(|prior| value(&format!("{prior}, {version} {VIA_NAME}")))
        {
            headers.insert(header::VIA, v);
        }
        return;
    }
    // The common case, without formatting: one of a few fixed values.
    let value = match version {
        "2" => HeaderValue::from_static("2 microcourses"),
        "1.0" => HeaderValue::from_static("1.0 microcourses"),
        "3" => HeaderValue::from_static("3 microcourses"),
        _ => HeaderValue::from_static("1.1 microcourses"),
    };
    headers.insert(header::VIA, value);
}

/// All values of `name` joined with ", " (how repeated list headers combine).
fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let values: Vec<&str> = headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    (!values.is_empty()).then(|| values.join(", "))
}

/// A header value from text, `None` if the text cannot be one.
fn value(text: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(text).ok()
}

/// Appends `value` as a token, or as a quoted-string when it is not one (`host:port`).
fn push_forwarded_value(out: &mut String, value: &str) {
    if is_token(value) {
        out.push_str(value);
        return;
    }
    out.push('"');
    if !value.contains(['"', '\\']) {
        out.push_str(value);
    } else {
        for c in value.chars() {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
    }
    out.push('"');
}

/// Whether `s` may appear unquoted as a `Forwarded` value.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A fresh request id: 128 random bits as 32 hex digits.
pub fn request_id(rng: &mut fastrand::Rng) -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bits = rng.u128(..);
    let mut text = [0u8; 32];
    for (i, digit) in text.iter_mut().enumerate() {
        *digit = HEX[((bits >> (124 - 4 * i)) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&text).expect("hex digits are a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(ip: &str, trusted: bool, tls: bool) -> Peer {
        Peer::new(SocketAddr::new(ip.parse().unwrap(), 5555), tls, trusted)
    }

    fn host(h: &str) -> Option<HeaderValue> {
        Some(HeaderValue::from_str(h).unwrap())
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn get<'a>(h: &'a HeaderMap, k: &str) -> Option<&'a str> {
        h.get(k).map(|v| v.to_str().unwrap())
    }

    #[test]
    fn hop_by_hop_headers_go_including_those_connection_names() {
        let mut h = headers(&[
            ("connection", "keep-alive, X-Secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("te", "trailers, deflate"),
            ("accept", "*/*"),
        ]);
        strip_hop_by_hop(&mut h, true);
        let names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["accept", "te"]);
        assert_eq!(get(&h, "te"), Some("trailers"));

        let mut h = headers(&[("te", "gzip")]);
        strip_hop_by_hop(&mut h, true);
        assert!(h.is_empty());
    }

    #[test]
    fn an_untrusted_client_cannot_forge_its_address() {
        let mut h = headers(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
            ("forwarded", "for=1.2.3.4"),
        ]);
        let c = client("203.0.113.7", false, false);
        prepare_request(&mut h, &c, host("shop.example").as_ref(), "1.1", || {
            HeaderValue::from_static("id")
        });
        assert_eq!(get(&h, "x-forwarded-for"), Some("203.0.113.7"));
        assert_eq!(get(&h, "x-forwarded-proto"), Some("http"));
        assert_eq!(get(&h, "x-forwarded-host"), Some("shop.example"));
        assert_eq!(
            get(&h, "forwarded"),
            Some("for=203.0.113.7;host=shop.example;proto=http")
        );
        assert_eq!(get(&h, "via"), Some("1.1 microcourses"));
        assert_eq!(get(&h, "x-request-id"), Some("id"));
    }

    #[test]
    fn a_trusted_proxy_chain_is_appended_to() {
        let mut h = headers(&[
            ("x-forwarded-for", "198.51.100.1"),
            ("x-forwarded-for", "10.0.0.2"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "shop.example"),
            ("forwarded", "for=198.51.100.1"),
            ("via", "1.1 edge"),
            ("x-request-id", "abc"),
        ]);
        let c = client("::1", true, true);
        prepare_request(&mut h, &c, host("internal:8080").as_ref(), "2", || {
            HeaderValue::from_static("new")
        });
        assert_eq!(
            get(&h, "x-forwarded-for"),
            Some("198.51.100.1, 10.0.0.2, ::1")
        );
        assert_eq!(get(&h, "x-forwarded-proto"), Some("https"));
        assert_eq!(get(&h, "x-forwarded-host"), Some("shop.example"));
        assert_eq!(
            get(&h, "forwarded"),
            Some("for=198.51.100.1, for=\"[::1]\";host=\"internal:8080\";proto=https")
        );
        assert_eq!(get(&h, "via"), Some("1.1 edge, 2 microcourses"));
        assert_eq!(get(&h, "x-request-id"), Some("abc"));
    }

    #[test]
    fn trust_is_by_cidr_and_understands_mapped_ipv4() {
        let nets: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        assert!(is_trusted("10.1.2.3".parse().unwrap(), &nets));
        assert!(is_trusted("::ffff:10.1.2.3".parse().unwrap(), &nets));
        assert!(!is_trusted("11.0.0.1".parse().unwrap(), &nets));
    }

    #[test]
    fn responses_lose_hop_by_hop_and_gain_via() {
        let mut h = headers(&[("connection", "close"), ("content-type", "text/plain")]);
        prepare_response(&mut h, "1.1");
        assert_eq!(get(&h, "connection"), None);
        assert_eq!(get(&h, "via"), Some("1.1 microcourses"));
    }

    #[test]
    fn preformatted_via_values_match_the_formatted_ones() {
        for version in ["1.0", "1.1", "2", "3"] {
            let mut h = HeaderMap::new();
            append_via(&mut h, version);
            assert_eq!(
                get(&h, "via").map(str::to_string),
                Some(format!("{version} {VIA_NAME}"))
            );
        }
    }

    #[test]
    fn request_ids_are_32_hex_digits() {
        let mut rng = fastrand::Rng::with_seed(3);
        let id = request_id(&mut rng);
        assert_eq!(id.len(), 32);
        assert!(id.as_bytes().iter().all(u8::is_ascii_hexdigit));
        assert_ne!(id, request_id(&mut rng));
        let mut rng = fastrand::Rng::with_seed(3);
        assert_eq!(
            id.to_str().unwrap(),
            format!("{:032x}", rng.u128(..)),
            "the digits are the number's, most significant first"
        );
    }

    // The property of `fuzz/fuzz_targets/forward_headers.rs`, on stable in every test run.
    proptest::proptest! {
        #[test]
        fn any_head_loses_its_hop_by_hop_headers_and_names_the_client(
            pairs in proptest::collection::vec(
                ("(?i)(connection|keep-alive|te|upgrade|x-forwarded-for|forwarded|via|x-request-id|[a-z-]{1,12})",
                 "[ -~]{0,40}"),
                0..12,
            ),
            host in proptest::option::of("[ -~]{0,40}"),
            trusted: bool,
            tls: bool,
        ) {
            let mut h = HeaderMap::new();
            for (k, v) in &pairs {
                if let (Ok(k), Ok(v)) = (HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(v)) {
                    h.append(k, v);
                }
            }
            let peer = client("192.0.2.7", trusted, tls);
            let mut response = h.clone();
            let host = host.and_then(|h| HeaderValue::from_str(&h).ok());
            prepare_request(&mut h, &peer, host.as_ref(), "1.1", || HeaderValue::from_static("id"));
            for hop in ["connection", "keep-alive", "proxy-connection", "upgrade", "transfer-encoding"] {
                proptest::prop_assert!(!h.contains_key(hop), "{} forwarded", hop);
            }
            proptest::prop_assert!(get(&h, "x-forwarded-for").unwrap().ends_with("192.0.2.7"));
            proptest::prop_assert!(h.contains_key("forwarded") && h.contains_key("x-request-id"));
            prepare_response(&mut response, "1.1");
            proptest::prop_assert!(!response.contains_key("connection") && !response.contains_key("keep-alive"));
        }
    }
}
