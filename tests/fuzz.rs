//! Fuzz targets, as property tests: the parsers that read user files never panic, never
//! hang, never allocate what a lying header asks for, and answer with errors that name
//! the file. cargo-fuzz needs a nightly toolchain; proptest runs on stable, here and in
//! CI. Run longer with, e.g., `PROPTEST_CASES=100000 cargo test --release --test fuzz`.

use std::path::Path;

use proptest::prelude::*;
use quantbench::model::gpt2::Config;
use quantbench::model::weights::{SafetensorsSource, TensorSource};
use quantbench::record::RunRecord;
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
    ];
    (prop::collection::vec(line, 0..10), quality)
        .prop_map(|(l, q)| format!("{}\n{q}", l.join("\n")))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn scenario_parser_never_panics(text in scenario_text()) {
        if let Err(e) = Scenario::parse(&text, "fuzz.toml") {
            prop_assert!(e.to_string().contains("fuzz.toml"), "{}", e);
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
        match SafetensorsSource::open(&[path]) {
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
