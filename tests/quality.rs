//! The quality pass computes what it says: KL, same-top-1 and perplexity checked against
//! a direct computation, and exact zeros for a variant that is f32 in disguise.

use candle_core::Device;
use quantbench::model::gpt2::Cache;
use quantbench::model::{self, LoadedModel, ModelSource};
use quantbench::precision::{Policy, Precision, Quantization};
use quantbench::run::quality::{log_softmax, Evaluation, QualityConfig, Reference};

fn tiny() -> ModelSource {
    model::resolve(&"synthetic:tiny".parse().unwrap()).unwrap()
}

fn load(src: &ModelSource, q: Quantization) -> LoadedModel {
    model::load(src, q, &Device::Cpu).unwrap()
}

/// A short evaluation: 40 tokens in windows of 16 with stride 8 (overlapping context).
fn evaluation(m: &LoadedModel) -> Evaluation {
    let text = "Every measurement is a small act of forgetting. When a carpenter marks a board at thirty-one and a half inches, she has decided what does not matter.";
    let tokens = m.tokenizer.encode(text).unwrap();
    assert!(tokens.len() >= 30, "{}", tokens.len());
    let cfg = QualityConfig {
        window: Some(16),
        stride: Some(8),
        max_tokens: Some(40),
        ..Default::default()
    };
    Evaluation::new(&cfg, tokens, "test".into(), m.config().context_length()).unwrap()
}

/// Exact log-probabilities at every scored position, computed the plain way: for each
/// position, the window that scores it, run from scratch.
fn direct_logprobs(m: &LoadedModel, eval: &Evaluation) -> Vec<(u32, Vec<f64>)> {
    let mut out = Vec::new();
    for (begin, end, first) in
        quantbench::run::quality::windows(eval.tokens.len(), eval.window, eval.stride)
    {
        let mut cache = Cache::new(m.config(), end - begin);
        let logits = m
            .model
            .forward_all(&eval.tokens[begin..end], &mut cache)
            .unwrap();
        let rows: Vec<Vec<f32>> = logits.to_vec2().unwrap();
        for p in first..end - 1 {
            let lp = log_softmax(&rows[p - begin]);
            out.push((eval.tokens[p + 1], lp.iter().map(|&x| x as f64).collect()));
        }
    }
    out
}

#[test]
fn kl_top1_and_perplexity_match_a_direct_computation() {
    let src = tiny();
    let f32 = load(&src, Quantization::new(Precision::F32));
    let q4 = load(&src, Quantization::new(Precision::Q4_0));
    let eval = evaluation(&f32);
    let reference = Reference::compute(&f32, &eval, vec![1, 2, 3]).unwrap();
    let rec = reference.compare(&q4, &eval, &[1, 2, 9]).unwrap();

    let p = direct_logprobs(&f32, &eval);
    let q = direct_logprobs(&q4, &eval);
    assert_eq!(p.len(), eval.tokens.len() - 1, "every position scored once");
    assert_eq!(rec.positions, p.len());
    let argmax = |v: &[f64]| (0..v.len()).max_by(|&a, &b| v[a].total_cmp(&v[b])).unwrap();
    let mut kl_sum = 0.0;
    let mut same = 0;
    let (mut nll_p, mut nll_q) = (0.0, 0.0);
    for ((target, lp), (_, lq)) in p.iter().zip(&q) {
        // KL(P || Q) = sum_i p_i (ln p_i - ln q_i), by hand.
        kl_sum += lp
            .iter()
            .zip(lq)
            .map(|(a, b)| a.exp() * (a - b))
            .sum::<f64>();
        same += (argmax(lp) == argmax(lq)) as usize;
        nll_p -= lp[*target as usize];
        nll_q -= lq[*target as usize];
    }
    let n = p.len() as f64;
    let kl = kl_sum / n;
    assert!(kl > 0.0);
    // The stored 16-bit coding moves each log-probability by at most half a step
    // (range / 65535 / 2, about 1e-4 nats): far below a q4_0 model's divergence.
    let kl_mean = rec.kl_mean.unwrap();
    assert!(
        (kl_mean - kl).abs() <= 0.01 * kl,
        "KL {kl_mean} vs direct {kl}"
    );
    assert_eq!(rec.same_top1, Some(same as f64 / n));
    let (ppl_p, ppl_q) = ((nll_p / n).exp(), (nll_q / n).exp());
    let ppl = rec.perplexity.unwrap();
    assert!((ppl - ppl_q).abs() <= 1e-6 * ppl_q, "{ppl} vs {ppl_q}");
    assert!((rec.perplexity_ratio.unwrap() - ppl_q / ppl_p).abs() <= 1e-6);
    assert!((reference.perplexity - ppl_p).abs() <= 1e-6 * ppl_p);
    assert!(rec.kl_max.unwrap() >= rec.kl_p99.unwrap() && rec.kl_p99.unwrap() >= 0.0);
    assert!(rec.notes.is_empty(), "{:?}", rec.notes);
    assert_eq!(rec.leading_tokens_equal_to_f32, 2);
}

#[test]
fn a_variant_that_is_f32_in_disguise_scores_exactly_zero() {
    let src = tiny();
    let reference_model = load(&src, Quantization::new(Precision::F32));
    // Another load, another policy, the same f32 weights: a different model object
    // computing bit-identical logits.
    let disguised = load(
        &src,
        Quantization::new(Precision::F32).with_policy(Policy::Linear),
    );
    let eval = evaluation(&reference_model);
    let reference = Reference::compute(&reference_model, &eval, vec![5, 6]).unwrap();
    let rec = reference.compare(&disguised, &eval, &[5, 6]).unwrap();
    assert_eq!(rec.kl_mean, Some(0.0));
    assert_eq!(rec.kl_max, Some(0.0));
    assert_eq!(rec.same_top1, Some(1.0));
    assert_eq!(rec.perplexity_ratio, Some(1.0));
    assert_eq!(rec.leading_tokens_equal_to_f32, 2);
    // The reference's own record is the same computation against itself.
    assert_eq!(reference.own.kl_mean, Some(0.0));
    assert_eq!(reference.own.same_top1, Some(1.0));
    // ... while a real quantization is not zero.
    let q8 = load(&src, Quantization::new(Precision::Q8_0));
    assert!(
        reference
            .compare(&q8, &eval, &[5, 6])
            .unwrap()
            .kl_mean
            .unwrap()
            > 0.0
    );
}
