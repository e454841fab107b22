//! GPU memory and energy through NVML (nvml-wrapper loads libnvidia-ml at run time, so
//! a build without a driver still compiles and runs; the probe then says why it is off).
//!
//! Figures: `gpu_used_bytes` and `gpu_total_bytes` of the device, `gpu_process_bytes`
//! of this process (from the device's running compute processes; inside a container the
//! list may be empty or hold other PIDs: then the figure is left out and a note says
//! so), and `gpu_energy_millijoules`, the device's total energy counter (left out where
//! the GPU does not support it, never reported as 0).

use std::collections::BTreeMap;
use std::sync::Mutex;

use nvml_wrapper::enums::device::UsedGpuMemory;
use nvml_wrapper::Nvml;

use super::Probe;

pub struct NvmlProbe {
    nvml: Nvml,
    index: u32,
    pid: u32,
    notes: Mutex<Vec<String>>,
}

impl NvmlProbe {
    /// Open GPU `index`, or say why NVML is unavailable.
    pub fn open(index: u32) -> Result<Self, String> {
        let nvml = Nvml::init().map_err(|e| format!("NVML is unavailable: {e}"))?;
        nvml.device_by_index(index)
            .map_err(|e| format!("NVML has no GPU {index}: {e}"))?;
        Ok(NvmlProbe {
            nvml,
            index,
            pid: std::process::id(),
            notes: Mutex::new(Vec::new()),
        })
    }

    fn note(&self, text: String) {
        let mut notes = self.notes.lock().expect("notes lock");
        if !notes.contains(&text) {
            notes.push(text);
        }
    }
}

impl Probe for NvmlProbe {
    fn name(&self) -> &str {
        "nvml"
    }

    fn read(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        let Ok(d) = self.nvml.device_by_index(self.index) else {
            self.note(format!("GPU {} stopped answering NVML", self.index));
            return out;
        };
        if let Ok(m) = d.memory_info() {
            out.insert("gpu_used_bytes".into(), m.used);
            out.insert("gpu_total_bytes".into(), m.total);
        }
        match d.running_compute_processes() {
            Ok(ps) => match ps.iter().find(|p| p.pid == self.pid) {
                Some(p) => match p.used_gpu_memory {
                    UsedGpuMemory::Used(b) => {
                        out.insert("gpu_process_bytes".into(), b);
                    }
                    UsedGpuMemory::Unavailable => {
                        self.note("NVML does not report this process's GPU memory".into())
                    }
                },
                None => self.note(format!(
                    "this process (pid {}) is not among the GPU's {} compute processes (a container's PID namespace?): per-process GPU memory is not reported; use gpu_used_bytes",
                    self.pid,
                    ps.len()
                )),
            },
            Err(e) => self.note(format!("NVML cannot list compute processes: {e}")),
        }
        match d.total_energy_consumption() {
            Ok(mj) => {
                out.insert("gpu_energy_millijoules".into(), mj);
            }
            Err(e) => self.note(format!(
                "the GPU's total energy counter is unsupported: {e}"
            )),
        }
        out
    }

    fn notes(&self) -> Vec<String> {
        self.notes.lock().expect("notes lock").clone()
    }
}
