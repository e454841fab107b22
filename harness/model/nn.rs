//! The layers every architecture is built from: weight matrices in any stored format
//! ([`Matrix`]), float vectors, linear layers with an optional bias, LayerNorm, RMSNorm,
//! the per-sequence KV cache and the causal mask. An architecture file (model/arch/)
//! composes these; only [`Matrix`] touches a storage format.

use std::sync::Arc;

use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{CpuStorage, DType, Device, Module, Tensor};

pub use crate::model::kv::KvCache;

use crate::format::StoredMatrix;
use crate::kernel::repack::Interleaved;
use crate::kernel::{DenseMatmul, QuantMatmul};

/// A weight matrix stored `[out, in]`, as plain floats, as ggml quantized blocks (as
/// stored, or repacked for quantbench's AVX2 kernels: [`Interleaved`]), or in one of
/// quantbench's own formats (harness/format/: bitsandbytes', PyTorch's).
#[derive(Debug, Clone)]
pub enum Matrix {
    Dense(Tensor),
    Quantized(Arc<QTensor>),
    Interleaved(Arc<Interleaved>),
    Custom(Arc<dyn StoredMatrix>),
}

/// `xs @ w^T (+ bias)` for a matrix in a custom format: on the CPU the format's own
/// product (its kernel where the CPU has one); on other devices its weights are
/// dequantized 256 rows at a time onto the device and multiplied there (no device
/// kernel: correct, and as slow as that is).
fn custom_forward(
    w: &dyn StoredMatrix,
    xs: &Tensor,
    bias: Option<&[f32]>,
) -> candle_core::Result<Tensor> {
    let (n, k) = w.shape();
    let dims = xs.dims().to_vec();
    let m = xs.elem_count() / k;
    let mut out_dims = dims.clone();
    *out_dims
        .last_mut()
        .expect("activations have a last dimension") = n;
    let device = xs.device();
    if device.is_cpu() {
        let x = xs.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let mut y = vec![0f32; m * n];
        w.matmul(&x, m, bias, &mut y);
        return Tensor::from_vec(y, out_dims, device);
    }
    const ROWS: usize = 256;
    let x2 = xs.reshape((m, k))?.to_dtype(DType::F32)?;
    let mut pieces = Vec::new();
    for start in (0..n).step_by(ROWS) {
        let rows = ROWS.min(n - start);
        let mut wd = vec![0f32; rows * k];
        w.dequantize_rows(start, &mut wd);
        let wt = Tensor::from_vec(wd, (rows, k), device)?;
        pieces.push(x2.matmul(&wt.t()?)?);
    }
    let mut y = Tensor::cat(&pieces, 1)?;
    if let Some(b) = bias {
        y = y.broadcast_add(&Tensor::from_slice(b, n, device)?)?;
    }
    y.reshape(out_dims)
}

impl Matrix {
    /// The matrix as quantbench's kernels multiply it fastest, for a matrix that is
    /// multiplied (a linear layer's, the LM head, a token table tied to the head): q4_0,
    /// q5_0, q8_0, q4_k and q6_k blocks on an AVX2 CPU repacked into 8-row groups (the same
    /// bytes, [`Interleaved`]); anything else as it is.
    pub fn for_products(self) -> Matrix {
        match &self {
            Matrix::Quantized(q) => Interleaved::from_qtensor(q).map_or(self, Matrix::Interleaved),
            _ => self,
        }
    }

    /// `xs @ self^T`, from f32 activations to f32 activations.
    pub fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Matrix::Custom(w) => custom_forward(w.as_ref(), xs, None),
            Matrix::Interleaved(w) => w.forward(xs, None),
            Matrix::Quantized(q) => match QuantMatmul::for_weights(q) {
                Some(op) => op.forward(xs),
                None => QMatMul::QTensor(q.clone()).forward(xs),
            },
            Matrix::Dense(w) => {
                if let Some(op) = DenseMatmul::for_weights(w) {
                    return op.forward(xs);
                }
                let dims = xs.dims().to_vec();
                let k = *dims.last().expect("activations have a last dimension");
                let rows = xs.elem_count() / k;
                let x2 = xs.reshape((rows, k))?.to_dtype(w.dtype())?;
                let y = x2.matmul(&w.t()?)?.to_dtype(DType::F32)?;
                let mut out = dims;
                *out.last_mut().expect("non-empty") = w.dim(0)?;
                y.reshape(out)
            }
        }
    }

    /// Where the matrix's bytes lie in CPU memory, as (start address, length); None on
    /// other devices and for the bitsandbytes / PyTorch formats. For
    /// [`crate::kernel::pages::huge_page_bytes`].
    pub fn cpu_extent(&self) -> Option<(usize, usize)> {
        match self {
            Matrix::Dense(w) if w.device().is_cpu() => {
                let (storage, layout) = w.storage_and_layout();
                let candle_core::Storage::Cpu(s) = &*storage else {
                    return None;
                };
                let (a, b) = layout.contiguous_offsets()?;
                let extent =
                    |p: *const u8, size: usize| Some((p as usize + a * size, (b - a) * size));
                match s {
                    CpuStorage::F32(v) => extent(v.as_ptr() as *const u8, 4),
                    CpuStorage::F16(v) => extent(v.as_ptr() as *const u8, 2),
                    CpuStorage::BF16(v) => extent(v.as_ptr() as *const u8, 2),
                    _ => None,
                }
            }
            Matrix::Quantized(q) if q.device().is_cpu() => match q.data() {
                Ok(std::borrow::Cow::Borrowed(b)) => Some((b.as_ptr() as usize, b.len())),
                _ => None,
            },
            Matrix::Interleaved(w) => Some((w.raw().as_ptr() as usize, w.raw().len())),
            _ => None,
        }
    }

    /// The rows at `ids` (an embedding lookup), as f32. A quantized table is read row by
    /// row: no dequantized copy of the table is ever made.
    pub fn rows(&self, ids: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            // Read row by row in place (`row_into` never comes back here for these).
            Matrix::Interleaved(_) | Matrix::Custom(_) => {
                let (_, k) = self.shape();
                let ids_v = ids.flatten_all()?.to_vec1::<u32>()?;
                let mut out = vec![0f32; ids_v.len() * k];
                for (i, &id) in ids_v.iter().enumerate() {
                    self.row_into(id as usize, &mut out[i * k..(i + 1) * k])?;
                }
                let mut dims = ids.dims().to_vec();
                dims.push(k);
                Tensor::from_vec(out, dims, ids.device())
            }
            Matrix::Quantized(q) => q.embedding(ids)?.to_dtype(DType::F32),
            Matrix::Dense(w) => {
                let mut out = ids.dims().to_vec();
                out.push(w.dim(1)?);
                w.index_select(&ids.flatten_all()?, 0)?
                    .to_dtype(DType::F32)?
                    .reshape(out)
            }
        }
    }

    /// Row `id` as f32 into `out` (the decode step's embedding lookup): read in place
    /// for the float formats, the 32-element block formats, q4_k and q6_k on the CPU —
    /// the values [`Matrix::rows`] gives, bit for bit — and through [`Matrix::rows`] for
    /// the rest.
    pub fn row_into(&self, id: usize, out: &mut [f32]) -> candle_core::Result<()> {
        use crate::kernel::kquant::QK_K;
        let (n, k) = self.shape();
        if id >= n || out.len() != k {
            candle_core::bail!("row {id} of a {n} x {k} matrix into {} values", out.len());
        }
        match self {
            Matrix::Custom(w) => {
                w.dequantize_rows(id, out);
                return Ok(());
            }
            Matrix::Interleaved(w) => {
                w.row_into(id, out);
                return Ok(());
            }
            Matrix::Quantized(q) if q.device().is_cpu() => {
                if let Some(f) = crate::kernel::blocks::block32_of(q.dtype()) {
                    let bytes = f.block_bytes();
                    let row = k / 32 * bytes;
                    let data = q.data()?;
                    let blocks = data[id * row..(id + 1) * row].chunks_exact(bytes);
                    for (blk, o) in blocks.zip(out.chunks_exact_mut(32)) {
                        let (qs, d, m) = f.decode_block(blk);
                        // As candle's `to_float`: `(q - offset) · d`, or `q · d + m` for
                        // the formats with a minimum (offset 0).
                        let off = f.offset();
                        for (o, &v) in o.iter_mut().zip(&qs) {
                            *o = if off == 0 {
                                v as f32 * d + m
                            } else {
                                (v as i32 - off) as f32 * d
                            };
                        }
                    }
                    return Ok(());
                }
                if let Some(f) = crate::kernel::kquant::kquant_of(q.dtype()) {
                    let bytes = f.block_bytes();
                    let row = k / QK_K * bytes;
                    let data = q.data()?;
                    let blocks = data[id * row..(id + 1) * row].chunks_exact(bytes);
                    for (blk, o) in blocks.zip(out.chunks_exact_mut(QK_K)) {
                        o.copy_from_slice(&f.dequantize_superblock(blk));
                    }
                    return Ok(());
                }
            }
            Matrix::Dense(w) if w.device().is_cpu() && w.is_contiguous() => {
                let (storage, layout) = w.storage_and_layout();
                let candle_core::Storage::Cpu(st) = &*storage else {
                    candle_core::bail!("a CPU tensor without CPU storage");
                };
                let at = layout.start_offset() + id * k;
                match st {
                    CpuStorage::F32(v) => out.copy_from_slice(&v[at..at + k]),
                    CpuStorage::F16(v) => out
                        .iter_mut()
                        .zip(&v[at..at + k])
                        .for_each(|(o, x)| *o = x.to_f32()),
                    CpuStorage::BF16(v) => out
                        .iter_mut()
                        .zip(&v[at..at + k])
                        .for_each(|(o, x)| *o = x.to_f32()),
                    _ => {}
                }
                if matches!(
                    st,
                    CpuStorage::F32(_) | CpuStorage::F16(_) | CpuStorage::BF16(_)
                ) {
                    return Ok(());
                }
            }
            _ => {}
        }
        let ids = Tensor::new(&[id as u32], &self.device())?;
        let row = self.rows(&ids)?.flatten_all()?.to_vec1::<f32>()?;
        out.copy_from_slice(&row);
        Ok(())
    }

    fn device(&self) -> Device {
        match self {
            Matrix::Dense(w) => w.device().clone(),
            Matrix::Quantized(q) => q.device(),
            Matrix::Interleaved(_) | Matrix::Custom(_) => Device::Cpu,
        }
    }

    pub fn shape(&self) -> (usize, usize) {
        let dims = match self {
            Matrix::Dense(w) => w.dims().to_vec(),
            Matrix::Quantized(q) => q.shape().dims().to_vec(),
            Matrix::Interleaved(w) => {
                let (r, c) = w.shape();
                vec![r, c]
            }
            Matrix::Custom(w) => {
                let (r, c) = w.shape();
                vec![r, c]
            }
        };
        (dims[0], dims[1])
    }

    pub fn elements(&self) -> usize {
        let (r, c) = self.shape();
        r * c
    }

    /// Bytes the stored matrix occupies, exactly.
    pub fn bytes(&self) -> usize {
        match self {
            Matrix::Dense(w) => w.elem_count() * w.dtype().size_in_bytes(),
            Matrix::Quantized(q) => q.storage_size_in_bytes(),
            Matrix::Interleaved(w) => w.len_bytes(),
            Matrix::Custom(w) => w.bytes(),
        }
    }

    /// The bytes transformers' `get_memory_footprint()` would count for this matrix:
    /// `None` for ggml blocks, which transformers has no parameter type for.
    pub fn transformers_bytes(&self) -> Option<usize> {
        match self {
            Matrix::Dense(_) => Some(self.bytes()),
            Matrix::Quantized(_) | Matrix::Interleaved(_) => None,
            Matrix::Custom(w) => Some(w.transformers_bytes()),
        }
    }

    /// The storage format's name, as precisions spell it: f32, f16, bf16, q8_0, q4_k
    /// (ggml's type names in lower case), nf4 ...
    pub fn format(&self) -> String {
        match self {
            Matrix::Dense(w) => w.dtype().as_str().to_string(),
            Matrix::Quantized(q) => crate::format::GgmlType::of(q.dtype()).lower(),
            // The same blocks, interleaved: the format's name (environment.kernels says
            // repacked).
            Matrix::Interleaved(w) => w.kind().lower(),
            Matrix::Custom(w) => w.format().to_string(),
        }
    }
}

/// A small float tensor (norm weight or bias) kept in the rest dtype.
#[derive(Debug, Clone)]
pub struct Vector(pub Tensor);

impl Vector {
    pub fn f32(&self) -> candle_core::Result<Tensor> {
        self.0.to_dtype(DType::F32)
    }
    pub fn elements(&self) -> usize {
        self.0.elem_count()
    }
    pub fn bytes(&self) -> usize {
        self.0.elem_count() * self.0.dtype().size_in_bytes()
    }
}

/// A linear layer: a weight [`Matrix`] and an optional bias.
#[derive(Debug, Clone)]
pub struct Linear {
    pub weight: Matrix,
    pub bias: Option<Vector>,
    /// The bias as f32 values, read once at load for quantbench's kernels (which add it
    /// as they write the product), not once per forward pass.
    bias_f32: Option<Arc<Vec<f32>>>,
}

impl Linear {
    pub fn new(weight: Matrix, bias: Option<Vector>) -> candle_core::Result<Linear> {
        // q4_0 / q5_0 / q8_0 / q4_k / q6_k on an AVX2 CPU: repacked for the interleaved
        // kernels, the stored layout dropped (kernel/repack.rs).
        let weight = weight.for_products();
        let bias_f32 = match &bias {
            Some(b) => Some(Arc::new(b.f32()?.to_vec1::<f32>()?)),
            None => None,
        };
        Ok(Linear {
            weight,
            bias,
            bias_f32,
        })
    }

    pub fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let (Some(bias), Some(bias_f32)) = (&self.bias, &self.bias_f32) else {
            return self.weight.forward(xs);
        };
        // quantbench's kernels add the bias as they write the product: one op, not two.
        match &self.weight {
            Matrix::Custom(w) => return custom_forward(w.as_ref(), xs, Some(bias_f32)),
            Matrix::Interleaved(w) => return w.forward(xs, Some(bias_f32)),
            Matrix::Quantized(q) => {
                if let Some(op) = QuantMatmul::for_weights(q) {
                    return op.with_bias(bias_f32.clone())?.forward(xs);
                }
            }
            Matrix::Dense(w) => {
                if let Some(op) = DenseMatmul::for_weights(w) {
                    return op.with_bias(bias_f32.clone())?.forward(xs);
                }
            }
        }
        self.weight.forward(xs)?.broadcast_add(&bias.f32()?)
    }

    /// This layer's product on f32 buffers, where it has one on the CPU: quantbench's
    /// kernel for the weights' format (when active), or a custom format's own. `None`
    /// otherwise (then only [`Linear::forward`] runs it).
    pub fn slice_product(&self) -> Option<SliceProduct<'_>> {
        let bias = self.bias_f32.as_ref();
        Some(match &self.weight {
            Matrix::Custom(w) => SliceProduct::Custom(w.as_ref(), bias.map(|b| b.as_slice())),
            Matrix::Interleaved(w) => SliceProduct::Interleaved(w, bias.map(|b| b.as_slice())),
            Matrix::Quantized(q) => {
                let op = QuantMatmul::for_weights(q)?;
                SliceProduct::Quant(match bias {
                    Some(b) => op.with_bias(b.clone()).ok()?,
                    None => op,
                })
            }
            Matrix::Dense(w) => {
                let op = DenseMatmul::for_weights(w)?;
                SliceProduct::Dense(match bias {
                    Some(b) => op.with_bias(b.clone()).ok()?,
                    None => op,
                })
            }
        })
    }
}

/// A linear layer's product from f32 rows into f32 rows ([`Linear::slice_product`]).
pub enum SliceProduct<'a> {
    Quant(QuantMatmul),
    Dense(DenseMatmul),
    Interleaved(&'a Interleaved, Option<&'a [f32]>),
    Custom(&'a dyn StoredMatrix, Option<&'a [f32]>),
}

impl SliceProduct<'_> {
    /// `out = x @ wᵀ (+ bias)` for `m` rows of `x`; `scratch` holds the rounded
    /// activations between calls.
    pub fn apply(
        &self,
        x: &[f32],
        m: usize,
        out: &mut [f32],
        scratch: &mut crate::kernel::Scratch,
    ) -> candle_core::Result<()> {
        match self {
            SliceProduct::Quant(op) => op.forward_into(x, m, out, scratch),
            SliceProduct::Dense(op) => op.forward_into(x, m, out),
            SliceProduct::Interleaved(w, bias) => {
                let (n, k) = w.shape();
                if x.len() != m * k || out.len() != m * n {
                    candle_core::bail!("a product of {m} x {k} into {m} x {n}: wrong buffers");
                }
                w.matmul_into(x, m, *bias, out, scratch);
                Ok(())
            }
            SliceProduct::Custom(w, bias) => {
                let (n, k) = w.shape();
                if x.len() != m * k || out.len() != m * n {
                    candle_core::bail!("a product of {m} x {k} into {m} x {n}: wrong buffers");
                }
                w.matmul(x, m, *bias, out);
                Ok(())
            }
        }
    }
}

/// LayerNorm with weight and bias (GPT-2).
#[derive(Debug, Clone)]
pub struct LayerNorm {
    pub weight: Vector,
    pub bias: Vector,
    eps: f32,
    /// Weight and bias as f32 values, read once at load for the decode step.
    values: Arc<(Vec<f32>, Vec<f32>)>,
}

impl LayerNorm {
    pub fn new(weight: Vector, bias: Vector, eps: f64) -> candle_core::Result<Self> {
        let values = Arc::new((weight.f32()?.to_vec1()?, bias.f32()?.to_vec1()?));
        Ok(LayerNorm {
            weight,
            bias,
            eps: eps as f32,
            values,
        })
    }

    pub fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        candle_nn::ops::layer_norm(xs, &self.weight.f32()?, &self.bias.f32()?, self.eps)
    }

    /// The norm of each row of `x` into `out` (rows of the weight's length), with
    /// candle's arithmetic (`candle_nn::ops::layer_norm` on the CPU), so both paths give
    /// the same values.
    pub fn forward_rows(&self, x: &[f32], out: &mut [f32]) {
        let (alpha, beta) = (&self.values.0, &self.values.1);
        let dim = alpha.len();
        for (src, dst) in x.chunks_exact(dim).zip(out.chunks_exact_mut(dim)) {
            let mut sum = 0f32;
            let mut sum2 = 0f32;
            for &v in src {
                sum += v;
                sum2 += v * v;
            }
            let mean = sum / dim as f32;
            let var = sum2 / dim as f32 - mean * mean;
            let inv_std = (var + self.eps).sqrt().recip();
            for ((d, &s), (&a, &b)) in dst.iter_mut().zip(src).zip(alpha.iter().zip(beta)) {
                *d = (s - mean) * inv_std * a + b;
            }
        }
    }
}

/// RMSNorm over the last dimension (the Llama architectures): `x / sqrt(mean(x^2) + eps) * w`,
/// computed in f32 as transformers' `LlamaRMSNorm` does.
#[derive(Debug, Clone)]
pub struct RmsNorm {
    pub weight: Vector,
    weight_f32: Tensor,
    eps: f32,
    /// The weight as f32 values, read once at load for the decode step.
    values: Arc<Vec<f32>>,
}

impl RmsNorm {
    pub fn new(weight: Vector, eps: f64) -> candle_core::Result<Self> {
        Self::with_offset(weight, eps, 0.0)
    }

    /// A norm that multiplies by `offset + w` (Gemma's `x·(1 + w)`, added in f32 as
    /// transformers' `Gemma3RMSNorm` does); `weight` stays as stored, for the accounting.
    pub fn with_offset(weight: Vector, eps: f64, offset: f32) -> candle_core::Result<Self> {
        let weight_f32 = weight.f32()?;
        let weight_f32 = if offset != 0.0 {
            (weight_f32 + offset as f64)?
        } else {
            weight_f32
        };
        let values = Arc::new(weight_f32.to_vec1()?);
        Ok(RmsNorm {
            weight,
            weight_f32,
            eps: eps as f32,
            values,
        })
    }

    pub fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        candle_nn::ops::rms_norm(&xs.contiguous()?, &self.weight_f32, self.eps)
    }

    /// The norm of each row of `x` (rows of the weight's length) into `out`, with
    /// candle's arithmetic (`candle_nn::ops::rms_norm` on the CPU).
    pub fn forward_rows(&self, x: &[f32], out: &mut [f32]) {
        let alpha = &self.values;
        let dim = alpha.len();
        for (src, dst) in x.chunks_exact(dim).zip(out.chunks_exact_mut(dim)) {
            let sum2 = src.iter().map(|&v| v * v).sum::<f32>();
            let m = (sum2 / dim as f32 + self.eps).sqrt();
            for ((d, &s), &a) in dst.iter_mut().zip(src).zip(alpha.iter()) {
                *d = s / m * a;
            }
        }
    }

    /// [`RmsNorm::forward_rows`] in place.
    pub fn forward_rows_in_place(&self, x: &mut [f32]) {
        let alpha = &self.values;
        let dim = alpha.len();
        for row in x.chunks_exact_mut(dim) {
            let sum2 = row.iter().map(|&v| v * v).sum::<f32>();
            let m = (sum2 / dim as f32 + self.eps).sqrt();
            for (d, &a) in row.iter_mut().zip(alpha.iter()) {
                *d = *d / m * a;
            }
        }
    }
}

/// The per-sequence state of generation: one key/value cache per layer, and the
/// buffers of the CPU decode step ([`crate::model::step`]), made at its first step and
/// reused by every later one.
pub struct Cache {
    pub(crate) layers: Vec<KvCache>,
    pub(crate) position: usize,
    pub(crate) step: Option<Box<dyn std::any::Any + Send + Sync>>,
}

impl Cache {
    /// A cache for a model's layers with room for `capacity` positions, allocated on the
    /// first step.
    pub fn new(config: &crate::model::ModelConfig, capacity: usize) -> Self {
        Cache {
            layers: config
                .layer_windows()
                .into_iter()
                .map(|w| KvCache::windowed(capacity.max(1), w))
                .collect(),
            position: 0,
            step: None,
        }
    }

    /// A cache whose every layer keeps every position (no sliding layer drops any): what
    /// the cache was before windows evicted, for the tests that hold the two equal.
    pub fn unbounded(config: &crate::model::ModelConfig, capacity: usize) -> Self {
        Cache {
            layers: (0..config.n_layer())
                .map(|_| KvCache::new(capacity.max(1)))
                .collect(),
            position: 0,
            step: None,
        }
    }

    /// The bytes the layers' buffers hold now (keys and values).
    pub fn allocated_bytes(&self) -> usize {
        self.layers
            .iter()
            .filter_map(|l| l.buffers())
            .map(|(k, v)| (k.elem_count() + v.elem_count()) * k.dtype().size_in_bytes())
            .sum()
    }

    /// Whether [`Cache::prefix_for_batch`] can give the first `positions` positions:
    /// every sliding layer still holds the last `window - 1` of them.
    pub fn can_prefix(&self, positions: usize) -> bool {
        positions <= self.position
            && self.layers.iter().all(|l| {
                let keep = match l.window() {
                    Some(w) => positions.min(w.saturating_sub(1)),
                    None => positions,
                };
                positions - keep >= l.dropped()
            })
    }

    /// How many positions the cache holds.
    pub fn position(&self) -> usize {
        self.position
    }

    /// A new cache for `batch` sequences that each hold this cache's first `positions`
    /// positions of sequence 0 (copied), with room for `capacity` positions. The
    /// workload tests fill a context once per variant and start every test from a copy.
    pub fn prefix_for_batch(
        &self,
        config: &crate::model::ModelConfig,
        positions: usize,
        batch: usize,
        capacity: usize,
    ) -> candle_core::Result<Cache> {
        let mut out = Cache::new(config, capacity);
        if positions == 0 {
            return Ok(out);
        }
        if positions > self.position {
            candle_core::bail!(
                "a prefix of {positions} positions from a cache of {}",
                self.position
            );
        }
        if !self.can_prefix(positions) {
            candle_core::bail!(
                "a prefix of {positions} positions from a cache whose sliding-window layers dropped them (use Cache::can_prefix first)"
            );
        }
        for (src, dst) in self.layers.iter().zip(out.layers.iter_mut()) {
            let (Some(k), Some(v)) = (src.k()?, src.v()?) else {
                candle_core::bail!("the cache holds no keys or values");
            };
            // A sliding layer needs only what the next query sees: the last window - 1.
            let keep = match src.window() {
                Some(w) => positions.min(w.saturating_sub(1)),
                None => positions,
            };
            let from = positions - keep - src.dropped();
            let take = |t: &Tensor| -> candle_core::Result<Tensor> {
                let one = t.narrow(0, 0, 1)?.narrow(2, from, keep)?;
                Tensor::cat(&vec![&one; batch], 0)?.contiguous()
            };
            if keep > 0 {
                dst.append(&take(&k)?, &take(&v)?)?;
            }
            dst.set_dropped(positions - keep);
        }
        out.position = positions;
        Ok(out)
    }

    /// A cache that starts where this one stands and writes into the same buffers: what
    /// the fork appends lands at positions this cache does not hold yet, so the
    /// positions it does hold are never touched, and the next fork starts from them
    /// again. The workload tests fill a context once (`depth`) and fork it for every
    /// repetition. Appending to this cache itself while a fork lives would overwrite
    /// the fork's positions: don't. Needs the buffers allocated (one step run) and room
    /// for everything the fork will append (the capacity given to [`Cache::new`]).
    pub fn fork(&self) -> Cache {
        Cache {
            layers: self.layers.clone(),
            position: self.position,
            step: None,
        }
    }
}

/// What a pass's causal mask depends on besides its length: the layer's window and the
/// positions its cache held before the pass.
pub type MaskKey = (Option<usize>, usize);

/// Additive mask `[len, start + len]`: query i (at position start + i) sees key j when
/// j <= start + i and, with a sliding `window`, when start + i - j < window.
pub fn causal_mask(
    len: usize,
    start: usize,
    window: Option<usize>,
    device: &Device,
) -> candle_core::Result<Tensor> {
    let total = start + len;
    let mask: Vec<f32> = (0..len)
        .flat_map(|i| {
            (0..total).map(move |j| {
                let pos = start + i;
                let visible = j <= pos && window.is_none_or(|w| pos - j < w);
                if visible {
                    0.0
                } else {
                    f32::NEG_INFINITY
                }
            })
        })
        .collect();
    Tensor::from_vec(mask, (len, total), device)
}

/// Which group of the weight accounting a stored tensor belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// Token and position embeddings, untied LM head.
    Embeddings,
    /// The projections of every block.
    Linear,
    /// Norm weights and biases, linear biases.
    NormsBiases,
}

/// One stored tensor of a loaded model, for the weight accounting.
pub enum Part<'a> {
    Matrix(&'a Matrix),
    Vector(&'a Vector),
}

impl Part<'_> {
    pub fn elements(&self) -> usize {
        match self {
            Part::Matrix(m) => m.elements(),
            Part::Vector(v) => v.elements(),
        }
    }
    pub fn bytes(&self) -> usize {
        match self {
            Part::Matrix(m) => m.bytes(),
            Part::Vector(v) => v.bytes(),
        }
    }
}

/// A linear layer's weight and bias as parts: the bias counts with norms and biases.
pub fn linear_parts(l: &Linear) -> impl Iterator<Item = (Group, Part<'_>)> {
    std::iter::once((Group::Linear, Part::Matrix(&l.weight)))
        .chain(l.bias.iter().map(|b| (Group::NormsBiases, Part::Vector(b))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causal_mask_hides_the_future() {
        let m = causal_mask(2, 1, None, &Device::Cpu)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(m[0][..2], [0.0, 0.0]);
        assert!(m[0][2].is_infinite());
        assert_eq!(m[1], vec![0.0, 0.0, 0.0]);
    }

    #[test]
    fn a_sliding_window_hides_the_distant_past() {
        // 4 queries at positions 2..6 with a window of 2: each sees itself and one before.
        let m = causal_mask(4, 2, Some(2), &Device::Cpu)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        for (i, row) in m.iter().enumerate() {
            let pos = 2 + i;
            for (j, &v) in row.iter().enumerate() {
                let visible = j <= pos && pos - j < 2;
                assert_eq!(v == 0.0, visible, "query {pos} key {j}");
            }
        }
    }

    fn values(n: usize, seed: f32) -> Vec<f32> {
        (0..n)
            .map(|i| ((i as f32 + seed) * 0.731).sin() * 2.0)
            .collect()
    }

    /// The decode step's norms give candle's values bit for bit.
    #[test]
    fn row_norms_equal_candles() {
        let dev = Device::Cpu;
        let (rows, dim) = (3, 96);
        let x = values(rows * dim, 1.0);
        let xt = Tensor::from_vec(x.clone(), (rows, dim), &dev).unwrap();
        let vector = |seed| Vector(Tensor::from_vec(values(dim, seed), dim, &dev).unwrap());
        let ln = LayerNorm::new(vector(2.0), vector(3.0), 1e-5).unwrap();
        let want = ln
            .forward(&xt)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let mut got = vec![0f32; rows * dim];
        ln.forward_rows(&x, &mut got);
        assert_eq!(got, want);
        let rms = RmsNorm::new(vector(4.0), 1e-6).unwrap();
        let want = rms
            .forward(&xt)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        rms.forward_rows(&x, &mut got);
        assert_eq!(got, want);
        let mut inplace = x.clone();
        rms.forward_rows_in_place(&mut inplace);
        assert_eq!(inplace, want);
    }

    /// One row read in place equals the embedding lookup, for every storage the loader
    /// makes on the CPU (floats, the 32-element formats, the k-quants, and one that goes
    /// through the lookup itself).
    #[test]
    fn rows_read_in_place_equal_the_lookup() {
        use candle_core::quantized::GgmlDType;
        let dev = Device::Cpu;
        let (n, k) = (5, 512);
        let w = Tensor::from_vec(values(n * k, 5.0), (n, k), &dev).unwrap();
        let mut matrices = vec![
            Matrix::Dense(w.clone()),
            Matrix::Dense(w.to_dtype(DType::F16).unwrap()),
            Matrix::Dense(w.to_dtype(DType::BF16).unwrap()),
        ];
        for dt in [
            GgmlDType::Q4_0,
            GgmlDType::Q4_1,
            GgmlDType::Q5_0,
            GgmlDType::Q5_1,
            GgmlDType::Q8_0,
            GgmlDType::Q4K,
            GgmlDType::Q6K,
            GgmlDType::Q3K,
        ] {
            matrices.push(Matrix::Quantized(Arc::new(
                QTensor::quantize(&w, dt).unwrap(),
            )));
        }
        for m in &matrices {
            for id in [0, 3, 4] {
                let ids = Tensor::new(&[id as u32], &dev).unwrap();
                let want = m
                    .rows(&ids)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap();
                let mut got = vec![0f32; k];
                m.row_into(id, &mut got).unwrap();
                assert_eq!(got, want, "{} row {id}", m.format());
            }
        }
        let mut short = vec![0f32; k - 1];
        assert!(matrices[0].row_into(0, &mut short).is_err());
        assert!(matrices[0].row_into(n, &mut vec![0f32; k]).is_err());
    }

    /// A q4_0, q5_0, q8_0, q4_k or q6_k linear layer on an AVX2 CPU is stored interleaved: its products (with a
    /// bias, on tensors and on buffers) equal candle's on the stored blocks, its rows
    /// equal candle's lookup, and the stored bytes come back exactly (GGUF export).
    #[test]
    fn interleaved_layers_compute_what_the_stored_blocks_do() {
        for dt in [
            candle_core::quantized::GgmlDType::Q4_0,
            candle_core::quantized::GgmlDType::Q5_0,
            candle_core::quantized::GgmlDType::Q8_0,
            candle_core::quantized::GgmlDType::Q4K,
            candle_core::quantized::GgmlDType::Q6K,
        ] {
            interleaved_layer_computes_what_the_stored_blocks_do(dt);
        }
    }

    fn interleaved_layer_computes_what_the_stored_blocks_do(dt: candle_core::quantized::GgmlDType) {
        // 27 rows: 3 groups of 8, then 3 rows as stored (an LM head's 50,257 likewise).
        interleaved_matrix_computes_what_the_stored_blocks_do(dt, 24);
        interleaved_matrix_computes_what_the_stored_blocks_do(dt, 27);
    }

    fn interleaved_matrix_computes_what_the_stored_blocks_do(
        dt: candle_core::quantized::GgmlDType,
        n: usize,
    ) {
        let dev = Device::Cpu;
        let k = 256;
        let w = Tensor::from_vec(values(n * k, 9.0), (n, k), &dev).unwrap();
        let q = Arc::new(QTensor::quantize(&w, dt).unwrap());
        let bias = Vector(Tensor::from_vec(values(n, 4.0), n, &dev).unwrap());
        let l = Linear::new(Matrix::Quantized(q.clone()), Some(bias.clone())).unwrap();
        let expect_interleaved = crate::kernel::active() == crate::kernel::Kernels::Quantbench
            && crate::kernel::avx2_supported();
        assert_eq!(
            matches!(l.weight, Matrix::Interleaved(_)),
            expect_interleaved,
            "{dt:?}: {}",
            crate::kernel::describe()
        );
        assert_eq!(l.weight.format(), crate::format::GgmlType::of(dt).lower());
        assert_eq!(l.weight.bytes(), q.storage_size_in_bytes());
        let (bytes, dtype) = crate::model::write::gguf::matrix_bytes(&l.weight).unwrap();
        assert_eq!(
            (bytes.as_slice(), dtype),
            (&q.data().unwrap()[..], crate::format::GgmlType::of(dt))
        );
        for m in [1, 5] {
            let x = Tensor::from_vec(values(m * k, m as f32), (m, k), &dev).unwrap();
            let want = QMatMul::QTensor(q.clone())
                .forward(&x)
                .unwrap()
                .broadcast_add(&bias.0)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let got = l
                .forward(&x)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let mut buf = vec![0f32; m * n];
            let xs = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            l.slice_product()
                .unwrap()
                .apply(&xs, m, &mut buf, &mut Default::default())
                .unwrap();
            for (i, ((a, b), c)) in got.iter().zip(&buf).zip(&want).enumerate() {
                assert!(
                    (a - c).abs() <= 1e-4 * c.abs().max(1.0),
                    "{m} rows [{i}]: {a} vs {c}"
                );
                assert!(
                    (b - c).abs() <= 1e-4 * c.abs().max(1.0),
                    "{m} rows [{i}]: {b} vs {c}"
                );
            }
        }
        // Without a bias, as an LM head: the same product.
        let head = Matrix::Quantized(q.clone()).for_products();
        assert_eq!(matches!(head, Matrix::Interleaved(_)), expect_interleaved);
        let x = Tensor::from_vec(values(2 * k, 3.0), (2, k), &dev).unwrap();
        let flat = |t: Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let want = flat(QMatMul::QTensor(q.clone()).forward(&x).unwrap());
        let got = flat(head.forward(&x).unwrap());
        for (i, (a, c)) in got.iter().zip(&want).enumerate() {
            assert!(
                (a - c).abs() <= 1e-4 * c.abs().max(1.0),
                "{dt:?} {n} rows, no bias [{i}]: {a} vs {c}"
            );
        }
        let stored = Matrix::Quantized(q);
        for id in [0, 7, 23, n - 1] {
            let ids = Tensor::new(&[id as u32], &dev).unwrap();
            let want = stored
                .rows(&ids)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let got = l
                .weight
                .rows(&ids)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            assert_eq!(got, want, "row {id}");
        }
    }
}
