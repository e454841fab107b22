//! results.csv: one row per variant with the headline columns, from one table of
//! columns (the header and every cell come from it). The figures' columns are the
//! figures' own ([`crate::record::figures`]): the name compare judges and history follows.

use anyhow::Result;

use super::Headline;
use crate::record::figures::Figure;
use crate::record::{RunRecord, VariantRecord};

/// What a column's cell is read from.
pub struct Row<'a> {
    pub run: &'a RunRecord,
    pub v: &'a VariantRecord,
    pub h: Headline,
}

/// A column: its name and its cell.
pub struct Column {
    name: Name,
    cell: fn(&Row) -> String,
}

/// A column's name: its own, or a figure's (then the figure's column name).
enum Name {
    Own(&'static str),
    Figure(&'static str),
}

impl Column {
    pub fn name(&self) -> String {
        match self.name {
            Name::Own(n) => n.to_string(),
            Name::Figure(f) => Figure::named(f).column(),
        }
    }
}

/// Absent and non-finite figures are empty cells.
fn num(v: Option<f64>) -> String {
    v.filter(|x| x.is_finite())
        .map(|x| format!("{x}"))
        .unwrap_or_default()
}

fn int(v: Option<u64>) -> String {
    v.map(|x| x.to_string()).unwrap_or_default()
}

/// A column that prints a figure, under the figure's column name.
macro_rules! figure {
    ($name:literal) => {
        Column {
            name: Name::Figure($name),
            cell: |r| Figure::named($name).cell(r.v),
        }
    };
}

fn gate(r: &Row) -> String {
    let q = r.v.quality.as_ref();
    q.and_then(|q| q.gate.as_ref())
        .map(|g| if g.passed { "pass" } else { "fail" })
        .unwrap_or(if r.run.gate_configured() && r.v.is_ok() {
            "not evaluated"
        } else {
            ""
        })
        .to_string()
}

fn quality(r: &Row, f: fn(&crate::run::quality::QualityRecord) -> Option<f64>) -> String {
    num(r.v.quality.as_ref().and_then(f))
}

fn footprint<'a>(r: &Row<'a>) -> Option<&'a crate::model::source::weights::TransformersFootprint> {
    r.v.weights
        .as_ref()
        .and_then(|w| w.transformers_footprint.as_ref())
}

/// The columns of results.csv, in order.
pub const COLUMNS: [Column; 32] = [
    Column {
        name: Name::Own("precision"),
        cell: |r| r.v.precision.name().to_string(),
    },
    Column {
        name: Name::Own("status"),
        cell: |r| r.v.status.name().to_string(),
    },
    figure!("weights_bytes"),
    Column {
        name: Name::Own("bits_per_weight"),
        cell: |r| num(r.h.bits_per_weight),
    },
    Column {
        name: Name::Own("load_seconds"),
        cell: |r| num(r.h.load_seconds),
    },
    Column {
        name: Name::Own("rss_before_load_bytes"),
        cell: |r| int(r.h.rss[0]),
    },
    figure!("rss_after_load_bytes"),
    figure!("rss_peak_bytes"),
    Column {
        name: Name::Own("rss_after_cleanup_bytes"),
        cell: |r| int(r.h.rss[3]),
    },
    Column {
        name: Name::Own("new_tokens"),
        cell: |r| r.v.new_tokens.to_string(),
    },
    Column {
        name: Name::Own("repetitions"),
        cell: |r| r.h.repetitions.to_string(),
    },
    figure!("generate_seconds"),
    Column {
        name: Name::Own("generate_seconds_min"),
        cell: |r| num(r.h.generate_min),
    },
    Column {
        name: Name::Own("generate_seconds_max"),
        cell: |r| num(r.h.generate_max),
    },
    figure!("tokens_per_second"),
    figure!("decode_tokens_per_second"),
    figure!("prefill_seconds"),
    Column {
        name: Name::Own("speedup_vs_f32"),
        cell: |r| num(r.h.speedup_vs_f32),
    },
    Column {
        name: Name::Own("kl_mean"),
        cell: |r| quality(r, |q| q.kl_mean),
    },
    Column {
        name: Name::Own("kl_p99"),
        cell: |r| quality(r, |q| q.kl_p99),
    },
    Column {
        name: Name::Own("kl_max"),
        cell: |r| quality(r, |q| q.kl_max),
    },
    Column {
        name: Name::Own("same_top1"),
        cell: |r| quality(r, |q| q.same_top1),
    },
    Column {
        name: Name::Own("perplexity"),
        cell: |r| quality(r, |q| q.perplexity),
    },
    Column {
        name: Name::Own("perplexity_ratio"),
        cell: |r| quality(r, |q| q.perplexity_ratio),
    },
    Column {
        name: Name::Own("leading_tokens_equal_to_f32"),
        cell: |r| {
            r.v.quality
                .as_ref()
                .map(|q| q.leading_tokens_equal_to_f32.to_string())
                .unwrap_or_default()
        },
    },
    Column {
        name: Name::Own("quality_gate"),
        cell: gate,
    },
    Column {
        name: Name::Own("energy_joules_per_token"),
        cell: |r| num(r.v.energy_joules_per_token),
    },
    Column {
        name: Name::Own("family"),
        cell: |r| r.v.precision.family().name().to_string(),
    },
    Column {
        name: Name::Own("transformers_footprint_bytes"),
        cell: |r| int(footprint(r).map(|t| t.current_bytes)),
    },
    Column {
        name: Name::Own("transformers_footprint_legacy_bytes"),
        cell: |r| int(footprint(r).and_then(|t| t.legacy_bytes)),
    },
    Column {
        name: Name::Own("error"),
        cell: |r| r.h.error.clone().unwrap_or_default(),
    },
    // Last, so that the columns before it keep the places they had before #38.
    Column {
        name: Name::Own("engine"),
        cell: |r| r.v.engine.name().to_string(),
    },
];

pub fn render(run: &RunRecord) -> Result<String> {
    let mut w = ::csv::Writer::from_writer(Vec::new());
    w.write_record(COLUMNS.iter().map(|c| c.name()))?;
    for v in &run.variants {
        let row = Row {
            run,
            v,
            h: Headline::of(v, run),
        };
        w.write_record(COLUMNS.iter().map(|c| (c.cell)(&row)))?;
    }
    Ok(String::from_utf8(w.into_inner()?)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::figures::FIGURES;

    #[test]
    fn every_figure_is_a_column_under_its_own_name() {
        for f in FIGURES {
            assert!(
                COLUMNS.iter().any(|c| c.name() == f.column()),
                "results.csv has no column {} for figure {}",
                f.column(),
                f.name
            );
        }
    }
}
