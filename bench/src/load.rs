//! Open-loop load: requests are sent on a fixed schedule (`rate` per second) whatever the
//! answers do, and each latency is measured from the request's *intended* send time, so a
//! stall is charged to every request it delayed (no coordinated omission; Gil Tene's point,
//! wrk2's method). Percentiles come from an HdrHistogram.

use std::time::Duration;

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// A request that has not answered after this long counts as failed.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    pub sent: u64,
    pub ok: u64,
    /// Transport errors, timeouts and non-2xx answers.
    pub failed: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// Requests answered per second over the run.
    pub throughput: f64,
}

/// Sends `rate` GETs per second to `url` for `duration`; `events` run at their offsets
/// (to kill or hang an upstream mid-run).
pub async fn open_loop(
    url: &str,
    rate: f64,
    duration: Duration,
    mut events: Vec<(Duration, Box<dyn FnOnce() + Send>)>,
) -> Stats {
    let client: Client<HttpConnector, Empty<Bytes>> = {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(1024)
            .build(connector)
    };
    let uri: http::Uri = url.parse().expect("valid url");
    let total = (rate * duration.as_secs_f64()) as u64;
    let start = Instant::now() + Duration::from_millis(20);
    let (tx, mut rx) = mpsc::unbounded_channel::<(Duration, bool)>();
    events.sort_by_key(|(at, _)| *at);
    let mut events = events.into_iter().peekable();

    for i in 0..total {
        let intended = start + Duration::from_secs_f64(i as f64 / rate);
        while let Some((at, _)) = events.peek() {
            if start + *at > intended {
                break;
            }
            let (_, event) = events.next().expect("peeked");
            event();
        }
        tokio::time::sleep_until(intended).await;
        let (client, uri, tx) = (client.clone(), uri.clone(), tx.clone());
        tokio::spawn(async move {
            let req = http::Request::get(uri)
                .body(Empty::new())
                .expect("valid request");
            let ok = match tokio::time::timeout(REQUEST_TIMEOUT, async {
                let res = client.request(req).await.ok()?;
                let success = res.status().is_success();
                res.into_body().collect().await.ok()?;
                Some(success)
            })
            .await
            {
                Ok(Some(success)) => success,
                _ => false,
            };
            let _ = tx.send((intended.elapsed(), ok));
        });
    }
    for (_, event) in events {
        event();
    }
    drop(tx);
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
    let (mut ok, mut failed) = (0u64, 0u64);
    while let Some((latency, success)) = rx.recv().await {
        let _ = hist.record((latency.as_micros() as u64).max(1));
        if success {
            ok += 1;
        } else {
            failed += 1;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    Stats {
        sent: total,
        ok,
        failed,
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
        max_ms: hist.max() as f64 / 1000.0,
        throughput: ok as f64 / elapsed,
    }
}
