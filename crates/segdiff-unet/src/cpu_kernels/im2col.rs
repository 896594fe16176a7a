//! im2col of one band of output rows, and its adjoint col2im (scatter-add).
//!
//! The tile is `[c_in·k·k, rows·ow]`, row `(c·k + ky)·k + kx` holding the input pixel under
//! kernel tap `(ky, kx)` for every output pixel of the band, zero where the tap falls in the
//! padding. With stride 1 each tile row is built from whole-row `memcpy`s, so the tile costs a
//! few percent of the GEMM that reads it.

use super::conv_geometry::ConvGeom;
use super::Element;

/// Writes the im2col tile of output rows `[oy0, oy1)` of image `x` (`[c_in, h, w]`) into `tile`,
/// whose rows start `row_stride` elements apart (`npx` for a tile of its own, more when several
/// images' tiles sit side by side).
pub(crate) fn im2col<T: Element>(
    x: &[T],
    g: &ConvGeom,
    (oy0, oy1): (usize, usize),
    tile: &mut [T],
    row_stride: usize,
) {
    let npx = (oy1 - oy0) * g.ow;
    let k = g.k;
    debug_assert!(row_stride >= npx && tile.len() >= (g.depth() - 1) * row_stride + npx);
    let cols: Vec<(usize, usize)> = (0..k).map(|kx| g.valid_cols(kx)).collect();
    for c in 0..g.c_in {
        let plane = &x[c * g.in_plane()..(c + 1) * g.in_plane()];
        for ky in 0..k {
            for (kx, &(lo, hi)) in cols.iter().enumerate() {
                let row = ((c * k + ky) * k + kx) * row_stride;
                let row = &mut tile[row..row + npx];
                for (r, oy) in (oy0..oy1).enumerate() {
                    let dst = &mut row[r * g.ow..(r + 1) * g.ow];
                    let iy = (oy * g.stride + ky) as isize - g.pad as isize;
                    if iy < 0 || iy as usize >= g.h || lo >= hi {
                        dst.fill(T::zero());
                        continue;
                    }
                    let src = &plane[iy as usize * g.w..(iy as usize + 1) * g.w];
                    dst[..lo].fill(T::zero());
                    dst[hi..].fill(T::zero());
                    // First input column read: lo·stride + kx − pad ≥ 0 by construction.
                    let ix0 = lo * g.stride + kx - g.pad;
                    if g.stride == 1 {
                        dst[lo..hi].copy_from_slice(&src[ix0..ix0 + (hi - lo)]);
                    } else {
                        for (d, s) in dst[lo..hi]
                            .iter_mut()
                            .zip(src[ix0..].iter().step_by(g.stride))
                        {
                            *d = *s;
                        }
                    }
                }
            }
        }
    }
}

/// Adds the tile `col` of output rows `[oy0, oy1)` back onto image `dx` (`[c_in, h, w]`):
/// every input pixel receives the sum over the taps that read it.
///
/// # Safety
/// `dx` must point to `c_in·h·w` writable elements, and no other thread may touch input rows
/// `[oy0·stride − pad, (oy1 − 1)·stride − pad + k)` of this image meanwhile.
pub(crate) unsafe fn col2im_add<T: Element>(
    col: &[T],
    g: &ConvGeom,
    oy0: usize,
    oy1: usize,
    dx: *mut T,
) {
    let npx = (oy1 - oy0) * g.ow;
    let k = g.k;
    let cols: Vec<(usize, usize)> = (0..k).map(|kx| g.valid_cols(kx)).collect();
    for c in 0..g.c_in {
        for ky in 0..k {
            for (kx, &(lo, hi)) in cols.iter().enumerate() {
                if lo >= hi {
                    continue;
                }
                let row = ((c * k + ky) * k + kx) * npx;
                let row = &col[row..row + npx];
                for (r, oy) in (oy0..oy1).enumerate() {
                    let iy = (oy * g.stride + ky) as isize - g.pad as isize;
                    if iy < 0 || iy as usize >= g.h {
                        continue;
                    }
                    let src = &row[r * g.ow + lo..r * g.ow + hi];
                    let ix0 = lo * g.stride + kx - g.pad;
                    // SAFETY: the row lies inside image `c` (iy < h, the last column read is
                    // (hi − 1)·stride + kx − pad < w by `valid_cols`), and the caller owns it.
                    let dst = unsafe {
                        std::slice::from_raw_parts_mut(
                            dx.add(c * g.in_plane() + iy as usize * g.w + ix0),
                            (hi - lo - 1) * g.stride + 1,
                        )
                    };
                    if g.stride == 1 {
                        for (d, s) in dst.iter_mut().zip(src) {
                            *d += *s;
                        }
                    } else {
                        for (d, s) in dst.iter_mut().step_by(g.stride).zip(src) {
                            *d += *s;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ⟨im2col(x), c⟩ = ⟨x, col2im(c)⟩ for every geometry: col2im is the exact adjoint.
    #[test]
    fn col2im_is_the_adjoint_of_im2col() {
        for (c, h, w, k, s, p) in [
            (2, 5, 7, 3, 1, 1),
            (3, 6, 6, 3, 2, 1),
            (2, 7, 5, 3, 2, 0),
            (1, 4, 4, 1, 2, 0),
            (2, 3, 3, 3, 1, 0),
        ] {
            let g = ConvGeom::new(&[1, c, h, w], &[1, c, k, k], s, p).unwrap();
            let x: Vec<f64> = (0..c * h * w)
                .map(|i| ((i * 37 % 11) as f64) - 5.0)
                .collect();
            let npx = g.oh * g.ow;
            let cv: Vec<f64> = (0..g.depth() * npx)
                .map(|i| ((i * 13 % 7) as f64) - 3.0)
                .collect();
            let mut tile = vec![0.0; g.depth() * npx];
            im2col(&x, &g, (0, g.oh), &mut tile, g.out_plane());
            let lhs: f64 = tile.iter().zip(&cv).map(|(a, b)| a * b).sum();
            let mut back = vec![0.0; c * h * w];
            // SAFETY: `back` holds the whole image and nothing else touches it.
            unsafe { col2im_add(&cv, &g, 0, g.oh, back.as_mut_ptr()) };
            let rhs: f64 = x.iter().zip(&back).map(|(a, b)| a * b).sum();
            assert_eq!(lhs, rhs, "c {c} h {h} w {w} k {k} s {s} p {p}");
            // And the tile itself against the definition.
            for ci in 0..c {
                for ky in 0..k {
                    for kx in 0..k {
                        for oy in 0..g.oh {
                            for ox in 0..g.ow {
                                let iy = (oy * s + ky) as isize - p as isize;
                                let ix = (ox * s + kx) as isize - p as isize;
                                let want =
                                    if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                        0.0
                                    } else {
                                        x[ci * h * w + iy as usize * w + ix as usize]
                                    };
                                let got = tile[((ci * k + ky) * k + kx) * npx + oy * g.ow + ox];
                                assert_eq!(got, want);
                            }
                        }
                    }
                }
            }
        }
    }
}
