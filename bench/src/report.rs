//! Results as a Markdown table (stdout and `report.md`), JSON (`results.json`) and SVG plots
//! ([`crate::plot`]).

use std::path::Path;

use crate::scenarios::{Outcome, Row};

/// Whether a row measured a peer (HAProxy or nginx).
fn is_peer(row: &Row) -> bool {
    row.system.starts_with("haproxy") || row.system.starts_with("nginx")
}

/// The row against the best peer of its scenario: req/s for closed-loop runs (higher is
/// better), p99 for open-loop ones (lower is better).
fn vs_best_peer(row: &Row, rows: &[Row]) -> String {
    let peers = rows
        .iter()
        .filter(|r| r.scenario == row.scenario && is_peer(r));
    if row.connections > 0 {
        let best = peers.map(|r| r.stats.throughput).fold(0.0, f64::max);
        if best > 0.0 {
            return format!("{:.2}× req/s", row.stats.throughput / best);
        }
    } else {
        let best = peers.map(|r| r.stats.p99_ms).fold(f64::INFINITY, f64::min);
        if best.is_finite() && best > 0.0 {
            return format!("{:.2}× p99", row.stats.p99_ms / best);
        }
    }
    "-".into()
}

/// The Markdown table of every row, with the peers that were skipped.
pub fn markdown(outcome: &Outcome) -> String {
    let mut out = String::from(
        "| scenario | system | load | sent | failed | req/s | p50 ms | p99 ms | p99.9 ms | max ms | req per CPU-s | vs best peer | notes |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in &outcome.rows {
        let per_cpu = if r.cpu_seconds > 0.0 {
            format!("{:.0}", r.stats.ok as f64 / r.cpu_seconds)
        } else {
            "-".into()
        };
        let load = if r.connections > 0 {
            match r.generator {
                Some(crate::load::Generator::Wrk) => format!("wrk, {} conns", r.connections),
                _ => format!("closed, {} conns", r.connections),
            }
        } else if r.generator == Some(crate::load::Generator::Paced) {
            format!(
                "{:.0}/s paced, {} conns",
                r.rate,
                crate::scenarios::MAX_CONNECTIONS
            )
        } else if r.rate > 0.0 {
            format!("{:.0}/s", r.rate)
        } else {
            "one write at a time".into()
        };
        let mut notes = Vec::new();
        if r.system.starts_with("ours") && r.rate > 0.0 {
            notes.push(format!(
                "retries {} ({} refused)",
                r.retries, r.retries_refused
            ));
        }
        if r.rounds.len() > 1 {
            let low = r.rounds.iter().copied().fold(f64::INFINITY, f64::min);
            let high = r.rounds.iter().copied().fold(0.0, f64::max);
            notes.push(format!(
                "median of {} runs ({low:.0}–{high:.0} req/s)",
                r.rounds.len()
            ));
        }
        if r.reloads > 0 {
            notes.push(format!("{} reloads", r.reloads));
        }
        if let Some(cell) = &r.catalogue {
            notes.push(format!(
                "cluster ready in {:.1} s; largest instance {:.0} MiB",
                cell.ready_seconds, cell.rss_mib
            ));
        }
        if r.scenario.ends_with("-freshness") {
            notes.push("ms: write answered → new data served by every other instance".into());
        }
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.1} | {} | {} | {} |\n",
            r.scenario,
            r.system,
            load,
            r.stats.sent,
            r.stats.failed,
            r.stats.throughput,
            r.stats.p50_ms,
            r.stats.p99_ms,
            r.stats.p999_ms,
            r.stats.max_ms,
            per_cpu,
            vs_best_peer(r, &outcome.rows),
            notes.join("; "),
        ));
    }
    for s in &outcome.skipped {
        out.push_str(&format!("\nskipped: {s}"));
    }
    out
}

/// Writes `report.md`, `results.json` and the SVG plots into `dir`.
pub fn write(dir: &Path, outcome: &Outcome, command: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let plots = crate::plot::draw_all(dir, outcome)?;
    let images: String = plots
        .iter()
        .map(|name| format!("![{name}]({name})\n"))
        .collect();
    std::fs::write(
        dir.join("report.md"),
        format!(
            "# Benchmark results\n\nCommand: `{command}`\n\n{}\n\n{images}",
            markdown(outcome)
        ),
    )?;
    std::fs::write(
        dir.join("results.json"),
        serde_json::to_string_pretty(outcome).unwrap_or_default(),
    )
}
