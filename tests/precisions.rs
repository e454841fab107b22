//! Every precision loads, holds exactly the bytes its format promises, and generates
//! exactly the requested number of tokens.

use candle_core::{Device, Tensor};
use quantbench::kernel;
use quantbench::model::arch::gemma3;
use quantbench::model::gpt2::{Config, Matrix};
use quantbench::model::llama;
use quantbench::model::{self, ModelConfig, ModelSource};
use quantbench::precision::{Policy, Precision, Quantization, RestDtype};
use quantbench::run::generate::{
    generate, GenerateOptions, NoObserver, Step, StepKind, StepObserver,
};

fn synthetic(name: &str) -> ModelSource {
    model::resolve(&name.parse().unwrap()).unwrap()
}

/// What the weights must take, worked out from the config alone.
fn expected_bytes(cfg: &ModelConfig, q: Quantization) -> usize {
    if let Some(c) = cfg.downcast_ref::<Config>() {
        expected_gpt2_bytes(c, q)
    } else if let Some(c) = cfg.downcast_ref::<llama::Config>() {
        expected_llama_bytes(c, q)
    } else if let Some(c) = cfg.downcast_ref::<gemma3::Config>() {
        expected_gemma3_bytes(c, q)
    } else {
        panic!("no expected bytes for {}", cfg.architecture())
    }
}

fn rest_bytes(q: Quantization) -> usize {
    match q.rest {
        RestDtype::F16 => 2,
        RestDtype::F32 => 4,
        RestDtype::Auto => panic!("a Quantization's rest is resolved"),
    }
}

/// bitsandbytes' and PyTorch's formats replace linear layers only.
fn embeddings_quantized(p: Precision) -> bool {
    !matches!(
        p.name(),
        "nf4" | "fp4" | "nf4_dq" | "fp4_dq" | "llm_int8" | "dynamic_int8" | "dynamic_int8_pc"
    )
}

/// Bytes of a `rows x cols` matrix at `p`, from each format's definition: ggml blocks;
/// bitsandbytes' 4 bits per weight plus an f32 absmax per 64 (or, double-quantized, a
/// byte per 64, an f32 per 256 of those and one f32 offset); int8 codes plus an f32 per
/// row (LLM.int8), or plus an f32 tensor scale / per-row scales and an i32 row sum per
/// row (dynamic int8).
fn quant_bytes(p: Precision, rows: usize, cols: usize) -> usize {
    let n = rows * cols;
    let blocks = n.div_ceil(64);
    match p.name() {
        "nf4" | "fp4" => n.div_ceil(2) + 4 * blocks,
        "nf4_dq" | "fp4_dq" => n.div_ceil(2) + blocks + 4 * blocks.div_ceil(256) + 4,
        "llm_int8" => n + 4 * rows,
        "dynamic_int8" => n + 4 + 4 * rows,
        "dynamic_int8_pc" => n + 8 * rows,
        _ => p.for_row_len(cols).bytes_for(n),
    }
}

fn expected_llama_bytes(cfg: &llama::Config, q: Quantization) -> usize {
    let h = cfg.hidden_size;
    let (qo, kvo) = (
        cfg.num_attention_heads * cfg.head_dim,
        cfg.num_key_value_heads * cfg.head_dim,
    );
    let inter = cfg.intermediate_size;
    let rest = rest_bytes(q);
    let quant = |rows: usize, cols: usize| quant_bytes(q.precision, rows, cols);
    let tables = if cfg.tie_word_embeddings { 1 } else { 2 };
    let embeddings = match q.policy {
        Policy::All if embeddings_quantized(q.precision) => tables * quant(cfg.vocab_size, h),
        _ => tables * cfg.vocab_size * h * rest,
    };
    let attention = quant(qo, h) + 2 * quant(kvo, h) + quant(h, qo);
    let dense = 2 * quant(inter, h) + quant(h, inter);
    // A mixture of experts: the router unquantized (as llama-quantize leaves it), every
    // expert's three matrices at the precision.
    let linear: usize = (0..cfg.num_hidden_layers)
        .map(|i| {
            attention
                + match cfg.moe.as_ref().filter(|m| m.sparse[i]) {
                    Some(m) => {
                        let mi = m.intermediate_size;
                        m.num_experts * h * rest + m.num_experts * (2 * quant(mi, h) + quant(h, mi))
                    }
                    None => dense,
                }
        })
        .sum();
    let (qn, kn) = cfg.qk_norm_lengths();
    let per_layer_vectors = 2 * h
        + if cfg.qk_norm { qn + kn } else { 0 }
        + if cfg.qkv_bias { qo + 2 * kvo } else { 0 }
        + if cfg.o_bias { h } else { 0 }
        + if cfg.mlp_bias { 2 * inter + h } else { 0 }
        + if cfg.attention_sinks {
            cfg.num_attention_heads
        } else {
            0
        };
    // gpt-oss: the router's bias and every expert's three biases, as vectors.
    let expert_biases: usize = (0..cfg.num_hidden_layers)
        .filter_map(|i| cfg.moe.as_ref().filter(|m| m.biases && m.sparse[i]))
        .map(|m| m.num_experts * (1 + 2 * m.intermediate_size + h))
        .sum();
    let norms_biases = (cfg.num_hidden_layers * per_layer_vectors + expert_biases + h) * rest;
    embeddings + linear + norms_biases
}

/// Gemma 3: four norms a layer and the q/k norms, scaled embeddings (a table only).
fn expected_gemma3_bytes(cfg: &gemma3::Config, q: Quantization) -> usize {
    let h = cfg.hidden_size;
    let (qo, kvo) = (
        cfg.num_attention_heads * cfg.head_dim,
        cfg.num_key_value_heads * cfg.head_dim,
    );
    let inter = cfg.intermediate_size;
    let rest = rest_bytes(q);
    let quant = |rows: usize, cols: usize| quant_bytes(q.precision, rows, cols);
    let tables = if cfg.tie_word_embeddings { 1 } else { 2 };
    let embeddings = match q.policy {
        Policy::All if embeddings_quantized(q.precision) => tables * quant(cfg.vocab_size, h),
        _ => tables * cfg.vocab_size * h * rest,
    };
    let linear = cfg.num_hidden_layers
        * (quant(qo, h) + 2 * quant(kvo, h) + quant(h, qo) + 2 * quant(inter, h) + quant(h, inter));
    let norms = (cfg.num_hidden_layers * (4 * h + 2 * cfg.head_dim) + h) * rest;
    embeddings + linear + norms
}

fn expected_gpt2_bytes(cfg: &Config, q: Quantization) -> usize {
    let c = cfg.n_embd;
    let inner = cfg.inner();
    let rest = rest_bytes(q);
    let quant = |rows: usize, cols: usize| quant_bytes(q.precision, rows, cols);
    let embeddings = match q.policy {
        Policy::All if embeddings_quantized(q.precision) => {
            quant(cfg.vocab_size, c) + quant(cfg.n_positions, c)
        }
        _ => (cfg.vocab_size + cfg.n_positions) * c * rest,
    };
    let linear = cfg.n_layer * (quant(3 * c, c) + quant(c, c) + quant(inner, c) + quant(c, inner));
    let norms_biases = (cfg.n_layer * (4 * c + 3 * c + c + inner + c) + 2 * c) * rest;
    embeddings + linear + norms_biases
}

#[test]
fn synthetic_gpt2_weighs_what_the_issue_says() {
    let src = synthetic("synthetic:gpt2");
    let load = |q| model::load(&src, q, &Device::Cpu).unwrap().footprint;

    let f32 = load(Quantization::new(Precision::F32));
    assert_eq!(f32.total_bytes(), 497_759_232);
    assert_eq!(f32.parameters(), 124_439_808);

    let q8 = load(Quantization::new(Precision::Q8_0));
    assert_eq!(q8.total_bytes(), 132_573_744);
    assert!(q8.bits_per_weight() <= 8.6, "{}", q8.bits_per_weight());

    let q4 = load(Quantization::new(Precision::Q4_0));
    assert_eq!(q4.total_bytes(), 70_414_512);
    assert!(q4.bits_per_weight() <= 4.6, "{}", q4.bits_per_weight());

    // bitsandbytes-like: only the block's linear layers quantized, the rest in f16.
    let bnb4 = load(
        Quantization::new(Precision::Q4_0)
            .with_policy(Policy::Linear)
            .with_rest(RestDtype::F16),
    );
    assert_eq!(bnb4.linear.bytes, 84_934_656 / 32 * 18);
    assert_eq!(bnb4.embeddings.bytes, (50257 + 1024) * 768 * 2);
    assert_eq!(bnb4.total_bytes(), 126_786_048);
}

/// A synthetic source of a Llama architecture `member` with its switches on: biases (Qwen2),
/// q/k norms and a head_dim that is not width / heads (Qwen3), GQA, untied head.
fn synthetic_member(member: llama::Member) -> ModelSource {
    let mut src = synthetic("synthetic:tiny-llama");
    let c = src.config.downcast_mut::<llama::Config>().unwrap();
    c.member = member;
    // A smaller vocabulary than GPT-2's keeps the many loads of these tests quick.
    c.vocab_size = 4096;
    match member {
        llama::Member::Qwen2 => {
            c.qkv_bias = true;
            c.tie_word_embeddings = true;
        }
        llama::Member::Qwen3 => {
            c.qk_norm = true;
            c.head_dim = 96;
        }
        llama::Member::Mistral => c.sliding_window = Some(8),
        llama::Member::Llama => {
            c.qkv_bias = true;
            c.o_bias = true;
            c.mlp_bias = true;
        }
        // Fused projections (split at load: the same bytes), half of each head rotated.
        llama::Member::Phi3 => {
            c.partial_rotary_factor = 0.5;
            c.sliding_window = Some(8);
        }
        // Experts of 64 rows (q4_k falls back to q5_0 there, as for any such row).
        llama::Member::Qwen3Moe | llama::Member::Mixtral | llama::Member::Olmoe => {
            c.qk_norm = member != llama::Member::Mixtral;
            c.qk_norm_full = member == llama::Member::Olmoe;
            c.moe = Some(llama::MoeConfig::softmax_top_k(
                4,
                2,
                64,
                member != llama::Member::Olmoe,
                vec![member != llama::Member::Qwen3Moe, true],
            ));
        }
        // Sinks, biases everywhere, a sliding layer then a full one, YaRN, experts
        // routed top-k-then-softmax with the clamped SwiGLU.
        llama::Member::GptOss => {
            use quantbench::model::moe::{Activation, Routing};
            c.qkv_bias = true;
            c.o_bias = true;
            c.attention_sinks = true;
            c.sliding_window = Some(8);
            c.layer_sliding = Some(vec![true, false]);
            c.rope_scaling = llama::RopeScaling::Yarn {
                factor: 32.0,
                original_max_position_embeddings: 64,
                beta_fast: 32.0,
                beta_slow: 1.0,
                attention_factor: 1.3466,
                truncate: false,
            };
            c.moe = Some(llama::MoeConfig {
                num_experts: 4,
                top_k: 2,
                intermediate_size: 64,
                routing: Routing::TopKThenSoftmax,
                activation: Activation::ClampedSwiglu {
                    alpha: 1.702,
                    limit: 7.0,
                },
                biases: true,
                sparse: vec![true, true],
            });
        }
    }
    src
}

#[test]
fn every_precision_and_policy_holds_exactly_its_format_bytes() {
    let mut tiny_llama = synthetic("synthetic:tiny-llama");
    if let Some(c) = tiny_llama.config.downcast_mut::<llama::Config>() {
        c.vocab_size = 4096; // as in synthetic_member: quick loads
    }
    for src in [
        synthetic("synthetic:tiny"),
        tiny_llama,
        synthetic_member(llama::Member::Qwen2),
        synthetic_member(llama::Member::Qwen3),
        synthetic_member(llama::Member::Llama),
        synthetic_member(llama::Member::Qwen3Moe),
        synthetic_member(llama::Member::Olmoe),
        synthetic_member(llama::Member::Phi3),
        synthetic_member(llama::Member::GptOss),
        synthetic("synthetic:tiny-gemma3"),
    ] {
        check_format_bytes(&src);
    }
}

fn check_format_bytes(src: &ModelSource) {
    for p in Precision::ALL {
        for policy in [Policy::All, Policy::Linear] {
            for rest in [RestDtype::F32, RestDtype::F16] {
                let q = Quantization::new(p).with_policy(policy).with_rest(rest);
                let m = model::load(src, q, &Device::Cpu).unwrap();
                let arch = src.config.architecture();
                assert_eq!(
                    m.footprint.total_bytes() as u128,
                    src.config.planned_weight_bytes(q).0,
                    "{arch} {q}: planned before loading"
                );
                assert_eq!(
                    m.footprint.total_bytes(),
                    expected_bytes(&src.config, q),
                    "{arch} {q}"
                );
                assert_eq!(
                    m.footprint.parameters(),
                    src.config.parameter_count(),
                    "{arch} {q}"
                );
            }
        }
    }
}

#[test]
fn k_quants_fall_back_where_rows_do_not_divide_into_blocks() {
    // A width of 96 divides into 32-element blocks but not into 256-element ones (nor
    // into the even block count q5_0's kernel takes).
    let mut src = synthetic("synthetic:tiny");
    if let Some(c) = src.config.downcast_mut::<Config>() {
        c.n_embd = 96;
        c.n_head = 4;
    }
    let m = model::load(&src, Quantization::new(Precision::Q4K), &Device::Cpu).unwrap();
    assert_eq!(
        m.footprint.total_bytes(),
        expected_bytes(&src.config, Quantization::new(Precision::Q4K))
    );
    let notes = m.footprint.fallbacks.join("\n");
    assert!(
        notes.contains("stored as q8_0") && notes.contains("rows of 96"),
        "{notes}"
    );
    // ... and still generate.
    let g = generate(&m, &[1, 2, 3], GenerateOptions::exactly(3), &mut NoObserver).unwrap();
    assert_eq!(g.new_ids.len(), 3);
}

struct Recorder(Vec<Step>);
impl StepObserver for Recorder {
    fn on_step(&mut self, step: &Step) {
        self.0.push(*step);
    }
}

#[test]
fn every_precision_generates_exactly_n_tokens_and_reports_every_step() {
    for name in ["synthetic:tiny", "synthetic:tiny-llama"] {
        check_generates_exactly(&synthetic(name));
    }
}

fn check_generates_exactly(src: &ModelSource) {
    let prompt = [7454, 2402, 257, 640];
    for p in Precision::ALL {
        for policy in [Policy::All, Policy::Linear] {
            let q = Quantization::new(p).with_policy(policy);
            let m = model::load(src, q, &Device::Cpu).unwrap();
            let mut rec = Recorder(Vec::new());
            let g = generate(&m, &prompt, GenerateOptions::exactly(12), &mut rec).unwrap();
            assert_eq!(g.new_ids.len(), 12, "{q}");
            assert_eq!(g.step_seconds.len(), 12, "{q}");
            assert_eq!(rec.0.len(), 12, "{q}");
            assert_eq!(rec.0[0].kind, StepKind::Prefill);
            assert!(rec.0[1..].iter().all(|s| s.kind == StepKind::Decode));
            assert_eq!(rec.0.iter().map(|s| s.token).collect::<Vec<_>>(), g.new_ids);
            assert!(g.step_seconds.iter().all(|&s| s > 0.0));
            assert!(g
                .new_ids
                .iter()
                .all(|&t| (t as usize) < src.config.vocab_size()));
        }
    }
}

#[test]
fn generation_is_deterministic_and_the_kv_cache_matches_a_full_recompute() {
    for src in [
        synthetic("synthetic:tiny"),
        synthetic("synthetic:tiny-llama"),
        synthetic_member(llama::Member::Qwen2),
        synthetic_member(llama::Member::Qwen3),
        // A sliding window of 8 positions, passed during the 15 tokens: the cached
        // decode must mask exactly as the full recompute does.
        synthetic_member(llama::Member::Mistral),
        // Sinks and a window on the first layer only, past it during the 15 tokens.
        synthetic_member(llama::Member::GptOss),
    ] {
        check_cache_matches_recompute(&src);
    }
}

fn check_cache_matches_recompute(src: &ModelSource) {
    let m = model::load(src, Quantization::new(Precision::F32), &Device::Cpu).unwrap();
    let prompt = [464, 3616, 286, 1204, 318];
    let a = generate(&m, &prompt, GenerateOptions::exactly(10), &mut NoObserver).unwrap();
    let b = generate(&m, &prompt, GenerateOptions::exactly(10), &mut NoObserver).unwrap();
    assert_eq!(a.new_ids, b.new_ids);
    // Without the cache: feed the whole sequence each time and take the last argmax.
    let mut seq = prompt.to_vec();
    for _ in 0..10 {
        let mut cache = quantbench::model::Cache::new(m.config(), seq.len());
        let logits = m.model.forward_last(&seq, &mut cache).unwrap();
        seq.push(logits.argmax(0).unwrap().to_scalar::<u32>().unwrap());
    }
    assert_eq!(
        &seq[prompt.len()..],
        a.new_ids.as_slice(),
        "{}",
        src.config.architecture()
    );
}

#[test]
fn quantized_embedding_rows_equal_the_dequantized_table() {
    let src = synthetic("synthetic:tiny");
    for p in [
        Precision::Q4_0,
        Precision::Q8_0,
        Precision::Q4K,
        Precision::Q2K,
    ] {
        let m = model::load(&src, Quantization::new(p), &Device::Cpu).unwrap();
        let wte = m.model.token_embedding();
        // Tied to the LM head, the table is stored for products: interleaved where the
        // CPU has the kernels (q4_0, q8_0, q4_k: 50,256 rows in groups of 8, one after).
        let interleaved = kernel::active() == kernel::Kernels::Quantbench
            && kernel::avx2_supported()
            && p != Precision::Q2K;
        assert_eq!(
            matches!(wte, Matrix::Interleaved(_)),
            interleaved,
            "{p}: {}",
            kernel::describe()
        );
        let q = match wte {
            Matrix::Quantized(q) => q.clone(),
            Matrix::Interleaved(_) => {
                let (bytes, dtype) = quantbench::model::write::gguf::matrix_bytes(wte).unwrap();
                let storage = candle_core::quantized::QStorage::from_data(
                    std::borrow::Cow::Owned(bytes),
                    &Device::Cpu,
                    dtype.candle().unwrap(),
                )
                .unwrap();
                std::sync::Arc::new(
                    candle_core::quantized::QTensor::new(storage, wte.shape()).unwrap(),
                )
            }
            _ => panic!("{p}: wte should be quantized under the `all` policy"),
        };
        let ids = Tensor::new(&[[0u32, 50256, 7454]], &Device::Cpu).unwrap();
        let rows = m
            .model
            .token_embedding()
            .rows(&ids)
            .unwrap()
            .squeeze(0)
            .unwrap();
        let table = q.dequantize(&Device::Cpu).unwrap();
        let want = table
            .index_select(&Tensor::new(&[0u32, 50256, 7454], &Device::Cpu).unwrap(), 0)
            .unwrap();
        let diff = (rows - want)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_eq!(diff, 0.0, "{p}");
    }
}
