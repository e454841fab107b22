//! Products with ggml's k-quants `q4_k` and `q6_k` (llama.cpp's Q4_K_M mixes the two),
//! reading candle's blocks in place: token tables used as LM heads, matrices whose rows
//! are not a multiple of 8, and every k-quant matrix where [`super::repack`]'s
//! interleaved layout is not made. The activations' `q8_K` rounding here serves both.
//!
//! candle 0.11 on x86-64 repacks every `q4_k` matrix whose rows come in multiples of 16
//! (and such `q6_k` ones from two activation rows on; `repack_x86::select`) into tiles
//! of 16 rows with widened scales the first time it
//! multiplies by it, and keeps that second copy beside the GGUF's bytes for the life of
//! the model — memory no record counted. These kernels need no copy: each 256-weight
//! super-block is read as stored (144 bytes for `q4_k`, 210 for `q6_k`), 4 weight rows at
//! a time, prefetched ahead, on candle's thread pool.
//!
//! The activations are rounded the way ggml's `q8_K` does (`quantize_row_q8_K_ref`) — one
//! f32 scale per 256 values, `q = nearest_int(−127 / max · x)` with `max` the value of
//! largest magnitude, ties to even (candle's rounds them away from zero) — with the sums
//! of each 16 quants kept for the minimums. Every
//! super-block's integer dot products are exact in i32 (`vpmaddubsw` pairs stay inside
//! i16: 2 × 15 × 128 for `q4_k`, 2 × 63 × 128 for `q6_k`), so the kernels equal the
//! portable definition here up to the order of the f32 sums, and candle's own
//! `vec_dot_q4k_q8k` / `vec_dot_q6k_q8k` likewise.

use candle_core::quantized::GgmlDType;

pub use crate::format::GgmlType;
use half::f16;

/// Weights per super-block.
pub const QK_K: usize = 256;

/// The k-quant types with a kernel here.
pub const KQUANTS: [GgmlType; 2] = [GgmlType::Q4K, GgmlType::Q6K];

/// The type of a candle dtype, when these kernels cover it.
pub fn kquant_of(dtype: GgmlDType) -> Option<GgmlType> {
    let t = GgmlType::of(dtype);
    KQUANTS.contains(&t).then_some(t)
}

impl GgmlType {
    /// One super-block's 256 weights as f32 (the format's definition, as ggml's
    /// `dequantize_row_q4_K` / `_q6_K`).
    pub fn dequantize_superblock(self, blk: &[u8]) -> [f32; QK_K] {
        let mut out = [0f32; QK_K];
        match self {
            GgmlType::Q4K => {
                let d = f16_le(blk, 0);
                let dmin = f16_le(blk, 2);
                let (sc, m) = q4k_scales(&blk[4..16]);
                let qs = &blk[16..144];
                for (i, o) in out.iter_mut().enumerate() {
                    let g = i / 32;
                    let q = q4k_quant(qs, i);
                    *o = d * sc[g] as f32 * q as f32 - dmin * m[g] as f32;
                }
            }
            GgmlType::Q6K => {
                let d = f16_le(blk, 208);
                for (i, o) in out.iter_mut().enumerate() {
                    let (q, sc) = q6k_quant(blk, i);
                    *o = d * sc as f32 * (q as i32 - 32) as f32;
                }
            }
            other => unreachable!("{other} is not a k-quant with a kernel here"),
        }
        out
    }
}

fn f16_le(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// `q4_k`'s eight 6-bit scales and minimums from their 12 packed bytes (ggml's
/// `get_scale_min_k4`).
pub fn q4k_scales(q: &[u8]) -> ([u8; 8], [u8; 8]) {
    let mut sc = [0u8; 8];
    let mut m = [0u8; 8];
    for j in 0..8 {
        if j < 4 {
            sc[j] = q[j] & 63;
            m[j] = q[j + 4] & 63;
        } else {
            sc[j] = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
            m[j] = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
        }
    }
    (sc, m)
}

/// The 4-bit quant of weight `i` of a `q4_k` super-block's 128 bytes of nibbles: each
/// 64 weights take 32 bytes, low nibbles first.
fn q4k_quant(qs: &[u8], i: usize) -> u8 {
    let byte = qs[(i / 64) * 32 + i % 32];
    if i % 64 < 32 {
        byte & 0xF
    } else {
        byte >> 4
    }
}

/// The 6-bit quant (0..63, before −32) and the scale of weight `i` of a `q6_k` block.
fn q6k_quant(blk: &[u8], i: usize) -> (u8, i8) {
    let (half, j) = (i / 128, i % 128);
    let ql = &blk[half * 64..];
    let qh = &blk[128 + half * 32..];
    let (l, part) = (j % 32, j / 32);
    let low = match part {
        0 => ql[l] & 0xF,
        1 => ql[l + 32] & 0xF,
        2 => ql[l] >> 4,
        _ => ql[l + 32] >> 4,
    };
    let high = (qh[l] >> (2 * part)) & 3;
    let sc = blk[192 + half * 8 + l / 16 + 2 * part] as i8;
    (low | (high << 4), sc)
}

/// `rows` activation vectors rounded to 8 bits in super-blocks of 256, as `q8_K`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct KActivations {
    pub rows: usize,
    pub k: usize,
    /// `rows × k` quants.
    pub qs: Vec<i8>,
    /// `rows × k/256` scales (f32, as `q8_K` keeps them).
    pub d: Vec<f32>,
    /// `rows × k/16`: the sum of each 16 quants.
    pub bsums: Vec<i16>,
}

impl KActivations {
    /// Round `x` (`rows × k`, `k` a multiple of 256) as ggml's `quantize_row_q8_K_ref`.
    pub fn quantize(x: &[f32], rows: usize, k: usize) -> KActivations {
        let mut a = KActivations::default();
        a.quantize_into(x, rows, k);
        a
    }

    /// [`KActivations::quantize`] into this value's buffers, reusing their memory. Many
    /// rows (a prompt) are shared out on candle's pool, a block per unit.
    pub fn quantize_into(&mut self, x: &[f32], rows: usize, k: usize) {
        assert_eq!(x.len(), rows * k, "activations are {rows} x {k}");
        assert_eq!(k % QK_K, 0, "k = {k} is not a multiple of {QK_K}");
        let blocks = rows * (k / QK_K);
        let a = self;
        a.rows = rows;
        a.k = k;
        a.qs.resize(rows * k, 0);
        a.d.resize(blocks, 0.0);
        a.bsums.resize(rows * k / 16, 0);
        let (qs, d, bsums) = (
            super::Disjoint::new(&mut a.qs),
            super::Disjoint::new(&mut a.d),
            super::Disjoint::new(&mut a.bsums),
        );
        super::per_unit(rows, blocks, |range| {
            for blk in range {
                // SAFETY: block `blk`'s quants, scale and sums are its unit's alone,
                // inside the buffers sized above.
                let (q, s, scale) = unsafe {
                    (
                        qs.part(blk * QK_K, QK_K),
                        bsums.part(blk * 16, 16),
                        d.part(blk, 1),
                    )
                };
                scale[0] = quantize_k_block(&x[blk * QK_K..][..QK_K], q, s);
            }
        });
    }

    pub fn blocks_per_row(&self) -> usize {
        self.k / QK_K
    }
}

/// One super-block of 256 activations rounded as `q8_K` into `q` (256 quants) and `bsums`
/// (16 sums of 16); returns the scale. The SIMD rounding where the CPU has AVX2.
fn quantize_k_block(x: &[f32], q: &mut [i8], bsums: &mut [i16]) -> f32 {
    let max = largest_magnitude(x);
    if max == 0.0 {
        // An all-zero block: zero quants, scale and sums (the buffers are reused).
        q.fill(0);
        bsums.fill(0);
        return 0.0;
    }
    let iscale = -127f32 / max;
    #[cfg(target_arch = "x86_64")]
    if super::avx2_supported() {
        // SAFETY: the CPU has AVX2; both slices hold 256 values.
        unsafe { round_k_block_avx2(x, iscale, q) };
    } else {
        round_k_block(x, iscale, q);
    }
    #[cfg(not(target_arch = "x86_64"))]
    round_k_block(x, iscale, q);
    for (j, s) in bsums.iter_mut().enumerate() {
        *s = q[j * 16..][..16].iter().map(|&v| v as i16).sum();
    }
    1.0 / iscale
}

/// The value of largest magnitude, the first one on ties (NaNs skipped); 0 for none.
fn largest_magnitude(x: &[f32]) -> f32 {
    let (mut max, mut amax) = (0f32, 0f32);
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    max
}

/// `q = nearest_int(iscale · x)` (to the nearest, ties to even), at most 127: ggml's
/// `quantize_row_q8_K_ref`, which llama.cpp's CPU backend runs (candle's `q8_K` rounds
/// ties away from zero instead; `iscale · x` lies in −127 … 127 here).
fn round_k_block(x: &[f32], iscale: f32, q: &mut [i8]) {
    for (q, &v) in q.iter_mut().zip(x) {
        *q = (iscale * v).round_ties_even().clamp(-128.0, 127.0) as i8;
    }
}

/// [`round_k_block`] 8 lanes at a time, bit for bit on finite values (a NaN activation
/// rounds to −128 here, to 0 there): the product as the scalar one, the rounding the
/// CPU's to-nearest-even.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn round_k_block_avx2(x: &[f32], iscale: f32, q: &mut [i8]) {
    use std::arch::x86_64::*;
    debug_assert!(x.len() == QK_K && q.len() == QK_K);
    let scale = _mm256_set1_ps(iscale);
    let (lo, hi) = (_mm256_set1_ps(-128.0), _mm256_set1_ps(127.0));
    for c in 0..QK_K / 32 {
        let qi: [__m256i; 4] = std::array::from_fn(|i| {
            let v = _mm256_mul_ps(_mm256_loadu_ps(x.as_ptr().add(32 * c + 8 * i)), scale);
            let r = _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            _mm256_cvttps_epi32(_mm256_min_ps(_mm256_max_ps(r, lo), hi))
        });
        // Packs interleave the 128-bit lanes; one permute puts the 32 bytes in order.
        let p16a = _mm256_packs_epi32(qi[0], qi[1]);
        let p16b = _mm256_packs_epi32(qi[2], qi[3]);
        let p8 = _mm256_packs_epi16(p16a, p16b);
        let p8 = _mm256_permutevar8x32_epi32(p8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256(q.as_mut_ptr().add(32 * c) as *mut __m256i, p8);
    }
}

/// One weight super-block against one activation super-block, the portable way, with
/// integer sums as the kernels form them: the definition they are tested against.
fn block_dot(format: GgmlType, blk: &[u8], q8: &[i8], d8: f32, bsums: &[i16]) -> f32 {
    match format {
        GgmlType::Q4K => {
            let (sc, m) = q4k_scales(&blk[4..16]);
            let qs = &blk[16..144];
            let mut sumi = 0i32;
            for (g, &s) in sc.iter().enumerate() {
                let dot: i32 = (g * 32..g * 32 + 32)
                    .map(|i| q4k_quant(qs, i) as i32 * q8[i] as i32)
                    .sum();
                sumi += s as i32 * dot;
            }
            let summ: i32 = m
                .iter()
                .enumerate()
                .map(|(g, &mv)| mv as i32 * (bsums[2 * g] as i32 + bsums[2 * g + 1] as i32))
                .sum();
            d8 * f16_le(blk, 0) * sumi as f32 - d8 * f16_le(blk, 2) * summ as f32
        }
        GgmlType::Q6K => {
            let mut sumi = 0i32;
            for g in 0..16 {
                let mut dot = 0i32;
                let mut sc = 0i32;
                for (i, &a) in q8.iter().enumerate().skip(g * 16).take(16) {
                    let (q, s) = q6k_quant(blk, i);
                    dot += (q as i32 - 32) * a as i32;
                    sc = s as i32;
                }
                sumi += sc * dot;
            }
            d8 * f16_le(blk, 208) * sumi as f32
        }
        other => unreachable!("{other} is not a k-quant with a kernel here"),
    }
}

/// The portable product `acts @ w^T` (`w`: `n` rows of super-blocks).
pub fn reference_matmul(format: GgmlType, w: &[u8], n: usize, acts: &KActivations) -> Vec<f32> {
    let nb = acts.blocks_per_row();
    let bytes = format.block_bytes();
    let mut out = vec![0f32; acts.rows * n];
    for c in 0..acts.rows {
        for r in 0..n {
            let mut sum = 0f32;
            for b in 0..nb {
                let blk = &w[(r * nb + b) * bytes..][..bytes];
                let at = c * nb + b;
                sum += block_dot(
                    format,
                    blk,
                    &acts.qs[at * QK_K..][..QK_K],
                    acts.d[at],
                    &acts.bsums[at * 16..][..16],
                );
            }
            out[c * n + r] = sum;
        }
    }
    out
}

/// `x @ w^T` for `w` (`n × k` super-blocks of `format`, as stored) and `x` (`m × k`):
/// the AVX2 kernels where the CPU has them, else the portable product.
pub fn matmul(format: GgmlType, w: &[u8], n: usize, k: usize, x: &[f32], m: usize) -> Vec<f32> {
    let mut out = vec![0f32; m * n];
    matmul_into(
        format,
        w,
        n,
        k,
        x,
        m,
        &mut KActivations::default(),
        &mut out,
    );
    out
}

/// [`matmul`] into `out` (`m × n`), rounding the activations into `acts`' buffers: no
/// allocation once `acts` has held activations of this size.
#[allow(clippy::too_many_arguments)]
pub fn matmul_into(
    format: GgmlType,
    w: &[u8],
    n: usize,
    k: usize,
    x: &[f32],
    m: usize,
    acts: &mut KActivations,
    out: &mut [f32],
) {
    assert_eq!(k % QK_K, 0, "k = {k} is not a multiple of {QK_K}");
    assert_eq!(
        w.len(),
        n * (k / QK_K) * format.block_bytes(),
        "weights are not {n} x {k} of {format:?}"
    );
    assert_eq!(out.len(), m * n, "the output is not {m} x {n}");
    acts.quantize_into(x, m, k);
    #[cfg(target_arch = "x86_64")]
    if super::avx2_supported() {
        return simd_matmul(format, w, n, acts, out);
    }
    out.copy_from_slice(&reference_matmul(format, w, n, acts));
}

#[cfg(target_arch = "x86_64")]
fn simd_matmul(format: GgmlType, w: &[u8], n: usize, acts: &KActivations, out: &mut [f32]) {
    assert!(super::avx2_supported(), "this CPU lacks AVX2");
    let ops = avx2::Operands {
        weights: w.as_ptr(),
        row_bytes: acts.blocks_per_row() * format.block_bytes(),
        acts,
        out: out.as_mut_ptr(),
        n,
    };
    let addr = &ops as *const avx2::Operands as usize;
    super::for_each_tile(n, acts.rows, |rows, cols| {
        // SAFETY: `ops` outlives the pool call; tiles write disjoint outputs; the CPU's
        // AVX2 was checked above.
        let ops = unsafe { &*(addr as *const avx2::Operands) };
        unsafe {
            match format {
                GgmlType::Q4K => avx2::rows::<{ GgmlType::Q4K as u8 }>(ops, rows, cols),
                GgmlType::Q6K => avx2::rows::<{ GgmlType::Q6K as u8 }>(ops, rows, cols),
                other => unreachable!("{other} is not a k-quant with a kernel here"),
            }
        }
    });
}

/// Weight rows `[r0, r1)` of `w` (super-blocks of `format` as stored, one row after
/// another) against activation rows `[c0, c1)` of `acts`, each output at
/// `out[c · n + r]`: the AVX2 kernel on one unit of work, for callers that share out the
/// units themselves (the interleaved layout's rows past its last group, `repack.rs`).
///
/// # Safety
/// The CPU has AVX2, FMA and F16C; `w` holds the rows, `acts` the columns, and no other
/// thread touches those outputs of `out` meanwhile.
#[cfg(target_arch = "x86_64")]
pub(crate) unsafe fn avx2_block_rows(
    format: GgmlType,
    w: *const u8,
    acts: &KActivations,
    out: *mut f32,
    n: usize,
    rows: (usize, usize),
    cols: (usize, usize),
) {
    let ops = avx2::Operands {
        weights: w,
        row_bytes: acts.blocks_per_row() * format.block_bytes(),
        acts,
        out,
        n,
    };
    match format {
        GgmlType::Q4K => avx2::rows::<{ GgmlType::Q4K as u8 }>(&ops, rows, cols),
        GgmlType::Q6K => avx2::rows::<{ GgmlType::Q6K as u8 }>(&ops, rows, cols),
        other => unreachable!("{other} is not a k-quant with a kernel here"),
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{GgmlType, KActivations, QK_K};
    use crate::kernel::tile::{f16_at, hsum, PREFETCH_L2_ROWS, PREFETCH_ROWS};

    pub struct Operands<'a> {
        pub weights: *const u8,
        pub row_bytes: usize,
        pub acts: &'a KActivations,
        pub out: *mut f32,
        pub n: usize,
    }

    macro_rules! avx2_fn {
        ($($item:item)*) => {$(
            #[target_feature(enable = "avx2,fma,f16c")]
            $item
        )*};
    }

    /// `vpshufb` masks that broadcast 16-bit lane `j` (bytes 2j, 2j+1) of each 128-bit
    /// half: `q4_k`'s scale for its group `j` of 32 weights.
    static K4_SHUFFLE: [[u8; 32]; 8] = {
        let mut t = [[0u8; 32]; 8];
        let mut j = 0;
        while j < 8 {
            let mut b = 0;
            while b < 32 {
                t[j][b] = (2 * j + b % 2) as u8;
                b += 1;
            }
            j += 1;
        }
        t
    };

    /// `vpshufb` masks picking byte `s` eight times then byte `s + 1` eight times: the
    /// two `q6_k` scales (groups of 16) of 32 weights, `s` = 2i.
    static K6_SHUFFLE: [[u8; 16]; 8] = {
        let mut t = [[0u8; 16]; 8];
        let mut i = 0;
        while i < 8 {
            let mut b = 0;
            while b < 16 {
                t[i][b] = (2 * i + b / 8) as u8;
                b += 1;
            }
            i += 1;
        }
        t
    };

    #[inline(always)]
    unsafe fn scale_shuffle(j: usize) -> __m256i {
        _mm256_loadu_si256(K4_SHUFFLE.as_ptr().add(j) as *const __m256i)
    }

    /// One `q4_k` super-block at `p` against activation super-block `at`: (d8·d ×
    /// the scaled integer sums, in 8 lanes; d8·dmin × Σ m·bsum).
    #[inline(always)]
    unsafe fn q4k(p: *const u8, a: &KActivations, at: usize) -> (__m256i, f32, f32) {
        let mut raw = [0u32; 3];
        std::ptr::copy_nonoverlapping(p.add(4), raw.as_mut_ptr() as *mut u8, 12);
        const KMASK1: u32 = 0x3f3f_3f3f;
        const KMASK2: u32 = 0x0f0f_0f0f;
        const KMASK3: u32 = 0x0303_0303;
        let u3 = ((raw[2] >> 4) & KMASK2) | (((raw[1] >> 6) & KMASK3) << 4);
        let u2 = raw[1] & KMASK1;
        let u1 = (raw[2] & KMASK2) | (((raw[0] >> 6) & KMASK3) << 4);
        let u0 = raw[0] & KMASK1;
        // Scales in the low 8 i16 lanes, minimums in the high 8.
        let mins_scales =
            _mm256_cvtepu8_epi16(_mm_set_epi32(u3 as i32, u2 as i32, u1 as i32, u0 as i32));
        let bsums = _mm256_loadu_si256(a.bsums.as_ptr().add(at * 16) as *const __m256i);
        let pair_sums = _mm_hadd_epi16(
            _mm256_castsi256_si128(bsums),
            _mm256_extracti128_si256(bsums, 1),
        );
        let prod = _mm_madd_epi16(_mm256_extracti128_si256(mins_scales, 1), pair_sums);
        let prod = _mm_add_epi32(prod, _mm_shuffle_epi32(prod, 0b01_00_11_10));
        let prod = _mm_add_epi32(prod, _mm_shuffle_epi32(prod, 0b10_11_00_01));
        let summ = _mm_cvtsi128_si32(prod);
        let sc = _mm256_castsi256_si128(mins_scales);
        let scales = _mm256_set_m128i(sc, sc);
        let m4 = _mm256_set1_epi8(0xF);
        let q8 = a.qs.as_ptr().add(at * QK_K);
        let qs = p.add(16);
        let mut sumi = _mm256_setzero_si256();
        for j in 0..4 {
            let bits = _mm256_loadu_si256(qs.add(32 * j) as *const __m256i);
            let lo = _mm256_and_si256(bits, m4);
            let hi = _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4);
            let a_lo = _mm256_loadu_si256(q8.add(64 * j) as *const __m256i);
            let a_hi = _mm256_loadu_si256(q8.add(64 * j + 32) as *const __m256i);
            let s_lo = _mm256_shuffle_epi8(scales, scale_shuffle(2 * j));
            let s_hi = _mm256_shuffle_epi8(scales, scale_shuffle(2 * j + 1));
            let p_lo = _mm256_madd_epi16(s_lo, _mm256_maddubs_epi16(lo, a_lo));
            let p_hi = _mm256_madd_epi16(s_hi, _mm256_maddubs_epi16(hi, a_hi));
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p_lo, p_hi));
        }
        let d8 = *a.d.get_unchecked(at);
        (sumi, d8 * f16_at(p), d8 * f16_at(p.add(2)) * summ as f32)
    }

    /// One `q6_k` super-block at `p` against activation super-block `at`.
    #[inline(always)]
    unsafe fn q6k(p: *const u8, a: &KActivations, at: usize) -> (__m256i, f32, f32) {
        let m4 = _mm256_set1_epi8(0xF);
        let m2 = _mm256_set1_epi8(3);
        let m32 = _mm256_set1_epi8(32);
        let scales = _mm_loadu_si128(p.add(192) as *const __m128i);
        let q8 = a.qs.as_ptr().add(at * QK_K);
        let mut sumi = _mm256_setzero_si256();
        for half in 0..2 {
            let ql = p.add(64 * half);
            let qh = _mm256_loadu_si256(p.add(128 + 32 * half) as *const __m256i);
            let l0 = _mm256_loadu_si256(ql as *const __m256i);
            let l1 = _mm256_loadu_si256(ql.add(32) as *const __m256i);
            let q = [
                _mm256_or_si256(
                    _mm256_and_si256(l0, m4),
                    _mm256_slli_epi16(_mm256_and_si256(qh, m2), 4),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(l1, m4),
                    _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), m2), 4),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16(l0, 4), m4),
                    _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), m2), 4),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                    _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), m2), 4),
                ),
            ];
            for (part, &qv) in q.iter().enumerate() {
                let av = _mm256_loadu_si256(q8.add(128 * half + 32 * part) as *const __m256i);
                // (q − 32)·a as q·a − 32·a: both pair sums stay inside i16.
                let prod =
                    _mm256_sub_epi16(_mm256_maddubs_epi16(qv, av), _mm256_maddubs_epi16(m32, av));
                // Scales 8·half + 2·part (first 16 weights) and + 1 (next 16).
                let s = 8 * half + 2 * part;
                let sc = _mm_shuffle_epi8(
                    scales,
                    _mm_loadu_si128(K6_SHUFFLE.as_ptr().add(s / 2) as *const __m128i),
                );
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(_mm256_cvtepi8_epi16(sc), prod));
            }
        }
        let d8 = *a.d.get_unchecked(at);
        (sumi, d8 * f16_at(p.add(208)), 0.0)
    }

    avx2_fn! {
        #[allow(clippy::needless_range_loop)]
        unsafe fn tile<const F: u8, const R: usize, const C: usize>(
            ops: &Operands,
            w_row: usize,
            a_row: usize,
        ) {
            let format = GgmlType::from_u8(F);
            let nb = ops.acts.blocks_per_row();
            let bytes = format.block_bytes();
            let mut acc = [[_mm256_setzero_ps(); C]; R];
            let mut acc_min = [[0f32; C]; R];
            for b in 0..nb {
                for r in 0..R {
                    let p = ops.weights.add((w_row + r) * ops.row_bytes + b * bytes);
                    // A super-block spans up to four cache lines: ask for all of them ahead.
                    let ahead = p.wrapping_add(PREFETCH_ROWS * ops.row_bytes);
                    let far = p.wrapping_add(PREFETCH_L2_ROWS * ops.row_bytes);
                    for line in 0..4 {
                        _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64 * line) as *const i8);
                        _mm_prefetch::<_MM_HINT_T1>(far.wrapping_add(64 * line) as *const i8);
                    }
                    for c in 0..C {
                        let at = (a_row + c) * nb + b;
                        let (sumi, d, min) = match format {
                            GgmlType::Q4K => q4k(p, ops.acts, at),
                            GgmlType::Q6K => q6k(p, ops.acts, at),
                            _ => unreachable!(),
                        };
                        acc[r][c] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc[r][c]);
                        acc_min[r][c] += min;
                    }
                }
            }
            for r in 0..R {
                for c in 0..C {
                    *ops.out.add((a_row + c) * ops.n + w_row + r) = hsum(acc[r][c]) - acc_min[r][c];
                }
            }
        }

        /// Activation rows `[c0, m)` against weight rows `[r0, r1)`, 4 × 2 tiles where
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::tests::data;
    use candle_core::quantized::{QMatMul, QTensor};
    use candle_core::{Device, Module, Tensor};

    /// Our reading of both formats equals candle's dequantization.
    #[test]
    fn decoding_agrees_with_candle() {
        let (n, k) = (5, 512);
        let w = Tensor::from_vec(data(n * k, 1), (n, k), &Device::Cpu).unwrap();
        for f in KQUANTS {
            let q = QTensor::quantize(&w, f.dtype()).unwrap();
            let theirs = q
                .dequantize(&Device::Cpu)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let bytes = q.data().unwrap();
            assert_eq!(bytes.len(), n * k / QK_K * f.block_bytes());
            let ours: Vec<f32> = bytes
                .chunks(f.block_bytes())
                .flat_map(|b| f.dequantize_superblock(b))
                .collect();
            assert_eq!(ours, theirs, "{f:?}");
        }
    }

    /// The AVX2 kernels equal the portable definition on every tile shape; the
    /// definition equals a hand product of the dequantized weights and activations, and
    /// candle's own product (its `q8_K` rounding is ours).
    #[test]
    fn kernels_equal_the_definition_and_candle() {
        for (m, n, k) in [
            (1, 37, 256),
            (2, 9, 512),
            (3, 8, 768),
            (9, 19, 256),
            (70, 66, 512),
        ] {
            let w = Tensor::from_vec(data(n * k, 3), (n, k), &Device::Cpu).unwrap();
            let x = data(m * k, 4);
            let acts = KActivations::quantize(&x, m, k);
            for f in KQUANTS {
                let q = std::sync::Arc::new(QTensor::quantize(&w, f.dtype()).unwrap());
                let bytes = q.data().unwrap();
                let want = reference_matmul(f, &bytes, n, &acts);
                let scale = want.iter().fold(1f32, |s, v| s.max(v.abs()));
                #[cfg(target_arch = "x86_64")]
                if crate::kernel::avx2_supported() {
                    let mut got = vec![0f32; m * n];
                    simd_matmul(f, &bytes, n, &acts, &mut got);
                    for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                        assert!(
                            (a - b).abs() <= 1e-5 * scale,
                            "{f:?} {m}x{n}x{k} [{i}]: {a} vs {b}"
                        );
                    }
                }
                // By hand, in f64, from the dequantized weights and activations.
                let wd: Vec<f32> = bytes
                    .chunks(f.block_bytes())
                    .flat_map(|b| f.dequantize_superblock(b))
                    .collect();
                for c in 0..m {
                    for r in 0..n {
                        let hand: f64 = (0..k)
                            .map(|i| {
                                let a = acts.d[(c * k + i) / QK_K] * acts.qs[c * k + i] as f32;
                                wd[r * k + i] as f64 * a as f64
                            })
                            .sum();
                        let got = want[c * n + r] as f64;
                        assert!(
                            (got - hand).abs() <= 1e-4 * scale as f64,
                            "{f:?}: {got} vs {hand}"
                        );
                    }
                }
                let xt = Tensor::from_vec(x.clone(), (m, k), &Device::Cpu).unwrap();
                let theirs = QMatMul::QTensor(q.clone())
                    .forward(&xt)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap();
                for (a, b) in want.iter().zip(&theirs) {
                    assert!(
                        (a - b).abs() <= 1e-4 * scale,
                        "{f:?} {m}x{n}x{k}: ours {a} vs candle {b}"
                    );
                }
            }
        }
    }

    #[test]
    fn activations_round_as_q8_k() {
        let x: Vec<f32> = (0..512).map(|i| (i as f32 - 200.0) * 0.01).collect();
        let a = KActivations::quantize(&x, 1, 512);
        // The value of largest magnitude in each block maps to −127 (ggml's sign
        // convention) and the scale is the inverse of −127 / that value: block 0's is
        // x = −2.0 (scale 2/127), block 1's x = 3.11 (scale −3.11/127).
        assert_eq!((a.qs[0], a.qs[511]), (-127, -127));
        assert!((a.d[0] - 2.0 / 127.0).abs() < 1e-7, "{}", a.d[0]);
        assert!((a.d[1] + 3.11 / 127.0).abs() < 1e-6, "{}", a.d[1]);
        assert_eq!((a.qs[200], a.qs[100]), (0, -64)); // x = 0 and x = −1.0
        for b in 0..2 {
            for j in 0..16 {
                let s: i16 = a.qs[b * 256 + j * 16..][..16]
                    .iter()
                    .map(|&q| q as i16)
                    .sum();
                assert_eq!(a.bsums[b * 16 + j], s);
            }
        }
        let zeros = KActivations::quantize(&[0.0; 256], 1, 256);
        assert_eq!((zeros.d[0], zeros.qs[0], zeros.bsums[0]), (0.0, 0, 0));
    }
    /// The AVX2 rounding of a super-block equals the portable one bit for bit: ties
    /// (x · iscale exactly halfway, both signs), the ±127 ends, ordinary values. And
    /// many rows (rounded on the pool) equal the same rows rounded one at a time.
    #[test]
    fn simd_and_pooled_rounding_equal_the_portable_one() {
        // iscale = −127 / −127 = 1: every value below is its own scaled value.
        let mut ties: Vec<f32> = (0..QK_K).map(|i| i as f32 * 0.5 - 64.0).collect();
        ties[3] = -127.0;
        let blocks = [
            ties,
            data(QK_K, 5),
            data(QK_K, 6).iter().map(|v| v * 1e-3).collect(),
        ];
        for x in &blocks {
            let iscale = -127f32 / largest_magnitude(x);
            let mut want = vec![0i8; QK_K];
            round_k_block(x, iscale, &mut want);
            #[cfg(target_arch = "x86_64")]
            if crate::kernel::avx2_supported() {
                let mut got = vec![0i8; QK_K];
                unsafe { round_k_block_avx2(x, iscale, &mut got) };
                assert_eq!(got, want);
            }
        }
        let (rows, k) = (9, 2 * QK_K);
        let mut x = data(rows * k, 7);
        x[QK_K..2 * QK_K].fill(0.0);
        let all = KActivations::quantize(&x, rows, k);
        for r in 0..rows {
            let one = KActivations::quantize(&x[r * k..(r + 1) * k], 1, k);
            assert_eq!(&all.qs[r * k..(r + 1) * k], &one.qs[..]);
            assert_eq!(&all.d[r * 2..r * 2 + 2], &one.d[..]);
            assert_eq!(&all.bsums[r * k / 16..(r + 1) * k / 16], &one.bsums[..]);
        }
    }

    /// Buffers reused across sizes and contents round exactly as fresh ones: an
    /// all-zero block after a non-zero one leaves no stale quants, scale or sums.
    #[test]
    fn reused_activations_equal_fresh_ones() {
        let mut reused = KActivations::default();
        let big = data(3 * 512, 7);
        reused.quantize_into(&big, 3, 512);
        assert_eq!(reused, KActivations::quantize(&big, 3, 512));
        let mut small = data(2 * 256, 8);
        small[256..].fill(0.0);
        reused.quantize_into(&small, 2, 256);
        assert_eq!(reused, KActivations::quantize(&small, 2, 256));
        let mut out = vec![0f32; 2 * 5];
        let w = Tensor::from_vec(data(5 * 256, 9), (5, 256), &Device::Cpu).unwrap();
        for f in KQUANTS {
            let q = QTensor::quantize(&w, f.dtype()).unwrap();
            let bytes = q.data().unwrap();
            matmul_into(f, &bytes, 5, 256, &small, 2, &mut reused, &mut out);
            assert_eq!(out, matmul(f, &bytes, 5, 256, &small, 2), "{f:?}");
        }
    }
}
