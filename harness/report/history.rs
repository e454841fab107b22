//! history.csv and one trend chart per scenario and metric, from the points
//! `analysis::history` gathers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::analysis::history::{followed, Point};
use crate::record::figures::Figure;
use crate::report::{atomic, charts};

/// history.csv: one row per variant per run, in time order.
pub fn render_csv(points: &[Point]) -> Result<String> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let head = [
        "time",
        "scenario",
        "variant",
        "hardware_fingerprint",
        "cpu_model",
        "device",
        "git_commit",
    ];
    let mut header: Vec<String> = head.iter().map(|s| s.to_string()).collect();
    header.extend(followed().map(|f| f.column()));
    header.push("file".into());
    w.write_record(&header)?;
    for p in points {
        let mut row = vec![
            p.time.to_rfc3339(),
            p.scenario.clone(),
            p.variant.clone(),
            p.fingerprint.clone(),
            p.cpu_model.clone(),
            p.device.clone(),
            p.git_commit.clone(),
        ];
        row.extend(p.cells.iter().cloned());
        row.push(p.file.display().to_string());
        w.write_record(&row)?;
    }
    Ok(String::from_utf8(w.into_inner()?)?)
}

/// A file-name-safe form of a scenario name: at most 48 characters of letters, digits,
/// '-', '_' and '.', then a short hash of the whole name, so that two names never share
/// a file and no name can reach outside the folder or past the file-name limit.
pub fn file_slug(name: &str) -> String {
    let mut slug: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .take(48)
        .collect();
    if slug.is_empty() {
        slug.push('_');
    }
    // FNV-1a: stable across builds and platforms, unlike std's hasher.
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{slug}-{:08x}", hash as u32)
}

/// A followed figure's axis on a trend chart: its words, and the unit drawn (bytes as
/// MB).
fn chart_axis(f: &Figure) -> String {
    if f.unit == "B" {
        format!("{} (MB)", f.about)
    } else {
        f.about.to_string()
    }
}

/// What `write` wrote, and what it could not draw (with why).
#[derive(Debug, Default)]
pub struct Written {
    pub files: Vec<PathBuf>,
    pub skipped: Vec<String>,
}

/// Write history.csv and, per scenario and metric, a trend chart (SVG and PNG). A chart
/// that cannot be drawn is skipped and said in `skipped`; the others are still drawn.
pub fn write(points: &[Point], out: &Path) -> Result<Written> {
    crate::fsutil::create_output_dir(out)?;
    let csv_path = out.join("history.csv");
    atomic::write(&csv_path, render_csv(points)?.as_bytes())
        .with_context(|| format!("writing {}", csv_path.display()))?;
    let mut written = Written {
        files: vec![csv_path],
        skipped: Vec::new(),
    };
    let mut by_scenario: BTreeMap<&str, Vec<&Point>> = BTreeMap::new();
    for p in points {
        by_scenario.entry(&p.scenario).or_default().push(p);
    }
    for (scenario, pts) in by_scenario {
        let slug = file_slug(scenario);
        for f in followed() {
            let (metric, desc) = (f.name, chart_axis(&f));
            for ext in ["svg", "png"] {
                let path = out.join(format!("history-{slug}-{metric}.{ext}"));
                match trend_chart(&pts, scenario, metric, &desc, &path) {
                    Ok(()) => written.files.push(path),
                    Err(e) => written.skipped.push(format!("{}: {e:#}", path.display())),
                }
            }
        }
    }
    Ok(written)
}

/// What one trend chart shows.
struct Trend {
    title: String,
    desc: String,
    x_desc: String,
    series: BTreeMap<String, Vec<(f64, f64)>>,
    xmax: f64,
    ymax: f64,
}

fn trend_chart(
    points: &[&Point],
    scenario: &str,
    metric: &str,
    desc: &str,
    path: &Path,
) -> Result<()> {
    let t0 = points.iter().map(|p| p.time).min().unwrap_or_default();
    let span = points
        .iter()
        .map(|p| (p.time - t0).num_seconds())
        .max()
        .unwrap_or(0);
    let (unit, seconds) = if span < 2 * 3600 {
        ("minutes", 60.0)
    } else if span < 3 * 86400 {
        ("hours", 3600.0)
    } else {
        ("days", 86400.0)
    };
    let mut series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for p in points {
        if let Some(v) = p.metric(metric).filter(|v| v.is_finite()) {
            let x = (p.time - t0).num_seconds() as f64 / seconds;
            series.entry(p.series()).or_default().push((x, v));
        }
    }
    // A long name would not fit the caption anyway.
    let shown: String = if scenario.chars().count() > 60 {
        scenario.chars().take(57).chain("...".chars()).collect()
    } else {
        scenario.to_string()
    };
    let trend = Trend {
        title: format!("{shown}: {desc}"),
        desc: desc.to_string(),
        x_desc: format!("{unit} since {}", t0.format("%Y-%m-%d %H:%M UTC")),
        xmax: series
            .values()
            .flatten()
            .map(|p| p.0)
            .fold(0.0, f64::max)
            .max(1e-3),
        ymax: charts::axis_top(series.values().flatten().map(|p| p.1), 1.15),
        series,
    };
    charts::render(path, |a| draw_trend(a, &trend), |a| draw_trend(a, &trend))
}

fn draw_trend<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, t: &Trend) -> Result<()> {
    root.fill(&WHITE).map_err(charts::plot_err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(&t.title, (charts::FONT, 22))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d(-0.02 * t.xmax..t.xmax * 1.02, 0f64..t.ymax)
        .map_err(charts::plot_err)?;
    chart
        .configure_mesh()
        .x_desc(t.x_desc.as_str())
        .y_desc(t.desc.as_str())
        .label_style((charts::FONT, 14))
        .axis_desc_style((charts::FONT, 16))
        .draw()
        .map_err(charts::plot_err)?;
    for (i, (name, pts)) in t.series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
            .map_err(charts::plot_err)?
            .label(name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(3))
            });
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled())))
            .map_err(charts::plot_err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .label_font((charts::FONT, 13))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(charts::plot_err)?;
    root.present().map_err(charts::plot_err)?;
    Ok(())
}
