//! quantbench's product for IQ3_S matrices (`format/ggml_blocks.rs`'s `BlockMatrix` of
//! that type): `y = x · Wᵀ (+ bias)` as ggml's CPU backend computes it
//! (`ggml_vec_dot_iq3_s_q8_K`'s AVX2 path, ggml-cpu/arch/x86/quants.c). The activations
//! are rounded to `q8_K` super-blocks (`kernel/iq4_xs.rs`'s [`super::iq4_xs::Q8K`]); per
//! 32 weights, the eight grid entries `iq3s_grid[qs | qh bit]` (4 unsigned values each,
//! 1 … 15) times the activations with the block's sign bits applied to them, summed in
//! integers in eight lanes of four products, times the block's odd scale `2·s + 1`; a
//! lane's sum goes to float and is added, times `d_x · d_y`, into one accumulator of eight
//! lanes by fused multiply-add, summed in ggml's `hsum_float_8` order. The same float
//! operations in the same order, so llama.cpp's bits (the two paths here are held to
//! each other and to the dequantized product by the tests below).

use super::iq4_xs::{hsum8, tiled_matmul, Tiled, TILE};
use crate::format::ggml_blocks::QK_K;
use crate::format::ggml_tables::IQ3S_GRID;

/// Bytes of a `block_iq3_s`: d, qs[64], qh[8], signs[32], scales[4].
pub const BLOCK_BYTES: usize = 110;

/// Weight `p` (0 .. 32) of block `ib32` of super-block `b`, as (unsigned grid value,
/// negative).
#[inline(always)]
fn weight(b: &[u8], ib32: usize, p: usize) -> (i32, bool) {
    let (qs, qh, signs) = (&b[2..66], &b[66..74], &b[74..106]);
    let l = p / 4;
    let idx = qs[8 * ib32 + l] as usize | (((qh[ib32] as usize) << (8 - l)) & 256);
    let g = IQ3S_GRID[idx].to_le_bytes()[p % 4] as i32;
    (g, signs[4 * ib32 + p / 8] & (1 << (p % 8)) != 0)
}

/// One weight row (whole super-blocks) against one row of rounded activations, lane by
/// lane as the AVX2 path computes it.
pub fn dot_portable(w: &[u8], q: &[i8], d: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    for (ibl, b) in w.chunks_exact(BLOCK_BYTES).enumerate() {
        let dx = half::f16::from_le_bytes([b[0], b[1]]).to_f32();
        let q8 = &q[ibl * QK_K..(ibl + 1) * QK_K];
        let mut lanes = [0i32; 8];
        for ib32 in 0..QK_K / 32 {
            let sc = b[106 + ib32 / 2];
            let ls = 2 * (if ib32 % 2 == 0 { sc & 0xf } else { sc >> 4 }) as i32 + 1;
            for (l, lane) in lanes.iter_mut().enumerate() {
                let mut s = 0i32;
                for p in 4 * l..4 * l + 4 {
                    let (g, neg) = weight(b, ib32, p);
                    let a = q8[32 * ib32 + p] as i32;
                    s += g * if neg { -a } else { a };
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

/// [`dot_portable`] with ggml's AVX2 instructions: the grid indices built in vectors and
/// the entries gathered by index, the sign bits spread to bytes by a shuffle and applied
/// to the activations.
///
/// # Safety
/// AVX2, FMA and F16C; `w` holds whole blocks, `q` their activations, `d` one scale a
/// block.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_avx2(w: &[u8], q: &[i8], d: &[f32]) -> f32 {
    let mut out = [0f32; 1];
    dots_body::<1>(w, q, d, q.len(), &mut out);
    out[0]
}

/// `C` columns of activations against one weight row, each column's arithmetic exactly
/// [`dot_avx2`]'s (so its bits), the grid entries and sign masks of a block built once
/// for all `C`. `out[c]` receives column `c`'s dot.
///
/// # Safety
/// AVX2, FMA and F16C; `w` holds whole blocks; `q` holds `C` rows of `k` activations (the
/// first at `q[0]`, `k` apart) and `d` their `C` rows of `k / 256` scales.
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

/// [`dots_avx2`] compiled for AVX-512 CPUs (the same 256-bit instructions and bits, 32
/// vector registers for the tile's sums).
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

/// The grid entries of blocks `ib32` and `ib32 + 1` (16 groups of 4): their indices
/// `qs | qh bit << 8` built in two vectors as ggml builds them, the entries loaded.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn grid_pair(
    b: *const u8,
    ib32: usize,
) -> (std::arch::x86_64::__m256i, std::arch::x86_64::__m256i) {
    use std::arch::x86_64::*;
    let (qs, qh) = (b.add(2 + 8 * ib32), b.add(66 + ib32));
    let idx_l = _mm256_cvtepu8_epi16(_mm_loadu_si128(qs as *const __m128i));
    let shift = _mm256_set_epi32(1, 2, 3, 4, 5, 6, 7, 8);
    let bit = _mm256_set1_epi32(256);
    let hi = |h: u8| _mm256_and_si256(_mm256_sllv_epi32(_mm256_set1_epi32(h as i32), shift), bit);
    let v0 = _mm256_or_si256(
        hi(*qh),
        _mm256_cvtepi16_epi32(_mm256_castsi256_si128(idx_l)),
    );
    let v1 = _mm256_or_si256(
        hi(*qh.add(1)),
        _mm256_cvtepi16_epi32(_mm256_extracti128_si256(idx_l, 1)),
    );
    let mut idx = [0u32; 16];
    _mm256_storeu_si256(idx.as_mut_ptr() as *mut __m256i, v0);
    _mm256_storeu_si256(idx.as_mut_ptr().add(8) as *mut __m256i, v1);
    // SAFETY: every index is a byte with at most bit 8 set: below 512.
    let g = |i: usize| *IQ3S_GRID.get_unchecked(idx[i] as usize) as i32;
    (
        _mm256_set_epi32(g(7), g(6), g(5), g(4), g(3), g(2), g(1), g(0)),
        _mm256_set_epi32(g(15), g(14), g(13), g(12), g(11), g(10), g(9), g(8)),
    )
}

/// The body of [`dot_avx2`] / [`dots_avx2`] / [`dots_avx512`], inlined into each.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(clippy::needless_range_loop)]
unsafe fn dots_body<const C: usize>(w: &[u8], q: &[i8], d: &[f32], k: usize, out: &mut [f32; C]) {
    use std::arch::x86_64::*;
    const MASK1: [u8; 32] = [
        0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3,
        3, 3,
    ];
    const MASK2: [u8; 32] = [
        1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128, 1,
        2, 4, 8, 16, 32, 64, 128,
    ];
    let mask1 = _mm256_loadu_si256(MASK1.as_ptr() as *const __m256i);
    let mask2 = _mm256_loadu_si256(MASK2.as_ptr() as *const __m256i);
    let nb = w.len() / BLOCK_BYTES;
    let kb = k / QK_K;
    debug_assert!(q.len() >= (C - 1) * k + nb * QK_K && d.len() >= (C - 1) * kb + nb);
    let sgn = |b: *const u8, blk: usize| -> __m256i {
        let bits = (b.add(74 + 4 * blk) as *const i32).read_unaligned();
        let aux = _mm256_and_si256(_mm256_shuffle_epi8(_mm256_set1_epi32(bits), mask1), mask2);
        _mm256_cmpeq_epi8(aux, mask2)
    };
    let mut acc = [_mm256_setzero_ps(); C];
    for ibl in 0..nb {
        let b = w.as_ptr().add(ibl * BLOCK_BYTES);
        let mut sum = [_mm256_setzero_si256(); C];
        for ib32 in (0..QK_K / 32).step_by(2) {
            let (g1, g2) = grid_pair(b, ib32);
            let (s1, s2) = (sgn(b, ib32), sgn(b, ib32 + 1));
            let sc = *b.add(106 + ib32 / 2);
            let ls1 = _mm256_set1_epi16(2 * (sc & 0xf) as i16 + 1);
            let ls2 = _mm256_set1_epi16(2 * (sc >> 4) as i16 + 1);
            for c in 0..C {
                let a = q.as_ptr().add(c * k + ibl * QK_K + 32 * ib32);
                let a1 = _mm256_loadu_si256(a as *const __m256i);
                let a2 = _mm256_loadu_si256(a.add(32) as *const __m256i);
                let a1 = _mm256_sub_epi8(_mm256_xor_si256(s1, a1), s1);
                let a2 = _mm256_sub_epi8(_mm256_xor_si256(s2, a2), s2);
                let p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(g1, a1), ls1);
                let p2 = _mm256_madd_epi16(_mm256_maddubs_epi16(g2, a2), ls2);
                // One exact integer sum: ggml's two, added at the end, are the same
                // integers.
                sum[c] = _mm256_add_epi32(sum[c], _mm256_add_epi32(p1, p2));
            }
        }
        let dx = super::iq4_xs::f16_to_f32(b);
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

/// [`dot_avx2`] compiled for AVX-512 CPUs (the same bits).
///
/// # Safety
/// As [`dot_avx2`], and AVX-512 F/BW/VL.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
pub unsafe fn dot_avx512(w: &[u8], q: &[i8], d: &[f32]) -> f32 {
    let mut out = [0f32; 1];
    dots_body::<1>(w, q, d, q.len(), &mut out);
    out[0]
}

/// IQ3_S's kernels.
static IQ3_S: Tiled = Tiled {
    block_bytes: BLOCK_BYTES,
    portable: dot_portable,
    #[cfg(target_arch = "x86_64")]
    one_avx2: dot_avx2,
    #[cfg(target_arch = "x86_64")]
    one_avx512: dot_avx512,
    #[cfg(target_arch = "x86_64")]
    half_avx2: dots_avx2::<{ TILE / 2 }>,
    #[cfg(target_arch = "x86_64")]
    tile_avx512: dots_avx512::<TILE>,
};

/// `y[m × n] = x[m × k] · Wᵀ (+ bias)` for IQ3_S blocks `w` (`n` rows of `k`): a prompt's
/// columns eight at a time against each weight row, the rest one by one.
pub fn matmul(
    w: &[u8],
    n: usize,
    k: usize,
    x: &[f32],
    m: usize,
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    tiled_matmul(&IQ3_S, w, (n, k), x, m, bias, y);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::iq4_xs::Q8K;

    fn blocks(n: usize, seed: u32) -> Vec<u8> {
        let mut s = seed;
        let mut v = vec![0u8; n * BLOCK_BYTES];
        for b in v.iter_mut() {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            *b = (s >> 24) as u8;
        }
        for blk in v.chunks_exact_mut(BLOCK_BYTES) {
            let d = half::f16::from_f32(0.001 * (blk[7] as f32 + 1.0));
            blk[..2].copy_from_slice(&d.to_le_bytes());
        }
        v
    }

    /// The AVX2 kernel and the portable one agree to the bit; both compute the product
    /// of the dequantized row (ggml's values) and the rounded activations.
    #[test]
    fn the_kernels_agree_to_the_bit_and_compute_the_product() {
        let k = 3 * QK_K;
        let w = blocks(3 * 2, 11);
        let x: Vec<f32> = (0..k)
            .map(|i| ((i * 41 % 103) as f32 - 51.0) / 9.0)
            .collect();
        let mut a = Q8K::default();
        a.quantize_into(&x);
        for r in 0..2 {
            let wr = &w[r * 3 * BLOCK_BYTES..(r + 1) * 3 * BLOCK_BYTES];
            let p = dot_portable(wr, &a.qs, &a.d);
            #[cfg(target_arch = "x86_64")]
            if crate::kernel::level().is_some() {
                let s = unsafe { dot_avx2(wr, &a.qs, &a.d) };
                assert_eq!(p.to_bits(), s.to_bits(), "row {r}: {p} vs {s}");
            }
            let mut wd = vec![0f32; k];
            crate::format::ggml_blocks::dequantize(crate::format::GgmlType::Iq3S, wr, &mut wd);
            let want: f64 = wd
                .iter()
                .enumerate()
                .map(|(i, v)| *v as f64 * a.qs[i] as f64 * a.d[i / QK_K] as f64)
                .sum();
            assert!(
                ((p as f64) - want).abs() <= 1e-4 * want.abs().max(1.0),
                "{p} vs {want}"
            );
        }
    }

    /// The four-column tile gives each column the single dot's bits (both builds).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_tile_gives_each_column_the_single_dots_bits() {
        if crate::kernel::level().is_none() {
            return;
        }
        let k = 2 * QK_K;
        let w = blocks(2, 5);
        let x: Vec<f32> = (0..4 * k)
            .map(|i| ((i * 29 % 97) as f32 - 48.0) / 7.0)
            .collect();
        let mut a = Q8K::default();
        a.quantize_into(&x);
        let mut v = [0f32; 4];
        unsafe { dots_avx2::<4>(&w, &a.qs, &a.d, k, &mut v) };
        let avx512 = crate::kernel::level() == Some(crate::kernel::Level::Avx512);
        let mut v5 = [0f32; 4];
        if avx512 {
            unsafe { dots_avx512::<4>(&w, &a.qs, &a.d, k, &mut v5) };
        }
        for c in 0..4 {
            let one = dot_portable(&w, &a.qs[c * k..(c + 1) * k], &a.d[c * 2..c * 2 + 2]);
            assert_eq!(v[c].to_bits(), one.to_bits(), "column {c}");
            if avx512 {
                assert_eq!(v5[c].to_bits(), one.to_bits(), "column {c} (AVX-512 build)");
            }
        }
    }
}
