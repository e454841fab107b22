//! bitsandbytes' 4-bit formats, NF4 and FP4, with or without double quantization, byte
//! for byte as `bitsandbytes.functional.quantize_4bit` stores them on the CPU (0.50).
//!
//! - Blocks of 64 over the flattened row-major `[out, in]` matrix (a block may straddle
//!   two rows when `in` is not a multiple of 64; the last block may be short), one f32
//!   absmax per block.
//! - Each value times `1 / absmax` (f32 reciprocal, then f32 product), clamped to
//!   [-1, 1], goes to the code whose interval holds it: `torch.bucketize` over the f32
//!   midpoints of the sorted code, a value on a midpoint going to the lower code. FP4's
//!   code lists +0 and −0: the sort puts +0 first, so values in (−0.0026, 0] take the
//!   code 0b0000 and values in (0, 0.0026] the code 0b1000 (−0). Both decode to 0.
//! - Two codes per byte, the first element in the high nibble.
//! - Double quantization (`compress_statistics=True`): the absmax vector minus its mean
//!   (one f32 offset per matrix) is quantized in blocks of 256 to bitsandbytes' signed
//!   8-bit dynamic map with one f32 absmax per 256 (bitsandbytes' C++ CPU quantizer:
//!   a 65,536-point lookup table over [-1, 1], see `quantize_blockwise_8bit`).
//! - Dequantization: `code[q] × absmax` in f32 (with double quantization the absmax is
//!   first `map[qabsmax] × absmax2 + offset`). The product bitsandbytes computes on the
//!   CPU for an f32 compute dtype is `F.linear(x, W_dequantized, bias)` in f32.

use std::sync::Arc;

use anyhow::Result;
use candle_core::{DType, Device, Tensor};

use super::{Family, Part, StoredMatrix, WeightFormat};
use crate::model::nn::Matrix;
use crate::precision::RestDtype;

/// Elements per block.
pub const BLOCK: usize = 64;
/// Absmax values per second-level block (double quantization).
pub const BLOCK2: usize = 256;

/// Which 16-entry code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code4 {
    Nf4,
    Fp4,
}

/// NF4 as bitsandbytes lists it (`get_4bit_type("nf4")`), already sorted.
const NF4: [f32; 16] = [
    -1.0,
    -0.696_192_8,
    -0.525_073_05,
    -0.394_917_5,
    -0.284_441_38,
    -0.184_773_43,
    -0.091_050_036,
    0.0,
    0.079_580_3,
    0.160_930_2,
    0.246_112_3,
    0.337_915_24,
    0.440_709_83,
    0.562_617,
    0.722_956_84,
    1.0,
];

/// FP4 (e2m1) in bit-pattern order before normalization (`get_4bit_type("fp4")`).
const FP4_RAW: [f32; 16] = [
    0.0, 0.0625, 8.0, 12.0, 4.0, 6.0, 2.0, 3.0, -0.0, -0.0625, -8.0, -12.0, -4.0, -6.0, -2.0, -3.0,
];

/// The order `torch.argsort` puts FP4's codes in (ascending value; +0 before −0).
const FP4_ORDER: [u8; 16] = [11, 10, 13, 12, 15, 14, 9, 0, 8, 1, 6, 7, 4, 5, 2, 3];

impl Code4 {
    /// The 16 values, indexed by code.
    pub fn table(self) -> &'static [f32; 16] {
        static FP4: std::sync::OnceLock<[f32; 16]> = std::sync::OnceLock::new();
        match self {
            Code4::Nf4 => &NF4,
            Code4::Fp4 => FP4.get_or_init(|| FP4_RAW.map(|v| v / 12.0)),
        }
    }

    /// Codes in ascending order of value, as bitsandbytes sorts them.
    fn order(self) -> [u8; 16] {
        match self {
            Code4::Nf4 => std::array::from_fn(|i| i as u8),
            Code4::Fp4 => FP4_ORDER,
        }
    }

    /// The 15 f32 midpoints between neighbouring sorted codes.
    fn bounds(self) -> [f32; 15] {
        let t = self.table();
        let o = self.order();
        std::array::from_fn(|i| (t[o[i] as usize] + t[o[i + 1] as usize]) / 2.0)
    }

    pub fn name(self) -> &'static str {
        match self {
            Code4::Nf4 => "nf4",
            Code4::Fp4 => "fp4",
        }
    }
}

/// `torch.linspace(start, end, steps)` in f32 as PyTorch's CPU kernel computes it: the
/// first half from the start, the second from the end, each a fused multiply-add.
fn linspace_f32(start: f32, end: f32, steps: usize) -> Vec<f32> {
    let step = (end - start) / (steps - 1) as f32;
    let half = steps / 2;
    (0..steps)
        .map(|i| {
            if i < half {
                step.mul_add(i as f32, start)
            } else {
                (-step).mul_add((steps - i - 1) as f32, end)
            }
        })
        .collect()
}

/// `tensor.sum()` of a contiguous f32 vector as PyTorch's CPU kernel adds it
/// (aten/src/ATen/native/cpu/SumKernel.cpp: 8-lane vectors on an AVX2 build, four
/// interleaved vector accumulators, a cascade of four levels, then the tail and the
/// lanes in order), for `absmax.mean()` in double quantization. PyTorch's result itself
/// depends on the machine: 16 lanes on an AVX-512 build, and vectors longer than 32,768
/// values are split between threads; this is the AVX2, one-thread order, which the
/// fixtures were made with. An ulp apart, the offset moves at most a second-level code
/// that sits on a rounding tie.
#[allow(clippy::needless_range_loop)] // lane-wise sums read clearest indexed
pub fn torch_sum_f32(v: &[f32]) -> f32 {
    fn ceil_log2(x: usize) -> usize {
        if x <= 1 {
            0
        } else {
            (usize::BITS - (x - 1).leading_zeros()) as usize
        }
    }
    /// `multi_row_sum` with 4 rows, over `size` steps; `load(i, k)` is lane-wise.
    fn multi_row_sum<const L: usize>(
        size: usize,
        load: impl Fn(usize, usize) -> [f32; L],
    ) -> [[f32; L]; 4] {
        const LEVELS: usize = 4;
        let power = 4.max(ceil_log2(size) / LEVELS);
        let step = 1usize << power;
        let mask = step - 1;
        let mut acc = [[[0f32; L]; 4]; LEVELS];
        let add = |a: &mut [f32; L], b: [f32; L]| a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
        let mut i = 0;
        while i + step <= size {
            for _ in 0..step {
                for k in 0..4 {
                    add(&mut acc[0][k], load(i, k));
                }
                i += 1;
            }
            for j in 1..LEVELS {
                for k in 0..4 {
                    let lower = acc[j - 1][k];
                    add(&mut acc[j][k], lower);
                    acc[j - 1][k] = [0f32; L];
                }
                if i & (mask << (j * power)) != 0 {
                    break;
                }
            }
        }
        while i < size {
            for k in 0..4 {
                add(&mut acc[0][k], load(i, k));
            }
            i += 1;
        }
        for j in 1..LEVELS {
            for k in 0..4 {
                let upper = acc[j][k];
                add(&mut acc[0][k], upper);
            }
        }
        acc[0]
    }
    /// `row_sum`: interleave 4 accumulators over `size` loads, then fold them.
    fn row_sum<const L: usize>(size: usize, load: impl Fn(usize) -> [f32; L]) -> [f32; L] {
        let per = size / 4;
        let mut p = multi_row_sum::<L>(per, |i, k| load(i * 4 + k));
        for i in per * 4..size {
            let v = load(i);
            p[0].iter_mut().zip(v).for_each(|(x, y)| *x += y);
        }
        for k in 1..4 {
            let v = p[k];
            p[0].iter_mut().zip(v).for_each(|(x, y)| *x += y);
        }
        p[0]
    }
    const LANES: usize = 8;
    if v.len() < LANES {
        return row_sum::<1>(v.len(), |i| [v[i]])[0];
    }
    let vecs = v.len() / LANES;
    let lanes = row_sum::<LANES>(vecs, |i| std::array::from_fn(|l| v[i * LANES + l]));
    let mut total = 0f32;
    for &x in &v[vecs * LANES..] {
        total += x;
    }
    for x in lanes {
        total += x;
    }
    total
}

/// bitsandbytes' signed 8-bit dynamic map (`create_dynamic_map()`: 7 exponent bits,
/// linear fractions), sorted, in f32 as torch builds it.
pub fn dynamic_map() -> [f32; 256] {
    let mut data: Vec<f32> = Vec::with_capacity(256);
    for i in 0..7 {
        let b = linspace_f32(0.1, 1.0, (1 << i) + 1);
        let scale = 10f64.powi(-6 + i) as f32;
        for sign in [1.0f32, -1.0] {
            for w in b.windows(2) {
                data.push((sign * scale) * ((w[0] + w[1]) / 2.0));
            }
        }
    }
    data.push(0.0);
    data.push(1.0);
    data.sort_by(|a, b| a.total_cmp(b));
    let mut out = [0f32; 256];
    out.copy_from_slice(&data);
    out
}

/// The dynamic map, built once.
pub fn dynamic_map_as_used() -> &'static [f32; 256] {
    static MAP: std::sync::OnceLock<[f32; 256]> = std::sync::OnceLock::new();
    MAP.get_or_init(dynamic_map)
}

/// Entries of bitsandbytes' quantization lookup table over [-1, 1].
const LUT_SIZE: usize = 65536;

/// bitsandbytes' C++ CPU quantizer (csrc/cpu_ops.cpp, `build_quantize_lut` and
/// `quantize_cpu_impl`, 0.50): [-1, 1] cut into 65,536 evenly spaced points, each
/// given the code whose midpoint interval holds it; a value is scaled by the block's
/// reciprocal absmax and mapped to the nearest point. So a value lands on the nearest
/// code only to the table's resolution (3e-5): near 0, where the dynamic map's codes
/// are finer than that, bitsandbytes' choice (and so quantbench's) is not the nearest.
fn quantize_lut() -> &'static [u8] {
    static LUT: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    LUT.get_or_init(|| {
        let code = dynamic_map_as_used();
        let mids: Vec<f32> = code.windows(2).map(|w| 0.5 * (w[0] + w[1])).collect();
        let mut lut = vec![0u8; LUT_SIZE];
        let mut idx = 0usize;
        for (i, slot) in lut.iter_mut().enumerate() {
            let val = -1.0f32 + (2.0f32 * i as f32) / (LUT_SIZE - 1) as f32;
            while idx < mids.len() && mids[idx] < val {
                idx += 1;
            }
            *slot = idx as u8;
        }
        lut
    })
}

/// The table index of a normalized value (`norm_to_lut_index`).
#[inline]
fn lut_index(v: f32) -> usize {
    let v = v.clamp(-1.0, 1.0);
    ((v + 1.0) * 0.5 * (LUT_SIZE - 1) as f32 + 0.5) as u16 as usize
}

/// Block-wise 8-bit quantization of `a` to the dynamic map, blocks of `block`, as
/// bitsandbytes' C++ CPU quantizer does: codes and one absmax per block (an all-zero
/// block takes code 0).
fn quantize_blockwise_8bit(a: &[f32], block: usize) -> (Vec<u8>, Vec<f32>) {
    let lut = quantize_lut();
    let mut q = vec![0u8; a.len()];
    let mut absmax = Vec::with_capacity(a.len().div_ceil(block));
    for (bi, chunk) in a.chunks(block).enumerate() {
        let am = chunk.iter().fold(0f32, |m, v| m.max(v.abs()));
        absmax.push(am);
        if am == 0.0 {
            continue;
        }
        let inv = 1.0 / am;
        for (j, &v) in chunk.iter().enumerate() {
            q[bi * block + j] = lut[lut_index(v * inv)];
        }
    }
    (q, absmax)
}

/// The per-block scales: plain f32, or double-quantized.
#[derive(Debug, Clone, PartialEq)]
pub enum Scales {
    F32(Vec<f32>),
    Double {
        /// One 8-bit code per block of 64.
        q: Vec<u8>,
        /// One f32 absmax per 256 blocks.
        absmax2: Vec<f32>,
        /// The mean of the absmax vector, subtracted before quantizing.
        offset: f32,
    },
}

/// A matrix in NF4 or FP4.
#[derive(Debug, Clone)]
pub struct Bnb4 {
    pub code: Code4,
    pub out: usize,
    pub k: usize,
    /// Two codes per byte, the first in the high nibble: `ceil(out·k / 2)` bytes.
    pub packed: Vec<u8>,
    pub scales: Scales,
}

impl Bnb4 {
    /// Quantize `w` (`out × k`, row-major f32) as `quantize_4bit(w, blocksize=64,
    /// quant_type, compress_statistics=double)` does.
    pub fn quantize(w: &[f32], out: usize, k: usize, code: Code4, double: bool) -> Bnb4 {
        assert_eq!(w.len(), out * k, "weights are not {out} x {k}");
        let bounds = code.bounds();
        let order = code.order();
        let n = w.len();
        let mut codes = vec![0u8; n + (n % 2)];
        let mut absmax = Vec::with_capacity(n.div_ceil(BLOCK));
        for (bi, chunk) in w.chunks(BLOCK).enumerate() {
            let am = chunk.iter().fold(0f32, |m, v| m.max(v.abs()));
            absmax.push(am);
            let inv = 1.0 / am.max(1e-38);
            for (j, &v) in chunk.iter().enumerate() {
                let s = (v * inv).clamp(-1.0, 1.0);
                let pos = bounds.partition_point(|&b| b < s);
                codes[bi * BLOCK + j] = order[pos];
            }
        }
        if n % 2 == 1 {
            // torch pads the scaled values with one 0.0 to fill the last byte
            codes[n] = order[bounds.partition_point(|&b| b < 0.0)];
        }
        let packed = codes.chunks(2).map(|p| (p[0] << 4) | p[1]).collect();
        let scales = if double {
            let mean = torch_sum_f32(&absmax) / absmax.len() as f32;
            let centred: Vec<f32> = absmax.iter().map(|&a| a - mean).collect();
            let (q, absmax2) = quantize_blockwise_8bit(&centred, BLOCK2);
            Scales::Double {
                q,
                absmax2,
                offset: mean,
            }
        } else {
            Scales::F32(absmax)
        };
        Bnb4 {
            code,
            out,
            k,
            packed,
            scales,
        }
    }

    /// Whether the absmax is double-quantized.
    pub fn is_double(&self) -> bool {
        matches!(self.scales, Scales::Double { .. })
    }

    /// The f32 absmax of block `b`, as bitsandbytes dequantizes it.
    #[inline]
    pub fn absmax(&self, b: usize) -> f32 {
        match &self.scales {
            Scales::F32(a) => a[b],
            Scales::Double { q, absmax2, offset } => {
                dynamic_map_as_used()[q[b] as usize] * absmax2[b / BLOCK2] + offset
            }
        }
    }

    /// The 16 code values.
    pub fn table(&self) -> &'static [f32; 16] {
        self.code.table()
    }

    #[inline]
    fn code_at(&self, i: usize) -> u8 {
        let b = self.packed[i / 2];
        if i.is_multiple_of(2) {
            b >> 4
        } else {
            b & 0x0F
        }
    }
}

/// The exact bytes of an `[out, k]` matrix by part, the one account of them: planned
/// before loading ([`WeightFormat::matrix_bytes`]) and reported by a loaded matrix
/// ([`StoredMatrix::parts`]). The 4-bit codes, two to a byte; one absmax per block of
/// 64 (f32; or with double quantization one byte, plus an f32 scale per 256 of those
/// and the f32 offset).
pub fn part_bytes(out: usize, k: usize, double: bool) -> Vec<Part> {
    let n = out * k;
    let blocks = n.div_ceil(BLOCK);
    let mut parts = vec![Part {
        name: "codes",
        bytes: n.div_ceil(2),
    }];
    if double {
        parts.push(Part {
            name: "block_scales",
            bytes: blocks,
        });
        parts.push(Part {
            name: "second_level_scales",
            bytes: 4 * blocks.div_ceil(256) + 4,
        });
    } else {
        parts.push(Part {
            name: "block_scales",
            bytes: 4 * blocks,
        });
    }
    parts
}

/// bitsandbytes' 4-bit formats as precisions: nf4, fp4 and their double-quantized forms.
#[derive(Debug)]
pub struct Bnb4Format {
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    pub code: Code4,
    pub double: bool,
}

impl WeightFormat for Bnb4Format {
    fn name(&self) -> &'static str {
        self.name
    }
    fn aliases(&self) -> &'static [&'static str] {
        self.aliases
    }
    fn family(&self) -> Family {
        Family::Bitsandbytes
    }
    fn block_size(&self) -> usize {
        BLOCK
    }
    /// The codes' bytes and the block scale, fractional parts rounded down (use
    /// `matrix_bytes`).
    fn block_bytes(&self) -> usize {
        if self.double {
            33
        } else {
            36
        }
    }
    fn bits_per_weight(&self) -> f64 {
        if self.double {
            4.0 + 8.0 / 64.0 + 32.0 / (64.0 * 256.0)
        } else {
            4.0 + 32.0 / 64.0
        }
    }
    fn matrix_bytes(&self, out: usize, row_len: usize) -> usize {
        part_bytes(out, row_len, self.double)
            .iter()
            .map(|p| p.bytes)
            .sum()
    }
    /// Blocks run over the flattened matrix, as bitsandbytes': any shape.
    fn fits_row_len(&self, _row_len: usize) -> bool {
        true
    }
    /// bitsandbytes replaces linear layers only.
    fn holds_embeddings(&self) -> bool {
        false
    }
    /// transformers loads a bitsandbytes model's other weights in f16 unless told.
    fn default_rest(&self) -> RestDtype {
        RestDtype::F16
    }
    fn store(&self, t: &Tensor, _device: &Device) -> Result<Matrix> {
        let (rows, cols) = t.dims2()?;
        let w = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        Ok(Matrix::Custom(Arc::new(Bnb4::quantize(
            &w,
            rows,
            cols,
            self.code,
            self.double,
        ))))
    }
}

pub static NF4_FORMAT: Bnb4Format = Bnb4Format {
    name: "nf4",
    aliases: &["bnb-nf4"],
    code: Code4::Nf4,
    double: false,
};
pub static NF4_DQ_FORMAT: Bnb4Format = Bnb4Format {
    name: "nf4_dq",
    aliases: &["nf4-dq", "qlora"],
    code: Code4::Nf4,
    double: true,
};
pub static FP4_FORMAT: Bnb4Format = Bnb4Format {
    name: "fp4",
    aliases: &["bnb-fp4", "bnb-int4", "bnb-4bit"],
    code: Code4::Fp4,
    double: false,
};
pub static FP4_DQ_FORMAT: Bnb4Format = Bnb4Format {
    name: "fp4_dq",
    aliases: &["fp4-dq"],
    code: Code4::Fp4,
    double: true,
};

impl StoredMatrix for Bnb4 {
    fn format(&self) -> &'static str {
        match (self.code, self.is_double()) {
            (Code4::Nf4, false) => "nf4",
            (Code4::Nf4, true) => "nf4_dq",
            (Code4::Fp4, false) => "fp4",
            (Code4::Fp4, true) => "fp4_dq",
        }
    }

    fn shape(&self) -> (usize, usize) {
        (self.out, self.k)
    }

    fn parts(&self) -> Vec<Part> {
        let parts = part_bytes(self.out, self.k, self.is_double());
        debug_assert_eq!(parts[0].bytes, self.packed.len(), "codes as planned");
        parts
    }

    fn transformers_bytes(&self) -> usize {
        // Params4bit: the packed uint8 tensor alone.
        self.packed.len()
    }

    fn dequantize_rows(&self, start: usize, out: &mut [f32]) {
        let first = start * self.k;
        assert!(first + out.len() <= self.out * self.k, "rows out of range");
        let table = self.table();
        let mut i = 0;
        while i < out.len() {
            let flat = first + i;
            let b = flat / BLOCK;
            let am = self.absmax(b);
            let end = ((b + 1) * BLOCK - first).min(out.len());
            for (j, o) in out[i..end].iter_mut().enumerate() {
                *o = table[self.code_at(flat + j) as usize] * am;
            }
            i = end;
        }
    }

    fn matmul(&self, x: &[f32], m: usize, bias: Option<&[f32]>, y: &mut [f32]) {
        if crate::kernel::bnb4::supported(self) {
            crate::kernel::bnb4::matmul(self, x, m, bias, y);
        } else {
            super::matmul_by_rows(self, x, m, bias, y);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dynamic_map_has_bitsandbytes_shape() {
        let m = dynamic_map();
        assert_eq!(m[255], 1.0);
        assert_eq!(m.iter().filter(|v| **v < 0.0).count(), 127);
        assert!((m[0] + 0.992_968_75).abs() < 1e-7, "{}", m[0]);
        assert!(m.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn codes_pack_high_nibble_first_and_decode() {
        // 128 values: block 0 holds 1.0 and -1.0, block 1 zeros.
        let mut w = vec![0f32; 128];
        w[0] = 1.0;
        w[1] = -1.0;
        let q = Bnb4::quantize(&w, 2, 64, Code4::Nf4, false);
        assert_eq!(q.packed[0], 0xF0); // code 15 (1.0) high, code 0 (-1.0) low
        assert_eq!(q.packed[1], 0x77); // zeros: code 7
        let mut d = vec![0f32; 128];
        q.dequantize_rows(0, &mut d);
        assert_eq!(d, w);
        assert_eq!(q.bytes(), 64 + 2 * 4);
    }
}
