//! Workload tests: prompt length, new tokens, context depth, batch and threads as lists
//! whose cartesian product gives each variant's test rows, as llama-bench's lists do.
//!
//! A test is `pp` (a synthetic prompt of exactly P tokens, no new token), `tg` (N tokens
//! generated one at a time, the first from one synthetic token) or `pp+tg` (the prompt,
//! whose pass gives the first token, then N - 1 decode steps), each after `depth` tokens
//! already in the KV cache (filled once per test, untimed, and forked for every
//! repetition) and for `batch` independent sequences decoded together through the same
//! kernels, on a pool of `threads` threads. Synthetic prompts are seeded token ids, as
//! llama-bench's are: the speed of a forward pass does not depend on which ids it reads.
//!
//! This file knows the shape of a test and how to run one repetition; the runner
//! decides when probes read memory around it and what lands in the record.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::analysis::stats::Summary;
use crate::engine::{Context as EngineContext, Loaded};
use crate::probe::Reading;
use crate::run::clock;

/// The most sequences one batch test runs together.
pub const MAX_BATCH: usize = 256;
/// The most threads a test asks for.
pub const MAX_THREADS: usize = 1024;
/// The longest prompt, generation or depth a test asks for (positions).
pub const MAX_POSITIONS: usize = 1 << 20;
/// The most tests one variant runs (the product of a workload's lists, over its tables).
pub const MAX_TESTS: usize = 4096;
/// Depth is filled in chunks of this many positions per pass (bounds the attention
/// matrix a fill holds at once).
const FILL_CHUNK: usize = 256;

/// The scenario's `[workload]` table: lists whose cartesian product makes the tests.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadConfig {
    /// Synthetic prompts of exactly this many tokens (0: a generation-only test).
    #[serde(default)]
    pub prompt_tokens: Vec<usize>,
    /// New tokens per sequence (0: a prompt-only test); default: the scenario's
    /// `new_tokens`.
    #[serde(default)]
    pub new_tokens: Vec<usize>,
    /// Tokens already in the KV cache before the timed test; default 0.
    #[serde(default)]
    pub depth: Vec<usize>,
    /// Independent sequences decoded together; default 1.
    #[serde(default)]
    pub batch: Vec<usize>,
    /// Threads of the pool the test runs on; default: the process's (every core).
    #[serde(default)]
    pub threads: Vec<usize>,
}

impl WorkloadConfig {
    /// Whether any test is asked for.
    pub fn is_empty(&self) -> bool {
        self.prompt_tokens.is_empty()
            && self.new_tokens.is_empty()
            && self.depth.is_empty()
            && self.batch.is_empty()
            && self.threads.is_empty()
    }

    /// Check the lists: (field, problem) on failure.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let lists: [(&'static str, &Vec<usize>, usize, usize); 5] = [
            (
                "workload.prompt_tokens",
                &self.prompt_tokens,
                0,
                MAX_POSITIONS,
            ),
            ("workload.new_tokens", &self.new_tokens, 0, MAX_POSITIONS),
            ("workload.depth", &self.depth, 0, MAX_POSITIONS),
            ("workload.batch", &self.batch, 1, MAX_BATCH),
            ("workload.threads", &self.threads, 1, MAX_THREADS),
        ];
        for (field, list, lo, hi) in lists {
            for (i, &x) in list.iter().enumerate() {
                if !(lo..=hi).contains(&x) {
                    return Err((
                        field,
                        format!("{field} = {x} is out of range: each value must be {lo}..={hi}"),
                    ));
                }
                if list[..i].contains(&x) {
                    return Err((field, format!("{field} lists {x} twice")));
                }
            }
        }
        if !self.is_empty() && self.prompt_tokens.is_empty() {
            return Err((
                "workload.prompt_tokens",
                "workload.prompt_tokens is missing: list the prompt lengths to test (0 for generation-only tests, as llama-bench's tg)".into(),
            ));
        }
        if !self.is_empty()
            && self.prompt_tokens.iter().all(|&p| p == 0)
            && self.new_tokens.iter().all(|&n| n == 0)
            && !self.new_tokens.is_empty()
        {
            return Err((
                "workload.new_tokens",
                "every test would have 0 prompt tokens and 0 new tokens: nothing to run".into(),
            ));
        }
        Ok(())
    }

    /// How many combinations the lists make (an upper bound of [`WorkloadConfig::tests`],
    /// computed without expanding them).
    pub fn test_count(&self) -> u128 {
        [
            &self.prompt_tokens,
            &self.new_tokens,
            &self.depth,
            &self.batch,
            &self.threads,
        ]
        .iter()
        .fold(1u128, |a, l| a.saturating_mul(l.len().max(1) as u128))
    }

    /// The tests, threads × batch × depth × prompt × new tokens, in that nesting
    /// (a test with neither prompt nor new tokens is left out). `default_new_tokens`
    /// stands in for an absent `new_tokens` list.
    pub fn tests(&self, default_new_tokens: usize) -> Vec<Test> {
        if self.prompt_tokens.is_empty() {
            return Vec::new();
        }
        let or = |l: &Vec<usize>, d: usize| if l.is_empty() { vec![d] } else { l.clone() };
        let threads: Vec<Option<usize>> = if self.threads.is_empty() {
            vec![None]
        } else {
            self.threads.iter().copied().map(Some).collect()
        };
        let mut out = Vec::new();
        for &threads in &threads {
            for &batch in &or(&self.batch, 1) {
                for &depth in &or(&self.depth, 0) {
                    for &prompt_tokens in &self.prompt_tokens {
                        for &new_tokens in &or(&self.new_tokens, default_new_tokens) {
                            if prompt_tokens == 0 && new_tokens == 0 {
                                continue;
                            }
                            out.push(Test {
                                prompt_tokens,
                                new_tokens,
                                depth,
                                batch,
                                threads,
                            });
                        }
                    }
                }
            }
        }
        out
    }
}

/// Read one `[workload]` table or an array of `[[workload]]` tables (results.json
/// writes the array).
pub fn one_or_many<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<WorkloadConfig>, D::Error> {
    use serde::de::Error;
    let v = serde_json::Value::deserialize(d)?;
    let parsed = if v.is_array() {
        serde_json::from_value(v)
    } else {
        serde_json::from_value(v).map(|w| vec![w])
    };
    parsed.map_err(|e| D::Error::custom(format!("workload: {e}")))
}

/// One combination of the workload's axes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Test {
    pub prompt_tokens: usize,
    pub new_tokens: usize,
    pub depth: usize,
    pub batch: usize,
    /// `None`: the process's thread count.
    pub threads: Option<usize>,
}

impl Test {
    /// llama-bench's test name: `pp512`, `tg32`, `pp512+tg32`.
    pub fn kind(&self) -> String {
        match (self.prompt_tokens, self.new_tokens) {
            (p, 0) => format!("pp{p}"),
            (0, n) => format!("tg{n}"),
            (p, n) => format!("pp{p}+tg{n}"),
        }
    }

    /// The name with what else sets it apart: `tg32 @ d512 x4 t2`.
    pub fn name(&self) -> String {
        let mut s = self.kind();
        if self.depth > 0 {
            s += &format!(" @ d{}", self.depth);
        }
        if self.batch > 1 {
            s += &format!(" x{}", self.batch);
        }
        if let Some(t) = self.threads {
            s += &format!(" t{t}");
        }
        s
    }

    /// Decode steps (one token per sequence each, timed one by one).
    pub fn decode_steps(&self) -> usize {
        if self.prompt_tokens == 0 {
            self.new_tokens
        } else {
            self.new_tokens.saturating_sub(1)
        }
    }

    /// Positions each sequence's KV cache holds at the end: the depth, what was fed
    /// (the prompt or a start token, and every generated token but the last, which is
    /// produced, never fed).
    pub fn positions(&self) -> usize {
        let fed = match (self.prompt_tokens, self.new_tokens) {
            (p, 0) => p,
            (0, n) => n,
            (p, n) => p + n - 1,
        };
        self.depth + fed
    }

    /// The context the cache holds during each decode step, per step in order (the
    /// step's own token included): what its attention reads.
    pub fn decode_contexts(&self) -> Vec<usize> {
        let first = self.depth + self.prompt_tokens + 1;
        (0..self.decode_steps()).map(|i| first + i).collect()
    }

    /// Why the test cannot run on a model of `context` positions, if it cannot.
    pub fn does_not_fit(&self, context: usize) -> Option<String> {
        let needed = self.positions();
        (needed > context).then(|| {
            format!(
                "needs {needed} positions (depth {} + prompt {} + {} new tokens{}), more than the model's context of {context}",
                self.depth,
                self.prompt_tokens,
                self.new_tokens,
                if self.prompt_tokens > 0 && self.new_tokens > 0 { " - 1: the last is never fed" } else { "" }
            )
        })
    }
}

/// Threads of candle's own pool for its quantized products (fixed for the process):
/// `CANDLE_NUM_THREADS`, else `RAYON_NUM_THREADS`, as candle reads them.
pub fn candle_pool_threads() -> usize {
    std::env::var("CANDLE_NUM_THREADS")
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(candle_core::utils::get_num_threads)
}

/// Exact bytes the KV cache holds: `sequences × positions × bytes per position`, every
/// layer's keys and values.
pub fn kv_cache_bytes(per_token: usize, sequences: usize, positions: usize) -> u64 {
    (per_token as u64)
        .saturating_mul(sequences as u64)
        .saturating_mul(positions as u64)
}

/// Seeded synthetic token ids in `0..vocab` (splitmix64 of the sequence, the offset and
/// the seed): the same test always reads the same ids.
pub fn synthetic_tokens(vocab: usize, sequence: usize, offset: usize, n: usize) -> Vec<u32> {
    (0..n)
        .map(|i| {
            let mut z = (sequence as u64) << 40 ^ (offset + i) as u64 ^ 0x9e37_79b9_7f4a_7c15;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            (z % vocab as u64) as u32
        })
        .collect()
}

/// One sequence's context of `depth` synthetic tokens (untimed): filled once per
/// variant, in passes of at most 256 tokens, and copied into each test's own context by
/// [`context_for`] (never appended to itself).
pub fn fill(model: &dyn Loaded, depth: usize) -> Result<Box<dyn EngineContext>> {
    let mut ctx = model.new_context(1, depth)?;
    let mut done = 0;
    while done < depth {
        let n = FILL_CHUNK.min(depth - done);
        let ids = synthetic_tokens(model.vocab_size(), 0, done, n);
        model
            .feed(&ids, ctx.as_mut())
            .with_context(|| format!("filling the context to depth {depth}"))?;
        done += n;
    }
    Ok(ctx)
}

/// Test `t`'s starting context: `t.depth` positions of the filled context `base`, copied
/// to each of the batch's sequences (so every sequence attends over its own cache, as
/// independent sequences do; their contents are the same tokens), with room for the
/// rest of the test.
pub fn context_for(
    model: &dyn Loaded,
    base: &dyn EngineContext,
    t: &Test,
) -> Result<Box<dyn EngineContext>> {
    model.context_for(base, t.depth, t.batch, t.positions())
}

/// What one repetition of a test measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Repetition {
    /// The prompt's pass (it produces the first token), when the test has a prompt.
    pub prefill_seconds: Option<f64>,
    /// Each decode step, in order.
    pub decode_step_seconds: Vec<f64>,
    /// The tokens each sequence generated.
    pub tokens: Vec<Vec<u32>>,
}

/// Run one repetition of `t` on a fork of `filled` (see [`context_for`]); every clock
/// is read with the engine synchronised.
pub fn run_once(model: &dyn Loaded, t: &Test, filled: &dyn EngineContext) -> Result<Repetition> {
    let vocab = model.vocab_size();
    let mut ctx = model.fork(filled)?;
    let mut tokens: Vec<Vec<u32>> = vec![Vec::with_capacity(t.new_tokens); t.batch];
    let mut prefill_seconds = None;
    let mut next: Vec<u32>;
    if t.prompt_tokens > 0 {
        let prompts: Vec<Vec<u32>> = (0..t.batch)
            .map(|s| synthetic_tokens(vocab, s, t.depth, t.prompt_tokens))
            .collect();
        let refs: Vec<&[u32]> = prompts.iter().map(Vec::as_slice).collect();
        let t0 = clock::synced_now(model)?;
        next = model.next_tokens(&refs, ctx.as_mut())?;
        prefill_seconds = Some(clock::synced_seconds_since(model, t0)?);
        if t.new_tokens > 0 {
            for (seq, &tok) in tokens.iter_mut().zip(&next) {
                seq.push(tok);
            }
        }
    } else {
        // A generation-only test starts from one synthetic token per sequence.
        next = (0..t.batch)
            .map(|s| synthetic_tokens(vocab, s, t.depth, 1)[0])
            .collect();
    }
    let mut decode_step_seconds = Vec::with_capacity(t.decode_steps());
    for _ in 0..t.decode_steps() {
        let inputs: Vec<[u32; 1]> = next.iter().map(|&x| [x]).collect();
        let refs: Vec<&[u32]> = inputs.iter().map(|x| x.as_slice()).collect();
        let t0 = clock::synced_now(model)?;
        next = model.next_tokens(&refs, ctx.as_mut())?;
        decode_step_seconds.push(clock::synced_seconds_since(model, t0)?);
        for (seq, &tok) in tokens.iter_mut().zip(&next) {
            seq.push(tok);
        }
    }
    anyhow::ensure!(
        tokens.iter().all(|s| s.len() == t.new_tokens),
        "a sequence generated {} tokens, not the {} asked for",
        tokens.iter().map(Vec::len).min().unwrap_or(0),
        t.new_tokens
    );
    Ok(Repetition {
        prefill_seconds,
        decode_step_seconds,
        tokens,
    })
}

/// The value at quantile `q` of unsorted `xs`: [`crate::analysis::stats::percentile`] (linear
/// interpolation between the sorted values, as llama-perplexity's percentiles).
pub fn quantile(xs: &[f64], q: f64) -> Option<f64> {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    crate::analysis::stats::percentile(&v, q)
}

/// Whether a test ran, was skipped (it does not fit the model) or failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TestStatus {
    Ok,
    Skipped,
    Failed,
}

/// One test row of a variant: what it is, what it measured, and the figures derived.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestRecord {
    #[serde(flatten)]
    pub test: Test,
    /// `pp512+tg32 @ d512 x4`: kind, depth, batch, threads.
    pub name: String,
    pub status: TestStatus,
    #[serde(default)]
    pub error: Option<String>,
    /// Threads the test's pool had.
    pub threads_used: usize,
    /// Set when the test asked for a thread count other than the process's: what that
    /// count did not reach (candle's quantized products run on candle's own pool, sized
    /// once per process).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads_note: Option<String>,
    /// Positions each sequence's cache holds at the end.
    pub positions: usize,
    /// Exact KV-cache bytes at the end of the test, every sequence: batch × positions ×
    /// the model's bytes per position (`model.kv_cache_bytes_per_token`). The buffers
    /// are allocated for every position of the test at its first step, so this is also
    /// what they hold throughout.
    pub kv_cache_bytes: u64,
    /// Wall time of filling the depth (untimed for the rates).
    #[serde(default)]
    pub fill_seconds: Option<f64>,
    pub warmup_repetitions: usize,
    /// Per timed repetition: the prompt's pass.
    #[serde(default)]
    pub prefill_seconds: Vec<f64>,
    /// Per timed repetition: each decode step.
    #[serde(default)]
    pub decode_step_seconds: Vec<Vec<f64>>,
    /// batch × prompt_tokens / prefill time, per repetition.
    #[serde(default)]
    pub prefill_tokens_per_second: Option<Summary>,
    /// The prompt's pass, which gives the first token (tests with a prompt and new tokens).
    #[serde(default)]
    pub time_to_first_token_seconds: Option<Summary>,
    /// batch × decode steps / their total time, per repetition.
    #[serde(default)]
    pub decode_tokens_per_second: Option<Summary>,
    /// Per repetition, the 50th / 90th / 99th percentile of its decode steps' times.
    #[serde(default)]
    pub decode_step_p50_seconds: Option<Summary>,
    #[serde(default)]
    pub decode_step_p90_seconds: Option<Summary>,
    #[serde(default)]
    pub decode_step_p99_seconds: Option<Summary>,
    /// A mixture of experts over the timed repetitions, averaged over the layers: the
    /// distinct experts a decode step touched (the union over the batch's sequences)
    /// and the distinct experts the whole test touched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experts_per_step_mean: Option<f64>,
    /// The weight bytes this test's decode steps read (the variant's, or under a
    /// mixture of experts the experts its steps were routed to).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights_streamed_bytes_per_step: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experts_touched_mean: Option<f64>,
    /// Bytes one decode step reads: the weights it streams
    /// (`weights_streamed_bytes_per_step`, once for the whole batch; under a mixture of
    /// experts, the experts this test's steps were routed to) plus every sequence's keys
    /// and values at the step's context, averaged over the steps.
    #[serde(default)]
    pub decode_bytes_per_step: Option<u64>,
    /// decode_bytes_per_step × steps per second, per repetition, GB/s (10^9 bytes).
    #[serde(default)]
    pub decode_bandwidth_gbps: Option<Summary>,
    /// The median of decode_bandwidth_gbps over the run's measured read bandwidth
    /// (`environment.memory_bandwidth.read_gbps`).
    #[serde(default)]
    pub bandwidth_fraction: Option<f64>,
    /// Whether every repetition (warm-up included) generated the same tokens.
    #[serde(default)]
    pub tokens_identical_across_repetitions: Option<bool>,
    /// The first sequence's tokens in the first timed repetition.
    #[serde(default)]
    pub generated_token_ids: Vec<u32>,
    /// Memory after the depth was filled, before the timed repetitions.
    #[serde(default)]
    pub memory_before: Option<Reading>,
    /// The highest value the background sampler saw during the timed repetitions.
    #[serde(default)]
    pub memory_peak: Option<Reading>,
}

impl TestRecord {
    /// A record for `t` before it runs (status failed until it succeeds).
    /// `kv`: the bytes the test's caches hold at its end.
    pub fn new(t: &Test, kv: u64, warmup: usize) -> Self {
        TestRecord {
            test: *t,
            name: t.name(),
            status: TestStatus::Failed,
            error: None,
            threads_used: t.threads.unwrap_or_else(rayon::current_num_threads),
            threads_note: t
                .threads
                .filter(|&n| n != candle_pool_threads())
                .map(|n| {
                    format!(
                        "{n} thread(s) for the float products, attention, norms and quantbench's kernels; candle's quantized products (every GGUF type without a quantbench kernel on this CPU) ran on candle's own pool of {} threads, fixed per process: set RAYON_NUM_THREADS={n} for the whole run to restrict those too",
                        candle_pool_threads()
                    )
                }),
            positions: t.positions(),
            kv_cache_bytes: kv,
            fill_seconds: None,
            warmup_repetitions: warmup,
            prefill_seconds: Vec::new(),
            decode_step_seconds: Vec::new(),
            prefill_tokens_per_second: None,
            time_to_first_token_seconds: None,
            decode_tokens_per_second: None,
            decode_step_p50_seconds: None,
            decode_step_p90_seconds: None,
            decode_step_p99_seconds: None,
            experts_per_step_mean: None,
            weights_streamed_bytes_per_step: None,
            experts_touched_mean: None,
            decode_bytes_per_step: None,
            decode_bandwidth_gbps: None,
            bandwidth_fraction: None,
            tokens_identical_across_repetitions: None,
            generated_token_ids: Vec::new(),
            memory_before: None,
            memory_peak: None,
        }
    }

    /// Prefill tokens per second of each repetition: batch × prompt tokens / the prompt's
    /// pass. Empty for a test without a prompt.
    pub fn prefill_rates(&self) -> Vec<f64> {
        // in f64: a record read from a file may hold any count
        let tokens = self.test.batch as f64 * self.test.prompt_tokens as f64;
        self.prefill_seconds
            .iter()
            .filter(|&&s| s > 0.0 && tokens > 0.0)
            .map(|s| tokens / s)
            .collect()
    }

    /// Decode tokens per second of each repetition: batch × decode steps / their total
    /// time ([`crate::analysis::stats::decode_tokens_per_second`] of the steps, × batch). Empty
    /// for a test without decode steps.
    pub fn decode_rates(&self) -> Vec<f64> {
        self.decode_step_seconds
            .iter()
            .filter_map(|d| crate::analysis::stats::decode_tokens_per_second(d))
            .map(|r| r * self.test.batch as f64)
            .collect()
    }

    /// Derive the summaries from the repetitions' times. `streamed` is what a decode
    /// step reads of the weights, `kv_at(c)` the bytes one sequence's cache holds at a
    /// context of `c` (a sliding layer its window at most), `read_gbps` the machine's
    /// measured read bandwidth, if measured.
    pub fn summarize(
        &mut self,
        streamed: usize,
        kv_at: &dyn Fn(usize) -> f64,
        read_gbps: Option<f64>,
    ) {
        let t = self.test;
        self.prefill_tokens_per_second = Summary::of(&self.prefill_rates());
        if t.prompt_tokens > 0 && t.new_tokens > 0 {
            self.time_to_first_token_seconds = Summary::of(&self.prefill_seconds);
        }
        let steps: Vec<&Vec<f64>> = self
            .decode_step_seconds
            .iter()
            .filter(|d| !d.is_empty())
            .collect();
        let decode = self.decode_rates();
        if steps.is_empty() || decode.is_empty() {
            return;
        }
        self.decode_tokens_per_second = Summary::of(&decode);
        let pct = |q: f64| {
            let v: Vec<f64> = steps.iter().filter_map(|d| quantile(d, q)).collect();
            Summary::of(&v)
        };
        self.decode_step_p50_seconds = pct(0.50);
        self.decode_step_p90_seconds = pct(0.90);
        self.decode_step_p99_seconds = pct(0.99);
        let contexts = t.decode_contexts();
        let kv_read = contexts.iter().map(|&c| kv_at(c)).sum::<f64>() / contexts.len() as f64
            * t.batch as f64;
        let bytes = streamed as f64 + kv_read;
        self.decode_bytes_per_step = Some(bytes.round() as u64);
        // Steps per second is the decode rate over the batch.
        let gbps: Vec<f64> = decode
            .iter()
            .map(|r| r / t.batch as f64 * bytes / 1e9)
            .collect();
        self.decode_bandwidth_gbps = Summary::of(&gbps);
        self.bandwidth_fraction = match (&self.decode_bandwidth_gbps, read_gbps) {
            (Some(s), Some(r)) if r > 0.0 => Some(s.median / r),
            _ => None,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(p: &[usize], n: &[usize], d: &[usize], b: &[usize]) -> WorkloadConfig {
        WorkloadConfig {
            prompt_tokens: p.to_vec(),
            new_tokens: n.to_vec(),
            depth: d.to_vec(),
            batch: b.to_vec(),
            threads: vec![],
        }
    }

    #[test]
    fn the_axes_expand_as_a_cartesian_product_without_empty_tests() {
        let w = cfg(&[0, 512], &[0, 32], &[0, 512, 1024], &[1, 4]);
        let tests = w.tests(50);
        // (0, 0) is dropped: 3 of the 4 prompt × new pairs, × 3 depths × 2 batches.
        assert_eq!(tests.len(), 3 * 3 * 2);
        let names: Vec<String> = tests.iter().map(Test::name).collect();
        assert_eq!(names[..3], ["tg32", "pp512", "pp512+tg32"]);
        assert!(names.contains(&"tg32 @ d1024 x4".to_string()));
        // An absent new_tokens list is the scenario's new_tokens.
        assert_eq!(cfg(&[8], &[], &[], &[]).tests(50)[0].new_tokens, 50);
        assert!(WorkloadConfig::default().tests(50).is_empty());
    }

    #[test]
    fn positions_and_contexts_count_what_is_fed() {
        let t = |p, n, d| Test {
            prompt_tokens: p,
            new_tokens: n,
            depth: d,
            batch: 2,
            threads: None,
        };
        // The prompt's pass gives token 1; 31 decode steps at contexts 513..=543.
        let pg = t(512, 32, 0);
        assert_eq!((pg.positions(), pg.decode_steps()), (543, 31));
        assert_eq!(pg.decode_contexts().first(), Some(&513));
        assert_eq!(pg.decode_contexts().last(), Some(&543));
        // Generation only: 32 steps from one start token, contexts d+1 ..= d+32.
        let tg = t(0, 32, 512);
        assert_eq!((tg.positions(), tg.decode_steps()), (544, 32));
        assert_eq!(tg.decode_contexts(), (513..=544).collect::<Vec<_>>());
        let pp = t(512, 0, 512);
        assert_eq!((pp.positions(), pp.decode_steps()), (1024, 0));
        assert!(pp.does_not_fit(1024).is_none());
        let e = t(512, 2, 512).does_not_fit(1024).unwrap();
        assert!(e.contains("1025") && e.contains("1024"), "{e}");
        // Exact KV bytes: batch × positions × per position.
        assert_eq!(kv_cache_bytes(73728, 2, 543), 73728 * 2 * 543);
    }

    #[test]
    fn bad_lists_name_the_field() {
        let e = cfg(&[8], &[], &[], &[0]).validate().unwrap_err();
        assert_eq!(e.0, "workload.batch");
        let e = cfg(&[8, 8], &[], &[], &[]).validate().unwrap_err();
        assert!(e.1.contains("twice"), "{}", e.1);
        let e = cfg(&[], &[4], &[], &[]).validate().unwrap_err();
        assert_eq!(e.0, "workload.prompt_tokens");
        let e = cfg(&[0], &[0], &[], &[]).validate().unwrap_err();
        assert!(e.1.contains("nothing to run"), "{}", e.1);
        assert!(cfg(&[0, 8], &[0, 4], &[0, 16], &[1, 2]).validate().is_ok());
    }

    #[test]
    fn summaries_are_computed_from_the_repetitions() {
        let t = Test {
            prompt_tokens: 4,
            new_tokens: 3,
            depth: 0,
            batch: 2,
            threads: None,
        };
        let mut r = TestRecord::new(&t, kv_cache_bytes(100, t.batch, t.positions()), 0);
        r.prefill_seconds = vec![0.5, 0.25];
        r.decode_step_seconds = vec![vec![0.1, 0.3], vec![0.2, 0.2]];
        r.summarize(1000, &|c| 100.0 * c as f64, Some(1.0));
        // 2 sequences × 4 tokens over 0.5 s and 0.25 s.
        let pp = r.prefill_tokens_per_second.unwrap();
        assert_eq!((pp.min, pp.max), (16.0, 32.0));
        // 2 steps × 2 sequences over 0.4 s each: 10 tok/s.
        assert_eq!(r.decode_tokens_per_second.unwrap().median, 10.0);
        // Contexts 5 and 6: 1000 + 2 sequences × 5.5 × 100 bytes = 2100 bytes a step;
        // 5 steps/s → 10500 bytes/s.
        assert_eq!(r.decode_bytes_per_step, Some(2100));
        let bw = r.decode_bandwidth_gbps.unwrap().median;
        assert!((bw - 10500.0 / 1e9).abs() < 1e-15, "{bw}");
        assert!((r.bandwidth_fraction.unwrap() - 10500.0 / 1e9).abs() < 1e-15);
        // p99 of [0.1, 0.3] is 0.1 + 0.99 × 0.2 = 0.298; of [0.2, 0.2] 0.2; their
        // median 0.249.
        assert!((r.decode_step_p99_seconds.unwrap().median - 0.249).abs() < 1e-12);
        assert_eq!(r.time_to_first_token_seconds.unwrap().n, 2);
    }

    #[test]
    fn synthetic_tokens_are_seeded_and_in_the_vocabulary() {
        let a = synthetic_tokens(1000, 0, 0, 64);
        assert_eq!(a, synthetic_tokens(1000, 0, 0, 64));
        assert_ne!(a, synthetic_tokens(1000, 1, 0, 64));
        assert_eq!(a[8..], synthetic_tokens(1000, 0, 8, 56)[..]);
        assert!(a.iter().all(|&x| x < 1000));
    }
}
