//! What operators run the proxy with day to day: the access log (every field, both formats,
//! sampling, reopening on SIGUSR1), and the TLS certificate replaced without a restart.

mod support;

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;
use support::{eventually, file_lines, proxy, read_response, Upstream};

/// Sends `GET path` with a request id on a kept-alive connection; returns the status line.
fn get(conn: &mut TcpStream, path: &str, id: &str) -> String {
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: courses.test\r\nX-Request-Id: {id}\r\n\r\n"
    )
    .unwrap();
    let (head, _) = read_response(conn);
    head.lines().next().unwrap_or_default().to_string()
}

fn json_lines(path: &std::path::Path) -> Vec<Value> {
    file_lines(path)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_has_a_line_per_request_and_reopens_on_sigusr1() {
    let up = Upstream::start("echo").await;
    let refused: std::net::SocketAddr = ([127, 0, 0, 1], support::free_port()).into();
    let p = proxy()
        .endpoint(refused, 1)
        .upstream(&up)
        .https()
        .proxy_toml("[access_log]\noutput = \"access.log\"\nformat = \"json\"")
        .start()
        .await;
    let log = p.dir.join("access.log");

    // HTTP/1.1: round robin over a refused endpoint and a live one, so some requests are
    // retried after a refused connect.
    let mut conn = TcpStream::connect(p.http).unwrap();
    for i in 0..4 {
        let status = get(&mut conn, &format!("/echo?n={i}"), &format!("req-{i}"));
        assert!(status.contains(" 200 "), "{status}");
    }
    // A request the proxy refuses to parse (both framings).
    let mut bad = TcpStream::connect(p.http).unwrap();
    bad.write_all(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
    )
    .unwrap();
    let (head, _) = read_response(&mut bad);
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    // HTTP/2 over TLS.
    let https = p.https.unwrap();
    let tls = support::tls_connect(https, &p.dir.join("certs/proxy.pem"), &[b"h2"])
        .await
        .unwrap();
    let mut h2 = support::H2Client::handshake(tls).await;
    let res = h2
        .get_echo_with(
            &format!("https://localhost:{}/echo", https.port()),
            &[("x-request-id", "over-h2")],
        )
        .await;
    assert_eq!(res.status, 200);

    eventually("six access log lines", Duration::from_secs(10), || async {
        file_lines(&log).len() >= 6
    })
    .await;
    let lines = json_lines(&log);
    assert_eq!(lines.len(), 6, "{lines:#?}");
    let by_id = |id: &str| {
        lines
            .iter()
            .find(|l| l["request_id"] == id)
            .unwrap_or_else(|| panic!("no line for {id}: {lines:#?}"))
    };
    for i in 0..4 {
        let line = by_id(&format!("req-{i}"));
        assert_eq!(line["method"], "GET");
        assert_eq!(line["authority"], "courses.test");
        assert_eq!(line["path"], format!("/echo?n={i}"));
        assert_eq!(line["protocol"], "HTTP/1.1");
        assert_eq!(line["status"], 200);
        assert_eq!(line["pool"], "main");
        assert_eq!(line["endpoint"], up.addr.to_string());
        assert!(line["bytes_out"].as_u64().unwrap() > 0, "{line}");
        assert!(
            line["duration_ms"].as_f64().unwrap() >= line["upstream_ttfb_ms"].as_f64().unwrap()
        );
        assert_eq!(line["tls"], Value::Null);
        assert!(
            line["client"].as_str().unwrap().starts_with("127.0.0.1:"),
            "{line}"
        );
        assert!(line["time"].as_str().unwrap().ends_with('Z'), "{line}");
    }
    let retried: Vec<&Value> = lines.iter().filter(|l| l["tries"] == 2).collect();
    assert!(!retried.is_empty(), "no request was retried: {lines:#?}");
    for line in retried {
        assert_eq!(line["retried"], serde_json::json!(["connect"]), "{line}");
    }
    let refused_line = lines.iter().find(|l| l["status"] == 400).unwrap();
    assert_eq!(refused_line["error"], "bad_request");
    assert_eq!(refused_line["method"], Value::Null);
    let h2_line = by_id("over-h2");
    assert_eq!(h2_line["protocol"], "HTTP/2");
    assert_eq!(h2_line["tls"], "TLSv1.3");
    assert_eq!(h2_line["alpn"], "h2");
    assert_eq!(h2_line["status"], 200);
    assert!(h2_line["bytes_out"].as_u64().unwrap() > 0, "{h2_line}");

    // logrotate: move the file away, SIGUSR1, and the next lines go to a new file.
    let rotated = p.dir.join("access.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    nix::sys::signal::kill(p.pid(), nix::sys::signal::Signal::SIGUSR1).unwrap();
    let mut n = 0;
    eventually(
        "a line in the reopened file",
        Duration::from_secs(10),
        || {
            n += 1;
            let status = get(&mut conn, "/echo", &format!("after-{n}"));
            assert!(status.contains(" 200 "), "{status}");
            let log = log.clone();
            async move { !file_lines(&log).is_empty() }
        },
    )
    .await;
    // Lines written before the log thread saw the signal are in the old file; none is lost
    // or written twice.
    eventually(
        "every line after the rotation",
        Duration::from_secs(10),
        || {
            let total = file_lines(&rotated).len() - 6 + file_lines(&log).len();
            async move { total >= n }
        },
    )
    .await;
    let old = json_lines(&rotated);
    let new = json_lines(&log);
    assert_eq!(&old[..6], &lines[..], "the old file was rewritten");
    let mut after: Vec<String> = old[6..]
        .iter()
        .chain(&new)
        .map(|l| l["request_id"].as_str().unwrap().to_string())
        .collect();
    after.sort_by_key(|id| id[6..].parse::<u32>().unwrap());
    let sent: Vec<String> = (1..=n).map(|i| format!("after-{i}")).collect();
    assert_eq!(after, sent);
    let metrics = p.metrics().await;
    assert!(
        metrics.contains("proxy_access_log_lines_total{result=\"dropped\"} 0"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sampled_logfmt_access_log_keeps_every_server_error() {
    let up = Upstream::start("a").await;
    let p = proxy()
        .upstream(&up)
        .proxy_toml("[access_log]\noutput = \"access.log\"\nformat = \"logfmt\"\nsample = 0.0")
        .start()
        .await;
    let log = p.dir.join("access.log");
    // One connection: one worker's buffer, so the lines keep the requests' order.
    let mut conn = TcpStream::connect(p.http).unwrap();
    assert!(get(&mut conn, "/", "fine").contains(" 200 "));
    up.set_status(503);
    assert!(get(&mut conn, "/", "failed").contains(" 503 "));
    eventually("the 503's line", Duration::from_secs(10), || async {
        !file_lines(&log).is_empty()
    })
    .await;
    let lines = file_lines(&log);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    let line = &lines[0];
    assert!(line.contains(" status=503 "), "{line}");
    assert!(line.contains(" request_id=failed"), "{line}");
    assert!(line.contains(" method=GET "), "{line}");
    assert!(line.contains(" path=/ "), "{line}");
    assert!(
        !line.contains("retried="),
        "an empty list is left out: {line}"
    );
    assert!(!line.contains("tls="), "nulls are left out: {line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_access_log_that_cannot_be_opened_stops_the_start_with_its_name() {
    let (_dir, path, ..) = proxy()
        .endpoint(([127, 0, 0, 1], 9).into(), 1)
        .proxy_toml("[access_log]\noutput = \"no/such/dir/access.log\"")
        .write();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_proxy"))
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("access_log.output") && stderr.contains("no/such/dir/access.log"),
        "{stderr}"
    );
}

// ===== certificates =====

type Sender = hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>;

/// An HTTP/1.1 client on a TLS connection to `addr` that trusts only the certificate in
/// `trusted`; `None` if the handshake fails (the proxy presents another certificate).
async fn https_client(addr: std::net::SocketAddr, trusted: &std::path::Path) -> Option<Sender> {
    let stream = support::tls_connect(addr, trusted, &[b"http/1.1"])
        .await
        .ok()?;
    let (sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .ok()?;
    tokio::spawn(conn);
    Some(sender)
}

async fn status(sender: &mut Sender) -> u16 {
    use http_body_util::BodyExt;
    let req = hyper::Request::get("/")
        .header("host", "localhost")
        .body(http_body_util::Empty::new())
        .unwrap();
    let res = sender.send_request(req).await.expect("an answer");
    let status = res.status().as_u16();
    res.into_body().collect().await.unwrap();
    status
}

/// Writes a new self-signed pair for `localhost` over `cert` and `key` (each renamed into
/// place, as an editor or cert-manager does) and keeps a copy of the certificate at `copy`.
fn new_pair(cert: &std::path::Path, key: &std::path::Path, copy: &std::path::Path) {
    let pair = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::write(copy, pair.cert.pem()).unwrap();
    replace(key, &pair.signing_key.serialize_pem());
    replace(cert, &pair.cert.pem());
}

fn replace(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(tmp, path).unwrap();
}

/// Waits until a handshake with `addr` succeeds trusting only the certificate in `cert`.
async fn served(what: &str, addr: std::net::SocketAddr, cert: &std::path::Path) {
    eventually(
        &format!("a handshake with {what}"),
        Duration::from_secs(10),
        || async move { https_client(addr, cert).await.is_some() },
    )
    .await;
}

async fn tls_status(p: &support::ProxyProcess) -> Value {
    p.admin_json("/admin/upstreams").await["tls"]["last_reload"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_certificate_is_served_without_a_restart_and_a_bad_one_is_refused() {
    let up = Upstream::start("a").await;
    let p = proxy().upstream(&up).https().start().await;
    let https = p.https.unwrap();
    let cert = p.dir.join("certs/proxy.pem");
    let key = p.dir.join("certs/proxy-key.pem");
    let first = p.dir.join("first.pem");
    std::fs::copy(&cert, &first).unwrap();
    let mut open = https_client(https, &first).await.expect("the first pair");
    assert_eq!(status(&mut open).await, 200);

    // A new pair on disk: new handshakes get it, the open connection lives on.
    let second = p.dir.join("second.pem");
    new_pair(&cert, &key, &second);
    served("the new certificate", https, &second).await;
    assert!(
        https_client(https, &first).await.is_none(),
        "the old certificate is still served"
    );
    assert_eq!(status(&mut open).await, 200, "the open connection was cut");
    assert_eq!(tls_status(&p).await["ok"], true);
    // Its expiry, in the admin view and as a metric.
    let not_after = p.admin_json("/admin/upstreams").await["tls"]["not_after"].clone();
    let expires = humantime::parse_rfc3339(not_after.as_str().expect("tls.not_after"))
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let metrics = p.metrics().await;
    assert!(
        metrics.contains(&format!(
            "proxy_tls_certificate_not_after_seconds {expires}\n"
        )),
        "{not_after} {metrics}"
    );

    // A key that is not a key: refused, reported, and the second pair goes on serving.
    replace(
        &key,
        "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n",
    );
    eventually(
        "the refused reload in /admin/upstreams",
        Duration::from_secs(10),
        || async { tls_status(&p).await["ok"] == false },
    )
    .await;
    let refused = tls_status(&p).await;
    assert_eq!(refused["trigger"], "file");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("proxy-key.pem"),
        "{refused}"
    );
    let mut fresh = https_client(https, &second).await.expect("the kept pair");
    assert_eq!(status(&mut fresh).await, 200);
    let metrics = p.metrics().await;
    assert!(
        !metrics.contains("proxy_tls_certificate_reloads_total{result=\"error\"} 0"),
        "{metrics}"
    );

    // SIGHUP reloads it too (still refused: the key is still broken).
    nix::sys::signal::kill(p.pid(), nix::sys::signal::Signal::SIGHUP).unwrap();
    eventually("the SIGHUP reload", Duration::from_secs(10), || async {
        tls_status(&p).await["trigger"] == "sighup"
    })
    .await;
    assert_eq!(tls_status(&p).await["ok"], false);

    // A good pair again.
    let third = p.dir.join("third.pem");
    new_pair(&cert, &key, &third);
    served("the third certificate", https, &third).await;
    assert_eq!(tls_status(&p).await["ok"], true);
}
