//! results.csv: one row per variant with the headline columns.

use anyhow::Result;

use super::Headline;
use crate::record::RunRecord;

pub const COLUMNS: [&str; 31] = [
    "precision",
    "status",
    "weights_bytes",
    "bits_per_weight",
    "load_seconds",
    "rss_before_load_bytes",
    "rss_after_load_bytes",
    "rss_peak_bytes",
    "rss_after_cleanup_bytes",
    "new_tokens",
    "repetitions",
    "generate_seconds_median",
    "generate_seconds_min",
    "generate_seconds_max",
    "tokens_per_second_median",
    "decode_tokens_per_second_median",
    "prefill_seconds_median",
    "speedup_vs_f32",
    "kl_mean",
    "kl_p99",
    "kl_max",
    "same_top1",
    "perplexity",
    "perplexity_ratio",
    "leading_tokens_equal_to_f32",
    "quality_gate",
    "energy_joules_per_token",
    "family",
    "transformers_footprint_bytes",
    "transformers_footprint_legacy_bytes",
    "error",
];

pub fn render(run: &RunRecord) -> Result<String> {
    let mut w = ::csv::Writer::from_writer(Vec::new());
    w.write_record(COLUMNS)?;
    // Absent and non-finite figures are empty cells.
    let num = |v: Option<f64>| {
        v.filter(|x| x.is_finite())
            .map(|x| format!("{x}"))
            .unwrap_or_default()
    };
    let int = |v: Option<u64>| v.map(|x| x.to_string()).unwrap_or_default();
    for v in &run.variants {
        let h = Headline::of(v, run);
        let q = v.quality.as_ref();
        let tf = v
            .weights
            .as_ref()
            .and_then(|w| w.transformers_footprint.as_ref());
        let gate = q
            .and_then(|q| q.gate.as_ref())
            .map(|g| if g.passed { "pass" } else { "fail" })
            .unwrap_or(if run.gate_configured() && v.is_ok() {
                "not evaluated"
            } else {
                ""
            });
        w.write_record([
            h.label.clone(),
            v.status.name().to_string(),
            int(h.weights_bytes),
            num(h.bits_per_weight),
            num(h.load_seconds),
            int(h.rss[0]),
            int(h.rss[1]),
            int(h.rss[2]),
            int(h.rss[3]),
            v.new_tokens.to_string(),
            h.repetitions.to_string(),
            num(h.generate_median),
            num(h.generate_min),
            num(h.generate_max),
            num(h.tokens_per_second),
            num(h.decode_tokens_per_second),
            num(h.prefill_median),
            num(h.speedup_vs_f32),
            num(q.and_then(|q| q.kl_mean)),
            num(q.and_then(|q| q.kl_p99)),
            num(q.and_then(|q| q.kl_max)),
            num(q.and_then(|q| q.same_top1)),
            num(q.and_then(|q| q.perplexity)),
            num(q.and_then(|q| q.perplexity_ratio)),
            q.map(|q| q.leading_tokens_equal_to_f32.to_string())
                .unwrap_or_default(),
            gate.to_string(),
            num(v.energy_joules_per_token),
            v.precision.family().name().to_string(),
            int(tf.map(|t| t.current_bytes)),
            int(tf.and_then(|t| t.legacy_bytes)),
            h.error.clone().unwrap_or_default(),
        ])?;
    }
    Ok(String::from_utf8(w.into_inner()?)?)
}
