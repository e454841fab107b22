//! MXFP4 as ggml stores it (`block_mxfp4`, ggml-common.h): blocks of 32 weights, each an
//! E8M0 exponent byte `e` then 16 bytes of E2M1 codes, two a byte — the low nibbles the
//! block's first 16 weights, the high nibbles its last 16. A code's value is
//! `kvalues_mxfp4[code]` (the E2M1 values doubled, so whole numbers: 0, ±1, ±2, ±3, ±4,
//! ±6, ±8, ±12) times `2^(e − 128)` (`GGML_E8M0_TO_FP32_HALF`, halved to undo the
//! doubling). It is what OpenAI ships gpt-oss's experts in, and what llama-quantize's
//! MXFP4_MOE makes of any model's experts (the rest at Q8_0).
//!
//! Quantized as ggml's `quantize_row_mxfp4_ref` does (ggml-quants.c): the block's
//! exponent `floor(log2(amax)) − 2 + 127` (0 for an all-zero block), each weight the
//! nearest code at that scale, the first of equals; dequantized as
//! `dequantize_row_mxfp4`. Both to the bit (tests/quantizers.rs holds the bytes to
//! ggml's own quantizer).
//!
//! IQ4_NL (`block_iq4_nl`) is the same kind of block: an f16 scale, then 16 bytes of
//! codes indexing `kvalues_iq4nl` (−127 … 113, non-linear). Its matrices share the
//! stored matrix and the product here ([`Lut4`], [`Lut4Matrix`]); quantbench reads and
//! runs IQ4_NL files (llama-quantize's fallback for rows an IQ4_XS block does not fit),
//! and does not make them yet.

use std::sync::Arc;

use anyhow::Result;
use candle_core::{Device, Tensor};

use super::{Family, GgmlType, Part, StoredMatrix, WeightFormat};
use crate::model::nn::Matrix;
use crate::precision::Precision;

/// Weights a block.
pub const QK: usize = 32;
/// Bytes a block: the exponent and 16 bytes of codes.
pub const BLOCK_BYTES: usize = 17;

/// `kvalues_mxfp4` (ggml-common.h): the E2M1 values, doubled.
pub const KVALUES: [i8; 16] = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12];

/// `kvalues_iq4nl` (ggml-common.h).
pub const KVALUES_IQ4NL: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

/// The 32-weight block formats whose 4-bit codes index a table of 16 integers, one scale a
/// block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lut4 {
    /// An E8M0 exponent byte (`2^(e − 128)`), then the codes; table `kvalues_mxfp4`.
    Mxfp4,
    /// An f16 scale, then the codes; table `kvalues_iq4nl`.
    Iq4Nl,
}

impl Lut4 {
    pub fn of(ty: GgmlType) -> Option<Lut4> {
        match ty {
            GgmlType::Mxfp4 => Some(Lut4::Mxfp4),
            GgmlType::Iq4Nl => Some(Lut4::Iq4Nl),
            _ => None,
        }
    }
    /// The kind a kernel's `const NL: bool` names (IQ4_NL when true).
    pub const fn of_nl(nl: bool) -> Lut4 {
        if nl {
            Lut4::Iq4Nl
        } else {
            Lut4::Mxfp4
        }
    }
    pub fn ty(self) -> GgmlType {
        match self {
            Lut4::Mxfp4 => GgmlType::Mxfp4,
            Lut4::Iq4Nl => GgmlType::Iq4Nl,
        }
    }
    /// Bytes a block: the scale's (1 or 2) and 16 of codes.
    pub fn block_bytes(self) -> usize {
        self.scale_bytes() + QK / 2
    }
    pub fn scale_bytes(self) -> usize {
        match self {
            Lut4::Mxfp4 => 1,
            Lut4::Iq4Nl => 2,
        }
    }
    pub fn values(self) -> &'static [i8; 16] {
        match self {
            Lut4::Mxfp4 => &KVALUES,
            Lut4::Iq4Nl => &KVALUES_IQ4NL,
        }
    }
    /// The block's scale, as ggml reads it.
    #[inline(always)]
    pub fn scale(self, blk: &[u8]) -> f32 {
        match self {
            Lut4::Mxfp4 => e8m0_to_fp32_half(blk[0]),
            Lut4::Iq4Nl => half::f16::from_le_bytes([blk[0], blk[1]]).to_f32(),
        }
    }
}

/// `GGML_E8M0_TO_FP32_HALF(e)`: `2^(e − 128)`, built from its bits as ggml-impl.h does
/// (the two smallest exponents as subnormals).
pub fn e8m0_to_fp32_half(e: u8) -> f32 {
    let bits: u32 = if e < 2 {
        0x0020_0000 << e
    } else {
        ((e - 1) as u32) << 23
    };
    f32::from_bits(bits)
}

/// `best_index_mxfp4`: the code whose value at scale `d` is nearest `x`, the first of
/// equals.
pub(crate) fn best_index(x: f32, d: f32) -> u8 {
    let mut best = 0u8;
    let mut best_err = (KVALUES[0] as f32 * d - x).abs();
    for (i, &k) in KVALUES.iter().enumerate().skip(1) {
        let err = (k as f32 * d - x).abs();
        if err < best_err {
            best = i as u8;
            best_err = err;
        }
    }
    best
}

/// `quantize_row_mxfp4_ref` of `x` (a multiple of 32 weights) into `out` (17 bytes a
/// block).
pub fn quantize_row(x: &[f32], out: &mut [u8]) {
    for (xb, yb) in x.chunks_exact(QK).zip(out.chunks_exact_mut(BLOCK_BYTES)) {
        let amax = xb
            .iter()
            .fold(0f32, |m, v| if m < v.abs() { v.abs() } else { m });
        // C's float -> uint8_t conversion, as x86 performs it: through a 32-bit integer.
        let e = if amax > 0.0 {
            (amax.log2().floor() - 2.0 + 127.0) as i32 as u8
        } else {
            0
        };
        let d = e8m0_to_fp32_half(e);
        yb[0] = e;
        for j in 0..QK / 2 {
            yb[1 + j] = best_index(xb[j], d) | (best_index(xb[QK / 2 + j], d) << 4);
        }
    }
}

/// ggml's `best_index_int8`: the index of the table value nearest `x` (a sorted table;
/// the lower of two equally near).
pub(crate) fn best_index_int8(values: &[i8; 16], x: f32) -> u8 {
    if x <= values[0] as f32 {
        return 0;
    }
    if x >= values[15] as f32 {
        return 15;
    }
    let (mut ml, mut mu) = (0usize, 15usize);
    while mu - ml > 1 {
        let mav = (ml + mu) / 2;
        if x < values[mav] as f32 {
            mu = mav;
        } else {
            ml = mav;
        }
    }
    if x - (values[mu - 1] as f32) < (values[mu] as f32) - x {
        (mu - 1) as u8
    } else {
        mu as u8
    }
}

/// IQ4_NL as llama-quantize makes it without an importance matrix: ggml's
/// `quantize_iq4_nl` (`ggml_quants.rs`), 18 bytes a block of 32 into `out`.
pub fn quantize_iq4_nl(x: &[f32], out: &mut [u8]) {
    super::ggml_quants::quantize_iq4_nl(x, out);
}

/// `dequantize_row_mxfp4` / `dequantize_row_iq4_nl`: code value × the block's scale.
pub fn dequantize_lut4(kind: Lut4, blocks: &[u8], out: &mut [f32]) {
    let (bb, at, values) = (kind.block_bytes(), kind.scale_bytes(), kind.values());
    for (b, y) in blocks.chunks_exact(bb).zip(out.chunks_exact_mut(QK)) {
        let d = kind.scale(b);
        for j in 0..QK / 2 {
            let q = b[at + j];
            y[j] = values[(q & 0x0f) as usize] as f32 * d;
            y[j + QK / 2] = values[(q >> 4) as usize] as f32 * d;
        }
    }
}

/// A matrix `[out, in]` in MXFP4 or IQ4_NL: ggml's blocks, row after row.
#[derive(Debug, Clone)]
pub struct Lut4Matrix {
    kind: Lut4,
    out: usize,
    k: usize,
    blocks: Vec<u8>,
}

impl Lut4Matrix {
    /// ggml's bytes of an `[out, k]` matrix of `kind`, as a GGUF file stores them.
    pub fn from_bytes(kind: Lut4, bytes: &[u8], out: usize, k: usize) -> Result<Self> {
        if !k.is_multiple_of(QK) || bytes.len() != out * k / QK * kind.block_bytes() {
            anyhow::bail!(
                "{} bytes are not a {} matrix of {out} rows of {k} (rows of whole 32-weight blocks, {} bytes each)",
                bytes.len(),
                kind.ty(),
                kind.block_bytes()
            );
        }
        Ok(Lut4Matrix {
            kind,
            out,
            k,
            blocks: bytes.to_vec(),
        })
    }

    /// An `[out, k]` f32 matrix quantized to MXFP4 as ggml does.
    pub fn quantize(w: &[f32], out: usize, k: usize) -> Self {
        let mut blocks = vec![0u8; out * k / QK * BLOCK_BYTES];
        quantize_row(w, &mut blocks);
        Lut4Matrix {
            kind: Lut4::Mxfp4,
            out,
            k,
            blocks,
        }
    }

    pub fn kind(&self) -> Lut4 {
        self.kind
    }

    /// The stored blocks.
    pub fn blocks(&self) -> &[u8] {
        &self.blocks
    }

    fn row(&self, r: usize) -> &[u8] {
        let n = self.k / QK * self.kind.block_bytes();
        &self.blocks[r * n..(r + 1) * n]
    }
}

impl StoredMatrix for Lut4Matrix {
    fn format(&self) -> &'static str {
        match self.kind {
            Lut4::Mxfp4 => "mxfp4",
            Lut4::Iq4Nl => "iq4_nl",
        }
    }
    fn shape(&self) -> (usize, usize) {
        (self.out, self.k)
    }
    fn parts(&self) -> Vec<Part> {
        let blocks = self.out * self.k / QK;
        vec![
            Part {
                name: "codes",
                bytes: blocks * (QK / 2),
            },
            Part {
                name: "block_scales",
                bytes: blocks * self.kind.scale_bytes(),
            },
        ]
    }
    /// transformers keeps MXFP4 weights as `_blocks` and `_scales` parameters (uint8):
    /// the same bytes.
    fn transformers_bytes(&self) -> usize {
        self.blocks.len()
    }
    fn dequantize_rows(&self, start: usize, out: &mut [f32]) {
        let k = self.k;
        for (i, o) in out.chunks_exact_mut(k).enumerate() {
            dequantize_lut4(self.kind, self.row(start + i), o);
        }
    }
    /// Each weight row dequantized once (as ggml's blocks give it) and taken against
    /// every activation row: the portable product.
    fn matmul(&self, x: &[f32], m: usize, bias: Option<&[f32]>, y: &mut [f32]) {
        crate::kernel::lut4::matmul(self, x, m, bias, y);
    }
    fn ggml(&self) -> Option<(GgmlType, &[u8])> {
        Some((self.kind.ty(), &self.blocks))
    }
}

/// The `mxfp4` precision: every matrix whose rows divide into 32 in MXFP4 (llama.cpp
/// stores the others in F16, as llama-quantize falls back for a 32-weight type).
#[derive(Debug)]
pub struct Mxfp4Format;

pub static MXFP4: Mxfp4Format = Mxfp4Format;

impl WeightFormat for Mxfp4Format {
    fn name(&self) -> &'static str {
        "mxfp4"
    }
    fn aliases(&self) -> &'static [&'static str] {
        &[]
    }
    fn family(&self) -> Family {
        Family::Ggml
    }
    fn block_size(&self) -> usize {
        QK
    }
    fn block_bytes(&self) -> usize {
        BLOCK_BYTES
    }
    fn fallback(&self) -> Option<Precision> {
        Some(Precision::F16)
    }
    fn store(&self, t: &Tensor, device: &Device) -> Result<Matrix> {
        let (out, k) = t.dims2()?;
        if !device.is_cpu() {
            anyhow::bail!("mxfp4 matrices live on the CPU (quantbench has no GPU kernel for them)");
        }
        let w = t.flatten_all()?.to_vec1::<f32>()?;
        Ok(Matrix::Custom(Arc::new(Lut4Matrix::quantize(&w, out, k))))
    }
    fn ggml_type(&self) -> Option<GgmlType> {
        Some(GgmlType::Mxfp4)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_are_ggmls_half_e8m0() {
        assert_eq!(e8m0_to_fp32_half(128), 1.0);
        assert_eq!(e8m0_to_fp32_half(127), 0.5);
        assert_eq!(e8m0_to_fp32_half(130), 4.0);
        assert_eq!(e8m0_to_fp32_half(1), 2f32.powi(-127));
        assert_eq!(e8m0_to_fp32_half(0), 2f32.powi(-128));
    }

    /// A block of the code values at scale 1 (exponent 128 for amax 12: floor(log2 12)
    /// − 2 + 127 = 128) comes back exactly; values between codes go to the nearer, ties
    /// to the first in the table.
    #[test]
    fn a_block_round_trips_and_rounds_to_the_nearest_code() {
        let mut x = [0f32; 32];
        for (i, v) in x.iter_mut().enumerate() {
            *v = KVALUES[i % 16] as f32;
        }
        x[31] = -12.0;
        let mut q = [0u8; 17];
        quantize_row(&x, &mut q);
        assert_eq!(q[0], 128);
        let mut back = [0f32; 32];
        dequantize_lut4(Lut4::Mxfp4, &q, &mut back);
        assert_eq!(back, x);
        x[0] = 5.0; // between 4 and 6: the first (4)
        x[1] = 5.1;
        x[2] = -0.4;
        quantize_row(&x, &mut q);
        dequantize_lut4(Lut4::Mxfp4, &q, &mut back);
        assert_eq!(&back[..3], &[4.0, 6.0, 0.0]);
        let zero = [0f32; 32];
        quantize_row(&zero, &mut q);
        assert_eq!(q, [0u8; 17]);
    }
}
