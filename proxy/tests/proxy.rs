//! The real `proxy` binary in front of real upstreams on loopback: distribution per algorithm,
//! headers, HTTP/2 over TLS, streamed bodies, limits and their statuses, admin, shutdown.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use support::{get_text, http_client, load, proxy, Upstream};

// ===== distribution =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_spreads_by_weight() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let p = proxy()
        .algorithm("round-robin")
        .endpoint(a.addr, 3)
        .endpoint(b.addr, 1)
        .start()
        .await;
    let results = load(p.url("/"), 1, 40).await;
    assert!(results.iter().all(|(s, _)| *s == 200));
    assert_eq!((a.hits(), b.hits()), (30, 10));
}

/// Held by the tests whose outcome depends on timing (how the load spreads over a slow and
/// fast upstreams) and by the one that keeps both cores busy (256 MiB each way), so that
/// they do not run at once: on two cores, streaming 512 MiB slows the 1 ms upstreams of a
/// distribution test enough to move its shares.
static TIMING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn slow_upstream_share(algorithm: &str) -> (usize, usize) {
    let _alone = TIMING.lock().await;
    let fast1 = Upstream::builder("fast1")
        .latency(Duration::from_millis(1))
        .start()
        .await;
    let fast2 = Upstream::builder("fast2")
        .latency(Duration::from_millis(1))
        .start()
        .await;
    let slow = Upstream::builder("slow")
        .latency(Duration::from_millis(40))
        .start()
        .await;
    let p = proxy()
        .algorithm(algorithm)
        .upstream(&fast1)
        .upstream(&fast2)
        .upstream(&slow)
        .start()
        .await;
    let results = load(p.url("/"), 8, 100).await;
    assert!(results.iter().all(|(s, _)| *s == 200), "a request failed");
    (slow.hits(), results.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peak_ewma_sends_almost_nothing_to_a_40x_slower_upstream() {
    let (slow, total) = slow_upstream_share("peak-ewma").await;
    assert!(
        slow * 100 < total * 3,
        "slow upstream got {slow} of {total}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_connections_sends_little_to_a_40x_slower_upstream() {
    let (slow, total) = slow_upstream_share("least-connections").await;
    assert!(
        slow * 100 < total * 8,
        "slow upstream got {slow} of {total}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_gives_the_slow_upstream_its_third() {
    let (slow, total) = slow_upstream_share("round-robin").await;
    // Strict rotation: the third endpoint gets every third pick.
    assert_eq!(slow, total / 3);
}

// ===== headers =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_from_a_trusted_peer_are_appended() {
    let up = Upstream::start("echo").await;
    let p = proxy().upstream(&up).start().await;
    let res = http_client()
        .get(p.url("/echo?x=1"))
        .header("x-forwarded-for", "198.51.100.9")
        .header("connection", "x-private")
        .header("x-private", "secret")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let via = res.headers()["via"].to_str().unwrap().to_string();
    let echoed_id = res.headers()["x-request-id"].to_str().unwrap().to_string();
    let seen: Value = res.json().await.unwrap();
    let h = &seen["headers"];
    assert_eq!(h["x-forwarded-for"][0], "198.51.100.9, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"][0], "http");
    assert_eq!(h["x-forwarded-host"][0], p.http.to_string());
    assert_eq!(h["host"][0], p.http.to_string(), "Host is preserved");
    assert_eq!(h["via"][0], "1.1 microcourses");
    assert!(
        h["x-private"].is_null(),
        "a header named by Connection leaked: {h}"
    );
    assert!(h["connection"].is_null() || h["connection"][0] == "keep-alive");
    assert_eq!(h["x-request-id"][0], echoed_id.as_str());
    assert_eq!(echoed_id.len(), 32);
    assert_eq!(seen["uri"], "/echo?x=1");
    assert_eq!(via, "1.1 microcourses");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_peer_cannot_forge_forwarding_headers() {
    let up = Upstream::start("echo").await;
    let p = proxy()
        .upstream(&up)
        .proxy_toml("[forwarding]\ntrusted_proxies = []")
        .start()
        .await;
    let seen: Value = http_client()
        .get(p.url("/echo"))
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-proto", "https")
        .header("x-request-id", "client-chosen")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let h = &seen["headers"];
    assert_eq!(h["x-forwarded-for"][0], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"][0], "http");
    assert_eq!(
        h["forwarded"][0],
        format!("for=127.0.0.1;host=\"{}\";proto=http", p.http)
    );
    assert_eq!(h["x-request-id"][0], "client-chosen");
}

// ===== HTTP/2 over TLS =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_over_tls_end_to_end() {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};

    let up = Upstream::start("echo").await;
    let p = proxy().upstream(&up).https().start().await;
    let https = p.https.unwrap();

    // Trust exactly the development certificate the proxy generated.
    let cert = CertificateDer::from_pem_file(p.dir.join("certs/proxy.pem")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let tcp = tokio::net::TcpStream::connect(https).await.unwrap();
    let stream = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));

    let mut client = support::H2Client::handshake(stream).await;
    let res = client
        .get_echo(&format!("https://localhost:{}/echo", https.port()))
        .await;
    assert_eq!(res.status, 200);
    assert_eq!(res.version, hyper::Version::HTTP_2);
    assert_eq!(res.headers["via"], "2 microcourses");
    let seen = res.echo;
    assert_eq!(seen["version"], "HTTP/1.1", "upstream leg is HTTP/1.1");
    assert_eq!(seen["headers"]["x-forwarded-proto"][0], "https");
    assert_eq!(
        seen["headers"]["host"][0],
        format!("localhost:{}", https.port())
    );
    assert_eq!(seen["headers"]["via"][0], "2 microcourses");

    // A `host` field naming the same entity as `:authority`: the authority is the Host the
    // upstream gets, once (RFC 9113 §8.3.1, RFC 9112 §3.2.2); one naming another is refused
    // (an origin may route on either).
    let url = format!("https://localhost:{}/echo", https.port());
    let same = format!("LOCALHOST:{}", https.port());
    let res = client.get_echo_with(&url, &[("host", &same)]).await;
    assert_eq!(res.status, 200);
    assert_eq!(
        res.echo["headers"]["host"],
        serde_json::json!([format!("localhost:{}", https.port())])
    );
    let res = client
        .get_echo_with(&url, &[("host", "evil.example")])
        .await;
    assert_eq!(res.status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_over_http2_reaches_an_http1_upstream_as_its_handshake() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = Upstream::start("ws").await;
    let p = proxy().upstream(&up).start().await;
    let tcp = tokio::net::TcpStream::connect(p.http).await.unwrap();
    let mut client = support::H2Client::handshake(tcp).await;

    let url = format!("http://{}/upgrade", p.http);
    let (res, tunnel) = client.connect(&url, "websocket").await;
    assert_eq!(res.status(), 200, "{:?}", res.headers());
    // The upstream got an HTTP/1.1 handshake with a fresh key; the HTTP/1.1 proof of it
    // does not reach the HTTP/2 client.
    let key = res.headers()["x-seen-key"].to_str().unwrap();
    assert_eq!(key.len(), 24, "{key}");
    assert!(!res.headers().contains_key("sec-websocket-accept"));
    assert!(!res.headers().contains_key("upgrade"));
    let mut tunnel = tunnel.expect("a tunnel");
    for message in [&b"hello"[..], b"over h2"] {
        tunnel.write_all(message).await.unwrap();
        let mut echo = vec![0u8; message.len()];
        tunnel.read_exact(&mut echo).await.unwrap();
        assert_eq!(echo, message);
    }

    // Each tunnel gets its own key, and the connection still carries requests.
    let (again, _tunnel) = client.connect(&url, "websocket").await;
    assert_eq!(again.status(), 200);
    assert_ne!(again.headers()["x-seen-key"], key);
    let echo = client.get_echo(&format!("http://{}/echo", p.http)).await;
    assert_eq!(echo.status, 200);

    // An upstream that answers the handshake as a plain GET has not opened a tunnel.
    let (refused, tunnel) = client
        .connect(&format!("http://{}/echo", p.http), "websocket")
        .await;
    assert_eq!(refused.status(), 502);
    assert!(tunnel.is_none());
    // A CONNECT without a protocol is a forward-proxy tunnel, which this proxy is not.
    assert_eq!(client.connect_plain(&p.http.to_string()).await, 405);
}

// ===== bodies =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_stream_both_ways_in_bounded_memory() {
    let _alone = TIMING.lock().await;
    const SIZE: u64 = 256 * 1024 * 1024;
    let up = Upstream::start("bulk").await;
    let p = proxy()
        .upstream(&up)
        .proxy_toml(&format!("[limits]\nmax_body_bytes = {}", SIZE * 2))
        .start()
        .await;
    let client = http_client();
    let before = p.peak_rss_kib();

    let upload = support::Source { remaining: SIZE };
    let res = client
        .post(p.url("/sink"))
        .body(reqwest::Body::wrap(upload))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), SIZE.to_string());

    let mut res = client
        .get(p.url(&format!("/source?bytes={SIZE}")))
        .send()
        .await
        .unwrap();
    let mut received: u64 = 0;
    while let Some(chunk) = res.chunk().await.unwrap() {
        received += chunk.len() as u64;
    }
    assert_eq!(received, SIZE);

    let grown_mib = p.peak_rss_kib().saturating_sub(before) / 1024;
    assert!(
        grown_mib < 64,
        "proxy grew by {grown_mib} MiB moving 512 MiB"
    );
}

// ===== limits and failures =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_limit_answers_its_status() {
    let up = Upstream::start("a").await;
    let p = proxy()
        .upstream(&up)
        .proxy_toml("[limits]\nmax_header_bytes = 8192\nmax_body_bytes = 1000")
        .start()
        .await;
    let client = http_client();

    let res = client
        .get(p.url("/"))
        .header("x-big", "v".repeat(20_000))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 431);

    let res = client
        .post(p.url("/sink"))
        .body(vec![b'x'; 5000])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
    assert!(res.text().await.unwrap().contains("larger"));

    let chunked = support::Source { remaining: 5000 };
    let res = client
        .post(p.url("/sink"))
        .body(reqwest::Body::wrap(chunked))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);

    // A malformed request line is a 400 from the proxy itself.
    let mut raw = TcpStream::connect(p.http).unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nbad header\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    let _ = raw.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");

    // Every local answer is counted.
    let metrics = client
        .get(p.admin_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("proxy_local_responses_total{reason=\"body_too_large\"} 2"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_upstream_is_502_and_a_hung_one_504() {
    let refused: std::net::SocketAddr = ([127, 0, 0, 1], support::free_port()).into();
    let p = proxy().endpoint(refused, 1).start().await;
    let (status, body) = get_text(&http_client(), &p.url("/")).await;
    assert_eq!(status, 502, "{body}");

    let hung = Upstream::builder("hung").hang().start().await;
    let p = proxy()
        .upstream(&hung)
        .proxy_toml("[timeouts]\nper_try = \"300ms\"")
        .start()
        .await;
    let (status, body) = get_text(&http_client(), &p.url("/")).await;
    assert_eq!(status, 504, "{body}");
    assert_eq!(hung.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_too_slow_with_its_headers_gets_408_and_an_idle_one_is_closed() {
    let up = Upstream::start("a").await;
    let p = proxy()
        .upstream(&up)
        .proxy_toml("[timeouts]\nheader_read = \"300ms\"")
        .start()
        .await;
    let mut raw = TcpStream::connect(p.http).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n").unwrap();
    let mut buf = Vec::new();
    // The proxy answers and closes: read returns (EOF) well before our own timeout.
    raw.read_to_end(&mut buf)
        .expect("closed by the proxy, not timed out here");
    let answer = String::from_utf8_lossy(&buf);
    assert!(
        answer.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{answer}"
    );
    assert!(answer.contains("connection: close"), "{answer}");
    assert_eq!(up.hits(), 0);

    // A keep-alive connection idle after its request is closed without a word.
    let mut raw = TcpStream::connect(p.http).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    raw.read_to_end(&mut buf).expect("closed by the proxy");
    let answer = String::from_utf8_lossy(&buf);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(answer.matches("HTTP/1.1").count(), 1, "{answer}");

    // The half-sent head is counted as the connection task ends, just after the socket
    // closes; the idle close is not an error.
    support::eventually(
        "the header timeout to be counted",
        Duration::from_secs(5),
        || async {
            p.metrics()
                .await
                .contains("proxy_connection_errors_total{kind=\"header_timeout\"} 1")
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_request_body_is_not_a_header_timeout() {
    let up = Upstream::start("a").await;
    let p = proxy()
        .upstream(&up)
        .proxy_toml("[timeouts]\nheader_read = \"200ms\"")
        .start()
        .await;
    let mut raw = TcpStream::connect(p.http).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    raw.write_all(b"POST /sink HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\n\r\nab")
        .unwrap();
    // The body trickles in for longer than header_read (the sink answers only once it has
    // the whole body): that is the body's business.
    std::thread::sleep(Duration::from_millis(600));
    raw.write_all(b"cd").unwrap();
    let mut buf = [0u8; 12];
    raw.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"HTTP/1.1 200", "{}", String::from_utf8_lossy(&buf));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_switches_protocols_end_to_end_and_outlives_the_header_timeout() {
    let up = Upstream::start("a").await;
    let p = proxy()
        .upstream(&up)
        .proxy_toml("[timeouts]\nheader_read = \"300ms\"\n[forwarding]\nupgrades = [\"websocket\", \"echo\"]")
        .start()
        .await;
    let mut raw = TcpStream::connect(p.http).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    raw.write_all(
        b"GET /upgrade HTTP/1.1\r\nhost: x\r\nconnection: Upgrade\r\nupgrade: echo\r\n\r\n",
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        raw.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(
        head.contains("upgrade: echo") && head.contains("connection: upgrade"),
        "{head}"
    );
    // Now a byte stream, echoed by the upstream through the proxy.
    let mut echo = [0u8; 5];
    raw.write_all(b"hello").unwrap();
    raw.read_exact(&mut echo).unwrap();
    assert_eq!(&echo, b"hello");
    // Quiet for longer than header_read: a tunnel is not a request head being awaited.
    std::thread::sleep(Duration::from_millis(600));
    raw.write_all(b"again").unwrap();
    raw.read_exact(&mut echo).unwrap();
    assert_eq!(&echo, b"again");
}

// ===== admin =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_shows_upstreams_and_metrics() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let p = proxy()
        .algorithm("peak-ewma")
        .upstream(&a)
        .upstream(&b)
        .start()
        .await;
    load(p.url("/"), 2, 10).await;
    let client = http_client();
    let view: Value = client
        .get(p.admin_url("/admin/upstreams"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let pool = &view["pools"][0];
    assert_eq!(pool["name"], "main");
    assert_eq!(pool["algorithm"], "peak-ewma");
    let eps = pool["endpoints"].as_array().unwrap();
    assert_eq!(eps.len(), 2);
    assert_eq!(eps[0]["address"], a.addr.to_string());
    assert_eq!(eps[0]["in_flight"], 0);
    assert!(eps[0]["rtt_estimate_ms"].as_f64().unwrap() < 30.0);

    let metrics = client
        .get(p.admin_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let count = |ep: &Upstream| -> u64 {
        let key = format!(
            "proxy_requests_total{{class=\"2xx\",endpoint=\"{}\",pool=\"main\"}} ",
            ep.addr
        );
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&key))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    assert_eq!(count(&a) + count(&b), 20, "{metrics}");
    assert_eq!(count(&a) as usize, a.hits());
    assert!(metrics.contains("proxy_request_duration_seconds_count{pool=\"main\"} 20"));
    assert!(metrics.contains("proxy_upstream_in_flight{"));
    assert!(metrics.contains("proxy_connections_total{listener=\"http\"}"));
}

// ===== shutdown =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_in_flight_request_finish() {
    use nix::sys::signal::{kill, Signal};
    let slow = Upstream::builder("slow")
        .latency(Duration::from_millis(1500))
        .start()
        .await;
    let mut p = proxy().upstream(&slow).start().await;
    let url = p.url("/");
    let request = tokio::spawn(async move { get_text(&http_client(), &url).await });
    support::eventually(
        "the request to reach the upstream",
        Duration::from_secs(5),
        || {
            let hits = slow.hits();
            async move { hits == 1 }
        },
    )
    .await;
    kill(p.pid(), Signal::SIGTERM).unwrap();
    let http = p.http;
    support::eventually(
        "the listener to close",
        Duration::from_secs(5),
        || async move { TcpStream::connect(http).is_err() },
    )
    .await;
    assert_eq!(request.await.unwrap(), (200, "slow".to_string()));
    let status = p.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

// ===== --check =====

#[tokio::test]
async fn check_validates_both_files_and_lists_every_error() {
    let up = Upstream::start("a").await;
    let builder = proxy().algorithm("least-connections").upstream(&up);
    let (_dir, path, ..) = builder.write();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_proxy"))
        .args(["--check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success());
    let plan = String::from_utf8_lossy(&out.stdout);
    assert!(plan.contains("pool main (least-connections)"), "{plan}");
    assert!(plan.contains(&up.addr.to_string()), "{plan}");

    let bad = proxy().upstreams_toml(
        "[[route]]\npool = \"ghost\"\n[pool.main]\nendpoints = [{ addr = \"127.0.0.1:1\", weight = 0 }]\n",
    );
    let (_dir, path, ..) = bad.write();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_proxy"))
        .args(["--check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("upstreams.toml:2:8: field `route[0].pool`"),
        "{err}"
    );
    assert!(
        err.contains("upstreams.toml:4:47: field `pool.main.endpoints[0].weight`"),
        "{err}"
    );
    assert!(err.contains("2 configuration error(s)"), "{err}");
}
