//! PSNR and SSIM of greyscale images with scikit-image semantics
//! (`skimage.metrics.peak_signal_noise_ratio`, `structural_similarity`), computed in f64.
//!
//! SSIM follows skimage exactly: local (weighted) means, variances and covariance from a
//! separable filter (7×7 uniform by default, or a Gaussian), the sample-covariance factor
//! `NP/(NP−1)` when asked for, `C1 = (K1·R)²`, `C2 = (K2·R)²`, and the mean of the SSIM map after
//! cropping `(win_size−1)/2` pixels from every side. Because of that crop only windows lying
//! entirely inside the image are used, so skimage's border mode never matters.

use serde::{Deserialize, Serialize};

use crate::error::{EvalError, Result};

/// PSNR in dB: `10·log10(data_range² / MSE)`; infinite for identical images.
pub fn psnr<T: Copy + Into<f64>>(a: &[T], b: &[T], data_range: f64) -> Result<f64> {
    check_pair(a.len(), b.len())?;
    check_data_range(data_range)?;
    if a.is_empty() {
        return Err(EvalError::InvalidArgument {
            name: "image size",
            value: "0".into(),
            reason: "PSNR needs at least one pixel",
        });
    }
    let sse: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| {
            let d = x.into() - y.into();
            d * d
        })
        .sum();
    let mse = sse / a.len() as f64;
    Ok(10.0 * (data_range * data_range / mse).log10())
}

/// The local window of SSIM.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum SsimWindow {
    /// Square box filter of odd side `size` (skimage default 7).
    Uniform { size: usize },
    /// Normalised Gaussian of std `sigma`, radius `int(truncate·sigma + 0.5)` (scipy.ndimage);
    /// skimage uses `truncate = 3.5`, giving 11 taps at `sigma = 1.5`.
    Gaussian { sigma: f64, truncate: f64 },
}

/// SSIM settings, named after skimage's arguments.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct SsimConfig {
    pub window: SsimWindow,
    /// Normalise (co)variances by `NP − 1` instead of `NP` (`NP` = window pixels).
    pub use_sample_covariance: bool,
    pub k1: f64,
    pub k2: f64,
}

impl SsimConfig {
    /// `structural_similarity(a, b, data_range=R)`: 7×7 uniform window, sample covariance.
    pub fn skimage_default() -> Self {
        Self {
            window: SsimWindow::Uniform { size: 7 },
            use_sample_covariance: true,
            k1: 0.01,
            k2: 0.03,
        }
    }

    /// Wang et al. (2004): `gaussian_weights=True, sigma=1.5, use_sample_covariance=False`.
    pub fn gaussian_wang2004() -> Self {
        Self {
            window: SsimWindow::Gaussian {
                sigma: 1.5,
                truncate: 3.5,
            },
            use_sample_covariance: false,
            k1: 0.01,
            k2: 0.03,
        }
    }

    /// Normalised 1-D filter taps (odd length).
    fn taps(&self) -> Result<Vec<f64>> {
        match self.window {
            SsimWindow::Uniform { size } => {
                if size == 0 || size % 2 == 0 {
                    return Err(EvalError::InvalidArgument {
                        name: "SSIM window size",
                        value: size.to_string(),
                        reason: "must be odd",
                    });
                }
                Ok(vec![1.0 / size as f64; size])
            }
            SsimWindow::Gaussian { sigma, truncate } => {
                if !(sigma.is_finite() && sigma > 0.0 && truncate.is_finite() && truncate >= 0.0) {
                    return Err(EvalError::InvalidArgument {
                        name: "SSIM Gaussian sigma/truncate",
                        value: format!("{sigma}/{truncate}"),
                        reason: "must be finite, sigma > 0, truncate >= 0",
                    });
                }
                // scipy.ndimage._gaussian_kernel1d: radius = int(truncate * sd + 0.5).
                let radius = (truncate * sigma + 0.5) as i64;
                let raw: Vec<f64> = (-radius..=radius)
                    .map(|x| (-0.5 / (sigma * sigma) * (x * x) as f64).exp())
                    .collect();
                let sum: f64 = raw.iter().sum();
                Ok(raw.into_iter().map(|v| v / sum).collect())
            }
        }
    }
}

/// Mean SSIM of two `height × width` row-major images with the given data range.
pub fn ssim<T: Copy + Into<f64>>(
    a: &[T],
    b: &[T],
    height: usize,
    width: usize,
    data_range: f64,
    cfg: &SsimConfig,
) -> Result<f64> {
    check_pair(a.len(), b.len())?;
    if a.len() != height * width {
        return Err(EvalError::ShapeMismatch {
            what: "SSIM image length vs height*width",
            left: vec![a.len()],
            right: vec![height, width],
        });
    }
    check_data_range(data_range)?;
    let taps = cfg.taps()?;
    let win = taps.len();
    if height < win || width < win {
        return Err(EvalError::InvalidArgument {
            name: "SSIM window size",
            value: win.to_string(),
            reason: "exceeds the image extent",
        });
    }
    let x: Vec<f64> = a.iter().map(|&v| v.into()).collect();
    let y: Vec<f64> = b.iter().map(|&v| v.into()).collect();
    let xx: Vec<f64> = x.iter().map(|v| v * v).collect();
    let yy: Vec<f64> = y.iter().map(|v| v * v).collect();
    let xy: Vec<f64> = x.iter().zip(&y).map(|(p, q)| p * q).collect();
    let filt = |img: &[f64]| valid_separable(img, height, width, &taps);
    let (ux, uy, uxx, uyy, uxy) = (filt(&x), filt(&y), filt(&xx), filt(&yy), filt(&xy));

    let np = (win * win) as f64;
    let cov_norm = if cfg.use_sample_covariance {
        np / (np - 1.0)
    } else {
        1.0
    };
    let c1 = (cfg.k1 * data_range).powi(2);
    let c2 = (cfg.k2 * data_range).powi(2);
    let sum: f64 = (0..ux.len())
        .map(|i| {
            let vx = cov_norm * (uxx[i] - ux[i] * ux[i]);
            let vy = cov_norm * (uyy[i] - uy[i] * uy[i]);
            let vxy = cov_norm * (uxy[i] - ux[i] * uy[i]);
            let a1 = 2.0 * ux[i] * uy[i] + c1;
            let a2 = 2.0 * vxy + c2;
            let b1 = ux[i] * ux[i] + uy[i] * uy[i] + c1;
            let b2 = vx + vy + c2;
            (a1 * a2) / (b1 * b2)
        })
        .sum();
    Ok(sum / ux.len() as f64)
}

/// Correlation with `taps` along rows then columns (scipy filters axis 0 first), keeping only
/// outputs whose window lies inside the image: `(h − win + 1) × (w − win + 1)`.
fn valid_separable(img: &[f64], h: usize, w: usize, taps: &[f64]) -> Vec<f64> {
    let win = taps.len();
    let (oh, ow) = (h - win + 1, w - win + 1);
    let mut pass1 = vec![0.0; oh * w];
    for r in 0..oh {
        for c in 0..w {
            pass1[r * w + c] = taps
                .iter()
                .enumerate()
                .map(|(k, t)| t * img[(r + k) * w + c])
                .sum();
        }
    }
    let mut out = vec![0.0; oh * ow];
    for r in 0..oh {
        let row = &pass1[r * w..(r + 1) * w];
        for c in 0..ow {
            out[r * ow + c] = taps.iter().zip(&row[c..c + win]).map(|(t, v)| t * v).sum();
        }
    }
    out
}

fn check_pair(a: usize, b: usize) -> Result<()> {
    if a != b {
        return Err(EvalError::ShapeMismatch {
            what: "image lengths",
            left: vec![a],
            right: vec![b],
        });
    }
    Ok(())
}

fn check_data_range(r: f64) -> Result<()> {
    if !(r.is_finite() && r > 0.0) {
        return Err(EvalError::InvalidArgument {
            name: "data_range",
            value: r.to_string(),
            reason: "must be finite and positive",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psnr_of_constant_offset() -> Result<()> {
        // MSE = 4 on range 255: 10 log10(255² / 4).
        let a = [10u8, 20, 30, 40];
        let b = [12u8, 18, 32, 38];
        let expected = 10.0 * (255.0f64 * 255.0 / 4.0).log10();
        assert!((psnr(&a, &b, 255.0)? - expected).abs() < 1e-12);
        assert!(psnr(&a, &a, 255.0)?.is_infinite());
        Ok(())
    }

    #[test]
    fn ssim_of_identical_images_is_one_and_gaussian_has_11_taps() -> Result<()> {
        let img: Vec<f64> = (0..20 * 16).map(|i| ((i * 37) % 101) as f64).collect();
        for cfg in [
            SsimConfig::skimage_default(),
            SsimConfig::gaussian_wang2004(),
        ] {
            assert!((ssim(&img, &img, 20, 16, 100.0, &cfg)? - 1.0).abs() < 1e-12);
        }
        let taps = SsimConfig::gaussian_wang2004().taps()?;
        assert_eq!(taps.len(), 11);
        assert!((taps.iter().sum::<f64>() - 1.0).abs() < 1e-15);
        Ok(())
    }

    #[test]
    fn ssim_rejects_small_images() {
        let img = vec![0.0f64; 36];
        assert!(matches!(
            ssim(&img, &img, 6, 6, 1.0, &SsimConfig::skimage_default()),
            Err(EvalError::InvalidArgument { .. })
        ));
    }
}
