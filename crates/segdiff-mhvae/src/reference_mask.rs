//! The reference shape R that the segmentation head warps: a disc at the image centre with radius
//! a quarter of the image height (paper §5.1), i.e. radius 0.5 in normalised units.

use candle_core::{Device, Tensor};

use crate::Result;

/// R as an (h × w) row-major raster: centre ((w−1)/2, (h−1)/2) in pixels, radius h/4 pixels.
/// Binary (`soft = false`: 1 where the pixel centre is inside) or with a one-pixel linear edge
/// (`soft = true`: clamp(r − d + ½, 0, 1)), which gives the Dice loss gradients a wider band.
pub fn reference_disc(h: usize, w: usize, soft: bool) -> Vec<f32> {
    let (cx, cy) = ((w as f64 - 1.0) / 2.0, (h as f64 - 1.0) / 2.0);
    let r = h as f64 / 4.0;
    let mut out = Vec::with_capacity(h * w);
    for i in 0..h {
        for j in 0..w {
            let d = ((j as f64 - cx).powi(2) + (i as f64 - cy).powi(2)).sqrt();
            let v = if soft {
                (r - d + 0.5).clamp(0.0, 1.0)
            } else if d <= r {
                1.0
            } else {
                0.0
            };
            out.push(v as f32);
        }
    }
    out
}

/// R as a (1, 1, h, w) f32 tensor.
pub fn reference_disc_tensor(h: usize, w: usize, soft: bool, device: &Device) -> Result<Tensor> {
    Ok(Tensor::from_vec(
        reference_disc(h, w, soft),
        (1, 1, h, w),
        device,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disc_area_and_symmetry() {
        for (h, w) in [(64, 64), (128, 128), (64, 96)] {
            for soft in [false, true] {
                let r = reference_disc(h, w, soft);
                let area: f64 = r.iter().map(|&v| v as f64).sum();
                let expected = std::f64::consts::PI * (h as f64 / 4.0).powi(2);
                assert!(
                    (area / expected - 1.0).abs() < 0.01,
                    "{h}x{w} soft={soft}: {area} vs {expected}"
                );
                for i in 0..h {
                    for j in 0..w {
                        assert_eq!(r[i * w + j], r[(h - 1 - i) * w + (w - 1 - j)]);
                        assert_eq!(r[i * w + j], r[(h - 1 - i) * w + j]);
                    }
                }
            }
        }
    }
}
