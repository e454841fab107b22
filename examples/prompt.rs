//! How fast one prompt product runs against this CPU's arithmetic peak: the products
//! of a 512-token prompt (512 activation rows) with Llama 3.2 1B's matrices (or GPT-2
//! small's), through `kernel::dense::matmul_into` (f16: quantbench's own prompt kernel
//! on activations rounded to f16, the rounding included; f32: the packed GEMM; bf16: `vdpbf16ps` tiles where the CPU has AVX512_BF16, else the
//! GEMM on activations rounded to bf16), three distinct matrices of each shape in turn.
//! Prints GFLOP/s per shape (median of 5 passes after one untimed pass) and overall,
//! beside the peak of fused multiply-adds measured on all threads (12 independent 8-lane
//! FMA chains per thread; `vdpbf16ps` does twice an FMA's work per lane, so bf16 can pass
//! it). Compare runs of several processes, not single figures.
//!
//!     cargo run --release --example prompt -- f16          # f32 f16 bf16
//!     cargo run --release --example prompt -- f16 gpt2     # GPT-2 small's shapes

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use quantbench::kernel::dense::{self, Float};

/// Activation rows: a 512-token prompt.
const ROWS: usize = 512;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let format = args.first().map(String::as_str).unwrap_or("f16");
    let (float, dtype) = match format {
        "f32" => (Float::F32, DType::F32),
        "f16" => (Float::F16, DType::F16),
        "bf16" => (Float::BF16, DType::BF16),
        _ => {
            eprintln!("unknown format {format:?}: use one of f32, f16, bf16");
            std::process::exit(2);
        }
    };
    let shapes: &[(usize, usize)] = if args.get(1).map(String::as_str) == Some("gpt2") {
        &[(3072, 768), (768, 3072), (2304, 768)]
    } else {
        &[(8192, 2048), (2048, 8192), (2048, 2048), (512, 2048)]
    };
    quantbench::kernel::configure_threads();
    if !quantbench::kernel::avx2_supported() {
        eprintln!("this CPU lacks AVX2: quantbench's kernels are not in use");
        std::process::exit(2);
    }
    let threads = candle_core::utils::get_num_threads();
    println!(
        "FMA peak: {:.1} GFLOP/s ({threads} threads)",
        fma_peak(threads)
    );
    let (mut flops, mut seconds) = (0.0, 0.0);
    for &(n, k) in shapes {
        let matrices: Vec<Vec<u8>> = (0..3).map(|_| weights(n, k, dtype)).collect();
        let x: Vec<f32> = (0..ROWS * k)
            .map(|i| ((i % 13) as f32 - 6.0) * 0.05)
            .collect();
        let mut out = vec![0f32; ROWS * n];
        let mut pass = || {
            let t = Instant::now();
            for w in &matrices {
                dense::matmul_into(float, w, n, k, &x, ROWS, &mut out);
            }
            t.elapsed().as_secs_f64() / matrices.len() as f64
        };
        pass();
        let mut times: Vec<f64> = (0..5).map(|_| pass()).collect();
        times.sort_by(f64::total_cmp);
        let flop = 2.0 * (ROWS * n * k) as f64;
        println!(
            "{format} {n}x{k}, {ROWS} rows: {:.2} ms, {:.1} GFLOP/s (best {:.1})",
            times[2] * 1e3,
            flop / times[2] / 1e9,
            flop / times[0] / 1e9
        );
        flops += flop;
        seconds += times[2];
    }
    println!("{format} overall: {:.1} GFLOP/s", flops / seconds / 1e9);
}

/// An `n × k` matrix of random weights stored as `dtype`, as bytes.
fn weights(n: usize, k: usize, dtype: DType) -> Vec<u8> {
    let w = Tensor::randn(0f32, 0.02, (n, k), &Device::Cpu)
        .and_then(|w| w.to_dtype(dtype))
        .and_then(|w| w.flatten_all())
        .expect("random weights");
    match dtype {
        DType::F32 => w
            .to_vec1::<f32>()
            .map(|v| v.iter().flat_map(|e| e.to_le_bytes()).collect()),
        DType::F16 => w
            .to_vec1::<half::f16>()
            .map(|v| v.iter().flat_map(|e| e.to_le_bytes()).collect()),
        _ => w
            .to_vec1::<half::bf16>()
            .map(|v| v.iter().flat_map(|e| e.to_le_bytes()).collect()),
    }
    .expect("weight bytes")
}

/// GFLOP/s of 8-lane fused multiply-adds on `threads` threads at once, 12 independent
/// chains each (enough to cover the FMA latency on two pipes).
fn fma_peak(threads: usize) -> f64 {
    const ITERS: usize = 50_000_000;
    let t = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                // SAFETY: AVX2 and FMA were checked by the caller.
                std::hint::black_box(unsafe { fma_chains(ITERS) })
            });
        }
    });
    (threads * ITERS * 12 * 16) as f64 / t.elapsed().as_secs_f64() / 1e9
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_chains(iters: usize) -> f32 {
    use std::arch::x86_64::*;
    let (b, c) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(1e-7));
    let mut a = [_mm256_set1_ps(1.0); 12];
    for _ in 0..iters {
        for v in a.iter_mut() {
            *v = _mm256_fmadd_ps(*v, b, c);
        }
    }
    let mut sum = 0.0;
    for v in a {
        sum += _mm256_cvtss_f32(v);
    }
    sum
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn fma_chains(_iters: usize) -> f32 {
    0.0
}
