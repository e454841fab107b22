//! bf16 products on CPUs with AVX512_BF16 (Zen 4, Sapphire Rapids and later): weights
//! and activations both bf16, `vdpbf16ps` (32 products of pairs a step, summed in f32).
//!
//! The activations are rounded to bf16 once per product (`vcvtneps2bf16`, round to
//! nearest even), which is what every bf16 product in quantbench does
//! ([`super::round_to_bf16`] on CPUs without the instruction): each product of two bf16
//! values is exact in f32, so the two ways differ only in the order of the f32 sums.
//!
//! Prompts only (from [`super::GEMM_ROWS`] activation rows): tiles of 4 weight rows by
//! 6 activation rows (24 accumulators, 6 activation vectors and a weight vector fill the
//! 32 registers), 32 elements of the shared dimension a step (the last step masked, so
//! any `k` works), the 4 sums of one activation row reduced together and stored as the 4
//! adjacent outputs they are, over panels of weight rows that stay in L2, 6 activation
//! rows at a time. Decode stays on the f32 dot tiles on the rounded activations: the
//! same kernel with `vdpbf16ps` (4 × 4 tiles, prefetched as the f32 tiles are) was
//! slower in whole runs on GPT-2 (6 of 7 alternating pairs, by 4-35%), level on Llama
//! 3.2 1B's shapes (3 of 6), and level in `examples/streaming.rs`.

use std::arch::x86_64::*;

use super::store_tile;
use super::Halves as Operands;

macro_rules! bf16_fn {
    ($($item:item)*) => {$(
        #[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl,avx512bf16")]
        $item
    )*};
}

/// 32 bf16 values at `p`, or the first `mask.count_ones()` of them and zeros.
#[inline(always)]
unsafe fn load32<const MASKED: bool>(p: *const u16, mask: __mmask32) -> __m512bh {
    let v = if MASKED {
        _mm512_maskz_loadu_epi16(mask, p as *const i16)
    } else {
        _mm512_loadu_si512(p as *const __m512i)
    };
    std::mem::transmute::<__m512i, __m512bh>(v)
}

/// A zero vector of bf16 pairs.
#[inline(always)]
unsafe fn zero() -> __m512bh {
    std::mem::transmute::<__m512i, __m512bh>(_mm512_setzero_si512())
}

bf16_fn! {
    /// `x` (f32) rounded to bf16 into `dst` (the same length), to nearest even
    /// (`vcvtneps2bf16`, which also takes denormal inputs as zero: below 1.2e-38, where
    /// [`super::round_to_bf16`] keeps them).
    pub(super) unsafe fn round(x: &[f32], dst: &mut [u16]) {
        assert_eq!(x.len(), dst.len());
        let n16 = x.len() / 16 * 16;
        let mut i = 0;
        while i < n16 {
            let h = _mm512_cvtneps_pbh(_mm512_loadu_ps(x.as_ptr().add(i)));
            _mm256_storeu_si256(
                dst.as_mut_ptr().add(i) as *mut __m256i,
                std::mem::transmute::<__m256bh, __m256i>(h),
            );
            i += 16;
        }
        if n16 < x.len() {
            let mask: __mmask16 = (1u32 << (x.len() - n16)) as u16 - 1;
            let v = _mm512_maskz_loadu_ps(mask, x.as_ptr().add(n16));
            let h = std::mem::transmute::<__m256bh, __m256i>(_mm512_cvtneps_pbh(v));
            _mm256_mask_storeu_epi16(dst.as_mut_ptr().add(n16) as *mut i16, mask, h);
        }
    }

    /// One tile: weight rows `w_row .. w_row + R` by activation rows `a_row .. a_row + C`,
    /// the whole shared dimension, stored into the outputs.
    // Indexed loops over the register arrays: unrolled by the compiler, as intended.
    #[allow(clippy::needless_range_loop)]
    unsafe fn tile<const R: usize, const C: usize>(
        o: &Operands,
        w_row: usize,
        a_row: usize,
    ) {
        let mut acc = [[_mm512_setzero_ps(); C]; R];
        let wp: [*const u16; R] = std::array::from_fn(|r| o.w.add((w_row + r) * o.k));
        let xp: [*const u16; C] = std::array::from_fn(|c| o.x.add((a_row + c) * o.k));
        let k32 = o.k / 32 * 32;
        macro_rules! step {
            ($masked:literal, $i:expr, $mask:expr) => {{
                let mut xv = [zero(); C];
                for c in 0..C {
                    xv[c] = load32::<$masked>(xp[c].add($i), $mask);
                }
                for r in 0..R {
                    let wv = load32::<$masked>(wp[r].add($i), $mask);
                    for c in 0..C {
                        acc[r][c] = _mm512_dpbf16_ps(acc[r][c], wv, xv[c]);
                    }
                }
            }};
        }
        let mut i = 0;
        while i < k32 {
            step!(false, i, 0);
            i += 32;
        }
        if k32 < o.k {
            let mask: __mmask32 = ((1u64 << (o.k - k32)) - 1) as u32;
            step!(true, k32, mask);
        }
        store_tile(&acc, o, w_row, a_row);
    }

    /// The prompt product for weight rows `r0 .. r1` (a panel) and all `m` activation
    /// rows: 6 activation rows at a time against every 4 weight rows, then the weight
    /// rows past the last 4 one by one.
    pub(super) unsafe fn panel(o: &Operands, (r0, r1): (usize, usize), m: usize) {
        walk_panel!(tile, o, r0, r1, m)
    }
}
