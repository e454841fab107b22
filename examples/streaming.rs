//! How fast one product streams its weights from memory: the one-row products (a decode
//! step's) of quantbench's own kernels on Llama 3.2 1B's MLP shapes (8192 × 2048 and
//! 2048 × 8192) or GPT-2 small's, over 1 GiB of distinct matrices per pass so that every
//! weight comes from memory, as in a decode step. Prints GB/s of weights read (median
//! and best of 5 passes after one untimed pass) beside a STREAM-style read of this
//! machine's memory; compare runs of several processes, not single figures.
//!
//!     cargo run --release --example streaming -- f32          # f32 f16 bf16 q8_0 q4_0 q5_0 q4_k q6_k
//!     cargo run --release --example streaming -- q4_k gpt2    # GPT-2 small's shapes
//!     cargo run --release --example streaming -- f16 1b pages # 2 MB against 4 KB pages
//!     cargo run --release --example streaming -- f16 1b ggml=PATH  # against ggml's
//!
//! The matrices sit on 2 MB pages as the binary's weights do (`kernel::pages`;
//! `QUANTBENCH_HUGE_PAGES=0` puts them, and the memory read's buffers, on 4 KB pages).
//! With `pages`, two sets of the matrices, one on each, are read in turn in the same
//! process (10 passes each, alternating): a comparison the VM's swings between minutes
//! do not reach, as they do comparisons of separate runs.
//!
//! With `ggml=PATH` (dense formats; `scripts/peers/kernels.sh` builds PATH, the
//! `ggml-stream` of `scripts/peers/ggml-stream.c`, and runs this), ggml's products over
//! the same shapes, in a child process, take turns with quantbench's pass by pass (10
//! each, 50 ms apart): the ratio of each pair is quantbench's speed over ggml's.
//!
//! The dense formats run `kernel::dense::matmul_into`; the block formats the
//! interleaved layout's `kernel::repack::matmul_into` (CPUs with AVX2; the VNNI kernels
//! where the CPU has AVX-512 VNNI).

use std::time::Instant;

#[path = "common/timed_child.rs"]
mod timed_child;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use quantbench::kernel::dense::{self, Float};
use quantbench::kernel::repack::{self, Interleaved};

#[global_allocator]
static ALLOC: quantbench::kernel::pages::WeightPages = quantbench::kernel::pages::WeightPages;

/// What one pass reads: past any last-level cache.
const PASS_BYTES: usize = 1 << 30;

/// With `ggml=PATH`, the pause before each pass: both engines' pools spin for a while
/// after their work, and on a 2-core machine ggml's OpenMP spin took cycles from the
/// quantbench pass that followed it (f16 8192 × 2048: 0.83-0.85 of ggml's speed with no
/// pause, 0.95-1.03 with one).
const PAUSE: std::time::Duration = std::time::Duration::from_millis(50);

/// One product of a matrix (its bytes) with the fixed activation row, into the output.
type Product = Box<dyn Fn(&[u8], &mut [f32])>;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let format = args.first().map(String::as_str).unwrap_or("f32");
    let both_pages = args.iter().any(|a| a == "pages");
    let ggml_path = args.iter().find_map(|a| a.strip_prefix("ggml="));
    let shapes: &[(usize, usize)] = if args.get(1).map(String::as_str) == Some("gpt2") {
        &[(3072, 768), (768, 3072), (2304, 768)]
    } else {
        &[(8192, 2048), (2048, 8192)]
    };
    const FORMATS: [&str; 8] = ["f32", "f16", "bf16", "q8_0", "q4_0", "q5_0", "q4_k", "q6_k"];
    if !FORMATS.contains(&format) {
        eprintln!(
            "unknown format {format:?}: use one of {}",
            FORMATS.join(", ")
        );
        std::process::exit(2);
    }
    quantbench::kernel::configure_threads();
    if quantbench::kernel::level().is_none() {
        eprintln!("this CPU lacks AVX2: quantbench's kernels are not in use");
        std::process::exit(2);
    }
    let mut ggml = ggml_path.map(|path| {
        if !["f32", "f16", "bf16"].contains(&format) {
            eprintln!("ggml={path}: ggml-stream reads the dense formats only (f32, f16, bf16)");
            std::process::exit(2);
        }
        let list: Vec<String> = shapes.iter().map(|(n, k)| format!("{n}x{k}")).collect();
        let pages = if quantbench::kernel::pages::enabled() {
            "huge"
        } else {
            "small"
        };
        let threads = candle_core::utils::get_num_threads().to_string();
        println!(
            "ggml-stream: {} on {threads} threads, {pages} pages",
            list.join(", ")
        );
        // ggml-stream FORMAT SHAPES THREADS PAGES: one pass over shape I per request "I".
        let args = [format, &list.join(","), &threads, pages].map(String::from);
        timed_child::TimedChild::start(path, &args, "scripts/peers/kernels.sh")
    });
    let bw = quantbench::run::bandwidth::measure();
    println!(
        "memory read: {:.1} GB/s ({} threads)",
        bw.read_gbps, bw.threads
    );
    for (shape, &(n, k)) in shapes.iter().enumerate() {
        let w = Tensor::randn(0f32, 0.02, (n, k), &Device::Cpu).expect("weights");
        let x: Vec<f32> = (0..k).map(|i| ((i % 7) as f32 - 3.0) * 0.1).collect();
        let mut out = vec![0f32; n];
        let (bytes, product): (Vec<u8>, Product) = match format {
            "f32" | "f16" | "bf16" => {
                let (float, dtype) = match format {
                    "f32" => (Float::F32, candle_core::DType::F32),
                    "f16" => (Float::F16, candle_core::DType::F16),
                    _ => (Float::BF16, candle_core::DType::BF16),
                };
                let t = w.to_dtype(dtype).expect("convert");
                let mut bytes = Vec::new();
                t.flatten_all()
                    .expect("flatten")
                    .write_bytes(&mut bytes)
                    .expect("bytes");
                let x = x.clone();
                let f = move |m: &[u8], o: &mut [f32]| dense::matmul_into(float, m, n, k, &x, 1, o);
                (bytes, Box::new(f))
            }
            _ => {
                let dtype = match format {
                    "q8_0" => GgmlDType::Q8_0,
                    "q4_0" => GgmlDType::Q4_0,
                    "q5_0" => GgmlDType::Q5_0,
                    "q4_k" => GgmlDType::Q4K,
                    _ => GgmlDType::Q6K,
                };
                let q = QTensor::quantize(&w, dtype).expect("quantize");
                let packed = Interleaved::from_qtensor(&q).expect("interleaved layout (AVX2)");
                let kind = packed.kind();
                let x = x.clone();
                let scratch = std::cell::RefCell::new(quantbench::kernel::Scratch::default());
                let f = move |m: &[u8], o: &mut [f32]| {
                    repack::matmul_into(kind, m, n, k, &x, 1, &mut scratch.borrow_mut(), o)
                };
                (packed.raw().to_vec(), Box::new(f))
            }
        };
        let count = PASS_BYTES.div_ceil(bytes.len()).max(4);
        let pages = quantbench::kernel::pages::loading();
        let matrices: Vec<Vec<u8>> = (0..count).map(|_| bytes.clone()).collect();
        drop(pages);
        // The same matrices on the system allocator's 4 KB pages (outside the scope).
        let on_4k: Vec<Vec<u8>> = if both_pages {
            (0..count).map(|_| bytes.clone()).collect()
        } else {
            Vec::new()
        };
        let pass = |set: &[Vec<u8>], out: &mut [f32]| {
            let t = Instant::now();
            for m in set {
                product(m, out);
            }
            t.elapsed().as_secs_f64()
        };
        let total = (bytes.len() * count) as f64;
        let report = |what: &str, times: Vec<f64>| {
            let best = times.iter().copied().fold(f64::MAX, f64::min);
            println!(
                "{format} {n}x{k}{what}: median {:.1} GB/s, best {:.1} GB/s ({count} matrices of {:.1} MB)",
                total / quantbench::analysis::stats::median(&times) / 1e9,
                total / best / 1e9,
                bytes.len() as f64 / 1e6
            );
        };
        pass(&matrices, &mut out);
        if let Some(g) = ggml.as_mut() {
            // Pass by pass in turn: quantbench's, then ggml's, over the same shapes.
            let (mut ours, mut theirs) = (Vec::new(), Vec::new());
            for _ in 0..10 {
                std::thread::sleep(PAUSE);
                ours.push(pass(&matrices, &mut out));
                std::thread::sleep(PAUSE);
                theirs.push(g.seconds(&shape.to_string()));
            }
            let ratios: Vec<f64> = ours.iter().zip(&theirs).map(|(o, t)| t / o).collect();
            report(", quantbench", ours);
            report(", ggml", theirs);
            print_ratios("quantbench / ggml speed", ratios);
        } else if both_pages {
            pass(&on_4k, &mut out);
            let (mut huge, mut small) = (Vec::new(), Vec::new());
            for _ in 0..10 {
                huge.push(pass(&matrices, &mut out));
                small.push(pass(&on_4k, &mut out));
            }
            let ratios: Vec<f64> = huge.iter().zip(&small).map(|(h, b)| b / h).collect();
            report(", 2 MB pages", huge);
            report(", 4 KB pages", small);
            print_ratios("2 MB / 4 KB", ratios);
        } else {
            report("", (0..5).map(|_| pass(&matrices, &mut out)).collect());
        }
    }
}

/// The median and range of pass-by-pass ratios, under `what`.
fn print_ratios(what: &str, r: Vec<f64>) {
    let (lo, hi) = r
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
    println!(
        "  {what}, pass by pass: median {:.3}, range {lo:.3}-{hi:.3}",
        quantbench::analysis::stats::median(&r)
    );
}
