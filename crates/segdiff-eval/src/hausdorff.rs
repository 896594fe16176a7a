//! Hausdorff distance (HD100) and its percentile variant (HD95) with MONAI
//! `HausdorffDistanceMetric` semantics.
//!
//! As MONAI computes it: the surface of a mask is `mask XOR binary_erosion(mask)` (scipy's
//! 4-connected cross, pixels outside the image count as background); distances are exact
//! Euclidean distances from each surface pixel of one mask to the nearest surface pixel of the
//! other, in pixels or scaled by the spacing; the value is the maximum over both directions of
//! each direction's percentile (`torch.quantile` "linear" interpolation) or maximum.
//!
//! Empty masks, as MONAI 1.6 scores them: empty in both → NaN; empty in only one of target and
//! prediction → every distance is +inf, so the maximum (HD100) is +inf while a percentile is NaN
//! (`torch.quantile` interpolates `inf + w·(inf − inf)`). NaN entries are ignored by
//! [`ClassScores::mean`]; +inf entries propagate into it, as in MONAI's reductions.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::class_scores::ClassScores;
use crate::error::{EvalError, Result};
use crate::label_maps::LabelMaps;

/// Which classes are scored, the percentile and the pixel spacing.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct HausdorffConfig {
    /// Classes are `0..num_classes`, 0 is background.
    pub num_classes: usize,
    /// Score class 0 too (MONAI default false).
    pub include_background: bool,
    /// `Some(95.0)` for HD95; `None` (or 0, as MONAI treats a falsy percentile) for the maximum.
    pub percentile: Option<f64>,
    /// Physical size of a pixel as `[row, column]`; `None` measures in pixels.
    pub spacing: Option<[f64; 2]>,
}

impl HausdorffConfig {
    /// HD95 in pixels without background, as segdiff reports it.
    pub fn hd95(num_classes: usize) -> Self {
        Self {
            num_classes,
            include_background: false,
            percentile: Some(95.0),
            spacing: None,
        }
    }

    /// The plain (100th percentile) Hausdorff distance in pixels without background.
    pub fn hd100(num_classes: usize) -> Self {
        Self {
            percentile: None,
            ..Self::hd95(num_classes)
        }
    }

    fn validate(&self) -> Result<()> {
        if self.num_classes < 1 || (!self.include_background && self.num_classes < 2) {
            return Err(EvalError::InvalidArgument {
                name: "num_classes",
                value: self.num_classes.to_string(),
                reason: "needs at least one scored class",
            });
        }
        if let Some(p) = self.percentile {
            if !(0.0..=100.0).contains(&p) {
                return Err(EvalError::InvalidArgument {
                    name: "percentile",
                    value: p.to_string(),
                    reason: "must lie in [0, 100]",
                });
            }
        }
        if let Some(s) = self.spacing {
            if s.iter().any(|v| !(v.is_finite() && *v > 0.0)) {
                return Err(EvalError::InvalidArgument {
                    name: "spacing",
                    value: format!("{s:?}"),
                    reason: "must be finite and positive",
                });
            }
        }
        Ok(())
    }
}

/// Hausdorff distance of every sample and scored class; reduce with [`ClassScores::mean`].
pub fn hausdorff_distance(
    pred: &LabelMaps,
    target: &LabelMaps,
    cfg: &HausdorffConfig,
) -> Result<ClassScores> {
    pred.check_same_shape(target, "hausdorff prediction vs target")?;
    cfg.validate()?;
    pred.check_classes(cfg.num_classes, "hausdorff prediction")?;
    target.check_classes(cfg.num_classes, "hausdorff target")?;
    let (n, h, w) = pred.shape();
    let first = usize::from(!cfg.include_background);
    let class_ids: Vec<u32> = (first..cfg.num_classes).map(|c| c as u32).collect();
    let spacing = cfg.spacing.unwrap_or([1.0, 1.0]);
    let values: Vec<f64> = (0..n * class_ids.len())
        .into_par_iter()
        .map(|i| {
            let (s, class) = (i / class_ids.len(), class_ids[i % class_ids.len()]);
            let p: Vec<bool> = pred.sample(s).iter().map(|&l| l == class).collect();
            let t: Vec<bool> = target.sample(s).iter().map(|&l| l == class).collect();
            mask_hausdorff(&p, &t, h, w, cfg.percentile, spacing)
        })
        .collect();
    Ok(ClassScores::new(values, n, class_ids))
}

/// Symmetric Hausdorff distance between two binary `height × width` masks (row-major), with the
/// same percentile, spacing and empty-mask (NaN / +inf) rules as [`hausdorff_distance`].
pub fn binary_hausdorff(
    pred: &[bool],
    target: &[bool],
    height: usize,
    width: usize,
    percentile: Option<f64>,
    spacing: Option<[f64; 2]>,
) -> Result<f64> {
    if pred.len() != height * width || target.len() != height * width {
        return Err(EvalError::ShapeMismatch {
            what: "binary masks vs height*width",
            left: vec![pred.len(), target.len()],
            right: vec![height, width],
        });
    }
    HausdorffConfig {
        num_classes: 2,
        include_background: false,
        percentile,
        spacing,
    }
    .validate()?;
    Ok(mask_hausdorff(
        pred,
        target,
        height,
        width,
        percentile,
        spacing.unwrap_or([1.0, 1.0]),
    ))
}

fn mask_hausdorff(
    pred: &[bool],
    target: &[bool],
    h: usize,
    w: usize,
    percentile: Option<f64>,
    spacing: [f64; 2],
) -> f64 {
    let edges_pred = surface(pred, h, w);
    let edges_target = surface(target, h, w);
    match (edges_pred.contains(&true), edges_target.contains(&true)) {
        (true, true) => {}
        (false, false) => return f64::NAN,
        _ => {
            return match percentile {
                Some(p) if p != 0.0 => f64::NAN,
                _ => f64::INFINITY,
            }
        }
    }
    let to_target = distances_at(&edges_pred, &squared_edt(&edges_target, h, w, spacing));
    let to_pred = distances_at(&edges_target, &squared_edt(&edges_pred, h, w, spacing));
    summarize(to_target, percentile).max(summarize(to_pred, percentile))
}

/// Foreground pixels with a background (or out-of-image) 4-neighbour: `mask ^ erosion(mask)`.
fn surface(mask: &[bool], h: usize, w: usize) -> Vec<bool> {
    let at = |r: usize, c: usize| mask[r * w + c];
    (0..h * w)
        .map(|i| {
            let (r, c) = (i / w, i % w);
            mask[i]
                && (r == 0
                    || c == 0
                    || r + 1 == h
                    || c + 1 == w
                    || !at(r - 1, c)
                    || !at(r + 1, c)
                    || !at(r, c - 1)
                    || !at(r, c + 1))
        })
        .collect()
}

fn distances_at(points: &[bool], squared: &[f64]) -> Vec<f64> {
    points
        .iter()
        .zip(squared)
        .filter(|(&p, _)| p)
        .map(|(_, d2)| d2.sqrt())
        .collect()
}

/// Maximum, or the percentile with linear interpolation between order statistics
/// (`numpy.percentile` / `torch.quantile` default). `values` is non-empty.
fn summarize(mut values: Vec<f64>, percentile: Option<f64>) -> f64 {
    match percentile {
        // MONAI tests `if not percentile`, so 0 means the maximum as well.
        Some(p) if p != 0.0 => {
            values.sort_by(f64::total_cmp);
            let pos = p / 100.0 * (values.len() - 1) as f64;
            let lo = pos.floor() as usize;
            let hi = (lo + 1).min(values.len() - 1);
            let frac = pos - lo as f64;
            values[lo] + frac * (values[hi] - values[lo])
        }
        _ => values.into_iter().fold(f64::NEG_INFINITY, f64::max),
    }
}

/// Exact squared Euclidean distance from every pixel to the nearest `true` pixel of `seeds`
/// (infinite when there is none), with `spacing = [row, column]`: the separable lower-envelope
/// algorithm of Felzenszwalb & Huttenlocher (2012), one pass over columns, one over rows.
fn squared_edt(seeds: &[bool], h: usize, w: usize, spacing: [f64; 2]) -> Vec<f64> {
    let mut grid: Vec<f64> = seeds
        .iter()
        .map(|&s| if s { 0.0 } else { f64::INFINITY })
        .collect();
    let mut line = Vec::with_capacity(h.max(w));
    let mut out = vec![0.0; h.max(w)];
    let mut scratch = EnvelopeScratch::default();
    for c in 0..w {
        line.clear();
        line.extend((0..h).map(|r| grid[r * w + c]));
        lower_envelope(&line, spacing[0], &mut out[..h], &mut scratch);
        for r in 0..h {
            grid[r * w + c] = out[r];
        }
    }
    for r in 0..h {
        line.clear();
        line.extend_from_slice(&grid[r * w..(r + 1) * w]);
        lower_envelope(&line, spacing[1], &mut out[..w], &mut scratch);
        grid[r * w..(r + 1) * w].copy_from_slice(&out[..w]);
    }
    grid
}

#[derive(Default)]
struct EnvelopeScratch {
    /// Sample index of each parabola in the envelope.
    vertex: Vec<usize>,
    /// Where each parabola starts dominating (physical units).
    start: Vec<f64>,
}

/// `out[q] = min_p f[p] + (step·(q − p))²`, skipping infinite `f[p]`.
fn lower_envelope(f: &[f64], step: f64, out: &mut [f64], s: &mut EnvelopeScratch) {
    s.vertex.clear();
    s.start.clear();
    let z = |i: usize| i as f64 * step;
    for q in (0..f.len()).filter(|&q| f[q].is_finite()) {
        loop {
            let Some(&v) = s.vertex.last() else {
                s.vertex.push(q);
                s.start.push(f64::NEG_INFINITY);
                break;
            };
            let cross = ((f[q] + z(q) * z(q)) - (f[v] + z(v) * z(v))) / (2.0 * (z(q) - z(v)));
            if s.start.last().is_some_and(|&st| cross <= st) {
                s.vertex.pop();
                s.start.pop();
            } else {
                s.vertex.push(q);
                s.start.push(cross);
                break;
            }
        }
    }
    if s.vertex.is_empty() {
        out.fill(f64::INFINITY);
        return;
    }
    let mut k = 0;
    for (q, o) in out.iter_mut().enumerate() {
        while k + 1 < s.vertex.len() && s.start[k + 1] < z(q) {
            k += 1;
        }
        let p = s.vertex[k];
        let d = z(q) - z(p);
        *o = f[p] + d * d;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brute_force_sq(seeds: &[bool], h: usize, w: usize, sp: [f64; 2]) -> Vec<f64> {
        (0..h * w)
            .map(|i| {
                (0..h * w)
                    .filter(|&j| seeds[j])
                    .map(|j| {
                        let dr = (i / w) as f64 - (j / w) as f64;
                        let dc = (i % w) as f64 - (j % w) as f64;
                        (dr * sp[0]).powi(2) + (dc * sp[1]).powi(2)
                    })
                    .fold(f64::INFINITY, f64::min)
            })
            .collect()
    }

    #[test]
    fn edt_matches_brute_force_with_anisotropic_spacing() {
        let (h, w) = (9, 13);
        // A fixed scatter of seeds (pseudo-random by a multiplicative hash, no RNG needed).
        let seeds: Vec<bool> = (0..h * w)
            .map(|i| (i * 2654435761usize) % 17 == 3)
            .collect();
        assert!(seeds.iter().filter(|&&s| s).count() > 3);
        for sp in [[1.0, 1.0], [0.7, 2.5]] {
            let fast = squared_edt(&seeds, h, w, sp);
            let slow = brute_force_sq(&seeds, h, w, sp);
            let err = fast
                .iter()
                .zip(&slow)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            assert!(err < 1e-9, "spacing {sp:?}: max err {err}");
        }
    }

    #[test]
    fn surface_of_a_filled_square_is_its_ring() {
        let (h, w) = (5, 5);
        let mask: Vec<bool> = (0..25)
            .map(|i| (1..4).contains(&(i / 5)) && (1..4).contains(&(i % 5)))
            .collect();
        let s = surface(&mask, h, w);
        assert_eq!(s.iter().filter(|&&e| e).count(), 8);
        assert!(!s[2 * 5 + 2]);
        // At the image border the mask is its own surface.
        let full = vec![true; 9];
        assert_eq!(surface(&full, 3, 3).iter().filter(|&&e| e).count(), 8);
    }

    #[test]
    fn shifted_square_and_empty_masks() -> Result<()> {
        // Two 3x3 squares, one shifted 2 columns: every surface point is at most 2 away.
        let sq = |c0: usize| -> Vec<bool> {
            (0..6 * 8)
                .map(|i| (1..4).contains(&(i / 8)) && (c0..c0 + 3).contains(&(i % 8)))
                .collect()
        };
        let (a, b) = (sq(1), sq(3));
        assert_eq!(binary_hausdorff(&a, &b, 6, 8, None, None)?, 2.0);
        assert_eq!(binary_hausdorff(&a, &b, 6, 8, None, Some([1.0, 0.5]))?, 1.0);
        let empty = vec![false; 48];
        assert!(binary_hausdorff(&a, &empty, 6, 8, Some(95.0), None)?.is_nan());
        assert!(binary_hausdorff(&empty, &a, 6, 8, Some(95.0), None)?.is_nan());
        assert_eq!(
            binary_hausdorff(&empty, &a, 6, 8, None, None)?,
            f64::INFINITY
        );
        assert!(binary_hausdorff(&empty, &empty, 6, 8, None, None)?.is_nan());
        Ok(())
    }

    #[test]
    fn percentile_interpolates_like_numpy() {
        // numpy.percentile([0, 1, 2, 10], 95) = 2 + 0.85 * 8 = 8.8
        assert!((summarize(vec![10.0, 0.0, 2.0, 1.0], Some(95.0)) - 8.8).abs() < 1e-12);
        assert_eq!(summarize(vec![3.0, 7.0], None), 7.0);
        assert_eq!(summarize(vec![3.0, 7.0], Some(0.0)), 7.0);
    }
}
