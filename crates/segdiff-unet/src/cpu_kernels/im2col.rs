//! im2col of one band of output rows, and its adjoint col2im (scatter-add).
//!
//! The tile is `[c_in·k·k, rows·ow]`, row `(c·k + ky)·k + kx` holding the input pixel under
//! kernel tap `(ky, kx)` for every output pixel of the band, zero where the tap falls in the
//! padding. With stride 1 each tile row is built from whole-row `memcpy`s, so the tile costs a
//! few percent of the GEMM that reads it.

use super::conv_geometry::ConvGeom;
use super::vector_math::simd_dispatch;
use super::{Element, SendPtr};

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
    debug_assert!(row_stride >= npx && tile.len() >= (g.depth() - 1) * row_stride + npx);
    if g.stride == 1 {
        im2col_unit_stride(x, g, (oy0, oy1), tile, row_stride);
    } else {
        im2col_strided_simd(x, g, (oy0, oy1), tile, row_stride);
    }
}

/// The input rows `[lo, hi)` that output rows `[oy0, oy1)` read, clipped to the image (none
/// for no output rows).
fn input_rows(g: &ConvGeom, oy0: usize, oy1: usize) -> (usize, usize) {
    if oy1 <= oy0 {
        return (0, 0);
    }
    let lo = (oy0 * g.stride).saturating_sub(g.pad).min(g.h);
    let hi = ((oy1 - 1) * g.stride + g.k).saturating_sub(g.pad).min(g.h);
    (lo, hi.max(lo))
}

/// One kernel tap on one output row of a band: tile row `row` (`(c·k + ky)·k + kx`), band row
/// `r`, and where it reads: input row `iy` (`None` where the row lies in the padding or no
/// column is valid), output columns `[lo, hi)` that fall inside the image, the first of them
/// reading input column `ix0`.
struct Tap {
    c: usize,
    row: usize,
    r: usize,
    iy: Option<usize>,
    cols: (usize, usize),
    ix0: usize,
}

impl Tap {
    /// Writes this tap's row of an im2col tile whose rows start `row_stride` apart and hold
    /// `ow` pixels per output row: `src`, the values the tap reads, at its valid output columns
    /// and zeros elsewhere (everywhere when it reads only padding, `src = None`).
    #[inline(always)]
    fn write<T: Element>(&self, tile: &mut [T], row_stride: usize, ow: usize, src: Option<&[T]>) {
        let dst = &mut tile[self.row * row_stride + self.r * ow..][..ow];
        let (lo, hi) = self.cols;
        match src {
            Some(src) => {
                dst[..lo].fill(T::zero());
                dst[hi..].fill(T::zero());
                dst[lo..hi].copy_from_slice(src);
            }
            None => dst.fill(T::zero()),
        }
    }
}

/// Every [`Tap`] of output rows `band`, channel by channel, in tile order. An iterator rather
/// than a function taking a closure: the loop bodies stay in the kernels that use them, which
/// [`simd_dispatch`] compiles for wide vectors (a closure would keep the baseline target).
fn taps(g: &ConvGeom, band: (usize, usize)) -> Taps<'_> {
    Taps {
        g,
        band,
        row: 0,
        oy: band.0,
        cols: g.valid_cols(0),
    }
}

/// The iterator of [`taps`]: tile row `row`, output row `oy` next.
struct Taps<'a> {
    g: &'a ConvGeom,
    band: (usize, usize),
    row: usize,
    oy: usize,
    cols: (usize, usize),
}

impl Iterator for Taps<'_> {
    type Item = Tap;

    #[inline(always)]
    fn next(&mut self) -> Option<Tap> {
        let g = self.g;
        let k = g.k;
        if self.oy == self.band.1 {
            self.row += 1;
            self.oy = self.band.0;
            self.cols = g.valid_cols(self.row % k);
        }
        if self.row >= g.depth() || self.band.0 == self.band.1 {
            return None;
        }
        let (row, oy, (lo, hi)) = (self.row, self.oy, self.cols);
        self.oy += 1;
        let (ky, kx) = (row / k % k, row % k);
        let iy = (oy * g.stride + ky) as isize - g.pad as isize;
        let iy = (iy >= 0 && (iy as usize) < g.h && lo < hi).then_some(iy as usize);
        Some(Tap {
            c: row / (k * k),
            row,
            r: oy - self.band.0,
            iy,
            cols: (lo, hi),
            // First input column read: lo·stride + kx − pad ≥ 0 by construction.
            ix0: if iy.is_some() {
                lo * g.stride + kx - g.pad
            } else {
                0
            },
        })
    }
}

/// [`im2col`] for stride 1: every tile row is a `memcpy` of an input row.
fn im2col_unit_stride<T: Element>(
    x: &[T],
    g: &ConvGeom,
    band: (usize, usize),
    tile: &mut [T],
    row_stride: usize,
) {
    for t in taps(g, band) {
        let src =
            t.iy.map(|iy| &x[t.c * g.in_plane() + iy * g.w + t.ix0..][..t.cols.1 - t.cols.0]);
        t.write(tile, row_stride, g.ow, src);
    }
}

/// Input rows of one channel in phase order, for strides above 1: row `i` holds input row
/// `rows.0 + i` as its columns `p, p + s, p + 2s, …` for each phase `p < s` in turn, each phase
/// `phase_len` long. The columns one tap reads (`ix0, ix0 + s, …`) are then contiguous.
struct Phases {
    stride: usize,
    phase_len: usize,
    rows: (usize, usize),
}

impl Phases {
    fn new(g: &ConvGeom, band: (usize, usize)) -> Self {
        Self {
            stride: g.stride,
            phase_len: g.w.div_ceil(g.stride),
            rows: input_rows(g, band.0, band.1),
        }
    }

    /// Elements of one channel's buffer.
    fn len(&self) -> usize {
        (self.rows.1 - self.rows.0) * self.stride * self.phase_len
    }

    /// Where input column `ix` of input row `iy` sits in the buffer.
    fn at(&self, iy: usize, ix: usize) -> usize {
        ((iy - self.rows.0) * self.stride + ix % self.stride) * self.phase_len + ix / self.stride
    }

    /// Splits input row `src` into the phase order of `dst` (one buffer row).
    #[inline(always)]
    fn split<T: Element>(&self, src: &[T], dst: &mut [T]) {
        if self.stride == 2 {
            let (even, odd) = dst.split_at_mut(self.phase_len);
            let pairs = src.len() / 2;
            for ((e, o), p) in even[..pairs]
                .iter_mut()
                .zip(&mut odd[..pairs])
                .zip(src.chunks_exact(2))
            {
                *e = p[0];
                *o = p[1];
            }
            if src.len() % 2 == 1 {
                even[pairs] = src[src.len() - 1];
            }
        } else {
            for (ix, &v) in src.iter().enumerate() {
                dst[(ix % self.stride) * self.phase_len + ix / self.stride] = v;
            }
        }
    }

    /// Adds buffer row `src` (phase order) onto input row `dst`.
    #[inline(always)]
    fn merge_add<T: Element>(&self, src: &[T], dst: &mut [T]) {
        if self.stride == 2 {
            let (even, odd) = src.split_at(self.phase_len);
            let pairs = dst.len() / 2;
            for (d, (e, o)) in dst
                .chunks_exact_mut(2)
                .zip(even[..pairs].iter().zip(&odd[..pairs]))
            {
                d[0] += *e;
                d[1] += *o;
            }
            if dst.len() % 2 == 1 {
                let last = dst.len() - 1;
                dst[last] += even[pairs];
            }
        } else {
            for (ix, d) in dst.iter_mut().enumerate() {
                *d += src[(ix % self.stride) * self.phase_len + ix / self.stride];
            }
        }
    }

    /// Adds the buffer `acc` onto the rows of channel `c` of image `dx` and zeroes it.
    ///
    /// # Safety
    /// `dx` must point to an image of `g`'s shape whose rows `self.rows` of channel `c` no other
    /// thread touches meanwhile.
    #[inline(always)]
    unsafe fn flush<T: Element>(&self, acc: &mut [T], g: &ConvGeom, dx: *mut T, c: usize) {
        let row_len = self.stride * self.phase_len;
        for (iy, src) in (self.rows.0..self.rows.1).zip(acc.chunks_exact_mut(row_len)) {
            // SAFETY: input row `iy < h` of channel `c` lies inside the image, and the caller
            // owns it.
            let dst =
                unsafe { std::slice::from_raw_parts_mut(dx.add(c * g.in_plane() + iy * g.w), g.w) };
            self.merge_add(src, dst);
            src.fill(T::zero());
        }
    }
}

/// [`im2col`] for strides above 1: each channel's input rows are first split into phases
/// ([`Phases`]), after which every tile row is a `memcpy` again (a strided gather per element
/// ran at a fraction of the speed).
#[inline(always)]
fn im2col_strided<T: Element>(
    x: &[T],
    g: &ConvGeom,
    band: (usize, usize),
    tile: &mut [T],
    row_stride: usize,
) {
    let ph = Phases::new(g, band);
    let row_len = g.stride * ph.phase_len;
    let mut buf = vec![T::zero(); ph.len()];
    let mut split_channel = usize::MAX;
    for t in taps(g, band) {
        if t.c != split_channel {
            let plane = &x[t.c * g.in_plane()..(t.c + 1) * g.in_plane()];
            for (iy, dst) in (ph.rows.0..ph.rows.1).zip(buf.chunks_exact_mut(row_len)) {
                ph.split(&plane[iy * g.w..(iy + 1) * g.w], dst);
            }
            split_channel = t.c;
        }
        let src =
            t.iy.map(|iy| &buf[ph.at(iy, t.ix0)..][..t.cols.1 - t.cols.0]);
        t.write(tile, row_stride, g.ow, src);
    }
}

simd_dispatch! {
    /// [`im2col_strided`] for the CPU's widest vectors.
    fn im2col_strided_simd<T: Element>(
        x: &[T], g: &ConvGeom, band: (usize, usize), tile: &mut [T], row_stride: usize,
    ) => im2col_strided
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
    if g.stride == 1 {
        for t in taps(g, (oy0, oy1)) {
            let (Some(iy), (lo, hi)) = (t.iy, t.cols) else {
                continue;
            };
            // SAFETY: the tap's input row lies inside image `c` and its columns
            // `ix0..ix0 + hi − lo` inside the row (`valid_cols`); the caller owns the row.
            let dst = unsafe {
                std::slice::from_raw_parts_mut(
                    dx.add(t.c * g.in_plane() + iy * g.w + t.ix0),
                    hi - lo,
                )
            };
            add_assign(dst, &col[t.row * npx + t.r * g.ow..][lo..hi]);
        }
    } else {
        // SAFETY: as this function's.
        unsafe { col2im_strided_simd(col, g, (oy0, oy1), SendPtr(dx)) };
    }
}

/// `dst += src`, element-wise.
#[inline(always)]
fn add_assign<T: Element>(dst: &mut [T], src: &[T]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d += *s;
    }
}

/// [`col2im_add`] for strides above 1: the taps are summed into each channel's rows in phase
/// order ([`Phases`]), where a tap's columns are contiguous, and each row is then added onto
/// `dx` in one interleaving pass.
///
/// # Safety
/// As [`col2im_add`]'s.
#[inline(always)]
unsafe fn col2im_strided<T: Element>(
    col: &[T],
    g: &ConvGeom,
    band: (usize, usize),
    dx: SendPtr<T>,
) {
    let npx = (band.1 - band.0) * g.ow;
    let ph = Phases::new(g, band);
    let mut acc = vec![T::zero(); ph.len()];
    let mut channel = 0;
    for t in taps(g, band) {
        if t.c != channel {
            // SAFETY: as this function's.
            unsafe { ph.flush(&mut acc, g, dx.get(), channel) };
            channel = t.c;
        }
        if let (Some(iy), (lo, hi)) = (t.iy, t.cols) {
            let src = &col[t.row * npx + t.r * g.ow..][lo..hi];
            add_assign(&mut acc[ph.at(iy, t.ix0)..][..hi - lo], src);
        }
    }
    if g.c_in > 0 {
        // SAFETY: as this function's.
        unsafe { ph.flush(&mut acc, g, dx.get(), channel) };
    }
}

simd_dispatch! {
    /// [`col2im_strided`] for the CPU's widest vectors.
    [unsafe] fn col2im_strided_simd<T: Element>(
        col: &[T], g: &ConvGeom, band: (usize, usize), dx: SendPtr<T>,
    ) => col2im_strided
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
            (2, 8, 7, 3, 3, 1),
            (1, 9, 10, 3, 3, 2),
            (2, 3, 4, 3, 2, 0),
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
            // Two bands of rows give the same tile columns and the same sum back.
            let split = g.oh / 2;
            let mut banded = vec![0.0; c * h * w];
            for (oy0, oy1) in [(0, split), (split, g.oh)] {
                let npx_band = (oy1 - oy0) * g.ow;
                let mut part = vec![f64::NAN; g.depth() * npx_band];
                im2col(&x, &g, (oy0, oy1), &mut part, npx_band);
                let mut cv_part = Vec::with_capacity(part.len());
                for row in 0..g.depth() {
                    let whole = &tile[row * npx + oy0 * g.ow..row * npx + oy1 * g.ow];
                    assert_eq!(&part[row * npx_band..(row + 1) * npx_band], whole);
                    cv_part.extend_from_slice(&cv[row * npx + oy0 * g.ow..row * npx + oy1 * g.ow]);
                }
                // SAFETY: as above; the bands (the first one empty when oh = 1) run one after
                // the other.
                unsafe { col2im_add(&cv_part, &g, oy0, oy1, banded.as_mut_ptr()) };
            }
            assert_eq!(
                banded, back,
                "banded col2im: c {c} h {h} w {w} k {k} s {s} p {p}"
            );
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
