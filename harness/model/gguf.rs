//! GGUF files in: the header read and checked by [`crate::model::gguf_header`], the
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
use candle_core::quantized::{GgmlDType, QStorage, QTensor};
use candle_core::{DType, Device, Tensor};

use crate::error::InputError;
use crate::model::arch::ModelConfig;
use crate::model::nn::Matrix;
use crate::model::weights::TensorSource;

/// The architectures (`general.architecture`) quantbench runs from a GGUF file.
pub const SUPPORTED_ARCHITECTURES: &str =
    "gpt2, llama (Llama 2/3, Mistral, TinyLlama, SmolLM), qwen2, qwen3";

/// The tensor types candle reads (and so quantbench runs), as llama.cpp names them.
pub const SUPPORTED_TYPES: &str =
    "F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K";

/// ggml's tensor type ids and names (ggml.h), for messages about types candle lacks.
const GGML_TYPE_NAMES: &[(u32, &str)] = &[
    (0, "F32"),
    (1, "F16"),
    (2, "Q4_0"),
    (3, "Q4_1"),
    (6, "Q5_0"),
    (7, "Q5_1"),
    (8, "Q8_0"),
    (9, "Q8_1"),
    (10, "Q2_K"),
    (11, "Q3_K"),
    (12, "Q4_K"),
    (13, "Q5_K"),
    (14, "Q6_K"),
    (15, "Q8_K"),
    (16, "IQ2_XXS"),
    (17, "IQ2_XS"),
    (18, "IQ3_XXS"),
    (19, "IQ1_S"),
    (20, "IQ4_NL"),
    (21, "IQ3_S"),
    (22, "IQ2_S"),
    (23, "IQ4_XS"),
    (24, "I8"),
    (25, "I16"),
    (26, "I32"),
    (27, "I64"),
    (28, "F64"),
    (29, "IQ1_M"),
    (30, "BF16"),
    (34, "TQ1_0"),
    (35, "TQ2_0"),
    (39, "MXFP4"),
    (40, "NVFP4"),
    (41, "Q1_0"),
    (42, "Q2_0"),
];

/// Whether `id` is one of ggml's tensor types (ggml.h), retired ones aside.
pub fn is_ggml_type(id: u32) -> bool {
    GGML_TYPE_NAMES.iter().any(|(i, _)| *i == id)
}

/// ggml's name for a tensor type id.
pub fn ggml_type_name(id: u32) -> String {
    GGML_TYPE_NAMES
        .iter()
        .find(|(i, _)| *i == id)
        .map(|(_, n)| n.to_string())
        .unwrap_or_else(|| format!("type {id}"))
}

/// How quantbench names a stored type (as [`Matrix::format`] does): f32, f16, bf16, q8_0,
/// q4k ...
pub fn format_name(dtype: GgmlDType) -> String {
    match dtype {
        GgmlDType::F32 => "f32".into(),
        GgmlDType::F16 => "f16".into(),
        GgmlDType::BF16 => "bf16".into(),
        other => format!("{other:?}").to_lowercase(),
    }
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
    pub dtype: GgmlDType,
    pub shape: Vec<usize>,
    /// Absolute offset of the data in the file.
    pub start: u64,
    pub bytes: usize,
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
    /// Open and check a GGUF file: magic, version, header ([`crate::model::gguf_header`]:
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
        let header = crate::model::gguf_header::read(&file, file_len)
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
                    crate::model::gguf_header::type_of(v),
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
        self.tensors.values().any(|t| {
            t.shape.len() == 2
                && !matches!(t.dtype, GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16)
        })
    }

    /// Stored types by elements, most common first: "q4k+q6k+f32".
    pub fn stored_dtypes(&self) -> Vec<String> {
        crate::model::weights::dtypes_by_elements(
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
        let mut buf = vec![0u8; e.bytes];
        let mut f = self.file.lock().expect("the file lock is never poisoned");
        f.seek(SeekFrom::Start(e.start))?;
        f.read_exact(&mut buf)
            .with_context(|| format!("{}: reading tensor '{name}'", self.path.display()))?;
        Ok(buf)
    }

    /// A tensor as candle's [`QTensor`] in its stored type, `shape` checked.
    pub fn qtensor(&self, name: &str, shape: &[usize]) -> Result<QTensor> {
        let e = self.entry(name)?;
        self.check_shape(name, &e.shape, shape)?;
        let bytes = self.read_bytes(name)?;
        let storage =
            QStorage::from_data(std::borrow::Cow::Borrowed(&bytes), &Device::Cpu, e.dtype)?;
        Ok(QTensor::new(storage, shape.to_vec())?)
    }

    fn check_shape(&self, name: &str, found: &[usize], want: &[usize]) -> Result<()> {
        if found != want {
            crate::bad_input!(
                "{}: tensor '{name}' has shape {found:?}, but the GGUF metadata implies {want:?}",
                self.path.display()
            );
        }
        Ok(())
    }

    /// The tokenizer the metadata describes (see [`crate::model::tokenizer`]).
    pub fn tokenizer(&self) -> Result<crate::model::tokenizer::Tokenizer> {
        crate::model::tokenizer::from_gguf(self)
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
    /// out), checked as a config.json is: an architecture quantbench does not run, a
    /// missing key or a shape that disagrees is an input error naming it.
    pub fn config(&self) -> Result<ModelConfig> {
        let arch = self.architecture()?;
        if !matches!(arch.as_str(), "gpt2" | "llama" | "qwen2" | "qwen3") {
            crate::bad_input!(
                "{}: general.architecture is '{arch}', which quantbench does not run; it runs: {SUPPORTED_ARCHITECTURES}",
                self.path.display()
            );
        }
        let origin = format!("{} (GGUF metadata)", self.path.display());
        let key = |k: &str| format!("{arch}.{k}");
        let embd = self.entry("token_embd.weight")?;
        if embd.shape.len() != 2 {
            crate::bad_input!(
                "{}: tensor 'token_embd.weight' has shape {:?}; a [vocab, width] matrix is expected",
                self.path.display(),
                embd.shape
            );
        }
        let (vocab, width) = (embd.shape[0], embd.shape[1]);
        let n_embd = self.req_usize(&key("embedding_length"))?;
        if width != n_embd {
            crate::bad_input!(
                "{}: tensor 'token_embd.weight' is {:?} but {} = {n_embd}: the shapes disagree with the metadata",
                self.path.display(),
                embd.shape,
                key("embedding_length")
            );
        }
        if let Some(v) = self.opt_usize(&key("vocab_size"))? {
            if v != vocab {
                crate::bad_input!(
                    "{}: tensor 'token_embd.weight' has {vocab} rows but {} = {v}: the shapes disagree with the metadata",
                    self.path.display(),
                    key("vocab_size")
                );
            }
        }
        let layers = self.req_usize(&key("block_count"))?;
        self.check_layers(&key("block_count"), layers)?;
        let heads = self.req_usize(&key("attention.head_count"))?;
        let context = self.req_usize(&key("context_length"))?;
        let tied = !self.tensors.contains_key("output.weight");
        if let Some(tokens) = self.str_array("tokenizer.ggml.tokens")? {
            if tokens.len() != vocab {
                crate::bad_input!(
                    "{}: tokenizer.ggml.tokens has {} tokens but tensor 'token_embd.weight' has {vocab} rows: the vocabulary and the embeddings disagree",
                    self.path.display(),
                    tokens.len()
                );
            }
        }
        let ids = self.special_ids()?;
        // The Llama family's config takes its BOS and EOS from here (GPT-2's are its own
        // <|endoftext|>: llama.cpp's converter writes 50256 for it even where a model's
        // vocabulary is cut shorter, and quantbench does not read them).
        if arch != "gpt2" {
            for (k, id) in [("bos", ids.0), ("eos", ids.1)] {
                if let Some(id) = id.filter(|&id| id >= vocab) {
                    crate::bad_input!(
                        "{}: tokenizer.ggml.{k}_token_id = {id} is outside the vocabulary of {vocab} tokens (valid: 0 to {})",
                        self.path.display(),
                        vocab - 1
                    );
                }
            }
        }
        let value = match arch.as_str() {
            "gpt2" => {
                // llama.cpp's converter writes feed_forward_length = 4 * width whatever
                // n_inner is; the MLP's own shape is the truth.
                let up = self.entry("blk.0.ffn_up.weight")?;
                serde_json::json!({
                    "model_type": "gpt2",
                    "vocab_size": vocab,
                    "n_positions": context,
                    "n_embd": n_embd,
                    "n_layer": layers,
                    "n_head": heads,
                    "n_inner": up.shape[0],
                    "layer_norm_epsilon": self.req_f64(&key("attention.layer_norm_epsilon"))?,
                    "activation_function": "gelu_new",
                    "tie_word_embeddings": tied,
                })
            }
            "llama" | "qwen2" | "qwen3" => {
                let head_dim = match self.opt_usize(&key("attention.key_length"))? {
                    Some(k) => k,
                    None => n_embd / heads.max(1),
                };
                if let Some(v) = self.opt_usize(&key("attention.value_length"))? {
                    if v != head_dim {
                        crate::bad_input!(
                            "{}: {} = {v} differs from the key length {head_dim}; quantbench runs models whose keys and values have one head size",
                            self.path.display(),
                            key("attention.value_length")
                        );
                    }
                }
                if let Some(r) = self.opt_usize(&key("rope.dimension_count"))? {
                    if r != head_dim {
                        crate::bad_input!(
                            "{}: {} = {r} rotates part of each head of {head_dim}; quantbench runs fully rotated heads only",
                            self.path.display(),
                            key("rope.dimension_count")
                        );
                    }
                }
                let scaling = match self.opt_str(&key("rope.scaling.type"))? {
                    None | Some("none") => serde_json::Value::Null,
                    Some("linear") => serde_json::json!({
                        "type": "linear",
                        "factor": self.req_f64(&key("rope.scaling.factor"))?,
                    }),
                    Some(other) => crate::bad_input!(
                        "{}: {} = '{other}' is not supported; supported: none, linear (and llama3 factors in rope_freqs.weight)",
                        self.path.display(),
                        key("rope.scaling.type")
                    ),
                };
                let mut v = serde_json::json!({
                    "model_type": arch,
                    "vocab_size": vocab,
                    "hidden_size": n_embd,
                    "intermediate_size": self.req_usize(&key("feed_forward_length"))?,
                    "num_hidden_layers": layers,
                    "num_attention_heads": heads,
                    "num_key_value_heads": self.opt_usize(&key("attention.head_count_kv"))?.unwrap_or(heads),
                    "head_dim": head_dim,
                    "max_position_embeddings": context,
                    "rms_norm_eps": self.req_f64(&key("attention.layer_norm_rms_epsilon"))?,
                    "rope_theta": self.opt_f64(&key("rope.freq_base"))?.unwrap_or(10000.0),
                    "rope_scaling": scaling,
                    "hidden_act": "silu",
                    "tie_word_embeddings": tied,
                    "bos_token_id": ids.0,
                    "eos_token_id": ids.1,
                });
                let o = v.as_object_mut().expect("an object");
                if arch != "qwen2" {
                    o.insert(
                        "attention_bias".into(),
                        self.tensors.contains_key("blk.0.attn_q.bias").into(),
                    );
                }
                if arch == "llama" {
                    o.insert(
                        "mlp_bias".into(),
                        self.tensors.contains_key("blk.0.ffn_up.bias").into(),
                    );
                }
                v
            }
            other => crate::bad_input!(
                "{}: general.architecture is '{other}', which quantbench does not run; it runs: {SUPPORTED_ARCHITECTURES}",
                self.path.display()
            ),
        };
        let mut config = ModelConfig::from_json(&value.to_string(), &origin)?;
        if let ModelConfig::Llama(c) = &mut config {
            if self.tensors.contains_key("rope_freqs.weight") {
                let t = self.qtensor("rope_freqs.weight", &[c.head_dim / 2])?;
                c.rope_freq_factors = Some(t.dequantize(&Device::Cpu)?.to_vec1::<f32>()?);
            }
        }
        Ok(config)
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

/// How a canonical tensor's stored rows relate to transformers' order.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Rows {
    AsStored,
    /// llama.cpp's q/k permutation for `heads` heads.
    Permuted {
        heads: usize,
    },
}

/// A GGUF file as a [`TensorSource`]: canonical (transformers) names mapped to llama.cpp's,
/// float reads dequantized to f32, stored reads kept in the file's type.
pub struct GgufSource {
    pub file: Arc<GgufFile>,
    gpt2: bool,
    /// The Llama architecture (not Qwen): q/k rows are permuted in the file.
    permuted: bool,
    n_head: usize,
    n_kv_head: usize,
}

impl GgufSource {
    pub fn new(file: Arc<GgufFile>, config: &ModelConfig) -> Result<Self> {
        let arch = file.architecture()?;
        Ok(GgufSource {
            gpt2: matches!(config, ModelConfig::Gpt2(_)),
            permuted: arch == "llama",
            n_head: config.n_head(),
            n_kv_head: config.n_kv_head(),
            file,
        })
    }

    fn locate(&self, canonical: &str) -> Option<(String, Rows)> {
        let name = if self.gpt2 {
            gpt2_gguf_name(canonical)?
        } else {
            llama_gguf_name(canonical)?
        };
        let rows = if self.permuted && (name.contains(".attn_q.") || name.contains(".attn_k.")) {
            let heads = if name.contains(".attn_q.") {
                self.n_head
            } else {
                self.n_kv_head
            };
            Rows::Permuted { heads }
        } else {
            Rows::AsStored
        };
        Some((name, rows))
    }

    fn lookup(&self, canonical: &str) -> Result<(String, Rows)> {
        self.locate(canonical).ok_or_else(|| {
            input(format!(
                "{}: quantbench has no GGUF name for tensor '{canonical}'",
                self.file.path.display()
            ))
        })
    }

    /// The GGUF shape (rows, cols as candle orders them) of a canonical tensor.
    fn gguf_shape(&self, canonical: &str, shape: &[usize]) -> Vec<usize> {
        if self.gpt2 && is_gpt2_conv1d(canonical) {
            vec![shape[1], shape[0]]
        } else {
            shape.to_vec()
        }
    }
}

/// GPT-2's Conv1D weights (stored `[in, out]` by transformers, `[out, in]` in GGUF).
fn is_gpt2_conv1d(canonical: &str) -> bool {
    canonical.ends_with(".weight")
        && (canonical.contains(".attn.c_attn.")
            || canonical.contains(".attn.c_proj.")
            || canonical.contains(".mlp.c_fc.")
            || canonical.contains(".mlp.c_proj."))
}

/// llama.cpp's name for a canonical GPT-2 tensor.
pub fn gpt2_gguf_name(canonical: &str) -> Option<String> {
    let fixed = match canonical {
        "wte.weight" => Some("token_embd.weight"),
        "wpe.weight" => Some("position_embd.weight"),
        "lm_head.weight" => Some("output.weight"),
        "ln_f.weight" => Some("output_norm.weight"),
        "ln_f.bias" => Some("output_norm.bias"),
        _ => None,
    };
    if let Some(f) = fixed {
        return Some(f.to_string());
    }
    let rest = canonical.strip_prefix("h.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (module, kind) = rest.rsplit_once('.')?;
    let to = match module {
        "ln_1" => "attn_norm",
        "attn.c_attn" => "attn_qkv",
        "attn.c_proj" => "attn_output",
        "ln_2" => "ffn_norm",
        "mlp.c_fc" => "ffn_up",
        "mlp.c_proj" => "ffn_down",
        _ => return None,
    };
    Some(format!("blk.{layer}.{to}.{kind}"))
}

/// llama.cpp's name for a canonical Llama-family tensor.
pub fn llama_gguf_name(canonical: &str) -> Option<String> {
    let fixed = match canonical {
        "model.embed_tokens.weight" => Some("token_embd.weight"),
        "lm_head.weight" => Some("output.weight"),
        "model.norm.weight" => Some("output_norm.weight"),
        "rope_freqs.weight" => Some("rope_freqs.weight"),
        _ => None,
    };
    if let Some(f) = fixed {
        return Some(f.to_string());
    }
    let rest = canonical.strip_prefix("model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (module, kind) = rest.rsplit_once('.')?;
    let to = match module {
        "input_layernorm" => "attn_norm",
        "self_attn.q_proj" => "attn_q",
        "self_attn.k_proj" => "attn_k",
        "self_attn.v_proj" => "attn_v",
        "self_attn.o_proj" => "attn_output",
        "self_attn.q_norm" => "attn_q_norm",
        "self_attn.k_norm" => "attn_k_norm",
        "post_attention_layernorm" => "ffn_norm",
        "mlp.gate_proj" => "ffn_gate",
        "mlp.up_proj" => "ffn_up",
        "mlp.down_proj" => "ffn_down",
        _ => return None,
    };
    Some(format!("blk.{layer}.{to}.{kind}"))
}

/// Row `r` of transformers' order is row `source_row(r)` of llama.cpp's permuted order
/// (`permute` in llama.cpp's converter: within each head, the first half of the rows
/// interleaved with the second half).
pub fn unpermuted_source_row(r: usize, rows: usize, heads: usize) -> usize {
    let head_rows = rows / heads;
    let half = head_rows / 2;
    let (h, within) = (r / head_rows, r % head_rows);
    let (s, j) = (within / half, within % half);
    h * head_rows + 2 * j + s
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

impl GgufSource {
    /// The stored bytes of a canonical tensor in transformers' row order, its type and
    /// GGUF shape.
    fn stored_bytes(
        &self,
        canonical: &str,
        shape: &[usize],
    ) -> Result<(Vec<u8>, GgmlDType, Vec<usize>)> {
        let (name, rows) = self.lookup(canonical)?;
        let want = self.gguf_shape(canonical, shape);
        let e = self.file.entry(&name)?;
        self.file.check_shape(&name, &e.shape, &want)?;
        let dtype = e.dtype;
        let mut bytes = self.file.read_bytes(&name)?;
        if let Rows::Permuted { heads } = rows {
            let n_rows = want[0];
            let head_rows = n_rows / heads.max(1);
            if heads == 0 || !n_rows.is_multiple_of(heads) || !head_rows.is_multiple_of(2) {
                crate::bad_input!(
                    "{}: tensor '{name}' has {n_rows} rows, which do not split into {heads} heads of an even size",
                    self.file.path.display()
                );
            }
            let row_bytes = bytes.len() / n_rows;
            bytes = reorder_rows(&bytes, n_rows, row_bytes, |r| {
                unpermuted_source_row(r, n_rows, heads)
            });
        }
        Ok((bytes, dtype, want))
    }
}

/// A stored tensor's bytes as a [`Matrix`] in that type: plain floats as a dense tensor
/// (as precisions f32 / f16 / bf16 keep them), block formats as a [`QTensor`].
pub fn matrix_from_bytes(
    bytes: &[u8],
    dtype: GgmlDType,
    shape: &[usize],
    device: &Device,
) -> Result<Matrix> {
    let float = match dtype {
        GgmlDType::F32 => Some(DType::F32),
        GgmlDType::F16 => Some(DType::F16),
        GgmlDType::BF16 => Some(DType::BF16),
        _ => None,
    };
    Ok(match float {
        Some(dt) => Matrix::Dense(
            Tensor::from_raw_buffer(bytes, dt, shape, &Device::Cpu)?.to_device(device)?,
        ),
        None => {
            let storage = QStorage::from_data(std::borrow::Cow::Borrowed(bytes), device, dtype)?;
            Matrix::Quantized(Arc::new(QTensor::new(storage, shape.to_vec())?))
        }
    })
}

impl TensorSource for GgufSource {
    fn check(&self, name: &str, shape: &[usize]) -> Result<()> {
        let (gname, rows) = self.lookup(name)?;
        let want = self.gguf_shape(name, shape);
        let e = self.file.entry(&gname)?;
        self.file.check_shape(&gname, &e.shape, &want)?;
        if let Rows::Permuted { heads } = rows {
            let n_rows = want[0];
            if heads == 0 || !n_rows.is_multiple_of(heads) || !(n_rows / heads).is_multiple_of(2) {
                crate::bad_input!(
                    "{}: tensor '{gname}' has {n_rows} rows, which do not split into {heads} heads of an even size",
                    self.file.path.display()
                );
            }
        }
        Ok(())
    }

    fn has(&self, name: &str) -> bool {
        self.locate(name)
            .is_some_and(|(n, _)| self.file.tensors.contains_key(&n))
    }

    fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let (bytes, dtype, gshape) = self.stored_bytes(name, shape)?;
        let storage = QStorage::from_data(std::borrow::Cow::Borrowed(&bytes), &Device::Cpu, dtype)?;
        let t = QTensor::new(storage, gshape)?.dequantize(&Device::Cpu)?;
        if self.gpt2 && is_gpt2_conv1d(name) {
            Ok(t.t()?.contiguous()?)
        } else {
            Ok(t)
        }
    }

    fn stored(&self, name: &str, out_in: [usize; 2], device: &Device) -> Result<Option<Matrix>> {
        // out_in is [out, in]; the GGUF holds every matrix [out, in].
        let canonical_shape = if self.gpt2 && is_gpt2_conv1d(name) {
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

    /// The inverse of llama.cpp's permute: permuting transformers' rows as the converter
    /// does, then reading them back through `unpermuted_source_row`, is the identity.
    #[test]
    fn unpermute_inverts_llama_cpp_permute() {
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
            let back: Vec<usize> = (0..rows)
                .map(|r| permuted[unpermuted_source_row(r, rows, heads)])
                .collect();
            assert_eq!(back, hf);
        }
    }

    #[test]
    fn names_map_both_ways_for_every_expected_tensor() {
        for preset in ["tiny", "tiny-llama"] {
            let cfg = crate::model::synthetic::Preset::find(preset)
                .unwrap()
                .config();
            for (name, _) in cfg.expected_tensors() {
                let mapped = match cfg {
                    ModelConfig::Gpt2(_) => gpt2_gguf_name(&name),
                    ModelConfig::Llama(_) => llama_gguf_name(&name),
                };
                assert!(mapped.is_some(), "{preset}: {name} has no GGUF name");
            }
        }
    }
}
