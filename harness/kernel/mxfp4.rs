//! quantbench's product for MXFP4 matrices (`format/mxfp4.rs`): `y = x · Wᵀ (+ bias)`
//! as ggml's CPU backend computes it. The activations are rounded to q8_0 blocks first
//! (ggml's vec-dot type for MXFP4), as x86's `quantize_row_q8_0` rounds them (the
//! inverse scale `127 / amax`, where the reference quantizer and
//! [`super::activations`] take `1 / (amax / 127)`: a last-bit difference that moves an
//! activation now and then, and so a token on a model with small margins); each block's 32 code values
//! times the 32 int8 activations are summed in integers, eight lanes of four products
//! each; a lane's sum goes to float and is added, times the block's two scales
//! (`d_q8 · 2^(e − 128)`), into one of two accumulators of eight lanes by fused
//! multiply-add (even blocks in the first, odd in the second); the accumulators are
//! added and summed across lanes in ggml's `hsum_float_8` order, and an odd last block
//! is added alone — `ggml_vec_dot_mxfp4_q8_0`'s AVX2 path (ggml-cpu/arch/x86/quants.c),
//! which llama.cpp runs on x86 CPUs with AVX2, AVX-512 or not. The same float operations
//! in the same order: a product here is llama.cpp's to the bit (the AVX2 kernel and the
//! portable one here are held to each other by the tests below).

use crate::format::mxfp4::{e8m0_to_fp32_half, Mxfp4Matrix, BLOCK_BYTES, KVALUES, QK};
use crate::format::StoredMatrix;

/// Activations rounded to q8_0 blocks as ggml-cpu's x86 `quantize_row_q8_0` rounds them:
/// per block of 32, `d = amax / 127` (stored as f16), each value `round(x · 127 / amax)`
/// to the nearest, ties to even.
pub struct Q8Rows {
    pub qs: Vec<i8>,
    /// Each block's `d` as its f16 gives it back.
    pub scales: Vec<f32>,
}

impl Q8Rows {
    pub fn quantize(x: &[f32]) -> Q8Rows {
        let mut qs = vec![0i8; x.len()];
        let mut scales = vec![0f32; x.len() / QK];
        for ((xb, qb), d) in x
            .chunks_exact(QK)
            .zip(qs.chunks_exact_mut(QK))
            .zip(&mut scales)
        {
            let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
            *d = half::f16::from_f32(amax / 127.0).to_f32();
            let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
            for (q, v) in qb.iter_mut().zip(xb) {
                *q = (v * id).round_ties_even() as i8;
            }
        }
        Q8Rows { qs, scales }
    }
}

/// Weight rows per parallel task.
const ROWS: usize = 16;

/// `y[m × out] = x[m × k] · Wᵀ (+ bias)`.
pub fn matmul(w: &Mxfp4Matrix, x: &[f32], m: usize, bias: Option<&[f32]>, y: &mut [f32]) {
    let (n, k) = w.shape();
    assert_eq!(x.len(), m * k, "activations are not {m} x {k}");
    assert_eq!(y.len(), m * n, "output is not {m} x {n}");
    let acts = Q8Rows::quantize(x);
    let nb = k / QK;
    let row_bytes = nb * BLOCK_BYTES;
    let blocks = w.blocks();
    crate::format::by_row_chunks(n, m, ROWS, y, |start, rows, part| {
        for r in 0..rows {
            let row = start + r;
            let wr = &blocks[row * row_bytes..(row + 1) * row_bytes];
            let b = bias.map_or(0.0, |b| b[row]);
            for t in 0..m {
                let q = &acts.qs[t * k..(t + 1) * k];
                let d = &acts.scales[t * nb..(t + 1) * nb];
                part[t * rows + r] = dot(wr, q, d) + b;
            }
        }
    });
}

/// One weight row (`d.len()` blocks) against one activation row.
pub fn dot(w: &[u8], q: &[i8], d: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if super::level().is_some() {
        // SAFETY: level() checked AVX2 (and FMA) on this CPU.
        return unsafe { dot_avx2(w, q, d) };
    }
    dot_portable(w, q, d)
}

/// The block's code value for element `e` (0..32): low nibbles first, then high.
fn code(blk: &[u8], e: usize) -> i32 {
    let byte = blk[1 + e % 16];
    KVALUES[if e < 16 { byte & 0x0f } else { byte >> 4 } as usize] as i32
}

/// [`dot`] lane by lane, as the AVX2 path computes it.
pub fn dot_portable(w: &[u8], q: &[i8], d: &[f32]) -> f32 {
    let nb = d.len();
    let mut acc = [[0f32; 8]; 2];
    let mut ib = 0;
    while ib + 1 < nb {
        for (p, acc) in acc.iter_mut().enumerate() {
            let b = ib + p;
            let blk = &w[b * BLOCK_BYTES..(b + 1) * BLOCK_BYTES];
            let scale = d[b] * e8m0_to_fp32_half(blk[0]);
            for (l, a) in acc.iter_mut().enumerate() {
                let s: i32 = (4 * l..4 * l + 4)
                    .map(|e| code(blk, e) * q[b * QK + e] as i32)
                    .sum();
                *a = scale.mul_add(s as f32, *a);
            }
        }
        ib += 2;
    }
    let v: [f32; 8] = std::array::from_fn(|l| acc[0][l] + acc[1][l]);
    // hsum_float_8: the high half onto the low, then movehl, then movehdup.
    let r: [f32; 4] = std::array::from_fn(|i| v[4 + i] + v[i]);
    let mut sum = (r[0] + r[2]) + (r[1] + r[3]);
    for b in ib..nb {
        let blk = &w[b * BLOCK_BYTES..(b + 1) * BLOCK_BYTES];
        let scale = d[b] * e8m0_to_fp32_half(blk[0]);
        let s: i32 = (0..QK).map(|e| code(blk, e) * q[b * QK + e] as i32).sum();
        sum = scale.mul_add(s as f32, sum);
    }
    sum
}

/// [`dot`] with ggml's AVX2 instructions: the codes looked up 16 at a time by a byte
/// shuffle, `maddubs` on |code| and the activations signed by the code, `madd` by ones.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2(w: &[u8], q: &[i8], d: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let nb = d.len();
    let values = _mm_loadu_si128(KVALUES.as_ptr() as *const __m128i);
    let m4b = _mm_set1_epi8(0x0f);
    let ones = _mm256_set1_epi16(1);
    let lookup = |blk: *const u8| -> __m256i {
        let bits = _mm_loadu_si128(blk.add(1) as *const __m128i);
        let lo = _mm_shuffle_epi8(values, _mm_and_si128(bits, m4b));
        let hi = _mm_shuffle_epi8(values, _mm_and_si128(_mm_srli_epi16(bits, 4), m4b));
        _mm256_set_m128i(hi, lo)
    };
    let product = |codes: __m256i, acts: __m256i| -> __m256 {
        let ax = _mm256_sign_epi8(codes, codes);
        let sy = _mm256_sign_epi8(acts, codes);
        _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_maddubs_epi16(ax, sy), ones))
    };
    let mut acc1 = _mm256_setzero_ps();
    let mut acc2 = _mm256_setzero_ps();
    let mut ib = 0;
    while ib + 1 < nb {
        let (b0, b1) = (
            w.as_ptr().add(ib * BLOCK_BYTES),
            w.as_ptr().add((ib + 1) * BLOCK_BYTES),
        );
        let q0 = _mm256_loadu_si256(q.as_ptr().add(ib * QK) as *const __m256i);
        let q1 = _mm256_loadu_si256(q.as_ptr().add((ib + 1) * QK) as *const __m256i);
        let s0 = _mm256_set1_ps(d[ib] * e8m0_to_fp32_half(*b0));
        let s1 = _mm256_set1_ps(d[ib + 1] * e8m0_to_fp32_half(*b1));
        acc1 = _mm256_fmadd_ps(s0, product(lookup(b0), q0), acc1);
        acc2 = _mm256_fmadd_ps(s1, product(lookup(b1), q1), acc2);
        ib += 2;
    }
    let x = _mm256_add_ps(acc1, acc2);
    let mut res = _mm_add_ps(_mm256_extractf128_ps(x, 1), _mm256_castps256_ps128(x));
    res = _mm_add_ps(res, _mm_movehl_ps(res, res));
    res = _mm_add_ss(res, _mm_movehdup_ps(res));
    let mut sum = _mm_cvtss_f32(res);
    for b in ib..nb {
        let blk = &w[b * BLOCK_BYTES..(b + 1) * BLOCK_BYTES];
        let scale = d[b] * e8m0_to_fp32_half(blk[0]);
        let s: i32 = (0..QK).map(|e| code(blk, e) * q[b * QK + e] as i32).sum();
        sum = scale.mul_add(s as f32, sum);
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The AVX2 path and the lane-by-lane portable one give the same bits, for even and
    /// odd block counts; and both are the plain sum of dequantized weights times
    /// dequantized activations within rounding.
    #[test]
    fn avx2_and_portable_agree_to_the_bit_and_with_the_plain_sum() {
        for nb in [1usize, 2, 3, 8, 9] {
            let k = nb * QK;
            let wf: Vec<f32> = (0..k).map(|i| ((i as f32) * 0.731).sin() * 2.5).collect();
            let xf: Vec<f32> = (0..k).map(|i| ((i as f32) * 0.377).cos()).collect();
            let w = Mxfp4Matrix::quantize(&wf, 1, k);
            let a = Q8Rows::quantize(&xf);
            let p = dot_portable(w.blocks(), &a.qs, &a.scales);
            let v = dot(w.blocks(), &a.qs, &a.scales);
            assert_eq!(p.to_bits(), v.to_bits(), "{nb} blocks: {p} {v}");
            let mut wd = vec![0f32; k];
            w.dequantize_rows(0, &mut wd);
            let plain: f32 = (0..k)
                .map(|i| wd[i] * a.qs[i] as f32 * a.scales[i / QK])
                .sum();
            assert!(
                (p - plain).abs() <= 1e-4 * plain.abs().max(1.0),
                "{p} {plain}"
            );
        }
    }
}
