//! Shape of one convolution and how its output is cut into bands of rows, the unit of work
//! of every kernel in this module.

use candle_core::{Error, Result};

/// A 2-D convolution NCHW × `[c_out, c_in, k, k]`, groups 1, dilation 1, the same stride and
/// padding on both axes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConvGeom {
    pub batch: usize,
    pub c_in: usize,
    pub h: usize,
    pub w: usize,
    pub c_out: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
    pub oh: usize,
    pub ow: usize,
}

impl ConvGeom {
    /// Checks that the input `(batch, c_in, h, w)` and weight `(c_out, c_in, k, k)` fit.
    pub fn new(input: &[usize], weight: &[usize], stride: usize, pad: usize) -> Result<Self> {
        let (&[batch, c_in, h, w], &[c_out, wc_in, kh, kw]) = (input, weight) else {
            return Err(Error::Msg(format!(
                "conv2d: expected a 4-D input and weight, got {input:?} and {weight:?}"
            )));
        };
        if wc_in != c_in || kh != kw || kh == 0 || stride == 0 {
            return Err(Error::Msg(format!(
                "conv2d: input {input:?} does not fit weight {weight:?} (square kernel, \
                 groups 1) with stride {stride}"
            )));
        }
        if h + 2 * pad < kh || w + 2 * pad < kw {
            return Err(Error::Msg(format!(
                "conv2d: input {input:?} with padding {pad} is smaller than the {kh}x{kw} kernel"
            )));
        }
        Ok(Self {
            batch,
            c_in,
            h,
            w,
            c_out,
            k: kh,
            stride,
            pad,
            oh: (h + 2 * pad - kh) / stride + 1,
            ow: (w + 2 * pad - kw) / stride + 1,
        })
    }

    /// Checks that `dy` has this convolution's output shape (for the backward ops).
    pub fn check_output(&self, dy: &[usize]) -> Result<()> {
        if dy != [self.batch, self.c_out, self.oh, self.ow] {
            return Err(Error::Msg(format!(
                "conv2d backward: dy {dy:?} does not match {self:?}"
            )));
        }
        Ok(())
    }

    /// Rows of the im2col matrix: `c_in · k · k`.
    pub fn depth(&self) -> usize {
        self.c_in * self.k * self.k
    }

    /// Elements of one input channel plane.
    pub fn in_plane(&self) -> usize {
        self.h * self.w
    }

    /// Elements of one output channel plane.
    pub fn out_plane(&self) -> usize {
        self.oh * self.ow
    }

    /// A 1×1, stride-1, unpadded convolution: the input image already is its im2col matrix.
    pub fn is_pointwise(&self) -> bool {
        self.k == 1 && self.stride == 1 && self.pad == 0
    }

    /// Output columns `[lo, hi)` whose input column `ox·stride + kx − pad` lies inside the image.
    pub fn valid_cols(&self, kx: usize) -> (usize, usize) {
        valid_range(self.ow, self.w, self.stride, self.pad, kx)
    }
}

/// Output positions `o < out` with `0 <= o·stride + kx − pad < len`.
fn valid_range(out: usize, len: usize, stride: usize, pad: usize, kx: usize) -> (usize, usize) {
    let lo = pad.saturating_sub(kx).div_ceil(stride).min(out);
    let hi = if len + pad > kx {
        ((len + pad - kx - 1) / stride + 1).min(out)
    } else {
        0
    };
    (lo, hi.max(lo))
}

/// Bytes of one im2col tile (or, for pointwise convolutions, of the input block a band reads):
/// it must stay in the 2 MiB L2 next to the packed weights (the probe found 1 MiB best).
const TILE_BYTES: usize = 1 << 20;
/// Fewer output pixels per GEMM than this and re-packing the weights for every band dominates.
const MIN_BAND_PIXELS: usize = 256;

/// Output rows cut into `count` bands of `rows` rows (the last may be shorter), per image; or,
/// once [`Bands::grouped`], whole images `images` at a time when one image is smaller than a
/// band.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bands {
    pub rows: usize,
    pub count: usize,
    /// Images per work item: 1, or more when whole images are side by side in one tile.
    pub images: usize,
    /// Enough independent bands to run one per thread with single-threaded GEMMs; otherwise the
    /// bands run one after the other with the GEMM itself parallel.
    pub parallel: bool,
}

/// One work item: images `[n0, n1)`, output rows `[oy0, oy1)` of each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Item {
    pub n0: usize,
    pub n1: usize,
    pub oy0: usize,
    pub oy1: usize,
}

impl Item {
    /// Output pixels per image.
    pub fn pixels(&self, g: &ConvGeom) -> usize {
        (self.oy1 - self.oy0) * g.ow
    }

    /// Output pixels of the whole item (the GEMM's width).
    pub fn width(&self, g: &ConvGeom) -> usize {
        (self.n1 - self.n0) * self.pixels(g)
    }
}

impl Bands {
    /// Bands for `g` with `elem` bytes per element; `min_rows` keeps bands that scatter into
    /// the input (col2im) from touching the band after next.
    pub fn plan(g: &ConvGeom, elem: usize, min_rows: usize, threads: usize) -> Self {
        let threads = threads.max(1);
        let pixels = Self::pixel_budget(g, elem);
        let mut rows = pixels
            .div_ceil(g.ow.max(1))
            .clamp(min_rows.max(1), g.oh.max(1));
        let mut count = g.oh.div_ceil(rows);
        let items = g.batch * count;
        if items >= threads && items < 8 * threads && !items.is_multiple_of(threads) {
            // Few bands: cut them so that every thread gets the same number of them.
            let per_image = (items.div_ceil(threads) * threads).div_ceil(g.batch);
            let r = g.oh.div_ceil(per_image).max(min_rows.max(1));
            if r * g.ow >= MIN_BAND_PIXELS / 2 {
                rows = r;
                count = g.oh.div_ceil(rows);
            }
        }
        Self {
            rows,
            count,
            images: 1,
            parallel: g.batch * count >= threads && threads > 1,
        }
    }

    /// Output pixels per tile: [`TILE_BYTES`] of im2col rows, at least [`MIN_BAND_PIXELS`].
    fn pixel_budget(g: &ConvGeom, elem: usize) -> usize {
        (TILE_BYTES / (g.depth() * elem).max(1)).max(MIN_BAND_PIXELS)
    }

    /// These bands, with images smaller than a band grouped side by side (at most one group per
    /// thread's share of the batch), so that the GEMMs of small images (2², 4², 8²) are not a
    /// handful of columns wide. For kernels that build every item's tile with im2col.
    pub fn grouped(self, g: &ConvGeom, elem: usize, threads: usize) -> Self {
        let plane = g.out_plane().max(1);
        let fit = Self::pixel_budget(g, elem) / plane;
        if self.count != 1 || fit < 2 || g.batch < 2 {
            return self;
        }
        let threads = threads.max(1);
        let images = fit.min(g.batch.div_ceil(threads)).max(1);
        Self {
            images,
            parallel: g.batch.div_ceil(images) >= threads && threads > 1,
            ..self
        }
    }

    /// Number of work items.
    pub fn items(&self, g: &ConvGeom) -> usize {
        g.batch.div_ceil(self.images) * self.count
    }

    /// The images and output rows of work item `item`.
    pub fn item(&self, g: &ConvGeom, item: usize) -> Item {
        let group = item / self.count;
        let band = item % self.count;
        let oy0 = band * self.rows;
        let n0 = group * self.images;
        Item {
            n0,
            n1: (n0 + self.images).min(g.batch),
            oy0,
            oy1: (oy0 + self.rows).min(g.oh),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brute(out: usize, len: usize, stride: usize, pad: usize, kx: usize) -> (usize, usize) {
        let ok: Vec<usize> = (0..out)
            .filter(|&o| {
                let i = (o * stride + kx) as isize - pad as isize;
                i >= 0 && (i as usize) < len
            })
            .collect();
        match (ok.first(), ok.last()) {
            (Some(&a), Some(&b)) => (a, b + 1),
            _ => (0, 0),
        }
    }

    #[test]
    fn valid_ranges_match_brute_force() {
        for len in 1..9 {
            for k in [1, 3, 5] {
                for stride in 1..4 {
                    for pad in 0..3 {
                        if len + 2 * pad < k {
                            continue;
                        }
                        let out = (len + 2 * pad - k) / stride + 1;
                        for kx in 0..k {
                            let (lo, hi) = valid_range(out, len, stride, pad, kx);
                            let (blo, bhi) = brute(out, len, stride, pad, kx);
                            if bhi == 0 {
                                assert_eq!(lo, hi, "len {len} k {k} s {stride} p {pad} kx {kx}");
                            } else {
                                assert_eq!(
                                    (lo, hi),
                                    (blo, bhi),
                                    "len {len} k {k} s {stride} p {pad} kx {kx}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn bands_cover_every_row_once() {
        for (batch, c, size, threads) in [
            (1, 128, 256, 2),
            (1, 512, 16, 2),
            (3, 4, 7, 2),
            (2, 256, 32, 3),
            (16, 128, 2, 2),
            (16, 128, 4, 3),
            (5, 64, 8, 2),
        ] {
            let g = ConvGeom::new(&[batch, c, size, size], &[c, c, 3, 3], 1, 1).unwrap();
            let plain = Bands::plan(&g, 4, 1, threads);
            let grouped = plain.grouped(&g, 4, threads);
            if size <= 4 {
                assert!(grouped.images > 1, "{batch} {c} {size}: {grouped:?}");
            }
            for b in [plain, grouped] {
                let mut seen = vec![0usize; batch * g.oh];
                for item in 0..b.items(&g) {
                    let it = b.item(&g, item);
                    assert!(it.n1 > it.n0 && it.oy1 > it.oy0, "{it:?}");
                    for n in it.n0..it.n1 {
                        for r in it.oy0..it.oy1 {
                            seen[n * g.oh + r] += 1;
                        }
                    }
                }
                assert!(seen.iter().all(|&s| s == 1), "{batch} {c} {size}: {seen:?}");
            }
        }
    }
}
