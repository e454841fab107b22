//! q4_0, q5_0, q8_0, q4_k and q6_k weights repacked for AVX2: eight rows interleaved, so one
//! activation block, one scale conversion and one float multiply-add serve eight rows
//! (llama.cpp's idea, from `ggml-cpu/repack.cpp`'s `block_q4_0x8` / `block_q4_Kx8`; the
//! layouts and kernels here are quantbench's).
//!
//! **Layout.** For each group of 8 rows and each block, the 8 rows' blocks with every
//! field's words side by side — exactly the bytes they replace, so repacking is not a
//! second copy. Words of 4 bytes put 4 quants of each of the 8 rows into one 32-bit lane
//! each; broadcasting the matching 4 activation bytes to every lane and multiplying
//! (`vpmaddubsw`) advances all 8 rows at once.
//! - q4_0 (144 bytes = 8 × 18): the 8 f16 scales, then 4 chunks of 32 bytes; in chunk
//!   `j`, bytes `4r .. 4r + 4` hold row `r`'s quants `4j .. 4j + 4` in their low nibbles
//!   and `4j + 16 .. 4j + 20` in their high nibbles (the stored nibble pairs re-paired).
//! - q5_0 (176 = 8 × 22): the 8 scales, the 8 rows' 32-bit words of fifth bits, then
//!   q4_0's 4 chunks of nibbles.
//! - q8_0 (272 = 8 × 34): the scales, then 8 chunks; chunk `j` lane `r` = row `r`'s
//!   quants `4j .. 4j + 4`.
//! - q4_k (1152 = 8 × 144): the 8 d, the 8 dmin, then the 12 packed scale bytes and
//!   the 128 nibble bytes of each row a 4-byte word at a time (`GgmlType::regions`).
//! - q6_k (1680 = 8 × 210): the 8 d, the 16 signed scales, likewise, then the
//!   low-nibble and high-bit words in 16 steps of 96 bytes, in the order the kernel reads
//!   them: a group block is read front to back. (With the low nibbles and the high bits
//!   in two regions, as stored, three streams 1 KB apart, one-row products streamed at
//!   15 GB/s on Zen 4 against 29 read front to back: `examples/streaming.rs`.)
//!
//! **Arithmetic.** Every block's integer dot product is exact, then multiplied by the
//! scales in f32 and accumulated, as in the other kernels. q4_0: unsigned quants (≤ 15)
//! against |a| ≤ 127, the 8 products of a block summed in 16 bits (at most 8 × 2 × 15 ×
//! 127 = 30,480), widened per row (`vpmaddwd`), and the offset taken off as an integer
//! (`8 × Σa`, Σa recovered exactly from the activations' `scale × Σa`). q5_0: q4_0's,
//! each quant's fifth bit spread from its row's word into bit 4 of its byte (a byte
//! shuffle, a bit mask and a compare), quants ≤ 31 so each 16-bit sum takes 4 products
//! (≤ 31,496), `16 × Σa` taken off. q8_0: ggml's
//! sign trick (`|w|` against `a` with `w`'s sign, at most 2 × 128 × 127 a pair), each
//! chunk widened to 32 bits before it is summed. q4_k: the 8 rows' 6-bit scales and
//! minimums decoded together (ggml's masks on 8 lanes), each 32-weight sub-block summed
//! in 16 bits (≤ 30,480) then × its scale (`vpmaddwd`), the minimums against the
//! activations' sub-block sums. q6_k: the 6-bit quants built for 8 rows per chunk and
//! taken as 0..63, two chunks summed in 16 bits (≤ 32,004) then × the group's signed
//! scale, the −32 taken off once per group of 16 as `32 · scale · Σa`.
//!
//! **With AVX-512 VNNI** (Zen 4, Ice Lake and later; not where `QUANTBENCH_LEVEL=avx2`
//! caps the kernels) the same layouts go through `vpdpbusd`: 32-bit sums throughout
//! (q8_0 offset by 128 into unsigned bytes, 128 · Σa taken off; q4_k's sub-block sums
//! × their scales by `vpmulld`; q6_k a whole group of 16 before its scale), prompts 4
//! activation rows per call so each group's weights are decoded once per 4 rows, and no
//! software prefetch. The integer sums are the same exact values, so the outputs equal
//! the AVX2 kernels' bit for bit ([`matmul_with`] chooses; the tests run both).
//!
//! **Rows past the last whole group.** Where the rows are not a multiple of 8 (GPT-2's
//! 50,257-row LM head), the first `n − n % 8` rows are interleaved and the last `n % 8`
//! stay as stored, after the groups (where the stored layout has them too); the
//! products share them out with the groups and multiply them with the block-by-block
//! kernels (`tile.rs`, `kquant.rs`) on the same rounded activations.
//!
//! **Where it is used.** Every matrix of those formats that is multiplied, on an AVX2
//! CPU with quantbench's kernels active, is repacked once when the model is built
//! ([`Interleaved::from_qtensor`], `Matrix::for_products`): linear layers, the LM head,
//! and a token table tied to the head (looked up row by row from the groups,
//! [`Interleaved::row_into`]). The file's layout is dropped, the bytes held stay the
//! same count, and the record's `environment.kernels` says so. A token table only looked
//! up stays as stored. A GGUF export writes the stored layout back
//! ([`Interleaved::stored_bytes`]), byte for byte.

use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};

use super::activations::{Activations, BLOCK};
use super::blocks::GgmlType;
use super::kquant::{KActivations, QK_K};

/// Rows interleaved in one group.
pub const ROWS: usize = 8;

/// How far ahead in a group's stream of blocks the kernels prefetch, in bytes (the
/// first activation row of a unit only: the others find the group in cache). Streaming
/// rate of one-row products on Llama 3.2 1B's shapes, 1 GiB of distinct matrices per
/// pass so they come from memory (`examples/streaming.rs` over [`matmul_into`], median of 3
/// processes of 5 passes, GB/s, none → 512 → 1024 bytes ahead): q8_0 8192×2048 27.2 →
/// 29.3 → 29.4, 2048×8192 26.2 → 29.7 → 32.2; q4_0 26.0 → 28.8 → 28.2, 26.6 → 28.6 →
/// 31.2; q4_k 24.7 → 23.9 → 26.9, 24.6 → 26.0 → 26.0; q6_k 13.3 → 18.9 → 24.9, 12.2 →
/// 21.9 → 24.0. 2048 and 4096 were no better overall (a second grid,
/// 2 processes each, in a slower phase: 2048 read higher on q6_k and q8_0 8192×2048, lower
/// on the other shapes; 4096 lower on most). Whole runs (08347e7 against
/// this, 6 runs per side, tg50): 1B Q4_0 +12.1% (95% CI [+3.1%, +23.5%]), Q4_K_M +16.2%
/// ([+7.5%, +25.7%]), Q8_0 +2.8% ([−6.9%, +21.0%]).
///
/// On Zen 4 (the AVX-512 VNNI kernels), where each group block is read front to back,
/// the hardware's prefetchers do better alone: streaming (same example, 2 rounds, GB/s,
/// none → 1024 bytes) q4_k 32.6 / 35.5 → 25.3 / 30.4 (8192×2048), q6_k 33.5 / 30.6 →
/// 30.0 / 29.8, q4_0 level; whole runs (the same build with and without, 3 runs per
/// side): 1B Q4_K_M tg50 33.1 → 36.7 tok/s without (+10.9%, 95% CI [+4.7%, +19.9%]),
/// Q4_0, Q8_0 and GPT-2's level. So the VNNI kernels do not prefetch.
const PREFETCH_AHEAD: usize = 1024;

/// Products with this many activation rows or more do not prefetch: their units reuse
/// each group across many rows (arithmetic-bound), and GPT-2's Q4_K_M pp512 read −5.1%
/// ([−8.7%, +2.8%], 6 runs per side) with the prefetch on their first row.
const PREFETCH_ROWS_BELOW: usize = 16;

/// The types with an interleaved layout.
pub const INTERLEAVED: [GgmlType; 5] = [
    GgmlType::Q4_0,
    GgmlType::Q5_0,
    GgmlType::Q8_0,
    GgmlType::Q4K,
    GgmlType::Q6K,
];

/// The type of a candle dtype, when it has an interleaved layout.
pub fn interleaved_of(dtype: GgmlDType) -> Option<GgmlType> {
    let t = GgmlType::of(dtype);
    INTERLEAVED.contains(&t).then_some(t)
}

impl GgmlType {
    /// The 32-element format, for q4_0, q5_0 and q8_0.
    pub fn block32(self) -> Option<GgmlType> {
        match self {
            GgmlType::Q4_0 => Some(GgmlType::Q4_0),
            GgmlType::Q5_0 => Some(GgmlType::Q5_0),
            GgmlType::Q8_0 => Some(GgmlType::Q8_0),
            GgmlType::Q4K | GgmlType::Q6K => None,
            _ => None,
        }
    }

    /// The k-quant format, for q4_k and q6_k.
    pub fn kquant(self) -> Option<GgmlType> {
        match self {
            GgmlType::Q4K => Some(GgmlType::Q4K),
            GgmlType::Q6K => Some(GgmlType::Q6K),
            GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => None,
            _ => None,
        }
    }

    /// Weights per stored block.
    pub const fn block_len(self) -> usize {
        match self {
            GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => BLOCK,
            GgmlType::Q4K | GgmlType::Q6K => QK_K,
            _ => 0,
        }
    }

    /// Bytes of one group's block: 8 stored blocks.
    pub const fn group_block_bytes(self) -> usize {
        ROWS * self.block_bytes()
    }

    /// The stored block's byte runs and where they go, for the kinds that move whole
    /// words: (stored offset, group-block offset, length, word). Word `t` of a run of
    /// row `r` lands at `group offset + 8 · word · t + word · r`: the 8 rows' words side
    /// by side. q4_0 and q5_0 also regroup their nibbles ([`GgmlType::nibbles`]).
    fn regions(self) -> &'static [(usize, usize, usize, usize)] {
        match self {
            // d.
            GgmlType::Q4_0 => &[(0, 0, 2, 2)],
            // d; the 32 fifth bits as one word.
            GgmlType::Q5_0 => &[(0, 0, 2, 2), (2, 16, 4, 4)],
            // d; quants.
            GgmlType::Q8_0 => &[(0, 0, 2, 2), (2, 16, 32, 4)],
            // d, dmin; 12 bytes of packed scales and minimums, then 128 of nibbles.
            GgmlType::Q4K => &[(0, 0, 2, 2), (2, 16, 2, 2), (4, 32, 140, 4)],
            // d; 16 signed scales; then the low-nibble and high-bit words in the order
            // the kernel reads them (Q6K_REGIONS).
            GgmlType::Q6K => &Q6K_REGIONS,
            _ => &[],
        }
    }

    /// Where the 16 nibble bytes of q4_0 and q5_0 are (stored offset, group-block
    /// offset). The stored block's byte i holds quant i (low nibble) and i + 16 (high);
    /// the group block holds each row's quants 4j..4j+3 (low nibbles) and 4j+16..4j+19
    /// (high) in 4-byte word j, the 8 rows' words side by side, so one 32-byte load and
    /// one broadcast activation word advance 8 rows by 4 quants.
    fn nibbles(self) -> Option<(usize, usize)> {
        match self {
            GgmlType::Q4_0 => Some((2, 2 * ROWS)),
            GgmlType::Q5_0 => Some((6, 6 * ROWS)),
            GgmlType::Q8_0 | GgmlType::Q4K | GgmlType::Q6K => None,
            _ => None,
        }
    }

    /// Row `r` (0..8) of group block `dst` (interleaved) set from its stored block `src`.
    fn interleave(self, src: &[u8], r: usize, dst: &mut [u8]) {
        for &(from, to, len, word) in self.regions() {
            for t in 0..len / word {
                dst[to + ROWS * word * t + word * r..][..word]
                    .copy_from_slice(&src[from + word * t..][..word]);
            }
        }
        let Some((from, to)) = self.nibbles() else {
            return;
        };
        let qs = &mut dst[to..];
        let q = |e: usize| {
            if e < 16 {
                src[from + e] & 0x0F
            } else {
                src[from + e - 16] >> 4
            }
        };
        for j in 0..4 {
            for e in 0..4 {
                qs[j * 32 + 4 * r + e] = q(4 * j + e) | (q(4 * j + e + 16) << 4);
            }
        }
    }

    /// Row `r`'s stored block back from group block `src` into `out`.
    fn deinterleave(self, src: &[u8], r: usize, out: &mut [u8]) {
        for &(from, to, len, word) in self.regions() {
            for t in 0..len / word {
                out[from + word * t..][..word]
                    .copy_from_slice(&src[to + ROWS * word * t + word * r..][..word]);
            }
        }
        let Some((from, to)) = self.nibbles() else {
            return;
        };
        let qs = &src[to..];
        let mut q = [0u8; BLOCK];
        for j in 0..4 {
            for e in 0..4 {
                let byte = qs[j * 32 + 4 * r + e];
                q[4 * j + e] = byte & 0x0F;
                q[4 * j + e + 16] = byte >> 4;
            }
        }
        for i in 0..16 {
            out[from + i] = q[i] | (q[i + 16] << 4);
        }
    }
}

/// q6_k's group block: the 8 d, the 16 scales of each row a 4-byte word at a time, then
/// 16 steps of 96 bytes, one per 32-byte chunk pair the kernel reads together: step
/// `s = 8h + c` (half `h`, chunk `c` in 0..8) holds low-nibble chunks `16h + c` and
/// `16h + 8 + c` and high-bit chunk `8h + c` (each chunk one 4-byte word of each row),
/// so a group block is read front to back.
static Q6K_REGIONS: [(usize, usize, usize, usize); 50] = {
    let mut t = [(0, 0, 0, 0); 50];
    t[0] = (208, 0, 2, 2);
    t[1] = (192, 16, 16, 4);
    let mut s = 0;
    while s < 16 {
        let (h, c) = (s / 8, s % 8);
        let at = 144 + 96 * s;
        t[2 + 3 * s] = (4 * (16 * h + c), at, 4, 4);
        t[3 + 3 * s] = (4 * (16 * h + 8 + c), at + 32, 4, 4);
        t[4 + 3 * s] = (128 + 4 * (8 * h + c), at + 64, 4, 4);
        s += 1;
    }
    t
};

/// An `n × k` q4_0, q5_0, q8_0, q4_k or q6_k matrix in the interleaved layout: its first
/// `n − n % 8` rows in groups of 8, the rest as stored after them.
#[derive(Debug)]
pub struct Interleaved {
    kind: GgmlType,
    n: usize,
    k: usize,
    bytes: Vec<u8>,
}

impl Interleaved {
    /// `q` repacked, where it is q4_0, q5_0, q8_0, q4_k or q6_k on the CPU with 8 rows or
    /// more, quantbench's kernels are active and the CPU has AVX2 (AVX-512 CPUs too);
    /// `None` otherwise.
    pub fn from_qtensor(q: &QTensor) -> Option<Arc<Interleaved>> {
        let kind = interleaved_of(q.dtype())?;
        if !q.device().is_cpu()
            || super::active() != super::Kernels::Quantbench
            || !super::avx2_supported()
        {
            return None;
        }
        let (n, k) = q.shape().dims2().ok()?;
        if n < ROWS || !k.is_multiple_of(kind.block_len()) {
            return None;
        }
        let data = q.data().ok()?;
        Some(Arc::new(Interleaved {
            kind,
            n,
            k,
            bytes: repack(kind, &data, n, k),
        }))
    }

    pub fn kind(&self) -> GgmlType {
        self.kind
    }

    /// (rows, columns).
    pub fn shape(&self) -> (usize, usize) {
        (self.n, self.k)
    }

    /// Bytes held: those of the stored matrix.
    pub fn len_bytes(&self) -> usize {
        self.bytes.len()
    }

    /// The interleaved bytes (for moving onto 2 MB pages).
    pub fn raw(&self) -> &[u8] {
        &self.bytes
    }

    /// The matrix in its stored layout again, byte for byte.
    pub fn stored_bytes(&self) -> Vec<u8> {
        unpack(self.kind, &self.bytes, self.n, self.k)
    }

    /// Row `id` as f32 into `out`, as candle dequantizes the format (`(q − offset) · d`).
    pub fn row_into(&self, id: usize, out: &mut [f32]) {
        let len = self.kind.block_len();
        let nb = self.k / len;
        let gb = self.kind.group_block_bytes();
        let bytes = self.kind.block_bytes();
        let mut blk = [0u8; 210];
        let blk = &mut blk[..bytes];
        for (b, o) in out.chunks_exact_mut(len).enumerate().take(nb) {
            if id < whole_rows(self.n) {
                let src = &self.bytes[((id / ROWS) * nb + b) * gb..][..gb];
                self.kind.deinterleave(src, id % ROWS, blk);
            } else {
                // Past the last group: as stored, where the stored layout has it.
                blk.copy_from_slice(&self.bytes[(id * nb + b) * bytes..][..bytes]);
            }
            match self.kind.block32() {
                Some(f) => {
                    let (q, d, _) = f.decode_block(blk);
                    for (o, &v) in o.iter_mut().zip(&q) {
                        *o = (v as i32 - f.offset()) as f32 * d;
                    }
                }
                None => {
                    let f = self.kind.kquant().expect("a k-quant");
                    o.copy_from_slice(&f.dequantize_superblock(blk))
                }
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
        matmul_into(self.kind, &self.bytes, self.n, self.k, x, m, scratch, out);
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!(
            "only made on x86-64 CPUs with AVX2 ({m} rows, {:?}, {}, {scratch:?})",
            bias,
            out.len() + x.len()
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

/// The rows of an `n`-row matrix that lie in whole groups of 8.
pub const fn whole_rows(n: usize) -> usize {
    n - n % ROWS
}

/// Weights `n × k` of `kind` as stored (rows of blocks) in the interleaved layout: the
/// first [`whole_rows`] in groups, the rest as stored; `k` a multiple of the block length
/// (32, or 256 for the k-quants).
pub fn repack(kind: GgmlType, w: &[u8], n: usize, k: usize) -> Vec<u8> {
    let block = kind.block_bytes();
    let nb = k / kind.block_len();
    assert!(
        k.is_multiple_of(kind.block_len()),
        "rows of {k} do not split into blocks of {}",
        kind.block_len()
    );
    assert_eq!(
        w.len(),
        n * nb * block,
        "weights are not {n} x {k} of {kind:?}"
    );
    let gb = kind.group_block_bytes();
    let mut out = vec![0u8; w.len()];
    let whole = whole_rows(n);
    for g in 0..whole / ROWS {
        for b in 0..nb {
            let dst = &mut out[(g * nb + b) * gb..][..gb];
            for r in 0..ROWS {
                kind.interleave(&w[((g * ROWS + r) * nb + b) * block..][..block], r, dst);
            }
        }
    }
    let rest = whole * nb * block;
    out[rest..].copy_from_slice(&w[rest..]);
    out
}

/// The inverse of [`repack`]: the stored layout, byte for byte.
pub fn unpack(kind: GgmlType, packed: &[u8], n: usize, k: usize) -> Vec<u8> {
    let block = kind.block_bytes();
    let nb = k / kind.block_len();
    let gb = kind.group_block_bytes();
    let mut out = vec![0u8; packed.len()];
    let whole = whole_rows(n);
    for row in 0..whole {
        for b in 0..nb {
            let src = &packed[((row / ROWS) * nb + b) * gb..][..gb];
            kind.deinterleave(src, row % ROWS, &mut out[(row * nb + b) * block..][..block]);
        }
    }
    let rest = whole * nb * block;
    out[rest..].copy_from_slice(&packed[rest..]);
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

/// Each q8_K activation super-block's sums laid out for the k-quant kernels, as i32
/// words of two i16 halves. q4_k: the 8 sums of 32 quants S0..S7 as (S0, S2), (S1, S3),
/// (S4, S6), (S5, S7), the order the kernel multiplies them by the minimums in (each at
/// most 32 × 127 in magnitude, exact in 16 bits). q6_k: the 16 sums of 16 quants as
/// (b0, b2), (b1, b3), (b4, b6), (b5, b7), ..., against its 16 scales (for the −32).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
fn subblock_sums(kind: GgmlType, acts: &KActivations, out: &mut Vec<i32>) {
    let pair = |lo: i16, hi: i16| (lo as u16 as u32 | ((hi as u16 as u32) << 16)) as i32;
    out.clear();
    for b in acts.bsums.chunks_exact(16) {
        if kind == GgmlType::Q4K {
            let s = |j: usize| b[2 * j] + b[2 * j + 1];
            out.extend([
                pair(s(0), s(2)),
                pair(s(1), s(3)),
                pair(s(4), s(6)),
                pair(s(5), s(7)),
            ]);
        } else {
            for t in 0..4 {
                out.extend([
                    pair(b[4 * t], b[4 * t + 2]),
                    pair(b[4 * t + 1], b[4 * t + 3]),
                ]);
            }
        }
    }
}

/// `out = x @ wᵀ` (`m × n`) for interleaved weights `packed` (`n × k` of `kind`), the
/// activations rounded into `scratch` (with the integer sums the kernels take): the VNNI
/// kernels where the CPU has AVX-512 VNNI (and `QUANTBENCH_LEVEL` does not cap it), else
/// the AVX2 ones (this CPU must have AVX2, FMA and F16C); the rows past the last group
/// by the AVX2 block-by-block kernels, as one more unit of work.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
pub fn matmul_into(
    kind: GgmlType,
    packed: &[u8],
    n: usize,
    k: usize,
    x: &[f32],
    m: usize,
    scratch: &mut super::Scratch,
    out: &mut [f32],
) {
    // AVX-512 VNNI (not capped by QUANTBENCH_LEVEL): `vpdpbusd`, and prompts 4 rows at a
    // time against each group's weights, decoded once per 4 rows.
    let vnni = super::level() == Some(super::Level::Avx512);
    matmul_with(vnni, kind, packed, n, k, x, m, scratch, out)
}

/// [`matmul_into`] with the VNNI kernels or the AVX2 ones (`vnni` only where the CPU has
/// AVX-512 VNNI).
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
pub fn matmul_with(
    vnni: bool,
    kind: GgmlType,
    packed: &[u8],
    n: usize,
    k: usize,
    x: &[f32],
    m: usize,
    scratch: &mut super::Scratch,
    out: &mut [f32],
) {
    assert!(super::avx2_supported(), "this CPU lacks AVX2");
    assert!(
        !vnni || super::simd_supported(),
        "this CPU lacks AVX-512 VNNI"
    );
    assert!(k.is_multiple_of(kind.block_len()));
    let gb = kind.group_block_bytes();
    let nb = k / kind.block_len();
    assert_eq!(packed.len(), n * nb * kind.block_bytes());
    assert_eq!(out.len(), m * n, "the output is not {m} x {n}");
    match kind {
        GgmlType::Q4K | GgmlType::Q6K => {
            scratch.kacts.quantize_into(x, m, k);
            subblock_sums(kind, &scratch.kacts, &mut scratch.sums);
        }
        _ => {
            scratch.acts.quantize_into(x, m, k);
            if matches!(kind, GgmlType::Q4_0 | GgmlType::Q5_0) || (vnni && kind == GgmlType::Q8_0) {
                integer_sums(&scratch.acts, &mut scratch.sums);
            }
        }
    }
    let whole = whole_rows(n);
    let groups = whole / ROWS;
    // The rows past the last group: one more unit per chunk of activation rows.
    let units = groups + usize::from(whole < n);
    // One activation row: each unit a run of groups. More: 64 activation rows a unit, so
    // a group's weights stay in cache while the rows go by.
    let chunk = if m == 1 { 1 } else { 64 };
    let chunks = m.div_ceil(chunk);
    let (acts, kacts, sums) = (&scratch.acts, &scratch.kacts, &scratch.sums[..]);
    let addr = out.as_mut_ptr() as usize;
    candle_core::utils::barrier_pool().execute_chunked(units * chunks, |range| {
        for unit in range {
            let (g, c) = (unit % units, unit / units);
            let rows = (c * chunk, m.min(c * chunk + chunk));
            if g == groups {
                let rest = packed[whole * nb * kind.block_bytes()..].as_ptr();
                // SAFETY: this unit alone writes outputs `whole..n` of rows `rows`; the
                // CPU's features were checked above.
                unsafe {
                    let o = (addr as *mut f32).add(whole);
                    let tail = (0, n - whole);
                    match (kind.block32(), kind.kquant()) {
                        (Some(f), _) => super::avx2_block_rows(f, rest, acts, o, n, tail, rows),
                        (_, Some(f)) => {
                            super::kquant::avx2_block_rows(f, rest, kacts, o, n, tail, rows)
                        }
                        (None, None) => unreachable!("every kind has a block format"),
                    }
                }
                continue;
            }
            let w = packed[g * nb * gb..].as_ptr();
            let mut row = rows.0;
            while row < rows.1 {
                // Only where the product streams the weights (a decode step, a small
                // batch: the first row of a unit reads the group from memory, the others
                // find it in cache); a prompt's units are arithmetic. Not on the AVX-512
                // CPUs (PREFETCH_AHEAD).
                let ahead = if !vnni && m < PREFETCH_ROWS_BELOW && row == rows.0 {
                    PREFETCH_AHEAD
                } else {
                    0
                };
                let o = (addr as *mut f32).wrapping_add(row * n + g * ROWS);
                // Without VNNI one row a call; with it 4 while 4 are left.
                let four = vnni && rows.1 - row >= 4;
                // SAFETY: each (group, row) writes its own 8 outputs of `out`, which
                // outlives the pool call; the CPU's features were checked above.
                unsafe {
                    let both = (acts, kacts);
                    if four {
                        avx2::group::<4>(kind, true, w, both, sums, row, ahead, o, n);
                        row += 4;
                        continue;
                    }
                    avx2::group::<1>(kind, vnni, w, both, sums, row, ahead, o, n);
                }
                row += 1;
            }
        }
    });
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{Activations, GgmlType, KActivations, BLOCK, QK_K, ROWS};

    /// Every cache line of the `len` bytes `ahead` bytes past `p` into L1 (nothing where
    /// `ahead` is 0): a group's blocks are one contiguous stream, and the hardware's own
    /// prefetchers stop at each 4 kB page.
    #[inline(always)]
    unsafe fn prefetch(p: *const u8, ahead: usize, len: usize) {
        if ahead > 0 {
            let mut off = 0;
            while off < len {
                _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(ahead + off) as *const i8);
                off += 64;
            }
        }
    }

    /// One group of `kind` at `w` against activation rows `row..row + R` (`R` 1 without
    /// VNNI): the format's kernel. `sums`: [`super::integer_sums`] (q4_0, q5_0, q8_0 with
    /// VNNI) or [`super::subblock_sums`] (q4_k, q6_k).
    ///
    /// # Safety
    /// The CPU has AVX2, FMA and F16C, and AVX-512 VNNI where `vnni`; `w` holds the
    /// group, the activations rows `row..row + R`, and `out` the R rows of 8 outputs,
    /// `stride` apart, which no other thread touches meanwhile.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub unsafe fn group<const R: usize>(
        kind: GgmlType,
        vnni: bool,
        w: *const u8,
        (acts, kacts): (&Activations, &KActivations),
        sums: &[i32],
        row: usize,
        ahead: usize,
        out: *mut f32,
        stride: usize,
    ) {
        match (kind, vnni) {
            (GgmlType::Q4_0, false) => group_q4_0(w, acts, sums, row, ahead, out),
            (GgmlType::Q5_0, false) => group_q5_0(w, acts, sums, row, ahead, out),
            (GgmlType::Q8_0, false) => group_q8_0(w, acts, sums, row, ahead, out),
            (GgmlType::Q4K, false) => group_q4_k(w, kacts, sums, row, ahead, out),
            (GgmlType::Q6K, false) => group_q6_k(w, kacts, sums, row, ahead, out),
            (GgmlType::Q4_0, true) => group_q4_0_vnni::<R>(w, acts, sums, row, ahead, out, stride),
            (GgmlType::Q5_0, true) => group_q5_0_vnni::<R>(w, acts, sums, row, ahead, out, stride),
            (GgmlType::Q8_0, true) => group_q8_0_vnni::<R>(w, acts, sums, row, ahead, out, stride),
            (GgmlType::Q4K, true) => group_q4_k_vnni::<R>(w, kacts, sums, row, ahead, out, stride),
            (GgmlType::Q6K, true) => group_q6_k_vnni::<R>(w, kacts, sums, row, ahead, out, stride),
            _ => unreachable!(),
        }
    }

    /// The 4 activation bytes at `p` in every 32-bit lane.
    #[inline(always)]
    unsafe fn broadcast4(p: *const i8) -> __m256i {
        _mm256_set1_epi32(std::ptr::read_unaligned(p as *const i32))
    }

    /// `acc` plus, in each 32-bit lane, the 4 products of `w`'s unsigned bytes with `a`'s
    /// signed ones: one `vpdpbusd` (AVX-512 VNNI; the caller's features).
    #[inline(always)]
    unsafe fn dot4(acc: __m256i, w: __m256i, a: __m256i) -> __m256i {
        _mm256_dpbusd_epi32(acc, w, a)
    }

    /// A format's two kernels from its generic body: `$avx2` (AVX2 + FMA + F16C: one
    /// activation row, the body without VNNI) and `$vnni` (with AVX-512 VNNI: `R` rows at
    /// once, `row..row + R`, outputs `stride` apart).
    macro_rules! kernels {
        ($(#[$doc:meta])* $avx2:ident, $vnni:ident => $body:ident($acts:ty)) => {
            $(#[$doc])*
            #[target_feature(enable = "avx2,fma,f16c")]
            pub unsafe fn $avx2(
                w: *const u8,
                acts: &$acts,
                sums: &[i32],
                row: usize,
                ahead: usize,
                out: *mut f32,
            ) {
                $body::<1, false>(w, acts, sums, row, ahead, out, 0)
            }

            #[doc = concat!("[`", stringify!($avx2), "`] for `R` activation rows with `vpdpbusd`.")]
            #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
            #[allow(clippy::too_many_arguments)]
            pub unsafe fn $vnni<const R: usize>(
                w: *const u8,
                acts: &$acts,
                sums: &[i32],
                row: usize,
                ahead: usize,
                out: *mut f32,
                stride: usize,
            ) {
                $body::<R, true>(w, acts, sums, row, ahead, out, stride)
            }
        };
    }

    kernels! {
        /// One q4_0 group of 8 rows against activation row `row`: 8 outputs at `out`.
        group_q4_0, group_q4_0_vnni => q4_0_rows(Activations)
    }

    /// One q4_0 group against activation rows `row..row + R`. Without VNNI the 8 products
    /// of a block are summed in 16 bits (≤ 30,480), with it in 32.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn q4_0_rows<const R: usize, const VNNI: bool>(
        w: *const u8,
        acts: &Activations,
        sums: &[i32],
        row: usize,
        ahead: usize,
        out: *mut f32,
        stride: usize,
    ) {
        let nb = acts.k / BLOCK;
        let gb = GgmlType::Q4_0.group_block_bytes();
        let low4 = _mm256_set1_epi8(0x0F);
        let ones = _mm256_set1_epi16(1);
        let qa = acts.qs.as_ptr().add(row * acts.k);
        let mut acc = [_mm256_setzero_ps(); R];
        for b in 0..nb {
            let p = w.add(b * gb);
            prefetch(p, ahead, gb);
            let mut s = [_mm256_setzero_si256(); R];
            for j in 0..4 {
                let raw = _mm256_loadu_si256(p.add(2 * ROWS + 32 * j) as *const __m256i);
                let lo = _mm256_and_si256(raw, low4);
                let hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), low4);
                for (r, s) in s.iter_mut().enumerate() {
                    let a = qa.add(r * acts.k + b * BLOCK);
                    let a_lo = broadcast4(a.add(4 * j));
                    let a_hi = broadcast4(a.add(4 * j + 16));
                    *s = if VNNI {
                        dot4(dot4(*s, lo, a_lo), hi, a_hi)
                    } else {
                        let s16 = _mm256_add_epi16(*s, _mm256_maddubs_epi16(lo, a_lo));
                        _mm256_add_epi16(s16, _mm256_maddubs_epi16(hi, a_hi))
                    };
                }
            }
            let scales = _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i));
            for (r, (acc, &s)) in acc.iter_mut().zip(&s).enumerate() {
                let at = (row + r) * nb + b;
                let s32 = if VNNI { s } else { _mm256_madd_epi16(s, ones) };
                let dot = _mm256_sub_epi32(s32, _mm256_set1_epi32(8 * *sums.get_unchecked(at)));
                let d = _mm256_mul_ps(scales, _mm256_set1_ps(*acts.scales.get_unchecked(at)));
                *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), d, *acc);
            }
        }
        for (r, &acc) in acc.iter().enumerate() {
            _mm256_storeu_ps(out.add(r * stride), acc);
        }
    }

    kernels! {
        /// One q5_0 group of 8 rows against activation row `row`: 8 outputs at `out`.
        group_q5_0, group_q5_0_vnni => q5_0_rows(Activations)
    }

    /// One q5_0 group against activation rows `row..row + R`: q4_0's kernel with each
    /// quant's fifth bit (bit e of its row's 32-bit word for quant e) set into bit 4 of its
    /// byte, quants 0..31 against the activations, 16·Σa taken off. Without VNNI each
    /// 16-bit sum takes 4 pair sums (≤ 4 × 2 × 31 × 127 = 31,496).
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn q5_0_rows<const R: usize, const VNNI: bool>(
        w: *const u8,
        acts: &Activations,
        sums: &[i32],
        row: usize,
        ahead: usize,
        out: *mut f32,
        stride: usize,
    ) {
        let nb = acts.k / BLOCK;
        let gb = GgmlType::Q5_0.group_block_bytes();
        let low4 = _mm256_set1_epi8(0x0F);
        let bit4 = _mm256_set1_epi8(0x10);
        let ones = _mm256_set1_epi16(1);
        // Bits 0..3 of a byte, one per byte of each 4-byte word, and 4..7 likewise.
        let bits_lo = _mm256_set1_epi32(0x0804_0201);
        let bits_hi = _mm256_set1_epi32(0x8040_2010_u32 as i32);
        // Byte t of each lane's word repeated over the lane's 4 bytes.
        let spread = |t: i8| {
            let l = [t, t, t, t, 4 + t, 4 + t, 4 + t, 4 + t];
            let h = [8 + t, 8 + t, 8 + t, 8 + t, 12 + t, 12 + t, 12 + t, 12 + t];
            _mm256_setr_epi8(
                l[0], l[1], l[2], l[3], l[4], l[5], l[6], l[7], h[0], h[1], h[2], h[3], h[4], h[5],
                h[6], h[7], l[0], l[1], l[2], l[3], l[4], l[5], l[6], l[7], h[0], h[1], h[2], h[3],
                h[4], h[5], h[6], h[7],
            )
        };
        let by_byte = [spread(0), spread(1), spread(2), spread(3)];
        // Quants 4j..4j+3 take bits 4j..4j+3: byte j / 2, its low or high half.
        let fifth = |qh: __m256i, bit: usize| {
            let b = _mm256_shuffle_epi8(qh, by_byte[bit / 8]);
            let mask = if bit.is_multiple_of(8) {
                bits_lo
            } else {
                bits_hi
            };
            _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(b, mask), mask), bit4)
        };
        let qa = acts.qs.as_ptr().add(row * acts.k);
        let mut acc = [_mm256_setzero_ps(); R];
        for b in 0..nb {
            let p = w.add(b * gb);
            prefetch(p, ahead, gb);
            let qh = _mm256_loadu_si256(p.add(2 * ROWS) as *const __m256i);
            let mut s_lo = [_mm256_setzero_si256(); R];
            let mut s_hi = [_mm256_setzero_si256(); R];
            for j in 0..4 {
                let raw = _mm256_loadu_si256(p.add(6 * ROWS + 32 * j) as *const __m256i);
                let lo = _mm256_or_si256(_mm256_and_si256(raw, low4), fifth(qh, 4 * j));
                let hi = _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16(raw, 4), low4),
                    fifth(qh, 4 * j + 16),
                );
                for r in 0..R {
                    let a = qa.add(r * acts.k + b * BLOCK);
                    let a_lo = broadcast4(a.add(4 * j));
                    let a_hi = broadcast4(a.add(4 * j + 16));
                    if VNNI {
                        s_lo[r] = dot4(s_lo[r], lo, a_lo);
                        s_hi[r] = dot4(s_hi[r], hi, a_hi);
                    } else {
                        s_lo[r] = _mm256_add_epi16(s_lo[r], _mm256_maddubs_epi16(lo, a_lo));
                        s_hi[r] = _mm256_add_epi16(s_hi[r], _mm256_maddubs_epi16(hi, a_hi));
                    }
                }
            }
            let scales = _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i));
            for r in 0..R {
                let at = (row + r) * nb + b;
                let s32 = if VNNI {
                    _mm256_add_epi32(s_lo[r], s_hi[r])
                } else {
                    _mm256_add_epi32(
                        _mm256_madd_epi16(s_lo[r], ones),
                        _mm256_madd_epi16(s_hi[r], ones),
                    )
                };
                let dot = _mm256_sub_epi32(s32, _mm256_set1_epi32(16 * *sums.get_unchecked(at)));
                let d = _mm256_mul_ps(scales, _mm256_set1_ps(*acts.scales.get_unchecked(at)));
                acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), d, acc[r]);
            }
        }
        for (r, &acc) in acc.iter().enumerate() {
            _mm256_storeu_ps(out.add(r * stride), acc);
        }
    }

    kernels! {
        /// One q8_0 group of 8 rows against activation row `row`: 8 outputs at `out`
        /// (`sums` unused: ggml's sign trick needs no offset).
        group_q8_0, group_q8_0_vnni => q8_0_rows(Activations)
    }

    /// One q8_0 group against activation rows `row..row + R`. Without VNNI: ggml's sign
    /// trick (`|w|` against `a` with `w`'s sign, at most 2 × 128 × 127 a pair), each chunk
    /// widened to 32 bits before it is summed. With it: `w + 128` (unsigned) against `a`,
    /// then `128 · Σa` off.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn q8_0_rows<const R: usize, const VNNI: bool>(
        w: *const u8,
        acts: &Activations,
        sums: &[i32],
        row: usize,
        ahead: usize,
        out: *mut f32,
        stride: usize,
    ) {
        let nb = acts.k / BLOCK;
        let gb = GgmlType::Q8_0.group_block_bytes();
        let ones = _mm256_set1_epi16(1);
        let offset = _mm256_set1_epi8(-128);
        let qa = acts.qs.as_ptr().add(row * acts.k);
        let mut acc = [_mm256_setzero_ps(); R];
        for b in 0..nb {
            let p = w.add(b * gb);
            prefetch(p, ahead, gb);
            let mut s32 = [_mm256_setzero_si256(); R];
            for j in 0..8 {
                let q = _mm256_loadu_si256(p.add(2 * ROWS + 32 * j) as *const __m256i);
                if VNNI {
                    let qu = _mm256_xor_si256(q, offset);
                    for (r, s) in s32.iter_mut().enumerate() {
                        *s = dot4(*s, qu, broadcast4(qa.add(r * acts.k + b * BLOCK + 4 * j)));
                    }
                } else {
                    let aq = _mm256_sign_epi8(q, q);
                    for (r, s) in s32.iter_mut().enumerate() {
                        let av = broadcast4(qa.add(r * acts.k + b * BLOCK + 4 * j));
                        let pairs = _mm256_maddubs_epi16(aq, _mm256_sign_epi8(av, q));
                        *s = _mm256_add_epi32(*s, _mm256_madd_epi16(pairs, ones));
                    }
                }
            }
            let scales = _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i));
            for (r, (acc, &s)) in acc.iter_mut().zip(&s32).enumerate() {
                let at = (row + r) * nb + b;
                let dot = if VNNI {
                    _mm256_sub_epi32(s, _mm256_set1_epi32(128 * *sums.get_unchecked(at)))
                } else {
                    s
                };
                let d = _mm256_mul_ps(scales, _mm256_set1_ps(*acts.scales.get_unchecked(at)));
                *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), d, *acc);
            }
        }
        for (r, &acc) in acc.iter().enumerate() {
            _mm256_storeu_ps(out.add(r * stride), acc);
        }
    }

    /// `vpshufb` masks, one per byte `j` of a 32-bit lane, that copy that byte of each
    /// lane into both 16-bit halves of the lane: into their low bytes, zero-extended
    /// (`high` false), or into their high bytes (`high` true; an arithmetic shift right
    /// by 8 then sign-extends it).
    const fn lane_byte_masks(high: bool) -> [[u8; 32]; 4] {
        let mut t = [[0u8; 32]; 4];
        let mut j = 0;
        while j < 4 {
            let mut b = 0;
            while b < 32 {
                t[j][b] = if (b % 2 == 1) == high {
                    ((b % 16) / 4 * 4 + j) as u8
                } else {
                    0x80
                };
                b += 1;
            }
            j += 1;
        }
        t
    }

    /// A q4_k sub-block's 6-bit scale (or minimum) of each of the 8 rows, ready for
    /// `vpmaddwd`.
    static LANE_BYTE: [[u8; 32]; 4] = lane_byte_masks(false);

    #[inline(always)]
    unsafe fn lane_byte(j: usize) -> __m256i {
        _mm256_loadu_si256(LANE_BYTE.as_ptr().add(j) as *const __m256i)
    }

    kernels! {
        /// One q4_k group of 8 rows against activation row `row`: 8 outputs at `out`.
        /// `sums` holds each activation super-block's sub-block sums as
        /// [`super::subblock_sums`] lays them out.
        group_q4_k, group_q4_k_vnni => q4_k_rows(KActivations)
    }

    /// One q4_k group against activation rows `row..row + R`. Each 32-weight sub-block
    /// summed exactly (without VNNI in 16 bits, ≤ 30,480, then × its scale by
    /// `vpmaddwd`; with it in 32 bits, then × its scale by `vpmulld`), the minimums
    /// against the activations' sub-block sums.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn q4_k_rows<const R: usize, const VNNI: bool>(
        w: *const u8,
        acts: &KActivations,
        pairs: &[i32],
        row: usize,
        ahead: usize,
        out: *mut f32,
        stride: usize,
    ) {
        let nb = acts.k / QK_K;
        let gb = GgmlType::Q4K.group_block_bytes();
        let low4 = _mm256_set1_epi8(0x0F);
        let mask6 = _mm256_set1_epi32(0x3f3f_3f3f);
        let mask4 = _mm256_set1_epi32(0x0f0f_0f0f);
        let mask2 = _mm256_set1_epi32(0x0303_0303);
        let low8 = _mm256_set1_epi32(0x00ff_00ff);
        let low16 = _mm256_set1_epi32(0xffff);
        let qa = acts.qs.as_ptr().add(row * acts.k);
        let mut acc = [_mm256_setzero_ps(); R];
        for b in 0..nb {
            let p = w.add(b * gb);
            prefetch(p, ahead, gb);
            // The 12 packed scale bytes of each row as three 32-bit lanes' words, decoded
            // as ggml does (kmask1..3): scales 0-3, 4-7, minimums 0-3, 4-7, a byte each.
            let r0 = _mm256_loadu_si256(p.add(32) as *const __m256i);
            let r1 = _mm256_loadu_si256(p.add(64) as *const __m256i);
            let r2 = _mm256_loadu_si256(p.add(96) as *const __m256i);
            let sc = [
                _mm256_and_si256(r0, mask6),
                _mm256_or_si256(
                    _mm256_and_si256(r2, mask4),
                    _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(r0, 6), mask2), 4),
                ),
            ];
            let mins_lo = _mm256_and_si256(r1, mask6);
            let mins_hi = _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi32(r2, 4), mask4),
                _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(r1, 6), mask2), 4),
            );
            let qs = p.add(128);
            let mut sumi = [_mm256_setzero_si256(); R];
            for pair in 0..4 {
                let mut s_lo = [_mm256_setzero_si256(); R];
                let mut s_hi = [_mm256_setzero_si256(); R];
                for c in 0..8 {
                    let raw = _mm256_loadu_si256(qs.add(32 * (8 * pair + c)) as *const __m256i);
                    let lo = _mm256_and_si256(raw, low4);
                    let hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), low4);
                    for r in 0..R {
                        let a = qa.add(r * acts.k + b * QK_K + 64 * pair + 4 * c);
                        let a_lo = broadcast4(a);
                        let a_hi = broadcast4(a.add(32));
                        if VNNI {
                            s_lo[r] = dot4(s_lo[r], lo, a_lo);
                            s_hi[r] = dot4(s_hi[r], hi, a_hi);
                        } else {
                            // At most 8 × 2 × 15 × 127 = 30,480: exact in 16 bits.
                            s_lo[r] = _mm256_add_epi16(s_lo[r], _mm256_maddubs_epi16(lo, a_lo));
                            s_hi[r] = _mm256_add_epi16(s_hi[r], _mm256_maddubs_epi16(hi, a_hi));
                        }
                    }
                }
                // Sub-blocks 2·pair (low nibbles) and 2·pair + 1 (high).
                let (j0, j1) = (2 * pair, 2 * pair + 1);
                let sc0 = _mm256_shuffle_epi8(sc[j0 / 4], lane_byte(j0 % 4));
                let sc1 = _mm256_shuffle_epi8(sc[j1 / 4], lane_byte(j1 % 4));
                for r in 0..R {
                    let (p_lo, p_hi) = if VNNI {
                        (
                            _mm256_mullo_epi32(s_lo[r], _mm256_and_si256(sc0, low16)),
                            _mm256_mullo_epi32(s_hi[r], _mm256_and_si256(sc1, low16)),
                        )
                    } else {
                        (
                            _mm256_madd_epi16(s_lo[r], sc0),
                            _mm256_madd_epi16(s_hi[r], sc1),
                        )
                    };
                    sumi[r] = _mm256_add_epi32(sumi[r], _mm256_add_epi32(p_lo, p_hi));
                }
            }
            // Σ m_j · S_j over the 8 sub-blocks: the minimums as 16-bit pairs (m0, m2),
            // (m1, m3), (m4, m6), (m5, m7) against the sums laid out the same way.
            let mins = [
                _mm256_and_si256(mins_lo, low8),
                _mm256_and_si256(_mm256_srli_epi32(mins_lo, 8), low8),
                _mm256_and_si256(mins_hi, low8),
                _mm256_and_si256(_mm256_srli_epi32(mins_hi, 8), low8),
            ];
            let d16 = _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i));
            let dmin16 = _mm256_cvtph_ps(_mm_loadu_si128(p.add(16) as *const __m128i));
            for r in 0..R {
                let at = (row + r) * nb + b;
                let s = pairs.as_ptr().add(4 * at);
                let mut summ = _mm256_setzero_si256();
                for (i, &mv) in mins.iter().enumerate() {
                    summ =
                        _mm256_add_epi32(summ, _mm256_madd_epi16(mv, _mm256_set1_epi32(*s.add(i))));
                }
                let d8 = _mm256_set1_ps(*acts.d.get_unchecked(at));
                let d = _mm256_mul_ps(d16, d8);
                let dmin = _mm256_mul_ps(dmin16, d8);
                acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi[r]), d, acc[r]);
                acc[r] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(summ), dmin, acc[r]);
            }
        }
        for (r, &acc) in acc.iter().enumerate() {
            _mm256_storeu_ps(out.add(r * stride), acc);
        }
    }

    /// A q6_k group's signed scale for each of the 8 rows (before the shift).
    static LANE_BYTE_HIGH: [[u8; 32]; 4] = lane_byte_masks(true);

    /// Group `g`'s scale for the 8 rows of a q6_k group block whose scales start at
    /// `scales`, sign-extended into both 16-bit halves of each row's lane.
    #[inline(always)]
    unsafe fn q6k_scale(scales: *const u8, g: usize) -> __m256i {
        let v = _mm256_loadu_si256(scales.add(32 * (g / 4)) as *const __m256i);
        let m = _mm256_loadu_si256(LANE_BYTE_HIGH.as_ptr().add(g % 4) as *const __m256i);
        _mm256_srai_epi16(_mm256_shuffle_epi8(v, m), 8)
    }

    /// Group `g`'s scale for the 8 rows, sign-extended into each row's 32-bit lane.
    #[inline(always)]
    unsafe fn q6k_scale32(scales: *const u8, g: usize) -> __m256i {
        let v = _mm256_loadu_si256(scales.add(32 * (g / 4)) as *const __m256i);
        match g % 4 {
            0 => _mm256_srai_epi32(_mm256_slli_epi32(v, 24), 24),
            1 => _mm256_srai_epi32(_mm256_slli_epi32(v, 16), 24),
            2 => _mm256_srai_epi32(_mm256_slli_epi32(v, 8), 24),
            _ => _mm256_srai_epi32(v, 24),
        }
    }

    kernels! {
        /// One q6_k group of 8 rows against activation row `row`: 8 outputs at `out`.
        /// `sums` holds each activation super-block's sums of 16 as
        /// [`super::subblock_sums`] lays them out. The quants are taken as 0..63 and the
        /// −32 applied once per group of 16 as −32 · scale · Σa.
        group_q6_k, group_q6_k_vnni => q6_k_rows(KActivations)
    }

    /// One q6_k group against activation rows `row..row + R`. Without VNNI two chunks
    /// summed in 16 bits (2 × 2 × 63 × 127 = 32,004 at most) then × the group's scale
    /// (`vpmaddwd`); with it a group of 16 weights summed in 32 bits then × its scale
    /// (`vpmulld`).
    #[inline(always)]
    #[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
    unsafe fn q6_k_rows<const R: usize, const VNNI: bool>(
        w: *const u8,
        acts: &KActivations,
        pairs: &[i32],
        row: usize,
        ahead: usize,
        out: *mut f32,
        stride: usize,
    ) {
        let nb = acts.k / QK_K;
        let gb = GgmlType::Q6K.group_block_bytes();
        let low4 = _mm256_set1_epi8(0x0F);
        let low2 = _mm256_set1_epi8(0x03);
        let qa = acts.qs.as_ptr().add(row * acts.k);
        let mut acc = [_mm256_setzero_ps(); R];
        for b in 0..nb {
            let p = w.add(b * gb);
            prefetch(p, ahead, gb);
            let scales = p.add(16);
            let steps = p.add(144);
            let mut sumi = [_mm256_setzero_si256(); R];
            for half in 0..2 {
                // Without VNNI two chunks of 4 weights per part at a time, with it four
                // (a whole group of 16), then × the group's scale.
                let per = if VNNI { 4 } else { 2 };
                for q0 in (0..8).step_by(per) {
                    let mut s = [[_mm256_setzero_si256(); 4]; R];
                    for c in q0..q0 + per {
                        let step = steps.add(96 * (8 * half + c));
                        let l0 = _mm256_loadu_si256(step as *const __m256i);
                        let l1 = _mm256_loadu_si256(step.add(32) as *const __m256i);
                        let h = _mm256_loadu_si256(step.add(64) as *const __m256i);
                        // The high bit pairs of parts 0..3, moved to bits 4-5.
                        let high = [
                            _mm256_slli_epi16(_mm256_and_si256(h, low2), 4),
                            _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 2), low2), 4),
                            _mm256_and_si256(h, _mm256_slli_epi16(low2, 4)),
                            _mm256_and_si256(_mm256_srli_epi16(h, 2), _mm256_slli_epi16(low2, 4)),
                        ];
                        let q = [
                            _mm256_or_si256(_mm256_and_si256(l0, low4), high[0]),
                            _mm256_or_si256(_mm256_and_si256(l1, low4), high[1]),
                            _mm256_or_si256(
                                _mm256_and_si256(_mm256_srli_epi16(l0, 4), low4),
                                high[2],
                            ),
                            _mm256_or_si256(
                                _mm256_and_si256(_mm256_srli_epi16(l1, 4), low4),
                                high[3],
                            ),
                        ];
                        for (r, s) in s.iter_mut().enumerate() {
                            for part in 0..4 {
                                let av = broadcast4(
                                    qa.add(r * acts.k + b * QK_K + 128 * half + 32 * part + 4 * c),
                                );
                                s[part] = if VNNI {
                                    dot4(s[part], q[part], av)
                                } else {
                                    _mm256_add_epi16(s[part], _mm256_maddubs_epi16(q[part], av))
                                };
                            }
                        }
                    }
                    for part in 0..4 {
                        // Weights 4·q0 .. 4·q0 + 4·per of part `part`: group g.
                        let g = 8 * half + 2 * part + q0 / 4;
                        if VNNI {
                            let scale = q6k_scale32(scales, g);
                            for r in 0..R {
                                sumi[r] = _mm256_add_epi32(
                                    sumi[r],
                                    _mm256_mullo_epi32(s[r][part], scale),
                                );
                            }
                        } else {
                            let scale = q6k_scale(scales, g);
                            for r in 0..R {
                                sumi[r] =
                                    _mm256_add_epi32(sumi[r], _mm256_madd_epi16(s[r][part], scale));
                            }
                        }
                    }
                }
            }
            // Σ scale_g · Σa_g over the 16 groups, for the −32: the scales as even and
            // odd bytes (sign-extended 16-bit halves) against the sums laid out the same
            // way.
            let mut halves = [[_mm256_setzero_si256(); 2]; 4];
            for (t, h) in halves.iter_mut().enumerate() {
                let v = _mm256_loadu_si256(scales.add(32 * t) as *const __m256i);
                *h = [
                    _mm256_srai_epi16(_mm256_slli_epi16(v, 8), 8),
                    _mm256_srai_epi16(v, 8),
                ];
            }
            let d6 = _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i));
            for r in 0..R {
                let at = (row + r) * nb + b;
                let s = pairs.as_ptr().add(8 * at);
                let mut sums = _mm256_setzero_si256();
                for (t, &[even, odd]) in halves.iter().enumerate() {
                    sums = _mm256_add_epi32(
                        sums,
                        _mm256_madd_epi16(even, _mm256_set1_epi32(*s.add(2 * t))),
                    );
                    sums = _mm256_add_epi32(
                        sums,
                        _mm256_madd_epi16(odd, _mm256_set1_epi32(*s.add(2 * t + 1))),
                    );
                }
                let dot = _mm256_sub_epi32(sumi[r], _mm256_slli_epi32(sums, 5));
                let d = _mm256_mul_ps(d6, _mm256_set1_ps(*acts.d.get_unchecked(at)));
                acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), d, acc[r]);
            }
        }
        for (r, &acc) in acc.iter().enumerate() {
            _mm256_storeu_ps(out.add(r * stride), acc);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::tests::data;
    use candle_core::quantized::QTensor;
    use candle_core::{Device, Tensor};

    fn stored(kind: GgmlType, n: usize, k: usize, seed: usize) -> Vec<u8> {
        let mut v = data(n * k, seed);
        // Some −128 quants in q8_0 (the sign trick's edge): blocks whose largest
        // magnitude is negative round it to −127, so force one block's to the edge.
        v[5] = -1.0;
        let w = Tensor::from_vec(v, (n, k), &Device::Cpu).unwrap();
        QTensor::quantize(&w, kind.dtype())
            .unwrap()
            .data()
            .unwrap()
            .to_vec()
    }

    const KINDS: [GgmlType; 5] = [
        GgmlType::Q4_0,
        GgmlType::Q5_0,
        GgmlType::Q8_0,
        GgmlType::Q4K,
        GgmlType::Q6K,
    ];

    /// The repacking loses nothing: every block comes back as stored, and the bytes
    /// held are the stored ones' count; rows past the last group stay where they were.
    #[test]
    fn repacking_is_a_permutation_of_the_stored_blocks() {
        for kind in KINDS {
            for n in [16, 21, 9] {
                let k = 3 * kind.block_len();
                let w = stored(kind, n, k, 1);
                let packed = repack(kind, &w, n, k);
                assert_eq!(packed.len(), w.len());
                let rest = whole_rows(n) * (k / kind.block_len()) * kind.block_bytes();
                assert_ne!(
                    packed[..rest],
                    w[..rest],
                    "{kind:?} {n} rows: nothing moved"
                );
                assert_eq!(
                    packed[rest..],
                    w[rest..],
                    "{kind:?} {n} rows: the rest moved"
                );
                assert_eq!(unpack(kind, &packed, n, k), w, "{kind:?} {n} rows");
            }
        }
    }

    /// A row read from the interleaved layout is the stored row dequantized, in a group
    /// and past the last one.
    #[test]
    fn rows_read_back_as_stored() {
        for kind in KINDS {
            let (n, k) = (19, 2 * kind.block_len());
            let q = QTensor::quantize(
                &Tensor::from_vec(data(n * k, 4), (n, k), &Device::Cpu).unwrap(),
                kind.dtype(),
            )
            .unwrap();
            let table = q
                .dequantize(&Device::Cpu)
                .unwrap()
                .to_vec2::<f32>()
                .unwrap();
            let m = Interleaved {
                kind,
                n,
                k,
                bytes: repack(kind, &q.data().unwrap(), n, k),
            };
            let mut row = vec![0f32; k];
            for id in [0, 7, 8, 15, 16, 18] {
                m.row_into(id, &mut row);
                assert_eq!(row, table[id], "{kind:?} row {id}");
            }
        }
    }

    /// The interleaved kernels equal the portable definitions on the stored blocks, one
    /// activation row and many (an all-zero activation block among them: q4_0's integer
    /// sums recovered from a zero scale, q4_k's zeroed sums), one scratch reused across
    /// kinds and shapes.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn interleaved_kernel_equals_the_reference() {
        if !crate::kernel::avx2_supported() {
            eprintln!("this CPU lacks AVX2: the interleaved kernel is not in use");
            return;
        }
        let mut scratch = crate::kernel::Scratch::default();
        for kind in KINDS {
            // k in blocks: 1, 8, 3 and 2 of them.
            let len = kind.block_len();
            // Rows past the last group: 13 = 8 + 5, 9 = 8 + 1, 23 = 16 + 7.
            for (m, n, k) in [
                (1, 8, len),
                (1, 24, 8 * len),
                (3, 16, 3 * len),
                (70, 32, 2 * len),
                (1, 13, 3 * len),
                (2, 9, len),
                (70, 23, 2 * len),
            ] {
                let mut w = stored(kind, n, k, 2);
                if kind == GgmlType::Q8_0 {
                    // A −128 quant against a ±127 activation: the sign trick's edge.
                    w[2] = 0x80;
                }
                let mut x = data(m * k, 3);
                x[..len].fill(0.0);
                if kind == GgmlType::Q5_0 && k > len {
                    // Row 0's second block all 31 against activations all 127: the
                    // largest 16-bit partial sums (4 × 2 × 31 × 127).
                    w[24..44].fill(0xFF);
                    x[len..2 * len].fill(1.0);
                }
                let want = match kind.block32() {
                    Some(f) => {
                        crate::kernel::reference_matmul(f, &w, n, &Activations::quantize(&x, m, k))
                    }
                    None => crate::kernel::kquant::reference_matmul(
                        kind.kquant().unwrap(),
                        &w,
                        n,
                        &KActivations::quantize(&x, m, k),
                    ),
                };
                let packed = repack(kind, &w, n, k);
                // The AVX2 kernels, and the VNNI ones (one row and four at a time) where
                // the CPU has them: the same integer sums, so the same floats.
                let mut outs = Vec::new();
                for vnni in [false, true] {
                    if vnni && !crate::kernel::simd_supported() {
                        eprintln!("this CPU lacks AVX-512 VNNI: its kernels are not in use");
                        continue;
                    }
                    let mut got = vec![0f32; m * n];
                    matmul_with(vnni, kind, &packed, n, k, &x, m, &mut scratch, &mut got);
                    for (i, (g, r)) in got.iter().zip(&want).enumerate() {
                        assert!(
                            (g - r).abs() <= 1e-5 * r.abs().max(1.0),
                            "{kind:?} vnni {vnni} {m}x{n}x{k} [{i}]: {g} vs {r}"
                        );
                    }
                    outs.push(got);
                }
                if let [avx2, vnni] = &outs[..] {
                    assert_eq!(avx2, vnni, "{kind:?} {m}x{n}x{k}: AVX2 and VNNI differ");
                }
            }
        }
    }
}
