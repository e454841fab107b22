//! quantbench's own CPU kernels for products with quantized weights, behind candle's
//! custom-op interface.
//!
//! Why: candle 0.11 multiplies a `q4_0`/`q4_1`/`q5_x` matrix by unpacking each weight
//! block once per (activation row, weight row) pair with AVX2, and has an AVX-512 VNNI
//! kernel only for `q8_0` and the k-quants — for which it keeps a second, repacked copy of
//! the weights. On GPT-2 small that made `q4_0` slower than `q8_0` at decode and 2.6x
//! slower than f32 over a 1,024-token window. These kernels read candle's blocks in
//! place (no copy), round the activations to 8 bits the way candle does (`q8_0` blocks,
//! so the numbers match candle's to rounding), and multiply 4 weight rows by 4
//! activation rows per step with `vpdpbusd`, on candle's own thread pool. On AVX2 CPUs
//! the linear layers' q4_0, q5_0, q8_0, q4_k and q6_k weights are instead rearranged once at
//! load into 8-row interleaved blocks of the same bytes ([`repack`]).
//!
//! They run on x86-64 CPUs with AVX-512 VNNI (Zen 4, Ice Lake and later), and in an
//! 8-lane AVX2 version (`vpmaddubsw`, no VNNI) on every x86-64 since Haswell / Zen 1
//! ([`Level`]). Elsewhere, on other devices, for other formats, or with
//! `QUANTBENCH_KERNELS=candle`, candle's kernels run instead; [`describe`] says which,
//! and results record it.

pub mod activations;
pub mod attention;
pub mod blocks;
pub mod bnb4;
pub mod dense;
pub mod gelu;
pub mod int8;
pub mod iq3_s;
pub mod iq4_xs;
pub mod kquant;
pub mod lut4;
pub mod pages;
pub mod repack;
pub mod silu;
mod tile;
pub mod vexp;

use std::sync::{Arc, OnceLock};

use candle_core::quantized::QTensor;
use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};

pub use activations::Activations;
pub use blocks::GgmlType;

use activations::BLOCK;

/// The environment variable that chooses the kernels: `quantbench` (default) or `candle`.
pub const ENV: &str = "QUANTBENCH_KERNELS";

/// Which kernels multiply by quantized weights on the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernels {
    /// quantbench's, for the formats in [`GgmlType`]; candle's for the rest.
    Quantbench,
    /// candle's for every format.
    Candle,
}

/// The instruction sets the kernels here are written for, widest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// AVX-512 F/BW/VL + VNNI (Zen 4, Ice Lake and later): 16 lanes, `vpdpbusd`.
    Avx512,
    /// AVX2 + FMA + F16C (every x86-64 since Haswell and Zen 1): 8 lanes,
    /// `vpmaddubsw` + `vpmaddwd` for the 8-bit products.
    Avx2,
}

impl Level {
    pub const ALL: [Level; 2] = [Level::Avx512, Level::Avx2];

    /// Whether this CPU has the level's instructions.
    pub fn supported(self) -> bool {
        match self {
            Level::Avx512 => simd_supported(),
            Level::Avx2 => avx2_supported(),
        }
    }
}

/// The environment variable that caps the instruction set of quantbench's kernels:
/// `avx2` runs the AVX2 kernels on an AVX-512 CPU (to compare the two on one machine);
/// `native` (or unset) the widest this CPU has.
pub const LEVEL_ENV: &str = "QUANTBENCH_LEVEL";

/// Parse a value of [`LEVEL_ENV`]: the widest level allowed (`None`: no cap); the error
/// names the valid values.
pub fn parse_level(value: &str) -> Result<Option<Level>, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "" | "native" => Ok(None),
        "avx2" => Ok(Some(Level::Avx2)),
        "avx512" => Ok(Some(Level::Avx512)),
        other => Err(format!(
            "{LEVEL_ENV}={other:?} is not an instruction set: use \"native\", \"avx512\" or \"avx2\""
        )),
    }
}

/// The widest level this CPU supports, if any, within [`LEVEL_ENV`]'s cap (an invalid
/// value is rejected by the CLI before anything runs, and means no cap here).
pub fn level() -> Option<Level> {
    static LEVEL: OnceLock<Option<Level>> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        let cap = std::env::var(LEVEL_ENV)
            .ok()
            .and_then(|v| parse_level(&v).ok())
            .flatten();
        let allowed = |l: &Level| match cap {
            Some(Level::Avx2) => *l == Level::Avx2,
            _ => true,
        };
        Level::ALL.into_iter().find(|l| allowed(l) && l.supported())
    })
}

/// Whether this CPU has AVX2, FMA and F16C (the narrower kernels' needs).
pub fn avx2_supported() -> bool {
    static SUPPORTED: OnceLock<bool> = OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
                && std::arch::is_x86_feature_detected!("f16c")
        }
        #[cfg(not(target_arch = "x86_64"))]
        false
    })
}

/// Whether this CPU runs the AVX-512 VNNI kernels.
pub fn simd_supported() -> bool {
    static SUPPORTED: OnceLock<bool> = OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
                && std::arch::is_x86_feature_detected!("f16c")
                && std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512vl")
                && std::arch::is_x86_feature_detected!("avx512vnni")
        }
        #[cfg(not(target_arch = "x86_64"))]
        false
    })
}

/// Settle candle's CPU threading for the process; call first thing in `main`, before any
/// thread starts (it sets an environment variable).
///
/// candle reads its thread count on every float matmul, and where it finds no
/// `RAYON_NUM_THREADS` it re-parses `/proc/cpuinfo` each time (num_cpus): tens of
/// microseconds per attention product, 24 times a token. The count is fixed here once.
/// (Longer spinning of candle's pool workers between ops was tried and measured: no
/// decode gain beyond run-to-run noise, and 15-20% slower quality passes, whose parallel
/// KL work then shares the cores with a spinning worker. candle's default stays.)
pub fn configure_threads() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let n = candle_core::utils::get_num_threads();
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
}

/// Parse a value of [`ENV`]; the error names the valid values.
pub fn parse(value: &str) -> Result<Kernels, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "" | "quantbench" => Ok(Kernels::Quantbench),
        "candle" => Ok(Kernels::Candle),
        other => Err(format!(
            "{ENV}={other:?} is not a kernel choice: use \"quantbench\" or \"candle\""
        )),
    }
}

/// The kernels this process uses: [`ENV`] if set (an invalid value is rejected by the
/// CLI before anything runs, and means the default here), and quantbench's only where
/// this CPU supports them.
pub fn active() -> Kernels {
    static ACTIVE: OnceLock<Kernels> = OnceLock::new();
    *ACTIVE.get_or_init(|| {
        let asked = std::env::var(ENV)
            .ok()
            .and_then(|v| parse(&v).ok())
            .unwrap_or(Kernels::Quantbench);
        if asked == Kernels::Quantbench && level().is_some() {
            Kernels::Quantbench
        } else {
            Kernels::Candle
        }
    })
}

/// One line for results: which kernels multiply by quantized weights, and why.
pub fn describe() -> String {
    let ggml = match (active(), level()) {
        (Kernels::Quantbench, Some(Level::Avx512)) => {
            let (bf16, gemm) = if dense::bf16_dot_in_use() {
                ("; bf16 prompts on avx512_bf16", "f32 prompts")
            } else {
                ("", "f32 bf16 prompts")
            };
            format!("quantbench avx512 vnni (q4_0, q5_0, q8_0, q4_k and q6_k matrices that are multiplied repacked at load into 8-row interleaved blocks, the same bytes; q4_1 q5_1 block by block; f32 f16 bf16 decode{bf16}) and avx2 (rows past the last group of 8, q4_k q6_k tables; f16 prompts); {gemm} on the gemm crate; f16 and bf16 with activations rounded to f16 and bf16; candle for the rest")
        }
        (Kernels::Quantbench, _) => {
            "quantbench avx2 (q4_0 q4_1 q5_0 q5_1 q8_0 q4_k q6_k; f32 f16 bf16, f16 and bf16 with activations rounded to f16 and bf16; q4_0, q5_0, q8_0, q4_k and q6_k matrices that are multiplied repacked at load into 8-row interleaved blocks, the same bytes); candle for the rest".to_string()
        }
        (Kernels::Candle, Some(_)) => format!("candle ({ENV}=candle)"),
        (Kernels::Candle, None) => "candle (this CPU lacks AVX2)".into(),
    };
    let library = if bnb4::cpu_supported() && !bnb4::candle_chosen() {
        "quantbench avx2"
    } else {
        "portable"
    };
    let capped = if level() == Some(Level::Avx2) && simd_supported() {
        format!(" ({LEVEL_ENV}=avx2 on an AVX-512 CPU)")
    } else {
        String::new()
    };
    format!("{ggml}{capped}; bitsandbytes and PyTorch formats: {library}")
}

/// `x @ w^T` for `w` (`n × k`, blocks of `format`, as stored) and `x` (`m × k`),
/// returning `m × n`. Uses the SIMD kernels when the CPU has them, else the portable
/// reference; both round the activations the same way.
pub fn matmul(format: GgmlType, w: &[u8], n: usize, k: usize, x: &[f32], m: usize) -> Vec<f32> {
    let mut out = vec![0f32; m * n];
    matmul_into(format, w, n, k, x, m, &mut Activations::default(), &mut out);
    out
}

/// [`matmul`] into `out` (`m × n`), rounding the activations into `acts`' buffers: no
/// allocation once `acts` has held activations of this size.
#[allow(clippy::too_many_arguments)]
pub fn matmul_into(
    format: GgmlType,
    w: &[u8],
    n: usize,
    k: usize,
    x: &[f32],
    m: usize,
    acts: &mut Activations,
    out: &mut [f32],
) {
    assert_eq!(k % BLOCK, 0, "k = {k} is not a multiple of {BLOCK}");
    assert_eq!(
        w.len(),
        n * (k / BLOCK) * format.block_bytes(),
        "weights are not {n} x {k} of {format:?}"
    );
    assert_eq!(out.len(), m * n, "the output is not {m} x {n}");
    acts.quantize_into(x, m, k);
    #[cfg(target_arch = "x86_64")]
    if let Some(level) = level() {
        return simd_matmul(level, format, w, n, acts, out);
    }
    out.copy_from_slice(&reference_matmul(format, w, n, acts));
}

/// The portable product: the definition the SIMD kernels are tested against.
pub fn reference_matmul(format: GgmlType, w: &[u8], n: usize, acts: &Activations) -> Vec<f32> {
    let nb = acts.blocks_per_row();
    let bytes = format.block_bytes();
    let off = format.offset();
    let mut out = vec![0f32; acts.rows * n];
    for c in 0..acts.rows {
        for r in 0..n {
            let mut sum = 0f32;
            for b in 0..nb {
                let start = (r * nb + b) * bytes;
                let (q, d, m) = format.decode_block(&w[start..start + bytes]);
                let a = &acts.qs[c * acts.k + b * BLOCK..][..BLOCK];
                let dot: i32 = q
                    .iter()
                    .zip(a)
                    .map(|(&q, &a)| (q as i32 - off) * a as i32)
                    .sum();
                sum += d * acts.scales[c * nb + b] * dot as f32 + m * acts.sums[c * nb + b];
            }
            out[c * n + r] = sum;
        }
    }
    out
}

#[cfg(target_arch = "x86_64")]
fn simd_matmul(
    level: Level,
    format: GgmlType,
    w: &[u8],
    n: usize,
    acts: &Activations,
    out: &mut [f32],
) {
    assert!(level.supported(), "this CPU lacks {level:?}");
    let ops = tile::Operands {
        weights: w.as_ptr(),
        row_bytes: acts.blocks_per_row() * format.block_bytes(),
        acts,
        out: out.as_mut_ptr(),
        n,
    };
    let ops_addr = &ops as *const tile::Operands as usize;
    for_each_tile(n, acts.rows, |w, a| {
        // SAFETY: `ops` outlives the pool call; tiles write disjoint outputs; the CPU
        // features were checked by simd_supported().
        let ops = unsafe { &*(ops_addr as *const tile::Operands) };
        unsafe {
            match (level, format) {
                (Level::Avx512, GgmlType::Q4_0) => {
                    tile::rows::<{ GgmlType::Q4_0 as u8 }>(ops, w, a)
                }
                (Level::Avx512, GgmlType::Q4_1) => {
                    tile::rows::<{ GgmlType::Q4_1 as u8 }>(ops, w, a)
                }
                (Level::Avx512, GgmlType::Q5_0) => {
                    tile::rows::<{ GgmlType::Q5_0 as u8 }>(ops, w, a)
                }
                (Level::Avx512, GgmlType::Q5_1) => {
                    tile::rows::<{ GgmlType::Q5_1 as u8 }>(ops, w, a)
                }
                (Level::Avx512, GgmlType::Q8_0) => {
                    tile::rows::<{ GgmlType::Q8_0 as u8 }>(ops, w, a)
                }
                (Level::Avx2, GgmlType::Q4_0) => {
                    tile::avx2::rows::<{ GgmlType::Q4_0 as u8 }>(ops, w, a)
                }
                (Level::Avx2, GgmlType::Q4_1) => {
                    tile::avx2::rows::<{ GgmlType::Q4_1 as u8 }>(ops, w, a)
                }
                (Level::Avx2, GgmlType::Q5_0) => {
                    tile::avx2::rows::<{ GgmlType::Q5_0 as u8 }>(ops, w, a)
                }
                (Level::Avx2, GgmlType::Q5_1) => {
                    tile::avx2::rows::<{ GgmlType::Q5_1 as u8 }>(ops, w, a)
                }
                (Level::Avx2, GgmlType::Q8_0) => {
                    tile::avx2::rows::<{ GgmlType::Q8_0 as u8 }>(ops, w, a)
                }
                _ => unreachable!(),
            }
        }
    });
}

/// Weight rows `[r0, r1)` of `w` (blocks of `format` as stored, one row after another)
/// against activation rows `[c0, c1)` of `acts`, each output at `out[c · n + r]`: the
/// AVX2 tile kernel on one unit of work, for callers that share out the units
/// themselves (the interleaved layout's rows past its last group, `repack.rs`).
///
/// # Safety
/// The CPU has AVX2, FMA and F16C; `w` holds the rows, `acts` the columns, and no other
/// thread touches those outputs of `out` meanwhile.
#[cfg(target_arch = "x86_64")]
pub(crate) unsafe fn avx2_block_rows(
    format: GgmlType,
    w: *const u8,
    acts: &Activations,
    out: *mut f32,
    n: usize,
    rows: (usize, usize),
    cols: (usize, usize),
) {
    let ops = tile::Operands {
        weights: w,
        row_bytes: acts.blocks_per_row() * format.block_bytes(),
        acts,
        out,
        n,
    };
    match format {
        GgmlType::Q4_0 => tile::avx2::rows::<{ GgmlType::Q4_0 as u8 }>(&ops, rows, cols),
        GgmlType::Q4_1 => tile::avx2::rows::<{ GgmlType::Q4_1 as u8 }>(&ops, rows, cols),
        GgmlType::Q5_0 => tile::avx2::rows::<{ GgmlType::Q5_0 as u8 }>(&ops, rows, cols),
        GgmlType::Q5_1 => tile::avx2::rows::<{ GgmlType::Q5_1 as u8 }>(&ops, rows, cols),
        GgmlType::Q8_0 => tile::avx2::rows::<{ GgmlType::Q8_0 as u8 }>(&ops, rows, cols),
        _ => unreachable!(),
    }
}

/// Split an `m × n` output into tiles (weight rows × activation rows) and run `f` on
/// each, on candle's thread pool. One activation row (decode): 16 weight rows a tile, so
/// both threads stay busy on small matrices. More: 64 × 64 tiles, so a tile's weights
/// and activations stay in the core's cache while it works on them.
fn for_each_tile(n: usize, m: usize, f: impl Fn((usize, usize), (usize, usize)) + Sync) {
    let (wt, at) = if m == 1 { (16, 1) } else { (64, 64) };
    let (w_tiles, a_tiles) = (n.div_ceil(wt), m.div_ceil(at));
    candle_core::utils::barrier_pool().execute_chunked(w_tiles * a_tiles, |range| {
        for item in range {
            let (wi, ai) = (item % w_tiles, item / w_tiles);
            f(
                (wi * wt, n.min(wi * wt + wt)),
                (ai * at, m.min(ai * at + at)),
            );
        }
    });
}

/// A product with a quantized matrix, plus an optional bias, as a candle op on the
/// activations.
pub struct QuantMatmul {
    weights: Arc<QTensor>,
    format: Blocks,
    bias: Option<Arc<Vec<f32>>>,
}

/// The block formats with a kernel here: the 32-element ones and the k-quants.
#[derive(Debug, Clone, Copy)]
enum Blocks {
    Small(GgmlType),
    K(GgmlType),
}

impl QuantMatmul {
    /// The op for `weights`, when these kernels are active and cover its format.
    pub fn for_weights(weights: &Arc<QTensor>) -> Option<QuantMatmul> {
        if active() != Kernels::Quantbench || !weights.device().is_cpu() {
            return None;
        }
        let dtype = weights.dtype();
        let format = match (
            crate::kernel::blocks::block32_of(dtype),
            kquant::kquant_of(dtype),
        ) {
            (Some(f), _) => Blocks::Small(f),
            // The k-quant kernels are AVX2 (AVX-512 CPUs run them too: candle's keep a
            // second, repacked copy of the weights).
            (None, Some(f)) if avx2_supported() => Blocks::K(f),
            _ => return None,
        };
        Some(QuantMatmul {
            format,
            weights: weights.clone(),
            bias: None,
        })
    }

    /// Add `bias` (one value per output) to every row of the product.
    pub fn with_bias(mut self, bias: Arc<Vec<f32>>) -> candle_core::Result<QuantMatmul> {
        check_bias(&bias, self.weights.shape().dims2()?.0)?;
        self.bias = Some(bias);
        Ok(self)
    }

    /// `xs @ weights^T` (`xs` f32, any leading dimensions).
    pub fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        xs.contiguous()?.apply_op1_no_bwd(self)
    }

    /// `x @ weights^T` (+ the bias) for `x`, `m` rows of f32, into `out` (`m` rows of
    /// the weights' row count), rounding the activations in `scratch`: no allocation.
    pub fn forward_into(
        &self,
        x: &[f32],
        m: usize,
        out: &mut [f32],
        scratch: &mut Scratch,
    ) -> candle_core::Result<()> {
        let (n, k) = self.weights.shape().dims2()?;
        check_operands(x, m, k, out, n)?;
        let data = self.weights.data()?;
        match self.format {
            Blocks::Small(f) => matmul_into(f, &data, n, k, x, m, &mut scratch.acts, out),
            Blocks::K(f) => kquant::matmul_into(f, &data, n, k, x, m, &mut scratch.kacts, out),
        }
        add_bias(out, self.bias.as_ref());
        Ok(())
    }
}

/// Runs `f` over the units `0..units` of a product's activations, shared out on candle's
/// pool when there are `rows` ≥ 4 activation rows (a prompt); a decode step's row stays
/// on this thread, where a hand-off would cost more than it saves.
pub(crate) fn per_unit(rows: usize, units: usize, f: impl Fn(std::ops::Range<usize>) + Sync) {
    if rows >= 4 {
        candle_core::utils::barrier_pool().execute_chunked(units, f);
    } else {
        f(0..units);
    }
}

/// A buffer whose disjoint parts pool units write at once.
#[derive(Clone, Copy)]
pub(crate) struct Disjoint<T>(*mut T);

// SAFETY: units only write parts no other unit touches (the callers' contract, `part`).
unsafe impl<T: Send> Sync for Disjoint<T> {}

impl<T> Disjoint<T> {
    pub(crate) fn new(buf: &mut [T]) -> Disjoint<T> {
        Disjoint(buf.as_mut_ptr())
    }

    /// Elements `at .. at + len`.
    ///
    /// # Safety
    /// The range lies inside the buffer, which outlives the use, and no other unit
    /// reads or writes it meanwhile.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn part(&self, at: usize, len: usize) -> &mut [T] {
        std::slice::from_raw_parts_mut(self.0.add(at), len)
    }
}

/// Buffers a decode step's products reuse: the activations rounded for the 32-element
/// formats and for the k-quants. One per generation; grown to the largest product's.
#[derive(Debug, Default)]
pub struct Scratch {
    acts: Activations,
    kacts: kquant::KActivations,
    /// The activations' integer block sums (the interleaved q4_0 kernel's).
    sums: Vec<i32>,
}

fn check_operands(x: &[f32], m: usize, k: usize, out: &[f32], n: usize) -> candle_core::Result<()> {
    if x.len() != m * k || out.len() != m * n {
        candle_core::bail!(
            "a product of {m} x {k} activations into {m} x {n} outputs got {} inputs and {} outputs",
            x.len(),
            out.len()
        );
    }
    Ok(())
}

impl CustomOp1 for QuantMatmul {
    fn name(&self) -> &'static str {
        "quantbench-qmatmul"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, k) = self.weights.shape().dims2()?;
        let (x, mut dims) = activations(storage, layout, k)?;
        let m = x.len() / k;
        let mut out = vec![0f32; m * n];
        self.forward_into(x, m, &mut out, &mut Scratch::default())?;
        *dims.last_mut().expect("non-empty") = n;
        Ok((CpuStorage::F32(out), Shape::from(dims)))
    }
}

/// A product with float weights (f32, f16, bf16), plus an optional bias, as a candle op
/// on the activations: [`dense`]'s kernels.
pub struct DenseMatmul {
    weights: Tensor,
    format: dense::Float,
    bias: Option<Arc<Vec<f32>>>,
}

impl DenseMatmul {
    /// The op for `weights`, when these kernels are active and cover its dtype. (They
    /// beat candle's gemm at every row count measured: 1 to 1,024.)
    pub fn for_weights(weights: &Tensor) -> Option<DenseMatmul> {
        if active() != Kernels::Quantbench || !weights.device().is_cpu() || !weights.is_contiguous()
        {
            return None;
        }
        let format = dense::Float::of(weights.dtype())?;
        Some(DenseMatmul {
            weights: weights.clone(),
            format,
            bias: None,
        })
    }

    /// Add `bias` (one value per output) to every row of the product.
    pub fn with_bias(mut self, bias: Arc<Vec<f32>>) -> candle_core::Result<DenseMatmul> {
        check_bias(&bias, self.weights.dim(0)?)?;
        self.bias = Some(bias);
        Ok(self)
    }

    /// `xs @ weights^T` (`xs` f32, any leading dimensions).
    pub fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        xs.contiguous()?.apply_op1_no_bwd(self)
    }

    /// `x @ weights^T` (+ the bias) for `x`, `m` rows of f32, into `out` (`m` rows of
    /// the weights' row count): no allocation below [`dense::GEMM_ROWS`] rows (the GEMM
    /// path widens 16-bit panels into per-worker buffers).
    pub fn forward_into(&self, x: &[f32], m: usize, out: &mut [f32]) -> candle_core::Result<()> {
        let (n, k) = self.weights.dims2()?;
        check_operands(x, m, k, out, n)?;
        let (w_storage, w_layout) = self.weights.storage_and_layout();
        let candle_core::Storage::Cpu(w) = &*w_storage else {
            candle_core::bail!("dense weights are not on the CPU");
        };
        let (a, b) = w_layout
            .contiguous_offsets()
            .ok_or_else(|| candle_core::Error::Msg("weights are not contiguous".into()))?;
        // SAFETY: viewing initialised f32/f16/bf16 elements as their bytes.
        let bytes: &[u8] = unsafe {
            match w {
                CpuStorage::F32(v) => {
                    std::slice::from_raw_parts(v[a..b].as_ptr() as *const u8, (b - a) * 4)
                }
                CpuStorage::F16(v) => {
                    std::slice::from_raw_parts(v[a..b].as_ptr() as *const u8, (b - a) * 2)
                }
                CpuStorage::BF16(v) => {
                    std::slice::from_raw_parts(v[a..b].as_ptr() as *const u8, (b - a) * 2)
                }
                _ => candle_core::bail!("dense weights of dtype {:?}", self.weights.dtype()),
            }
        };
        dense::matmul_into(self.format, bytes, n, k, x, m, out);
        add_bias(out, self.bias.as_ref());
        Ok(())
    }
}

fn check_bias(bias: &[f32], n: usize) -> candle_core::Result<()> {
    if bias.len() != n {
        candle_core::bail!("a bias of {} for {n} outputs", bias.len());
    }
    Ok(())
}

fn add_bias(out: &mut [f32], bias: Option<&Arc<Vec<f32>>>) {
    if let Some(bias) = bias {
        for row in out.chunks_exact_mut(bias.len()) {
            row.iter_mut().zip(bias.iter()).for_each(|(o, b)| *o += b);
        }
    }
}

/// The f32 activations of a custom op's input, checked against `k` columns.
fn activations<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
    k: usize,
) -> candle_core::Result<(&'a [f32], Vec<usize>)> {
    let dims = layout.shape().dims();
    if dims.last() != Some(&k) {
        candle_core::bail!(
            "activations {:?} do not end in the weights' {k} columns",
            dims
        );
    }
    let (start, end) = layout
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg("activations are not contiguous".into()))?;
    Ok((&storage.as_slice::<f32>()?[start..end], dims.to_vec()))
}

impl CustomOp1 for DenseMatmul {
    fn name(&self) -> &'static str {
        "quantbench-dense-matmul"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, k) = self.weights.dims2()?;
        let (x, mut dims) = activations(storage, layout, k)?;
        let m = x.len() / k;
        let mut out = vec![0f32; m * n];
        self.forward_into(x, m, &mut out)?;
        *dims.last_mut().expect("non-empty") = n;
        Ok((CpuStorage::F32(out), Shape::from(dims)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::QMatMul;
    use candle_core::{Device, Module};

    /// Deterministic test values with some large ones (every 13th tripled).
    pub(super) fn data(len: usize, seed: usize) -> Vec<f32> {
        (0..len)
            .map(|i| {
                let v = ((i * 7919 + seed * 104_729) % 1009) as f32 / 1009.0 - 0.5;
                v * if i % 13 == 0 { 3.0 } else { 1.0 }
            })
            .collect()
    }

    /// The SIMD kernels equal the portable reference on every format and on shapes that
    /// exercise every tile (rows and columns not multiples of 4, one row, many rows).
    #[test]
    fn simd_kernels_equal_the_reference() {
        let levels: Vec<Level> = Level::ALL.into_iter().filter(|l| l.supported()).collect();
        if levels.is_empty() {
            eprintln!("this CPU lacks AVX2: only the reference path is in use");
            return;
        }
        for (m, n, k) in [
            (1, 37, 64),
            (7, 22, 96),
            (4, 4, 32),
            (9, 19, 128),
            (70, 130, 64),
        ] {
            let w = Tensor::from_vec(data(n * k, 1), (n, k), &Device::Cpu).unwrap();
            let x = data(m * k, 2);
            for f in crate::kernel::blocks::BLOCK32 {
                let q = QTensor::quantize(&w, f.dtype()).unwrap();
                let bytes = q.data().unwrap();
                let acts = Activations::quantize(&x, m, k);
                let want = reference_matmul(f, &bytes, n, &acts);
                for &level in &levels {
                    let mut got = vec![0f32; m * n];
                    #[cfg(target_arch = "x86_64")]
                    simd_matmul(level, f, &bytes, n, &acts, &mut got);
                    for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                        assert!(
                            (a - b).abs() <= 1e-5 * b.abs().max(1.0),
                            "{level:?} {f:?} {m}x{n}x{k} [{i}]: {a} vs {b}"
                        );
                    }
                }
            }
        }
    }

    /// The reference agrees with a plain f32 product of the dequantized weights and
    /// activations (the definition of the format), and with candle's own kernels.
    #[test]
    fn products_agree_with_dequantized_math_and_with_candle() {
        let (m, n, k) = (5, 12, 128);
        let wf = data(n * k, 3);
        let w = Tensor::from_vec(wf, (n, k), &Device::Cpu).unwrap();
        let x = data(m * k, 4);
        let xt = Tensor::from_vec(x.clone(), (m, k), &Device::Cpu).unwrap();
        for f in crate::kernel::blocks::BLOCK32 {
            let q = Arc::new(QTensor::quantize(&w, f.dtype()).unwrap());
            let bytes = q.data().unwrap();
            let acts = Activations::quantize(&x, m, k);
            let ours = matmul(f, &bytes, n, k, &x, m);
            // By hand: dequantized weights times dequantized activations, in f64.
            let wd: Vec<f32> = bytes
                .chunks(f.block_bytes())
                .flat_map(|b| f.dequantize_block(b))
                .collect();
            for c in 0..m {
                for r in 0..n {
                    let hand: f64 = (0..k)
                        .map(|i| {
                            let a =
                                acts.scales[c * k / BLOCK + i / BLOCK] * acts.qs[c * k + i] as f32;
                            wd[r * k + i] as f64 * a as f64
                        })
                        .sum();
                    let got = ours[c * n + r] as f64;
                    assert!(
                        (got - hand).abs() <= 1e-4 * hand.abs().max(1.0),
                        "{f:?}: {got} vs {hand}"
                    );
                }
            }
            // candle rounds activation ties away from zero and sums in another order.
            let theirs = QMatMul::QTensor(q.clone())
                .forward(&xt)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let spread = theirs.iter().fold(0f32, |s, v| s.max(v.abs()));
            for (a, b) in ours.iter().zip(&theirs) {
                assert!(
                    (a - b).abs() <= 0.01 * spread,
                    "{f:?}: ours {a} vs candle {b}"
                );
            }
            // And through the candle op, with leading dimensions kept.
            if let Some(op) = QuantMatmul::for_weights(&q) {
                let y = op.forward(&xt.reshape((1, m, k)).unwrap()).unwrap();
                assert_eq!(y.dims(), &[1, m, n]);
                let y = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                assert_eq!(y, ours, "{f:?}");
            }
        }
    }

    /// The extremes of the 8-bit products: q8_0 weights of −128 (a GGUF may hold them,
    /// though ggml's own quantizer stops at −127) and ±127 against activations of ±127,
    /// where a product pair in `vpmaddubsw` comes nearest to i16 saturation.
    #[test]
    fn extreme_q8_0_quants_do_not_saturate() {
        let (n, k) = (5, 64);
        let one = half::f16::from_f32(1.0).to_le_bytes();
        let mut w = Vec::new();
        for r in 0..n {
            for b in 0..k / BLOCK {
                w.extend_from_slice(&one);
                w.extend((0..BLOCK).map(|i| match (r + b + i) % 3 {
                    0 => (-128i8) as u8,
                    1 => 127u8,
                    _ => (-127i8) as u8,
                }));
            }
        }
        let x: Vec<f32> = (0..k)
            .map(|i| if i % 2 == 0 { -1.0 } else { 1.0 })
            .collect();
        let acts = Activations::quantize(&x, 1, k);
        assert!(acts.qs.iter().all(|q| q.abs() == 127));
        let want = reference_matmul(GgmlType::Q8_0, &w, n, &acts);
        for level in Level::ALL.into_iter().filter(|l| l.supported()) {
            let mut got = vec![0f32; n];
            #[cfg(target_arch = "x86_64")]
            simd_matmul(level, GgmlType::Q8_0, &w, n, &acts, &mut got);
            assert_eq!(got, want, "{level:?}");
        }
        // By hand: every block's dot is exact, scales are 1 × 1/127 (rounded to f16).
        let d = half::f16::from_f32(1.0 / 127.0).to_f32();
        for (r, got) in want.iter().enumerate() {
            let dot: i32 = (0..k)
                .map(|i| {
                    let q = w[r * (k / BLOCK) * 34 + (i / BLOCK) * 34 + 2 + i % BLOCK] as i8;
                    q as i32 * acts.qs[i] as i32
                })
                .sum();
            assert!((got - d * dot as f32).abs() <= 1e-3 * (d * dot as f32).abs().max(1.0));
        }
    }

    #[test]
    fn kernel_choice_parses_and_names_the_valid_values() {
        assert_eq!(parse("candle"), Ok(Kernels::Candle));
        assert_eq!(parse(" Quantbench "), Ok(Kernels::Quantbench));
        let err = parse("fast").unwrap_err();
        assert!(
            err.contains("fast") && err.contains("candle") && err.contains(ENV),
            "{err}"
        );
    }

    #[test]
    fn level_cap_parses_and_names_the_valid_values() {
        assert_eq!(parse_level(""), Ok(None));
        assert_eq!(parse_level("native"), Ok(None));
        assert_eq!(parse_level(" AVX2 "), Ok(Some(Level::Avx2)));
        assert_eq!(parse_level("avx512"), Ok(Some(Level::Avx512)));
        let err = parse_level("sse4").unwrap_err();
        assert!(
            err.contains("sse4") && err.contains("avx2") && err.contains(LEVEL_ENV),
            "{err}"
        );
    }
}
