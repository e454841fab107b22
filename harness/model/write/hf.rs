//! Writes a model out in the Hugging Face layout (config.json, model.safetensors with
//! the architecture's canonical keys — the hub's gpt2 layout, transformers' Llama-architecture
//! layout — and tokenizer files), so that other tools — transformers, llama.cpp's
//! converter — can run the very same weights side by side.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::model::source::spec::{ModelSource, WeightFiles};
use crate::model::source::synthetic::SyntheticSource;
use crate::model::source::tokenizer;
use crate::model::source::weights::{SafetensorsSource, TensorSource};

/// Write `source` as f32 safetensors plus config and tokenizer files into `dir`.
///
/// Every file is written whole or not at all: all of them are first written into a
/// staging folder inside `dir` (same file system), then each is renamed into place, so an
/// interrupted export (a signal, a full disk) leaves no partial file under a final name.
/// `dir` must not be the source model's own folder (its weights are memory-mapped while
/// they are read), and must be empty unless `force` is given. A stop request
/// ([`crate::run::interrupt`]) is honoured between tensors; the caller installs the handler.
pub fn export(source: &ModelSource, dir: &Path, force: bool) -> Result<()> {
    check_destination(source, dir, force)?;
    let created = !crate::fsutil::exists_at_all(dir);
    crate::fsutil::create_output_dir(dir)?;
    let result = (|| -> Result<()> {
        let staging = crate::fsutil::PartDir::create(dir, "export")?;
        let written = write_files(source, staging.path())?;
        for name in &written {
            let (from, to) = (staging.path().join(name), dir.join(name));
            std::fs::rename(&from, &to).with_context(|| {
                format!("moving {} into place as {}", from.display(), to.display())
            })?;
        }
        Ok(())
    })();
    if result.is_err() && created {
        // A refused or failed export leaves no folder of its own behind (only an empty
        // one is removed: the staging folder is gone by now).
        let _ = std::fs::remove_dir(dir);
    }
    result
}

/// Refuse a destination that is the source's own folder, or that holds files, unless
/// asked to replace them.
fn check_destination(source: &ModelSource, dir: &Path, force: bool) -> Result<()> {
    let canonical = |p: &Path| -> Option<PathBuf> {
        // The destination may not exist yet: canonicalize the nearest ancestor that does.
        let mut rest = Vec::new();
        let mut cur = p.to_path_buf();
        loop {
            if let Ok(c) = cur.canonicalize() {
                return Some(
                    rest.iter()
                        .rev()
                        .fold(c, |acc: PathBuf, part| acc.join(part)),
                );
            }
            rest.push(cur.file_name()?.to_owned());
            cur = cur.parent()?.to_path_buf();
            if cur.as_os_str().is_empty() {
                cur = PathBuf::from(".");
            }
        }
    };
    let dest = canonical(dir);
    let mut source_dirs: Vec<PathBuf> = source.tokenizer_dir.iter().cloned().collect();
    if let WeightFiles::Safetensors(paths) = &source.weights {
        source_dirs.extend(
            paths
                .iter()
                .filter_map(|p| p.parent().map(Path::to_path_buf)),
        );
    }
    for s in &source_dirs {
        if dest.is_some() && canonical(s) == dest {
            crate::bad_input!(
                "refusing to export {} onto itself: --out {} is the folder the model is read from; choose another folder",
                source.display_name,
                dir.display()
            );
        }
    }
    if let Ok(mut entries) = std::fs::read_dir(dir) {
        if entries.next().is_some() && !force {
            crate::bad_input!(
                "--out {} is not empty; export into a new or empty folder, or pass --force to replace the files export writes ({})",
                dir.display(),
                EXPORTED.join(", ")
            );
        }
    }
    Ok(())
}

/// The files an export may write (the tokenizer files present depend on the source).
pub const EXPORTED: [&str; 8] = [
    "model.safetensors",
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "vocab.json",
    "merges.txt",
    "tokenizer_config.json",
    "README.md",
];

/// The tokenizer files an export carries over (those the source has).
const TOKENIZER_FILES: [&str; 4] = [
    "tokenizer.json",
    "vocab.json",
    "merges.txt",
    "tokenizer_config.json",
];

/// Write every file into `dir` (a fresh staging folder); returns their names.
fn write_files(source: &ModelSource, dir: &Path) -> Result<Vec<&'static str>> {
    let cfg = &source.config;
    let tensors = cfg.expected_tensors();
    if let Some(why) = cfg.config_json_cannot_state() {
        crate::bad_input!("{}: {why}", source.display_name);
    }
    let src: Box<dyn TensorSource> = match &source.weights {
        WeightFiles::Synthetic { seed } => Box::new(SyntheticSource::new(cfg.clone(), *seed)),
        WeightFiles::Safetensors(paths) => Box::new(SafetensorsSource::open(paths, cfg)?),
        WeightFiles::Gguf(file) => Box::new(crate::model::source::gguf::GgufSource::new(
            file.clone(),
            cfg,
        )?),
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
    let file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    let mut out = BufWriter::new(file);
    let writing =
        |e: std::io::Error| anyhow::Error::new(e).context(format!("writing {}", path.display()));
    out.write_all(&(head.len() as u64).to_le_bytes())
        .map_err(writing)?;
    out.write_all(&head).map_err(writing)?;
    // Then each tensor, generated or read one at a time.
    for (name, shape) in &tensors {
        crate::run::interrupt::check()?;
        let t = src.get(name, shape)?.flatten_all()?.to_vec1::<f32>()?;
        let bytes: Vec<u8> = t.iter().flat_map(|v| v.to_le_bytes()).collect();
        out.write_all(&bytes).map_err(writing)?;
    }
    let file = out.into_inner().map_err(|e| writing(e.into_error()))?;
    file.sync_all().map_err(writing)?;
    let mut written = vec!["model.safetensors"];

    let mut put = |name: &'static str, bytes: &[u8]| -> Result<()> {
        let p = dir.join(name);
        std::fs::write(&p, bytes).with_context(|| format!("writing {}", p.display()))?;
        written.push(name);
        Ok(())
    };
    put(
        "config.json",
        serde_json::to_string_pretty(&cfg.to_json())?.as_bytes(),
    )?;
    let mut generation = serde_json::Map::new();
    let (bos, eos) = (cfg.bos_token_id(), cfg.eos_token_id());
    if let Some(id) = bos {
        generation.insert("bos_token_id".into(), id.into());
    }
    if let Some(id) = eos {
        generation.insert("eos_token_id".into(), id.into());
    }
    put(
        "generation_config.json",
        serde_json::to_string_pretty(&generation)?.as_bytes(),
    )?;
    if source.is_synthetic() {
        let vocab = cfg.vocab_size();
        let tokenizer_note = if cfg.tokenizer_is_gpt2s() {
            String::new()
        } else if vocab < tokenizer::GPT2_VOCAB as usize {
            format!(
                " Its tokenizer files are GPT-2's (the real model's tokenizer is not at hand offline); quantbench folds GPT-2's ids into this model's {vocab} ids (id mod {vocab}), other tools do not, so feed them token ids below {vocab}."
            )
        } else {
            " Its tokenizer files are GPT-2's (the real model's tokenizer is not at hand offline): every GPT-2 id is below this model's vocabulary size.".to_string()
        };
        put(
            "README.md",
            format!(
                "# {}\n\nSynthetic {} model ({}) written by quantbench: the real architecture and shapes, weights drawn from a seed with transformers' initialisation. Its text is noise; its memory and speed are those of the real shapes.{tokenizer_note}\n",
                source.display_name,
                cfg.architecture(),
                cfg.to_json()["architectures"][0].as_str().unwrap_or("?"),
            )
            .as_bytes(),
        )?;
    }
    if let Some(file) = source.gguf() {
        let json = dir.join("tokenizer.json");
        match file.tokenizer()? {
            tokenizer::Tokenizer::Gguf(t, _, _) => t
                .save(&json, false)
                .map_err(|e| anyhow::anyhow!("writing {}: {e}", json.display()))?,
            _ => unreachable!("a GGUF file's tokenizer is built from its metadata"),
        }
        written.push("tokenizer.json");
        return Ok(written);
    }
    match &source.tokenizer_dir {
        None => {
            tokenizer::write_gpt2_files(dir)?;
            for f in TOKENIZER_FILES {
                if dir.join(f).is_file() {
                    written.push(f);
                }
            }
        }
        Some(from) => {
            for f in TOKENIZER_FILES {
                if from.join(f).is_file() {
                    std::fs::copy(from.join(f), dir.join(f))
                        .with_context(|| format!("copying {}", from.join(f).display()))?;
                    written.push(f);
                }
            }
        }
    }
    Ok(written)
}
