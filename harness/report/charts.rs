//! Charts with plotters, as SVG or PNG (picked by the file's extension): memory per
//! variant as grouped bars, and latency as lines with min–max whiskers.
//!
//! PNG text needs a font: DejaVu Sans ships inside the binary (assets/fonts), so a fresh
//! machine with no fonts installed renders the same labels.

use std::path::Path;
use std::sync::Once;

use anyhow::{anyhow, Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{register_font, FontStyle};

use super::{atomic, mb, RSS};
use crate::precision::Family;
use crate::record::{Moment, RunRecord, VariantRecord};

pub(crate) const FONT: &str = "sans-serif";
const SIZE: (u32, u32) = (1200, 650);

/// Black text of `size` px anchored at (h, v) of its position.
fn anchored(size: u32, h: HPos, v: VPos) -> TextStyle<'static> {
    (FONT, size).into_font().color(&BLACK).pos(Pos::new(h, v))
}

fn ensure_font() {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        let bytes: &'static [u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
        for style in [FontStyle::Normal, FontStyle::Bold] {
            if register_font(FONT, style, bytes).is_err() {
                panic!("the bundled font assets/fonts/DejaVuSans.ttf does not parse");
            }
        }
    });
}

/// Draw with an SVG or PNG backend, chosen by `path`'s extension, atomically.
pub(crate) fn render(
    path: &Path,
    draw: impl Fn(DrawingArea<SVGBackend, Shift>) -> Result<()>,
    draw_png: impl Fn(DrawingArea<BitMapBackend, Shift>) -> Result<()>,
) -> Result<()> {
    ensure_font();
    atomic::check_target(path)?;
    let tmp = atomic::temp_beside(path);
    let result = match path.extension().and_then(|e| e.to_str()) {
        Some("svg") => draw(SVGBackend::new(&tmp, SIZE).into_drawing_area()),
        Some("png") => draw_png(BitMapBackend::new(&tmp, SIZE).into_drawing_area()),
        other => Err(anyhow!("charts are .svg or .png, not {other:?}")),
    };
    atomic::finish(&tmp, path, result).with_context(|| format!("writing chart {}", path.display()))
}

pub(crate) fn plot_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing a chart: {e:?}")
}

/// The largest value a linear axis reaches: far beyond any real measurement, small
/// enough that the axis stays finite however a results file was edited.
const AXIS_CAP: f64 = 1e15;

/// The top of a linear axis from 0 that holds `values` with `margin` (1.2 = 20% above):
/// non-finite values are ignored and the result is finite, positive and bounded.
pub(crate) fn axis_top(values: impl IntoIterator<Item = f64>, margin: f64) -> f64 {
    let max = values
        .into_iter()
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max)
        .min(AXIS_CAP);
    if max > 0.0 {
        max * margin
    } else {
        1.0
    }
}

/// A value as drawn on an axis from 0 to `top`: non-finite values are not drawn.
fn drawable(v: f64, top: f64) -> Option<f64> {
    v.is_finite().then(|| v.clamp(0.0, top))
}

/// Memory per variant: process RSS before load, after load, peak, after cleanup, and the
/// exact weight bytes, as grouped bars (MB).
pub fn memory(run: &RunRecord, path: &Path) -> Result<()> {
    render(path, |a| draw_memory(a, run), |a| draw_memory(a, run))
}

/// Generation time (median with min–max whiskers) and decode tokens/s per variant.
pub fn latency(run: &RunRecord, path: &Path) -> Result<()> {
    render(path, |a| draw_latency(a, run), |a| draw_latency(a, run))
}

const SERIES: [(&str, RGBColor); 5] = [
    ("RSS before load", RGBColor(158, 202, 225)),
    ("RSS after load", RGBColor(49, 130, 189)),
    ("RSS peak during generation", RGBColor(8, 48, 107)),
    ("RSS after cleanup", RGBColor(189, 189, 189)),
    ("weights (exact bytes)", RGBColor(230, 85, 13)),
];

fn memory_values(v: &VariantRecord) -> [Option<f64>; 5] {
    let rss = |m| v.memory_at(m, RSS).map(mb);
    [
        rss(Moment::BeforeLoad),
        rss(Moment::AfterLoad),
        rss(Moment::Peak),
        rss(Moment::AfterCleanup),
        v.weights_bytes.map(mb),
    ]
}

fn title(run: &RunRecord, what: &str) -> String {
    let model = &run.model.spec;
    let synthetic = if run.model.synthetic {
        " (synthetic weights)"
    } else {
        ""
    };
    format!(
        "{what} — {model} [{}]{synthetic} on {}",
        run.model.architecture, run.environment.device
    )
}

fn draw_memory<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, run: &RunRecord) -> Result<()> {
    root.fill(&WHITE).map_err(plot_err)?;
    let n = run.variants.len().max(1);
    let values: Vec<[Option<f64>; 5]> = run.variants.iter().map(memory_values).collect();
    let top = axis_top(values.iter().flatten().flatten().cloned(), 1.18);
    let values: Vec<[Option<f64>; 5]> = values
        .iter()
        .map(|vals| vals.map(|v| v.and_then(|v| drawable(v, top))))
        .collect();
    let mut chart = ChartBuilder::on(&root)
        .caption(title(run, "Memory per variant"), (FONT, 24))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), 0f64..top)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .disable_x_axis()
        .y_desc("megabytes (10^6 bytes)")
        .label_style((FONT, 16))
        .axis_desc_style((FONT, 18))
        .draw()
        .map_err(plot_err)?;
    let width = 0.8 / SERIES.len() as f64;
    for (s, (label, color)) in SERIES.iter().enumerate() {
        let bars = values.iter().enumerate().filter_map(|(i, vals)| {
            vals[s].map(|v| {
                let x0 = i as f64 - 0.4 + s as f64 * width;
                Rectangle::new([(x0 + 0.01, 0.0), (x0 + width - 0.01, v)], color.filled())
            })
        });
        let c = *color;
        chart
            .draw_series(bars)
            .map_err(plot_err)?
            .label(*label)
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], c.filled()));
        let labels = values.iter().enumerate().filter_map(|(i, vals)| {
            vals[s].map(|v| {
                let x = i as f64 - 0.4 + (s as f64 + 0.5) * width;
                Text::new(
                    format!("{v:.0}"),
                    (x, v + top * 0.01),
                    anchored(13, HPos::Center, VPos::Bottom),
                )
            })
        });
        chart.draw_series(labels).map_err(plot_err)?;
    }
    category_labels(&root, &chart, run)?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font((FONT, 15))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(plot_err)?;
    root.present().map_err(plot_err)?;
    Ok(())
}

/// Variant names (and "failed") under each group, drawn in pixel space.
fn category_labels<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    chart: &ChartContext<
        DB,
        Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
    >,
    run: &RunRecord,
) -> Result<()> {
    // backend_coord is in the whole image's pixels; `root` may be a panel of it.
    let (bx, by) = root.get_base_pixel();
    for (i, v) in run.variants.iter().enumerate() {
        let (x, y) = chart.backend_coord(&(i as f64, 0.0));
        let (x, y) = (x - bx, y - by);
        let text = if v.is_ok() {
            v.key()
        } else {
            format!("{} (failed)", v.key())
        };
        let style = anchored(18, HPos::Center, VPos::Top);
        root.draw(&Text::new(text, (x, y + 10), style))
            .map_err(plot_err)?;
    }
    Ok(())
}

fn draw_latency<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, run: &RunRecord) -> Result<()> {
    root.fill(&WHITE).map_err(plot_err)?;
    let root = root
        .titled(&title(run, "Latency per variant"), (FONT, 24))
        .map_err(plot_err)?;
    let (left, right) = root.split_horizontally(SIZE.0 / 2);
    let gen: Vec<Option<(f64, f64, f64)>> = run
        .variants
        .iter()
        .map(|v| {
            v.timing.as_ref().map(|t| {
                (
                    t.generate_seconds.min,
                    t.generate_seconds.median,
                    t.generate_seconds.max,
                )
            })
        })
        .collect();
    let tps: Vec<Option<(f64, f64, f64)>> = run
        .variants
        .iter()
        .map(|v| {
            v.timing
                .as_ref()
                .and_then(|t| t.decode_tokens_per_second.as_ref())
                .map(|d| (d.min, d.median, d.max))
        })
        .collect();
    panel(
        &left,
        run,
        &gen,
        &format!(
            "{}-token generation time (median, min–max)",
            run.scenario.new_tokens
        ),
        "seconds",
        RGBColor(49, 130, 189),
        |v| format!("{v:.3} s"),
    )?;
    panel(
        &right,
        run,
        &tps,
        "decode throughput (median, min–max)",
        "tokens per second",
        RGBColor(230, 85, 13),
        |v| format!("{v:.1}"),
    )?;
    root.present().map_err(plot_err)?;
    Ok(())
}

fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    run: &RunRecord,
    points: &[Option<(f64, f64, f64)>],
    caption: &str,
    y_desc: &str,
    color: RGBColor,
    fmt: impl Fn(f64) -> String,
) -> Result<()> {
    let n = points.len().max(1);
    let top = axis_top(points.iter().flatten().map(|p| p.2), 1.25);
    // Points with a non-finite figure are not drawn; the rest are kept on the axis.
    let points: Vec<Option<(f64, f64, f64)>> = points
        .iter()
        .map(|p| {
            p.and_then(|(lo, mid, hi)| {
                Some((drawable(lo, top)?, drawable(mid, top)?, drawable(hi, top)?))
            })
        })
        .collect();
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FONT, 18))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), 0f64..top)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .disable_x_axis()
        .y_desc(y_desc)
        .label_style((FONT, 15))
        .axis_desc_style((FONT, 16))
        .draw()
        .map_err(plot_err)?;
    let ok: Vec<(f64, (f64, f64, f64))> = points
        .iter()
        .enumerate()
        .filter_map(|(i, p)| p.map(|p| (i as f64, p)))
        .collect();
    chart
        .draw_series(LineSeries::new(
            ok.iter().map(|(x, p)| (*x, p.1)),
            color.stroke_width(3),
        ))
        .map_err(plot_err)?;
    chart
        .draw_series(
            ok.iter()
                .map(|(x, p)| ErrorBar::new_vertical(*x, p.0, p.1, p.2, color.stroke_width(2), 16)),
        )
        .map_err(plot_err)?;
    chart
        .draw_series(
            ok.iter()
                .map(|(x, p)| Circle::new((*x, p.1), 6, color.filled())),
        )
        .map_err(plot_err)?;
    chart
        .draw_series(ok.iter().map(|(x, p)| {
            Text::new(
                fmt(p.1),
                (*x + 0.06, p.1),
                anchored(15, HPos::Left, VPos::Bottom),
            )
        }))
        .map_err(plot_err)?;
    category_labels(area, &chart, run)?;
    Ok(())
}

/// Each variant's weight bytes against its mean KL divergence from f32 (log scale): the
/// best trade-offs sit low and to the left.
pub fn quality(run: &RunRecord, path: &Path) -> Result<()> {
    render(path, |a| draw_quality(a, run), |a| draw_quality(a, run))
}

/// One variant on the quality chart.
struct QualityPoint {
    name: String,
    /// Weight bytes, MB.
    mb: f64,
    kl: f64,
    /// Passed its quality gate (or had none).
    ok: bool,
    family: Family,
}

/// The variants with a finite KL and known weight bytes (an absent or non-finite KL has
/// no place on the chart: report.md says n/a).
fn quality_points(run: &RunRecord) -> Vec<QualityPoint> {
    run.variants
        .iter()
        .filter_map(|v| {
            let q = v.quality.as_ref()?;
            let kl = q.kl_mean.filter(|k| k.is_finite() && *k >= 0.0)?;
            Some(QualityPoint {
                name: v.key(),
                mb: mb(v.weights_bytes?),
                kl,
                ok: q.gate.as_ref().is_none_or(|g| g.passed),
                family: v.precision.family(),
            })
        })
        .collect()
}

/// The log axis spans at most KL_RANGE: a KL beyond it is drawn at the edge, with its
/// true value in the label.
const KL_RANGE: (f64, f64) = (1e-15, 1e4);

/// The KL axis (log scale): a decade below the smallest positive KL to 5× the largest.
fn kl_axis(pts: &[QualityPoint]) -> (f64, f64) {
    let positive: Vec<f64> = pts
        .iter()
        .map(|p| p.kl.clamp(KL_RANGE.0, KL_RANGE.1))
        .filter(|&k| k > KL_RANGE.0)
        .collect();
    let lo = positive.iter().cloned().fold(f64::INFINITY, f64::min);
    let hi = positive.iter().cloned().fold(0.0, f64::max);
    if positive.is_empty() {
        (1e-6, 1e-2)
    } else {
        ((lo / 10.0).max(KL_RANGE.0 / 10.0), hi * 5.0)
    }
}

fn draw_quality<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, run: &RunRecord) -> Result<()> {
    root.fill(&WHITE).map_err(plot_err)?;
    let pts = quality_points(run);
    if pts.is_empty() {
        let style = (FONT, 22).into_font().color(&BLACK);
        root.draw(&Text::new(
            "no quality results (the quality pass was off or failed)",
            (60, (SIZE.1 / 2) as i32),
            style,
        ))
        .map_err(plot_err)?;
        root.present().map_err(plot_err)?;
        return Ok(());
    }
    let (lo, hi) = kl_axis(&pts);
    let floor = lo * 1.5; // where a KL of exactly 0 is drawn
                          // The x axis spans the sizes shown (with room for the labels), not 0..max: formats of
                          // nearly one size would otherwise sit on top of each other.
    let (x_lo, x_hi) = pts.iter().fold((f64::INFINITY, 0f64), |(a, b), p| {
        (a.min(p.mb), b.max(p.mb))
    });
    let pad = 0.08 * (x_hi - x_lo) + 0.02 * x_hi.max(1.0);
    let xmin = (x_lo - pad).max(0.0);
    let xmax = axis_top(pts.iter().map(|p| p.mb), 1.0).max(x_hi + 3.0 * pad);
    let at = |k: f64| k.clamp(floor, hi / 2.0);
    let mut chart = ChartBuilder::on(&root)
        .caption(title(run, "Quality against size"), (FONT, 24))
        .margin(20)
        .x_label_area_size(60)
        .y_label_area_size(100)
        .build_cartesian_2d(xmin..xmax, (lo..hi).log_scale())
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("weights (MB)")
        .y_desc("mean KL(f32 || variant), nats (log scale)")
        .y_label_formatter(&|v| format!("{v:.0e}"))
        .label_style((FONT, 15))
        .axis_desc_style((FONT, 17))
        .draw()
        .map_err(plot_err)?;
    // One colour and marker per format family; a variant that fails its quality gate is
    // drawn hollow (and its label says so).
    for fam in [
        Family::Float,
        Family::Ggml,
        Family::Bitsandbytes,
        Family::PyTorch,
        Family::File,
    ] {
        let mine: Vec<&QualityPoint> = pts.iter().filter(|p| p.family == fam).collect();
        if mine.is_empty() {
            continue;
        }
        let c = family_colour(fam);
        let style = |ok: bool| {
            if ok {
                c.filled()
            } else {
                c.stroke_width(2)
            }
        };
        let series = chart
            .draw_series(mine.iter().map(|p| {
                let pos = (p.mb.min(xmax), at(p.kl));
                match fam {
                    Family::Bitsandbytes => TriangleMarker::new(pos, 10, style(p.ok)).into_dyn(),
                    Family::PyTorch => Cross::new(pos, 8, c.stroke_width(3)).into_dyn(),
                    _ => Circle::new(pos, 8, style(p.ok)).into_dyn(),
                }
            }))
            .map_err(plot_err)?;
        series
            .label(fam.name())
            .legend(move |(x, y)| Circle::new((x, y), 6, c.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FONT, 15))
        .draw()
        .map_err(plot_err)?;
    let frame = LabelFrame {
        xmin,
        xmax,
        lo,
        hi,
        floor,
    };
    let (labels, leaders) = quality_labels(&pts, &frame);
    chart.draw_series(leaders).map_err(plot_err)?;
    chart.draw_series(labels).map_err(plot_err)?;
    root.present().map_err(plot_err)?;
    Ok(())
}

/// A point's label on the quality chart.
type Label = Text<'static, (f64, f64), String>;
/// The thin line from a moved label back to its point.
type Leader = PathElement<(f64, f64)>;

/// The quality chart's axes, as the labels need them.
struct LabelFrame {
    xmin: f64,
    xmax: f64,
    lo: f64,
    hi: f64,
    floor: f64,
}

/// Labels to the right of their points; a label that would overlap one already placed
/// moves to the nearest free slot above or below (in steps of one label height), with a
/// thin line back to its point: points of one size and similar KL (the 4-bit formats)
/// each keep a readable label.
fn quality_labels(pts: &[QualityPoint], f: &LabelFrame) -> (Vec<Label>, Vec<Leader>) {
    let LabelFrame {
        xmin,
        xmax,
        lo,
        hi,
        floor,
    } = *f;
    let at = |k: f64| k.clamp(floor, hi / 2.0);
    let decades = (hi / lo).log10();
    let step = decades * 18.0 / 480.0; // one label's height, in decades
    let per_char = (xmax - xmin) * 8.0 / 1000.0; // one character's width, in MB
    let mut order: Vec<usize> = (0..pts.len()).collect();
    order.sort_by(|&a, &b| at(pts[b].kl).total_cmp(&at(pts[a].kl)));
    // (x where the label starts, its width, its height in log10 units)
    let mut placed: Vec<(f64, f64, f64)> = Vec::new();
    let mut labels = Vec::new();
    let mut leaders = Vec::new();
    for i in order {
        let QualityPoint {
            name,
            mb: x,
            kl: k,
            ok,
            ..
        } = &pts[i];
        let label = if *k == 0.0 {
            format!("{name} (reference, KL 0)")
        } else if *ok {
            format!("{name}  {k:.2e}")
        } else {
            format!("{name}  {k:.2e}  fails gate")
        };
        let lx = x.min(xmax) + (xmax - xmin) * 0.012;
        let w = label.chars().count() as f64 * per_char;
        let free = |ly: f64| {
            !placed
                .iter()
                .any(|(px, pw, py)| lx < px + pw && *px < lx + w && (ly - py).abs() < step)
        };
        let y0 = at(*k).log10();
        let ly = (0..40)
            .map(|j: i32| {
                let n = (j + 1) / 2;
                y0 + if j % 2 == 1 { -1.0 } else { 1.0 } * n as f64 * step
            })
            .find(|&ly| free(ly))
            .unwrap_or(y0);
        placed.push((lx, w, ly));
        if (ly - y0).abs() > step / 2.0 {
            leaders.push(PathElement::new(
                vec![(x.min(xmax), at(*k)), (lx, 10f64.powf(ly))],
                BLACK.mix(0.4).stroke_width(1),
            ));
        }
        labels.push(Text::new(
            label,
            (lx + per_char * 0.5, 10f64.powf(ly).clamp(lo, hi)),
            anchored(15, HPos::Left, VPos::Center),
        ));
    }
    (labels, leaders)
}

/// The colour of a format family on the quality chart.
fn family_colour(f: Family) -> RGBColor {
    match f {
        Family::Float => RGBColor(99, 99, 99),
        Family::Ggml => RGBColor(49, 130, 189),
        Family::Bitsandbytes => RGBColor(230, 85, 13),
        Family::PyTorch => RGBColor(49, 163, 84),
        Family::File => RGBColor(117, 107, 177),
    }
}

const PALETTE: [RGBColor; 12] = [
    RGBColor(49, 130, 189),
    RGBColor(230, 85, 13),
    RGBColor(49, 163, 84),
    RGBColor(117, 107, 177),
    RGBColor(215, 48, 39),
    RGBColor(99, 99, 99),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
    RGBColor(255, 152, 60),
    RGBColor(0, 0, 0),
];

/// Named lines (drawn with their points) and named point sets (hollow markers, no line).
type Series = [(String, Vec<(f64, f64)>)];

/// Whether the run holds workload tests (then the context charts are drawn).
pub fn has_tests(run: &RunRecord) -> bool {
    run.variants.iter().any(|v| !v.tests.is_empty())
}

/// Decode tokens/s against context depth: one line per variant and test shape (prompt,
/// new tokens, batch, threads), so the cost of a fuller cache is visible per precision.
pub fn depth(run: &RunRecord, path: &Path) -> Result<()> {
    let mut lines: std::collections::BTreeMap<(usize, String), Vec<(f64, f64)>> =
        Default::default();
    for (i, v) in run.variants.iter().enumerate() {
        for t in &v.tests {
            let Some(rate) = t.decode_tokens_per_second.map(|s| s.median) else {
                continue;
            };
            let mut shape = t.test;
            shape.depth = 0;
            let key = (i, format!("{} {}", v.key(), shape.name()));
            lines
                .entry(key)
                .or_default()
                .push((t.test.depth as f64, rate));
        }
    }
    let series: Vec<(String, Vec<(f64, f64)>)> =
        lines.into_iter().map(|((_, k), v)| (k, v)).collect();
    let caption = title(run, "Decode speed against context depth");
    let (x, y) = (
        "depth: tokens in the KV cache before the test",
        "decode tokens per second (median)",
    );
    render(
        path,
        |a| draw_lines(a, &caption, x, y, &series, &[]),
        |a| draw_lines(a, &caption, x, y, &series, &[]),
    )
}

/// Memory against context: per variant, its exact weight bytes plus the KV cache at each
/// test's context (lines), and the process's measured peak during each test (markers):
/// the gap is the runtime's own (activations, buffers, allocator).
pub fn context_memory(run: &RunRecord, path: &Path) -> Result<()> {
    let mut exact: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    let mut measured: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for v in &run.variants {
        let Some(w) = v.weights_bytes else { continue };
        let mut line: Vec<(f64, f64)> = Vec::new();
        let mut peaks: Vec<(f64, f64)> = Vec::new();
        for t in &v.tests {
            let ctx = (t.positions * t.test.batch) as f64;
            line.push((ctx, mb(w + t.kv_cache_bytes)));
            if let Some(p) = t.memory_peak.as_ref().and_then(|r| r.get(RSS)) {
                peaks.push((ctx, mb(p)));
            }
        }
        if line.is_empty() {
            continue;
        }
        line.sort_by(|a, b| a.0.total_cmp(&b.0));
        line.dedup_by(|a, b| a.0 == b.0);
        exact.push((format!("{}: weights + KV cache (exact)", v.key()), line));
        measured.push((format!("{}: process peak (measured)", v.key()), peaks));
    }
    let caption = title(run, "Memory against context");
    let x = "positions held in the KV cache (all sequences)";
    render(
        path,
        |a| draw_lines(a, &caption, x, "MB", &exact, &measured),
        |a| draw_lines(a, &caption, x, "MB", &exact, &measured),
    )
}

fn draw_lines<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    caption: &str,
    x_desc: &str,
    y_desc: &str,
    lines: &Series,
    markers: &Series,
) -> Result<()> {
    root.fill(&WHITE).map_err(plot_err)?;
    let all = || lines.iter().chain(markers).flat_map(|(_, p)| p.iter());
    let xmax = axis_top(all().map(|p| p.0), 1.05);
    // Room above the data for the legend (one line per series).
    let rows = (lines.len() + markers.len()) as f64;
    let ymax = axis_top(all().map(|p| p.1), 1.15 + 0.045 * rows);
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, (FONT, 22))
        .margin(20)
        .x_label_area_size(60)
        .y_label_area_size(90)
        .build_cartesian_2d(0f64..xmax, 0f64..ymax)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .label_style((FONT, 15))
        .axis_desc_style((FONT, 16))
        .draw()
        .map_err(plot_err)?;
    let ok = |p: &&(f64, f64)| p.0.is_finite() && p.1.is_finite();
    for (i, (name, pts)) in lines.iter().enumerate() {
        let c = PALETTE[i % PALETTE.len()];
        let pts: Vec<(f64, f64)> = pts.iter().filter(ok).copied().collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), c.stroke_width(3)))
            .map_err(plot_err)?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(3)));
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 5, c.filled())))
            .map_err(plot_err)?;
    }
    for (i, (name, pts)) in markers.iter().enumerate() {
        let c = PALETTE[i % PALETTE.len()];
        chart
            .draw_series(
                pts.iter()
                    .filter(ok)
                    .map(|&p| Cross::new(p, 7, c.stroke_width(2))),
            )
            .map_err(plot_err)?
            .label(name.clone())
            .legend(move |(x, y)| Cross::new((x + 10, y), 6, c.stroke_width(2)));
    }
    if !lines.is_empty() || !markers.is_empty() {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font((FONT, 14))
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(plot_err)?;
    }
    root.present().map_err(plot_err)?;
    Ok(())
}
