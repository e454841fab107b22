//! The Llama architectures' gated activation, `silu(gate) · up` (`silu(v) = v / (1 + e^−v)`,
//! candle's definition), fused into one pass: 16 lanes (AVX-512) or 8 (AVX2) with the
//! vectorised `e^x` of [`super::vexp`], shared out on candle's thread pool when long.
//!
//! candle computes it as two ops — `silu` element by element with libm's `expf` (on its
//! pool), then a multiplication — each writing a fresh tensor: at a 512-token prompt of
//! Llama 3.2 1B, 4.2 million exponentials and two 16 MB tensors a layer (0.8% of a
//! prompt's samples on `__expf_fma`, where the products take 90%).

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};

/// Elements from which [`silu_mul`] shares its work out on the pool (a decode step's
/// 8,192 stay on the calling thread).
const PARALLEL_FROM: usize = 1 << 16;

/// Elements per unit of work on the pool.
const CHUNK: usize = 16 * 1024;

/// `silu(v) · u` for one element, as candle computes it.
pub fn silu_mul_one(v: f32, u: f32) -> f32 {
    v / (1.0 + (-v).exp()) * u
}

/// `gate[i] = silu(gate[i]) · up[i]` for every `i` (the two the same length).
pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len(), "gate and up differ in length");
    let len = gate.len();
    if len < PARALLEL_FROM {
        return silu_mul_part(gate, up);
    }
    let addr = gate.as_mut_ptr() as usize;
    candle_core::utils::barrier_pool().execute_chunked(len.div_ceil(CHUNK), |range| {
        for chunk in range {
            let (start, end) = (chunk * CHUNK, len.min(chunk * CHUNK + CHUNK));
            // SAFETY: chunks are disjoint parts of `gate`, which outlives the pool call.
            let part = unsafe {
                std::slice::from_raw_parts_mut((addr as *mut f32).add(start), end - start)
            };
            silu_mul_part(part, &up[start..end]);
        }
    });
}

/// [`silu_mul`] on this thread, at the widest level this CPU has.
fn silu_mul_part(gate: &mut [f32], up: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    match super::level() {
        // SAFETY: the level's features were checked by level().
        Some(super::Level::Avx512) => return unsafe { silu_mul16(gate, up) },
        Some(super::Level::Avx2) => return unsafe { silu_mul8(gate, up) },
        None => {}
    }
    silu_mul_portable(gate, up)
}

/// [`silu_mul`] element by element with libm's `expf` (candle's arithmetic).
pub fn silu_mul_portable(gate: &mut [f32], up: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = silu_mul_one(*g, u);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,avx512f")]
unsafe fn silu_mul16(gate: &mut [f32], up: &[f32]) {
    use std::arch::x86_64::*;
    let one = _mm512_set1_ps(1.0);
    let mut g = gate.chunks_exact_mut(16);
    let mut u = up.chunks_exact(16);
    for (gc, uc) in (&mut g).zip(&mut u) {
        let v = _mm512_loadu_ps(gc.as_ptr());
        let e = super::vexp::exp16(_mm512_sub_ps(_mm512_setzero_ps(), v));
        let s = _mm512_div_ps(v, _mm512_add_ps(one, e));
        _mm512_storeu_ps(
            gc.as_mut_ptr(),
            _mm512_mul_ps(s, _mm512_loadu_ps(uc.as_ptr())),
        );
    }
    let (gr, ur) = (g.into_remainder(), u.remainder());
    if !gr.is_empty() {
        let mask: __mmask16 = ((1u32 << gr.len()) - 1) as u16;
        let v = _mm512_maskz_loadu_ps(mask, gr.as_ptr());
        let e = super::vexp::exp16(_mm512_sub_ps(_mm512_setzero_ps(), v));
        let s = _mm512_div_ps(v, _mm512_add_ps(one, e));
        let r = _mm512_mul_ps(s, _mm512_maskz_loadu_ps(mask, ur.as_ptr()));
        _mm512_mask_storeu_ps(gr.as_mut_ptr(), mask, r);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn silu_mul8(gate: &mut [f32], up: &[f32]) {
    use std::arch::x86_64::*;
    let one = _mm256_set1_ps(1.0);
    let step = |v: __m256, u: __m256| -> __m256 {
        let e = super::vexp::exp8(_mm256_sub_ps(_mm256_setzero_ps(), v));
        _mm256_mul_ps(_mm256_div_ps(v, _mm256_add_ps(one, e)), u)
    };
    let mut g = gate.chunks_exact_mut(8);
    let mut u = up.chunks_exact(8);
    for (gc, uc) in (&mut g).zip(&mut u) {
        let r = step(_mm256_loadu_ps(gc.as_ptr()), _mm256_loadu_ps(uc.as_ptr()));
        _mm256_storeu_ps(gc.as_mut_ptr(), r);
    }
    let (gr, ur) = (g.into_remainder(), u.remainder());
    if !gr.is_empty() {
        let (mut gp, mut up_) = ([0f32; 8], [0f32; 8]);
        gp[..gr.len()].copy_from_slice(gr);
        up_[..ur.len()].copy_from_slice(ur);
        let r = step(_mm256_loadu_ps(gp.as_ptr()), _mm256_loadu_ps(up_.as_ptr()));
        _mm256_storeu_ps(gp.as_mut_ptr(), r);
        let n = gr.len();
        gr.copy_from_slice(&gp[..n]);
    }
}

/// `silu(gate) · up` of two tensors of one shape as a candle op (CPU, f32; any layout).
pub struct SiluMul;

impl SiluMul {
    /// This op where quantbench's kernels are active and the inputs are f32 on the CPU,
    /// else candle's `silu(gate) * up`.
    pub fn forward(gate: &Tensor, up: &Tensor) -> candle_core::Result<Tensor> {
        if super::active() == super::Kernels::Quantbench
            && gate.device().is_cpu()
            && gate.dtype() == candle_core::DType::F32
            && up.dtype() == candle_core::DType::F32
        {
            gate.contiguous()?
                .apply_op2_no_bwd(&up.contiguous()?, &SiluMul)
        } else {
            candle_nn::ops::silu(gate)? * up
        }
    }
}

impl CustomOp2 for SiluMul {
    fn name(&self) -> &'static str {
        "quantbench-silu-mul"
    }

    fn cpu_fwd(
        &self,
        gate: &CpuStorage,
        gl: &Layout,
        up: &CpuStorage,
        ul: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        if gl.shape() != ul.shape() {
            candle_core::bail!("silu · up of {:?} and {:?}", gl.shape(), ul.shape());
        }
        let (Some((g0, g1)), Some((u0, u1))) = (gl.contiguous_offsets(), ul.contiguous_offsets())
        else {
            candle_core::bail!("silu · up on inputs that are not contiguous");
        };
        let mut out = gate.as_slice::<f32>()?[g0..g1].to_vec();
        silu_mul(&mut out, &up.as_slice::<f32>()?[u0..u1]);
        Ok((CpuStorage::F32(out), gl.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Every level's fused `silu · up` within 4e-7 (relative) of candle's `silu(gate) *
    /// up`, on lengths around the lane counts and the pool's threshold, over gates from
    /// −100 to 100 (below −88, where `e^−v` clamps, within 1e-35 of candle's −0);
    /// the op on tensors (also through a transposed view) equal to the slices' function.
    #[test]
    fn silu_mul_equals_candles() {
        let dev = Device::Cpu;
        for len in [1usize, 7, 8, 9, 15, 16, 17, 33, 1000, PARALLEL_FROM + 37] {
            let gate: Vec<f32> = (0..len)
                .map(|i| ((i * 7919 % 4001) as f32 - 2000.0) * 0.05)
                .collect();
            let up: Vec<f32> = (0..len).map(|i| 1.0 - (i % 41) as f32 * 0.05).collect();
            let g = Tensor::from_vec(gate.clone(), len, &dev).unwrap();
            let u = Tensor::from_vec(up.clone(), len, &dev).unwrap();
            let want = (candle_nn::ops::silu(&g).unwrap() * &u)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let mut portable = gate.clone();
            silu_mul_portable(&mut portable, &up);
            assert_eq!(portable, want, "the portable path is candle's arithmetic");
            let mut levels = vec![None];
            #[cfg(target_arch = "x86_64")]
            levels.extend(
                super::super::Level::ALL
                    .into_iter()
                    .filter(|l| l.supported())
                    .map(Some),
            );
            for level in levels {
                let mut got = gate.clone();
                match level {
                    None => silu_mul(&mut got, &up),
                    #[cfg(target_arch = "x86_64")]
                    Some(super::super::Level::Avx512) => unsafe { silu_mul16(&mut got, &up) },
                    #[cfg(target_arch = "x86_64")]
                    Some(super::super::Level::Avx2) => unsafe { silu_mul8(&mut got, &up) },
                }
                for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (a - b).abs() <= 4e-7 * b.abs() + 1e-35,
                        "{level:?} len {len}: silu({}) * {} = {a}, candle {b}",
                        gate[i],
                        up[i]
                    );
                }
            }
            if len == 1000 {
                let ours = SiluMul::forward(&g, &u).unwrap().to_vec1::<f32>().unwrap();
                let mut direct = gate.clone();
                silu_mul(&mut direct, &up);
                assert_eq!(ours, direct);
                let g2 = g.reshape((40, 25)).unwrap().t().unwrap();
                let u2 = u.reshape((40, 25)).unwrap().t().unwrap();
                let t = SiluMul::forward(&g2, &u2).unwrap();
                let want2 = (candle_nn::ops::silu(&g2).unwrap() * &u2).unwrap();
                let diff = (t - want2).unwrap().abs().unwrap().max_all().unwrap();
                assert!(diff.to_scalar::<f32>().unwrap() <= 1e-5);
            }
        }
    }
}
