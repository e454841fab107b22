//! quantbench's product for MXFP4 and IQ4_NL matrices (`format/mxfp4.rs`'s
//! [`Lut4Matrix`]: 4-bit codes indexing a table of 16 integers, one scale a 32-weight
//! block): `y = x · Wᵀ (+ bias)` as ggml's CPU backend computes it. The activations are
//! rounded to q8_0 blocks first (ggml's vec-dot type for both), as x86's `quantize_row_q8_0` rounds them (the
//! inverse scale `127 / amax`, where the reference quantizer and
//! [`super::activations`] take `1 / (amax / 127)`: a last-bit difference that moves an
//! activation now and then, and so a token on a model with small margins); each block's 32 code values
//! times the 32 int8 activations are summed in integers, eight lanes of four products
//! each; a lane's sum goes to float and is added, times the block's two scales
//! (`d_q8 · 2^(e − 128)`), into one of two accumulators of eight lanes by fused
//! multiply-add (even blocks in the first, odd in the second); the accumulators are
//! added and summed across lanes in ggml's `hsum_float_8` order, and an odd last block
//! is added alone — `ggml_vec_dot_mxfp4_q8_0`'s and `ggml_vec_dot_iq4_nl_q8_0`'s AVX2
//! path (ggml-cpu/arch/x86/quants.c; the two differ only in the table and the scale),
//! which llama.cpp runs on x86 CPUs with AVX2, AVX-512 or not. The same float operations
//! in the same order: a product here is llama.cpp's to the bit (the AVX2 kernel and the
//! portable one here are held to each other by the tests below).

use crate::format::mxfp4::{Lut4, Lut4Matrix, QK};
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
        let mut a = Q8Rows {
            qs: Vec::new(),
            scales: Vec::new(),
        };
        a.quantize_into(x);
        a
    }

    /// [`Q8Rows::quantize`] into these buffers, reusing their memory: the decode step
    /// rounds every product's activations without allocating once they have grown.
    pub fn quantize_into(&mut self, x: &[f32]) {
        self.qs.resize(x.len(), 0);
        self.scales.resize(x.len() / QK, 0.0);
        for ((xb, qb), d) in x
            .chunks_exact(QK)
            .zip(self.qs.chunks_exact_mut(QK))
            .zip(&mut self.scales)
        {
            let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
            *d = half::f16::from_f32(amax / 127.0).to_f32();
            let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
            for (q, v) in qb.iter_mut().zip(xb) {
                *q = (v * id).round_ties_even() as i8;
            }
        }
    }
}

thread_local! {
    /// The calling thread's rounded activations, reused from product to product.
    static ACTS: std::cell::RefCell<Q8Rows> = const {
        std::cell::RefCell::new(Q8Rows {
            qs: Vec::new(),
            scales: Vec::new(),
        })
    };
}

/// Weight rows per parallel unit.
const ROWS: usize = 32;

/// `y[m × out] = x[m × k] · Wᵀ (+ bias)`: weight rows shared out over the pool in units
/// of [`ROWS`], each unit writing its own outputs in place.
pub fn matmul(w: &Lut4Matrix, x: &[f32], m: usize, bias: Option<&[f32]>, y: &mut [f32]) {
    let (n, k) = w.shape();
    assert_eq!(x.len(), m * k, "activations are not {m} x {k}");
    assert_eq!(y.len(), m * n, "output is not {m} x {n}");
    ACTS.with(|cell| {
        let mut acts = cell.borrow_mut();
        acts.quantize_into(x);
        products(w, &acts, m, bias, y);
    });
}

/// [`matmul`] on activations already rounded.
fn products(w: &Lut4Matrix, acts: &Q8Rows, m: usize, bias: Option<&[f32]>, y: &mut [f32]) {
    let (n, k) = w.shape();
    let nb = k / QK;
    let kind = w.kind();
    let row_bytes = nb * kind.block_bytes();
    let blocks = w.blocks();
    let out = super::Disjoint::new(y);
    let simd = cfg!(target_arch = "x86_64") && super::level().is_some();
    let units = n.div_ceil(ROWS);
    let unit = |u: usize| {
        let (r0, r1) = (u * ROWS, n.min(u * ROWS + ROWS));
        #[cfg(target_arch = "x86_64")]
        if simd {
            // SAFETY: level() checked AVX2 and FMA; the rows, blocks and activations
            // read lie inside `blocks` and `acts` (shapes checked above); this unit
            // writes only outputs of its rows r0 .. r1, which no other unit touches.
            unsafe {
                match kind {
                    Lut4::Mxfp4 => {
                        rows_avx2::<false>(blocks, row_bytes, acts, k, (r0, r1), m, n, &out)
                    }
                    Lut4::Iq4Nl => {
                        rows_avx2::<true>(blocks, row_bytes, acts, k, (r0, r1), m, n, &out)
                    }
                }
            };
        }
        if !simd {
            for r in r0..r1 {
                let wr = &blocks[r * row_bytes..(r + 1) * row_bytes];
                for t in 0..m {
                    let v = dot_portable(
                        kind,
                        wr,
                        &acts.qs[t * k..(t + 1) * k],
                        &acts.scales[t * nb..(t + 1) * nb],
                    );
                    // SAFETY: output (t, r) is this unit's alone.
                    unsafe { out.part(t * n + r, 1)[0] = v };
                }
            }
        }
        if let Some(b) = bias {
            for t in 0..m {
                // SAFETY: as above.
                let o = unsafe { out.part(t * n + r0, r1 - r0) };
                for (o, b) in o.iter_mut().zip(&b[r0..r1]) {
                    *o += b;
                }
            }
        }
    };
    if units * m >= 4 {
        candle_core::utils::barrier_pool().execute_chunked(units, |range| range.for_each(unit));
    } else {
        (0..units).for_each(unit);
    }
}

/// The block's code value for element `e` (0..32): low nibbles first, then high.
fn code(kind: Lut4, blk: &[u8], e: usize) -> i32 {
    let byte = blk[kind.scale_bytes() + e % 16];
    kind.values()[if e < 16 { byte & 0x0f } else { byte >> 4 } as usize] as i32
}

/// [`dot`] lane by lane, as the AVX2 path computes it.
pub fn dot_portable(kind: Lut4, w: &[u8], q: &[i8], d: &[f32]) -> f32 {
    let nb = d.len();
    let bb = kind.block_bytes();
    let mut acc = [[0f32; 8]; 2];
    let mut ib = 0;
    while ib + 1 < nb {
        for (p, acc) in acc.iter_mut().enumerate() {
            let b = ib + p;
            let blk = &w[b * bb..(b + 1) * bb];
            let scale = d[b] * kind.scale(blk);
            for (l, a) in acc.iter_mut().enumerate() {
                let s: i32 = (4 * l..4 * l + 4)
                    .map(|e| code(kind, blk, e) * q[b * QK + e] as i32)
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
        let blk = &w[b * bb..(b + 1) * bb];
        let scale = d[b] * kind.scale(blk);
        let s: i32 = (0..QK)
            .map(|e| code(kind, blk, e) * q[b * QK + e] as i32)
            .sum();
        sum = scale.mul_add(s as f32, sum);
    }
    sum
}

/// Weight rows `r0 .. r1` against activation rows `0 .. m`, into `out` (`m × n`), with
/// ggml's AVX2 instructions per (row, column): the codes looked up 16 at a time by a byte
/// shuffle, `maddubs` on |code| and the activations signed by the code, `madd` by ones,
/// two accumulators by block parity. Four weight rows share each activation load at
/// decode; a prompt's columns go four at a time against each weight row.
///
/// # Safety
/// AVX2 and FMA; `w` holds rows `r0 .. r1` of `row_bytes`; `acts` holds `m` rows of `k`;
/// outputs `(t, r)` for these rows are the caller's alone.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
unsafe fn rows_avx2<const NL: bool>(
    w: &[u8],
    row_bytes: usize,
    acts: &Q8Rows,
    k: usize,
    (r0, r1): (usize, usize),
    m: usize,
    n: usize,
    out: &super::Disjoint<f32>,
) {
    if super::level() == Some(super::Level::Avx512) {
        return rows_vnni::<NL>(w, row_bytes, acts, k, (r0, r1), m, n, out);
    }
    let mut t = 0;
    while t + 4 <= m {
        for r in r0..r1 {
            tile_avx2::<NL, 1, 4>(w, row_bytes, acts, k, r, t, n, out);
        }
        t += 4;
    }
    while t < m {
        let mut r = r0;
        while r + 4 <= r1 {
            tile_avx2::<NL, 4, 1>(w, row_bytes, acts, k, r, t, n, out);
            r += 4;
        }
        while r < r1 {
            tile_avx2::<NL, 1, 1>(w, row_bytes, acts, k, r, t, n, out);
            r += 1;
        }
        t += 1;
    }
}

/// [`rows_avx2`] with AVX-512 VNNI on 256-bit registers: the codes offset by 12 into
/// unsigned bytes and `vpdpbusd` against the activations from `−12 · Σa` per lane — the
/// same integer lane sums as `maddubs` + `madd` (four products a lane, exact), so every
/// output keeps ggml's bits; 2 × 4 tiles of two accumulators each (32 registers).
///
/// # Safety
/// As [`rows_avx2`], and AVX-512 F/BW/VL + VNNI.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn rows_vnni<const NL: bool>(
    w: &[u8],
    row_bytes: usize,
    acts: &Q8Rows,
    k: usize,
    (r0, r1): (usize, usize),
    m: usize,
    n: usize,
    out: &super::Disjoint<f32>,
) {
    let mut t = 0;
    while t + 4 <= m {
        let mut r = r0;
        while r + 2 <= r1 {
            tile_vnni::<NL, 2, 4>(w, row_bytes, acts, k, r, t, n, out);
            r += 2;
        }
        while r < r1 {
            tile_vnni::<NL, 1, 4>(w, row_bytes, acts, k, r, t, n, out);
            r += 1;
        }
        t += 4;
    }
    while t < m {
        let mut r = r0;
        while r + 4 <= r1 {
            tile_vnni::<NL, 4, 1>(w, row_bytes, acts, k, r, t, n, out);
            r += 4;
        }
        while r < r1 {
            tile_vnni::<NL, 1, 1>(w, row_bytes, acts, k, r, t, n, out);
            r += 1;
        }
        t += 1;
    }
}

/// The table made unsigned for `vpdpbusd` (MXFP4 + 12, IQ4_NL + 128), and the offset.
fn unsigned_table(kind: Lut4) -> (&'static [u8; 16], u8) {
    const MXFP4: [u8; 16] = [12, 13, 14, 15, 16, 18, 20, 24, 12, 11, 10, 9, 8, 6, 4, 0];
    const IQ4NL: [u8; 16] = [
        1, 24, 45, 63, 79, 93, 106, 118, 129, 141, 153, 166, 181, 197, 217, 241,
    ];
    match kind {
        Lut4::Mxfp4 => (&MXFP4, 12),
        Lut4::Iq4Nl => (&IQ4NL, 128),
    }
}

/// [`tile_avx2`] with `vpdpbusd`.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn tile_vnni<const NL: bool, const R: usize, const C: usize>(
    w: &[u8],
    row_bytes: usize,
    acts: &Q8Rows,
    k: usize,
    w_row: usize,
    a_row: usize,
    n: usize,
    out: &super::Disjoint<f32>,
) {
    use std::arch::x86_64::*;
    let kind = Lut4::of_nl(NL);
    let nb = k / QK;
    let (table, offset) = unsigned_table(kind);
    let values = _mm_loadu_si128(table.as_ptr() as *const __m128i);
    let m4b = _mm_set1_epi8(0x0f);
    let twelve = _mm256_set1_epi8(offset as i8);
    let (bb, at) = (kind.block_bytes(), kind.scale_bytes());
    let zero = _mm256_setzero_si256();
    let mut acc = [[[_mm256_setzero_ps(); C]; R]; 2];
    let wp = w.as_ptr();
    let qp = acts.qs.as_ptr();
    let pairs = nb / 2;
    for pair in 0..pairs {
        for (par, acc) in acc.iter_mut().enumerate() {
            let b = 2 * pair + par;
            let mut av = [zero; C];
            let mut start = [zero; C];
            let mut da = [_mm256_setzero_ps(); C];
            for c in 0..C {
                av[c] = _mm256_loadu_si256(qp.add((a_row + c) * k + b * QK) as *const __m256i);
                start[c] = _mm256_sub_epi32(zero, _mm256_dpbusd_epi32(zero, twelve, av[c]));
                da[c] = _mm256_set1_ps(*acts.scales.get_unchecked((a_row + c) * nb + b));
            }
            for (r, acc) in acc.iter_mut().enumerate() {
                let p = wp.add((w_row + r) * row_bytes + b * bb);
                _mm_prefetch::<_MM_HINT_T0>(
                    p.wrapping_add(super::tile::PREFETCH_ROWS * row_bytes) as *const i8
                );
                _mm_prefetch::<_MM_HINT_T1>(
                    p.wrapping_add(super::tile::PREFETCH_L2_ROWS * row_bytes) as *const i8,
                );
                let bits = _mm_loadu_si128(p.add(at) as *const __m128i);
                let lo = _mm_shuffle_epi8(values, _mm_and_si128(bits, m4b));
                let hi = _mm_shuffle_epi8(values, _mm_and_si128(_mm_srli_epi16(bits, 4), m4b));
                let cw = _mm256_set_m128i(hi, lo);
                let dw = _mm256_set1_ps(kind.scale(std::slice::from_raw_parts(p, at)));
                for c in 0..C {
                    let lanes = _mm256_dpbusd_epi32(start[c], cw, av[c]);
                    // d_a · d_w in every lane: ggml's one float product.
                    acc[c] = _mm256_fmadd_ps(
                        _mm256_mul_ps(da[c], dw),
                        _mm256_cvtepi32_ps(lanes),
                        acc[c],
                    );
                }
            }
        }
    }
    finish::<R, C>(
        kind,
        &acc,
        w,
        row_bytes,
        acts,
        k,
        (w_row, a_row),
        2 * pairs,
        n,
        out,
    );
}

/// Each (row, column)'s two accumulators summed in ggml's `hsum_float_8` order, then an
/// odd last block added alone, into its output.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn finish<const R: usize, const C: usize>(
    kind: Lut4,
    acc: &[[[std::arch::x86_64::__m256; C]; R]; 2],
    w: &[u8],
    row_bytes: usize,
    acts: &Q8Rows,
    k: usize,
    (w_row, a_row): (usize, usize),
    ib: usize,
    n: usize,
    out: &super::Disjoint<f32>,
) {
    use std::arch::x86_64::*;
    let nb = k / QK;
    for r in 0..R {
        let wr = &w[(w_row + r) * row_bytes..(w_row + r + 1) * row_bytes];
        for (c, (&even, &odd)) in acc[0][r].iter().zip(&acc[1][r]).enumerate() {
            let x = _mm256_add_ps(even, odd);
            let mut res = _mm_add_ps(_mm256_extractf128_ps(x, 1), _mm256_castps256_ps128(x));
            res = _mm_add_ps(res, _mm_movehl_ps(res, res));
            res = _mm_add_ss(res, _mm_movehdup_ps(res));
            let mut sum = _mm_cvtss_f32(res);
            let row = a_row + c;
            for b in ib..nb {
                let bb = kind.block_bytes();
                let blk = &wr[b * bb..(b + 1) * bb];
                let scale = acts.scales[row * nb + b] * kind.scale(blk);
                let s: i32 = (0..QK)
                    .map(|e| code(kind, blk, e) * acts.qs[row * k + b * QK + e] as i32)
                    .sum();
                sum = scale.mul_add(s as f32, sum);
            }
            out.part(row * n + w_row + r, 1)[0] = sum;
        }
    }
}

/// The 32 code values of the block at `p` (its exponent byte first) as signed bytes.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn codes(kind: Lut4, p: *const u8) -> std::arch::x86_64::__m256i {
    use std::arch::x86_64::*;
    let values = _mm_loadu_si128(kind.values().as_ptr() as *const __m128i);
    let m4b = _mm_set1_epi8(0x0f);
    let bits = _mm_loadu_si128(p.add(kind.scale_bytes()) as *const __m128i);
    let lo = _mm_shuffle_epi8(values, _mm_and_si128(bits, m4b));
    let hi = _mm_shuffle_epi8(values, _mm_and_si128(_mm_srli_epi16(bits, 4), m4b));
    _mm256_set_m128i(hi, lo)
}

/// An R × C tile: weight rows `w_row ..` against activation rows `a_row ..`.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_avx2<const NL: bool, const R: usize, const C: usize>(
    w: &[u8],
    row_bytes: usize,
    acts: &Q8Rows,
    k: usize,
    w_row: usize,
    a_row: usize,
    n: usize,
    out: &super::Disjoint<f32>,
) {
    use std::arch::x86_64::*;
    let kind = Lut4::of_nl(NL);
    let nb = k / QK;
    let (bb, at) = (kind.block_bytes(), kind.scale_bytes());
    let ones = _mm256_set1_epi16(1);
    let mut acc = [[[_mm256_setzero_ps(); C]; R]; 2];
    let wp = w.as_ptr();
    let qp = acts.qs.as_ptr();
    let mut ib = 0;
    while ib + 1 < nb {
        for (par, acc) in acc.iter_mut().enumerate() {
            let b = ib + par;
            let mut av = [_mm256_setzero_si256(); C];
            let mut da = [0f32; C];
            for c in 0..C {
                av[c] = _mm256_loadu_si256(qp.add((a_row + c) * k + b * QK) as *const __m256i);
                da[c] = *acts.scales.get_unchecked((a_row + c) * nb + b);
            }
            for (r, acc) in acc.iter_mut().enumerate() {
                let p = wp.add((w_row + r) * row_bytes + b * bb);
                // Weights stream from memory once: asked for ahead, as tile.rs does.
                _mm_prefetch::<_MM_HINT_T0>(
                    p.wrapping_add(super::tile::PREFETCH_ROWS * row_bytes) as *const i8
                );
                _mm_prefetch::<_MM_HINT_T1>(
                    p.wrapping_add(super::tile::PREFETCH_L2_ROWS * row_bytes) as *const i8,
                );
                let cw = codes(kind, p);
                let ax = _mm256_sign_epi8(cw, cw);
                let dw = kind.scale(std::slice::from_raw_parts(p, at));
                for c in 0..C {
                    let sy = _mm256_sign_epi8(av[c], cw);
                    let lanes = _mm256_madd_epi16(_mm256_maddubs_epi16(ax, sy), ones);
                    acc[c] = _mm256_fmadd_ps(
                        _mm256_set1_ps(da[c] * dw),
                        _mm256_cvtepi32_ps(lanes),
                        acc[c],
                    );
                }
            }
        }
        ib += 2;
    }
    finish::<R, C>(
        kind,
        &acc,
        w,
        row_bytes,
        acts,
        k,
        (w_row, a_row),
        ib,
        n,
        out,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::StoredMatrix;

    /// Rows of `kind` blocks: MXFP4 quantized from values, IQ4_NL drawn (codes and f16
    /// scales).
    fn matrix(kind: Lut4, rows: usize, k: usize, seed: f32) -> Lut4Matrix {
        let wf: Vec<f32> = (0..rows * k)
            .map(|i| ((i as f32 + seed) * 0.731).sin() * 2.5)
            .collect();
        match kind {
            Lut4::Mxfp4 => Lut4Matrix::quantize(&wf, rows, k),
            Lut4::Iq4Nl => {
                let mut bytes = Vec::new();
                for (b, chunk) in wf.chunks_exact(QK).enumerate() {
                    let d = half::f16::from_f32(0.01 + (b % 7) as f32 * 0.003);
                    bytes.extend(d.to_le_bytes());
                    for j in 0..QK / 2 {
                        let code = |v: f32| ((v.abs() * 100.0) as u32 % 16) as u8;
                        bytes.push(code(chunk[j]) | (code(chunk[j + 16]) << 4));
                    }
                }
                Lut4Matrix::from_bytes(Lut4::Iq4Nl, &bytes, rows, k).unwrap()
            }
        }
    }

    /// The unsigned tables are the code tables plus their offsets.
    #[test]
    fn unsigned_tables_are_the_codes_plus_the_offset() {
        for kind in [Lut4::Mxfp4, Lut4::Iq4Nl] {
            let (table, offset) = unsigned_table(kind);
            let want = kind.values().map(|v| (v as i16 + offset as i16) as u8);
            assert_eq!(table, &want, "{kind:?}");
        }
    }

    /// For both tables: the product's tiles (VNNI or AVX2 as this CPU has, and AVX2's
    /// explicitly) give every output the lane-by-lane portable dot's bits, for even and
    /// odd block counts, one activation row or several; and that dot is the plain sum of
    /// dequantized weights times dequantized activations within rounding.
    #[test]
    fn tiles_and_portable_agree_to_the_bit_and_with_the_plain_sum() {
        for kind in [Lut4::Mxfp4, Lut4::Iq4Nl] {
            for nb in [1usize, 2, 3, 8, 9] {
                let k = nb * QK;
                let rb = nb * kind.block_bytes();
                for m in [1usize, 3, 5] {
                    let rows = 7;
                    let w = matrix(kind, rows, k, nb as f32);
                    let xf: Vec<f32> = (0..m * k).map(|i| ((i as f32) * 0.71).cos()).collect();
                    let a = Q8Rows::quantize(&xf);
                    let bias: Vec<f32> = (0..rows).map(|r| r as f32 * 0.25).collect();
                    let mut y = vec![0f32; m * rows];
                    matmul(&w, &xf, m, Some(&bias), &mut y);
                    for t in 0..m {
                        for r in 0..rows {
                            let want = dot_portable(
                                kind,
                                &w.blocks()[r * rb..(r + 1) * rb],
                                &a.qs[t * k..(t + 1) * k],
                                &a.scales[t * nb..(t + 1) * nb],
                            ) + bias[r];
                            assert_eq!(
                                y[t * rows + r].to_bits(),
                                want.to_bits(),
                                "{kind:?}, {nb} blocks, {m} rows: ({t}, {r})"
                            );
                        }
                    }
                }
                let w = matrix(kind, 1, k, 0.5);
                let xf: Vec<f32> = (0..k).map(|i| ((i as f32) * 0.377).cos()).collect();
                let a = Q8Rows::quantize(&xf);
                let p = dot_portable(kind, w.blocks(), &a.qs, &a.scales);
                #[cfg(target_arch = "x86_64")]
                if super::super::level().is_some() {
                    let mut y = [0f32];
                    let out = super::super::Disjoint::new(&mut y);
                    // SAFETY: AVX2 checked; one row of nb blocks, one activation row.
                    unsafe {
                        match kind {
                            Lut4::Mxfp4 => {
                                tile_avx2::<false, 1, 1>(w.blocks(), rb, &a, k, 0, 0, 1, &out)
                            }
                            Lut4::Iq4Nl => {
                                tile_avx2::<true, 1, 1>(w.blocks(), rb, &a, k, 0, 0, 1, &out)
                            }
                        }
                    };
                    assert_eq!(
                        y[0].to_bits(),
                        p.to_bits(),
                        "{kind:?}, {nb} blocks, AVX2 tile"
                    );
                }
                let mut wd = vec![0f32; k];
                w.dequantize_rows(0, &mut wd);
                let plain: f32 = (0..k)
                    .map(|i| wd[i] * a.qs[i] as f32 * a.scales[i / QK])
                    .sum();
                assert!(
                    (p - plain).abs() <= 1e-4 * plain.abs().max(1.0),
                    "{kind:?}: {p} {plain}"
                );
            }
        }
    }
}
