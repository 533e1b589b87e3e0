//! Header rules of a forwarding proxy (RFC 9110 §7.6). They read a head's fields as bytes
//! ([`Fields`]: HTTP/1 fields where they arrived, or an HTTP/2 `HeaderMap`) and write the
//! forwarded fields straight into a [`FieldSink`] (the next HTTP/1.1 head being written, or a
//! `HeaderMap` for an HTTP/2 client), in one pass to look and one to write.
//!
//! Requests: hop-by-hop fields go (Connection and every field it names, Keep-Alive,
//! Proxy-Connection, TE except `trailers`, Transfer-Encoding, Upgrade unless this hop
//! upgrades). `Host` and the body's framing are always the proxy's own: the client's `Host`
//! and `Content-Length` are never copied; `Host` is written as the authority the request was
//! routed on (RFC 9112 §3.2.2), and the caller writes the framing. `Connection` removes only
//! ordinary end-to-end fields, never one the proxy reads or writes itself, so it cannot strip
//! the framing (the `Connection: content-length` smuggle) or an identity the proxy vouches
//! for. Then who the client was: `X-Forwarded-For/-Proto/-Host` and `Forwarded`
//! (RFC 7239) are appended to when the peer is a trusted proxy and replaced otherwise, so a
//! client cannot forge its address; `Via` is appended; an `X-Request-Id` is added when absent.
//! Responses: hop-by-hop fields go, `Via` is appended, `Date` added when missing, the
//! request's `X-Request-Id` echoed.

use std::net::{IpAddr, SocketAddr};

use http::header::{HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;

use crate::wire::{tokens, write, Fields};

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
    /// The TLS version negotiated (`TLSv1.3`), for the access log.
    pub tls_version: Option<&'static str>,
    /// The ALPN protocol negotiated (`h2`, `http/1.1`), for the access log.
    pub alpn: Option<&'static str>,
    /// The client's address as `X-Forwarded-For` writes it.
    ip: String,
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
            tls_version: None,
            alpn: None,
            ip: text,
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

// ===== sinks =====

/// Where forwarded fields are written, a value possibly in several pieces.
pub trait FieldSink {
    /// Starts a field.
    fn begin(&mut self, name: &[u8]);
    /// Appends to the value of the field begun last.
    fn push(&mut self, value: &[u8]);
    /// Ends the field.
    fn end(&mut self);

    fn field(&mut self, name: &[u8], value: &[u8]) {
        self.begin(name);
        self.push(value);
        self.end();
    }
}

/// An HTTP/1.1 head being written: `name: value` lines.
impl FieldSink for Vec<u8> {
    fn begin(&mut self, name: &[u8]) {
        self.extend_from_slice(name);
        self.extend_from_slice(b": ");
    }

    fn push(&mut self, value: &[u8]) {
        self.extend_from_slice(value);
    }

    fn end(&mut self) {
        self.extend_from_slice(b"\r\n");
    }
}

/// Fields gathered into a `HeaderMap` (for an HTTP/2 client). A field HTTP/2 cannot carry
/// (a name that is not a valid token, say) is dropped.
#[derive(Default)]
pub struct MapSink {
    pub map: HeaderMap,
    name: Option<HeaderName>,
    value: Vec<u8>,
}

impl FieldSink for MapSink {
    fn begin(&mut self, name: &[u8]) {
        self.name = HeaderName::from_bytes(name).ok();
        self.value.clear();
    }

    fn push(&mut self, value: &[u8]) {
        self.value.extend_from_slice(value);
    }

    fn end(&mut self) {
        if let (Some(name), Ok(value)) = (self.name.take(), HeaderValue::from_bytes(&self.value)) {
            self.map.append(name, value);
        }
    }
}

// ===== field names =====

/// The fields the rules treat specially, recognised by length first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Hop-by-hop whatever Connection says.
    HopByHop,
    Connection,
    Te,
    Upgrade,
    ForwardedFor,
    ForwardedProto,
    ForwardedHost,
    Forwarded,
    Via,
    RequestId,
    Expect,
    Date,
    ContentLength,
    Host,
    Other,
}

fn kind(name: &[u8]) -> Kind {
    let is = |want: &[u8]| name.eq_ignore_ascii_case(want);
    match name.len() {
        2 if is(b"te") => Kind::Te,
        3 if is(b"via") => Kind::Via,
        4 if is(b"date") => Kind::Date,
        4 if is(b"host") => Kind::Host,
        6 if is(b"expect") => Kind::Expect,
        7 if is(b"upgrade") => Kind::Upgrade,
        7 if is(b"trailer") => Kind::HopByHop,
        9 if is(b"forwarded") => Kind::Forwarded,
        10 if is(b"connection") => Kind::Connection,
        10 if is(b"keep-alive") => Kind::HopByHop,
        12 if is(b"x-request-id") => Kind::RequestId,
        14 if is(b"content-length") => Kind::ContentLength,
        15 if is(b"x-forwarded-for") => Kind::ForwardedFor,
        16 if is(b"x-forwarded-host") => Kind::ForwardedHost,
        16 if is(b"proxy-connection") => Kind::HopByHop,
        17 if is(b"x-forwarded-proto") => Kind::ForwardedProto,
        17 if is(b"transfer-encoding") => Kind::HopByHop,
        18 if is(b"proxy-authenticate") => Kind::HopByHop,
        _ => Kind::Other,
    }
}

/// Each field's [`Kind`], worked out in the first pass and read in the second.
struct Kinds {
    known: [Kind; crate::wire::MAX_HEADERS],
}

impl Kinds {
    fn new() -> Self {
        Kinds {
            known: [Kind::Other; crate::wire::MAX_HEADERS],
        }
    }

    /// Field `i`'s kind, remembered (a field list longer than httparse's, from HTTP/2, is
    /// classified again past the end).
    fn classify(&mut self, i: usize, name: &[u8]) -> Kind {
        let k = kind(name);
        if let Some(slot) = self.known.get_mut(i) {
            *slot = k;
        }
        k
    }

    fn get(&self, i: usize, name: &[u8]) -> Kind {
        self.known.get(i).copied().unwrap_or_else(|| kind(name))
    }
}

/// Field names listed by `Connection`: hop-by-hop for this message too. Kept inline for
/// the usual handful.
#[derive(Default)]
struct Named<'a> {
    inline: [&'a [u8]; 8],
    len: usize,
    more: Vec<&'a [u8]>,
}

impl<'a> Named<'a> {
    fn add_list(&mut self, value: &'a [u8]) {
        for token in tokens(value) {
            if self.len < self.inline.len() {
                self.inline[self.len] = token;
                self.len += 1;
            } else {
                self.more.push(token);
            }
        }
    }

    fn contains(&self, name: &[u8]) -> bool {
        self.inline[..self.len]
            .iter()
            .chain(&self.more)
            .any(|t| t.eq_ignore_ascii_case(name))
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }
}

// ===== requests =====

/// What the request rules need to know besides the fields.
pub struct RequestRules<'a> {
    pub client: &'a Peer,
    /// The authority the client asked for (`Host`, an absolute-form target's, or `:authority`).
    pub host: Option<&'a [u8]>,
    /// The client's protocol version as `Via` writes it (`1.1`, `2`).
    pub version: &'static str,
    /// The protocol this hop switches to: `Upgrade` is kept, with `Connection: upgrade`.
    pub upgrade: Option<&'a [u8]>,
}

/// A request's `X-Request-Id`: the client's, or one the proxy made up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestId<'a> {
    Client(&'a [u8]),
    Made([u8; 32]),
}

impl RequestId<'_> {
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            RequestId::Client(id) => id,
            RequestId::Made(id) => id,
        }
    }
}

/// A fresh request id: 128 random bits as 32 hex digits.
pub fn make_request_id(rng: &mut fastrand::Rng) -> [u8; 32] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bits = rng.u128(..);
    let mut text = [0u8; 32];
    for (i, digit) in text.iter_mut().enumerate() {
        *digit = HEX[((bits >> (124 - 4 * i)) & 0xf) as usize];
    }
    text
}

/// Writes a request's fields as the upstream gets them; returns the request's id.
pub fn forward_request<'f, F: Fields + ?Sized>(
    fields: &'f F,
    rules: &RequestRules<'_>,
    rng: &mut fastrand::Rng,
    out: &mut impl FieldSink,
) -> RequestId<'f> {
    let trusted = rules.client.trusted;
    let mut named = Named::default();
    let (mut te_trailers, mut prior_xff, mut prior_forwarded, mut prior_via) =
        (false, false, false, false);
    let (mut has_proto, mut has_host) = (false, false);
    let mut id = None;
    let mut kinds = Kinds::new();
    out.field(b"host", rules.host.unwrap_or_default());
    for (i, (name, value)) in fields.pairs().enumerate() {
        match kinds.classify(i, name) {
            Kind::Connection => named.add_list(value),
            Kind::Te => te_trailers |= tokens(value).any(|t| t.eq_ignore_ascii_case(b"trailers")),
            Kind::ForwardedFor => prior_xff = true,
            Kind::Forwarded => prior_forwarded = true,
            Kind::Via => prior_via = true,
            Kind::ForwardedProto => has_proto = true,
            Kind::ForwardedHost => has_host = true,
            Kind::RequestId if id.is_none() => id = Some(value),
            _ => {}
        }
    }

    for (i, (name, value)) in fields.pairs().enumerate() {
        let keep = match kinds.get(i, name) {
            Kind::HopByHop | Kind::Connection | Kind::Te | Kind::Upgrade => false,
            Kind::Host | Kind::ContentLength => false,
            Kind::ForwardedFor | Kind::Forwarded | Kind::Via => false,
            Kind::ForwardedProto | Kind::ForwardedHost => trusted,
            // The only expectation accepted, `100-continue`, is this hop's: the proxy answers
            // it (or has the body already); an origin told to expect a body that never comes
            // would wait for it.
            Kind::Expect => false,
            Kind::RequestId | Kind::Date => true,
            Kind::Other => named.is_empty() || !named.contains(name),
        };
        if keep {
            out.field(name, value);
        }
    }

    if te_trailers {
        out.field(b"te", b"trailers");
    }
    if let Some(protocol) = rules.upgrade {
        out.field(b"connection", b"upgrade");
        out.field(b"upgrade", protocol);
    }
    let ip = rules.client.ip.as_bytes();
    out.begin(b"x-forwarded-for");
    if trusted && prior_xff {
        push_joined(out, fields, b"x-forwarded-for");
        out.push(b", ");
    }
    out.push(ip);
    out.end();
    if !(trusted && has_proto) {
        out.field(b"x-forwarded-proto", rules.client.proto().as_bytes());
    }
    if !(trusted && has_host) {
        if let Some(host) = rules.host {
            out.field(b"x-forwarded-host", host);
        }
    }
    out.begin(b"forwarded");
    if trusted && prior_forwarded {
        push_joined(out, fields, b"forwarded");
        out.push(b", ");
    }
    out.push(b"for=");
    out.push(rules.client.node.as_bytes());
    if let Some(host) = rules.host {
        out.push(b";host=");
        push_forwarded_value(out, host);
    }
    out.push(b";proto=");
    out.push(rules.client.proto().as_bytes());
    out.end();
    push_via(out, fields, prior_via, rules.version);
    match id {
        Some(client) => RequestId::Client(client),
        None => {
            let made = make_request_id(rng);
            out.field(b"x-request-id", &made);
            RequestId::Made(made)
        }
    }
}

// ===== responses =====

/// What the response rules need to know besides the fields.
pub struct ResponseRules<'a> {
    /// The client's protocol version as `Via` writes it.
    pub version: &'static str,
    /// The request's id, echoed when the upstream did not set one.
    pub request_id: &'a [u8],
    /// The `Content-Length` the client gets, written by the proxy as one normalised number
    /// (`None` when the proxy re-frames a chunked or close-delimited body, or there is
    /// none). The upstream's own `Content-Length` fields are never copied.
    pub length: Option<u64>,
    /// A `101 Switching Protocols`: `Upgrade` is kept, with `Connection: upgrade`.
    pub switching: bool,
}

/// Writes a response's fields as the client gets them.
pub fn forward_response<F: Fields + ?Sized>(
    fields: &F,
    rules: &ResponseRules<'_>,
    out: &mut impl FieldSink,
) {
    let mut named = Named::default();
    let (mut prior_via, mut has_date, mut has_id) = (false, false, false);
    let mut kinds = Kinds::new();
    for (i, (name, value)) in fields.pairs().enumerate() {
        match kinds.classify(i, name) {
            Kind::Connection => named.add_list(value),
            Kind::Via => prior_via = true,
            Kind::Date => has_date = true,
            Kind::RequestId => has_id = true,
            _ => {}
        }
    }
    for (i, (name, value)) in fields.pairs().enumerate() {
        let keep = match kinds.get(i, name) {
            Kind::HopByHop | Kind::Connection | Kind::Te | Kind::Via => false,
            Kind::Upgrade => rules.switching,
            Kind::ContentLength => false,
            Kind::Date | Kind::RequestId => true,
            _ => named.is_empty() || !named.contains(name),
        };
        if keep {
            out.field(name, value);
        }
    }
    if let Some(length) = rules.length {
        out.field(b"content-length", write::decimal(length).as_bytes());
    }
    if rules.switching {
        out.field(b"connection", b"upgrade");
    }
    push_via(out, fields, prior_via, rules.version);
    if !has_date {
        out.field(b"date", &write::http_date());
    }
    if !has_id && !rules.request_id.is_empty() {
        out.field(b"x-request-id", rules.request_id);
    }
}

// ===== pieces =====

/// `Via`: the prior values, then this proxy.
fn push_via<F: Fields + ?Sized>(
    out: &mut impl FieldSink,
    fields: &F,
    prior: bool,
    version: &'static str,
) {
    out.begin(b"via");
    if prior {
        push_joined(out, fields, b"via");
        out.push(b", ");
    }
    out.push(version.as_bytes());
    out.push(b" ");
    out.push(VIA_NAME.as_bytes());
    out.end();
}

/// Every value of `name`, joined with ", " (how repeated list fields combine).
fn push_joined<F: Fields + ?Sized>(out: &mut impl FieldSink, fields: &F, name: &[u8]) {
    for (i, value) in fields.values(name).enumerate() {
        if i > 0 {
            out.push(b", ");
        }
        out.push(value);
    }
}

/// Appends `value` as a `Forwarded` token, or as a quoted-string when it is not one
/// (`host:port`).
fn push_forwarded_value(out: &mut impl FieldSink, value: &[u8]) {
    if is_token(value) {
        out.push(value);
        return;
    }
    out.push(b"\"");
    for piece in value.split_inclusive(|b| *b == b'"' || *b == b'\\') {
        match piece.split_last() {
            Some((last @ (b'"' | b'\\'), before)) => {
                out.push(before);
                out.push(b"\\");
                out.push(std::slice::from_ref(last));
            }
            _ => out.push(piece),
        }
    }
    out.push(b"\"");
}

/// Whether `s` may appear unquoted as a `Forwarded` value.
fn is_token(s: &[u8]) -> bool {
    !s.is_empty()
        && s.iter()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(ip: &str, trusted: bool, tls: bool) -> Peer {
        Peer::new(SocketAddr::new(ip.parse().unwrap(), 5555), tls, trusted)
    }

    fn head(pairs: &[(&'static str, &'static str)]) -> Vec<httparse::Header<'static>> {
        pairs
            .iter()
            .map(|(name, value)| httparse::Header {
                name,
                value: value.as_bytes(),
            })
            .collect()
    }

    fn rules<'a>(
        client: &'a Peer,
        host: Option<&'a str>,
        version: &'static str,
    ) -> RequestRules<'a> {
        RequestRules {
            client,
            host: host.map(str::as_bytes),
            version,
            upgrade: None,
        }
    }

    /// The request as the upstream gets it, with its id.
    fn forward(fields: &[httparse::Header<'_>], rules: &RequestRules<'_>) -> (HeaderMap, Vec<u8>) {
        let mut sink = MapSink::default();
        let mut rng = fastrand::Rng::with_seed(1);
        let id = forward_request(fields, rules, &mut rng, &mut sink)
            .as_bytes()
            .to_vec();
        (sink.map, id)
    }

    fn get<'a>(h: &'a HeaderMap, k: &str) -> Option<&'a str> {
        h.get(k).map(|v| v.to_str().unwrap())
    }

    #[test]
    fn hop_by_hop_fields_go_including_those_connection_names() {
        let fields = head(&[
            ("Connection", "keep-alive, X-Secret"),
            ("X-Secret", "1"),
            ("Keep-Alive", "timeout=5"),
            ("Proxy-Connection", "keep-alive"),
            ("Transfer-Encoding", "chunked"),
            ("Upgrade", "websocket"),
            ("TE", "trailers, deflate"),
            ("Accept", "*/*"),
        ]);
        let peer = client("203.0.113.7", false, false);
        let (h, _) = forward(&fields, &rules(&peer, None, "1.1"));
        let names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "host",
                "accept",
                "te",
                "x-forwarded-for",
                "x-forwarded-proto",
                "forwarded",
                "via",
                "x-request-id"
            ]
        );
        assert_eq!(get(&h, "te"), Some("trailers"));
    }

    #[test]
    fn host_and_framing_are_the_proxys_own_whatever_connection_says() {
        // The smuggle of issue 13: `Connection` naming the framing, so a proxy that drops
        // the named field forwards a body with nothing to delimit it.
        let fields = head(&[
            ("Host", "client.example"),
            (
                "Connection",
                "content-length, host, x-request-id, x-forwarded-proto, via",
            ),
            ("Content-Length", "010"),
            ("X-Request-Id", "abc"),
            ("X-Forwarded-Proto", "https"),
        ]);
        let peer = client("127.0.0.1", true, false);
        let (h, id) = forward(&fields, &rules(&peer, Some("routed.example"), "1.1"));
        assert_eq!(get(&h, "host"), Some("routed.example"));
        assert_eq!(h.get_all("host").iter().count(), 1);
        // The caller writes the framing: no client Content-Length is copied.
        assert!(!h.contains_key("content-length"));
        assert_eq!(get(&h, "x-request-id"), Some("abc"));
        assert_eq!(id, b"abc");
        assert_eq!(get(&h, "x-forwarded-proto"), Some("https"));
        assert_eq!(get(&h, "via"), Some("1.1 microcourses"));
        // No authority at all (HTTP/1.0): an empty Host, as RFC 9112 §3.2 says.
        let (h, _) = forward(&fields, &rules(&peer, None, "1.0"));
        assert_eq!(get(&h, "host"), Some(""));
    }

    #[test]
    fn a_response_length_is_one_number_connection_cannot_remove() {
        let fields = head(&[
            ("Connection", "content-length, date"),
            ("Content-Length", "05"),
            ("Content-Length", "5"),
        ]);
        let h = respond(&fields, &PLAIN);
        assert_eq!(
            h.get_all("content-length").iter().collect::<Vec<_>>(),
            ["5"]
        );
        assert!(h.contains_key("date"));
    }

    #[test]
    fn an_upgrading_request_keeps_its_upgrade_for_this_hop() {
        let fields = head(&[("Connection", "Upgrade"), ("Upgrade", "websocket")]);
        let peer = client("203.0.113.7", false, false);
        let mut r = rules(&peer, None, "1.1");
        r.upgrade = Some(b"websocket");
        let (h, _) = forward(&fields, &r);
        assert_eq!(get(&h, "connection"), Some("upgrade"));
        assert_eq!(get(&h, "upgrade"), Some("websocket"));
    }

    #[test]
    fn an_untrusted_client_cannot_forge_its_address() {
        let fields = head(&[
            ("X-Forwarded-For", "1.2.3.4"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "evil.example"),
            ("Forwarded", "for=1.2.3.4"),
        ]);
        let peer = client("203.0.113.7", false, false);
        let (h, id) = forward(&fields, &rules(&peer, Some("shop.example"), "1.1"));
        assert_eq!(get(&h, "x-forwarded-for"), Some("203.0.113.7"));
        assert_eq!(get(&h, "x-forwarded-proto"), Some("http"));
        assert_eq!(get(&h, "x-forwarded-host"), Some("shop.example"));
        assert_eq!(
            get(&h, "forwarded"),
            Some("for=203.0.113.7;host=shop.example;proto=http")
        );
        assert_eq!(get(&h, "via"), Some("1.1 microcourses"));
        assert_eq!(get(&h, "x-request-id").map(str::as_bytes), Some(&id[..]));
        assert_eq!(id.len(), 32);
    }

    #[test]
    fn a_trusted_proxy_chain_is_appended_to() {
        let fields = head(&[
            ("X-Forwarded-For", "198.51.100.1"),
            ("x-forwarded-for", "10.0.0.2"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "shop.example"),
            ("Forwarded", "for=198.51.100.1"),
            ("Via", "1.1 edge"),
            ("X-Request-Id", "abc"),
        ]);
        let peer = client("::1", true, true);
        let (h, id) = forward(&fields, &rules(&peer, Some("internal:8080"), "2"));
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
        assert_eq!(id, b"abc");
    }

    #[test]
    fn quotes_in_a_forwarded_host_are_escaped() {
        let peer = client("192.0.2.1", false, false);
        let (h, _) = forward(&[], &rules(&peer, Some("a\"b\\c"), "1.1"));
        assert_eq!(
            get(&h, "forwarded"),
            Some("for=192.0.2.1;host=\"a\\\"b\\\\c\";proto=http")
        );
    }

    #[test]
    fn expect_is_this_hops_and_not_passed_on() {
        let fields = head(&[("Expect", "100-continue")]);
        let peer = client("192.0.2.1", false, false);
        assert!(!forward(&fields, &rules(&peer, None, "1.1"))
            .0
            .contains_key("expect"));
    }

    #[test]
    fn the_http1_sink_writes_head_lines() {
        let fields = head(&[("Host", "a"), ("Accept", "*/*")]);
        let peer = client("192.0.2.1", false, false);
        let mut out = Vec::new();
        let mut rng = fastrand::Rng::with_seed(1);
        let id = forward_request(
            &fields[..],
            &rules(&peer, Some("a"), "1.1"),
            &mut rng,
            &mut out,
        );
        let expected = format!(
            "host: a\r\nAccept: */*\r\nx-forwarded-for: 192.0.2.1\r\nx-forwarded-proto: http\r\n\
             x-forwarded-host: a\r\nforwarded: for=192.0.2.1;host=a;proto=http\r\n\
             via: 1.1 microcourses\r\nx-request-id: {}\r\n",
            String::from_utf8_lossy(id.as_bytes())
        );
        assert_eq!(String::from_utf8(out).unwrap(), expected);
    }

    #[test]
    fn trust_is_by_cidr_and_understands_mapped_ipv4() {
        let nets: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        assert!(is_trusted("10.1.2.3".parse().unwrap(), &nets));
        assert!(is_trusted("::ffff:10.1.2.3".parse().unwrap(), &nets));
        assert!(!is_trusted("11.0.0.1".parse().unwrap(), &nets));
    }

    fn respond(fields: &[httparse::Header<'_>], rules: &ResponseRules<'_>) -> HeaderMap {
        let mut sink = MapSink::default();
        forward_response(fields, rules, &mut sink);
        sink.map
    }

    const PLAIN: ResponseRules<'static> = ResponseRules {
        version: "1.1",
        request_id: b"id-1",
        length: Some(5),
        switching: false,
    };

    #[test]
    fn responses_lose_hop_by_hop_and_gain_via_date_and_the_request_id() {
        let fields = head(&[
            ("Connection", "close, X-Internal"),
            ("X-Internal", "1"),
            ("Content-Type", "text/plain"),
            ("Content-Length", "5"),
        ]);
        let h = respond(&fields, &PLAIN);
        let names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "content-type",
                "content-length",
                "via",
                "date",
                "x-request-id"
            ]
        );
        assert_eq!(get(&h, "via"), Some("1.1 microcourses"));
        assert_eq!(get(&h, "x-request-id"), Some("id-1"));

        let fields = head(&[
            ("Date", "Mon, 01 Jan 2024 00:00:00 GMT"),
            ("Via", "1.0 origin"),
            ("X-Request-Id", "theirs"),
            ("Content-Length", "5"),
        ]);
        let rechunked = ResponseRules {
            length: None,
            ..PLAIN
        };
        let h = respond(&fields, &rechunked);
        assert_eq!(get(&h, "date"), Some("Mon, 01 Jan 2024 00:00:00 GMT"));
        assert_eq!(get(&h, "via"), Some("1.0 origin, 1.1 microcourses"));
        assert_eq!(get(&h, "x-request-id"), Some("theirs"));
        assert!(!h.contains_key("content-length"));
    }

    #[test]
    fn a_switch_keeps_upgrade_and_says_so() {
        let fields = head(&[("Upgrade", "websocket"), ("Connection", "Upgrade")]);
        let h = respond(
            &fields,
            &ResponseRules {
                switching: true,
                ..PLAIN
            },
        );
        assert_eq!(get(&h, "upgrade"), Some("websocket"));
        assert_eq!(get(&h, "connection"), Some("upgrade"));
    }

    #[test]
    fn request_ids_are_32_hex_digits_most_significant_first() {
        let mut rng = fastrand::Rng::with_seed(3);
        let id = make_request_id(&mut rng);
        assert!(id.iter().all(u8::is_ascii_hexdigit));
        assert_ne!(id, make_request_id(&mut rng));
        let mut rng = fastrand::Rng::with_seed(3);
        assert_eq!(
            std::str::from_utf8(&id).unwrap(),
            format!("{:032x}", rng.u128(..))
        );
    }

    // The property of `fuzz/fuzz_targets/forward_headers.rs`, on stable in every test run.
    proptest::proptest! {
        #[test]
        fn any_head_loses_its_hop_by_hop_fields_and_names_the_client(
            pairs in proptest::collection::vec(
                ("(?i)(connection|keep-alive|te|upgrade|host|content-length|x-forwarded-for|forwarded|via|x-request-id|[a-z-]{1,12})",
                 "[ -~]{0,40}"),
                0..12,
            ),
            host in proptest::option::of("[!-~]{1,40}"),
            trusted: bool,
            tls: bool,
        ) {
            // Fields as httparse delivers them: names are tokens.
            let fields: Vec<httparse::Header<'_>> = pairs
                .iter()
                .filter(|(k, _)| HeaderName::from_bytes(k.as_bytes()).is_ok())
                .map(|(k, v)| httparse::Header { name: k.as_str(), value: v.as_bytes() })
                .collect();
            let peer = client("192.0.2.7", trusted, tls);
            let r = RequestRules { client: &peer, host: host.as_deref().map(str::as_bytes), version: "1.1", upgrade: None };
            let mut out = Vec::new();
            let mut rng = fastrand::Rng::with_seed(1);
            forward_request(&fields[..], &r, &mut rng, &mut out);
            // What is written is a well-formed header block...
            out.extend_from_slice(b"\r\n");
            let mut parsed = [httparse::EMPTY_HEADER; 64];
            let Ok(httparse::Status::Complete((_, parsed))) = httparse::parse_headers(&out, &mut parsed) else {
                return Err(proptest::test_runner::TestCaseError::fail(format!("not a head: {:?}", String::from_utf8_lossy(&out))));
            };
            // ...without hop-by-hop fields, naming the client.
            for hop in ["connection", "keep-alive", "proxy-connection", "upgrade", "transfer-encoding", "content-length"] {
                proptest::prop_assert!(parsed.values(hop.as_bytes()).next().is_none(), "{} forwarded", hop);
            }
            // Host is the proxy's own, exactly once, whatever the client sent.
            proptest::prop_assert_eq!(parsed.values(b"host").count(), 1);
            let xff = parsed.values(b"x-forwarded-for").next().unwrap();
            proptest::prop_assert!(xff.ends_with(b"192.0.2.7"));
            proptest::prop_assert!(parsed.values(b"forwarded").next().is_some());
            proptest::prop_assert!(parsed.values(b"x-request-id").next().is_some());

            let mut response = MapSink::default();
            forward_response(&fields[..], &PLAIN, &mut response);
            proptest::prop_assert!(!response.map.contains_key("connection") && !response.map.contains_key("keep-alive"));
        }
    }
}
