//! Computing an importance matrix as llama-imatrix does (tools/imatrix/imatrix.cpp's
//! `compute_imatrix`): the text tokenized as the model is prompted (its BOS where it
//! asks for one), at least two chunks of `ctx` tokens, each chunk run from an empty
//! cache with its first token replaced by the BOS, every block matrix's inputs summed
//! squared per column (and per expert) by the model's own products
//! ([`crate::format::imatrix::Collector`]); written in llama-imatrix's GGUF form, which
//! llama-quantize (and quantbench's `--imatrix`) read.

use std::path::Path;
use std::sync::Arc;

use anyhow::Result;
use candle_core::Device;

use crate::format::imatrix::Collector;
use crate::model::{self, Cache, ModelSource};
use crate::precision::{Precision, Quantization};

/// What an importance-matrix computation did.
#[derive(Debug, Clone, PartialEq)]
pub struct ImatrixRun {
    /// Chunks of `ctx` tokens run.
    pub chunks: usize,
    pub ctx: usize,
    /// Tokens the text gave (all chunks are cut from them).
    pub text_tokens: usize,
    /// Tensors with statistics.
    pub tensors: usize,
}

/// The importance matrix of `source` over `text` (named `dataset` in the file), in
/// chunks of `ctx` tokens (at most `max_chunks`), written to `out`. The model runs as
/// the source stores it (a GGUF file's own types; f32 for the rest), as llama-imatrix
/// runs the file it is given.
pub fn compute(
    source: &mut ModelSource,
    text: &str,
    dataset: &str,
    (ctx, max_chunks): (usize, Option<usize>),
    process_output: bool,
    out: &Path,
) -> Result<ImatrixRun> {
    if ctx < 16 {
        crate::bad_input!(
            "--ctx {ctx}: llama-imatrix collects batches of 16 tokens or more; give at least 16"
        );
    }
    if max_chunks == Some(0) {
        crate::bad_input!(
            "--chunks 0: at least one chunk is needed; leave it out for as many as the text gives"
        );
    }
    let limit = source.config.context_length();
    if ctx > limit {
        crate::bad_input!("--ctx {ctx} is longer than the model's context ({limit} tokens)");
    }
    let collector = Arc::new(Collector::new(process_output));
    source.collect = Some(collector.clone());
    let precision = if source.gguf().is_some() {
        Precision::Native
    } else {
        Precision::F32
    };
    let loaded = model::load(source, Quantization::new(precision), &Device::Cpu)?;
    let tokens = loaded.tokenizer.encode_prompt(text)?;
    if tokens.len() < 2 * ctx {
        crate::bad_input!(
            "the text gives {} tokens; llama-imatrix needs at least two chunks of --ctx {ctx} ({} tokens): give a longer text or a smaller --ctx",
            tokens.len(),
            2 * ctx
        );
    }
    let bos = loaded.tokenizer.bos();
    let chunks = (tokens.len() / ctx)
        .min(max_chunks.unwrap_or(usize::MAX))
        .max(1);
    for c in 0..chunks {
        crate::run::interrupt::check()?;
        let mut ids = tokens[c * ctx..(c + 1) * ctx].to_vec();
        if let Some(b) = bos {
            ids[0] = b;
        }
        let mut cache = Cache::new(loaded.config(), ctx);
        let h = loaded.model.hidden(&ids, &mut cache)?;
        if process_output {
            loaded.model.logits(&h)?;
        }
    }
    if collector.is_empty() {
        anyhow::bail!("no block matrix was multiplied: nothing to write");
    }
    if let Some(name) = collector.non_finite() {
        anyhow::bail!(
            "non-finite activations reached {name}: no importance matrix written (llama-imatrix stops likewise)"
        );
    }
    let (meta, tensors) = collector.gguf(&[dataset.to_string()], chunks, ctx);
    crate::model::write::gguf::write_f32_gguf(out, &meta, &tensors)?;
    Ok(ImatrixRun {
        chunks,
        ctx,
        text_tokens: tokens.len(),
        tensors: tensors.len() / 2,
    })
}
