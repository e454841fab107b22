//! Writes a model out in the Hugging Face layout (config.json, model.safetensors in the
//! hub's gpt2 key layout, tokenizer files), so that other tools — transformers,
//! llama.cpp's converter — can run the very same weights side by side.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{Context, Result};

use crate::model::spec::{ModelSource, WeightFiles};
use crate::model::synthetic::SyntheticSource;
use crate::model::tokenizer;
use crate::model::weights::{expected_tensors, SafetensorsSource, TensorSource};

/// Write `source` as f32 safetensors plus config and tokenizer files into `dir`.
pub fn export(source: &ModelSource, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let cfg = &source.config;
    let tensors = expected_tensors(cfg);
    let src: Box<dyn TensorSource> = match &source.weights {
        WeightFiles::Synthetic { seed } => Box::new(SyntheticSource::new(cfg.clone(), *seed)),
        WeightFiles::Safetensors(paths) => Box::new(SafetensorsSource::open(paths)?),
    };

    // The header first: every tensor's dtype, shape and byte range, padded to 8 bytes.
    let mut header = serde_json::Map::new();
    let mut meta = serde_json::Map::new();
    meta.insert("format".into(), "pt".into());
    meta.insert("quantbench_source".into(), source.spec.to_string().into());
    header.insert("__metadata__".into(), meta.into());
    let mut offset = 0usize;
    for (name, shape) in &tensors {
        let bytes = shape.iter().product::<usize>() * 4;
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + bytes]}),
        );
        offset += bytes;
    }
    let mut head = serde_json::to_string(&header)?.into_bytes();
    while head.len() % 8 != 0 {
        head.push(b' ');
    }
    let path = dir.join("model.safetensors");
    let mut out = BufWriter::new(
        File::create(&path).with_context(|| format!("creating {}", path.display()))?,
    );
    out.write_all(&(head.len() as u64).to_le_bytes())?;
    out.write_all(&head)?;
    // Then each tensor, generated or read one at a time.
    for (name, shape) in &tensors {
        let t = src.get(name, shape)?.flatten_all()?.to_vec1::<f32>()?;
        for v in t {
            out.write_all(&v.to_le_bytes())?;
        }
    }
    out.flush()
        .with_context(|| format!("writing {}", path.display()))?;

    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(&cfg.to_json())?,
    )?;
    std::fs::write(
        dir.join("generation_config.json"),
        r#"{"bos_token_id": 50256, "eos_token_id": 50256}"#,
    )?;
    match &source.tokenizer_dir {
        None => tokenizer::write_gpt2_files(dir)?,
        Some(from) => {
            for f in [
                "tokenizer.json",
                "vocab.json",
                "merges.txt",
                "tokenizer_config.json",
            ] {
                if from.join(f).is_file() && from != dir {
                    std::fs::copy(from.join(f), dir.join(f))?;
                }
            }
        }
    }
    if source.is_synthetic() {
        std::fs::write(
            dir.join("README.md"),
            format!(
                "# {}\n\nSynthetic GPT-2 written by quantbench: the real architecture and shapes, weights drawn from a seed with GPT-2's initialisation. Its text is noise; its memory and speed are those of the real shapes.\n",
                source.display_name
            ),
        )?;
    }
    Ok(())
}
