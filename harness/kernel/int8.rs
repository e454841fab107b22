//! quantbench's CPU kernels for the int8 formats: LLM.int8 (int8 × int8 with a row scale
//! and a token scale, outlier columns in f32) and PyTorch's dynamic int8 (uint8
//! activations with a zero point × int8 weights, row sums correcting the zero point).
//!
//! Both quantize the activations once per call (as their libraries do), widen them to
//! 16 bits once, and stream each weight row once: sixteen int8 weights widened to 16
//! bits, multiplied pairwise into 32-bit sums (`vpmaddwd`, exact: no saturation,
//! whatever the codes), four activation rows per weight row at a time. The integer sums
//! are exact, so the results are the portable reference's to the last bit (tested).
//!
//! AVX2 (every x86-64 CPU since Haswell / Zen). AVX-512 VNNI would take int8 directly
//! (`vpdpbusd`), but needs unsigned × signed operands: LLM.int8's signed activations
//! would need the +128 offset and a row-sum correction, as the q8_0 kernel does; the
//! AVX2 path is what the machines this was measured on have.

use crate::format::int8::{ActParams, DynamicInt8, LlmInt8};

/// Whether this CPU runs the kernels.
pub fn cpu_supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

fn enabled() -> bool {
    cpu_supported() && !super::bnb4::candle_chosen()
}

const ROWS: usize = 16;

/// `y = x · Wᵀ (+ bias)` in LLM.int8.
pub fn llm_int8(w: &LlmInt8, x: &[f32], m: usize, bias: Option<&[f32]>, y: &mut [f32]) {
    if !enabled() {
        return w.reference_matmul(x, m, bias, y);
    }
    let (ca, sca, cols) = LlmInt8::quantize_activations(x, m, w.k);
    let a16: Vec<i16> = ca.iter().map(|&v| v as i16).collect();
    products(&w.cb, w.out, w.k, &a16, m, y, true, |acc, t, r| {
        w.finish(acc, sca[t], r, bias)
    });
    w.add_outliers(x, m, &cols, y);
}

/// `y = x · Wᵀ (+ bias)` in dynamic int8.
pub fn dynamic_int8(w: &DynamicInt8, x: &[f32], m: usize, bias: Option<&[f32]>, y: &mut [f32]) {
    if !enabled() {
        return w.reference_matmul(x, m, bias, y);
    }
    let a = ActParams::of(x);
    let a16: Vec<i16> = a.quantize(x).iter().map(|&v| v as i16).collect();
    products(&w.q, w.out, w.k, &a16, m, y, true, |acc, _, r| {
        w.finish(acc, a, r, bias)
    });
}

/// For every (token t, weight row r): `finish(Σ a16[t]·w[r], t, r)` into `y[t][r]`, the
/// sums exact in i32: with AVX2 where `simd` (the caller checked the CPU), in plain loops
/// otherwise (the formats' portable references call this with `simd = false`).
#[allow(clippy::too_many_arguments)]
pub fn products(
    w: &[i8],
    n: usize,
    k: usize,
    a16: &[i16],
    m: usize,
    y: &mut [f32],
    simd: bool,
    finish: impl Fn(i32, usize, usize) -> f32 + Sync,
) {
    crate::format::by_row_chunks(n, m, ROWS, y, |start, rows, part| {
        for r in 0..rows {
            let wr = &w[(start + r) * k..(start + r + 1) * k];
            for t0 in (0..m).step_by(4) {
                let tn = 4.min(m - t0);
                let a = &a16[t0 * k..(t0 + tn) * k];
                let mut sums = [0i32; 4];
                if simd {
                    // SAFETY: the caller checked AVX2; slices hold k values per row.
                    #[cfg(target_arch = "x86_64")]
                    unsafe {
                        dots_i8(wr, a, tn, &mut sums)
                    };
                } else {
                    for (j, s) in sums.iter_mut().take(tn).enumerate() {
                        *s = wr
                            .iter()
                            .zip(&a[j * k..(j + 1) * k])
                            .map(|(&w, &a)| w as i32 * a as i32)
                            .sum();
                    }
                }
                for (j, &s) in sums.iter().take(tn).enumerate() {
                    part[(t0 + j) * rows + r] = finish(s, t0 + j, start + r);
                }
            }
        }
    });
}

/// `sums[j] = Σ w · a_j` over `w.len()` values, exact in i32.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(clippy::needless_range_loop)]
unsafe fn dots_i8(w: &[i8], a: &[i16], rows: usize, sums: &mut [i32; 4]) {
    use std::arch::x86_64::*;
    let k = w.len();
    let mut acc = [_mm256_setzero_si256(); 4];
    let mut i = 0;
    while i + 16 <= k {
        let wv = _mm256_cvtepi8_epi16(_mm_loadu_si128(w.as_ptr().add(i) as *const __m128i));
        for j in 0..rows {
            let av = _mm256_loadu_si256(a.as_ptr().add(j * k + i) as *const __m256i);
            acc[j] = _mm256_add_epi32(acc[j], _mm256_madd_epi16(wv, av));
        }
        i += 16;
    }
    for j in 0..rows {
        let mut lanes = [0i32; 8];
        _mm256_storeu_si256(lanes.as_mut_ptr() as *mut __m256i, acc[j]);
        let mut s: i32 = lanes.iter().sum();
        for t in i..k {
            s += w[t] as i32 * a[j * k + t] as i32;
        }
        sums[j] = s;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, k: usize, m: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * 0.05)
            .collect();
        let mut x: Vec<f32> = (0..m * k).map(|i| ((i % 13) as f32 - 6.0) * 0.3).collect();
        x[k / 2] = 7.0; // an outlier in token 0
        let bias = (0..n).map(|i| i as f32 * 0.01).collect();
        (w, x, bias)
    }

    /// The kernels give the portable reference's results bit for bit (integer sums are
    /// exact; the f32 steps after them are the same code), and the reference agrees with
    /// a hand computation from the dequantized weights within the activations' rounding.
    #[test]
    fn kernels_equal_the_reference_bit_for_bit() {
        let (n, k) = (37, 200); // k not a multiple of 16: the tail runs too
        for m in [1, 3, 6] {
            let (w, x, bias) = data(n, k, m);
            let l = LlmInt8::quantize(&w, n, k);
            let mut a = vec![0f32; m * n];
            let mut b = vec![0f32; m * n];
            llm_int8(&l, &x, m, Some(&bias), &mut a);
            l.reference_matmul(&x, m, Some(&bias), &mut b);
            assert_eq!(a, b, "llm_int8 m{m}");
            for pc in [false, true] {
                let d = DynamicInt8::quantize(&w, n, k, pc);
                dynamic_int8(&d, &x, m, Some(&bias), &mut a);
                d.reference_matmul(&x, m, Some(&bias), &mut b);
                assert_eq!(a, b, "dynamic pc={pc} m{m}");
                // against f32 math on the dequantized weights: activations quantized to
                // 7 bits over the input's range bound the error
                use crate::format::StoredMatrix;
                let mut wd = vec![0f32; n * k];
                d.dequantize_rows(0, &mut wd);
                let a_scale = ActParams::of(&x).scale as f64;
                for t in 0..m {
                    for r in 0..n {
                        let hand: f64 = (0..k)
                            .map(|c| x[t * k + c] as f64 * wd[r * k + c] as f64)
                            .sum::<f64>()
                            + bias[r] as f64;
                        let wsum: f64 = (0..k).map(|c| (wd[r * k + c] as f64).abs()).sum();
                        let bound = 0.5 * a_scale * wsum + 1e-4;
                        assert!(
                            (b[t * n + r] as f64 - hand).abs() <= bound,
                            "pc={pc} [{t},{r}]"
                        );
                    }
                }
            }
        }
    }
}
