//! The CUDA memory pool candle allocates from (CUDA builds only).
//!
//! candle's CUDA backend allocates through cudarc with `cuMemAllocAsync`, from the
//! device's current memory pool. Freed memory goes back to the pool, which may keep it
//! reserved from the device: after a model is dropped, NVML's device figure still counts
//! what the pool holds (the analogue of PyTorch's caching allocator, which made the
//! notebook's "post-cleanup footprint" 458 MB). This probe reports what the pool holds
//! (`cuda_pool_reserved_bytes`) and what of it is in use (`cuda_pool_used_bytes`), and
//! can trim the pool, so a run records memory after cleanup both before and after the
//! pool gives its cache back, each named for what it is.
//!
//! Unverified on a GPU in this repository's history until a GPU run says otherwise:
//! see the README, "Running on a GPU".

#![cfg(feature = "cuda")]

use std::collections::BTreeMap;
use std::sync::Mutex;

use candle_core::cuda_backend::cudarc::driver::sys;

use super::Probe;

pub struct CudaPoolProbe {
    ordinal: i32,
    notes: Mutex<Vec<String>>,
}

impl CudaPoolProbe {
    /// The pool of CUDA device `ordinal` (candle has initialised the driver by then).
    pub fn new(ordinal: u32) -> Self {
        CudaPoolProbe {
            ordinal: ordinal as i32,
            notes: Mutex::new(Vec::new()),
        }
    }

    fn note(&self, text: String) {
        let mut notes = self.notes.lock().expect("notes lock");
        if !notes.contains(&text) {
            notes.push(text);
        }
    }

    /// The device's current memory pool.
    fn pool(&self) -> Result<sys::CUmemoryPool, String> {
        let mut dev: sys::CUdevice = 0;
        let mut pool: sys::CUmemoryPool = std::ptr::null_mut();
        // SAFETY: plain driver queries writing into the locals above.
        unsafe {
            check(sys::cuDeviceGet(&mut dev, self.ordinal), "cuDeviceGet")?;
            check(
                sys::cuDeviceGetMemPool(&mut pool, dev),
                "cuDeviceGetMemPool",
            )?;
        }
        Ok(pool)
    }

    fn attribute(
        &self,
        pool: sys::CUmemoryPool,
        attr: sys::CUmemPool_attribute,
    ) -> Result<u64, String> {
        let mut value: u64 = 0;
        // SAFETY: these attributes are 64-bit counters written into `value`.
        unsafe {
            check(
                sys::cuMemPoolGetAttribute(pool, attr, &mut value as *mut u64 as *mut _),
                "cuMemPoolGetAttribute",
            )?;
        }
        Ok(value)
    }
}

fn check(r: sys::CUresult, what: &str) -> Result<(), String> {
    if r == sys::CUresult::CUDA_SUCCESS {
        Ok(())
    } else {
        Err(format!("{what} failed: {r:?}"))
    }
}

impl Probe for CudaPoolProbe {
    fn name(&self) -> &str {
        "cuda_pool"
    }

    fn read(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        let figures = self.pool().and_then(|pool| {
            Ok((
                self.attribute(
                    pool,
                    sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT,
                )?,
                self.attribute(
                    pool,
                    sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_CURRENT,
                )?,
            ))
        });
        match figures {
            Ok((reserved, used)) => {
                out.insert("cuda_pool_reserved_bytes".into(), reserved);
                out.insert("cuda_pool_used_bytes".into(), used);
            }
            Err(e) => self.note(format!("the CUDA memory pool is not readable: {e}")),
        }
        out
    }

    fn notes(&self) -> Vec<String> {
        self.notes.lock().expect("notes lock").clone()
    }

    fn trim_cache(&self) -> bool {
        // SAFETY: trimming only releases memory the pool holds and no allocation uses.
        let trimmed = self
            .pool()
            .and_then(|pool| unsafe { check(sys::cuMemPoolTrimTo(pool, 0), "cuMemPoolTrimTo") });
        match trimmed {
            Ok(()) => true,
            Err(e) => {
                self.note(format!("the CUDA memory pool could not be trimmed: {e}"));
                false
            }
        }
    }
}
