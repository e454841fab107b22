//! An importance matrix for llama.cpp's quantizer: the shared reader's entries
//! (`format/imatrix.rs`, as llama-quantize reads the file) as the C strings and arrays
//! `llama_model_quantize_params::imatrix` takes.

use std::ffi::CString;
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
        let m = crate::format::imatrix::Imatrix::read(path)?;
        let mut out = Imatrix {
            names: Vec::new(),
            values: Vec::new(),
        };
        for (name, v) in m.entries {
            out.names.push(CString::new(name)?);
            out.values.push(v);
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
