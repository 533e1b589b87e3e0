//! Request smuggling and desync classes, end to end: a raw client in front of the real proxy
//! binary, a strict recording origin behind it ([`support::recording_upstream`]), and
//! assertions on how many requests the forwarded bytes made and what each carried. One test
//! per class; the differential corpus (`scripts/conformance`) covers the variations against
//! three independent origin parsers.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use support::{eventually, proxy, raw_upstream, read_response, recording_upstream};

fn connect(addr: std::net::SocketAddr) -> TcpStream {
    let conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    conn
}

/// Everything the proxy sends until it closes the connection.
fn read_all(conn: &mut TcpStream) -> String {
    let mut all = Vec::new();
    let _ = conn.read_to_end(&mut all);
    String::from_utf8_lossy(&all).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_cannot_strip_the_framing_or_the_host() {
    let origin = recording_upstream().await;
    let p = proxy().endpoint(origin.addr, 1).start().await;
    let mut conn = connect(p.http);
    // Issue 13's smuggle: `Connection` names Content-Length; a proxy that drops the named
    // field forwards the body bare, and the origin reads `GET /smuggled` as a request.
    let body = "GET /smuggled HTTP/1.1\r\nHost: evil\r\n\r\n";
    assert_eq!(body.len(), 38);
    conn.write_all(
        format!(
            "POST / HTTP/1.1\r\nHost: app.example\r\nConnection: content-length, host\r\n\
             Content-Length: 38\r\n\r\n{body}"
        )
        .as_bytes(),
    )
    .unwrap();
    let (head, _) = read_response(&mut conn);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let seen = origin.requests();
    assert_eq!(seen.len(), 1, "the origin saw {seen:#?}");
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].values("content-length"), ["38"]);
    assert_eq!(seen[0].values("host"), ["app.example"]);
    assert_eq!(seen[0].body, body.as_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_content_length_goes_upstream_as_one_normalised_number() {
    let origin = recording_upstream().await;
    let p = proxy().endpoint(origin.addr, 1).start().await;
    let mut conn = connect(p.http);
    conn.write_all(
        b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 010\r\n\r\n0123456789\
          POST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\ncontent-length: 5, 5\r\n\r\nhello\
          POST /c HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
    )
    .unwrap();
    for _ in 0..3 {
        let (head, _) = read_response(&mut conn);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    }
    let seen = origin.requests();
    let lengths: Vec<Vec<&str>> = seen.iter().map(|r| r.values("content-length")).collect();
    assert_eq!(lengths, [vec!["10"], vec!["5"], vec!["0"]]);
    assert_eq!(seen[0].body, b"0123456789");
    assert_eq!(seen[1].body, b"hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codings_other_than_one_chunked_get_501_and_the_connection_closes() {
    let origin = recording_upstream().await;
    let p = proxy().endpoint(origin.addr, 1).start().await;
    for coding in [
        "identity, chunked",
        "gzip, chunked",
        "chunked, chunked",
        "x-custom",
    ] {
        let mut conn = connect(p.http);
        conn.write_all(
            format!(
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: {coding}\r\n\r\n\
                 0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap();
        let all = read_all(&mut conn);
        assert!(
            all.starts_with("HTTP/1.1 501 Not Implemented\r\n"),
            "{coding}: {all}"
        );
        assert!(all.contains("connection: close\r\n"), "{coding}: {all}");
        assert_eq!(all.matches("HTTP/1.1").count(), 1, "{coding}: {all}");
    }
    assert!(origin.requests().is_empty(), "{:#?}", origin.requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_chunked_body_gets_400_and_closes_before_the_leftover_is_read() {
    let origin = recording_upstream().await;
    let p = proxy().endpoint(origin.addr, 1).start().await;
    for body in [
        // A bare LF ends the chunk-size line, or sits inside an extension.
        &b"5\nhello\r\n0\r\n\r\n"[..],
        b"5;ext\nx\r\nhello\r\n0\r\n\r\n",
        b"5;a=\"b\nc\"\r\nhello\r\n0\r\n\r\n",
        // Whitespace after the size, a size that is not hex, data longer than its size.
        b"5 \r\nhello\r\n0\r\n\r\n",
        b"0x5\r\nhello\r\n0\r\n\r\n",
        b"3\r\nhello\r\n0\r\n\r\n",
    ] {
        let mut conn = connect(p.http);
        let mut request =
            b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        request.extend_from_slice(body);
        request.extend_from_slice(b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n");
        conn.write_all(&request).unwrap();
        let all = read_all(&mut conn);
        let shown = String::from_utf8_lossy(body);
        assert!(all.starts_with("HTTP/1.1 400"), "{shown:?}: {all}");
        assert!(all.contains("connection: close\r\n"), "{shown:?}: {all}");
        assert_eq!(all.matches("HTTP/1.1").count(), 1, "{shown:?}: {all}");
    }
    // The origin may have seen the head of the upload, never a complete request, and never
    // the leftover as one.
    let seen = origin.requests();
    assert!(
        seen.iter()
            .all(|r| r.target != "/smuggled" && r.target != "/upload"),
        "{seen:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_forwarded_host_is_the_authority_routed_on() {
    let origin = recording_upstream().await;
    let p = proxy().endpoint(origin.addr, 1).start().await;
    let mut conn = connect(p.http);
    conn.write_all(b"GET http://routed.example/x?y HTTP/1.1\r\nHost: other.example\r\n\r\n")
        .unwrap();
    let (head, _) = read_response(&mut conn);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let seen = origin.requests();
    assert_eq!(seen[0].target, "/x?y");
    assert_eq!(seen[0].values("host"), ["routed.example"]);
    assert_eq!(seen[0].values("x-forwarded-host"), ["routed.example"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_configured_upgrades_are_offered_upstream() {
    let origin = recording_upstream().await;
    let p = proxy().endpoint(origin.addr, 1).start().await;
    let mut conn = connect(p.http);
    // h2c would let the client speak HTTP/2 to the origin past every rule here.
    conn.write_all(
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\n\
          Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
    )
    .unwrap();
    let (head, _) = read_response(&mut conn);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let seen = origin.requests();
    assert_eq!(seen.len(), 1);
    for field in ["upgrade", "connection", "http2-settings"] {
        assert!(
            seen[0].values(field).is_empty(),
            "{field} forwarded: {seen:#?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_expectation_gets_417() {
    let origin = recording_upstream().await;
    let p = proxy().endpoint(origin.addr, 1).start().await;
    let mut conn = connect(p.http);
    conn.write_all(b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\nContent-Length: 2\r\n\r\nhi")
        .unwrap();
    let all = read_all(&mut conn);
    assert!(all.starts_with("HTTP/1.1 417"), "{all}");
    assert!(origin.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_cannot_strip_its_own_length_or_smuggle_trailers() {
    let up = raw_upstream(
        b"HTTP/1.1 200 OK\r\nconnection: content-length\r\ncontent-length: 05\r\n\r\nhello",
        false,
    )
    .await;
    let p = proxy().endpoint(up.addr, 1).start().await;
    let mut conn = connect(p.http);
    for _ in 0..2 {
        conn.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            .unwrap();
        let (head, body) = read_response(&mut conn);
        assert!(head.contains("content-length: 5\r\n"), "{head}");
        assert_eq!(body, b"hello");
    }

    let up = raw_upstream(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
          2\r\nhi\r\n0\r\ncontent-length: 99\r\nset-cookie: admin=1\r\nx-sum: 7\r\n\r\n",
        false,
    )
    .await;
    let p = proxy().endpoint(up.addr, 1).start().await;
    let mut conn = connect(p.http);
    conn.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nTE: trailers\r\nConnection: close\r\n\r\n")
        .unwrap();
    let body = read_all(&mut conn);
    assert!(body.ends_with("2\r\nhi\r\n0\r\nx-sum: 7\r\n\r\n"), "{body}");
    assert!(!body.contains("content-length"), "{body}");
    assert!(!body.contains("set-cookie"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_may_have_been_processed_is_sent_once_unless_idempotent() {
    let origin = recording_upstream().await;
    let p = proxy().endpoint(origin.addr, 1).start().await;
    let mut conn = connect(p.http);
    // A pooled connection, then a bodiless POST on it that the origin takes and drops.
    conn.write_all(b"GET /warm HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    let (head, _) = read_response(&mut conn);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    conn.write_all(b"POST /vanish-post HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    let (head, _) = read_response(&mut conn);
    assert!(head.starts_with("HTTP/1.1 502"), "{head}");
    let posts = origin
        .requests()
        .iter()
        .filter(|r| r.target == "/vanish-post")
        .count();
    assert_eq!(posts, 1, "a POST that reached the origin was sent again");

    // A GET in the same spot is idempotent: sent again on a fresh connection.
    let mut conn = connect(p.http);
    conn.write_all(b"GET /warm HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    read_response(&mut conn);
    conn.write_all(b"GET /vanish-get HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    let (head, _) = read_response(&mut conn);
    assert!(head.starts_with("HTTP/1.1 502"), "{head}");
    let gets = origin
        .requests()
        .iter()
        .filter(|r| r.target == "/vanish-get")
        .count();
    assert_eq!(gets, 2);

    // A PUT with a small body: idempotent, its body kept whole, so sent again as it was.
    let mut conn = connect(p.http);
    conn.write_all(b"GET /warm HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    read_response(&mut conn);
    conn.write_all(b"PUT /vanish-put HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc")
        .unwrap();
    let (head, _) = read_response(&mut conn);
    assert!(head.starts_with("HTTP/1.1 502"), "{head}");
    let puts: Vec<Vec<u8>> = origin
        .requests()
        .into_iter()
        .filter(|r| r.target == "/vanish-put")
        .map(|r| r.body)
        .collect();
    assert_eq!(puts, [b"abc".to_vec(), b"abc".to_vec()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_chunked_body_is_read_whole_and_sent_with_its_length() {
    let origin = recording_upstream().await;
    let p = proxy().endpoint(origin.addr, 1).start().await;
    let mut conn = connect(p.http);
    conn.write_all(
        b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
          5;name=\"v\"\r\nhello\r\n1\r\n!\r\n0\r\nx-trailer: dropped\r\n\r\n\
          POST /empty HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    )
    .unwrap();
    for _ in 0..2 {
        let (head, _) = read_response(&mut conn);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    }
    let seen = origin.requests();
    assert_eq!(seen[0].values("content-length"), ["6"]);
    assert!(seen[0].values("transfer-encoding").is_empty());
    assert_eq!(seen[0].body, b"hello!");
    assert_eq!(seen[1].values("content-length"), ["0"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_never_reached_an_endpoint_goes_to_another_whatever_its_method() {
    let origin = recording_upstream().await;
    // A port nothing listens on: every connect is refused.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let p = proxy()
        .algorithm("round-robin")
        .endpoint(dead_addr, 1)
        .endpoint(origin.addr, 1)
        .start()
        .await;
    let mut conn = connect(p.http);
    for i in 0..6 {
        conn.write_all(
            format!("POST /course/{i} HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nbody{i}")
                .as_bytes(),
        )
        .unwrap();
        let (head, _) = read_response(&mut conn);
        assert!(head.starts_with("HTTP/1.1 200"), "POST {i}: {head}");
    }
    let seen = origin.requests();
    assert_eq!(seen.len(), 6, "{seen:#?}");
    for (i, r) in seen.iter().enumerate() {
        assert_eq!(r.body, format!("body{i}").as_bytes());
    }
    let metrics = p.metrics().await;
    assert!(
        support::metric_sum(
            &metrics,
            "proxy_retries_total{pool=\"main\",reason=\"connect\"}"
        ) > 0.0,
        "retries are counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upload_is_not_an_upstream_timeout_and_a_stalled_one_gets_408() {
    let origin = recording_upstream().await;
    let p = proxy()
        .endpoint(origin.addr, 1)
        .proxy_toml("[timeouts]\nper_try = \"500ms\"\nbody_read = \"2s\"")
        .start()
        .await;
    let mut conn = connect(p.http);
    conn.write_all(b"POST /slow HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nhello")
        .unwrap();
    // The client itself is slow: longer than per_try, shorter than the stall limit.
    std::thread::sleep(Duration::from_millis(1200));
    conn.write_all(b"world").unwrap();
    let (head, _) = read_response(&mut conn);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let state = p.endpoint_view(origin.addr).await;
    assert_eq!(state["state"], "healthy", "{state}");

    // A client that stops sending mid-body: 408 from the proxy, nothing blamed upstream.
    let mut conn = connect(p.http);
    conn.write_all(b"POST /stalled HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nhello")
        .unwrap();
    let all = read_all(&mut conn);
    assert!(all.starts_with("HTTP/1.1 408"), "{all}");
    eventually(
        "the metrics show the 408",
        Duration::from_secs(5),
        || async {
            p.metrics()
                .await
                .contains("proxy_local_responses_total{reason=\"request_timeout\"} 1")
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_stays_on_this_hop_and_options_star_is_routed() {
    let origin = recording_upstream().await;
    let p = proxy().endpoint(origin.addr, 1).start().await;
    let mut conn = connect(p.http);
    // Found by the differential suite: an origin told to expect a body on a bodiless GET
    // waits for it (waitress did, until the proxy's 504).
    conn.write_all(
        b"GET /e HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n\
          OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    .unwrap();
    for _ in 0..2 {
        let (head, _) = read_response(&mut conn);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    }
    let seen = origin.requests();
    assert_eq!(seen[0].target, "/e");
    assert!(seen[0].values("expect").is_empty(), "{seen:#?}");
    assert_eq!(
        (seen[1].method.as_str(), seen[1].target.as_str()),
        ("OPTIONS", "*")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_request_meets_the_http1_host_and_field_rules_before_it_is_downgraded() {
    let origin = recording_upstream().await;
    let p = proxy().endpoint(origin.addr, 1).start().await;
    let tcp = tokio::net::TcpStream::connect(p.http).await.unwrap();
    let mut client = support::H2Client::handshake(tcp).await;
    // Each is a valid HTTP/2 request and no valid HTTP/1.1 one: `Host: user@…`, a Host the
    // origin may route on instead of the authority, and a name WSGI reads as framing.
    let refused: [(&str, &[(&str, &str)]); 3] = [
        ("http://user@app.example/", &[]),
        ("http://app.example/", &[("host", "other.example")]),
        (
            "http://app.example/",
            &[("transfer_encoding", "chunked"), ("content_length", "0")],
        ),
    ];
    for (url, fields) in refused {
        let res = client.get_echo_with(url, fields).await;
        assert_eq!(res.status, 400, "{url} {fields:?}");
    }
    assert!(origin.requests().is_empty(), "{:#?}", origin.requests());

    let res = client
        .get_echo_with("http://app.example/x", &[("host", "APP.example")])
        .await;
    assert_eq!(res.status, 200);
    let seen = origin.requests();
    assert_eq!(seen.len(), 1, "{seen:#?}");
    assert_eq!(seen[0].values("host"), ["app.example"]);
}
