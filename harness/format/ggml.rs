//! ggml's tensor types, one enum for all of them ([`GgmlType`], by ggml.h's ids), and the
//! precisions quantbench makes in ggml's block formats ([`BlockFormat`]): quantized as
//! ggml's reference quantizers do (candle's for q4_0, q5_0 and q8_0, which are ggml's;
//! `ggml_quants.rs` for the rest), counted in the format's block bytes,
//! multiplied by quantbench's kernels where this CPU has one (`kernel/`) and by candle's
//! otherwise, and written to GGUF under the type's id.

use std::sync::Arc;

use anyhow::Result;
use candle_core::quantized::{GgmlDType, QStorage, QTensor};
use candle_core::{Device, Tensor};

use super::{Family, WeightFormat};
use crate::model::nn::Matrix;
use crate::precision::Precision;

/// Every ggml tensor type (ggml.h's `enum ggml_type`), its discriminant the type's id as
/// GGUF stores it. The retired ids (4, 5, 31-33, 36-38) are not types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum GgmlType {
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q4_1 = 3,
    Q5_0 = 6,
    Q5_1 = 7,
    Q8_0 = 8,
    Q8_1 = 9,
    Q2K = 10,
    Q3K = 11,
    Q4K = 12,
    Q5K = 13,
    Q6K = 14,
    Q8K = 15,
    Iq2Xxs = 16,
    Iq2Xs = 17,
    Iq3Xxs = 18,
    Iq1S = 19,
    Iq4Nl = 20,
    Iq3S = 21,
    Iq2S = 22,
    Iq4Xs = 23,
    I8 = 24,
    I16 = 25,
    I32 = 26,
    I64 = 27,
    F64 = 28,
    Iq1M = 29,
    Bf16 = 30,
    Tq1_0 = 34,
    Tq2_0 = 35,
    Mxfp4 = 39,
    Nvfp4 = 40,
    Q1_0 = 41,
    Q2_0 = 42,
}

impl GgmlType {
    pub const ALL: [GgmlType; 35] = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q8_1,
        GgmlType::Q2K,
        GgmlType::Q3K,
        GgmlType::Q4K,
        GgmlType::Q5K,
        GgmlType::Q6K,
        GgmlType::Q8K,
        GgmlType::Iq2Xxs,
        GgmlType::Iq2Xs,
        GgmlType::Iq3Xxs,
        GgmlType::Iq1S,
        GgmlType::Iq4Nl,
        GgmlType::Iq3S,
        GgmlType::Iq2S,
        GgmlType::Iq4Xs,
        GgmlType::I8,
        GgmlType::I16,
        GgmlType::I32,
        GgmlType::I64,
        GgmlType::F64,
        GgmlType::Iq1M,
        GgmlType::Bf16,
        GgmlType::Tq1_0,
        GgmlType::Tq2_0,
        GgmlType::Mxfp4,
        GgmlType::Nvfp4,
        GgmlType::Q1_0,
        GgmlType::Q2_0,
    ];

    /// The type of a GGUF type id, if ggml has one.
    pub fn from_id(id: u32) -> Option<GgmlType> {
        GgmlType::ALL.iter().copied().find(|t| t.id() == id)
    }

    /// The type whose id (`t as u8`, a kernel's const parameter) is `id`; `F32` for an
    /// id that is none.
    pub const fn from_u8(id: u8) -> GgmlType {
        match id {
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            6 => GgmlType::Q5_0,
            7 => GgmlType::Q5_1,
            8 => GgmlType::Q8_0,
            12 => GgmlType::Q4K,
            14 => GgmlType::Q6K,
            30 => GgmlType::Bf16,
            _ => GgmlType::F32,
        }
    }

    /// The id GGUF stores.
    pub const fn id(self) -> u32 {
        self as u32
    }

    /// ggml's name (`ggml_type_name`): "Q4_K", "IQ4_XS", "BF16".
    pub fn name(self) -> &'static str {
        match self {
            GgmlType::F32 => "F32",
            GgmlType::F16 => "F16",
            GgmlType::Q4_0 => "Q4_0",
            GgmlType::Q4_1 => "Q4_1",
            GgmlType::Q5_0 => "Q5_0",
            GgmlType::Q5_1 => "Q5_1",
            GgmlType::Q8_0 => "Q8_0",
            GgmlType::Q8_1 => "Q8_1",
            GgmlType::Q2K => "Q2_K",
            GgmlType::Q3K => "Q3_K",
            GgmlType::Q4K => "Q4_K",
            GgmlType::Q5K => "Q5_K",
            GgmlType::Q6K => "Q6_K",
            GgmlType::Q8K => "Q8_K",
            GgmlType::Iq2Xxs => "IQ2_XXS",
            GgmlType::Iq2Xs => "IQ2_XS",
            GgmlType::Iq3Xxs => "IQ3_XXS",
            GgmlType::Iq1S => "IQ1_S",
            GgmlType::Iq4Nl => "IQ4_NL",
            GgmlType::Iq3S => "IQ3_S",
            GgmlType::Iq2S => "IQ2_S",
            GgmlType::Iq4Xs => "IQ4_XS",
            GgmlType::I8 => "I8",
            GgmlType::I16 => "I16",
            GgmlType::I32 => "I32",
            GgmlType::I64 => "I64",
            GgmlType::F64 => "F64",
            GgmlType::Iq1M => "IQ1_M",
            GgmlType::Bf16 => "BF16",
            GgmlType::Tq1_0 => "TQ1_0",
            GgmlType::Tq2_0 => "TQ2_0",
            GgmlType::Mxfp4 => "MXFP4",
            GgmlType::Nvfp4 => "NVFP4",
            GgmlType::Q1_0 => "Q1_0",
            GgmlType::Q2_0 => "Q2_0",
        }
    }

    /// How quantbench names the type in records and precisions: ggml's name in lower
    /// case ("q4_k", "f32"), the one spelling everywhere.
    pub fn lower(self) -> String {
        self.name().to_ascii_lowercase()
    }

    /// candle's dtype for the type, where candle reads it (and so quantbench's own
    /// engine runs it).
    pub fn candle(self) -> Option<GgmlDType> {
        Some(match self {
            GgmlType::F32 => GgmlDType::F32,
            GgmlType::F16 => GgmlDType::F16,
            GgmlType::Bf16 => GgmlDType::BF16,
            GgmlType::Q4_0 => GgmlDType::Q4_0,
            GgmlType::Q4_1 => GgmlDType::Q4_1,
            GgmlType::Q5_0 => GgmlDType::Q5_0,
            GgmlType::Q5_1 => GgmlDType::Q5_1,
            GgmlType::Q8_0 => GgmlDType::Q8_0,
            GgmlType::Q8_1 => GgmlDType::Q8_1,
            GgmlType::Q2K => GgmlDType::Q2K,
            GgmlType::Q3K => GgmlDType::Q3K,
            GgmlType::Q4K => GgmlDType::Q4K,
            GgmlType::Q5K => GgmlDType::Q5K,
            GgmlType::Q6K => GgmlDType::Q6K,
            GgmlType::Q8K => GgmlDType::Q8K,
            _ => return None,
        })
    }

    /// The type of a candle dtype (every candle dtype is a ggml type).
    pub fn of(dtype: GgmlDType) -> GgmlType {
        GgmlType::ALL
            .iter()
            .copied()
            .find(|t| t.candle() == Some(dtype))
            .expect("every candle dtype is a ggml type")
    }

    /// (weights a block, bytes a block) of the types quantbench's own engine reads:
    /// candle's, those with a kernel of quantbench's own (MXFP4, IQ4_NL) and those it
    /// runs by dequantization (`ggml_blocks.rs`); `None` for the rest (the integer and
    /// f64 types, which no weight matrix takes).
    pub fn block(self) -> Option<(usize, usize)> {
        if let Some(d) = self.candle() {
            return Some((d.block_size(), d.type_size()));
        }
        match self {
            GgmlType::Mxfp4 | GgmlType::Iq4Nl => {
                let kind = super::mxfp4::Lut4::of(self).expect("a table format");
                Some((super::mxfp4::QK, kind.block_bytes()))
            }
            _ => super::ggml_blocks::block(self),
        }
    }

    /// The types quantbench's own engine reads, by ggml's names, for messages.
    pub fn readable_names() -> String {
        GgmlType::ALL
            .iter()
            .filter(|t| t.block().is_some() && !matches!(t, GgmlType::Q8_1 | GgmlType::Q8K))
            .map(|t| t.name())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Whether the type is a plain float (F32, F16, BF16).
    pub fn is_float(self) -> bool {
        matches!(self, GgmlType::F32 | GgmlType::F16 | GgmlType::Bf16)
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A precision quantbench makes in one of ggml's block formats.
#[derive(Debug)]
pub struct BlockFormat {
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    pub ty: GgmlType,
    /// llama.cpp's fallback for rows that do not divide into the blocks.
    pub fallback: Option<Precision>,
    /// candle's q4_1 / q5_0 / q5_1 kernels (as ggml's) take an even number of blocks.
    pub even_blocks: bool,
    /// llama.cpp's `general.file_type` for a model made uniformly in it (the k-quants
    /// as their _S mixes, which are the uniform ones).
    pub file_type: u32,
}

impl BlockFormat {
    fn dtype(&self) -> GgmlDType {
        self.ty
            .candle()
            .expect("quantbench makes only types candle reads")
    }
}

impl WeightFormat for BlockFormat {
    fn name(&self) -> &'static str {
        self.name
    }
    fn aliases(&self) -> &'static [&'static str] {
        self.aliases
    }
    fn family(&self) -> Family {
        Family::Ggml
    }
    fn block_size(&self) -> usize {
        self.dtype().block_size()
    }
    fn block_bytes(&self) -> usize {
        self.dtype().type_size()
    }
    fn fits_row_len(&self, row_len: usize) -> bool {
        let bs = self.block_size();
        row_len.is_multiple_of(bs) && (!self.even_blocks || (row_len / bs).is_multiple_of(2))
    }
    fn fallback(&self) -> Option<Precision> {
        self.fallback
    }
    /// Quantized on the CPU by ggml's quantizer (`weights::quantize_rows`), then moved to
    /// `device` as those very blocks.
    fn store(&self, t: &Tensor, device: &Device) -> Result<Matrix> {
        let q = crate::model::source::weights::quantize_rows(t, self.dtype())?;
        if device.is_cpu() {
            return Ok(Matrix::Quantized(Arc::new(q)));
        }
        let storage = QStorage::from_data(q.data()?, device, self.dtype())?;
        Ok(Matrix::Quantized(Arc::new(QTensor::new(
            storage,
            q.shape().clone(),
        )?)))
    }
    /// With an importance matrix: ggml's `quantize_<type>` with `quant_weights`
    /// (`ggml_quants::quantize_weighted`), row slices on every core; q8_0 takes none.
    fn store_weighted(&self, t: &Tensor, device: &Device, imatrix: &[f32]) -> Result<Matrix> {
        if !super::ggml_quants::takes_importance(self.ty) {
            return self.store(t, device);
        }
        let (rows, cols) = t.dims2()?;
        if imatrix.len() != cols {
            anyhow::bail!("{} importance values for rows of {cols}", imatrix.len());
        }
        let v = t.flatten_all()?.to_vec1::<f32>()?;
        let bytes = crate::model::source::weights::par_rows(&v, rows, cols, |x| {
            super::ggml_quants::quantize_weighted(self.ty, x, cols, imatrix)
        });
        let storage = QStorage::from_data(std::borrow::Cow::Owned(bytes), device, self.dtype())?;
        Ok(Matrix::Quantized(Arc::new(QTensor::new(
            storage,
            (rows, cols),
        )?)))
    }
    fn ggml_type(&self) -> Option<GgmlType> {
        Some(self.ty)
    }
    fn file_type(&self) -> Option<u32> {
        Some(self.file_type)
    }
}

pub static Q8_0: BlockFormat = BlockFormat {
    name: "q8_0",
    aliases: &["int8", "q8"],
    ty: GgmlType::Q8_0,
    fallback: None,
    even_blocks: false,
    file_type: 7,
};
pub static Q6K: BlockFormat = BlockFormat {
    name: "q6_k",
    aliases: &["q6k"],
    ty: GgmlType::Q6K,
    fallback: Some(Precision::Q8_0),
    even_blocks: false,
    file_type: 18,
};
pub static Q5_1: BlockFormat = BlockFormat {
    name: "q5_1",
    aliases: &[],
    ty: GgmlType::Q5_1,
    fallback: None,
    even_blocks: true,
    file_type: 9,
};
pub static Q5_0: BlockFormat = BlockFormat {
    name: "q5_0",
    aliases: &[],
    ty: GgmlType::Q5_0,
    fallback: None,
    even_blocks: true,
    file_type: 8,
};
pub static Q5K: BlockFormat = BlockFormat {
    name: "q5_k",
    aliases: &["q5k"],
    ty: GgmlType::Q5K,
    fallback: Some(Precision::Q5_1),
    even_blocks: false,
    file_type: 16,
};
pub static Q4_1: BlockFormat = BlockFormat {
    name: "q4_1",
    aliases: &[],
    ty: GgmlType::Q4_1,
    fallback: None,
    even_blocks: true,
    file_type: 3,
};
pub static Q4_0: BlockFormat = BlockFormat {
    name: "q4_0",
    aliases: &["int4", "q4"],
    ty: GgmlType::Q4_0,
    fallback: None,
    even_blocks: false,
    file_type: 2,
};
pub static Q4K: BlockFormat = BlockFormat {
    name: "q4_k",
    aliases: &["q4k"],
    ty: GgmlType::Q4K,
    fallback: Some(Precision::Q5_0),
    even_blocks: false,
    file_type: 14,
};
pub static Q3K: BlockFormat = BlockFormat {
    name: "q3_k",
    aliases: &["q3k"],
    ty: GgmlType::Q3K,
    fallback: Some(Precision::Q4_0),
    even_blocks: false,
    file_type: 11,
};
pub static Q2K: BlockFormat = BlockFormat {
    name: "q2_k",
    aliases: &["q2k"],
    ty: GgmlType::Q2K,
    fallback: Some(Precision::Q4_0),
    even_blocks: false,
    file_type: 10,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_names_and_candle_dtypes_agree() {
        for t in GgmlType::ALL {
            assert_eq!(GgmlType::from_id(t.id()), Some(t));
            if let Some(d) = t.candle() {
                assert_eq!(GgmlType::of(d), t);
            }
        }
        assert_eq!(GgmlType::from_id(4), None, "retired");
        assert_eq!(GgmlType::Iq4Xs.name(), "IQ4_XS");
        assert_eq!(GgmlType::Q4K.lower(), "q4_k");
        for id in [2u8, 3, 6, 7, 8, 12, 14] {
            assert_eq!(GgmlType::from_u8(id) as u8, id);
        }
    }
}
