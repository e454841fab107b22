//! Activations rounded to 8 bits in blocks of 32, as ggml's `q8_0` (and candle's vec-dot
//! type for the 32-element formats) does: one scale per block, `x ≈ scale × q` with
//! `|q| ≤ 127`. Laid out for the kernels rather than as ggml blocks: a row's quants are
//! contiguous, scales and `scale × Σq` (which the formats with a minimum need) sit in
//! their own arrays.

use half::f16;

/// Elements per block, for the activations and every weight format here.
pub const BLOCK: usize = 32;

/// `rows` activation vectors of `k` elements each, quantized.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Activations {
    pub rows: usize,
    pub k: usize,
    /// `rows × k` quants.
    pub qs: Vec<i8>,
    /// `rows × k/32` block scales, rounded to f16 like ggml stores them.
    pub scales: Vec<f32>,
    /// `rows × k/32`: each block's `scale × Σ q`.
    pub sums: Vec<f32>,
}

impl Activations {
    /// Quantize `x` (`rows × k`, row-major; `k` a multiple of 32). Rounds half to even.
    pub fn quantize(x: &[f32], rows: usize, k: usize) -> Activations {
        let mut a = Activations::default();
        a.quantize_into(x, rows, k);
        a
    }

    /// [`Activations::quantize`] into this value's buffers, reusing their memory (the
    /// decode step rounds every product's activations here without allocating). Many
    /// rows (a prompt) are shared out on candle's pool.
    pub fn quantize_into(&mut self, x: &[f32], rows: usize, k: usize) {
        assert_eq!(x.len(), rows * k, "activations are {rows} x {k}");
        assert_eq!(k % BLOCK, 0, "k = {k} is not a multiple of {BLOCK}");
        let blocks = rows * (k / BLOCK);
        let a = self;
        a.rows = rows;
        a.k = k;
        a.qs.resize(rows * k, 0);
        a.scales.resize(blocks, 0.0);
        a.sums.resize(blocks, 0.0);
        let level = super::level();
        let (qs, scales, sums) = (
            super::Disjoint::new(&mut a.qs),
            super::Disjoint::new(&mut a.scales),
            super::Disjoint::new(&mut a.sums),
        );
        super::per_unit(rows, blocks, |range| {
            for b in range {
                let xb = &x[b * BLOCK..][..BLOCK];
                // SAFETY: block `b`'s quants, scale and sum are its unit's alone, inside
                // the buffers sized above.
                let (qb, d, sum) = unsafe {
                    (
                        qs.part(b * BLOCK, BLOCK),
                        scales.part(b, 1),
                        sums.part(b, 1),
                    )
                };
                (d[0], sum[0]) = match level {
                    // SAFETY: level() checked the CPU features; both blocks are 32 long.
                    #[cfg(target_arch = "x86_64")]
                    Some(super::Level::Avx512) => unsafe { quantize_block_avx512(xb, qb) },
                    #[cfg(target_arch = "x86_64")]
                    Some(super::Level::Avx2) => unsafe { quantize_block_avx2(xb, qb) },
                    _ => quantize_block(xb, qb),
                };
            }
        });
    }

    pub fn blocks_per_row(&self) -> usize {
        self.k / BLOCK
    }
}

/// The portable rounding of one block: returns (scale, scale × Σq).
pub fn quantize_block(x: &[f32], q: &mut [i8]) -> (f32, f32) {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut sum = 0i32;
    for (qi, xi) in q.iter_mut().zip(x) {
        let v = (xi * id).round_ties_even().clamp(-127.0, 127.0) as i8;
        sum += v as i32;
        *qi = v;
    }
    let d = f16::from_f32(d).to_f32();
    (d, d * sum as f32)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
unsafe fn quantize_block_avx512(x: &[f32], q: &mut [i8]) -> (f32, f32) {
    use std::arch::x86_64::*;
    debug_assert!(x.len() == BLOCK && q.len() == BLOCK);
    let v0 = _mm512_loadu_ps(x.as_ptr());
    let v1 = _mm512_loadu_ps(x.as_ptr().add(16));
    let amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let idv = _mm512_set1_ps(id);
    // The default rounding mode (nearest, ties to even), as in quantize_block.
    let q0 = _mm512_cvtps_epi32(_mm512_mul_ps(v0, idv));
    let q1 = _mm512_cvtps_epi32(_mm512_mul_ps(v1, idv));
    _mm_storeu_si128(q.as_mut_ptr() as *mut __m128i, _mm512_cvtsepi32_epi8(q0));
    _mm_storeu_si128(
        q.as_mut_ptr().add(16) as *mut __m128i,
        _mm512_cvtsepi32_epi8(q1),
    );
    let sum = _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
    let d = f16::from_f32(d).to_f32();
    (d, d * sum as f32)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize_block_avx2(x: &[f32], q: &mut [i8]) -> (f32, f32) {
    use std::arch::x86_64::*;
    debug_assert!(x.len() == BLOCK && q.len() == BLOCK);
    let v: [__m256; 4] = std::array::from_fn(|i| _mm256_loadu_ps(x.as_ptr().add(8 * i)));
    let abs = _mm256_set1_ps(f32::from_bits(0x7fff_ffff));
    let m = _mm256_max_ps(
        _mm256_max_ps(_mm256_and_ps(v[0], abs), _mm256_and_ps(v[1], abs)),
        _mm256_max_ps(_mm256_and_ps(v[2], abs), _mm256_and_ps(v[3], abs)),
    );
    let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    let amax = _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let idv = _mm256_set1_ps(id);
    // The default rounding mode (nearest, ties to even), as in quantize_block; |x·id| is
    // at most 127 (plus rounding), so the saturating packs clamp as it does.
    let qi: [__m256i; 4] = std::array::from_fn(|i| _mm256_cvtps_epi32(_mm256_mul_ps(v[i], idv)));
    let max = _mm256_set1_epi32(127);
    let min = _mm256_set1_epi32(-127);
    let qi = qi.map(|q| _mm256_max_epi32(_mm256_min_epi32(q, max), min));
    let sum = _mm256_add_epi32(
        _mm256_add_epi32(qi[0], qi[1]),
        _mm256_add_epi32(qi[2], qi[3]),
    );
    let s = _mm_add_epi32(
        _mm256_castsi256_si128(sum),
        _mm256_extracti128_si256(sum, 1),
    );
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
    let sum = _mm_cvtsi128_si32(s);
    // Packs interleave the 128-bit lanes; one permute puts the 32 bytes back in order.
    let p16a = _mm256_packs_epi32(qi[0], qi[1]);
    let p16b = _mm256_packs_epi32(qi[2], qi[3]);
    let p8 = _mm256_packs_epi16(p16a, p16b);
    let p8 = _mm256_permutevar8x32_epi32(p8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256(q.as_mut_ptr() as *mut __m256i, p8);
    let d = f16::from_f32(d).to_f32();
    (d, d * sum as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each SIMD rounding this CPU runs equals the portable one bit for bit, ties (x·id
    /// exactly halfway) and zero blocks included.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn every_simd_rounding_equals_the_portable_one() {
        let mut blocks: Vec<Vec<f32>> = vec![
            // amax 127 makes the scale 1: every x.5 is a tie.
            (0..32)
                .map(|i| if i == 0 { 127.0 } else { i as f32 * 0.5 - 8.0 })
                .collect(),
            (0..32)
                .map(|i| if i == 5 { -127.0 } else { 3.5 - i as f32 })
                .collect(),
            vec![0.0; 32],
            vec![-0.0; 32],
        ];
        for seed in 0..64u32 {
            blocks.push(
                (0..32u32)
                    .map(|i| {
                        let h = (i + 1).wrapping_mul(2_654_435_761) ^ seed.wrapping_mul(40_503);
                        (h % 20_011) as f32 / 20_011.0 - 0.5 + if h % 17 == 0 { 9.0 } else { 0.0 }
                    })
                    .collect(),
            );
        }
        for x in &blocks {
            let mut want = [0i8; 32];
            let expected = quantize_block(x, &mut want);
            if crate::kernel::avx2_supported() {
                let mut q = [0i8; 32];
                let got = unsafe { quantize_block_avx2(x, &mut q) };
                assert_eq!((q, got), (want, expected), "avx2 on {x:?}");
            }
            if crate::kernel::simd_supported() {
                let mut q = [0i8; 32];
                let got = unsafe { quantize_block_avx512(x, &mut q) };
                assert_eq!((q, got), (want, expected), "avx512 on {x:?}");
            }
        }
    }

    #[test]
    fn rounding_matches_the_portable_path_and_bounds_the_error() {
        let x: Vec<f32> = (0..4 * 96)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.013 + if i % 7 == 0 { 2.5 } else { 0.0 })
            .collect();
        let a = Activations::quantize(&x, 4, 96);
        for (b, (xb, qb)) in x.chunks(32).zip(a.qs.chunks(32)).enumerate() {
            let mut q = [0i8; 32];
            let (d, s) = quantize_block(xb, &mut q);
            assert_eq!(qb, q, "block {b}");
            assert_eq!((a.scales[b], a.sums[b]), (d, s), "block {b}");
            let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
            for (xi, qi) in xb.iter().zip(qb) {
                // Half a step, plus the f16 rounding of the scale.
                assert!(
                    (xi - d * *qi as f32).abs() <= d * 0.5 + amax * 1e-3,
                    "{xi} vs {qi}"
                );
            }
        }
        let zeros = Activations::quantize(&[0.0; 32], 1, 32);
        assert_eq!((zeros.scales[0], zeros.sums[0]), (0.0, 0.0));
        assert!(zeros.qs.iter().all(|&q| q == 0));
    }
}
