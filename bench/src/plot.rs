//! SVG plots (plotters): for every scenario the latency-by-percentile curve of each system,
//! and for the failover and reload scenarios the answers per second over the run.

use std::path::Path;

use plotters::coord::CoordTranslate;
use plotters::prelude::*;

use crate::load::BUCKET;
use crate::scenarios::{Outcome, Row};

type PlotResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// Draws every plot the outcome has data for into `dir`; returns the file names.
pub fn draw_all(dir: &Path, outcome: &Outcome) -> std::io::Result<Vec<String>> {
    let mut scenarios: Vec<&str> = Vec::new();
    for r in &outcome.rows {
        if !scenarios.contains(&r.scenario.as_str()) {
            scenarios.push(&r.scenario);
        }
    }
    let mut files = Vec::new();
    for scenario in scenarios {
        let rows: Vec<&Row> = outcome
            .rows
            .iter()
            .filter(|r| r.scenario == scenario && !r.stats.curve.is_empty())
            .collect();
        if rows.is_empty() {
            continue;
        }
        let name = format!("{scenario}-latency.svg");
        latency_curves(&dir.join(&name), scenario, &rows).map_err(std::io::Error::other)?;
        files.push(name);
        if scenario.starts_with("failover")
            || scenario.starts_with("deploy")
            || scenario == "reload"
        {
            let name = format!("{scenario}-throughput.svg");
            throughput(&dir.join(&name), scenario, &rows).map_err(std::io::Error::other)?;
            files.push(name);
        }
    }
    if outcome.rows.iter().any(|r| r.scenario == "catalogue-reads") {
        let name = "catalogue-p99.svg".to_string();
        catalogue_p99(&dir.join(&name), &outcome.rows).map_err(std::io::Error::other)?;
        files.push(name);
    }
    Ok(files)
}

/// Read p99 against catalogue size, one line per backend and write rate.
fn catalogue_p99(path: &Path, rows: &[Row]) -> PlotResult {
    let cells: Vec<(&Row, &crate::catalogue::Cell)> = rows
        .iter()
        .filter(|r| r.scenario == "catalogue-reads")
        .filter_map(|r| Some((r, r.catalogue.as_ref()?)))
        .collect();
    let mut series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for (row, cell) in &cells {
        let name = format!("{}, {:.0} writes/s", cell.backend, cell.writes_per_second);
        let point = (cell.courses as f64, row.stats.p99_ms.max(0.01));
        match series.iter_mut().find(|(n, _)| *n == name) {
            Some((_, points)) => points.push(point),
            None => series.push((name, vec![point])),
        }
    }
    let (x_lo, x_hi) = cells.iter().fold((f64::MAX, 0f64), |(lo, hi), (_, c)| {
        (lo.min(c.courses as f64), hi.max(c.courses as f64))
    });
    let y_hi = cells
        .iter()
        .map(|(r, _)| r.stats.p99_ms)
        .fold(20.0, f64::max);
    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("catalogue: read p99 by catalogue size", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(
            ((x_lo / 2.0).max(1.0)..x_hi * 2.0).log_scale(),
            (0.1f64..y_hi * 2.0).log_scale(),
        )?;
    chart
        .configure_mesh()
        .x_desc("courses (log scale)")
        .y_desc("read p99 (ms, log scale)")
        .draw()?;
    // The goal: p99 at most 20 ms.
    chart.draw_series(LineSeries::new(
        [(x_lo / 2.0, 20.0), (x_hi * 2.0, 20.0)],
        BLACK.mix(0.4).stroke_width(1),
    ))?;
    for (i, (name, points)) in series.into_iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// `x = -log10(1 - q)`: 50 % at 0.3, 90 % at 1, 99 % at 2, 99.99 % at 4, so the tail gets
/// the room.
fn tail_axis(q: f64) -> f64 {
    -(1.0 - q).log10()
}

fn percentile_label(x: &f64) -> String {
    let p = 100.0 * (1.0 - 10f64.powf(-x));
    let text = format!("{p:.2}");
    format!("{}%", text.trim_end_matches('0').trim_end_matches('.'))
}

fn latency_curves(path: &Path, scenario: &str, rows: &[&Row]) -> PlotResult {
    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let (lo, hi) = rows
        .iter()
        .flat_map(|r| r.stats.curve.iter().map(|p| p.1))
        .fold((f64::MAX, 0f64), |(lo, hi), y| (lo.min(y), hi.max(y)));
    let (lo, hi) = ((lo / 2.0).max(0.001), (hi * 2.0).max(0.01));
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{scenario}: latency by percentile"),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..4.05f64, (lo..hi).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (ms, log scale)")
        .x_labels(5)
        .x_label_formatter(&percentile_label)
        .draw()?;
    lines(&mut chart, rows, SeriesLabelPosition::UpperLeft, |r| {
        r.stats
            .curve
            .iter()
            .map(|&(q, ms)| (tail_axis(q), ms.max(lo)))
            .collect()
    })?;
    root.present()?;
    Ok(())
}

/// One line per row, in the palette's order, with a legend at `position`.
fn lines<'a, CT>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, CT>,
    rows: &[&Row],
    position: SeriesLabelPosition,
    points: impl Fn(&Row) -> Vec<CT::From>,
) -> PlotResult
where
    CT: CoordTranslate,
    CT::From: Clone + 'static,
{
    for (i, r) in rows.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(points(r), color.stroke_width(2)))?
            .label(r.system.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

fn throughput(path: &Path, scenario: &str, rows: &[&Row]) -> PlotResult {
    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let per_second = 1.0 / BUCKET.as_secs_f64();
    let seconds = rows
        .iter()
        .map(|r| r.stats.timeline.len())
        .max()
        .unwrap_or(0) as f64
        * BUCKET.as_secs_f64();
    let top = rows
        .iter()
        .flat_map(|r| r.stats.timeline.iter())
        .max()
        .copied()
        .unwrap_or(0) as f64
        * per_second;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{scenario}: answers per second"),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..seconds.max(0.1), 0f64..(top * 1.15).max(1.0))?;
    chart
        .configure_mesh()
        .x_desc("seconds into the run")
        .y_desc("successful answers / s (100 ms buckets)")
        .draw()?;
    lines(&mut chart, rows, SeriesLabelPosition::LowerLeft, |r| {
        r.stats
            .timeline
            .iter()
            .enumerate()
            .map(|(b, &n)| {
                (
                    (b as f64 + 0.5) * BUCKET.as_secs_f64(),
                    n as f64 * per_second,
                )
            })
            .collect()
    })?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_axis_labels_read_as_percentiles() {
        assert_eq!(percentile_label(&tail_axis(0.99)), "99%");
        assert_eq!(percentile_label(&tail_axis(0.999)), "99.9%");
        assert_eq!(percentile_label(&tail_axis(0.5)), "50%");
    }
}
