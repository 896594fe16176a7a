//! 8-bit resizing with Pillow's semantics, and fitting non-square slices into a square.
//!
//! The paper's pipeline resizes PNGs with torchvision on PIL images, i.e. Pillow's
//! `Image.resize(size, BILINEAR)` for images and `NEAREST` for masks. `image`'s own resize keeps
//! f32 between its two passes and uses other kernel bounds, so it does not give Pillow's bytes;
//! this module reproduces Pillow's algorithm instead (checked bit-exact against Pillow 13 in the
//! tests):
//!
//! * **bilinear** (`Resample.c`): a triangle filter whose support is scaled by the shrink factor
//!   (so shrinking is antialiased); per output pixel the taps run over
//!   `[⌊c − s + ½⌋, ⌊c + s + ½⌋)` clamped to the input, with `c = (x + ½)·scale`,
//!   `s = scale.max(1)`; weights are normalised, turned into 22-bit fixed point (rounded half away
//!   from zero), applied in two separable passes, each rounding (`+2²¹`, `>> 22`) and clamping to
//!   0..=255. The pass order matters for the bytes: Pillow 13 (PR #9549, "if height is scaled down
//!   significantly more than width, resize vertically first") runs the vertical pass first exactly
//!   when `h < H` and `H − h > 2·(W − w)`, otherwise horizontal first (older Pillow: always
//!   horizontal first; the two agree on square → square). The rule was confirmed on 587 random
//!   size pairs against Pillow 13.0.0 and is pinned by `pil_resize_extra.safetensors`;
//! * **nearest** (`ImagingScaleAffine`): source index `⌊x₀ + ½·step + x·step⌋` with
//!   `step = in/out`, where the position is accumulated step by step in f64 as Pillow does.

use image::GrayImage;
use serde::{Deserialize, Serialize};

/// Pillow's fixed-point precision for 8-bit resampling (`32 − 8 − 2`).
const PRECISION_BITS: u32 = 22;

/// How a non-square slice is made square before resizing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fit {
    /// Pad the short side with background, centred (the extra pixel, if any, goes after).
    #[default]
    Pad,
    /// Crop the long side, centred (the extra pixel, if any, is removed from the end).
    Crop,
    /// Resize each side independently (distorts the aspect ratio).
    Stretch,
}

impl Fit {
    /// Parse `pad`, `crop` or `stretch`.
    pub fn parse(s: &str) -> Option<Fit> {
        match s.to_ascii_lowercase().as_str() {
            "pad" => Some(Fit::Pad),
            "crop" => Some(Fit::Crop),
            "stretch" => Some(Fit::Stretch),
            _ => None,
        }
    }

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Fit::Pad => "pad",
            Fit::Crop => "crop",
            Fit::Stretch => "stretch",
        }
    }
}

/// Make `img` square as `fit` says (`Stretch` leaves it unchanged); `fill` is the pad value.
pub fn fit_square(img: &GrayImage, fit: Fit, fill: u8) -> GrayImage {
    let (w, h) = img.dimensions();
    if w == h || fit == Fit::Stretch {
        return img.clone();
    }
    match fit {
        Fit::Pad => {
            let s = w.max(h);
            let (ox, oy) = ((s - w) / 2, (s - h) / 2);
            let mut out = GrayImage::from_pixel(s, s, image::Luma([fill]));
            image::imageops::replace(&mut out, img, i64::from(ox), i64::from(oy));
            out
        }
        _ => {
            let s = w.min(h);
            let (ox, oy) = ((w - s) / 2, (h - s) / 2);
            image::imageops::crop_imm(img, ox, oy, s, s).to_image()
        }
    }
}

/// Per output pixel: first input index and normalised weights of Pillow's bilinear filter
/// (`precompute_coeffs`: triangle of support 1, widened by the shrink factor), in f64.
pub(crate) fn bilinear_weights(in_size: usize, out_size: usize) -> Vec<(usize, Vec<f64>)> {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filterscale;
    let ss = 1.0 / filterscale;
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            // C `(int)` casts truncate toward zero.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let n = xmax.saturating_sub(xmin);
            let mut w: Vec<f64> = (0..n)
                .map(|x| {
                    let t = (((x + xmin) as f64 - center + 0.5) * ss).abs();
                    if t < 1.0 {
                        1.0 - t
                    } else {
                        0.0
                    }
                })
                .collect();
            let total: f64 = w.iter().sum();
            if total != 0.0 {
                for v in &mut w {
                    *v /= total;
                }
            }
            (xmin, w)
        })
        .collect()
}

/// [`bilinear_weights`] in Pillow's fixed point.
fn bilinear_coeffs(in_size: usize, out_size: usize) -> Vec<(usize, Vec<i32>)> {
    let one = f64::from(1u32 << PRECISION_BITS);
    bilinear_weights(in_size, out_size)
        .into_iter()
        .map(|(xmin, w)| {
            let fixed = w
                .iter()
                .map(|&v| {
                    if v < 0.0 {
                        (-0.5 + v * one) as i32
                    } else {
                        (0.5 + v * one) as i32
                    }
                })
                .collect();
            (xmin, fixed)
        })
        .collect()
}

#[inline]
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// One separable bilinear pass over the rows of a `w × h` buffer (`horizontal`) or its columns.
fn bilinear_pass(src: &[u8], w: usize, h: usize, out_len: usize, horizontal: bool) -> Vec<u8> {
    let half = 1i32 << (PRECISION_BITS - 1);
    if horizontal {
        let coeffs = bilinear_coeffs(w, out_len);
        let mut out = vec![0u8; out_len * h];
        for y in 0..h {
            let row = &src[y * w..(y + 1) * w];
            for (x, (xmin, k)) in coeffs.iter().enumerate() {
                let mut acc = half;
                for (i, &kk) in k.iter().enumerate() {
                    acc += i32::from(row[xmin + i]) * kk;
                }
                out[y * out_len + x] = clip8(acc);
            }
        }
        out
    } else {
        let coeffs = bilinear_coeffs(h, out_len);
        let mut out = vec![0u8; w * out_len];
        for (y, (ymin, k)) in coeffs.iter().enumerate() {
            for x in 0..w {
                let mut acc = half;
                for (i, &kk) in k.iter().enumerate() {
                    acc += i32::from(src[(ymin + i) * w + x]) * kk;
                }
                out[y * w + x] = clip8(acc);
            }
        }
        out
    }
}

/// Pillow-exact `Image.resize((w, h), BILINEAR)` of an 8-bit grey image.
pub fn resize_bilinear(img: &GrayImage, out_w: u32, out_h: u32) -> GrayImage {
    let (w, h) = img.dimensions();
    if (w, h) == (out_w, out_h) {
        return img.clone();
    }
    let (w, h, ow, oh) = (w as usize, h as usize, out_w as usize, out_h as usize);
    let src = img.as_raw();
    let vertical_first = oh < h && (h - oh) as i64 > 2 * (w as i64 - ow as i64);
    let out = if vertical_first {
        let tmp = bilinear_pass(src, w, h, oh, false);
        if ow != w {
            bilinear_pass(&tmp, w, oh, ow, true)
        } else {
            tmp
        }
    } else {
        let tmp = if ow != w {
            bilinear_pass(src, w, h, ow, true)
        } else {
            src.to_vec()
        };
        if oh != h {
            bilinear_pass(&tmp, ow, h, oh, false)
        } else {
            tmp
        }
    };
    // Sizes match by construction.
    GrayImage::from_raw(out_w, out_h, out).unwrap_or_else(|| GrayImage::new(out_w, out_h))
}

/// Source index of each output pixel for Pillow's nearest-neighbour scaling.
fn nearest_index(in_size: usize, out_size: usize) -> Vec<usize> {
    let step = in_size as f64 / out_size as f64;
    let mut pos = step * 0.5;
    let mut out = Vec::with_capacity(out_size);
    for _ in 0..out_size {
        let i = if pos < 0.0 { 0 } else { pos as usize };
        out.push(i.min(in_size - 1));
        pos += step;
    }
    out
}

/// Pillow-exact `Image.resize((w, h), NEAREST)` of an 8-bit image (used for class-id masks).
pub fn resize_nearest(img: &GrayImage, out_w: u32, out_h: u32) -> GrayImage {
    let (w, h) = img.dimensions();
    if (w, h) == (out_w, out_h) {
        return img.clone();
    }
    let xs = nearest_index(w as usize, out_w as usize);
    let ys = nearest_index(h as usize, out_h as usize);
    let src = img.as_raw();
    let mut out = Vec::with_capacity(out_w as usize * out_h as usize);
    for &y in &ys {
        let row = &src[y * w as usize..(y + 1) * w as usize];
        out.extend(xs.iter().map(|&x| row[x]));
    }
    GrayImage::from_raw(out_w, out_h, out).unwrap_or_else(|| GrayImage::new(out_w, out_h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_pads_and_crops_centred() {
        let img = GrayImage::from_fn(4, 2, |x, y| image::Luma([(1 + x + 10 * y) as u8]));
        let p = fit_square(&img, Fit::Pad, 0);
        assert_eq!(p.dimensions(), (4, 4));
        // One row of background above, one below.
        assert_eq!(p.get_pixel(0, 0)[0], 0);
        assert_eq!(p.get_pixel(0, 1)[0], 1);
        assert_eq!(p.get_pixel(3, 2)[0], 14);
        assert_eq!(p.get_pixel(3, 3)[0], 0);
        let c = fit_square(&img, Fit::Crop, 0);
        assert_eq!(c.dimensions(), (2, 2));
        assert_eq!(c.get_pixel(0, 0)[0], 2);
        let odd = GrayImage::from_pixel(3, 6, image::Luma([9]));
        let p = fit_square(&odd, Fit::Pad, 0);
        // 3 columns padded to 6: one before, two after.
        assert_eq!(
            (
                p.get_pixel(0, 0)[0],
                p.get_pixel(1, 0)[0],
                p.get_pixel(4, 0)[0]
            ),
            (0, 9, 0)
        );
        assert_eq!(fit_square(&odd, Fit::Stretch, 0).dimensions(), (3, 6));
    }

    #[test]
    fn constant_image_stays_constant_and_weights_sum_to_one() {
        let img = GrayImage::from_pixel(37, 23, image::Luma([201]));
        for (w, h) in [(16, 16), (64, 50), (5, 90)] {
            let r = resize_bilinear(&img, w, h);
            assert!(r.pixels().all(|p| p[0] == 201), "{w}x{h}");
        }
        for (n, m) in [(256, 64), (233, 256), (7, 3)] {
            for (_, k) in bilinear_coeffs(n, m) {
                let s: i64 = k.iter().map(|&v| i64::from(v)).sum();
                assert!(
                    (s - (1 << PRECISION_BITS)).abs() <= k.len() as i64,
                    "{n}->{m}: {s}"
                );
            }
        }
    }

    #[test]
    fn nearest_picks_centres() {
        assert_eq!(nearest_index(4, 2), vec![1, 3]);
        assert_eq!(nearest_index(2, 4), vec![0, 0, 1, 1]);
        assert_eq!(nearest_index(3, 3), vec![0, 1, 2]);
    }
}
