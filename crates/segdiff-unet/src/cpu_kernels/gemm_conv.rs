//! The three convolution products as banded im2col + GEMM (`gemm` crate), on contiguous NCHW
//! slices: forward, input gradient, weight gradient, plus the bias gradient. The forward (and
//! with it the stride-1 input gradient) uses Winograd F(2×2, 3×3) instead where it pays
//! ([`super::winograd`]).
//!
//! Work is cut into (image, band of output rows) items ([`Bands`]). With enough items they run
//! on rayon, one single-threaded GEMM per item (never rayon inside rayon); with few items (the
//! 16² and 8² layers at batch 1) they run in turn and the GEMM itself is parallel.

use gemm::Parallelism;
use rayon::prelude::*;

use super::conv_geometry::{Bands, ConvGeom, Item};
use super::im2col::{col2im_add, im2col};
use super::{assume_init, for_each_item, uninit, winograd, Element, SendPtr};
use std::mem::MaybeUninit;

fn threads() -> usize {
    rayon::current_num_threads().max(1)
}

/// `dst[m×n] (+)= lhs[m×k] · rhs[k×n]`, row strides `*_rs`, column strides `*_cs`, in elements.
///
/// # Safety
/// Every pointer must cover the elements its strides and sizes address.
#[allow(clippy::too_many_arguments)]
unsafe fn matmul<T: Element>(
    (m, n, k): (usize, usize, usize),
    dst: *mut T,
    (dst_rs, dst_cs): (usize, usize),
    accumulate: bool,
    lhs: *const T,
    (lhs_rs, lhs_cs): (usize, usize),
    rhs: *const T,
    (rhs_rs, rhs_cs): (usize, usize),
    parallelism: Parallelism,
) {
    // SAFETY: forwarded from the caller.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            dst_cs as isize,
            dst_rs as isize,
            accumulate,
            lhs,
            lhs_cs as isize,
            lhs_rs as isize,
            rhs,
            rhs_cs as isize,
            rhs_rs as isize,
            T::one(),
            T::one(),
            false,
            false,
            false,
            parallelism,
        )
    }
}

/// The GEMM operand of work item `it`, `depth × width` with its row stride: the input itself
/// for a pointwise convolution of one image (`direct`), else the im2col tiles of the item's
/// images side by side in `tile`.
fn item_columns<T: Element>(
    x: &[T],
    g: &ConvGeom,
    it: &Item,
    direct: bool,
    tile: &mut [T],
) -> (*const T, usize) {
    let image = |n: usize| &x[n * g.c_in * g.in_plane()..(n + 1) * g.c_in * g.in_plane()];
    if direct {
        return (image(it.n0)[it.oy0 * g.ow..].as_ptr(), g.in_plane());
    }
    let (npx, m) = (it.pixels(g), it.width(g));
    for n in it.n0..it.n1 {
        im2col(
            image(n),
            g,
            (it.oy0, it.oy1),
            &mut tile[(n - it.n0) * npx..],
            m,
        );
    }
    (tile.as_ptr(), m)
}

/// The GEMM's own threading: none inside parallel work items, all threads for a lone item.
fn gemm_threads(alone: bool) -> Parallelism {
    if alone {
        Parallelism::Rayon(threads())
    } else {
        Parallelism::None
    }
}

/// `y = conv(x, w) + bias`: `x` `[batch, c_in, h, w]`, `w` `[c_out, c_in, k, k]`, result
/// `[batch, c_out, oh, ow]`; Winograd F(2×2, 3×3) where it pays, im2col + GEMM elsewhere.
pub(crate) fn forward<T: Element>(x: &[T], w: &[T], bias: Option<&[T]>, g: &ConvGeom) -> Vec<T> {
    if winograd::applies(g) {
        winograd::forward(x, w, bias, g)
    } else {
        forward_im2col(x, w, bias, g)
    }
}

/// [`forward`] by banded im2col + GEMM, for every geometry.
pub(crate) fn forward_im2col<T: Element>(
    x: &[T],
    w: &[T],
    bias: Option<&[T]>,
    g: &ConvGeom,
) -> Vec<T> {
    let elem = std::mem::size_of::<T>();
    let mut out = uninit::<T>(g.batch * g.c_out * g.out_plane());
    let bands = Bands::plan(g, elem, 1, threads()).grouped(g, elem, threads());
    let width = bands.images * bands.rows * g.ow;
    let direct = g.is_pointwise() && bands.images == 1;
    // The tile, and for image groups the product before it is scattered to the images.
    let tile_len = if direct { 0 } else { g.depth() * width };
    let scratch = tile_len + if bands.images > 1 { g.c_out * width } else { 0 };
    let out_ptr = SendPtr(out.as_mut_ptr().cast::<T>());
    let depth = g.depth();
    let items: Vec<usize> = (0..bands.items(g)).collect();
    for_each_item(
        &items,
        bands.parallel,
        scratch,
        |item, buf: &mut [T], alone| {
            let par = gemm_threads(alone);
            let it = bands.item(g, item);
            let (npx, m) = (it.pixels(g), it.width(g));
            let (tile, product) = buf.split_at_mut(tile_len);
            let px0 = it.oy0 * g.ow;
            let (rhs, rhs_rs) = item_columns(x, g, &it, direct, tile);
            // One image: the GEMM writes its band of the c_out planes in place. Several: it
            // writes c_out × (images · pixels) to `product`, scattered to the planes below.
            let (dst, dst_rs) = if bands.images == 1 {
                // SAFETY: in bounds: image n0, columns [px0, px0 + npx) of its planes.
                let dst = unsafe { out_ptr.get().add(it.n0 * g.c_out * g.out_plane() + px0) };
                (dst, g.out_plane())
            } else {
                (product.as_mut_ptr(), m)
            };
            // SAFETY: item `it` alone writes columns [px0, px0 + npx) of the c_out planes of its
            // images (or its own scratch); `rhs` covers depth × m with row stride rhs_rs.
            unsafe {
                matmul(
                    (g.c_out, m, depth),
                    dst,
                    (dst_rs, 1),
                    false,
                    w.as_ptr(),
                    (depth, 1),
                    rhs,
                    (rhs_rs, 1),
                    par,
                );
            }
            for n in it.n0..it.n1 {
                for co in 0..g.c_out {
                    let b = bias.map_or(T::zero(), |b| b[co]);
                    let at = (n * g.c_out + co) * g.out_plane() + px0;
                    if bands.images == 1 {
                        if bias.is_some() {
                            // SAFETY: as above; the GEMM has written the row.
                            let row = unsafe {
                                std::slice::from_raw_parts_mut(out_ptr.get().add(at), npx)
                            };
                            row.iter_mut().for_each(|v| *v += b);
                        }
                    } else {
                        // SAFETY: as above; the planes of different items do not overlap. The
                        // row is written here, so it is seen as possibly uninitialised.
                        let row = unsafe {
                            std::slice::from_raw_parts_mut(
                                out_ptr.get().add(at).cast::<MaybeUninit<T>>(),
                                npx,
                            )
                        };
                        let src = &product[co * m + (n - it.n0) * npx..][..npx];
                        for (o, &v) in row.iter_mut().zip(src) {
                            o.write(v + b);
                        }
                    }
                }
            }
        },
    );
    // SAFETY: the items cover every image and output row, and each item's GEMM (one image) or
    // scatter (several) writes all c_out planes of its rows.
    unsafe { assume_init(out) }
}

/// `dx = convᵀ(dy, w) + bias`, the gradient of [`forward`] with respect to `x`
/// (`[batch, c_in, h, w]`), plus a per-channel `bias` (`[c_in]`) when the transposed convolution
/// has one.
///
/// Stride 1: a forward convolution of `dy` with the flipped, transposed kernel and padding
/// `k − 1 − pad`. Other strides: `dcol = wᵀ · dy` per band, then col2im onto `dx` filled with
/// the bias (or zeros).
pub(crate) fn input_grad<T: Element>(
    dy: &[T],
    w: &[T],
    bias: Option<&[T]>,
    g: &ConvGeom,
) -> Vec<T> {
    if g.stride == 1 && g.pad < g.k {
        let k = g.k;
        let mut flipped = vec![T::zero(); w.len()];
        for co in 0..g.c_out {
            for ci in 0..g.c_in {
                for t in 0..k * k {
                    flipped[(ci * g.c_out + co) * k * k + (k * k - 1 - t)] =
                        w[(co * g.c_in + ci) * k * k + t];
                }
            }
        }
        let transposed = ConvGeom {
            batch: g.batch,
            c_in: g.c_out,
            h: g.oh,
            w: g.ow,
            c_out: g.c_in,
            k,
            stride: 1,
            pad: k - 1 - g.pad,
            oh: g.h,
            ow: g.w,
        };
        return forward(dy, &flipped, bias, &transposed);
    }

    let mut dx = match bias {
        Some(b) => {
            let mut dx = Vec::with_capacity(g.batch * g.c_in * g.in_plane());
            for _ in 0..g.batch {
                for &v in b {
                    dx.extend(std::iter::repeat_n(v, g.in_plane()));
                }
            }
            dx
        }
        None => vec![T::zero(); g.batch * g.c_in * g.in_plane()],
    };
    // Bands two apart must not share an input row: (rows + 1)·stride ≥ k.
    let min_rows = g.k.div_ceil(g.stride).saturating_sub(1).max(1);
    let bands = Bands::plan(g, std::mem::size_of::<T>(), min_rows, threads());
    let depth = g.depth();
    let dx_ptr = SendPtr(dx.as_mut_ptr());
    let run = |item: usize, col: &mut [T], alone: bool| {
        let par = gemm_threads(alone);
        let Item {
            n0: n, oy0, oy1, ..
        } = bands.item(g, item);
        let (px0, npx) = (oy0 * g.ow, (oy1 - oy0) * g.ow);
        // SAFETY: col holds depth × npx (the scratch length is for the widest band); dy covers
        // c_out rows of out_plane from (n, px0). w is [c_out, depth], read transposed.
        unsafe {
            matmul(
                (depth, npx, g.c_out),
                col.as_mut_ptr(),
                (npx, 1),
                false,
                w.as_ptr(),
                (1, depth),
                dy.as_ptr().add(n * g.c_out * g.out_plane() + px0),
                (g.out_plane(), 1),
                par,
            );
            // SAFETY: items of one parity run together; bands two apart touch disjoint input
            // rows (min_rows above), and different images are disjoint.
            col2im_add(
                &col[..depth * npx],
                g,
                oy0,
                oy1,
                dx_ptr.get().add(n * g.c_in * g.in_plane()),
            );
        }
    };
    let scratch = depth * bands.rows * g.ow;
    for parity in 0..2 {
        let items: Vec<usize> = (0..bands.items(g))
            .filter(|&i| (i % bands.count) % 2 == parity)
            .collect();
        for_each_item(&items, bands.parallel, scratch, run);
    }
    dx
}

/// `dw = Σ dy · im2col(x)ᵀ`, the gradient of [`forward`] with respect to `w`
/// (`[c_out, c_in, k, k]`).
///
/// Items are split into a fixed number of contiguous chunks, each summing into its own
/// accumulator, and the accumulators are added in order, so the result does not depend on
/// which thread ran what.
pub(crate) fn weight_grad<T: Element>(x: &[T], dy: &[T], g: &ConvGeom) -> Vec<T> {
    let depth = g.depth();
    let size = g.c_out * depth;
    let elem = std::mem::size_of::<T>();
    let bands = Bands::plan(g, elem, 1, threads()).grouped(g, elem, threads());
    let items = bands.items(g);
    let width = bands.images * bands.rows * g.ow;
    let direct = g.is_pointwise() && bands.images == 1;
    let col_len = if direct { 0 } else { depth * width };
    // gemm's micro-kernels read the left operand in column-major panels and write the
    // destination column-major (it transposes the whole product when the destination is
    // row-major). So each chunk accumulates dwᵀ (depth-major, transposed once at the end) from
    // the band of dy transposed to pixels × c_out: handed over as they lie, gemm would gather
    // dy or the im2col tile one element at a time at a stride of a band or a plane (a power of
    // two at the usual sizes: every row in the same L1 set).
    let tile_len = col_len + g.c_out * width;
    let accumulate = |range: std::ops::Range<usize>, acc: &mut [T], tile: &mut [T], par| {
        let (tile, dy_t) = tile.split_at_mut(col_len);
        for (i, item) in range.enumerate() {
            let it = bands.item(g, item);
            let (npx, m, px0) = (it.pixels(g), it.width(g), it.oy0 * g.ow);
            let (col, col_rs) = item_columns(x, g, &it, direct, tile);
            for n in it.n0..it.n1 {
                let dy_image = &dy[n * g.c_out * g.out_plane()..(n + 1) * g.c_out * g.out_plane()];
                let dst = &mut dy_t[(n - it.n0) * npx * g.c_out..][..npx * g.c_out];
                transpose_band(dy_image, g.out_plane(), px0, npx, dst);
            }
            // SAFETY: acc is c_out × depth, column-major; dy_t holds the c_out × m band
            // column-major; col covers depth rows of m with row stride col_rs, read transposed.
            unsafe {
                matmul(
                    (g.c_out, depth, m),
                    acc.as_mut_ptr(),
                    (1, g.c_out),
                    i > 0,
                    dy_t.as_ptr(),
                    (1, g.c_out),
                    col,
                    (1, col_rs),
                    par,
                );
            }
        }
    };
    let partials: Vec<Vec<T>> = if bands.parallel {
        let chunks = items.min(4 * threads());
        (0..chunks)
            .into_par_iter()
            .map(|c| {
                let range = c * items / chunks..(c + 1) * items / chunks;
                let mut acc = vec![T::zero(); size];
                T::with_scratch(tile_len, |tile| {
                    accumulate(range, &mut acc, tile, gemm_threads(false))
                });
                acc
            })
            .collect()
    } else {
        let mut acc = vec![T::zero(); size];
        T::with_scratch(tile_len, |tile| {
            accumulate(0..items, &mut acc, tile, gemm_threads(true))
        });
        vec![acc]
    };
    // dwᵀ = Σ_chunks, summed in chunk order, then dw[co][d] = dwᵀ[d][co].
    let mut sum = vec![T::zero(); size];
    sum.par_chunks_mut(g.c_out.max(1) * 64)
        .enumerate()
        .for_each(|(i, out)| {
            let (start, len) = (i * g.c_out.max(1) * 64, out.len());
            for p in &partials {
                for (o, v) in out.iter_mut().zip(&p[start..start + len]) {
                    *o += *v;
                }
            }
        });
    let mut total = vec![T::zero(); size];
    transpose_band(&sum, g.c_out, 0, g.c_out, &mut total);
    total
}

/// `dst[p · rows + r] = src[r · stride + px0 + p]` for `p < npx` and the `rows = dst.len() / npx`
/// rows of `src`: a band of rows written pixel-major, in blocks of 8 rows × 64 pixels so that
/// the reads (8 rows, possibly 4 KiB apart) stay within the L1's associativity.
fn transpose_band<T: Element>(src: &[T], stride: usize, px0: usize, npx: usize, dst: &mut [T]) {
    const ROWS: usize = 8;
    const PIXELS: usize = 64;
    let rows = dst.len() / npx.max(1);
    for r0 in (0..rows).step_by(ROWS) {
        let r1 = (r0 + ROWS).min(rows);
        for p0 in (0..npx).step_by(PIXELS) {
            let p1 = (p0 + PIXELS).min(npx);
            for r in r0..r1 {
                let row = &src[r * stride + px0 + p0..r * stride + px0 + p1];
                for (p, &v) in (p0..p1).zip(row) {
                    dst[p * rows + r] = v;
                }
            }
        }
    }
}

/// `db[co] = Σ_{n, y, x} dy[n, co, y, x]`.
pub(crate) fn bias_grad<T: Element>(dy: &[T], batch: usize, channels: usize) -> Vec<T> {
    let plane = dy.len() / (batch * channels).max(1);
    (0..channels)
        .into_par_iter()
        .map(|c| {
            // Sixteen running sums so the loop vectorises (and rounds less than one long sum).
            let mut lanes = [T::zero(); 16];
            for n in 0..batch {
                let row = &dy[(n * channels + c) * plane..(n * channels + c + 1) * plane];
                let mut chunks = row.chunks_exact(16);
                for chunk in &mut chunks {
                    for (l, v) in lanes.iter_mut().zip(chunk) {
                        *l += *v;
                    }
                }
                for (l, v) in lanes.iter_mut().zip(chunks.remainder()) {
                    *l += *v;
                }
            }
            lanes.iter().fold(T::zero(), |a, &b| a + b)
        })
        .collect()
}
