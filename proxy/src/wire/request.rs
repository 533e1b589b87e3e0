//! Client request heads, parsed in place and checked before anything is forwarded
//! (RFC 9112 §3, §6). What is refused here never reaches an upstream: ambiguous body framing
//! (the raw material of request smuggling), a missing, repeated or malformed Host, request
//! targets a reverse proxy does not serve.

use std::borrow::Cow;

use http::{Method, Version};

use super::{content_length, lists, tokens, Fields, Slots};

/// How a request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body.
    None,
    /// Exactly this many bytes (never 0: that is `None`).
    Length(u64),
    /// The chunked transfer coding.
    Chunked,
}

/// A request head, its fields still in the buffer it arrived in.
#[derive(Debug)]
pub struct RequestHead<'h, 'b> {
    pub method: Method,
    /// What goes on the upstream request line: path and query (origin-form), or `*`.
    pub target: Cow<'b, str>,
    /// The path alone, for routing.
    pub path: &'b str,
    pub version: Version,
    /// The authority asked for: an absolute-form target's, else `Host`.
    pub host: Option<&'b [u8]>,
    pub fields: &'h [httparse::Header<'b>],
    pub body: BodyFraming,
    /// The client is willing to send another request on this connection.
    pub keep_alive: bool,
    /// The protocol an HTTP/1.1 client asks to switch to (`Connection: upgrade`).
    pub upgrade: Option<&'b [u8]>,
    /// `Expect: 100-continue`: the client waits for a go-ahead before sending the body.
    pub expect_continue: bool,
}

/// Why a request head is refused, and so the status the client gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// 431: more header fields than the proxy takes.
    TooLarge,
    /// 400: not a valid request, with what is wrong.
    Bad(&'static str),
    /// 405: a method a reverse proxy does not serve (CONNECT).
    MethodNotAllowed,
    /// 501: a transfer coding the proxy does not implement (anything but one `chunked`).
    NotImplemented(&'static str),
    /// 417: an expectation other than `100-continue`.
    ExpectationFailed,
}

/// Parses and checks the complete head `head` (it ends with its empty line).
pub fn parse<'h, 'b>(
    head: &'b [u8],
    slots: &'h mut Slots<'b>,
) -> Result<RequestHead<'h, 'b>, Refusal> {
    let mut req = httparse::Request::new(&mut []);
    let parsed =
        httparse::ParserConfig::default().parse_request_with_uninit_headers(&mut req, head, slots);
    match parsed {
        Ok(httparse::Status::Complete(n)) if n == head.len() => {}
        Ok(_) => return Err(Refusal::Bad("malformed request head")),
        Err(httparse::Error::TooManyHeaders) => return Err(Refusal::TooLarge),
        Err(httparse::Error::Version) => return Err(Refusal::Bad("unsupported HTTP version")),
        Err(_) => return Err(Refusal::Bad("malformed request head")),
    }
    let httparse::Request {
        method,
        path: raw_target,
        version,
        headers: fields,
    } = req;
    let fields: &'h [httparse::Header<'b>] = fields;
    let method = method
        .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
        .ok_or(Refusal::Bad("malformed method"))?;
    if method == Method::CONNECT {
        return Err(Refusal::MethodNotAllowed);
    }
    let version = match version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let raw_target = raw_target.ok_or(Refusal::Bad("malformed request target"))?;
    let (target, authority) = target(raw_target, &method)?;
    let path: &'b str = match &target {
        Cow::Borrowed(t) => {
            let t: &'b str = t;
            t.split('?').next().unwrap_or("/")
        }
        // Only an absolute-form target with a query and no path is rewritten.
        Cow::Owned(_) => "/",
    };

    let mut hosts = field_values(fields, "host");
    let host_field = hosts.next();
    if hosts.next().is_some() {
        return Err(Refusal::Bad("more than one Host"));
    }
    let host = authority.or(host_field);
    if host.is_none() && version == Version::HTTP_11 {
        return Err(Refusal::Bad("missing Host"));
    }
    if host.is_some_and(|h| !is_authority(h)) {
        return Err(Refusal::Bad("malformed Host"));
    }

    if fields.iter().any(|f| aliases_a_control_field(f.name)) {
        return Err(Refusal::Bad(
            "a field name that reads as a framing or routing field with `_` for `-`",
        ));
    }
    let body = framing(fields, version)?;
    let keep_alive = if version == Version::HTTP_10 {
        lists(fields, b"connection", b"keep-alive")
    } else {
        !lists(fields, b"connection", b"close")
    };
    let upgrade = (version == Version::HTTP_11 && lists(fields, b"connection", b"upgrade"))
        .then(|| field_values(fields, "upgrade").next())
        .flatten()
        .filter(|p| !p.is_empty());
    let expect_continue = expectation(fields)?;
    Ok(RequestHead {
        method,
        target,
        path,
        version,
        host,
        fields,
        body,
        keep_alive,
        upgrade,
        expect_continue,
    })
}

/// The values of the fields called `name`, borrowed from the head itself.
fn field_values<'h, 'b>(
    fields: &'h [httparse::Header<'b>],
    name: &'static str,
) -> impl Iterator<Item = &'b [u8]> + use<'h, 'b> {
    fields
        .iter()
        .filter(move |h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value)
}

/// The origin-form target to forward and, for an absolute-form target, its authority.
fn target<'b>(raw: &'b str, method: &Method) -> Result<(Cow<'b, str>, Option<&'b [u8]>), Refusal> {
    if raw.starts_with("//") {
        // Origin-form by the grammar, but a network-path reference (`//host/path`) to every
        // URL parser behind: origins disagree on whether `//evil/x` is a path or a host.
        return Err(Refusal::Bad("a target starting with `//`"));
    }
    if raw.starts_with('/') {
        return Ok((Cow::Borrowed(raw), None));
    }
    if raw == "*" {
        return if *method == Method::OPTIONS {
            Ok((Cow::Borrowed(raw), None))
        } else {
            Err(Refusal::Bad("`*` is a target for OPTIONS only"))
        };
    }
    let rest = ["http://", "https://"]
        .iter()
        .find_map(|scheme| {
            raw.get(..scheme.len())
                .filter(|s| s.eq_ignore_ascii_case(scheme))
                .map(|_| &raw[scheme.len()..])
        })
        .ok_or(Refusal::Bad("malformed request target"))?;
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if authority.is_empty() {
        return Err(Refusal::Bad("absolute-form target without a host"));
    }
    let target = match path.as_bytes().first() {
        None => Cow::Borrowed("/"),
        Some(b'/') => Cow::Borrowed(path),
        Some(_) => Cow::Owned(format!("/{path}")),
    };
    Ok((target, Some(authority.as_bytes())))
}

/// RFC 9112 §6: a body is delimited by chunked (alone, once, and not with a
/// Content-Length), or by one agreed Content-Length, or there is none. Any other transfer
/// coding is refused with 501 (§6.1: a server that does not understand a coding answers
/// 501), so the proxy never re-frames a body whose codings an upstream would read otherwise.
fn framing(fields: &[httparse::Header<'_>], version: Version) -> Result<BodyFraming, Refusal> {
    let mut codings = fields.values(b"transfer-encoding").peekable();
    if codings.peek().is_some() {
        if version == Version::HTTP_10 {
            return Err(Refusal::Bad("Transfer-Encoding in an HTTP/1.0 request"));
        }
        if fields.values(b"content-length").next().is_some() {
            return Err(Refusal::Bad("both Transfer-Encoding and Content-Length"));
        }
        let mut all = codings.flat_map(|v| v.split(|b| *b == b',').map(<[u8]>::trim_ascii));
        return match (all.next(), all.next()) {
            (Some(only), None) if only.eq_ignore_ascii_case(b"chunked") => Ok(BodyFraming::Chunked),
            _ => Err(Refusal::NotImplemented(
                "Transfer-Encoding other than a single chunked",
            )),
        };
    }
    match content_length(fields) {
        Ok(None | Some(0)) => Ok(BodyFraming::None),
        Ok(Some(n)) => Ok(BodyFraming::Length(n)),
        Err(_) => Err(Refusal::Bad("malformed Content-Length")),
    }
}

/// `Expect`: `Ok(true)` for exactly `100-continue`; any other expectation is refused (417,
/// RFC 9110 §10.1.1) rather than passed to an upstream that might act on it differently.
fn expectation(fields: &[httparse::Header<'_>]) -> Result<bool, Refusal> {
    let mut continue_ = false;
    for value in fields.values(b"expect") {
        for member in value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
            if member.eq_ignore_ascii_case(b"100-continue") {
                continue_ = true;
            } else {
                return Err(Refusal::ExpectationFailed);
            }
        }
    }
    Ok(continue_)
}

/// The protocol of an `Upgrade` offer this hop may switch to: the first one `allowed` names
/// (by protocol name, without case; a version in the offer is kept). `None` when none is
/// allowed: the request then goes upstream as a plain request.
pub fn allowed_upgrade<'b>(offer: &'b [u8], allowed: &[String]) -> Option<&'b [u8]> {
    tokens(offer).find(|protocol| {
        let name = protocol.split(|b| *b == b'/').next().unwrap_or(protocol);
        allowed
            .iter()
            .any(|a| a.as_bytes().eq_ignore_ascii_case(name))
    })
}

/// The checks of [`parse`] that HTTP/2 framing does not already make, for a request that
/// arrived over HTTP/2 and leaves over HTTP/1.1 (the downgrade). The h2 codec refuses what
/// RFC 9113 §8.2 calls malformed (connection-specific fields, upper case, CR, LF, NUL, a
/// Content-Length its DATA contradicts); what is left is the authority, which becomes the
/// upstream's `Host` (`authority` is `:authority`, else the one `Host` field), and field names
/// an origin would read as framing. A `Host` naming another entity than `:authority` (after
/// scheme-based normalisation: case, and the default port of `https` or `http`) is refused,
/// RFC 9113 §8.3.1's SHOULD: an origin may route on either. Returns the authority to route on
/// and forward.
pub fn check_http2<'a>(
    authority: Option<&'a str>,
    https: bool,
    fields: &'a http::HeaderMap,
) -> Result<&'a [u8], Refusal> {
    let mut hosts = fields.get_all(http::header::HOST).iter();
    let host_field = hosts.next().map(http::HeaderValue::as_bytes);
    if hosts.next().is_some() {
        return Err(Refusal::Bad("more than one Host"));
    }
    let default_port: &[u8] = if https { b":443" } else { b":80" };
    let entity = |h: &'a [u8]| h.strip_suffix(default_port).unwrap_or(h);
    let host = match (authority.map(str::as_bytes), host_field) {
        (Some(a), Some(h)) if !entity(a).eq_ignore_ascii_case(entity(h)) => {
            return Err(Refusal::Bad(":authority and Host differ"))
        }
        (Some(a), _) => a,
        (None, Some(h)) => h,
        (None, None) => return Err(Refusal::Bad("missing :authority")),
    };
    if !is_authority(host) {
        return Err(Refusal::Bad("malformed :authority"));
    }
    if fields
        .keys()
        .any(|name| aliases_a_control_field(name.as_str()))
    {
        return Err(Refusal::Bad(
            "a field name that reads as a framing or routing field with `_` for `-`",
        ));
    }
    Ok(host)
}

/// The fields whose meaning the proxy relies on. CGI and WSGI map `-` and `_` in field names
/// to the same variable (`HTTP_TRANSFER_ENCODING`), so `Transfer_Encoding` is framing to an
/// origin behind one and an ordinary field here: such aliases are refused (nginx drops every
/// underscored name; this refuses only the ones that could matter).
const CONTROL_FIELDS: &[&str] = &[
    "content-length",
    "transfer-encoding",
    "host",
    "connection",
    "upgrade",
    "expect",
    "te",
    "trailer",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
];

/// Whether `name` contains `_` and reads as one of [`CONTROL_FIELDS`] with `-` for `_`.
fn aliases_a_control_field(name: &str) -> bool {
    name.contains('_')
        && CONTROL_FIELDS.iter().any(|c| {
            c.len() == name.len()
                && c.bytes()
                    .zip(name.bytes())
                    .all(|(c, n)| c == n.to_ascii_lowercase() || (c == b'-' && n == b'_'))
        })
}

/// A host with an optional port, or an IP literal: unreserved, sub-delims, `:`, `[`, `]`
/// and percent-encoding (RFC 3986 authority without userinfo).
fn is_authority(host: &[u8]) -> bool {
    host.iter()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:[]%".contains(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(text: &str) -> Refusal {
        let mut slots = crate::wire::slots();
        parse(text.as_bytes(), &mut slots).expect_err(text)
    }

    #[test]
    fn an_http2_request_names_one_well_formed_authority_and_no_framing_alias() {
        fn check(
            authority: Option<&str>,
            pairs: &[(&'static str, &'static str)],
        ) -> Result<Vec<u8>, Refusal> {
            let mut fields = http::HeaderMap::new();
            for (name, value) in pairs {
                fields.append(*name, http::HeaderValue::from_static(value));
            }
            check_http2(authority, true, &fields).map(<[u8]>::to_vec)
        }
        assert_eq!(
            check(Some("a.example:8080"), &[]),
            Ok(b"a.example:8080".to_vec())
        );
        assert_eq!(
            check(None, &[("host", "a.example")]),
            Ok(b"a.example".to_vec())
        );
        assert_eq!(
            check(Some("a.example"), &[("host", "A.EXAMPLE:443")]),
            Ok(b"a.example".to_vec())
        );
        for (authority, pairs, why) in [
            (None, &[][..], "missing :authority"),
            (
                None,
                &[("host", "a"), ("host", "b")][..],
                "more than one Host",
            ),
            (
                Some("a"),
                &[("host", "b")][..],
                ":authority and Host differ",
            ),
            (
                Some("a"),
                &[("host", "a:80")][..],
                ":authority and Host differ",
            ),
            (Some("user@a"), &[][..], "malformed :authority"),
            (None, &[("host", "a/b")][..], "malformed :authority"),
        ] {
            assert_eq!(
                check(authority, pairs),
                Err(Refusal::Bad(why)),
                "{authority:?}"
            );
        }
        for (name, refused) in [
            ("transfer_encoding", true),
            ("content_length", true),
            ("x_forwarded_for", true),
            ("x_course_id", false),
        ] {
            assert_eq!(check(Some("a"), &[(name, "x")]).is_err(), refused, "{name}");
        }
    }

    #[test]
    fn an_ordinary_request() {
        let text = b"GET /a/b?c=d HTTP/1.1\r\nHost: shop.example:8080\r\nAccept: */*\r\n\r\n";
        let mut slots = crate::wire::slots();
        let h = parse(text, &mut slots).unwrap();
        assert_eq!(h.method, Method::GET);
        assert_eq!(h.target, "/a/b?c=d");
        assert_eq!(h.path, "/a/b");
        assert_eq!(h.version, Version::HTTP_11);
        assert_eq!(h.host, Some(&b"shop.example:8080"[..]));
        assert_eq!(h.fields.len(), 2);
        assert_eq!(h.body, BodyFraming::None);
        assert!(h.keep_alive && h.upgrade.is_none() && !h.expect_continue);
    }

    #[test]
    fn absolute_form_targets_become_origin_form_and_name_the_host() {
        let text = b"GET http://api.example/v1?x HTTP/1.1\r\nHost: other\r\n\r\n";
        let mut slots = crate::wire::slots();
        let h = parse(text, &mut slots).unwrap();
        assert_eq!((h.target.as_ref(), h.path), ("/v1?x", "/v1"));
        assert_eq!(h.host, Some(&b"api.example"[..]));
        let text = b"GET HTTP://api.example HTTP/1.1\r\nHost: api.example\r\n\r\n";
        let mut slots = crate::wire::slots();
        assert_eq!(parse(text, &mut slots).unwrap().target, "/");
        let text = b"GET http://api.example?q HTTP/1.1\r\nHost: api.example\r\n\r\n";
        let mut slots = crate::wire::slots();
        assert_eq!(parse(text, &mut slots).unwrap().target, "/?q");
    }

    #[test]
    fn framing_is_unambiguous_or_refused() {
        let body = |text: &str| {
            let mut slots = crate::wire::slots();
            parse(text.as_bytes(), &mut slots).map(|h| h.body)
        };
        assert_eq!(
            body("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n"),
            Ok(BodyFraming::Length(5))
        );
        assert_eq!(
            body("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n"),
            Ok(BodyFraming::Chunked)
        );
        // Codings the proxy would have to pass on undecoded: 501.
        for te in [
            "gzip, chunked",
            "identity, chunked",
            "chunked, chunked",
            "chunked,",
            "",
        ] {
            let text = format!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: {te}\r\n\r\n");
            assert!(
                matches!(body(&text), Err(Refusal::NotImplemented(_))),
                "{te:?} accepted"
            );
        }
        assert_eq!(
            body("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"),
            Ok(BodyFraming::None)
        );
        // The classic smuggling shapes.
        for text in [
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n",
        ] {
            assert!(
                matches!(refused(text), Refusal::Bad(_)),
                "{text:?} accepted"
            );
        }
        for text in [
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \"chunked\"\r\n\r\n",
        ] {
            assert!(
                matches!(refused(text), Refusal::NotImplemented(_)),
                "{text:?} accepted"
            );
        }
    }

    #[test]
    fn underscored_aliases_of_control_fields_are_refused() {
        for name in [
            "Transfer_Encoding",
            "content_length",
            "X_Forwarded_For",
            "HOST_",
        ] {
            let text = format!("POST / HTTP/1.1\r\nHost: a\r\n{name}: 5\r\n\r\n");
            let mut slots = crate::wire::slots();
            let refused = parse(text.as_bytes(), &mut slots);
            assert_eq!(refused.is_err(), name != "HOST_", "{name}");
        }
        let mut slots = crate::wire::slots();
        assert!(parse(
            b"GET / HTTP/1.1\r\nHost: a\r\nX_Custom: 1\r\n\r\n",
            &mut slots
        )
        .is_ok());
        assert!(matches!(
            refused("GET //evil/x HTTP/1.1\r\nHost: a\r\n\r\n"),
            Refusal::Bad(_)
        ));
    }

    #[test]
    fn hosts_are_required_single_and_well_formed() {
        assert_eq!(
            refused("GET / HTTP/1.1\r\n\r\n"),
            Refusal::Bad("missing Host")
        );
        assert_eq!(
            refused("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
            Refusal::Bad("more than one Host")
        );
        assert_eq!(
            refused("GET / HTTP/1.1\r\nHost: a b\r\n\r\n"),
            Refusal::Bad("malformed Host")
        );
        let mut slots = crate::wire::slots();
        let h = parse(b"GET / HTTP/1.0\r\n\r\n", &mut slots).unwrap();
        assert_eq!((h.host, h.keep_alive), (None, false));
    }

    #[test]
    fn targets_and_methods_a_reverse_proxy_does_not_serve() {
        assert_eq!(
            refused("CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n"),
            Refusal::MethodNotAllowed
        );
        assert!(matches!(
            refused("GET * HTTP/1.1\r\nHost: a\r\n\r\n"),
            Refusal::Bad(_)
        ));
        assert!(matches!(
            refused("GET a.example HTTP/1.1\r\nHost: a\r\n\r\n"),
            Refusal::Bad(_)
        ));
        assert!(matches!(
            refused("GET / HTTP/2.0\r\nHost: a\r\n\r\n"),
            Refusal::Bad(_)
        ));
        assert!(matches!(
            refused("GET / HTTP/1.1\r\nHost: a\r\nbad header\r\n\r\n"),
            Refusal::Bad(_)
        ));
        assert!(matches!(
            refused("GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n"),
            Refusal::Bad(_)
        ));
        let many: String = (0..101).map(|i| format!("x-{i}: v\r\n")).collect();
        assert_eq!(
            refused(&format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n")),
            Refusal::TooLarge
        );
        let mut slots = crate::wire::slots();
        let h = parse(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", &mut slots).unwrap();
        assert_eq!(h.target, "*");
    }

    #[test]
    fn connection_options() {
        let mut slots = crate::wire::slots();
        let text = b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n";
        let h = parse(text, &mut slots).unwrap();
        assert_eq!(h.upgrade, Some(&b"websocket"[..]));
        let mut slots = crate::wire::slots();
        let text = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
        assert!(!parse(text, &mut slots).unwrap().keep_alive);
        let mut slots = crate::wire::slots();
        let text = b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n";
        assert!(parse(text, &mut slots).unwrap().keep_alive);
        let mut slots = crate::wire::slots();
        let text =
            b"PUT /f HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 9\r\n\r\n";
        assert!(parse(text, &mut slots).unwrap().expect_continue);
        assert_eq!(
            refused("PUT /f HTTP/1.1\r\nHost: a\r\nExpect: 100-continue, x\r\nContent-Length: 1\r\n\r\n"),
            Refusal::ExpectationFailed
        );
    }

    #[test]
    fn only_allowed_upgrades_are_offered_upstream() {
        let allowed = vec!["websocket".to_string()];
        assert_eq!(
            allowed_upgrade(b"WebSocket", &allowed),
            Some(&b"WebSocket"[..])
        );
        assert_eq!(allowed_upgrade(b"h2c", &allowed), None);
        assert_eq!(
            allowed_upgrade(b"h2c, websocket", &allowed),
            Some(&b"websocket"[..])
        );
        assert_eq!(allowed_upgrade(b"websocketx", &allowed), None);
        assert_eq!(allowed_upgrade(b"websocket", &[]), None);
    }

    proptest::proptest! {
        /// No input makes the parser panic, and whatever it accepts has a target it can
        /// forward and unambiguous framing.
        #[test]
        fn parsing_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let mut slots = crate::wire::slots();
            if let Ok(h) = parse(&bytes, &mut slots) {
                proptest::prop_assert!(h.target.starts_with('/') || h.target == "*");
                let te = h.fields.values(b"transfer-encoding").next().is_some();
                let cl = h.fields.values(b"content-length").next().is_some();
                proptest::prop_assert!(!(te && cl));
            }
        }
    }
}
