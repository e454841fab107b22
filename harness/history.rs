//! Trends across many runs: every results.json under some folders, grouped by scenario,
//! variant and hardware fingerprint, as history.csv and one trend chart per metric.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::record::{Moment, RunRecord};
use crate::report::{atomic, charts};

/// One variant of one run, flattened.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub time: DateTime<Utc>,
    pub scenario: String,
    pub variant: String,
    pub fingerprint: String,
    pub cpu_model: String,
    pub device: String,
    pub git_commit: String,
    pub generate_seconds: Option<f64>,
    pub tokens_per_second: Option<f64>,
    pub weights_bytes: Option<u64>,
    pub rss_peak_bytes: Option<u64>,
    pub file: PathBuf,
}

/// The headline metrics history follows.
pub const METRICS: [(&str, &str); 4] = [
    ("generate_seconds", "median generation time (s)"),
    ("tokens_per_second", "median tokens per second"),
    ("weights_bytes", "weight bytes (MB)"),
    (
        "rss_peak_bytes",
        "peak process memory during generation (MB)",
    ),
];

impl Point {
    fn metric(&self, name: &str) -> Option<f64> {
        match name {
            "generate_seconds" => self.generate_seconds,
            "tokens_per_second" => self.tokens_per_second,
            "weights_bytes" => self.weights_bytes.map(|b| b as f64 / 1e6),
            "rss_peak_bytes" => self.rss_peak_bytes.map(|b| b as f64 / 1e6),
            _ => None,
        }
    }

    /// The line a point belongs to in a trend chart.
    pub fn series(&self) -> String {
        format!("{} @ {}", self.variant, self.fingerprint)
    }
}

/// Every results.json under `dirs` (files may be named directly), sorted by path.
pub fn find_results(dirs: &[PathBuf]) -> Vec<PathBuf> {
    use std::collections::HashSet;
    use std::os::unix::fs::MetadataExt;
    type Seen = HashSet<(u64, u64)>;
    // Each folder and each file is taken once by its device and inode: a symbolic link
    // back up the tree (a loop) or a second way to one run adds nothing.
    fn first_visit(p: &Path, seen: &mut Seen) -> bool {
        std::fs::metadata(p).is_ok_and(|m| seen.insert((m.dev(), m.ino())))
    }
    fn walk(p: &Path, out: &mut Vec<PathBuf>, dirs: &mut Seen, files: &mut Seen, depth: usize) {
        if p.is_file() {
            if first_visit(p, files) {
                out.push(p.to_path_buf());
            }
        } else if p.is_dir() && depth < 16 && first_visit(p, dirs) {
            if let Ok(rd) = std::fs::read_dir(p) {
                let mut entries: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
                entries.sort();
                for path in entries {
                    if path.is_dir() {
                        walk(&path, out, dirs, files, depth + 1);
                    } else if path.file_name().is_some_and(|n| n == "results.json")
                        && first_visit(&path, files)
                    {
                        out.push(path);
                    }
                }
            }
        }
    }
    let mut out = Vec::new();
    let (mut dirs_seen, mut files_seen) = (Seen::new(), Seen::new());
    for d in dirs {
        walk(d, &mut out, &mut dirs_seen, &mut files_seen, 0);
    }
    out.sort();
    out
}

/// Read every file; the ones that cannot be read come back as (file, problem).
pub fn load(files: &[PathBuf]) -> (Vec<Point>, Vec<(PathBuf, String)>) {
    let mut points = Vec::new();
    let mut problems = Vec::new();
    for f in files {
        match crate::report::read_results(f) {
            Ok(run) => points.extend(points_of(&run, f)),
            Err(e) => problems.push((f.clone(), format!("{e:#}"))),
        }
    }
    points.sort_by(|a, b| a.time.cmp(&b.time).then(a.variant.cmp(&b.variant)));
    (points, problems)
}

fn points_of(run: &RunRecord, file: &Path) -> Vec<Point> {
    let time = DateTime::parse_from_rfc3339(&run.started_at)
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default();
    run.variants
        .iter()
        .filter(|v| v.is_ok())
        .map(|v| Point {
            time,
            scenario: run.scenario.name.clone(),
            variant: v.precision.to_string(),
            fingerprint: run.environment.hardware_fingerprint.clone(),
            cpu_model: run.environment.cpu_model.clone(),
            device: run.environment.device.clone(),
            git_commit: run.environment.git_commit.clone(),
            generate_seconds: v.timing.as_ref().map(|t| t.generate_seconds.median),
            tokens_per_second: v.timing.as_ref().map(|t| t.tokens_per_second.median),
            weights_bytes: v.weights_bytes,
            rss_peak_bytes: v.memory_at(Moment::Peak, "process_rss_bytes"),
            file: file.to_path_buf(),
        })
        .collect()
}

/// history.csv: one row per variant per run, in time order.
pub fn render_csv(points: &[Point]) -> Result<String> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "time",
        "scenario",
        "variant",
        "hardware_fingerprint",
        "cpu_model",
        "device",
        "git_commit",
        "generate_seconds_median",
        "tokens_per_second_median",
        "weights_bytes",
        "rss_peak_bytes",
        "file",
    ])?;
    let num = |v: Option<f64>| v.map(|x| x.to_string()).unwrap_or_default();
    for p in points {
        w.write_record([
            p.time.to_rfc3339(),
            p.scenario.clone(),
            p.variant.clone(),
            p.fingerprint.clone(),
            p.cpu_model.clone(),
            p.device.clone(),
            p.git_commit.clone(),
            num(p.generate_seconds),
            num(p.tokens_per_second),
            p.weights_bytes.map(|b| b.to_string()).unwrap_or_default(),
            p.rss_peak_bytes.map(|b| b.to_string()).unwrap_or_default(),
            p.file.display().to_string(),
        ])?;
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
        for (metric, desc) in METRICS {
            for ext in ["svg", "png"] {
                let path = out.join(format!("history-{slug}-{metric}.{ext}"));
                match trend_chart(&pts, scenario, metric, desc, &path) {
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
