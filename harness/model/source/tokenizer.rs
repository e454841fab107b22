//! One tokenizer type over two implementations: the GPT-2 BPE that tiktoken-rs ships
//! (r50k_base, used by synthetic models, needs no files) and Hugging Face `tokenizers`
//! (tokenizer.json, or vocab.json + merges.txt, for checkpoints on disk).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{Context, Result};
use tiktoken_rs::CoreBPE;

use crate::error::InputError;

/// GPT-2's `<|endoftext|>`.
pub const END_OF_TEXT: u32 = 50256;

/// The size of GPT-2's vocabulary.
pub const GPT2_VOCAB: u32 = 50257;

pub enum Tokenizer {
    /// GPT-2's BPE from tiktoken-rs (r50k_base).
    Gpt2Bpe(Box<CoreBPE>),
    /// A Hugging Face tokenizer loaded from files.
    HuggingFace(Box<tokenizers::Tokenizer>),
    /// Another tokenizer's ids folded into a smaller vocabulary (id mod the size): for
    /// synthetic models whose real tokenizer is not at hand and whose vocabulary is
    /// smaller than GPT-2's.
    Folded(Box<Tokenizer>, u32),
    /// A Hugging Face tokenizer built from a GGUF file's metadata, with what it is and
    /// the BOS id a prompt starts with where the file asks for one (llama.cpp's
    /// `add_bos`: `tokenizer.ggml.add_bos_token`, else the tokenizer model's default).
    Gguf(Box<tokenizers::Tokenizer>, String, Option<u32>),
}

impl Tokenizer {
    /// The real GPT-2 tokenizer, offline.
    pub fn gpt2() -> Result<Self> {
        let bpe = tiktoken_rs::r50k_base().context("building tiktoken-rs' r50k_base")?;
        Ok(Tokenizer::Gpt2Bpe(Box::new(bpe)))
    }

    /// tokenizer.json, else vocab.json + merges.txt, from a model directory.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        use crate::fsutil::{exists_at_all, not_a_regular_file, read_text};
        // Tokenizer files of real models are a few megabytes; 256 MB bounds a hostile one.
        const MAX: u64 = 256 << 20;
        let json = dir.join("tokenizer.json");
        if exists_at_all(&json) {
            let text = read_text(&json, "tokenizer.json", MAX)?;
            let t: tokenizers::Tokenizer = text.parse().map_err(|e| {
                InputError::new(format!(
                    "{}: not a valid tokenizer.json: {e}",
                    json.display()
                ))
            })?;
            return Ok(Tokenizer::HuggingFace(Box::new(t)));
        }
        let (vocab, merges) = (dir.join("vocab.json"), dir.join("merges.txt"));
        if exists_at_all(&vocab) && exists_at_all(&merges) {
            for f in [&vocab, &merges] {
                if let Some(problem) = not_a_regular_file(f) {
                    crate::bad_input!("{} {problem}", f.display());
                }
                let len = std::fs::metadata(f).map(|m| m.len()).unwrap_or(0);
                if len > MAX {
                    crate::bad_input!(
                        "{} is {len} bytes, more than a tokenizer file may be ({MAX})",
                        f.display()
                    );
                }
            }
            return Ok(Tokenizer::HuggingFace(Box::new(from_vocab_merges(
                &vocab, &merges,
            )?)));
        }
        Err(InputError::new(format!(
            "{}: no tokenizer: expected tokenizer.json, or vocab.json and merges.txt",
            dir.display()
        ))
        .into())
    }

    /// This tokenizer's ids folded into a vocabulary of `vocab` ids.
    pub fn folded(self, vocab: u32) -> Self {
        Tokenizer::Folded(Box::new(self), vocab.max(1))
    }

    /// The text's tokens alone, no special token added.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        match self {
            Tokenizer::Folded(t, vocab) => {
                Ok(t.encode(text)?.into_iter().map(|id| id % vocab).collect())
            }
            Tokenizer::Gpt2Bpe(b) => Ok(b.encode_ordinary(text)),
            Tokenizer::HuggingFace(t) | Tokenizer::Gguf(t, _, _) => Ok(t
                .encode(text, false)
                .map_err(|e| anyhow::anyhow!("tokenizing the prompt: {e}"))?
                .get_ids()
                .to_vec()),
        }
    }

    /// The tokens a deployed engine feeds for `text` as a prompt: the special tokens the
    /// model asks for added, as llama.cpp's `llama_tokenize(add_special = true)` adds a
    /// GGUF file's BOS and transformers' `tokenizer(text)` applies tokenizer.json's
    /// post-processor. GPT-2's BPE adds nothing (GPT-2 has no BOS).
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<u32>> {
        match self {
            Tokenizer::Folded(t, vocab) => Ok(t
                .encode_prompt(text)?
                .into_iter()
                .map(|id| id % vocab)
                .collect()),
            Tokenizer::Gpt2Bpe(_) => self.encode(text),
            Tokenizer::HuggingFace(t) => Ok(t
                .encode(text, true)
                .map_err(|e| anyhow::anyhow!("tokenizing the prompt: {e}"))?
                .get_ids()
                .to_vec()),
            Tokenizer::Gguf(_, _, bos) => {
                let mut ids: Vec<u32> = bos.iter().copied().collect();
                ids.extend(self.encode(text)?);
                Ok(ids)
            }
        }
    }

    /// The BOS id a prompt starts with, where the tokenizer adds one (a GGUF file's
    /// tokenizer; see [`Tokenizer::encode_prompt`]).
    pub fn bos(&self) -> Option<u32> {
        match self {
            Tokenizer::Gguf(_, _, bos) => *bos,
            Tokenizer::Folded(t, vocab) => t.bos().map(|b| b % vocab),
            _ => None,
        }
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        match self {
            Tokenizer::Folded(t, _) => t.decode(ids),
            Tokenizer::Gpt2Bpe(b) => {
                // A synthetic model with a larger vocabulary than GPT-2's (Llama 3's
                // 128,256, Qwen's 151,936) generates ids GPT-2 has no text for: each is
                // shown as `<id N>`, between the decoded runs of known ids.
                let mut bytes = Vec::new();
                for run in ids.chunk_by(|a, b| (*a < GPT2_VOCAB) == (*b < GPT2_VOCAB)) {
                    if run[0] < GPT2_VOCAB {
                        bytes.extend(
                            b.decode_bytes(run)
                                .map_err(|e| anyhow::anyhow!("decoding token ids: {e}"))?,
                        );
                    } else {
                        for id in run {
                            bytes.extend(format!("<id {id}>").into_bytes());
                        }
                    }
                }
                Ok(String::from_utf8_lossy(&bytes).into_owned())
            }
            Tokenizer::HuggingFace(t) | Tokenizer::Gguf(t, _, _) => t
                .decode(ids, false)
                .map_err(|e| anyhow::anyhow!("decoding token ids: {e}")),
        }
    }

    pub fn name(&self) -> String {
        match self {
            Tokenizer::Gpt2Bpe(_) => {
                "gpt2 bpe (tiktoken-rs r50k_base; ids beyond its 50,257 shown as <id N>)".into()
            }
            Tokenizer::HuggingFace(_) => "huggingface tokenizers".into(),
            Tokenizer::Gguf(_, what, None) => what.clone(),
            Tokenizer::Gguf(_, what, Some(bos)) => format!("{what}, BOS {bos} first"),
            Tokenizer::Folded(t, vocab) => {
                format!(
                    "{}, ids folded modulo {vocab} (the model's vocab_size)",
                    t.name()
                )
            }
        }
    }
}

/// llama.cpp's pre-tokenizer splits (llama-vocab.cpp) for the `tokenizer.ggml.pre` values
/// quantbench knows, as tokenizers pre-tokenizer JSON. GPT-2's own split is ByteLevel's.
fn gguf_pre_tokenizer(pre: &str) -> Option<serde_json::Value> {
    const LLAMA3: &str = "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
    const QWEN2: &str = "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
    let byte_level = |use_regex: bool| serde_json::json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex});
    let split = |pattern: &str| serde_json::json!({"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": false});
    Some(match pre {
        "gpt-2" | "gpt2" | "default" => byte_level(true),
        "llama-bpe" | "llama3" | "falcon3" => serde_json::json!({
            "type": "Sequence",
            "pretokenizers": [split(LLAMA3), byte_level(false)]
        }),
        "qwen2" => serde_json::json!({
            "type": "Sequence",
            "pretokenizers": [split(QWEN2), byte_level(false)]
        }),
        "smollm" => serde_json::json!({
            "type": "Sequence",
            "pretokenizers": [split("\\p{N}"), byte_level(true)]
        }),
        _ => return None,
    })
}

/// The `tokenizer.ggml.pre` a tokenizers pre-tokenizer JSON corresponds to (the inverse
/// of [`gguf_pre_tokenizer`]), for writing GGUF files.
fn gguf_pre_name(pre: &serde_json::Value) -> Option<&'static str> {
    ["gpt-2", "llama-bpe", "qwen2", "smollm"]
        .into_iter()
        .find(|name| gguf_pre_tokenizer(name).as_ref() == Some(pre))
}

/// Build the tokenizer a GGUF file's metadata describes: `tokenizer.ggml.model` "gpt2"
/// (byte-level BPE from tokens and merges, split as `tokenizer.ggml.pre` says) or "llama"
/// (SentencePiece BPE from tokens and scores, with byte fallback), control tokens as
/// special added tokens, as llama.cpp and transformers' GGUF loader read them.
pub fn from_gguf(file: &crate::model::source::gguf::GgufFile) -> Result<Tokenizer> {
    let path = file.path.display();
    let model = file.req_str("tokenizer.ggml.model")?;
    let tokens = file.str_array("tokenizer.ggml.tokens")?.ok_or_else(|| {
        InputError::new(format!(
            "{path}: GGUF metadata key 'tokenizer.ggml.tokens' is missing"
        ))
    })?;
    let types = file.num_array("tokenizer.ggml.token_type")?;
    if let Some(t) = &types {
        if t.len() != tokens.len() {
            crate::bad_input!(
                "{path}: tokenizer.ggml.token_type has {} entries for {} tokens",
                t.len(),
                tokens.len()
            );
        }
    }
    let type_of = |i: usize| types.as_ref().map(|t| t[i] as i64).unwrap_or(1);
    let mut vocab = serde_json::Map::new();
    let mut added = Vec::new();
    for (i, tok) in tokens.iter().enumerate() {
        vocab.insert(tok.to_string(), i.into());
        let ty = type_of(i);
        if ty == 3 || ty == 4 {
            added.push(serde_json::json!({
                "id": i, "content": tok, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": ty == 3,
            }));
        }
    }
    let (json, what) = match model {
        "gpt2" => {
            let merges = file.str_array("tokenizer.ggml.merges")?.ok_or_else(|| {
                InputError::new(format!(
                    "{path}: GGUF metadata key 'tokenizer.ggml.merges' is missing (a gpt2 tokenizer needs its merges)"
                ))
            })?;
            let pre_name = file.opt_str("tokenizer.ggml.pre")?.unwrap_or("default");
            let (pre, note) = match gguf_pre_tokenizer(pre_name) {
                Some(p) => (p, String::new()),
                None => (
                    gguf_pre_tokenizer("gpt-2").expect("known"),
                    format!(", pre-tokenizer '{pre_name}' unknown to quantbench: GPT-2's split used"),
                ),
            };
            (
                serde_json::json!({
                    "version": "1.0", "truncation": null, "padding": null,
                    "added_tokens": added, "normalizer": null, "pre_tokenizer": pre,
                    "post_processor": null,
                    "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
                    "model": {"type": "BPE", "dropout": null, "unk_token": null,
                              "continuing_subword_prefix": null, "end_of_word_suffix": null,
                              "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                              "vocab": vocab, "merges": merges},
                }),
                format!("gguf gpt2 bpe ({} tokens, {} merges, pre-tokenizer {pre_name}{note})", tokens.len(), merges.len()),
            )
        }
        "llama" => {
            let scores = file.num_array("tokenizer.ggml.scores")?.ok_or_else(|| {
                InputError::new(format!(
                    "{path}: GGUF metadata key 'tokenizer.ggml.scores' is missing (a llama tokenizer needs its scores)"
                ))
            })?;
            if scores.len() != tokens.len() {
                crate::bad_input!(
                    "{path}: tokenizer.ggml.scores has {} entries for {} tokens",
                    scores.len(),
                    tokens.len()
                );
            }
            let merges = spm_merges(&tokens, &scores, &type_of);
            let prefix = match file.metadata.get("tokenizer.ggml.add_space_prefix") {
                Some(candle_core::quantized::gguf_file::Value::Bool(b)) => *b,
                _ => true,
            };
            let unk = tokens
                .iter()
                .enumerate()
                .find(|(i, _)| type_of(*i) == 2)
                .map(|(_, t)| t.to_string());
            let mut normalizers = Vec::new();
            if prefix {
                normalizers.push(serde_json::json!({"type": "Prepend", "prepend": "\u{2581}"}));
            }
            normalizers.push(serde_json::json!({"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"}));
            let mut decoders = vec![
                serde_json::json!({"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "}),
                serde_json::json!({"type": "ByteFallback"}),
                serde_json::json!({"type": "Fuse"}),
            ];
            if prefix {
                decoders.push(serde_json::json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
            }
            (
                serde_json::json!({
                    "version": "1.0", "truncation": null, "padding": null,
                    "added_tokens": added,
                    "normalizer": {"type": "Sequence", "normalizers": normalizers},
                    "pre_tokenizer": null, "post_processor": null,
                    "decoder": {"type": "Sequence", "decoders": decoders},
                    "model": {"type": "BPE", "dropout": null, "unk_token": unk,
                              "continuing_subword_prefix": null, "end_of_word_suffix": null,
                              "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
                              "vocab": vocab, "merges": merges},
                }),
                format!("gguf llama sentencepiece bpe ({} tokens, merges from scores, byte fallback)", tokens.len()),
            )
        }
        other => crate::bad_input!(
            "{path}: tokenizer.ggml.model is '{other}'; quantbench builds gpt2 (byte-level BPE) and llama (SentencePiece) tokenizers"
        ),
    };
    let t: tokenizers::Tokenizer = json.to_string().parse().map_err(|e| {
        InputError::new(format!(
            "{path}: the tokenizer in the GGUF metadata cannot be built: {e}"
        ))
    })?;
    let bos = gguf_bos(file, model, tokens.len())?;
    Ok(Tokenizer::Gguf(Box::new(t), what, bos))
}

/// The BOS id a prompt starts with, as llama.cpp's llama-vocab.cpp decides it: a
/// SentencePiece vocabulary (`llama`) adds one by default, a byte-level BPE (`gpt2`) only
/// for the pre-tokenizers that ask for it (llama3 and its kin, tekken, chameleon);
/// `tokenizer.ggml.add_bos_token` overrides either. The id is
/// `tokenizer.ggml.bos_token_id`, else llama.cpp's default (1 for SentencePiece, 11 for
/// BPE).
fn gguf_bos(
    file: &crate::model::source::gguf::GgufFile,
    model: &str,
    n_tokens: usize,
) -> Result<Option<u32>> {
    use candle_core::quantized::gguf_file::Value;
    let path = file.path.display();
    let pre = file.opt_str("tokenizer.ggml.pre")?.unwrap_or("default");
    let default = match model {
        "llama" => true,
        _ => matches!(
            pre,
            "llama3"
                | "llama-v3"
                | "llama-bpe"
                | "falcon3"
                | "falcon-h1"
                | "pixtral"
                | "midm-2.0"
                | "lfm2"
                | "tekken"
                | "chameleon"
        ),
    };
    let add = match file.metadata.get("tokenizer.ggml.add_bos_token") {
        None => default,
        Some(Value::Bool(b)) => *b,
        Some(other) => crate::bad_input!(
            "{path}: tokenizer.ggml.add_bos_token holds a {}, where a bool is expected",
            crate::model::source::gguf_header::type_of(other)
        ),
    };
    if !add {
        return Ok(None);
    }
    let id = file
        .opt_usize("tokenizer.ggml.bos_token_id")?
        .unwrap_or(if model == "llama" { 1 } else { 11 });
    if id >= n_tokens {
        crate::bad_input!(
            "{path}: the tokenizer adds a BOS token first, but its id {id} is outside the {n_tokens} tokens of tokenizer.ggml.tokens"
        );
    }
    Ok(Some(id as u32))
}

/// SentencePiece BPE merges recovered from the vocabulary and its scores, as transformers'
/// `SentencePieceExtractor` does: every split of a token into two known pieces is a merge,
/// merges ranked by the merged token's score (highest first), ties by the pieces' ids.
/// Merges as pairs (`[left, right]`), not `"left right"` strings: a SentencePiece piece
/// may hold a space (Gemma 3's vocabulary does), which the string form cannot carry.
fn spm_merges(tokens: &[&str], scores: &[f64], type_of: &dyn Fn(usize) -> i64) -> Vec<[String; 2]> {
    let ids: HashMap<&str, usize> = tokens.iter().enumerate().map(|(i, t)| (*t, i)).collect();
    let mut merges: Vec<(f64, usize, usize, usize)> = Vec::new();
    for (i, tok) in tokens.iter().enumerate() {
        if !matches!(type_of(i), 1 | 4) {
            continue;
        }
        let bounds: Vec<usize> = tok.char_indices().map(|(b, _)| b).skip(1).collect();
        let mut local = Vec::new();
        for b in bounds {
            let (l, r) = tok.split_at(b);
            if let (Some(&li), Some(&ri)) = (ids.get(l), ids.get(r)) {
                local.push((scores[i], i, li, ri));
            }
        }
        local.sort_by_key(|&(_, _, l, r)| (l, r));
        merges.extend(local);
    }
    merges.sort_by(|a, b| b.0.total_cmp(&a.0));
    merges
        .into_iter()
        .map(|(_, _, l, r)| [tokens[l].to_string(), tokens[r].to_string()])
        .collect()
}

/// What a GGUF file's tokenizer keys hold: the model ("gpt2"), the pre-tokenizer name,
/// tokens, their types (1 normal, 3 control, 5 unused) and merges.
pub struct GgufVocab {
    pub model: &'static str,
    pub pre: &'static str,
    pub tokens: Vec<String>,
    pub types: Vec<i32>,
    pub merges: Vec<String>,
}

impl Tokenizer {
    /// This tokenizer as GGUF tokenizer keys for a model of `vocab_size` ids: a byte-level
    /// BPE's tokens and merges (ids the tokenizer lacks padded as `[PADn]`, unused, as
    /// llama.cpp's converter does). GPT-2's BPE folded into a smaller vocabulary is
    /// written as GPT-2's first `vocab_size` tokens and the merges that make them.
    pub fn gguf_vocab(&self, vocab_size: usize) -> Result<GgufVocab> {
        let (mut tokens, mut types, merges, pre) = match self {
            Tokenizer::Gpt2Bpe(_) | Tokenizer::Folded(..) => {
                let (tokens, merges) = gpt2_tokens_merges()?;
                let keep = match self {
                    Tokenizer::Folded(_, n) => (*n as usize).min(tokens.len()),
                    _ => tokens.len(),
                };
                let types: Vec<i32> = (0..keep)
                    .map(|i| if i as u32 == END_OF_TEXT { 3 } else { 1 })
                    .collect();
                // Merge m makes token 256 + m.
                let merges = merges.into_iter().take(keep.saturating_sub(256)).collect();
                (tokens[..keep].to_vec(), types, merges, "gpt-2")
            }
            Tokenizer::HuggingFace(t) | Tokenizer::Gguf(t, _, _) => {
                let json: serde_json::Value = serde_json::from_str(
                    &t.to_string(false)
                        .map_err(|e| anyhow::anyhow!("serializing the tokenizer: {e}"))?,
                )?;
                let model = &json["model"];
                if model["type"] != "BPE" || model["byte_fallback"] == true {
                    crate::bad_input!(
                        "export --format gguf writes byte-level BPE tokenizers (GPT-2, Llama 3, Qwen, SmolLM); this model's tokenizer is a {} model{}",
                        model["type"].as_str().unwrap_or("?"),
                        if model["byte_fallback"] == true { " with byte fallback (SentencePiece)" } else { "" }
                    );
                }
                let pre = gguf_pre_name(&json["pre_tokenizer"]).ok_or_else(|| {
                    InputError::new(format!(
                        "export --format gguf: this tokenizer's pre-tokenizer ({}) is not one llama.cpp knows by name (gpt-2, llama-bpe, qwen2, smollm)",
                        json["pre_tokenizer"]
                    ))
                })?;
                let mut by_id: Vec<Option<String>> = Vec::new();
                let mut types_by_id: Vec<i32> = Vec::new();
                let mut put = |id: usize, tok: &str, ty: i32| {
                    if by_id.len() <= id {
                        by_id.resize(id + 1, None);
                        types_by_id.resize(id + 1, 5);
                    }
                    by_id[id] = Some(tok.to_string());
                    types_by_id[id] = ty;
                };
                for (tok, id) in model["vocab"].as_object().into_iter().flatten() {
                    if let Some(id) = id.as_u64() {
                        put(id as usize, tok, 1);
                    }
                }
                for a in json["added_tokens"].as_array().into_iter().flatten() {
                    if let (Some(id), Some(tok)) = (a["id"].as_u64(), a["content"].as_str()) {
                        put(id as usize, tok, if a["special"] == true { 3 } else { 4 });
                    }
                }
                let merges: Vec<String> = model["merges"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|m| match m {
                        serde_json::Value::String(s) => Some(s.clone()),
                        serde_json::Value::Array(p) => {
                            Some(format!("{} {}", p.first()?.as_str()?, p.get(1)?.as_str()?))
                        }
                        _ => None,
                    })
                    .collect();
                let tokens: Vec<String> = by_id
                    .into_iter()
                    .enumerate()
                    .map(|(i, t)| t.unwrap_or_else(|| format!("[PAD{i}]")))
                    .collect();
                (tokens, types_by_id, merges, pre)
            }
        };
        if tokens.len() > vocab_size {
            crate::bad_input!(
                "the tokenizer has {} tokens, more than the model's vocab_size {vocab_size}",
                tokens.len()
            );
        }
        while tokens.len() < vocab_size {
            tokens.push(format!("[PAD{}]", tokens.len()));
            types.push(5);
        }
        Ok(GgufVocab {
            model: "gpt2",
            pre,
            tokens,
            types,
            merges,
        })
    }
}

/// GPT-2's tokens by id and merges in rank order, from tiktoken-rs' r50k_base.
fn gpt2_tokens_merges() -> Result<(Vec<String>, Vec<String>)> {
    let bpe = tiktoken_rs::r50k_base().context("building r50k_base")?;
    let table = bytes_to_unicode();
    let show = |bytes: &[u8]| bytes.iter().map(|&b| table[b as usize]).collect::<String>();
    let mut ranks: HashMap<Vec<u8>, u32> = HashMap::new();
    let mut by_rank = Vec::with_capacity(END_OF_TEXT as usize);
    for r in 0..END_OF_TEXT {
        let bytes = bpe
            .decode_bytes(&[r])
            .map_err(|e| anyhow::anyhow!("r50k_base has no token {r}: {e}"))?;
        ranks.insert(bytes.clone(), r);
        by_rank.push(bytes);
    }
    let mut tokens = Vec::with_capacity(GPT2_VOCAB as usize);
    let mut merges = Vec::new();
    for (r, bytes) in by_rank.iter().enumerate() {
        tokens.push(show(bytes));
        if bytes.len() > 1 {
            let parts = bpe_with_max_rank(&ranks, bytes, r as u32);
            anyhow::ensure!(
                parts.len() == 2,
                "token {r} does not split into one merge ({} parts)",
                parts.len()
            );
            merges.push(format!("{} {}", show(&parts[0]), show(&parts[1])));
        }
    }
    tokens.push("<|endoftext|>".to_string());
    Ok((tokens, merges))
}

fn from_vocab_merges(vocab: &Path, merges: &Path) -> Result<tokenizers::Tokenizer> {
    use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
    use tokenizers::models::bpe::BPE;
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    let bpe = BPE::from_file(&vocab.to_string_lossy(), &merges.to_string_lossy())
        .build()
        .map_err(|e| {
            InputError::new(format!(
                "{} / {}: not a valid BPE vocabulary and merges: {e}",
                vocab.display(),
                merges.display()
            ))
        })?;
    let mut t = tokenizers::Tokenizer::new(bpe);
    t.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
    t.with_decoder(Some(ByteLevelDecoder::default()));
    Ok(t)
}

/// GPT-2's reversible map from bytes to printable characters (as in its encoder.py).
fn bytes_to_unicode() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..=255u32 {
        let printable =
            (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
        table[b as usize] = if printable {
            char::from_u32(b).expect("latin-1")
        } else {
            n += 1;
            char::from_u32(255 + n).expect("valid code point")
        };
    }
    table
}

/// Writes GPT-2's vocab.json, merges.txt and tokenizer.json into `dir`, rebuilt from
/// tiktoken-rs' r50k_base ranks (each merge recovered by running BPE on a token with
/// the ranks below its own, as transformers' tiktoken converter does).
pub fn write_gpt2_files(dir: &Path) -> Result<()> {
    let (tokens, merge_list) = gpt2_tokens_merges()?;
    let vocab: BTreeMap<String, u32> = tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| (t, i as u32))
        .collect();
    let mut merges = String::from("#version: 0.2\n");
    for m in merge_list {
        merges.push_str(&m);
        merges.push('\n');
    }
    let vocab_path = dir.join("vocab.json");
    let merges_path = dir.join("merges.txt");
    std::fs::write(&vocab_path, serde_json::to_string(&vocab)?)
        .with_context(|| format!("writing {}", vocab_path.display()))?;
    std::fs::write(&merges_path, merges)
        .with_context(|| format!("writing {}", merges_path.display()))?;
    let mut t = from_vocab_merges(&vocab_path, &merges_path)?;
    t.add_special_tokens([tokenizers::AddedToken::from("<|endoftext|>", true)])
        .map_err(|e| anyhow::anyhow!("adding <|endoftext|>: {e}"))?;
    let json_path = dir.join("tokenizer.json");
    t.save(&json_path, false)
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", json_path.display()))?;
    let config = serde_json::json!({
        "model_max_length": 1024,
        "bos_token": "<|endoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "add_prefix_space": false,
        "tokenizer_class": "GPT2Tokenizer"
    });
    std::fs::write(
        dir.join("tokenizer_config.json"),
        serde_json::to_string_pretty(&config)?,
    )?;
    Ok(())
}

fn bpe_with_max_rank(ranks: &HashMap<Vec<u8>, u32>, token: &[u8], max_rank: u32) -> Vec<Vec<u8>> {
    let mut parts: Vec<Vec<u8>> = token.iter().map(|&b| vec![b]).collect();
    loop {
        let mut best: Option<(usize, u32)> = None;
        for i in 0..parts.len().saturating_sub(1) {
            let joined = [parts[i].as_slice(), parts[i + 1].as_slice()].concat();
            if let Some(&r) = ranks.get(&joined) {
                if best.is_none_or(|(_, br)| r < br) {
                    best = Some((i, r));
                }
            }
        }
        match best {
            Some((i, r)) if r < max_rank => {
                let right = parts.remove(i + 1);
                parts[i].extend(right);
            }
            _ => return parts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpt2_bpe_round_trips_and_knows_famous_ids() {
        let t = Tokenizer::gpt2().unwrap();
        let ids = t.encode("Once upon a time").unwrap();
        assert_eq!(ids, vec![7454, 2402, 257, 640]);
        assert_eq!(t.decode(&ids).unwrap(), "Once upon a time");
        assert_eq!(t.decode(&[END_OF_TEXT]).unwrap(), "<|endoftext|>");
        // Ids beyond GPT-2's vocabulary (a synthetic Llama 3 generates them) are shown,
        // not refused, and the known ones around them still decode.
        assert_eq!(
            t.decode(&[7454, 90555, 128000, 2402]).unwrap(),
            "Once<id 90555><id 128000> upon"
        );
        // Folded into a small vocabulary: every id stays below it.
        let folded = Tokenizer::gpt2().unwrap().folded(1000);
        assert!(folded
            .encode("Once upon a time")
            .unwrap()
            .iter()
            .all(|&id| id < 1000));
        assert!(folded.name().contains("folded modulo 1000"));
    }

    #[test]
    fn exported_files_tokenize_like_tiktoken() {
        let dir = tempfile::tempdir().unwrap();
        write_gpt2_files(dir.path()).unwrap();
        let hf = Tokenizer::from_dir(dir.path()).unwrap();
        std::fs::remove_file(dir.path().join("tokenizer.json")).unwrap();
        let vm = Tokenizer::from_dir(dir.path()).unwrap();
        let tk = Tokenizer::gpt2().unwrap();
        for text in [
            "Once upon a time",
            "Hello, world! It's 2026 and the café's naïve ümlaut costs €3.50.\n\n  indented\tcode();",
            "    many   spaces   ",
        ] {
            let want = tk.encode(text).unwrap();
            assert_eq!(hf.encode(text).unwrap(), want, "tokenizer.json on {text:?}");
            assert_eq!(vm.encode(text).unwrap(), want, "vocab+merges on {text:?}");
            assert_eq!(hf.decode(&want).unwrap(), text);
        }
    }
}
