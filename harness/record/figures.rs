//! Every figure a variant's record holds that is judged, followed or exported, named
//! once. A figure's name is its name everywhere: `compare` judges it under that name,
//! `history` follows it and names its chart after it, results.csv and history.csv print
//! it as a column (`<name>_median` for a figure measured on every repetition), and the
//! exports derive their names from it (Bencher's measures in kebab case).
//!
//! The two accessors are the one definition of a figure: `samples` (what a comparison
//! bootstraps: the repetitions' values, or the single reading) and `value` (what the
//! record states: the repetitions' median from its summary, or the reading).

use serde::Serialize;

use super::{Moment, VariantRecord};
use crate::run::workload::TestRecord;

/// Whether a larger value is better or worse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    LowerIsBetter,
    HigherIsBetter,
}

/// What a figure measures: a time (its verdicts say faster / slower) or an amount of
/// memory (smaller / larger).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Time,
    Memory,
}

/// How many values a record holds of a figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// One per timed repetition: printed as `<name>_median`.
    PerRepetition,
    /// One reading per variant: printed under its name.
    Once,
}

/// A figure of a variant.
#[derive(Debug, Clone, Copy)]
pub struct Figure {
    pub name: &'static str,
    pub unit: &'static str,
    /// What it is, in words (chart axes, docs).
    pub about: &'static str,
    pub direction: Direction,
    pub kind: Kind,
    pub taken: Taken,
    samples: fn(&VariantRecord) -> Vec<f64>,
    value: fn(&VariantRecord) -> Option<f64>,
    /// A memory figure's exact count of bytes (printed as an integer, never through a
    /// float).
    bytes: Option<fn(&VariantRecord) -> Option<u64>>,
}

impl Figure {
    /// The figure's samples in a record: the repetitions' values, or the one reading.
    pub fn samples(&self, v: &VariantRecord) -> Vec<f64> {
        (self.samples)(v)
    }

    /// The figure as the record states it: the median of the repetitions (from the
    /// record's summary), or the reading.
    pub fn value(&self, v: &VariantRecord) -> Option<f64> {
        (self.value)(v)
    }

    /// The figure as a csv cell: bytes as an exact integer, other figures as the
    /// shortest decimal that reads back to the same number; empty where absent or not
    /// finite.
    pub fn cell(&self, v: &VariantRecord) -> String {
        match self.bytes {
            Some(b) => b(v).map(|x| x.to_string()).unwrap_or_default(),
            None => self
                .value(v)
                .filter(|x| x.is_finite())
                .map(|x| x.to_string())
                .unwrap_or_default(),
        }
    }

    /// Its column in results.csv and history.csv.
    pub fn column(&self) -> String {
        match self.taken {
            Taken::PerRepetition => format!("{}_median", self.name),
            Taken::Once => self.name.to_string(),
        }
    }

    /// The figure of that name, among a variant's and its tests'.
    pub fn find(name: &str) -> Option<Figure> {
        FIGURES
            .iter()
            .copied()
            .chain(TEST_FIGURES.iter().map(|t| t.figure))
            .find(|m| m.name == name)
    }

    /// A figure of a variant by name; panics on a name that is not in [`FIGURES`] (a
    /// printer's own table naming a figure that does not exist is a bug, caught by the
    /// tests that render every column).
    pub fn named(name: &str) -> Figure {
        FIGURES
            .iter()
            .copied()
            .find(|f| f.name == name)
            .unwrap_or_else(|| panic!("no figure named {name}"))
    }
}

fn rss(v: &VariantRecord, m: Moment) -> Option<f64> {
    v.memory_at(m, RSS).map(|b| b as f64)
}

pub use crate::probe::process::RSS;

/// A variant's figures, in the order compare prints them.
pub const FIGURES: [Figure; 7] = [
    Figure {
        name: "generate_seconds",
        unit: "s",
        about: "median generation time (s)",
        direction: Direction::LowerIsBetter,
        kind: Kind::Time,
        taken: Taken::PerRepetition,
        samples: |v| v.generate_seconds.clone(),
        value: |v| Some(v.timing.as_ref()?.generate_seconds.median),
        bytes: None,
    },
    Figure {
        name: "tokens_per_second",
        unit: "tok/s",
        about: "median tokens per second",
        direction: Direction::HigherIsBetter,
        kind: Kind::Time,
        taken: Taken::PerRepetition,
        samples: |v| {
            v.generate_seconds
                .iter()
                .filter(|&&g| g > 0.0)
                .map(|g| v.new_tokens as f64 / g)
                .collect()
        },
        value: |v| Some(v.timing.as_ref()?.tokens_per_second.median),
        bytes: None,
    },
    Figure {
        name: "decode_tokens_per_second",
        unit: "tok/s",
        about: "median decode tokens per second",
        direction: Direction::HigherIsBetter,
        kind: Kind::Time,
        taken: Taken::PerRepetition,
        samples: |v| v.decode_rates(),
        value: |v| Some(v.timing.as_ref()?.decode_tokens_per_second.as_ref()?.median),
        bytes: None,
    },
    Figure {
        name: "prefill_seconds",
        unit: "s",
        about: "median prompt pass time (s)",
        direction: Direction::LowerIsBetter,
        kind: Kind::Time,
        taken: Taken::PerRepetition,
        samples: |v| v.prefill_seconds.clone(),
        value: |v| Some(v.timing.as_ref()?.prefill_seconds.median),
        bytes: None,
    },
    Figure {
        name: "weights_bytes",
        unit: "B",
        about: "weight bytes",
        direction: Direction::LowerIsBetter,
        kind: Kind::Memory,
        taken: Taken::Once,
        samples: |v| v.weights_bytes.map(|b| vec![b as f64]).unwrap_or_default(),
        value: |v| v.weights_bytes.map(|b| b as f64),
        bytes: Some(|v| v.weights_bytes),
    },
    Figure {
        name: "rss_after_load_bytes",
        unit: "B",
        about: "process memory after load",
        direction: Direction::LowerIsBetter,
        kind: Kind::Memory,
        taken: Taken::Once,
        samples: |v| rss(v, Moment::AfterLoad).into_iter().collect(),
        value: |v| rss(v, Moment::AfterLoad),
        bytes: Some(|v| v.memory_at(Moment::AfterLoad, RSS)),
    },
    Figure {
        name: "rss_peak_bytes",
        unit: "B",
        about: "peak process memory during generation",
        direction: Direction::LowerIsBetter,
        kind: Kind::Memory,
        taken: Taken::Once,
        samples: |v| rss(v, Moment::Peak).into_iter().collect(),
        value: |v| rss(v, Moment::Peak),
        bytes: Some(|v| v.memory_at(Moment::Peak, RSS)),
    },
];

/// A figure of a workload test, with its samples in the test's record.
#[derive(Debug, Clone, Copy)]
pub struct TestFigure {
    /// The figure (its own samples and value are the variant's: empty).
    pub figure: Figure,
    pub samples: fn(&TestRecord) -> Vec<f64>,
}

/// The figures `compare` judges on each workload test both sides ran: the test's
/// per-repetition rates.
pub const TEST_FIGURES: [TestFigure; 2] = [
    TestFigure {
        figure: Figure {
            name: "test_prefill_tokens_per_second",
            unit: "tok/s",
            about: "a test's prompt tokens per second",
            direction: Direction::HigherIsBetter,
            kind: Kind::Time,
            taken: Taken::PerRepetition,
            samples: |_| Vec::new(),
            value: |_| None,
            bytes: None,
        },
        samples: TestRecord::prefill_rates,
    },
    TestFigure {
        figure: Figure {
            name: "test_decode_tokens_per_second",
            unit: "tok/s",
            about: "a test's decode tokens per second",
            direction: Direction::HigherIsBetter,
            kind: Kind::Time,
            taken: Taken::PerRepetition,
            samples: |_| Vec::new(),
            value: |_| None,
            bytes: None,
        },
        samples: TestRecord::decode_rates,
    },
];
