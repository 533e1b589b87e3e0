//! Hot reload of upstreams.toml under load: endpoints added and removed, the algorithm
//! changed, the file replaced by rename, invalid files refused; zero failed requests.

mod support;

use std::time::{Duration, Instant};

use support::{eventually, http_client, pool_toml, proxy, BackgroundLoad, Upstream};

fn failures(results: &[(u16, String)]) -> Vec<&(u16, String)> {
    results.iter().filter(|(s, _)| *s != 200).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_under_load_lose_no_request() {
    let a = Upstream::builder("a")
        .latency(Duration::from_millis(2))
        .start()
        .await;
    let b = Upstream::builder("b")
        .latency(Duration::from_millis(2))
        .start()
        .await;
    let c = Upstream::builder("c")
        .latency(Duration::from_millis(2))
        .start()
        .await;
    let p = proxy().algorithm("round-robin").upstream(&a).start().await;
    let traffic = BackgroundLoad::start(p.url("/"), 4, 20_000, Duration::from_secs(60));
    eventually("traffic to reach a", Duration::from_secs(5), || async {
        a.hits() > 20
    })
    .await;

    // Add b, saving the way editors do (write elsewhere, rename over).
    let saved = Instant::now();
    p.replace_upstreams(&pool_toml("round-robin", &[a.addr, b.addr]));
    eventually("b to receive traffic", Duration::from_secs(3), || async {
        b.hits() > 0
    })
    .await;
    eprintln!("endpoint added: traffic after {:?}", saved.elapsed());

    // Remove a, writing in place: a gets no request once the new file applies.
    p.rewrite_upstreams(&pool_toml("round-robin", &[b.addr]));
    let b_only = vec![b.addr.to_string()];
    eventually("a to be removed", Duration::from_secs(3), || async {
        p.endpoints().await == b_only
    })
    .await;
    // A request routed just before the swap may still be on its way to a.
    let b_before = b.hits();
    eventually("more traffic", Duration::from_secs(5), || async {
        b.hits() > b_before + 20
    })
    .await;
    let a_after_removal = a.hits();
    let b_mark = b.hits();
    eventually("still more traffic", Duration::from_secs(5), || async {
        b.hits() > b_mark + 100
    })
    .await;
    assert_eq!(
        a.hits(),
        a_after_removal,
        "a removed endpoint got new requests"
    );

    // Change the algorithm and add c in one save.
    p.replace_upstreams(&pool_toml("least-connections", &[b.addr, c.addr]));
    eventually("c to receive traffic", Duration::from_secs(3), || async {
        c.hits() > 0
    })
    .await;
    let view = p.admin_json("/admin/upstreams").await;
    assert_eq!(view["pools"][0]["algorithm"], "least-connections");
    assert_eq!(view["last_reload"]["ok"], true);

    let results = traffic.finish().await;
    assert!(
        results.len() > 200,
        "too little traffic to prove anything: {}",
        results.len()
    );
    assert!(
        failures(&results).is_empty(),
        "failed: {:?}",
        &failures(&results)[..1]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_files_change_nothing_and_are_reported() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let p = proxy().upstream(&a).start().await;
    let client = http_client();
    let bad_files = [
        (
            "syntax",
            "[pool.main\nendpoints = []\n",
            "upstreams.toml:1:",
        ),
        (
            "unknown key",
            &format!(
                "[pool.main]\nendpoints = [{{ addr = \"{}\" }}]\ncolour = 1\n",
                b.addr
            ),
            "upstreams.toml:3:1",
        ),
        (
            "bad address",
            "[pool.main]\nendpoints = [{ addr = \"127.0.0.1:99999\" }]\n",
            "upstreams.toml:2:",
        ),
        (
            "empty pool",
            "[pool.main]\nendpoints = []\n",
            "pool.main.endpoints",
        ),
    ];
    for (i, (what, text, expected)) in bad_files.iter().enumerate() {
        p.replace_upstreams(text);
        eventually(
            &format!("the {what} error to be reported"),
            Duration::from_secs(3),
            || async {
                let view = p.admin_json("/admin/upstreams").await;
                view["last_reload"]["ok"] == false
                    && view["last_reload"]["message"]
                        .as_str()
                        .is_some_and(|m| m.contains(expected))
            },
        )
        .await;
        // The old configuration keeps serving.
        let res = client.get(p.url("/")).send().await.unwrap();
        assert_eq!(res.status(), 200, "{what}");
        assert_eq!(res.text().await.unwrap(), "a", "{what}");
        let metrics = p.metrics().await;
        let failures_line = format!("proxy_config_reload_failures_total {}", i + 1);
        assert!(metrics.contains(&failures_line), "{what}: {metrics}");
    }

    // The next valid save applies.
    p.replace_upstreams(&pool_toml("round-robin", &[b.addr]));
    eventually(
        "the valid file to apply",
        Duration::from_secs(3),
        || async { p.admin_json("/admin/upstreams").await["last_reload"]["ok"] == true },
    )
    .await;
    let res = client.get(p.url("/")).send().await.unwrap();
    assert_eq!(res.text().await.unwrap(), "b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_and_the_admin_api_reload_too() {
    use nix::sys::signal::{kill, Signal};
    let a = Upstream::start("a").await;
    let p = proxy().upstream(&a).start().await;
    let client = http_client();

    kill(p.pid(), Signal::SIGHUP).unwrap();
    eventually("the SIGHUP reload", Duration::from_secs(3), || async {
        let last = &p.admin_json("/admin/upstreams").await["last_reload"];
        last["trigger"] == "sighup" && last["ok"] == true && last["message"] == "unchanged"
    })
    .await;

    // Without the token, nothing happens.
    let res = client
        .post(p.admin_url("/admin/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert!(res.headers().contains_key("www-authenticate"));
    let res = client
        .post(p.admin_url("/admin/reload"))
        .bearer_auth("not-the-token")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);

    let res = p.admin_post("/admin/reload").await;
    assert_eq!(res.status(), 200);
    let answer: serde_json::Value = res.json().await.unwrap();
    assert_eq!(answer["ok"], true);

    // An invalid file: the admin API answers 422 with the error, and traffic still flows.
    p.rewrite_upstreams("[pool.main]\nendpoints = \"nope\"\n");
    let res = p.admin_post("/admin/reload").await;
    assert_eq!(res.status(), 422);
    let answer: serde_json::Value = res.json().await.unwrap();
    assert_eq!(answer["ok"], false);
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("upstreams.toml:2:"),
        "{answer}"
    );
    assert_eq!(client.get(p.url("/")).send().await.unwrap().status(), 200);
    let res = client
        .get(p.admin_url("/admin/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_added_by_reload_starts_slowly() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let slow_start = "\n[pool.main.slow_start]\nwindow = \"60s\"\n";
    let p = proxy()
        .upstreams_toml(&(pool_toml("round-robin", &[a.addr]) + slow_start))
        .start()
        .await;
    p.replace_upstreams(&(pool_toml("round-robin", &[a.addr, b.addr]) + slow_start));
    eventually("b to be added", Duration::from_secs(3), || async {
        p.endpoints().await.len() == 2
    })
    .await;
    let view = p.admin_json("/admin/upstreams").await;
    let eps = view["pools"][0]["endpoints"].as_array().unwrap().clone();
    assert_eq!(
        eps[0]["effective_weight"], 1.0,
        "a, present from the start: full weight"
    );
    let b_weight = eps[1]["effective_weight"].as_f64().unwrap();
    assert!(b_weight < 0.2, "b, just added with a 60 s ramp: {b_weight}");
    // Round-robin by effective weight: b gets about a tenth of the traffic at first.
    support::load(p.url("/"), 1, 110).await;
    assert!(b.hits() <= 15, "b got {} of 110", b.hits());
    assert!(b.hits() >= 5, "b got {} of 110", b.hits());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubernetes_configmap_update_is_applied() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let p = proxy().upstream(&a).kubernetes_layout().start().await;
    let (a_addr, b_addr) = (a.addr.to_string(), b.addr.to_string());
    assert_eq!(p.endpoints().await, std::slice::from_ref(&a_addr));

    // Only `..data` changes name: upstreams.toml stays the same symlink.
    p.swap_configmap(1, &pool_toml("round-robin", &[a.addr, b.addr]));
    eventually("b to be added", Duration::from_secs(5), || async {
        p.endpoints().await == [a_addr.clone(), b_addr.clone()]
    })
    .await;
    p.swap_configmap(2, &pool_toml("round-robin", &[b.addr]));
    eventually("a to be removed", Duration::from_secs(5), || async {
        p.endpoints().await == [b_addr.clone()]
    })
    .await;
    let view = p.admin_json("/admin/upstreams").await;
    assert_eq!(view["last_reload"]["ok"], true);
    assert_eq!(view["last_reload"]["trigger"], "file");
}
