//! report.md: the notebook's table in its own terms, then everything a reader needs to
//! trust and compare the figures.

use std::fmt::Write;

use super::{fmt_opt, mb, Headline, RSS};
use crate::record::{Moment, RunRecord};

pub fn render(run: &RunRecord) -> String {
    let mut o = String::new();
    let rows: Vec<Headline> = run.variants.iter().map(|v| Headline::of(v, run)).collect();
    header(&mut o, run);
    notebook_table(&mut o, run, &rows);
    speed(&mut o, run, &rows);
    memory(&mut o, run, &rows);
    render_formats(&mut o, run, &rows);
    render_quality(&mut o, run);
    render_experts(&mut o, run);
    generated_text(&mut o, run);
    render_tests(&mut o, run);
    render_engines(&mut o, run);
    method(&mut o, run);
    o
}

/// A mixture of experts: what memory holds against what a decode step read, and each
/// variant's routing (averaged over the layers) and its agreement with the reference's.
fn render_experts(o: &mut String, run: &RunRecord) {
    let with: Vec<_> = run
        .variants
        .iter()
        .filter_map(|v| v.experts.as_ref().map(|e| (v, e)))
        .collect();
    let Some((_, first)) = with.first() else {
        return;
    };
    let l0 = &first.layers[0];
    let _ = writeln!(
        o,
        "
## Experts

{} layers with {} experts each, {} a token. Memory holds every expert; a decode step reads only those its tokens were routed to (counted over the timed generations: the prompt's pass and every step). Streamed per step: every weight a step reads whatever its route, plus the distinct experts each layer's step touched; \"least\" is with {} experts a layer. Top-k agreement: how often, over the quality pass's positions, a layer's expert set equals the f32 reference's (mean and lowest over the layers).
",
        first.layers.len(),
        l0.experts,
        l0.top_k,
        l0.top_k
    );
    let _ = writeln!(
        o,
        "| variant | experts held (MB) | streamed per step (MB) | least (MB) | distinct a step | distinct a prompt | touched | top-k agreement (mean / lowest) |
|---|---:|---:|---:|---:|---:|---:|---:|"
    );
    for (v, e) in with {
        let n = e.layers.len().max(1) as f64;
        let mean = |f: &dyn Fn(&crate::record::LayerExperts) -> f64| {
            e.layers.iter().map(f).sum::<f64>() / n
        };
        let agree: Vec<f64> = e.layers.iter().filter_map(|l| l.top_k_agreement).collect();
        let agreement = if agree.len() == e.layers.len() && !agree.is_empty() {
            format!(
                "{:.1}% / {:.1}%",
                100.0 * agree.iter().sum::<f64>() / agree.len() as f64,
                100.0 * agree.iter().cloned().fold(f64::INFINITY, f64::min)
            )
        } else {
            "-".to_string()
        };
        let _ = writeln!(
            o,
            "| {} | {:.1} | {:.2} | {:.2} | {:.2} | {:.1} | {:.1} | {agreement} |",
            v.key(),
            e.expert_bytes_held as f64 / 1e6,
            e.streamed_bytes_per_step_mean / 1e6,
            e.streamed_bytes_per_step_least as f64 / 1e6,
            mean(&|l| l.distinct_per_step_mean),
            mean(&|l| l.distinct_per_prompt_max as f64),
            mean(&|l| l.distinct_over_generations as f64),
        );
    }
}

/// What each engine said it did, and its own memory accounting, when a run used another
/// engine than quantbench's own (a run of the own engine alone says it in the header).
fn render_engines(o: &mut String, run: &RunRecord) {
    if run.variants.iter().all(|v| v.engine.is_default()) {
        return;
    }
    let _ = writeln!(
        o,
        "
## Engines

What each engine reports it did, and its own account of its memory (bytes per backend buffer: the model's weights, the context's KV cache, the compute buffers) beside the process RSS above.
"
    );
    for v in &run.variants {
        let Some(r) = &v.engine_report else { continue };
        let _ = writeln!(
            o,
            "- **{}** ({}): {}",
            v.key(),
            r.version.as_deref().unwrap_or("version unknown"),
            r.settings
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join("; ")
        );
        if !r.buffers.is_empty() {
            let _ = writeln!(
                o,
                "  - its accounting: {}",
                r.buffers
                    .iter()
                    .map(|b| format!("{} {} {:.1} MB", b.buffer, b.holds, mb(b.bytes)))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
}

/// The title and what was measured: model, tokenizer, file, device, settings, build.
fn header(o: &mut String, run: &RunRecord) {
    let s = &run.scenario;
    let e = &run.environment;
    let _ = writeln!(o, "# quantbench: {}\n", s.name);
    if let Some(d) = &s.description {
        let _ = writeln!(o, "{d}\n");
    }
    let _ = writeln!(o, "- model: {}", run.model.name);
    let _ = writeln!(
        o,
        "- architecture {}; {} parameters; {} layers, width {}, {} heads{}, vocabulary {}, context {}{}",
        run.model.architecture,
        run.model.parameters,
        run.model.n_layer,
        run.model.n_embd,
        run.model.n_head,
        match run.model.n_kv_head {
            Some(kv) if kv != run.model.n_head => format!(" ({kv} key/value heads)"),
            _ => String::new(),
        },
        run.model.vocab_size,
        run.model.n_positions,
        run.model
            .source_dtype
            .as_ref()
            .map(|d| format!("; stored as {d} (the f32 variant is these values widened)"))
            .unwrap_or_default()
    );
    if let Some(t) = &run.model.tokenizer {
        let _ = writeln!(o, "- tokenizer: {t}");
    }
    if run.model.file_type.is_some() || run.model.file_bytes.is_some() {
        let _ = writeln!(
            o,
            "- GGUF file: type {}, {} on disk",
            run.model.file_type.as_deref().unwrap_or("not stated"),
            run.model
                .file_bytes
                .map(|b| format!("{b} bytes ({:.1} MB)", b as f64 / 1e6))
                .unwrap_or_else(|| "size unknown".into())
        );
    }
    let _ = writeln!(
        o,
        "- device: {} ({}, {} logical cores, {:.1} GiB RAM), {} threads",
        e.device,
        e.cpu_model,
        e.logical_cores,
        e.ram_bytes as f64 / (1u64 << 30) as f64,
        e.threads
    );
    let _ = writeln!(
        o,
        "- prompt {:?}, exactly {} new tokens, greedy; {} warm-up + {} timed repetitions{}; policy `{}`, rest `{}`",
        s.prompt,
        s.new_tokens,
        s.warmup,
        s.repeats,
        s.min_seconds
            .map(|t| format!(" (and at least {t} s of timed generation)"))
            .unwrap_or_default(),
        s.policy,
        s.rest
    );
    let _ = writeln!(
        o,
        "- quantbench {} ({}), candle {}, {}, run {} (status: {:?})",
        e.quantbench_version,
        e.git_commit,
        e.candle_version,
        e.build_profile,
        run.started_at,
        run.status
    );
    if run.model.synthetic {
        let _ = writeln!(
            o,
            "\n> The model is synthetic: the real model's architecture and shapes with random weights. Its memory and speed are those of the real model; its generated text is noise."
        );
    }
}

/// The notebook's table: RSS after load and after cleanup, and the median generation.
fn notebook_table(o: &mut String, run: &RunRecord, rows: &[Headline]) {
    let s = &run.scenario;
    let _ = writeln!(o, "\n## The notebook's table\n");
    let _ = writeln!(
        o,
        "Process resident memory (RSS) after load and after cleanup, and the median time of one {}-token generation. The notebook read GPU allocator memory instead; on a CPU the model lives in process memory.\n",
        s.new_tokens
    );
    let _ = writeln!(
        o,
        "| variant | memory after load | {}-token generate | memory after cleanup |",
        s.new_tokens
    );
    let _ = writeln!(o, "|---|---:|---:|---:|");
    for (h, v) in rows.iter().zip(&run.variants) {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} |",
            h.label,
            mem(h.rss[1]),
            match (h.generate_median, v.status.name()) {
                (Some(g), _) => format!("{g:.3} s"),
                (None, "ok") => "no timings recorded".into(),
                (None, status) => status.into(),
            },
            mem(h.rss[3])
        );
    }
}

/// Speed: generation, decode and prefill rates, the speed-up over f32, load time.
fn speed(o: &mut String, run: &RunRecord, rows: &[Headline]) {
    let _ = writeln!(o, "\n## Speed\n");
    let _ = writeln!(
        o,
        "| variant | generate median (s) | min–max (s) | spread | tokens/s | decode tokens/s | prefill (ms) | speed-up vs f32 | load (s) |"
    );
    let _ = writeln!(o, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (h, v) in rows.iter().zip(&run.variants) {
        let spread = v
            .timing
            .as_ref()
            .map(|t| format!("±{:.1}%", t.generate_seconds.range_percent() / 2.0))
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(
            o,
            "| {} | {} | {}–{} | {} | {} | {} | {} | {} | {} |",
            h.label,
            fmt_opt(h.generate_median, 3),
            fmt_opt(h.generate_min, 3),
            fmt_opt(h.generate_max, 3),
            spread,
            fmt_opt(h.tokens_per_second, 1),
            fmt_opt(h.decode_tokens_per_second, 1),
            fmt_opt(h.prefill_median.map(|p| p * 1e3), 1),
            h.speedup_vs_f32
                .map(|x| format!("{x:.2}×"))
                .unwrap_or_else(|| "-".into()),
            fmt_opt(h.load_seconds, 2)
        );
    }

    if run.f32_reference().is_none() {
        let _ = writeln!(
            o,
            "\nNo speed-up is shown: the run has no f32 reference variant (precision f32 with rest f32)."
        );
    }
}

/// Memory: exact weight bytes and RSS at each moment; energy and probe notes.
fn memory(o: &mut String, run: &RunRecord, rows: &[Headline]) {
    let _ = writeln!(o, "\n## Memory\n");
    // The interval the file was sampled at, as it recorded it.
    let mut intervals: Vec<String> = run
        .variants
        .iter()
        .filter_map(|v| v.memory.peak_sample_interval_ms)
        .map(|ms| format!("{ms} ms"))
        .collect();
    intervals.dedup();
    let sampled = if intervals.is_empty() {
        "sampling interval not recorded in this file".to_string()
    } else {
        format!("sampled every {}", intervals.join(" / "))
    };
    let _ = writeln!(
        o,
        "Weights are the exact bytes the loaded tensors hold. The other columns are process RSS at each moment (\"load peak\" sampled while loading: the weights stored so far plus the one tensor being converted; peak {sampled} during the timed repetitions); \"held\" is RSS after load minus RSS before load.\n"
    );
    let _ = writeln!(
        o,
        "| variant | weights (MB) | bits/weight | saving vs f32 | before load | load peak | after load | held | peak | after cleanup |"
    );
    let _ = writeln!(o, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (h, v) in rows.iter().zip(&run.variants) {
        let load_peak = v.memory.peak_during_load.as_ref().and_then(|r| r.get(RSS));
        let held = h.rss[1]
            .zip(h.rss[0])
            .map(|(a, b)| format!("{:.1} MB", (a as f64 - b as f64) / 1e6))
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            h.label,
            fmt_opt(h.weights_bytes.map(mb), 1),
            fmt_opt(h.bits_per_weight, 2),
            h.weight_saving_vs_f32
                .map(|x| format!("{:.0}%", x * 100.0))
                .unwrap_or_else(|| "-".into()),
            mem(h.rss[0]),
            mem(load_peak),
            mem(h.rss[1]),
            held,
            mem(h.rss[2]),
            mem(h.rss[3])
        );
    }

    let energy: Vec<String> = run
        .variants
        .iter()
        .filter_map(|v| {
            v.energy_joules_per_token
                .map(|j| format!("{} {j:.4} J/token", v.key()))
        })
        .collect();
    if !energy.is_empty() {
        let _ = writeln!(
            o,
            "\nDevice energy over the timed repetitions: {}.",
            energy.join(", ")
        );
    }
    if !run.probe_notes.is_empty() {
        let _ = writeln!(o, "\nProbes ({}):", run.probes.join(", "));
        for n in &run.probe_notes {
            let _ = writeln!(o, "- {n}");
        }
    }
}

/// The generated text per variant, fallbacks, requantization, bytes by stored type.
fn generated_text(o: &mut String, run: &RunRecord) {
    let _ = writeln!(o, "\n## Generated text\n");
    for v in &run.variants {
        match &v.error {
            Some(err) => {
                let _ = writeln!(o, "- **{}**: failed: {err}", v.key());
            }
            None => {
                let same = v
                    .tokens_identical_across_repetitions
                    .map(|b| {
                        if b {
                            ""
                        } else {
                            " (tokens differed between repetitions!)"
                        }
                    })
                    .unwrap_or("");
                let _ = writeln!(o, "- **{}**{same}: {:?}", v.key(), v.generated_text);
            }
        }
    }
    for v in &run.variants {
        if let Some(w) = &v.weights {
            for f in &w.fallbacks {
                let _ = writeln!(o, "\nNote ({}): {f}", v.key());
            }
        }
        if v.requantized {
            let _ = writeln!(
                o,
                "\nNote ({}): requantized: made from the file's already quantized weights, dequantized first",
                v.key()
            );
        }
    }
    let mixed: Vec<String> = run
        .variants
        .iter()
        .filter_map(|v| {
            let w = v.weights.as_ref()?;
            let formats: std::collections::BTreeSet<&str> =
                w.by_format.iter().map(|b| b.format.as_str()).collect();
            (formats.len() > 2 || v.precision == crate::precision::Precision::Native).then(|| {
                format!(
                    "- **{}**: {}",
                    v.key(),
                    w.by_format
                        .iter()
                        .map(|b| format!("{} {} {} B", b.group, b.format, b.bytes))
                        .collect::<Vec<_>>()
                        .join("; ")
                )
            })
        })
        .collect();
    if !mixed.is_empty() {
        let _ = writeln!(o, "\n### Weight bytes by stored type\n");
        for line in mixed {
            let _ = writeln!(o, "{line}");
        }
    }
}

/// How the figures were measured, in words.
fn method(o: &mut String, run: &RunRecord) {
    let s = &run.scenario;
    let _ = writeln!(o, "\n## How this was measured\n");
    let _ = writeln!(
        o,
        "Each variant ran in turn in one process: memory read before load; model loaded and converted (timed); memory read; {} warm-up generation(s); then timed generations of exactly {} new tokens each, with the device synchronised before every clock read, while a background thread sampled memory for the peak; then the model was dropped, the allocator asked to return freed memory, and memory read once more. Medians and spreads are over the timed repetitions. Full per-step timings are in results.json.",
        s.warmup, s.new_tokens
    );
    let _ = writeln!(
        o,
        "\nMemory columns are {RSS} from the `process` probe; {}.",
        Moment::ALL
            .iter()
            .map(|m| m.label())
            .collect::<Vec<_>>()
            .join(", ")
    );
}

/// llama-perplexity's `--kl-divergence` statistics, in its units (Δp in percent), so a
/// row can be set beside llama.cpp's published KLD tables.
fn render_llama_perplexity_stats(o: &mut String, run: &RunRecord) {
    let rows: Vec<_> = run
        .variants
        .iter()
        .filter_map(|v| Some((v, v.quality.as_ref()?)))
        .filter(|(_, q)| !q.is_reference)
        .collect();
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(
        o,
        "
### As llama-perplexity --kl-divergence reports them

Mean ± standard error; percentiles interpolated between sorted values, as llama-perplexity does; Δp is the change in the probability of the text's next token (percentage points).
"
    );
    let _ = writeln!(
        o,
        "| variant | PPL(Q)/PPL(base) | ln ratio | mean KLD | 99.9% | 99% | 95% | 90% | median | 10% | 5% | 1% | mean Δp | RMS Δp | same top p |"
    );
    let _ = writeln!(
        o,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let pm = |x: Option<f64>, se: Option<f64>, scale: f64, d: usize| match (x, se) {
        (Some(x), Some(se)) => format!("{:.d$} ± {:.d$}", x * scale, se * scale),
        (Some(x), None) => format!("{:.d$}", x * scale),
        _ => "n/a".into(),
    };
    let e = |x: Option<f64>| x.map_or("n/a".into(), |x| format!("{x:.6}"));
    for (v, q) in rows {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} % | {} % | {} % |",
            v.key(),
            pm(q.perplexity_ratio, q.perplexity_ratio_stderr, 1.0, 6),
            pm(q.ln_perplexity_ratio, q.ln_perplexity_ratio_stderr, 1.0, 6),
            pm(q.kl_mean, q.kl_stderr, 1.0, 6),
            e(q.kl_p999),
            e(q.kl_p99),
            e(q.kl_p95),
            e(q.kl_p90),
            e(q.kl_median),
            e(q.kl_p10),
            e(q.kl_p05),
            e(q.kl_p01),
            pm(q.delta_p_mean, q.delta_p_mean_stderr, 100.0, 3),
            pm(q.delta_p_rms, q.delta_p_rms_stderr, 100.0, 3),
            pm(q.same_top1, q.same_top1_stderr, 100.0, 3),
        );
    }
}

/// The workload's test rows, one table per variant, and the machine's bandwidth.
fn render_tests(o: &mut String, run: &RunRecord) {
    if !run.variants.iter().any(|v| !v.tests.is_empty()) {
        return;
    }
    let _ = writeln!(
        o,
        "
## Workload tests
"
    );
    if let Some(b) = &run.environment.memory_bandwidth {
        let _ = writeln!(
            o,
            "Memory bandwidth of this machine, measured at the start of the run on {} thread(s) (best of {}, {:.0} MB buffers): read **{:.1} GB/s**, copy {:.1} GB/s. A decode step's bandwidth is the bytes it reads (the weights it streams, once for the whole batch, plus every sequence's keys and values at its context) times steps per second; \"of bw\" is its share of the measured read rate.\n",
            b.threads,
            b.repetitions,
            b.buffer_bytes as f64 / 1e6,
            b.read_gbps,
            b.copy_gbps
        );
    }
    if let Some(k) = run.model.kv_cache_bytes_per_token {
        let _ = writeln!(
            o,
            "The KV cache holds {k} bytes per position and sequence ({} layers × {} key/value heads × {} dims × 2 (keys, values) × 4 bytes, f32). Tests: `ppP` a synthetic prompt of P tokens; `tgN` N tokens generated one at a time; `ppP+tgN` the prompt's pass gives the first token, then N - 1 decode steps; `@ dD` after D tokens already in the cache; `xB` B sequences decoded together; `tT` on T threads. Medians over the repetitions, [min–max] beside.\n",
            run.model.n_layer,
            run.model.n_kv_head.unwrap_or(run.model.n_head),
            run.model.head_dim.unwrap_or(run.model.n_embd / run.model.n_head.max(1)),
        );
        let sliding: Vec<usize> = run
            .model
            .kv_cache_windows
            .iter()
            .flatten()
            .copied()
            .collect();
        if let Some(&w) = sliding.first() {
            let _ = writeln!(
                o,
                "{} of the {} layers slide: their caches keep only their last {} positions (the window{}), so a test's KV bytes count those layers up to the window.\n",
                sliding.len(),
                run.model.n_layer,
                w,
                if sliding.iter().all(|&x| x == w) { "" } else { "s differ by layer" }
            );
        }
    }
    let span = |s: Option<crate::analysis::stats::Summary>, scale: f64, d: usize| match s {
        Some(s) => format!(
            "{:.d$} [{:.d$}–{:.d$}]",
            s.median * scale,
            s.min * scale,
            s.max * scale
        ),
        None => "-".into(),
    };
    for v in run.variants.iter().filter(|v| !v.tests.is_empty()) {
        let _ = writeln!(o, "\n### {}\n", v.key());
        let _ = writeln!(
            o,
            "| test | status | prefill tok/s | decode tok/s | TTFT ms | step p50 ms | p90 ms | p99 ms | KV cache MB | peak RSS MB | GB/s | of bw |"
        );
        let _ = writeln!(
            o,
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for t in &v.tests {
            let status = match (&t.status, &t.error) {
                (crate::run::workload::TestStatus::Ok, _) => "ok".to_string(),
                (s, Some(e)) => format!("{s:?}: {e}").to_lowercase(),
                (s, None) => format!("{s:?}").to_lowercase(),
            };
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {:.2} | {} | {} | {} |",
                t.name,
                status,
                span(t.prefill_tokens_per_second, 1.0, 1),
                span(t.decode_tokens_per_second, 1.0, 1),
                span(t.time_to_first_token_seconds, 1e3, 1),
                span(t.decode_step_p50_seconds, 1e3, 2),
                span(t.decode_step_p90_seconds, 1e3, 2),
                span(t.decode_step_p99_seconds, 1e3, 2),
                mb(t.kv_cache_bytes),
                t.memory_peak
                    .as_ref()
                    .and_then(|r| r.get(RSS))
                    .map_or("-".into(), |b| format!("{:.1}", mb(b))),
                t.decode_bandwidth_gbps
                    .map_or("-".into(), |s| format!("{:.2}", s.median)),
                t.bandwidth_fraction
                    .map_or("-".into(), |f| format!("{:.0}%", f * 100.0)),
            );
        }
    }
    let notes: std::collections::BTreeSet<&str> = run
        .variants
        .iter()
        .flat_map(|v| v.tests.iter().filter_map(|t| t.threads_note.as_deref()))
        .collect();
    for n in notes {
        let _ = writeln!(o, "\nNote (threads): {n}.");
    }
    let _ = writeln!(
        o,
        "\n![decode speed against depth](depth.svg)\n\n![memory against context](context-memory.svg)\n\nEvery row, llama-bench-shaped: tests.csv (`quantbench export-results --format jsonl` adds the per-repetition samples)."
    );
}

fn mem(v: Option<u64>) -> String {
    v.map(|b| format!("{:.1} MB", mb(b)))
        .unwrap_or_else(|| "-".into())
}

/// One row per variant putting the format's family, bits per weight, exact bytes (and
/// their parts), the footprint as transformers would report it, decode speed and
/// quality together: the four-bit shootout's table.
fn render_formats(o: &mut String, run: &RunRecord, rows: &[Headline]) {
    let has_parts = run
        .variants
        .iter()
        .any(|v| v.weights.as_ref().is_some_and(|w| !w.by_part.is_empty()));
    let has_tf = run.variants.iter().any(|v| {
        v.weights
            .as_ref()
            .is_some_and(|w| w.transformers_footprint.is_some())
    });
    if !has_parts && !has_tf {
        return;
    }
    let _ = writeln!(o, "\n## Formats side by side\n");
    let _ = writeln!(
        o,
        "Weights: the exact bytes quantbench holds (every code and scale), with the quantized matrices' parts. transformers counts: what `model.get_memory_footprint()` reports for the same model and precision (parameters in their dtypes plus buffers; bitsandbytes' absmax / row scales and PyTorch's packed dynamic weights are not counted), as transformers 5 counts it and as 4.x releases did (GPT-2's per-layer causal masks); - for ggml formats, which transformers holds only dequantized. Decode tokens/s: median over the timed repetitions; KL and same top-1: the quality pass against f32.\n"
    );
    let _ = writeln!(
        o,
        "| variant | family | bits/weight | weights (B) | quantized parts (B) | transformers counts (B) | transformers 4.x (B) | decode tok/s | mean KL | same top-1 |"
    );
    let _ = writeln!(o, "|---|---|---:|---:|---|---:|---:|---:|---:|---:|");
    for (h, v) in rows.iter().zip(&run.variants) {
        let w = v.weights.as_ref();
        let parts = w
            .map(|w| {
                w.by_part
                    .iter()
                    .map(|p| format!("{} {}", p.part, p.bytes))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "-".into());
        let tf = w.and_then(|w| w.transformers_footprint.as_ref());
        let q = v.quality.as_ref();
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            h.label,
            v.precision.family().name(),
            fmt_opt(h.bits_per_weight, 3),
            v.weights_bytes
                .map(|b| b.to_string())
                .unwrap_or_else(|| "-".into()),
            parts,
            tf.map(|t| t.current_bytes.to_string())
                .unwrap_or_else(|| "-".into()),
            tf.and_then(|t| t.legacy_bytes)
                .map(|b| b.to_string())
                .unwrap_or_else(|| "-".into()),
            fmt_opt(h.decode_tokens_per_second, 1),
            q.and_then(|q| q.kl_mean)
                .map(|k| format!("{k:.2e}"))
                .unwrap_or_else(|| "-".into()),
            q.and_then(|q| q.same_top1)
                .map(|p| format!("{:.1}%", p * 100.0))
                .unwrap_or_else(|| "-".into()),
        );
    }
}

fn render_quality(o: &mut String, run: &RunRecord) {
    let _ = writeln!(o, "\n## Quality\n");
    if let Some(e) = &run.quality_error {
        let _ = writeln!(o, "The quality pass failed: {e}");
        if run.has_gate() {
            let _ = writeln!(
                o,
                "\nThe scenario sets a quality gate, which therefore could not be evaluated: every variant counts as not passing it."
            );
        }
        return;
    }
    let Some(r) = &run.quality_reference else {
        let _ = writeln!(
            o,
            "The quality pass was turned off (`[quality] enabled = false`)."
        );
        return;
    };
    let _ = writeln!(
        o,
        "Each variant against the f32 model of this run, teacher-forced over {} tokens of the evaluation text ({}) in {} windows of {} tokens (stride {}), {} positions scored. KL is KL(f32 || variant) of the next-token distributions in nats; same top-1 is how often the variant's most likely next token is f32's; leading tokens counts how many of the {} generated tokens on the prompt equal f32's before the first difference. The f32 reference pass took {:.1} s (plus {:.1} s to load); its distributions were stored as 16-bit log-probabilities ({:.0} MB on disk).\n",
        r.tokens,
        r.text_source,
        r.windows,
        r.window,
        r.stride,
        r.positions,
        run.scenario.new_tokens,
        r.seconds,
        r.load_seconds,
        r.stored_bytes as f64 / 1e6
    );
    if run.model.synthetic {
        let _ = writeln!(
            o,
            "> The model is synthetic: its perplexity (near the vocabulary size) means nothing about language, but KL and same-top-1 still measure exactly how far each precision's arithmetic moves the model's outputs.\n"
        );
    }
    let _ = writeln!(
        o,
        "| variant | weights (MB) | mean KL | p99 KL | max KL | same top-1 | perplexity | vs f32 | leading tokens = f32 | pass (s) | gate |"
    );
    let _ = writeln!(o, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for v in &run.variants {
        let Some(q) = &v.quality else {
            let _ = writeln!(o, "| {} | - | - | - | - | - | - | - | - | - | - |", v.key());
            continue;
        };
        let gate = match &q.gate {
            None => "-".to_string(),
            Some(g) if g.passed => "pass".to_string(),
            Some(g) => format!("**fail**: {}", g.reasons.join("; ")),
        };
        let kl = |x: Option<f64>| match x {
            Some(0.0) => "0".to_string(),
            Some(x) if x.is_finite() => format!("{x:.3e}"),
            _ => "n/a".to_string(),
        };
        let num = |x: Option<f64>, f: &dyn Fn(f64) -> String| match x {
            Some(x) if x.is_finite() => f(x),
            _ => "n/a".to_string(),
        };
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {}/{} | {} | {} |",
            v.key(),
            fmt_opt(v.weights_bytes.map(mb), 1),
            kl(q.kl_mean),
            kl(q.kl_p99),
            kl(q.kl_max),
            num(q.same_top1, &|x| format!("{:.2}%", x * 100.0)),
            num(q.perplexity, &|x| format!("{x:.1}")),
            num(q.perplexity_ratio, &|x| format!("{x:.4}")),
            q.leading_tokens_equal_to_f32,
            run.scenario.new_tokens,
            if q.is_reference {
                "reference".to_string()
            } else {
                format!("{:.1}", q.seconds)
            },
            gate
        );
    }
    render_llama_perplexity_stats(o, run);
    for v in &run.variants {
        for n in v.quality.iter().flat_map(|q| &q.notes) {
            let _ = writeln!(o, "\nNote ({}): {n}", v.key());
        }
    }
    for (v, why) in run.gate_failures() {
        if v.quality.as_ref().and_then(|q| q.gate.as_ref()).is_none() {
            let _ = writeln!(o, "\n**{}** did not pass the quality gate: {why}", v.key());
        }
    }
}
