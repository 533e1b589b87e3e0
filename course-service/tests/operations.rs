//! What operators watch: every metric the Grafana dashboard and the Prometheus alerts use
//! exists in a real scrape of a running proxy and course-service.

mod support;

use std::collections::BTreeSet;

use serde_json::Value;
use support::proxy::Proxy;
use support::{workspace_root, TestApp};

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
