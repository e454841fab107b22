//! quantbench's CPU decode path gives the tokens and logits of candle's path it
//! replaces: its decode-step attention (`kernel::attention`) inside candle's ops, and the
//! whole decode step (`model::step`: buffers reused from step to step, keys and values
//! written into the cache in place, fused residual + norm, rotary embedding in place) —
//! on GPT-2 and the Llama family (grouped-query attention, Mistral's sliding window,
//! Qwen2's biases, Qwen3's q/k norms), at float and block precisions, one sequence and a
//! batch of three.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use candle_core::Device;
use quantbench::kernel::attention;
use quantbench::model::{self, step, Cache, ModelSpec};
use quantbench::{Precision, Quantization};

/// Counts every allocation in this test binary (the step's are read around one call).
struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The switches are process-wide: one test at a time flips them.
static SWITCHES: Mutex<()> = Mutex::new(());

fn quantbench_kernels() -> bool {
    quantbench::kernel::active() == quantbench::kernel::Kernels::Quantbench
}

fn source(name: &str) -> model::ModelSource {
    if name.starts_with("synthetic:") {
        return model::resolve(&name.parse().unwrap()).unwrap();
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llama-family");
    model::resolve(&ModelSpec::Local(dir.join(name))).unwrap()
}

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

/// One sequence, and three of different prompts.
fn prompts(vocab: usize) -> [Vec<Vec<u32>>; 2] {
    [
        vec![vec![1u32, 5, 9, 2]],
        (0..3u32)
            .map(|s| (0..5).map(|i| (s * 31 + i * 7) % vocab as u32).collect())
            .collect(),
    ]
}

/// The same tokens, and logits within 1e-5 of their largest magnitude at every step —
/// except, where the products round their activations (`p` not f32), at a few steps (at
/// most 1 in 8) within 1e-3 (f16, bf16) or 2e-2 (8-bit blocks). Two paths whose f32
/// results differ by an ulp (sums in another order — the sliding window's attention:
/// 2-4e-7 at f32 on `mistral-window`, every step past the window — or candle's softmax
/// on libm's `expf` against quantbench's on its vectorised `e^x`, within 2.5e-7) agree
/// after the rounding almost always, but now and then one activation lands on the other
/// side of a rounding boundary: one f16 ulp there moved the logits by 1.1e-4 of their
/// scale, one step of an 8-bit block (1/127 of its largest value) on `tiny-llama` at
/// q8_0 by 9.3e-3.
fn assert_same(
    what: &str,
    p: Precision,
    got: &(Vec<Vec<f32>>, Vec<Vec<u32>>),
    want: &(Vec<Vec<f32>>, Vec<Vec<u32>>),
) {
    assert_eq!(got.1, want.1, "{what}: tokens");
    let mut loose = 0;
    for (step, (a, b)) in got.0.iter().zip(&want.0).enumerate() {
        let scale = b.iter().fold(1f32, |s, v| s.max(v.abs()));
        let diff = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        if diff <= 1e-5 * scale {
            continue;
        }
        let bound = match p {
            Precision::F32 => 0.0,
            Precision::F16 | Precision::Bf16 => 1e-3,
            _ => 2e-2,
        };
        assert!(
            diff <= bound * scale,
            "{what} step {step}: logits differ by {diff} (scale {scale})"
        );
        loose += 1;
    }
    assert!(
        loose * 8 <= got.0.len(),
        "{what}: logits differ by more than 1e-5 at {loose} of {} steps",
        got.0.len()
    );
}

#[test]
fn decode_attention_gives_candles_tokens_and_logits() {
    let _one = SWITCHES.lock().unwrap_or_else(|e| e.into_inner());
    // The attention inside candle's ops: the whole decode step off.
    step::set_enabled(false);
    for spec in ["synthetic:tiny", "synthetic:tiny-llama"] {
        for p in [Precision::F32, Precision::Q8_0, Precision::Q4_0] {
            let m = model::load(&source(spec), Quantization::new(p), &Device::Cpu).unwrap();
            for prompts in prompts(m.config().vocab_size()) {
                let before = attention::calls();
                attention::set_enabled(false);
                let want = run(&m, &prompts, 12);
                assert_eq!(attention::calls(), before, "candle's path ran ours");
                attention::set_enabled(true);
                let got = run(&m, &prompts, 12);
                if quantbench_kernels() {
                    // One call per layer per decode step.
                    assert!(
                        attention::calls() >= before + 12,
                        "the decode attention did not run"
                    );
                }
                assert_same(&format!("{spec} {p}"), p, &got, &want);
            }
        }
    }
    step::set_enabled(true);
}

/// The whole decode step against the candle path it replaces (candle's ops around the
/// decode attention, which the test above holds to candle's own: compared with that,
/// rounding differences of one ulp in the attention can move an activation across a
/// rounding boundary of the 8-bit activations and the logits by 1e-3), on every
/// architecture switch the Llama family has, at every kind of product (dense f32, f16,
/// bf16; 32-element blocks; k-quants where the widths allow; bitsandbytes' formats).
#[test]
fn decode_step_gives_candles_tokens_and_logits() {
    let _one = SWITCHES.lock().unwrap_or_else(|e| e.into_inner());
    attention::set_enabled(true);
    for spec in [
        "synthetic:tiny",
        "synthetic:tiny-llama",
        "mistral-window",
        "qwen3-qknorm",
        "qwen2-bias-tied",
        "llama-bf16-linear",
    ] {
        for p in [
            Precision::F32,
            Precision::F16,
            Precision::Bf16,
            Precision::Q8_0,
            Precision::Q4_0,
            Precision::Q4_1,
            Precision::Q5_0,
            Precision::Q4K,
            Precision::Q6K,
            Precision::Nf4,
            Precision::LlmInt8,
        ] {
            let m = model::load(&source(spec), Quantization::new(p), &Device::Cpu).unwrap();
            for prompts in prompts(m.config().vocab_size()) {
                step::set_enabled(false);
                let before = step::steps();
                let want = run(&m, &prompts, 12);
                assert_eq!(step::steps(), before, "candle's path ran the step");
                step::set_enabled(true);
                let got = run(&m, &prompts, 12);
                if quantbench_kernels() {
                    assert_eq!(
                        step::steps(),
                        before + 12,
                        "{spec} {p}: the step did not run"
                    );
                }
                assert_same(&format!("{spec} {p} x{}", prompts.len()), p, &got, &want);
            }
        }
    }
}

/// A decode step's allocations are a fixed few, step after step, against hundreds on
/// candle's path: the ids (3), the hidden state handed back as a tensor (5), and two
/// 64-byte vectors per layer that candle's in-place op makes to check the cache's layout
/// for overlaps (`Layout::has_internal_overlap`) before the keys and values are written.
#[test]
fn decode_step_allocates_a_fixed_few() {
    let _one = SWITCHES.lock().unwrap_or_else(|e| e.into_inner());
    if !quantbench_kernels() {
        return;
    }
    attention::set_enabled(true);
    for spec in ["synthetic:tiny", "synthetic:tiny-llama"] {
        let m = model::load(
            &source(spec),
            Quantization::new(Precision::Q8_0),
            &Device::Cpu,
        )
        .unwrap();
        let per_step = |on: bool| {
            step::set_enabled(on);
            let mut cache = Cache::new(m.config(), 64);
            m.model.hidden(&[1, 2, 3], &mut cache).unwrap();
            let mut counts = Vec::new();
            for t in 0..8u32 {
                let before = ALLOCATIONS.load(Ordering::SeqCst);
                m.model.hidden(&[t + 4], &mut cache).unwrap();
                counts.push(ALLOCATIONS.load(Ordering::SeqCst) - before);
            }
            counts
        };
        let candle = per_step(false);
        let ours = per_step(true);
        step::set_enabled(true);
        eprintln!(
            "{spec}: allocations per decode step: candle's path {candle:?}, the step {ours:?}"
        );
        // The first step makes the buffers; every later one allocates the same few.
        let layers = m.config().n_layer();
        let later = &ours[1..];
        assert!(
            later.iter().all(|&c| c == later[0]) && later[0] <= 8 + 2 * layers,
            "{spec}: allocations per step {ours:?}"
        );
        assert!(
            candle[1..].iter().all(|&c| c > 10 * later[0]),
            "{spec}: {candle:?} vs {ours:?}"
        );
    }
}
