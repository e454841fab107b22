//! Fuzz targets, as property tests: the parsers that read user files never panic, never
//! hang, never allocate what a lying header asks for, and answer with errors that name
//! the file. cargo-fuzz needs a nightly toolchain; proptest runs on stable, here and in
//! CI. Run longer with, e.g., `PROPTEST_CASES=100000 cargo test --release --test fuzz`.

use std::path::Path;

use proptest::prelude::*;
use quantbench::model::gpt2::Config;
use quantbench::model::source::spec::{check_cache_ref, is_commit_hash};
use quantbench::model::source::weights::{SafetensorsSource, TensorSource};
use quantbench::record::RunRecord;

/// JSON pointers of every number in a value.
fn collect_number_paths(v: &serde_json::Value, at: String, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Number(_) => out.push(at),
        serde_json::Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                collect_number_paths(x, format!("{at}/{i}"), out);
            }
        }
        serde_json::Value::Object(o) => {
            for (k, x) in o {
                collect_number_paths(
                    x,
                    format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")),
                    out,
                );
            }
        }
        _ => {}
    }
}
use quantbench::Scenario;

/// 400 cases per target in the test suite; PROPTEST_CASES for longer runs.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(400)
}

fn example_results() -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("reports/example/results.json"),
    )
    .unwrap()
}

fn sweep_results() -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("reports/context-sweep-example/synthetic-gpt2/results.json"),
    )
    .unwrap()
}

/// The four-bit shootout's results, each variant's weights also carrying
/// `huge_page_bytes` (#16; the committed example predates it), so the fuzz reaches it.
fn shootout_results() -> String {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("reports/four-bit-shootout-example/results.json"),
    )
    .unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    for variant in v["variants"].as_array_mut().unwrap() {
        if let Some(w) = variant["weights"].as_object_mut() {
            w.insert("huge_page_bytes".into(), serde_json::json!(4_194_304u64));
        }
    }
    serde_json::to_string_pretty(&v).unwrap()
}

/// `results` with `edits` applied to its numeric fields (index modulo their count):
/// refused naming the file, or read and then rendered by every renderer and export
/// format without a panic.
fn edited_results_are_refused_or_render(
    results: &str,
    edits: Vec<(usize, serde_json::Value)>,
) -> Result<(), TestCaseError> {
    use quantbench::report::export;
    let mut v: serde_json::Value = serde_json::from_str(results).unwrap();
    let mut numbers = Vec::new();
    collect_number_paths(&v, String::new(), &mut numbers);
    for (at, value) in edits {
        let path = &numbers[at % numbers.len()];
        *v.pointer_mut(path).unwrap() = value;
    }
    let text = serde_json::to_string(&v).unwrap();
    match RunRecord::from_json(&text, "fuzz/results.json") {
        Err(e) => prop_assert!(e.to_string().contains("fuzz/results.json"), "{}", e),
        Ok(run) => {
            prop_assert!(run.check_figures().is_ok());
            let _ = quantbench::report::markdown::render(&run);
            let _ = quantbench::report::csv::render(&run).unwrap();
            let _ = export::bmf(&run);
            let _ = export::github_action_benchmark(&run);
            let _ = export::jsonl(&run);
            let _ = export::csv(&run).unwrap();
        }
    }
    Ok(())
}

/// Scenario-shaped TOML: known keys with values of every type, and some junk.
fn scenario_text() -> impl Strategy<Value = String> {
    let key = prop::sample::select(vec![
        "name",
        "model",
        "device",
        "precisions",
        "policy",
        "rest",
        "prompt",
        "new_tokens",
        "warmup",
        "repeats",
        "min_seconds",
        "seed",
        "memory_budget_mb",
        "description",
        "bogus",
    ]);
    let value = prop_oneof![
        "[a-z0-9:@._/-]{0,12}".prop_map(|s| format!("{s:?}")),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|x| format!("{x:?}")),
        prop::collection::vec("[a-z0-9_]{0,6}", 0..4).prop_map(|v| format!("{v:?}")),
        Just("true".to_string()),
        "[^\n]{0,10}",
    ];
    let line = (key, value).prop_map(|(k, v)| format!("{k} = {v}"));
    let quality = prop_oneof![
        Just(String::new()),
        (any::<i64>(), any::<f64>())
            .prop_map(|(w, k)| format!("[quality]\nwindow = {w}\nmax_kl = {k:?}\n")),
        (-3i64..5, -3i64..5, any::<f64>(), -1.0f64..2.0).prop_map(|(st, mt, k, t)| format!(
            "[quality]\nstride = {st}\nmax_tokens = {mt}\nmax_kl = {k:?}\nmin_same_top1 = {t:?}\n"
        )),
    ];
    (prop::collection::vec(line, 0..10), quality)
        .prop_map(|(l, q)| format!("{}\n{q}", l.join("\n")))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn scenario_parser_never_panics(text in scenario_text()) {
        match Scenario::parse(&text, "fuzz.toml") {
            Err(e) => prop_assert!(e.to_string().contains("fuzz.toml"), "{}", e),
            Ok(s) => {
                // What is accepted is in range: nothing a run would trip over later.
                let q = &s.quality;
                prop_assert!(q.stride.is_none_or(|x| x >= 1));
                prop_assert!(q.max_tokens.is_none_or(|x| x >= 2));
                prop_assert!(q.max_kl.is_none_or(|k| k.is_finite() && k >= 0.0));
                prop_assert!(q.min_same_top1.is_none_or(|t| (0.0..=1.0).contains(&t)));
                prop_assert!(s.memory_budget_mb.is_none_or(|b| b.is_finite() && b > 0.0));
                prop_assert!(s.repeats >= 1 && s.new_tokens >= 1);
            }
        }
    }

    #[test]
    fn scenario_parser_survives_arbitrary_bytes(text in "\\PC{0,200}") {
        if let Err(e) = Scenario::parse(&text, "fuzz.toml") {
            prop_assert!(e.to_string().contains("fuzz.toml"));
        }
    }

    #[test]
    fn results_reader_survives_truncation_and_corruption(
        cut in 0usize..40_000, flips in prop::collection::vec((0usize..40_000, any::<u8>()), 0..8)
    ) {
        let mut bytes = example_results().into_bytes();
        for (at, b) in flips {
            let n = bytes.len();
            bytes[at % n] = b;
        }
        bytes.truncate(cut.min(bytes.len()));
        let text = String::from_utf8_lossy(&bytes);
        if let Err(e) = RunRecord::from_json(&text, "fuzz/results.json") {
            prop_assert!(e.to_string().contains("fuzz/results.json"), "{}", e);
        }
    }

    /// Any number (NaN, infinities, negatives, huge) in any numeric field of a results
    /// file: refused with a message naming the file, or read and rendered (report.md,
    /// results.csv) without a panic, and never with an impossible figure accepted.
    #[test]
    fn results_reader_and_renderers_survive_any_number_anywhere(
        edits in prop::collection::vec((0usize..10_000, prop_oneof![
            any::<f64>().prop_map(|x| if x.is_finite() { serde_json::json!(x) } else { serde_json::Value::Null }),
            Just(serde_json::json!(1e308)),
            Just(serde_json::json!(-1.0)),
            Just(serde_json::json!("1")),
            Just(serde_json::json!(u64::MAX)),
            Just(serde_json::Value::Null),
        ]), 1..6)
    ) {
        edited_results_are_refused_or_render(&example_results(), edits)?;
    }

    /// The same for a results file with workload tests (the context sweep's GPT-2 run):
    /// read, or refused naming the file; then every renderer and export format runs
    /// without a panic.
    #[test]
    fn workload_results_survive_any_number_anywhere(
        edits in prop::collection::vec((0usize..100_000, prop_oneof![
            any::<f64>().prop_map(|x| if x.is_finite() { serde_json::json!(x) } else { serde_json::Value::Null }),
            Just(serde_json::json!(1e308)),
            Just(serde_json::json!(-1.0)),
            Just(serde_json::json!(0)),
            Just(serde_json::json!(u64::MAX)),
            Just(serde_json::Value::Null),
        ]), 1..8)
    ) {
        edited_results_are_refused_or_render(&sweep_results(), edits)?;
    }

    /// The same for a results file of bitsandbytes' formats (the four-bit shootout), whose
    /// weights carry `by_part`, `transformers_footprint` and `huge_page_bytes`.
    #[test]
    fn format_results_survive_any_number_anywhere(
        edits in prop::collection::vec((0usize..100_000, prop_oneof![
            any::<f64>().prop_map(|x| if x.is_finite() { serde_json::json!(x) } else { serde_json::Value::Null }),
            Just(serde_json::json!(1e308)),
            Just(serde_json::json!(-1.0)),
            Just(serde_json::json!(0)),
            Just(serde_json::json!(u64::MAX)),
            Just(serde_json::Value::Null),
        ]), 1..8)
    ) {
        edited_results_are_refused_or_render(&shootout_results(), edits)?;
    }

    /// Whatever the cache's refs file holds, only a commit hash is followed.
    #[test]
    fn cache_refs_hold_commit_hashes_or_are_refused(content in prop_oneof![
        "[0-9a-f]{40}",
        "\\PC{0,60}",
        "(\\.\\./){1,6}[a-z]{0,8}",
        "[0-9a-f]{40}\n?[ /.]{0,3}",
    ]) {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("models--a--b");
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs/main"), &content).unwrap();
        let ok = check_cache_ref(&repo, "main").is_ok();
        prop_assert_eq!(ok, is_commit_hash(&content), "{:?}", content);
    }

    /// History's file names: any scenario name gives a short name of safe characters.
    #[test]
    fn history_file_slugs_are_safe(name in "\\PC{0,300}") {
        let slug = quantbench::report::history::file_slug(&name);
        prop_assert!(slug.len() <= 58, "{}", slug);
        prop_assert!(slug.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'), "{}", slug);
        prop_assert!(!slug.starts_with('.'));
    }

    /// A GGUF file with bytes flipped, numbers overwritten (counts, lengths, dimensions,
    /// types, offsets) or its tail cut: opened, read as a config and a tokenizer and
    /// loaded as stored, or refused with an error naming the file; never a panic, never an
    /// allocation a lying header asks for.
    #[test]
    fn gguf_reader_never_panics(
        flips in prop::collection::vec((0usize..13_100, any::<u8>()), 0..6),
        words in prop::collection::vec((0usize..13_100, any::<u64>()), 0..3),
        small in prop::collection::vec((0usize..13_100, 0u32..64), 0..3),
        cut in prop::option::of(0usize..190_000),
        // A byte-level BPE (gpt2) and a SentencePiece (llama) tokenizer; each file's
        // header (metadata, tokenizer, tensor directory) is its first 13 KB or so.
        // Gemma 3 (shifted norms, its pattern keys), stacked experts, Phi-3's fused
        // projections and LongRoPE factor tensors too; gpt-oss (sinks, YaRN keys, expert
        // biases) with its experts in MXFP4 and its matrices in IQ4_NL; a Gemma 3 whose
        // matrices are IQ4_XS (read by format/ggml_blocks.rs).
        file in prop::sample::select(vec![
            "llama-gqa-llama3-q8_0.gguf",
            "spm-tiny-f32.gguf",
            "../families/gemma3-window/model-q8_0.gguf",
            "../families/qwen3moe-experts/model-q8_0.gguf",
            "../families/phi3-longrope-long/model-q8_0.gguf",
            "../families/gpt-oss-experts/model-mxfp4.gguf",
            "../families/gpt-oss-experts/model-iq4_nl.gguf",
            "../llama-engine/gemma3-tiny-IQ4_XS.gguf",
        ]),
    ) {
        let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gguf").join(file);
        let mut bytes = std::fs::read(base).unwrap();
        let n = bytes.len();
        for (at, b) in flips {
            bytes[at % n] = b;
        }
        for (at, w) in words {
            let at = at % (n - 8);
            bytes[at..at + 8].copy_from_slice(&w.to_le_bytes());
        }
        for (at, w) in small {
            let at = at % (n - 4);
            bytes[at..at + 4].copy_from_slice(&w.to_le_bytes());
        }
        if let Some(c) = cut {
            bytes.truncate(c.min(n));
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fuzz.gguf");
        std::fs::write(&path, &bytes).unwrap();
        let outcome = (|| -> anyhow::Result<()> {
            let source = quantbench::model::resolve(&quantbench::model::ModelSpec::Local(path.clone()))?;
            source.tokenizer()?;
            quantbench::model::load(
                &source,
                quantbench::precision::Quantization::new(quantbench::precision::Precision::Native),
                &candle_core::Device::Cpu,
            )?;
            Ok(())
        })();
        if let Err(e) = outcome {
            prop_assert!(format!("{e:#}").contains("fuzz.gguf"), "{:#}", e);
        }
    }

    /// A lying safetensors header is diagnosed without panicking or allocating.
    #[test]
    fn safetensors_header_diagnosis_never_panics(
        header in prop_oneof![
            "\\PC{0,64}",
            (prop::collection::vec(any::<u64>(), 0..4), any::<u64>(), any::<u64>(), prop::sample::select(vec!["F32", "F16", "I8", "X9"]))
                .prop_map(|(shape, a, b, d)| format!(r#"{{"t":{{"dtype":"{d}","shape":{shape:?},"data_offsets":[{a},{b}]}}}}"#)),
        ],
        claimed in any::<u64>(),
        honest in any::<bool>(),
        payload in 0usize..64,
    ) {
        let len = if honest { header.len() as u64 } else { claimed };
        let mut bytes = len.to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend(std::iter::repeat_n(0u8, payload));
        let _ = quantbench::model::source::weights::diagnose_header(&bytes);
    }

    #[test]
    fn config_reader_never_panics(
        fields in prop::collection::vec((
            prop::sample::select(vec!["vocab_size", "n_positions", "n_ctx", "n_embd", "n_layer", "n_head", "n_inner", "layer_norm_epsilon", "activation_function", "model_type", "tie_word_embeddings"]),
            prop_oneof![
                any::<u64>().prop_map(|n| n.to_string()),
                any::<i64>().prop_map(|n| n.to_string()),
                any::<f64>().prop_map(|x| if x.is_finite() { format!("{x:?}") } else { "0".into() }),
                "[a-z_]{0,10}".prop_map(|s| format!("{s:?}")),
                Just("null".to_string()),
            ],
        ), 0..8)
    ) {
        let body: Vec<String> = fields.iter().map(|(k, v)| format!("{k:?}: {v}")).collect();
        let text = format!("{{{}}}", body.join(", "));
        match Config::from_json(&text, "fuzz/config.json") {
            Ok(c) => {
                // An accepted config's arithmetic cannot overflow.
                let _ = c.parameter_count();
                prop_assert!(c.n_embd % c.n_head == 0);
            }
            Err(e) => prop_assert!(e.to_string().contains("fuzz/config.json"), "{}", e),
        }
    }

    #[test]
    fn llama_family_config_reader_never_panics(
        model_type in prop::sample::select(vec!["llama", "mistral", "qwen2", "qwen3", "qwen3_moe", "mixtral", "olmoe", "phi3", "gemma3_text", "gpt_oss"]),
        fields in prop::collection::vec((
            prop::sample::select(vec!["vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim", "max_position_embeddings", "rms_norm_eps", "rope_theta", "rope_scaling", "rope_parameters", "sliding_window", "tie_word_embeddings", "eos_token_id",
                // the experts', Phi-3's and Gemma 3's own fields
                "num_experts", "num_local_experts", "num_experts_per_tok", "moe_intermediate_size", "decoder_sparse_step", "mlp_only_layers", "norm_topk_prob",
                "partial_rotary_factor", "original_max_position_embeddings",
                "layer_types", "sliding_window_pattern", "query_pre_attn_scalar", "final_logit_softcapping", "rope_local_base_freq",
                "swiglu_limit", "swiglu_alpha", "attention_bias", "quantization_config"]),
            prop_oneof![
                any::<u64>().prop_map(|n| n.to_string()),
                (1u64..5000).prop_map(|n| n.to_string()),
                any::<f64>().prop_map(|x| if x.is_finite() { format!("{x:?}") } else { "0".into() }),
                "[a-z_0-9]{0,10}".prop_map(|s| format!("{s:?}")),
                (prop::sample::select(vec!["default", "linear", "llama3", "yarn", "dynamic"]), any::<f64>(), any::<f64>(), 0u64..100000)
                    .prop_map(|(t, f, l, o)| format!(r#"{{"rope_type": "{t}", "factor": {}, "low_freq_factor": {}, "high_freq_factor": 4.0, "original_max_position_embeddings": {o}}}"#,
                        if f.is_finite() { f } else { 1.0 }, if l.is_finite() { l } else { 1.0 })),
                (prop::sample::select(vec!["longrope", "su"]), 0usize..6, any::<f64>(), 0u64..100000)
                    .prop_map(|(t, n, f, o)| format!(r#"{{"rope_type": "{t}", "short_factor": [{}], "long_factor": [{}], "original_max_position_embeddings": {o}}}"#,
                        vec![if f.is_finite() { f } else { 1.0 }; n].iter().map(|x| format!("{x:?}")).collect::<Vec<_>>().join(", "),
                        vec!["2.0"; n].join(", "))),
                (any::<f64>(), any::<f64>(), 0u64..100000, any::<bool>())
                    .prop_map(|(f, b, o, t)| format!(r#"{{"rope_type": "yarn", "factor": {}, "beta_fast": {}, "beta_slow": 1.0, "original_max_position_embeddings": {o}, "truncate": {t}, "rope_theta": 150000.0}}"#,
                        if f.is_finite() { f } else { 1.0 }, if b.is_finite() { b } else { 32.0 })),
                Just(r#"["sliding_attention", "full_attention"]"#.to_string()),
                Just(r#"{"full_attention": {"rope_type": "default", "rope_theta": 10000.0}, "sliding_attention": {"rope_type": "linear", "factor": 2.0}}"#.to_string()),
                Just("null".to_string()),
                Just("[1, 2]".to_string()),
            ],
        ), 0..12)
    ) {
        let mut body: Vec<String> = fields.iter().map(|(k, v)| format!("{k:?}: {v}")).collect();
        body.push(format!("\"model_type\": \"{model_type}\""));
        let text = format!("{{{}}}", body.join(", "));
        match quantbench::model::ModelConfig::from_json(&text, "fuzz/config.json") {
            Ok(c) => {
                // An accepted config's arithmetic cannot overflow, and its heads group.
                let _ = c.parameter_count();
                let _ = c.kv_cache_bytes_per_token();
                prop_assert!(c.n_head() % c.n_kv_head() == 0);
                prop_assert!(c.head_dim() % 2 == 0);
            }
            Err(e) => prop_assert!(e.to_string().contains("fuzz/config.json"), "{}", e),
        }
    }

    #[test]
    fn safetensors_headers_that_lie_are_refused(
        claimed_len in any::<u64>(),
        header in prop_oneof![
            "\\PC{0,64}",
            (prop::collection::vec(0usize..1usize << 40, 0..3), any::<u32>(), any::<u32>())
                .prop_map(|(shape, a, b)| format!(r#"{{"wte.weight":{{"dtype":"F32","shape":{shape:?},"data_offsets":[{a},{b}]}}}}"#)),
        ],
        payload in prop::collection::vec(any::<u8>(), 0..256),
        honest_len in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        let len = if honest_len { header.len() as u64 } else { claimed_len };
        let mut bytes = len.to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(&payload);
        std::fs::write(&path, &bytes).unwrap();
        match SafetensorsSource::open(&[path], &Config::gpt2_small().into()) {
            Err(e) => prop_assert!(e.to_string().contains("model.safetensors"), "{}", e),
            Ok(src) => {
                // Whatever it holds must not be read as a real model's tensor.
                let r = src.get("wte.weight", &[50257, 768]);
                prop_assert!(r.is_err());
                let _ = src.has("wte.weight");
            }
        }
    }
}

proptest! {
    // Drawing is slower than parsing: fewer cases, each drawing every chart.
    #![proptest_config(ProptestConfig { cases: cases().min(24), ..ProptestConfig::default() })]

    /// Charts stay finite and bounded whatever figures a readable results file holds.
    #[test]
    fn charts_survive_extreme_figures(
        kl in prop_oneof![Just(0.0), Just(1e-300), Just(1e308), 0.0f64..10.0],
        seconds in prop_oneof![Just(0.0), Just(1e300), 0.0f64..100.0],
        bytes in prop_oneof![Just(0u64), Just(u64::MAX), 0u64..1_000_000_000],
        shootout in any::<bool>(),
    ) {
        // the shootout's quality chart holds eight points of two families close together
        let text = if shootout { shootout_results() } else { example_results() };
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["variants"][1]["quality"]["kl_mean"] = serde_json::json!(kl);
        v["variants"][2]["timing"]["generate_seconds"]["max"] = serde_json::json!(seconds);
        v["variants"][0]["weights_bytes"] = serde_json::json!(bytes);
        let run = RunRecord::from_json(&serde_json::to_string(&v).unwrap(), "fuzz").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let t0 = std::time::Instant::now();
        quantbench::report::charts::quality(&run, &dir.path().join("q.svg")).unwrap();
        quantbench::report::charts::latency(&run, &dir.path().join("l.svg")).unwrap();
        quantbench::report::charts::memory(&run, &dir.path().join("m.svg")).unwrap();
        prop_assert!(t0.elapsed().as_secs() < 10);
        for f in ["q.svg", "l.svg", "m.svg"] {
            prop_assert!(std::fs::metadata(dir.path().join(f)).unwrap().len() < 2_000_000);
        }
    }
}

mod common;

/// The small GGUF the layout fuzz edits, taken apart once.
fn layout_base() -> &'static common::gguf::Gguf {
    static BASE: std::sync::OnceLock<common::gguf::Gguf> = std::sync::OnceLock::new();
    BASE.get_or_init(|| common::gguf::Gguf::fixture("llama-gqa-llama3-q8_0.gguf"))
}

fn alignment_value() -> impl Strategy<Value = candle_core::quantized::gguf_file::Value> {
    use candle_core::quantized::gguf_file::Value;
    prop_oneof![
        Just(Value::U32(0)),
        Just(Value::U32(16)),
        Just(Value::U32(32)),
        Just(Value::U32(64)),
        Just(Value::U32(48)),
        Just(Value::U64(32)),
        Just(Value::I32(32)),
        Just(Value::String("32".into())),
    ]
}

/// One lie a GGUF file can tell about itself.
#[derive(Debug, Clone)]
enum Lie {
    None,
    Count(i64),
    Offset(usize, i64),
    Type(usize, u32),
    Dim(usize, usize, u64),
    Alignment(candle_core::quantized::gguf_file::Value, bool),
    DupName(usize, usize),
    DupKey,
    Float(&'static str, f32),
    Layers(u32),
}

fn lie() -> impl Strategy<Value = Lie> {
    prop_oneof![
        Just(Lie::None),
        prop::sample::select(vec![-2i64, -1, 1, 2]).prop_map(Lie::Count),
        (
            0usize..64,
            prop::sample::select(vec![-64i64, -32, -4, 4, 32, 64])
        )
            .prop_map(|(i, d)| Lie::Offset(i, d)),
        (
            0usize..64,
            prop::sample::select(vec![0u32, 1, 2, 8, 12, 16, 23, 30, 99])
        )
            .prop_map(|(i, t)| Lie::Type(i, t)),
        (
            0usize..64,
            0usize..2,
            prop_oneof![Just(0u64), 1u64..300, Just(u64::MAX)]
        )
            .prop_map(|(i, k, d)| Lie::Dim(i, k, d)),
        (alignment_value(), any::<bool>()).prop_map(|(a, r)| Lie::Alignment(a, r)),
        (0usize..64, 0usize..64).prop_map(|(i, j)| Lie::DupName(i, j)),
        Just(Lie::DupKey),
        (
            prop::sample::select(vec![
                "llama.rope.freq_base",
                "llama.attention.layer_norm_rms_epsilon"
            ]),
            prop::sample::select(vec![f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1e-6f32]),
        )
            .prop_map(|(k, x)| Lie::Float(k, x)),
        (0u32..3).prop_map(Lie::Layers),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases().min(300), ..ProptestConfig::default() })]

    /// A GGUF whose tensor directory or metadata lies about itself (the tensor count,
    /// offsets, types, dimensions, the alignment, a name or key written twice, non-finite
    /// hyper-parameters, a block count below the layers present), one lie or two at a
    /// time, is refused as bad input naming the file, never read as shifted bytes; the
    /// lies that always shift or contradict the data are always refused. Never a panic.
    #[test]
    fn gguf_layout_and_metadata_lies_are_refused(lies in prop::collection::vec(lie(), 1..3)) {
        use candle_core::quantized::gguf_file::Value;
        let mut g = layout_base().clone();
        let n = g.tensors.len();
        let mut must_refuse: Vec<String> = Vec::new();
        for l in &lies {
            match l {
                Lie::None => {}
                Lie::Count(c) => {
                    g.count_delta += c;
                }
                Lie::Offset(i, d) => {
                    let t = &mut g.tensors[i % n];
                    t.offset = t.offset.saturating_add_signed(*d);
                }
                Lie::Type(i, ty) => g.tensors[i % n].ty = *ty,
                Lie::Dim(i, k, d) => {
                    let t = &mut g.tensors[i % n];
                    let k = k % t.ne.len();
                    t.ne[k] = *d;
                }
                Lie::Alignment(a, relayout) => {
                    let good = matches!(a, Value::U32(x) if x.is_power_of_two());
                    if good {
                        let Value::U32(x) = a else { unreachable!() };
                        g.alignment = u64::from(*x);
                        if *relayout {
                            g.relayout();
                        }
                    }
                    g.set("general.alignment", a.clone());
                }
                Lie::DupName(i, j) => {
                    if i % n != j % n {
                        g.tensors[j % n].name = g.tensors[i % n].name.clone();
                        must_refuse.push("a tensor name written twice".into());
                    }
                }
                Lie::DupKey => {
                    g.kv.push(("general.architecture".into(), Value::String("llama".into())));
                    must_refuse.push("a key written twice".into());
                }
                Lie::Float(k, x) => g.set(k, Value::F32(*x)),
                Lie::Layers(l) => g.set("llama.block_count", Value::U32(*l)),
            }
        }
        if let (Some(Value::U32(now)), Some(Value::U32(real))) =
            (g.get("llama.block_count"), layout_base().get("llama.block_count"))
        {
            if now < real {
                must_refuse.push(format!("block_count {now} below the {real} layers present"));
            }
        }
        if let Some(a) = g.get("general.alignment") {
            if !matches!(a, Value::U32(x) if x.is_power_of_two()) {
                must_refuse.push(format!("alignment {a:?}"));
            }
        }
        for k in ["llama.rope.freq_base", "llama.attention.layer_norm_rms_epsilon"] {
            if let Some(Value::F32(x)) = g.get(k) {
                if !x.is_finite() {
                    must_refuse.push(format!("{k} = {x}"));
                }
            }
        }
        if g.count_delta != 0 {
            must_refuse.push(format!("a tensor count off by {}", g.count_delta));
        }
        let base = layout_base();
        if g.tensors.iter().zip(&base.tensors).any(|(a, b)| a.offset != b.offset && g.alignment == base.alignment) {
            must_refuse.push("a moved offset".into());
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("layout.gguf");
        g.write(&path);
        let outcome = (|| -> anyhow::Result<()> {
            let source = quantbench::model::resolve(&quantbench::model::ModelSpec::Local(path.clone()))?;
            source.tokenizer()?;
            quantbench::model::check_tensors(&source)?;
            quantbench::model::load(
                &source,
                quantbench::precision::Quantization::new(quantbench::precision::Precision::Native),
                &candle_core::Device::Cpu,
            )?;
            Ok(())
        })();
        match outcome {
            Err(e) => {
                let msg = format!("{e:#}");
                prop_assert!(msg.contains("layout.gguf"), "{}", msg);
                prop_assert!(quantbench::is_input_error(&e), "bad input, not a failure: {}", msg);
            }
            Ok(()) => {
                prop_assert!(must_refuse.is_empty(), "read despite: {:?}", must_refuse);
                // What is read is what each tensor holds: never shifted bytes (a type
                // or shape that says fewer bytes reads their start, and goes unnoticed
                // only where every byte it leaves out is zero, as padding is).
                let f = quantbench::model::source::gguf::GgufFile::open(&path).unwrap();
                for t in &g.tensors {
                    let read = f.read_bytes(&t.name).unwrap();
                    prop_assert!(read.len() <= t.data.len(), "{}", t.name);
                    prop_assert_eq!(&read[..], &t.data[..read.len()], "{}", t.name);
                    prop_assert!(t.data[read.len()..].iter().all(|&b| b == 0), "{}", t.name);
                }
            }
        }
    }
}

proptest! {
    /// Every block type read by dequantization (format/ggml_blocks.rs) takes any bytes:
    /// grid and sign indices stay inside ggml's tables whatever the bits, and a matrix of
    /// arbitrary blocks dequantizes and multiplies without a panic.
    #[test]
    fn ggml_block_readers_take_any_bytes(
        ty in prop::sample::select(quantbench::format::GgmlType::ALL.to_vec()),
        seed in any::<u64>(),
    ) {
        use quantbench::format::{ggml_blocks, StoredMatrix};
        let Some((qk, bb)) = ggml_blocks::block(ty) else { return Ok(()); };
        let (rows, blocks) = (3usize, 2usize);
        let mut s = seed;
        let bytes: Vec<u8> = (0..rows * blocks * bb)
            .map(|_| {
                s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                (s >> 56) as u8
            })
            .collect();
        let m = ggml_blocks::BlockMatrix::from_bytes(ty, &bytes, rows, blocks * qk).unwrap();
        let mut w = vec![0f32; rows * blocks * qk];
        m.dequantize_rows(0, &mut w);
        let x = vec![0.5f32; 2 * blocks * qk];
        let mut y = vec![0f32; 2 * rows];
        m.matmul(&x, 2, None, &mut y);
        prop_assert!(ggml_blocks::BlockMatrix::from_bytes(ty, &bytes[1..], rows, blocks * qk).is_err());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases().min(200), ..ProptestConfig::default() })]

    /// An importance matrix file (llama-imatrix's GGUF or legacy .dat) cut short, with
    /// bytes overwritten, or of arbitrary bytes, is read or refused — never a panic — and
    /// what reads back answers for a tensor without one.
    #[test]
    fn importance_matrix_files_survive_any_bytes(
        dat in any::<bool>(),
        cut in 0.0f64..1.0,
        edits in prop::collection::vec((0.0f64..1.0, any::<u8>()), 0..6),
        noise in any::<bool>(),
    ) {
        use quantbench::format::imatrix::Imatrix;
        let name = if dat { "tiny-llama.imatrix.dat" } else { "tiny-llama.imatrix.gguf" };
        let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gguf").join(name);
        let mut bytes = std::fs::read(fixture).unwrap();
        if noise {
            let mut s = (cut * 1e9) as u64 | 1;
            for b in bytes.iter_mut().skip(8) {
                s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                *b = (s >> 56) as u8;
            }
        }
        for (at, v) in &edits {
            let i = (at * bytes.len() as f64) as usize % bytes.len();
            bytes[i] = *v;
        }
        bytes.truncate(((cut * bytes.len() as f64) as usize).max(1));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, &bytes).unwrap();
        if let Ok(m) = Imatrix::read(&path) {
            let _ = m.for_tensor("blk.0.attn_q.weight", 256, (0, 1));
            let _ = m.for_tensor("blk.0.ffn_down.weight", 512, (1, 4));
        }
    }
}
