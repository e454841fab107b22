//! The NVML probe and the device-pool trim, driven by fake GPUs through a whole run: every
//! moment read, the peak sampled, per-process memory and energy reported only when the
//! device really gives them (never as 0), and a pool's memory reported before and after
//! it is trimmed. The real NVML device is exercised on a GPU machine (README, "Running on
//! a GPU"); without a driver the probe says why (tests/runner.rs).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use quantbench::probe::nvml::{GpuDevice, NvmlProbe};
use quantbench::probe::process::ProcessProbe;
use quantbench::probe::{Probe, Probes};
use quantbench::record::RunRecord;
use quantbench::run::runner::{self, Silent};
use quantbench::Scenario;

const TOTAL: u64 = 80 << 30;

/// A GPU whose memory is this process's resident memory (so loading and dropping a model
/// moves it as a real device's would), with a 100 W energy counter. Which answers it
/// gives is up to the test.
struct FakeGpu {
    since: Instant,
    processes: Result<Vec<u32>, String>,
    energy: bool,
}

fn rss() -> u64 {
    ProcessProbe::new().read()["process_rss_bytes"]
}

impl GpuDevice for FakeGpu {
    fn memory(&self) -> Result<(u64, u64), String> {
        Ok((rss(), TOTAL))
    }
    fn compute_processes(&self) -> Result<Vec<(u32, Option<u64>)>, String> {
        self.processes
            .clone()
            .map(|pids| pids.into_iter().map(|p| (p, Some(rss()))).collect())
    }
    fn energy_millijoules(&self) -> Result<u64, String> {
        if self.energy {
            Ok((self.since.elapsed().as_secs_f64() * 100_000.0) as u64)
        } else {
            Err("Not supported".into())
        }
    }
}

/// The fake device's memory is the process's: runs in this file take turns.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn run_with(probe: Arc<dyn Probe>) -> RunRecord {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let scenario = Scenario::parse(
        "name = \"gpu\"\nmodel = \"synthetic:tiny\"\ndevice = \"cpu\"\nprecisions = [\"f32\"]\nnew_tokens = 8\nwarmup = 1\nrepeats = 3\n[quality]\nenabled = false\n",
        "gpu.toml",
    )
    .unwrap();
    let prepared = runner::prepare(&scenario, None).unwrap();
    let probes = Probes::new(vec![Arc::new(ProcessProbe::new()), probe]);
    runner::run(&prepared, &probes, &mut Silent).unwrap()
}

#[test]
fn the_nvml_probe_reads_every_figure_at_every_moment() {
    let gpu = FakeGpu {
        since: Instant::now(),
        processes: Ok(vec![1, std::process::id()]),
        energy: true,
    };
    let run = run_with(Arc::new(NvmlProbe::with_device(gpu, std::process::id())));
    let v = &run.variants[0];
    assert!(v.is_ok(), "{:?}", v.error);
    let m = &v.memory;
    let peak = m.peak_during_generation.as_ref().expect("a peak");
    let cleanup = m.after_cleanup.as_ref().expect("after cleanup");
    for (moment, r) in [
        ("before load", &m.before_load),
        ("after load", &m.after_load),
        ("peak", peak),
        ("after cleanup", cleanup),
    ] {
        for key in [
            "gpu_used_bytes",
            "gpu_total_bytes",
            "gpu_process_bytes",
            "gpu_energy_millijoules",
        ] {
            assert!(r.get(key).is_some(), "{key} missing {moment}");
        }
        assert_eq!(r.get("gpu_total_bytes"), Some(TOTAL));
    }
    // synthetic:tiny's f32 weights are 55 MB: the device figure rises by about that.
    let loaded = m.after_load.get("gpu_used_bytes").unwrap() as i64
        - m.before_load.get("gpu_used_bytes").unwrap() as i64;
    assert!(
        loaded > 40 << 20,
        "load moved device memory by {loaded} bytes"
    );
    // The model is in memory during generation: so is it in the peak.
    let held = peak.get("gpu_used_bytes").unwrap() as i64
        - m.before_load.get("gpu_used_bytes").unwrap() as i64;
    assert!(held > 40 << 20, "peak above before-load: {held} bytes");
    // The sampler reads every 5 ms (10 ms or finer is asked): over the timed
    // generations it takes at least half the samples a 10 ms sampler would.
    let generating: f64 = v.generate_seconds.iter().sum();
    assert!(
        m.peak_samples >= 2 && m.peak_samples as f64 >= 0.5 * generating / 0.010,
        "{} samples over {generating} s",
        m.peak_samples
    );
    let released = m.after_load.get("gpu_used_bytes").unwrap() as i64
        - cleanup.get("gpu_used_bytes").unwrap() as i64;
    assert!(released > 30 << 20, "cleanup released {released} bytes");
    assert!(v.energy_joules_per_token.is_some_and(|j| j > 0.0));
    assert!(run.probe_notes.is_empty(), "{:?}", run.probe_notes);
    assert!(m.after_pool_trim.is_none(), "no pool was watched");
}

#[test]
fn an_empty_process_list_and_an_unsupported_energy_counter_are_said_not_zeroed() {
    for processes in [Ok(vec![]), Ok(vec![4242]), Err("Not supported".to_string())] {
        let gpu = FakeGpu {
            since: Instant::now(),
            processes: processes.clone(),
            energy: false,
        };
        let run = run_with(Arc::new(NvmlProbe::with_device(gpu, std::process::id())));
        let v = &run.variants[0];
        assert!(v.is_ok(), "{:?}", v.error);
        for r in [&v.memory.before_load, &v.memory.after_load] {
            assert!(r.get("gpu_used_bytes").is_some());
            assert_eq!(r.get("gpu_process_bytes"), None, "{processes:?}");
            assert_eq!(r.get("gpu_energy_millijoules"), None);
        }
        assert_eq!(
            v.energy_joules_per_token, None,
            "unsupported energy is absent, not 0"
        );
        let notes = run.probe_notes.join("\n");
        assert!(notes.contains("energy counter is unsupported"), "{notes}");
        match &processes {
            Ok(_) => assert!(
                notes.contains("is not among the GPU's") && notes.contains("PID namespace"),
                "{notes}"
            ),
            Err(_) => assert!(notes.contains("cannot list compute processes"), "{notes}"),
        }
    }
}

/// A device memory pool holding freed memory until trimmed, like the CUDA pool candle
/// allocates from.
struct FakePool(AtomicU64);

impl Probe for FakePool {
    fn name(&self) -> &str {
        "fake_pool"
    }
    fn read(&self) -> BTreeMap<String, u64> {
        BTreeMap::from([(
            "cuda_pool_reserved_bytes".to_string(),
            self.0.load(Ordering::SeqCst),
        )])
    }
    fn trim_cache(&self) -> bool {
        self.0.store(0, Ordering::SeqCst);
        true
    }
}

#[test]
fn a_pool_is_reported_after_cleanup_and_again_after_it_is_trimmed() {
    let run = run_with(Arc::new(FakePool(AtomicU64::new(458 << 20))));
    let m = &run.variants[0].memory;
    assert_eq!(
        m.after_cleanup
            .as_ref()
            .unwrap()
            .get("cuda_pool_reserved_bytes"),
        Some(458 << 20)
    );
    let trimmed = m
        .after_pool_trim
        .as_ref()
        .expect("a reading after the trim");
    assert_eq!(trimmed.get("cuda_pool_reserved_bytes"), Some(0));
    assert!(trimmed.get("process_rss_bytes").is_some());
}
