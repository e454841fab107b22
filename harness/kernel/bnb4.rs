//! quantbench's CPU kernel for bitsandbytes' 4-bit formats (NF4, FP4, with or without
//! double quantization): `y = x · Wᵀ (+ bias)` with f32 activations, as bitsandbytes
//! computes it for an f32 compute dtype (dequantize, then an f32 product).
//!
//! Per output row, each block of 64 codes is dequantized in registers — eight codes at a
//! time: four packed bytes broadcast to eight lanes, shifted per lane so each lane holds
//! its nibble (high nibble first), the 16-entry code looked up with two 8-entry
//! permutes chosen by the code's top bit, times the block's absmax — into a row buffer
//! that stays in L1, and every activation row is multiplied with it by fused
//! multiply-adds, four activation rows at a time. Each weight byte is read once per
//! call; the dequantized values are exactly bitsandbytes' (`code × absmax` in f32), the
//! sums differ from a BLAS's in order only.
//!
//! AVX2 + FMA (every x86-64 CPU since Haswell / Zen); rows of a multiple of 64 (blocks
//! that do not straddle rows). Elsewhere the portable path in `format/` runs.

use crate::format::bnb4::{Bnb4, BLOCK};

/// Whether this CPU has the instructions.
pub fn cpu_supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        // is_x86_feature_detected! caches its answer: no per-call cost
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Whether the kernel multiplies this matrix (CPU features, whole blocks per row, and
/// not turned off with QUANTBENCH_KERNELS=candle).
pub fn supported(w: &Bnb4) -> bool {
    w.k.is_multiple_of(BLOCK) && cpu_supported() && !candle_chosen()
}

/// QUANTBENCH_KERNELS=candle asks for no quantbench kernel at all (read once per
/// process, as [`super::active`] reads it).
pub(crate) fn candle_chosen() -> bool {
    static CHOSEN: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *CHOSEN.get_or_init(|| {
        std::env::var(super::ENV)
            .ok()
            .and_then(|v| super::parse(&v).ok())
            == Some(super::Kernels::Candle)
    })
}

/// Weight rows per parallel task.
const ROWS: usize = 16;

/// `y[m × out] = x[m × k] · Wᵀ (+ bias)`.
pub fn matmul(w: &Bnb4, x: &[f32], m: usize, bias: Option<&[f32]>, y: &mut [f32]) {
    let (n, k) = (w.out, w.k);
    assert!(
        supported(w),
        "the bnb4 kernel needs AVX2+FMA and rows of whole blocks"
    );
    assert_eq!(x.len(), m * k);
    assert_eq!(y.len(), m * n);
    crate::format::by_row_chunks(n, m, ROWS, y, |start, rows, part| {
        let mut buf = vec![0f32; k];
        let blocks = k / BLOCK;
        let mut scales = vec![0f32; blocks];
        for r in 0..rows {
            let row = start + r;
            let codes = &w.packed[row * k / 2..(row + 1) * k / 2];
            for (b, s) in scales.iter_mut().enumerate() {
                *s = w.absmax(row * blocks + b);
            }
            let b = bias.map_or(0.0, |b| b[row]);
            if m == 1 {
                // decode: dequantize and multiply in registers, no row buffer
                // SAFETY: as below.
                #[cfg(target_arch = "x86_64")]
                {
                    part[r] = unsafe { dot_row(codes, &scales, w.table(), x) } + b;
                }
                continue;
            }
            // SAFETY: cpu_supported() was checked; slices have the lengths the kernel
            // reads (k / 2 bytes, k / 64 scales, k floats).
            #[cfg(target_arch = "x86_64")]
            unsafe {
                dequantize_row(codes, &scales, w.table(), &mut buf)
            };
            for t0 in (0..m).step_by(4) {
                let tn = 4.min(m - t0);
                let mut sums = [0f32; 4];
                #[cfg(target_arch = "x86_64")]
                unsafe {
                    dots(&buf, &x[t0 * k..(t0 + tn) * k], tn, &mut sums)
                };
                for (j, s) in sums.iter().take(tn).enumerate() {
                    part[(t0 + j) * rows + r] = s + b;
                }
            }
        }
    });
}

/// One row's codes (k / 2 bytes) and block absmax (k / 64) to k f32 values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dequantize_row(codes: &[u8], scales: &[f32], table: &[f32; 16], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let lo_tbl = _mm256_loadu_ps(table.as_ptr());
    let hi_tbl = _mm256_loadu_ps(table.as_ptr().add(8));
    // lane l holds element l of 8: bytes 0..4, high nibble first
    let shifts = _mm256_setr_epi32(4, 0, 12, 8, 20, 16, 28, 24);
    let nib = _mm256_set1_epi32(0x0F);
    for (b, &am) in scales.iter().enumerate() {
        let scale = _mm256_set1_ps(am);
        for g in 0..BLOCK / 8 {
            let at = b * BLOCK + g * 8;
            let word = u32::from_le_bytes([
                codes[at / 2],
                codes[at / 2 + 1],
                codes[at / 2 + 2],
                codes[at / 2 + 3],
            ]);
            let idx = _mm256_and_si256(
                _mm256_srlv_epi32(_mm256_set1_epi32(word as i32), shifts),
                nib,
            );
            let lo = _mm256_permutevar8x32_ps(lo_tbl, idx);
            let hi = _mm256_permutevar8x32_ps(hi_tbl, idx);
            // bit 3 of the code, moved to the sign bit, picks the upper half
            let pick = _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28));
            let v = _mm256_blendv_ps(lo, hi, pick);
            _mm256_storeu_ps(out.as_mut_ptr().add(at), _mm256_mul_ps(v, scale));
        }
    }
}

/// One row's codes times one activation row: the dequantization of
/// [`dequantize_row`] with each group of eight multiplied into the sum at once.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_row(codes: &[u8], scales: &[f32], table: &[f32; 16], x: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let lo_tbl = _mm256_loadu_ps(table.as_ptr());
    let hi_tbl = _mm256_loadu_ps(table.as_ptr().add(8));
    let shifts = _mm256_setr_epi32(4, 0, 12, 8, 20, 16, 28, 24);
    let nib = _mm256_set1_epi32(0x0F);
    let mut acc0 = _mm256_setzero_ps();
    let mut acc1 = _mm256_setzero_ps();
    for (b, &am) in scales.iter().enumerate() {
        let scale = _mm256_set1_ps(am);
        let base = codes.as_ptr().add(b * BLOCK / 2) as *const u32;
        for g in (0..BLOCK / 8).step_by(2) {
            let at = b * BLOCK + g * 8;
            let w0 = std::ptr::read_unaligned(base.add(g));
            let w1 = std::ptr::read_unaligned(base.add(g + 1));
            let i0 = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(w0 as i32), shifts), nib);
            let i1 = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(w1 as i32), shifts), nib);
            let v0 = _mm256_blendv_ps(
                _mm256_permutevar8x32_ps(lo_tbl, i0),
                _mm256_permutevar8x32_ps(hi_tbl, i0),
                _mm256_castsi256_ps(_mm256_slli_epi32(i0, 28)),
            );
            let v1 = _mm256_blendv_ps(
                _mm256_permutevar8x32_ps(lo_tbl, i1),
                _mm256_permutevar8x32_ps(hi_tbl, i1),
                _mm256_castsi256_ps(_mm256_slli_epi32(i1, 28)),
            );
            acc0 = _mm256_fmadd_ps(
                _mm256_mul_ps(v0, scale),
                _mm256_loadu_ps(x.as_ptr().add(at)),
                acc0,
            );
            acc1 = _mm256_fmadd_ps(
                _mm256_mul_ps(v1, scale),
                _mm256_loadu_ps(x.as_ptr().add(at + 8)),
                acc1,
            );
        }
    }
    let v = _mm256_add_ps(acc0, acc1);
    let mut lanes = [0f32; 8];
    _mm256_storeu_ps(lanes.as_mut_ptr(), v);
    lanes.iter().sum()
}

/// `sums[j] = Σ w · x_j` for up to 4 activation rows of `w.len()` values each.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::needless_range_loop)]
unsafe fn dots(w: &[f32], x: &[f32], rows: usize, sums: &mut [f32; 4]) {
    use std::arch::x86_64::*;
    let k = w.len();
    let mut acc = [_mm256_setzero_ps(); 8];
    let mut i = 0;
    while i + 16 <= k {
        let w0 = _mm256_loadu_ps(w.as_ptr().add(i));
        let w1 = _mm256_loadu_ps(w.as_ptr().add(i + 8));
        for j in 0..rows {
            let xp = x.as_ptr().add(j * k + i);
            acc[2 * j] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xp), acc[2 * j]);
            acc[2 * j + 1] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xp.add(8)), acc[2 * j + 1]);
        }
        i += 16;
    }
    for j in 0..rows {
        let v = _mm256_add_ps(acc[2 * j], acc[2 * j + 1]);
        let mut lanes = [0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), v);
        let mut s: f32 = lanes.iter().sum();
        for t in i..k {
            s += w[t] * x[j * k + t];
        }
        sums[j] = s;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::bnb4::Code4;
    use crate::format::StoredMatrix;

    /// The kernel's product equals the portable one (dequantized rows, f32 dots) and a
    /// hand computation from the dequantized weights, for every code and both scale
    /// kinds, on 1, 3 and 9 activation rows.
    #[test]
    fn kernel_matches_the_portable_product_and_a_hand_computation() {
        if !cpu_supported() {
            eprintln!("skipped: no AVX2+FMA");
            return;
        }
        let (n, k) = (37, 192);
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * 0.05)
            .collect();
        let bias: Vec<f32> = (0..n).map(|i| i as f32 * 0.01).collect();
        for code in [Code4::Nf4, Code4::Fp4] {
            for double in [false, true] {
                let q = Bnb4::quantize(&w, n, k, code, double);
                let mut wd = vec![0f32; n * k];
                q.dequantize_rows(0, &mut wd);
                for m in [1, 3, 9] {
                    let x: Vec<f32> = (0..m * k).map(|i| ((i % 13) as f32 - 6.0) * 0.3).collect();
                    let mut fast = vec![0f32; m * n];
                    matmul(&q, &x, m, Some(&bias), &mut fast);
                    let mut portable = vec![0f32; m * n];
                    crate::format::matmul_by_rows(&q, &x, m, Some(&bias), &mut portable);
                    for t in 0..m {
                        for r in 0..n {
                            let hand: f64 = (0..k)
                                .map(|c| x[t * k + c] as f64 * wd[r * k + c] as f64)
                                .sum::<f64>()
                                + bias[r] as f64;
                            let (a, b) = (fast[t * n + r], portable[t * n + r]);
                            let tol = 1e-5 * (1.0 + hand.abs());
                            assert!(
                                (a as f64 - hand).abs() <= tol,
                                "{code:?} {double} m{m} [{t},{r}]: {a} vs {hand}"
                            );
                            assert!(
                                (b as f64 - hand).abs() <= tol,
                                "{code:?} {double} m{m} [{t},{r}]: {b} vs {hand}"
                            );
                        }
                    }
                }
            }
        }
    }
}
