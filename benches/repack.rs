//! Criterion bench of q4_0's, q5_0's, q8_0's, q4_k's and q6_k's two AVX2 kernels on the same weights:
//! block by block as stored (`kernel::matmul_into` / `kernel::kquant::matmul_into`,
//! 4 × 2 tiles) against 8 rows interleaved
//! (`kernel::repack`), at decode (1 activation row) and a prompt chunk (64 rows), on
//! GPT-2 small's MLP shapes and Llama-3.2-1B's. The matrices stay in the last-level cache
//! between iterations: this times instructions, not memory. Throughput in multiply-adds
//! per second.
//!
//!     cargo bench --bench repack

use std::time::Duration;

use candle_core::quantized::QTensor;
use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use quantbench::kernel::kquant::{self, KActivations};
use quantbench::kernel::repack;
use quantbench::kernel::{self, Activations, Scratch};

fn kernels(c: &mut Criterion) {
    kernel::configure_threads();
    if !kernel::avx2_supported() {
        eprintln!("this CPU lacks AVX2: nothing to bench");
        return;
    }
    for kind in repack::INTERLEAVED {
        for (name, k, n) in [
            ("gpt2 mlp.c_fc", 768, 3072),
            ("gpt2 mlp.c_proj", 3072, 768),
            ("llama-1b mlp.up", 2048, 8192),
        ] {
            let w = Tensor::randn(0f32, 0.02, (n, k), &Device::Cpu).unwrap();
            let stored = QTensor::quantize(&w, kind.dtype())
                .unwrap()
                .data()
                .unwrap()
                .to_vec();
            let packed = repack::repack(kind, &stored, n, k);
            for rows in [1, 64] {
                let x: Vec<f32> = Tensor::randn(0f32, 1.0, (rows, k), &Device::Cpu)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap();
                let mut out = vec![0f32; rows * n];
                let mut acts = Activations::default();
                let mut kacts = KActivations::default();
                let mut scratch = Scratch::default();
                let mut group =
                    c.benchmark_group(format!("{} {name} {k}x{n} rows {rows}", kind.lower()));
                group.throughput(Throughput::Elements((rows * k * n) as u64));
                group.bench_function(BenchmarkId::from_parameter("stored"), |b| {
                    b.iter(|| match kind.block32() {
                        Some(f) => {
                            kernel::matmul_into(f, &stored, n, k, &x, rows, &mut acts, &mut out)
                        }
                        None => kquant::matmul_into(
                            kind.kquant().unwrap(),
                            &stored,
                            n,
                            k,
                            &x,
                            rows,
                            &mut kacts,
                            &mut out,
                        ),
                    })
                });
                group.bench_function(BenchmarkId::from_parameter("interleaved"), |b| {
                    b.iter(|| {
                        repack::matmul_into(kind, &packed, n, k, &x, rows, &mut scratch, &mut out)
                    })
                });
                group.finish();
            }
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .without_plots();
    targets = kernels
}
criterion_main!(benches);
