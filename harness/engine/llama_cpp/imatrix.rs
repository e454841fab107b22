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
    parse_legacy(&bytes).ok_or_else(|| {
        crate::InputError::new(format!(
            "{} is neither a GGUF importance matrix nor llama-imatrix's legacy .dat form",
            path.display()
        ))
        .into()
    })
}

/// llama-imatrix's legacy form: an i32 count of entries, then per entry its name's length
/// and bytes, its call count, its value count and the f32 values (little-endian); a
/// trailing chunk count and dataset name are optional and not needed. `None` for bytes
/// that are not that.
fn parse_legacy(bytes: &[u8]) -> Option<Imatrix> {
    let mut at = 0usize;
    let i32_at = |at: &mut usize| -> Option<i32> {
        let b = bytes.get(*at..at.checked_add(4)?)?;
        *at += 4;
        Some(i32::from_le_bytes(b.try_into().ok()?))
    };
    let n = i32_at(&mut at)?;
    if n < 1 {
        return None;
    }
    let mut out = Imatrix {
        names: Vec::new(),
        values: Vec::new(),
    };
    for _ in 0..n {
        let len = usize::try_from(i32_at(&mut at)?).ok()?;
        let name = bytes.get(at..at.checked_add(len)?)?.to_vec();
        at += len;
        let ncall = i32_at(&mut at)?;
        let nval = usize::try_from(i32_at(&mut at)?).ok()?;
        let raw = bytes.get(at..at.checked_add(nval.checked_mul(4)?)?)?;
        at += 4 * nval;
        let values = raw
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
            .map(|x| if ncall > 0 { x / ncall as f32 } else { x })
            .collect();
        out.names.push(CString::new(name).ok()?);
        out.values.push(values);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn legacy(entries: &[(&str, i32, &[f32])]) -> Vec<u8> {
        let mut b = (entries.len() as i32).to_le_bytes().to_vec();
        for (name, ncall, vals) in entries {
            b.extend((name.len() as i32).to_le_bytes());
            b.extend(name.as_bytes());
            b.extend(ncall.to_le_bytes());
            b.extend((vals.len() as i32).to_le_bytes());
            for v in *vals {
                b.extend(v.to_le_bytes());
            }
        }
        b
    }

    #[test]
    fn the_legacy_form_is_read_as_llama_quantize_reads_it() {
        let m = parse_legacy(&legacy(&[
            ("blk.0.attn_q.weight", 4, &[4.0, 8.0]),
            ("output.weight", 0, &[3.0]),
        ]))
        .unwrap();
        assert_eq!(m.names[0].to_str().unwrap(), "blk.0.attn_q.weight");
        assert_eq!(m.values[0], vec![1.0, 2.0], "sums over the calls");
        assert_eq!(m.values[1], vec![3.0], "no calls: as stored");
        let e = m.entries();
        assert_eq!(e.len(), 3, "terminated by an empty entry");
        assert!(e[2].name.is_null() && e[2].size == 0);
        let mut cut = legacy(&[("a", 1, &[1.0, 2.0])]);
        cut.pop();
        assert!(parse_legacy(&cut).is_none(), "a truncated file is refused");
        assert!(parse_legacy(&0i32.to_le_bytes()).is_none(), "no entries");
        assert!(
            parse_legacy(&legacy(&[("a\0b", 1, &[1.0])])).is_none(),
            "a NUL in a name"
        );
    }

    proptest! {
        /// Any bytes: an importance matrix or a refusal, never a panic or a huge
        /// allocation (lengths are checked against what the bytes hold).
        #[test]
        fn the_legacy_reader_survives_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = parse_legacy(&bytes);
        }

        #[test]
        fn the_legacy_reader_survives_corrupted_files(flip in 0usize..64, to in any::<u8>()) {
            let mut b = legacy(&[("blk.0.ffn_up.weight", 3, &[1.0, 2.0, 3.0]), ("x", 1, &[5.0])]);
            let at = flip % b.len();
            b[at] = to;
            let _ = parse_legacy(&b);
        }
    }
}
