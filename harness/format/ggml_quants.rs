//! ggml's reference quantizers where candle's differ from them, ported from
//! ggml-quants.c: the k-quants q2_k, q3_k, q4_k, q5_k and q6_k
//! (`quantize_row_q{2,3,4,5,6}_K_ref` with `make_qkx2_quants`, `make_q3_quants` and
//! `make_qx_quants`) and q4_1 / q5_1 (`quantize_row_q{4,5}_1_ref`): what llama-quantize
//! writes for these types without an importance matrix (`quantize_q4_K` and the others
//! call the `_ref` functions when `quant_weights` is NULL). candle's k-quant quantizers
//! are an older ggml's (`make_qkx1_quants`), and its q3_k, q4_1 and q5_1 round otherwise
//! on some blocks (outliers, mostly-zero rows): measured against ggml's own bytes in
//! tests/quantizers.rs.
//!
//! The arithmetic is ggml's in its order, in f32, with `nearest_int`'s magic-number
//! rounding (to nearest, ties to even) and f16 scales rounded as ggml's software
//! conversion does. ggml-quants.c is built without `-march=native` (it is in ggml-base,
//! not the CPU backend), so the compiler fuses no multiply-adds there; neither does
//! this port. `tests/gguf.rs` holds the bytes to llama-quantize's.

use half::f16;

use super::GgmlType;

/// Weights in a k-quant super-block.
pub const QK_K: usize = 256;
pub(super) const GROUP_MAX_EPS: f32 = 1e-15;

/// Whether this file quantizes the type (else candle's quantizer does).
pub fn handles(ty: GgmlType) -> bool {
    matches!(
        ty,
        GgmlType::Q2K
            | GgmlType::Q3K
            | GgmlType::Q4K
            | GgmlType::Q5K
            | GgmlType::Q6K
            | GgmlType::Q4_1
            | GgmlType::Q5_1
    )
}

/// (weights, bytes) of one block of the type.
fn block(ty: GgmlType) -> (usize, usize) {
    match ty {
        GgmlType::Q4_1 => (32, 20),
        GgmlType::Q5_1 => (32, 24),
        other => (QK_K, block_bytes(other)),
    }
}

/// Bytes of one super-block of the type.
fn block_bytes(ty: GgmlType) -> usize {
    match ty {
        GgmlType::Q2K => 84,
        GgmlType::Q3K => 110,
        GgmlType::Q4K => 144,
        GgmlType::Q5K => 176,
        GgmlType::Q6K => 210,
        _ => unreachable!("only the k-quants of `handles`"),
    }
}

/// `x` (whole blocks: 256 weights for the k-quants, 32 for q4_1 / q5_1) quantized to
/// `ty` as ggml's reference does.
pub fn quantize(ty: GgmlType, x: &[f32]) -> Vec<u8> {
    let (qk, bb) = block(ty);
    assert!(x.len().is_multiple_of(qk), "{} weights", x.len());
    let mut out = vec![0u8; x.len() / qk * bb];
    for (xb, yb) in x.chunks_exact(qk).zip(out.chunks_exact_mut(bb)) {
        match ty {
            GgmlType::Q4_1 => q41_block(xb, yb, false),
            GgmlType::Q5_1 => q41_block(xb, yb, true),
            GgmlType::Q2K => q2_k_block(xb, yb),
            GgmlType::Q3K => q3_k_block(xb, yb),
            GgmlType::Q4K => q45_k_block(xb, yb, false),
            GgmlType::Q5K => q45_k_block(xb, yb, true),
            GgmlType::Q6K => q6_k_block(xb, yb),
            _ => unreachable!("only the k-quants of `handles`"),
        }
    }
    out
}

/// ggml's `nearest_int`: round to nearest, ties to even, through the float's bits.
pub(super) fn nearest_int(fval: f32) -> i32 {
    let val = fval + 12_582_912.0;
    let i = val.to_bits() as i32;
    (i & 0x007f_ffff) - 0x0040_0000
}

pub(super) fn fp16(v: f32) -> [u8; 2] {
    f16::from_f32(v).to_le_bytes()
}

fn fp16_back(v: f32) -> f32 {
    f16::from_f32(v).to_f32()
}

/// `make_qkx2_quants`: a scale and a minimum for `x` at levels 0 ..= nmax, searched
/// over `nstep + 1` trial scales around `nmax / (max − min)`, by weighted squared (or
/// absolute, `use_mad`) error. Returns (scale, −min) and leaves the levels in `l`.
#[allow(clippy::too_many_arguments)]
fn make_qkx2_quants(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    l: &mut [u8],
    laux: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    use_mad: bool,
) -> (f32, f32) {
    make_qkx_quants(
        nmax,
        x,
        weights,
        l,
        laux,
        (rmin, rdelta, nstep),
        use_mad,
        false,
    )
}

/// `make_qkx3_quants` with importance weights (what the `_impl` quantizers pass): as
/// [`make_qkx2_quants`] but giving up when `max <= min` (every value negative), never by
/// absolute error. Returns (scale, −min).
fn make_qkx3_quants(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    l: &mut [u8],
    laux: &mut [u8],
    (rmin, rdelta, nstep): (f32, f32, i32),
) -> (f32, f32) {
    make_qkx_quants(
        nmax,
        x,
        weights,
        l,
        laux,
        (rmin, rdelta, nstep),
        false,
        true,
    )
}

#[allow(clippy::too_many_arguments)]
fn make_qkx_quants(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    l: &mut [u8],
    laux: &mut [u8],
    (rmin, rdelta, nstep): (f32, f32, i32),
    use_mad: bool,
    stop_at_or_below: bool,
) -> (f32, f32) {
    let n = x.len();
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min || (stop_at_or_below && max < min) {
        l[..n].fill(0);
        return (0.0, -min);
    }
    let err = |d: f32| if use_mad { d.abs() } else { d * d };
    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0f32;
    for i in 0..n {
        let q = nearest_int(iscale * (x[i] - min));
        l[i] = q.clamp(0, nmax) as u8;
        let diff = scale * l[i] as f32 + min - x[i];
        best_error += weights[i] * err(diff);
    }
    if nstep < 1 {
        return (scale, -min);
    }
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmax as f32) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0f32, 0f32, 0f32);
        for i in 0..n {
            let q = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            laux[i] = q as u8;
            let w = weights[i];
            let lf = q as f32;
            sum_l += w * lf;
            sum_l2 += w * lf * lf;
            sum_xl += w * lf * x[i];
        }
        let d = sum_w * sum_l2 - sum_l * sum_l;
        if d > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / d;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / d;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0f32;
            for i in 0..n {
                let diff = this_scale * laux[i] as f32 + this_min - x[i];
                cur_error += weights[i] * err(diff);
            }
            if cur_error < best_error {
                l[..n].copy_from_slice(&laux[..n]);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// `make_qx_quants` with `rmse_type` 1: a signed scale for levels −nmax .. nmax − 1
/// (stored + nmax in `l`), searched over 18 trial scales around `−nmax / max`, by error
/// weighted by the importance weights `qw` when given, else by x².
fn make_qx_quants_w(nmax: i32, x: &[f32], l: &mut [i8], qw: Option<&[f32]>) -> f32 {
    let wt = |i: usize, v: f32| qw.map_or(v * v, |q| q[i]);
    let n = x.len();
    let mut max = 0f32;
    let mut amax = 0f32;
    for &v in x {
        let ax = v.abs();
        if ax > amax {
            amax = ax;
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        l[..n].fill(0);
        return 0.0;
    }
    let level = |iscale: f32, v: f32| nearest_int(iscale * v).clamp(-nmax, nmax - 1);
    let mut iscale = -(nmax as f32) / max;
    let (mut sumlx, mut suml2) = (0f32, 0f32);
    for i in 0..n {
        let q = level(iscale, x[i]);
        l[i] = (q + nmax) as i8;
        let w = wt(i, x[i]);
        sumlx += w * x[i] * q as f32;
        suml2 += w * q as f32 * q as f32;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(nmax as f32 + 0.1 * is as f32) / max;
        sumlx = 0.0;
        suml2 = 0.0;
        for (i, &v) in x.iter().enumerate() {
            let q = level(iscale, v) as f32;
            let w = wt(i, v);
            sumlx += w * v * q;
            suml2 += w * q * q;
        }
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for i in 0..n {
                l[i] = (level(iscale, x[i]) + nmax) as i8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// `make_q3_quants` with `do_rmse`: levels −nmax .. nmax − 1 (stored + nmax in `l`)
/// refined one weight at a time (up to 5 sweeps) by weighted (x²) squared error.
fn make_q3_quants(nmax: i32, x: &[f32], l: &mut [i8]) -> f32 {
    let n = x.len();
    let mut max = 0f32;
    let mut amax = 0f32;
    for &v in x {
        let ax = v.abs();
        if ax > amax {
            amax = ax;
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        l[..n].fill(0);
        return 0.0;
    }
    let iscale = -(nmax as f32) / max;
    let (mut sumlx, mut suml2) = (0f32, 0f32);
    for i in 0..n {
        let q = nearest_int(iscale * x[i]).clamp(-nmax, nmax - 1);
        l[i] = q as i8;
        let w = x[i] * x[i];
        sumlx += w * x[i] * q as f32;
        suml2 += w * q as f32 * q as f32;
    }
    for _ in 0..5 {
        let mut n_changed = 0;
        for i in 0..n {
            let w = x[i] * x[i];
            let li = l[i] as f32;
            let mut slx = sumlx - w * x[i] * li;
            if slx > 0.0 {
                let mut sl2 = suml2 - w * li * li;
                let new_l = nearest_int(x[i] * sl2 / slx).clamp(-nmax, nmax - 1);
                if new_l != l[i] as i32 {
                    let nl = new_l as f32;
                    slx += w * x[i] * nl;
                    sl2 += w * nl * nl;
                    if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                        l[i] = new_l as i8;
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed += 1;
                    }
                }
            }
        }
        if n_changed == 0 {
            break;
        }
    }
    for v in &mut l[..n] {
        *v += nmax as i8;
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

/// `quantize_row_q3_K_ref` of one super-block. Layout: hmask[32], qs[64], scales[12]
/// (6-bit signed scales, offset 32), d (f16).
fn q3_k_block(x: &[f32], y: &mut [u8]) {
    let mut l = [0i8; QK_K];
    let mut scales = [0f32; 16];
    let (mut max_scale, mut amax) = (0f32, 0f32);
    for j in 0..16 {
        scales[j] = make_q3_quants(4, &x[16 * j..16 * j + 16], &mut l[16 * j..16 * j + 16]);
        let s = scales[j].abs();
        if s > amax {
            amax = s;
            max_scale = scales[j];
        }
    }
    let (hmask, rest) = y.split_at_mut(32);
    let (qs, rest) = rest.split_at_mut(64);
    let (sc, dd) = rest.split_at_mut(12);
    sc.fill(0);
    let d = if max_scale != 0.0 {
        let iscale = -32.0 / max_scale;
        for j in 0..16 {
            let mut v = (nearest_int(iscale * scales[j]) as i8).clamp(-32, 31) + 32;
            if j < 8 {
                sc[j] = (v & 0xf) as u8;
            } else {
                sc[j - 8] |= ((v & 0xf) << 4) as u8;
            }
            v >>= 4;
            sc[j % 4 + 8] |= (v << (2 * (j / 4))) as u8;
        }
        1.0 / iscale
    } else {
        0.0
    };
    dd.copy_from_slice(&fp16(d));
    q3_k_finish(x, fp16_back(d), &mut l, hmask, qs, sc);
}

/// The end of both q3_k quantizers: every weight again at its group's stored scale
/// (`d16` times the 6-bit scale), the high bits into `hmask`, the low two into `qs`.
fn q3_k_finish(
    x: &[f32],
    d16: f32,
    l: &mut [i8; QK_K],
    hmask: &mut [u8],
    qs: &mut [u8],
    sc: &[u8],
) {
    for j in 0..16 {
        let low = if j < 8 { sc[j] & 0xf } else { sc[j - 8] >> 4 };
        let s = ((low | (((sc[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) as i8) - 32;
        let d = d16 * s as f32;
        if d == 0.0 {
            continue;
        }
        for k in 0..16 {
            l[16 * j + k] = (nearest_int(x[16 * j + k] / d).clamp(-4, 3) + 4) as i8;
        }
    }
    hmask.fill(0);
    let (mut m, mut hm) = (0usize, 1u8);
    for v in l.iter_mut() {
        if *v > 3 {
            hmask[m] |= hm;
            *v -= 4;
        }
        m += 1;
        if m == QK_K / 8 {
            m = 0;
            hm <<= 1;
        }
    }
    for j in (0..QK_K).step_by(128) {
        for k in 0..32 {
            let q = |o: usize| l[j + k + o] as u8;
            qs[j / 4 + k] = q(0) | (q(32) << 2) | (q(64) << 4) | (q(96) << 6);
        }
    }
}

/// `quantize_row_q4_1_ref` / `quantize_row_q5_1_ref` of one 32-weight block. Layout: d,
/// m (f16), q5_1's qh (u32), qs[16].
fn q41_block(x: &[f32], y: &mut [u8], five: bool) {
    let (mut min, mut max) = (f32::MAX, -f32::MAX);
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    let levels = if five { 31.0 } else { 15.0 };
    let d = (max - min) / levels;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    y[..2].copy_from_slice(&fp16(d));
    y[2..4].copy_from_slice(&fp16(min));
    let qs_at = if five { 8 } else { 4 };
    let mut qh = 0u32;
    for j in 0..16 {
        let x0 = (x[j] - min) * id;
        let x1 = (x[16 + j] - min) * id;
        if five {
            // (uint8_t)(x + 0.5f): truncation toward zero.
            let (q0, q1) = ((x0 + 0.5) as u8, (x1 + 0.5) as u8);
            y[qs_at + j] = (q0 & 0x0f) | ((q1 & 0x0f) << 4);
            qh |= (((q0 & 0x10) >> 4) as u32) << j;
            qh |= (((q1 & 0x10) >> 4) as u32) << (j + 16);
        } else {
            // MIN(15, (int8_t)(x + 0.5f)).
            let (q0, q1) = (((x0 + 0.5) as i8).min(15), ((x1 + 0.5) as i8).min(15));
            y[qs_at + j] = q0 as u8 | ((q1 as u8) << 4);
        }
    }
    if five {
        y[4..8].copy_from_slice(&qh.to_le_bytes());
    }
}

/// `get_scale_min_k4`: sub-block `j`'s 6-bit scale and minimum.
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// `quantize_row_q2_K_ref` of one super-block: `d`, `dmin` (f16), 16 scale bytes (scale
/// in the low nibble, min in the high), 64 bytes of 2-bit levels.
/// Layout: scales[16], qs[64], d, dmin.
fn q2_k_block(x: &[f32], y: &mut [u8]) {
    let mut l = [0u8; QK_K];
    let mut laux = [0u8; 16];
    let mut weights = [0f32; 16];
    let mut mins = [0f32; 16];
    let mut scales = [0f32; 16];
    let q4scale = 15f32;
    let (mut max_scale, mut max_min) = (0f32, 0f32);
    for j in 0..16 {
        for k in 0..16 {
            weights[k] = x[16 * j + k].abs();
        }
        let (s, m) = make_qkx2_quants(
            3,
            &x[16 * j..16 * j + 16],
            &weights,
            &mut l[16 * j..16 * j + 16],
            &mut laux,
            -0.5,
            0.1,
            15,
            true,
        );
        scales[j] = s;
        mins[j] = m;
        if s > max_scale {
            max_scale = s;
        }
        if m > max_min {
            max_min = m;
        }
    }
    let (sc, rest) = y.split_at_mut(16);
    let (qs, dd) = rest.split_at_mut(64);
    let d = if max_scale > 0.0 {
        let iscale = q4scale / max_scale;
        for j in 0..16 {
            sc[j] = nearest_int(iscale * scales[j]) as u8;
        }
        max_scale / q4scale
    } else {
        sc.fill(0);
        0.0
    };
    dd[..2].copy_from_slice(&fp16(d));
    let dmin = if max_min > 0.0 {
        let iscale = q4scale / max_min;
        for j in 0..16 {
            sc[j] |= (nearest_int(iscale * mins[j]) << 4) as u8;
        }
        max_min / q4scale
    } else {
        0.0
    };
    dd[2..4].copy_from_slice(&fp16(dmin));
    q2_k_finish(x, (fp16_back(d), fp16_back(dmin)), &mut l, qs, sc);
}

/// The end of both q2_k quantizers: every weight again at its group's stored scale and
/// minimum (`d16`, `dmin16` times the 4-bit ones), packed four to a byte.
fn q2_k_finish(x: &[f32], (d16, dmin16): (f32, f32), l: &mut [u8; QK_K], qs: &mut [u8], sc: &[u8]) {
    for j in 0..16 {
        let d = d16 * (sc[j] & 0xf) as f32;
        if d == 0.0 {
            continue;
        }
        let dm = dmin16 * (sc[j] >> 4) as f32;
        for k in 0..16 {
            l[16 * j + k] = nearest_int((x[16 * j + k] + dm) / d).clamp(0, 3) as u8;
        }
    }
    for j in (0..QK_K).step_by(128) {
        for k in 0..32 {
            qs[j / 4 + k] =
                l[j + k] | (l[j + k + 32] << 2) | (l[j + k + 64] << 4) | (l[j + k + 96] << 6);
        }
    }
}

/// `quantize_row_q4_K_ref` / `quantize_row_q5_K_ref` of one super-block. Layout: d,
/// dmin (f16), scales[12] (6-bit scales and mins), then q5_k's qh[32], then qs[128].
fn q45_k_block(x: &[f32], y: &mut [u8], five: bool) {
    let (nmax, rmin, nstep) = if five { (31, -0.5, 15) } else { (15, -1.0, 20) };
    let mut l = [0u8; QK_K];
    let mut laux = [0u8; 32];
    let mut weights = [0f32; 32];
    let mut mins = [0f32; 8];
    let mut scales = [0f32; 8];
    let (mut max_scale, mut max_min) = (0f32, 0f32);
    for j in 0..8 {
        let xs = &x[32 * j..32 * j + 32];
        let mut sum_x2 = 0f32;
        for &v in xs {
            sum_x2 += v * v;
        }
        let av_x = (sum_x2 / 32.0).sqrt();
        for (w, &v) in weights.iter_mut().zip(xs) {
            *w = av_x + v.abs();
        }
        let (s, m) = make_qkx2_quants(
            nmax,
            xs,
            &weights,
            &mut l[32 * j..32 * j + 32],
            &mut laux,
            rmin,
            0.1,
            nstep,
            false,
        );
        scales[j] = s;
        mins[j] = m;
        if s > max_scale {
            max_scale = s;
        }
        if m > max_min {
            max_min = m;
        }
    }
    let (head, qs) = y.split_at_mut(if five { 48 } else { 16 });
    let (dd, rest) = head.split_at_mut(4);
    let (sc, qh) = rest.split_at_mut(12);
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    for j in 0..8 {
        let ls = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        let lm = (nearest_int(inv_min * mins[j]) as u8).min(63);
        if j < 4 {
            sc[j] = ls;
            sc[j + 4] = lm;
        } else {
            sc[j + 4] = (ls & 0xf) | ((lm & 0xf) << 4);
            sc[j - 4] |= (ls >> 4) << 6;
            sc[j] |= (lm >> 4) << 6;
        }
    }
    dd[..2].copy_from_slice(&fp16(max_scale / 63.0));
    dd[2..4].copy_from_slice(&fp16(max_min / 63.0));
    let (d16, dmin16) = (fp16_back(max_scale / 63.0), fp16_back(max_min / 63.0));
    q45_k_finish(x, (d16, dmin16), nmax, &mut l, (sc, qs, qh), five);
}

/// The end of the q4_k / q5_k quantizers: every weight again at its group's stored
/// scale and minimum (`d16`, `dmin16` times the 6-bit ones), then packed.
fn q45_k_finish(
    x: &[f32],
    (d16, dmin16): (f32, f32),
    nmax: i32,
    l: &mut [u8; QK_K],
    (sc, qs, qh): (&[u8], &mut [u8], &mut [u8]),
    five: bool,
) {
    for j in 0..8 {
        let (s, m) = scale_min_k4(j, sc);
        let d = d16 * s as f32;
        if d == 0.0 {
            continue;
        }
        let dm = dmin16 * m as f32;
        for k in 0..32 {
            l[32 * j + k] = nearest_int((x[32 * j + k] + dm) / d).clamp(0, nmax) as u8;
        }
    }
    pack_q45(l, qs, qh, five);
}

/// The levels of a q4_k / q5_k super-block into its qs (and q5_k's qh).
fn pack_q45(l: &[u8; QK_K], qs: &mut [u8], qh: &mut [u8], five: bool) {
    if five {
        qh.fill(0);
        let (mut m1, mut m2) = (1u8, 2u8);
        for (n, ql) in (0..QK_K).step_by(64).zip(qs.chunks_exact_mut(32)) {
            for j in 0..32 {
                let mut l1 = l[n + j];
                if l1 > 15 {
                    l1 -= 16;
                    qh[j] |= m1;
                }
                let mut l2 = l[n + j + 32];
                if l2 > 15 {
                    l2 -= 16;
                    qh[j] |= m2;
                }
                ql[j] = l1 | (l2 << 4);
            }
            m1 <<= 2;
            m2 <<= 2;
        }
    } else {
        for (j, q) in (0..QK_K).step_by(64).zip(qs.chunks_exact_mut(32)) {
            for k in 0..32 {
                q[k] = l[j + k] | (l[j + k + 32] << 4);
            }
        }
    }
}

/// `quantize_row_q6_K_ref` of one super-block. Layout: ql[128], qh[64], scales[16]
/// (int8), d (f16).
fn q6_k_block(x: &[f32], y: &mut [u8]) {
    q6_k_block_with(x, None, y);
}

/// [`q6_k_block`] with the importance weights `qw` in place of x² when given
/// (`quantize_row_q6_K_impl`).
fn q6_k_block_with(x: &[f32], qw: Option<&[f32]>, y: &mut [u8]) {
    let mut l = [0i8; QK_K];
    let mut scales = [0f32; 16];
    let (mut max_scale, mut max_abs_scale) = (0f32, 0f32);
    for ib in 0..16 {
        let s = make_qx_quants_w(
            32,
            &x[16 * ib..16 * ib + 16],
            &mut l[16 * ib..16 * ib + 16],
            qw.map(|q| &q[16 * ib..16 * ib + 16]),
        );
        scales[ib] = s;
        if s.abs() > max_abs_scale {
            max_abs_scale = s.abs();
            max_scale = s;
        }
    }
    if max_abs_scale < GROUP_MAX_EPS {
        y.fill(0);
        return;
    }
    let (ql, rest) = y.split_at_mut(128);
    let (qh, rest) = rest.split_at_mut(64);
    let (sc, dd) = rest.split_at_mut(16);
    let iscale = -128.0 / max_scale;
    dd.copy_from_slice(&fp16(1.0 / iscale));
    let d16 = fp16_back(1.0 / iscale);
    for ib in 0..16 {
        sc[ib] = nearest_int(iscale * scales[ib]).min(127) as i8 as u8;
    }
    for j in 0..16 {
        let d = d16 * (sc[j] as i8) as f32;
        if d == 0.0 {
            continue;
        }
        for k in 0..16 {
            l[16 * j + k] = (nearest_int(x[16 * j + k] / d).clamp(-32, 31) + 32) as i8;
        }
    }
    for (j, (ql, qh)) in (0..QK_K)
        .step_by(128)
        .zip(ql.chunks_exact_mut(64).zip(qh.chunks_exact_mut(32)))
    {
        for k in 0..32 {
            let q = |o: usize| l[j + k + o] as u8;
            ql[k] = (q(0) & 0xf) | ((q(64) & 0xf) << 4);
            ql[k + 32] = (q(32) & 0xf) | ((q(96) & 0xf) << 4);
            qh[k] = (q(0) >> 4) | ((q(32) >> 4) << 2) | ((q(64) >> 4) << 4) | ((q(96) >> 4) << 6);
        }
    }
}

/// Whether ggml's quantizer of the type reads an importance matrix (`quantize_q4_0` ...
/// call their `_impl` with `quant_weights`; Q8_0, MXFP4 and the floats ignore one).
pub fn takes_importance(ty: GgmlType) -> bool {
    matches!(
        ty,
        GgmlType::Q4_0
            | GgmlType::Q4_1
            | GgmlType::Q5_0
            | GgmlType::Q5_1
            | GgmlType::Q2K
            | GgmlType::Q3K
            | GgmlType::Q4K
            | GgmlType::Q5K
            | GgmlType::Q6K
            | GgmlType::Iq4Nl
            | GgmlType::Iq4Xs
    )
}

/// Bytes of one block of a type [`takes_importance`] names.
fn weighted_block(ty: GgmlType) -> (usize, usize) {
    match ty {
        GgmlType::Q4_0 => (32, 18),
        GgmlType::Q5_0 => (32, 22),
        GgmlType::Iq4Nl => (32, 18),
        GgmlType::Iq4Xs => (QK_K, 136),
        other => block(other),
    }
}

/// `x` (`rows × n_per_row`) quantized to `ty` as ggml's `quantize_<type>` does with the
/// importance matrix `qw` (`n_per_row` values, one an input column: what llama-quantize
/// passes for the tensor): the `_impl` quantizers, row by row. `ty` must be one
/// [`takes_importance`] names.
pub fn quantize_weighted(ty: GgmlType, x: &[f32], n_per_row: usize, qw: &[f32]) -> Vec<u8> {
    assert!(takes_importance(ty), "{ty} takes no importance matrix");
    assert_eq!(qw.len(), n_per_row, "one importance value a column");
    let (qk, bb) = weighted_block(ty);
    assert!(n_per_row.is_multiple_of(qk) && x.len().is_multiple_of(n_per_row));
    let row_bytes = n_per_row / qk * bb;
    let mut out = vec![0u8; x.len() / n_per_row * row_bytes];
    for (xr, yr) in x
        .chunks_exact(n_per_row)
        .zip(out.chunks_exact_mut(row_bytes))
    {
        match ty {
            GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q4_1 | GgmlType::Q5_1 => {
                legacy_row_weighted(ty, xr, qw, yr)
            }
            GgmlType::Iq4Nl | GgmlType::Iq4Xs => iq4_row(ty, xr, Some(qw), yr),
            _ => {
                for (ib, (xb, yb)) in xr
                    .chunks_exact(QK_K)
                    .zip(yr.chunks_exact_mut(bb))
                    .enumerate()
                {
                    let w = &qw[ib * QK_K..(ib + 1) * QK_K];
                    match ty {
                        GgmlType::Q2K => q2_k_block_weighted(xb, w, yb),
                        GgmlType::Q3K => q3_k_block_weighted(xb, w, yb),
                        GgmlType::Q4K => q45_k_block_weighted(xb, w, yb, false),
                        GgmlType::Q5K => q45_k_block_weighted(xb, w, yb, true),
                        GgmlType::Q6K => q6_k_block_weighted(xb, w, yb),
                        _ => unreachable!(),
                    }
                }
            }
        }
    }
    out
}

/// `quantize_iq4_xs` without an importance matrix (what llama-quantize makes of IQ4_XS
/// then): `x` of whole 256-weight super-blocks, 136 bytes each.
pub fn quantize_iq4_xs(x: &[f32]) -> Vec<u8> {
    let mut out = vec![0u8; x.len() / QK_K * 136];
    iq4_row(GgmlType::Iq4Xs, x, None, &mut out);
    out
}

/// `quantize_iq4_nl` without an importance matrix: `x` of whole 32-weight blocks, 18
/// bytes each.
pub fn quantize_iq4_nl(x: &[f32], out: &mut [u8]) {
    iq4_row(GgmlType::Iq4Nl, x, None, out);
}

/// `quantize_row_q{4,5}_{0,1}_impl` of one row: weights `qw · sqrt(σ² + x²)`, σ² the
/// row's mean square; q4_0 / q5_0 by `make_qx_quants` (levels −8 .. 7 / −16 .. 15),
/// q4_1 / q5_1 by `make_qkx3_quants` (levels 0 .. 15 / 0 .. 31).
fn legacy_row_weighted(ty: GgmlType, x: &[f32], qw: &[f32], y: &mut [u8]) {
    let mut sum_x2 = 0f32;
    for &v in x {
        sum_x2 += v * v;
    }
    let sigma2 = sum_x2 / x.len() as f32;
    let (_, bb) = weighted_block(ty);
    let five = matches!(ty, GgmlType::Q5_0 | GgmlType::Q5_1);
    for (ib, (xb, yb)) in x.chunks_exact(32).zip(y.chunks_exact_mut(bb)).enumerate() {
        let q = &qw[32 * ib..32 * ib + 32];
        let mut weight = [0f32; 32];
        for j in 0..32 {
            weight[j] = q[j] * (sigma2 + xb[j] * xb[j]).sqrt();
        }
        let mut l = [0u8; 32];
        let qs_at;
        match ty {
            GgmlType::Q4_0 | GgmlType::Q5_0 => {
                let mut li = [0i8; 32];
                let d = make_qx_quants_w(if five { 16 } else { 8 }, xb, &mut li, Some(&weight));
                yb[..2].copy_from_slice(&fp16(d));
                for (a, &b) in l.iter_mut().zip(&li) {
                    *a = b as u8;
                }
                qs_at = if five { 6 } else { 2 };
            }
            _ => {
                let mut laux = [0u8; 32];
                let nmax = if five { 31 } else { 15 };
                let (d, min) =
                    make_qkx3_quants(nmax, xb, &weight, &mut l, &mut laux, (-0.9, 0.05, 36));
                yb[..2].copy_from_slice(&fp16(d));
                yb[2..4].copy_from_slice(&fp16(-min));
                qs_at = if five { 8 } else { 4 };
            }
        }
        let mut qh = 0u32;
        for j in 0..16 {
            let (x0, x1) = (l[j], l[j + 16]);
            yb[qs_at + j] = (x0 & 0x0f) | ((x1 & 0x0f) << 4);
            qh |= (((x0 & 0x10) >> 4) as u32) << j;
            qh |= (((x1 & 0x10) >> 4) as u32) << (j + 16);
        }
        if five {
            yb[qs_at - 4..qs_at].copy_from_slice(&qh.to_le_bytes());
        }
    }
}

/// The weights of one k-quant group: `qw · sqrt(σ² + x²)`.
fn group_weights(x: &[f32], qw: &[f32], sigma2: f32, w: &mut [f32]) {
    for ((w, &q), &v) in w.iter_mut().zip(qw).zip(x) {
        *w = q * (sigma2 + v * v).sqrt();
    }
}

/// `make_qp_quants`: a positive scale for levels 0 ..= nmax of the non-negative `x`,
/// searched over 9 trial scales, then refined a value at a time by `qw`-weighted error.
pub(super) fn make_qp_quants(nmax: i32, x: &[f32], l: &mut [u8], qw: &[f32]) -> f32 {
    let n = x.len();
    let mut max = 0f32;
    for &v in x {
        max = if max > v { max } else { v };
    }
    if max < GROUP_MAX_EPS {
        l[..n].fill(0);
        return 0.0;
    }
    let mut iscale = nmax as f32 / max;
    for i in 0..n {
        l[i] = nearest_int(iscale * x[i]) as u8;
    }
    let scale = 1.0 / iscale;
    let mut best_mse = 0f32;
    for i in 0..n {
        let diff = x[i] - scale * l[i] as f32;
        best_mse += qw[i] * diff * diff;
    }
    for is in -4..=4 {
        if is == 0 {
            continue;
        }
        let iscale_is = (0.1 * is as f32 + nmax as f32) / max;
        let scale_is = 1.0 / iscale_is;
        let mut mse = 0f32;
        for i in 0..n {
            let q = nearest_int(iscale_is * x[i]).min(nmax);
            let diff = x[i] - scale_is * q as f32;
            mse += qw[i] * diff * diff;
        }
        if mse < best_mse {
            best_mse = mse;
            iscale = iscale_is;
        }
    }
    // ggml keeps the levels as uint8_t: a negative one (IQ2_XXS's parity flip makes one
    // value negative) is stored wrapped and the refinement reads it back so.
    let (mut sumlx, mut suml2) = (0f32, 0f32);
    for i in 0..n {
        let q = nearest_int(iscale * x[i]).min(nmax);
        l[i] = q as u8;
        let w = qw[i];
        sumlx += w * x[i] * q as f32;
        suml2 += w * q as f32 * q as f32;
    }
    for _ in 0..5 {
        let mut n_changed = 0;
        for i in 0..n {
            let w = qw[i];
            let lf = l[i] as f32;
            let mut slx = sumlx - w * x[i] * lf;
            let mut sl2 = suml2 - w * lf * lf;
            if slx > 0.0 && sl2 > 0.0 {
                let new_l = nearest_int(x[i] * sl2 / slx).min(nmax);
                if new_l != l[i] as i32 {
                    slx += w * x[i] * new_l as f32;
                    sl2 += w * new_l as f32 * new_l as f32;
                    if slx * slx * suml2 > sumlx * sumlx * sl2 {
                        l[i] = new_l as u8;
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed += 1;
                    }
                }
            }
        }
        if n_changed == 0 {
            break;
        }
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

/// `quantize_row_q2_K_impl` of one super-block (its `requantize` pass included).
fn q2_k_block_weighted(x: &[f32], qw: &[f32], y: &mut [u8]) {
    let mut l = [0u8; QK_K];
    let mut laux = [0u8; 16];
    let (mut mins, mut scales, mut sw) = ([0f32; 16], [0f32; 16], [0f32; 16]);
    let mut sumx2 = 0f32;
    for &v in x {
        sumx2 += v * v;
    }
    let sigma2 = sumx2 / QK_K as f32;
    let mut weight = [0f32; 16];
    for j in 0..16 {
        let xs = &x[16 * j..16 * j + 16];
        group_weights(xs, &qw[16 * j..16 * j + 16], sigma2, &mut weight);
        for &w in &weight {
            sw[j] += w;
        }
        let (s, m) = make_qkx3_quants(
            3,
            xs,
            &weight,
            &mut l[16 * j..16 * j + 16],
            &mut laux,
            (-0.9, 0.05, 36),
        );
        scales[j] = s;
        mins[j] = m;
    }
    let (mut ls, mut lm) = ([0u8; 16], [0u8; 16]);
    let dm = make_qp_quants(15, &scales, &mut ls, &sw);
    let mm = make_qp_quants(15, &mins, &mut lm, &sw);
    let (sc, rest) = y.split_at_mut(16);
    let (qs, dd) = rest.split_at_mut(64);
    dd[..2].copy_from_slice(&fp16(dm));
    dd[2..4].copy_from_slice(&fp16(mm));
    for j in 0..16 {
        sc[j] = ls[j] | (lm[j] << 4);
    }
    q2_k_finish(x, (fp16_back(dm), fp16_back(mm)), &mut l, qs, sc);
}

/// `quantize_row_q3_K_impl` of one super-block with importance weights.
fn q3_k_block_weighted(x: &[f32], qw: &[f32], y: &mut [u8]) {
    let mut l = [0i8; QK_K];
    let (mut scales, mut sw) = ([0f32; 16], [0f32; 16]);
    let mut sumx2 = 0f32;
    for &v in x {
        sumx2 += v * v;
    }
    let sigma2 = 2.0 * sumx2 / QK_K as f32;
    let mut weight = [0f32; 16];
    for j in 0..16 {
        let xs = &x[16 * j..16 * j + 16];
        group_weights(xs, &qw[16 * j..16 * j + 16], sigma2, &mut weight);
        let mut sumw = 0f32;
        for &w in &weight {
            sumw += w;
        }
        sw[j] = sumw;
        scales[j] = make_qx_quants_w(4, xs, &mut l[16 * j..16 * j + 16], Some(&weight));
    }
    let (hmask, rest) = y.split_at_mut(32);
    let (qs, rest) = rest.split_at_mut(64);
    let (sc, dd) = rest.split_at_mut(12);
    sc.fill(0);
    let mut lsc = [0i8; 16];
    let d_block = make_qx_quants_w(32, &scales, &mut lsc, Some(&sw));
    for j in 0..16 {
        let mut v = lsc[j] as i32;
        if j < 8 {
            sc[j] = (v & 0xf) as u8;
        } else {
            sc[j - 8] |= ((v & 0xf) << 4) as u8;
        }
        v >>= 4;
        sc[j % 4 + 8] |= (v << (2 * (j / 4))) as u8;
    }
    dd.copy_from_slice(&fp16(d_block));
    q3_k_finish(x, fp16_back(d_block), &mut l, hmask, qs, sc);
}

/// `quantize_row_q4_K_impl` / `quantize_row_q5_K_impl` of one super-block with
/// importance weights.
fn q45_k_block_weighted(x: &[f32], qw: &[f32], y: &mut [u8], five: bool) {
    let nmax = if five { 31 } else { 15 };
    let mut l = [0u8; QK_K];
    let mut laux = [0u8; 32];
    let (mut mins, mut scales, mut sw) = ([0f32; 8], [0f32; 8], [0f32; 8]);
    let mut sum_x2 = 0f32;
    for &v in x {
        sum_x2 += v * v;
    }
    let sigma2 = 2.0 * sum_x2 / QK_K as f32;
    let mut weights = [0f32; 32];
    for j in 0..8 {
        let xs = &x[32 * j..32 * j + 32];
        group_weights(xs, &qw[32 * j..32 * j + 32], sigma2, &mut weights);
        let mut sumw = 0f32;
        for &w in &weights {
            sumw += w;
        }
        sw[j] = sumw;
        let (s, m) = make_qkx3_quants(
            nmax,
            xs,
            &weights,
            &mut l[32 * j..32 * j + 32],
            &mut laux,
            (-0.9, 0.05, 36),
        );
        scales[j] = s;
        mins[j] = m;
    }
    let (mut ls, mut lm) = ([0u8; 8], [0u8; 8]);
    let d_block = make_qp_quants(63, &scales, &mut ls, &sw);
    let m_block = make_qp_quants(63, &mins, &mut lm, &sw);
    let (head, qs) = y.split_at_mut(if five { 48 } else { 16 });
    let (dd, rest) = head.split_at_mut(4);
    let (sc, qh) = rest.split_at_mut(12);
    for j in 0..8 {
        let (a, b) = if five {
            (ls[j].min(63), lm[j].min(63))
        } else {
            (ls[j], lm[j])
        };
        if j < 4 {
            sc[j] = a;
            sc[j + 4] = b;
        } else {
            sc[j + 4] = (a & 0xf) | ((b & 0xf) << 4);
            sc[j - 4] |= (a >> 4) << 6;
            sc[j] |= (b >> 4) << 6;
        }
    }
    dd[..2].copy_from_slice(&fp16(d_block));
    dd[2..4].copy_from_slice(&fp16(m_block));
    let (d16, dmin16) = (fp16_back(d_block), fp16_back(m_block));
    q45_k_finish(x, (d16, dmin16), nmax, &mut l, (sc, qs, qh), five);
}

/// `quantize_row_q6_K_impl` of one super-block with importance weights (`make_qx_quants`
/// takes them as they are).
fn q6_k_block_weighted(x: &[f32], qw: &[f32], y: &mut [u8]) {
    q6_k_block_with(x, Some(qw), y);
}

/// The level search of IQ4_NL and IQ4_XS: `quantize_row_iq4_nl_impl`
/// with blocks of 32 in super-blocks of 32 (IQ4_NL: an f16 scale a block) or 256
/// (IQ4_XS: an f16 super-scale and a 6-bit scale a block), weights `qw · sqrt(σ² + x²)`
/// or x², 7 trial scales either side of `max / −127`.
fn iq4_row(ty: GgmlType, x: &[f32], qw: Option<&[f32]>, y: &mut [u8]) {
    use super::mxfp4::{best_index_int8, KVALUES_IQ4NL as VALUES};
    let (sbs, bb) = weighted_block(ty);
    let ntry = 7i32;
    for (ibl, (xs, yb)) in x.chunks_exact(sbs).zip(y.chunks_exact_mut(bb)).enumerate() {
        let mut sigma2 = 0f32;
        for &v in xs {
            sigma2 += v * v;
        }
        sigma2 *= 2.0 / sbs as f32;
        let mut l = [0u8; QK_K];
        let mut scales = [0f32; 8];
        let (mut max_scale, mut amax_scale) = (0f32, 0f32);
        let nb = sbs / 32;
        for ib in 0..nb {
            let xb = &xs[32 * ib..32 * ib + 32];
            let mut weight = [0f32; 32];
            match qw {
                Some(q) => group_weights(
                    xb,
                    &q[ibl * sbs + 32 * ib..ibl * sbs + 32 * ib + 32],
                    sigma2,
                    &mut weight,
                ),
                None => {
                    for (w, &v) in weight.iter_mut().zip(xb) {
                        *w = v * v;
                    }
                }
            }
            let (mut amax, mut max) = (0f32, 0f32);
            for &v in xb {
                if v.abs() > amax {
                    amax = v.abs();
                    max = v;
                }
            }
            if amax < GROUP_MAX_EPS {
                scales[ib] = 0.0;
                continue;
            }
            let lb = &mut l[32 * ib..32 * ib + 32];
            let mut d = -max / VALUES[0] as f32;
            let mut id = 1.0 / d;
            let (mut sumqx, mut sumq2) = (0f32, 0f32);
            for j in 0..32 {
                let li = best_index_int8(&VALUES, id * xb[j]);
                lb[j] = li;
                let q = VALUES[li as usize] as f32;
                sumqx += weight[j] * q * xb[j];
                sumq2 += weight[j] * q * q;
            }
            d = if sumq2 > 0.0 { sumqx / sumq2 } else { 0.0 };
            let mut best = d * sumqx;
            for itry in -ntry..=ntry {
                id = (itry as f32 + VALUES[0] as f32) / max;
                sumqx = 0.0;
                sumq2 = 0.0;
                for j in 0..32 {
                    let q = VALUES[best_index_int8(&VALUES, id * xb[j]) as usize] as f32;
                    sumqx += weight[j] * q * xb[j];
                    sumq2 += weight[j] * q * q;
                }
                if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
                    d = sumqx / sumq2;
                    best = d * sumqx;
                }
            }
            scales[ib] = d;
            if d.abs() > amax_scale {
                amax_scale = d.abs();
                max_scale = d;
            }
        }
        let q4_at = if nb > 1 {
            let d = -max_scale / 32.0;
            yb[..2].copy_from_slice(&fp16(d));
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            let (mut sh, mut sl) = (0u16, [0u8; 4]);
            for ib in 0..nb {
                let li = nearest_int(id * scales[ib]).clamp(-32, 31);
                let dl = d * li as f32;
                let idl = if dl != 0.0 { 1.0 / dl } else { 0.0 };
                for j in 0..32 {
                    l[32 * ib + j] = best_index_int8(&VALUES, idl * xs[32 * ib + j]);
                }
                let lu = (li + 32) as u8;
                if ib % 2 == 0 {
                    sl[ib / 2] = lu & 0xf;
                } else {
                    sl[ib / 2] |= (lu & 0xf) << 4;
                }
                sh |= ((lu >> 4) as u16) << (2 * (ib % 8));
            }
            yb[2..4].copy_from_slice(&sh.to_le_bytes());
            yb[4..8].copy_from_slice(&sl);
            8
        } else {
            yb[..2].copy_from_slice(&fp16(scales[0]));
            let id = if scales[0] != 0.0 {
                1.0 / scales[0]
            } else {
                0.0
            };
            for j in 0..32 {
                l[j] = best_index_int8(&VALUES, id * xs[j]);
            }
            2
        };
        for i in 0..nb {
            for j in 0..16 {
                yb[q4_at + 16 * i + j] = l[32 * i + j] | (l[32 * i + 16 + j] << 4);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_int_rounds_ties_to_even() {
        assert_eq!(
            [0.5f32, 1.5, 2.5, -0.5, -1.5, 2.49, 7.0].map(nearest_int),
            [0, 2, 2, 0, -2, 2, 7]
        );
    }
}
