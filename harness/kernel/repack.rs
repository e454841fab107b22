//! q4_0 weights repacked for AVX2: eight rows interleaved, so one activation block, one
//! scale conversion and one float multiply-add serve eight rows (llama.cpp's idea, from
//! `ggml-cpu/repack.cpp`'s `block_q4_0x8`; the layout and kernel here are quantbench's).
//!
//! **Layout.** For each group of 8 rows and each 32-element block, 144 bytes — the same
//! as the 8 blocks it replaces (8 × 18), so repacking is not a second copy: the 8 rows'
//! f16 scales (16 bytes), then 4 chunks of 32 bytes. In chunk `j`, bytes `4r .. 4r + 4`
//! hold row `r`'s quants `4j .. 4j + 4` in their low nibbles and `4j + 16 .. 4j + 20` in
//! their high nibbles. Masking a chunk's low nibbles gives 8 lanes of 32 bits, lane `r`
//! holding 4 of row `r`'s quants; broadcasting the matching 4 activation bytes to every
//! lane and multiplying (`vpmaddubsw`) advances all 8 rows' dot products at once.
//!
//! **Arithmetic.** Per block, the 8 products of a chunk pair are summed in 16 bits
//! (unsigned quants ≤ 15 against |a| ≤ 127: at most 8 × 2 × 15 × 127 = 30,480, exact),
//! widened to 32 bits per row (`vpmaddwd`), and the offset comes off as an integer
//! (`8 × Σa`, Σa recovered exactly from the activations' `scale × Σa`), so each block's
//! integer dot product is exact — as in the other kernels, then multiplied by the product
//! of the two f16 scales and accumulated in f32.
//!
//! **Where it is used.** A linear layer's q4_0 weight on an AVX2 CPU (quantbench's
//! kernels active, rows a multiple of 8) is repacked once when the layer is made
//! ([`Interleaved::from_q4_0`], `Matrix::Interleaved`): the file's layout is dropped,
//! the bytes held stay the same count, and the record's `environment.kernels` says so.
//! The token table stays as stored (it is looked up row by row), as do AVX-512 CPUs
//! (their VNNI tile kernel is unmeasured against this one). A GGUF export writes the
//! stored layout back ([`Interleaved::stored_bytes`]), byte for byte.

use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};

use super::activations::{Activations, BLOCK};
use super::format::Format;

/// An `n × k` q4_0 matrix in the interleaved layout.
#[derive(Debug)]
pub struct Interleaved {
    n: usize,
    k: usize,
    bytes: Vec<u8>,
}

impl Interleaved {
    /// `q` repacked, where it is q4_0 on the CPU, its rows a multiple of 8 and this CPU's
    /// widest kernels AVX2 with quantbench's active; `None` otherwise.
    pub fn from_q4_0(q: &QTensor) -> Option<Arc<Interleaved>> {
        if q.dtype() != GgmlDType::Q4_0
            || !q.device().is_cpu()
            || super::active() != super::Kernels::Quantbench
            || super::level() != Some(super::Level::Avx2)
        {
            return None;
        }
        let (n, k) = q.shape().dims2().ok()?;
        if !n.is_multiple_of(ROWS) || !k.is_multiple_of(BLOCK) {
            return None;
        }
        let data = q.data().ok()?;
        Some(Arc::new(Interleaved {
            n,
            k,
            bytes: repack_q4_0(&data, n, k),
        }))
    }

    /// (rows, columns).
    pub fn shape(&self) -> (usize, usize) {
        (self.n, self.k)
    }

    /// Bytes held: those of the stored q4_0 matrix.
    pub fn len_bytes(&self) -> usize {
        self.bytes.len()
    }

    /// The interleaved bytes (for moving onto 2 MB pages).
    pub fn raw(&self) -> &[u8] {
        &self.bytes
    }

    /// The matrix in q4_0's stored layout again, byte for byte.
    pub fn stored_bytes(&self) -> Vec<u8> {
        let nb = self.k / BLOCK;
        let mut out = Vec::with_capacity(self.bytes.len());
        for row in 0..self.n {
            for b in 0..nb {
                out.extend_from_slice(&stored_block(&self.bytes, nb, row, b));
            }
        }
        out
    }

    /// Row `id` as f32 into `out`, as candle dequantizes q4_0 (`(q − 8) · d`).
    pub fn row_into(&self, id: usize, out: &mut [f32]) {
        let nb = self.k / BLOCK;
        for (b, o) in out.chunks_exact_mut(BLOCK).enumerate().take(nb) {
            let (q, d, _) = Format::Q4_0.decode_block(&stored_block(&self.bytes, nb, id, b));
            for (o, &v) in o.iter_mut().zip(&q) {
                *o = (v as i32 - 8) as f32 * d;
            }
        }
    }

    /// `out = x @ wᵀ (+ bias)` for `m` rows of `x`, rounding the activations in `scratch`.
    pub fn matmul_into(
        &self,
        x: &[f32],
        m: usize,
        bias: Option<&[f32]>,
        out: &mut [f32],
        scratch: &mut super::Scratch,
    ) {
        #[cfg(target_arch = "x86_64")]
        matmul_into(
            &self.bytes,
            self.n,
            self.k,
            x,
            m,
            &mut scratch.acts,
            &mut scratch.sums,
            out,
        );
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!(
            "only made on x86-64 CPUs with AVX2 ({m} rows, {:?}, {})",
            bias,
            out.len() + scratch.acts.k + x.len()
        );
        if let Some(bias) = bias {
            for row in out.chunks_exact_mut(self.n) {
                row.iter_mut().zip(bias).for_each(|(o, b)| *o += b);
            }
        }
    }

    /// `xs @ wᵀ (+ bias)` for f32 activations with any leading dimensions, as a tensor.
    pub fn forward(&self, xs: &Tensor, bias: Option<&[f32]>) -> candle_core::Result<Tensor> {
        let dims = xs.dims().to_vec();
        if dims.last() != Some(&self.k) {
            candle_core::bail!(
                "activations {dims:?} do not end in the weights' {} columns",
                self.k
            );
        }
        let x = xs
            .flatten_all()?
            .to_dtype(candle_core::DType::F32)?
            .to_vec1::<f32>()?;
        let m = x.len() / self.k;
        let mut out = vec![0f32; m * self.n];
        self.matmul_into(&x, m, bias, &mut out, &mut super::Scratch::default());
        let mut out_dims = dims;
        *out_dims.last_mut().expect("non-empty") = self.n;
        Tensor::from_vec(out, out_dims, &Device::Cpu)
    }
}

/// Rows interleaved in one group.
pub const ROWS: usize = 8;

/// Bytes of one group's block: 8 scales and 8 × 16 bytes of nibbles.
pub const GROUP_BLOCK_BYTES: usize = 2 * ROWS + ROWS * BLOCK / 2;

/// q4_0 weights `n × k` as stored (rows of 18-byte blocks) in the interleaved layout;
/// `n` a multiple of 8, `k` of 32.
pub fn repack_q4_0(w: &[u8], n: usize, k: usize) -> Vec<u8> {
    let block = Format::Q4_0.block_bytes();
    let nb = k / BLOCK;
    assert!(
        n.is_multiple_of(ROWS) && k.is_multiple_of(BLOCK),
        "{n} x {k} does not split into 8-row groups of blocks"
    );
    assert_eq!(w.len(), n * nb * block, "weights are not {n} x {k} of q4_0");
    let mut out = vec![0u8; w.len()];
    for g in 0..n / ROWS {
        for b in 0..nb {
            let dst = &mut out[(g * nb + b) * GROUP_BLOCK_BYTES..][..GROUP_BLOCK_BYTES];
            for r in 0..ROWS {
                let src = &w[((g * ROWS + r) * nb + b) * block..][..block];
                dst[2 * r..2 * r + 2].copy_from_slice(&src[..2]);
                // The stored block: byte i holds quant i (low nibble) and i + 16 (high).
                let q = |e: usize| {
                    if e < 16 {
                        src[2 + e] & 0x0F
                    } else {
                        src[2 + e - 16] >> 4
                    }
                };
                for j in 0..4 {
                    for e in 0..4 {
                        dst[2 * ROWS + j * 32 + 4 * r + e] =
                            q(4 * j + e) | (q(4 * j + e + 16) << 4);
                    }
                }
            }
        }
    }
    out
}

/// Row `row`'s block `b` back in the stored q4_0 form (the inverse of the repacking).
pub fn stored_block(packed: &[u8], nb: usize, row: usize, b: usize) -> [u8; 18] {
    let (g, r) = (row / ROWS, row % ROWS);
    let src = &packed[(g * nb + b) * GROUP_BLOCK_BYTES..][..GROUP_BLOCK_BYTES];
    let mut q = [0u8; BLOCK];
    for j in 0..4 {
        for e in 0..4 {
            let byte = src[2 * ROWS + j * 32 + 4 * r + e];
            q[4 * j + e] = byte & 0x0F;
            q[4 * j + e + 16] = byte >> 4;
        }
    }
    let mut out = [0u8; 18];
    out[..2].copy_from_slice(&src[2 * r..2 * r + 2]);
    for i in 0..16 {
        out[2 + i] = q[i] | (q[i + 16] << 4);
    }
    out
}

/// Each activation block's Σa as an exact integer, from its `scale × Σa` (Σa is at most
/// 32 × 127 in magnitude, so one division and a rounding recover it exactly).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
fn integer_sums(acts: &Activations, out: &mut Vec<i32>) {
    out.clear();
    out.extend(acts.scales.iter().zip(&acts.sums).map(|(&d, &s)| {
        if d == 0.0 {
            0
        } else {
            (s / d).round() as i32
        }
    }));
}

/// `out = x @ wᵀ` (`m × n`) for repacked q4_0 weights `packed` (`n × k`), the
/// activations rounded into `acts` and their integer sums into `sums`: the AVX2 kernel
/// (this CPU must have AVX2, FMA and F16C).
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
pub fn matmul_into(
    packed: &[u8],
    n: usize,
    k: usize,
    x: &[f32],
    m: usize,
    acts: &mut Activations,
    sums: &mut Vec<i32>,
    out: &mut [f32],
) {
    assert!(super::avx2_supported(), "this CPU lacks AVX2");
    assert!(n.is_multiple_of(ROWS) && k.is_multiple_of(BLOCK));
    assert_eq!(packed.len(), n / ROWS * (k / BLOCK) * GROUP_BLOCK_BYTES);
    assert_eq!(out.len(), m * n, "the output is not {m} x {n}");
    acts.quantize_into(x, m, k);
    integer_sums(acts, sums);
    let groups = n / ROWS;
    // One activation row: each unit a run of groups. More: 64 activation rows a unit, so
    // a group's weights stay in cache while the rows go by.
    let chunk = if m == 1 { 1 } else { 64 };
    let chunks = m.div_ceil(chunk);
    let (acts, sums) = (&*acts, &sums[..]);
    let addr = out.as_mut_ptr() as usize;
    candle_core::utils::barrier_pool().execute_chunked(groups * chunks, |range| {
        for unit in range {
            let (g, c) = (unit % groups, unit / groups);
            for row in c * chunk..m.min(c * chunk + chunk) {
                // SAFETY: each (group, row) writes its own 8 outputs of `out`, which
                // outlives the pool call; the CPU's features were checked above.
                unsafe {
                    avx2::group(
                        packed.as_ptr().add(g * (k / BLOCK) * GROUP_BLOCK_BYTES),
                        acts,
                        sums,
                        row,
                        (addr as *mut f32).add(row * n + g * ROWS),
                    )
                }
            }
        }
    });
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{Activations, BLOCK, GROUP_BLOCK_BYTES, ROWS};

    /// One group of 8 rows against activation row `row`: 8 outputs at `out`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn group(w: *const u8, acts: &Activations, sums: &[i32], row: usize, out: *mut f32) {
        let nb = acts.k / BLOCK;
        let low4 = _mm256_set1_epi8(0x0F);
        let ones = _mm256_set1_epi16(1);
        let qa = acts.qs.as_ptr().add(row * acts.k);
        let mut acc = _mm256_setzero_ps();
        for b in 0..nb {
            let p = w.add(b * GROUP_BLOCK_BYTES);
            let a = qa.add(b * BLOCK);
            let mut s16 = _mm256_setzero_si256();
            for j in 0..4 {
                let raw = _mm256_loadu_si256(p.add(2 * ROWS + 32 * j) as *const __m256i);
                let lo = _mm256_and_si256(raw, low4);
                let hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), low4);
                let a_lo = _mm256_set1_epi32(std::ptr::read_unaligned(a.add(4 * j) as *const i32));
                let a_hi =
                    _mm256_set1_epi32(std::ptr::read_unaligned(a.add(4 * j + 16) as *const i32));
                s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(lo, a_lo));
                s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(hi, a_hi));
            }
            let at = row * nb + b;
            let dot = _mm256_sub_epi32(
                _mm256_madd_epi16(s16, ones),
                _mm256_set1_epi32(8 * *sums.get_unchecked(at)),
            );
            let scales = _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i));
            let d = _mm256_mul_ps(scales, _mm256_set1_ps(*acts.scales.get_unchecked(at)));
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), d, acc);
        }
        _mm256_storeu_ps(out, acc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Tensor};

    fn data(len: usize, seed: usize) -> Vec<f32> {
        (0..len)
            .map(|i| {
                let v = ((i * 7919 + seed * 104_729) % 1009) as f32 / 1009.0 - 0.5;
                v * if i % 13 == 0 { 3.0 } else { 1.0 }
            })
            .collect()
    }

    fn q4_0(n: usize, k: usize, seed: usize) -> Vec<u8> {
        let w = Tensor::from_vec(data(n * k, seed), (n, k), &Device::Cpu).unwrap();
        QTensor::quantize(&w, GgmlDType::Q4_0)
            .unwrap()
            .data()
            .unwrap()
            .to_vec()
    }

    /// The repacking loses nothing: every block comes back as stored.
    #[test]
    fn repacking_is_a_permutation_of_the_stored_blocks() {
        let (n, k) = (16, 96);
        let w = q4_0(n, k, 1);
        let packed = repack_q4_0(&w, n, k);
        assert_eq!(packed.len(), w.len());
        for row in 0..n {
            for b in 0..k / BLOCK {
                let want = &w[(row * (k / BLOCK) + b) * 18..][..18];
                assert_eq!(
                    &stored_block(&packed, k / BLOCK, row, b)[..],
                    want,
                    "row {row} block {b}"
                );
            }
        }
    }

    /// The interleaved kernel equals the portable definition on the stored blocks, one
    /// activation row and many (with the sums' integer recovery exercised by zeros).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn interleaved_kernel_equals_the_reference() {
        if !crate::kernel::avx2_supported() {
            eprintln!("this CPU lacks AVX2: the interleaved kernel is not in use");
            return;
        }
        for (m, n, k) in [(1, 8, 32), (1, 24, 256), (3, 16, 96), (70, 32, 64)] {
            let w = q4_0(n, k, 2);
            let mut x = data(m * k, 3);
            x[..BLOCK].fill(0.0);
            let acts = Activations::quantize(&x, m, k);
            let want = crate::kernel::reference_matmul(Format::Q4_0, &w, n, &acts);
            let packed = repack_q4_0(&w, n, k);
            let mut got = vec![0f32; m * n];
            let (mut a, mut s) = (Activations::default(), Vec::new());
            matmul_into(&packed, n, k, &x, m, &mut a, &mut s, &mut got);
            for (i, (g, r)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (g - r).abs() <= 1e-5 * r.abs().max(1.0),
                    "{m}x{n}x{k} [{i}]: {g} vs {r}"
                );
            }
        }
    }
}
