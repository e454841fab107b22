//! Precisions the llama.cpp engine makes with llama.cpp's own quantizer
//! (`llama_model_quantize`, what llama-quantize runs): from an F32 / F16 / BF16 GGUF file
//! to any of llama-quantize's types and mixes, cached per input file, type and importance
//! matrix, so that a second run loads the file the first one made.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context as _, Result};
use llama_cpp_sys_2 as sys;
use sha2::{Digest, Sha256};

use crate::precision::Precision;

/// The llama_ftype llama-quantize makes for `p`, and whether it is made `--pure`: a
/// single-type precision (`q4_0`, `q4_k` ...) means every quantized matrix in that type to
/// quantbench, output and token table included, which llama-quantize makes with `--pure`
/// (its file types of those names are small mixes: Q4_0's output at Q6_K ...); a mix is
/// its file type. Else why the llama.cpp engine does not make it (an input error naming
/// engine and precision).
pub fn ftype_of(p: Precision) -> Result<(u32, bool)> {
    Ok(match p {
        Precision::F32 => (0, false),
        Precision::F16 => (1, false),
        Precision::Bf16 => (32, false),
        Precision::Q8_0 => (7, true),
        Precision::Q6K => (18, true),
        Precision::Q5_0 => (8, true),
        Precision::Q5_1 => (9, true),
        Precision::Q5K => (16, true),
        Precision::Q4_0 => (2, true),
        Precision::Q4_1 => (3, true),
        Precision::Q4K => (14, true),
        Precision::Q3K => (11, true),
        Precision::Q2K => (10, true),
        Precision::Mix(m) => (m.llama_ftype(), false),
        Precision::Mxfp4 => crate::bad_input!(
            "engine llama.cpp cannot make precision mxfp4 (every matrix MXFP4): llama-quantize has no such file type; its mix mxfp4_moe puts a mixture of experts' experts in MXFP4 and the rest in Q8_0"
        ),
        Precision::Native => unreachable!("native is the file itself"),
        other => crate::bad_input!(
            "engine llama.cpp cannot make precision {other}: it is {}'s format, not one of llama-quantize's types; the llama.cpp engine makes f32, f16, bf16, q8_0, q6_k, q5_k, q5_1, q5_0, q4_k, q4_1, q4_0, q3_k, q2_k and {}",
            other.family().name(),
            crate::format::mix::Mix::ALL.map(|m| m.name()).join(", ")
        ),
    })
}

/// Where quantized files are kept: `QUANTBENCH_LLAMA_CACHE`, else
/// `$XDG_CACHE_HOME/quantbench/llama.cpp`, else `~/.cache/quantbench/llama.cpp`.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("QUANTBENCH_LLAMA_CACHE") {
        return PathBuf::from(d);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("quantbench").join("llama.cpp")
}

/// What a quantized file was made from and how, for the record.
#[derive(Debug, Clone, PartialEq)]
pub struct Made {
    pub path: PathBuf,
    /// Seconds llama.cpp's quantizer took, when this run made it (None: from the cache).
    pub seconds: Option<f64>,
}

/// The cache key of one quantization: the input's identity (path, size, modification
/// time), the type, the importance matrix's identity and llama.cpp's version.
fn cache_key(
    input: &Path,
    (ftype, pure): (u32, bool),
    imatrix: Option<&Path>,
    requantize: bool,
) -> Result<String> {
    let mut h = Sha256::new();
    for p in std::iter::once(input).chain(imatrix) {
        let canonical = p
            .canonicalize()
            .with_context(|| format!("reading {}", p.display()))?;
        let meta = std::fs::metadata(&canonical)?;
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        h.update(canonical.as_os_str().as_encoded_bytes());
        h.update(meta.len().to_le_bytes());
        h.update(mtime.to_le_bytes());
    }
    h.update(ftype.to_le_bytes());
    h.update([u8::from(requantize), u8::from(pure)]);
    h.update(super::VERSION.as_bytes());
    Ok(h.finalize()[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// The file `input` quantized to `p` by llama.cpp's quantizer: from the cache when it was
/// made before, else made now (into a [`crate::fsutil::PartFile`] renamed into place
/// when complete).
pub fn quantized(
    input: &Path,
    p: Precision,
    imatrix: Option<&Path>,
    requantize: bool,
    threads: usize,
) -> Result<Made> {
    quantized_in(&cache_dir(), input, p, imatrix, requantize, threads)
}

/// [`quantized`] with the cache in `dir`.
pub fn quantized_in(
    dir: &Path,
    input: &Path,
    p: Precision,
    imatrix: Option<&Path>,
    requantize: bool,
    threads: usize,
) -> Result<Made> {
    let ftype = ftype_of(p)?;
    let dir = dir.to_path_buf();
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("creating llama.cpp's cache folder {}", dir.display()))?;
    let stem = input
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let key = cache_key(input, ftype, imatrix, requantize)?;
    let path = dir.join(format!("{stem}.{p}.{key}.gguf"));
    if path.is_file() {
        return Ok(Made {
            path,
            seconds: None,
        });
    }
    // Written into a part file of the cache folder (locked while it lives, swept by a
    // later writer when a killed one left it, removed on failure) and renamed into place
    // complete: the cache never holds half a file.
    let part = crate::fsutil::PartFile::create(&dir, "llama-quantize")?;
    let started = Instant::now();
    run_quantizer(input, part.path(), ftype, imatrix, requantize, threads)
        .with_context(|| format!("llama.cpp quantizing {} to {p}", input.display()))?;
    let seconds = started.elapsed().as_secs_f64();
    part.persist(&path)?;
    Ok(Made {
        path,
        seconds: Some(seconds),
    })
}

fn run_quantizer(
    input: &Path,
    output: &Path,
    (ftype, pure): (u32, bool),
    imatrix: Option<&Path>,
    requantize: bool,
    threads: usize,
) -> Result<()> {
    let c_in = CString::new(input.as_os_str().as_encoded_bytes())?;
    let c_out = CString::new(output.as_os_str().as_encoded_bytes())?;
    let matrix = match imatrix {
        Some(path) => Some(super::imatrix::Imatrix::read(path)?),
        None => None,
    };
    let entries = matrix.as_ref().map(|m| m.entries());
    super::init_backend();
    let marker = super::log_marker();
    // SAFETY: default parameters from llama.cpp, then plain fields set; the strings and
    // the importance matrix's entries outlive the call.
    let code = unsafe {
        let mut params = sys::llama_model_quantize_default_params();
        params.nthread = threads as i32;
        params.ftype = ftype as sys::llama_ftype;
        params.allow_requantize = requantize;
        params.pure_ = pure;
        if let Some(e) = &entries {
            params.imatrix = e.as_ptr();
        }
        sys::llama_model_quantize(c_in.as_ptr(), c_out.as_ptr(), &params)
    };
    if code != 0 {
        let why = super::log_since(marker);
        crate::bad_input!("llama.cpp's quantizer refused: {why}");
    }
    Ok(())
}
