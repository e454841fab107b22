//! The two int8 formats the notebook's companions ran: bitsandbytes' LLM.int8 and
//! PyTorch's dynamic int8 (`torch.ao.quantization.quantize_dynamic`, fbgemm).
//!
//! **LLM.int8** (`bnb.nn.Linear8bitLt`, `has_fp16_weights=False`, threshold 6.0), as
//! bitsandbytes 0.50 computes it on the CPU:
//! - weights: cast to f16; per output row `SCB = max|w|` (f32) and `CB = round(w ×
//!   (127 / SCB))` to int8, round half to even, `127 / SCB` computed as PyTorch does a
//!   number over a tensor (`(1 / SCB) × 127`, which can differ from a true division
//!   by an ulp, and so move a code on a rounding tie);
//! - activations, per call: cast to f16; elements with `|a| >= 6.0` are outliers; per
//!   token `SCA = max|a|` over the other elements, `CA = round(a × 127 / SCA)`; with
//!   more than one token, every column holding an outlier in any token is zeroed in `CA`;
//! - `y = (CA·CBᵀ as i32) × (SCA × SCB) × 6.200124e-05 + bias`, plus, for the outlier
//!   columns, the activations as they came (f32 here) times the int8-dequantized weights
//!   `CB × SCB × 7.874015718698502e-3`. (bitsandbytes sums the int8 products in f32 on a
//!   CPU without AVX-512, which rounds once a sum passes 2^24; quantbench sums in i32,
//!   exactly.)
//!
//! **Dynamic int8** (`quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)`):
//! - weights: symmetric qint8, `scale = max(|min|, |max|) / 127.5` (at least f32's
//!   epsilon), `q = clamp(round(w × (1 / scale)), -128, 127)`, one scale per matrix
//!   (`default_weight_observer`), or one per output row with
//!   `per_channel_dynamic_qconfig` (precision `dynamic_int8_pc`);
//! - activations, per call: the whole input's min and max (widened to include 0) give
//!   an asymmetric uint8 scale and zero point over [0, 127] (`reduce_range=True`), chosen
//!   as fbgemm's `ChooseQuantizationParams` does; `qa = clamp(zp + round(a / scale))`;
//! - `y = a_scale × w_scale × (Σ qa·qw − zp × Σ qw) + bias`, the row sums `Σ qw` kept
//!   with the weights (fbgemm's col_offsets).

use half::f16;

use std::sync::Arc;

use anyhow::Result;
use candle_core::{DType, Device, Tensor};

use super::{Family, Part, StoredMatrix, WeightFormat};
use crate::model::nn::Matrix;
use crate::precision::RestDtype;

/// LLM.int8's outlier threshold (transformers' `llm_int8_threshold` default).
pub const THRESHOLD: f32 = 6.0;

/// Round half to even, as `torch.round` and `nearbyint` do.
#[inline]
fn round_even(v: f32) -> f32 {
    v.round_ties_even()
}

/// `127.0 / am` as PyTorch computes a number over a tensor (`Tensor.__rtruediv__`:
/// the reciprocal, then the product), which can differ from a true division by an ulp.
#[inline]
fn rdiv127(am: f32) -> f32 {
    (1.0 / am) * 127.0
}

/// A matrix in LLM.int8.
#[derive(Debug, Clone)]
pub struct LlmInt8 {
    pub out: usize,
    pub k: usize,
    /// Row-major int8 weights.
    pub cb: Vec<i8>,
    /// One f32 absmax per output row.
    pub scb: Vec<f32>,
}

impl LlmInt8 {
    /// Quantize as `Int8Params._quantize` does.
    pub fn quantize(w: &[f32], out: usize, k: usize) -> LlmInt8 {
        assert_eq!(w.len(), out * k, "weights are not {out} x {k}");
        let mut cb = vec![0i8; out * k];
        let mut scb = vec![0f32; out];
        for r in 0..out {
            let row: Vec<f32> = w[r * k..(r + 1) * k]
                .iter()
                .map(|&v| f16::from_f32(v).to_f32())
                .collect();
            let am = row.iter().fold(0f32, |m, v| m.max(v.abs()));
            scb[r] = am;
            let s = rdiv127(am);
            for (q, v) in cb[r * k..(r + 1) * k].iter_mut().zip(&row) {
                *q = if am == 0.0 {
                    0
                } else {
                    round_even(v * s) as i8
                };
            }
        }
        LlmInt8 { out, k, cb, scb }
    }

    /// The activations quantized as `int8_vectorwise_quant(x.half(), threshold=6.0)`:
    /// codes, per-token scales and the outlier columns.
    pub fn quantize_activations(x: &[f32], m: usize, k: usize) -> (Vec<i8>, Vec<f32>, Vec<usize>) {
        let h: Vec<f32> = x.iter().map(|&v| f16::from_f32(v).to_f32()).collect();
        let outlier = |v: f32| v.abs() >= THRESHOLD;
        let mut cols = vec![false; k];
        for t in 0..m {
            for c in 0..k {
                if outlier(h[t * k + c]) {
                    cols[c] = true;
                }
            }
        }
        let mut ca = vec![0i8; m * k];
        let mut sca = vec![0f32; m];
        for t in 0..m {
            let row = &h[t * k..(t + 1) * k];
            let am = row
                .iter()
                .filter(|v| !outlier(**v))
                .fold(0f32, |a, v| a.max(v.abs()));
            sca[t] = am;
            if am == 0.0 {
                continue;
            }
            let s = rdiv127(am);
            for c in 0..k {
                let v = row[c];
                if outlier(v) || (m > 1 && cols[c]) {
                    continue;
                }
                ca[t * k + c] = round_even(v * s) as i8;
            }
        }
        let outlier_cols = (0..k).filter(|&c| cols[c]).collect();
        (ca, sca, outlier_cols)
    }

    /// The portable product: i32 sums, then bitsandbytes' dequantization and the
    /// outlier columns in f32.
    pub fn reference_matmul(&self, x: &[f32], m: usize, bias: Option<&[f32]>, y: &mut [f32]) {
        let (ca, sca, cols) = Self::quantize_activations(x, m, self.k);
        let a16: Vec<i16> = ca.iter().map(|&v| v as i16).collect();
        crate::kernel::int8::products(
            &self.cb,
            self.out,
            self.k,
            &a16,
            m,
            y,
            false,
            |acc, t, r| self.finish(acc, sca[t], r, bias),
        );
        self.add_outliers(x, m, &cols, y);
    }

    /// `acc × (SCA × SCB) × 6.200124e-05 + bias`.
    #[inline]
    pub fn finish(&self, acc: i32, sca: f32, r: usize, bias: Option<&[f32]>) -> f32 {
        let v = acc as f32 * (sca * self.scb[r]) * 6.200124e-05;
        match bias {
            Some(b) => v + b[r],
            None => v,
        }
    }

    /// Adds the outlier columns' products: activations as given, weights dequantized.
    pub fn add_outliers(&self, x: &[f32], m: usize, cols: &[usize], y: &mut [f32]) {
        if cols.is_empty() {
            return;
        }
        let k = self.k;
        for r in 0..self.out {
            let wd: Vec<f32> = cols
                .iter()
                .map(|&c| self.cb[r * k + c] as f32 * self.scb[r] * 7.874_016e-3)
                .collect();
            for t in 0..m {
                let s: f32 = cols.iter().zip(&wd).map(|(&c, &w)| x[t * k + c] * w).sum();
                y[t * self.out + r] += s;
            }
        }
    }
}

impl StoredMatrix for LlmInt8 {
    fn format(&self) -> &'static str {
        "llm_int8"
    }
    fn shape(&self) -> (usize, usize) {
        (self.out, self.k)
    }
    fn parts(&self) -> Vec<Part> {
        let parts = llm_int8_part_bytes(self.out, self.k);
        debug_assert_eq!(
            parts.iter().map(|p| p.bytes).sum::<usize>(),
            self.cb.len() + 4 * self.scb.len(),
            "bytes as planned"
        );
        parts
    }
    fn transformers_bytes(&self) -> usize {
        // Int8Params: the int8 tensor; SCB is an attribute, not a parameter.
        self.cb.len()
    }
    fn dequantize_rows(&self, start: usize, out: &mut [f32]) {
        let k = self.k;
        for (i, o) in out.iter_mut().enumerate() {
            let r = start + i / k;
            *o = self.cb[start * k + i] as f32 * self.scb[r] * 7.874_016e-3;
        }
    }
    fn matmul(&self, x: &[f32], m: usize, bias: Option<&[f32]>, y: &mut [f32]) {
        crate::kernel::int8::llm_int8(self, x, m, bias, y);
    }
}

/// A matrix in PyTorch's dynamic int8.
#[derive(Debug, Clone)]
pub struct DynamicInt8 {
    pub out: usize,
    pub k: usize,
    /// Row-major int8 weights.
    pub q: Vec<i8>,
    /// One scale (per tensor) or one per output row (per channel).
    pub scales: Vec<f32>,
    /// Σ q over each row (fbgemm's col_offsets), for the activations' zero point.
    pub row_sums: Vec<i32>,
    per_channel: bool,
}

/// Activation quantization parameters for one call (fbgemm's `ChooseQuantizationParams`
/// over [0, 127]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ActParams {
    pub scale: f32,
    pub zero_point: i32,
}

impl ActParams {
    /// From the input's min and max, as `ChooseQuantizationParams(min, max, 0, 255,
    /// preserve_sparsity=false, force_scale_power_of_two=false, reduce_range=true)`.
    pub fn choose(min: f32, max: f32) -> ActParams {
        const SMALL_SCALE: f64 = 6.1e-5;
        let (qmin, qmax) = (0f64, 127f64);
        let mut min = min.min(0.0) as f64;
        let mut max = max.max(0.0) as f64;
        let mut scale = (max - min) / (qmax - qmin);
        if scale as f32 == 0.0 || (1.0 / scale as f32).is_infinite() {
            scale = 0.1;
        }
        if scale < SMALL_SCALE {
            let org = scale;
            scale = SMALL_SCALE;
            if min == 0.0 {
                max = scale * (qmax - qmin);
            } else if max == 0.0 {
                min = -scale * (qmax - qmin);
            } else {
                let amplifier = SMALL_SCALE / org;
                min *= amplifier;
                max *= amplifier;
            }
        }
        let zp_min = qmin - min / scale;
        let zp_max = qmax - max / scale;
        let err_min = qmin.abs() - (min / scale).abs();
        let err_max = qmax.abs() - (max / scale).abs();
        let initial = if err_min < err_max { zp_min } else { zp_max };
        let zero_point = if initial < qmin {
            qmin
        } else if initial > qmax {
            qmax
        } else {
            initial.round_ties_even()
        } as i32;
        ActParams {
            scale: scale as f32,
            zero_point,
        }
    }

    /// `clamp(zp + round(a × (1 / scale)), 0, 255)`.
    pub fn quantize(&self, x: &[f32]) -> Vec<u8> {
        let inv = 1.0 / self.scale;
        x.iter()
            .map(|&v| (self.zero_point as f32 + round_even(v * inv)).clamp(0.0, 255.0) as u8)
            .collect()
    }

    /// The params for a whole input.
    pub fn of(x: &[f32]) -> ActParams {
        let (mn, mx) = x
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
                (a.min(v), b.max(v))
            });
        if x.is_empty() {
            return ActParams::choose(0.0, 0.0);
        }
        ActParams::choose(mn, mx)
    }
}

impl DynamicInt8 {
    /// Quantize as `quantize_dynamic` does: one scale for the matrix, or (`per_channel`)
    /// one per output row.
    pub fn quantize(w: &[f32], out: usize, k: usize, per_channel: bool) -> DynamicInt8 {
        assert_eq!(w.len(), out * k, "weights are not {out} x {k}");
        let scale_of = |vals: &[f32]| {
            let (mn, mx) = vals
                .iter()
                .fold((0f32, 0f32), |(a, b), &v| (a.min(v), b.max(v)));
            ((-mn).max(mx) / 127.5).max(f32::EPSILON)
        };
        let scales: Vec<f32> = if per_channel {
            (0..out).map(|r| scale_of(&w[r * k..(r + 1) * k])).collect()
        } else {
            vec![scale_of(w)]
        };
        let mut q = vec![0i8; out * k];
        for r in 0..out {
            let s = scales[if per_channel { r } else { 0 }];
            let inv = 1.0 / s;
            for c in 0..k {
                q[r * k + c] = round_even(w[r * k + c] * inv).clamp(-128.0, 127.0) as i8;
            }
        }
        let row_sums = (0..out)
            .map(|r| q[r * k..(r + 1) * k].iter().map(|&v| v as i32).sum())
            .collect();
        DynamicInt8 {
            out,
            k,
            q,
            scales,
            row_sums,
            per_channel,
        }
    }

    pub fn per_channel(&self) -> bool {
        self.per_channel
    }

    /// The weight scale of row `r`.
    #[inline]
    pub fn scale(&self, r: usize) -> f32 {
        if !self.per_channel {
            self.scales[0]
        } else {
            self.scales[r]
        }
    }

    /// `a_scale × w_scale × (acc − zp × Σqw) + bias`.
    #[inline]
    pub fn finish(&self, acc: i32, a: ActParams, r: usize, bias: Option<&[f32]>) -> f32 {
        let raw = acc - a.zero_point * self.row_sums[r];
        let v = raw as f32 * a.scale * self.scale(r);
        match bias {
            Some(b) => v + b[r],
            None => v,
        }
    }

    /// The portable product (i32 sums).
    pub fn reference_matmul(&self, x: &[f32], m: usize, bias: Option<&[f32]>, y: &mut [f32]) {
        let a = ActParams::of(x);
        let a16: Vec<i16> = a.quantize(x).iter().map(|&v| v as i16).collect();
        crate::kernel::int8::products(&self.q, self.out, self.k, &a16, m, y, false, |acc, _, r| {
            self.finish(acc, a, r, bias)
        });
    }
}

impl StoredMatrix for DynamicInt8 {
    fn format(&self) -> &'static str {
        if self.per_channel {
            "dynamic_int8_pc"
        } else {
            "dynamic_int8"
        }
    }
    fn shape(&self) -> (usize, usize) {
        (self.out, self.k)
    }
    fn parts(&self) -> Vec<Part> {
        let parts = dynamic_int8_part_bytes(self.out, self.k, self.per_channel);
        debug_assert_eq!(
            parts.iter().map(|p| p.bytes).sum::<usize>(),
            self.q.len() + 4 * (self.scales.len() + self.row_sums.len()),
            "bytes as planned"
        );
        parts
    }
    fn transformers_bytes(&self) -> usize {
        // The packed weight is no parameter of the dynamic Linear: nothing is counted.
        0
    }
    fn dequantize_rows(&self, start: usize, out: &mut [f32]) {
        let k = self.k;
        for (i, o) in out.iter_mut().enumerate() {
            *o = self.q[start * k + i] as f32 * self.scale(start + i / k);
        }
    }
    fn matmul(&self, x: &[f32], m: usize, bias: Option<&[f32]>, y: &mut [f32]) {
        crate::kernel::int8::dynamic_int8(self, x, m, bias, y);
    }
}

/// LLM.int8's exact bytes by part, the one account of them (planned and reported): the
/// int8 weights and one f32 scale per row.
pub fn llm_int8_part_bytes(out: usize, k: usize) -> Vec<Part> {
    vec![
        Part {
            name: "codes",
            bytes: out * k,
        },
        Part {
            name: "row_scales",
            bytes: 4 * out,
        },
    ]
}

/// PyTorch's dynamic int8's exact bytes by part (planned and reported): the int8
/// weights, one f32 scale per row or one for the matrix, and fbgemm's per-row sums.
pub fn dynamic_int8_part_bytes(out: usize, k: usize, per_channel: bool) -> Vec<Part> {
    vec![
        Part {
            name: "codes",
            bytes: out * k,
        },
        Part {
            name: if per_channel {
                "row_scales"
            } else {
                "tensor_scale"
            },
            bytes: if per_channel { 4 * out } else { 4 },
        },
        Part {
            name: "row_sums",
            bytes: 4 * out,
        },
    ]
}

/// bitsandbytes' LLM.int8 and PyTorch's dynamic int8 as precisions.
#[derive(Debug)]
pub struct Int8Format {
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    /// `None`: LLM.int8; `Some(per_channel)`: PyTorch's dynamic int8.
    pub dynamic: Option<bool>,
}

impl WeightFormat for Int8Format {
    fn name(&self) -> &'static str {
        self.name
    }
    fn aliases(&self) -> &'static [&'static str] {
        self.aliases
    }
    fn family(&self) -> Family {
        match self.dynamic {
            None => Family::Bitsandbytes,
            Some(_) => Family::PyTorch,
        }
    }
    /// Row and tensor scales are per matrix (see `matrix_bytes`).
    fn block_size(&self) -> usize {
        1
    }
    fn block_bytes(&self) -> usize {
        1
    }
    fn matrix_bytes(&self, out: usize, row_len: usize) -> usize {
        let parts = match self.dynamic {
            None => llm_int8_part_bytes(out, row_len),
            Some(pc) => dynamic_int8_part_bytes(out, row_len, pc),
        };
        parts.iter().map(|p| p.bytes).sum()
    }
    fn fits_row_len(&self, _row_len: usize) -> bool {
        true
    }
    /// Both replace linear layers only.
    fn holds_embeddings(&self) -> bool {
        false
    }
    fn default_rest(&self) -> RestDtype {
        match self.dynamic {
            None => RestDtype::F16,
            Some(_) => RestDtype::F32,
        }
    }
    fn store(&self, t: &Tensor, _device: &Device) -> Result<Matrix> {
        let (rows, cols) = t.dims2()?;
        let w = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        Ok(Matrix::Custom(match self.dynamic {
            None => Arc::new(LlmInt8::quantize(&w, rows, cols)),
            Some(per_channel) => Arc::new(DynamicInt8::quantize(&w, rows, cols, per_channel)),
        }))
    }
}

pub static LLM_INT8: Int8Format = Int8Format {
    name: "llm_int8",
    aliases: &["llm.int8", "bnb-int8", "bnb-8bit"],
    dynamic: None,
};
pub static DYNAMIC_INT8: Int8Format = Int8Format {
    name: "dynamic_int8",
    aliases: &["torch-dynamic-int8", "qint8"],
    dynamic: Some(false),
};
pub static DYNAMIC_INT8_PC: Int8Format = Int8Format {
    name: "dynamic_int8_pc",
    aliases: &["dynamic_int8_per_channel"],
    dynamic: Some(true),
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activation_params_cover_the_range_with_zero() {
        let p = ActParams::choose(-1.0, 3.0);
        assert!((p.scale - 4.0 / 127.0).abs() < 1e-7);
        // zero maps to the zero point exactly
        assert_eq!(p.quantize(&[0.0])[0] as i32, p.zero_point);
        assert_eq!(p.quantize(&[3.0])[0], 127);
        assert_eq!(p.quantize(&[-1.0])[0], 0);
        // all-zero input: scale 0.1
        assert_eq!(ActParams::choose(0.0, 0.0).scale, 0.1);
    }

    #[test]
    fn llm_int8_outlier_columns_go_around_the_int8_product() {
        // One weight row of ones; a token with an outlier at column 1.
        let w = vec![1.0f32; 4];
        let q = LlmInt8::quantize(&w, 1, 4);
        assert_eq!(q.cb, vec![127; 4]);
        let x = [0.5f32, 8.0, -0.25, 0.0];
        let mut y = [0f32];
        q.reference_matmul(&x, 1, None, &mut y);
        // 8.0 through the f32 path; 0.5 - 0.25 through int8 with the token scale 0.5:
        // codes 127 and round(-63.5) = -64, so (127·127 − 64·127) · 0.5 · 6.200124e-05
        let int8_part = (127 * 127 - 64 * 127) as f32 * 0.5 * 6.200124e-05;
        assert_eq!(y[0], int8_part + 8.0, "{}", y[0]);
    }
}
