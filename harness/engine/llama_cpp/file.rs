//! A GGUF file as llama.cpp's own reader (gguf.cpp) sees it: its metadata and its tensor
//! directory (name, ggml type, bytes, elements) for any type llama.cpp knows, with
//! ggml's own block sizes. Nothing is loaded: `no_alloc` reads the header only.

use std::ffi::{CStr, CString};
use std::path::{Path, PathBuf};

use anyhow::Result;
use llama_cpp_sys_2 as sys;

/// One tensor of the directory.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorEntry {
    pub name: String,
    /// ggml's name of its type ("q4_K", "iq4_xs", "mxfp4", "f32").
    pub type_name: String,
    pub bytes: u64,
    pub elements: u64,
    /// Dimensions above 1 (1 for norms and biases).
    pub dims: usize,
}

/// What quantbench needs of a GGUF file before llama.cpp loads it.
#[derive(Debug, Clone)]
pub struct FileFacts {
    pub path: PathBuf,
    pub architecture: String,
    pub name: Option<String>,
    /// general.file_type as llama.cpp names it ("MOSTLY_Q4_K_M"), when the file says.
    pub file_type: Option<u32>,
    pub tensors: Vec<TensorEntry>,
    /// Every integer-valued metadata key (a scalar, or an array of integers such as a
    /// per-layer head count), as read.
    pub numbers: std::collections::HashMap<String, Vec<i64>>,
}

impl FileFacts {
    /// Read `path`'s header with llama.cpp's reader; a file it refuses is an input error
    /// naming the file (llama.cpp's own reason is in its log, passed on by the caller).
    pub fn read(path: &Path) -> Result<FileFacts> {
        let c_path = CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| {
            crate::InputError::new(format!("{} has a NUL in its path", path.display()))
        })?;
        super::init_backend();
        let marker = super::log_marker();
        // With a ggml context, the reader also makes each tensor's metadata (its shape),
        // allocating no data (`no_alloc`).
        let mut meta: *mut sys::ggml_context = std::ptr::null_mut();
        let params = sys::gguf_init_params {
            no_alloc: true,
            ctx: &mut meta,
        };
        // SAFETY: a NUL-terminated path; gguf_init_from_file returns null on any failure.
        let ctx = unsafe { sys::gguf_init_from_file(c_path.as_ptr(), params) };
        if ctx.is_null() {
            crate::bad_input!(
                "llama.cpp cannot read {} as a GGUF file: {}",
                path.display(),
                super::log_since(marker)
            );
        }
        let facts = FileFacts::from_ctx(path, ctx, meta);
        // SAFETY: made above, freed once each.
        unsafe {
            sys::gguf_free(ctx);
            if !meta.is_null() {
                sys::ggml_free(meta);
            }
        }
        facts
    }

    fn from_ctx(
        path: &Path,
        ctx: *mut sys::gguf_context,
        meta: *mut sys::ggml_context,
    ) -> Result<FileFacts> {
        let text = |key: &str| -> Option<String> {
            let k = CString::new(key).ok()?;
            // SAFETY: ctx is valid for the duration of this call; the key is NUL-terminated.
            unsafe {
                let id = sys::gguf_find_key(ctx, k.as_ptr());
                if id < 0 || sys::gguf_get_kv_type(ctx, id) != sys::GGUF_TYPE_STRING {
                    return None;
                }
                let v = sys::gguf_get_val_str(ctx, id);
                (!v.is_null()).then(|| CStr::from_ptr(v).to_string_lossy().into_owned())
            }
        };
        let numbers = integer_keys(ctx);
        let file_type = {
            let k = CString::new("general.file_type").expect("no NUL");
            // SAFETY: as above; the value is read with the accessor of its own type.
            unsafe {
                let id = sys::gguf_find_key(ctx, k.as_ptr());
                if id < 0 {
                    None
                } else {
                    match sys::gguf_get_kv_type(ctx, id) {
                        sys::GGUF_TYPE_UINT32 => Some(sys::gguf_get_val_u32(ctx, id)),
                        sys::GGUF_TYPE_INT32 => u32::try_from(sys::gguf_get_val_i32(ctx, id)).ok(),
                        _ => None,
                    }
                }
            }
        };
        let Some(architecture) = text("general.architecture") else {
            crate::bad_input!(
                "{} has no general.architecture: llama.cpp cannot tell which model it is",
                path.display()
            );
        };
        // SAFETY: ctx is valid; ids are in 0..n.
        let n = unsafe { sys::gguf_get_n_tensors(ctx) };
        let mut tensors = Vec::with_capacity(n.max(0) as usize);
        for i in 0..n {
            // SAFETY: ctx and meta are valid; the reader made one ggml tensor per entry,
            // under the entry's name.
            unsafe {
                let c_name = sys::gguf_get_tensor_name(ctx, i);
                let name = CStr::from_ptr(c_name).to_string_lossy().into_owned();
                let ty = sys::gguf_get_tensor_type(ctx, i);
                let bytes = sys::gguf_get_tensor_size(ctx, i) as u64;
                let tensor = sys::ggml_get_tensor(meta, c_name);
                anyhow::ensure!(
                    !tensor.is_null(),
                    "llama.cpp's reader made no tensor for {name} of {}",
                    path.display()
                );
                let type_name = CStr::from_ptr(sys::ggml_type_name(ty))
                    .to_string_lossy()
                    .into_owned();
                tensors.push(TensorEntry {
                    dims: sys::ggml_n_dims(tensor).max(1) as usize,
                    elements: sys::ggml_nelements(tensor) as u64,
                    name,
                    type_name,
                    bytes,
                });
            }
        }
        Ok(FileFacts {
            path: path.to_path_buf(),
            architecture,
            name: text("general.name"),
            file_type,
            tensors,
            numbers,
        })
    }

    /// An integer hyper-parameter of the architecture (`{arch}.{key}`); for a per-layer
    /// array, its largest value.
    pub fn hparam(&self, key: &str) -> Option<u64> {
        self.numbers
            .get(&format!("{}.{key}", self.architecture))
            .and_then(|v| v.iter().copied().max())
            .and_then(|v| u64::try_from(v).ok())
    }

    /// Whether any tensor is stored in a quantized type (its f32 would be its own
    /// dequantized values).
    pub fn is_prequantized(&self) -> bool {
        self.tensors
            .iter()
            .any(|t| !matches!(t.type_name.as_str(), "f32" | "f16" | "bf16"))
    }

    /// Every element of every tensor.
    pub fn parameters(&self) -> u64 {
        self.tensors.iter().map(|t| t.elements).sum()
    }

    /// The file's tensor types, most bytes first ("q4_K+q6_K+f32").
    pub fn stored_types(&self) -> String {
        let mut by: Vec<(String, u64)> = Vec::new();
        for t in &self.tensors {
            match by.iter_mut().find(|(n, _)| *n == t.type_name) {
                Some((_, b)) => *b += t.bytes,
                None => by.push((t.type_name.clone(), t.bytes)),
            }
        }
        by.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        by.into_iter().map(|(n, _)| n).collect::<Vec<_>>().join("+")
    }
}

/// Every metadata key whose value is an integer or an array of integers.
fn integer_keys(ctx: *mut sys::gguf_context) -> std::collections::HashMap<String, Vec<i64>> {
    let mut out = std::collections::HashMap::new();
    // SAFETY: ctx is valid; every value is read with the accessor of its own type, and
    // array data is read within its length.
    unsafe {
        for id in 0..sys::gguf_get_n_kv(ctx) {
            let key = CStr::from_ptr(sys::gguf_get_key(ctx, id))
                .to_string_lossy()
                .into_owned();
            let scalar = |ty: sys::gguf_type| -> Option<i64> {
                Some(match ty {
                    sys::GGUF_TYPE_UINT8 => sys::gguf_get_val_u8(ctx, id) as i64,
                    sys::GGUF_TYPE_INT8 => sys::gguf_get_val_i8(ctx, id) as i64,
                    sys::GGUF_TYPE_UINT16 => sys::gguf_get_val_u16(ctx, id) as i64,
                    sys::GGUF_TYPE_INT16 => sys::gguf_get_val_i16(ctx, id) as i64,
                    sys::GGUF_TYPE_UINT32 => sys::gguf_get_val_u32(ctx, id) as i64,
                    sys::GGUF_TYPE_INT32 => sys::gguf_get_val_i32(ctx, id) as i64,
                    sys::GGUF_TYPE_UINT64 => sys::gguf_get_val_u64(ctx, id) as i64,
                    sys::GGUF_TYPE_INT64 => sys::gguf_get_val_i64(ctx, id),
                    _ => return None,
                })
            };
            let ty = sys::gguf_get_kv_type(ctx, id);
            if ty == sys::GGUF_TYPE_ARRAY {
                let at = sys::gguf_get_arr_type(ctx, id);
                let integers = [
                    sys::GGUF_TYPE_UINT32,
                    sys::GGUF_TYPE_INT32,
                    sys::GGUF_TYPE_UINT64,
                    sys::GGUF_TYPE_INT64,
                ];
                if !integers.contains(&at) {
                    continue;
                }
                let n = sys::gguf_get_arr_n(ctx, id);
                let data = sys::gguf_get_arr_data(ctx, id);
                let read = |i: usize| -> Option<i64> {
                    Some(match at {
                        sys::GGUF_TYPE_UINT32 => *(data as *const u32).add(i) as i64,
                        sys::GGUF_TYPE_INT32 => *(data as *const i32).add(i) as i64,
                        sys::GGUF_TYPE_UINT64 => *(data as *const u64).add(i) as i64,
                        sys::GGUF_TYPE_INT64 => *(data as *const i64).add(i),
                        _ => return None,
                    })
                };
                if n > 0 && n <= 4096 && !data.is_null() {
                    if let Some(v) = (0..n).map(read).collect::<Option<Vec<i64>>>() {
                        out.insert(key, v);
                    }
                }
            } else if let Some(v) = scalar(ty) {
                out.insert(key, vec![v]);
            }
        }
    }
    out
}

/// The accounting group of a tensor, as quantbench's own engine groups its weights:
/// embedding tables (looked up, one row per token), norms and biases (1-D), and every
/// matrix used in a product (the LM head `output.weight` included).
pub fn group_of(t: &TensorEntry) -> &'static str {
    if t.name.starts_with("token_embd") || t.name.starts_with("position_embd") {
        "embeddings"
    } else if t.dims == 1 {
        "norms_biases"
    } else {
        "linear"
    }
}
