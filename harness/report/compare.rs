//! A comparison as a terminal table or as Markdown for a CI comment (JSON is the
//! comparison itself, serialized).

use std::fmt::Write;

use crate::analysis::compare::{Comparison, Row, Verdict};

fn fmt_value(v: f64, unit: &str) -> String {
    match unit {
        "B" => format!("{:.1} MB", v / 1e6),
        "s" => format!("{:.4} s", v),
        _ => format!("{v:.1} {unit}"),
    }
}

fn fmt_ci(r: &Row) -> String {
    r.ci_percent
        .map(|(lo, hi)| format!("[{lo:+.1}%, {hi:+.1}%]"))
        .unwrap_or_else(|| "single reading".into())
}

/// A plain-text table for the terminal.
pub fn render_text(c: &Comparison) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "base: {}\nnew:  {}", c.base_label, c.new_label);
    if let Some(d) = &c.differs {
        let _ = writeln!(
            o,
            "\nTHE SIDES MEASURED DIFFERENT THINGS: {d}; every row compares them"
        );
    }
    if c.environment_differences.is_empty() {
        let _ = writeln!(o, "\nsame machine and build (no environment field differs)");
    } else {
        let _ = writeln!(o, "\nenvironment differences:");
        for d in &c.environment_differences {
            let _ = writeln!(o, "  {:<22} {}  ->  {}", d.field, d.base, d.new);
        }
    }
    // The variant column as wide as its longest key.
    let w = c
        .rows
        .iter()
        .map(|r| r.variant.chars().count())
        .max()
        .unwrap_or(0)
        .max(8);
    let _ = writeln!(
        o,
        "\n{:<w$} {:<26} {:>14} {:>14} {:>9} {:>20} {:>8}",
        "variant", "metric", "base", "new", "change", "95% CI", "verdict"
    );
    for r in &c.rows {
        let _ = writeln!(
            o,
            "{:<w$} {:<26} {:>14} {:>14} {:>+8.1}% {:>20} {:>8}",
            r.variant,
            r.metric,
            fmt_value(r.base, r.unit),
            fmt_value(r.new, r.unit),
            r.change_percent,
            fmt_ci(r),
            r.verdict.label()
        );
        if let Some(d) = &r.differs {
            let _ = writeln!(o, "{:<w$} (differs: {d})", "");
        }
    }
    for u in &c.unmatched {
        let _ = writeln!(o, "not compared: {u}");
    }
    let _ = writeln!(o, "\n{}", summary_line(c));
    o
}

/// Markdown, for a CI comment.
pub fn render_markdown(c: &Comparison) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "### quantbench compare\n\nbase: `{}`  \nnew: `{}`\n",
        c.base_label, c.new_label
    );
    if let Some(d) = &c.differs {
        let _ = writeln!(
            o,
            "**The sides measured different things: {d}; every row compares them.**\n"
        );
    }
    if !c.environment_differences.is_empty() {
        let _ = writeln!(o, "| environment | base | new |\n|---|---|---|");
        for d in &c.environment_differences {
            let _ = writeln!(o, "| {} | {} | {} |", d.field, d.base, d.new);
        }
        o.push('\n');
    }
    let _ = writeln!(o, "| variant | metric | base | new | change | 95% CI | verdict |\n|---|---|---:|---:|---:|---:|---|");
    for r in &c.rows {
        let mut verdict = if r.verdict.is_regression() {
            format!("**{}**", r.verdict.label())
        } else {
            r.verdict.label().to_string()
        };
        if let Some(d) = &r.differs {
            verdict += &format!(" (differs: {d})");
        }
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {:+.1}% | {} | {} |",
            r.variant,
            r.metric,
            fmt_value(r.base, r.unit),
            fmt_value(r.new, r.unit),
            r.change_percent,
            fmt_ci(r),
            verdict
        );
    }
    let _ = writeln!(o, "\n{}", summary_line(c));
    o
}

/// What the verdicts rest on, in words.
fn basis_line(c: &Comparison) -> String {
    if c.base_runs >= 2 && c.new_runs >= 2 {
        format!(
            "verdicts rest on the spread between runs ({} base, {} new; one median per run, Welch's 95% interval), with criterion's rule: the whole interval beyond the noise threshold{}",
            c.base_runs,
            c.new_runs,
            if c.base_runs.min(c.new_runs) < 3 {
                "; fewer than 3 runs on a side: measured on a 2-vCPU VM, 2 runs per side still gave a false verdict in 1 of 15 same-build comparisons"
            } else {
                ""
            }
        )
    } else {
        format!(
            "verdicts rest on the repetitions inside {} base and {} new run(s): noise between processes is NOT seen (on a 2-vCPU VM, 40 runs of one build spread 15-19% in median time, and 12 of 20 same-build pairs got a false verdict); give 3 or more runs per side (compare BASE... -- NEW...), 5 to see a 10% change. Rule: the whole 95% bootstrap interval beyond the noise threshold",
            c.base_runs, c.new_runs
        )
    }
}

fn summary_line(c: &Comparison) -> String {
    let count = |v: Verdict| c.rows.iter().filter(|r| r.verdict == v).count();
    format!(
        "{} comparisons: {} same, {} faster, {} slower, {} smaller, {} larger, {} unknown\n{}",
        c.rows.len(),
        count(Verdict::Same),
        count(Verdict::Faster),
        count(Verdict::Slower),
        count(Verdict::Smaller),
        count(Verdict::Larger),
        count(Verdict::Unknown),
        basis_line(c)
    )
}
