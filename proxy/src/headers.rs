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

/// What the proxy knows about the client connection a request came in on.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub peer: SocketAddr,
    /// `true` when the request arrived over TLS.
    pub tls: bool,
    /// Whether the peer is a trusted proxy whose forwarding headers are kept.
    pub trusted: bool,
}

impl Peer {
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

/// Removes the hop-by-hop headers of `headers`, keeping `TE: trailers` on requests.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_te_trailers: bool) {
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
pub fn prepare_request(
    headers: &mut HeaderMap,
    client: &Peer,
    host: Option<&str>,
    version: &'static str,
    new_request_id: impl FnOnce() -> String,
) {
    strip_hop_by_hop(headers, true);
    let ip = canonical(client.peer.ip());

    let xff = match (client.trusted, joined(headers, &X_FORWARDED_FOR)) {
        (true, Some(prior)) => format!("{prior}, {ip}"),
        _ => ip.to_string(),
    };
    set(headers, &X_FORWARDED_FOR, &xff);

    if !(client.trusted && headers.contains_key(&X_FORWARDED_PROTO)) {
        headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static(client.proto()));
    }
    if !(client.trusted && headers.contains_key(&X_FORWARDED_HOST)) {
        headers.remove(&X_FORWARDED_HOST);
        if let Some(h) = host {
            set(headers, &X_FORWARDED_HOST, h);
        }
    }

    let mut element = format!("for={}", forwarded_node(ip));
    if let Some(h) = host {
        element.push_str(";host=");
        push_forwarded_value(&mut element, h);
    }
    element.push_str(";proto=");
    element.push_str(client.proto());
    let forwarded = match (client.trusted, joined(headers, &header::FORWARDED)) {
        (true, Some(prior)) => format!("{prior}, {element}"),
        _ => element,
    };
    set(headers, &header::FORWARDED, &forwarded);

    append_via(headers, version);
    if !headers.contains_key(&X_REQUEST_ID) {
        set(headers, &X_REQUEST_ID, &new_request_id());
    }
}

/// Rewrites a response's headers for the client.
pub fn prepare_response(headers: &mut HeaderMap, version: &'static str) {
    strip_hop_by_hop(headers, false);
    append_via(headers, version);
}

fn append_via(headers: &mut HeaderMap, version: &'static str) {
    match joined(headers, &header::VIA) {
        Some(prior) => set(
            headers,
            &header::VIA,
            &format!("{prior}, {version} {VIA_NAME}"),
        ),
        // The common case, without formatting: one of a few fixed values.
        None => {
            let value = match version {
                "2" => HeaderValue::from_static("2 microcourses"),
                "1.0" => HeaderValue::from_static("1.0 microcourses"),
                "3" => HeaderValue::from_static("3 microcourses"),
                _ => HeaderValue::from_static("1.1 microcourses"),
            };
            headers.insert(header::VIA, value);
        }
    }
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

fn set(headers: &mut HeaderMap, name: &HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

/// RFC 7239 node: IPv6 in quoted brackets.
fn forwarded_node(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("\"[{v6}]\""),
    }
}

/// Appends `value` as a token, or as a quoted-string when it is not one (`host:port`).
fn push_forwarded_value(out: &mut String, value: &str) {
    if is_token(value) {
        out.push_str(value);
        return;
    }
    out.push('"');
    for c in value.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

/// Whether `s` may appear unquoted as a `Forwarded` value.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A fresh request id: 128 random bits in hex.
pub fn request_id(rng: &mut fastrand::Rng) -> String {
    format!("{:032x}", rng.u128(..))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(ip: &str, trusted: bool, tls: bool) -> Peer {
        Peer {
            peer: SocketAddr::new(ip.parse().unwrap(), 5555),
            tls,
            trusted,
        }
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
        prepare_request(&mut h, &c, Some("shop.example"), "1.1", || "id".into());
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
        prepare_request(&mut h, &c, Some("internal:8080"), "2", || "new".into());
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
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(id, request_id(&mut rng));
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
            prepare_request(&mut h, &peer, host.as_deref(), "1.1", || "id".into());
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
