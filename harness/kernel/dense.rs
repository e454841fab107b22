//! Products with float weights (f32, f16, bf16). candle's gemm was far from the memory
//! bandwidth at one row (a decode step: f32, f16), computed bf16 with scalar conversions
//! (79 ms for GPT-2's LM head, against 3.6 ms at f16), and reached about a third of this
//! CPU's f32 peak at many rows (a quality window).
//!
//! Each output is a dot product along the shared dimension, 16 lanes at a time: 4 weight
//! rows by up to 4 activation rows per step, weights widened to f32 in registers
//! (`vcvtph2ps` for f16, a 16-bit shift for bf16) and never stored wider, f32
//! accumulation. Weight rows are prefetched ahead, since they stream from memory once.
//!
//! From [`GEMM_ROWS`] activation rows on (a prompt, a quality window) the products
//! change shape: f16 runs quantbench's own prompt kernels (on AVX2, 4 × 3 register tiles
//! over panels of 64 or 256 weight rows, the tile's loop in inline assembly, both
//! operands f16 widened as they are loaded; on AVX-512, `dense::f16`'s 4 × 6 tiles on
//! the same panels, activations held as f32), f32 and bf16 a packed GEMM (the `gemm`
//! crate) on weight panels widened to f32.
//!
//! f16 and bf16 products take their activations rounded to their format
//! ([`round_to_f16`], [`round_to_bf16`]), as llama.cpp, candle and PyTorch do, so that
//! each product is exact and only the order of the f32 sums depends on the kernel; the
//! AVX2 f16 prompt kernel then streams half the activation bytes (202-203 GFLOP/s on
//! Llama 3.2 1B's four shapes at 512 rows against 185-195 with f32 activations, `cargo
//! run --release --example prompt -- f16`, Zen 4, when it ran there; the AVX-512 kernel
//! that replaced it on such CPUs, `dense::f16`, holds them as f32 and is faster). On CPUs with AVX512_BF16 bf16 prompts run on
//! `vdpbf16ps` (`bf16`, 32 products an instruction): 303-318 GFLOP/s on Llama 3.2 1B's
//! shapes, against the f32 GEMM's 193-198 (`cargo run --release --example prompt --
//! bf16`, then `-- f32`, Zen 4); decode stays on the dot tiles above.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use std::cell::RefCell;

use candle_core::DType;

/// The float formats with a kernel here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Float {
    F32,
    F16,
    BF16,
}

impl Float {
    pub fn of(dtype: DType) -> Option<Float> {
        match dtype {
            DType::F32 => Some(Float::F32),
            DType::F16 => Some(Float::F16),
            DType::BF16 => Some(Float::BF16),
            _ => None,
        }
    }

    /// Bytes per element.
    const fn bytes(self) -> usize {
        match self {
            Float::F32 => 4,
            Float::F16 | Float::BF16 => 2,
        }
    }

    /// The format whose discriminant (`format as u8`, the kernels' const parameter) is `id`.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    const fn from_id(id: u8) -> Float {
        match id {
            0 => Float::F32,
            1 => Float::F16,
            _ => Float::BF16,
        }
    }
}

/// Weights are prefetched 16 rows ahead into L2, and f16 / bf16 weights also 8 rows ahead
/// into L1, as in the quantized kernels (f16 decode on GPT-2 small: 58 tok/s with 512
/// bytes ahead in the same row, 73 with 8 rows ahead, 98 with the L2 prefetch too). f32
/// goes without the L1 prefetch: read in turn in one process (a throwaway switch and
/// `examples/streaming`, 8 passes each over 1 GiB, median of the pass-by-pass ratios,
/// Zen 4), f32 streams faster without it on every shape tried — GPT-2's 3072 × 768
/// 1.040 / 1.025 / 1.016, 768 × 3072 1.061 / 1.089 / 1.042, 2304 × 768 1.054 / 1.091 /
/// 1.048, the 1B's 8192 × 2048 1.038, 2048 × 8192 1.134 — while f16 loses on the 1B's
/// (0.956, 0.919) and is mixed on GPT-2's (1.049, 1.049, 0.975). No prefetch at all
/// loses 10-50% on most shapes.
#[cfg(target_arch = "x86_64")]
const PREFETCH_ROWS: usize = 8;

#[cfg(target_arch = "x86_64")]
macro_rules! simd_fn {
    ($($item:item)*) => {$(
        #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
        $item
    )*};
}

/// 16 weights at `p` (elements of format `F`), as f32.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn load16<const F: u8>(p: *const u8) -> __m512 {
    match Float::from_id(F) {
        Float::F32 => _mm512_loadu_ps(p as *const f32),
        Float::F16 => _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i)),
        Float::BF16 => _mm512_castsi512_ps(_mm512_slli_epi32(
            _mm512_cvtepu16_epi32(_mm256_loadu_si256(p as *const __m256i)),
            16,
        )),
    }
}

/// One weight at `p` (an element of format `F`) as f32: the k tail of every tile.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn weight_at<const F: u8>(p: *const u8) -> f32 {
    match Float::from_id(F) {
        Float::F32 => std::ptr::read_unaligned(p as *const f32),
        Float::F16 => half::f16::from_bits(std::ptr::read_unaligned(p as *const u16)).to_f32(),
        Float::BF16 => half::bf16::from_bits(std::ptr::read_unaligned(p as *const u16)).to_f32(),
    }
}

#[cfg(target_arch = "x86_64")]
struct Operands {
    w: *const u8,
    elem: usize,
    x: *const f32,
    out: *mut f32,
    n: usize,
    k: usize,
}

/// The body of a 16-lane prompt kernel's `panel` (weight rows `$r0 .. $r1`, all `$m`
/// activation rows): 6 activation rows at a time against every 4 weight rows of the
/// panel, then the weight rows past the last 4 one by one, each by `$tile::<R, C>(o,
/// weight row, activation row)` (the f16 and bf16 kernels' shared walk).
#[cfg(target_arch = "x86_64")]
macro_rules! walk_panel {
    ($tile:ident, $o:expr, $r0:expr, $r1:expr, $m:expr) => {{
        macro_rules! at {
            ($r:literal, $take:expr, $w:expr, $a:expr) => {
                match $take {
                    6 => $tile::<$r, 6>($o, $w, $a),
                    5 => $tile::<$r, 5>($o, $w, $a),
                    4 => $tile::<$r, 4>($o, $w, $a),
                    3 => $tile::<$r, 3>($o, $w, $a),
                    2 => $tile::<$r, 2>($o, $w, $a),
                    _ => $tile::<$r, 1>($o, $w, $a),
                }
            };
        }
        let mut c = 0;
        while c < $m {
            let take = ($m - c).min(6);
            let mut r = $r0;
            while r + 4 <= $r1 {
                at!(4, take, r, c);
                r += 4;
            }
            while r < $r1 {
                at!(1, take, r, c);
                r += 1;
            }
            c += take;
        }
    }};
}

// After `walk_panel`, which they use.
#[cfg(target_arch = "x86_64")]
mod bf16;
#[cfg(target_arch = "x86_64")]
mod f16;

/// A prompt product's operands on 16-bit weights (f16 or bf16): `n × k` weights, `m × k`
/// activations already rounded to the weights' format (as 16-bit floats, `X = u16`, or
/// held as f32, `X = f32`), `m × n` f32 outputs (row-major, all three).
#[cfg(target_arch = "x86_64")]
struct Halves<X = u16> {
    w: *const u16,
    x: *const X,
    out: *mut f32,
    n: usize,
    k: usize,
}

#[cfg(target_arch = "x86_64")]
simd_fn! {
    /// The sums of 4 accumulators, in order.
    #[inline]
    unsafe fn sum4(a: __m512, b: __m512, c: __m512, d: __m512) -> __m128 {
        // Within each 128-bit lane: [a0+a2, b0+b2, a1+a3, b1+b3] …, then [Σa, Σb, Σc, Σd].
        let ab = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
        let cd = _mm512_add_ps(_mm512_unpacklo_ps(c, d), _mm512_unpackhi_ps(c, d));
        let (ab, cd) = (_mm512_castps_pd(ab), _mm512_castps_pd(cd));
        let s = _mm512_add_ps(
            _mm512_castpd_ps(_mm512_unpacklo_pd(ab, cd)),
            _mm512_castpd_ps(_mm512_unpackhi_pd(ab, cd)),
        );
        // The four 128-bit lanes' partial sums.
        let high = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(s)));
        let h = _mm256_add_ps(_mm512_castps512_ps256(s), high);
        _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps::<1>(h))
    }

    /// A 16-lane prompt tile's sums (`R` weight rows by `C` activation rows) stored as its
    /// outputs: with 4 weight rows, the 4 sums of one activation row reduced together and
    /// stored as the 4 adjacent outputs they are.
    // `acc[r][c]` over constant indices, as the tiles index their accumulators.
    #[allow(clippy::needless_range_loop)]
    #[inline]
    unsafe fn store_tile<const R: usize, const C: usize, X>(
        acc: &[[__m512; C]; R],
        o: &Halves<X>,
        w_row: usize,
        a_row: usize,
    ) {
        if R == 4 {
            for c in 0..C {
                // `% R`: constant indices in bounds in the other instantiations (dead here).
                let v = sum4(acc[0][c], acc[1 % R][c], acc[2 % R][c], acc[3 % R][c]);
                _mm_storeu_ps(o.out.add((a_row + c) * o.n + w_row), v);
            }
        } else {
            for (r, row) in acc.iter().enumerate() {
                for (c, &a) in row.iter().enumerate() {
                    *o.out.add((a_row + c) * o.n + w_row + r) = _mm512_reduce_add_ps(a);
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
simd_fn! {
    // Indexed loops over the register arrays: unrolled by the compiler, as intended.
    #[allow(clippy::needless_range_loop)]
    unsafe fn tile<const F: u8, const R: usize, const C: usize>(
        o: &Operands,
        w_row: usize,
        a_row: usize,
    ) {
        let mut acc = [[_mm512_setzero_ps(); C]; R];
        let k16 = o.k / 16 * 16;
        let mut i = 0;
        while i < k16 {
            let mut xv = [_mm512_setzero_ps(); C];
            for c in 0..C {
                xv[c] = _mm512_loadu_ps(o.x.add((a_row + c) * o.k + i));
            }
            for r in 0..R {
                let p = o.w.add(((w_row + r) * o.k + i) * o.elem);
                if !matches!(Float::from_id(F), Float::F32) {
                    _mm_prefetch::<_MM_HINT_T0>(
                        p.wrapping_add(PREFETCH_ROWS * o.k * o.elem) as *const i8,
                    );
                }
                _mm_prefetch::<_MM_HINT_T1>(
                    p.wrapping_add(super::tile::PREFETCH_L2_ROWS * o.k * o.elem) as *const i8,
                );
                let wv = load16::<F>(p);
                for c in 0..C {
                    acc[r][c] = _mm512_fmadd_ps(wv, xv[c], acc[r][c]);
                }
            }
            i += 16;
        }
        for r in 0..R {
            for c in 0..C {
                let mut sum = _mm512_reduce_add_ps(acc[r][c]);
                for j in k16..o.k {
                    let w = o.w.add(((w_row + r) * o.k + j) * o.elem);
                    let wj = weight_at::<F>(w);
                    sum += wj * *o.x.add((a_row + c) * o.k + j);
                }
                *o.out.add((a_row + c) * o.n + w_row + r) = sum;
            }
        }
    }

    unsafe fn rows<const F: u8>(o: &Operands, (r0, r1): (usize, usize), (c0, c1): (usize, usize)) {
        let mut c = c0;
        while c < c1 {
            let take = (c1 - c).min(4);
            let mut r = r0;
            while r + 4 <= r1 {
                match take {
                    4 => tile::<F, 4, 4>(o, r, c),
                    3 => tile::<F, 4, 3>(o, r, c),
                    2 => tile::<F, 4, 2>(o, r, c),
                    _ => tile::<F, 4, 1>(o, r, c),
                }
                r += 4;
            }
            while r < r1 {
                match take {
                    4 => tile::<F, 1, 4>(o, r, c),
                    3 => tile::<F, 1, 3>(o, r, c),
                    2 => tile::<F, 1, 2>(o, r, c),
                    _ => tile::<F, 1, 1>(o, r, c),
                }
                r += 1;
            }
            c += take;
        }
    }
}

/// The same products with 8 lanes (AVX2 + FMA + F16C), for CPUs without AVX-512: 4
/// weight rows by up to 3 activation rows per step (12 accumulators, 3 activation
/// vectors and a weight vector fill the 16 registers).
///
/// Weights are prefetched into L1 one tile ahead (the same line of the next 4 rows), and
/// no further. The distance used to be `PREFETCH_ROWS` rows into L1 and
/// `tile::PREFETCH_L2_ROWS` into L2, chosen on GPT-2 small's rows (1.5-3 KB at f16); on
/// Llama 3.2 1B's rows (8-32 KB at f32) that is 64-512 KB ahead, past L1 (32 KB) and up
/// to the whole of L2 (512 KB) on this EPYC. Streaming rate of one product, 1 GiB of
/// distinct matrices per pass so they come from memory (`examples/streaming.rs`
/// over `matmul_into`, median of 3 processes of 5 passes, GB/s; 8/16 rows before, next tile
/// after): f32 8192×2048 29.6 → 31.8, 2048×8192 26.3 → 32.6, 768×3072 27.9 → 31.7; f16
/// 2048×8192 27.4 → 33.6, 768×3072 25.8 → 31.6, 2304×768 21.6 → 23.2; level elsewhere
/// (f16 8192×2048 32.3 → 30.7, within the noise). No prefetch at all was worse at
/// GPT-2's f16 2304×768 and 3072×768 (17-18 GB/s).
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{weight_at, Float, Halves, Operands};
    use crate::kernel::tile::hsum;

    macro_rules! avx2_fn {
        ($($item:item)*) => {$(
            #[target_feature(enable = "avx2,fma,f16c")]
            $item
        )*};
    }

    /// 8 weights at `p` (elements of format `F`), as f32.
    #[inline(always)]
    unsafe fn load8<const F: u8>(p: *const u8) -> __m256 {
        match Float::from_id(F) {
            Float::F32 => _mm256_loadu_ps(p as *const f32),
            Float::F16 => _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i)),
            Float::BF16 => _mm256_castsi256_ps(_mm256_slli_epi32(
                _mm256_cvtepu16_epi32(_mm_loadu_si128(p as *const __m128i)),
                16,
            )),
        }
    }

    avx2_fn! {
        #[allow(clippy::needless_range_loop)]
        unsafe fn tile<const F: u8, const R: usize, const C: usize>(
            o: &Operands,
            w_row: usize,
            a_row: usize,
        ) {
            let mut acc = [[_mm256_setzero_ps(); C]; R];
            let k8 = o.k / 8 * 8;
            let mut i = 0;
            while i < k8 {
                let mut xv = [_mm256_setzero_ps(); C];
                for c in 0..C {
                    xv[c] = _mm256_loadu_ps(o.x.add((a_row + c) * o.k + i));
                }
                for r in 0..R {
                    let p = o.w.add(((w_row + r) * o.k + i) * o.elem);
                    // One prefetch per 64-byte line of weights: the same line of the next
                    // tile's rows (see `avx2`'s doc for why not further).
                    if (i * o.elem).is_multiple_of(64) {
                        _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(R * o.k * o.elem) as *const i8);
                    }
                    let wv = load8::<F>(p);
                    for c in 0..C {
                        acc[r][c] = _mm256_fmadd_ps(wv, xv[c], acc[r][c]);
                    }
                }
                i += 8;
            }
            for r in 0..R {
                for c in 0..C {
                    let mut sum = hsum(acc[r][c]);
                    for j in k8..o.k {
                        let w = o.w.add(((w_row + r) * o.k + j) * o.elem);
                        let wj = weight_at::<F>(w);
                        sum += wj * *o.x.add((a_row + c) * o.k + j);
                    }
                    *o.out.add((a_row + c) * o.n + w_row + r) = sum;
                }
            }
        }

        /// The 4 × 3 tile's loop of the f16 prompt kernel, in assembly so that its 12
        /// accumulators, 3 activation vectors and the weight vector stay in the 16
        /// registers (the compiler's own allocation of the same loop spilled accumulators
        /// and pointers to the stack). `w` the 4 weight rows' first elements, `x` the 3
        /// activation rows', both f16 (widened by `vcvtph2ps` as they are loaded), `len`
        /// > 0 elements, a multiple of 8.
        unsafe fn kernel_4x3(w: [*const u16; 4], x: [*const u16; 3], len: usize) -> [[__m256; 3]; 4] {
            let z = _mm256_setzero_ps();
            let (mut a00, mut a01, mut a02, mut a10, mut a11, mut a12) = (z, z, z, z, z, z);
            let (mut a20, mut a21, mut a22, mut a30, mut a31, mut a32) = (z, z, z, z, z, z);
            std::arch::asm!(
                "2:",
                "vcvtph2ps {x0v}, xmmword ptr [{x0} + {i}*2]",
                "vcvtph2ps {x1v}, xmmword ptr [{x1} + {i}*2]",
                "vcvtph2ps {x2v}, xmmword ptr [{x2} + {i}*2]",
                "vcvtph2ps {wv}, xmmword ptr [{w0} + {i}*2]",
                "vfmadd231ps {a00}, {wv}, {x0v}",
                "vfmadd231ps {a01}, {wv}, {x1v}",
                "vfmadd231ps {a02}, {wv}, {x2v}",
                "vcvtph2ps {wv}, xmmword ptr [{w1} + {i}*2]",
                "vfmadd231ps {a10}, {wv}, {x0v}",
                "vfmadd231ps {a11}, {wv}, {x1v}",
                "vfmadd231ps {a12}, {wv}, {x2v}",
                "vcvtph2ps {wv}, xmmword ptr [{w2} + {i}*2]",
                "vfmadd231ps {a20}, {wv}, {x0v}",
                "vfmadd231ps {a21}, {wv}, {x1v}",
                "vfmadd231ps {a22}, {wv}, {x2v}",
                "vcvtph2ps {wv}, xmmword ptr [{w3} + {i}*2]",
                "vfmadd231ps {a30}, {wv}, {x0v}",
                "vfmadd231ps {a31}, {wv}, {x1v}",
                "vfmadd231ps {a32}, {wv}, {x2v}",
                "add {i}, 8",
                "cmp {i}, {len}",
                "jb 2b",
                x0 = in(reg) x[0],
                x1 = in(reg) x[1],
                x2 = in(reg) x[2],
                w0 = in(reg) w[0],
                w1 = in(reg) w[1],
                w2 = in(reg) w[2],
                w3 = in(reg) w[3],
                i = inout(reg) 0usize => _,
                len = in(reg) len,
                x0v = out(ymm_reg) _,
                x1v = out(ymm_reg) _,
                x2v = out(ymm_reg) _,
                wv = out(ymm_reg) _,
                a00 = inout(ymm_reg) a00,
                a01 = inout(ymm_reg) a01,
                a02 = inout(ymm_reg) a02,
                a10 = inout(ymm_reg) a10,
                a11 = inout(ymm_reg) a11,
                a12 = inout(ymm_reg) a12,
                a20 = inout(ymm_reg) a20,
                a21 = inout(ymm_reg) a21,
                a22 = inout(ymm_reg) a22,
                a30 = inout(ymm_reg) a30,
                a31 = inout(ymm_reg) a31,
                a32 = inout(ymm_reg) a32,
                options(nostack, readonly),
            );
            [[a00, a01, a02], [a10, a11, a12], [a20, a21, a22], [a30, a31, a32]]
        }

        /// One f16 prompt tile: `R` weight rows by `C` activation rows, the whole shared
        /// dimension, stored into the outputs.
        #[allow(clippy::needless_range_loop)]
        unsafe fn prompt_tile<const R: usize, const C: usize>(o: &Halves, w_row: usize, a_row: usize) {
            let wp: [*const u16; R] = std::array::from_fn(|r| o.w.add((w_row + r) * o.k));
            let xp: [*const u16; C] = std::array::from_fn(|c| o.x.add((a_row + c) * o.k));
            let h = |p: *const u16| half::f16::from_bits(std::ptr::read_unaligned(p)).to_f32();
            let ld = |p: *const u16| _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i));
            let mut acc = [[_mm256_setzero_ps(); C]; R];
            let steps = o.k / 8;
            let end8 = steps * 8;
            if R == 4 && C == 3 && steps > 0 {
                // (R, C) is (4, 3) here: the `% R` and `% C` only keep the constant
                // indices of the other instantiations (dead code there) in bounds.
                let a = kernel_4x3([wp[0], wp[1 % R], wp[2 % R], wp[3 % R]], [xp[0], xp[1 % C], xp[2 % C]], end8);
                for r in 0..R {
                    for c in 0..C {
                        acc[r][c] = a[r][c];
                    }
                }
            } else {
                for s in 0..steps {
                    let mut xv = [_mm256_setzero_ps(); C];
                    for c in 0..C {
                        xv[c] = ld(xp[c].add(8 * s));
                    }
                    for r in 0..R {
                        let wv = ld(wp[r].add(8 * s));
                        for c in 0..C {
                            acc[r][c] = _mm256_fmadd_ps(wv, xv[c], acc[r][c]);
                        }
                    }
                }
            }
            if R == 4 {
                // The 4 rows' sums of one activation row in one vector (3 horizontal
                // adds), stored as the 4 adjacent outputs they are.
                for c in 0..C {
                    let s01 = _mm256_hadd_ps(acc[0][c], acc[1 % R][c]);
                    let s23 = _mm256_hadd_ps(acc[2 % R][c], acc[3 % R][c]);
                    let s = _mm256_hadd_ps(s01, s23);
                    let mut v = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps::<1>(s));
                    if end8 < o.k {
                        let mut tail = [0f32; 4];
                        for (r, t) in tail.iter_mut().enumerate() {
                            for j in end8..o.k {
                                *t += h(wp[r % R].add(j)) * h(xp[c].add(j));
                            }
                        }
                        v = _mm_add_ps(v, _mm_loadu_ps(tail.as_ptr()));
                    }
                    _mm_storeu_ps(o.out.add((a_row + c) * o.n + w_row), v);
                }
                return;
            }
            for r in 0..R {
                for c in 0..C {
                    let mut sum = hsum(acc[r][c]);
                    for j in end8..o.k {
                        sum += h(wp[r].add(j)) * h(xp[c].add(j));
                    }
                    *o.out.add((a_row + c) * o.n + w_row + r) = sum;
                }
            }
        }

        /// The f16 prompt product for weight rows `r0 .. r1` (a panel) and all `m`
        /// activation rows (rounded to f16): 3 activation rows at a time against every
        /// 4 rows of the panel, then the rows past the last 4, the whole shared dimension
        /// per tile.
        pub(super) unsafe fn panel(o: &Halves, (r0, r1): (usize, usize), m: usize) {
            let mut c = 0;
            while c < m {
                let take = (m - c).min(3);
                let mut r = r0;
                while r + 4 <= r1 {
                    match take {
                        3 => prompt_tile::<4, 3>(o, r, c),
                        2 => prompt_tile::<4, 2>(o, r, c),
                        _ => prompt_tile::<4, 1>(o, r, c),
                    }
                    r += 4;
                }
                while r < r1 {
                    match take {
                        3 => prompt_tile::<1, 3>(o, r, c),
                        2 => prompt_tile::<1, 2>(o, r, c),
                        _ => prompt_tile::<1, 1>(o, r, c),
                    }
                    r += 1;
                }
                c += take;
            }
        }

        /// The dot-product tiles for weight rows `r0 .. r1` and activation rows `c0 ..
        /// c1`: 3 activation rows at a time against every 4 weight rows, then the weight
        /// rows past the last 4.
        pub(super) unsafe fn rows<const F: u8>(o: &Operands, (r0, r1): (usize, usize), (c0, c1): (usize, usize)) {
            let mut c = c0;
            while c < c1 {
                let take = (c1 - c).min(3);
                let mut r = r0;
                while r + 4 <= r1 {
                    match take {
                        3 => tile::<F, 4, 3>(o, r, c),
                        2 => tile::<F, 4, 2>(o, r, c),
                        _ => tile::<F, 4, 1>(o, r, c),
                    }
                    r += 4;
                }
                while r < r1 {
                    match take {
                        3 => tile::<F, 1, 3>(o, r, c),
                        2 => tile::<F, 1, 2>(o, r, c),
                        _ => tile::<F, 1, 1>(o, r, c),
                    }
                    r += 1;
                }
                c += take;
            }
        }
    }
}

/// From this many activation rows on (a prompt, a quality window), the product runs as a
/// packed GEMM (the `gemm` crate, candle's own f32 engine: register-blocked outer
/// products over packed panels) rather than as dot products. On this 2-vCPU AVX2 EPYC,
/// GPT-2's 3072 × 768 (16 different matrices in turn, so weights come from memory) at
/// 512 rows: 29.8 ms as dot products, 15.7 ms through candle's gemm call, 14.4 ms here
/// (f16 14.8, bf16 15.4); at 16 rows the two ways are even, below that the dot products
/// win (the weights stream once; packing costs more than it saves). bf16 weights are
/// widened to f32 a panel at a time first, so the arithmetic is the same as the dot
/// products': 16-bit weights exactly widened, f32 activations (bf16's rounded to bf16),
/// f32 sums.
///
/// f16 weights take the prompt kernels instead (`avx2::panel`, on AVX-512
/// `f16::panel`: the same arithmetic, the f16 weights widened in registers). When the
/// AVX2 one took f32 activations (on the Zen 3 of the time), overall GFLOP/s on Llama 3.2 1B's four shapes at 512 rows, the two ways
/// alternating in one process (a throwaway copy of `examples/prompt.rs`, 6 passes
/// each), three such runs in different phases of this VM: kernel 165.0-167.8
/// against the GEMM's 154.2, 170.6 against 153.0, 147.9-156.3 against 130.2 (of an FMA
/// peak of about 194); GPT-2's shapes 154.5 against 136.5. The same kernel at f32 (128.4
/// against the GEMM's 158.1) and bf16 (137.0 against 155.3; its widening is two
/// instructions, `vpmovzxwd` and a shift) lost, so those stay on the GEMM.
pub const GEMM_ROWS: usize = 32;

/// Weight rows per panel on the GEMM path: at least 4 panels per thread (so the pool's
/// dynamic chunks balance), at most about 4 MB of f32 each, a multiple of 16.
fn panel_rows(n: usize, k: usize, threads: usize) -> usize {
    let cap = ((1usize << 20) / k.max(1)).max(16);
    n.div_ceil(4 * threads.max(1)).min(cap).next_multiple_of(16)
}

/// The GEMM path of [`matmul_at`]: `out = x · wᵀ`, `out` `m × n`. Panels of weight rows
/// are shared out on candle's pool (the one every other product here runs on; a second
/// pool, rayon's, would contend with its spinning workers): each worker widens its
/// panel (f16 / bf16) into its own buffer and runs a one-thread GEMM on it.
fn gemm_product(format: Float, w: &[u8], n: usize, k: usize, x: &[f32], m: usize, out: &mut [f32]) {
    let threads = candle_core::utils::get_num_threads();
    let panel = panel_rows(n, k, threads);
    let out_addr = out.as_mut_ptr() as usize;
    candle_core::utils::barrier_pool().execute_chunked(n.div_ceil(panel), |range| {
        let mut wide: Vec<f32> = Vec::new();
        for p in range {
            let r0 = p * panel;
            let rows = panel.min(n - r0);
            let rhs = match format {
                Float::F32 => w[r0 * k * 4..].as_ptr() as *const f32,
                _ => {
                    wide.resize(rows * k, 0.0);
                    widen(format, &w[r0 * k * 2..(r0 + rows) * k * 2], &mut wide);
                    wide.as_ptr()
                }
            };
            // SAFETY: x is m × k row-major, rhs the panel's rows × k row-major read as
            // the k × rows matrix wᵀ (row stride 1, column stride k), and the panel's
            // output columns r0 .. r0 + rows of the m × n row-major `out` (which outlives
            // the pool call) are this unit's alone.
            unsafe {
                gemm::gemm(
                    m,
                    rows,
                    k,
                    (out_addr as *mut f32).add(r0),
                    1,
                    n as isize,
                    false,
                    x.as_ptr(),
                    1,
                    k as isize,
                    rhs,
                    k as isize,
                    1,
                    0.0f32,
                    1.0f32,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                )
            }
        }
    });
}

/// Weight rows per unit of work on the f16 prompt path. Each unit passes all `m`
/// activation rows over its panel, so the activations are read once per panel: 64 rows
/// (256 KB of f16 at k = 2048, within L2) up to k = 4096, and 256 rows past it, where
/// even 64 rows fill L2 (1 MB at k = 8192) and the activations' re-reading is the cost to
/// cut. Llama 3.2 1B's 2048 × 8192 at 512 rows (`examples/prompt.rs`, alternating, 3
/// passes of each): 197.9 / 196.2 / 190.7 GFLOP/s at 256 rows against 187.0 / 191.4 /
/// 161.2 at 64, 188.6 / 185.6 / 190.1 at 128, 183.0 / 179.6 / 162.6 at 512; at k = 2048,
/// 1024 rows (4 MB panels) lost (172-179 against 190-197). 32, 64, 128 and 256 rows read
/// the same at k = 2048.
#[cfg(target_arch = "x86_64")]
fn prompt_panel_rows(k: usize) -> usize {
    if k > 4096 {
        256
    } else {
        64
    }
}

/// A prompt kernel on 16-bit weights: weight rows `r0 .. r1` (a panel) against all `m`
/// activation rows.
#[cfg(target_arch = "x86_64")]
type PanelKernel<X = u16> = unsafe fn(&Halves<X>, (usize, usize), usize);

/// The prompt path of [`matmul_at`] on 16-bit weights: `out = x · wᵀ`, `x` the `m × k`
/// activations already rounded to the weights' format (16-bit floats, or f32 for
/// `f16::panel`), by `kernel` (the f16 [`avx2::panel`] or `f16::panel`, the bf16
/// [`bf16::panel`]) over panels of `panel` weight rows shared out on candle's pool. The
/// caller checked the kernel's CPU features.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
fn half_product<X>(
    w: &[u8],
    n: usize,
    k: usize,
    x: &[X],
    m: usize,
    out: &mut [f32],
    panel: usize,
    kernel: PanelKernel<X>,
) {
    let o = Halves {
        w: w.as_ptr() as *const u16,
        x: x.as_ptr(),
        out: out.as_mut_ptr(),
        n,
        k,
    };
    let addr = &o as *const Halves<X> as usize;
    candle_core::utils::barrier_pool().execute_chunked(n.div_ceil(panel), |range| {
        // SAFETY: `o` outlives the pool call; each unit writes its own panel's output
        // columns; the caller checked the kernel's features.
        let o = unsafe { &*(addr as *const Halves<X>) };
        for u in range {
            unsafe { kernel(o, (u * panel, n.min((u + 1) * panel)), m) };
        }
    });
}

/// 16-bit floats (`format` f16 or bf16, little-endian bytes) widened to f32, exactly.
fn widen(format: Float, src: &[u8], dst: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if super::avx2_supported() {
        // SAFETY: the CPU has AVX2 and F16C; both slices hold dst.len() elements.
        unsafe { widen_avx2(format, src, dst) };
        return;
    }
    match format {
        Float::F16 => {
            for (o, p) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *o = half::f16::from_le_bytes([p[0], p[1]]).to_f32();
            }
        }
        Float::BF16 => {
            for (o, p) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *o = f32::from_bits((u16::from_le_bytes([p[0], p[1]]) as u32) << 16);
            }
        }
        Float::F32 => unreachable!("f32 weights are not widened"),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,f16c")]
unsafe fn widen_avx2(format: Float, s: &[u8], d: &mut [f32]) {
    let n8 = d.len() / 8 * 8;
    let mut i = 0;
    while i < n8 {
        let h = _mm_loadu_si128(s.as_ptr().add(2 * i) as *const __m128i);
        let v = match format {
            Float::F16 => _mm256_cvtph_ps(h),
            _ => _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16)),
        };
        _mm256_storeu_ps(d.as_mut_ptr().add(i), v);
        i += 8;
    }
    for j in n8..d.len() {
        let bits = u16::from_le_bytes([s[2 * j], s[2 * j + 1]]);
        d[j] = match format {
            Float::F16 => half::f16::from_bits(bits).to_f32(),
            _ => f32::from_bits((bits as u32) << 16),
        };
    }
}

/// `x @ w^T` for float weights `w` (`n × k`, row-major bytes of `format`) and f32
/// activations `x` (`m × k`), returning `m × n`. The caller checks `super::level`.
pub fn matmul(format: Float, w: &[u8], n: usize, k: usize, x: &[f32], m: usize) -> Vec<f32> {
    let mut out = vec![0f32; m * n];
    matmul_into(format, w, n, k, x, m, &mut out);
    out
}

/// [`matmul`] into `out` (`m × n`).
pub fn matmul_into(
    format: Float,
    w: &[u8],
    n: usize,
    k: usize,
    x: &[f32],
    m: usize,
    out: &mut [f32],
) {
    let level = super::level().expect("the dense kernels need AVX2 or AVX-512");
    matmul_at(level, format, w, n, k, x, m, out)
}

thread_local! {
    /// A decode step's activations rounded to f16 or bf16 (fewer than [`GEMM_ROWS`] rows),
    /// reused from product to product on each thread, so that a step allocates nothing
    /// once the first has sized it. Prompts round into a buffer of their own, freed with
    /// the product: one kept here would hold a window's activations (megabytes) after
    /// the model is dropped, inside the memory probes' "after cleanup" reading.
    static ROUNDED: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Whether bf16 prompts at `level` run on `vdpbf16ps` ([`bf16`]): AVX-512 with
/// AVX512_BF16.
fn bf16_hardware(level: super::Level) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        level == super::Level::Avx512
            && *HAS.get_or_init(|| std::arch::is_x86_feature_detected!("avx512bf16"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = level;
        false
    }
}

/// Whether this process's bf16 prompts run on `vdpbf16ps` (AVX-512 kernels in use, and
/// AVX512_BF16).
pub fn bf16_dot_in_use() -> bool {
    super::level().is_some_and(bf16_hardware)
}

/// `x` rounded to bf16 (to nearest even) and widened back to f32, into `dst`: the
/// activations of every bf16 product. llama.cpp rounds them so (a bf16 matrix's
/// `vec_dot_type` is bf16 on every CPU), so does candle's own bf16 matmul (quantbench's
/// path on other devices) and a bf16 model in PyTorch; each product of two bf16 values
/// is then exact in f32, whichever kernel forms it.
pub fn round_to_bf16(x: &[f32], dst: &mut [f32]) {
    assert_eq!(x.len(), dst.len());
    #[cfg(target_arch = "x86_64")]
    if super::avx2_supported() {
        // SAFETY: the CPU has AVX2; both slices hold x.len() elements.
        unsafe { round_to_bf16_avx2(x, dst) };
        return;
    }
    for (d, v) in dst.iter_mut().zip(x) {
        *d = half::bf16::from_f32(*v).to_f32();
    }
}

/// [`round_to_bf16`], 8 at a time: the bits plus 0x7fff plus the lowest kept bit, the
/// low 16 cleared (NaNs kept as they are, quiet).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn round_to_bf16_avx2(x: &[f32], dst: &mut [f32]) {
    let n8 = x.len() / 8 * 8;
    let bias = _mm256_set1_epi32(0x7fff);
    let one = _mm256_set1_epi32(1);
    let keep = _mm256_set1_epi32(0xffff_0000u32 as i32);
    let quiet = _mm256_set1_epi32(0x0040_0000);
    let mut i = 0;
    while i < n8 {
        let v = _mm256_loadu_ps(x.as_ptr().add(i));
        let b = _mm256_castps_si256(v);
        let lsb = _mm256_and_si256(_mm256_srli_epi32::<16>(b), one);
        let r = _mm256_and_si256(_mm256_add_epi32(_mm256_add_epi32(b, bias), lsb), keep);
        let nan = _mm256_and_si256(_mm256_or_si256(b, quiet), keep);
        let is_nan = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_UNORD_Q>(v, v));
        let out = _mm256_blendv_epi8(r, nan, is_nan);
        _mm256_storeu_ps(dst.as_mut_ptr().add(i), _mm256_castsi256_ps(out));
        i += 8;
    }
    for j in n8..x.len() {
        dst[j] = half::bf16::from_f32(x[j]).to_f32();
    }
}

/// `x` rounded to f16 (to nearest even; past ±65504 to ±infinity, as every conversion to
/// f16 does) and widened back to f32, into `dst`: the activations of every f16 product,
/// as llama.cpp (an f16 matrix's `vec_dot_type` is f16), candle's own f16 matmul
/// (quantbench's path on other devices) and an f16 model in PyTorch take them. Each
/// product of two f16 values is then exact in f32, whichever kernel forms it.
pub fn round_to_f16(x: &[f32], dst: &mut [f32]) {
    assert_eq!(x.len(), dst.len());
    #[cfg(target_arch = "x86_64")]
    if super::avx2_supported() {
        // SAFETY: the CPU has AVX2 and F16C; both slices hold x.len() elements.
        unsafe { f16_avx2::<true>(x, dst.as_mut_ptr() as *mut u8) };
        return;
    }
    for (d, v) in dst.iter_mut().zip(x) {
        *d = half::f16::from_f32(*v).to_f32();
    }
}

/// `x` rounded to f16 as [`round_to_f16`] does, kept as f16 bits (the f16 prompt
/// kernel's activations, half the bytes to stream).
#[cfg(target_arch = "x86_64")]
fn f16_bits(x: &[f32], dst: &mut [u16]) {
    assert_eq!(x.len(), dst.len());
    // SAFETY: the callers checked AVX2 and F16C; both slices hold x.len() elements.
    unsafe { f16_avx2::<false>(x, dst.as_mut_ptr() as *mut u8) };
}

/// `x` rounded to f16 (`vcvtps2ph`, to nearest even), 8 at a time, into `dst`: widened
/// back to f32 (`WIDE`, `x.len()` f32s at `dst`) or as bits (`x.len()` u16s).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,f16c")]
unsafe fn f16_avx2<const WIDE: bool>(x: &[f32], dst: *mut u8) {
    let n8 = x.len() / 8 * 8;
    let mut i = 0;
    while i < n8 {
        let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm256_loadu_ps(x.as_ptr().add(i)));
        if WIDE {
            _mm256_storeu_ps((dst as *mut f32).add(i), _mm256_cvtph_ps(h));
        } else {
            _mm_storeu_si128((dst as *mut u16).add(i) as *mut __m128i, h);
        }
        i += 8;
    }
    for (j, v) in x.iter().enumerate().skip(n8) {
        let h = half::f16::from_f32(*v);
        if WIDE {
            *(dst as *mut f32).add(j) = h.to_f32();
        } else {
            *(dst as *mut u16).add(j) = h.to_bits();
        }
    }
}

/// [`matmul_into`] with the kernels of `level` (which this CPU must support). f16 and
/// bf16 products take their activations rounded to their format ([`round_to_f16`],
/// [`round_to_bf16`]).
#[allow(clippy::too_many_arguments)]
pub(super) fn matmul_at(
    level: super::Level,
    format: Float,
    w: &[u8],
    n: usize,
    k: usize,
    x: &[f32],
    m: usize,
    out: &mut [f32],
) {
    assert!(level.supported(), "this CPU lacks {level:?}");
    assert_eq!(out.len(), m * n, "the output is not {m} x {n}");
    assert_eq!(
        w.len(),
        n * k * format.bytes(),
        "weights are not {n} x {k} of {format:?}"
    );
    assert_eq!(x.len(), m * k, "activations are not {m} x {k}");
    let round: fn(&[f32], &mut [f32]) = match format {
        Float::F32 => return product(level, format, w, n, k, x, m, out),
        Float::F16 => round_to_f16,
        Float::BF16 => round_to_bf16,
    };
    #[cfg(target_arch = "x86_64")]
    if m >= GEMM_ROWS && (format == Float::F16 || bf16_hardware(level)) {
        // A prompt on a kernel of quantbench's own: the activations rounded to the
        // weights' format in a buffer freed with the product, as 16-bit floats or (f16
        // on AVX-512) as f32.
        if format == Float::F16 && level == super::Level::Avx512 {
            let mut rounded = vec![0f32; m * k];
            round_to_f16(x, &mut rounded);
            return half_product(w, n, k, &rounded, m, out, prompt_panel_rows(k), f16::panel);
        }
        let mut bits = vec![0u16; m * k];
        let (panel, kernel): (usize, PanelKernel) = if format == Float::F16 {
            f16_bits(x, &mut bits);
            (prompt_panel_rows(k), avx2::panel)
        } else {
            // SAFETY: the CPU has AVX-512 with AVX512_BF16 (checked by bf16_hardware).
            unsafe { bf16::round(x, &mut bits) };
            (bf16_panel_rows(k), bf16::panel)
        };
        return half_product(w, n, k, &bits, m, out, panel, kernel);
    }
    if m >= GEMM_ROWS {
        let mut rounded = vec![0f32; m * k];
        round(x, &mut rounded);
        return product(level, format, w, n, k, &rounded, m, out);
    }
    ROUNDED.with(|scratch| {
        let mut rounded = scratch.borrow_mut();
        rounded.resize(m * k, 0.0);
        round(x, &mut rounded);
        product(level, format, w, n, k, &rounded, m, out);
    })
}

/// Weight rows per unit of work on the bf16 prompt path: about 128 KB of weights (a panel
/// stays in L2 while every 6 activation rows pass over it), 16 to 64 rows.
#[cfg(target_arch = "x86_64")]
fn bf16_panel_rows(k: usize) -> usize {
    ((128 << 10) / (2 * k.max(1))).clamp(16, 64) / 4 * 4
}

/// [`matmul_at`] after the activations' rounding.
#[allow(clippy::too_many_arguments)]
fn product(
    level: super::Level,
    format: Float,
    w: &[u8],
    n: usize,
    k: usize,
    x: &[f32],
    m: usize,
    out: &mut [f32],
) {
    if m >= GEMM_ROWS {
        gemm_product(format, w, n, k, x, m, out);
        return;
    }
    let elem = format.bytes();
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("no level is supported off x86-64");
    #[cfg(target_arch = "x86_64")]
    {
        let o = Operands {
            w: w.as_ptr(),
            elem,
            x: x.as_ptr(),
            out: out.as_mut_ptr(),
            n,
            k,
        };
        let addr = &o as *const Operands as usize;
        super::for_each_tile(n, m, |w_rows, a_rows| {
            // SAFETY: `o` outlives the pool call; tiles write disjoint outputs; the features
            // were checked above.
            let o = unsafe { &*(addr as *const Operands) };
            unsafe {
                match (level, format) {
                    (super::Level::Avx512, Float::F32) => {
                        rows::<{ Float::F32 as u8 }>(o, w_rows, a_rows)
                    }
                    (super::Level::Avx512, Float::F16) => {
                        rows::<{ Float::F16 as u8 }>(o, w_rows, a_rows)
                    }
                    (super::Level::Avx512, Float::BF16) => {
                        rows::<{ Float::BF16 as u8 }>(o, w_rows, a_rows)
                    }
                    (super::Level::Avx2, Float::F32) => {
                        avx2::rows::<{ Float::F32 as u8 }>(o, w_rows, a_rows)
                    }
                    (super::Level::Avx2, Float::F16) => {
                        avx2::rows::<{ Float::F16 as u8 }>(o, w_rows, a_rows)
                    }
                    (super::Level::Avx2, Float::BF16) => {
                        avx2::rows::<{ Float::BF16 as u8 }>(o, w_rows, a_rows)
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    /// Random `n × k` weights stored as `dt` (their bytes), `m × k` activations, and
    /// candle's product of the two in f32 (the stored weights widened; for f16 and bf16
    /// the activations rounded to the weights' format first, candle's own conversion).
    fn case(m: usize, n: usize, k: usize, dt: DType) -> (Vec<u8>, Vec<f32>, Vec<f32>) {
        let w = Tensor::randn(0f32, 1.0, (n, k), &Device::Cpu)
            .unwrap()
            .to_dtype(dt)
            .unwrap();
        let x = Tensor::randn(0f32, 1.0, (m, k), &Device::Cpu).unwrap();
        let operand = match dt {
            DType::BF16 | DType::F16 => x.to_dtype(dt).unwrap().to_dtype(DType::F32).unwrap(),
            _ => x.clone(),
        };
        let want = operand
            .matmul(&w.to_dtype(DType::F32).unwrap().t().unwrap())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let flat = w.flatten_all().unwrap();
        let bytes: Vec<u8> = match dt {
            DType::F32 => flat
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
            DType::F16 => flat
                .to_vec1::<half::f16>()
                .unwrap()
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
            _ => flat
                .to_vec1::<half::bf16>()
                .unwrap()
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        };
        (
            bytes,
            x.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            want,
        )
    }

    fn assert_close(got: &[f32], want: &[f32], what: &str) {
        assert_eq!(got.len(), want.len());
        for (i, (a, b)) in got.iter().zip(want).enumerate() {
            assert!(
                (a - b).abs() <= 1e-4 * b.abs().max(1.0),
                "{what} [{i}]: {a} vs {b}"
            );
        }
    }

    /// Every float format, shapes that exercise every tile, one activation row and a k
    /// that is not a multiple of 16, against candle's own product of the same stored
    /// weights: dot products (up to 31 rows), the GEMM path (f32, bf16) and the f16
    /// prompt kernel (from 32 rows).
    #[test]
    fn dense_kernels_equal_candle() {
        if super::super::level().is_none() {
            eprintln!("this CPU lacks AVX2: the dense kernels are not in use");
            return;
        }
        for (m, n, k) in [
            (1, 37, 64),
            // One activation row: 4-row tiles, single rows past them, tails of k past
            // the last 16.
            (1, 19, 113),
            (1, 8, 17),
            (1, 6, 768),
            (1, 5, 2048),
            (1, 3, 2064),
            (3, 9, 40),
            (5, 22, 96),
            (8, 4, 17),
            (70, 130, 48),
            (35, 10, 37),
        ] {
            for dt in [DType::F32, DType::F16, DType::BF16] {
                let (bytes, xs, want) = case(m, n, k, dt);
                for level in super::super::Level::ALL
                    .into_iter()
                    .filter(|l| l.supported())
                {
                    let mut got = vec![0f32; m * n];
                    matmul_at(
                        level,
                        Float::of(dt).unwrap(),
                        &bytes,
                        n,
                        k,
                        &xs,
                        m,
                        &mut got,
                    );
                    assert_close(&got, &want, &format!("{level:?} {dt:?} {m}x{n}x{k}"));
                }
            }
        }
    }

    /// The f16 prompt kernels, called directly, also below the rows at which `matmul_at`
    /// takes them: AVX2 (4 × 3 tiles in assembly, the 1- and 2-row activation
    /// remainders, single weight rows past the last 4, a shared dimension with a tail
    /// past its last 8) and, where the CPU has it, AVX-512 (4 × 6 tiles, the 1- to 5-row
    /// remainders, the masked last step of 1 to 15 elements).
    #[test]
    fn prompt_kernel_equals_candle() {
        if !super::super::avx2_supported() {
            eprintln!("this CPU lacks AVX2: the prompt kernel is not in use");
            return;
        }
        for (m, n, k) in [
            (3, 4, 8),
            (7, 6, 61),
            (34, 131, 200),
            (2, 70, 1030),
            (11, 9, 33),
        ] {
            let (bytes, xs, want) = case(m, n, k, DType::F16);
            let mut got = vec![f32::NAN; m * n];
            let mut bits = vec![0u16; xs.len()];
            f16_bits(&xs, &mut bits);
            half_product(
                &bytes,
                n,
                k,
                &bits,
                m,
                &mut got,
                prompt_panel_rows(k),
                avx2::panel,
            );
            assert_close(&got, &want, &format!("prompt {m}x{n}x{k}"));
            if super::super::Level::Avx512.supported() {
                let mut rounded = vec![0f32; xs.len()];
                round_to_f16(&xs, &mut rounded);
                let mut got = vec![f32::NAN; m * n];
                half_product(
                    &bytes,
                    n,
                    k,
                    &rounded,
                    m,
                    &mut got,
                    prompt_panel_rows(k),
                    f16::panel,
                );
                assert_close(&got, &want, &format!("avx-512 prompt {m}x{n}x{k}"));
            }
        }
    }

    /// f16 and bf16 products round their activations to their format, at every level
    /// and on every path (the f16 prompt kernel from 32 rows; `vdpbf16ps` where the CPU
    /// has AVX512_BF16): the product of unrounded activations is the product of the
    /// rounded ones, bit for bit within one kernel, and the kernels agree with each other
    /// to f32 summation order — decode tiles, the prompt panels (from 32 rows), weight
    /// rows past the last 4, activation rows past the last 3 / 6, and shared dimensions
    /// with a tail past the last 8 / 32.
    #[test]
    fn half_products_round_activations() {
        if super::super::level().is_none() {
            eprintln!("this CPU lacks AVX2: the dense kernels are not in use");
            return;
        }
        if !bf16_hardware(super::super::Level::Avx512) {
            eprintln!("this CPU lacks AVX512_BF16: the vdpbf16ps kernels are not tested");
        }
        for (m, n, k) in [
            (1, 37, 64),
            (2, 9, 31),
            (5, 22, 96),
            (31, 7, 33),
            (32, 130, 48),
            (37, 66, 1030),
            (70, 13, 768),
        ] {
            for dt in [DType::F16, DType::BF16] {
                let (bytes, xs, want) = case(m, n, k, dt);
                let mut rounded = vec![0f32; xs.len()];
                let reference: fn(f32) -> f32 = if dt == DType::F16 {
                    round_to_f16(&xs, &mut rounded);
                    |v| half::f16::from_f32(v).to_f32()
                } else {
                    round_to_bf16(&xs, &mut rounded);
                    |v| half::bf16::from_f32(v).to_f32()
                };
                for (a, b) in xs.iter().zip(&rounded) {
                    assert_eq!(reference(*a), *b, "{dt:?} rounding {a}");
                }
                let format = Float::of(dt).unwrap();
                let mut outs = Vec::new();
                for level in super::super::Level::ALL
                    .into_iter()
                    .filter(|l| l.supported())
                {
                    let mut got = vec![f32::NAN; m * n];
                    let mut again = vec![f32::NAN; m * n];
                    matmul_at(level, format, &bytes, n, k, &xs, m, &mut got);
                    matmul_at(level, format, &bytes, n, k, &rounded, m, &mut again);
                    let what = format!("{level:?} {dt:?} {m}x{n}x{k}");
                    assert_eq!(got, again, "{what}: activations not rounded");
                    assert_close(&got, &want, &what);
                    outs.push(got);
                }
                for o in &outs[1..] {
                    assert_close(o, &outs[0], &format!("{dt:?} levels agree at {m}x{n}x{k}"));
                }
            }
        }
    }

    /// Rounding to f16 at its edges, both ways it is kept (widened back, and as the
    /// prompt kernel's bits), against `half`: ties to even, the largest finite value and
    /// past it to infinity, subnormals, signed zero, a NaN kept a NaN; lengths with and
    /// without a tail past the last 8.
    #[test]
    fn f16_rounding_edges() {
        if !super::super::avx2_supported() {
            eprintln!("this CPU lacks AVX2 and F16C: the vector rounding is not in use");
        }
        let edges = [
            2049.0f32,
            2051.0,
            65504.0,
            65519.0,
            65520.0,
            -70000.0,
            1e-7,
            -3e-8,
            6.1e-5,
            -0.0,
            0.1,
            f32::NAN,
            f32::INFINITY,
            1.0 + 1.0 / 4096.0,
            3.0e-9,
        ];
        for len in [edges.len(), 8, 3] {
            let x = &edges[..len];
            let mut wide = vec![0f32; len];
            round_to_f16(x, &mut wide);
            for (v, r) in x.iter().zip(&wide) {
                let want = half::f16::from_f32(*v).to_f32();
                assert!(
                    want.to_bits() == r.to_bits() || (want.is_nan() && r.is_nan()),
                    "{v} rounded to {r}, not {want}"
                );
            }
            #[cfg(target_arch = "x86_64")]
            if super::super::avx2_supported() {
                let mut bits = vec![0u16; len];
                f16_bits(x, &mut bits);
                for (v, b) in x.iter().zip(&bits) {
                    let want = half::f16::from_f32(*v);
                    let got = half::f16::from_bits(*b);
                    assert!(
                        want.to_bits() == *b || (want.is_nan() && got.is_nan()),
                        "{v} as f16 bits {b:#06x}, not {:#06x}",
                        want.to_bits()
                    );
                }
            }
        }
    }
}
