//! Arbitrary bytes as a client's HTTP/1 request head and an upstream's response head, through
//! the proxy's parsers and header rules: nothing panics; a head the parser accepts has one
//! unambiguous framing; what the rules write is a well-formed header block with no hop-by-hop
//! field, whose forwarding fields name the client.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proxy::headers::{forward_request, forward_response, Peer, RequestRules, ResponseRules};
use proxy::wire::{self, request, response, Fields};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let client = Peer::new(([192, 0, 2, flags], 40000).into(), flags & 1 == 1, flags & 2 == 2);
    let mut slots = wire::slots();
    if let Ok(req) = request::parse(rest, &mut slots) {
        let te = req.fields.values(b"transfer-encoding").next().is_some();
        let cl = req.fields.values(b"content-length").next().is_some();
        assert!(!(te && cl), "ambiguous framing accepted");
        let rules = RequestRules {
            client: &client,
            host: req.host,
            version: "1.1",
            upgrade: req.upgrade,
        };
        let mut out = Vec::new();
        let mut rng = fastrand::Rng::with_seed(u64::from(flags));
        forward_request(req.fields, &rules, &mut rng, &mut out);
        check_block(&out, &client, req.upgrade.is_some());
    }
    let mut slots = wire::slots();
    if let Ok(Some(res)) = response::parse(rest, &mut slots, &http::Method::GET) {
        let rules = ResponseRules {
            version: "1.1",
            request_id: b"id",
            length: res.length_field(),
            switching: false,
        };
        let mut out = Vec::new();
        forward_response(res.fields, &rules, &mut out);
        out.extend_from_slice(b"\r\n");
        let mut parsed = [httparse::EMPTY_HEADER; 256];
        let Ok(httparse::Status::Complete((_, fields))) = httparse::parse_headers(&out, &mut parsed) else {
            panic!("not a header block: {:?}", String::from_utf8_lossy(&out));
        };
        assert!(fields.values(b"connection").next().is_none());
    }
});

fn check_block(out: &[u8], client: &Peer, upgrading: bool) {
    let mut block = out.to_vec();
    block.extend_from_slice(b"\r\n");
    let mut parsed = [httparse::EMPTY_HEADER; 256];
    let Ok(httparse::Status::Complete((_, fields))) = httparse::parse_headers(&block, &mut parsed) else {
        panic!("not a header block: {:?}", String::from_utf8_lossy(&block));
    };
    for hop in ["keep-alive", "proxy-connection", "transfer-encoding", "content-length"] {
        assert!(fields.values(hop.as_bytes()).next().is_none(), "{hop} forwarded");
    }
    // Host is the proxy's own, once.
    assert_eq!(fields.values(b"host").count(), 1, "Host not written exactly once");
    // Only an upgrade says `Connection: upgrade` on this hop, and nothing else.
    for value in fields.values(b"connection") {
        assert!(upgrading && value == b"upgrade", "Connection forwarded");
    }
    let xff = fields.values(b"x-forwarded-for").last().expect("x-forwarded-for");
    assert!(xff.ends_with(client.peer.ip().to_string().as_bytes()));
}
