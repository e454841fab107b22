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
const GROUP_MAX_EPS: f32 = 1e-15;

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
fn nearest_int(fval: f32) -> i32 {
    let val = fval + 12_582_912.0;
    let i = val.to_bits() as i32;
    (i & 0x007f_ffff) - 0x0040_0000
}

fn fp16(v: f32) -> [u8; 2] {
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
    if max == min {
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

/// `make_qx_quants` with `rmse_type` 1 (weights x²) and no importance weights: a signed
/// scale for levels −nmax .. nmax − 1 (stored + nmax in `l`), searched over 18 trial
/// scales around `−nmax / max`.
fn make_qx_quants(nmax: i32, x: &[f32], l: &mut [i8]) -> f32 {
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
        let w = x[i] * x[i];
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
        for &v in x {
            let q = level(iscale, v) as f32;
            let w = v * v;
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
    let d16 = fp16_back(d);
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
    let (d16, dmin16) = (fp16_back(d), fp16_back(dmin));
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
    let mut l = [0i8; QK_K];
    let mut scales = [0f32; 16];
    let (mut max_scale, mut max_abs_scale) = (0f32, 0f32);
    for ib in 0..16 {
        let s = make_qx_quants(32, &x[16 * ib..16 * ib + 16], &mut l[16 * ib..16 * ib + 16]);
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
