//! Criterion benches of generation with synthetic:gpt2 (GPT-2 small's shapes, weights
//! from a seed): one decode step after a 4-token prompt and a 4-token prefill at every
//! precision, and a whole 50-token greedy generation at f32, q8_0 and q4_0; and for the
//! Llama family, one decode step of synthetic:llama-3.2-1b (Llama 3.2 1B's shapes: GQA,
//! SwiGLU, RMSNorm, rotary) at f32, q8_0, q4_0 and q4_k, each loaded, measured and
//! dropped in turn (all of them at once would not fit beside the GPT-2s). Throughput is
//! in tokens ("elements") per second.
//!
//!     cargo bench --bench generation                            # everything (~5 min)
//!     cargo bench --bench generation -- 'decode_step/q4_0'      # one case
//!     cargo bench --bench generation -- --save-baseline before  # save a baseline
//!     cargo bench --bench generation -- --baseline before       # compare with it
//!
//! Only the timed region is timed (the prefill that fills the cache for a decode step is
//! not), and clocks are read through `clock::synced_now`, so a CUDA build times finished
//! GPU work.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use quantbench::model::Cache;
use quantbench::precision::{Precision, Quantization};
use quantbench::run::clock::{synced_now, synced_seconds_since};
use quantbench::run::generate::NoObserver;
use quantbench::scenario::DeviceChoice;
use quantbench::{generate, GenerateOptions, LoadedModel};

/// "Once upon a time" in GPT-2's vocabulary.
const PROMPT: [u32; 4] = [7454, 2402, 257, 640];

fn load_all(device: &candle_core::Device) -> Vec<(Precision, LoadedModel)> {
    let source = quantbench::resolve(&"synthetic:gpt2".parse().unwrap()).unwrap();
    Precision::ALL
        .iter()
        .map(|&p| {
            (
                p,
                quantbench::load(&source, Quantization::new(p), device).unwrap(),
            )
        })
        .collect()
}

/// The time of `iters` decode steps, each after a fresh 4-token prefill that is not timed.
fn decode_steps(m: &LoadedModel, device: &candle_core::Device, iters: u64) -> Duration {
    let mut total = 0.0;
    for _ in 0..iters {
        let mut cache = Cache::new(m.config(), PROMPT.len() + 1);
        m.model.forward_last(&PROMPT, &mut cache).unwrap();
        let start = synced_now(device).unwrap();
        let logits = m.model.forward_last(&[11], &mut cache).unwrap();
        std::hint::black_box(logits.argmax(0).unwrap().to_scalar::<u32>().unwrap());
        total += synced_seconds_since(device, start).unwrap();
    }
    Duration::from_secs_f64(total)
}

fn generation(c: &mut Criterion) {
    quantbench::kernel::configure_threads();
    let (device, _) = DeviceChoice::Auto.open().expect("opening the device");
    let models = load_all(&device);

    let mut group = c.benchmark_group("decode_step/synthetic:gpt2");
    group.throughput(Throughput::Elements(1));
    for (p, m) in &models {
        group.bench_function(BenchmarkId::from_parameter(p), |b| {
            b.iter_custom(|iters| decode_steps(m, &device, iters))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("prefill4/synthetic:gpt2");
    group.throughput(Throughput::Elements(PROMPT.len() as u64));
    for (p, m) in &models {
        group.bench_function(BenchmarkId::from_parameter(p), |b| {
            b.iter_custom(|iters| {
                let start = synced_now(&device).unwrap();
                for _ in 0..iters {
                    let mut cache = Cache::new(m.config(), PROMPT.len());
                    let logits = m.model.forward_last(&PROMPT, &mut cache).unwrap();
                    std::hint::black_box(logits.argmax(0).unwrap().to_scalar::<u32>().unwrap());
                }
                Duration::from_secs_f64(synced_seconds_since(&device, start).unwrap())
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("generate50/synthetic:gpt2");
    group.throughput(Throughput::Elements(50));
    for (p, m) in &models {
        if !matches!(p, Precision::F32 | Precision::Q8_0 | Precision::Q4_0) {
            continue;
        }
        group.bench_function(BenchmarkId::from_parameter(p), |b| {
            b.iter_custom(|iters| {
                let start = synced_now(&device).unwrap();
                for _ in 0..iters {
                    let g = generate(m, &PROMPT, GenerateOptions::exactly(50), &mut NoObserver)
                        .unwrap();
                    assert_eq!(g.new_ids.len(), 50);
                }
                Duration::from_secs_f64(synced_seconds_since(&device, start).unwrap())
            })
        });
    }
    group.finish();
    drop(models);

    // The Llama family: one decode step after a 4-token prompt ("Once upon a time" in
    // GPT-2's ids, all below Llama 3's vocabulary).
    let source = quantbench::resolve(&"synthetic:llama-3.2-1b".parse().unwrap()).unwrap();
    let mut group = c.benchmark_group("decode_step/synthetic:llama-3.2-1b");
    group.throughput(Throughput::Elements(1));
    for p in [
        Precision::F32,
        Precision::Q8_0,
        Precision::Q4_0,
        Precision::Q4K,
    ] {
        let m = quantbench::load(&source, Quantization::new(p), &device).unwrap();
        group.bench_function(BenchmarkId::from_parameter(p), |b| {
            b.iter_custom(|iters| decode_steps(&m, &device, iters))
        });
        drop(m);
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(1))
        .without_plots();
    targets = generation
}
criterion_main!(benches);
