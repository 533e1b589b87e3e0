//! Upstreams that die, hang, are cut off by a network partition, or fail every request, under a stream of concurrent GETs:
//! retries keep clients from seeing the failures, the endpoint is ejected (or marked down by
//! its health checks), and it is re-admitted when it recovers. Waits are on conditions with
//! deadlines; all load is bounded.

mod support;

use std::time::Duration;

use support::{
    eventually, http_client, proxy, resilient_pool_toml, BackgroundLoad, ProxyProcess, Upstream,
};

fn failed(results: &[(u16, String)]) -> Vec<&(u16, String)> {
    results.iter().filter(|(s, _)| *s != 200).collect()
}

/// Three upstreams behind a proxy (a resilient round-robin pool, plus `proxy_toml`), and a
/// bounded stream of concurrent GETs through it that has reached the third.
async fn three_under_load(
    proxy_toml: &str,
) -> (Upstream, Upstream, Upstream, ProxyProcess, BackgroundLoad) {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let c = Upstream::start("c").await;
    let p = proxy()
        .upstreams_toml(&resilient_pool_toml(
            "round-robin",
            &[a.addr, b.addr, c.addr],
        ))
        .proxy_toml(proxy_toml)
        .start()
        .await;
    let traffic = BackgroundLoad::start(p.url("/"), 4, 50_000, Duration::from_secs(60));
    eventually("traffic to reach c", Duration::from_secs(5), || async {
        c.hits() > 10
    })
    .await;
    (a, b, c, p, traffic)
}

/// Ends `traffic` and checks what its clients saw: no failure, and no request slower than
/// one timed-out try (`per_try`, or a connect timeout under it) and its retry elsewhere; never
/// the 30 s request timeout, never a hang.
async fn no_failure_and_one_retry_at_most(what: &str, traffic: BackgroundLoad, per_try: Duration) {
    let max = traffic.max_latency();
    let results = traffic.finish().await;
    assert!(
        failed(&results).is_empty(),
        "clients saw failures: {:?}",
        &failed(&results)[..1]
    );
    assert!(max < per_try * 4, "a request waited {max:?}");
    eprintln!("{what}: slowest request {max:?} with per_try {per_try:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_upstream_costs_no_request_and_is_readmitted_after_restart() {
    let (_a, _b, c, p, traffic) = three_under_load("").await;

    let c_addr = c.kill();
    eventually("c to be taken out", Duration::from_secs(5), || async {
        p.endpoint_view(c_addr).await["state"] != "healthy"
    })
    .await;
    let view = p.endpoint_view(c_addr).await;
    assert!(
        view["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("refused") || e.contains("onnect")),
        "{view}"
    );

    let c = Upstream::builder("c").port(c_addr.port()).start().await;
    eventually("c to be re-admitted", Duration::from_secs(10), || async {
        p.endpoint_view(c_addr).await["state"] == "healthy"
    })
    .await;
    eventually(
        "c to receive traffic again",
        Duration::from_secs(5),
        || async { c.hits() > 10 },
    )
    .await;

    let results = traffic.finish().await;
    assert!(results.len() > 100, "too little traffic: {}", results.len());
    assert!(
        failed(&results).is_empty(),
        "clients saw failures: {:?}",
        &failed(&results)[..1]
    );
    let metrics = p.metrics().await;
    assert!(
        support::metric_sum(&metrics, "proxy_retries_total{pool=\"main\",reason=") > 0.0,
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_upstream_delays_no_request_past_one_retry() {
    let per_try = Duration::from_millis(300);
    let (a, b, c, p, traffic) = three_under_load("[timeouts]\nper_try = \"300ms\"").await;

    c.set_hang(true);
    eventually("c to be taken out", Duration::from_secs(5), || async {
        p.endpoint_view(c.addr).await["state"] != "healthy"
    })
    .await;
    let stuck_hits = c.hits();
    eventually(
        "traffic to flow around c",
        Duration::from_secs(5),
        || async { a.hits() + b.hits() > 200 },
    )
    .await;
    assert!(
        c.hits() <= stuck_hits + 8,
        "c kept receiving requests while hung"
    );

    c.set_hang(false);
    eventually("c to be re-admitted", Duration::from_secs(10), || async {
        p.endpoint_view(c.addr).await["state"] == "healthy"
    })
    .await;
    no_failure_and_one_retry_at_most("hang", traffic, per_try).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_upstream_costs_no_request_and_is_readmitted_when_it_heals() {
    let per_try = Duration::from_millis(300);
    let (a, b, c, p, traffic) =
        three_under_load("[timeouts]\nconnect = \"200ms\"\nper_try = \"300ms\"").await;

    // Packets to and from c vanish: its pooled connections go silent and new connects get
    // no answer at all (no refusal, no reset), unlike a dead or hung process.
    let partition = shared::testbed::Partition::cut(c.addr.port());
    eventually("c to be taken out", Duration::from_secs(5), || async {
        p.endpoint_view(c.addr).await["state"] != "healthy"
    })
    .await;
    eventually(
        "traffic to flow around c",
        Duration::from_secs(5),
        || async { a.hits() + b.hits() > 200 },
    )
    .await;

    drop(partition);
    eventually("c to be re-admitted", Duration::from_secs(10), || async {
        p.endpoint_view(c.addr).await["state"] == "healthy"
    })
    .await;
    let healed = c.hits();
    eventually(
        "c to receive traffic again",
        Duration::from_secs(5),
        || async { c.hits() > healed + 10 },
    )
    .await;
    no_failure_and_one_retry_at_most("partition", traffic, per_try).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_failing_everything_is_ejected_and_all_failing_means_panic() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let c = Upstream::builder("c").status(503).start().await;
    let p = proxy()
        .upstreams_toml(&resilient_pool_toml(
            "round-robin",
            &[a.addr, b.addr, c.addr],
        ))
        .start()
        .await;
    let traffic = BackgroundLoad::start(p.url("/"), 2, 50_000, Duration::from_secs(60));
    eventually("c to be ejected", Duration::from_secs(5), || async {
        let v = p.endpoint_view(c.addr).await;
        v["state"] != "healthy" && v["last_error"].as_str().is_some_and(|e| e.contains("503"))
    })
    .await;
    let c_hits = c.hits();
    eventually(
        "traffic to flow around c",
        Duration::from_secs(5),
        || async { a.hits() + b.hits() > 200 },
    )
    .await;
    assert!(
        c.hits() <= c_hits + 2,
        "an ejected endpoint kept receiving requests"
    );
    let metrics = p.metrics().await;
    assert!(
        support::metric_sum(&metrics, "proxy_upstream_transitions_total") > 0.0,
        "{metrics}"
    );

    // Now everything fails: rather than refuse every request, the pool panics and spreads
    // them over all endpoints, which at least answer.
    a.set_status(503);
    b.set_status(503);
    eventually("panic mode", Duration::from_secs(10), || async {
        p.admin_json("/admin/upstreams").await["pools"][0]["panic"] == true
    })
    .await;
    let results = traffic.finish().await;
    let from_upstreams = results
        .iter()
        .filter(|(s, body)| *s == 503 && ["a", "b", "c"].contains(&body.as_str()))
        .count();
    assert!(
        from_upstreams > 0,
        "no request reached an upstream in panic mode"
    );
    let metrics = p.metrics().await;
    assert!(
        support::metric_sum(&metrics, "proxy_pool_panic_requests_total{pool=\"main\"}") > 0.0,
        "{metrics}"
    );
    // The ejection of c is logged with its reason in the admin view.
    let view = p.endpoint_view(c.addr).await;
    assert!(view["times_ejected"].as_u64().unwrap() >= 1, "{view}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_panic_mode_no_endpoint_left_means_503_with_retry_after() {
    let a = Upstream::builder("a").status(503).start().await;
    let toml = resilient_pool_toml("least-connections", &[a.addr]).replace(
        "max_ejected_percent = 50",
        "max_ejected_percent = 100\npanic = false",
    );
    let p = proxy().upstreams_toml(&toml).start().await;
    let client = http_client();
    // The upstream's own 503s get it ejected (health checks see them too).
    eventually("a to be ejected", Duration::from_secs(10), || async {
        p.endpoint_view(a.addr).await["state"] != "healthy"
    })
    .await;
    let hits = a.hits();
    let res = client.get(p.url("/")).send().await.unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["retry-after"], "1");
    let body = res.text().await.unwrap();
    assert!(
        body.contains("no upstream available"),
        "the proxy's 503, not a's: {body}"
    );
    assert_eq!(a.hits(), hits, "nothing was sent to the ejected endpoint");
    assert_eq!(
        p.admin_json("/admin/upstreams").await["pools"][0]["panic"],
        false
    );
    assert!(p
        .metrics()
        .await
        .contains("proxy_local_responses_total{reason=\"no_endpoint\"} 1"));
}

/// A real upstream process: Python's `http.server`, which answers `GET /` with a directory
/// listing. Killed with its process group when dropped.
struct PythonUpstream {
    child: std::process::Child,
    addr: std::net::SocketAddr,
    /// Where it serves from, removed with it.
    dir: std::path::PathBuf,
}

impl PythonUpstream {
    async fn start() -> PythonUpstream {
        let port = support::free_port();
        let dir = std::env::temp_dir().join(format!("mc-py-up-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let child = std::process::Command::new("python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .current_dir(&dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3 runs");
        let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
        eventually(
            "http.server to listen",
            Duration::from_secs(10),
            || async move { std::net::TcpStream::connect(addr).is_ok() },
        )
        .await;
        PythonUpstream { child, addr, dir }
    }

    fn signal(&self, sig: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, sig).expect("signal delivered");
    }
}

impl Drop for PythonUpstream {
    fn drop(&mut self) {
        self.signal(nix::sys::signal::Signal::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigstopped_upstream_process_costs_no_request_and_returns_after_sigcont() {
    use nix::sys::signal::Signal;
    let ups = [
        PythonUpstream::start().await,
        PythonUpstream::start().await,
        PythonUpstream::start().await,
    ];
    let addrs: Vec<_> = ups.iter().map(|u| u.addr).collect();
    let per_try = Duration::from_millis(300);
    // http.server has no /healthz: probe the listing at / instead.
    let upstreams = resilient_pool_toml("least-connections", &addrs)
        .replace("[pool.main.health]\n", "[pool.main.health]\npath = \"/\"\n");
    let p = proxy()
        .upstreams_toml(&upstreams)
        .proxy_toml("[timeouts]\nper_try = \"300ms\"")
        .start()
        .await;
    let traffic = BackgroundLoad::start(p.url("/"), 4, 5_000, Duration::from_secs(60));
    eventually("traffic to flow", Duration::from_secs(5), || async {
        p.metrics().await.contains("class=\"2xx\"")
    })
    .await;

    let stopped = &ups[2];
    stopped.signal(Signal::SIGSTOP);
    eventually(
        "the stopped process to be taken out",
        Duration::from_secs(5),
        || async { p.endpoint_view(stopped.addr).await["state"] != "healthy" },
    )
    .await;
    stopped.signal(Signal::SIGCONT);
    eventually("it to be re-admitted", Duration::from_secs(10), || async {
        p.endpoint_view(stopped.addr).await["state"] == "healthy"
    })
    .await;

    let max = traffic.max_latency();
    let results = traffic.finish().await;
    assert!(results.len() > 50, "too little traffic: {}", results.len());
    assert!(
        failed(&results).is_empty(),
        "clients saw failures: {:?}",
        &failed(&results)[..1]
    );
    assert!(max < per_try * 4, "a request waited {max:?}");
}
