//! What machine and build produced a result: enough to tell two machines and two builds
//! apart, and a short fingerprint of the hardware.

use serde::{Deserialize, Serialize};
use sysinfo::System;

/// One GPU as nvidia-smi describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuInfo {
    pub name: String,
    pub memory_bytes: u64,
    pub driver_version: String,
    /// The highest CUDA version the driver supports.
    pub cuda_version: String,
    /// Clocks when the run started, in MHz (None where nvidia-smi reports N/A): the SM
    /// and memory clocks now, and the SM clock's maximum. A GPU idling at a low clock
    /// or capped below its maximum explains timings that differ between runs.
    #[serde(default)]
    pub sm_clock_mhz: Option<u32>,
    #[serde(default)]
    pub memory_clock_mhz: Option<u32>,
    #[serde(default)]
    pub max_sm_clock_mhz: Option<u32>,
}

/// GPUs from `nvidia-smi`, or none when it is absent or fails.
pub fn detect_gpus() -> Vec<GpuInfo> {
    let query = std::process::Command::new("nvidia-smi")
        .args([
            "--query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem,clocks.max.sm",
            "--format=csv,noheader,nounits",
        ])
        .output();
    let Ok(out) = query else { return Vec::new() };
    if !out.status.success() {
        return Vec::new();
    }
    let banner = std::process::Command::new("nvidia-smi")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    parse_nvidia_smi(&String::from_utf8_lossy(&out.stdout), &banner)
}

/// Parse `nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem,
/// clocks.max.sm --format=csv,noheader,nounits` (memory in MiB, clocks in MHz) and the
/// CUDA version from its banner.
pub fn parse_nvidia_smi(csv: &str, banner: &str) -> Vec<GpuInfo> {
    let cuda = banner
        .split("CUDA Version:")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or("")
        .trim_end_matches('|')
        .to_string();
    csv.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').map(str::trim).collect();
            match f.as_slice() {
                [name, mib, driver, sm, mem, max_sm] => Some(GpuInfo {
                    name: name.to_string(),
                    memory_bytes: mib.parse::<u64>().ok()? << 20,
                    driver_version: driver.to_string(),
                    cuda_version: cuda.clone(),
                    sm_clock_mhz: sm.parse().ok(),
                    memory_clock_mhz: mem.parse().ok(),
                    max_sm_clock_mhz: max_sm.parse().ok(),
                }),
                _ => None,
            }
        })
        .collect()
}

/// The machine, the build and the device a run used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Environment {
    pub cpu_model: String,
    /// Instruction-set extensions that change kernel speed (AVX2, AVX-512, NEON ...).
    pub cpu_flags: Vec<String>,
    pub physical_cores: Option<usize>,
    pub logical_cores: usize,
    /// Threads candle's CPU kernels use.
    pub threads: usize,
    pub ram_bytes: u64,
    pub os: String,
    pub kernel: String,
    pub quantbench_version: String,
    /// Git commit of the build, with "-dirty" when the tree had uncommitted changes.
    pub git_commit: String,
    pub candle_version: String,
    pub rustc_version: String,
    /// Cargo features the binary was built with.
    pub build_features: Vec<String>,
    pub build_profile: String,
    /// NVIDIA GPUs on the machine (from nvidia-smi), whether or not the run used one.
    #[serde(default)]
    pub gpus: Vec<GpuInfo>,
    /// The device the run asked for and got, e.g. "cpu" or "cuda:0".
    pub device: String,
    /// Which kernels multiply by quantized weights on the CPU, and why
    /// (`kernel::describe`).
    #[serde(default)]
    pub kernels: String,
    /// When the run started (RFC 3339, UTC).
    pub timestamp: String,
    /// A short hash of the hardware fields, equal on equal machines.
    pub hardware_fingerprint: String,
    /// The memory bandwidth measured at the start of the run (runs with workload tests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bandwidth: Option<crate::run::bandwidth::Bandwidth>,
}

impl Environment {
    /// Read the current machine and build; `device` names the device in use.
    pub fn capture(device: &str) -> Self {
        let mut sys = System::new();
        sys.refresh_memory();
        sys.refresh_cpu_all();
        let cpu_model = sys
            .cpus()
            .first()
            .map(|c| c.brand().trim().to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| std::env::consts::ARCH.to_string());
        let mut env = Environment {
            cpu_model,
            cpu_flags: cpu_flags(),
            physical_cores: System::physical_core_count(),
            logical_cores: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            threads: candle_core::utils::get_num_threads(),
            ram_bytes: sys.total_memory(),
            os: System::long_os_version().unwrap_or_else(|| std::env::consts::OS.to_string()),
            kernel: System::kernel_version().unwrap_or_default(),
            quantbench_version: env!("CARGO_PKG_VERSION").to_string(),
            git_commit: env!("QB_GIT_COMMIT").to_string(),
            candle_version: env!("QB_CANDLE_VERSION").to_string(),
            rustc_version: env!("QB_RUSTC_VERSION").to_string(),
            build_features: build_features(),
            gpus: detect_gpus(),
            build_profile: if cfg!(debug_assertions) {
                "debug".into()
            } else {
                "release".into()
            },
            device: device.to_string(),
            kernels: crate::kernel::describe(),
            timestamp: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            hardware_fingerprint: String::new(),
            memory_bandwidth: None,
        };
        env.hardware_fingerprint = env.fingerprint();
        env
    }

    /// 12 hex digits over CPU model, flags, cores, RAM (rounded to GiB), the GPU used
    /// (name and memory) and the device.
    pub fn fingerprint(&self) -> String {
        let gpu = match self
            .device
            .strip_prefix("cuda:")
            .and_then(|n| n.parse::<usize>().ok())
        {
            Some(i) => self
                .gpus
                .get(i)
                .map(|g| format!("{}:{}", g.name, g.memory_bytes >> 30))
                .unwrap_or_default(),
            None => String::new(),
        };
        let key = format!(
            "{}|{}|{:?}|{}|{}|{}|{}",
            self.cpu_model,
            self.cpu_flags.join(","),
            self.physical_cores,
            self.logical_cores,
            (self.ram_bytes as f64 / (1u64 << 30) as f64).round() as u64,
            self.device,
            gpu
        );
        let h = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
        });
        format!("{:012x}", h & 0xffff_ffff_ffff)
    }
}

fn build_features() -> Vec<String> {
    let mut f = Vec::new();
    if cfg!(feature = "cuda") {
        f.push("cuda".to_string());
    }
    f
}

#[cfg(target_arch = "x86_64")]
fn cpu_flags() -> Vec<String> {
    let mut f = Vec::new();
    macro_rules! flag {
        ($($name:tt),*) => {$(
            if std::arch::is_x86_feature_detected!($name) {
                f.push($name.to_string());
            }
        )*};
    }
    flag!(
        "avx",
        "avx2",
        "fma",
        "f16c",
        "avx512f",
        "avx512bw",
        "avx512vl",
        "avx512vnni",
        "avx512bf16"
    );
    f
}

#[cfg(target_arch = "aarch64")]
fn cpu_flags() -> Vec<String> {
    let mut f = vec!["neon".to_string()];
    if std::arch::is_aarch64_feature_detected!("dotprod") {
        f.push("dotprod".into());
    }
    if std::arch::is_aarch64_feature_detected!("i8mm") {
        f.push("i8mm".into());
    }
    f
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn cpu_flags() -> Vec<String> {
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_describes_this_machine_and_build() {
        let e = Environment::capture("cpu");
        assert!(!e.cpu_model.is_empty());
        assert!(e.logical_cores >= 1 && e.ram_bytes > 0);
        assert_eq!(e.quantbench_version, env!("CARGO_PKG_VERSION"));
        assert!(!e.git_commit.is_empty() && !e.candle_version.is_empty());
        assert!(e.rustc_version.starts_with("rustc"), "{}", e.rustc_version);
        assert_eq!(e.hardware_fingerprint.len(), 12);
        let mut other = e.clone();
        other.device = "cuda:0".into();
        assert_ne!(other.fingerprint(), e.fingerprint());
        other.device = "cpu".into();
        other.timestamp = "later".into();
        assert_eq!(other.fingerprint(), e.fingerprint(), "time is not hardware");
    }

    #[test]
    fn nvidia_smi_output_is_parsed() {
        let csv = "NVIDIA H100 80GB HBM3, 81559, 580.159.04, 345, 2619, 1980\n";
        let banner =
            "| NVIDIA-SMI 580.159.04   Driver Version: 580.159.04   CUDA Version: 13.0     |";
        let g = parse_nvidia_smi(csv, banner);
        assert_eq!(
            g,
            vec![GpuInfo {
                name: "NVIDIA H100 80GB HBM3".into(),
                memory_bytes: 81559 << 20,
                driver_version: "580.159.04".into(),
                cuda_version: "13.0".into(),
                sm_clock_mhz: Some(345),
                memory_clock_mhz: Some(2619),
                max_sm_clock_mhz: Some(1980),
            }]
        );
        let na = parse_nvidia_smi("A GPU, 1024, 1.0, [N/A], [N/A], 1500\n", "");
        assert_eq!(
            (na[0].sm_clock_mhz, na[0].max_sm_clock_mhz),
            (None, Some(1500))
        );
        assert!(parse_nvidia_smi("garbage", "").is_empty());
        let mut a = Environment::capture("cuda:0");
        a.gpus = g.clone();
        let mut b = a.clone();
        b.gpus[0].name = "NVIDIA H200".into();
        assert_ne!(
            a.fingerprint(),
            b.fingerprint(),
            "another GPU is another machine"
        );
    }
}
