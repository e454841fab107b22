//! GGUF files out: `quantbench export --format gguf --precision P` writes the very blocks
//! quantbench measures at P (the same [`Builder`] path a run loads through), with the
//! architecture's metadata and the tokenizer, in the layout llama.cpp's converter writes
//! (its tensor names, the Llama architecture's q/k rows permuted for its rotation, GPT-2's
//! matrices `[out, in]`), so that llama.cpp loads and runs the identical weights.
//!
//! The file is GGUF version 3 with 32-byte alignment, written into a temporary file next
//! to the destination and renamed into place once complete.

use std::collections::BTreeMap;
use std::io::{BufWriter, Seek, Write};
use std::path::{Path, PathBuf};

use crate::format::GgmlType;
use anyhow::{Context, Result};
use candle_core::{DType, Device};

use crate::model::arch::ModelConfig;
use crate::model::nn::Matrix;
use crate::model::source::gguf::{reorder_rows, GgufSource};
use crate::model::source::spec::{ModelSource, WeightFiles};
use crate::model::source::synthetic::SyntheticSource;
use crate::model::source::weights::{Builder, SafetensorsSource, TensorSource};
use crate::precision::{Policy, Precision, Quantization};

const ALIGNMENT: u64 = 32;

/// A metadata value as GGUF stores it.
#[derive(Debug, Clone)]
pub enum Meta {
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    Str(String),
    Strs(Vec<String>),
    I32s(Vec<i32>),
    F32s(Vec<f32>),
    /// A value copied from another GGUF file as candle read it.
    Raw(candle_core::quantized::gguf_file::Value),
}

fn write_str(w: &mut impl Write, s: &str) -> std::io::Result<()> {
    w.write_all(&(s.len() as u64).to_le_bytes())?;
    w.write_all(s.as_bytes())
}

fn write_raw(w: &mut impl Write, v: &candle_core::quantized::gguf_file::Value) -> Result<()> {
    use candle_core::quantized::gguf_file::Value as V;
    match v {
        V::U8(x) => w.write_all(&x.to_le_bytes())?,
        V::I8(x) => w.write_all(&x.to_le_bytes())?,
        V::U16(x) => w.write_all(&x.to_le_bytes())?,
        V::I16(x) => w.write_all(&x.to_le_bytes())?,
        V::U32(x) => w.write_all(&x.to_le_bytes())?,
        V::I32(x) => w.write_all(&x.to_le_bytes())?,
        V::U64(x) => w.write_all(&x.to_le_bytes())?,
        V::I64(x) => w.write_all(&x.to_le_bytes())?,
        V::F32(x) => w.write_all(&x.to_le_bytes())?,
        V::F64(x) => w.write_all(&x.to_le_bytes())?,
        V::Bool(x) => w.write_all(&[u8::from(*x)])?,
        V::String(s) => write_str(w, s)?,
        V::Array(items) => {
            let ty = items.first().map(raw_type).unwrap_or(4);
            w.write_all(&ty.to_le_bytes())?;
            w.write_all(&(items.len() as u64).to_le_bytes())?;
            for it in items {
                anyhow::ensure!(raw_type(it) == ty, "a GGUF array mixes value types");
                write_raw(w, it)?;
            }
        }
    }
    Ok(())
}

fn raw_type(v: &candle_core::quantized::gguf_file::Value) -> u32 {
    use candle_core::quantized::gguf_file::Value as V;
    match v {
        V::U8(_) => 0,
        V::I8(_) => 1,
        V::U16(_) => 2,
        V::I16(_) => 3,
        V::U32(_) => 4,
        V::I32(_) => 5,
        V::F32(_) => 6,
        V::Bool(_) => 7,
        V::String(_) => 8,
        V::Array(_) => 9,
        V::U64(_) => 10,
        V::I64(_) => 11,
        V::F64(_) => 12,
    }
}

impl Meta {
    fn type_id(&self) -> u32 {
        match self {
            Meta::U32(_) => 4,
            Meta::I32(_) => 5,
            Meta::F32(_) => 6,
            Meta::Bool(_) => 7,
            Meta::Str(_) => 8,
            Meta::Strs(_) | Meta::I32s(_) | Meta::F32s(_) => 9,
            Meta::Raw(v) => raw_type(v),
        }
    }

    fn write(&self, w: &mut impl Write) -> Result<()> {
        match self {
            Meta::U32(x) => w.write_all(&x.to_le_bytes())?,
            Meta::I32(x) => w.write_all(&x.to_le_bytes())?,
            Meta::F32(x) => w.write_all(&x.to_le_bytes())?,
            Meta::Bool(x) => w.write_all(&[u8::from(*x)])?,
            Meta::Str(s) => write_str(w, s)?,
            Meta::Strs(v) => {
                w.write_all(&8u32.to_le_bytes())?;
                w.write_all(&(v.len() as u64).to_le_bytes())?;
                for s in v {
                    write_str(w, s)?;
                }
            }
            Meta::I32s(v) => {
                w.write_all(&5u32.to_le_bytes())?;
                w.write_all(&(v.len() as u64).to_le_bytes())?;
                for x in v {
                    w.write_all(&x.to_le_bytes())?;
                }
            }
            Meta::F32s(v) => {
                w.write_all(&6u32.to_le_bytes())?;
                w.write_all(&(v.len() as u64).to_le_bytes())?;
                for x in v {
                    w.write_all(&x.to_le_bytes())?;
                }
            }
            Meta::Raw(v) => write_raw(w, v)?,
        }
        Ok(())
    }
}

/// ggml's type id of a stored format.
pub fn ggml_type_id(ty: GgmlType) -> u32 {
    ty.id()
}

/// A matrix's stored bytes and its ggml type.
pub fn matrix_bytes(m: &Matrix) -> Result<(Vec<u8>, GgmlType)> {
    Ok(match m {
        Matrix::Custom(w) => match w.ggml() {
            Some((ty, bytes)) => (bytes.to_vec(), ty),
            None => anyhow::bail!(
                "{} has no GGUF type: export a GGUF at a ggml or float precision",
                w.format()
            ),
        },
        Matrix::Quantized(q) => (q.data()?.into_owned(), GgmlType::of(q.dtype())),
        Matrix::Interleaved(w) => (w.stored_bytes(), w.kind()),
        Matrix::Dense(t) => {
            let t = t.to_device(&Device::Cpu)?.flatten_all()?;
            match t.dtype() {
                DType::F32 => (
                    t.to_vec1::<f32>()?
                        .iter()
                        .flat_map(|v| v.to_le_bytes())
                        .collect(),
                    GgmlType::F32,
                ),
                DType::F16 => (
                    t.to_vec1::<half::f16>()?
                        .iter()
                        .flat_map(|v| v.to_le_bytes())
                        .collect(),
                    GgmlType::F16,
                ),
                DType::BF16 => (
                    t.to_vec1::<half::bf16>()?
                        .iter()
                        .flat_map(|v| v.to_le_bytes())
                        .collect(),
                    GgmlType::Bf16,
                ),
                other => anyhow::bail!("a dense matrix in {other:?} has no GGUF type"),
            }
        }
    })
}

/// llama.cpp's `general.file_type` for a precision made uniformly by quantbench (the
/// k-quants as their _S mixes, which are the uniform ones).
fn file_type_id(p: Precision) -> Option<u32> {
    match p {
        Precision::Mix(m) => Some(m.llama_ftype()),
        _ => p.format().and_then(|f| f.file_type()),
    }
}

/// What an export wrote: bytes by stored type, and notes (fallbacks, what was dropped).
#[derive(Debug, Clone, Default)]
pub struct GgufExport {
    pub tensors: usize,
    pub bytes_by_type: BTreeMap<String, usize>,
    pub file_bytes: u64,
    pub notes: Vec<String>,
}

/// Refuse a destination that is not a .gguf path, exists (unless `force`), or is the
/// source file itself.
fn check_destination(source: &ModelSource, path: &Path, force: bool) -> Result<()> {
    if !crate::model::source::gguf::is_gguf_path(path) {
        crate::bad_input!(
            "--out {}: a GGUF export is one file; name it with the .gguf extension",
            path.display()
        );
    }
    if let Some(f) = source.gguf() {
        let same = matches!(
            (path.canonicalize(), f.path.canonicalize()),
            (Ok(out), Ok(src)) if out == src
        );
        if same {
            crate::bad_input!(
                "refusing to export {} onto itself: --out {} is the file the model is read from",
                source.display_name,
                path.display()
            );
        }
    }
    if crate::fsutil::exists_at_all(path) {
        if let Some(problem) = crate::fsutil::not_a_regular_file(path) {
            crate::bad_input!(
                "--out {} {problem}; a GGUF export writes one regular file: name a file ending in .gguf",
                path.display()
            );
        }
        if !force {
            crate::bad_input!(
                "--out {} exists; choose another file name, or pass --force to replace it",
                path.display()
            );
        }
    }
    Ok(())
}

/// A GGUF file of f32 tensors (shapes in candle's order) and metadata at `path`,
/// written into a part file renamed into place when complete (an importance matrix).
pub fn write_f32_gguf(
    path: &Path,
    meta: &[(String, Meta)],
    tensors: &[(String, Vec<usize>, Vec<f32>)],
) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    crate::fsutil::create_output_dir(&dir)?;
    let tmp = crate::fsutil::PartFile::create(&dir, "gguf")?;
    let written = (|| -> std::io::Result<()> {
        let mut w = BufWriter::new(tmp.file());
        w.write_all(b"GGUF")?;
        w.write_all(&3u32.to_le_bytes())?;
        w.write_all(&(tensors.len() as u64).to_le_bytes())?;
        w.write_all(&(meta.len() as u64).to_le_bytes())?;
        for (k, v) in meta {
            write_str(&mut w, k)?;
            w.write_all(&v.type_id().to_le_bytes())?;
            v.write(&mut w).map_err(std::io::Error::other)?;
        }
        let mut offset = 0u64;
        for (name, shape, vals) in tensors {
            write_str(&mut w, name)?;
            w.write_all(&(shape.len() as u32).to_le_bytes())?;
            for d in shape.iter().rev() {
                w.write_all(&(*d as u64).to_le_bytes())?;
            }
            w.write_all(&ggml_type_id(GgmlType::F32).to_le_bytes())?;
            w.write_all(&offset.to_le_bytes())?;
            offset += (vals.len() as u64 * 4).div_ceil(ALIGNMENT) * ALIGNMENT;
        }
        let pos = w.stream_position()?;
        w.write_all(&vec![
            0u8;
            (pos.div_ceil(ALIGNMENT) * ALIGNMENT - pos) as usize
        ])?;
        for (_, _, vals) in tensors {
            let bytes: Vec<u8> = vals.iter().flat_map(|x| x.to_le_bytes()).collect();
            let padded = (bytes.len() as u64).div_ceil(ALIGNMENT) * ALIGNMENT;
            w.write_all(&bytes)?;
            w.write_all(&vec![0u8; (padded - bytes.len() as u64) as usize])?;
        }
        w.flush()
    })();
    written
        .with_context(|| format!("writing {} (for {})", tmp.path().display(), path.display()))?;
    tmp.persist(path)?;
    Ok(())
}

/// Write `source` at `q` as a GGUF file at `path`.
pub fn export_gguf(
    source: &ModelSource,
    q: Quantization,
    path: &Path,
    force: bool,
) -> Result<GgufExport> {
    check_destination(source, path, force)?;
    crate::model::check_source_precision(source, q)?;
    if q.precision != Precision::Native
        && !matches!(q.precision, Precision::Mix(_))
        && q.precision.format().is_none_or(|f| f.ggml_type().is_none())
    {
        crate::bad_input!(
            "--precision {}: {} has no GGUF type (it is {}'s format, not llama.cpp's); export a GGUF at f32, f16, bf16, a ggml block format or native",
            q.precision,
            q.precision,
            q.precision.family().name()
        );
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    crate::fsutil::create_output_dir(&dir)?;
    let cfg = &source.config;
    let src: Box<dyn TensorSource> = match &source.weights {
        WeightFiles::Synthetic { seed } => Box::new(SyntheticSource::new(cfg.clone(), *seed)),
        WeightFiles::Safetensors(paths) => Box::new(SafetensorsSource::open(paths, cfg)?),
        WeightFiles::Gguf(file) => Box::new(GgufSource::new(file.clone(), cfg)?),
    };
    let device = Device::Cpu;
    let src = crate::model::source::weights::WithExtras {
        inner: src.as_ref(),
        imatrix: source.imatrix.as_deref(),
        collector: None,
    };
    let mut builder = Builder::new(&src, q, &device, &**cfg)?;
    let mut out = GgufExport {
        notes: cfg.gguf_notes(),
        ..Default::default()
    };
    // Tensor data first, into a scratch file beside the destination; the header (which
    // holds every offset) is written after, then the data appended.
    let mut data = tempfile::tempfile_in(&dir)
        .map_err(|e| crate::InputError::new(format!("cannot write into {}: {e}", dir.display())))?;
    let infos =
        write_tensors(cfg, q, &mut builder, &mut data, &mut out).map_err(|e| match e
            .downcast::<std::io::Error>()
        {
            Ok(io) => anyhow::anyhow!(
                "writing the export's tensor data to a scratch file in {} (for {}): {io}",
                dir.display(),
                path.display()
            ),
            Err(e) => e,
        })?;
    out.notes.extend(builder.notes());
    let meta = metadata(source, q)?;
    let tmp = crate::fsutil::PartFile::create(&dir, "export")?;
    let written = (|| -> std::io::Result<()> {
        let mut w = BufWriter::new(tmp.file());
        w.write_all(b"GGUF")?;
        w.write_all(&3u32.to_le_bytes())?;
        w.write_all(&(infos.len() as u64).to_le_bytes())?;
        w.write_all(&(meta.len() as u64).to_le_bytes())?;
        for (k, v) in &meta {
            write_str(&mut w, k)?;
            w.write_all(&v.type_id().to_le_bytes())?;
            v.write(&mut w).map_err(std::io::Error::other)?;
        }
        for (name, shape, ty, off) in &infos {
            write_str(&mut w, name)?;
            w.write_all(&(shape.len() as u32).to_le_bytes())?;
            for d in shape.iter().rev() {
                w.write_all(&(*d as u64).to_le_bytes())?;
            }
            w.write_all(&ty.to_le_bytes())?;
            w.write_all(&off.to_le_bytes())?;
        }
        let pos = w.stream_position()?;
        let pad = pos.div_ceil(ALIGNMENT) * ALIGNMENT - pos;
        w.write_all(&vec![0u8; pad as usize])?;
        data.rewind()?;
        std::io::copy(&mut data, &mut w)?;
        w.flush()
    })();
    written.with_context(|| {
        format!(
            "writing {} (the export to {}, renamed into place when complete)",
            tmp.path().display(),
            path.display()
        )
    })?;
    out.file_bytes = tmp.file().metadata()?.len();
    tmp.persist(path)?;
    Ok(out)
}

/// A tensor directory entry: llama.cpp's name, shape (candle's order), ggml type id and
/// offset in the data section.
type Info = (String, Vec<usize>, u32, u64);

/// Every tensor of `cfg` at `q`, as the loader stores it, written (padded to the
/// alignment) into `data` in llama.cpp's names and row order; the directory entries.
fn write_tensors(
    cfg: &ModelConfig,
    q: Quantization,
    builder: &mut Builder,
    data: &mut std::fs::File,
    out: &mut GgufExport,
) -> Result<Vec<Info>> {
    let mut infos: Vec<Info> = Vec::new();
    let mut offset = 0u64;
    let mut push = |name: String, shape: Vec<usize>, bytes: &[u8], dtype: GgmlType| -> Result<()> {
        let padded = (bytes.len() as u64).div_ceil(ALIGNMENT) * ALIGNMENT;
        data.write_all(bytes)?;
        data.write_all(&vec![0u8; (padded - bytes.len() as u64) as usize])?;
        infos.push((name, shape, ggml_type_id(dtype), offset));
        offset += padded;
        *out.bytes_by_type
            .entry(crate::model::source::gguf::format_name(dtype))
            .or_default() += bytes.len();
        out.tensors += 1;
        Ok(())
    };
    let f32_bytes =
        |vals: &[f32]| -> Vec<u8> { vals.iter().flat_map(|x| x.to_le_bytes()).collect() };
    // A stacked tensor's slices so far (a mixture of experts' `ffn_gate_exps`): they
    // come in order, one expert after another, and go out whole with the last.
    let mut stack: Option<(String, Vec<u8>, GgmlType, Vec<usize>)> = None;
    for (name, shape) in cfg.expected_tensors() {
        crate::run::interrupt::check()?;
        let gname = cfg
            .gguf_name(&name)
            .with_context(|| format!("no GGUF name for tensor {name}"))?;
        let (bytes, dtype, gshape) = if shape.len() == 2 {
            let quantize = (!cfg.is_embedding(&name) || q.policy == Policy::All)
                && !cfg.never_quantized(&name);
            let m = builder.matrix(
                &name,
                [shape[0], shape[1]],
                cfg.stored_in_out(&name),
                quantize,
            )?;
            let (rows, cols) = m.shape();
            let (bytes, dtype) = matrix_bytes(&m)?;
            (bytes, dtype, vec![rows, cols])
        } else {
            let v = builder.vector(&name, shape[0])?;
            let shift = cfg.gguf_shift(&gname);
            let v = v.f32()?.to_vec1::<f32>()?;
            (
                f32_bytes(&v.iter().map(|x| x + shift).collect::<Vec<f32>>()),
                GgmlType::F32,
                shape.clone(),
            )
        };
        if let Some((_, index, count)) = cfg.gguf_slice(&name) {
            let (sname, mut sbytes, sdtype, sshape) = match stack.take() {
                None if index == 0 => (gname.clone(), Vec::new(), dtype, gshape.clone()),
                Some(s) if s.0 == gname => s,
                _ => anyhow::bail!("{name}: the slices of {gname} do not come in order"),
            };
            if (sdtype, &sshape) != (dtype, &gshape) {
                anyhow::bail!("{name}: a slice of {gname} in another type or shape");
            }
            sbytes.extend_from_slice(&bytes);
            if index + 1 == count {
                let mut full = vec![count];
                full.extend_from_slice(&sshape);
                push(sname, full, &sbytes, sdtype)?;
            } else {
                stack = Some((sname, sbytes, sdtype, sshape));
            }
            continue;
        }
        let bytes = match cfg.gguf_permutation(&gname) {
            Some(p) => {
                let rows = gshape[0];
                reorder_rows(&bytes, rows, bytes.len() / rows, |r| p.to_file(r, rows))
            }
            None => bytes,
        };
        push(gname, gshape, &bytes, dtype)?;
    }
    if let Some((name, ..)) = stack {
        anyhow::bail!("{name}: its last slice never came");
    }
    for (name, vals) in cfg.gguf_extra_tensors() {
        push(name, vec![vals.len()], &f32_bytes(&vals), GgmlType::F32)?;
    }
    Ok(infos)
}

/// The metadata llama.cpp needs: general.*, the architecture's hyper-parameters, and the
/// tokenizer (copied key by key from a GGUF source, else built from the tokenizer).
fn metadata(source: &ModelSource, q: Quantization) -> Result<Vec<(String, Meta)>> {
    let cfg = &source.config;
    let mut m: Vec<(String, Meta)> = Vec::new();
    let mut put = |k: &str, v: Meta| m.push((k.to_string(), v));
    put(
        "general.architecture",
        Meta::Str(cfg.gguf_architecture().into()),
    );
    put("general.name", Meta::Str(source.spec.to_string()));
    put("general.quantization_version", Meta::U32(2));
    let file_type = if q.precision == Precision::Native {
        source
            .gguf()
            .and_then(|f| f.metadata.get("general.file_type").cloned())
            .map(Meta::Raw)
    } else {
        file_type_id(q.precision).map(Meta::U32)
    };
    if let Some(ft) = file_type {
        put("general.file_type", ft);
    }
    for (k, v) in cfg.gguf_metadata() {
        put(&k, v);
    }
    if let Some(file) = source.gguf() {
        let mut keys: Vec<&String> = file
            .metadata
            .keys()
            .filter(|k| k.starts_with("tokenizer."))
            .collect();
        keys.sort();
        for key in keys {
            put(key, Meta::Raw(file.metadata[key].clone()));
        }
        return Ok(m);
    }
    let vocab = source.tokenizer()?.gguf_vocab(cfg.vocab_size())?;
    put("tokenizer.ggml.model", Meta::Str(vocab.model.into()));
    put("tokenizer.ggml.pre", Meta::Str(vocab.pre.into()));
    put("tokenizer.ggml.tokens", Meta::Strs(vocab.tokens));
    put("tokenizer.ggml.token_type", Meta::I32s(vocab.types));
    put("tokenizer.ggml.merges", Meta::Strs(vocab.merges));
    let (bos, eos) = (cfg.bos_token_id(), cfg.eos_token_id());
    for (key, id) in [
        ("tokenizer.ggml.bos_token_id", bos),
        ("tokenizer.ggml.eos_token_id", eos),
    ] {
        if let Some(id) = id.filter(|&id| (id as usize) < cfg.vocab_size()) {
            put(key, Meta::U32(id));
        }
    }
    Ok(m)
}
