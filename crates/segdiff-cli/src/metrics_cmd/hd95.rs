//! `segdiff metrics hd95`: MONAI `HausdorffDistanceMetric` at a percentile (95 by default).

use anyhow::{ensure, Context, Result};
use clap::Args;
use segdiff_eval::{hausdorff_distance, HausdorffConfig};

use super::class_report::ClassReport;
use super::masks::{load_masks, MaskArgs};

#[derive(Debug, Args)]
pub struct HausdorffArgs {
    #[command(flatten)]
    pub masks: MaskArgs,
    /// Percentile of the surface distances, in (0, 100]; 100 is the plain Hausdorff distance
    /// (MONAI `percentile=None`: +inf where only one of the two masks is empty; with a percentile
    /// below 100 that case is NaN and ignored, as MONAI computes it).
    #[arg(long, default_value_t = 95.0)]
    pub percentile: f64,
    /// Pixel size as ROW,COL (e.g. mm); distances are in pixels without it.
    #[arg(long, value_name = "ROW,COL", value_parser = parse_spacing)]
    pub spacing: Option<[f64; 2]>,
}

/// `ROW,COL`, both finite and positive.
pub(super) fn parse_spacing(s: &str) -> std::result::Result<[f64; 2], String> {
    let parts: Vec<&str> = s.split(',').map(str::trim).collect();
    let parsed: Vec<f64> = parts.iter().filter_map(|p| p.parse().ok()).collect();
    match parsed[..] {
        [r, c] if parts.len() == 2 && [r, c].iter().all(|v| v.is_finite() && *v > 0.0) => {
            Ok([r, c])
        }
        _ => Err(format!("`{s}`: expected ROW,COL with two positive numbers")),
    }
}

pub(super) fn hausdorff_report(args: &HausdorffArgs) -> Result<ClassReport> {
    let p = args.percentile;
    ensure!(
        p.is_finite() && p > 0.0 && p <= 100.0,
        "--percentile {p}: must lie in (0, 100]"
    );
    let m = &args.masks;
    let (names, pred, target, num_classes) = load_masks(m)?;
    let cfg = HausdorffConfig {
        num_classes,
        include_background: m.include_background,
        // MONAI's HD100 is `percentile=None` (the maximum, +inf for a one-sided empty mask).
        percentile: (p < 100.0).then_some(p),
        spacing: args.spacing,
    };
    let scores = hausdorff_distance(&pred, &target, &cfg).context("computing Hausdorff")?;
    let mut r = ClassReport::new("hausdorff", m, num_classes, names, &scores);
    r.percentile = Some(p);
    r.spacing = Some(args.spacing);
    Ok(r)
}
