//! The architectures added after the Llama family compute what transformers computes,
//! from a Hugging Face folder and from the GGUF llama.cpp's converter makes of it.
//!
//! The fixtures come from `scripts/make_reference.py --only families` (transformers,
//! f32, eager attention; seeds searched for clear and varied greedy continuations):
//! tiny random models saved by save_pretrained under tests/fixtures/families/, each with
//! its own byte-level BPE tokenizer.json; for each of a few prompts the prompt's ids, 20
//! greedy tokens and the last prompt position's logits. The GGUFs beside them are
//! llama.cpp's convert_hf_to_gguf.py output (F32) and llama-quantize's Q8_0 of it.

mod common;

use candle_core::Device;
use common::reference::{fixtures, last_logits, Reference};
use quantbench::model::{self, ModelSource, ModelSpec};
use quantbench::precision::{Precision, Quantization};

fn source(path: &str) -> ModelSource {
    if path.starts_with("synthetic:") {
        return model::resolve(&path.parse().unwrap()).unwrap();
    }
    model::resolve(&ModelSpec::Local(fixtures().join("families").join(path))).unwrap()
}

/// The L2 distance of `got` from `want`, relative to `want`'s spread about its mean.
fn relative_l2(want: &[f32], got: &[f32]) -> f32 {
    let mean = want.iter().sum::<f32>() / want.len() as f32;
    let spread = want.iter().map(|x| (x - mean).powi(2)).sum::<f32>().sqrt();
    let err = want
        .iter()
        .zip(got)
        .map(|(a, b)| (a - b).powi(2))
        .sum::<f32>()
        .sqrt();
    err / spread
}

fn check_f32(name: &str, path: &str, architecture: &str) {
    let src = source(path);
    assert_eq!(src.config.architecture(), architecture, "{path}");
    let m = model::load(&src, Quantization::new(Precision::F32), &Device::Cpu).unwrap();
    Reference::load("reference-families").check_f32_matches(name, &m);
}

/// Gemma 3 with llama.cpp's layer pattern: five sliding layers (window 6, which the
/// prompts and 20 new tokens run past) and a global one, two rotations, q/k norms,
/// the `1 + w` norms, the scaled embeddings, GeGLU and the final soft-cap.
#[test]
fn gemma3_with_sliding_layers_and_a_softcap_matches_transformers_at_f32() {
    check_f32("gemma3-window", "gemma3-window", "gemma3_text");
}

/// The same model through llama.cpp's converter: the norms stored as `1 + w`, the
/// pattern and the local rotation base left to llama.cpp's defaults.
#[test]
fn gemma3_gguf_from_llama_cpps_converter_matches_transformers_at_f32() {
    check_f32("gemma3-window", "gemma3-window/model.gguf", "gemma3_text");
}

/// What only a config.json states: an irregular layer_types, query_pre_attn_scalar
/// apart from head_dim, a linearly scaled global rotation, an untied head; stored bf16.
#[test]
fn gemma3_with_its_own_pattern_scale_and_rope_scaling_matches_transformers_at_f32() {
    let src = source("gemma3-custom");
    assert_eq!(src.stored_dtypes().unwrap(), Some(vec!["bf16".to_string()]));
    check_f32("gemma3-custom", "gemma3-custom", "gemma3_text");
}

/// q8_0 against transformers' f32 logits: the relative L2 error under 10% (the shared
/// bound of tests/reference.rs is 5%; Gemma's six layers of q8_0 on a tiny model with a
/// logit range under 2 land at 2.6-5.6%); and quantbench's own q8_0 of the F32 file is
/// llama-quantize's Q8_0 file, logit for logit (same blocks, same kernels).
/// Mixtures of experts, from the folder and from llama.cpp's converter's GGUF (experts
/// stacked in `ffn_*_exps`): Qwen3-MoE (renormalised top-k, per-head q/k norms),
/// Mixtral (written by llama.cpp as `llama`), OLMoE (whole-projection q/k norms, top-k
/// weights as the softmax left them).
#[test]
fn mixtures_of_experts_match_transformers_at_f32_from_folders_and_gguf() {
    for (name, arch) in [
        ("qwen3moe-experts", "qwen3_moe"),
        ("mixtral-experts", "mixtral"),
        ("olmoe-experts", "olmoe"),
    ] {
        check_f32(name, name, arch);
        check_f32(name, &format!("{name}/model.gguf"), arch);
    }
}

/// Phi-3: fused projections split at load, half of each head rotated, LongRoPE with its
/// attention factor (short factors within the original context, long ones past it), a
/// sliding window the prompts and 20 new tokens run past; from the folder and the GGUF.
#[test]
fn phi3_with_longrope_and_partial_rotary_matches_transformers_at_f32() {
    for name in ["phi3-longrope-short", "phi3-longrope-long"] {
        check_f32(name, name, "phi3");
        check_f32(name, &format!("{name}/model.gguf"), "phi3");
    }
}

/// gpt-oss: attention sinks, biases on q/k/v/o, on the router and on every expert,
/// sliding (window 6, run past) and full layers in turn, YaRN, top-k-then-softmax
/// routing and the clamped SwiGLU; from the folder (experts stacked as transformers
/// keeps them, gate and up interleaved) and from llama.cpp's converter's GGUF.
#[test]
fn gpt_oss_with_sinks_yarn_and_biased_experts_matches_transformers_at_f32() {
    check_f32("gpt-oss-experts", "gpt-oss-experts", "gpt_oss");
    check_f32("gpt-oss-experts", "gpt-oss-experts/model.gguf", "gpt_oss");
}

/// What only a config.json states: a SwiGLU limit of 0.4 (clamping gate and up), YaRN
/// untruncated at gpt-oss-20b's numbers, an irregular layer_types; stored bf16.
#[test]
fn gpt_oss_with_its_own_clamp_layers_and_untruncated_yarn_matches_transformers_at_f32() {
    let src = source("gpt-oss-custom");
    assert_eq!(src.stored_dtypes().unwrap(), Some(vec!["bf16".to_string()]));
    check_f32("gpt-oss-custom", "gpt-oss-custom", "gpt_oss");
}

/// MXFP4 as llama-quantize's MXFP4_MOE stores gpt-oss's experts: quantbench's quantizer
/// (ggml's `quantize_row_mxfp4_ref`) makes the file's bytes from the F32 file's weights,
/// every expert tensor byte for byte; and the file runs as stored (experts MXFP4, the
/// rest Q8_0, the router F32) with logits near transformers' f32 ones.
#[test]
fn mxfp4_experts_are_llama_quantizes_bytes_and_run_as_stored() {
    use quantbench::format::{mxfp4, GgmlType};
    use quantbench::model::source::gguf::GgufFile;
    let dir = fixtures().join("families/gpt-oss-experts");
    let theirs = GgufFile::open(&dir.join("model-mxfp4.gguf")).unwrap();
    let f32_file = GgufFile::open(&dir.join("model.gguf")).unwrap();
    let mut compared = 0;
    for (name, e) in &theirs.tensors {
        if e.dtype != GgmlType::Mxfp4 {
            continue;
        }
        let w = f32_file
            .qtensor(name, &e.shape)
            .unwrap()
            .dequantize(&Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let mut ours = vec![0u8; w.len() / mxfp4::QK * mxfp4::BLOCK_BYTES];
        mxfp4::quantize_row(&w, &mut ours);
        assert_eq!(ours, theirs.read_bytes(name).unwrap(), "{name}");
        compared += 1;
    }
    assert_eq!(compared, 3 * 4, "every layer's three expert tensors");
    let r = Reference::load("reference-families");
    let m = model::load(
        &source("gpt-oss-experts/model-mxfp4.gguf"),
        Quantization::new(Precision::Native),
        &Device::Cpu,
    )
    .unwrap();
    let formats: Vec<String> = m
        .footprint
        .by_format
        .iter()
        .map(|f| f.format.clone())
        .collect();
    assert!(formats.contains(&"mxfp4".to_string()), "{formats:?}");
    for (i, p) in r.models["gpt-oss-experts"].iter().enumerate() {
        let e = relative_l2(
            &r.logits("gpt-oss-experts", i),
            &last_logits(&m, &p.prompt_ids),
        );
        eprintln!("gpt-oss-experts MXFP4_MOE prompt {i}: relative L2 error {e:.4}");
        assert!(e < 0.05, "prompt {i}: {e}");
    }
}

/// A dense layer among the sparse ones, 3 of 8 experts a token, weights not
/// renormalised: what only a config.json states.
#[test]
fn qwen3_moe_with_a_dense_layer_matches_transformers_at_f32() {
    check_f32("qwen3moe-mixed", "qwen3moe-mixed", "qwen3_moe");
}

#[test]
fn q8_0_logits_stay_close_to_f32_and_equal_llama_quantizes() {
    let r = Reference::load("reference-families");
    for (name, path) in [
        ("gemma3-window", "gemma3-window"),
        ("gemma3-custom", "gemma3-custom"),
        ("qwen3moe-experts", "qwen3moe-experts"),
        ("mixtral-experts", "mixtral-experts"),
        ("olmoe-experts", "olmoe-experts"),
        ("qwen3moe-mixed", "qwen3moe-mixed"),
        ("phi3-longrope-short", "phi3-longrope-short"),
        ("gpt-oss-experts", "gpt-oss-experts"),
        ("gpt-oss-custom", "gpt-oss-custom"),
    ] {
        let q8 = model::load(
            &source(path),
            Quantization::new(Precision::Q8_0),
            &Device::Cpu,
        )
        .unwrap();
        for (i, p) in r.models[name].iter().enumerate() {
            let e = relative_l2(&r.logits(name, i), &last_logits(&q8, &p.prompt_ids));
            eprintln!("{name} prompt {i}: q8_0 relative L2 error {e:.4}");
            assert!(e < 0.10, "{name} prompt {i}: {e}");
        }
    }
    for name in [
        "gemma3-window",
        "qwen3moe-experts",
        "mixtral-experts",
        "olmoe-experts",
        "gpt-oss-experts",
    ] {
        let own = model::load(
            &source(&format!("{name}/model.gguf")),
            Quantization::new(Precision::Q8_0),
            &Device::Cpu,
        )
        .unwrap();
        let theirs = model::load(
            &source(&format!("{name}/model-q8_0.gguf")),
            Quantization::new(Precision::Native),
            &Device::Cpu,
        )
        .unwrap();
        for p in &r.models[name] {
            assert_eq!(
                last_logits(&own, &p.prompt_ids),
                last_logits(&theirs, &p.prompt_ids),
                "{name}: {:?}",
                p.prompt
            );
        }
    }
}

/// A mixture of experts in a run: the record says what memory holds and what a decode
/// step read (one sequence: exactly top_k experts a layer; four sequences: the union
/// of their routes, more bytes a step), which experts the timed generations touched,
/// and, per precision, how often each layer's top-k set is the f32 reference's.
#[test]
fn a_run_records_expert_usage_streamed_bytes_and_top_k_agreement() {
    use quantbench::probe::Probes;
    use quantbench::run::runner::{self, Silent};
    let dir = fixtures().join("families/qwen3moe-experts");
    let toml = format!(
        "name = \"moe\"\nmodel = {:?}\nprecisions = [\"f32\", \"q8_0\", \"q4_0\"]\nprompt = \"Once upon a time\"\nnew_tokens = 12\nwarmup = 0\nrepeats = 2\n[[workload]]\nprompt_tokens = [0]\nnew_tokens = [12]\nbatch = [1, 4]\n",
        dir.display().to_string()
    );
    let scenario = quantbench::Scenario::parse(&toml, "t.toml").unwrap();
    let prepared = runner::prepare(&scenario, None).unwrap();
    let run = runner::run(&prepared, &Probes::available(), &mut Silent).unwrap();
    for v in &run.variants {
        let e = v.experts.as_ref().expect("an experts record");
        assert_eq!(e.layers.len(), 2);
        let weights = v.weights_bytes.unwrap() as f64;
        assert!(e.streamed_bytes_per_step_mean < weights, "{}", v.key());
        for l in &e.layers {
            assert_eq!((l.experts, l.top_k), (4, 2));
            // One sequence: every step reads exactly its top 2.
            assert_eq!(l.distinct_per_step_mean, 2.0);
            assert!(l.decode_steps >= 2 * 11);
            assert!(l.distinct_over_generations >= 2);
            let agree = l.top_k_agreement.expect("agreement from the quality pass");
            if v.precision.name() == "f32" {
                assert_eq!(agree, 1.0);
            } else {
                assert!(agree > 0.5 && agree <= 1.0, "{} {agree}", v.key());
            }
        }
        let (one, four) = (&v.tests[0], &v.tests[1]);
        assert_eq!(one.experts_per_step_mean, Some(2.0));
        let four_per_step = four.experts_per_step_mean.unwrap();
        assert!(
            four_per_step > 2.0 && four_per_step <= 4.0,
            "{four_per_step}"
        );
        assert!(four.decode_bytes_per_step.unwrap() > one.decode_bytes_per_step.unwrap());
    }
}

/// What transformers' get_memory_footprint() counts of each model loaded in f32
/// (parameters, the rotary buffers of each layer kind, Gemma's embed_scale, Phi-3's
/// partial rotation) is what quantbench records as transformers' count.
#[test]
fn transformers_footprints_are_transformers_own() {
    let text = std::fs::read_to_string(fixtures().join("reference-families.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let want = json["footprints_f32"].as_object().unwrap();
    assert_eq!(want.len(), 10);
    for (name, bytes) in want {
        let q = Quantization::new(Precision::F32);
        let m = model::load(&source(name), q, &Device::Cpu).unwrap();
        let tf = m
            .footprint
            .transformers(m.config().transformers_buffer_bytes(q.rest.dtype()))
            .unwrap();
        assert_eq!(tf.current_bytes, bytes.as_u64().unwrap(), "{name}");
    }
}
