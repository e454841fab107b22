//! ggml's grid-search quantizers of the i-quants, ported from ggml-quants.c: IQ3_XXS and
//! IQ3_S (`quantize_row_iq3_xxs_impl`, `quantize_row_iq3_s_impl`, on the D4 lattice
//! grids of `iq3xs_init_impl`), IQ2_XXS, IQ2_XS and IQ2_S (`quantize_row_iq2_*_impl`, on
//! the E8 lattice grids of `iq2xs_init_impl`), IQ1_S and IQ1_M (`quantize_row_iq1_*_impl`:
//! the exhaustive three-level split, then the nearest grid point).
//!
//! Each type quantizes groups of 4 (IQ3) or 8 (IQ2, IQ1) weights to one point of a grid
//! (256 … 2048 points) of small odd levels. A group whose rounded levels are not a grid
//! point takes the best of its nearest grid points, listed once per type as ggml's init
//! functions list them ([`Lattice`]: every packed point, the grid points at the `nwant`
//! smallest distances, in ggml's order of distance, then index). The arithmetic is
//! ggml's, operation for operation in f32 (no fused multiply-adds, as ggml-base is
//! built), with its fudge factors and its quirks kept where they decide bytes: IQ3_S's
//! all-zero groups do not advance its pointers into the grid indices and signs; IQ1's
//! sort of a block's weights is glibc's stable `qsort` (equal values keep their order).
//!
//! ggml asserts an importance matrix for IQ2_XXS, IQ2_XS and IQ1_S; the others quantize
//! without one too. tests/quantizers.rs holds every type to ggml's `ggml_quantize_chunk`
//! bytes, byte for byte.

use std::sync::OnceLock;

use super::ggml_quants::{fp16, make_qp_quants, nearest_int, GROUP_MAX_EPS, QK_K};
use super::ggml_tables as t;
use super::GgmlType;

const GROUP_MAX_EPS_IQ3_XXS: f32 = 1e-8;
const GROUP_MAX_EPS_IQ2_S: f32 = 1e-8;
const GROUP_MAX_EPS_IQ1_M: f32 = 1e-7;
const GROUP_MAX_EPS_IQ1_S: f32 = 1e-12;
const IQ1S_DELTA: f32 = 0.125;
const IQ1M_DELTA: f32 = 0.125;

/// The types this file quantizes.
pub fn handles(ty: GgmlType) -> bool {
    matches!(
        ty,
        GgmlType::Iq3Xxs
            | GgmlType::Iq3S
            | GgmlType::Iq2Xxs
            | GgmlType::Iq2Xs
            | GgmlType::Iq2S
            | GgmlType::Iq1S
            | GgmlType::Iq1M
    )
}

/// Whether ggml's quantizer of the type asserts an importance matrix
/// (`ggml_quantize_requires_imatrix`).
pub fn requires_importance(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::Iq2Xxs | GgmlType::Iq2Xs | GgmlType::Iq1S)
}

/// Bytes of one 256-weight super-block of a type [`handles`] names.
fn block_bytes(ty: GgmlType) -> usize {
    match ty {
        GgmlType::Iq3Xxs => 98,
        GgmlType::Iq3S => 110,
        GgmlType::Iq2Xxs => 66,
        GgmlType::Iq2Xs => 74,
        GgmlType::Iq2S => 82,
        GgmlType::Iq1S => 50,
        GgmlType::Iq1M => 56,
        other => unreachable!("{other} is not a grid i-quant"),
    }
}

/// `x` (`rows × n_per_row`, rows of whole 256-weight super-blocks) quantized to `ty` as
/// ggml's `quantize_<type>` does, with the importance matrix `qw` (one value a column)
/// when given. Panics where ggml asserts: a type of [`requires_importance`] without one.
pub fn quantize(ty: GgmlType, x: &[f32], n_per_row: usize, qw: Option<&[f32]>) -> Vec<u8> {
    assert!(handles(ty), "{ty} is not a grid i-quant");
    assert!(n_per_row.is_multiple_of(QK_K) && x.len().is_multiple_of(n_per_row));
    if let Some(w) = qw {
        assert_eq!(w.len(), n_per_row, "one importance value a column");
    }
    assert!(
        qw.is_some() || !requires_importance(ty),
        "{ty} needs an importance matrix"
    );
    let bb = block_bytes(ty);
    let mut out = vec![0u8; x.len() / QK_K * bb];
    let row_bytes = n_per_row / QK_K * bb;
    for (xr, yr) in x
        .chunks_exact(n_per_row)
        .zip(out.chunks_exact_mut(row_bytes))
    {
        for (ib, (xb, yb)) in xr
            .chunks_exact(QK_K)
            .zip(yr.chunks_exact_mut(bb))
            .enumerate()
        {
            let w = qw.map(|w| &w[ib * QK_K..(ib + 1) * QK_K]);
            match ty {
                GgmlType::Iq3Xxs => iq3_xxs_block(xb, w, yb),
                GgmlType::Iq3S => iq3_s_block(xb, w, yb),
                GgmlType::Iq2Xxs => iq2_xxs_block(xb, w.expect("checked"), yb),
                GgmlType::Iq2Xs => iq2_xs_block(xb, w.expect("checked"), yb),
                GgmlType::Iq2S => iq2_s_block(xb, w, yb),
                GgmlType::Iq1S => iq1_s_block(xb, w.expect("checked"), yb),
                GgmlType::Iq1M => iq1_m_block(xb, w, yb),
                _ => unreachable!(),
            }
        }
    }
    out
}

/// A quantizer's grid: its points (levels `2l + 1` a coordinate), the map from every
/// packed point (`bits` a coordinate) to its grid index, and for a packed point off the
/// grid the list of its nearest grid points.
struct Lattice {
    dims: usize,
    bits: usize,
    grid: Vec<[i8; 8]>,
    /// ≥ 0: the grid index; < 0: `-(offset + 1)` into `neighbours`, where the count
    /// comes first, then the grid indices.
    map: Vec<i32>,
    neighbours: Vec<u16>,
}

impl Lattice {
    /// `iq2xs_init_impl` / `iq3xs_init_impl`: `kgrid` packed, `dims` coordinates of
    /// `bits` bits, `kmap_size` packed points, neighbours at the `nwant` smallest
    /// distances.
    fn build(kgrid: &[u16], dims: usize, bits: usize, kmap_size: usize, nwant: usize) -> Self {
        let mask = (1usize << bits) - 1;
        let pos_of = |packed: usize| {
            let mut p = [0i8; 8];
            for (k, v) in p.iter_mut().take(dims).enumerate() {
                *v = (2 * ((packed >> (bits * k)) & mask) + 1) as i8;
            }
            p
        };
        let grid: Vec<[i8; 8]> = kgrid.iter().map(|&g| pos_of(g as usize)).collect();
        let mut map = vec![-1i32; kmap_size];
        for (i, g) in grid.iter().enumerate() {
            let mut index = 0usize;
            for (k, &v) in g.iter().take(dims).enumerate() {
                index |= (((v - 1) / 2) as usize) << (bits * k);
            }
            map[index] = i as i32;
        }
        let max_d2 = dims * (2 * mask) * (2 * mask);
        let mut neighbours = Vec::new();
        let mut d2 = vec![0usize; grid.len()];
        let mut present = vec![false; max_d2 + 1];
        for (i, m) in map.iter_mut().enumerate() {
            if *m >= 0 {
                continue;
            }
            let pos = pos_of(i);
            present.fill(false);
            for (d, g) in d2.iter_mut().zip(&grid) {
                *d = (0..dims)
                    .map(|k| {
                        let e = (g[k] - pos[k]) as i32;
                        (e * e) as usize
                    })
                    .sum();
                present[*d] = true;
            }
            // qsort by (distance, index), cut after the nwant-th distinct distance.
            let wanted: Vec<usize> = (0..=max_d2).filter(|&v| present[v]).take(nwant).collect();
            *m = -(neighbours.len() as i32 + 1);
            let start = neighbours.len();
            neighbours.push(0);
            for &v in &wanted {
                neighbours.extend((0..grid.len()).filter(|&j| d2[j] == v).map(|j| j as u16));
            }
            neighbours[start] = (neighbours.len() - start - 1) as u16;
        }
        Lattice {
            dims,
            bits,
            grid,
            map,
            neighbours,
        }
    }

    /// The packed point of levels `l` (one a coordinate).
    fn packed(&self, l: &[i8]) -> usize {
        (0..self.dims).fold(0, |u, i| u | ((l[i] as usize) << (self.bits * i)))
    }

    fn on_grid(&self, u: usize) -> Option<usize> {
        usize::try_from(self.map[u]).ok()
    }

    /// The grid points nearest the packed point `u` (off the grid).
    fn near(&self, u: usize) -> &[u16] {
        let at = (-self.map[u] - 1) as usize;
        let n = self.neighbours[at] as usize;
        &self.neighbours[at + 1..at + 1 + n]
    }

    /// The grid index of levels `l` on the grid (ggml aborts on a point off it).
    fn index_of(&self, l: &[i8]) -> usize {
        let u = self.packed(l);
        self.on_grid(u)
            .unwrap_or_else(|| panic!("point {u} ({l:?}) not on the grid"))
    }

    /// `iq2_find_best_neighbour` / `iq3_find_best_neighbour`: of the neighbours of `u`,
    /// the one nearest `xval / scale` by weighted squared error; its levels into `l`.
    fn best_neighbour(&self, u: usize, xval: &[f32], w: &[f32], scale: f32, l: &mut [i8]) -> usize {
        let mut best_d2 = f32::MAX;
        let mut best = None;
        for &j in self.near(u) {
            let pg = &self.grid[j as usize];
            let mut d2 = 0f32;
            for i in 0..self.dims {
                let diff = scale * pg[i] as f32 - xval[i];
                d2 += w[i] * diff * diff;
            }
            if d2 < best_d2 {
                best_d2 = d2;
                best = Some(j as usize);
            }
        }
        let gi = best.expect("a finite distance to a grid point (non-finite weights?)");
        self.levels(gi, l);
        gi
    }

    /// The levels `(p − 1) / 2` of grid point `gi` into `l`.
    fn levels(&self, gi: usize, l: &mut [i8]) {
        for (v, &p) in l.iter_mut().zip(&self.grid[gi][..self.dims]) {
            *v = (p - 1) / 2;
        }
    }
}

#[derive(Clone, Copy)]
enum Grid {
    Iq2Xxs,
    Iq2Xs,
    Iq1,
    Iq2S,
    Iq3_256,
    Iq3_512,
}

fn lattice(g: Grid) -> &'static Lattice {
    static L: [OnceLock<Lattice>; 6] = [const { OnceLock::new() }; 6];
    L[g as usize].get_or_init(|| match g {
        Grid::Iq2Xxs => Lattice::build(&t::KGRID_2BIT_256, 8, 2, 43692, 2),
        Grid::Iq2Xs => Lattice::build(&t::KGRID_2BIT_512, 8, 2, 43692, 2),
        Grid::Iq1 => Lattice::build(&t::KGRID_1BIT_2048, 8, 2, 43692, 3),
        Grid::Iq2S => Lattice::build(&t::KGRID_2BIT_1024, 8, 2, 43692, 1),
        Grid::Iq3_256 => Lattice::build(&t::KGRID_3BIT_256, 4, 3, 4096, 2),
        Grid::Iq3_512 => Lattice::build(&t::KGRID_3BIT_512, 4, 3, 4096, 3),
    })
}

/// ggml's `MAX(a, b)`: `a > b ? a : b`.
fn max(a: f32, b: f32) -> f32 {
    if a > b {
        a
    } else {
        b
    }
}

/// ggml's running `MAX` over `x` from its first value.
fn largest(x: &[f32]) -> f32 {
    x[1..].iter().fold(x[0], |m, &v| max(m, v))
}

/// ggml's running `MAX` of `fabsf` over `x` from its first value.
fn largest_abs(x: &[f32]) -> f32 {
    x[1..].iter().fold(x[0].abs(), |m, &v| max(m, v.abs()))
}

/// The square roots of a group's weights (the neighbour searches' weights).
fn roots(weight: &[f32], waux: &mut [f32]) {
    for (a, &w) in waux.iter_mut().zip(weight) {
        *a = w.sqrt();
    }
}

fn sum_squares(x: &[f32]) -> f32 {
    x.iter().fold(0f32, |s, &v| s + v * v)
}

/// The weights of a group: `qw · sqrt(σ² + x²)` with an importance matrix, else
/// `without(x)`; and their square roots.
fn group_weights(
    xb: &[f32],
    qw: Option<&[f32]>,
    sigma2: f32,
    without: impl Fn(f32) -> f32,
    weight: &mut [f32],
) {
    for (i, w) in weight.iter_mut().enumerate() {
        *w = match qw {
            Some(q) => q[i] * (sigma2 + xb[i] * xb[i]).sqrt(),
            None => without(xb[i]),
        };
    }
}

/// The absolute values of groups of 8 and their sign bits; with `even`, the signs of a
/// group made even by flipping the least important weight (IQ3_XXS, IQ2_XXS, IQ2_XS:
/// 7 sign bits stored).
fn signs_of(xb: &[f32], weight: &[f32], even: bool, xval: &mut [f32], signs: &mut [u8]) {
    for (k, s_out) in signs.iter_mut().enumerate() {
        let mut nflip = 0;
        let mut s = 0u8;
        for i in 0..8 {
            let v = xb[8 * k + i];
            if v >= 0.0 {
                xval[8 * k + i] = v;
            } else {
                xval[8 * k + i] = -v;
                nflip += 1;
                s |= 1 << i;
            }
        }
        if even && nflip % 2 == 1 {
            let mut imin = 0;
            let mut min = weight[8 * k] * xb[8 * k] * xb[8 * k];
            for i in 1..8 {
                let ax = weight[8 * k + i] * xb[8 * k + i] * xb[8 * k + i];
                if ax < min {
                    min = ax;
                    imin = i;
                }
            }
            xval[8 * k + imin] = -xval[8 * k + imin];
            s ^= 1 << imin;
        }
        *s_out = if even { s & 127 } else { s };
    }
}

/// Σ w·x·q and Σ w·q² for levels `l` (`q = 2l + 1`).
fn sums(weight: &[f32], xval: &[f32], l: &[i8]) -> (f32, f32) {
    let (mut sumqx, mut sumq2) = (0f32, 0f32);
    for i in 0..l.len() {
        let w = weight[i];
        let q = (2 * l[i] as i32 + 1) as f32;
        sumqx += w * xval[i] * q;
        sumq2 += w * q * q;
    }
    (sumqx, sumq2)
}

/// Rounded levels of `xval · id` clamped to 0 ..= kmax − 1.
fn round_levels(id: f32, xval: &[f32], kmax: i32, l: &mut [i8]) {
    for (v, &x) in l.iter_mut().zip(xval) {
        *v = nearest_int(0.5 * (id * x - 1.0)).clamp(0, kmax - 1) as i8;
    }
}

/// The trial-scale search every IQ2/IQ3 quantizer runs: for `is` in `steps`, the levels
/// of `xval` at `id = (2·kmax − 1 + is·step) / top` (off-grid groups moved to their best
/// neighbour), keeping the levels of the best Σwxq² / Σwq². Returns the scale (`scale`
/// unchanged when no trial beats 0) and whether each group was on the grid.
#[allow(clippy::too_many_arguments)]
fn search(
    lat: &Lattice,
    steps: std::ops::RangeInclusive<i32>,
    step: f32,
    top: f32,
    kmax: i32,
    (xval, weight, waux): (&[f32], &[f32], &[f32]),
    mut scale: f32,
    l: &mut [i8],
    on_grid: &mut [bool],
) -> f32 {
    let n = xval.len();
    let d = lat.dims;
    let mut best = 0f32;
    let mut laux = [0i8; 32];
    let mut aux = [false; 8];
    for is in steps {
        let id = ((2 * kmax - 1) as f32 + is as f32 * step) / top;
        let this_scale = 1.0 / id;
        for (k, on) in aux.iter_mut().enumerate().take(n / d) {
            let g = k * d..(k + 1) * d;
            round_levels(id, &xval[g.clone()], kmax, &mut laux[g.clone()]);
            let u = lat.packed(&laux[g.clone()]);
            *on = lat.on_grid(u).is_some();
            if !*on {
                lat.best_neighbour(
                    u,
                    &xval[g.clone()],
                    &waux[g.clone()],
                    this_scale,
                    &mut laux[g],
                );
            }
        }
        let (sumqx, sumq2) = sums(weight, xval, &laux[..n]);
        if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
            scale = sumqx / sumq2;
            best = scale * sumqx;
            l[..n].copy_from_slice(&laux[..n]);
            on_grid[..n / d].copy_from_slice(&aux[..n / d]);
        }
    }
    scale
}

/// The levels of the groups `which` chooses re-rounded at `scale` (off-grid ones to their
/// best neighbour), and the scale refitted: the step after [`search`].
fn refit(
    lat: &Lattice,
    kmax: i32,
    (xval, weight, waux): (&[f32], &[f32], &[f32]),
    scale: f32,
    l: &mut [i8],
    which: impl Fn(usize) -> bool,
) -> f32 {
    let d = lat.dims;
    let id = 1.0 / scale;
    for k in (0..xval.len() / d).filter(|&k| which(k)) {
        let g = k * d..(k + 1) * d;
        round_levels(id, &xval[g.clone()], kmax, &mut l[g.clone()]);
        let u = lat.packed(&l[g.clone()]);
        match lat.on_grid(u) {
            Some(gi) => lat.levels(gi, &mut l[g]),
            None => {
                lat.best_neighbour(u, &xval[g.clone()], &waux[g.clone()], scale, &mut l[g]);
            }
        }
    }
    let (sumqx, sumq2) = sums(weight, xval, &l[..xval.len()]);
    if sumq2 > 0.0 {
        sumqx / sumq2
    } else {
        scale
    }
}

/// The 4-bit scale of a group: `nearest_int(0.5·(id·scale − 1))` in 0 ..= top.
fn scale_bits(id: f32, scale: f32, top: i32) -> u8 {
    nearest_int(0.5 * (id * scale - 1.0)).clamp(0, top) as u8
}

/// `quantize_row_iq3_xxs_impl(256, ...)` of one super-block: 98 bytes (d, 64 grid
/// indices, 8 × (4 × 7 sign bits | 4-bit scale)).
fn iq3_xxs_block(x: &[f32], qw: Option<&[f32]>, y: &mut [u8]) {
    const KMAX: i32 = 8;
    let lat = lattice(Grid::Iq3_256);
    y.fill(0);
    let mut scales = [0f32; 8];
    let mut sas = [0u32; 8];
    let mut max_scale = 0f32;
    let sigma2 = 2.0 * sum_squares(x) / QK_K as f32;
    let (mut weight, mut waux, mut xval) = ([0f32; 32], [0f32; 32], [0f32; 32]);
    for ib in 0..8 {
        let xb = &x[32 * ib..32 * ib + 32];
        group_weights(
            xb,
            qw.map(|q| &q[32 * ib..]),
            sigma2,
            |v| v * v,
            &mut weight,
        );
        roots(&weight, &mut waux);
        let mut signs = [0u8; 4];
        signs_of(xb, &weight, true, &mut xval, &mut signs);
        let top = largest(&xval);
        let mut l = [0i8; 32];
        if top < GROUP_MAX_EPS_IQ3_XXS {
            continue;
        }
        let mut on_grid = [true; 8];
        let ws = (&xval[..], &weight[..], &waux[..]);
        let scale0 = top / (2 * KMAX - 1) as f32;
        let mut scale = search(
            lat,
            -15..=15,
            0.2,
            top,
            KMAX,
            ws,
            scale0,
            &mut l,
            &mut on_grid,
        );
        if on_grid.iter().any(|&g| !g) && scale > 0.0 {
            scale = refit(lat, KMAX, ws, scale, &mut l, |k| !on_grid[k]);
        }
        if scale < 0.0 {
            scale = -scale;
            for s in &mut signs {
                *s = !*s & 127;
            }
        }
        for k in 0..8 {
            y[2 + 8 * ib + k] = lat.index_of(&l[4 * k..4 * k + 4]) as u8;
        }
        sas[ib] = signs[0] as u32
            | (signs[1] as u32) << 7
            | (signs[2] as u32) << 14
            | (signs[3] as u32) << 21;
        scales[ib] = scale;
        max_scale = max(max_scale, scale);
    }
    if max_scale == 0.0 {
        y.fill(0);
        return;
    }
    let d = max_scale / 31.0;
    y[..2].copy_from_slice(&fp16(d * 1.0125));
    let id = 1.0 / d;
    for ib in 0..8 {
        sas[ib] |= (scale_bits(id, scales[ib], 15) as u32) << 28;
        y[66 + 4 * ib..70 + 4 * ib].copy_from_slice(&sas[ib].to_le_bytes());
    }
}

/// `quantize_row_iq3_s_impl(32, ...)` of one super-block: 110 bytes (d, 64 grid index
/// low bytes, 8 high-bit bytes, 32 sign bytes, 4 scale bytes).
fn iq3_s_block(x: &[f32], qw: Option<&[f32]>, y: &mut [u8]) {
    const KMAX: i32 = 8;
    let lat = lattice(Grid::Iq3_512);
    y.fill(0);
    let (qs, rest) = y[2..].split_at_mut(64);
    let (qh, rest) = rest.split_at_mut(8);
    let (signs_out, sc) = rest.split_at_mut(32);
    let mut scales = [0f32; 8];
    let mut max_scale = 0f32;
    // ggml advances these only past a group it stores (an all-zero group does not).
    let (mut qs_at, mut signs_at) = (0, 0);
    let sigma2 = 2.0 * sum_squares(x) / QK_K as f32;
    let (mut weight, mut waux, mut xval) = ([0f32; 32], [0f32; 32], [0f32; 32]);
    for ib in 0..8 {
        let xb = &x[32 * ib..32 * ib + 32];
        group_weights(
            xb,
            qw.map(|q| &q[32 * ib..]),
            sigma2,
            |v| v * v,
            &mut weight,
        );
        roots(&weight, &mut waux);
        let mut signs = [0u8; 4];
        signs_of(xb, &weight, false, &mut xval, &mut signs);
        let top = largest(&xval);
        let mut l = [0i8; 32];
        if top == 0.0 {
            continue;
        }
        let mut on_grid = [false; 8];
        let ws = (&xval[..], &weight[..], &waux[..]);
        let scale0 = top / (2 * KMAX - 1) as f32;
        let mut scale = search(
            lat,
            -9..=9,
            0.2,
            top,
            KMAX,
            ws,
            scale0,
            &mut l,
            &mut on_grid,
        );
        if on_grid.iter().any(|&g| !g) && scale > 0.0 {
            scale = refit(lat, KMAX, ws, scale, &mut l, |_| true);
        }
        if scale < 0.0 {
            scale = -scale;
            for s in &mut signs {
                *s = !*s;
            }
        }
        for k in 0..8 {
            let gi = lat.index_of(&l[4 * k..4 * k + 4]);
            qs[qs_at + k] = gi as u8;
            qh[(ib * 8 + k) / 8] |= ((gi >> 8) << ((ib * 8 + k) % 8)) as u8;
        }
        qs_at += 8;
        signs_out[signs_at..signs_at + 4].copy_from_slice(&signs);
        signs_at += 4;
        scales[ib] = scale;
        max_scale = max(max_scale, scale);
    }
    if max_scale == 0.0 {
        return;
    }
    let d = max_scale / 31.0;
    let id = 1.0 / d;
    for ib in (0..8).step_by(2) {
        sc[ib / 2] = scale_bits(id, scales[ib], 15) | scale_bits(id, scales[ib + 1], 15) << 4;
    }
    y[..2].copy_from_slice(&fp16(d * 1.033));
}

/// `quantize_row_iq2_xxs_impl` of one super-block: 66 bytes (d, 8 × (4 grid indices,
/// 4 × 7 sign bits | 4-bit scale)).
fn iq2_xxs_block(x: &[f32], qw: &[f32], y: &mut [u8]) {
    const KMAX: i32 = 3;
    let lat = lattice(Grid::Iq2Xxs);
    y.fill(0);
    let mut q2 = [0u32; 16];
    let mut scales = [0f32; 8];
    let mut max_scale = 0f32;
    let sigma2 = sum_squares(x) / QK_K as f32;
    let (mut weight, mut waux, mut xval) = ([0f32; 32], [0f32; 32], [0f32; 32]);
    for ib in 0..8 {
        let xb = &x[32 * ib..32 * ib + 32];
        group_weights(xb, Some(&qw[32 * ib..]), sigma2, |v| v, &mut weight);
        roots(&weight, &mut waux);
        let mut signs = [0u8; 4];
        signs_of(xb, &weight, true, &mut xval, &mut signs);
        let top = largest(&xval);
        if top < GROUP_MAX_EPS {
            continue;
        }
        let mut lu = [0u8; 32];
        let qp = make_qp_quants(KMAX + 1, &xval, &mut lu, &weight);
        let eff_max = qp * KMAX as f32;
        if eff_max <= 0.0 {
            continue;
        }
        let mut l = lu.map(|v| v as i8);
        let ws = (&xval[..], &weight[..], &waux[..]);
        let mut on_grid = [false; 4];
        let mut scale = search(
            lat,
            -6..=6,
            0.1,
            eff_max,
            KMAX,
            ws,
            qp,
            &mut l,
            &mut on_grid,
        );
        if scale > 0.0 {
            scale = refit(lat, KMAX, ws, scale, &mut l, |_| true);
        }
        if scale < 0.0 {
            scale = -scale;
            for s in &mut signs {
                *s = !*s & 127;
            }
        }
        for k in 0..4 {
            let gi = lat.index_of(&l[8 * k..8 * k + 8]) as u32;
            q2[2 * ib] |= gi << (8 * k);
            q2[2 * ib + 1] |= (signs[k] as u32) << (7 * k);
        }
        scales[ib] = scale;
        max_scale = max(max_scale, scale);
    }
    if max_scale == 0.0 {
        return;
    }
    let d = max_scale / 31.0;
    y[..2].copy_from_slice(&fp16(d));
    let id = 1.0 / d;
    for ib in 0..8 {
        q2[2 * ib + 1] |= (scale_bits(id, scales[ib], 15) as u32) << 28;
    }
    for (i, v) in q2.iter().enumerate() {
        y[2 + 4 * i..6 + 4 * i].copy_from_slice(&v.to_le_bytes());
    }
}

/// One 16-weight group of IQ2_XS / IQ2_S: the trial search from `top / 5`, the off-grid
/// groups refitted; returns the scale and leaves the levels in `l`.
fn iq2_16(lat: &Lattice, ws: (&[f32], &[f32], &[f32]), top: f32, l: &mut [i8]) -> f32 {
    const KMAX: i32 = 3;
    let mut on_grid = [true; 2];
    let scale0 = top / (2 * KMAX - 1) as f32;
    let mut scale = search(lat, -9..=9, 0.1, top, KMAX, ws, scale0, l, &mut on_grid);
    if on_grid.iter().any(|&g| !g) && scale > 0.0 {
        // ggml keeps an on-grid group's rounded levels as they are (the same point).
        scale = refit(lat, KMAX, ws, scale, l, |k| !on_grid[k]);
    }
    scale
}

/// `quantize_row_iq2_xs_impl` of one super-block: 74 bytes (d, 32 × (9-bit grid index |
/// 7 sign bits), 16 4-bit scales).
fn iq2_xs_block(x: &[f32], qw: &[f32], y: &mut [u8]) {
    let lat = lattice(Grid::Iq2Xs);
    y.fill(0);
    let mut q2 = [0u16; 32];
    let mut scales = [0f32; 16];
    let mut max_scale = 0f32;
    let sigma2 = sum_squares(x) / QK_K as f32;
    let (mut weight, mut waux, mut xval) = ([0f32; 16], [0f32; 16], [0f32; 16]);
    for ib in 0..16 {
        let xb = &x[16 * ib..16 * ib + 16];
        group_weights(xb, Some(&qw[16 * ib..]), sigma2, |v| v, &mut weight);
        roots(&weight, &mut waux);
        let mut signs = [0u8; 2];
        signs_of(xb, &weight, true, &mut xval, &mut signs);
        let top = largest(&xval);
        let mut l = [0i8; 16];
        if top < GROUP_MAX_EPS {
            continue;
        }
        let mut scale = iq2_16(lat, (&xval, &weight, &waux), top, &mut l);
        if scale < 0.0 {
            scale = -scale;
            for s in &mut signs {
                *s = !*s & 127;
            }
        }
        for k in 0..2 {
            let gi = lat.index_of(&l[8 * k..8 * k + 8]) as u16;
            q2[2 * ib + k] = gi | (signs[k] as u16) << 9;
        }
        scales[ib] = scale;
        max_scale = max(max_scale, scale);
    }
    if max_scale == 0.0 {
        return;
    }
    let d = max_scale / 31.0;
    y[..2].copy_from_slice(&fp16(d));
    let id = 1.0 / d;
    for ib in 0..16 {
        y[66 + ib / 2] |= scale_bits(id, scales[ib], 15) << (4 * (ib % 2));
    }
    for (i, v) in q2.iter().enumerate() {
        y[2 + 2 * i..4 + 2 * i].copy_from_slice(&v.to_le_bytes());
    }
}

/// `quantize_row_iq2_s_impl` of one super-block: 82 bytes (d, 32 grid index low bytes,
/// 32 sign bytes, 8 bytes of index high bits, 8 scale bytes).
fn iq2_s_block(x: &[f32], qw: Option<&[f32]>, y: &mut [u8]) {
    let lat = lattice(Grid::Iq2S);
    y.fill(0);
    let mut scales = [0f32; 16];
    let mut max_scale = 0f32;
    let sigma2 = 2.0 * sum_squares(x) / QK_K as f32;
    let (mut weight, mut waux, mut xval) = ([0f32; 16], [0f32; 16], [0f32; 16]);
    for ib in 0..16 {
        let xb = &x[16 * ib..16 * ib + 16];
        group_weights(
            xb,
            qw.map(|q| &q[16 * ib..]),
            sigma2,
            |v| 0.25 * sigma2 + v * v,
            &mut weight,
        );
        roots(&weight, &mut waux);
        let mut signs = [0u8; 2];
        signs_of(xb, &weight, false, &mut xval, &mut signs);
        let top = largest(&xval);
        let mut l = [0i8; 16];
        if top < GROUP_MAX_EPS_IQ2_S {
            continue;
        }
        let mut scale = iq2_16(lat, (&xval, &weight, &waux), top, &mut l);
        if scale < 0.0 {
            scale = -scale;
            for s in &mut signs {
                *s = !*s;
            }
        }
        for k in 0..2 {
            let gi = lat.index_of(&l[8 * k..8 * k + 8]);
            let i8 = 2 * ib + k;
            y[2 + i8] = gi as u8;
            y[66 + i8 / 4] |= ((gi >> 8) << (2 * (i8 % 4))) as u8;
            y[2 + 32 + i8] = signs[k];
        }
        scales[ib] = scale;
        max_scale = max(max_scale, scale);
    }
    if max_scale == 0.0 {
        return;
    }
    let d = max_scale / 31.0;
    y[..2].copy_from_slice(&fp16(d * 0.9875));
    let id = 1.0 / d;
    for ib in 0..16 {
        y[74 + ib / 2] |= scale_bits(id, scales[ib], 15) << (4 * (ib % 2));
    }
}

/// The weights of a block in increasing order with their positions: glibc's `qsort`
/// of (value, index) pairs by value, a stable merge sort.
fn sorted(xb: &[f32]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..xb.len()).collect();
    idx.sort_by(|&a, &b| {
        let (l, r) = (xb[a], xb[b]);
        if l < r {
            std::cmp::Ordering::Less
        } else if l > r {
            std::cmp::Ordering::Greater
        } else {
            std::cmp::Ordering::Equal
        }
    });
    idx
}

/// `iq1_find_best_neighbour2`: of the neighbours of `u`, the nearest to `xval / scale`
/// with levels `xg`; its levels into `l`.
fn iq1_neighbour(
    lat: &Lattice,
    u: usize,
    xval: &[f32],
    w: &[f32],
    scale: f32,
    xg: &[f32; 3],
    l: &mut [i8],
) -> usize {
    let mut best_score = f32::MAX;
    let mut best = None;
    for &j in lat.near(u) {
        let pg = &lat.grid[j as usize];
        let mut d2 = 0f32;
        for i in 0..8 {
            let q = xg[((pg[i] - 1) / 2) as usize];
            let diff = scale * q - xval[i];
            d2 += w[i] * diff * diff;
        }
        if d2 < best_score {
            best_score = d2;
            best = Some(j as usize);
        }
    }
    let gi = best.expect("a finite distance to a grid point (non-finite weights?)");
    lat.levels(gi, l);
    gi
}

/// The grid indices of a block's groups of 8 (`xx(k)` the levels of group `k`), off-grid
/// groups to their best neighbour, and the scale refitted when one was off the grid.
fn iq1_indices(
    lat: &Lattice,
    xb: &[f32],
    weight: &[f32],
    mut scale: f32,
    l: &mut [i8],
    xx: impl Fn(usize) -> [f32; 3],
    index: &mut [usize],
) -> f32 {
    let mut all_on_grid = true;
    for (k, ix) in index.iter_mut().enumerate() {
        let g = 8 * k..8 * k + 8;
        let u = lat.packed(&l[g.clone()]);
        *ix = match lat.on_grid(u) {
            Some(gi) => gi,
            None => {
                all_on_grid = false;
                iq1_neighbour(
                    lat,
                    u,
                    &xb[g.clone()],
                    &weight[g.clone()],
                    scale,
                    &xx(k),
                    &mut l[g],
                )
            }
        };
    }
    if !all_on_grid {
        let (mut sumqx, mut sumq2) = (0f32, 0f32);
        for (k, &ix) in index.iter().enumerate() {
            let pg = &lat.grid[ix];
            let xg = xx(k);
            for j in 0..8 {
                let w = weight[8 * k + j];
                let q = xg[((pg[j] - 1) / 2) as usize];
                sumqx += w * q * xb[8 * k + j];
                sumq2 += w * q * q;
            }
        }
        if sumqx > 0.0 && sumq2 > 0.0 {
            scale = sumqx / sumq2;
        }
    }
    scale
}

/// Levels 0 / 1 / 2 of a block's weights split at sorted positions `i1 ≤ i2`.
fn split_levels(idx: &[usize], i1: usize, i2: usize, l: &mut [i8]) {
    for (j, &i) in idx.iter().enumerate() {
        l[i] = if j < i1 {
            0
        } else if j < i2 {
            1
        } else {
            2
        };
    }
}

/// `quantize_row_iq1_s_impl` of one super-block: 50 bytes (d, 32 grid index low bytes,
/// 8 × (4 × 3 index high bits | 3-bit scale | shift sign)).
fn iq1_s_block(x: &[f32], qw: &[f32], y: &mut [u8]) {
    const BS: usize = 32;
    let lat = lattice(Grid::Iq1);
    let x_p = [-1.0 + IQ1S_DELTA, IQ1S_DELTA, 1.0 + IQ1S_DELTA];
    let x_m = [-1.0 - IQ1S_DELTA, -IQ1S_DELTA, 1.0 - IQ1S_DELTA];
    y.fill(0);
    let mut qh = [0u16; 8];
    let (mut scales, mut shifts) = ([0f32; 8], [1i8; 8]);
    let mut max_scale = 0f32;
    let sigma2 = 2.0 * sum_squares(x) / QK_K as f32;
    let mut weight = [0f32; BS];
    for ib in 0..QK_K / BS {
        let xb = &x[BS * ib..BS * (ib + 1)];
        group_weights(xb, Some(&qw[BS * ib..]), sigma2, |v| v, &mut weight);
        let top = largest_abs(xb);
        if top < GROUP_MAX_EPS_IQ1_S {
            continue;
        }
        let idx = sorted(xb);
        let (mut sumx, mut sumw) = ([0f32; BS + 1], [0f32; BS + 1]);
        for (j, &i) in idx.iter().enumerate() {
            sumx[j + 1] = sumx[j] + weight[i] * xb[i];
            sumw[j + 1] = sumw[j] + weight[i];
        }
        let (mut best_score, mut scale) = (-f32::MAX, top);
        let (mut besti1, mut besti2, mut best_shift) = (None, None, 0i8);
        for i1 in 0..=BS {
            for i2 in i1..=BS {
                for (xs, shift) in [(&x_p, 1), (&x_m, -1)] {
                    let sumqx = (sumx[i1] - sumx[0]) * xs[0]
                        + (sumx[i2] - sumx[i1]) * xs[1]
                        + (sumx[BS] - sumx[i2]) * xs[2];
                    let sumq2 = (sumw[i1] - sumw[0]) * xs[0] * xs[0]
                        + (sumw[i2] - sumw[i1]) * xs[1] * xs[1]
                        + (sumw[BS] - sumw[i2]) * xs[2] * xs[2];
                    if sumq2 > 0.0 && sumqx * sumqx > best_score * sumq2 {
                        scale = sumqx / sumq2;
                        best_score = scale * sumqx;
                        (besti1, besti2, best_shift) = (Some(i1), Some(i2), shift);
                    }
                }
            }
        }
        let (Some(i1), Some(i2)) = (besti1, besti2) else {
            continue;
        };
        let mut l = [0i8; BS];
        split_levels(&idx, i1, i2, &mut l);
        if scale < 0.0 {
            for v in &mut l {
                *v = 2 - *v;
            }
            scale = -scale;
            best_shift = -best_shift;
        }
        let xx = if best_shift == 1 { x_p } else { x_m };
        let mut index = [0usize; 4];
        scale = iq1_indices(lat, xb, &weight, scale, &mut l, |_| xx, &mut index);
        for (k, &ix) in index.iter().enumerate() {
            y[2 + 4 * ib + k] = ix as u8;
            qh[ib] |= ((ix >> 8) << (3 * k)) as u16;
        }
        scales[ib] = scale;
        shifts[ib] = best_shift;
        max_scale = max(max_scale, scale);
    }
    if max_scale != 0.0 {
        let d = max_scale / 15.0;
        y[..2].copy_from_slice(&fp16(d * 1.125));
        let id = 1.0 / d;
        for ib in 0..8 {
            let l = scale_bits(id, scales[ib], 7) | if shifts[ib] == -1 { 8 } else { 0 };
            qh[ib] |= (l as u16) << 12;
        }
    }
    for (i, v) in qh.iter().enumerate() {
        y[34 + 2 * i..36 + 2 * i].copy_from_slice(&v.to_le_bytes());
    }
}

/// IQ1_M's best split of a 16-weight block whose halves may each take the levels
/// shifted up or down: (i1, i2, k, scale), k = 2·(first half down) + (second half down).
fn iq1_m_split(
    xb: &[f32],
    weight: &[f32],
    idx: &[usize],
    top: f32,
) -> Option<(usize, usize, usize, f32)> {
    const BS: usize = 16;
    let x_p = [-1.0 + IQ1M_DELTA, IQ1M_DELTA, 1.0 + IQ1M_DELTA];
    let x_m = [-1.0 - IQ1M_DELTA, -IQ1M_DELTA, 1.0 - IQ1M_DELTA];
    let (mut px, mut pw) = ([[0f32; BS + 1]; 2], [[0f32; BS + 1]; 2]);
    for (j, &i) in idx.iter().enumerate() {
        let h = usize::from(i >= BS / 2);
        px[h][j + 1] = px[h][j] + weight[i] * xb[i];
        px[1 - h][j + 1] = px[1 - h][j];
        pw[h][j + 1] = pw[h][j] + weight[i];
        pw[1 - h][j + 1] = pw[1 - h][j];
    }
    let txs = [px[0][BS], px[1][BS]];
    let tws = [pw[0][BS], pw[1][BS]];
    let (p2, m2) = (x_p[2], x_m[2]);
    let cp1 = x_p[0] * x_p[0] - x_p[1] * x_p[1];
    let cp2 = x_p[1] * x_p[1] - x_p[2] * x_p[2];
    let cm1 = x_m[0] * x_m[0] - x_m[1] * x_m[1];
    let cm2 = x_m[1] * x_m[1] - x_m[2] * x_m[2];
    let (mut best_score, mut scale) = (-f32::MAX, top);
    let mut best = None;
    for i1 in 0..=BS {
        for i2 in i1..=BS {
            let (mut qx_p, mut qx_m, mut q2_p, mut q2_m) =
                ([0f32; 2], [0f32; 2], [0f32; 2], [0f32; 2]);
            for h in 0..2 {
                let sx = px[h][i1] + px[h][i2];
                qx_p[h] = txs[h] * p2 - sx;
                qx_m[h] = txs[h] * m2 - sx;
                q2_p[h] = tws[h] * p2 * p2 + pw[h][i1] * cp1 + pw[h][i2] * cp2;
                q2_m[h] = tws[h] * m2 * m2 + pw[h][i1] * cm1 + pw[h][i2] * cm2;
            }
            let sumqx = [
                qx_p[0] + qx_p[1],
                qx_p[0] + qx_m[1],
                qx_m[0] + qx_p[1],
                qx_m[0] + qx_m[1],
            ];
            let sumq2 = [
                q2_p[0] + q2_p[1],
                q2_p[0] + q2_m[1],
                q2_m[0] + q2_p[1],
                q2_m[0] + q2_m[1],
            ];
            for k in 0..4 {
                if sumq2[k] > 0.0 && sumqx[k] * sumqx[k] > best_score * sumq2[k] {
                    scale = sumqx[k] / sumq2[k];
                    best_score = scale * sumqx[k];
                    best = Some((i1, i2, k));
                }
            }
        }
    }
    best.map(|(i1, i2, k)| (i1, i2, k, scale))
}

/// `quantize_row_iq1_m_impl` of one super-block: 56 bytes (32 grid index low bytes,
/// 16 × (2 × 3 index high bits and shift signs), 8 bytes of 3-bit scales with the f16
/// super-block scale spread over their top nibbles).
fn iq1_m_block(x: &[f32], qw: Option<&[f32]>, y: &mut [u8]) {
    const BS: usize = 16;
    let lat = lattice(Grid::Iq1);
    let x_p = [-1.0 + IQ1M_DELTA, IQ1M_DELTA, 1.0 + IQ1M_DELTA];
    let x_m = [-1.0 - IQ1M_DELTA, -IQ1M_DELTA, 1.0 - IQ1M_DELTA];
    let xx_of = |k: usize, shift: usize| {
        let down = if k == 0 { shift >= 2 } else { shift % 2 == 1 };
        if down {
            x_m
        } else {
            x_p
        }
    };
    y.fill(0);
    let (mut scales, mut shifts) = ([0f32; 16], [0usize; 16]);
    let mut max_scale = 0f32;
    let sigma2 = 2.0 * sum_squares(x) / QK_K as f32;
    let mut weight = [0f32; BS];
    for ib in 0..QK_K / BS {
        let xb = &x[BS * ib..BS * (ib + 1)];
        group_weights(
            xb,
            qw.map(|q| &q[BS * ib..]),
            sigma2,
            |v| v * v,
            &mut weight,
        );
        let top = largest_abs(xb);
        if top < GROUP_MAX_EPS_IQ1_M {
            continue;
        }
        let idx = sorted(xb);
        let Some((i1, i2, mut best_k, mut scale)) = iq1_m_split(xb, &weight, &idx, top) else {
            continue;
        };
        let mut l = [0i8; BS];
        split_levels(&idx, i1, i2, &mut l);
        if scale < 0.0 {
            for v in &mut l {
                *v = 2 - *v;
            }
            scale = -scale;
            best_k = 3 - best_k;
        }
        let mut index = [0usize; 2];
        scale = iq1_indices(
            lat,
            xb,
            &weight,
            scale,
            &mut l,
            |k| xx_of(k, best_k),
            &mut index,
        );
        y[2 * ib] = index[0] as u8;
        y[2 * ib + 1] = index[1] as u8;
        y[32 + ib] = ((index[0] >> 8) | ((index[1] >> 8) << 4)) as u8;
        scales[ib] = scale;
        shifts[ib] = best_k;
        max_scale = max(max_scale, scale);
    }
    if max_scale == 0.0 {
        return;
    }
    iq1_m_scales(x, qw, sigma2, (&scales, &shifts), max_scale, y, xx_of);
}

/// IQ1_M's block scales and its super-block scale refitted over the stored points
/// (the end of `quantize_row_iq1_m_impl`).
fn iq1_m_scales(
    x: &[f32],
    qw: Option<&[f32]>,
    sigma2: f32,
    (scales, shifts): (&[f32; 16], &[usize; 16]),
    max_scale: f32,
    y: &mut [u8],
    xx_of: impl Fn(usize, usize) -> [f32; 3],
) {
    const BS: usize = 16;
    const MASKS: [u8; 4] = [0x00, 0x80, 0x08, 0x88];
    let lat = lattice(Grid::Iq1);
    let mut sc = [0u16; 4];
    let mut d = max_scale / 15.0;
    let id = 1.0 / d;
    let (mut sumqx, mut sumq2) = (0f32, 0f32);
    let mut weight = [0f32; BS];
    for ib in 0..QK_K / BS {
        let l = scale_bits(id, scales[ib], 7);
        sc[ib / 4] |= (l as u16) << (3 * (ib % 4));
        y[32 + ib] |= MASKS[shifts[ib]];
        let xb = &x[BS * ib..BS * (ib + 1)];
        group_weights(
            xb,
            qw.map(|q| &q[BS * ib..]),
            sigma2,
            |v| v * v,
            &mut weight,
        );
        for k in 0..2 {
            let xg = xx_of(k, shifts[ib]);
            let gi = y[2 * ib + k] as usize + (((y[32 + ib] as usize) << (8 - 4 * k)) & 0x700);
            let pg = &lat.grid[gi];
            for j in 0..8 {
                let w = weight[8 * k + j];
                let q = xg[((pg[j] - 1) / 2) as usize] * (2 * l as i32 + 1) as f32;
                sumqx += w * q * xb[8 * k + j];
                sumq2 += w * q * q;
            }
        }
    }
    if sumq2 > 0.0 {
        d = sumqx / sumq2;
    }
    let s = u16::from_le_bytes(fp16(d * 1.1125));
    sc[0] |= (s & 0x000f) << 12;
    sc[1] |= (s & 0x00f0) << 8;
    sc[2] |= (s & 0x0f00) << 4;
    sc[3] |= s & 0xf000;
    for (i, v) in sc.iter().enumerate() {
        y[48 + 2 * i..50 + 2 * i].copy_from_slice(&v.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The neighbour lists are ggml's by construction: spot-check the sizes and that each
    /// list holds grid points at no more than `nwant` distinct distances, in order.
    #[test]
    fn lattices_map_every_grid_point_and_list_neighbours_in_distance_order() {
        for (g, n, nwant) in [
            (Grid::Iq3_256, 256, 2),
            (Grid::Iq2S, 1024, 1),
            (Grid::Iq1, 2048, 3),
        ] {
            let lat = lattice(g);
            assert_eq!(lat.grid.len(), n);
            assert_eq!(lat.map.iter().filter(|&&m| m >= 0).count(), n);
            let off = lat.map.iter().position(|&m| m < 0).unwrap();
            let near = lat.near(off);
            assert!(!near.is_empty());
            let mask = (1usize << lat.bits) - 1;
            let d2 = |j: u16| -> i32 {
                (0..lat.dims)
                    .map(|k| {
                        let p = (2 * ((off >> (lat.bits * k)) & mask) + 1) as i32;
                        let e = lat.grid[j as usize][k] as i32 - p;
                        e * e
                    })
                    .sum()
            };
            let ds: Vec<(i32, u16)> = near.iter().map(|&j| (d2(j), j)).collect();
            assert!(ds.windows(2).all(|w| w[0] < w[1]), "{ds:?}");
            let mut distinct: Vec<i32> = ds.iter().map(|d| d.0).collect();
            distinct.dedup();
            assert!(distinct.len() <= nwant);
            // Nothing on the grid is nearer than the list's first distance.
            let nearest = (0..n as u16).map(d2).min().unwrap();
            assert_eq!(ds[0].0, nearest);
        }
    }
}
