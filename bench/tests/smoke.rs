//! Keeps the harness working: every scenario runs for a second at a tenth of its rate
//! against our proxy (and the peers, when installed). No timing assertions: this checks that
//! the harness starts everything, drives load, and reports what clients saw.

use std::path::PathBuf;
use std::time::Duration;

use bench::scenarios::{self, Failure, Options};

/// Our proxy's debug binary, built if this test runs on its own.
fn proxy_bin() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let bin = root.join("target/debug/proxy");
    if !bin.is_file() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = std::process::Command::new(cargo)
            .args(["build", "-q", "-p", "proxy"])
            .current_dir(&root)
            .status()
            .expect("cargo runs");
        assert!(status.success(), "cannot build the proxy");
    }
    bin
}

fn options() -> Options {
    Options {
        duration: Duration::from_secs(1),
        proxy_bin: proxy_bin(),
        rate_scale: 0.1,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_upstream_runs_and_reports_every_algorithm() {
    let outcome = scenarios::slow_upstream(&options(), &|_| {}).await;
    let ours: Vec<_> = outcome
        .rows
        .iter()
        .filter(|r| r.system.starts_with("ours"))
        .collect();
    assert_eq!(ours.len(), 3, "{:?}", outcome.skipped);
    for row in ours {
        assert_eq!(row.stats.sent, 150, "{}", row.system);
        assert_eq!(row.stats.failed, 0, "{}", row.system);
        assert!(row.stats.p50_ms > 0.0 && row.stats.max_ms >= row.stats.p99_ms);
    }
    let table = bench::report::markdown(&outcome);
    assert!(
        table.contains("| slow-upstream | ours (peak-ewma) | 150 | 150 | 0 |"),
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_scenarios_run_with_their_failures() {
    for failure in [Failure::Kill, Failure::Hang] {
        let outcome = scenarios::failover(&options(), failure, &|_| {}).await;
        let ours: Vec<_> = outcome
            .rows
            .iter()
            .filter(|r| r.system.starts_with("ours"))
            .collect();
        assert_eq!(ours.len(), 3, "{failure:?}: {:?}", outcome.skipped);
        for row in ours {
            assert_eq!(row.stats.sent, 200, "{failure:?} {}", row.system);
            assert_eq!(row.stats.ok + row.stats.failed, 200);
        }
        let dir = std::env::temp_dir().join(format!("mc-bench-smoke-{}", std::process::id()));
        bench::report::write(&dir, &outcome, "smoke").unwrap();
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("results.json")).unwrap())
                .unwrap();
        assert!(json["rows"].as_array().unwrap().len() >= 3);
        let _ = std::fs::remove_dir_all(dir);
    }
}
