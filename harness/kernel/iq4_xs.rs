//! quantbench's product for IQ4_XS matrices (`format/ggml_blocks.rs`'s [`BlockMatrix`]
//! of that type): `y = x · Wᵀ (+ bias)` as ggml's CPU backend computes it. The
//! activations are rounded to `q8_K` super-blocks first (ggml's vec-dot type for
//! IQ4_XS: `quantize_row_q8_K_ref`, `iscale = −127 / max`, `nearest_int` — to the
//! nearest, ties to even — at most 127, `d = 1 / iscale`); each super-block's codes
//! (`kvalues_iq4nl`) times the activations are summed in integers, eight lanes of four
//! products a 32-weight block, each block's sum times its 6-bit scale (minus 32); a
//! lane's sum goes to float and is added, times `d_x · d_y`, into one accumulator of
//! eight lanes by fused multiply-add, and the lanes are summed in ggml's `hsum_float_8`
//! order — `ggml_vec_dot_iq4_xs_q8_K`'s AVX2 path (ggml-cpu/arch/x86/quants.c), which
//! llama.cpp runs on x86 CPUs with AVX2 or AVX-512. The same float operations in the
//! same order, so a product here is llama.cpp's to the bit (the AVX2 kernel and the
//! portable one are held to each other by the tests below, the portable one to
//! llama.cpp's tokens by tests/llama_cpp_engine.rs).

use crate::format::ggml_blocks::QK_K;
use crate::format::mxfp4::KVALUES_IQ4NL;

/// Bytes of a `block_iq4_xs`.
pub const BLOCK_BYTES: usize = 136;

/// Activations rounded to `q8_K` blocks as ggml's `quantize_row_q8_K_ref` rounds them.
#[derive(Debug, Default)]
pub struct Q8K {
    pub qs: Vec<i8>,
    /// Each super-block's `d` (f32).
    pub d: Vec<f32>,
}

impl Q8K {
    /// Round `x` (a multiple of 256 values) into these buffers, reusing their memory.
    pub fn quantize_into(&mut self, x: &[f32]) {
        self.qs.resize(x.len(), 0);
        self.d.resize(x.len() / QK_K, 0.0);
        for ((xb, qb), d) in x
            .chunks_exact(QK_K)
            .zip(self.qs.chunks_exact_mut(QK_K))
            .zip(&mut self.d)
        {
            let (mut max, mut amax) = (0f32, 0f32);
            for &v in xb {
                if v.abs() > amax {
                    amax = v.abs();
                    max = v;
                }
            }
            if amax == 0.0 {
                *d = 0.0;
                qb.fill(0);
                continue;
            }
            let iscale = -127f32 / max;
            for (q, &v) in qb.iter_mut().zip(xb) {
                // ggml's nearest_int: the float's bits after adding 1.5 · 2^23.
                let r = ((iscale * v + 12_582_912.0).to_bits() as i32 & 0x007f_ffff) - 0x0040_0000;
                *q = r.min(127) as i8;
            }
            *d = 1.0 / iscale;
        }
    }
}

thread_local! {
    /// The calling thread's rounded activations, reused from product to product.
    static ACTS: std::cell::RefCell<Q8K> = const {
        std::cell::RefCell::new(Q8K { qs: Vec::new(), d: Vec::new() })
    };
}

/// Block `ib`'s scale (6 bits, minus 32) of super-block `b`.
#[inline(always)]
fn scale(b: &[u8], ib: usize) -> i32 {
    let sh = u16::from_le_bytes([b[2], b[3]]);
    (((b[4 + ib / 2] >> (4 * (ib % 2))) & 0xf) as i32 | ((((sh >> (2 * ib)) & 3) as i32) << 4)) - 32
}

/// `hsum_float_8`: the high half onto the low, then movehl, then movehdup.
#[inline(always)]
pub(crate) fn hsum8(v: [f32; 8]) -> f32 {
    let r: [f32; 4] = std::array::from_fn(|i| v[4 + i] + v[i]);
    (r[0] + r[2]) + (r[1] + r[3])
}

/// One weight row (whole super-blocks) against one row of rounded activations, lane by
/// lane as the AVX2 path computes it.
pub fn dot_portable(w: &[u8], q: &[i8], d: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    for (ibl, b) in w.chunks_exact(BLOCK_BYTES).enumerate() {
        let dx = half::f16::from_le_bytes([b[0], b[1]]).to_f32();
        let q8 = &q[ibl * QK_K..(ibl + 1) * QK_K];
        let mut lanes = [0i32; 8];
        for ib in 0..QK_K / 32 {
            let ls = scale(b, ib);
            let qs = &b[8 + 16 * ib..8 + 16 * ib + 16];
            for (l, lane) in lanes.iter_mut().enumerate() {
                let mut s = 0i32;
                for p in 4 * l..4 * l + 4 {
                    let code = if p < 16 { qs[p] & 0xf } else { qs[p - 16] >> 4 };
                    s += KVALUES_IQ4NL[code as usize] as i32 * q8[32 * ib + p] as i32;
                }
                *lane += ls * s;
            }
        }
        let scale = dx * d[ibl];
        for (a, &s) in acc.iter_mut().zip(&lanes) {
            *a = scale.mul_add(s as f32, *a);
        }
    }
    hsum8(acc)
}

/// The super-block's f16 scale at `b` by F16C's conversion (exact, as ggml's
/// `GGML_CPU_FP16_TO_FP32`).
///
/// # Safety
/// F16C; `b` points at two readable bytes.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "f16c")]
pub(crate) unsafe fn f16_to_f32(b: *const u8) -> f32 {
    use std::arch::x86_64::*;
    let h = u16::from_le_bytes([*b, *b.add(1)]);
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h as i32)))
}

/// A block's 32 codes as their table values (low nibbles, then high), by byte shuffles:
/// written out in place (a closure would not inherit the caller's target features).
#[cfg(target_arch = "x86_64")]
macro_rules! lut {
    ($values:ident, $m4:ident, $bits:expr) => {
        _mm256_set_m128i(
            _mm_shuffle_epi8($values, _mm_and_si128(_mm_srli_epi16($bits, 4), $m4)),
            _mm_shuffle_epi8($values, _mm_and_si128($bits, $m4)),
        )
    };
}

/// [`dot_portable`] with ggml's AVX2 instructions.
///
/// # Safety
/// AVX2 and FMA; `w` holds whole blocks, `q` 256 activations and `d` one scale a block.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_avx2(w: &[u8], q: &[i8], d: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let values = _mm_loadu_si128(KVALUES_IQ4NL.as_ptr() as *const __m128i);
    let m4 = _mm_set1_epi8(0x0f);
    let mut acc = _mm256_setzero_ps();
    let nb = w.len() / BLOCK_BYTES;
    debug_assert!(q.len() >= nb * QK_K && d.len() >= nb);
    for (ibl, &dy) in d.iter().enumerate().take(nb) {
        let b = w.as_ptr().add(ibl * BLOCK_BYTES);
        let mut qs = b.add(8);
        let mut q8 = q.as_ptr().add(ibl * QK_K);
        let mut sh = u16::from_le_bytes([*b.add(2), *b.add(3)]);
        let mut sum1 = _mm256_setzero_si256();
        let mut sum2 = _mm256_setzero_si256();
        for ib in (0..QK_K / 32).step_by(2) {
            let bits1 = _mm_loadu_si128(qs as *const __m128i);
            let bits2 = _mm_loadu_si128(qs.add(16) as *const __m128i);
            qs = qs.add(32);
            let a1 = _mm256_loadu_si256(q8 as *const __m256i);
            let a2 = _mm256_loadu_si256(q8.add(32) as *const __m256i);
            q8 = q8.add(64);
            let (w1, w2) = (lut!(values, m4, bits1), lut!(values, m4, bits2));
            let p1 = _mm256_maddubs_epi16(_mm256_sign_epi8(w1, w1), _mm256_sign_epi8(a1, w1));
            let p2 = _mm256_maddubs_epi16(_mm256_sign_epi8(w2, w2), _mm256_sign_epi8(a2, w2));
            let sl = *b.add(4 + ib / 2);
            let ls1 = ((sl & 0xf) as i16 | ((sh << 4) & 0x30) as i16) - 32;
            let ls2 = ((sl >> 4) as i16 | ((sh << 2) & 0x30) as i16) - 32;
            sh >>= 4;
            sum1 = _mm256_add_epi32(_mm256_madd_epi16(p1, _mm256_set1_epi16(ls1)), sum1);
            sum2 = _mm256_add_epi32(_mm256_madd_epi16(p2, _mm256_set1_epi16(ls2)), sum2);
        }
        let dx = f16_to_f32(b);
        acc = _mm256_fmadd_ps(
            _mm256_set1_ps(dx * dy),
            _mm256_cvtepi32_ps(_mm256_add_epi32(sum1, sum2)),
            acc,
        );
    }
    let mut v = [0f32; 8];
    _mm256_storeu_ps(v.as_mut_ptr(), acc);
    hsum8(v)
}

/// [`dot_avx2`] of one weight row against `C` activation rows at once (a prompt's
/// columns): each block's codes looked up once and taken against every column, each
/// column with its own integer lane sums and accumulator — the same operations per
/// (row, column) as [`dot_avx2`], so the same bits. `out[c]` receives column `c`'s dot.
///
/// # Safety
/// AVX2 and FMA; `w` holds whole blocks; `q` holds `C` rows of `k` activations (the first
/// at `q[0]`, `k` apart) and `d` their `C` rows of `k / 256` scales.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dots_avx2<const C: usize>(
    w: &[u8],
    q: &[i8],
    d: &[f32],
    k: usize,
    out: &mut [f32; C],
) {
    dots_body::<C>(w, q, d, k, out)
}

/// [`dots_avx2`] compiled for AVX-512 CPUs: the same 256-bit instructions (so the same
/// bits), with the 32 vector registers AVX-512VL gives, where the AVX2 build runs out
/// of its 16 and spills the tile's sums.
///
/// # Safety
/// As [`dots_avx2`], and AVX-512 F/BW/VL.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
pub unsafe fn dots_avx512<const C: usize>(
    w: &[u8],
    q: &[i8],
    d: &[f32],
    k: usize,
    out: &mut [f32; C],
) {
    dots_body::<C>(w, q, d, k, out)
}

/// The body of [`dots_avx2`] / [`dots_avx512`], inlined into each.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(clippy::needless_range_loop)]
unsafe fn dots_body<const C: usize>(w: &[u8], q: &[i8], d: &[f32], k: usize, out: &mut [f32; C]) {
    use std::arch::x86_64::*;
    let values = _mm_loadu_si128(KVALUES_IQ4NL.as_ptr() as *const __m128i);
    let m4 = _mm_set1_epi8(0x0f);
    let nb = w.len() / BLOCK_BYTES;
    debug_assert!(q.len() >= (C - 1) * k + nb * QK_K && d.len() >= (C - 1) * (k / QK_K) + nb);
    let kb = k / QK_K;
    let mut acc = [_mm256_setzero_ps(); C];
    for ibl in 0..nb {
        let b = w.as_ptr().add(ibl * BLOCK_BYTES);
        let mut qs = b.add(8);
        let mut sh = u16::from_le_bytes([*b.add(2), *b.add(3)]);
        // One integer sum a column: ggml's two (even and odd blocks) added at the end give
        // the same exact integers.
        let mut sum = [_mm256_setzero_si256(); C];
        for ib in (0..QK_K / 32).step_by(2) {
            let bits1 = _mm_loadu_si128(qs as *const __m128i);
            let bits2 = _mm_loadu_si128(qs.add(16) as *const __m128i);
            qs = qs.add(32);
            let (w1, w2) = (lut!(values, m4, bits1), lut!(values, m4, bits2));
            let (u1, u2) = (_mm256_sign_epi8(w1, w1), _mm256_sign_epi8(w2, w2));
            let sl = *b.add(4 + ib / 2);
            let ls1 = _mm256_set1_epi16(((sl & 0xf) as i16 | ((sh << 4) & 0x30) as i16) - 32);
            let ls2 = _mm256_set1_epi16(((sl >> 4) as i16 | ((sh << 2) & 0x30) as i16) - 32);
            sh >>= 4;
            for c in 0..C {
                let a = q.as_ptr().add(c * k + ibl * QK_K + 32 * ib);
                let a1 = _mm256_loadu_si256(a as *const __m256i);
                let a2 = _mm256_loadu_si256(a.add(32) as *const __m256i);
                let p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(u1, _mm256_sign_epi8(a1, w1)), ls1);
                let p2 = _mm256_madd_epi16(_mm256_maddubs_epi16(u2, _mm256_sign_epi8(a2, w2)), ls2);
                sum[c] = _mm256_add_epi32(sum[c], _mm256_add_epi32(p1, p2));
            }
        }
        let dx = f16_to_f32(b);
        for c in 0..C {
            acc[c] = _mm256_fmadd_ps(
                _mm256_set1_ps(dx * d[c * kb + ibl]),
                _mm256_cvtepi32_ps(sum[c]),
                acc[c],
            );
        }
    }
    for c in 0..C {
        let mut v = [0f32; 8];
        _mm256_storeu_ps(v.as_mut_ptr(), acc[c]);
        out[c] = hsum8(v);
    }
}

/// Whether the CPU converts f16 in hardware (every AVX2 CPU made does; checked all the
/// same, the kernels convert the scales with it).
pub(crate) fn has_f16c() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("f16c")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// One weight row's dot with a row of q8_K activations and their scales.
pub(crate) type BlockDot = dyn Fn(&[u8], &[i8], &[f32]) -> f32 + Sync;

/// One weight row's dots with [`TILE`] rows of activations (`k` apart) and their scales.
pub(crate) type TileDot = dyn Fn(&[u8], &[i8], &[f32], usize, &mut [f32; TILE]) + Sync;

/// A prompt's columns taken together against each weight row: eight (the AVX-512 build's
/// 32 registers hold their sums; the AVX2 build runs two tiles of four).
pub(crate) const TILE: usize = 8;

/// Weight rows per parallel unit.
const ROWS: usize = 16;

/// `y[m × n] = x[m × k] · Wᵀ (+ bias)` for a k-quant-blocked type whose product is one
/// `dot(row, q8_K activations, scales)` per (row, column), or `tile` of them at once: the
/// activations rounded to q8_K once, weight rows shared out over the pool in units of
/// 16, each unit writing its own outputs in place; a prompt's columns [`TILE`] at a time
/// where the type has a tile, the rest one by one.
#[allow(clippy::too_many_arguments)]
pub(crate) fn by_dots(
    w: &[u8],
    (n, k, block_bytes): (usize, usize, usize),
    x: &[f32],
    m: usize,
    bias: Option<&[f32]>,
    y: &mut [f32],
    (dot, tile): (&BlockDot, Option<&TileDot>),
) {
    assert_eq!(x.len(), m * k, "activations are not {m} x {k}");
    assert_eq!(y.len(), m * n, "output is not {m} x {n}");
    let nb = k / QK_K;
    let row_bytes = nb * block_bytes;
    assert_eq!(w.len(), n * row_bytes, "weights are not {n} rows of {k}");
    ACTS.with(|cell| {
        let mut acts = cell.borrow_mut();
        acts.quantize_into(x);
        let acts = &*acts;
        let out = super::Disjoint::new(y);
        let unit = |u: usize| {
            let (r0, r1) = (u * ROWS, n.min(u * ROWS + ROWS));
            let mut t = 0;
            while let Some(tile) = tile.filter(|_| t + TILE <= m) {
                for r in r0..r1 {
                    let mut v = [0f32; TILE];
                    let wr = &w[r * row_bytes..(r + 1) * row_bytes];
                    tile(wr, &acts.qs[t * k..], &acts.d[t * nb..], k, &mut v);
                    for (c, v) in v.into_iter().enumerate() {
                        // SAFETY: output (t + c, r) is this unit's alone.
                        unsafe { out.part((t + c) * n + r, 1)[0] = v + bias.map_or(0.0, |b| b[r]) };
                    }
                }
                t += TILE;
            }
            for t in t..m {
                let (q, d) = (&acts.qs[t * k..(t + 1) * k], &acts.d[t * nb..(t + 1) * nb]);
                // SAFETY: outputs (t, r0 .. r1) are this unit's alone.
                let o = unsafe { out.part(t * n + r0, r1 - r0) };
                for (i, r) in (r0..r1).enumerate() {
                    o[i] = dot(&w[r * row_bytes..(r + 1) * row_bytes], q, d)
                        + bias.map_or(0.0, |b| b[r]);
                }
            }
        };
        let units = n.div_ceil(ROWS);
        if units * m >= 4 {
            candle_core::utils::barrier_pool().execute_chunked(units, |range| range.for_each(unit));
        } else {
            (0..units).for_each(unit);
        }
    });
}

/// A tiled type's products: the portable dot, and on x86-64 its single-column dots
/// (AVX2 build, AVX-512 build) and its tiles ([`TILE`] columns in the AVX-512 build, half
/// of them in the AVX2 one, whose 16 registers hold four columns' sums). Every one gives
/// a column the same bits.
/// `C` columns of activations (`k` apart) and their scales against one weight row.
pub(crate) type ColumnsKernel<const C: usize> =
    unsafe fn(&[u8], &[i8], &[f32], usize, &mut [f32; C]);

pub(crate) struct Tiled {
    pub block_bytes: usize,
    pub portable: fn(&[u8], &[i8], &[f32]) -> f32,
    #[cfg(target_arch = "x86_64")]
    pub one_avx2: unsafe fn(&[u8], &[i8], &[f32]) -> f32,
    #[cfg(target_arch = "x86_64")]
    pub one_avx512: unsafe fn(&[u8], &[i8], &[f32]) -> f32,
    #[cfg(target_arch = "x86_64")]
    pub half_avx2: ColumnsKernel<{ TILE / 2 }>,
    #[cfg(target_arch = "x86_64")]
    pub tile_avx512: ColumnsKernel<TILE>,
}

/// `y[m × n] = x[m × k] · Wᵀ (+ bias)` for the blocks `w` (`n` rows of `k`) of a tiled
/// type: [`by_dots`] with the widest of `t`'s kernels this CPU runs.
#[allow(clippy::too_many_arguments)]
pub(crate) fn tiled_matmul(
    t: &'static Tiled,
    w: &[u8],
    (n, k): (usize, usize),
    x: &[f32],
    m: usize,
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    let shape = (n, k, t.block_bytes);
    #[cfg(target_arch = "x86_64")]
    if super::level().is_some() && has_f16c() {
        let avx512 = super::level() == Some(super::Level::Avx512);
        // SAFETY (both closures): level() checked AVX2 and FMA, has_f16c F16C, and
        // AVX-512 for the AVX-512 builds; by_dots hands whole rows and their activations,
        // TILE columns of them to a tile.
        let dot = move |w: &[u8], q: &[i8], d: &[f32]| unsafe {
            if avx512 {
                (t.one_avx512)(w, q, d)
            } else {
                (t.one_avx2)(w, q, d)
            }
        };
        let tile = move |w: &[u8], q: &[i8], d: &[f32], k: usize, o: &mut [f32; TILE]| unsafe {
            if avx512 {
                (t.tile_avx512)(w, q, d, k, o)
            } else {
                let nb = k / QK_K;
                let (a, b) = o.split_at_mut(TILE / 2);
                (t.half_avx2)(w, q, d, k, a.try_into().expect("half a tile"));
                let (q2, d2) = (&q[TILE / 2 * k..], &d[TILE / 2 * nb..]);
                (t.half_avx2)(w, q2, d2, k, b.try_into().expect("half a tile"));
            }
        };
        return by_dots(w, shape, x, m, bias, y, (&dot, Some(&tile)));
    }
    by_dots(w, shape, x, m, bias, y, (&t.portable, None));
}

/// IQ4_XS's kernels.
static IQ4_XS: Tiled = Tiled {
    block_bytes: BLOCK_BYTES,
    portable: dot_portable,
    #[cfg(target_arch = "x86_64")]
    one_avx2: dot_avx2,
    #[cfg(target_arch = "x86_64")]
    one_avx512: dot_avx2,
    #[cfg(target_arch = "x86_64")]
    half_avx2: dots_avx2::<{ TILE / 2 }>,
    #[cfg(target_arch = "x86_64")]
    tile_avx512: dots_avx512::<TILE>,
};

/// `y[m × n] = x[m × k] · Wᵀ (+ bias)` for IQ4_XS blocks `w` (`n` rows of `k`): the
/// activations rounded once, a prompt's columns eight at a time against each weight row.
pub fn matmul(
    w: &[u8],
    n: usize,
    k: usize,
    x: &[f32],
    m: usize,
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    assert_eq!(
        w.len(),
        n * k / QK_K * BLOCK_BYTES,
        "weights are not {n} x {k} IQ4_XS"
    );
    tiled_matmul(&IQ4_XS, w, (n, k), x, m, bias, y);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocks(n: usize, seed: u32) -> Vec<u8> {
        let mut s = seed;
        let mut v = vec![0u8; n * BLOCK_BYTES];
        for b in v.iter_mut() {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            *b = (s >> 24) as u8;
        }
        for blk in v.chunks_exact_mut(BLOCK_BYTES) {
            // A finite, modest f16 scale.
            let d = half::f16::from_f32(0.001 * (blk[5] as f32 + 1.0));
            blk[..2].copy_from_slice(&d.to_le_bytes());
        }
        v
    }

    /// The AVX2 kernel and the portable one agree to the bit; both equal the
    /// dequantized row against the dequantized activations within rounding.
    #[test]
    fn the_kernels_agree_to_the_bit_and_compute_the_product() {
        let k = 4 * QK_K;
        let w = blocks(k / QK_K * 3, 7);
        let x: Vec<f32> = (0..k)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 13.0)
            .collect();
        let mut a = Q8K::default();
        a.quantize_into(&x);
        for r in 0..3 {
            let wr = &w[r * 4 * BLOCK_BYTES..(r + 1) * 4 * BLOCK_BYTES];
            let p = dot_portable(wr, &a.qs, &a.d);
            #[cfg(target_arch = "x86_64")]
            if crate::kernel::level().is_some() {
                let s = unsafe { dot_avx2(wr, &a.qs, &a.d) };
                assert_eq!(p.to_bits(), s.to_bits(), "row {r}: {p} vs {s}");
            }
            let mut wd = vec![0f32; k];
            crate::format::ggml_blocks::dequantize(crate::format::GgmlType::Iq4Xs, wr, &mut wd);
            let xd: Vec<f32> =
                a.qs.iter()
                    .enumerate()
                    .map(|(i, &q)| q as f32 * a.d[i / QK_K])
                    .collect();
            let want: f64 = wd.iter().zip(&xd).map(|(a, b)| *a as f64 * *b as f64).sum();
            assert!(
                ((p as f64) - want).abs() <= 1e-4 * want.abs().max(1.0),
                "{p} vs {want}"
            );
        }
    }

    /// The four-column tile gives each column [`dot_avx2`]'s bits.
    #[test]
    #[allow(clippy::needless_range_loop)]
    fn the_tile_gives_each_column_the_single_dots_bits() {
        #[cfg(target_arch = "x86_64")]
        if crate::kernel::level().is_some() {
            let k = 2 * QK_K;
            let w = blocks(2, 9);
            let x: Vec<f32> = (0..4 * k)
                .map(|i| ((i * 53 % 97) as f32 - 48.0) / 7.0)
                .collect();
            let mut a = Q8K::default();
            a.quantize_into(&x);
            let mut v = [0f32; 4];
            unsafe { dots_avx2::<4>(&w, &a.qs, &a.d, k, &mut v) };
            for c in 0..4 {
                let one = unsafe { dot_avx2(&w, &a.qs[c * k..], &a.d[c * 2..]) };
                assert_eq!(one.to_bits(), v[c].to_bits(), "column {c}");
            }
            if crate::kernel::level() == Some(crate::kernel::Level::Avx512) {
                let mut v5 = [0f32; 4];
                unsafe { dots_avx512::<4>(&w, &a.qs, &a.d, k, &mut v5) };
                assert_eq!(v5.map(f32::to_bits), v.map(f32::to_bits));
            }
        }
    }

    /// q8_K rounds half to even (ggml's `nearest_int`) and keeps `1 / iscale`.
    #[test]
    fn activations_round_as_ggmls_q8_k() {
        let mut x = vec![0f32; QK_K];
        x[0] = -127.0;
        x[1] = 2.5;
        x[2] = 3.5;
        x[3] = -2.5;
        let mut a = Q8K::default();
        a.quantize_into(&x);
        // iscale = -127 / -127 = 1.
        assert_eq!(&a.qs[..4], &[-127, 2, 4, -2]);
        assert_eq!(a.d[0], 1.0);
    }
}
