//! Results as a Markdown table (stdout and `report.md`) and JSON (`results.json`).

use std::path::Path;

use crate::scenarios::Outcome;

/// The Markdown table of every row, with the peers that were skipped.
pub fn markdown(outcome: &Outcome) -> String {
    let mut out = String::from(
        "| scenario | system | rate | sent | failed | p50 ms | p99 ms | p99.9 ms | max ms | req per CPU-s | retries (refused) |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in &outcome.rows {
        let per_cpu = if r.cpu_seconds > 0.0 {
            format!("{:.0}", r.stats.ok as f64 / r.cpu_seconds)
        } else {
            "-".into()
        };
        out.push_str(&format!(
            "| {} | {} | {:.0} | {} | {} | {:.2} | {:.2} | {:.2} | {:.1} | {} | {} |\n",
            r.scenario,
            r.system,
            r.rate,
            r.stats.sent,
            r.stats.failed,
            r.stats.p50_ms,
            r.stats.p99_ms,
            r.stats.p999_ms,
            r.stats.max_ms,
            per_cpu,
            if r.system.starts_with("ours") {
                format!("{} ({})", r.retries, r.retries_refused)
            } else {
                "-".into()
            }
        ));
    }
    for s in &outcome.skipped {
        out.push_str(&format!("\nskipped: {s}"));
    }
    out
}

/// Writes `report.md` and `results.json` into `dir`.
pub fn write(dir: &Path, outcome: &Outcome, command: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join("report.md"),
        format!(
            "# Benchmark results\n\nCommand: `{command}`\n\n{}\n",
            markdown(outcome)
        ),
    )?;
    std::fs::write(
        dir.join("results.json"),
        serde_json::to_string_pretty(outcome).unwrap_or_default(),
    )
}
