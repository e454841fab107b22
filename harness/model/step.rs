//! The decode step on the CPU: the pieces an architecture composes to run one new token
//! per sequence without candle's tensor ops between the products.
//!
//! candle runs a decode step as ~20 tensor ops a layer (norm, reshapes, copies to
//! contiguous, cache append, residual adds), each allocating its output and each run on
//! the main thread while the pool's other workers spin: 17% of GPT-2 small's q4_0 decode
//! time by `perf`. Here an architecture keeps its activations in buffers sized at the
//! first step of a generation (kept in the [`Cache`]) and reused at every later one, runs
//! its products into them ([`crate::model::nn::SliceProduct`]), writes keys and values
//! into the cache in place ([`crate::model::kv::KvCache::push_rows`]), attends between
//! buffers ([`crate::kernel::attention::attend_cached`]), and adds each residual as it
//! norms the sum ([`add_then`]); rotary embeddings rotate in place ([`rope_in_place`]).
//! Every piece has candle's arithmetic, so tokens and logits are those of the candle
//! path (tested in tests/decode_path.rs); that path stays for prompts, other devices and
//! formats without a CPU product here.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use candle_core::Device;

use crate::model::nn::{Cache, Linear, SliceProduct};

static ENABLED: AtomicBool = AtomicBool::new(true);
static STEPS: AtomicUsize = AtomicUsize::new(0);

/// Turn the decode step on or off for the whole process (off: the models' candle path
/// runs every step): for the tests that hold the two equal.
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::SeqCst);
}

/// How many decode steps ran this way in this process (tests check that it ran).
pub fn steps() -> usize {
    STEPS.load(Ordering::Relaxed)
}

/// Count one step (called by the architectures).
pub fn count() {
    STEPS.fetch_add(1, Ordering::Relaxed);
}

/// Whether the step may run on `device` now: on the CPU, with quantbench's kernels
/// active and the step enabled. Each architecture checks its own layers besides (every
/// product must have a [`crate::model::nn::Linear::slice_product`]).
pub fn available(device: &Device) -> bool {
    ENABLED.load(Ordering::Relaxed)
        && device.is_cpu()
        && crate::kernel::active() == crate::kernel::Kernels::Quantbench
}

/// The step's buffers of type `T`, taken out of `cache` for the step (give them back
/// with [`put_back`]): those of the previous step, or new ones (`make`) at the first step
/// of a generation or where `fits` says the kept ones are for another shape (a batch of
/// another size).
pub fn take_buffers<T: Send + Sync + 'static>(
    cache: &mut Cache,
    fits: impl Fn(&T) -> bool,
    make: impl FnOnce() -> T,
) -> Box<T> {
    match cache.step.take().map(|b| b.downcast::<T>()) {
        Some(Ok(kept)) if fits(&kept) => kept,
        _ => Box::new(make()),
    }
}

/// Keep the step's buffers in `cache` for the next step.
pub fn put_back<T: Send + Sync + 'static>(cache: &mut Cache, buffers: Box<T>) {
    cache.step = Some(buffers);
}

/// `l`'s product on buffers; an error where it has none (the architectures check every
/// layer before their first step).
pub fn product(l: &Linear) -> candle_core::Result<SliceProduct<'_>> {
    l.slice_product()
        .ok_or_else(|| candle_core::Error::Msg("a layer without a CPU product".into()))
}

/// `x += y`, then `then(x)`: a residual add fused with what reads the sum next (the next
/// norm), so the sum is read while it is still in cache.
pub fn add_then(x: &mut [f32], y: &[f32], then: impl FnOnce(&[f32])) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
    then(x);
}

/// Rotate every head of every row of `x` (rows of `heads * hd`) in place by the angles
/// whose cosines and sines are `cos` / `sin` (`hd / 2` each): the rotary embedding of
/// candle's `rotary_emb::rope` (the halves layout, as transformers' `rotate_half`).
pub fn rope_in_place(x: &mut [f32], hd: usize, cos: &[f32], sin: &[f32]) {
    let half = hd / 2;
    for head in x.chunks_exact_mut(hd) {
        let (a, b) = head.split_at_mut(half);
        for i in 0..half {
            let (x1, x2) = (a[i], b[i]);
            a[i] = x1 * cos[i] - x2 * sin[i];
            b[i] = x1 * sin[i] + x2 * cos[i];
        }
    }
}

/// [`rope_in_place`] over the leading `2 · cos.len()` dimensions of each head of `hd`
/// (partial rotary; the whole head when `2 · cos.len() == hd`).
pub fn rope_in_place_partial(x: &mut [f32], hd: usize, cos: &[f32], sin: &[f32]) {
    let half = cos.len();
    if 2 * half == hd {
        return rope_in_place(x, hd, cos, sin);
    }
    for head in x.chunks_exact_mut(hd) {
        let (a, b) = head[..2 * half].split_at_mut(half);
        for i in 0..half {
            let (x1, x2) = (a[i], b[i]);
            a[i] = x1 * cos[i] - x2 * sin[i];
            b[i] = x1 * sin[i] + x2 * cos[i];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Tensor;

    /// The in-place rotation equals candle's rope on the same values.
    #[test]
    fn rope_in_place_equals_candles() {
        let (heads, hd) = (3, 8);
        let x: Vec<f32> = (0..heads * hd).map(|i| (i as f32 * 0.37).sin()).collect();
        let cos: Vec<f32> = (0..hd / 2).map(|i| (i as f32 * 0.3).cos()).collect();
        let sin: Vec<f32> = (0..hd / 2).map(|i| (i as f32 * 0.3).sin()).collect();
        let dev = Device::Cpu;
        let xt = Tensor::from_vec(x.clone(), (1, heads, 1, hd), &dev).unwrap();
        let ct = Tensor::from_vec(cos.clone(), (1, hd / 2), &dev).unwrap();
        let st = Tensor::from_vec(sin.clone(), (1, hd / 2), &dev).unwrap();
        let want = candle_nn::rotary_emb::rope(&xt, &ct, &st)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let mut got = x;
        rope_in_place(&mut got, hd, &cos, &sin);
        assert_eq!(got, want);
    }
}
