//! Weight formats that are not candle's: bitsandbytes' 4-bit NF4 / FP4 (with or without
//! double quantization), bitsandbytes' LLM.int8 and PyTorch's dynamic int8. Each format
//! is one file that quantizes a matrix exactly as its reference library does (the same
//! bytes), counts its bytes by part, dequantizes, and multiplies as the library
//! computes the product. The model sees them through [`StoredMatrix`] only (inside
//! `Matrix::Custom`); quantbench's CPU kernels for them live in `kernel/`.
//!
//! Which reference each file follows, and where the bytes were checked against it:
//! `scripts/make_bnb_reference.py` (bitsandbytes 0.50 and torch 2.15 on the CPU) and
//! `tests/formats.rs`.

pub mod bnb4;
pub mod int8;

use std::fmt::Debug;

pub use bnb4::{Bnb4, Code4};
pub use int8::{DynamicInt8, LlmInt8};

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
