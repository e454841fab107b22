//! The machine's memory bandwidth, measured once per run: the yardstick for each decode
//! test's weight-streaming rate (does a slow precision lack a kernel, or is it reading
//! its bytes as fast as memory allows?).
//!
//! Two short tests on every thread of the pool, STREAM's way: `read` sums a buffer far
//! larger than any cache (bytes read / time), `copy` copies one such buffer into another
//! (bytes read + bytes written / time). Each is repeated and the best repetition kept,
//! as STREAM keeps its best: the figure is what memory can do, and noise only ever
//! slows a repetition down. The buffers are made as the weights are: on 2 MB pages where
//! the binary's allocator puts them there (`kernel::pages`; `QUANTBENCH_HUGE_PAGES=0`
//! turns that off for both).

use std::time::Instant;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// What the bandwidth test measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bandwidth {
    /// Best read rate, GB/s (10^9 bytes per second).
    pub read_gbps: f64,
    /// Best copy rate (read + written bytes), GB/s.
    pub copy_gbps: f64,
    /// Threads that read and copied.
    pub threads: usize,
    /// Size of the buffer read (and of each copy buffer), bytes.
    pub buffer_bytes: u64,
    pub repetitions: usize,
    /// Wall time of the whole measurement.
    pub seconds: f64,
    /// Where it was measured: `cpu` (this crate's own loops on every thread) or the
    /// accelerator's name (`cuda:0`: candle's kernels on device memory). Absent in files
    /// written before: cpu.
    #[serde(default = "cpu")]
    pub device: String,
}

fn cpu() -> String {
    "cpu".into()
}

/// Bytes of the read buffer: far beyond the largest last-level caches of CPUs this runs
/// on (hundreds of MB on some server parts).
pub const BUFFER_BYTES: usize = 1 << 30;
pub const REPETITIONS: usize = 3;

/// Measure on the current rayon pool. The buffers are freed before it returns.
pub fn measure() -> Bandwidth {
    measure_with(BUFFER_BYTES, REPETITIONS)
}

/// A buffer far larger than the caches, made once and read again and again: the read
/// bandwidth of a moment, as often as a caller needs it (`examples/lockstep.rs` reads it
/// every round, beside each pair of repetitions).
pub struct ReadProbe {
    src: Vec<u64>,
    chunk: usize,
}

impl ReadProbe {
    /// A probe of `buffer_bytes` (at least 8 KB per thread of the current rayon pool), on
    /// 2 MB pages where the weights go there (crate::kernel::pages), written with
    /// distinct values so that no page is shared zero memory.
    pub fn new(buffer_bytes: usize) -> ReadProbe {
        let threads = rayon::current_num_threads().max(1);
        let words = (buffer_bytes / 8).max(threads * 1024);
        let pages = crate::kernel::pages::loading();
        let src: Vec<u64> = (0..words as u64).into_par_iter().collect();
        drop(pages);
        ReadProbe {
            chunk: words.div_ceil(threads),
            src,
        }
    }

    /// Bytes of the buffer.
    pub fn bytes(&self) -> usize {
        self.src.len() * 8
    }

    /// The fastest of `repetitions` reads of the whole buffer on the current rayon pool
    /// (a sum of every word), seconds.
    pub fn best_read_seconds(&self, repetitions: usize) -> f64 {
        let mut best = f64::INFINITY;
        for _ in 0..repetitions.max(1) {
            let t = Instant::now();
            let sum: u64 = self
                .src
                .par_chunks(self.chunk)
                .map(|c| c.iter().fold(0u64, |a, &x| a.wrapping_add(x)))
                .reduce(|| 0, u64::wrapping_add);
            let s = t.elapsed().as_secs_f64();
            std::hint::black_box(sum);
            best = best.min(s);
        }
        best
    }

    /// The read rate of the fastest of `repetitions` reads, GB/s.
    pub fn read_gbps(&self, repetitions: usize) -> f64 {
        self.bytes() as f64 / self.best_read_seconds(repetitions) / 1e9
    }
}

/// [`measure`] with a chosen buffer size and repetition count (tests use small ones).
pub fn measure_with(buffer_bytes: usize, repetitions: usize) -> Bandwidth {
    let t0 = Instant::now();
    let threads = rayon::current_num_threads().max(1);
    let probe = ReadProbe::new(buffer_bytes);
    let read_best = probe.best_read_seconds(repetitions);
    let src = &probe.src;
    let words = src.len();
    // The copy's destination, on 2 MB pages as the source.
    let pages = crate::kernel::pages::loading();
    let mut dst: Vec<u64> = vec![1; words / 2];
    drop(pages);
    let half = words / 2;
    let copy_chunk = half.div_ceil(threads);
    let mut copy_best = f64::INFINITY;
    for _ in 0..repetitions.max(1) {
        let t = Instant::now();
        dst.par_chunks_mut(copy_chunk)
            .zip(src[..half].par_chunks(copy_chunk))
            .for_each(|(d, s)| d.copy_from_slice(s));
        let s = t.elapsed().as_secs_f64();
        std::hint::black_box(&dst);
        copy_best = copy_best.min(s);
    }
    let bytes = (words * 8) as f64;
    let copied = (half * 8 * 2) as f64;
    Bandwidth {
        read_gbps: bytes / read_best / 1e9,
        copy_gbps: copied / copy_best / 1e9,
        threads,
        buffer_bytes: (words * 8) as u64,
        repetitions: repetitions.max(1),
        seconds: t0.elapsed().as_secs_f64(),
        device: cpu(),
    }
}

/// Measure the memory bandwidth of `device` (`name` for the record): on the CPU,
/// [`measure`]; on an accelerator, with candle's kernels on a buffer of device memory —
/// `read` a sum over it, `copy` a device-to-device copy (read + written bytes) — each
/// the best of 3, the device synchronised around every clock read. This is the
/// yardstick the decode rows of a GPU run are set against.
pub fn measure_on(device: &candle_core::Device, name: &str) -> anyhow::Result<Bandwidth> {
    if device.is_cpu() {
        return Ok(measure());
    }
    measure_with_candle(device, name, BUFFER_BYTES, REPETITIONS)
}

/// The candle path of [`measure_on`], any device (tests run it on the CPU).
pub fn measure_with_candle(
    device: &candle_core::Device,
    name: &str,
    buffer_bytes: usize,
    repetitions: usize,
) -> anyhow::Result<Bandwidth> {
    let t0 = Instant::now();
    let n = (buffer_bytes / 4).max(1024);
    let x =
        candle_core::Tensor::arange(0u32, n as u32, device)?.to_dtype(candle_core::DType::F32)?;
    let mut read_best = f64::INFINITY;
    let mut copy_best = f64::INFINITY;
    for _ in 0..repetitions.max(1) {
        let t = crate::run::clock::synced_now(device)?;
        let s = x.sum_all()?;
        read_best = read_best.min(crate::run::clock::synced_seconds_since(device, t)?);
        std::hint::black_box(s);
        let t = crate::run::clock::synced_now(device)?;
        let y = x.copy()?;
        copy_best = copy_best.min(crate::run::clock::synced_seconds_since(device, t)?);
        drop(y);
    }
    let bytes = (n * 4) as f64;
    Ok(Bandwidth {
        read_gbps: bytes / read_best / 1e9,
        copy_gbps: 2.0 * bytes / copy_best / 1e9,
        threads: rayon::current_num_threads(),
        buffer_bytes: (n * 4) as u64,
        repetitions: repetitions.max(1),
        seconds: t0.elapsed().as_secs_f64(),
        device: name.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bandwidth_is_a_finite_positive_rate() {
        let b = measure_with(8 << 20, 2);
        assert!(b.read_gbps.is_finite() && b.read_gbps > 0.0, "{b:?}");
        assert!(b.copy_gbps.is_finite() && b.copy_gbps > 0.0, "{b:?}");
        assert_eq!(b.buffer_bytes, 8 << 20);
        assert_eq!(b.repetitions, 2);
        assert_eq!(b.device, "cpu");
    }

    #[test]
    fn the_device_path_measures_through_candle() {
        let b =
            measure_with_candle(&candle_core::Device::Cpu, "cpu-via-candle", 4 << 20, 2).unwrap();
        assert!(b.read_gbps.is_finite() && b.read_gbps > 0.0, "{b:?}");
        assert!(b.copy_gbps.is_finite() && b.copy_gbps > 0.0, "{b:?}");
        assert_eq!(
            (b.buffer_bytes, b.device.as_str()),
            (4 << 20, "cpu-via-candle")
        );
    }
}
