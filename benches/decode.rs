//! Criterion benches of the engine quantbench measures with: one decode step of
//! synthetic:gpt2 per precision, and the matrix-vector product of GPT-2 small's widest
//! linear layer per precision. Rates are reported as tokens or elements per second.
//!
//!     cargo bench --bench decode                          # run
//!     cargo bench --bench decode -- --save-baseline main  # save a baseline
//!     cargo bench --bench decode -- --baseline main       # compare against it

use std::time::Duration;

use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use quantbench::model::gpt2::Cache;
use quantbench::precision::{Precision, Quantization, Storage};

const PRECISIONS: [Precision; 3] = [Precision::F32, Precision::Q8_0, Precision::Q4_0];

fn decode_step(c: &mut Criterion) {
    let source = quantbench::resolve(&"synthetic:gpt2".parse().unwrap()).unwrap();
    let mut group = c.benchmark_group("decode_step/synthetic:gpt2");
    group.throughput(Throughput::Elements(1));
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(4));
    for p in PRECISIONS {
        let m = quantbench::load(&source, Quantization::new(p), &Device::Cpu).unwrap();
        let prompt = [7454u32, 2402, 257, 640];
        group.bench_function(BenchmarkId::from_parameter(p), |b| {
            b.iter_batched(
                || {
                    // A cache holding the prompt, as after the prefill.
                    let mut cache = Cache::new(m.config(), prompt.len() + 1);
                    m.model.forward_last(&prompt, &mut cache).unwrap();
                    cache
                },
                |mut cache| {
                    let logits = m.model.forward_last(&[11], &mut cache).unwrap();
                    // Reading the argmax back synchronises the device.
                    logits.argmax(0).unwrap().to_scalar::<u32>().unwrap()
                },
                criterion::BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

fn matvec(c: &mut Criterion) {
    // mlp.c_fc of GPT-2 small: 768 inputs, 3072 outputs.
    let (k, n) = (768, 3072);
    let w = Tensor::randn(0f32, 0.02, (n, k), &Device::Cpu).unwrap();
    let x = Tensor::randn(0f32, 1.0, (1, k), &Device::Cpu).unwrap();
    let mut group = c.benchmark_group("matvec/768x3072");
    group.throughput(Throughput::Elements((k * n) as u64));
    group
        .sample_size(50)
        .measurement_time(Duration::from_secs(2));
    for p in PRECISIONS {
        let mm = match p.storage() {
            Storage::Float(_) => QMatMul::Tensor(w.clone()),
            Storage::Blocks(q) => QMatMul::from_qtensor(QTensor::quantize(&w, q).unwrap()).unwrap(),
        };
        group.bench_function(BenchmarkId::from_parameter(p), |b| {
            b.iter(|| mm.forward(&x).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, decode_step, matvec);
criterion_main!(benches);
