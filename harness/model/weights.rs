//! Where a GPT-2's float weights come from (safetensors in either Hugging Face layout,
//! or a seeded generator), and how they are stored once a precision is chosen.
//!
//! Tensors are named canonically, as in the hub's gpt2 files: `wte.weight`,
//! `h.0.attn.c_attn.weight`, `ln_f.bias` ... with Conv1D weights shaped `[in, out]`.

use std::collections::HashMap;
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use candle_core::quantized::{GgmlDType, QStorage, QTensor};
use candle_core::{DType, Device, Tensor};
use memmap2::Mmap;
use rayon::prelude::*;
use safetensors::tensor::Metadata;
use safetensors::SafeTensors;
use serde::Serialize;

use crate::error::InputError;
use crate::model::gpt2::{Block, Config, LayerNorm, Linear, Matrix, Vector, Weights};
use crate::precision::{Policy, Precision, Quantization, Storage};

/// A provider of f32 tensors by canonical name, each checked against its expected shape.
pub trait TensorSource {
    /// f32 tensor on the CPU with exactly `shape`; an error names the tensor, the file
    /// and both shapes when they differ.
    fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor>;
    /// Whether the source holds a tensor of that canonical name.
    fn has(&self, name: &str) -> bool;
}

/// The canonical tensor names of a config and their shapes, in the Hugging Face layout.
pub fn expected_tensors(cfg: &Config) -> Vec<(String, Vec<usize>)> {
    let c = cfg.n_embd;
    let inner = cfg.inner();
    let mut v = vec![
        ("wte.weight".to_string(), vec![cfg.vocab_size, c]),
        ("wpe.weight".to_string(), vec![cfg.n_positions, c]),
    ];
    for i in 0..cfg.n_layer {
        let p = format!("h.{i}.");
        for (n, s) in [
            ("ln_1.weight", vec![c]),
            ("ln_1.bias", vec![c]),
            ("attn.c_attn.weight", vec![c, 3 * c]),
            ("attn.c_attn.bias", vec![3 * c]),
            ("attn.c_proj.weight", vec![c, c]),
            ("attn.c_proj.bias", vec![c]),
            ("ln_2.weight", vec![c]),
            ("ln_2.bias", vec![c]),
            ("mlp.c_fc.weight", vec![c, inner]),
            ("mlp.c_fc.bias", vec![inner]),
            ("mlp.c_proj.weight", vec![inner, c]),
            ("mlp.c_proj.bias", vec![c]),
        ] {
            v.push((format!("{p}{n}"), s));
        }
    }
    v.push(("ln_f.weight".to_string(), vec![c]));
    v.push(("ln_f.bias".to_string(), vec![c]));
    if !cfg.tie_word_embeddings {
        v.push(("lm_head.weight".to_string(), vec![cfg.vocab_size, c]));
    }
    v
}

/// One or more safetensors files (memory-mapped) in either GPT-2 layout: the hub's
/// (no prefix, `h.N.attn.bias` mask buffers, which are ignored) or transformers'
/// `save_pretrained` output (prefix `transformer.`, sometimes `lm_head.weight`).
pub struct SafetensorsSource {
    files: Vec<MappedFile>,
    /// canonical name -> (file index, key in the file)
    keys: HashMap<String, (usize, String)>,
}

/// A memory-mapped safetensors file and its header, parsed and validated once.
struct MappedFile {
    path: PathBuf,
    mmap: Mmap,
    header_len: usize,
    metadata: Metadata,
}

impl SafetensorsSource {
    pub fn open(paths: &[PathBuf]) -> Result<Self> {
        let mut files = Vec::new();
        let mut raw_keys: Vec<(usize, String)> = Vec::new();
        for (i, path) in paths.iter().enumerate() {
            let file = File::open(path)
                .with_context(|| format!("cannot open weights file {}", path.display()))?;
            // SAFETY: the file is opened read-only; quantbench never writes to it while mapped.
            let mmap = unsafe { Mmap::map(&file) }
                .with_context(|| format!("cannot map weights file {}", path.display()))?;
            // Checks the header's size, JSON, dtypes, shapes and offsets against the file.
            let (header_len, metadata) = SafeTensors::read_metadata(&mmap).map_err(|e| {
                let culprit = diagnose_header(&mmap)
                    .map(|c| format!(": {c}"))
                    .unwrap_or_else(|| format!(": {e}"));
                InputError::new(format!(
                    "{} is not a valid safetensors file (truncated or corrupt?){culprit}",
                    path.display()
                ))
            })?;
            for name in metadata.tensors().keys() {
                raw_keys.push((i, name.to_string()));
            }
            files.push(MappedFile {
                path: path.clone(),
                mmap,
                header_len,
                metadata,
            });
        }
        let prefixed = raw_keys.iter().any(|(_, k)| k.starts_with("transformer."));
        let mut keys = HashMap::new();
        for (i, k) in raw_keys {
            let canonical = if k == "lm_head.weight" {
                k.clone()
            } else if prefixed {
                match k.strip_prefix("transformer.") {
                    Some(rest) => rest.to_string(),
                    None => continue,
                }
            } else {
                k.clone()
            };
            if canonical.ends_with(".attn.bias") || canonical.ends_with(".attn.masked_bias") {
                continue; // causal-mask buffers, not weights
            }
            keys.insert(canonical, (i, k));
        }
        if !keys.contains_key("wte.weight") {
            let shown: Vec<&str> = keys.keys().take(5).map(|s| s.as_str()).collect();
            return Err(InputError::new(format!(
                "{}: no GPT-2 token embedding (wte.weight or transformer.wte.weight); the file holds {} tensors such as {:?}",
                paths.first().map(|p| p.display().to_string()).unwrap_or_default(),
                keys.len(),
                shown
            ))
            .into());
        }
        Ok(SafetensorsSource { files, keys })
    }
}

/// Which tensor of a safetensors header lies, and how: its byte range disagrees with its
/// shape and dtype, or runs past the end of the file. `None` when the header cannot be
/// read as JSON at all or no single tensor is to blame.
pub fn diagnose_header(bytes: &[u8]) -> Option<String> {
    let n = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    let header_end = 8usize.checked_add(usize::try_from(n).ok()?)?;
    let header = std::str::from_utf8(bytes.get(8..header_end)?).ok()?;
    let v: serde_json::Value = serde_json::from_str(header).ok()?;
    let data_len = (bytes.len() - header_end) as u128;
    for (name, info) in v.as_object()? {
        if name == "__metadata__" {
            continue;
        }
        let dtype = info.get("dtype").and_then(|d| d.as_str()).unwrap_or("?");
        let size: u128 = match dtype {
            "F64" | "I64" | "U64" => 8,
            "F32" | "I32" | "U32" => 4,
            "F16" | "BF16" | "I16" | "U16" => 2,
            "I8" | "U8" | "BOOL" | "F8_E4M3" | "F8_E5M2" => 1,
            _ => {
                return Some(format!(
                    "tensor '{name}' has dtype {dtype:?}, which is not a safetensors dtype"
                ))
            }
        };
        let shape: Option<Vec<u128>> = info.get("shape").and_then(|s| s.as_array()).and_then(|a| {
            a.iter()
                .map(|d| d.as_u64().map(u128::from))
                .collect::<Option<Vec<_>>>()
        });
        let Some(shape) = shape else {
            return Some(format!("tensor '{name}' has no shape of whole numbers"));
        };
        let offsets: Option<Vec<u128>> = info
            .get("data_offsets")
            .and_then(|s| s.as_array())
            .and_then(|a| {
                a.iter()
                    .map(|d| d.as_u64().map(u128::from))
                    .collect::<Option<Vec<_>>>()
            });
        let Some([start, end]) = offsets
            .as_deref()
            .and_then(|o| <[u128; 2]>::try_from(o).ok())
        else {
            return Some(format!("tensor '{name}' has no data_offsets [start, end]"));
        };
        let elements = shape.iter().try_fold(1u128, |a, &d| a.checked_mul(d));
        let want = elements.and_then(|e| e.checked_mul(size));
        if end < start {
            return Some(format!(
                "tensor '{name}' has data_offsets [{start}, {end}]: the end is before the start"
            ));
        }
        if want != Some(end - start) {
            return Some(format!(
                "tensor '{name}' has shape {shape:?} of {dtype} ({} bytes) but data_offsets [{start}, {end}] hold {} bytes",
                want.map(|w| w.to_string()).unwrap_or_else(|| "too many".into()),
                end - start
            ));
        }
        if end > data_len {
            return Some(format!(
                "tensor '{name}' has data_offsets [{start}, {end}], past the end of the file's {data_len} data bytes"
            ));
        }
    }
    None
}

impl TensorSource for SafetensorsSource {
    fn has(&self, name: &str) -> bool {
        self.keys.contains_key(name)
    }

    fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let (fi, key) = self.keys.get(name).ok_or_else(|| {
            InputError::new(format!(
                "{}: tensor '{name}' is missing",
                self.files[0].path.display()
            ))
        })?;
        let file = &self.files[*fi];
        let path = &file.path;
        let info = file
            .metadata
            .info(key)
            .with_context(|| format!("{}: tensor '{key}' vanished", path.display()))?;
        if info.shape != shape {
            return Err(InputError::new(format!(
                "{}: tensor '{key}' has shape {:?}, but config.json implies {:?}",
                path.display(),
                info.shape,
                shape
            ))
            .into());
        }
        // Offsets were validated against the file's length when it was opened.
        let start = 8 + file.header_len + info.data_offsets.0;
        let data = &file.mmap[start..8 + file.header_len + info.data_offsets.1];
        let dtype = match info.dtype {
            safetensors::Dtype::F32 => DType::F32,
            safetensors::Dtype::F16 => DType::F16,
            safetensors::Dtype::BF16 => DType::BF16,
            safetensors::Dtype::F64 => DType::F64,
            other => {
                return Err(InputError::new(format!(
                    "{}: tensor '{key}' has dtype {other:?}; valid: F32, F16, BF16, F64",
                    path.display()
                ))
                .into())
            }
        };
        let t = Tensor::from_raw_buffer(data, dtype, shape, &Device::Cpu)?;
        Ok(t.to_dtype(DType::F32)?)
    }
}

/// How one group of weights is stored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct GroupBytes {
    pub parameters: usize,
    pub bytes: usize,
}

impl GroupBytes {
    fn add(&mut self, parameters: usize, bytes: usize) {
        self.parameters += parameters;
        self.bytes += bytes;
    }
}

/// Exactly how many bytes a loaded model's weights hold, by group.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Footprint {
    /// Token embedding (tied LM head counted once), position embedding, untied LM head.
    pub embeddings: GroupBytes,
    /// The four linear layers of each block.
    pub linear: GroupBytes,
    /// LayerNorm weights and biases, linear biases.
    pub norms_biases: GroupBytes,
    /// Matrices stored in another format than asked, and why.
    pub fallbacks: Vec<String>,
}

impl Footprint {
    pub fn of(weights: &Weights) -> Self {
        let mut embeddings = GroupBytes::default();
        let mut linear = GroupBytes::default();
        let mut nb = GroupBytes::default();
        for m in [&weights.wte, &weights.wpe]
            .into_iter()
            .chain(weights.lm_head.as_ref())
        {
            embeddings.add(m.elements(), m.bytes());
        }
        let mut vec = |v: &Vector| nb.add(v.elements(), v.bytes());
        vec(&weights.ln_f.weight);
        vec(&weights.ln_f.bias);
        for b in &weights.blocks {
            for ln in [&b.ln_1, &b.ln_2] {
                vec(&ln.weight);
                vec(&ln.bias);
            }
            for l in [&b.c_attn, &b.attn_proj, &b.c_fc, &b.mlp_proj] {
                vec(&l.bias);
                linear.add(l.weight.elements(), l.weight.bytes());
            }
        }
        Footprint {
            embeddings,
            linear,
            norms_biases: nb,
            fallbacks: Vec::new(),
        }
    }

    pub fn total_bytes(&self) -> usize {
        self.embeddings.bytes + self.linear.bytes + self.norms_biases.bytes
    }

    pub fn parameters(&self) -> usize {
        self.embeddings.parameters + self.linear.parameters + self.norms_biases.parameters
    }

    pub fn bits_per_weight(&self) -> f64 {
        self.total_bytes() as f64 * 8.0 / self.parameters() as f64
    }
}

/// Reads every tensor from `src`, stores each in the precision `q` gives it, on `device`.
pub fn build(
    cfg: &Config,
    src: &dyn TensorSource,
    q: Quantization,
    device: &Device,
) -> Result<(Weights, Vec<String>)> {
    // (stored precision, row length) -> names of the matrices that fell back
    let mut fallbacks: Vec<((Precision, usize), Vec<String>)> = Vec::new();
    let rest = q.rest.dtype();
    let vector = |name: &str, len: usize| -> Result<Vector> {
        let t = src.get(name, &[len])?;
        Ok(Vector(t.to_dtype(rest)?.to_device(device)?))
    };
    // A matrix in canonical layout: `conv1d` ones are stored [in, out] and transposed.
    let mut matrix =
        |name: &str, shape: [usize; 2], conv1d: bool, quantize: bool| -> Result<Matrix> {
            let t = src.get(name, &shape)?;
            let t = if conv1d { t.t()?.contiguous()? } else { t };
            let row_len = t.dim(1)?;
            if !quantize {
                return Ok(Matrix::Dense(t.to_dtype(rest)?.to_device(device)?));
            }
            let p = q.precision.for_row_len(row_len);
            if p != q.precision {
                match fallbacks.iter_mut().find(|(k, _)| *k == (p, row_len)) {
                    Some((_, names)) => names.push(name.to_string()),
                    None => fallbacks.push(((p, row_len), vec![name.to_string()])),
                }
            }
            store(&t, p, device).with_context(|| format!("storing {name} as {p}"))
        };
    let c = cfg.n_embd;
    let inner = cfg.inner();
    let embed_q = q.policy == Policy::All;
    let wte = matrix("wte.weight", [cfg.vocab_size, c], false, embed_q)?;
    let wpe = matrix("wpe.weight", [cfg.n_positions, c], false, embed_q)?;
    let lm_head = if cfg.tie_word_embeddings {
        None
    } else {
        Some(matrix(
            "lm_head.weight",
            [cfg.vocab_size, c],
            false,
            embed_q,
        )?)
    };
    let mut blocks = Vec::with_capacity(cfg.n_layer);
    for i in 0..cfg.n_layer {
        let p = |n: &str| format!("h.{i}.{n}");
        let eps = cfg.layer_norm_epsilon;
        let ln_1 = LayerNorm::new(
            vector(&p("ln_1.weight"), c)?,
            vector(&p("ln_1.bias"), c)?,
            eps,
        );
        let ln_2 = LayerNorm::new(
            vector(&p("ln_2.weight"), c)?,
            vector(&p("ln_2.bias"), c)?,
            eps,
        );
        let c_attn = Linear::new(
            matrix(&p("attn.c_attn.weight"), [c, 3 * c], true, true)?,
            vector(&p("attn.c_attn.bias"), 3 * c)?,
        )?;
        let attn_proj = Linear::new(
            matrix(&p("attn.c_proj.weight"), [c, c], true, true)?,
            vector(&p("attn.c_proj.bias"), c)?,
        )?;
        let c_fc = Linear::new(
            matrix(&p("mlp.c_fc.weight"), [c, inner], true, true)?,
            vector(&p("mlp.c_fc.bias"), inner)?,
        )?;
        let mlp_proj = Linear::new(
            matrix(&p("mlp.c_proj.weight"), [inner, c], true, true)?,
            vector(&p("mlp.c_proj.bias"), c)?,
        )?;
        blocks.push(Block {
            ln_1,
            c_attn,
            attn_proj,
            ln_2,
            c_fc,
            mlp_proj,
        });
    }
    let ln_f = LayerNorm::new(
        vector("ln_f.weight", c)?,
        vector("ln_f.bias", c)?,
        cfg.layer_norm_epsilon,
    );
    let notes = fallbacks
        .into_iter()
        .map(|((p, row_len), names)| {
            let shown: Vec<&str> = names.iter().take(3).map(String::as_str).collect();
            format!(
                "{} matrices stored as {p} ({}{}): rows of {row_len} do not divide into {}'s blocks of {}",
                names.len(),
                shown.join(", "),
                if names.len() > 3 { ", ..." } else { "" },
                q.precision,
                q.precision.block_size()
            )
        })
        .collect();
    Ok((
        Weights {
            wte,
            wpe,
            blocks,
            ln_f,
            lm_head,
        },
        notes,
    ))
}

/// Stores an f32 `[rows, cols]` matrix in precision `p` on `device`.
pub fn store(t: &Tensor, p: Precision, device: &Device) -> Result<Matrix> {
    Ok(match p.storage() {
        Storage::Float(dt) => Matrix::Dense(t.to_dtype(dt)?.to_device(device)?),
        Storage::Blocks(gg) if device.is_cpu() => {
            Matrix::Quantized(Arc::new(quantize_rows(t, gg)?))
        }
        Storage::Blocks(gg) => Matrix::Quantized(Arc::new(QTensor::quantize_onto(t, gg, device)?)),
    })
}

/// candle's quantizer, run on slices of rows on every core. Blocks never cross rows, so
/// the bytes are exactly those of one `QTensor::quantize` of the whole matrix; the k-quants'
/// quantizer (an iterative search per block) is what made loading slow.
pub fn quantize_rows(t: &Tensor, dtype: GgmlDType) -> Result<QTensor> {
    let (rows, cols) = t.dims2()?;
    let pieces = rayon::current_num_threads().max(1) * 4;
    let per = rows.div_ceil(pieces).max(1);
    let starts: Vec<usize> = (0..rows).step_by(per).collect();
    let parts: Vec<Vec<u8>> = starts
        .par_iter()
        .map(|&start| -> Result<Vec<u8>> {
            let len = per.min(rows - start);
            // A tensor of its own: candle's quantizer reads a tensor's storage from its
            // start, whatever view (narrow) is asked of it.
            let values = t.narrow(0, start, len)?.flatten_all()?.to_vec1::<f32>()?;
            let piece = Tensor::from_vec(values, (len, cols), &Device::Cpu)?;
            let q = QTensor::quantize(&piece, dtype)?;
            Ok(q.data()?.into_owned())
        })
        .collect::<Result<_>>()?;
    let bytes: Vec<u8> = parts.concat();
    let storage = QStorage::from_data(std::borrow::Cow::Owned(bytes), &Device::Cpu, dtype)?;
    Ok(QTensor::new(storage, (rows, cols))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Quantizing slices of rows in parallel gives exactly the bytes of one quantization
    /// of the whole matrix, for a block format and a k-quant, with a row count that does
    /// not divide into the slices evenly.
    #[test]
    fn parallel_quantization_is_byte_identical() {
        let t = Tensor::randn(0f32, 0.02, (37, 512), &Device::Cpu).unwrap();
        for dtype in [GgmlDType::Q4_0, GgmlDType::Q4K, GgmlDType::Q6K] {
            let whole = QTensor::quantize(&t, dtype).unwrap();
            let parts = quantize_rows(&t, dtype).unwrap();
            assert_eq!(parts.shape().dims(), &[37, 512]);
            assert_eq!(parts.data().unwrap(), whole.data().unwrap(), "{dtype:?}");
        }
    }
}
