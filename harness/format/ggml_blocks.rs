//! ggml's block types that neither candle nor a kernel of quantbench's own holds, read
//! and run by dequantization: the i-quants (IQ4_XS, IQ3_XXS, IQ3_S, IQ2_XXS, IQ2_XS,
//! IQ2_S, IQ1_S, IQ1_M), the ternary types (TQ1_0, TQ2_0), NVFP4, Q1_0 and Q2_0.
//!
//! Each type's block layout is ggml-common.h's `block_*` struct, and its dequantization
//! is ggml-quants.c's `dequantize_row_*`, ported operation for operation (the same float
//! operations in the same order, so the same bits: tests/quantizers.rs holds every type to
//! ggml's own `to_float` on blocks ggml's quantizer made). The grids the i-quants index
//! are ggml's tables (`ggml_tables.rs`, generated from ggml-common.h).
//!
//! A matrix of these types ([`BlockMatrix`]) keeps ggml's bytes as the file stores them
//! (so an export writes them back unchanged and the record counts them exactly). IQ4_XS
//! and IQ3_S multiply as ggml's CPU backend does, to the bit (`kernel/iq4_xs.rs`,
//! `kernel/iq3_s.rs`); the rest
//! through their dequantized rows: the portable product. For those ggml's CPU backend
//! instead rounds the activations to q8_K (or q8_0) blocks and sums in integers, so a
//! product here can differ from llama.cpp's in the last bits.

use std::sync::Arc;

use anyhow::Result;
use half::f16;

use super::ggml_tables::{
    IQ1S_GRID, IQ2S_GRID, IQ2XS_GRID, IQ2XXS_GRID, IQ3S_GRID, IQ3XXS_GRID, KSIGNS_IQ2XS,
};
use super::mxfp4::{KVALUES, KVALUES_IQ4NL};
use super::{GgmlType, Part, StoredMatrix};

/// The weights of a k-quant super-block.
pub const QK_K: usize = 256;
/// `IQ1S_DELTA` / `IQ1M_DELTA`.
const IQ1_DELTA: f32 = 0.125;

/// (weights a block, bytes a block) of the types this file reads (ggml-common.h's
/// `QK*` and `sizeof(block_*)`); `None` for any other type.
pub fn block(ty: GgmlType) -> Option<(usize, usize)> {
    Some(match ty {
        GgmlType::Iq4Xs => (QK_K, 2 + 2 + QK_K / 64 + QK_K / 2),
        GgmlType::Iq3Xxs => (QK_K, 2 + 3 * QK_K / 8),
        GgmlType::Iq3S => (QK_K, 2 + 13 * QK_K / 32 + QK_K / 64),
        GgmlType::Iq2Xxs => (QK_K, 2 + QK_K / 4),
        GgmlType::Iq2Xs => (QK_K, 2 + QK_K / 4 + QK_K / 32),
        GgmlType::Iq2S => (QK_K, 2 + QK_K / 4 + QK_K / 16),
        GgmlType::Iq1S => (QK_K, 2 + QK_K / 8 + QK_K / 16),
        GgmlType::Iq1M => (QK_K, QK_K / 8 + QK_K / 16 + QK_K / 32),
        GgmlType::Tq1_0 => (QK_K, 2 + QK_K / 64 + (QK_K - 4 * QK_K / 64) / 5),
        GgmlType::Tq2_0 => (QK_K, 2 + QK_K / 4),
        GgmlType::Nvfp4 => (64, 4 + 32),
        GgmlType::Q1_0 => (128, 2 + 16),
        GgmlType::Q2_0 => (64, 2 + 16),
        _ => return None,
    })
}

/// The type's lower-case name as a static string (a [`StoredMatrix::format`]).
fn format_name(ty: GgmlType) -> &'static str {
    match ty {
        GgmlType::Iq4Xs => "iq4_xs",
        GgmlType::Iq3Xxs => "iq3_xxs",
        GgmlType::Iq3S => "iq3_s",
        GgmlType::Iq2Xxs => "iq2_xxs",
        GgmlType::Iq2Xs => "iq2_xs",
        GgmlType::Iq2S => "iq2_s",
        GgmlType::Iq1S => "iq1_s",
        GgmlType::Iq1M => "iq1_m",
        GgmlType::Tq1_0 => "tq1_0",
        GgmlType::Tq2_0 => "tq2_0",
        GgmlType::Nvfp4 => "nvfp4",
        GgmlType::Q1_0 => "q1_0",
        GgmlType::Q2_0 => "q2_0",
        _ => "ggml",
    }
}

fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// `kmask_iq2xs[j]`: whether sign bit `j` of `signs` is set, as the factor ggml applies.
#[inline(always)]
fn sign(signs: u8, j: usize) -> f32 {
    if signs & (1 << j) != 0 {
        -1.0
    } else {
        1.0
    }
}

/// `ggml_ue4m3_to_fp32` (ggml-impl.h): an unsigned E4M3 scale, halved (the kvalues are
/// the E2M1 values doubled).
pub fn ue4m3_to_fp32(x: u8) -> f32 {
    if x == 0 || x == 0x7f {
        return 0.0;
    }
    let exp = ((x >> 3) & 0xf) as i32;
    let man = (x & 0x7) as f32;
    let raw = if exp == 0 {
        man * 2f32.powi(-9)
    } else {
        (1.0 + man / 8.0) * 2f32.powi(exp - 7)
    };
    raw * 0.5
}

/// ggml's `dequantize_row_*` of whole blocks of `ty` into `y` (one value a weight).
/// Panics on a type this file does not read (see [`block`]).
pub fn dequantize(ty: GgmlType, x: &[u8], y: &mut [f32]) {
    let (qk, bytes) = block(ty).unwrap_or_else(|| panic!("{ty} is not read here"));
    assert_eq!(
        x.len() / bytes * qk,
        y.len(),
        "{ty}: blocks and values differ"
    );
    for (b, y) in x.chunks_exact(bytes).zip(y.chunks_exact_mut(qk)) {
        match ty {
            GgmlType::Iq4Xs => iq4_xs(b, y),
            GgmlType::Iq3Xxs => iq3_xxs(b, y),
            GgmlType::Iq3S => iq3_s(b, y),
            GgmlType::Iq2Xxs => iq2_xxs(b, y),
            GgmlType::Iq2Xs => iq2_xs(b, y),
            GgmlType::Iq2S => iq2_s(b, y),
            GgmlType::Iq1S => iq1_s(b, y),
            GgmlType::Iq1M => iq1_m(b, y),
            GgmlType::Tq1_0 => tq1_0(b, y),
            GgmlType::Tq2_0 => tq2_0(b, y),
            GgmlType::Nvfp4 => nvfp4(b, y),
            GgmlType::Q1_0 => q1_0(b, y),
            GgmlType::Q2_0 => q2_0(b, y),
            _ => unreachable!(),
        }
    }
}

/// `block_iq4_xs`: d, scales_h (u16), scales_l[4], qs[128]; a 6-bit scale (minus 32) a
/// block of 32, codes into `kvalues_iq4nl`.
fn iq4_xs(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let scales_h = u16_at(b, 2);
    for ib in 0..QK_K / 32 {
        let ls = ((b[4 + ib / 2] >> (4 * (ib % 2))) & 0xf) as i32
            | ((((scales_h >> (2 * ib)) & 3) as i32) << 4);
        let dl = d * (ls - 32) as f32;
        let qs = &b[8 + 16 * ib..8 + 16 * ib + 16];
        let yb = &mut y[32 * ib..32 * ib + 32];
        for j in 0..16 {
            yb[j] = dl * KVALUES_IQ4NL[(qs[j] & 0xf) as usize] as f32;
            yb[j + 16] = dl * KVALUES_IQ4NL[(qs[j] >> 4) as usize] as f32;
        }
    }
}

/// `block_iq2_xxs`: d, then per 32 weights two u32: four grid indices (bytes of the
/// first), and in the second four 7-bit sign indices and a 4-bit scale.
fn iq2_xxs(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    for ib32 in 0..QK_K / 32 {
        let at = 2 + 8 * ib32;
        let aux1 = u32_at(b, at + 4);
        let db = d * (0.5 + (aux1 >> 28) as f32) * 0.25;
        for l in 0..4 {
            let grid = IQ2XXS_GRID[b[at + l] as usize].to_le_bytes();
            let signs = KSIGNS_IQ2XS[((aux1 >> (7 * l)) & 127) as usize];
            let yb = &mut y[32 * ib32 + 8 * l..32 * ib32 + 8 * l + 8];
            for j in 0..8 {
                yb[j] = db * grid[j] as f32 * sign(signs, j);
            }
        }
    }
}

/// `block_iq2_xs`: d, qs[32] (u16: a 9-bit grid index and a 7-bit sign index), scales[8]
/// (two 4-bit scales a block of 32).
fn iq2_xs(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    for ib32 in 0..QK_K / 32 {
        let sc = b[2 + 64 + ib32];
        let db = [
            d * (0.5 + (sc & 0xf) as f32) * 0.25,
            d * (0.5 + (sc >> 4) as f32) * 0.25,
        ];
        for l in 0..4 {
            let q = u16_at(b, 2 + 2 * (4 * ib32 + l));
            let grid = IQ2XS_GRID[(q & 511) as usize].to_le_bytes();
            let signs = KSIGNS_IQ2XS[(q >> 9) as usize];
            let yb = &mut y[32 * ib32 + 8 * l..32 * ib32 + 8 * l + 8];
            for j in 0..8 {
                yb[j] = db[l / 2] * grid[j] as f32 * sign(signs, j);
            }
        }
    }
}

/// `block_iq2_s`: d, qs[64] (32 grid indices' low bytes, then 32 sign bytes), qh[8] (the
/// indices' top two bits), scales[8].
fn iq2_s(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let (qs, qh, scales) = (&b[2..66], &b[66..74], &b[74..82]);
    for ib32 in 0..QK_K / 32 {
        let db = [
            d * (0.5 + (scales[ib32] & 0xf) as f32) * 0.25,
            d * (0.5 + (scales[ib32] >> 4) as f32) * 0.25,
        ];
        for l in 0..4 {
            let dl = db[l / 2];
            let idx = qs[4 * ib32 + l] as usize | (((qh[ib32] as usize) << (8 - 2 * l)) & 0x300);
            let grid = IQ2S_GRID[idx].to_le_bytes();
            let signs = qs[32 + 4 * ib32 + l];
            let yb = &mut y[32 * ib32 + 8 * l..32 * ib32 + 8 * l + 8];
            for j in 0..8 {
                yb[j] = dl * grid[j] as f32 * sign(signs, j);
            }
        }
    }
}

/// `block_iq3_xxs`: d, qs[96]: 64 grid indices (4 weights each), then per 32 weights a
/// u32 of four 7-bit sign indices and a 4-bit scale.
fn iq3_xxs(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let qs = &b[2..66];
    for ib32 in 0..QK_K / 32 {
        let aux = u32_at(b, 66 + 4 * ib32);
        let db = d * (0.5 + (aux >> 28) as f32) * 0.5;
        for l in 0..4 {
            let signs = KSIGNS_IQ2XS[((aux >> (7 * l)) & 127) as usize];
            let g1 = IQ3XXS_GRID[qs[8 * ib32 + 2 * l] as usize].to_le_bytes();
            let g2 = IQ3XXS_GRID[qs[8 * ib32 + 2 * l + 1] as usize].to_le_bytes();
            let yb = &mut y[32 * ib32 + 8 * l..32 * ib32 + 8 * l + 8];
            for j in 0..4 {
                yb[j] = db * g1[j] as f32 * sign(signs, j);
                yb[j + 4] = db * g2[j] as f32 * sign(signs, j + 4);
            }
        }
    }
}

/// `block_iq3_s`: d, qs[64] (grid indices' low bytes), qh[8] (their ninth bits), signs[32],
/// scales[4] (two 4-bit odd scales a block of 64).
fn iq3_s(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let (qs, qh, signs, scales) = (&b[2..66], &b[66..74], &b[74..106], &b[106..110]);
    for ib32 in 0..QK_K / 32 {
        let sc = scales[ib32 / 2];
        let db = d * (1 + 2 * if ib32 % 2 == 0 { sc & 0xf } else { sc >> 4 } as i32) as f32;
        let h = qh[ib32] as usize;
        for l in 0..4 {
            let i1 = qs[8 * ib32 + 2 * l] as usize | ((h << (8 - 2 * l)) & 256);
            let i2 = qs[8 * ib32 + 2 * l + 1] as usize | ((h << (7 - 2 * l)) & 256);
            let (g1, g2) = (IQ3S_GRID[i1].to_le_bytes(), IQ3S_GRID[i2].to_le_bytes());
            let s = signs[4 * ib32 + l];
            let yb = &mut y[32 * ib32 + 8 * l..32 * ib32 + 8 * l + 8];
            for j in 0..4 {
                yb[j] = db * g1[j] as f32 * sign(s, j);
                yb[j + 4] = db * g2[j] as f32 * sign(s, j + 4);
            }
        }
    }
}

/// `block_iq1_s`: d, qs[32] (grid indices' low bytes), qh[8] (u16: three high bits an
/// index, a 3-bit scale and the delta's sign).
fn iq1_s(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    for ib in 0..QK_K / 32 {
        let qh = u16_at(b, 34 + 2 * ib);
        let dl = d * (2 * ((qh >> 12) & 7) + 1) as f32;
        let delta = if qh & 0x8000 != 0 {
            -IQ1_DELTA
        } else {
            IQ1_DELTA
        };
        for l in 0..4 {
            let idx = b[2 + 4 * ib + l] as usize | ((((qh >> (3 * l)) & 7) as usize) << 8);
            let grid = IQ1S_GRID[idx].to_le_bytes();
            let yb = &mut y[32 * ib + 8 * l..32 * ib + 8 * l + 8];
            for j in 0..8 {
                yb[j] = dl * (grid[j] as i8 as f32 + delta);
            }
        }
    }
}

/// `block_iq1_m`: qs[32], qh[16] (3 high index bits and a delta sign per 8 weights),
/// scales[8] (as four u16: 3-bit scales, and the f16 super-scale in their top nibbles).
fn iq1_m(b: &[u8], y: &mut [f32]) {
    let sc = [u16_at(b, 48), u16_at(b, 50), u16_at(b, 52), u16_at(b, 54)];
    let bits = (sc[0] >> 12) | ((sc[1] >> 8) & 0x00f0) | ((sc[2] >> 4) & 0x0f00) | (sc[3] & 0xf000);
    let d = f16::from_bits(bits).to_f32();
    let delta = |set: bool| if set { -IQ1_DELTA } else { IQ1_DELTA };
    for ib in 0..QK_K / 32 {
        let s = sc[ib / 2] as i32;
        let dl1 = d * (2 * ((s >> (6 * (ib % 2))) & 0x7) + 1) as f32;
        let dl2 = d * (2 * ((s >> (6 * (ib % 2) + 3)) & 0x7) + 1) as f32;
        let qs = &b[4 * ib..4 * ib + 4];
        let (h0, h1) = (b[32 + 2 * ib] as usize, b[32 + 2 * ib + 1] as usize);
        let idx = [
            qs[0] as usize | ((h0 << 8) & 0x700),
            qs[1] as usize | ((h0 << 4) & 0x700),
            qs[2] as usize | ((h1 << 8) & 0x700),
            qs[3] as usize | ((h1 << 4) & 0x700),
        ];
        let deltas = [
            delta(h0 & 0x08 != 0),
            delta(h0 & 0x80 != 0),
            delta(h1 & 0x08 != 0),
            delta(h1 & 0x80 != 0),
        ];
        for l in 0..4 {
            let dl = if l < 2 { dl1 } else { dl2 };
            let grid = IQ1S_GRID[idx[l]].to_le_bytes();
            let yb = &mut y[32 * ib + 8 * l..32 * ib + 8 * l + 8];
            for j in 0..8 {
                yb[j] = dl * (grid[j] as i8 as f32 + deltas[l]);
            }
        }
    }
}

/// `block_tq1_0`: qs[48] (five ternary digits a byte, as a fraction of 243), qh[4] (four
/// a byte), d last.
fn tq1_0(b: &[u8], y: &mut [f32]) {
    const POW3: [u8; 6] = [1, 3, 9, 27, 81, 243];
    let d = f16_at(b, 52);
    let trit = |byte: u8, n: usize| -> f32 {
        let q = byte.wrapping_mul(POW3[n]);
        let xi = ((q as u16 * 3) >> 8) as i16;
        (xi - 1) as f32 * d
    };
    let mut o = 0;
    for (j, width) in [(0usize, 32usize), (32, 16)] {
        for n in 0..5 {
            for m in 0..width {
                y[o] = trit(b[j + m], n);
                o += 1;
            }
        }
    }
    for n in 0..4 {
        for j in 0..4 {
            y[o] = trit(b[48 + j], n);
            o += 1;
        }
    }
}

/// `block_tq2_0`: qs[64] (four 2-bit values a byte, each minus 1), d last.
fn tq2_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 64);
    let mut o = 0;
    for j in (0..64).step_by(32) {
        for l in 0..4 {
            for m in 0..32 {
                let q = ((b[j + m] >> (2 * l)) & 3) as i8;
                y[o] = (q - 1) as f32 * d;
                o += 1;
            }
        }
    }
}

/// `block_nvfp4`: four UE4M3 scales (one a 16 weights), 32 bytes of E2M1 codes.
fn nvfp4(b: &[u8], y: &mut [f32]) {
    for s in 0..4 {
        let d = ue4m3_to_fp32(b[s]);
        let yb = &mut y[16 * s..16 * s + 16];
        for j in 0..8 {
            let q = b[4 + 8 * s + j];
            yb[j] = KVALUES[(q & 0xf) as usize] as f32 * d;
            yb[j + 8] = KVALUES[(q >> 4) as usize] as f32 * d;
        }
    }
}

/// `block_q1_0`: d, then one sign bit a weight (set: +d, clear: −d).
fn q1_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    for (j, v) in y.iter_mut().enumerate() {
        *v = if (b[2 + j / 8] >> (j % 8)) & 1 != 0 {
            d
        } else {
            -d
        };
    }
}

/// `block_q2_0`: d, then 2 bits a weight (0..3 standing for −1, 0, 1, 2).
fn q2_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    for (j, v) in y.iter_mut().enumerate() {
        let q = (b[2 + j / 4] >> ((j % 4) * 2)) & 3;
        *v = (q as i32 - 1) as f32 * d;
    }
}

/// ggml's quantizers of the simple types here, as llama-quantize runs them
/// (`quantize_row_tq1_0_ref`, `_tq2_0_ref`, `_nvfp4_ref`, `_q1_0_ref`, `_q2_0_ref`: each
/// ignores an importance matrix): `x` of whole blocks into ggml's bytes; `None` for the
/// i-quants, whose grid searches are `ggml_iquants.rs`'s.
pub fn quantize(ty: GgmlType, x: &[f32]) -> Option<Vec<u8>> {
    let (qk, bb) = block(ty)?;
    if !matches!(
        ty,
        GgmlType::Tq1_0 | GgmlType::Tq2_0 | GgmlType::Nvfp4 | GgmlType::Q1_0 | GgmlType::Q2_0
    ) {
        return None;
    }
    assert!(x.len().is_multiple_of(qk), "{} weights", x.len());
    let mut out = vec![0u8; x.len() / qk * bb];
    for (xb, yb) in x.chunks_exact(qk).zip(out.chunks_exact_mut(bb)) {
        match ty {
            GgmlType::Tq1_0 => quantize_tq1_0(xb, yb),
            GgmlType::Tq2_0 => quantize_tq2_0(xb, yb),
            GgmlType::Nvfp4 => quantize_nvfp4(xb, yb),
            GgmlType::Q1_0 => quantize_q1_0(xb, yb),
            _ => quantize_q2_0(xb, yb),
        }
    }
    Some(out)
}

/// The block's largest magnitude (`fabsf`, the first of equals kept).
fn amax(x: &[f32]) -> f32 {
    x.iter()
        .fold(0f32, |m, v| if v.abs() > m { v.abs() } else { m })
}

/// A ternary digit of `v` at inverse scale `id`: `lroundf(v · id) + 1` (0, 1, 2).
fn trit(v: f32, id: f32) -> u8 {
    ((v * id).round() as i32 + 1) as u8
}

/// `quantize_row_tq1_0_ref`: five digits a byte as the fraction `q / 243`, rounded up to
/// a byte (`(q · 256 + 242) / 243`), the last 16 weights four a byte (times 3 first).
fn quantize_tq1_0(x: &[f32], y: &mut [u8]) {
    let d = amax(x);
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    y[52..54].copy_from_slice(&f16::from_f32(d).to_le_bytes());
    let pack = |q: u16| (q * 256).div_ceil(243) as u8;
    let mut at = 0;
    for (j, width) in [(0usize, 32usize), (32, 16)] {
        for m in 0..width {
            let mut q = 0u16;
            for n in 0..5 {
                q = q * 3 + trit(x[at + m + n * width], id) as u16;
            }
            y[j + m] = pack(q);
        }
        at += 5 * width;
    }
    for j in 0..4 {
        let mut q = 0u16;
        for m in 0..4 {
            q = q * 3 + trit(x[at + j + m * 4], id) as u16;
        }
        y[48 + j] = pack(q * 3);
    }
}

/// `quantize_row_tq2_0_ref`: four 2-bit digits a byte.
fn quantize_tq2_0(x: &[f32], y: &mut [u8]) {
    let d = amax(x);
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    y[64..66].copy_from_slice(&f16::from_f32(d).to_le_bytes());
    for j in (0..64).step_by(32) {
        for m in 0..32 {
            let mut q = 0u8;
            for n in 0..4 {
                q += (trit(x[4 * j + m + n * 32], id) & 3) << (2 * n);
            }
            y[j + m] = q;
        }
    }
}

/// `ggml_fp32_to_ue4m3` (ggml-impl.h): the unsigned E4M3 scale nearest `x` (its
/// mantissa rounded on the first dropped bit), 448 at most.
pub fn fp32_to_ue4m3(x: f32) -> u8 {
    // Zero, negatives and NaN alike.
    if x.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
        return 0;
    }
    let x = if x > 448.0 { 448.0 } else { x };
    let bits = x.to_bits();
    let fp32_exp = ((bits >> 23) & 0xff) as i32 - 127;
    let fp32_man = ((bits >> 20) & 0x7) as i32;
    let mut exp = fp32_exp + 7;
    if exp <= 0 {
        let man = ((x * 512.0 + 0.5) as i32).min(7);
        return if man < 1 { 0 } else { man as u8 };
    }
    if exp >= 15 {
        return 0x7e;
    }
    let mut man = fp32_man + ((bits >> 19) & 1) as i32;
    if man > 7 {
        man = 0;
        exp += 1;
        if exp >= 15 {
            return 0x7e;
        }
    }
    ((exp << 3) | man) as u8
}

/// `quantize_row_nvfp4_ref`: per 16 weights a UE4M3 scale `amax / 6`, each weight the
/// nearest E2M1 code at that scale (`best_index_mxfp4`).
fn quantize_nvfp4(x: &[f32], y: &mut [u8]) {
    use super::mxfp4::best_index;
    for s in 0..4 {
        let xb = &x[16 * s..16 * s + 16];
        let ue = fp32_to_ue4m3(amax(xb) / 6.0);
        y[s] = ue;
        let d = ue4m3_to_fp32(ue);
        for j in 0..8 {
            y[4 + 8 * s + j] = best_index(xb[j], d) | (best_index(xb[8 + j], d) << 4);
        }
    }
}

/// `quantize_row_q1_0_ref`: `d` the mean magnitude, a set bit for each weight ≥ 0.
fn quantize_q1_0(x: &[f32], y: &mut [u8]) {
    let mut sum_abs = 0f32;
    for v in x {
        sum_abs += v.abs();
    }
    let d = sum_abs / 128.0;
    y[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
    y[2..].fill(0);
    for (j, &v) in x.iter().enumerate() {
        if v >= 0.0 {
            y[2 + j / 8] |= 1 << (j % 8);
        }
    }
}

/// `quantize_row_q2_0_ref`: `d` the largest magnitude, each weight `roundf(w / d)`
/// clamped to −1 .. 2, plus 1.
fn quantize_q2_0(x: &[f32], y: &mut [u8]) {
    let d = amax(x);
    let id = if d > 0.0 { 1.0 / d } else { 0.0 };
    y[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
    y[2..].fill(0);
    for (j, &w) in x.iter().enumerate() {
        let q = ((w * id).round() as i32 + 1).clamp(0, 3) as u8;
        y[2 + j / 4] |= q << ((j % 4) * 2);
    }
}

/// One of the types here as a format (TQ1_0, TQ2_0, Q1_0, Q2_0 and the grid i-quants
/// IQ3_S, IQ3_XXS, IQ2_S, IQ2_XS, IQ2_XXS, IQ1_M, IQ1_S): what the own engine stores a
/// matrix in when one of llama-quantize's mixes puts it there (they are not precisions
/// of their own a scenario names: the names are the mixes').
#[derive(Debug)]
pub struct TypeFormat {
    ty: GgmlType,
    name: &'static str,
    /// llama-quantize's `tensor_type_fallback` (Q4_0 for TQ1_0, TQ2_0 and Q2_0; IQ4_NL
    /// for the i-quants; none for Q1_0, which it refuses).
    fallback: Option<crate::precision::Precision>,
}

const IQ4_NL: Option<crate::precision::Precision> =
    Some(crate::precision::Precision::Type(GgmlType::Iq4Nl));
const Q4_0: Option<crate::precision::Precision> = Some(crate::precision::Precision::Q4_0);

static TYPE_FORMATS: [TypeFormat; 11] = [
    TypeFormat {
        ty: GgmlType::Tq1_0,
        name: "tq1_0",
        fallback: Q4_0,
    },
    TypeFormat {
        ty: GgmlType::Tq2_0,
        name: "tq2_0",
        fallback: Q4_0,
    },
    TypeFormat {
        ty: GgmlType::Q1_0,
        name: "q1_0",
        fallback: None,
    },
    TypeFormat {
        ty: GgmlType::Q2_0,
        name: "q2_0",
        fallback: Q4_0,
    },
    TypeFormat {
        ty: GgmlType::Iq3S,
        name: "iq3_s",
        fallback: IQ4_NL,
    },
    TypeFormat {
        ty: GgmlType::Iq3Xxs,
        name: "iq3_xxs",
        fallback: IQ4_NL,
    },
    TypeFormat {
        ty: GgmlType::Iq2S,
        name: "iq2_s",
        fallback: IQ4_NL,
    },
    TypeFormat {
        ty: GgmlType::Iq2Xs,
        name: "iq2_xs",
        fallback: IQ4_NL,
    },
    TypeFormat {
        ty: GgmlType::Iq2Xxs,
        name: "iq2_xxs",
        fallback: IQ4_NL,
    },
    TypeFormat {
        ty: GgmlType::Iq1M,
        name: "iq1_m",
        fallback: IQ4_NL,
    },
    TypeFormat {
        ty: GgmlType::Iq1S,
        name: "iq1_s",
        fallback: IQ4_NL,
    },
];

/// The format of a type [`TypeFormat`] covers.
pub fn type_format(ty: GgmlType) -> Option<&'static dyn super::WeightFormat> {
    TYPE_FORMATS
        .iter()
        .find(|f| f.ty == ty)
        .map(|f| f as &dyn super::WeightFormat)
}

/// The `[out, k]` shape and f32 values of a matrix to store in `ty`, a type whose
/// matrices live on the CPU (an error naming it for another device).
pub(super) fn cpu_values(
    ty: GgmlType,
    t: &candle_core::Tensor,
    device: &candle_core::Device,
) -> Result<(usize, usize, Vec<f32>)> {
    if !device.is_cpu() {
        anyhow::bail!("{ty} matrices live on the CPU (quantbench has no GPU kernel for them)");
    }
    let (out, k) = t.dims2()?;
    Ok((out, k, t.flatten_all()?.to_vec1::<f32>()?))
}

impl TypeFormat {
    /// The matrix quantized by ggml's quantizer of the type (the grid i-quants' on
    /// slices of rows on every core), with the importance values `imatrix` where given.
    fn quantized(
        &self,
        t: &candle_core::Tensor,
        device: &candle_core::Device,
        imatrix: Option<&[f32]>,
    ) -> Result<crate::model::nn::Matrix> {
        use super::ggml_iquants;
        let (out, k, w) = cpu_values(self.ty, t, device)?;
        let bytes = if ggml_iquants::handles(self.ty) {
            // ggml's grid searches assert on a weight they cannot place (its search finds
            // no finite distance); refuse the matrix instead of stopping the run.
            if let Some(i) = w.iter().position(|v| !v.is_finite()) {
                anyhow::bail!(
                    "{} cannot hold row {} of this matrix: its weight {} is {} (ggml's {} quantizer needs finite weights)",
                    self.ty,
                    i / k,
                    i % k,
                    w[i],
                    self.ty
                );
            }
            if imatrix.is_none() && ggml_iquants::requires_importance(self.ty) {
                crate::bad_input!(
                    "{} needs an importance matrix: ggml's quantizer refuses to make one without; give --imatrix FILE (llama-imatrix's, or `quantbench imatrix`'s)",
                    self.ty
                );
            }
            crate::model::source::weights::par_rows(&w, out, k, |x| {
                ggml_iquants::quantize(self.ty, x, k, imatrix)
            })
        } else {
            quantize(self.ty, &w).expect("a type with a quantizer")
        };
        Ok(crate::model::nn::Matrix::Custom(matrix(
            self.ty, &bytes, out, k,
        )?))
    }
}

impl super::WeightFormat for TypeFormat {
    fn name(&self) -> &'static str {
        self.name
    }
    fn aliases(&self) -> &'static [&'static str] {
        &[]
    }
    fn family(&self) -> super::Family {
        super::Family::Ggml
    }
    fn block_size(&self) -> usize {
        block(self.ty).expect("a block type").0
    }
    fn block_bytes(&self) -> usize {
        block(self.ty).expect("a block type").1
    }
    fn fallback(&self) -> Option<crate::precision::Precision> {
        self.fallback
    }
    fn store(
        &self,
        t: &candle_core::Tensor,
        device: &candle_core::Device,
    ) -> Result<crate::model::nn::Matrix> {
        self.quantized(t, device, None)
    }
    /// The grid i-quants use the importance values as ggml's quantizers do; the simple
    /// types ignore them, as ggml's do.
    fn store_weighted(
        &self,
        t: &candle_core::Tensor,
        device: &candle_core::Device,
        imatrix: &[f32],
    ) -> Result<crate::model::nn::Matrix> {
        self.quantized(t, device, Some(imatrix))
    }
    fn ggml_type(&self) -> Option<GgmlType> {
        Some(self.ty)
    }
}

/// A matrix `[out, in]` in one of these types: ggml's bytes, row after row.
#[derive(Debug, Clone)]
pub struct BlockMatrix {
    ty: GgmlType,
    out: usize,
    k: usize,
    bytes: Vec<u8>,
}

impl BlockMatrix {
    /// ggml's bytes of an `[out, k]` matrix of `ty`, as a GGUF file stores them.
    pub fn from_bytes(ty: GgmlType, bytes: &[u8], out: usize, k: usize) -> Result<Self> {
        let Some((qk, bb)) = block(ty) else {
            anyhow::bail!("{ty} is not a type quantbench reads by dequantization");
        };
        if !k.is_multiple_of(qk) || bytes.len() != out * k / qk * bb {
            anyhow::bail!(
                "{} bytes are not a {ty} matrix of {out} rows of {k} (rows of whole {qk}-weight blocks, {bb} bytes each)",
                bytes.len()
            );
        }
        Ok(BlockMatrix {
            ty,
            out,
            k,
            bytes: bytes.to_vec(),
        })
    }

    pub fn ty(&self) -> GgmlType {
        self.ty
    }

    fn row_bytes(&self) -> usize {
        let (qk, bb) = block(self.ty).expect("checked at construction");
        self.k / qk * bb
    }
}

impl StoredMatrix for BlockMatrix {
    fn format(&self) -> &'static str {
        format_name(self.ty)
    }
    fn shape(&self) -> (usize, usize) {
        (self.out, self.k)
    }
    fn parts(&self) -> Vec<Part> {
        vec![Part {
            name: "blocks",
            bytes: self.bytes.len(),
        }]
    }
    fn transformers_bytes(&self) -> usize {
        self.bytes.len()
    }
    fn dequantize_rows(&self, start: usize, out: &mut [f32]) {
        let rb = self.row_bytes();
        let rows = out.len() / self.k;
        dequantize(self.ty, &self.bytes[start * rb..(start + rows) * rb], out);
    }
    /// IQ4_XS and IQ3_S as ggml computes them (`kernel/iq4_xs.rs`, `kernel/iq3_s.rs`);
    /// the rest through the dequantized rows (ggml's values), 64 weight rows at a time.
    fn matmul(&self, x: &[f32], m: usize, bias: Option<&[f32]>, y: &mut [f32]) {
        match self.ty {
            GgmlType::Iq4Xs => {
                crate::kernel::iq4_xs::matmul(&self.bytes, self.out, self.k, x, m, bias, y)
            }
            GgmlType::Iq3S => {
                crate::kernel::iq3_s::matmul(&self.bytes, self.out, self.k, x, m, bias, y)
            }
            _ => super::matmul_by_rows(self, x, m, bias, y),
        }
    }
    fn ggml(&self) -> Option<(GgmlType, &[u8])> {
        Some((self.ty, &self.bytes))
    }
}

/// An `Arc`'d [`BlockMatrix`] for `Matrix::Custom`.
pub fn matrix(ty: GgmlType, bytes: &[u8], out: usize, k: usize) -> Result<Arc<dyn StoredMatrix>> {
    Ok(Arc::new(BlockMatrix::from_bytes(ty, bytes, out, k)?))
}

#[cfg(test)]
mod tests {
    /// A grid i-quant refuses a matrix with a non-finite weight (ggml would abort),
    /// naming the row; a finite one is stored.
    #[test]
    fn grid_types_refuse_non_finite_weights() {
        let dev = candle_core::Device::Cpu;
        let f = type_format(GgmlType::Iq3S).unwrap();
        let mut v = vec![0.01f32; 2 * 256];
        let ok = candle_core::Tensor::from_vec(v.clone(), (2, 256), &dev).unwrap();
        assert!(f.store(&ok, &dev).is_ok());
        v[256 + 7] = f32::NAN;
        let bad = candle_core::Tensor::from_vec(v, (2, 256), &dev).unwrap();
        let e = format!("{:#}", f.store(&bad, &dev).err().unwrap());
        assert!(e.contains("row 1") && e.contains("NaN"), "{e}");
    }

    use super::*;

    #[test]
    fn block_sizes_are_ggml_commons() {
        // static_asserts of ggml-common.h, as numbers.
        let want = [
            (GgmlType::Iq4Xs, 136),
            (GgmlType::Iq3Xxs, 98),
            (GgmlType::Iq3S, 110),
            (GgmlType::Iq2Xxs, 66),
            (GgmlType::Iq2Xs, 74),
            (GgmlType::Iq2S, 82),
            (GgmlType::Iq1S, 50),
            (GgmlType::Iq1M, 56),
            (GgmlType::Tq1_0, 54),
            (GgmlType::Tq2_0, 66),
            (GgmlType::Nvfp4, 36),
            (GgmlType::Q1_0, 18),
            (GgmlType::Q2_0, 18),
        ];
        for (ty, bytes) in want {
            assert_eq!(block(ty).unwrap().1, bytes, "{ty}");
        }
        assert_eq!(block(GgmlType::Q4K), None);
    }

    #[test]
    fn ue4m3_scales_are_ggmls() {
        assert_eq!(ue4m3_to_fp32(0), 0.0);
        assert_eq!(ue4m3_to_fp32(0x7f), 0.0);
        assert_eq!(ue4m3_to_fp32(7 << 3), 0.5); // 1.0, halved
        assert_eq!(ue4m3_to_fp32(1), 2f32.powi(-10));
        assert_eq!(ue4m3_to_fp32(0x7e), 448.0 * 0.5);
    }

    #[test]
    fn q1_0_and_q2_0_blocks_read_as_their_bits() {
        let mut b = [0u8; 18];
        b[..2].copy_from_slice(&f16::from_f32(0.5).to_le_bytes());
        b[2] = 0b0000_0101;
        let mut y = [0f32; 128];
        dequantize(GgmlType::Q1_0, &b, &mut y);
        assert_eq!(&y[..4], &[0.5, -0.5, 0.5, -0.5]);
        b[2] = 0b1110_0100; // codes 0, 1, 2, 3
        let mut y = [0f32; 64];
        dequantize(GgmlType::Q2_0, &b, &mut y);
        assert_eq!(&y[..4], &[-0.5, 0.0, 0.5, 1.0]);
    }
}
