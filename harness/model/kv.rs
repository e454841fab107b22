//! One layer's key/value cache: keys and values `[sequences, kv heads, capacity,
//! head_dim]`, one tensor each, allocated once at the first write with room for the
//! capacity asked, and filled position by position.
//!
//! It replaces candle-nn's `KvCache` (same layout, same growth rule) because the CPU
//! decode step ([`crate::model::step`]) writes each new position's keys and values
//! straight from its projection buffer into these tensors, in place
//! ([`KvCache::push_rows`]), where candle's cache only appends from another tensor (one
//! allocation and one copy per layer per step). Prompts still append tensors, and the
//! attention of both paths reads the same storage, so the two paths share one cache.

use candle_core::{CpuStorage, DType, Device, InplaceOp1, Layout, Tensor};

/// Keys and values of one layer; see the module documentation.
#[derive(Debug, Clone)]
pub struct KvCache {
    k: Option<Tensor>,
    v: Option<Tensor>,
    len: usize,
    capacity: usize,
    /// Positions added when a write would overflow the capacity (the first capacity,
    /// as candle-nn's cache grows).
    grow_by: usize,
    /// A sliding-window layer's window: it keeps only the positions its next query can
    /// see, dropping the oldest when a write would overflow the capacity.
    window: Option<usize>,
    /// Positions dropped from the front (held positions start here).
    dropped: usize,
}

/// Room a sliding-window layer keeps beyond its window, so that dropping the oldest
/// positions (a copy of the window) happens once every this many steps, not every step.
pub const WINDOW_SLACK: usize = 64;

/// Where one position's rows lie in a buffer: the row of sequence `b`, head `g` starts at
/// `offset + b * seq_stride + g * head_dim`.
#[derive(Debug, Clone, Copy)]
pub struct Rows<'a> {
    pub data: &'a [f32],
    pub offset: usize,
    pub seq_stride: usize,
}

impl KvCache {
    /// An empty cache with room for `capacity` positions (allocated at the first write).
    pub fn new(capacity: usize) -> Self {
        Self::windowed(capacity, None)
    }

    /// A cache for a layer that attends over the last `window` positions (None: all):
    /// it holds at most `window + WINDOW_SLACK` positions between prompts.
    pub fn windowed(capacity: usize, window: Option<usize>) -> Self {
        let capacity = match window {
            Some(w) => capacity.min(w + WINDOW_SLACK),
            None => capacity,
        }
        .max(1);
        KvCache {
            k: None,
            v: None,
            len: 0,
            capacity,
            grow_by: capacity,
            window,
            dropped: 0,
        }
    }

    /// The layer's window, if it slides.
    pub fn window(&self) -> Option<usize> {
        self.window
    }

    /// Positions dropped from the front: the held ones are `dropped() .. dropped() + len()`.
    pub fn dropped(&self) -> usize {
        self.dropped
    }

    /// A sliding-window layer about to take `more` positions that would overflow its
    /// capacity drops the positions no query will see again: it keeps the last
    /// `window - 1` (what the next position sees besides itself), copied into new buffers
    /// (a fork of this cache, which writes into the old ones past what it held, keeps
    /// its positions). Nothing happens for other layers, or while there is room.
    pub fn evict_for(&mut self, more: usize) -> candle_core::Result<()> {
        let (Some(w), Some(k), Some(v)) = (self.window, &self.k, &self.v) else {
            return Ok(());
        };
        if self.len + more <= self.capacity {
            return Ok(());
        }
        let keep = self.len.min(w.saturating_sub(1));
        if keep == self.len {
            return Ok(());
        }
        let from = self.len - keep;
        let (b, g, _, hd) = k.dims4()?;
        let capacity = self.capacity.max(keep + more);
        let fresh = |old: &Tensor| -> candle_core::Result<Tensor> {
            let t = Tensor::zeros((b, g, capacity, hd), old.dtype(), old.device())?;
            if keep > 0 {
                t.slice_set(&old.narrow(2, from, keep)?.contiguous()?, 2, 0)?;
            }
            Ok(t)
        };
        let (k, v) = (fresh(k)?, fresh(v)?);
        self.k = Some(k);
        self.v = Some(v);
        self.capacity = capacity;
        self.dropped += from;
        self.len = keep;
        Ok(())
    }

    /// Record that the held positions start at `dropped` (a prefix copied from a
    /// sliding layer that held only its window).
    pub fn set_dropped(&mut self, dropped: usize) {
        self.dropped = dropped;
    }

    /// Positions held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The keys held, `[b, g, len, hd]` (a view of the buffer, strided over capacity).
    pub fn k(&self) -> candle_core::Result<Option<Tensor>> {
        self.k
            .as_ref()
            .map(|t| t.narrow(2, 0, self.len))
            .transpose()
    }

    /// The values held, as [`KvCache::k`].
    pub fn v(&self) -> candle_core::Result<Option<Tensor>> {
        self.v
            .as_ref()
            .map(|t| t.narrow(2, 0, self.len))
            .transpose()
    }

    /// The whole buffers `[b, g, capacity, hd]` (positions from `len()` on are not
    /// written yet), for readers that index positions themselves.
    pub fn buffers(&self) -> Option<(&Tensor, &Tensor)> {
        Some((self.k.as_ref()?, self.v.as_ref()?))
    }

    /// Make room for `more` positions after those held, for `[b, g, _, hd]` rows of
    /// `dtype` on `device`: allocates the buffers at the first write, grows them (a copy)
    /// when the capacity would be passed.
    fn reserve(
        &mut self,
        (b, g, hd): (usize, usize, usize),
        more: usize,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<()> {
        self.evict_for(more)?;
        let needed = self.len + more;
        if let Some(k) = &self.k {
            let (kb, kg, _, khd) = k.dims4()?;
            if (kb, kg, khd) != (b, g, hd) || k.dtype() != dtype {
                candle_core::bail!(
                    "keys of {b} x {g} x {hd} {dtype:?} written to a cache of {kb} x {kg} x {khd} {:?}",
                    k.dtype()
                );
            }
            if needed <= self.capacity {
                return Ok(());
            }
        }
        let mut capacity = self.capacity;
        while capacity < needed {
            capacity += self.grow_by;
        }
        let fresh = |old: &Option<Tensor>| -> candle_core::Result<Tensor> {
            let t = Tensor::zeros((b, g, capacity, hd), dtype, device)?;
            if let Some(old) = old {
                if self.len > 0 {
                    t.slice_set(&old.narrow(2, 0, self.len)?.contiguous()?, 2, 0)?;
                }
            }
            Ok(t)
        };
        let (k, v) = (fresh(&self.k)?, fresh(&self.v)?);
        self.k = Some(k);
        self.v = Some(v);
        self.capacity = capacity;
        Ok(())
    }

    /// Append `k` and `v` (`[b, g, len, hd]`) after the positions held; the keys and
    /// values now held.
    pub fn append(&mut self, k: &Tensor, v: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        let (b, g, len, hd) = k.dims4()?;
        if v.dims4()? != (b, g, len, hd) {
            candle_core::bail!("keys {:?} and values {:?} differ", k.dims(), v.dims());
        }
        self.reserve((b, g, hd), len, k.dtype(), k.device())?;
        let (kb, vb) = self.buffers().expect("reserved");
        kb.slice_set(&k.contiguous()?, 2, self.len)?;
        vb.slice_set(&v.contiguous()?, 2, self.len)?;
        self.len += len;
        Ok((self.k()?.expect("written"), self.v()?.expect("written")))
    }

    /// Write one position's keys and values for `b` sequences of `g` heads of `hd`
    /// (f32, CPU) from `k` and `v` into the buffers, in place: no tensor is made.
    pub fn push_rows(
        &mut self,
        (b, g, hd): (usize, usize, usize),
        k: Rows<'_>,
        v: Rows<'_>,
    ) -> candle_core::Result<()> {
        for rows in [&k, &v] {
            let fits = b > 0 && rows.offset + (b - 1) * rows.seq_stride + g * hd <= rows.data.len();
            if !fits {
                candle_core::bail!(
                    "rows of {b} x {g} x {hd} from a buffer of {}",
                    rows.data.len()
                );
            }
        }
        self.reserve((b, g, hd), 1, DType::F32, &Device::Cpu)?;
        let (kb, vb) = self.buffers().expect("reserved");
        let at = self.len;
        kb.inplace_op1(&WriteRows {
            rows: k,
            dims: (b, g, hd),
            at,
        })?;
        vb.inplace_op1(&WriteRows {
            rows: v,
            dims: (b, g, hd),
            at,
        })?;
        self.len += 1;
        Ok(())
    }
}

/// One position's rows copied into a `[b, g, capacity, hd]` f32 buffer at position `at`.
struct WriteRows<'a> {
    rows: Rows<'a>,
    dims: (usize, usize, usize),
    at: usize,
}

impl InplaceOp1 for WriteRows<'_> {
    fn name(&self) -> &'static str {
        "quantbench-kv-write"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> candle_core::Result<()> {
        let CpuStorage::F32(dst) = storage else {
            candle_core::bail!("the cache is not f32");
        };
        let (b, g, hd) = self.dims;
        let st = layout.stride();
        if st.len() != 4 || st[3] != 1 || layout.dims()[2] <= self.at {
            candle_core::bail!("a cache of layout {layout:?} for position {}", self.at);
        }
        let start = layout.start_offset();
        for bi in 0..b {
            for gi in 0..g {
                let to = start + bi * st[0] + gi * st[1] + self.at * st[2];
                let from = self.rows.offset + bi * self.rows.seq_stride + gi * hd;
                dst[to..to + hd].copy_from_slice(&self.rows.data[from..from + hd]);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vals(n: usize, seed: f32) -> Vec<f32> {
        (0..n).map(|i| i as f32 * 0.5 + seed).collect()
    }

    /// Appended tensors and rows written in place read back as the same cache, across a
    /// growth of the buffers.
    #[test]
    fn appends_and_row_writes_hold_the_same_positions() {
        let (b, g, hd) = (2, 3, 4);
        let dev = Device::Cpu;
        let mut cache = KvCache::new(3);
        let k0 = Tensor::from_vec(vals(b * g * 2 * hd, 0.0), (b, g, 2, hd), &dev).unwrap();
        let v0 = Tensor::from_vec(vals(b * g * 2 * hd, 100.0), (b, g, 2, hd), &dev).unwrap();
        cache.append(&k0, &v0).unwrap();
        // Two positions written from [b, 2 * g * hd] rows (keys first, then values), the
        // second past the first capacity of 3.
        let mut want_k = vec![k0.clone()];
        let mut want_v = vec![v0.clone()];
        for step in 0..2 {
            let buf = vals(b * 2 * g * hd, 1000.0 * (step + 1) as f32);
            let stride = 2 * g * hd;
            cache
                .push_rows(
                    (b, g, hd),
                    Rows {
                        data: &buf,
                        offset: 0,
                        seq_stride: stride,
                    },
                    Rows {
                        data: &buf,
                        offset: g * hd,
                        seq_stride: stride,
                    },
                )
                .unwrap();
            let t = Tensor::from_vec(buf, (b, 2, g, hd), &dev).unwrap();
            want_k.push(t.narrow(1, 0, 1).unwrap().transpose(1, 2).unwrap());
            want_v.push(t.narrow(1, 1, 1).unwrap().transpose(1, 2).unwrap());
        }
        assert_eq!(cache.len(), 4);
        let want_k = Tensor::cat(&want_k, 2).unwrap();
        let want_v = Tensor::cat(&want_v, 2).unwrap();
        let got_k = cache.k().unwrap().unwrap();
        let got_v = cache.v().unwrap().unwrap();
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(flat(&got_k), flat(&want_k));
        assert_eq!(flat(&got_v), flat(&want_v));
        // A clone shares the buffers: what it writes lands in the same storage.
        let mut fork = cache.clone();
        let buf = vals(b * g * hd, -7.0);
        let rows = Rows {
            data: &buf,
            offset: 0,
            seq_stride: g * hd,
        };
        fork.push_rows((b, g, hd), rows, rows).unwrap();
        let (kb, _) = cache.buffers().unwrap();
        let seen = kb.narrow(2, 4, 1).unwrap();
        assert_eq!(flat(&seen)[..hd], buf[..hd]);
        assert_eq!(cache.len(), 4);
    }

    #[test]
    fn mismatched_rows_are_refused() {
        let mut cache = KvCache::new(4);
        let buf = vec![0f32; 10];
        let rows = Rows {
            data: &buf,
            offset: 0,
            seq_stride: 8,
        };
        let err = cache.push_rows((2, 2, 4), rows, rows).unwrap_err();
        assert!(err.to_string().contains("rows of 2 x 2 x 4"), "{err}");
    }
}
