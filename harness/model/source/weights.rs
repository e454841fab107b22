//! Where a model's float weights come from (safetensors in the Hugging Face layouts, or
//! a seeded generator), and how they are stored once a precision is chosen.
//!
//! Tensors are named canonically per architecture: GPT-2 as in the hub's gpt2 files
//! (`wte.weight`, `h.0.attn.c_attn.weight`, ... with Conv1D weights shaped `[in, out]`),
//! the Llama architectures as transformers saves it (`model.embed_tokens.weight`,
//! `model.layers.0.self_attn.q_proj.weight`, ... shaped `[out, in]`).

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use candle_core::quantized::{GgmlDType, QStorage, QTensor};
use candle_core::{DType, Device, Tensor};
use memmap2::Mmap;
use rayon::prelude::*;
use safetensors::tensor::Metadata;
use safetensors::SafeTensors;
use serde::Serialize;

use crate::error::InputError;
use crate::model::arch::{ModelConfig, StoredSlice};
use crate::model::nn::{Group, Matrix, Part, Vector};
use crate::precision::{Policy, Precision, Quantization};

/// A provider of f32 tensors by canonical name, each checked against its expected shape.
pub trait TensorSource {
    /// f32 tensor on the CPU with exactly `shape`; an error names the tensor, the file
    /// and both shapes when they differ.
    fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor>;
    /// Whether the source holds a tensor of that canonical name.
    fn has(&self, name: &str) -> bool;
    /// The matrix exactly as the source stores it (its own type, `[out, in]` =
    /// `out_in`), for the `native` precision; `None` for sources that hold no stored
    /// format of their own (synthetic weights, safetensors read as floats).
    fn stored(&self, _name: &str, _out_in: [usize; 2], _device: &Device) -> Result<Option<Matrix>> {
        Ok(None)
    }
    /// Check, without reading its data, that the tensor is there with `shape` and a
    /// type it can be read as: the same input error [`TensorSource::get`] would give,
    /// before anything loads.
    fn check(&self, _name: &str, _shape: &[usize]) -> Result<()> {
        Ok(())
    }
    /// The importance matrix the quantizers take, when the run gave one.
    fn importance(&self) -> Option<&crate::format::imatrix::Imatrix> {
        None
    }
    /// Where the products' inputs are collected, when the model computes an importance
    /// matrix (`quantbench imatrix`).
    fn collector(&self) -> Option<&std::sync::Arc<crate::format::imatrix::Collector>> {
        None
    }
}

/// A source with what the quantizers and `quantbench imatrix` need beside its tensors:
/// an importance matrix ([`TensorSource::importance`]) and a collector of the products'
/// inputs ([`TensorSource::collector`]); every tensor from `inner`.
pub struct WithExtras<'a> {
    pub inner: &'a dyn TensorSource,
    pub imatrix: Option<&'a crate::format::imatrix::Imatrix>,
    pub collector: Option<&'a std::sync::Arc<crate::format::imatrix::Collector>>,
}

impl TensorSource for WithExtras<'_> {
    fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        self.inner.get(name, shape)
    }
    fn has(&self, name: &str) -> bool {
        self.inner.has(name)
    }
    fn stored(&self, name: &str, out_in: [usize; 2], device: &Device) -> Result<Option<Matrix>> {
        self.inner.stored(name, out_in, device)
    }
    fn check(&self, name: &str, shape: &[usize]) -> Result<()> {
        self.inner.check(name, shape)
    }
    fn importance(&self) -> Option<&crate::format::imatrix::Imatrix> {
        self.imatrix
    }
    fn collector(&self) -> Option<&std::sync::Arc<crate::format::imatrix::Collector>> {
        self.collector
    }
}

/// One or more safetensors files (memory-mapped). GPT-2 comes in two layouts: the hub's
/// (no prefix, `h.N.attn.bias` mask buffers, which are ignored) or transformers'
/// `save_pretrained` output (prefix `transformer.`, sometimes `lm_head.weight`); the
/// Llama architectures in transformers' one layout (`model.` prefix, `lm_head.weight`).
pub struct SafetensorsSource {
    files: Vec<MappedFile>,
    /// canonical name -> (file index, key in the file)
    keys: HashMap<String, (usize, String)>,
    /// canonical name -> (file index, where it lies in a stacked tensor)
    slices: HashMap<String, (usize, StoredSlice)>,
}

/// A memory-mapped safetensors file and its header, parsed and validated once.
struct MappedFile {
    path: PathBuf,
    mmap: Mmap,
    header_len: usize,
    metadata: Metadata,
}

impl SafetensorsSource {
    pub fn open(paths: &[PathBuf], config: &ModelConfig) -> Result<Self> {
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
        // The architecture names the weights among the keys (layout prefixes, buffers).
        let file_of: HashMap<&str, usize> =
            raw_keys.iter().map(|(i, k)| (k.as_str(), *i)).collect();
        let all: Vec<String> = raw_keys.iter().map(|(_, k)| k.clone()).collect();
        let mut keys = HashMap::new();
        for (canonical, key) in config.canonical_keys(&all) {
            let i = file_of[key.as_str()];
            keys.insert(canonical, (i, key));
        }
        let slices = config
            .stored_slices(&all)
            .into_iter()
            .map(|(canonical, s)| {
                let i = file_of[s.key.as_str()];
                (canonical, (i, s))
            })
            .collect();
        let embedding = config.embedding_name();
        if !keys.contains_key(embedding) {
            let mut shown: Vec<&str> = keys.keys().map(|s| s.as_str()).collect();
            shown.sort_unstable();
            shown.truncate(5);
            return Err(InputError::new(format!(
                "{}: no token embedding ({embedding}) for a {} model; the file holds {} tensors such as {:?}",
                paths
                    .first()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                config.architecture(),
                keys.len(),
                shown
            ))
            .into());
        }
        Ok(SafetensorsSource {
            files,
            keys,
            slices,
        })
    }

    /// The dtypes the weights are stored in, most common first (by elements): what a
    /// checkpoint "is" before quantbench converts it.
    pub fn stored_dtypes(&self) -> Vec<String> {
        dtypes_by_elements(self.keys.values().filter_map(|(fi, key)| {
            let info = self.files[*fi].metadata.info(key)?;
            Some((
                format!("{:?}", info.dtype).to_lowercase(),
                info.shape.iter().product(),
            ))
        }))
    }
}

/// Distinct dtype names ordered by how many elements each holds, most first (ties by
/// name): what a checkpoint "is", from (dtype, elements) per tensor.
pub fn dtypes_by_elements(tensors: impl Iterator<Item = (String, usize)>) -> Vec<String> {
    let mut by: Vec<(String, usize)> = Vec::new();
    for (name, n) in tensors {
        match by.iter_mut().find(|(d, _)| *d == name) {
            Some((_, c)) => *c = c.saturating_add(n),
            None => by.push((name, n)),
        }
    }
    by.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    by.into_iter().map(|(d, _)| d).collect()
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
        self.keys.contains_key(name) || self.slices.contains_key(name)
    }

    fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        if let Some((fi, slice)) = self.slices.get(name) {
            return self.get_slice(*fi, slice, shape);
        }
        let (file, key, dtype) = self.locate(name, shape)?;
        let info = file
            .metadata
            .info(key)
            .with_context(|| format!("{}: tensor '{key}' vanished", file.path.display()))?;
        // Offsets were validated against the file's length when it was opened.
        let start = 8 + file.header_len + info.data_offsets.0;
        let data = &file.mmap[start..8 + file.header_len + info.data_offsets.1];
        let t = Tensor::from_raw_buffer(data, dtype, shape, &Device::Cpu)?;
        Ok(t.to_dtype(DType::F32)?)
    }

    fn check(&self, name: &str, shape: &[usize]) -> Result<()> {
        if let Some((fi, slice)) = self.slices.get(name) {
            return self.slice_geometry(*fi, slice, shape).map(|_| ());
        }
        self.locate(name, shape).map(|_| ())
    }
}

impl SafetensorsSource {
    /// A stacked tensor's dtype and the shape of one slice, checked against `count`
    /// slices whose cut (every `stride`-th of the last dimension, transposed where
    /// asked) is `shape`.
    fn slice_geometry(
        &self,
        fi: usize,
        slice: &StoredSlice,
        shape: &[usize],
    ) -> Result<(DType, Vec<usize>)> {
        let file = &self.files[fi];
        let key = &slice.key;
        let info = file
            .metadata
            .info(key)
            .with_context(|| format!("{}: tensor '{key}' vanished", file.path.display()))?;
        let dtype = float_dtype(info.dtype, key, &file.path)?;
        let inner = info.shape.get(1..).unwrap_or_default().to_vec();
        let mut cut = inner.clone();
        if let Some(last) = cut.last_mut() {
            *last /= slice.stride.max(1);
        }
        if slice.transpose {
            cut.reverse();
        }
        let fits = info.shape.first() == Some(&slice.count)
            && !inner.is_empty()
            && inner.len() <= 2
            && inner
                .last()
                .is_some_and(|l| l.is_multiple_of(slice.stride.max(1)))
            && cut == shape;
        if !fits {
            let mut want = shape.to_vec();
            if slice.transpose {
                want.reverse();
            }
            if let Some(last) = want.last_mut() {
                *last *= slice.stride;
            }
            want.insert(0, slice.count);
            return Err(InputError::new(format!(
                "{}: tensor '{key}' has shape {:?}, but config.json implies {want:?}",
                file.path.display(),
                info.shape
            ))
            .into());
        }
        Ok((dtype, inner))
    }

    /// One slice of a stacked tensor, cut as `slice` says: only its bytes are read.
    fn get_slice(&self, fi: usize, slice: &StoredSlice, shape: &[usize]) -> Result<Tensor> {
        let (dtype, inner) = self.slice_geometry(fi, slice, shape)?;
        let file = &self.files[fi];
        let info = file
            .metadata
            .info(&slice.key)
            .with_context(|| format!("tensor '{}' vanished", slice.key))?;
        let per = inner.iter().product::<usize>() * dtype.size_in_bytes();
        let start = 8 + file.header_len + info.data_offsets.0 + slice.index * per;
        let t =
            Tensor::from_raw_buffer(&file.mmap[start..start + per], dtype, &inner, &Device::Cpu)?
                .to_dtype(DType::F32)?;
        let t = if slice.stride > 1 {
            let rank = inner.len();
            let mut split = inner.clone();
            let last = split.pop().unwrap_or(1);
            split.extend([last / slice.stride, slice.stride]);
            t.reshape(split)?
                .narrow(rank, slice.offset, 1)?
                .squeeze(rank)?
        } else {
            t
        };
        Ok(if slice.transpose {
            t.t()?.contiguous()?
        } else {
            t.contiguous()?
        })
    }

    /// The file, key and float dtype of a canonical tensor, its shape checked.
    fn locate(&self, name: &str, shape: &[usize]) -> Result<(&MappedFile, &str, DType)> {
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
        let dtype = float_dtype(info.dtype, key, path)?;
        Ok((file, key, dtype))
    }
}

/// The float dtype a safetensors tensor is read as; others refused by name.
fn float_dtype(dtype: safetensors::Dtype, key: &str, path: &Path) -> Result<DType> {
    Ok(match dtype {
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
    })
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

/// Bytes of one stored format within one group.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct FormatBytes {
    /// embeddings, linear or norms_biases.
    pub group: String,
    /// f32, f16, bf16, q8_0, q4_k, q6_k ...
    pub format: String,
    pub parameters: usize,
    pub bytes: usize,
}

/// Bytes of one stored part (codes, block scales, second-level scales, row scales,
/// row sums) of the matrices in one of quantbench's own formats.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct PartBytes {
    /// The format: nf4, fp4_dq, llm_int8 ...
    pub format: String,
    /// codes, block_scales, second_level_scales, row_scales, tensor_scale, row_sums.
    pub part: String,
    pub bytes: usize,
}

/// The footprint transformers' `model.get_memory_footprint()` reports for the same model
/// and precision: every parameter in its dtype (a tied table once) plus buffers. It does
/// not count bitsandbytes' quantization constants (absmax, the double-quantized absmax
/// and its scales, LLM.int8's row scales: they live in a quant state, not in parameters)
/// nor PyTorch's packed dynamic int8 weights (no parameters at all).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct TransformersFootprint {
    /// As transformers 5 counts it (checked against 5.23's get_memory_footprint()).
    pub current_bytes: u64,
    /// As older 4.x releases counted it, where they registered other buffers (GPT-2's
    /// per-layer causal masks, which the notebooks' figures include); absent where the
    /// count is the same.
    pub legacy_bytes: Option<u64>,
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
    /// Bytes by group and stored format, groups in order, formats by bytes.
    pub by_format: Vec<FormatBytes>,
    /// Bytes by stored part, for the formats made of parts (bitsandbytes', PyTorch's).
    pub by_part: Vec<PartBytes>,
    /// The parameters' bytes as transformers counts them (see
    /// [`TransformersFootprint`]); `None` when a matrix is in a ggml block format,
    /// which transformers has no parameter type for.
    pub transformers_parameter_bytes: Option<u64>,
}

impl Footprint {
    /// Sum a model's stored tensors by group.
    pub fn of(parts: &[(Group, Part<'_>)]) -> Self {
        let mut f = Footprint {
            embeddings: GroupBytes::default(),
            linear: GroupBytes::default(),
            norms_biases: GroupBytes::default(),
            fallbacks: Vec::new(),
            by_format: Vec::new(),
            by_part: Vec::new(),
            transformers_parameter_bytes: Some(0),
        };
        for (group, part) in parts {
            let tf = match part {
                Part::Matrix(m) => m.transformers_bytes(),
                Part::Vector(v) => Some(v.bytes()),
            };
            f.transformers_parameter_bytes = match (f.transformers_parameter_bytes, tf) {
                (Some(a), Some(b)) => Some(a + b as u64),
                _ => None,
            };
            if let Part::Matrix(Matrix::Custom(m)) = part {
                for p in m.parts() {
                    match f
                        .by_part
                        .iter_mut()
                        .find(|b| b.format == m.format() && b.part == p.name)
                    {
                        Some(b) => b.bytes += p.bytes,
                        None => f.by_part.push(PartBytes {
                            format: m.format().to_string(),
                            part: p.name.to_string(),
                            bytes: p.bytes,
                        }),
                    }
                }
            }
            let (g, gname) = match group {
                Group::Embeddings => (&mut f.embeddings, "embeddings"),
                Group::Linear => (&mut f.linear, "linear"),
                Group::NormsBiases => (&mut f.norms_biases, "norms_biases"),
            };
            g.add(part.elements(), part.bytes());
            let format = match part {
                Part::Matrix(m) => m.format(),
                Part::Vector(v) => v.0.dtype().as_str().to_string(),
            };
            match f
                .by_format
                .iter_mut()
                .find(|b| b.group == gname && b.format == format)
            {
                Some(b) => {
                    b.parameters += part.elements();
                    b.bytes += part.bytes();
                }
                None => f.by_format.push(FormatBytes {
                    group: gname.into(),
                    format,
                    parameters: part.elements(),
                    bytes: part.bytes(),
                }),
            }
        }
        let order = |g: &str| {
            ["embeddings", "linear", "norms_biases"]
                .iter()
                .position(|x| *x == g)
        };
        f.by_format.sort_by(|a, b| {
            order(&a.group)
                .cmp(&order(&b.group))
                .then(b.bytes.cmp(&a.bytes))
        });
        f
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

    /// What transformers' get_memory_footprint() reports for this model: the parameters
    /// plus the architecture's buffers (`buffers` = (current, legacy) from
    /// `ModelConfig::transformers_buffer_bytes`).
    pub fn transformers(&self, buffers: (u64, Option<u64>)) -> Option<TransformersFootprint> {
        let params = self.transformers_parameter_bytes?;
        Some(TransformersFootprint {
            current_bytes: params + buffers.0,
            legacy_bytes: buffers.1.map(|b| params + b),
        })
    }
}

/// Stores tensors read from a source at one quantization, one at a time: each is read
/// (as f32), converted or quantized, and its f32 copy dropped before the next is read, so
/// the peak while loading is the stored weights plus the largest single tensor in f32.
/// Matrices whose rows do not divide into the format's blocks fall back as llama.cpp
/// does, and [`Builder::notes`] says which and why.
pub struct Builder<'a> {
    src: &'a dyn TensorSource,
    cfg: &'a dyn crate::model::arch::ArchConfig,
    q: Quantization,
    device: &'a Device,
    /// (stored precision, row length) -> names of the matrices that fell back
    fallbacks: Vec<((Precision, usize), Vec<String>)>,
    /// At one of llama-quantize's mixes: each matrix's precision (the rest dtype for the
    /// names it does not hold).
    mix: Option<std::collections::HashMap<String, Precision>>,
}

impl<'a> Builder<'a> {
    /// A builder for `cfg`'s tensors at `q` (at a mix, its plan is made here).
    pub fn new(
        src: &'a dyn TensorSource,
        q: Quantization,
        device: &'a Device,
        cfg: &'a dyn crate::model::arch::ArchConfig,
    ) -> Result<Self> {
        let mix = match q.precision {
            Precision::Mix(m) => Some(crate::model::arch::mix_precisions(
                cfg,
                m,
                src.importance().is_some(),
            )?),
            _ => None,
        };
        Ok(Builder {
            src,
            cfg,
            q,
            device,
            fallbacks: Vec::new(),
            mix,
        })
    }

    /// Whether embeddings (and an untied LM head) are quantized: the `all` policy, at a
    /// precision that can hold an embedding (bitsandbytes' and PyTorch's formats replace
    /// linear layers only: under `all` their embeddings stay in the rest dtype, and
    /// [`Builder::notes`] says so).
    pub fn quantize_embeddings(&self) -> bool {
        self.q.policy == Policy::All && self.q.precision.holds_embeddings()
    }

    /// Whether the source holds a tensor of that canonical name.
    pub fn has(&self, name: &str) -> bool {
        self.src.has(name)
    }

    /// A norm weight or bias, in the rest dtype.
    pub fn vector(&self, name: &str, len: usize) -> Result<Vector> {
        let t = self.src.get(name, &[len])?;
        Ok(Vector(
            t.to_dtype(self.q.rest.dtype())?.to_device(self.device)?,
        ))
    }

    /// A matrix stored `[out, in]`; `transpose` for sources that store it `[in, out]`
    /// (`shape` is then the source's shape). Unquantized matrices keep the rest dtype.
    pub fn matrix(
        &mut self,
        name: &str,
        shape: [usize; 2],
        transpose: bool,
        quantize: bool,
    ) -> Result<Matrix> {
        if self.q.precision == Precision::Native {
            let out_in = if transpose {
                [shape[1], shape[0]]
            } else {
                shape
            };
            return match self.src.stored(name, out_in, self.device)? {
                Some(m) => self.recorded(name, m, true),
                None => Err(InputError::new(format!(
                    "precision native keeps every tensor as a GGUF file stores it, but this source has no stored format for {name}; choose one of: {}",
                    Precision::valid_names()
                ))
                .into()),
            };
        }
        let t = self.src.get(name, &shape)?;
        let t = if transpose { t.t()?.contiguous()? } else { t };
        let m = self.store_rows(name, t, quantize)?;
        self.recorded(name, m, true)
    }

    /// The matrix as a [`crate::format::imatrix::RecordingMatrix`] when the source
    /// collects products' inputs and llama-imatrix would collect this tensor's (`first`:
    /// a fused projection's inputs are collected once, by its first part).
    fn recorded(&self, name: &str, m: Matrix, first: bool) -> Result<Matrix> {
        let Some(collector) = self.src.collector() else {
            return Ok(m);
        };
        let (gguf_name, expert) = match self.cfg.gguf_slice(name) {
            Some((g, i, n)) => (g, (i, n)),
            None => match self.cfg.gguf_name(name) {
                Some(g) => (g, (0, 1)),
                None => return Ok(m),
            },
        };
        if !first || !collector.wants(&gguf_name) {
            return Ok(m);
        }
        Ok(Matrix::Custom(std::sync::Arc::new(
            crate::format::imatrix::RecordingMatrix {
                inner: m,
                gguf_name,
                expert,
                collector: collector.clone(),
            },
        )))
    }

    /// Rows `start .. start + len` of a matrix stored `[rows, cols]` (`shape`), as a
    /// matrix of their own: a fused projection split at load (Phi-3's qkv_proj and
    /// gate_up_proj). Blocks never cross rows, so a stored file's rows keep their bytes.
    pub fn matrix_rows(
        &mut self,
        name: &str,
        shape: [usize; 2],
        start: usize,
        len: usize,
        quantize: bool,
    ) -> Result<Matrix> {
        if start + len > shape[0] {
            anyhow::bail!(
                "rows {start}..{} of {name}, which has {}",
                start + len,
                shape[0]
            );
        }
        if self.q.precision == Precision::Native {
            let Some(m) = self.src.stored(name, shape, self.device)? else {
                return Err(InputError::new(format!(
                    "precision native keeps every tensor as a GGUF file stores it, but this source has no stored format for {name}; choose one of: {}",
                    Precision::valid_names()
                ))
                .into());
            };
            let (bytes, dtype) = crate::model::write::gguf::matrix_bytes(&m)?;
            let row = bytes.len() / shape[0];
            let m = crate::model::source::gguf::matrix_from_bytes(
                &bytes[start * row..(start + len) * row],
                dtype,
                &[len, shape[1]],
                self.device,
            )?;
            return self.recorded(name, m, start == 0);
        }
        let t = self
            .src
            .get(name, &shape)?
            .narrow(0, start, len)?
            .contiguous()?;
        let m = self.store_rows(name, t, quantize)?;
        self.recorded(name, m, start == 0)
    }

    /// The importance values for the columns of `name` (its expert's, for an expert of a
    /// stacked GGUF tensor), when the run has an importance matrix that holds them.
    fn importance(&self, name: &str, cols: usize) -> Result<Option<&'a [f32]>> {
        let src: &'a dyn TensorSource = self.src;
        let Some(m) = src.importance() else {
            return Ok(None);
        };
        let (gname, expert, n_expert) = match self.cfg.gguf_slice(name) {
            Some((g, i, n)) => (g, i, n),
            None => match self.cfg.gguf_name(name) {
                Some(g) => (g, 0, 1),
                None => return Ok(None),
            },
        };
        m.for_tensor(&gname, cols, (expert, n_expert))
    }

    /// llama-quantize's `tensor_requires_imatrix`: in the mixes, the IQ3_XXS, IQ2 and IQ1
    /// matrices (and a Q2_K_S file's Q2_K ones), but the token table and the output,
    /// need the importance matrix's values.
    fn check_required_importance(&self, name: &str, p: Precision, has: bool) -> Result<()> {
        let Precision::Mix(mix) = self.q.precision else {
            return Ok(());
        };
        let Some(ty) = p.format().and_then(|f| f.ggml_type()) else {
            return Ok(());
        };
        let gname = self
            .cfg
            .gguf_slice(name)
            .map(|s| s.0)
            .or_else(|| self.cfg.gguf_name(name))
            .unwrap_or_else(|| name.to_string());
        if has || !crate::format::mix_plan::requires_imatrix(mix.llama_ftype(), &gname, ty) {
            return Ok(());
        }
        let file = self
            .src
            .importance()
            .map(|m| m.path.display().to_string())
            .unwrap_or_default();
        crate::bad_input!(
            "precision {mix}: the importance matrix {file} has no values for {gname} ({name}), which llama-quantize requires for a {ty} matrix of that mix; use the importance matrix made for this model"
        )
    }

    /// An f32 `[rows, cols]` tensor stored as the precision asks (the rest dtype when not
    /// quantized; a fallback format where rows do not divide into blocks, noted), with
    /// the importance matrix's values for it when the run has one.
    fn store_rows(&mut self, name: &str, t: Tensor, quantize: bool) -> Result<Matrix> {
        let row_len = t.dim(1)?;
        let w = self.importance(name, row_len)?;
        if let Some(plan) = &self.mix {
            // The mix's plan decides, fallbacks included (llama-quantize's).
            return match plan.get(name) {
                Some(&p) => {
                    self.check_required_importance(name, p, w.is_some())?;
                    store(&t, p, self.device, w).with_context(|| format!("storing {name} as {p}"))
                }
                None => Ok(Matrix::Dense(
                    t.to_dtype(self.q.rest.dtype())?.to_device(self.device)?,
                )),
            };
        }
        if !quantize {
            return Ok(Matrix::Dense(
                t.to_dtype(self.q.rest.dtype())?.to_device(self.device)?,
            ));
        }
        let p = self.q.precision.for_row_len(row_len);
        if p != self.q.precision {
            match self.fallbacks.iter_mut().find(|(k, _)| *k == (p, row_len)) {
                Some((_, names)) => names.push(name.to_string()),
                None => self.fallbacks.push(((p, row_len), vec![name.to_string()])),
            }
        }
        store(&t, p, self.device, w).with_context(|| format!("storing {name} as {p}"))
    }

    /// One line per fallback: how many matrices, which, and why.
    pub fn notes(self) -> Vec<String> {
        let q = self.q;
        let embeddings = (q.policy == Policy::All && !q.precision.holds_embeddings()).then(|| {
            format!(
                "the embeddings and the LM head are stored in {} (the rest dtype), not {}: {} replaces linear layers only, as {} does (policy all acts as linear)",
                q.rest,
                q.precision,
                q.precision,
                q.precision.family().name()
            )
        });
        embeddings.into_iter().chain(self.fallbacks
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
            }))
            .collect()
    }
}

/// Stores an f32 `[rows, cols]` matrix in precision `p` on `device`, quantized with
/// the importance values `imatrix` (one a column) where given and the format takes them.
pub fn store(t: &Tensor, p: Precision, device: &Device, imatrix: Option<&[f32]>) -> Result<Matrix> {
    match p.format() {
        Some(f) => match imatrix {
            Some(w) => f.store_weighted(t, device, w),
            None => f.store(t, device),
        },
        None => anyhow::bail!(
            "precision native stores nothing of its own: the source's stored tensors are kept"
        ),
    }
}

/// `f` of slices of whole rows of `x` (`rows × cols`) on every core, the pieces' bytes in
/// order: a quantizer whose blocks never cross rows gives the bytes of one call on all.
pub fn par_rows(
    x: &[f32],
    rows: usize,
    cols: usize,
    f: impl Fn(&[f32]) -> Vec<u8> + Sync,
) -> Vec<u8> {
    let pieces = rayon::current_num_threads().max(1) * 4;
    let per = rows.div_ceil(pieces).max(1);
    let starts: Vec<usize> = (0..rows).step_by(per).collect();
    let parts: Vec<Vec<u8>> = starts
        .par_iter()
        .map(|&start| f(&x[start * cols..(start + per.min(rows - start)) * cols]))
        .collect();
    parts.concat()
}

/// ggml's quantizer for `dtype`, run on slices of rows on every core: ggml's reference
/// quantizers ported where candle's differ (`format::ggml_quants`: the k-quants, q4_1,
/// q5_1), candle's for the rest (q4_0, q5_0, q8_0: ggml's bytes, tests/quantizers.rs). Blocks
/// never cross rows, so the bytes are exactly those of one quantization of the whole
/// matrix; the k-quants' search per block is what made loading slow.
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
            let ty = crate::format::GgmlType::of(dtype);
            if crate::format::ggml_quants::handles(ty) {
                return Ok(crate::format::ggml_quants::quantize(ty, &values));
            }
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
            let ty = crate::format::GgmlType::of(dtype);
            let whole = if crate::format::ggml_quants::handles(ty) {
                let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let bytes = crate::format::ggml_quants::quantize(ty, &v);
                let storage =
                    QStorage::from_data(std::borrow::Cow::Owned(bytes), &Device::Cpu, dtype)
                        .unwrap();
                QTensor::new(storage, (37, 512)).unwrap()
            } else {
                QTensor::quantize(&t, dtype).unwrap()
            };
            let parts = quantize_rows(&t, dtype).unwrap();
            assert_eq!(parts.shape().dims(), &[37, 512]);
            assert_eq!(parts.data().unwrap(), whole.data().unwrap(), "{dtype:?}");
        }
    }
}
