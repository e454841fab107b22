//! Attention read straight from the KV cache, for GPT-2 and the Llama architectures alike: a
//! decode step's (every cached position visible) and a prompt's (causal, with an
//! optional sliding window).
//!
//! candle computes attention as two batched matmuls (`q·kᵀ`, then `softmax·v`) through
//! its general gemm. At one query row its set-up costs more than the arithmetic: 9% of
//! GPT-2 small's q4_0 decode time by `perf` (`gemm_common` vectorize + the 2x1
//! micro-kernel), on one core. Here each (sequence, key/value head, query row) is one
//! unit of work on candle's thread pool: scores as dot products with the cached keys
//! (read in place through the cache's strides, no copy), softmax with the maximum
//! subtracted, then the weighted sum of the cached values; 8 lanes (AVX2 + FMA) where the
//! CPU has them. Grouped-query attention comes as `rep` query rows per key/value head,
//! as the models lay it out.
//!
//! A prompt's attention through candle computes every score of the square (half of them
//! then masked), writes the scores, scaled scores, masked scores and probabilities as
//! four tensors of `heads × len × positions` floats (12.6 MB a GPT-2 layer at 512
//! tokens), each a fresh allocation. Here a unit is a block of query rows of one head:
//! its scores against the keys its rows may see (`gemm`, one thread, scale folded in)
//! into a reused per-thread buffer, the softmax over each row's own visible range, then
//! the block's output (`gemm` again) — causal positions skipped, nothing allocated per
//! layer but the output.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use candle_core::{CpuStorage, Layout, Tensor};

static ENABLED: AtomicBool = AtomicBool::new(true);
static CALLS: AtomicUsize = AtomicUsize::new(0);

/// How many attention steps this path has computed in this process (tests check that
/// it ran).
pub fn calls() -> usize {
    CALLS.load(Ordering::Relaxed)
}

/// Turn this path on or off for the whole process (off: [`decode`] declines and the
/// models run candle's matmuls): for the tests that hold it equal to candle's path.
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::SeqCst);
}

/// A tensor's f32 data on the CPU with its layout, for reading through strides.
struct View<'a> {
    data: &'a [f32],
    start: usize,
    stride: [usize; 4],
}

fn view<'a>(storage: &'a CpuStorage, layout: &Layout) -> Option<View<'a>> {
    let CpuStorage::F32(data) = storage else {
        return None;
    };
    let s = layout.stride();
    if s.len() != 4 || s[3] != 1 {
        return None;
    }
    Some(View {
        data,
        start: layout.start_offset(),
        stride: [s[0], s[1], s[2], s[3]],
    })
}

impl View<'_> {
    fn row(&self, b: usize, g: usize, t: usize, hd: usize) -> &[f32] {
        let at = self.start + b * self.stride[0] + g * self.stride[1] + t * self.stride[2];
        &self.data[at..at + hd]
    }
}

/// Which keys a prompt's query rows see: the query rows of a key/value head come as
/// `rows / len` blocks of `len` prompt positions (GPT-2: one block; grouped-query
/// attention: one per query head of the group), row `i` of a block at position
/// `pos = t − len + i` of the `t` cached positions, seeing positions
/// `pos + 1 − window ..= pos` (from 0 without a window) — the models' causal mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Causal {
    pub len: usize,
    pub window: Option<usize>,
}

impl Causal {
    /// The visible positions of prompt row `i` among `t` cached ones.
    fn visible(self, i: usize, t: usize) -> std::ops::Range<usize> {
        let pos = t - self.len + i;
        let lo = self.window.map_or(0, |w| (pos + 1).saturating_sub(w));
        lo..pos + 1
    }
}

/// The shapes of `q` `[b, g, r, hd]` and `k`, `v` `[b, g, t, hd]`.
#[derive(Debug, Clone, Copy)]
struct Dims {
    b: usize,
    g: usize,
    r: usize,
    t: usize,
    hd: usize,
}

/// `f` on the views of `q`, `k` and `v` where this path applies to them (enabled; f32
/// CPU tensors of rank 4 with contiguous rows; matching sequences, heads and head
/// sizes), else `None`: the caller's candle path runs.
fn with_views<T>(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    f: impl FnOnce(Dims, &View, &View, &View) -> candle_core::Result<Option<T>>,
) -> candle_core::Result<Option<T>> {
    if !ENABLED.load(Ordering::Relaxed)
        || !q.device().is_cpu()
        || q.rank() != 4
        || k.rank() != 4
        || v.rank() != 4
    {
        return Ok(None);
    }
    let (b, g, r, hd) = q.dims4()?;
    let (kb, kg, t, khd) = k.dims4()?;
    if (kb, kg, khd) != (b, g, hd) || v.dims4()? != (b, g, t, hd) {
        return Ok(None);
    }
    let (qs, ql) = q.storage_and_layout();
    let (ks, kl) = k.storage_and_layout();
    let (vs, vl) = v.storage_and_layout();
    let (
        candle_core::Storage::Cpu(qs),
        candle_core::Storage::Cpu(ks),
        candle_core::Storage::Cpu(vs),
    ) = (&*qs, &*ks, &*vs)
    else {
        return Ok(None);
    };
    let (Some(qv), Some(kv), Some(vv)) = (view(qs, ql), view(ks, kl), view(vs, vl)) else {
        return Ok(None);
    };
    f(Dims { b, g, r, t, hd }, &qv, &kv, &vv)
}

/// A model's attention: this path where it applies (quantbench's kernels active, f32
/// CPU inputs), else `None` and the caller's candle path runs. `causal`: `None` for a
/// decode step (every cached position visible), the prompt's shape otherwise.
pub fn step(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
    causal: Option<Causal>,
) -> candle_core::Result<Option<Tensor>> {
    step_with_sinks(q, k, v, scale, causal, None)
}

/// [`step`] with attention sinks where given: one logit per query head (`g · r / len`
/// of them, head `h = group · rep + r` as the rows stack them) that joins each row's
/// softmax and is dropped ([`super::vexp::softmax_with_sink`]).
pub fn step_with_sinks(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
    causal: Option<Causal>,
    sinks: Option<&[f32]>,
) -> candle_core::Result<Option<Tensor>> {
    if super::active() != super::Kernels::Quantbench {
        return Ok(None);
    }
    match causal {
        None => decode(q, k, v, scale, sinks),
        Some(c) => prompt(q, k, v, scale, c, sinks),
    }
}

/// candle's softmax of attention scores `att` `[b, g, rep · len, t]` with one sink
/// logit per query head appended to each row and dropped after (`sinks` `[g · rep]`,
/// head `group · rep + r`): what [`step_with_sinks`] computes, for other devices.
pub fn softmax_with_sinks_candle(
    att: &Tensor,
    sinks: &Tensor,
    rep: usize,
) -> candle_core::Result<Tensor> {
    let (b, g, rows, t) = att.dims4()?;
    let len = rows / rep;
    let s = sinks
        .to_dtype(att.dtype())?
        .reshape((1, g, rep, 1, 1))?
        .broadcast_as((b, g, rep, len, 1))?
        .reshape((b, g, rows, 1))?;
    let all = Tensor::cat(&[att, &s], 3)?;
    candle_nn::ops::softmax_last_dim(&all)?.narrow(3, 0, t)
}

/// Row `row`'s softmax: with query head `head`'s sink where there are sinks.
fn softmax_row(row: &mut [f32], sinks: Option<&[f32]>, head: usize) {
    match sinks {
        Some(s) => super::vexp::softmax_with_sink(row, s[head]),
        None => super::vexp::softmax(row),
    }
}

/// Query rows per unit of a prompt's attention.
const PROMPT_ROWS: usize = 32;

thread_local! {
    /// Each pool worker's block of scores, reused from layer to layer.
    static BLOCK_SCORES: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `softmax(q·kᵀ·scale + causal mask)·v` for a prompt: `q` `[b, g, r, hd]` with `r` a
/// multiple of `causal.len`, `k`, `v` `[b, g, t, hd]` (f32, CPU, rows contiguous),
/// `t ≥ causal.len`. `None` where the inputs are not such.
pub fn prompt(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
    causal: Causal,
    sinks: Option<&[f32]>,
) -> candle_core::Result<Option<Tensor>> {
    with_views(q, k, v, |Dims { b, g, r, t, hd }, qv, kv, vv| {
        let len = causal.len;
        if len == 0 || t < len || r % len != 0 {
            return Ok(None);
        }
        if sinks.is_some_and(|s| s.len() != g * (r / len)) {
            return Ok(None);
        }
        // Units: (sequence, key/value head, block of `len` rows, PROMPT_ROWS of them).
        let reps = r / len;
        let blocks = len.div_ceil(PROMPT_ROWS);
        let units = b * g * reps * blocks;
        let mut out = vec![0f32; b * g * r * hd];
        let out_view = super::Disjoint::new(&mut out);
        let scale = scale as f32;
        candle_core::utils::barrier_pool().execute_chunked(units, |range| {
            BLOCK_SCORES.with(|cell| {
                let mut scores = cell.borrow_mut();
                for unit in range {
                    let (head, blk) = (unit / blocks, unit % blocks);
                    let (bg, rep) = (head / reps, head % reps);
                    let (bi, gi) = (bg / g, bg % g);
                    let i0 = blk * PROMPT_ROWS;
                    let rows = PROMPT_ROWS.min(len - i0);
                    // The keys any row of the block sees: from the first row's start to the
                    // last row's end.
                    let lo = causal.visible(i0, t).start;
                    let hi = causal.visible(i0 + rows - 1, t).end;
                    let n = hi - lo;
                    if scores.len() < rows * n {
                        scores.resize(rows * n, 0.0);
                    }
                    let s = &mut scores[..rows * n];
                    let row0 = rep * len + i0;
                    let q0 = qv.row(bi, gi, row0, hd).as_ptr();
                    let k0 = kv.row(bi, gi, lo, hd).as_ptr();
                    let v0 = vv.row(bi, gi, lo, hd).as_ptr();
                    // SAFETY: q rows row0 .. row0 + rows, k and v rows lo .. hi of this
                    // (sequence, head) lie inside their tensors (checked shapes; rows are
                    // contiguous, rows apart by stride[2]); `s` is rows × n.
                    unsafe {
                        gemm::gemm(
                            rows,
                            n,
                            hd,
                            s.as_mut_ptr(),
                            1,
                            n as isize,
                            false,
                            q0,
                            1,
                            qv.stride[2] as isize,
                            k0,
                            kv.stride[2] as isize,
                            1,
                            0.0f32,
                            scale,
                            false,
                            false,
                            false,
                            gemm::Parallelism::None,
                        );
                    }
                    // Each row's softmax over its own visible keys; the rest weigh 0.
                    for (i, row) in s.chunks_exact_mut(n).enumerate() {
                        let vis = causal.visible(i0 + i, t);
                        let (a, e) = (vis.start - lo, vis.end - lo);
                        softmax_row(&mut row[a..e], sinks, gi * reps + rep);
                        row[..a].fill(0.0);
                        row[e..].fill(0.0);
                    }
                    // SAFETY: this unit's output rows are its own (disjoint blocks of
                    // (sequence, head, row)); v rows as above.
                    unsafe {
                        let y = out_view.part(((bi * g + gi) * r + row0) * hd, rows * hd);
                        gemm::gemm(
                            rows,
                            hd,
                            n,
                            y.as_mut_ptr(),
                            1,
                            hd as isize,
                            false,
                            s.as_ptr(),
                            1,
                            n as isize,
                            v0,
                            1,
                            vv.stride[2] as isize,
                            0.0f32,
                            1.0f32,
                            false,
                            false,
                            false,
                            gemm::Parallelism::None,
                        );
                    }
                }
            })
        });
        CALLS.fetch_add(1, Ordering::Relaxed);
        Ok(Some(Tensor::from_vec(out, (b, g, r, hd), q.device())?))
    })
}

/// `softmax(q·kᵀ·scale)·v` for `q` `[b, g, r, hd]` and `k`, `v` `[b, g, t, hd]` (f32,
/// CPU, any strides with contiguous rows), every position visible; `None` where the
/// inputs are not such (other devices, dtypes, layouts): the caller's candle path runs.
pub fn decode(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
    sinks: Option<&[f32]>,
) -> candle_core::Result<Option<Tensor>> {
    with_views(q, k, v, |Dims { b, g, r, t, hd }, qv, kv, vv| {
        if t == 0 || sinks.is_some_and(|s| s.len() != g * r) {
            return Ok(None);
        }
        let units = b * g * r;
        let mut out = vec![0f32; units * hd];
        let addr = out.as_mut_ptr() as usize;
        let scale = scale as f32;
        candle_core::utils::barrier_pool().execute_chunked(units, |range| {
            let mut scores = vec![0f32; t];
            for unit in range {
                let (bg, row) = (unit / r, unit % r);
                let (bi, gi) = (bg / g, bg % g);
                // SAFETY: each unit writes its own hd outputs of `out`, which outlives the call.
                let y = unsafe {
                    std::slice::from_raw_parts_mut((addr as *mut f32).add(unit * hd), hd)
                };
                let query = qv.row(bi, gi, row, hd);
                attend(
                    query,
                    |j| kv.row(bi, gi, j, hd),
                    |j| vv.row(bi, gi, j, hd),
                    scale,
                    &mut scores,
                    y,
                    sinks.map(|s| s[gi * r + row]),
                );
            }
        });
        CALLS.fetch_add(1, Ordering::Relaxed);
        Ok(Some(Tensor::from_vec(out, (b, g, r, hd), q.device())?))
    })
}

/// The heads of a decode step: `b` sequences, `g` key/value heads, `rep` query heads
/// per key/value head (grouped-query attention; 1 otherwise), `hd` elements a head.
#[derive(Debug, Clone, Copy)]
pub struct Heads {
    pub b: usize,
    pub g: usize,
    pub rep: usize,
    pub hd: usize,
}

thread_local! {
    /// Each pool worker's scores, reused from step to step.
    static SCORES: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// One query row per (sequence, query head) against the cached positions `visible` of
/// `keys` / `values` (`[b, g, capacity, hd]` f32 CPU buffers, rows contiguous), into
/// `out`: `softmax(q·kᵀ·scale)·v`. Query head `h = group * rep + r` of sequence `s`
/// reads `q[s * q_stride + h * hd ..][..hd]` and writes `out[(s * g * rep + h) * hd ..]`
/// — the layout of a projection's output and of the next projection's input, so the
/// CPU decode step ([`crate::model::step`]) attends straight between its buffers. The
/// same arithmetic as [`decode`]; allocates nothing once each worker's scores have grown.
#[allow(clippy::too_many_arguments)]
pub fn attend_cached(
    q: &[f32],
    q_stride: usize,
    keys: &Tensor,
    values: &Tensor,
    heads: Heads,
    visible: std::ops::Range<usize>,
    scale: f32,
    out: &mut [f32],
) -> candle_core::Result<()> {
    attend_cached_with_sinks(q, q_stride, keys, values, heads, visible, scale, out, None)
}

/// [`attend_cached`] with one sink logit per query head where given (see
/// [`step_with_sinks`]).
#[allow(clippy::too_many_arguments)]
pub fn attend_cached_with_sinks(
    q: &[f32],
    q_stride: usize,
    keys: &Tensor,
    values: &Tensor,
    heads: Heads,
    visible: std::ops::Range<usize>,
    scale: f32,
    out: &mut [f32],
    sinks: Option<&[f32]>,
) -> candle_core::Result<()> {
    let Heads { b, g, rep, hd } = heads;
    let width = g * rep * hd;
    if b == 0
        || out.len() != b * width
        || q.len() < (b - 1) * q_stride + width
        || visible.is_empty()
        || sinks.is_some_and(|s| s.len() != g * rep)
    {
        candle_core::bail!(
            "attention of {b} x {g} x {rep} x {hd} over {visible:?}: {} queries, {} outputs",
            q.len(),
            out.len()
        );
    }
    let (ks, kl) = keys.storage_and_layout();
    let (vs, vl) = values.storage_and_layout();
    let (candle_core::Storage::Cpu(ks), candle_core::Storage::Cpu(vs)) = (&*ks, &*vs) else {
        candle_core::bail!("the key/value cache is not on the CPU");
    };
    let (Some(kv), Some(vv)) = (view(ks, kl), view(vs, vl)) else {
        candle_core::bail!("the key/value cache is not f32 with contiguous rows");
    };
    let dims = kl.dims();
    if dims.len() != 4
        || (dims[0], dims[1], dims[3]) != (b, g, hd)
        || vl.dims() != dims
        || dims[2] < visible.end
    {
        candle_core::bail!(
            "a cache of {dims:?} for {b} x {g} heads of {hd} at positions {visible:?}"
        );
    }
    let units = b * g * rep;
    let addr = out.as_mut_ptr() as usize;
    let (kv, vv) = (&kv, &vv);
    let lo = visible.start;
    let t = visible.len();
    let capacity = dims[2];
    candle_core::utils::barrier_pool().execute_chunked(units, |range| {
        SCORES.with(|cell| {
            let mut scores = cell.borrow_mut();
            if scores.len() < t {
                // Room for the whole cache at once, not one more position a step.
                scores.resize(capacity, 0.0);
            }
            for unit in range {
                let (seq, head) = (unit / (g * rep), unit % (g * rep));
                let gi = head / rep;
                // SAFETY: each unit writes its own hd outputs of `out`, which outlives
                // the pool call.
                let y = unsafe {
                    std::slice::from_raw_parts_mut((addr as *mut f32).add(unit * hd), hd)
                };
                let query = &q[seq * q_stride + head * hd..][..hd];
                attend(
                    query,
                    |j| kv.row(seq, gi, lo + j, hd),
                    |j| vv.row(seq, gi, lo + j, hd),
                    scale,
                    &mut scores[..t],
                    y,
                    sinks.map(|s| s[head]),
                );
            }
        })
    });
    CALLS.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

fn attend<'a>(
    q: &[f32],
    key: impl Fn(usize) -> &'a [f32],
    value: impl Fn(usize) -> &'a [f32],
    scale: f32,
    scores: &mut [f32],
    y: &mut [f32],
    sink: Option<f32>,
) {
    for (j, s) in scores.iter_mut().enumerate() {
        *s = dot(q, key(j)) * scale;
    }
    match sink {
        Some(s) => super::vexp::softmax_with_sink(scores, s),
        None => super::vexp::softmax(scores),
    }
    y.fill(0.0);
    for (j, &p) in scores.iter().enumerate() {
        axpy(p, value(j), y);
    }
}

#[inline(always)]
fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ac.zip(bc) {
        for i in 0..8 {
            acc[i] = x[i].mul_add(y[i], acc[i]);
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[inline(always)]
fn axpy_portable(a: f32, x: &[f32], y: &mut [f32]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi = a.mul_add(*xi, *yi);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    dot_portable(a, b)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn axpy_avx2(a: f32, x: &[f32], y: &mut [f32]) {
    axpy_portable(a, x, y)
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if super::avx2_supported() {
        // SAFETY: the CPU has AVX2 and FMA.
        return unsafe { dot_avx2(a, b) };
    }
    dot_portable(a, b)
}

fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if super::avx2_supported() {
        // SAFETY: the CPU has AVX2 and FMA.
        return unsafe { axpy_avx2(a, x, y) };
    }
    axpy_portable(a, x, y)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, D};

    /// Random keys or values in a cache of capacity t + 5 narrowed to t positions:
    /// strided like KvCache's.
    fn strided_cache(b: usize, g: usize, t: usize, hd: usize) -> Tensor {
        Tensor::randn(0f32, 1.0, (b, g, t + 5, hd), &Device::Cpu)
            .unwrap()
            .narrow(2, 0, t)
            .unwrap()
    }

    fn max_difference(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(D::Minus1)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    /// Equal to candle's matmul / softmax / matmul, on a strided cache view (as the KV
    /// cache hands it out), with grouped query rows and one sequence or two.
    #[test]
    fn decode_attention_equals_candles() {
        let dev = Device::Cpu;
        for (b, g, r, t, hd) in [
            (1, 12, 1, 1, 64),
            (1, 12, 1, 37, 64),
            (2, 2, 4, 19, 16),
            (1, 8, 4, 300, 64),
        ] {
            let q = Tensor::randn(0f32, 1.0, (b, g, r, hd), &dev).unwrap();
            let (k, v) = (strided_cache(b, g, t, hd), strided_cache(b, g, t, hd));
            let scale = 1.0 / (hd as f64).sqrt();
            let ours = decode(&q, &k, &v, scale, None)
                .unwrap()
                .expect("a CPU f32 input");
            let att = (q.matmul(&k.t().unwrap()).unwrap() * scale).unwrap();
            let att = candle_nn::ops::softmax_last_dim(&att).unwrap();
            let theirs = att.matmul(&v).unwrap();
            let diff = max_difference(&ours, &theirs);
            assert!(diff <= 2e-6, "{b}x{g}x{r}x{t}x{hd}: max difference {diff}");
        }
    }

    /// A prompt's attention equals candle's matmul / mask / softmax / matmul: a prompt
    /// on an empty cache and one after cached positions, grouped query rows, a sliding
    /// window narrower than the prompt, blocks of rows that end mid-way, a strided cache.
    #[test]
    fn prompt_attention_equals_candles() {
        let dev = Device::Cpu;
        for (b, g, rep, len, start, window, hd) in [
            (1, 12, 1, 7, 0, None, 64),
            (1, 2, 1, 70, 0, None, 16),
            (2, 2, 3, 40, 9, None, 16),
            (1, 2, 2, 45, 20, Some(16), 8),
            (1, 1, 1, 33, 0, Some(1), 8),
        ] {
            let t = start + len;
            let q = Tensor::randn(0f32, 1.0, (b, g, rep * len, hd), &dev).unwrap();
            let (k, v) = (strided_cache(b, g, t, hd), strided_cache(b, g, t, hd));
            let scale = 1.0 / (hd as f64).sqrt();
            let causal = Causal { len, window };
            let ours = prompt(&q, &k, &v, scale, causal, None)
                .unwrap()
                .expect("a CPU f32 input");
            let mask = crate::model::nn::causal_mask(len, start, window, &dev).unwrap();
            let att = (q.matmul(&k.t().unwrap()).unwrap() * scale).unwrap();
            let att = att
                .reshape((b, g, rep, len, t))
                .unwrap()
                .broadcast_add(&mask)
                .unwrap()
                .reshape((b, g, rep * len, t))
                .unwrap();
            let att = candle_nn::ops::softmax_last_dim(&att).unwrap();
            let theirs = att.matmul(&v).unwrap();
            let diff = max_difference(&ours, &theirs);
            assert!(
                diff <= 2e-6,
                "{b}x{g}x{rep}x{len} after {start}, window {window:?}: max difference {diff}"
            );
        }
    }

    /// With attention sinks, decode and prompt rows equal candle's scores with each
    /// head's sink appended to the softmax and dropped.
    #[test]
    fn sinks_take_their_share_as_candles_concatenation_does() {
        let dev = Device::Cpu;
        for (b, g, rep, len, start, window, hd) in [
            (1, 2, 3, 1, 11, None, 16),
            (2, 2, 2, 1, 5, None, 8),
            (1, 2, 2, 37, 4, Some(8), 8),
            (1, 1, 4, 40, 0, None, 16),
        ] {
            let t = start + len;
            let q = Tensor::randn(0f32, 1.0, (b, g, rep * len, hd), &dev).unwrap();
            let (k, v) = (strided_cache(b, g, t, hd), strided_cache(b, g, t, hd));
            let sinks = Tensor::randn(0f32, 2.0, g * rep, &dev).unwrap();
            let sv = sinks.to_vec1::<f32>().unwrap();
            let scale = 1.0 / (hd as f64).sqrt();
            let ours = if len == 1 {
                decode(&q, &k, &v, scale, Some(&sv)).unwrap()
            } else {
                prompt(&q, &k, &v, scale, Causal { len, window }, Some(&sv)).unwrap()
            }
            .expect("a CPU f32 input");
            let att = (q.matmul(&k.t().unwrap()).unwrap() * scale).unwrap();
            let att = if len > 1 {
                let mask = crate::model::nn::causal_mask(len, start, window, &dev).unwrap();
                att.reshape((b, g, rep, len, t))
                    .unwrap()
                    .broadcast_add(&mask)
                    .unwrap()
                    .reshape((b, g, rep * len, t))
                    .unwrap()
            } else {
                att
            };
            let p = softmax_with_sinks_candle(&att, &sinks, rep).unwrap();
            let theirs = p.matmul(&v).unwrap();
            let diff = max_difference(&ours, &theirs);
            assert!(diff <= 2e-6, "{b}x{g}x{rep}x{len}: max difference {diff}");
            // The sinks take weight: without them the rows differ.
            let plain = candle_nn::ops::softmax_last_dim(&att)
                .unwrap()
                .matmul(&v)
                .unwrap();
            assert!(max_difference(&plain, &theirs) > 1e-3);
        }
    }

    #[test]
    fn other_inputs_are_left_to_candle() {
        let dev = Device::Cpu;
        let q = Tensor::zeros((1, 2, 1, 8), candle_core::DType::F16, &dev).unwrap();
        let k = Tensor::zeros((1, 2, 3, 8), candle_core::DType::F16, &dev).unwrap();
        assert!(decode(&q, &k, &k, 1.0, None).unwrap().is_none());
        let q = Tensor::zeros((1, 2, 1, 8), candle_core::DType::F32, &dev).unwrap();
        let k = Tensor::zeros((1, 3, 3, 8), candle_core::DType::F32, &dev).unwrap();
        assert!(
            decode(&q, &k, &k, 1.0, None).unwrap().is_none(),
            "head counts differ"
        );
    }
}
