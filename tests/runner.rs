//! The runner through the library: a panic inside a variant's life is caught and
//! recorded as that variant's failure, and the next variant still runs.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use quantbench::probe::{process::ProcessProbe, Probe, Probes};
use quantbench::record::VariantStatus;
use quantbench::runner::{self, Silent};
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
