//! Fréchet distance between two Gaussians fitted to feature sets, as pytorch-fid computes it.
//!
//! `FID = |μ1 − μ2|² + Tr(Σ1) + Tr(Σ2) − 2·Tr(sqrtm(Σ1Σ2))`, with the mean and the covariance
//! (`np.cov(rowvar=False)`, ddof 1) in f64. pytorch-fid takes scipy's `sqrtm` of the
//! non-symmetric product and drops small imaginary parts. Its trace is computed here through the
//! symmetric PSD matrix `√Σ1·Σ2·√Σ1`, which has the same eigenvalues as `Σ1Σ2`:
//! `Tr sqrtm(Σ1Σ2) = Σ √λi(√Σ1·Σ2·√Σ1)`. That route stays real and stable when the covariances are
//! rank deficient (fewer samples than feature dimensions).

use candle_core::{DType, Tensor};
use nalgebra::{DMatrix, DVector, SymmetricEigen};
use serde::{Deserialize, Serialize};

use crate::error::{EvalError, Result};

/// Mean and covariance of a feature set (the `mu`, `sigma` pytorch-fid caches).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "StatsFile", into = "StatsFile")]
pub struct FeatureStats {
    count: usize,
    mean: DVector<f64>,
    covariance: DMatrix<f64>,
}

/// On-disk form: the covariance as a row-major list.
#[derive(Serialize, Deserialize)]
struct StatsFile {
    count: usize,
    mean: Vec<f64>,
    covariance: Vec<f64>,
}

impl TryFrom<StatsFile> for FeatureStats {
    type Error = EvalError;
    fn try_from(f: StatsFile) -> Result<Self> {
        Self::from_parts(f.count, f.mean, f.covariance)
    }
}

impl From<FeatureStats> for StatsFile {
    fn from(s: FeatureStats) -> Self {
        let d = s.dim();
        Self {
            count: s.count,
            mean: s.mean.iter().copied().collect(),
            covariance: (0..d * d).map(|i| s.covariance[(i / d, i % d)]).collect(),
        }
    }
}

impl FeatureStats {
    /// Statistics of `n` feature rows of length `d` (row-major `features`, any float type).
    pub fn from_rows<T: Copy + Into<f64>>(features: &[T], n: usize, d: usize) -> Result<Self> {
        if n < 2 || d == 0 {
            return Err(EvalError::BadShape {
                what: "FID features",
                shape: vec![n, d],
                expected: "(N >= 2, D >= 1): the covariance uses ddof = 1",
            });
        }
        if features.len() != n * d {
            return Err(EvalError::ShapeMismatch {
                what: "FID feature buffer vs rows*dim",
                left: vec![features.len()],
                right: vec![n, d],
            });
        }
        let rows: Vec<f64> = features.iter().map(|&v| v.into()).collect();
        check_finite(&rows, "FID features")?;
        let x = DMatrix::from_row_slice(n, d, &rows);
        let mean = x.row_mean().transpose();
        let centered = DMatrix::from_fn(n, d, |r, c| x[(r, c)] - mean[c]);
        let covariance = centered.tr_mul(&centered) / (n - 1) as f64;
        Ok(Self {
            count: n,
            mean,
            covariance,
        })
    }

    /// Statistics of an `(N, D)` feature tensor (computed in f64 whatever its dtype).
    pub fn from_tensor(features: &Tensor) -> Result<Self> {
        let (n, d) = features.dims2().map_err(|_| EvalError::BadShape {
            what: "FID feature tensor",
            shape: features.dims().to_vec(),
            expected: "(N, D)",
        })?;
        let v = features
            .to_dtype(DType::F64)?
            .flatten_all()?
            .to_vec1::<f64>()?;
        Self::from_rows(&v, n, d)
    }

    /// Statistics given directly: `mean` of length D, row-major D×D symmetric `covariance`.
    pub fn from_parts(count: usize, mean: Vec<f64>, covariance: Vec<f64>) -> Result<Self> {
        let d = mean.len();
        if d == 0 || covariance.len() != d * d {
            return Err(EvalError::ShapeMismatch {
                what: "FID covariance length vs dim²",
                left: vec![covariance.len()],
                right: vec![d, d],
            });
        }
        check_finite(&mean, "FID mean")?;
        check_finite(&covariance, "FID covariance")?;
        let covariance = DMatrix::from_row_slice(d, d, &covariance);
        let asym = (&covariance - covariance.transpose()).amax();
        if asym > 1e-9 * covariance.amax().max(1.0) {
            return Err(EvalError::InvalidArgument {
                name: "FID covariance",
                value: format!("max |S - S^T| = {asym}"),
                reason: "must be symmetric",
            });
        }
        Ok(Self {
            count,
            mean: DVector::from_vec(mean),
            covariance,
        })
    }

    /// Number of feature rows the statistics came from.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Feature dimension D.
    pub fn dim(&self) -> usize {
        self.mean.len()
    }

    /// μ.
    pub fn mean(&self) -> &[f64] {
        self.mean.as_slice()
    }

    /// Σ (ddof 1).
    pub fn covariance(&self) -> &DMatrix<f64> {
        &self.covariance
    }
}

/// The terms of the Fréchet distance (pytorch-fid's intermediate values).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct FrechetTerms {
    /// The distance itself.
    pub fid: f64,
    /// `|μ1 − μ2|²`.
    pub mean_term: f64,
    /// `Tr Σ1`.
    pub trace_s1: f64,
    /// `Tr Σ2`.
    pub trace_s2: f64,
    /// `Tr sqrtm(Σ1Σ2)`.
    pub trace_covmean: f64,
}

/// Fréchet distance between two fitted Gaussians.
pub fn frechet_distance(a: &FeatureStats, b: &FeatureStats) -> Result<f64> {
    Ok(frechet_terms(a, b)?.fid)
}

/// Fréchet distance with its terms.
pub fn frechet_terms(a: &FeatureStats, b: &FeatureStats) -> Result<FrechetTerms> {
    if a.dim() != b.dim() {
        return Err(EvalError::ShapeMismatch {
            what: "FID feature dimensions",
            left: vec![a.dim()],
            right: vec![b.dim()],
        });
    }
    let diff = &a.mean - &b.mean;
    let mean_term = diff.dot(&diff);
    let trace_s1 = a.covariance.trace();
    let trace_s2 = b.covariance.trace();
    let trace_covmean = trace_sqrt_product(&a.covariance, &b.covariance)?;
    Ok(FrechetTerms {
        fid: mean_term + trace_s1 + trace_s2 - 2.0 * trace_covmean,
        mean_term,
        trace_s1,
        trace_s2,
        trace_covmean,
    })
}

/// FID between two `(N, D)` feature tensors.
pub fn fid_from_features(a: &Tensor, b: &Tensor) -> Result<f64> {
    frechet_distance(
        &FeatureStats::from_tensor(a)?,
        &FeatureStats::from_tensor(b)?,
    )
}

/// `Tr sqrtm(S1·S2)` for symmetric PSD `S1`, `S2` via `√S1·S2·√S1`. Eigenvalues that round
/// below zero are clipped, as they are zero in exact arithmetic.
fn trace_sqrt_product(s1: &DMatrix<f64>, s2: &DMatrix<f64>) -> Result<f64> {
    let d = s1.nrows();
    let eig = SymmetricEigen::try_new(s1.clone(), f64::EPSILON, 1000 * d + 1000).ok_or(
        EvalError::InvalidArgument {
            name: "FID covariance",
            value: format!("{d}x{d}"),
            reason: "symmetric eigendecomposition did not converge",
        },
    )?;
    let mut scaled = eig.eigenvectors.clone();
    for (mut col, &lambda) in scaled.column_iter_mut().zip(eig.eigenvalues.iter()) {
        col *= lambda.max(0.0).sqrt();
    }
    let sqrt_s1 = &scaled * eig.eigenvectors.transpose();
    let m = &sqrt_s1 * s2 * &sqrt_s1;
    let m = (&m + m.transpose()) * 0.5;
    Ok(m.symmetric_eigenvalues()
        .iter()
        .map(|&l| l.max(0.0).sqrt())
        .sum())
}

fn check_finite(v: &[f64], what: &'static str) -> Result<()> {
    match v.iter().position(|x| !x.is_finite()) {
        Some(index) => Err(EvalError::NonFinite {
            what,
            index,
            value: v[index],
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diagonal_gaussians_have_closed_form() -> Result<()> {
        // For diagonal Σ: FID = |Δμ|² + Σ (√a_i − √b_i)².
        let a = FeatureStats::from_parts(10, vec![0.0, 1.0], vec![4.0, 0.0, 0.0, 9.0])?;
        let b = FeatureStats::from_parts(10, vec![1.0, 1.0], vec![1.0, 0.0, 0.0, 16.0])?;
        let expected = 1.0 + (2.0f64 - 1.0).powi(2) + (3.0f64 - 4.0).powi(2);
        let t = frechet_terms(&a, &b)?;
        assert!((t.fid - expected).abs() < 1e-12, "{t:?}");
        assert!((t.trace_covmean - (2.0 + 12.0)).abs() < 1e-12);
        Ok(())
    }

    #[test]
    fn covariance_uses_ddof_one() -> Result<()> {
        // Rows (0,0), (2,4): mean (1,2); centered (−1,−2),(1,2); cov = [[2,4],[4,8]] with n−1 = 1.
        let s = FeatureStats::from_rows(&[0.0f64, 0.0, 2.0, 4.0], 2, 2)?;
        assert_eq!(s.mean(), &[1.0, 2.0]);
        assert_eq!(s.covariance().as_slice(), &[2.0, 4.0, 4.0, 8.0]);
        Ok(())
    }

    #[test]
    fn stats_round_trip_through_json() -> Result<()> {
        let s = FeatureStats::from_rows(&[0.0f32, 1.0, 2.0, 4.0, 1.0, 1.5], 3, 2)?;
        let text = serde_json::to_string(&s).map_err(|e| EvalError::Json {
            path: "<memory>".into(),
            source: e,
        })?;
        let back: FeatureStats = serde_json::from_str(&text).map_err(|e| EvalError::Json {
            path: "<memory>".into(),
            source: e,
        })?;
        // serde_json may round the last bit of an f64 unless `float_roundtrip` is on.
        assert_eq!((s.count(), s.dim()), (back.count(), back.dim()));
        let close = |x: &[f64], y: &[f64]| {
            x.iter()
                .zip(y)
                .all(|(a, b)| (a - b).abs() <= 1e-15 * a.abs().max(1.0))
        };
        assert!(close(s.mean(), back.mean()));
        assert!(close(
            s.covariance().as_slice(),
            back.covariance().as_slice()
        ));
        Ok(())
    }

    #[test]
    fn rejects_bad_input() {
        assert!(FeatureStats::from_rows(&[1.0f64, 2.0], 1, 2).is_err());
        assert!(matches!(
            FeatureStats::from_rows(&[1.0f64, f64::NAN, 0.0, 0.0], 2, 2),
            Err(EvalError::NonFinite { index: 1, .. })
        ));
        assert!(FeatureStats::from_parts(2, vec![0.0, 0.0], vec![1.0, 2.0, 0.0, 1.0]).is_err());
    }
}
