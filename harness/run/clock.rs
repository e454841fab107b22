//! The one way quantbench reads a clock around device work: synchronise the device
//! first, so that a timed region closes only when the work in it has finished.

use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::Device;

/// Whatever queues work that a clock must wait for: a device, or an engine's loaded
/// model (llama.cpp synchronises its own backends).
pub trait Synchronize {
    /// Return once every queued operation has completed.
    fn synchronize(&self) -> Result<()>;
}

impl Synchronize for Device {
    fn synchronize(&self) -> Result<()> {
        Ok(Device::synchronize(self)?)
    }
}

/// `Instant::now()` after every queued operation on `device` has completed.
pub fn synced_now(device: &(impl Synchronize + ?Sized)) -> Result<Instant> {
    device
        .synchronize()
        .context("synchronising the device before reading the clock")?;
    Ok(Instant::now())
}

/// Seconds from `start` to now, after synchronising `device`.
pub fn synced_seconds_since(device: &(impl Synchronize + ?Sized), start: Instant) -> Result<f64> {
    Ok(synced_now(device)?.duration_since(start).as_secs_f64())
}
