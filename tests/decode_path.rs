//! quantbench's decode-step attention (`kernel::attention`) gives the tokens and logits
//! of candle's path it replaces, on GPT-2 and a Llama-family model (grouped-query
//! attention), at float and block precisions, one sequence and a batch of three.

use candle_core::Device;
use quantbench::kernel::attention;
use quantbench::model::{self, Cache};
use quantbench::{Precision, Quantization};

/// Greedy steps from a prompt per sequence: every step's last-position logits, and the
/// tokens chosen.
fn run(
    m: &quantbench::LoadedModel,
    prompts: &[Vec<u32>],
    steps: usize,
) -> (Vec<Vec<f32>>, Vec<Vec<u32>>) {
    let mut cache = Cache::new(m.config(), 64);
    let refs: Vec<&[u32]> = prompts.iter().map(Vec::as_slice).collect();
    let mut logits = Vec::new();
    let mut tokens = Vec::new();
    let mut out = m.model.forward_last_batch(&refs, &mut cache).unwrap();
    for _ in 0..steps {
        let next: Vec<u32> = out.argmax(1).unwrap().to_vec1().unwrap();
        logits.extend(out.to_vec2::<f32>().unwrap());
        tokens.push(next.clone());
        let step: Vec<[u32; 1]> = next.iter().map(|&t| [t]).collect();
        let refs: Vec<&[u32]> = step.iter().map(|s| s.as_slice()).collect();
        out = m.model.forward_last_batch(&refs, &mut cache).unwrap();
    }
    (logits, tokens)
}

#[test]
fn decode_attention_gives_candles_tokens_and_logits() {
    for spec in ["synthetic:tiny", "synthetic:tiny-llama"] {
        for p in [Precision::F32, Precision::Q8_0, Precision::Q4_0] {
            let source = model::resolve(&spec.parse().unwrap()).unwrap();
            let m = model::load(&source, Quantization::new(p), &Device::Cpu).unwrap();
            let vocab = m.config().vocab_size();
            for prompts in [
                vec![vec![1u32, 5, 9, 2]],
                (0..3u32)
                    .map(|s| (0..5).map(|i| (s * 31 + i * 7) % vocab as u32).collect())
                    .collect(),
            ] {
                let before = attention::calls();
                attention::set_enabled(false);
                let (want, want_tokens) = run(&m, &prompts, 12);
                assert_eq!(attention::calls(), before, "candle's path ran ours");
                attention::set_enabled(true);
                let (got, got_tokens) = run(&m, &prompts, 12);
                if quantbench::kernel::active() == quantbench::kernel::Kernels::Quantbench {
                    // One call per layer per decode step.
                    assert!(
                        attention::calls() >= before + 12,
                        "the decode path did not run"
                    );
                }
                assert_eq!(got_tokens, want_tokens, "{spec} {p}: tokens");
                for (step, (a, b)) in got.iter().zip(&want).enumerate() {
                    let scale = b.iter().fold(1f32, |s, v| s.max(v.abs()));
                    let diff = a
                        .iter()
                        .zip(b)
                        .map(|(x, y)| (x - y).abs())
                        .fold(0f32, f32::max);
                    assert!(
                        diff <= 1e-5 * scale,
                        "{spec} {p} step {step}: logits differ by {diff} (scale {scale})"
                    );
                }
            }
        }
    }
}
