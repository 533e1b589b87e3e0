//! What operators watch: every metric the Grafana dashboard and the Prometheus alerts use
//! exists in a real scrape of a running proxy and course-service; the proxy's status page in
//! a real headless Chromium.

mod support;

use std::collections::BTreeSet;

use std::time::Duration;

use serde_json::Value;
use support::browser::Browser;
use support::proxy::Proxy;
use support::{free_port, wait_until_async, workspace_root, TestApp};

/// The metric names in a Prometheus expression text: the words that begin with one of our
/// prefixes (a `$variable` of the dashboard is not one).
fn metric_names(text: &str, out: &mut BTreeSet<String>) {
    let mut word = String::new();
    let mut previous = ' ';
    let mut before_word = ' ';
    for c in text.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_alphanumeric() || c == '_' {
            if word.is_empty() {
                before_word = previous;
            }
            word.push(c);
        } else {
            let ours = ["proxy_", "course_service_"]
                .iter()
                .any(|p| word.len() > p.len() && word.starts_with(p));
            if ours && before_word != '$' {
                out.insert(std::mem::take(&mut word));
            }
            word.clear();
        }
        previous = c;
    }
}

/// Every `expr` and `query` string in the dashboard.
fn dashboard_exprs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr" | "query", Value::String(s)) => out.push(s.clone()),
                    _ => dashboard_exprs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| dashboard_exprs(v, out)),
        _ => {}
    }
}

/// The series names in a text exposition.
fn scraped(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_of_the_dashboard_and_the_alerts_is_in_a_real_scrape() {
    let root = workspace_root();
    let mut used = BTreeSet::new();
    let alerts = std::fs::read_to_string(root.join("configs/prometheus/alerts.yml")).unwrap();
    metric_names(&alerts, &mut used);
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("configs/grafana/microcourses.json")).unwrap(),
    )
    .unwrap();
    let mut exprs = Vec::new();
    dashboard_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() > 20, "{exprs:?}");
    for e in &exprs {
        metric_names(e, &mut used);
    }
    assert!(used.len() > 30, "{used:?}");

    let app = TestApp::spawn().await;
    app.wait_cache_ready().await;
    let proxy = Proxy::start(&app).await;
    let http = reqwest::Client::new();
    for path in ["/api/courses", "/healthz", "/no-such-page"] {
        http.get(format!("http://{}{path}", proxy.http))
            .send()
            .await
            .unwrap();
    }
    let proxy_metrics = http
        .get(format!("http://{}/metrics", proxy.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let service_metrics = app.get("/metrics").await.text().await.unwrap();
    let mut series = scraped(&proxy_metrics);
    series.extend(scraped(&service_metrics));
    let missing: Vec<&String> = used.iter().filter(|m| !series.contains(*m)).collect();
    assert!(
        missing.is_empty(),
        "used by configs/grafana or configs/prometheus but not exported: {missing:?}\n\
         exported: {series:?}"
    );
}

#[test]
fn metric_names_skip_dashboard_variables() {
    let mut names = BTreeSet::new();
    metric_names(
        r#"sum by (pool) (rate(proxy_requests_total{job=~"$proxy_job"}[5m])) / course_service_database_up"#,
        &mut names,
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["course_service_database_up", "proxy_requests_total"]
    );
}

/// What the status page shows for `endpoint` in the cell of class `cell` (its first line).
async fn cell(browser: &mut Browser, endpoint: &str, cell: &str) -> Value {
    browser
        .eval(&format!(
            "document.querySelector('tr[data-endpoint=\"{endpoint}\"] .{cell}')?.firstChild?.textContent"
        ))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_the_admin_view_and_follows_a_state_change() {
    let app = TestApp::spawn().await;
    let proxy = Proxy::start(&app).await;
    let live = app.base.trim_start_matches("http://").to_string();
    let http = reqwest::Client::new();
    for _ in 0..20 {
        http.get(format!("http://{}/api/courses", proxy.http))
            .send()
            .await
            .unwrap();
    }
    let admin = |http: reqwest::Client, url: String| async move {
        http.get(url)
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };

    let mut browser = Browser::launch().await;
    browser.open(&proxy.admin_url("/admin/status")).await;
    browser
        .wait_for(
            "the endpoint table",
            "document.querySelectorAll('tr[data-endpoint]').length === 1",
        )
        .await;
    let view = admin(http.clone(), proxy.admin_url("/admin/upstreams")).await;
    let pool = &view["pools"][0];
    assert_eq!(
        browser.texts("h2[data-pool]").await,
        [format!("pool {} ", pool["name"].as_str().unwrap())]
    );
    let endpoint = &pool["endpoints"][0];
    assert_eq!(endpoint["address"], live.as_str());
    assert_eq!(cell(&mut browser, &live, "state").await, endpoint["state"]);
    assert_eq!(cell(&mut browser, &live, "state").await, "healthy");
    assert_eq!(
        cell(&mut browser, &live, "in-flight").await,
        endpoint["in_flight"].to_string()
    );
    assert_eq!(
        cell(&mut browser, &live, "times-ejected").await,
        endpoint["times_ejected"].to_string()
    );
    let reload = browser.texts("#reloads .result").await;
    assert!(reload[0].starts_with("ok: "), "{reload:?}");
    // The certificate's row says when it expires.
    let files = browser.texts("#reloads td:first-child").await;
    let tls = &view["tls"];
    assert_eq!(
        files[1],
        format!(
            "{} (expires {})",
            tls["cert"].as_str().unwrap(),
            tls["not_after"].as_str().unwrap()
        ),
        "{files:?}"
    );
    // The second refresh has a rate: the 20 requests above are behind it, and more now.
    for _ in 0..5 {
        http.get(format!("http://{}/api/courses", proxy.http))
            .send()
            .await
            .unwrap();
    }
    browser
        .wait_for(
            "a request rate",
            &format!(
                "document.querySelector('tr[data-endpoint=\"{live}\"] .rate').textContent !== '–'"
            ),
        )
        .await;

    // A state change: an endpoint nothing listens on, added through the file, with quick
    // health checks. Once /admin/upstreams says it is unhealthy, the page says so by its next
    // refresh (every 2 s).
    let dead = format!("127.0.0.1:{}", free_port());
    proxy.write_upstreams(&format!(
        "[pool.courses]\nendpoints = [{{ addr = \"{live}\" }}, {{ addr = \"{dead}\" }}]\n\
         [pool.courses.health]\ninterval = \"200ms\"\ntimeout = \"200ms\"\nunhealthy_threshold = 1\n"
    ));
    let url = proxy.admin_url("/admin/upstreams");
    wait_until_async(
        "the dead endpoint to be unhealthy",
        Duration::from_secs(10),
        || {
            let (http, url, dead) = (http.clone(), url.clone(), dead.clone());
            async move {
                let view = admin(http, url).await;
                view["pools"][0]["endpoints"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|e| e["address"] == dead.as_str() && e["state"] == "unhealthy")
            }
        },
    )
    .await;
    browser
        .wait_for_within(
            "the page to show the dead endpoint unhealthy within one refresh",
            &format!(
                "document.querySelector('tr[data-endpoint=\"{dead}\"] .state')?.firstChild?.textContent === 'unhealthy'"
            ),
            Duration::from_secs(3),
        )
        .await;
    let reason = browser
        .texts(&format!("tr[data-endpoint=\"{dead}\"] .reason"))
        .await;
    assert_eq!(reason.len(), 1, "the reason is shown: {reason:?}");

    // A refused reload shows, with its error.
    proxy.write_upstreams("[pool.courses]\nendpoints = []\n");
    browser
        .wait_for(
            "the refused reload",
            "document.querySelector('#reloads .result').textContent.startsWith('refused: ')",
        )
        .await;
    let refused = browser.texts("#reloads .result").await;
    assert!(refused[0].contains("upstreams.toml"), "{refused:?}");
    assert!(
        browser.exceptions().is_empty(),
        "script errors: {:?}",
        browser.exceptions()
    );
}
