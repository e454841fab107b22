//! GGUF files in: the header read and checked by [`crate::model::source::gguf_header`], the
//! architecture and hyper-parameters from the metadata, the tensors by llama.cpp's names,
//! the tokenizer from the metadata. Tensor data is read tensor by tensor with positioned
//! reads (never mapped, never copied twice): the peak while loading is the stored weights
//! plus one tensor's bytes, and nothing of the file stays in the process once loaded.
//!
//! llama.cpp's converter stores the Llama architecture's q and k projections with their
//! rows permuted (for its interleaved rotation); they are put back in transformers' order
//! row by row, which moves whole rows of blocks and so keeps every byte. GPT-2's Conv1D
//! matrices are stored `[out, in]` there, as quantbench keeps them.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::{QStorage, QTensor};
use candle_core::{DType, Device, Tensor};

use crate::error::InputError;
use crate::format::GgmlType;
use crate::model::arch::{ModelConfig, RopePermutation};
use crate::model::nn::Matrix;
use crate::model::source::weights::TensorSource;

/// ggml's name for a tensor type id ("IQ4_XS"), or "type N" for an id ggml has none for.
pub fn ggml_type_name(id: u32) -> String {
    crate::format::GgmlType::from_id(id)
        .map(|t| t.name().to_string())
        .unwrap_or_else(|| format!("type {id}"))
}

/// How quantbench names a stored type (as [`Matrix::format`] does, and the precisions):
/// f32, f16, bf16, q8_0, q4_k ...
pub fn format_name(ty: GgmlType) -> String {
    ty.lower()
}

/// llama.cpp's `general.file_type` labels (llama.h's `llama_ftype`).
pub fn file_type_label(id: u64) -> String {
    let name = match id {
        0 => "ALL_F32",
        1 => "MOSTLY_F16",
        2 => "MOSTLY_Q4_0",
        3 => "MOSTLY_Q4_1",
        7 => "MOSTLY_Q8_0",
        8 => "MOSTLY_Q5_0",
        9 => "MOSTLY_Q5_1",
        10 => "MOSTLY_Q2_K",
        11 => "MOSTLY_Q3_K_S",
        12 => "MOSTLY_Q3_K_M",
        13 => "MOSTLY_Q3_K_L",
        14 => "MOSTLY_Q4_K_S",
        15 => "MOSTLY_Q4_K_M",
        16 => "MOSTLY_Q5_K_S",
        17 => "MOSTLY_Q5_K_M",
        18 => "MOSTLY_Q6_K",
        19 => "MOSTLY_IQ2_XXS",
        20 => "MOSTLY_IQ2_XS",
        21 => "MOSTLY_Q2_K_S",
        22 => "MOSTLY_IQ3_XS",
        23 => "MOSTLY_IQ3_XXS",
        24 => "MOSTLY_IQ1_S",
        25 => "MOSTLY_IQ4_NL",
        26 => "MOSTLY_IQ3_S",
        27 => "MOSTLY_IQ3_M",
        28 => "MOSTLY_IQ2_S",
        29 => "MOSTLY_IQ2_M",
        30 => "MOSTLY_IQ4_XS",
        31 => "MOSTLY_IQ1_M",
        32 => "MOSTLY_BF16",
        36 => "MOSTLY_TQ1_0",
        37 => "MOSTLY_TQ2_0",
        38 => "MOSTLY_MXFP4_MOE",
        _ => return format!("file_type {id}"),
    };
    name.to_string()
}

/// One tensor of the file: its type, its shape as candle orders it (`[rows, cols]` for a
/// matrix, the reverse of ggml's `ne`), and where its bytes are.
#[derive(Debug, Clone)]
pub struct TensorEntry {
    pub dtype: GgmlType,
    pub shape: Vec<usize>,
    /// Absolute offset of the data in the file.
    pub start: u64,
    pub bytes: usize,
}

/// The hyper-parameter keys of GGUF metadata, one table for the readers and the writer
/// (llama.cpp's `LLM_KV_NAMES` in llama-arch.cpp): each is `{architecture}.{suffix}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kv {
    ContextLength,
    EmbeddingLength,
    BlockCount,
    FeedForwardLength,
    HeadCount,
    HeadCountKv,
    KeyLength,
    ValueLength,
    LayerNormEpsilon,
    LayerNormRmsEpsilon,
    RopeDimensionCount,
    RopeFreqBase,
    RopeScalingType,
    RopeScalingFactor,
    VocabSize,
    SlidingWindow,
    SlidingWindowPattern,
    RopeFreqBaseSwa,
    FinalLogitSoftcapping,
    ExpertCount,
    ExpertUsedCount,
    ExpertFeedForwardLength,
    RopeScalingAttnFactor,
    RopeScalingOrigCtxLen,
    RopeScalingYarnBetaFast,
    RopeScalingYarnBetaSlow,
}

/// [`Kv`]'s names, as llama-arch.cpp spells them.
pub const KV_NAMES: [(Kv, &str); 26] = [
    (Kv::ContextLength, "context_length"),
    (Kv::EmbeddingLength, "embedding_length"),
    (Kv::BlockCount, "block_count"),
    (Kv::FeedForwardLength, "feed_forward_length"),
    (Kv::HeadCount, "attention.head_count"),
    (Kv::HeadCountKv, "attention.head_count_kv"),
    (Kv::KeyLength, "attention.key_length"),
    (Kv::ValueLength, "attention.value_length"),
    (Kv::LayerNormEpsilon, "attention.layer_norm_epsilon"),
    (Kv::LayerNormRmsEpsilon, "attention.layer_norm_rms_epsilon"),
    (Kv::RopeDimensionCount, "rope.dimension_count"),
    (Kv::RopeFreqBase, "rope.freq_base"),
    (Kv::RopeScalingType, "rope.scaling.type"),
    (Kv::RopeScalingFactor, "rope.scaling.factor"),
    (Kv::VocabSize, "vocab_size"),
    (Kv::SlidingWindow, "attention.sliding_window"),
    (Kv::SlidingWindowPattern, "attention.sliding_window_pattern"),
    (Kv::RopeFreqBaseSwa, "rope.freq_base_swa"),
    (Kv::FinalLogitSoftcapping, "final_logit_softcapping"),
    (Kv::ExpertCount, "expert_count"),
    (Kv::ExpertUsedCount, "expert_used_count"),
    (Kv::ExpertFeedForwardLength, "expert_feed_forward_length"),
    (Kv::RopeScalingAttnFactor, "rope.scaling.attn_factor"),
    (
        Kv::RopeScalingOrigCtxLen,
        "rope.scaling.original_context_length",
    ),
    (Kv::RopeScalingYarnBetaFast, "rope.scaling.yarn_beta_fast"),
    (Kv::RopeScalingYarnBetaSlow, "rope.scaling.yarn_beta_slow"),
];

impl Kv {
    /// The key under an architecture: `llama.context_length`.
    pub fn key(self, arch: &str) -> String {
        let suffix = KV_NAMES
            .iter()
            .find(|(k, _)| *k == self)
            .map(|(_, n)| *n)
            .expect("every key is in KV_NAMES");
        format!("{arch}.{suffix}")
    }
}

/// What every architecture reads from a GGUF file the same way ([`GgufFile::common`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Common {
    pub vocab: usize,
    pub width: usize,
    pub layers: usize,
    pub heads: usize,
    pub context: usize,
    /// No `output.weight`: the head is the token embedding.
    pub tied: bool,
    pub bos: Option<usize>,
    pub eos: Option<usize>,
}

/// An opened GGUF file: metadata and tensor directory read and checked, data not read.
pub struct GgufFile {
    pub path: PathBuf,
    pub metadata: HashMap<String, Value>,
    pub tensors: HashMap<String, TensorEntry>,
    /// The tensors' names in file order.
    pub order: Vec<String>,
    /// `general.alignment` (32 when absent).
    pub alignment: u64,
    pub version: u32,
    file: Mutex<File>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GgufFile({})", self.path.display())
    }
}

fn input(msg: String) -> anyhow::Error {
    InputError::new(msg).into()
}

/// Whether a path names a GGUF file by its extension.
pub fn is_gguf_path(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
}

impl GgufFile {
    /// Open and check a GGUF file: magic, version, header ([`crate::model::source::gguf_header`]:
    /// keys once each, the alignment, every tensor's type, shape and place against the
    /// others and the file's length) and the metadata's general keys. Errors name the
    /// file and the culprit.
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(problem) = crate::fsutil::not_a_regular_file(path) {
            crate::bad_input!("{} {problem}; it must be a GGUF file", path.display());
        }
        let file = File::open(path)
            .map_err(|e| input(format!("cannot open GGUF file {}: {e}", path.display())))?;
        let file_len = file.metadata()?.len();
        let mut head = [0u8; 8];
        {
            let mut r = &file;
            if file_len < 8 || r.read_exact(&mut head).is_err() {
                crate::bad_input!(
                    "{}: only {file_len} bytes: too short to be a GGUF file (truncated?)",
                    path.display()
                );
            }
        }
        if &head[..4] != b"GGUF" {
            crate::bad_input!(
                "{}: not a GGUF file: it starts with {:?}, where a GGUF file starts with the magic \"GGUF\"",
                path.display(),
                String::from_utf8_lossy(&head[..4])
            );
        }
        let version = u32::from_le_bytes(head[4..8].try_into().expect("4 bytes"));
        if !(1..=3).contains(&version) {
            crate::bad_input!(
                "{}: GGUF version {version}; candle (and so quantbench) reads versions 1, 2 and 3",
                path.display()
            );
        }
        let header = crate::model::source::gguf_header::read(&file, file_len)
            .map_err(|problem| input(format!("{}: {problem}", path.display())))?;
        let mut tensors = HashMap::with_capacity(header.tensors.len());
        for t in &header.tensors {
            tensors.insert(
                t.name.clone(),
                TensorEntry {
                    dtype: t.dtype,
                    shape: t.shape.clone(),
                    start: header.data_offset + t.offset,
                    bytes: t.bytes as usize,
                },
            );
        }
        let file = GgufFile {
            path: path.to_path_buf(),
            metadata: header.metadata,
            tensors,
            order: header.tensors.iter().map(|t| t.name.clone()).collect(),
            alignment: header.alignment,
            version,
            file: Mutex::new(file),
        };
        file.check_metadata()?;
        Ok(file)
    }

    /// The general keys every reader of the file relies on, checked once when it opens.
    fn check_metadata(&self) -> Result<()> {
        if let Some(v) = self.metadata.get("general.file_type") {
            if as_u64(v).is_none() {
                crate::bad_input!(
                    "{}: general.file_type holds a {} ({}), where llama.cpp writes a u32 (llama_ftype: 0 ALL_F32, 1 MOSTLY_F16, 15 MOSTLY_Q4_K_M ...)",
                    self.path.display(),
                    crate::model::source::gguf_header::type_of(v),
                    short(v)
                );
            }
        }
        Ok(())
    }

    /// `general.architecture`.
    pub fn architecture(&self) -> Result<String> {
        Ok(self.req_str("general.architecture")?.to_string())
    }

    /// `general.file_type` as llama.cpp labels it (MOSTLY_Q4_K_M ...), when present.
    pub fn file_type(&self) -> Option<String> {
        self.metadata
            .get("general.file_type")
            .and_then(as_u64)
            .map(file_type_label)
    }

    /// Whether any weight matrix is stored in a block format (not F32 / F16 / BF16).
    pub fn is_quantized(&self) -> bool {
        self.tensors
            .values()
            .any(|t| t.shape.len() == 2 && !t.dtype.is_float())
    }

    /// Stored types by elements, most common first: "q4_k+q6_k+f32".
    pub fn stored_dtypes(&self) -> Vec<String> {
        crate::model::source::weights::dtypes_by_elements(
            self.tensors
                .values()
                .map(|t| (format_name(t.dtype), t.shape.iter().product())),
        )
    }

    fn missing(&self, key: &str) -> anyhow::Error {
        input(format!(
            "{}: GGUF metadata key '{key}' is missing",
            self.path.display()
        ))
    }

    pub fn req_str(&self, key: &str) -> Result<&str> {
        match self.metadata.get(key) {
            None => Err(self.missing(key)),
            Some(Value::String(s)) => Ok(s),
            Some(other) => Err(input(format!(
                "{}: GGUF metadata key '{key}' holds {other:?}, where a string is expected",
                self.path.display()
            ))),
        }
    }

    pub fn opt_str(&self, key: &str) -> Result<Option<&str>> {
        match self.metadata.get(key) {
            None => Ok(None),
            Some(_) => self.req_str(key).map(Some),
        }
    }

    pub fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        match self.metadata.get(key) {
            None => Ok(None),
            Some(v) => match as_u64(v).and_then(|n| usize::try_from(n).ok()) {
                Some(n) => Ok(Some(n)),
                None => Err(input(format!(
                    "{}: GGUF metadata key '{key}' holds {v:?}, where a whole number is expected",
                    self.path.display()
                ))),
            },
        }
    }

    pub fn req_usize(&self, key: &str) -> Result<usize> {
        self.opt_usize(key)?.ok_or_else(|| self.missing(key))
    }

    /// A number from the metadata; NaN and infinities are refused (a hyper-parameter
    /// is a finite number, and a default must never stand in for a broken one).
    pub fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        let x = match self.metadata.get(key) {
            None => return Ok(None),
            Some(Value::F32(f)) => *f as f64,
            Some(Value::F64(f)) => *f,
            Some(v) => match as_u64(v) {
                Some(n) => n as f64,
                None => {
                    return Err(input(format!(
                        "{}: GGUF metadata key '{key}' holds {v:?}, where a number is expected",
                        self.path.display()
                    )))
                }
            },
        };
        if !x.is_finite() {
            crate::bad_input!(
                "{}: GGUF metadata key '{key}' holds {x}, where a finite number is expected",
                self.path.display()
            );
        }
        Ok(Some(x))
    }

    pub fn req_f64(&self, key: &str) -> Result<f64> {
        self.opt_f64(key)?.ok_or_else(|| self.missing(key))
    }

    /// A tensor's entry, or an error naming it.
    pub fn entry(&self, name: &str) -> Result<&TensorEntry> {
        self.tensors.get(name).ok_or_else(|| {
            input(format!(
                "{}: tensor '{name}' is missing from the GGUF file",
                self.path.display()
            ))
        })
    }

    /// A tensor's raw bytes, read with one positioned read.
    pub fn read_bytes(&self, name: &str) -> Result<Vec<u8>> {
        let e = self.entry(name)?;
        self.read_range(name, 0, e.bytes)
    }

    /// `len` bytes of a tensor from `offset` within it (one slice of a stacked tensor).
    pub fn read_range(&self, name: &str, offset: usize, len: usize) -> Result<Vec<u8>> {
        let e = self.entry(name)?;
        if offset.checked_add(len).is_none_or(|end| end > e.bytes) {
            crate::bad_input!(
                "{}: bytes {offset}..+{len} lie outside tensor '{name}' ({} bytes)",
                self.path.display(),
                e.bytes
            );
        }
        let mut buf = vec![0u8; len];
        let mut f = self.file.lock().expect("the file lock is never poisoned");
        f.seek(SeekFrom::Start(e.start + offset as u64))?;
        f.read_exact(&mut buf)
            .with_context(|| format!("{}: reading tensor '{name}'", self.path.display()))?;
        Ok(buf)
    }

    /// A tensor as candle's [`QTensor`] in its stored type, `shape` checked.
    pub fn qtensor(&self, name: &str, shape: &[usize]) -> Result<QTensor> {
        let e = self.entry(name)?;
        self.check_shape(name, &e.shape, shape)?;
        let Some(dtype) = e.dtype.candle() else {
            crate::bad_input!(
                "{}: tensor '{name}' is {}, where quantbench reads this tensor in one of candle's types ({})",
                self.path.display(),
                e.dtype,
                GgmlType::ALL.iter().filter(|t| t.candle().is_some()).map(|t| t.name()).collect::<Vec<_>>().join(", ")
            );
        };
        let bytes = self.read_bytes(name)?;
        let storage = QStorage::from_data(std::borrow::Cow::Borrowed(&bytes), &Device::Cpu, dtype)?;
        Ok(QTensor::new(storage, shape.to_vec())?)
    }

    pub(crate) fn check_shape(&self, name: &str, found: &[usize], want: &[usize]) -> Result<()> {
        if found != want {
            crate::bad_input!(
                "{}: tensor '{name}' has shape {found:?}, but the GGUF metadata implies {want:?}",
                self.path.display()
            );
        }
        Ok(())
    }

    /// The tokenizer the metadata describes (see [`crate::model::source::tokenizer`]).
    pub fn tokenizer(&self) -> Result<crate::model::source::tokenizer::Tokenizer> {
        crate::model::source::tokenizer::from_gguf(self)
    }

    /// A string array from the metadata.
    pub fn str_array(&self, key: &str) -> Result<Option<Vec<&str>>> {
        match self.metadata.get(key) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.as_str()),
                    other => Err(input(format!(
                        "{}: GGUF metadata key '{key}' holds {other:?} among its strings",
                        self.path.display()
                    ))),
                })
                .collect::<Result<Vec<_>>>()
                .map(Some),
            Some(other) => Err(input(format!(
                "{}: GGUF metadata key '{key}' holds {}, where an array of strings is expected",
                self.path.display(),
                short(other)
            ))),
        }
    }

    /// A numeric array from the metadata, as f64.
    pub fn num_array(&self, key: &str) -> Result<Option<Vec<f64>>> {
        match self.metadata.get(key) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    Value::F32(f) => Ok(*f as f64),
                    Value::F64(f) => Ok(*f),
                    other => as_i64(other).map(|n| n as f64).ok_or_else(|| {
                        input(format!(
                            "{}: GGUF metadata key '{key}' holds {other:?} among its numbers",
                            self.path.display()
                        ))
                    }),
                })
                .collect::<Result<Vec<_>>>()
                .map(Some),
            Some(other) => Err(input(format!(
                "{}: GGUF metadata key '{key}' holds {}, where an array of numbers is expected",
                self.path.display(),
                short(other)
            ))),
        }
    }

    /// The model's configuration from the metadata (and the shapes the metadata leaves
    /// out), read by the architecture of the registry that reads this
    /// `general.architecture`: one it does not run, a missing key or a shape that
    /// disagrees is an input error naming it.
    pub fn config(&self) -> Result<ModelConfig> {
        let arch = self.architecture()?;
        match crate::model::arch::for_gguf_architecture(&arch) {
            Some(a) => (a.from_gguf)(self, &arch),
            None => crate::bad_input!(
                "{}: general.architecture is '{arch}', which quantbench's own engine does not run; it runs: {}. The llama.cpp engine runs every architecture llama.cpp knows: --engine llama.cpp (a build with --features llama-cpp)",
                self.path.display(),
                crate::model::arch::supported_gguf_architectures()
            ),
        }
    }

    /// What every architecture reads the same way: the vocabulary and width from
    /// `token_embd.weight` (checked against `embedding_length`, `vocab_size` and the
    /// tokenizer's tokens), the layers (checked against the `blk.N.` tensors present),
    /// heads, context, whether the head is tied, and the special ids.
    pub fn common(&self, arch: &str) -> Result<Common> {
        let embd = self.entry("token_embd.weight")?;
        if embd.shape.len() != 2 {
            crate::bad_input!(
                "{}: tensor 'token_embd.weight' has shape {:?}; a [vocab, width] matrix is expected",
                self.path.display(),
                embd.shape
            );
        }
        let (vocab, width) = (embd.shape[0], embd.shape[1]);
        let n_embd = self.kv_usize(arch, Kv::EmbeddingLength)?;
        if width != n_embd {
            crate::bad_input!(
                "{}: tensor 'token_embd.weight' is {:?} but {} = {n_embd}: the shapes disagree with the metadata",
                self.path.display(),
                embd.shape,
                Kv::EmbeddingLength.key(arch)
            );
        }
        if let Some(v) = self.kv_opt_usize(arch, Kv::VocabSize)? {
            if v != vocab {
                crate::bad_input!(
                    "{}: tensor 'token_embd.weight' has {vocab} rows but {} = {v}: the shapes disagree with the metadata",
                    self.path.display(),
                    Kv::VocabSize.key(arch)
                );
            }
        }
        let layers = self.kv_usize(arch, Kv::BlockCount)?;
        self.check_layers(&Kv::BlockCount.key(arch), layers)?;
        if let Some(tokens) = self.str_array("tokenizer.ggml.tokens")? {
            if tokens.len() != vocab {
                crate::bad_input!(
                    "{}: tokenizer.ggml.tokens has {} tokens but tensor 'token_embd.weight' has {vocab} rows: the vocabulary and the embeddings disagree",
                    self.path.display(),
                    tokens.len()
                );
            }
        }
        let (bos, eos) = self.special_ids()?;
        Ok(Common {
            vocab,
            width,
            layers,
            heads: self.kv_usize(arch, Kv::HeadCount)?,
            context: self.kv_usize(arch, Kv::ContextLength)?,
            tied: !self.tensors.contains_key("output.weight"),
            bos,
            eos,
        })
    }

    /// A special id, refused when outside the vocabulary (for architectures whose config
    /// takes it from the file).
    pub fn special_id_within(
        &self,
        which: &str,
        id: Option<usize>,
        vocab: usize,
    ) -> Result<Option<usize>> {
        if let Some(id) = id.filter(|&id| id >= vocab) {
            crate::bad_input!(
                "{}: tokenizer.ggml.{which}_token_id = {id} is outside the vocabulary of {vocab} tokens (valid: 0 to {})",
                self.path.display(),
                vocab - 1
            );
        }
        Ok(id)
    }

    /// `{arch}.{key}` as a whole number (refused naming it when absent).
    pub fn kv_usize(&self, arch: &str, kv: Kv) -> Result<usize> {
        self.req_usize(&kv.key(arch))
    }

    pub fn kv_opt_usize(&self, arch: &str, kv: Kv) -> Result<Option<usize>> {
        self.opt_usize(&kv.key(arch))
    }

    /// `{arch}.{key}` as a finite number (refused naming it when absent).
    pub fn kv_f64(&self, arch: &str, kv: Kv) -> Result<f64> {
        self.req_f64(&kv.key(arch))
    }

    pub fn kv_opt_f64(&self, arch: &str, kv: Kv) -> Result<Option<f64>> {
        self.opt_f64(&kv.key(arch))
    }

    pub fn kv_opt_str(&self, arch: &str, kv: Kv) -> Result<Option<&str>> {
        self.opt_str(&kv.key(arch))
    }

    /// Every `blk.N.` tensor must belong to one of the `layers` layers the metadata
    /// declares (`key`): a tensor of a layer past them means the two disagree.
    fn check_layers(&self, key: &str, layers: usize) -> Result<()> {
        let beyond = self.order.iter().find_map(|name| {
            let n: usize = name.strip_prefix("blk.")?.split('.').next()?.parse().ok()?;
            (n >= layers).then_some((name, n))
        });
        if let Some((name, n)) = beyond {
            let declared = match layers {
                0 => "no layer".to_string(),
                1 => "layer 0 only".to_string(),
                l => format!("layers 0 to {}", l - 1),
            };
            crate::bad_input!(
                "{}: tensor '{name}' belongs to layer {n}, but {key} = {layers} declares {declared}: the metadata and the tensors disagree",
                self.path.display()
            );
        }
        Ok(())
    }

    /// (bos, eos) token ids from the tokenizer metadata.
    pub fn special_ids(&self) -> Result<(Option<usize>, Option<usize>)> {
        Ok((
            self.opt_usize("tokenizer.ggml.bos_token_id")?,
            self.opt_usize("tokenizer.ggml.eos_token_id")?,
        ))
    }
}

fn short(v: &Value) -> String {
    match v {
        Value::Array(a) => format!("an array of {}", a.len()),
        Value::String(s) => format!("the string {s:?}"),
        other => format!("{other:?}"),
    }
}

fn as_i64(v: &Value) -> Option<i64> {
    Some(match v {
        Value::U8(n) => *n as i64,
        Value::I8(n) => *n as i64,
        Value::U16(n) => *n as i64,
        Value::I16(n) => *n as i64,
        Value::U32(n) => *n as i64,
        Value::I32(n) => *n as i64,
        Value::U64(n) => i64::try_from(*n).ok()?,
        Value::I64(n) => *n,
        _ => return None,
    })
}

fn as_u64(v: &Value) -> Option<u64> {
    as_i64(v).and_then(|n| u64::try_from(n).ok())
}

/// A GGUF file as a [`TensorSource`]: canonical names mapped to llama.cpp's by the
/// architecture, rows put back in transformers' order where the file permutes them,
/// float reads dequantized to f32, stored reads kept in the file's type.
pub struct GgufSource {
    pub file: Arc<GgufFile>,
    config: ModelConfig,
}

impl GgufSource {
    pub fn new(file: Arc<GgufFile>, config: &ModelConfig) -> Result<Self> {
        Ok(GgufSource {
            file,
            config: config.clone(),
        })
    }

    fn lookup(&self, canonical: &str) -> Result<String> {
        self.config.gguf_name(canonical).ok_or_else(|| {
            input(format!(
                "{}: quantbench has no GGUF name for tensor '{canonical}'",
                self.file.path.display()
            ))
        })
    }

    /// The GGUF shape (rows, cols as candle orders them) of a canonical tensor: GGUF
    /// holds every matrix `[out, in]`.
    fn gguf_shape(&self, canonical: &str, shape: &[usize]) -> Vec<usize> {
        if self.config.stored_in_out(canonical) {
            vec![shape[1], shape[0]]
        } else {
            shape.to_vec()
        }
    }

    /// A stacked tensor holding `count` slices of `shape` each (`[count, rows, cols]`),
    /// checked; its entry and the slice's shape.
    fn slice_entry(
        &self,
        name: &str,
        shape: &[usize],
        count: usize,
    ) -> Result<(&TensorEntry, Vec<usize>)> {
        let e = self.file.entry(name)?;
        let mut want = vec![count];
        want.extend_from_slice(shape);
        self.file.check_shape(name, &e.shape, &want)?;
        if !e.bytes.is_multiple_of(count.max(1)) {
            crate::bad_input!(
                "{}: tensor '{name}' holds {} bytes, which do not split into {count} slices",
                self.file.path.display(),
                e.bytes
            );
        }
        Ok((e, shape.to_vec()))
    }

    /// The permutation of a tensor's rows, checked against its shape.
    fn permutation(&self, name: &str, rows: usize) -> Result<Option<RopePermutation>> {
        let Some(p) = self.config.gguf_permutation(name) else {
            return Ok(None);
        };
        if !p.fits(rows) {
            crate::bad_input!(
                "{}: tensor '{name}' has {rows} rows, which do not split into {} heads of an even size",
                self.file.path.display(),
                p.heads
            );
        }
        Ok(Some(p))
    }

    /// The stored bytes of a canonical tensor in transformers' row order, its type and
    /// GGUF shape.
    fn stored_bytes(
        &self,
        canonical: &str,
        shape: &[usize],
    ) -> Result<(Vec<u8>, GgmlType, Vec<usize>)> {
        if let Some((name, index, count)) = self.config.gguf_slice(canonical) {
            let (e, want) = self.slice_entry(&name, shape, count)?;
            let per = e.bytes / count;
            let bytes = self.file.read_range(&name, index * per, per)?;
            return Ok((bytes, e.dtype, want));
        }
        let name = self.lookup(canonical)?;
        let want = self.gguf_shape(canonical, shape);
        let e = self.file.entry(&name)?;
        self.file.check_shape(&name, &e.shape, &want)?;
        let dtype = e.dtype;
        let mut bytes = self.file.read_bytes(&name)?;
        let n_rows = want[0];
        if let Some(p) = self.permutation(&name, n_rows)? {
            let row_bytes = bytes.len() / n_rows;
            bytes = reorder_rows(&bytes, n_rows, row_bytes, |r| p.from_file(r, n_rows));
        }
        Ok((bytes, dtype, want))
    }
}

/// Reorder whole rows of `row_bytes` bytes: `out[r] = data[from(r)]`.
pub fn reorder_rows(
    data: &[u8],
    rows: usize,
    row_bytes: usize,
    from: impl Fn(usize) -> usize,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    for r in 0..rows {
        let s = from(r);
        out.extend_from_slice(&data[s * row_bytes..(s + 1) * row_bytes]);
    }
    out
}

/// A stored tensor's bytes as a [`Matrix`] in that type: plain floats as a dense tensor
/// (as precisions f32 / f16 / bf16 keep them), block formats as a [`QTensor`].
pub fn matrix_from_bytes(
    bytes: &[u8],
    ty: GgmlType,
    shape: &[usize],
    device: &Device,
) -> Result<Matrix> {
    let float = match ty {
        GgmlType::F32 => Some(DType::F32),
        GgmlType::F16 => Some(DType::F16),
        GgmlType::Bf16 => Some(DType::BF16),
        _ => None,
    };
    if let Some(dt) = float {
        return Ok(Matrix::Dense(
            Tensor::from_raw_buffer(bytes, dt, shape, &Device::Cpu)?.to_device(device)?,
        ));
    }
    if let Some(dtype) = ty.candle() {
        let storage = QStorage::from_data(std::borrow::Cow::Borrowed(bytes), device, dtype)?;
        return Ok(Matrix::Quantized(Arc::new(QTensor::new(
            storage,
            shape.to_vec(),
        )?)));
    }
    match (crate::format::mxfp4::Lut4::of(ty), shape) {
        (Some(kind), &[out, k]) => {
            if !device.is_cpu() {
                anyhow::bail!(
                    "{ty} matrices run on the CPU only (quantbench has no GPU kernel for them)"
                );
            }
            Ok(Matrix::Custom(Arc::new(
                crate::format::mxfp4::Lut4Matrix::from_bytes(kind, bytes, out, k)?,
            )))
        }
        (None, &[out, k]) if crate::format::ggml_blocks::block(ty).is_some() => {
            if !device.is_cpu() {
                anyhow::bail!(
                    "{ty} matrices run on the CPU only (quantbench has no GPU kernel for them)"
                );
            }
            Ok(Matrix::Custom(crate::format::ggml_blocks::matrix(
                ty, bytes, out, k,
            )?))
        }
        _ => anyhow::bail!("{ty} {shape:?} is not a matrix quantbench's own engine holds"),
    }
}

/// A stored tensor's bytes as f32 values, dequantized as ggml does.
pub fn dequantize_bytes(bytes: &[u8], ty: GgmlType, shape: &[usize]) -> Result<Tensor> {
    if let Some(dtype) = ty.candle() {
        let storage = QStorage::from_data(std::borrow::Cow::Borrowed(bytes), &Device::Cpu, dtype)?;
        return Ok(QTensor::new(storage, shape.to_vec())?.dequantize(&Device::Cpu)?);
    }
    match crate::format::mxfp4::Lut4::of(ty) {
        Some(kind) => {
            let mut out = vec![0f32; shape.iter().product()];
            crate::format::mxfp4::dequantize_lut4(kind, bytes, &mut out);
            Ok(Tensor::from_vec(out, shape, &Device::Cpu)?)
        }
        None if crate::format::ggml_blocks::block(ty).is_some() => {
            let mut out = vec![0f32; shape.iter().product()];
            crate::format::ggml_blocks::dequantize(ty, bytes, &mut out);
            Ok(Tensor::from_vec(out, shape, &Device::Cpu)?)
        }
        None => anyhow::bail!("quantbench's own engine does not read {ty} tensors"),
    }
}

impl TensorSource for GgufSource {
    fn check(&self, name: &str, shape: &[usize]) -> Result<()> {
        if let Some((gname, _, count)) = self.config.gguf_slice(name) {
            return self.slice_entry(&gname, shape, count).map(|_| ());
        }
        let gname = self.lookup(name)?;
        let want = self.gguf_shape(name, shape);
        let e = self.file.entry(&gname)?;
        self.file.check_shape(&gname, &e.shape, &want)?;
        self.permutation(&gname, want[0])?;
        Ok(())
    }

    fn has(&self, name: &str) -> bool {
        self.config
            .gguf_name(name)
            .is_some_and(|n| self.file.tensors.contains_key(&n))
    }

    fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let (bytes, dtype, gshape) = self.stored_bytes(name, shape)?;
        let t = dequantize_bytes(&bytes, dtype, &gshape)?;
        let shift = self.config.gguf_shift(&self.lookup(name)?);
        let t = if shift != 0.0 { (t - shift as f64)? } else { t };
        if self.config.stored_in_out(name) {
            Ok(t.t()?.contiguous()?)
        } else {
            Ok(t)
        }
    }

    fn stored(&self, name: &str, out_in: [usize; 2], device: &Device) -> Result<Option<Matrix>> {
        // out_in is [out, in]; the GGUF holds every matrix [out, in].
        let canonical_shape = if self.config.stored_in_out(name) {
            vec![out_in[1], out_in[0]]
        } else {
            out_in.to_vec()
        };
        let (bytes, dtype, gshape) = self.stored_bytes(name, &canonical_shape)?;
        debug_assert_eq!(gshape, out_in.to_vec());
        Ok(Some(matrix_from_bytes(&bytes, dtype, &gshape, device)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::arch::RopePermutation;

    /// The inverse of llama.cpp's permute: permuting transformers' rows as the converter
    /// does, then reading them back through `from_file`, is the identity; `to_file` is
    /// the converter's own permute.
    #[test]
    fn the_rope_permutation_and_its_inverse_are_llama_cpps() {
        for (rows, heads) in [(8usize, 2usize), (48, 4), (16, 1)] {
            let head_rows = rows / heads;
            let half = head_rows / 2;
            // converter: reshape(heads, 2, half).swapaxes(1, 2): permuted[h, j, s] = hf[h, s, j]
            let hf: Vec<usize> = (0..rows).collect();
            let mut permuted = vec![0; rows];
            for h in 0..heads {
                for j in 0..half {
                    for s in 0..2 {
                        permuted[h * head_rows + j * 2 + s] = hf[h * head_rows + s * half + j];
                    }
                }
            }
            let p = RopePermutation { heads };
            assert!(p.fits(rows));
            let back: Vec<usize> = (0..rows).map(|r| permuted[p.from_file(r, rows)]).collect();
            assert_eq!(back, hf);
            let forward: Vec<usize> = (0..rows).map(|r| hf[p.to_file(r, rows)]).collect();
            assert_eq!(forward, permuted);
        }
    }

    #[test]
    fn names_map_for_every_expected_tensor_of_every_preset() {
        for preset in crate::model::source::synthetic::presets() {
            let cfg = preset.config();
            for (name, _) in cfg.expected_tensors() {
                assert!(
                    cfg.gguf_name(&name).is_some(),
                    "{}: {name} has no GGUF name",
                    preset.name
                );
            }
        }
    }

    #[test]
    fn every_key_of_the_table_has_a_name() {
        assert_eq!(
            Kv::HeadCountKv.key("llama"),
            "llama.attention.head_count_kv"
        );
        assert_eq!(Kv::RopeFreqBase.key("qwen3"), "qwen3.rope.freq_base");
    }
}
