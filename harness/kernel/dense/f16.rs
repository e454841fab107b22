//! f16 prompts on AVX-512 (F/BW/VL): f16 weights widened to f32 by `vcvtph2ps` as
//! they are loaded (16 lanes), activations rounded to f16 once per product and held as
//! f32, f32 fused multiply-adds.
//!
//! The arithmetic of the AVX2 prompt kernel (`super::avx2::panel`): each product of two
//! f16 values exact in f32, so the kernels differ only in the order of the f32 sums. What
//! the 32 registers change is the tile: 4 weight rows by 6 activation rows (24
//! accumulators, 6 activation vectors and a weight vector), 4 widenings for 24
//! multiply-adds a step against the AVX2 tile's 7 for 12, 16 elements of the shared
//! dimension a step (the last step masked, so any `k` works), 6 activation rows at a
//! time against every 4 rows of a panel ([`super::prompt_panel_rows`]), the 4 sums of
//! one activation row reduced together and stored as the 4 adjacent outputs they are
//! (the bf16 kernel's shape, `super::bf16`, and llama.cpp's tinyBLAS `gemm_bloc<4, 6>`).
//!
//! The activations stay f32 (rounded to f16 values) rather than f16 as in the AVX2
//! kernel and in tinyBLAS: widening both operands, the same tile lost to the AVX2 kernel
//! on all four of Llama 3.2 1B's shapes at 512 rows (overall 188.8 against 199.8-207.1
//! GFLOP/s, in one process, alternating pass by pass, Zen 4); with f32 activations
//! 202.7 against 199.8, and in whole prompts of the 1B's F16 file (`pp512`, alternating
//! in one process) its products took 4.54-4.59 s against the AVX2 kernel's 4.63-4.66 s.
//! Zen 4 runs 512-bit multiply-adds as two 256-bit halves, so the gain is the fewer
//! widenings and loads per multiply-add, not wider arithmetic: both kernels run near
//! this CPU's multiply-add peak (~204 GFLOP/s on its 2 threads).

use std::arch::x86_64::*;

use super::store_tile;
/// The operands: f16 weights, activations rounded to f16 and held as f32.
type Operands = super::Halves<f32>;

macro_rules! f16_fn {
    ($($item:item)*) => {$(
        #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
        $item
    )*};
}

/// 16 f16 weights at `p` widened to f32, or the first `mask.count_ones()` of them and
/// zeros.
#[inline(always)]
unsafe fn load16<const MASKED: bool>(p: *const u16, mask: __mmask16) -> __m512 {
    let h = if MASKED {
        _mm256_maskz_loadu_epi16(mask, p as *const i16)
    } else {
        _mm256_loadu_si256(p as *const __m256i)
    };
    _mm512_cvtph_ps(h)
}

f16_fn! {
    /// One tile: weight rows `w_row .. w_row + R` by activation rows `a_row .. a_row + C`,
    /// the whole shared dimension, stored into the outputs.
    // Indexed loops over the register arrays: unrolled by the compiler, as intended.
    #[allow(clippy::needless_range_loop)]
    unsafe fn tile<const R: usize, const C: usize>(o: &Operands, w_row: usize, a_row: usize) {
        let mut acc = [[_mm512_setzero_ps(); C]; R];
        let wp: [*const u16; R] = std::array::from_fn(|r| o.w.add((w_row + r) * o.k));
        let xp: [*const f32; C] = std::array::from_fn(|c| o.x.add((a_row + c) * o.k));
        let k16 = o.k / 16 * 16;
        macro_rules! step {
            ($masked:literal, $i:expr, $mask:expr) => {{
                let mut xv = [_mm512_setzero_ps(); C];
                for c in 0..C {
                    xv[c] = if $masked {
                        _mm512_maskz_loadu_ps($mask, xp[c].add($i))
                    } else {
                        _mm512_loadu_ps(xp[c].add($i))
                    };
                }
                for r in 0..R {
                    let wv = load16::<$masked>(wp[r].add($i), $mask);
                    for c in 0..C {
                        acc[r][c] = _mm512_fmadd_ps(wv, xv[c], acc[r][c]);
                    }
                }
            }};
        }
        let mut i = 0;
        while i < k16 {
            step!(false, i, 0);
            i += 16;
        }
        if k16 < o.k {
            let mask: __mmask16 = ((1u32 << (o.k - k16)) - 1) as u16;
            step!(true, k16, mask);
        }
        store_tile(&acc, o, w_row, a_row);
    }

    /// The prompt product for weight rows `r0 .. r1` (a panel) and all `m` activation
    /// rows (rounded to f16): 6 activation rows at a time against every 4 weight rows,
    /// then the weight rows past the last 4 one by one.
    pub(super) unsafe fn panel(o: &Operands, (r0, r1): (usize, usize), m: usize) {
        walk_panel!(tile, o, r0, r1, m)
    }
}
