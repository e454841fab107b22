//! The one way quantbench reads a clock around device work: synchronise the device
//! first, so that a timed region closes only when the work in it has finished.

use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::Device;

/// `Instant::now()` after every queued operation on `device` has completed.
pub fn synced_now(device: &Device) -> Result<Instant> {
    device
        .synchronize()
        .context("synchronising the device before reading the clock")?;
    Ok(Instant::now())
}

/// Seconds from `start` to now, after synchronising `device`.
pub fn synced_seconds_since(device: &Device, start: Instant) -> Result<f64> {
    Ok(synced_now(device)?.duration_since(start).as_secs_f64())
}
