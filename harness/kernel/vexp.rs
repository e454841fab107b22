//! `e^x` on 16 lanes (AVX-512) or 8 (AVX2 + FMA), and the softmax built on it.
//!
//! `e^x = 2^n · e^r` with `n = round(x · log2 e)` and `r = x − n · ln 2` (two steps,
//! Cody–Waite, `|r| ≤ ln2/2`), `e^r` by its Taylor polynomial to `r^6` (relative error
//! below 1.2e-7), `x` clamped to `[−88, 88]` first so that `2^n` stays finite (a NaN
//! stays NaN): within 2.6e-7 of libm's `expf` (relative) where the result is a normal
//! f32, 0 or a subnormal below `e^−87.33`. GPT-2's `gelu_new` ([`super::gelu`])
//! and the attention's softmax ([`super::attention`]) use it, in place of libm's `expf`
//! called once an element.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// e^x, 16 lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,avx512f")]
#[inline]
pub(super) unsafe fn exp16(x: __m512) -> __m512 {
    let c = _mm512_set1_ps;
    // `max` / `min` return their second operand where either is NaN: NaN stays NaN.
    let t = _mm512_min_ps(c(88.0), _mm512_max_ps(c(-88.0), x));
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
        _mm512_mul_ps(t, c(std::f32::consts::LOG2_E)),
    );
    let r = _mm512_fnmadd_ps(n, c(0.693_145_75), t);
    let r = _mm512_fnmadd_ps(n, c(1.428_606_8e-6), r);
    let mut p = c(1.0 / 720.0);
    p = _mm512_fmadd_ps(p, r, c(1.0 / 120.0));
    p = _mm512_fmadd_ps(p, r, c(1.0 / 24.0));
    p = _mm512_fmadd_ps(p, r, c(1.0 / 6.0));
    p = _mm512_fmadd_ps(p, r, c(0.5));
    p = _mm512_fmadd_ps(p, r, c(1.0));
    p = _mm512_fmadd_ps(p, r, c(1.0));
    _mm512_scalef_ps(p, n)
}

/// e^x, 8 lanes: [`exp16`]'s polynomial, `2^n` built in the exponent bits (`n ≥ −127`
/// after the clamp; `n = −127` gives 0).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
pub(super) unsafe fn exp8(x: __m256) -> __m256 {
    let c = _mm256_set1_ps;
    let t = _mm256_min_ps(c(88.0), _mm256_max_ps(c(-88.0), x));
    let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
        t,
        c(std::f32::consts::LOG2_E),
    ));
    let r = _mm256_fnmadd_ps(n, c(0.693_145_75), t);
    let r = _mm256_fnmadd_ps(n, c(1.428_606_8e-6), r);
    let mut p = c(1.0 / 720.0);
    p = _mm256_fmadd_ps(p, r, c(1.0 / 120.0));
    p = _mm256_fmadd_ps(p, r, c(1.0 / 24.0));
    p = _mm256_fmadd_ps(p, r, c(1.0 / 6.0));
    p = _mm256_fmadd_ps(p, r, c(0.5));
    p = _mm256_fmadd_ps(p, r, c(1.0));
    p = _mm256_fmadd_ps(p, r, c(1.0));
    let two_n = _mm256_castsi256_ps(_mm256_slli_epi32(
        _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)),
        23,
    ));
    // NaN lanes: the exponent bits above come from an undefined conversion, the
    // polynomial carries the NaN.
    _mm256_mul_ps(p, two_n)
}

/// `row` replaced by its softmax, `e^(x − max) / Σ e^(x − max)`, with the vectorised
/// `e^x` where the CPU has AVX2 (libm's `expf` otherwise). An empty row stays empty.
pub fn softmax(row: &mut [f32]) {
    if row.is_empty() {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    match super::level() {
        // SAFETY: the level's features were checked by level().
        Some(super::Level::Avx512) => return unsafe { softmax16(row) },
        Some(super::Level::Avx2) => return unsafe { softmax8(row) },
        None => {}
    }
    softmax_portable(row)
}

/// `row` replaced by the first `row.len()` entries of the softmax of `row` with `sink`
/// appended (a learned per-head logit that takes its share of the weight and is then
/// dropped: gpt-oss's attention sinks, transformers' `eager_attention_forward`).
pub fn softmax_with_sink(row: &mut [f32], sink: f32) {
    let max = row.iter().fold(sink, |m, &x| m.max(x));
    let mut sum = (sink - max).exp();
    for x in row.iter_mut() {
        *x = (*x - max).exp();
        sum += *x;
    }
    let inv = 1.0 / sum;
    row.iter_mut().for_each(|x| *x *= inv);
}

/// [`softmax`] with libm's `expf`, element by element.
pub fn softmax_portable(row: &mut [f32]) {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    let mut sum = 0f32;
    for x in row.iter_mut() {
        *x = (*x - max).exp();
        sum += *x;
    }
    let inv = 1.0 / sum;
    row.iter_mut().for_each(|x| *x *= inv);
}

/// [`softmax`] on 16 lanes, the last step masked.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,avx512f")]
unsafe fn softmax16(row: &mut [f32]) {
    let len = row.len();
    let p = row.as_mut_ptr();
    let full = len / 16 * 16;
    let tail: __mmask16 = ((1u32 << (len - full)) - 1) as u16;
    let mut m = _mm512_set1_ps(f32::NEG_INFINITY);
    let mut i = 0;
    while i < full {
        m = _mm512_max_ps(m, _mm512_loadu_ps(p.add(i)));
        i += 16;
    }
    if tail != 0 {
        m = _mm512_mask_max_ps(m, tail, m, _mm512_maskz_loadu_ps(tail, p.add(full)));
    }
    let max = _mm512_set1_ps(_mm512_reduce_max_ps(m));
    let mut sum = _mm512_setzero_ps();
    i = 0;
    while i < full {
        let e = exp16(_mm512_sub_ps(_mm512_loadu_ps(p.add(i)), max));
        _mm512_storeu_ps(p.add(i), e);
        sum = _mm512_add_ps(sum, e);
        i += 16;
    }
    if tail != 0 {
        let e = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(tail, p.add(full)), max));
        _mm512_mask_storeu_ps(p.add(full), tail, e);
        sum = _mm512_mask_add_ps(sum, tail, sum, e);
    }
    let inv = _mm512_set1_ps(1.0 / _mm512_reduce_add_ps(sum));
    i = 0;
    while i < full {
        _mm512_storeu_ps(p.add(i), _mm512_mul_ps(_mm512_loadu_ps(p.add(i)), inv));
        i += 16;
    }
    if tail != 0 {
        let v = _mm512_maskz_loadu_ps(tail, p.add(full));
        _mm512_mask_storeu_ps(p.add(full), tail, _mm512_mul_ps(v, inv));
    }
}

/// [`softmax`] on 8 lanes, the last few elements through a padded step.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn softmax8(row: &mut [f32]) {
    let len = row.len();
    let full = len / 8 * 8;
    let rest = len - full;
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    let maxv = _mm256_set1_ps(max);
    let mut sum = _mm256_setzero_ps();
    let p = row.as_mut_ptr();
    let mut i = 0;
    while i < full {
        let e = exp8(_mm256_sub_ps(_mm256_loadu_ps(p.add(i)), maxv));
        _mm256_storeu_ps(p.add(i), e);
        sum = _mm256_add_ps(sum, e);
        i += 8;
    }
    let mut lanes = [0f32; 8];
    _mm256_storeu_ps(lanes.as_mut_ptr(), sum);
    let mut total: f32 = lanes.iter().sum();
    if rest > 0 {
        let mut pad = [max; 8];
        pad[..rest].copy_from_slice(&row[full..]);
        _mm256_storeu_ps(
            pad.as_mut_ptr(),
            exp8(_mm256_sub_ps(_mm256_loadu_ps(pad.as_ptr()), maxv)),
        );
        row[full..].copy_from_slice(&pad[..rest]);
        total += pad[..rest].iter().sum::<f32>();
    }
    let inv = 1.0 / total;
    row.iter_mut().for_each(|x| *x *= inv);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `e^x` of 16 values at the given level.
    #[cfg(target_arch = "x86_64")]
    fn exp_at(level: super::super::Level, x: &[f32; 16]) -> [f32; 16] {
        let mut got = [0f32; 16];
        // SAFETY: the caller checked the level's features.
        unsafe {
            match level {
                super::super::Level::Avx512 => {
                    _mm512_storeu_ps(got.as_mut_ptr(), exp16(_mm512_loadu_ps(x.as_ptr())))
                }
                super::super::Level::Avx2 => {
                    for h in [0, 8] {
                        let v = exp8(_mm256_loadu_ps(x.as_ptr().add(h)));
                        _mm256_storeu_ps(got.as_mut_ptr().add(h), v);
                    }
                }
            }
        }
        got
    }

    /// The vectorised `e^x` at every level this CPU has: within 4e-7 (relative) of libm's
    /// from −87.33 to 88 (the range of normal f32 results; gelu feeds it all, softmax −88
    /// to 0, within 2.5e-7), 0 or a subnormal below, NaN kept; each level's softmax within 1e-6 of the
    /// portable one (libm's `expf`) on rows of every length around the lane counts,
    /// summing to 1.
    #[test]
    fn vector_exp_and_softmax_match_libm() {
        #[cfg(target_arch = "x86_64")]
        for level in super::super::Level::ALL {
            if !level.supported() {
                continue;
            }
            let xs: Vec<f32> = (-9072..=9072)
                .map(|i| i as f32 * 0.0097)
                .chain([-87.9, -88.0, -100.0, -1e30, 0.0, -0.0, 1e-9, 87.9, f32::NAN])
                .collect();
            let (mut worst, mut worst_neg) = (0f32, 0f32);
            for chunk in xs.chunks(16) {
                let mut lanes = [0f32; 16];
                lanes[..chunk.len()].copy_from_slice(chunk);
                for (x, g) in chunk.iter().zip(exp_at(level, &lanes)) {
                    let want = x.exp();
                    if x.is_nan() {
                        assert!(g.is_nan(), "{level:?}: e^NaN = {g}");
                    } else if *x < -87.33 {
                        // Below f32's normal range (e^x < 2^-126): 0 or a subnormal.
                        assert!((0.0..1.2e-38).contains(&g), "{level:?}: e^{x} = {g}");
                    } else {
                        let e = (g - want).abs() / want;
                        assert!(e <= 4e-7, "{level:?}: e^{x} = {g}, libm {want}");
                        worst = worst.max(e);
                        if *x <= 0.0 {
                            worst_neg = worst_neg.max(e);
                        }
                    }
                }
            }
            assert!(
                worst_neg <= 2.5e-7,
                "{level:?}: e^x for x <= 0 off by {worst_neg}"
            );
            eprintln!("{level:?}: e^x within {worst:e} of libm, {worst_neg:e} for x <= 0");
            for len in [1usize, 2, 7, 8, 9, 15, 16, 17, 31, 33, 100, 513] {
                let row: Vec<f32> = (0..len)
                    .map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.7)
                    .collect();
                let mut want = row.clone();
                softmax_portable(&mut want);
                let mut got = row.clone();
                // SAFETY: the level's features were checked above.
                unsafe {
                    match level {
                        super::super::Level::Avx512 => softmax16(&mut got),
                        super::super::Level::Avx2 => softmax8(&mut got),
                    }
                }
                for (g, w) in got.iter().zip(&want) {
                    assert!(
                        (g - w).abs() <= 1e-6 * w.max(1e-3),
                        "{level:?}: softmax of {len}: {g} against {w}"
                    );
                }
                assert!((got.iter().sum::<f32>() - 1.0).abs() < 1e-5);
            }
        }
        let mut row = vec![0.5f32, -3.0, 2.0];
        softmax(&mut row);
        let mut want = vec![0.5f32, -3.0, 2.0];
        softmax_portable(&mut want);
        for (g, w) in row.iter().zip(&want) {
            assert!((g - w).abs() <= 1e-6, "softmax: {g} against {w}");
        }
        softmax(&mut []);
    }
}
