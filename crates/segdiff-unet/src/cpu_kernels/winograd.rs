//! Winograd F(2×2, 3×3) for 3×3 stride-1 convolutions (Lavin & Gray 2016): each 2×2 output
//! tile costs 16 multiply-adds per channel pair instead of 36, i.e. 2.25× fewer than im2col.
//!
//! `Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d Bᵀᵀ)] A` per tile, organised as 16 GEMMs (one per point ξ of the
//! 4×4 transformed tile): `M[ξ] (c_out × tiles) = U[ξ] (c_out × c_in) · V[ξ] (c_in × tiles)`.
//! Work is cut into bands of tile rows whose transformed input `V` and product `M` stay in L2;
//! the transforms are additions only (the ½ of G is folded into U) and run over whole rows of
//! tiles so they vectorise.

use gemm::Parallelism;
use rayon::prelude::*;

use super::conv_geometry::ConvGeom;
use super::vector_math::simd_dispatch;
use super::{assume_init, for_each_item, uninit, Element, SendPtr};
use std::mem::MaybeUninit;

/// Points of the transformed 4×4 tile.
const XI: usize = 16;

/// Whether F(2×2, 3×3) is worth it: a 3×3 stride-1 kernel, enough channels that the 16
/// GEMMs (depth c_in) dominate the input and output transforms, and enough tiles that they
/// dominate the weight transform (16·c_out·c_in values, recomputed on every call).
pub(crate) fn applies(g: &ConvGeom) -> bool {
    let tiles = g.batch * g.oh.div_ceil(2) * g.ow.div_ceil(2);
    g.k == 3
        && g.stride == 1
        && g.pad <= 2
        && g.c_in >= MIN_CHANNELS
        && g.c_out >= MIN_CHANNELS
        && tiles >= MIN_TILES
}

const MIN_CHANNELS: usize = 16;
/// At 512 channels and 16² (64 tiles) the weight transform made F(2×2, 3×3) 1.3× slower
/// than im2col; at 64² (1024 tiles) it was 1.35× faster.
const MIN_TILES: usize = 256;

/// Bytes of `V` plus `M` per band, kept within the 2 MiB L2.
const BAND_BYTES: usize = 2 << 20;
/// Fewer tiles per GEMM than this and the per-call packing dominates.
const MIN_BAND_TILES: usize = 64;

/// `U[ξ][co][ci] = (G g Gᵀ)[ξ]` for every kernel `g = w[co][ci]`.
fn transform_weights<T: Element>(w: &[T], c_out: usize, c_in: usize) -> Vec<T> {
    let mut u = vec![T::zero(); XI * c_out * c_in];
    let half = T::from_f64(0.5);
    let plane = c_out * c_in;
    for (pair, g) in w.chunks_exact(9).enumerate() {
        // G g: rows g0, (g0+g1+g2)/2, (g0−g1+g2)/2, g2 (each a row of 3).
        let mut gg = [[T::zero(); 3]; 4];
        for j in 0..3 {
            let (a, b, c) = (g[j], g[3 + j], g[6 + j]);
            gg[0][j] = a;
            gg[1][j] = (a + b + c) * half;
            gg[2][j] = (a - b + c) * half;
            gg[3][j] = c;
        }
        for (i, row) in gg.iter().enumerate() {
            let (a, b, c) = (row[0], row[1], row[2]);
            let out = [a, (a + b + c) * half, (a - b + c) * half, c];
            for (j, v) in out.into_iter().enumerate() {
                u[(4 * i + j) * plane + pair] = v;
            }
        }
    }
    u
}

/// Tile geometry: `th × tw` tiles of 2×2 outputs per image, bands of `rows` tile rows.
///
/// Bands run over the tile rows of the whole batch (global row `n · th + ty`), so a band of
/// a small image spans several images and its 16 GEMMs stay wide: at 8² one image has only
/// 16 tiles, too few for a GEMM to amortise its packing.
#[derive(Debug, Clone, Copy)]
struct Tiles {
    th: usize,
    tw: usize,
    rows: usize,
    bands: usize,
}

impl Tiles {
    fn plan(g: &ConvGeom, elem: usize) -> Self {
        let th = g.oh.div_ceil(2);
        let tw = g.ow.div_ceil(2);
        let per_tile = XI * (g.c_in + g.c_out) * elem;
        let tiles = (BAND_BYTES / per_tile.max(1)).max(MIN_BAND_TILES);
        let all_rows = (g.batch * th).max(1);
        let rows = tiles.div_ceil(tw.max(1)).clamp(1, all_rows);
        Self {
            th,
            tw,
            rows,
            bands: all_rows.div_ceil(rows),
        }
    }

    /// Global tile rows `[r0, r1)` of band `band`.
    fn band(&self, g: &ConvGeom, band: usize) -> (usize, usize) {
        let r0 = band * self.rows;
        (r0, (r0 + self.rows).min(g.batch * self.th))
    }

    /// `(image, tile row within it)` of global tile row `r`.
    fn split(&self, r: usize) -> (usize, usize) {
        (r / self.th, r % self.th)
    }
}

/// `y = conv3×3(x, w) + bias`, stride 1, as [`super::gemm_conv::forward`].
pub(crate) fn forward<T: Element>(x: &[T], w: &[T], bias: Option<&[T]>, g: &ConvGeom) -> Vec<T> {
    let u = transform_weights(w, g.c_out, g.c_in);
    let mut out = uninit::<T>(g.batch * g.c_out * g.out_plane());
    let tiles = Tiles::plan(g, std::mem::size_of::<T>());
    let threads = rayon::current_num_threads().max(1);
    let items: Vec<usize> = (0..tiles.bands).collect();
    let scratch = XI * (g.c_in + g.c_out) * tiles.rows * tiles.tw;
    let out_ptr = SendPtr(out.as_mut_ptr().cast::<T>());
    let run = |band: usize, buf: &mut [T], alone: bool| {
        // Each band alone writes the output rows of its own tile rows.
        band_forward(
            x,
            &u,
            bias,
            g,
            &tiles,
            tiles.band(g, band),
            buf,
            out_ptr,
            alone && threads > 1,
        );
    };
    let parallel = items.len() >= threads && threads > 1;
    for_each_item(&items, parallel, scratch, run);
    // SAFETY: the bands cover every output row, and output_transform writes all of each row.
    unsafe { assume_init(out) }
}

/// One band of global tile rows `[r0, r1)`: input transform of `x` into `V`, 16 GEMMs into
/// `M`, output transform into `dst` (the batch's `[N, c_out, oh, ow]` output).
#[allow(clippy::too_many_arguments)]
fn band_forward<T: Element>(
    x: &[T],
    u: &[T],
    bias: Option<&[T]>,
    g: &ConvGeom,
    tiles: &Tiles,
    (r0, r1): (usize, usize),
    buf: &mut [T],
    dst: SendPtr<T>,
    inner_parallel: bool,
) {
    let nt = (r1 - r0) * tiles.tw;
    let (v, m) = buf.split_at_mut(XI * g.c_in * nt);
    let m = &mut m[..XI * g.c_out * nt];
    let v_ptr = SendPtr(v.as_mut_ptr());
    // SAFETY (both transforms): each call writes only the V rows / output planes of its own
    // channel range.
    for_channel_ranges(g.c_in, inner_parallel, |cs| unsafe {
        input_transform_simd(x, g, tiles, (r0, r1), cs, nt, v_ptr)
    });

    let m_ptr = SendPtr(m.as_mut_ptr());
    let v_ptr = SendPtr(v.as_mut_ptr());
    let product = |xi: usize| {
        // SAFETY: GEMM ξ reads U[ξ], V[ξ] and writes only M[ξ], all in bounds.
        unsafe {
            gemm::gemm(
                g.c_out,
                nt,
                g.c_in,
                m_ptr.get().add(xi * g.c_out * nt),
                1,
                nt as isize,
                false,
                u.as_ptr().add(xi * g.c_out * g.c_in),
                1,
                g.c_in as isize,
                v_ptr.get().add(xi * g.c_in * nt),
                1,
                nt as isize,
                T::one(),
                T::one(),
                false,
                false,
                false,
                Parallelism::None,
            )
        }
    };
    if inner_parallel {
        (0..XI).into_par_iter().for_each(product);
    } else {
        (0..XI).for_each(product);
    }

    let m = &*m;
    for_channel_ranges(g.c_out, inner_parallel, |cs| unsafe {
        output_transform_simd(m, g, tiles, (r0, r1), cs, nt, bias, dst)
    });
}

/// Calls `f` on ranges covering `0..channels`: one range, or one per rayon thread.
fn for_channel_ranges(channels: usize, parallel: bool, f: impl Fn((usize, usize)) + Sync) {
    let parts = if parallel {
        rayon::current_num_threads().clamp(1, channels.max(1))
    } else {
        1
    };
    let range = |k: usize| (k * channels / parts, (k + 1) * channels / parts);
    if parts > 1 {
        (0..parts).into_par_iter().for_each(|k| f(range(k)));
    } else {
        f((0, channels));
    }
}

/// `V[ξ][c][tile] = (Bᵀ d B)[ξ]` for the tiles of global tile rows `[r0, r1)` of input
/// planes `c ∈ [c0, c1)` of the batch `x`.
///
/// # Safety
/// `v` must hold `16 · c_in · nt` elements; only the entries of channels `[c0, c1)` are
/// written.
#[inline(always)]
unsafe fn input_transform<T: Element>(
    x: &[T],
    g: &ConvGeom,
    tiles: &Tiles,
    band: (usize, usize),
    channels: (usize, usize),
    nt: usize,
    v: SendPtr<T>,
) {
    let (r0, r1) = band;
    let tw = tiles.tw;
    // Even and odd columns of the 4 zero-padded input rows of a tile row: P[j] = x[j − pad].
    let mut even = vec![T::zero(); 4 * (tw + 1)];
    let mut odd = vec![T::zero(); 4 * (tw + 1)];
    let mut cols = vec![T::zero(); 16 * tw];
    for (c, r) in (channels.0..channels.1).flat_map(|c| (r0..r1).map(move |r| (c, r))) {
        let (n, ty) = tiles.split(r);
        let plane = &x[(n * g.c_in + c) * g.in_plane()..(n * g.c_in + c + 1) * g.in_plane()];
        for i in 0..4 {
            let (e, o) = (
                &mut even[i * (tw + 1)..(i + 1) * (tw + 1)],
                &mut odd[i * (tw + 1)..(i + 1) * (tw + 1)],
            );
            let r = (2 * ty + i) as isize - g.pad as isize;
            if r < 0 || r as usize >= g.h {
                e.fill(T::zero());
                o.fill(T::zero());
                continue;
            }
            let row = &plane[r as usize * g.w..(r as usize + 1) * g.w];
            deinterleave(row, g.pad, e, o);
        }
        // d·B along each row: [d0 − d2, d1 + d2, d2 − d1, d1 − d3] with d = (E[t], O[t],
        // E[t+1], O[t+1]).
        for i in 0..4 {
            let e = &even[i * (tw + 1)..(i + 1) * (tw + 1)];
            let o = &odd[i * (tw + 1)..(i + 1) * (tw + 1)];
            let (r0, rest) = cols[4 * i * tw..].split_at_mut(tw);
            let (r1, rest) = rest.split_at_mut(tw);
            let (r2, rest) = rest.split_at_mut(tw);
            let r3 = &mut rest[..tw];
            butterfly(e, o, &e[1..], &o[1..], [r0, r1, r2, r3]);
        }
        // Bᵀ along the columns: rows R0 − R2, R1 + R2, R2 − R1, R1 − R3.
        let q = (r - r0) * tw;
        for j in 0..4 {
            let row = |i: usize| &cols[(4 * i + j) * tw..(4 * i + j + 1) * tw];
            let dst = |xi: usize| {
                // SAFETY: V[ξ][c][q .. q + tw] lies inside v (caller's contract), and the four
                // ξ of one call are distinct, so the slices are disjoint.
                unsafe {
                    std::slice::from_raw_parts_mut(v.get().add((xi * g.c_in + c) * nt + q), tw)
                }
            };
            butterfly(
                row(0),
                row(1),
                row(2),
                row(3),
                [dst(j), dst(4 + j), dst(8 + j), dst(12 + j)],
            );
        }
    }
}

/// `out = [m0 + m1 + m2 + bias, m1 − m2 − m3 + bias]` element-wise: the Aᵀ transform of
/// F(2×2, 3×3) along one direction (see [`butterfly`] for why it is a function).
#[inline(always)]
fn a_transpose<T: Element>(m0: &[T], m1: &[T], m2: &[T], m3: &[T], bias: T, out: [&mut [T]; 2]) {
    let [o0, o1] = out;
    let n = o0.len();
    let (m0, m1, m2, m3) = (&m0[..n], &m1[..n], &m2[..n], &m3[..n]);
    let o1 = &mut o1[..n];
    for t in 0..n {
        o0[t] = m0[t] + m1[t] + m2[t] + bias;
        o1[t] = m1[t] - m2[t] - m3[t] + bias;
    }
}

/// `out = [d0 − d2, d1 + d2, d2 − d1, d1 − d3]` element-wise over `out[0].len()` elements: the
/// B transform of F(2×2, 3×3) along one direction. A function of its own so that the compiler
/// knows the eight slices do not overlap (`&mut` arguments) and vectorises the loop without
/// run-time overlap checks.
#[inline(always)]
fn butterfly<T: Element>(d0: &[T], d1: &[T], d2: &[T], d3: &[T], out: [&mut [T]; 4]) {
    let [o0, o1, o2, o3] = out;
    let n = o0.len();
    let (d0, d1, d2, d3) = (&d0[..n], &d1[..n], &d2[..n], &d3[..n]);
    let (o1, o2, o3) = (&mut o1[..n], &mut o2[..n], &mut o3[..n]);
    for t in 0..n {
        o0[t] = d0[t] - d2[t];
        o1[t] = d1[t] + d2[t];
        o2[t] = d2[t] - d1[t];
        o3[t] = d1[t] - d3[t];
    }
}

simd_dispatch! {
    /// [`input_transform`] for the CPU's widest vectors.
    [unsafe] fn input_transform_simd<T: Element>(
        x: &[T], g: &ConvGeom, tiles: &Tiles, band: (usize, usize),
        channels: (usize, usize), nt: usize, v: SendPtr<T>,
    ) => input_transform
}

simd_dispatch! {
    /// [`output_transform`] for the CPU's widest vectors.
    [unsafe] fn output_transform_simd<T: Element>(
        m: &[T], g: &ConvGeom, tiles: &Tiles, band: (usize, usize),
        channels: (usize, usize), nt: usize, bias: Option<&[T]>, dst: SendPtr<T>,
    ) => output_transform
}

/// `E[t] = P[2t]`, `O[t] = P[2t + 1]` for the row padded by `pad` zeros on both sides.
#[inline(always)]
fn deinterleave<T: Element>(row: &[T], pad: usize, even: &mut [T], odd: &mut [T]) {
    let w = row.len() as isize;
    let at = |j: usize| -> T {
        let i = j as isize - pad as isize;
        if i >= 0 && i < w {
            row[i as usize]
        } else {
            T::zero()
        }
    };
    let n = even.len();
    // Interior: pairs (P[2t], P[2t+1]) = row[2t − pad ..][..2] fully inside the row.
    let t0 = pad.div_ceil(2).min(n);
    let j0 = 2 * t0 - pad;
    let pairs = (row.len().saturating_sub(j0) / 2).min(n - t0);
    for t in 0..t0 {
        even[t] = at(2 * t);
        odd[t] = at(2 * t + 1);
    }
    for ((e, o), p) in even[t0..t0 + pairs]
        .iter_mut()
        .zip(&mut odd[t0..t0 + pairs])
        .zip(row[j0..].chunks_exact(2))
    {
        *e = p[0];
        *o = p[1];
    }
    for t in t0 + pairs..n {
        even[t] = at(2 * t);
        odd[t] = at(2 * t + 1);
    }
}

/// Output rows of the band's global tile rows for channels `co ∈ [c0, c1)`:
/// `Y = Aᵀ M A + bias` per tile, written to `dst`.
///
/// # Safety
/// `dst` must point at the batch's `[N, c_out, oh, ow]` output; only the rows of this band's
/// tile rows of planes `[c0, c1)` are written.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn output_transform<T: Element>(
    m: &[T],
    g: &ConvGeom,
    tiles: &Tiles,
    band: (usize, usize),
    channels: (usize, usize),
    nt: usize,
    bias: Option<&[T]>,
    dst: SendPtr<T>,
) {
    let (r0, r1) = band;
    let tw = tiles.tw;
    let mut ma = vec![T::zero(); 8 * tw];
    let mut y = vec![T::zero(); 4 * tw];
    for (co, r) in (channels.0..channels.1).flat_map(|c| (r0..r1).map(move |r| (c, r))) {
        let (n, ty) = tiles.split(r);
        let bias = bias.map_or(T::zero(), |b| b[co]);
        let q = (r - r0) * tw;
        let at = |xi: usize| &m[(xi * g.c_out + co) * nt + q..][..tw];
        // M·A along each row a: [m_a0 + m_a1 + m_a2, m_a1 − m_a2 − m_a3].
        for a in 0..4 {
            let (m0, m1, m2, m3) = (at(4 * a), at(4 * a + 1), at(4 * a + 2), at(4 * a + 3));
            let (s0, s1) = ma[2 * a * tw..(2 * a + 2) * tw].split_at_mut(tw);
            a_transpose(m0, m1, m2, m3, T::zero(), [s0, s1]);
        }
        // Aᵀ along the columns, then the bias.
        for j in 0..2 {
            let row = |a: usize| &ma[(2 * a + j) * tw..(2 * a + j + 1) * tw];
            let (y0, y1) = y[2 * j * tw..(2 * j + 2) * tw].split_at_mut(tw);
            a_transpose(row(0), row(1), row(2), row(3), bias, [y0, y1]);
        }
        // y holds [Y00, Y10, Y01, Y11] (output row i, column j of each tile): interleave.
        for i in 0..2 {
            let oy = 2 * ty + i;
            if oy >= g.oh {
                continue;
            }
            // SAFETY: row oy of plane (n, co) is inside the output (caller's contract); it may
            // not be initialised yet, hence MaybeUninit.
            let out = unsafe {
                std::slice::from_raw_parts_mut(
                    dst.get()
                        .add((n * g.c_out + co) * g.out_plane() + oy * g.ow)
                        .cast::<MaybeUninit<T>>(),
                    g.ow,
                )
            };
            let c0 = &y[i * tw..(i + 1) * tw];
            let c1 = &y[(2 + i) * tw..(3 + i) * tw];
            let mut pairs = out.chunks_exact_mut(2);
            for ((p, &a), &b) in (&mut pairs).zip(c0).zip(c1) {
                p[0].write(a);
                p[1].write(b);
            }
            if let Some(last) = pairs.into_remainder().first_mut() {
                last.write(c0[tw - 1]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::gemm_conv::forward_im2col;
    use super::*;

    /// Odd sizes (tiles overhanging the output), every padding, one image and several, a band
    /// spanning images.
    const SHAPES: [(usize, usize, usize, usize, usize, usize); 7] = [
        (1, 3, 5, 7, 2, 1),
        (2, 16, 9, 6, 8, 0),
        (3, 8, 4, 4, 5, 2),
        (1, 4, 1, 1, 3, 1),
        (2, 24, 17, 19, 16, 1),
        (1, 64, 40, 36, 48, 1),
        // Bands of 13 tile rows over 12 images of 3: band edges inside images.
        (12, 512, 6, 10, 256, 1),
    ];

    fn values(n: usize, seed: u64) -> Vec<f64> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                (s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn matches_im2col_in_f32_and_f64() {
        for threads in [1, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                for (i, &(n, ci, h, w, co, pad)) in SHAPES.iter().enumerate() {
                    let g = ConvGeom::new(&[n, ci, h, w], &[co, ci, 3, 3], 1, pad).unwrap();
                    let x = values(n * ci * h * w, i as u64);
                    let k = values(co * ci * 9, 50 + i as u64);
                    let b = values(co, 90 + i as u64);
                    let want = forward_im2col(&x, &k, Some(&b), &g);
                    let got = forward(&x, &k, Some(&b), &g);
                    let err = got
                        .iter()
                        .zip(&want)
                        .map(|(a, b)| (a - b).abs())
                        .fold(0.0, f64::max);
                    assert!(err < 1e-12, "f64 shape {i}, {threads} threads: {err:e}");

                    let (x, k, b): (Vec<f32>, Vec<f32>, Vec<f32>) = (
                        x.iter().map(|&v| v as f32).collect(),
                        k.iter().map(|&v| v as f32).collect(),
                        b.iter().map(|&v| v as f32).collect(),
                    );
                    let want = forward_im2col(&x, &k, Some(&b), &g);
                    let got = forward(&x, &k, None, &g);
                    let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
                    let err = got
                        .iter()
                        .zip(&want)
                        .enumerate()
                        .map(|(j, (a, w))| (a + b[(j / g.out_plane()) % co] - w).abs())
                        .fold(0.0, f32::max);
                    assert!(
                        err < 1e-5 * scale,
                        "f32 shape {i}, {threads} threads: {err:e}"
                    );
                }
            });
        }
    }

    #[test]
    fn weight_transform_matches_g_g_gt() {
        let w: Vec<f64> = values(9, 7);
        let u = transform_weights(&w, 1, 1);
        let gm = [
            [1.0, 0.0, 0.0],
            [0.5, 0.5, 0.5],
            [0.5, -0.5, 0.5],
            [0.0, 0.0, 1.0],
        ];
        for i in 0..4 {
            for j in 0..4 {
                let mut want = 0.0;
                for a in 0..3 {
                    for b in 0..3 {
                        want += gm[i][a] * w[3 * a + b] * gm[j][b];
                    }
                }
                assert!((u[4 * i + j] - want).abs() < 1e-15, "U[{i}][{j}]");
            }
        }
    }
}
