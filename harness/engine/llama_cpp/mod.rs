//! llama.cpp as an engine, in process: the llama.cpp source that llama-cpp-sys-2 bundles,
//! built by CMake for this CPU (see .cargo/config.toml) and called through its C API.
//! llama.cpp loads the file (any architecture and type it knows), tokenizes as it does
//! for that file, quantizes with its own quantizer (llama-quantize's types and mixes,
//! `quantize.rs`), and runs its own kernels; quantbench reads its clocks, its probes and
//! llama.cpp's own memory accounting (`shim.cpp`) around it.
//!
//! - `file.rs`: the GGUF header through llama.cpp's own reader (types, bytes, elements).
//! - `quantize.rs`: precisions made by `llama_model_quantize`, cached per file and type.
//! - `imatrix.rs`: an importance matrix read as llama-quantize reads it.

mod file;
mod imatrix;
pub mod quantize;

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::os::raw::{c_char, c_void};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, Once};

use anyhow::{Context as _, Result};
use llama_cpp_sys_2 as sys;

use super::{
    Context, Engine, EngineBuffer, EngineKind, EngineReport, EngineSettings, Loaded, LogitRows,
    ModelFacts,
};
use crate::precision::{Precision, Quantization};
use crate::record::{ModelInfo, WeightsInfo};
use crate::run::clock::Synchronize;
pub use file::FileFacts;

/// Which llama.cpp this is: the crate that bundles its source, and that crate's version.
pub const VERSION: &str = concat!("llama-cpp-sys-2 ", env!("QB_LLAMA_CPP_SYS_VERSION"));

/// Rows of logits handed on at once by [`Loaded::logits_from`].
const LOGIT_CHUNK: usize = 128;
/// llama.cpp's default physical batch (llama-bench's and llama-cli's `-ub 512`).
const UBATCH: usize = 512;

// ---- llama.cpp's log: kept (the last lines) for error messages, shown on request ----

struct Log {
    lines: Vec<(u64, i32, String)>,
    next: u64,
    partial: String,
}

static LOG: Mutex<Log> = Mutex::new(Log {
    lines: Vec::new(),
    next: 0,
    partial: String::new(),
});
static INIT: Once = Once::new();

unsafe extern "C" fn log_callback(level: sys::ggml_log_level, text: *const c_char, _: *mut c_void) {
    if text.is_null() {
        return;
    }
    // SAFETY: llama.cpp passes a NUL-terminated string valid for the call.
    let text = unsafe { CStr::from_ptr(text) }.to_string_lossy();
    let Ok(mut log) = LOG.lock() else { return };
    if let Some(path) = std::env::var_os("QUANTBENCH_LLAMA_LOG") {
        // llama.cpp's whole log, appended to the file named (for debugging a load).
        use std::io::Write as _;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = f.write_all(text.as_bytes());
        }
    }
    log.partial.push_str(&text);
    while let Some(end) = log.partial.find('\n') {
        let line: String = log.partial.drain(..=end).collect();
        let n = log.next;
        log.next += 1;
        // GGML_LOG_LEVEL_CONT continues the previous line's level.
        let level = level as i32;
        log.lines.push((n, level, line.trim_end().to_string()));
        if log.lines.len() > 400 {
            log.lines.drain(..200);
        }
    }
}

/// Initialise llama.cpp's backends and take its log, once per process.
pub fn init_backend() {
    INIT.call_once(|| {
        // SAFETY: called once, before any other llama.cpp call of quantbench's.
        unsafe {
            sys::llama_log_set(Some(log_callback), std::ptr::null_mut());
            sys::llama_backend_init();
        }
    });
}

/// Where the log stands now.
pub fn log_marker() -> u64 {
    LOG.lock().map(|l| l.next).unwrap_or(0)
}

/// What llama.cpp said since `marker`: its errors and warnings (its last lines when it
/// said none), for an error message.
pub fn log_since(marker: u64) -> String {
    let Ok(log) = LOG.lock() else {
        return "(llama.cpp's log is unavailable)".into();
    };
    let since: Vec<&(u64, i32, String)> = log.lines.iter().filter(|l| l.0 >= marker).collect();
    let bad: Vec<&str> = since
        .iter()
        .filter(|l| {
            l.1 == sys::GGML_LOG_LEVEL_ERROR as i32 || l.1 == sys::GGML_LOG_LEVEL_WARN as i32
        })
        .map(|l| l.2.trim())
        .filter(|l| !l.is_empty() && !l.chars().all(|c| c == '=' || c == ' '))
        .collect();
    let chosen: Vec<&str> = if bad.is_empty() {
        since
            .iter()
            .rev()
            .take(3)
            .rev()
            .map(|l| l.2.trim())
            .collect()
    } else {
        bad.into_iter().rev().take(4).rev().collect()
    };
    if chosen.is_empty() {
        "llama.cpp gave no reason (QUANTBENCH_LLAMA_LOG=FILE writes its whole log to FILE)".into()
    } else {
        chosen.join(" / ")
    }
}

// ---- the CPU this llama.cpp was built for ----

/// llama.cpp's instruction sets (compile time) against this CPU's (run time): an error
/// when the build uses one the CPU lacks (a target/ folder built on another CPU kind
/// would crash on its first product), and the sets the CPU has that the build left out
/// (a slower llama.cpp than a native build).
fn check_cpu() -> Result<Vec<&'static str>> {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: plain queries of ggml's compile-time flags.
        let built = unsafe {
            [
                (
                    "AVX",
                    sys::ggml_cpu_has_avx(),
                    is_x86_feature_detected!("avx"),
                ),
                (
                    "AVX2",
                    sys::ggml_cpu_has_avx2(),
                    is_x86_feature_detected!("avx2"),
                ),
                (
                    "FMA",
                    sys::ggml_cpu_has_fma(),
                    is_x86_feature_detected!("fma"),
                ),
                (
                    "F16C",
                    sys::ggml_cpu_has_f16c(),
                    is_x86_feature_detected!("f16c"),
                ),
                (
                    "AVX512",
                    sys::ggml_cpu_has_avx512(),
                    is_x86_feature_detected!("avx512f"),
                ),
                (
                    "AVX512_VBMI",
                    sys::ggml_cpu_has_avx512_vbmi(),
                    is_x86_feature_detected!("avx512vbmi"),
                ),
                (
                    "AVX512_VNNI",
                    sys::ggml_cpu_has_avx512_vnni(),
                    is_x86_feature_detected!("avx512vnni"),
                ),
                (
                    "AVX512_BF16",
                    sys::ggml_cpu_has_avx512_bf16(),
                    is_x86_feature_detected!("avx512bf16"),
                ),
            ]
        };
        let missing: Vec<&str> = built
            .iter()
            .filter(|(_, b, has)| *b != 0 && !has)
            .map(|(n, _, _)| *n)
            .collect();
        if !missing.is_empty() {
            crate::bad_input!(
                "this build's llama.cpp uses {} which this CPU lacks (it was built on another CPU kind): rebuild it here with `cargo clean -p llama-cpp-sys-2` and build again",
                missing.join(", ")
            );
        }
        Ok(built
            .iter()
            .filter(|(_, b, has)| *b == 0 && *has)
            .map(|(n, _, _)| *n)
            .collect())
    }
    #[cfg(not(target_arch = "x86_64"))]
    Ok(Vec::new())
}

/// llama.cpp's own summary of the kernels it was built with ("CPU : SSE3 = 1 | AVX2 = 1 ...").
fn system_info() -> String {
    // SAFETY: a static NUL-terminated string.
    unsafe { CStr::from_ptr(sys::llama_print_system_info()) }
        .to_string_lossy()
        .trim()
        .trim_end_matches('|')
        .trim()
        .to_string()
}

// ---- a model handle ----

/// An owned `llama_model`.
struct Model(*mut sys::llama_model);

// SAFETY: llama.cpp's model is read-only after loading and may be used from any thread;
// contexts (which are not shared) hold the mutable state.
unsafe impl Send for Model {}
unsafe impl Sync for Model {}

impl Drop for Model {
    fn drop(&mut self) {
        // SAFETY: loaded by llama_model_load_from_file, freed once.
        unsafe { sys::llama_model_free(self.0) }
    }
}

impl Model {
    fn load(path: &std::path::Path, vocab_only: bool, mmap: bool, gpu: bool) -> Result<Model> {
        let c_path = CString::new(path.as_os_str().as_encoded_bytes())?;
        init_backend();
        let marker = log_marker();
        // SAFETY: default parameters, plain fields set; the path outlives the call.
        let model = unsafe {
            let mut params = sys::llama_model_default_params();
            params.vocab_only = vocab_only;
            params.load_mode = if mmap {
                sys::LLAMA_LOAD_MODE_MMAP
            } else {
                sys::LLAMA_LOAD_MODE_NONE
            };
            params.n_gpu_layers = if gpu { -1 } else { 0 };
            sys::llama_model_load_from_file(c_path.as_ptr(), params)
        };
        if model.is_null() {
            crate::bad_input!(
                "llama.cpp cannot load {}: {}",
                path.display(),
                log_since(marker)
            );
        }
        Ok(Model(model))
    }

    fn vocab(&self) -> *const sys::llama_vocab {
        // SAFETY: the model is valid while self lives.
        unsafe { sys::llama_model_get_vocab(self.0) }
    }

    fn meta(&self, key: &str) -> Option<String> {
        let k = CString::new(key).ok()?;
        let mut buf = vec![0u8; 512];
        // SAFETY: the buffer's size is passed; llama.cpp NUL-terminates within it.
        let n = unsafe {
            sys::llama_model_meta_val_str(self.0, k.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
        };
        if n < 0 {
            return None;
        }
        let s = CStr::from_bytes_until_nul(&buf).ok()?;
        Some(s.to_string_lossy().into_owned())
    }

    fn tokenize(&self, text: &str) -> Result<Vec<u32>> {
        let len = i32::try_from(text.len()).context("a text over 2 GB")?;
        let mut out = vec![0 as sys::llama_token; text.len() + 8];
        loop {
            // SAFETY: the text and buffer lengths are passed; add_special puts the BOS
            // first when the model asks for one, as llama-cli and llama-perplexity do.
            let n = unsafe {
                sys::llama_tokenize(
                    self.vocab(),
                    text.as_ptr().cast(),
                    len,
                    out.as_mut_ptr(),
                    out.len() as i32,
                    true,
                    false,
                )
            };
            if n >= 0 {
                out.truncate(n as usize);
                return Ok(out.into_iter().map(|t| t as u32).collect());
            }
            if n == i32::MIN {
                anyhow::bail!(
                    "llama.cpp's tokenizer overflowed on a text of {} bytes",
                    text.len()
                );
            }
            out.resize((-n) as usize, 0);
        }
    }

    fn detokenize(&self, ids: &[u32]) -> Result<String> {
        let tokens: Vec<sys::llama_token> = ids.iter().map(|&t| t as sys::llama_token).collect();
        let mut buf = vec![0u8; ids.len() * 8 + 16];
        loop {
            // SAFETY: lengths passed; special tokens are neither removed nor rendered.
            let n = unsafe {
                sys::llama_detokenize(
                    self.vocab(),
                    tokens.as_ptr(),
                    tokens.len() as i32,
                    buf.as_mut_ptr().cast(),
                    buf.len() as i32,
                    false,
                    false,
                )
            };
            if n >= 0 {
                buf.truncate(n as usize);
                return Ok(String::from_utf8_lossy(&buf).into_owned());
            }
            buf.resize((-n) as usize, 0);
        }
    }

    fn vocab_size(&self) -> usize {
        // SAFETY: valid vocabulary.
        unsafe { sys::llama_vocab_n_tokens(self.vocab()) }.max(0) as usize
    }
}

// ---- the engine ----

/// The llama.cpp engine with its GGUF file chosen.
pub struct LlamaEngine {
    file: FileFacts,
    display_name: String,
    settings: EngineSettings,
    requantize: bool,
    gpu: bool,
    facts: ModelFacts,
    /// The model as llama.cpp reads it (read once, with its vocabulary alone, which is
    /// then dropped: a 128k vocabulary would sit in every variant's memory readings).
    info: ModelInfo,
    eos: Option<u32>,
    /// Files made by llama.cpp's quantizer for this run's precisions.
    made: Mutex<HashMap<Precision, quantize::Made>>,
    /// Instruction sets this CPU has that the build left out.
    unused_isa: Vec<&'static str>,
}

impl LlamaEngine {
    pub fn open(
        scenario: &crate::scenario::Scenario,
        device: &candle_core::Device,
    ) -> Result<Self> {
        let unused_isa = check_cpu()?;
        let gpu = !device.is_cpu();
        let gpu_backend = cfg!(any(
            feature = "llama-cpp-cuda",
            feature = "llama-cpp-metal",
            feature = "llama-cpp-vulkan",
            feature = "llama-cpp-rocm"
        ));
        if gpu && !gpu_backend {
            crate::bad_input!(
                "engine llama.cpp runs on the CPU in this build (device {:?} asked for a GPU): build with --features llama-cpp-cuda (or -metal, -vulkan, -rocm), or run --device cpu",
                scenario.device
            );
        }
        let spec = scenario.model_spec();
        let Some((path, display_name)) = crate::model::source::spec::gguf_file_of(&spec)? else {
            crate::bad_input!(
                "engine llama.cpp reads GGUF files, and {spec} is not one: give a .gguf file (quantbench export writes a synthetic or Hugging Face model as one)"
            );
        };
        let file = FileFacts::read(&path)?;
        let vocab = Model::load(&path, true, true, false)?;
        let facts = facts_of(&vocab, &file);
        let info = info_of(&vocab, &file, &facts, &display_name, &spec.to_string());
        // SAFETY: valid vocabulary.
        let eos = unsafe { sys::llama_vocab_eos(vocab.vocab()) };
        Ok(LlamaEngine {
            file,
            display_name,
            settings: scenario.engine.clone(),
            requantize: scenario.requantize,
            gpu,
            facts,
            info,
            eos: (eos >= 0).then_some(eos as u32),
            made: Mutex::new(HashMap::new()),
            unused_isa,
        })
    }

    fn threads(&self) -> usize {
        self.settings.threads.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
    }

    /// The file a variant at `p` loads: the model's own for `native` (and for the type it
    /// already is), else llama.cpp's quantizer's (made, or found in its cache).
    fn file_for(&self, p: Precision) -> Result<(PathBuf, Option<quantize::Made>)> {
        if p == Precision::Native {
            return Ok((self.file.path.clone(), None));
        }
        let (ftype, _) = quantize::ftype_of(p)?;
        if self.file.file_type == Some(ftype) && !self.file.is_prequantized() {
            return Ok((self.file.path.clone(), None));
        }
        let mut made = self.made.lock().expect("not poisoned");
        if let Some(m) = made.get(&p) {
            return Ok((m.path.clone(), Some(m.clone())));
        }
        let m = quantize::quantized(
            &self.file.path,
            p,
            self.settings.imatrix.as_deref(),
            self.requantize,
            self.threads(),
        )?;
        made.insert(p, m.clone());
        Ok((m.path.clone(), Some(m)))
    }
}

/// The runner's facts from the file's hyper-parameters (which a vocabulary-only load of
/// llama.cpp does not read) and llama.cpp's vocabulary: its size, the trained context, and
/// the bytes its default (f16) KV cache holds per token: every layer's keys and values,
/// at the largest per-layer head count (an upper bound for models whose layers differ, and
/// for sliding-window layers, which llama.cpp keeps for their window only).
fn facts_of(m: &Model, file: &FileFacts) -> ModelFacts {
    let d = Dims::of(file);
    let bos = {
        // SAFETY: valid vocabulary.
        let (add, bos) = unsafe {
            (
                sys::llama_vocab_get_add_bos(m.vocab()),
                sys::llama_vocab_bos(m.vocab()),
            )
        };
        (add && bos >= 0).then_some(bos as u32)
    };
    ModelFacts {
        vocab_size: m.vocab_size(),
        context_length: d.context,
        kv_cache_bytes_per_token: d.n_layer * d.n_head_kv * (d.key + d.value) * 2,
        bos,
        // llama.cpp's sliding-window caches are not read here: every layer counted whole.
        kv_cache_windows: Vec::new(),
    }
}

/// The hyper-parameters the record shows, as the file states them.
struct Dims {
    n_layer: usize,
    n_embd: usize,
    n_head: usize,
    n_head_kv: usize,
    key: usize,
    value: usize,
    context: usize,
}

impl Dims {
    fn of(file: &FileFacts) -> Dims {
        let get = |k: &str| file.hparam(k).map(|v| v as usize);
        let n_embd = get("embedding_length").unwrap_or(0);
        let n_head = get("attention.head_count").unwrap_or(0);
        let per_head = n_embd.checked_div(n_head).unwrap_or(0);
        Dims {
            n_layer: get("block_count").unwrap_or(0),
            n_embd,
            n_head,
            n_head_kv: get("attention.head_count_kv").unwrap_or(n_head),
            key: get("attention.key_length").unwrap_or(per_head),
            value: get("attention.value_length").unwrap_or(per_head),
            context: get("context_length").unwrap_or(0),
        }
    }
}

/// The record's account of the model, from llama.cpp's reading of it.
fn info_of(m: &Model, file: &FileFacts, facts: &ModelFacts, name: &str, spec: &str) -> ModelInfo {
    let d = Dims::of(file);
    ModelInfo {
        spec: spec.to_string(),
        name: name.to_string(),
        synthetic: false,
        parameters: file.parameters() as usize,
        n_layer: d.n_layer,
        n_embd: d.n_embd,
        n_head: d.n_head,
        vocab_size: facts.vocab_size,
        n_positions: facts.context_length,
        architecture: file.architecture.clone(),
        n_kv_head: Some(d.n_head_kv),
        head_dim: Some(d.key),
        kv_cache_bytes_per_token: Some(facts.kv_cache_bytes_per_token),
        kv_cache_windows: Vec::new(),
        source_dtype: Some(file.stored_types()),
        tokenizer: Some(format!(
            "llama.cpp ({})",
            m.meta("tokenizer.ggml.model")
                .unwrap_or_else(|| "the file's vocabulary".into())
        )),
        file_type: file
            .file_type
            .map(|t| crate::model::source::gguf::file_type_label(t as u64)),
        file_bytes: std::fs::metadata(&file.path).ok().map(|m| m.len()),
    }
}

impl Synchronize for LlamaEngine {
    fn synchronize(&self) -> Result<()> {
        Ok(())
    }
}

impl Engine for LlamaEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::LlamaCpp
    }

    fn model_info(&self) -> Result<ModelInfo> {
        Ok(self.info.clone())
    }

    fn facts(&self) -> &ModelFacts {
        &self.facts
    }

    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Model::load(&self.file.path, true, true, false)?.tokenize(text)
    }

    fn check_precision(&self, q: Quantization) -> Result<()> {
        if q.precision == Precision::Native {
            return Ok(());
        }
        quantize::ftype_of(q.precision)?;
        if self.file.is_prequantized() && !self.requantize {
            crate::bad_input!(
                "{} holds quantized tensors ({}); llama.cpp making {} from them means dequantizing and quantizing again, which quantbench does only when asked: pass --requantize (the record is then marked requantized), or measure the file as it is with --precisions native",
                self.display_name,
                self.file.stored_types(),
                q.precision
            );
        }
        if let Some(m) = &self.settings.imatrix {
            if !m.is_file() {
                crate::bad_input!(
                    "importance matrix {} does not exist (engine setting imatrix)",
                    m.display()
                );
            }
        }
        Ok(())
    }

    fn check_memory(&self, q: Quantization) -> Result<()> {
        // llama.cpp maps the file (or reads it whole): what it holds is the file's tensors.
        let (path, _) = self.file_for(q.precision)?;
        let bytes = std::fs::metadata(&path)
            .map(|m| m.len() as u128)
            .unwrap_or(0);
        if let Some(available) = crate::model::available_memory() {
            if bytes > available {
                crate::bad_input!(
                    "at {} the weights take {:.1} GB ({}), but this machine has {:.1} GB available: it would swap or be killed, so it is not loaded",
                    q.precision,
                    bytes as f64 / 1e9,
                    path.display(),
                    available as f64 / 1e9
                );
            }
        }
        Ok(())
    }

    fn is_prequantized(&self) -> bool {
        self.file.is_prequantized()
    }

    fn prepare(&self, q: Quantization) -> Result<()> {
        self.file_for(q.precision).map(|_| ())
    }

    fn load(&self, q: Quantization) -> Result<Box<dyn Loaded>> {
        let (path, made) = self.file_for(q.precision)?;
        let file = if made.is_some() {
            FileFacts::read(&path)?
        } else {
            self.file.clone()
        };
        let mmap = self.settings.mmap.unwrap_or(true);
        let model = Model::load(&path, false, mmap, self.gpu)?;
        Ok(Box::new(LlamaLoaded {
            model,
            file,
            made,
            source: self.file.path.clone(),
            precision: q.precision,
            settings: self.settings.clone(),
            threads: AtomicUsize::new(self.threads()),
            default_threads: self.threads(),
            context_length: self.facts.context_length,
            eos: self.eos,
            buffers: Mutex::new(None),
            unused_isa: self.unused_isa.clone(),
            pool: Default::default(),
        }))
    }
}

// ---- a loaded model and its contexts ----

/// A model loaded by llama.cpp at one precision.
pub struct LlamaLoaded {
    model: Model,
    /// The loaded file's tensors.
    file: FileFacts,
    made: Option<quantize::Made>,
    source: PathBuf,
    precision: Precision,
    settings: EngineSettings,
    /// Threads contexts made now get ([`Loaded::with_threads`] changes it for a test).
    threads: AtomicUsize,
    default_threads: usize,
    context_length: usize,
    eos: Option<u32>,
    /// llama.cpp's memory accounting of the first context made (the generation's).
    buffers: Mutex<Option<Vec<EngineBuffer>>>,
    unused_isa: Vec<&'static str>,
    /// Spare contexts, freed before the model.
    pool: std::sync::Arc<Pool>,
}

impl Drop for LlamaLoaded {
    fn drop(&mut self) {
        self.pool.free_all();
    }
}

/// A `llama_context` holding `batch` sequences of up to `capacity` positions. Dropped,
/// it goes back to its model's pool of spare contexts, to be cleared and used again by
/// the next context of the same shape (as llama-bench keeps one context for all its
/// repetitions): the repetitions of a generation or a test then time llama.cpp's
/// decoding, not its allocating a context's buffers.
struct LlamaContext {
    ctx: *mut sys::llama_context,
    shape: Shape,
    /// Positions each sequence holds.
    pos: Vec<usize>,
    pool: std::sync::Arc<Pool>,
}

/// What makes two contexts interchangeable: sequences, positions each, logical batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Shape {
    batch: usize,
    capacity: usize,
    n_batch: usize,
}

/// Spare contexts of one model (at most [`Pool::KEEP`]), freed with the model.
#[derive(Default)]
struct Pool(Mutex<Vec<(Shape, Ctx)>>);

/// A raw context owned by a pool.
struct Ctx(*mut sys::llama_context);

// SAFETY: a context is used by one thread at a time (the runner's), never shared.
unsafe impl Send for Ctx {}
unsafe impl Send for LlamaContext {}
unsafe impl Sync for LlamaContext {}

impl Pool {
    const KEEP: usize = 4;

    fn take(&self, shape: Shape) -> Option<*mut sys::llama_context> {
        let mut spare = self.0.lock().expect("not poisoned");
        let at = spare.iter().position(|(s, _)| *s == shape)?;
        Some(spare.swap_remove(at).1 .0)
    }

    fn give(&self, shape: Shape, ctx: *mut sys::llama_context) {
        let mut spare = self.0.lock().expect("not poisoned");
        if spare.len() < Self::KEEP {
            spare.push((shape, Ctx(ctx)));
        } else {
            // SAFETY: made by llama_init_from_model, owned here, freed once.
            unsafe { sys::llama_free(ctx) }
        }
    }

    fn free_all(&self) {
        for (_, c) in self.0.lock().expect("not poisoned").drain(..) {
            // SAFETY: as above.
            unsafe { sys::llama_free(c.0) }
        }
    }
}

impl Drop for LlamaContext {
    fn drop(&mut self) {
        self.pool.give(self.shape, self.ctx);
    }
}

impl Context for LlamaContext {
    fn positions(&self) -> usize {
        self.pos.first().copied().unwrap_or(0)
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

fn ctx_ref(c: &dyn Context) -> Result<&LlamaContext> {
    super::own_context(c)
}

fn ctx_mut(c: &mut dyn Context) -> Result<&mut LlamaContext> {
    super::own_context_mut(c)
}

/// A `llama_batch` owned for one decode.
struct Batch(sys::llama_batch, usize);

impl Batch {
    /// Tokens of several sequences: (sequence, first position, tokens); logits where
    /// `wants(sequence, index in its tokens)`.
    fn of(parts: &[(usize, usize, &[u32])], wants: impl Fn(usize, usize) -> bool) -> Batch {
        let n: usize = parts.iter().map(|p| p.2.len()).sum();
        // SAFETY: room for n tokens of one sequence id each; every field written below.
        let b = unsafe { sys::llama_batch_init(n as i32, 0, 1) };
        let mut i = 0;
        for &(seq, start, tokens) in parts {
            for (j, &t) in tokens.iter().enumerate() {
                // SAFETY: i < n, the arrays llama_batch_init made.
                unsafe {
                    *b.token.add(i) = t as sys::llama_token;
                    *b.pos.add(i) = (start + j) as sys::llama_pos;
                    *b.n_seq_id.add(i) = 1;
                    *(*b.seq_id.add(i)) = seq as sys::llama_seq_id;
                    *b.logits.add(i) = i8::from(wants(seq, j));
                }
                i += 1;
            }
        }
        let mut b = b;
        b.n_tokens = n as i32;
        Batch(b, n)
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        // SAFETY: made by llama_batch_init, freed once.
        unsafe { sys::llama_batch_free(self.0) }
    }
}

impl LlamaLoaded {
    fn make_context(&self, batch: usize, capacity: usize, n_batch: usize) -> Result<LlamaContext> {
        let threads = self.threads.load(Ordering::Relaxed) as i32;
        let shape = Shape {
            batch,
            capacity,
            n_batch,
        };
        if let Some(ctx) = self.pool.take(shape) {
            // SAFETY: a spare context of this model: emptied, and given this moment's
            // thread count.
            unsafe {
                sys::llama_memory_clear(sys::llama_get_memory(ctx), true);
                sys::llama_set_n_threads(ctx, threads, threads);
            }
            return Ok(LlamaContext {
                ctx,
                shape,
                pos: vec![0; batch.max(1)],
                pool: self.pool.clone(),
            });
        }
        let n_ctx = (batch * capacity.max(1)).max(16);
        let marker = log_marker();
        // SAFETY: default parameters, plain fields set.
        let ctx = unsafe {
            let mut p = sys::llama_context_default_params();
            p.n_ctx = n_ctx as u32;
            p.n_batch = n_batch.max(1) as u32;
            p.n_ubatch = n_batch.clamp(1, UBATCH) as u32;
            p.n_seq_max = batch.max(1) as u32;
            p.kv_unified = true;
            p.n_threads = threads;
            p.n_threads_batch = threads;
            p.no_perf = true;
            // A stop request (Ctrl-C) ends a long decode between graph nodes: llama_decode
            // then returns 2, recorded as an interruption.
            p.abort_callback = Some(stop_requested);
            p.abort_callback_data = std::ptr::null_mut();
            p.flash_attn_type = match self.settings.flash_attention {
                Some(true) => sys::LLAMA_FLASH_ATTN_TYPE_ENABLED,
                Some(false) => sys::LLAMA_FLASH_ATTN_TYPE_DISABLED,
                None => sys::LLAMA_FLASH_ATTN_TYPE_AUTO,
            };
            sys::llama_init_from_model(self.model.0, p)
        };
        if ctx.is_null() {
            anyhow::bail!(
                "llama.cpp could not make a context of {n_ctx} positions for {batch} sequence(s): {}",
                log_since(marker)
            );
        }
        let c = LlamaContext {
            ctx,
            shape,
            pos: vec![0; batch.max(1)],
            pool: self.pool.clone(),
        };
        let mut first = self.buffers.lock().expect("not poisoned");
        if first.is_none() {
            *first = Some(breakdown(ctx));
        }
        Ok(c)
    }

    fn decode(&self, c: &mut LlamaContext, batch: &Batch) -> Result<()> {
        let marker = log_marker();
        // SAFETY: a batch made for this decode; the context is valid.
        let code = unsafe { sys::llama_decode(c.ctx, batch.0) };
        match code {
            0 => Ok(()),
            1 => anyhow::bail!(
                "llama.cpp found no room in the KV cache for {} more tokens (context of {} positions per sequence)",
                batch.1,
                c.shape.capacity
            ),
            2 => Err(crate::run::interrupt::Interrupted.into()),
            _ => anyhow::bail!("llama_decode failed ({code}): {}", log_since(marker)),
        }
    }

    fn logits_row(&self, c: &LlamaContext, i: usize, vocab: usize) -> Result<&[f32]> {
        // SAFETY: i indexes a token of the last decode that asked for logits; llama.cpp
        // holds n_vocab floats there until the next decode.
        let p = unsafe { sys::llama_get_logits_ith(c.ctx, i as i32) };
        anyhow::ensure!(!p.is_null(), "llama.cpp holds no logits for output {i}");
        Ok(unsafe { std::slice::from_raw_parts(p, vocab) })
    }
}

unsafe extern "C" fn stop_requested(_: *mut c_void) -> bool {
    crate::run::interrupt::requested()
}

/// llama.cpp's memory accounting of a context (its model, KV cache and compute buffers
/// per backend buffer type), through the shim.
fn breakdown(ctx: *mut sys::llama_context) -> Vec<EngineBuffer> {
    unsafe extern "C" {
        fn qb_llama_memory_breakdown(
            ctx: *const sys::llama_context,
            names: *mut c_char,
            name_len: usize,
            bytes: *mut u64,
            max_rows: i32,
        ) -> i32;
    }
    const ROWS: usize = 16;
    const NAME: usize = 64;
    let mut names = vec![0 as c_char; ROWS * NAME];
    let mut bytes = vec![0u64; ROWS * 3];
    // SAFETY: buffers of the sizes passed.
    let n = unsafe {
        qb_llama_memory_breakdown(
            ctx,
            names.as_mut_ptr(),
            NAME,
            bytes.as_mut_ptr(),
            ROWS as i32,
        )
    };
    let mut out = Vec::new();
    for i in 0..(n.max(0) as usize).min(ROWS) {
        // SAFETY: the shim NUL-terminated each name within its NAME bytes.
        let name = unsafe { CStr::from_ptr(names.as_ptr().add(i * NAME)) }
            .to_string_lossy()
            .into_owned();
        for (k, holds) in ["model", "context", "compute"].into_iter().enumerate() {
            let b = bytes[3 * i + k];
            if b > 0 {
                out.push(EngineBuffer {
                    buffer: name.clone(),
                    holds: holds.into(),
                    bytes: b,
                });
            }
        }
    }
    out
}

fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in row.iter().enumerate() {
        if x > row[best] {
            best = i;
        }
    }
    best as u32
}

impl Synchronize for LlamaLoaded {
    fn synchronize(&self) -> Result<()> {
        // Every call that computes waits for its result (next tokens read logits, which
        // synchronises; a feed synchronises its context itself).
        Ok(())
    }
}

impl Loaded for LlamaLoaded {
    fn engine(&self) -> EngineKind {
        EngineKind::LlamaCpp
    }

    fn vocab_size(&self) -> usize {
        self.model.vocab_size()
    }

    fn context_length(&self) -> usize {
        self.context_length
    }

    fn end_of_text(&self) -> Option<u32> {
        self.eos
    }

    fn detokenize(&self, ids: &[u32]) -> Result<String> {
        self.model.detokenize(ids)
    }

    fn weights(&self) -> WeightsInfo {
        weights_of(&self.file)
    }

    fn streamed_bytes_per_step(&self) -> usize {
        // Every matrix a step multiplies by (the LM head included: the token table when
        // the file ties them), norms and biases; of a mixture of experts' stacked expert
        // tensors, the share one token routes to (expert_used_count of expert_count).
        let tied = !self.file.tensors.iter().any(|t| t.name == "output.weight");
        let routed = match (
            self.file.hparam("expert_used_count"),
            self.file.hparam("expert_count"),
        ) {
            (Some(used), Some(all)) if all > 0 && used <= all => used as f64 / all as f64,
            _ => 1.0,
        };
        self.file
            .tensors
            .iter()
            .filter(|t| {
                file::group_of(t) != "embeddings" || (tied && t.name.starts_with("token_embd"))
            })
            .map(|t| {
                if t.name.contains("_exps.") {
                    (t.bytes as f64 * routed).round() as usize
                } else {
                    t.bytes as usize
                }
            })
            .sum()
    }

    fn report(&self) -> EngineReport {
        let mut settings = vec![
            ("threads".to_string(), self.default_threads.to_string()),
            (
                "flash_attention".into(),
                match self.settings.flash_attention {
                    Some(true) => "on",
                    Some(false) => "off",
                    None => "auto",
                }
                .into(),
            ),
            ("kv_type".into(), "f16".into()),
            (
                "mmap".into(),
                if self.settings.mmap.unwrap_or(true) {
                    "on"
                } else {
                    "off"
                }
                .into(),
            ),
            ("n_ubatch".into(), UBATCH.to_string()),
            ("kernels".into(), system_info()),
        ];
        if !self.unused_isa.is_empty() {
            settings.push((
                "build_note".into(),
                format!(
                    "llama.cpp was built without {} which this CPU has: slower than a native build",
                    self.unused_isa.join(", ")
                ),
            ));
        }
        if self.precision != Precision::Native {
            let how = match &self.made {
                Some(m) => format!(
                    "llama.cpp's quantizer (llama_model_quantize, {}{}) from {}{}{}: {}",
                    self.precision,
                    if matches!(quantize::ftype_of(self.precision), Ok((_, true))) {
                        " --pure: every quantized tensor that type"
                    } else {
                        ""
                    },
                    self.source.display(),
                    self.settings
                        .imatrix
                        .as_ref()
                        .map(|m| format!(" with importance matrix {}", m.display()))
                        .unwrap_or_default(),
                    m.seconds
                        .map(|s| format!(", made in {s:.1} s"))
                        .unwrap_or_else(|| ", from quantbench's cache".into()),
                    m.path.display()
                ),
                None => format!("the file as stored (it is already {})", self.precision),
            };
            settings.push(("made_by".into(), how));
        }
        EngineReport {
            version: Some(VERSION.to_string()),
            settings,
            buffers: self
                .buffers
                .lock()
                .expect("not poisoned")
                .clone()
                .unwrap_or_default(),
        }
    }

    fn new_context(&self, batch: usize, capacity: usize) -> Result<Box<dyn Context>> {
        let n_batch = (batch * capacity).max(UBATCH);
        Ok(Box::new(self.make_context(batch, capacity, n_batch)?))
    }

    fn context_for(
        &self,
        base: &dyn Context,
        depth: usize,
        batch: usize,
        capacity: usize,
    ) -> Result<Box<dyn Context>> {
        let base = ctx_ref(base)?;
        let n_batch = (batch * capacity).max(UBATCH);
        let mut c = self.make_context(batch, capacity, n_batch)?;
        if depth == 0 {
            return Ok(Box::new(c));
        }
        anyhow::ensure!(
            depth <= base.positions(),
            "a prefix of {depth} positions from a context of {}",
            base.positions()
        );
        // SAFETY: sizes asked of llama.cpp first; both contexts are valid.
        unsafe {
            let size = sys::llama_state_seq_get_size(base.ctx, 0);
            let mut buf = vec![0u8; size];
            let got = sys::llama_state_seq_get_data(base.ctx, buf.as_mut_ptr(), size, 0);
            anyhow::ensure!(got > 0, "llama.cpp could not copy the filled context");
            let mem = sys::llama_get_memory(c.ctx);
            for s in 0..batch {
                let set = sys::llama_state_seq_set_data(c.ctx, buf.as_ptr(), got, s as i32);
                anyhow::ensure!(
                    set > 0,
                    "llama.cpp could not restore the context into sequence {s}"
                );
                if depth < base.positions() {
                    anyhow::ensure!(
                        sys::llama_memory_seq_rm(mem, s as i32, depth as i32, -1),
                        "llama.cpp cannot cut this model's context back to {depth} positions"
                    );
                }
                c.pos[s] = depth;
            }
        }
        Ok(Box::new(c))
    }

    fn fork(&self, ctx: &dyn Context) -> Result<Box<dyn Context>> {
        let src = ctx_ref(ctx)?;
        let Shape {
            batch,
            capacity,
            n_batch,
        } = src.shape;
        let mut c = self.make_context(batch, capacity, n_batch)?;
        // SAFETY: sizes asked of llama.cpp first; both contexts are valid.
        unsafe {
            let size = sys::llama_state_get_size(src.ctx);
            let mut buf = vec![0u8; size];
            let got = sys::llama_state_get_data(src.ctx, buf.as_mut_ptr(), size);
            let set = sys::llama_state_set_data(c.ctx, buf.as_ptr(), got);
            anyhow::ensure!(set > 0, "llama.cpp could not copy a context");
        }
        c.pos = src.pos.clone();
        Ok(Box::new(c))
    }

    fn next_tokens(&self, batch: &[&[u32]], ctx: &mut dyn Context) -> Result<Vec<u32>> {
        let c = ctx_mut(ctx)?;
        anyhow::ensure!(
            batch.len() <= c.pos.len(),
            "{} sequences in a context made for {}",
            batch.len(),
            c.pos.len()
        );
        let parts: Vec<(usize, usize, &[u32])> = batch
            .iter()
            .enumerate()
            .map(|(s, t)| (s, c.pos[s], *t))
            .collect();
        let b = Batch::of(&parts, |s, j| j + 1 == batch[s].len());
        self.decode(c, &b)?;
        let vocab = self.vocab_size();
        let mut out = Vec::with_capacity(batch.len());
        let mut index = 0;
        for (s, t) in batch.iter().enumerate() {
            index += t.len();
            out.push(argmax(self.logits_row(c, index - 1, vocab)?));
            c.pos[s] += t.len();
        }
        Ok(out)
    }

    fn feed(&self, ids: &[u32], ctx: &mut dyn Context) -> Result<()> {
        let c = ctx_mut(ctx)?;
        let b = Batch::of(&[(0, c.pos[0], ids)], |_, j| j + 1 == ids.len());
        self.decode(c, &b)?;
        // SAFETY: valid context.
        unsafe { sys::llama_synchronize(c.ctx) };
        c.pos[0] += ids.len();
        Ok(())
    }

    fn logits_from(&self, ids: &[u32], first: usize, f: &mut LogitRows<'_>) -> Result<()> {
        // One physical batch (llama.cpp's n_ubatch) per decode: the same computation as
        // one decode of the whole window, which llama.cpp splits into such batches anyway,
        // with a logits buffer of 512 rows instead of the window's (a 262k vocabulary's
        // 1,024 rows would be 1 GB).
        let step = UBATCH.min(ids.len()).max(1);
        let mut c = self.make_context(1, ids.len(), step)?;
        let vocab = self.vocab_size();
        let mut at = 0;
        while at < ids.len() {
            let end = (at + step).min(ids.len());
            let b = Batch::of(&[(0, at, &ids[at..end])], |_, j| at + j >= first);
            self.decode(&mut c, &b)?;
            let mut p = first.max(at);
            while p < end {
                crate::run::interrupt::check()?;
                let rows = (end - p).min(LOGIT_CHUNK);
                let chunk: Vec<Vec<f32>> = (p..p + rows)
                    .map(|i| self.logits_row(&c, i - at, vocab).map(<[f32]>::to_vec))
                    .collect::<Result<_>>()?;
                f(p, &chunk)?;
                p += rows;
            }
            at = end;
        }
        Ok(())
    }

    fn with_threads(
        &self,
        threads: Option<usize>,
        body: &mut (dyn FnMut() -> Result<()> + Send),
    ) -> Result<usize> {
        let n = threads.unwrap_or(self.default_threads);
        self.threads.store(n, Ordering::Relaxed);
        let r = body();
        self.threads.store(self.default_threads, Ordering::Relaxed);
        r.map(|()| n)
    }
}

/// The loaded file's weight bytes by group and by ggml type, as quantbench's own engine
/// reports its own.
fn weights_of(file: &FileFacts) -> WeightsInfo {
    use crate::model::source::weights::{FormatBytes, GroupBytes};
    let mut groups: HashMap<&str, GroupBytes> = HashMap::new();
    let mut by_format: Vec<FormatBytes> = Vec::new();
    for t in &file.tensors {
        let group = file::group_of(t);
        let g = groups.entry(group).or_insert(GroupBytes {
            parameters: 0,
            bytes: 0,
        });
        g.parameters += t.elements as usize;
        g.bytes += t.bytes as usize;
        let format = t.type_name.to_ascii_lowercase();
        match by_format
            .iter_mut()
            .find(|f| f.group == group && f.format == format)
        {
            Some(f) => {
                f.parameters += t.elements as usize;
                f.bytes += t.bytes as usize;
            }
            None => by_format.push(FormatBytes {
                group: group.into(),
                format,
                parameters: t.elements as usize,
                bytes: t.bytes as usize,
            }),
        }
    }
    let take = |name: &str| {
        groups.get(name).cloned().unwrap_or(GroupBytes {
            parameters: 0,
            bytes: 0,
        })
    };
    let parameters = file.parameters() as usize;
    let bytes: u64 = file.tensors.iter().map(|t| t.bytes).sum();
    WeightsInfo {
        embeddings: take("embeddings"),
        linear: take("linear"),
        norms_biases: take("norms_biases"),
        parameters,
        bits_per_weight: if parameters == 0 {
            0.0
        } else {
            bytes as f64 * 8.0 / parameters as f64
        },
        fallbacks: Vec::new(),
        by_format,
        by_part: Vec::new(),
        transformers_footprint: None,
        huge_page_bytes: None,
    }
}
