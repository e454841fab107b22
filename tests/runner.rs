//! The runner through the library: a panic inside a variant's life is caught and
//! recorded as that variant's failure, and the next variant still runs.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use quantbench::probe::{process::ProcessProbe, Probe, Probes};
use quantbench::record::VariantStatus;
use quantbench::run::runner::{self, Silent};
use quantbench::Scenario;

/// A probe that panics on its first reading only.
struct PanicsOnce(AtomicUsize);

impl Probe for PanicsOnce {
    fn name(&self) -> &str {
        "panics-once"
    }
    fn read(&self) -> BTreeMap<String, u64> {
        if self.0.fetch_add(1, Ordering::SeqCst) == 0 {
            panic!("probe exploded");
        }
        BTreeMap::new()
    }
}

#[test]
fn a_panic_inside_a_variant_is_recorded_and_the_run_goes_on() {
    let scenario = Scenario::parse(
        "name = \"p\"\nmodel = \"synthetic:tiny\"\ndevice = \"cpu\"\nprecisions = [\"f32\", \"q8_0\"]\nnew_tokens = 2\nwarmup = 0\nrepeats = 1\n[quality]\nenabled = false\n",
        "p.toml",
    )
    .unwrap();
    let prepared = runner::prepare(&scenario, None).unwrap();
    let probes = Probes::new(vec![
        Arc::new(ProcessProbe::new()),
        Arc::new(PanicsOnce(AtomicUsize::new(0))),
    ]);
    let run = runner::run(&prepared, &probes, &mut Silent).unwrap();
    assert_eq!(run.variants.len(), 2);
    assert_eq!(run.variants[0].status, VariantStatus::Failed);
    let err = run.variants[0].error.as_deref().unwrap();
    assert!(err.contains("panicked: probe exploded"), "{err}");
    assert!(run.variants[0].memory.after_cleanup.is_some());
    assert_eq!(run.variants[1].status, VariantStatus::Ok);
    assert_eq!(run.variants[1].generated_token_ids.len(), 2);
}

/// Stands in for NVML's energy counter: a 100 W device.
struct HundredWatts(std::time::Instant);

impl Probe for HundredWatts {
    fn name(&self) -> &str {
        "fake-gpu"
    }
    fn read(&self) -> BTreeMap<String, u64> {
        let mj = self.0.elapsed().as_secs_f64() * 100.0 * 1000.0;
        BTreeMap::from([("gpu_energy_millijoules".to_string(), mj as u64)])
    }
}

#[test]
fn energy_per_token_comes_from_the_counter_over_the_timed_repetitions() {
    let scenario = Scenario::parse(
        "name = \"e\"\nmodel = \"synthetic:tiny\"\ndevice = \"cpu\"\nprecisions = [\"f32\"]\nnew_tokens = 5\nwarmup = 1\nrepeats = 3\n[quality]\nenabled = false\n",
        "e.toml",
    )
    .unwrap();
    let prepared = runner::prepare(&scenario, None).unwrap();
    let probes = Probes::new(vec![
        Arc::new(ProcessProbe::new()),
        Arc::new(HundredWatts(std::time::Instant::now())),
    ]);
    let run = runner::run(&prepared, &probes, &mut Silent).unwrap();
    let v = &run.variants[0];
    let jpt = v
        .energy_joules_per_token
        .expect("an energy counter gives joules per token");
    let timed: f64 = v.generate_seconds.iter().sum();
    let expected = 100.0 * timed / 15.0; // 100 W over the timed generations, 15 tokens
    assert!(
        jpt >= expected && jpt < expected * 1.5 + 0.05,
        "{jpt} J/token vs {expected}"
    );
    assert_eq!(run.probes, ["process", "fake-gpu"]);

    // Without an energy counter the figure is absent, not 0.
    let plain = runner::run(&prepared, &Probes::available(), &mut Silent).unwrap();
    assert_eq!(plain.variants[0].energy_joules_per_token, None);
}

#[test]
fn without_an_nvidia_driver_the_nvml_probe_says_why_and_the_rest_goes_on() {
    let (probes, missing) = Probes::for_device("cuda:0");
    if missing.is_empty() {
        return; // a machine with a driver: nothing to check here
    }
    assert!(
        missing[0].starts_with("nvml: NVML is unavailable"),
        "{missing:?}"
    );
    assert_eq!(probes.names(), ["process"]);
    assert!(probes.notes()[0].contains("NVML is unavailable"));
    assert!(probes.read().get("process_rss_bytes").is_some());
}
