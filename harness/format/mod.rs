//! Every way quantbench stores a weight matrix, one file per kind of format, each
//! behind [`WeightFormat`]: its names and aliases, its family, its exact bytes (one
//! account, planned before loading and reported after), which rows it fits and where it
//! falls back, how it stores a matrix (quantized exactly as its reference library does)
//! and what that matrix's product is, and its GGUF type. `precision.rs` lists the
//! precisions and delegates here (docs/adding-a-format.md).
//!
//! - `float.rs`: f32, f16, bf16.
//! - `ggml.rs`: ggml's types, one enum for all of them ([`GgmlType`]), and its block
//!   formats (q8_0 ... q2_k).
//! - `bnb4.rs`: bitsandbytes' NF4 / FP4, with or without double quantization;
//!   `int8.rs`: bitsandbytes' LLM.int8 and PyTorch's dynamic int8. These quantize a
//!   matrix exactly as their library does (the same bytes), count their bytes by part,
//!   dequantize, and multiply as the library computes the product; the model sees them
//!   through [`StoredMatrix`] (inside `Matrix::Custom`), and quantbench's CPU kernels
//!   for them live in `kernel/`. Which reference each follows, and where the bytes were
//!   checked against it: `scripts/make_bnb_reference.py` (bitsandbytes 0.50 and torch
//!   2.15 on the CPU) and `tests/formats.rs`.
//! - `ggml_quants.rs`: ggml's reference quantizers where candle's differ from them
//!   (q2_k, q3_k, q4_k, q5_k, q6_k, q4_1, q5_1: candle's are an older ggml's, or round
//!   otherwise in corner cases), used wherever quantbench makes those blocks.
//! - `mxfp4.rs`: ggml's MXFP4 (gpt-oss's experts), which candle does not hold: the
//!   quantizer and dequantization as ggml's, its matrix behind [`StoredMatrix`].
//! - `ggml_blocks.rs`: the rest of ggml's block types (the i-quants, the ternary types,
//!   NVFP4, Q1_0, Q2_0), read and dequantized as ggml does (its grids in
//!   `ggml_tables.rs`, generated from ggml-common.h) and multiplied through their
//!   dequantized rows.
//! - `ggml_iquants.rs`: ggml's grid-search quantizers of IQ3_XXS, IQ3_S, IQ2_XXS,
//!   IQ2_XS, IQ2_S, IQ1_S and IQ1_M (their lattices' neighbour lists built as ggml's
//!   init functions build them), byte for byte.
//! - `imatrix.rs`: an importance matrix (llama-imatrix's GGUF or .dat), read as
//!   llama-quantize reads it, for both engines' quantizers.
//! - `iq4.rs`: IQ4_XS and IQ4_NL as the types llama-quantize's mixes put matrices in
//!   (quantized as ggml does, with or without an importance matrix).
//! - `mix_plan.rs`: llama-quantize's choice of a type for every tensor at one of its file
//!   types (its mixes), ported for the types quantbench holds.
//! - `mix.rs`: llama-quantize's file types that are none of the above (its mixes such as
//!   q4_k_m, its i-quants): names only; an engine that can make them makes them.

pub mod bnb4;
pub mod float;
pub mod ggml;
pub mod ggml_blocks;
pub mod ggml_iquants;
pub mod ggml_quants;
#[rustfmt::skip]
pub mod ggml_tables;
pub mod imatrix;
pub mod int8;
pub mod iq4;
pub mod mix;
pub mod mix_plan;
pub mod mxfp4;

use std::fmt::Debug;

use anyhow::Result;
use candle_core::{Device, Tensor};

pub use bnb4::{Bnb4, Code4};
pub use ggml::GgmlType;
pub use int8::{DynamicInt8, LlmInt8};

use crate::model::nn::Matrix;
use crate::precision::{Precision, RestDtype};

/// Whose format a precision is, for reports and charts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Float,
    Ggml,
    Bitsandbytes,
    PyTorch,
    File,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::Float => "float",
            Family::Ggml => "ggml",
            Family::Bitsandbytes => "bitsandbytes",
            Family::PyTorch => "pytorch",
            Family::File => "file",
        }
    }
}

/// One way of storing a weight matrix: what a precision is made of.
pub trait WeightFormat: Sync + Debug {
    /// The canonical name, as scenarios and results write the precision.
    fn name(&self) -> &'static str;
    /// Other names accepted for it.
    fn aliases(&self) -> &'static [&'static str];
    fn family(&self) -> Family;
    /// Elements per block (1 for floats and the row- or tensor-scaled formats).
    fn block_size(&self) -> usize;
    /// Bytes per block (for the formats with per-matrix parts, what the block itself
    /// takes: [`WeightFormat::matrix_bytes`] is exact).
    fn block_bytes(&self) -> usize;
    /// Nominal bits per weight of the format itself.
    fn bits_per_weight(&self) -> f64 {
        self.block_bytes() as f64 * 8.0 / self.block_size() as f64
    }
    /// Exact bytes of an `[out, row_len]` matrix in this format (its rows must fit):
    /// the one account, before loading and of the loaded matrix.
    fn matrix_bytes(&self, out: usize, row_len: usize) -> usize {
        out * row_len / self.block_size() * self.block_bytes()
    }
    /// Whether rows of `row_len` elements can be stored and multiplied in it.
    fn fits_row_len(&self, row_len: usize) -> bool {
        row_len.is_multiple_of(self.block_size())
    }
    /// llama.cpp's fallback for rows that do not fit.
    fn fallback(&self) -> Option<Precision> {
        None
    }
    /// Whether an embedding table (and a tied LM head) can be stored in it.
    fn holds_embeddings(&self) -> bool {
        true
    }
    /// The dtype the weights it does not apply to take when a scenario does not say.
    fn default_rest(&self) -> RestDtype {
        RestDtype::F32
    }
    /// Store an `[out, in]` matrix (f32 on the CPU) in it on `device`.
    fn store(&self, t: &Tensor, device: &Device) -> Result<Matrix>;
    /// [`WeightFormat::store`] with an importance matrix's values for the matrix's
    /// columns, used as ggml's quantizer uses them; formats whose quantizer takes none
    /// (floats, q8_0, mxfp4, the libraries' formats) store as without.
    fn store_weighted(&self, t: &Tensor, device: &Device, _imatrix: &[f32]) -> Result<Matrix> {
        self.store(t, device)
    }
    /// Its ggml type, where GGUF has one.
    fn ggml_type(&self) -> Option<GgmlType> {
        None
    }
    /// llama.cpp's `general.file_type` for a model made uniformly in it.
    fn file_type(&self) -> Option<u32> {
        None
    }
}

/// One stored part of a matrix: its codes, block scales, second-level scales, row
/// scales ... and its exact bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    pub name: &'static str,
    pub bytes: usize,
}

/// A weight matrix `[out, in]` in one of these formats.
pub trait StoredMatrix: Send + Sync + Debug {
    /// The format's canonical name (a precision name: nf4, fp4_dq, llm_int8 ...).
    fn format(&self) -> &'static str;
    /// (out, in).
    fn shape(&self) -> (usize, usize);
    /// Every stored part with its exact bytes.
    fn parts(&self) -> Vec<Part>;
    /// Exact bytes held.
    fn bytes(&self) -> usize {
        self.parts().iter().map(|p| p.bytes).sum()
    }
    /// The bytes transformers' `get_memory_footprint()` counts for this matrix: its
    /// parameters only (bitsandbytes' scales live in a quant state that is neither a
    /// parameter nor a buffer, PyTorch's packed dynamic weights likewise).
    fn transformers_bytes(&self) -> usize;
    /// Rows `start .. start + out.len() / in` as f32, exactly as the reference library
    /// dequantizes them.
    fn dequantize_rows(&self, start: usize, out: &mut [f32]);
    /// `y = x · Wᵀ (+ bias)` for `x` of `m` rows, computed as the reference library
    /// computes it (see each format), with quantbench's kernel where this CPU has one.
    fn matmul(&self, x: &[f32], m: usize, bias: Option<&[f32]>, y: &mut [f32]);
    /// Its type and bytes as a GGUF file stores them, for a ggml type of quantbench's
    /// own (MXFP4); `None` for a library's format that GGUF has no type for.
    fn ggml(&self) -> Option<(GgmlType, &[u8])> {
        None
    }
}

/// `y = x · Wᵀ (+ bias)` through dequantized rows, 64 rows at a time: the portable
/// product every format can use (the 4-bit formats' definition; on other devices the
/// model runs the same dequantization a block of rows at a time).
pub fn matmul_by_rows(
    w: &dyn StoredMatrix,
    x: &[f32],
    m: usize,
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    let (n, k) = w.shape();
    assert_eq!(x.len(), m * k, "activations are not {m} x {k}");
    assert_eq!(y.len(), m * n, "output is not {m} x {n}");
    by_row_chunks(n, m, 64, y, |start, rows, part| {
        let mut wd = vec![0f32; rows * k];
        w.dequantize_rows(start, &mut wd);
        for t in 0..m {
            let xr = &x[t * k..(t + 1) * k];
            for r in 0..rows {
                let b = bias.map_or(0.0, |b| b[start + r]);
                part[t * rows + r] = dot(xr, &wd[r * k..(r + 1) * k]) + b;
            }
        }
    });
}

/// Computes an `m × n` output (`y`, row-major) in chunks of `chunk` output columns (weight
/// rows) on rayon's pool: `f(start, rows, part)` fills `part` (`m × rows`, row-major) for
/// weight rows `start .. start + rows`; the parts are then copied into place. The one
/// way every product here splits its work.
pub fn by_row_chunks(
    n: usize,
    m: usize,
    chunk: usize,
    y: &mut [f32],
    f: impl Fn(usize, usize, &mut [f32]) + Sync,
) {
    use rayon::prelude::*;
    assert_eq!(y.len(), m * n, "output is not {m} x {n}");
    let parts: Vec<(usize, Vec<f32>)> = (0..n)
        .step_by(chunk)
        .collect::<Vec<_>>()
        .into_par_iter()
        .map(|start| {
            let rows = chunk.min(n - start);
            let mut part = vec![0f32; m * rows];
            f(start, rows, &mut part);
            (start, part)
        })
        .collect();
    for (start, part) in parts {
        let rows = chunk.min(n - start);
        for t in 0..m {
            y[t * n + start..t * n + start + rows].copy_from_slice(&part[t * rows..(t + 1) * rows]);
        }
    }
}

/// A dot product in f32 with 8 independent partial sums (vectorizes; the order differs
/// from a BLAS's, within rounding).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = a.len() / 8;
    for c in 0..chunks {
        for l in 0..8 {
            acc[l] += a[c * 8 + l] * b[c * 8 + l];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for i in chunks * 8..a.len() {
        s += a[i] * b[i];
    }
    s
}
