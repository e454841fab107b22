//! Memory probes and the background peak sampler.
//!
//! Only probes read memory, and only the runner decides when. A probe returns named
//! byte counts ("process_rss_bytes", and from a GPU probe "gpu_used_bytes" ...); a
//! [`Reading`] merges every probe's values at one moment. An NVML probe plugs in beside
//! the process probe by implementing [`Probe`].

#[cfg(feature = "cuda")]
pub mod cuda_pool;
pub mod nvml;
pub mod process;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Named byte counts read at one moment, from every probe.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Reading(pub BTreeMap<String, u64>);

impl Reading {
    pub fn get(&self, key: &str) -> Option<u64> {
        self.0.get(key).copied()
    }

    /// Keep the larger value of each key.
    pub fn max_with(&mut self, other: &Reading) {
        for (k, v) in &other.0 {
            let e = self.0.entry(k.clone()).or_insert(*v);
            *e = (*e).max(*v);
        }
    }
}

/// A source of memory figures.
pub trait Probe: Send + Sync {
    /// Short name, e.g. "process" or "nvml".
    fn name(&self) -> &str;
    /// Current values; an unavailable figure is left out, never reported as 0.
    fn read(&self) -> BTreeMap<String, u64>;
    /// What the probe could not measure, and why (said once each).
    fn notes(&self) -> Vec<String> {
        Vec::new()
    }
    /// Ask the allocator this probe watches to give its cached, unused memory back (a
    /// CUDA memory pool); true if it did. Most probes watch no cache.
    fn trim_cache(&self) -> bool {
        false
    }
}

/// Every probe, read together, and why any expected probe is missing.
#[derive(Clone)]
pub struct Probes(Vec<Arc<dyn Probe>>, Vec<String>);

impl Probes {
    /// The probes available on this machine: process memory always.
    pub fn available() -> Self {
        Probes(vec![Arc::new(process::ProcessProbe::new())], Vec::new())
    }

    /// The probes for a run on `device` ("cpu" or "cuda:N"): process memory, plus NVML
    /// for a CUDA device when a driver answers. Also returns why a probe is missing.
    pub fn for_device(device: &str) -> (Self, Vec<String>) {
        let mut probes: Vec<Arc<dyn Probe>> = vec![Arc::new(process::ProcessProbe::new())];
        let mut missing = Vec::new();
        if let Some(i) = device
            .strip_prefix("cuda:")
            .and_then(|n| n.parse::<u32>().ok())
        {
            match nvml::NvmlProbe::open(i) {
                Ok(p) => probes.push(Arc::new(p)),
                Err(why) => missing.push(format!("nvml: {why}")),
            }
            #[cfg(feature = "cuda")]
            probes.push(Arc::new(cuda_pool::CudaPoolProbe::new(i)));
        }
        (Probes(probes, missing.clone()), missing)
    }

    /// Why expected probes are missing, then every probe's notes, prefixed with its name.
    pub fn notes(&self) -> Vec<String> {
        let mut out = self.1.clone();
        out.extend(self.0.iter().flat_map(|p| {
            p.notes()
                .into_iter()
                .map(move |n| format!("{}: {n}", p.name()))
        }));
        out
    }

    pub fn new(probes: Vec<Arc<dyn Probe>>) -> Self {
        Probes(probes, Vec::new())
    }

    pub fn names(&self) -> Vec<String> {
        self.0.iter().map(|p| p.name().to_string()).collect()
    }

    /// Ask every probe's allocator to give cached memory back; true if any did.
    pub fn trim_caches(&self) -> bool {
        // Every probe is asked: no short-circuit.
        let trimmed: Vec<bool> = self.0.iter().map(|p| p.trim_cache()).collect();
        trimmed.contains(&true)
    }

    pub fn read(&self) -> Reading {
        let mut r = Reading::default();
        for p in &self.0 {
            r.0.extend(p.read());
        }
        r
    }

    /// Start sampling every `interval` in a background thread, keeping each figure's peak.
    pub fn start_peak_sampler(&self, interval: Duration) -> PeakSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(Mutex::new(self.read()));
        let samples = Arc::new(Mutex::new(1usize));
        let handle = {
            let (stop, peak, samples, probes) =
                (stop.clone(), peak.clone(), samples.clone(), self.clone());
            std::thread::Builder::new()
                .name("quantbench-peak-sampler".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let r = probes.read();
                        peak.lock().expect("sampler lock").max_with(&r);
                        *samples.lock().expect("sampler lock") += 1;
                        std::thread::sleep(interval);
                    }
                })
                .expect("spawning the peak sampler")
        };
        PeakSampler {
            stop,
            peak,
            samples,
            handle: Some(handle),
            probes: self.clone(),
        }
    }
}

/// A running background sampler; `finish` stops it and returns the peaks.
pub struct PeakSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<Mutex<Reading>>,
    samples: Arc<Mutex<usize>>,
    handle: Option<JoinHandle<()>>,
    probes: Probes,
}

impl PeakSampler {
    /// Stop sampling (with one last reading) and return the peak of each figure and the
    /// number of samples taken.
    pub fn finish(mut self) -> (Reading, usize) {
        self.stop_thread();
        let mut peak = self.peak.lock().expect("sampler lock").clone();
        peak.max_with(&self.probes.read());
        let n = *self.samples.lock().expect("sampler lock") + 1;
        (peak, n)
    }

    fn stop_thread(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for PeakSampler {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    /// A probe whose value the test sets: stands in for NVML in tests.
    struct FakeProbe(Arc<AtomicU64>);
    impl Probe for FakeProbe {
        fn name(&self) -> &str {
            "fake"
        }
        fn read(&self) -> BTreeMap<String, u64> {
            BTreeMap::from([("fake_bytes".to_string(), self.0.load(Ordering::Relaxed))])
        }
    }

    #[test]
    fn sampler_catches_a_peak_between_readings() {
        let v = Arc::new(AtomicU64::new(100));
        let probes = Probes::new(vec![Arc::new(FakeProbe(v.clone()))]);
        let s = probes.start_peak_sampler(Duration::from_millis(1));
        std::thread::sleep(Duration::from_millis(20));
        v.store(5000, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(20));
        v.store(200, Ordering::Relaxed);
        let (peak, n) = s.finish();
        assert_eq!(peak.get("fake_bytes"), Some(5000));
        assert!(n > 5, "only {n} samples");
        assert_eq!(probes.read().get("fake_bytes"), Some(200));
    }

    #[test]
    fn process_probe_sees_an_allocation() {
        // RSS is the whole process's: other tests of this binary run beside this one and
        // may free memory between the two readings, so a few tries are allowed; one must
        // see the 64 MB.
        let probes = Probes::available();
        let mut seen = Vec::new();
        for _ in 0..5 {
            let before = probes.read().get("process_rss_bytes").unwrap();
            let big = vec![1u8; 64 << 20];
            let after = probes.read().get("process_rss_bytes").unwrap();
            drop(std::hint::black_box(big));
            if after >= before + (60 << 20) {
                return;
            }
            seen.push((before, after));
        }
        panic!("no try saw a 64 MB allocation: {seen:?}");
    }
}
