//! Criterion benches of the products a GPT-2 small forward pass is made of: every linear
//! layer's shape (inputs x outputs), at every precision quantbench stores, as a
//! matrix-vector product (one token: decode) and a 16-row matrix-matrix product (a
//! prefill chunk), through the engine's own `Matrix::forward` (quantbench's kernels
//! where they apply, candle's elsewhere; `QUANTBENCH_KERNELS=candle` to bench candle's
//! alone). Throughput is in multiply-adds ("elements") per second.
//!
//!     cargo bench --bench products                              # everything (~4 min)
//!     cargo bench --bench products -- 'matvec/mlp.c_fc'         # one shape
//!     cargo bench --bench products -- --save-baseline before    # save a baseline
//!     cargo bench --bench products -- --baseline before         # compare with it
//!
//! Clocks are read through `clock::synced_now`, so a CUDA build times finished GPU work.

use std::time::Duration;

use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use quantbench::model::gpt2::Matrix;
use quantbench::model::source::weights::store;
use quantbench::precision::Precision;
use quantbench::run::clock::{synced_now, synced_seconds_since};
use quantbench::scenario::DeviceChoice;

/// GPT-2 small's linear layers: (name, inputs, outputs).
const SHAPES: [(&str, usize, usize); 5] = [
    ("attn.c_attn", 768, 2304),
    ("attn.c_proj", 768, 768),
    ("mlp.c_fc", 768, 3072),
    ("mlp.c_proj", 3072, 768),
    ("lm_head", 768, 50257),
];

/// Rows of the matrix-matrix product.
const PREFILL_ROWS: usize = 16;

fn products(c: &mut Criterion) {
    quantbench::kernel::configure_threads();
    let (device, _) = DeviceChoice::Auto.open().expect("opening the device");
    for (name, k, n) in SHAPES {
        // GPT-2's initialisation: N(0, 0.02).
        let w = Tensor::randn(0f32, 0.02, (n, k), &Device::Cpu).unwrap();
        let stored: Vec<(Precision, Matrix)> = Precision::ALL
            .iter()
            .map(|&p| (p, store(&w, p.for_row_len(k), &device, None).unwrap()))
            .collect();
        for (label, rows) in [("matvec", 1), ("matmul16", PREFILL_ROWS)] {
            let x = Tensor::randn(0f32, 1.0, (rows, k), &device).unwrap();
            let mut group = c.benchmark_group(format!("{label}/{name} {k}x{n}"));
            group.throughput(Throughput::Elements((rows * k * n) as u64));
            for (p, m) in &stored {
                group.bench_function(BenchmarkId::from_parameter(p), |b| {
                    b.iter_custom(|iters| {
                        let start = synced_now(&device).unwrap();
                        for _ in 0..iters {
                            std::hint::black_box(m.forward(&x).unwrap());
                        }
                        Duration::from_secs_f64(synced_seconds_since(&device, start).unwrap())
                    })
                });
            }
            group.finish();
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(700))
        .without_plots();
    targets = products
}
criterion_main!(benches);
