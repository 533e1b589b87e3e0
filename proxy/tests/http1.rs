//! The proxy's own HTTP/1.1 server, byte for byte: what raw clients see for pipelining,
//! HTTP/1.0, bodies of unknown length, HEAD, `Expect: 100-continue`, early answers,
//! request smuggling attempts, and HTTP/2 with prior knowledge on the plain listener.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;
use support::{proxy, raw_upstream, read_response, Upstream};

fn connect(addr: std::net::SocketAddr) -> TcpStream {
    let conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    conn
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order() {
    let up = Upstream::start("echo").await;
    let p = proxy().upstream(&up).start().await;
    let mut conn = connect(p.http);
    conn.write_all(
        b"GET /echo?n=1 HTTP/1.1\r\nhost: a\r\n\r\n\
          GET /echo?n=2 HTTP/1.1\r\nhost: a\r\n\r\n\
          GET /echo?n=3 HTTP/1.1\r\nhost: a\r\n\r\n",
    )
    .unwrap();
    for n in 1..=3 {
        let (head, body) = read_response(&mut conn);
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        let seen: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(seen["uri"], format!("/echo?n={n}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http10_clients_keep_alive_only_when_they_ask() {
    let up = Upstream::start("a").await;
    let p = proxy().upstream(&up).start().await;

    let mut conn = connect(p.http);
    conn.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut all = String::new();
    conn.read_to_string(&mut all)
        .expect("closed after the answer");
    assert!(all.starts_with("HTTP/1.1 200 OK\r\n"), "{all}");
    assert!(all.contains("connection: close\r\n"), "{all}");
    assert!(all.ends_with("\r\n\r\na"), "{all}");

    let mut conn = connect(p.http);
    for _ in 0..2 {
        conn.write_all(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .unwrap();
        let (head, body) = read_response(&mut conn);
        assert!(head.contains("connection: keep-alive\r\n"), "{head}");
        assert_eq!(body, b"a");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_of_unknown_length_is_chunked_for_http11_and_ends_with_the_close_for_http10() {
    let up = raw_upstream(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil the end",
        true,
    )
    .await;
    let p = proxy().endpoint(up.addr, 1).start().await;

    let mut conn = connect(p.http);
    conn.write_all(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n")
        .unwrap();
    let (head, body) = read_response(&mut conn);
    assert!(head.contains("transfer-encoding: chunked\r\n"), "{head}");
    assert_eq!(body, b"d\r\nuntil the end\r\n0\r\n\r\n");
    // The client connection carries on: the re-chunked body had an end.
    conn.write_all(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n")
        .unwrap();
    let (head, _) = read_response(&mut conn);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");

    let mut conn = connect(p.http);
    conn.write_all(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .unwrap();
    let mut all = String::new();
    conn.read_to_string(&mut all)
        .expect("closed at the end of the body");
    assert!(all.contains("connection: close\r\n"), "{all}");
    assert!(all.ends_with("\r\n\r\nuntil the end"), "{all}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_answers_keep_their_length_and_carry_no_body() {
    let up = Upstream::start("twelve bytes").await;
    let p = proxy().upstream(&up).start().await;
    let mut conn = connect(p.http);
    conn.write_all(b"HEAD / HTTP/1.1\r\nhost: a\r\n\r\nGET / HTTP/1.1\r\nhost: a\r\n\r\n")
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        conn.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.contains("content-length: 12\r\n"), "{head}");
    // The next bytes are the GET's answer, not a body.
    let (next, body) = read_response(&mut conn);
    assert!(next.starts_with("HTTP/1.1 200 OK"), "{next}");
    assert_eq!(body, b"twelve bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_shapes_are_refused_before_reaching_an_upstream() {
    let up = Upstream::start("a").await;
    let p = proxy().upstream(&up).start().await;
    for (attack, status) in [
        (&b"POST /sink HTTP/1.1\r\nhost: a\r\ncontent-length: 6\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\nG"[..], "400 Bad Request"),
        (b"POST /sink HTTP/1.1\r\nhost: a\r\ncontent-length: 6\r\ncontent-length: 5\r\n\r\nabcdef", "400 Bad Request"),
        (b"POST /sink HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked, identity\r\n\r\n0\r\n\r\n", "501 Not Implemented"),
        (b"GET / HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n", "400 Bad Request"),
        (b"GET / HTTP/1.1\r\n\r\n", "400 Bad Request"),
    ] {
        let mut conn = connect(p.http);
        conn.write_all(attack).unwrap();
        let mut all = String::new();
        let _ = conn.read_to_string(&mut all);
        assert!(all.starts_with(&format!("HTTP/1.1 {status}\r\n")), "{all}");
        assert!(all.contains("connection: close"), "{all}");
    }
    assert_eq!(up.hits(), 0, "a refused request reached the upstream");
    let mut conn = connect(p.http);
    conn.write_all(b"CONNECT example.com:443 HTTP/1.1\r\nhost: example.com:443\r\n\r\n")
        .unwrap();
    let mut all = String::new();
    let _ = conn.read_to_string(&mut all);
    assert!(all.starts_with("HTTP/1.1 405"), "{all}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_gets_the_go_ahead_before_the_body() {
    let up = Upstream::start("a").await;
    let p = proxy().upstream(&up).start().await;
    let mut conn = connect(p.http);
    conn.write_all(
        b"POST /sink HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\nexpect: 100-continue\r\n\r\n",
    )
    .unwrap();
    let mut interim = [0u8; 25];
    conn.read_exact(&mut interim).unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    conn.write_all(b"hello").unwrap();
    let (head, body) = read_response(&mut conn);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, b"5", "the upstream received the whole body");

    // Over the limit: no go-ahead, a 413 at once.
    let p = proxy()
        .upstream(&up)
        .proxy_toml("[limits]\nmax_body_bytes = 100")
        .start()
        .await;
    let mut conn = connect(p.http);
    conn.write_all(
        b"POST /sink HTTP/1.1\r\nhost: a\r\ncontent-length: 5000\r\nexpect: 100-continue\r\n\r\n",
    )
    .unwrap();
    let (head, _) = read_response(&mut conn);
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_answers_before_reading_the_body_is_heard() {
    let up = raw_upstream(
        b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 4\r\nconnection: close\r\n\r\nnope",
        true,
    )
    .await;
    let p = proxy().endpoint(up.addr, 1).start().await;
    let mut conn = connect(p.http);
    conn.write_all(b"POST /upload HTTP/1.1\r\nhost: a\r\ncontent-length: 10000000\r\n\r\n")
        .unwrap();
    // The client keeps sending for a while; the answer arrives anyway, then the close.
    let chunk = vec![b'x'; 64 * 1024];
    for _ in 0..4 {
        if conn.write_all(&chunk).is_err() {
            break;
        }
    }
    let (head, body) = read_response(&mut conn);
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert!(head.contains("connection: close"), "{head}");
    assert_eq!(body, b"nope");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_with_prior_knowledge_works_on_the_plain_listener() {
    let up = Upstream::start("echo").await;
    let p = proxy().upstream(&up).start().await;
    let tcp = tokio::net::TcpStream::connect(p.http).await.unwrap();
    let mut client = support::H2Client::handshake(tcp).await;
    for _ in 0..2 {
        let res = client.get_echo(&format!("http://{}/echo", p.http)).await;
        assert_eq!(res.status, 200);
        assert_eq!(res.version, hyper::Version::HTTP_2);
        assert_eq!(res.headers["via"], "2 microcourses");
        assert_eq!(res.echo["headers"]["x-forwarded-proto"][0], "http");
        assert_eq!(res.echo["headers"]["host"][0], p.http.to_string());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_off_and_its_upstream_freed() {
    let up = Upstream::start("bulk").await;
    let p = proxy()
        .upstream(&up)
        .proxy_toml("[timeouts]\nidle = \"1s\"")
        .start()
        .await;
    let mut conn = connect(p.http);
    conn.write_all(b"GET /source?bytes=1073741824 HTTP/1.1\r\nhost: a\r\n\r\n")
        .unwrap();
    let (p, addr) = (&p, up.addr);
    support::eventually(
        "the download to start",
        Duration::from_secs(10),
        || async move { p.endpoint_view(addr).await["in_flight"].as_u64() == Some(1) },
    )
    .await;
    // This client reads nothing: once the socket buffers are full, nothing moves for
    // `timeouts.idle`, and the proxy gives up on the response.
    support::eventually(
        "the stalled response to be dropped",
        Duration::from_secs(15),
        || async move { p.endpoint_view(addr).await["in_flight"].as_u64() == Some(0) },
    )
    .await;
    let mut sink = vec![0u8; 1 << 20];
    let mut total = 0usize;
    loop {
        match conn.read(&mut sink) {
            Ok(0) => break,
            Ok(n) => total += n,
            Err(e) => panic!("the proxy should have closed the connection: {e}"),
        }
    }
    assert!(
        total < 1 << 30,
        "the whole GiB arrived: nothing was cut off"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protocol_switch_nobody_asked_for_is_a_bad_gateway() {
    let up = raw_upstream(
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: h2c\r\n\r\n",
        false,
    )
    .await;
    let p = proxy().endpoint(up.addr, 1).start().await;
    let mut conn = connect(p.http);
    conn.write_all(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n")
        .unwrap();
    let (head, body) = read_response(&mut conn);
    assert!(head.starts_with("HTTP/1.1 502"), "{head}");
    assert_eq!(body, b"upstream connection failed\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxys_own_answer_to_head_has_no_body() {
    let refused: std::net::SocketAddr = ([127, 0, 0, 1], support::free_port()).into();
    let p = proxy().endpoint(refused, 1).start().await;
    let mut conn = connect(p.http);
    conn.write_all(b"HEAD / HTTP/1.1\r\nhost: a\r\n\r\nGET / HTTP/1.1\r\nhost: a\r\n\r\n")
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        conn.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    assert!(String::from_utf8_lossy(&head).starts_with("HTTP/1.1 502"));
    // What follows is the GET's answer, not the HEAD's body.
    let (next, body) = read_response(&mut conn);
    assert!(next.starts_with("HTTP/1.1 502"), "{next}");
    assert_eq!(body, b"upstream connection failed\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_new_connections_waits_in_the_kernel_while_the_proxy_is_busy() {
    use nix::sys::signal::{kill, Signal};
    const BURST: usize = 1000;
    let up = Upstream::start("a").await;
    let p = proxy().upstream(&up).start().await;
    // The kernel caps a listen backlog at net.core.somaxconn.
    let somaxconn: usize = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(4096);
    let expected = BURST.min(somaxconn);

    // A stopped proxy accepts nothing: only its listen queue holds the burst.
    kill(p.pid(), Signal::SIGSTOP).unwrap();
    let mut connects = tokio::task::JoinSet::new();
    for _ in 0..BURST {
        let addr = p.http;
        connects.spawn(async move {
            tokio::time::timeout(
                Duration::from_millis(800),
                tokio::net::TcpStream::connect(addr),
            )
            .await
            .ok()
            .and_then(Result::ok)
        });
    }
    let mut held = Vec::new();
    while let Some(conn) = connects.join_next().await {
        if let Some(conn) = conn.unwrap() {
            held.push(conn);
        }
    }
    kill(p.pid(), Signal::SIGCONT).unwrap();
    assert!(
        held.len() >= expected,
        "only {} of {BURST} connections were held while the proxy was busy (expected {expected}): \
         the listen backlog is too small",
        held.len()
    );
    // And they are served once it goes on.
    let (status, _) = support::get_text(&support::http_client(), &p.url("/")).await;
    assert_eq!(status, 200);
}
