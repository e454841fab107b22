//! GPU memory and energy through NVML (nvml-wrapper loads libnvidia-ml at run time, so
//! a build without a driver still compiles and runs; the probe then says why it is off).
//!
//! Figures: `gpu_used_bytes` and `gpu_total_bytes` of the device, `gpu_process_bytes`
//! of this process (from the device's running compute processes; inside a container the
//! list may be empty or hold other PIDs: then the figure is left out and a note says
//! so), and `gpu_energy_millijoules`, the device's total energy counter (left out where
//! the GPU does not support it, never reported as 0).
//!
//! What the probe makes of the device's answers is kept apart from NVML itself behind
//! [`GpuDevice`], so tests drive the probe with a fake device.

use std::collections::BTreeMap;
use std::sync::Mutex;

use nvml_wrapper::enums::device::UsedGpuMemory;
use nvml_wrapper::Nvml;

use super::Probe;

/// What the probe asks of a GPU. Errors are the reason, in words.
pub trait GpuDevice: Send + Sync {
    /// Device memory (used, total) in bytes.
    fn memory(&self) -> Result<(u64, u64), String>;
    /// The running compute processes: pid and GPU memory (None where the driver does
    /// not report it).
    fn compute_processes(&self) -> Result<Vec<(u32, Option<u64>)>, String>;
    /// The total energy counter since the driver loaded, in millijoules.
    fn energy_millijoules(&self) -> Result<u64, String>;
}

/// One GPU through NVML.
pub struct NvmlDevice {
    nvml: Nvml,
    index: u32,
}

impl NvmlDevice {
    /// Open GPU `index`, or say why NVML is unavailable.
    pub fn open(index: u32) -> Result<Self, String> {
        let nvml = Nvml::init().map_err(|e| format!("NVML is unavailable: {e}"))?;
        nvml.device_by_index(index)
            .map_err(|e| format!("NVML has no GPU {index}: {e}"))?;
        Ok(NvmlDevice { nvml, index })
    }

    fn device(&self) -> Result<nvml_wrapper::Device<'_>, String> {
        self.nvml
            .device_by_index(self.index)
            .map_err(|e| format!("GPU {} stopped answering NVML: {e}", self.index))
    }
}

impl GpuDevice for NvmlDevice {
    fn memory(&self) -> Result<(u64, u64), String> {
        let m = self.device()?.memory_info().map_err(|e| e.to_string())?;
        Ok((m.used, m.total))
    }

    fn compute_processes(&self) -> Result<Vec<(u32, Option<u64>)>, String> {
        let ps = self
            .device()?
            .running_compute_processes()
            .map_err(|e| e.to_string())?;
        Ok(ps
            .iter()
            .map(|p| {
                let bytes = match p.used_gpu_memory {
                    UsedGpuMemory::Used(b) => Some(b),
                    UsedGpuMemory::Unavailable => None,
                };
                (p.pid, bytes)
            })
            .collect())
    }

    fn energy_millijoules(&self) -> Result<u64, String> {
        self.device()?
            .total_energy_consumption()
            .map_err(|e| e.to_string())
    }
}

/// The GPU probe: reads a [`GpuDevice`] (NVML unless a test says otherwise).
pub struct NvmlProbe<D: GpuDevice = NvmlDevice> {
    device: D,
    pid: u32,
    notes: Mutex<Vec<String>>,
}

impl NvmlProbe<NvmlDevice> {
    /// Open GPU `index` through NVML, or say why NVML is unavailable.
    pub fn open(index: u32) -> Result<Self, String> {
        Ok(NvmlProbe::with_device(
            NvmlDevice::open(index)?,
            std::process::id(),
        ))
    }
}

impl<D: GpuDevice> NvmlProbe<D> {
    /// A probe of `device` on behalf of process `pid`.
    pub fn with_device(device: D, pid: u32) -> Self {
        NvmlProbe {
            device,
            pid,
            notes: Mutex::new(Vec::new()),
        }
    }

    fn note(&self, text: String) {
        let mut notes = self.notes.lock().expect("notes lock");
        if !notes.contains(&text) {
            notes.push(text);
        }
    }
}

impl<D: GpuDevice> Probe for NvmlProbe<D> {
    fn name(&self) -> &str {
        "nvml"
    }

    fn read(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        match self.device.memory() {
            Ok((used, total)) => {
                out.insert("gpu_used_bytes".into(), used);
                out.insert("gpu_total_bytes".into(), total);
            }
            Err(e) => self.note(format!("device memory is not readable: {e}")),
        }
        match self.device.compute_processes() {
            Ok(ps) => match ps.iter().find(|(pid, _)| *pid == self.pid) {
                Some((_, Some(b))) => {
                    out.insert("gpu_process_bytes".into(), *b);
                }
                Some((_, None)) => {
                    self.note("NVML does not report this process's GPU memory".into())
                }
                None => self.note(format!(
                    "this process (pid {}) is not among the GPU's {} compute processes (a container's PID namespace?): per-process GPU memory is not reported; use gpu_used_bytes",
                    self.pid,
                    ps.len()
                )),
            },
            Err(e) => self.note(format!("NVML cannot list compute processes: {e}")),
        }
        match self.device.energy_millijoules() {
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
