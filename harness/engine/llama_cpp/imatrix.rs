//! An importance matrix for llama.cpp's quantizer, read as llama-quantize reads it
//! (common/imatrix-loader.cpp and tools/quantize/quantize.cpp's `load_imatrix`): the GGUF
//! form (`NAME.in_sum2` and `NAME.counts` tensors) or llama-imatrix's legacy `.dat`, each
//! entry's sums divided by its count per matrix (1 where a matrix was never reached).

use std::ffi::{CStr, CString};
use std::path::Path;

use anyhow::Result;
use llama_cpp_sys_2 as sys;

/// Per-tensor importance values, ready for `llama_model_quantize_params::imatrix`.
pub struct Imatrix {
    names: Vec<CString>,
    values: Vec<Vec<f32>>,
}

impl Imatrix {
    pub fn read(path: &Path) -> Result<Imatrix> {
        let c_path = CString::new(path.as_os_str().as_encoded_bytes())?;
        if !path.is_file() {
            crate::bad_input!(
                "importance matrix {} does not exist (engine setting imatrix)",
                path.display()
            );
        }
        super::init_backend();
        let mut meta: *mut sys::ggml_context = std::ptr::null_mut();
        let params = sys::gguf_init_params {
            no_alloc: false,
            ctx: &mut meta,
        };
        // SAFETY: a NUL-terminated path; null on failure (then the legacy form is tried).
        let ctx = unsafe { sys::gguf_init_from_file(c_path.as_ptr(), params) };
        let out = if ctx.is_null() {
            read_legacy(path)
        } else {
            let r = read_gguf(path, meta);
            // SAFETY: made above, freed once each.
            unsafe {
                sys::gguf_free(ctx);
                sys::ggml_free(meta);
            }
            r
        }?;
        if out.names.is_empty() {
            crate::bad_input!("importance matrix {} holds no entries", path.display());
        }
        Ok(out)
    }

    /// The entries as llama.cpp takes them, terminated by an empty one; borrows `self`.
    pub fn entries(&self) -> Vec<sys::llama_model_imatrix_data> {
        self.names
            .iter()
            .zip(&self.values)
            .map(|(n, v)| sys::llama_model_imatrix_data {
                name: n.as_ptr(),
                data: v.as_ptr(),
                size: v.len(),
            })
            .chain(std::iter::once(sys::llama_model_imatrix_data {
                name: std::ptr::null(),
                data: std::ptr::null(),
                size: 0,
            }))
            .collect()
    }
}

fn read_gguf(path: &Path, meta: *mut sys::ggml_context) -> Result<Imatrix> {
    use std::collections::BTreeMap;
    let mut sums: BTreeMap<String, Vec<f32>> = BTreeMap::new();
    let mut counts: BTreeMap<String, Vec<f32>> = BTreeMap::new();
    // SAFETY: meta holds the file's tensors with their data (no_alloc = false); each is
    // read as f32 only after its type is checked.
    unsafe {
        let mut t = sys::ggml_get_first_tensor(meta);
        while !t.is_null() {
            let name = CStr::from_ptr((*t).name.as_ptr())
                .to_string_lossy()
                .into_owned();
            let n = sys::ggml_nelements(t) as usize;
            let kind = if let Some(base) = name.strip_suffix(".in_sum2") {
                Some((base.to_string(), &mut sums))
            } else {
                name.strip_suffix(".counts")
                    .map(|base| (base.to_string(), &mut counts))
            };
            if let Some((base, into)) = kind {
                if (*t).type_ != sys::GGML_TYPE_F32 {
                    crate::bad_input!(
                        "importance matrix {}: {name} is not f32, as llama-imatrix writes it",
                        path.display()
                    );
                }
                let data = std::slice::from_raw_parts((*t).data as *const f32, n);
                into.insert(base, data.to_vec());
            }
            t = sys::ggml_get_next_tensor(meta, t);
        }
    }
    let mut out = Imatrix {
        names: Vec::new(),
        values: Vec::new(),
    };
    for (name, s) in sums {
        let Some(c) = counts.get(&name) else {
            crate::bad_input!(
                "importance matrix {}: {name} has sums but no counts",
                path.display()
            );
        };
        if c.is_empty() || s.len() % c.len() != 0 {
            crate::bad_input!(
                "importance matrix {}: {name}'s {} sums do not divide into its {} counts",
                path.display(),
                s.len(),
                c.len()
            );
        }
        let per = s.len() / c.len();
        let values = s
            .chunks(per)
            .zip(c)
            .flat_map(|(row, &count)| {
                let count = count.round();
                row.iter()
                    .map(move |&x| if count > 0.0 { x / count } else { 1.0 })
            })
            .collect();
        out.names.push(CString::new(name)?);
        out.values.push(values);
    }
    Ok(out)
}

fn read_legacy(path: &Path) -> Result<Imatrix> {
    let bytes = std::fs::read(path)?;
    let bad = || {
        crate::InputError::new(format!(
            "{} is neither a GGUF importance matrix nor llama-imatrix's legacy .dat form",
            path.display()
        ))
    };
    let mut at = 0usize;
    let i32_at = |at: &mut usize| -> Result<i32> {
        let b = bytes.get(*at..*at + 4).ok_or_else(bad)?;
        *at += 4;
        Ok(i32::from_le_bytes(b.try_into().expect("4 bytes")))
    };
    let n = i32_at(&mut at)?;
    if n < 1 {
        return Err(bad().into());
    }
    let mut out = Imatrix {
        names: Vec::new(),
        values: Vec::new(),
    };
    for _ in 0..n {
        let len = usize::try_from(i32_at(&mut at)?).map_err(|_| bad())?;
        let name = bytes.get(at..at + len).ok_or_else(bad)?.to_vec();
        at += len;
        let ncall = i32_at(&mut at)?;
        let nval = usize::try_from(i32_at(&mut at)?).map_err(|_| bad())?;
        let raw = bytes.get(at..at + 4 * nval).ok_or_else(bad)?;
        at += 4 * nval;
        let values = raw
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
            .map(|x| if ncall > 0 { x / ncall as f32 } else { x })
            .collect();
        out.names.push(CString::new(name).map_err(|_| bad())?);
        out.values.push(values);
    }
    Ok(out)
}
