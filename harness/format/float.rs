//! Plain floats: f32, f16 and bf16 weights, stored as candle tensors of that dtype and
//! multiplied by quantbench's dense kernels (widened to f32 as they are read) or by
//! candle's.

use anyhow::Result;
use candle_core::{DType, Device, Tensor};

use super::ggml::GgmlType;
use super::{Family, WeightFormat};
use crate::model::nn::Matrix;
use crate::precision::RestDtype;

/// A precision that keeps every weight as a float of `dtype`.
#[derive(Debug)]
pub struct FloatFormat {
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    pub dtype: DType,
    pub ty: GgmlType,
    pub file_type: u32,
}

impl WeightFormat for FloatFormat {
    fn name(&self) -> &'static str {
        self.name
    }
    fn aliases(&self) -> &'static [&'static str] {
        self.aliases
    }
    fn family(&self) -> Family {
        Family::Float
    }
    fn block_size(&self) -> usize {
        1
    }
    fn block_bytes(&self) -> usize {
        self.dtype.size_in_bytes()
    }
    /// f16 for f16 (a `model.half()` is f16 throughout), f32 otherwise.
    fn default_rest(&self) -> RestDtype {
        if self.dtype == DType::F16 {
            RestDtype::F16
        } else {
            RestDtype::F32
        }
    }
    fn store(&self, t: &Tensor, device: &Device) -> Result<Matrix> {
        Ok(Matrix::Dense(t.to_dtype(self.dtype)?.to_device(device)?))
    }
    fn ggml_type(&self) -> Option<GgmlType> {
        Some(self.ty)
    }
    fn file_type(&self) -> Option<u32> {
        Some(self.file_type)
    }
}

pub static F32: FloatFormat = FloatFormat {
    name: "f32",
    aliases: &["fp32", "float32"],
    dtype: DType::F32,
    ty: GgmlType::F32,
    file_type: 0,
};
pub static F16: FloatFormat = FloatFormat {
    name: "f16",
    aliases: &["fp16", "float16", "half"],
    dtype: DType::F16,
    ty: GgmlType::F16,
    file_type: 1,
};
pub static BF16: FloatFormat = FloatFormat {
    name: "bf16",
    aliases: &["bfloat16"],
    dtype: DType::BF16,
    ty: GgmlType::Bf16,
    file_type: 32,
};
