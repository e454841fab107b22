//! The AVX-512 VNNI micro-kernel: an R × C tile of outputs (R weight rows against C
//! activation rows), walking the shared dimension one 32-element block at a time.
//!
//! Each weight block is unpacked once into 32 unsigned bytes and multiplied against the
//! C activation blocks with `vpdpbusd` (u8 × i8, four products summed per 32-bit lane).
//! The format's offset (8, 16 or 128) is not subtracted from the weights: the lanes
//! start from `−offset × Σa` instead, computed once per activation block, so the inner
//! step per (row, column) is one `vpdpbusd`, one conversion and one fused multiply-add
//! with the product of the two block scales. A minimum (`q4_1`, `q5_1`) adds `m × d_a × Σa`.

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

use super::activations::{Activations, BLOCK};
use super::blocks::GgmlType;

/// How far ahead weights are prefetched: the same block of the weight row this many rows
/// on, two tiles ahead, into L1. Rows lie one after another, so this runs ahead of the
/// whole tile in memory order; measured on GPT-2 small's q4_0 decode (median of 5 runs),
/// 384 bytes ahead in the same row gave 151 tok/s, 2 KB ahead 194, 4 rows ahead 212,
/// 8 rows 217.
pub(super) const PREFETCH_ROWS: usize = 8;

/// A second prefetch, into L2, this many rows ahead: more memory requests in flight.
/// Decode (median of 4 runs): q8_0 116 -> 161 tok/s, q4_0 227 -> 230; in the dense
/// kernels f16 71 -> 98 and f32 42 -> 50. 32 and 64 rows were no better.
pub(super) const PREFETCH_L2_ROWS: usize = 16;

/// Features every function here needs (checked by `super::simd_supported`).
macro_rules! simd_fn {
    ($($item:item)*) => {$(
        #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
        $item
    )*};
}

/// The f16 at `p` as f32 (F16C); every x86 kernel here reads block scales with it.
#[inline(always)]
pub(super) unsafe fn f16_at(p: *const u8) -> f32 {
    let bits = std::ptr::read_unaligned(p as *const u16);
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
}

/// The block at `p` as 32 unsigned quants, its scale and its minimum.
#[inline(always)]
unsafe fn unpack<const F: u8>(p: *const u8) -> (__m256i, f32, f32) {
    let low4 = _mm256_set1_epi8(0x0F);
    let nibbles = |qs: *const u8| {
        let x = _mm_loadu_si128(qs as *const __m128i);
        _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(x, 4), x), low4)
    };
    let high_bits = |qh: *const u8| {
        let bits = std::ptr::read_unaligned(qh as *const u32);
        _mm256_and_si256(_mm256_movm_epi8(bits), _mm256_set1_epi8(0x10))
    };
    match GgmlType::from_u8(F) {
        GgmlType::Q4_0 => (nibbles(p.add(2)), f16_at(p), 0.0),
        GgmlType::Q4_1 => (nibbles(p.add(4)), f16_at(p), f16_at(p.add(2))),
        GgmlType::Q5_0 => (
            _mm256_or_si256(nibbles(p.add(6)), high_bits(p.add(2))),
            f16_at(p),
            0.0,
        ),
        GgmlType::Q5_1 => (
            _mm256_or_si256(nibbles(p.add(8)), high_bits(p.add(4))),
            f16_at(p),
            f16_at(p.add(2)),
        ),
        GgmlType::Q8_0 => (
            _mm256_xor_si256(
                _mm256_loadu_si256(p.add(2) as *const __m256i),
                _mm256_set1_epi8(-128),
            ),
            f16_at(p),
            0.0,
        ),
        _ => unreachable!(),
    }
}

/// The sum of 8 lanes.
#[inline(always)]
pub(super) unsafe fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_hadd_ps(s, s);
    _mm_cvtss_f32(_mm_hadd_ps(s, s))
}

/// Where a tile reads and writes.
pub struct Operands<'a> {
    /// Weight rows, `row_bytes` apart.
    pub weights: *const u8,
    pub row_bytes: usize,
    pub acts: &'a Activations,
    /// The output, `acts.rows × n`, row-major.
    pub out: *mut f32,
    pub n: usize,
}

simd_fn! {
    /// Outputs `[a_row, a_row + C) × [w_row, w_row + R)`.
    unsafe fn tile<const F: u8, const R: usize, const C: usize>(
        ops: &Operands,
        w_row: usize,
        a_row: usize,
    ) {
        let format = GgmlType::from_u8(F);
        let nb = ops.acts.blocks_per_row();
        let k = ops.acts.k;
        let offset = _mm256_set1_epi8(format.offset() as u8 as i8);
        let has_offset = format.offset() != 0;
        let has_min = !has_offset;
        let zero = _mm256_setzero_si256();
        let mut acc = [[_mm256_setzero_ps(); C]; R];
        let mut acc_min = [[0f32; C]; R];
        let qs = ops.acts.qs.as_ptr();
        let bytes = format.block_bytes();
        for b in 0..nb {
            let mut av = [zero; C];
            let mut start = [zero; C];
            let mut da = [0f32; C];
            let mut sa = [0f32; C];
            for c in 0..C {
                let row = a_row + c;
                av[c] = _mm256_loadu_si256(qs.add(row * k + b * BLOCK) as *const __m256i);
                da[c] = *ops.acts.scales.get_unchecked(row * nb + b);
                sa[c] = *ops.acts.sums.get_unchecked(row * nb + b);
                if has_offset {
                    start[c] = _mm256_sub_epi32(zero, _mm256_dpbusd_epi32(zero, offset, av[c]));
                }
            }
            for r in 0..R {
                let p = ops.weights.add((w_row + r) * ops.row_bytes + b * bytes);
                // Weights stream from memory once: ask for them ahead of use.
                _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(PREFETCH_ROWS * ops.row_bytes) as *const i8);
                _mm_prefetch::<_MM_HINT_T1>(p.wrapping_add(PREFETCH_L2_ROWS * ops.row_bytes) as *const i8);
                let (w, d, m) = unpack::<F>(p);
                for c in 0..C {
                    let dot = _mm256_dpbusd_epi32(start[c], w, av[c]);
                    acc[r][c] = _mm256_fmadd_ps(
                        _mm256_cvtepi32_ps(dot),
                        _mm256_set1_ps(d * da[c]),
                        acc[r][c],
                    );
                    if has_min {
                        acc_min[r][c] += m * sa[c];
                    }
                }
            }
        }
        for r in 0..R {
            for c in 0..C {
                *ops.out.add((a_row + c) * ops.n + w_row + r) = hsum(acc[r][c]) + acc_min[r][c];
            }
        }
    }

    /// Activation rows `[c0, m)` against weight rows `[r0, r1)`, in 4 × 4 tiles where
    /// they fit.
    pub unsafe fn rows<const F: u8>(ops: &Operands, (r0, r1): (usize, usize), (c0, m): (usize, usize)) {
        let mut c = c0;
        while c + 4 <= m {
            let mut r = r0;
            while r + 4 <= r1 {
                tile::<F, 4, 4>(ops, r, c);
                r += 4;
            }
            while r < r1 {
                tile::<F, 1, 4>(ops, r, c);
                r += 1;
            }
            c += 4;
        }
        while c < m {
            let mut r = r0;
            while r + 4 <= r1 {
                tile::<F, 4, 1>(ops, r, c);
                r += 4;
            }
            while r < r1 {
                tile::<F, 1, 1>(ops, r, c);
                r += 1;
            }
            c += 1;
        }
    }
}

/// The same tiles with AVX2 (no VNNI): the weights' quants are made signed (the offset
/// subtracted) for the offset formats, and each 32-pair block dot product is
/// `vpmaddwd(vpmaddubsw(|w|, sign(a, w)), 1)` — ggml's AVX2 trick, exact in i32 (a pair
/// of products is at most 2 × 128 × 127 = 32,512, inside i16) — then one conversion and
/// one fused multiply-add with the two block scales, as above. 4 weight rows by 2
/// activation rows per step (16 registers are the limit).
pub mod avx2 {
    use std::arch::x86_64::*;

    use super::{hsum, Operands, PREFETCH_L2_ROWS, PREFETCH_ROWS};
    use crate::kernel::activations::BLOCK;
    use crate::kernel::blocks::GgmlType;

    macro_rules! avx2_fn {
        ($($item:item)*) => {$(
            #[target_feature(enable = "avx2,fma,f16c")]
            $item
        )*};
    }

    /// 32 bytes, each 0x10 where bit j of the 32 bits at `qh` is set (q5's fifth bits).
    #[inline(always)]
    unsafe fn fifth_bits(qh: *const u8) -> __m256i {
        let bits = std::ptr::read_unaligned(qh as *const u32) as i32;
        let shuf = _mm256_set_epi64x(
            0x0303_0303_0303_0303,
            0x0202_0202_0202_0202,
            0x0101_0101_0101_0101,
            0,
        );
        let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(bits), shuf);
        let mask = _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe);
        let set = _mm256_cmpeq_epi8(_mm256_or_si256(bytes, mask), _mm256_set1_epi64x(-1));
        _mm256_and_si256(set, _mm256_set1_epi8(0x10))
    }

    /// The block at `p` as 32 quants — signed (offset subtracted) for the offset formats,
    /// unsigned for those with a minimum — its scale and its minimum.
    #[inline(always)]
    unsafe fn unpack<const F: u8>(p: *const u8) -> (__m256i, f32, f32) {
        let low4 = _mm256_set1_epi8(0x0F);
        let nibbles = |qs: *const u8| {
            let x = _mm_loadu_si128(qs as *const __m128i);
            _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(x, 4), x), low4)
        };
        match GgmlType::from_u8(F) {
            GgmlType::Q4_0 => (
                _mm256_sub_epi8(nibbles(p.add(2)), _mm256_set1_epi8(8)),
                super::f16_at(p),
                0.0,
            ),
            GgmlType::Q4_1 => (nibbles(p.add(4)), super::f16_at(p), super::f16_at(p.add(2))),
            GgmlType::Q5_0 => (
                _mm256_sub_epi8(
                    _mm256_or_si256(nibbles(p.add(6)), fifth_bits(p.add(2))),
                    _mm256_set1_epi8(16),
                ),
                super::f16_at(p),
                0.0,
            ),
            GgmlType::Q5_1 => (
                _mm256_or_si256(nibbles(p.add(8)), fifth_bits(p.add(4))),
                super::f16_at(p),
                super::f16_at(p.add(2)),
            ),
            GgmlType::Q8_0 => (
                _mm256_loadu_si256(p.add(2) as *const __m256i),
                super::f16_at(p),
                0.0,
            ),
            _ => unreachable!(),
        }
    }

    avx2_fn! {
        #[allow(clippy::needless_range_loop)]
        unsafe fn tile<const F: u8, const R: usize, const C: usize>(
            ops: &Operands,
            w_row: usize,
            a_row: usize,
        ) {
            let format = GgmlType::from_u8(F);
            let signed = format.offset() != 0;
            let nb = ops.acts.blocks_per_row();
            let k = ops.acts.k;
            let ones = _mm256_set1_epi16(1);
            let mut acc = [[_mm256_setzero_ps(); C]; R];
            let mut acc_min = [[0f32; C]; R];
            let qs = ops.acts.qs.as_ptr();
            let bytes = format.block_bytes();
            for b in 0..nb {
                let mut av = [_mm256_setzero_si256(); C];
                let mut da = [0f32; C];
                let mut sa = [0f32; C];
                for c in 0..C {
                    let row = a_row + c;
                    av[c] = _mm256_loadu_si256(qs.add(row * k + b * BLOCK) as *const __m256i);
                    da[c] = *ops.acts.scales.get_unchecked(row * nb + b);
                    sa[c] = *ops.acts.sums.get_unchecked(row * nb + b);
                }
                for r in 0..R {
                    let p = ops.weights.add((w_row + r) * ops.row_bytes + b * bytes);
                    _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(PREFETCH_ROWS * ops.row_bytes) as *const i8);
                    _mm_prefetch::<_MM_HINT_T1>(p.wrapping_add(PREFETCH_L2_ROWS * ops.row_bytes) as *const i8);
                    let (w, d, m) = unpack::<F>(p);
                    let aw = if signed { _mm256_sign_epi8(w, w) } else { w };
                    for c in 0..C {
                        let pairs = if signed {
                            _mm256_maddubs_epi16(aw, _mm256_sign_epi8(av[c], w))
                        } else {
                            _mm256_maddubs_epi16(w, av[c])
                        };
                        let dot = _mm256_madd_epi16(pairs, ones);
                        acc[r][c] = _mm256_fmadd_ps(
                            _mm256_cvtepi32_ps(dot),
                            _mm256_set1_ps(d * da[c]),
                            acc[r][c],
                        );
                        if !signed {
                            acc_min[r][c] += m * sa[c];
                        }
                    }
                }
            }
            for r in 0..R {
                for c in 0..C {
                    *ops.out.add((a_row + c) * ops.n + w_row + r) = hsum(acc[r][c]) + acc_min[r][c];
                }
            }
        }

        /// Activation rows `[c0, m)` against weight rows `[r0, r1)`, in 4 × 2 tiles where
        /// they fit.
        pub unsafe fn rows<const F: u8>(ops: &Operands, (r0, r1): (usize, usize), (c0, m): (usize, usize)) {
            let mut c = c0;
            while c < m {
                let two = m - c >= 2;
                let mut r = r0;
                while r + 4 <= r1 {
                    if two { tile::<F, 4, 2>(ops, r, c) } else { tile::<F, 4, 1>(ops, r, c) }
                    r += 4;
                }
                while r < r1 {
                    if two { tile::<F, 1, 2>(ops, r, c) } else { tile::<F, 1, 1>(ops, r, c) }
                    r += 1;
                }
                c += if two { 2 } else { 1 };
            }
        }
    }
}
