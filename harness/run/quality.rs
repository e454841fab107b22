//! What a precision costs in quality: perplexity, KL divergence from the f32 model and
//! same-top-1 rate over an evaluation text, teacher-forced in windows of the context.
//!
//! The f32 reference is computed once per run. Its next-token distributions (2,000
//! positions x 50,257 tokens would be 400 MB at f32) are kept compactly on disk, as
//! llama.cpp's perplexity tool does: each position's log-probabilities as 16-bit codes
//! with the row's minimum and step, streamed back for every variant. The variant's
//! log-probabilities are coded the same way before the divergence is taken, so two
//! bit-identical models score exactly 0; the coding error (a step of range/65535, about
//! 1e-4 nats) moves a KL by far less than any quantization format does.

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::analysis::stats;
use crate::engine::Loaded;
use crate::error::InputError;

/// The evaluation text that ships with quantbench (about 2,300 GPT-2 tokens).
pub const DEFAULT_TEXT: &str = include_str!("../../assets/eval/default.txt");
/// The largest evaluation text read (a book is a few megabytes).
pub const MAX_EVAL_TEXT_BYTES: u64 = 64 << 20;

/// The `[quality]` table of a scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QualityConfig {
    /// Run the quality pass (default true).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Evaluation text file, relative to the scenario file; default: the built-in text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<PathBuf>,
    /// Tokens per window (default: the model's context).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<usize>,
    /// How far each window moves on (default: the window, so each token is fed once;
    /// smaller strides give later positions more context at more cost).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stride: Option<usize>,
    /// Evaluate at most this many tokens of the text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<usize>,
    /// Quality gate: a variant whose mean KL exceeds this fails the gate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_kl: Option<f64>,
    /// Quality gate: a variant whose same-top-1 rate (0..1) is below this fails the gate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_same_top1: Option<f64>,
    /// Which positions are scored: "all" (every position once, default) or "second-half"
    /// (llama-perplexity's: the text cut into chunks of `window` tokens (512 unless set),
    /// whole chunks only, each fed from an empty cache and scored on its second half).
    #[serde(default, skip_serializing_if = "Scoring::is_all")]
    pub scoring: Scoring,
}

/// Which positions the quality pass scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scoring {
    /// Every position of the text once (windows of `window`, moving by `stride`).
    #[default]
    All,
    /// llama-perplexity's chunks: non-overlapping windows, the second half of each scored,
    /// so its numbers sit beside llama.cpp's `--kl-divergence` output for the same text.
    SecondHalf,
}

impl Scoring {
    pub fn is_all(&self) -> bool {
        *self == Scoring::All
    }
}

/// llama-perplexity's default chunk: 512 tokens.
pub const LLAMA_PERPLEXITY_CHUNK: usize = 512;

fn yes() -> bool {
    true
}

impl Default for QualityConfig {
    fn default() -> Self {
        QualityConfig {
            enabled: true,
            text: None,
            window: None,
            stride: None,
            max_tokens: None,
            max_kl: None,
            min_same_top1: None,
            scoring: Scoring::All,
        }
    }
}

impl QualityConfig {
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        for (name, v, least) in [
            ("window", self.window, 3),
            ("stride", self.stride, 1),
            ("max_tokens", self.max_tokens, 2),
        ] {
            if let Some(v) = v.filter(|&v| v < least) {
                return Err((
                    name,
                    format!(
                        "quality.{name} must be at least {least} (got {v}): {}",
                        match name {
                            "stride" => "each window moves on by at least one token",
                            "window" => "a window of 2 leaves llama-perplexity's second half nothing to score",
                            _ => "scoring needs a token and the one after it",
                        }
                    ),
                ));
            }
        }
        if self.scoring == Scoring::SecondHalf && self.stride.is_some() {
            return Err((
                "stride",
                "quality.stride does not apply with scoring = \"second-half\": its chunks never overlap (remove stride, or use scoring = \"all\")".into(),
            ));
        }
        if let (Some(w), Some(s)) = (self.window, self.stride) {
            if s > w {
                return Err((
                    "stride",
                    format!("quality.stride ({s}) must not exceed quality.window ({w})"),
                ));
            }
        }
        if let Some(k) = self.max_kl {
            if !(k.is_finite() && k >= 0.0) {
                return Err((
                    "max_kl",
                    format!("quality.max_kl must be a finite number of nats >= 0 (got {k})"),
                ));
            }
        }
        if let Some(t) = self.min_same_top1 {
            if !(0.0..=1.0).contains(&t) {
                return Err((
                    "min_same_top1",
                    format!("quality.min_same_top1 must be a rate between 0 and 1 (got {t})"),
                ));
            }
        }
        Ok(())
    }

    /// The evaluation text: the file or the built-in one. A relative path is taken as
    /// it stands (from the working folder): [`crate::Scenario::load`] has already
    /// resolved a scenario file's paths against the scenario's folder, once.
    pub fn load_text(&self) -> Result<(String, String)> {
        match &self.text {
            None => Ok((
                DEFAULT_TEXT.to_string(),
                "built-in (assets/eval/default.txt)".into(),
            )),
            Some(path) => {
                let text = crate::fsutil::read_text(path, "quality.text file", MAX_EVAL_TEXT_BYTES)
                    .map_err(|e| InputError::new(format!("quality.text: {e}")))?;
                Ok((text, path.display().to_string()))
            }
        }
    }
}

/// Windows over `n` tokens: (begin, end, first position scored). Position p predicts
/// token p + 1, so a window scores positions up to end - 2; each position is scored in
/// exactly one window. Windows start `stride` apart, but never past the first position
/// not yet scored (with stride = window, consecutive windows share one token).
pub fn windows(n: usize, window: usize, stride: usize) -> Vec<(usize, usize, usize)> {
    let mut out = Vec::new();
    let mut scored_to = 0; // positions below this are scored already
    let mut begin = 0;
    while scored_to + 1 < n {
        let end = (begin + window).min(n);
        out.push((begin, end, scored_to.max(begin)));
        scored_to = end - 1;
        if end == n {
            break;
        }
        begin = (begin + stride).min(scored_to);
    }
    out
}

/// llama-perplexity's chunks over `n` tokens: whole chunks of `window` only, each scored
/// from its middle (position begin + window / 2) to its second-to-last token.
pub fn second_half_windows(n: usize, window: usize) -> Vec<(usize, usize, usize)> {
    (0..n / window)
        .map(|k| (k * window, (k + 1) * window, k * window + window / 2))
        .collect()
}

/// The log-softmax of one row of logits (exponentials in f32, their sum in f64).
pub fn log_softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&x| (x - max).exp() as f64).sum();
    let lse = max as f64 + sum.ln();
    logits.iter().map(|&x| (x as f64 - lse) as f32).collect()
}

/// A row of log-probabilities as 16-bit codes: (min, step, codes).
pub type Coded = (f32, f32, Vec<u16>);

/// 16-bit codes of a row of log-probabilities.
pub fn encode(lp: &[f32]) -> Coded {
    let min = lp.iter().cloned().fold(f32::INFINITY, f32::min);
    let max = lp.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let step = ((max - min) / 65535.0).max(f32::MIN_POSITIVE);
    let codes = lp
        .iter()
        .map(|&x| ((x - min) / step).round().clamp(0.0, 65535.0) as u16)
        .collect();
    (min, step, codes)
}

pub fn decode(min: f32, step: f32, codes: &[u16]) -> Vec<f64> {
    codes
        .iter()
        .map(|&c| min as f64 + c as f64 * step as f64)
        .collect()
}

/// KL(P || Q) = sum p log(p / q) from log-probabilities, in nats.
pub fn kl_divergence(lp: &[f64], lq: &[f64]) -> f64 {
    // The weight p in f32 (libm's expf is several times faster than exp, and a relative
    // error of 1e-7 in a weight is far below the 16-bit coding); the difference in f64.
    lp.iter()
        .zip(lq)
        .map(|(&p, &q)| (p as f32).exp() as f64 * (p - q))
        .sum()
}

fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

/// Feed `tokens` window by window and call `f(targets, logits)` for each chunk of scored
/// positions, in order: `logits[i]` predicts `targets[i]`.
fn for_each_chunk(
    m: &dyn Loaded,
    eval: &Evaluation,
    mut f: impl FnMut(&[u32], &[Vec<f32>]) -> Result<()>,
) -> Result<usize> {
    let tokens = &eval.tokens;
    let wins = eval.windows();
    for &(begin, end, first) in &wins {
        // The window's last token has no target inside it: score up to the one before.
        let ids = eval.window_tokens(begin, end);
        let last = end - 1;
        if first >= last {
            continue;
        }
        m.logits_from(&ids[..last - begin], first - begin, &mut |at, rows| {
            let p = begin + at;
            f(&tokens[p + 1..p + 1 + rows.len()], rows)
        })?;
    }
    Ok(wins.len())
}

/// The default evaluation window: the model's context, capped here (GPT-2's context),
/// so that a model with a context of 128k does not run one 128k-token window.
pub const DEFAULT_WINDOW_CAP: usize = 1024;

/// Where the evaluation runs: tokens and windows, shared by the reference and variants.
#[derive(Debug, Clone)]
pub struct Evaluation {
    pub tokens: Vec<u32>,
    pub text_source: String,
    pub window: usize,
    pub stride: usize,
    pub scoring: Scoring,
    /// The BOS id the tokenizer starts a text with, if it adds one: llama-perplexity
    /// puts it first in every chunk (scoring = "second-half").
    pub bos: Option<u32>,
    /// Where the reference's distributions are kept while the run lasts (the run's
    /// output folder; the system's temporary folder when unset).
    pub scratch_dir: Option<PathBuf>,
}

impl Evaluation {
    /// (begin, end, first scored position) of every window.
    pub fn windows(&self) -> Vec<(usize, usize, usize)> {
        match self.scoring {
            Scoring::All => windows(self.tokens.len(), self.window, self.stride),
            Scoring::SecondHalf => second_half_windows(self.tokens.len(), self.window),
        }
    }

    pub fn new(
        cfg: &QualityConfig,
        tokens: Vec<u32>,
        text_source: String,
        n_positions: usize,
    ) -> Result<Self> {
        let mut tokens = tokens;
        if let Some(max) = cfg.max_tokens {
            tokens.truncate(max);
        }
        if tokens.len() < 2 {
            crate::bad_input!("quality.text ({text_source}) has fewer than 2 tokens");
        }
        let window = cfg.window.unwrap_or(match cfg.scoring {
            Scoring::All => n_positions.min(DEFAULT_WINDOW_CAP),
            Scoring::SecondHalf => n_positions.min(LLAMA_PERPLEXITY_CHUNK),
        });
        if window > n_positions {
            crate::bad_input!(
                "quality.window ({window}) exceeds the model's context of {n_positions}; valid: 2 to {n_positions}"
            );
        }
        let stride = cfg.stride.unwrap_or(window);
        if stride > window {
            crate::bad_input!(
                "quality.stride ({stride}) exceeds the window of {window} tokens{}; valid: 1 to {window}",
                if cfg.window.is_none() {
                    " (the model's context capped at 1024, as quality.window is not set)"
                } else {
                    ""
                }
            );
        }
        if cfg.scoring == Scoring::SecondHalf && tokens.len() < window {
            crate::bad_input!(
                "quality.text ({text_source}) has {} tokens, fewer than one chunk of {window}: scoring = \"second-half\" scores whole chunks only; use a longer text or a smaller quality.window",
                tokens.len()
            );
        }
        Ok(Evaluation {
            tokens,
            text_source,
            window,
            stride,
            scoring: cfg.scoring,
            bos: None,
            scratch_dir: None,
        })
    }

    /// The tokenizer's BOS, put first in every chunk as llama-perplexity does.
    pub fn with_bos(mut self, bos: Option<u32>) -> Self {
        self.bos = bos;
        self
    }

    /// Keep the reference's distributions in `dir` while the run lasts.
    pub fn with_scratch_dir(mut self, dir: PathBuf) -> Self {
        self.scratch_dir = Some(dir);
        self
    }

    /// The tokens window `begin..end` feeds: the text's, with the BOS first in each
    /// chunk of llama-perplexity's scoring when the tokenizer adds one.
    fn window_tokens(&self, begin: usize, end: usize) -> std::borrow::Cow<'_, [u32]> {
        let w = &self.tokens[begin..end];
        match (self.scoring, self.bos) {
            (Scoring::SecondHalf, Some(bos)) if w.first() != Some(&bos) => {
                let mut v = w.to_vec();
                v[0] = bos;
                std::borrow::Cow::Owned(v)
            }
            _ => std::borrow::Cow::Borrowed(w),
        }
    }
}

/// The f32 reference: its distributions on disk, its top-1 tokens and log-likelihood.
pub struct Reference {
    file: crate::fsutil::PartFile,
    /// Positions whose reference logits hold NaN or infinity (no most likely token).
    nonfinite_rows: usize,
    pub positions: usize,
    pub windows: usize,
    vocab: usize,
    top1: Vec<u32>,
    /// Negative log-likelihood of the text's next token at each position (exact, not
    /// through the 16-bit coding): the base of Δp and of the perplexity ratio's error.
    nll: Vec<f64>,
    pub perplexity: f64,
    pub seconds: f64,
    /// The reference's greedy tokens on the benchmark prompt.
    pub generated_token_ids: Vec<u32>,
    /// The reference's own record: what a variant identical to it scores.
    pub own: QualityRecord,
    /// A mixture of experts' top-k sets at every position forwarded, per layer with
    /// experts (k, ids), where the reference's engine keeps them.
    routes: Option<Vec<(usize, Vec<u16>)>>,
}

impl Reference {
    /// Evaluate the reference model once and store its distributions.
    pub fn compute(
        m: &dyn Loaded,
        eval: &Evaluation,
        generated_token_ids: Vec<u32>,
    ) -> Result<Self> {
        let t0 = crate::run::clock::synced_now(m)?;
        let dir = eval.scratch_dir.clone().unwrap_or_else(std::env::temp_dir);
        let file = crate::fsutil::PartFile::create(&dir, "reference")
            .context("creating the reference file for the quality pass")?;
        let path = file.path().to_path_buf();
        let writing = |e: std::io::Error| {
            anyhow::anyhow!(
                "writing the quality pass's reference distributions to {}: {e}",
                path.display()
            )
        };
        let mut w = BufWriter::with_capacity(1 << 20, file.file().try_clone().map_err(writing)?);
        let mut nonfinite_rows = 0usize;
        let mut top1 = Vec::new();
        let mut nlls = Vec::new();
        let mut vocab = 0;
        let mut self_kls = Vec::new();
        m.trace_routes(true);
        let windows = for_each_chunk(m, eval, |targets, rows| {
            // The heavy per-row work in parallel, the writing in order.
            let coded: Vec<(f64, u32, f64, bool, Coded)> = rows
                .par_iter()
                .zip(targets)
                .map(|(logits, &target)| {
                    let lp = log_softmax(logits);
                    let coded = encode(&lp);
                    // The reference against itself, through the same coding as any variant.
                    let back = decode(coded.0, coded.1, &coded.2);
                    (
                        -(lp[target as usize] as f64),
                        argmax(logits),
                        kl_divergence(&back, &back),
                        logits.iter().all(|x| x.is_finite()),
                        coded,
                    )
                })
                .collect();
            for (row_nll, top, self_kl, finite, (min, step, codes)) in coded {
                vocab = codes.len();
                nlls.push(row_nll);
                top1.push(top);
                self_kls.push(self_kl);
                nonfinite_rows += usize::from(!finite);
                let bytes: Vec<u8> = codes.iter().flat_map(|c| c.to_le_bytes()).collect();
                w.write_all(&min.to_le_bytes())
                    .and_then(|_| w.write_all(&step.to_le_bytes()))
                    .and_then(|_| w.write_all(&bytes))
                    .map_err(writing)?;
            }
            Ok(())
        })?;
        w.flush().map_err(writing)?;
        let routes = m.take_routes();
        m.trace_routes(false);
        let positions = top1.len();
        if positions == 0 {
            crate::bad_input!(
                "the quality pass scores no position: {} windows of {} tokens over {} tokens leave nothing to score; use a larger quality.window or a longer text",
                windows,
                eval.window,
                eval.tokens.len()
            );
        }
        let perplexity = (nlls.iter().sum::<f64>() / positions as f64).exp();
        let seconds = crate::run::clock::synced_seconds_since(m, t0)?;
        let mut own = QualityRecord::from_positions(
            &self_kls,
            positions,
            &nlls,
            &nlls,
            generated_token_ids.len(),
            seconds,
        );
        own.is_reference = true;
        own.top1_needs_finite_rows(0, nonfinite_rows);
        own.top_k_agreement = routes
            .as_ref()
            .and_then(|r| crate::model::moe::top_k_agreement(r, r));
        Ok(Reference {
            routes,
            file,
            nonfinite_rows,
            positions,
            windows,
            vocab,
            top1,
            nll: nlls,
            perplexity,
            seconds,
            generated_token_ids,
            own,
        })
    }

    /// Bytes the stored distributions take on disk.
    pub fn stored_bytes(&self) -> u64 {
        (self.positions * (8 + 2 * self.vocab)) as u64
    }

    /// Compare a model with the reference over the same evaluation.
    pub fn compare(
        &self,
        m: &dyn Loaded,
        eval: &Evaluation,
        generated: &[u32],
    ) -> Result<QualityRecord> {
        let t0 = crate::run::clock::synced_now(m)?;
        let mut r = BufReader::with_capacity(
            1 << 20,
            std::fs::File::open(self.file.path()).with_context(|| {
                format!(
                    "reading the reference distributions back from {}",
                    self.file.path().display()
                )
            })?,
        );
        let mut kls = Vec::with_capacity(self.positions);
        let mut same = 0usize;
        let mut nonfinite = 0usize;
        let mut nlls = Vec::with_capacity(self.positions);
        let row_bytes = 8 + 2 * self.vocab;
        let mut raw = Vec::new();
        let mut idx = 0usize;
        m.trace_routes(true);
        for_each_chunk(m, eval, |targets, rows| {
            anyhow::ensure!(
                rows.iter().all(|r| r.len() == self.vocab),
                "vocabulary differs from the reference's"
            );
            anyhow::ensure!(
                idx + rows.len() <= self.positions,
                "more positions than the reference"
            );
            // Read the reference rows of this chunk in order, then work on them in parallel.
            raw.resize(row_bytes * rows.len(), 0);
            r.read_exact(&mut raw)?;
            let results: Vec<(f64, f64, bool, bool)> = rows
                .par_iter()
                .zip(targets)
                .zip(raw.par_chunks(row_bytes))
                .zip(&self.top1[idx..idx + rows.len()])
                .map(|(((logits, &target), stored), &ref_top)| {
                    let min = f32::from_le_bytes(stored[..4].try_into().expect("4 bytes"));
                    let step = f32::from_le_bytes(stored[4..8].try_into().expect("4 bytes"));
                    let codes: Vec<u16> = stored[8..]
                        .chunks_exact(2)
                        .map(|b| u16::from_le_bytes([b[0], b[1]]))
                        .collect();
                    let lp = decode(min, step, &codes);
                    let lq_exact = log_softmax(logits);
                    let (qmin, qstep, qcodes) = encode(&lq_exact);
                    let lq = decode(qmin, qstep, &qcodes);
                    (
                        kl_divergence(&lp, &lq),
                        -(lq_exact[target as usize] as f64),
                        argmax(logits) == ref_top,
                        logits.iter().all(|x| x.is_finite()),
                    )
                })
                .collect();
            for (kl, row_nll, same_top, finite) in results {
                kls.push(kl);
                nlls.push(row_nll);
                same += same_top as usize;
                nonfinite += usize::from(!finite);
            }
            idx += rows.len();
            Ok(())
        })?;
        anyhow::ensure!(
            idx == self.positions,
            "evaluated {idx} positions, the reference has {}",
            self.positions
        );
        let leading = self
            .generated_token_ids
            .iter()
            .zip(generated)
            .take_while(|(a, b)| a == b)
            .count();
        let mut q = QualityRecord::from_positions(
            &kls,
            same,
            &nlls,
            &self.nll,
            leading,
            crate::run::clock::synced_seconds_since(m, t0)?,
        );
        q.top1_needs_finite_rows(nonfinite, self.nonfinite_rows);
        let routes = m.take_routes();
        m.trace_routes(false);
        q.top_k_agreement = match (&self.routes, routes) {
            (Some(theirs), Some(ours)) => crate::model::moe::top_k_agreement(&ours, theirs),
            _ => None,
        };
        Ok(q)
    }
}

/// What the quality pass measured for one variant. A figure that came out non-finite
/// (NaN weights give NaN logits) is recorded as absent (null) with the reason in
/// `notes`, and shown as "n/a"; a gate cannot pass on an absent figure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QualityRecord {
    /// Positions scored (each predicts the next token of the text).
    pub positions: usize,
    /// A mixture of experts: per layer with experts, how often (over every position the
    /// pass forwarded) the layer's top-k expert set equals the reference's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k_agreement: Option<Vec<f64>>,
    /// exp(mean negative log-likelihood of the text's next tokens).
    pub perplexity: Option<f64>,
    /// Its standard error, as llama-perplexity gives it: perplexity × the standard
    /// error of the mean negative log-likelihood.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub perplexity_stderr: Option<f64>,
    /// perplexity / the f32 reference's perplexity (llama-perplexity's "Mean
    /// PPL(Q)/PPL(base)": exp of the mean log ratio).
    pub perplexity_ratio: Option<f64>,
    /// Its standard error: ratio × the standard error of the mean log ratio, which
    /// counts the correlation between the two models' log-likelihoods (llama-perplexity's
    /// formula).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub perplexity_ratio_stderr: Option<f64>,
    /// Mean of ln(p_f32(token)) - ln(p(token)) over positions: llama-perplexity's "Mean
    /// ln(PPL(Q)/PPL(base))".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ln_perplexity_ratio: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ln_perplexity_ratio_stderr: Option<f64>,
    /// Mean over positions of KL(f32 || variant) of the next-token distributions, nats.
    pub kl_mean: Option<f64>,
    /// The standard error of kl_mean, as llama-perplexity computes it:
    /// sqrt((mean of KL² - kl_mean²) / (n - 1)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kl_stderr: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kl_median: Option<f64>,
    pub kl_p99: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kl_p999: Option<f64>,
    pub kl_max: Option<f64>,
    /// KL percentiles 95, 90, 10, 5 and 1 (every percentile, the median included, is
    /// llama-perplexity's: linear interpolation between the sorted values).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kl_p95: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kl_p90: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kl_p10: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kl_p05: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kl_p01: Option<f64>,
    /// Mean change in the probability of the text's next token, p(token) -
    /// p_f32(token) (a fraction; llama-perplexity prints it in percent), and its
    /// standard error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta_p_mean: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta_p_mean_stderr: Option<f64>,
    /// Root mean square of that change, and its standard error (llama-perplexity's:
    /// half the standard error of the mean square over the RMS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta_p_rms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta_p_rms_stderr: Option<f64>,
    /// Share of positions where the variant's most likely token is f32's (0..1).
    pub same_top1: Option<f64>,
    /// Its standard error, as llama-perplexity computes it: sqrt(p (1 - p) / (n - 1)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub same_top1_stderr: Option<f64>,
    /// Leading generated tokens on the benchmark prompt equal to f32's.
    pub leading_tokens_equal_to_f32: usize,
    /// Wall time of this variant's quality pass.
    pub seconds: f64,
    /// Whether this variant is the reference configuration itself, whose pass was the
    /// reference pass (computed once per run, compared with itself).
    #[serde(default)]
    pub is_reference: bool,
    /// The quality gate's verdict, when the scenario sets thresholds.
    #[serde(default)]
    pub gate: Option<Gate>,
    /// Why a figure is absent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gate {
    pub passed: bool,
    pub reasons: Vec<String>,
}

/// `Some(x)` for a finite figure; `None` and a note naming it otherwise.
pub fn finite_or_note(name: &str, x: f64, notes: &mut Vec<String>) -> Option<f64> {
    if x.is_finite() {
        Some(x)
    } else {
        notes.push(format!(
            "{name} came out {x} (non-finite: the model's outputs hold NaN or infinity); recorded as absent"
        ));
        None
    }
}

impl QualityRecord {
    /// The figures from each position's KL, whether the top-1 agreed (`same` of
    /// them), and the variant's and the reference's negative log-likelihood of the
    /// text's next token. Every statistic is llama-perplexity's (see [`percentile`] and
    /// [`stats::mean_and_stderr`]).
    fn from_positions(
        kls: &[f64],
        same: usize,
        nll: &[f64],
        nll_ref: &[f64],
        leading: usize,
        seconds: f64,
    ) -> Self {
        let n = kls.len().max(1);
        let mut sorted = kls.to_vec();
        sorted.sort_by(f64::total_cmp);
        let at = |q: f64| crate::analysis::stats::percentile(&sorted, q).unwrap_or(0.0);
        let (kl_mean, kl_se) = stats::mean_and_stderr(kls);
        let denom = (kls.len() as f64 - 1.0).max(1.0);
        let p_same = same as f64 / n as f64;
        let same_se = (p_same * (1.0 - p_same) / denom).sqrt();
        let (lnppl, lnppl_se) = stats::mean_and_stderr(nll);
        let (lnppl_ref, lnppl_ref_se) = stats::mean_and_stderr(nll_ref);
        let cov = stats::covariance(nll, nll_ref);
        let ln_ratio = lnppl - lnppl_ref;
        let ln_ratio_se = (lnppl_se * lnppl_se + lnppl_ref_se * lnppl_ref_se - 2.0 * cov)
            .max(0.0)
            .sqrt();
        let dp: Vec<f64> = nll
            .iter()
            .zip(nll_ref)
            .map(|(a, b)| (-a).exp() - (-b).exp())
            .collect();
        let (dp_mean, dp_mean_se) = stats::mean_and_stderr(&dp);
        let dp2: Vec<f64> = dp.iter().map(|x| x * x).collect();
        let (mse, mse_se) = stats::mean_and_stderr(&dp2);
        let rms = mse.sqrt();
        let rms_se = if rms > 0.0 { 0.5 / rms * mse_se } else { 0.0 };
        let mut notes = Vec::new();
        let mut f = |name: &str, x: f64| finite_or_note(name, x, &mut notes);
        // A NaN sorts last under total_cmp, so the maximum is NaN whenever any KL is.
        let perplexity = lnppl.exp();
        let ratio = ln_ratio.exp();
        QualityRecord {
            positions: kls.len(),
            top_k_agreement: None,
            perplexity: f("perplexity", perplexity),
            perplexity_stderr: f("perplexity_stderr", perplexity * lnppl_se),
            perplexity_ratio: f("perplexity_ratio", ratio),
            perplexity_ratio_stderr: f("perplexity_ratio_stderr", ratio * ln_ratio_se),
            ln_perplexity_ratio: f("ln_perplexity_ratio", ln_ratio),
            ln_perplexity_ratio_stderr: f("ln_perplexity_ratio_stderr", ln_ratio_se),
            kl_mean: f("kl_mean", kl_mean),
            kl_stderr: f("kl_stderr", kl_se),
            kl_median: f("kl_median", at(0.5)),
            kl_p99: f("kl_p99", at(0.99)),
            kl_p999: f("kl_p999", at(0.999)),
            kl_max: f("kl_max", sorted.last().copied().unwrap_or(0.0)),
            kl_p95: f("kl_p95", at(0.95)),
            kl_p90: f("kl_p90", at(0.90)),
            kl_p10: f("kl_p10", at(0.10)),
            kl_p05: f("kl_p05", at(0.05)),
            kl_p01: f("kl_p01", at(0.01)),
            delta_p_mean: f("delta_p_mean", dp_mean),
            delta_p_mean_stderr: f("delta_p_mean_stderr", dp_mean_se),
            delta_p_rms: f("delta_p_rms", rms),
            delta_p_rms_stderr: f("delta_p_rms_stderr", rms_se),
            same_top1: Some(p_same),
            same_top1_stderr: Some(same_se),
            leading_tokens_equal_to_f32: leading,
            seconds,
            is_reference: false,
            gate: None,
            notes,
        }
    }

    /// Same-top-1 means nothing where a row of logits holds NaN or infinity (no token is
    /// the most likely; argmax falls on the first): absent, with a note, when any of the
    /// variant's (`variant`) or the reference's (`reference`) rows did.
    pub fn top1_needs_finite_rows(&mut self, variant: usize, reference: usize) {
        if variant == 0 && reference == 0 {
            return;
        }
        self.same_top1 = None;
        self.same_top1_stderr = None;
        self.notes.push(format!(
            "same_top1 is absent: {} of {} positions' logits hold NaN or infinity ({}), so no token is the most likely there",
            variant.max(reference),
            self.positions,
            match (variant > 0, reference > 0) {
                (true, true) => "the variant's and the reference's",
                (true, false) => "the variant's",
                _ => "the reference's",
            }
        ));
    }

    /// Apply the scenario's thresholds. An absent figure fails the gate it is needed by.
    pub fn apply_gate(&mut self, cfg: &QualityConfig) {
        if cfg.max_kl.is_none() && cfg.min_same_top1.is_none() {
            return;
        }
        let mut reasons = Vec::new();
        if let Some(k) = cfg.max_kl {
            match self.kl_mean {
                Some(kl) if kl <= k => {}
                Some(kl) => reasons.push(format!("mean KL {kl:.3e} > max_kl {k}")),
                None => reasons.push(format!(
                    "mean KL is absent (not finite), so max_kl {k} cannot be met"
                )),
            }
        }
        if let Some(t) = cfg.min_same_top1 {
            match self.same_top1 {
                Some(s) if s >= t => {}
                Some(s) => reasons.push(format!("same-top-1 {s:.4} < min_same_top1 {t}")),
                None => reasons.push(format!(
                    "same-top-1 is absent, so min_same_top1 {t} cannot be met"
                )),
            }
        }
        self.gate = Some(Gate {
            passed: reasons.is_empty(),
            reasons,
        });
    }
}

/// What the run records about its reference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReferenceInfo {
    pub text_source: String,
    pub tokens: usize,
    pub positions: usize,
    pub window: usize,
    pub stride: usize,
    pub windows: usize,
    /// Absent when it came out non-finite.
    pub perplexity: Option<f64>,
    /// Wall time of the reference pass (forward passes and storing the distributions).
    pub seconds: f64,
    /// Load time of the reference model.
    pub load_seconds: f64,
    /// Bytes of the stored distributions (on disk, deleted after the run).
    pub stored_bytes: u64,
    pub generated_token_ids: Vec<u32>,
    /// Which positions were scored ("second-half": llama-perplexity's chunks).
    #[serde(default, skip_serializing_if = "Scoring::is_all")]
    pub scoring: Scoring,
    /// What the f32 reference's weights are when they are not the model's own floats: an
    /// already quantized file's values dequantized (allowed by --requantize).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basis: Option<String>,
    /// The engine that computed it (the run's first).
    #[serde(default)]
    pub engine: crate::engine::EngineKind,
}

/// Greedy tokens of the reference on the prompt, for the leading-agreement count.
pub fn reference_generation(m: &dyn Loaded, prompt: &[u32], n: usize) -> Result<Vec<u32>> {
    let g = crate::run::generate::generate(
        m,
        prompt,
        crate::run::generate::GenerateOptions::exactly(n),
        &mut crate::run::generate::NoObserver,
    )?;
    Ok(g.new_ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_half_chunks_are_llama_perplexitys() {
        assert_eq!(
            second_half_windows(1100, 512),
            vec![(0, 512, 256), (512, 1024, 768)]
        );
        assert!(second_half_windows(511, 512).is_empty());
    }

    /// The standard errors and percentiles against a direct computation.
    #[test]
    fn kl_statistics_are_computed_as_llama_perplexity_does() {
        let kls = [0.1, 0.2, 0.3, 0.4];
        let nll = [0.5, 1.0, 2.0, 0.25];
        let nll_ref = [0.4, 1.2, 1.5, 0.25];
        let r = QualityRecord::from_positions(&kls, 3, &nll, &nll_ref, 0, 0.0);
        let close =
            |a: Option<f64>, b: f64| assert!((a.unwrap() - b).abs() < 1e-12, "{a:?} vs {b}");
        close(r.kl_mean, 0.25);
        // mean of squares 0.075, minus 0.0625, over n - 1 = 3
        close(r.kl_stderr, (0.0125f64 / 3.0).sqrt());
        close(r.same_top1, 0.75);
        close(r.same_top1_stderr, (0.75f64 * 0.25 / 3.0).sqrt());
        // Linear interpolation between sorted values: the median of 4 is the mean of the
        // middle two; the 99.9th is 0.3 + 0.997 × 0.1; the 10th 0.1 + 0.3 × 0.1.
        close(r.kl_median, 0.25);
        close(r.kl_max, 0.4);
        close(r.kl_p999, 0.3997);
        close(r.kl_p10, 0.13);
        close(r.kl_p01, 0.103);
        close(r.kl_p95, 0.385);
        // Δp = e^-nll - e^-nll_ref per position, directly.
        let dp: Vec<f64> = nll
            .iter()
            .zip(&nll_ref)
            .map(|(a, b): (&f64, &f64)| (-a).exp() - (-b).exp())
            .collect();
        let mean = dp.iter().sum::<f64>() / 4.0;
        let var = dp.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 4.0;
        close(r.delta_p_mean, mean);
        close(r.delta_p_mean_stderr, (var / 3.0).sqrt());
        let ms = dp.iter().map(|x| x * x).sum::<f64>() / 4.0;
        close(r.delta_p_rms, ms.sqrt());
        let var2 = dp.iter().map(|x| (x * x - ms).powi(2)).sum::<f64>() / 4.0;
        close(r.delta_p_rms_stderr, 0.5 / ms.sqrt() * (var2 / 3.0).sqrt());
        // ln ratio: mean of nll - nll_ref = (0.1 - 0.2 + 0.5 + 0) / 4 = 0.1; its error
        // is the error of the mean of the differences (the covariance term does that).
        close(r.ln_perplexity_ratio, 0.1);
        let d = [0.1, -0.2, 0.5, 0.0];
        let vd = d.iter().map(|x: &f64| (x - 0.1).powi(2)).sum::<f64>() / 4.0;
        close(r.ln_perplexity_ratio_stderr, (vd / 3.0).sqrt());
        close(r.perplexity_ratio, 0.1f64.exp());
        close(r.perplexity_ratio_stderr, 0.1f64.exp() * (vd / 3.0).sqrt());
        close(r.perplexity, (3.75f64 / 4.0).exp());
    }

    #[test]
    fn windows_score_every_position_once() {
        for (n, w, s) in [
            (10, 4, 4),
            (10, 4, 2),
            (10, 10, 10),
            (2300, 1024, 1024),
            (2300, 1024, 512),
            (5, 8, 8),
            (9, 4, 3),
        ] {
            let wins = windows(n, w, s);
            let mut scored = Vec::new();
            for &(b, e, first) in &wins {
                assert!(e - b <= w && first >= b && first < e, "{wins:?}");
                scored.extend(first..e - 1);
            }
            assert_eq!(
                scored,
                (0..n - 1).collect::<Vec<_>>(),
                "n={n} w={w} s={s}: {wins:?}"
            );
        }
    }

    #[test]
    fn coding_is_tight_and_identical_rows_code_identically() {
        let logits: Vec<f32> = (0..1000)
            .map(|i| ((i * 37) % 101) as f32 / 10.0 - 5.0)
            .collect();
        let lp = log_softmax(&logits);
        let total: f64 = lp.iter().map(|&x| (x as f64).exp()).sum();
        assert!((total - 1.0).abs() < 1e-5);
        let (min, step, codes) = encode(&lp);
        let back = decode(min, step, &codes);
        let err = lp
            .iter()
            .zip(&back)
            .map(|(a, b)| (*a as f64 - b).abs())
            .fold(0.0, f64::max);
        assert!(err <= step as f64 / 2.0 + 1e-6, "{err} vs step {step}");
        assert_eq!(kl_divergence(&back, &back), 0.0);
    }

    #[test]
    fn kl_matches_a_hand_computation() {
        // P = (0.5, 0.25, 0.25), Q = (0.25, 0.5, 0.25): KL = 0.5 ln 2 - 0.25 ln 2 = 0.25 ln 2.
        let lp: Vec<f64> = [0.5f64, 0.25, 0.25].iter().map(|x| x.ln()).collect();
        let lq: Vec<f64> = [0.25f64, 0.5, 0.25].iter().map(|x| x.ln()).collect();
        assert!((kl_divergence(&lp, &lq) - 0.25 * 2f64.ln()).abs() < 1e-12);
    }

    #[test]
    fn config_validation_names_the_field() {
        let c = QualityConfig {
            stride: Some(9),
            window: Some(8),
            ..Default::default()
        };
        assert_eq!(c.validate().unwrap_err().0, "stride");
        let c = QualityConfig {
            min_same_top1: Some(1.5),
            ..Default::default()
        };
        assert_eq!(c.validate().unwrap_err().0, "min_same_top1");
        let c = QualityConfig {
            scoring: Scoring::SecondHalf,
            stride: Some(4),
            ..Default::default()
        };
        let (field, msg) = c.validate().unwrap_err();
        assert_eq!(field, "stride");
        assert!(msg.contains("second-half"), "{msg}");
    }
}
