//! bf16 products on CPUs with AVX512_BF16 (Zen 4, Sapphire Rapids and later): weights
//! and activations both bf16, `vdpbf16ps` (32 products of pairs a step, summed in f32).
//!
//! The activations are rounded to bf16 once per product (`vcvtneps2bf16`, round to
//! nearest even), which is what every bf16 product in quantbench does
//! ([`super::round_to_bf16`] on CPUs without the instruction): each product of two bf16
//! values is exact in f32, so the two ways differ only in the order of the f32 sums.
//!
//! One kernel body for decode and prompts: a tile of `R` weight rows by `C` activation
//! rows, 32 elements of the shared dimension a step (the last step masked, so any `k`
//! works), the `R` sums of one activation row reduced together and stored as the `R`
//! adjacent outputs they are. Decode (fewer than [`super::GEMM_ROWS`] activation rows)
//! walks 4 × 4 tiles, prefetching the weights as the f32 kernel does; prompts walk 4 × 6
//! tiles (24 accumulators, 6 activation vectors and a weight vector fill the 32
//! registers) over panels of weight rows that stay in L2, 6 activation rows at a time.

use std::arch::x86_64::*;

use super::{sum4, PREFETCH_ROWS};
use crate::kernel::tile::PREFETCH_L2_ROWS;

/// A product's operands: `n × k` bf16 weights, `m × k` bf16 activations, `m × n` f32
/// outputs (row-major, all three).
pub(super) struct Operands {
    pub w: *const u16,
    pub x: *const u16,
    pub out: *mut f32,
    pub n: usize,
    pub k: usize,
}

macro_rules! bf16_fn {
    ($($item:item)*) => {$(
        #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512bf16")]
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
    /// `x` (f32) rounded to bf16 into `dst` (the same length), to nearest even.
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
    /// the whole shared dimension, stored into the outputs. `PREFETCH`: fetch the weights
    /// ahead (they stream from memory once, in decode).
    // Indexed loops over the register arrays: unrolled by the compiler, as intended.
    #[allow(clippy::needless_range_loop)]
    unsafe fn tile<const R: usize, const C: usize, const PREFETCH: bool>(
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
                    if PREFETCH {
                        let p = wp[r].add($i) as *const i8;
                        _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(PREFETCH_ROWS * o.k * 2));
                        _mm_prefetch::<_MM_HINT_T1>(p.wrapping_add(PREFETCH_L2_ROWS * o.k * 2));
                    }
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
        if R == 4 {
            for c in 0..C {
                // `% R`: constant indices in bounds in the other instantiations (dead here).
                let v = sum4(acc[0][c], acc[1 % R][c], acc[2 % R][c], acc[3 % R][c]);
                _mm_storeu_ps(o.out.add((a_row + c) * o.n + w_row), v);
            }
        } else {
            for r in 0..R {
                for c in 0..C {
                    *o.out.add((a_row + c) * o.n + w_row + r) = _mm512_reduce_add_ps(acc[r][c]);
                }
            }
        }
    }

    /// Weight rows `r0 .. r1` by activation rows `c0 .. c1`: `C` activation rows at a
    /// time against every 4 weight rows, then the weight rows past the last 4 one by one.
    unsafe fn walk<const C: usize, const PREFETCH: bool>(
        o: &Operands,
        (r0, r1): (usize, usize),
        (c0, c1): (usize, usize),
    ) {
        macro_rules! at {
            ($r:literal, $take:expr, $w:expr, $a:expr) => {
                match $take {
                    6 => tile::<$r, 6, PREFETCH>(o, $w, $a),
                    5 => tile::<$r, 5, PREFETCH>(o, $w, $a),
                    4 => tile::<$r, 4, PREFETCH>(o, $w, $a),
                    3 => tile::<$r, 3, PREFETCH>(o, $w, $a),
                    2 => tile::<$r, 2, PREFETCH>(o, $w, $a),
                    _ => tile::<$r, 1, PREFETCH>(o, $w, $a),
                }
            };
        }
        let mut c = c0;
        while c < c1 {
            let take = (c1 - c).min(C);
            let mut r = r0;
            while r + 4 <= r1 {
                at!(4, take, r, c);
                r += 4;
            }
            while r < r1 {
                at!(1, take, r, c);
                r += 1;
            }
            c += take;
        }
    }

    /// Decode and short inputs: 4 × 4 tiles, weights prefetched.
    pub(super) unsafe fn rows(o: &Operands, rows: (usize, usize), acts: (usize, usize)) {
        walk::<4, true>(o, rows, acts)
    }

    /// Prompts: weight rows `rows` (a panel) against all `m` activation rows, 4 × 6 tiles.
    pub(super) unsafe fn panel(o: &Operands, rows: (usize, usize), m: usize) {
        walk::<6, false>(o, rows, (0, m))
    }
}
