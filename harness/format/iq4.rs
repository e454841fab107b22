//! IQ4_XS and IQ4_NL as types inside llama-quantize's mixes: the formats the own engine
//! stores a matrix in when a mix (`iq4_xs`, `iq4_nl`, or a fallback of an i-quant) puts
//! it there. Quantized by ggml's `quantize_iq4_xs` / `quantize_iq4_nl` (`ggml_quants.rs`,
//! byte for byte, with or without an importance matrix), held as ggml's blocks
//! (`ggml_blocks.rs`'s [`BlockMatrix`] for IQ4_XS, `mxfp4.rs`'s [`Lut4Matrix`] for
//! IQ4_NL) and multiplied by their kernels (`kernel/iq4_xs.rs`, `kernel/lut4.rs`).
//!
//! They are not precisions of their own a scenario names: llama-quantize's IQ4_XS and
//! IQ4_NL are mixes (the output matrix at Q6_K, attn_v and early ffn_down matrices at
//! Q5_K ...), and the names `iq4_xs` / `iq4_nl` are the mixes'
//! ([`crate::format::mix::Mix`]), as llama-quantize names them.

use std::sync::Arc;

use anyhow::Result;
use candle_core::{Device, Tensor};

use super::ggml_blocks::BlockMatrix;
use super::mxfp4::{Lut4, Lut4Matrix};
use super::{Family, GgmlType, WeightFormat};
use crate::model::nn::Matrix;
use crate::precision::Precision;

/// One of the two IQ4 types as a format.
#[derive(Debug)]
pub struct Iq4Format {
    ty: GgmlType,
}

pub static IQ4_XS: Iq4Format = Iq4Format {
    ty: GgmlType::Iq4Xs,
};
pub static IQ4_NL: Iq4Format = Iq4Format {
    ty: GgmlType::Iq4Nl,
};

/// `x` (`[out, k]`, f32) in the type as ggml's quantizer makes it, with the importance
/// matrix `imatrix` (k values) when given.
pub fn quantize(ty: GgmlType, x: &[f32], k: usize, imatrix: Option<&[f32]>) -> Vec<u8> {
    use super::ggml_quants;
    match (ty, imatrix) {
        (_, Some(w)) => ggml_quants::quantize_weighted(ty, x, k, w),
        (GgmlType::Iq4Xs, None) => ggml_quants::quantize_iq4_xs(x),
        (GgmlType::Iq4Nl, None) => {
            let mut out = vec![0u8; x.len() / 32 * 18];
            ggml_quants::quantize_iq4_nl(x, &mut out);
            out
        }
        (other, None) => unreachable!("{other} is not an IQ4 type"),
    }
}

/// The stored matrix of `bytes` of the type.
pub fn matrix(ty: GgmlType, bytes: &[u8], out: usize, k: usize) -> Result<Matrix> {
    Ok(Matrix::Custom(match ty {
        GgmlType::Iq4Nl => Arc::new(Lut4Matrix::from_bytes(Lut4::Iq4Nl, bytes, out, k)?),
        _ => Arc::new(BlockMatrix::from_bytes(ty, bytes, out, k)?),
    }))
}

impl WeightFormat for Iq4Format {
    fn name(&self) -> &'static str {
        match self.ty {
            GgmlType::Iq4Xs => "iq4_xs",
            _ => "iq4_nl",
        }
    }
    fn aliases(&self) -> &'static [&'static str] {
        &[]
    }
    fn family(&self) -> Family {
        Family::Ggml
    }
    fn block_size(&self) -> usize {
        self.ty.block().expect("a block type").0
    }
    fn block_bytes(&self) -> usize {
        self.ty.block().expect("a block type").1
    }
    /// llama-quantize's `tensor_type_fallback`: IQ4_XS to IQ4_NL; IQ4_NL (32 weights a
    /// block) has none of its own (F16 where even 32 does not divide).
    fn fallback(&self) -> Option<Precision> {
        match self.ty {
            GgmlType::Iq4Xs => Some(Precision::Type(GgmlType::Iq4Nl)),
            _ => Some(Precision::F16),
        }
    }
    fn store(&self, t: &Tensor, device: &Device) -> Result<Matrix> {
        let (out, k, w) = super::ggml_blocks::cpu_values(self.ty, t, device)?;
        matrix(self.ty, &quantize(self.ty, &w, k, None), out, k)
    }
    fn store_weighted(&self, t: &Tensor, device: &Device, imatrix: &[f32]) -> Result<Matrix> {
        let (out, k, w) = super::ggml_blocks::cpu_values(self.ty, t, device)?;
        matrix(self.ty, &quantize(self.ty, &w, k, Some(imatrix)), out, k)
    }
    fn ggml_type(&self) -> Option<GgmlType> {
        Some(self.ty)
    }
}
