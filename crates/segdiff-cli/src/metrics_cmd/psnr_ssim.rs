//! `segdiff metrics psnr-ssim`: scikit-image's PSNR and SSIM between two folders of greyscale PNGs.

use std::path::PathBuf;

use anyhow::{ensure, Context, Result};
use clap::Args;
use segdiff_eval::{psnr, ssim, SsimConfig};
use serde::Serialize;

use super::output::{finite_or_null, fmt_value};
use super::png_folders::{paired_names, read_grey};

#[derive(Debug, Args)]
pub struct ImageArgs {
    /// Folder of generated images (PNG, 8- or 16-bit grey).
    #[arg(long, value_name = "DIR")]
    pub pred: PathBuf,
    /// Folder of reference images with the same file names.
    #[arg(long, value_name = "DIR")]
    pub target: PathBuf,
    /// SSIM with the 11-tap Gaussian window (σ = 1.5, population covariance) of Wang et al.
    /// 2004 instead of scikit-image's default 7×7 uniform window.
    #[arg(long)]
    pub gaussian: bool,
    /// Data range for PSNR and SSIM (default: 255 for 8-bit, 65535 for 16-bit images).
    #[arg(long, value_name = "R")]
    pub data_range: Option<f64>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
pub(super) struct ImageReport {
    metric: &'static str,
    pred_dir: PathBuf,
    target_dir: PathBuf,
    pub(super) bit_depth: u8,
    pub(super) data_range: f64,
    /// "uniform7" (scikit-image default) or "gaussian1.5" (Wang et al. 2004).
    pub(super) ssim_window: &'static str,
    pub(super) per_file: Vec<ImageScores>,
    /// Mean PSNR in dB over all files; null when infinite (some pair is identical).
    pub(super) psnr_mean: Option<f64>,
    pub(super) psnr_mean_infinite: bool,
    /// Files whose PSNR is infinite (identical images).
    pub(super) psnr_infinite_count: usize,
    /// Mean PSNR over the files with finite PSNR; null when there are none.
    pub(super) psnr_mean_finite: Option<f64>,
    pub(super) ssim_mean: f64,
}

#[derive(Debug, Serialize)]
pub(super) struct ImageScores {
    file: String,
    /// dB; null = infinite (identical images).
    pub(super) psnr: Option<f64>,
    pub(super) ssim: f64,
}

/// `--data-range`, or scikit-image's default for uint8 / uint16 arrays.
fn data_range(given: Option<f64>, bit_depth: u8) -> f64 {
    given.unwrap_or(if bit_depth == 8 { 255.0 } else { 65535.0 })
}

pub(super) fn image_report(args: &ImageArgs) -> Result<ImageReport> {
    let names = paired_names(&args.pred, &args.target)?;
    let cfg = if args.gaussian {
        SsimConfig::gaussian_wang2004()
    } else {
        SsimConfig::skimage_default()
    };
    if let Some(r) = args.data_range {
        ensure!(
            r.is_finite() && r > 0.0,
            "--data-range {r}: must be positive"
        );
    }
    let mut depth: Option<(u8, PathBuf)> = None;
    let mut per_file = Vec::with_capacity(names.len());
    let mut psnrs = Vec::with_capacity(names.len());
    for name in &names {
        let (pp, tp) = (args.pred.join(name), args.target.join(name));
        let (p, t) = (read_grey(&pp)?, read_grey(&tp)?);
        ensure!(
            (p.height, p.width) == (t.height, t.width),
            "{} is {}x{} but {} is {}x{}",
            pp.display(),
            p.height,
            p.width,
            tp.display(),
            t.height,
            t.width
        );
        for (g, path) in [(&p, &pp), (&t, &tp)] {
            match &depth {
                None => depth = Some((g.bit_depth, path.clone())),
                Some((d, first)) => ensure!(
                    g.bit_depth == *d,
                    "{} is {}-bit but {} is {d}-bit: all images must share one bit depth",
                    path.display(),
                    g.bit_depth,
                    first.display()
                ),
            }
        }
        let range = data_range(args.data_range, p.bit_depth);
        let v = psnr(&p.pixels, &t.pixels, range).with_context(|| format!("PSNR of {name}"))?;
        let s = ssim(&p.pixels, &t.pixels, p.height, p.width, range, &cfg)
            .with_context(|| format!("SSIM of {name} ({}x{})", p.height, p.width))?;
        psnrs.push(v);
        per_file.push(ImageScores {
            file: name.clone(),
            psnr: finite_or_null(v),
            ssim: s,
        });
    }
    let bit_depth = depth.map_or(8, |(d, _)| d);
    Ok(ImageReport::new(args, bit_depth, &psnrs, per_file))
}

impl ImageReport {
    /// The report of `per_file` scores, whose PSNRs (infinities included) are `psnrs`.
    fn new(args: &ImageArgs, bit_depth: u8, psnrs: &[f64], per_file: Vec<ImageScores>) -> Self {
        let n = per_file.len() as f64;
        let psnr_mean = psnrs.iter().sum::<f64>() / n;
        let finite: Vec<f64> = psnrs.iter().copied().filter(|v| v.is_finite()).collect();
        ImageReport {
            metric: "psnr-ssim",
            pred_dir: args.pred.clone(),
            target_dir: args.target.clone(),
            bit_depth,
            data_range: data_range(args.data_range, bit_depth),
            ssim_window: if args.gaussian {
                "gaussian1.5"
            } else {
                "uniform7"
            },
            psnr_mean: finite_or_null(psnr_mean),
            psnr_mean_infinite: psnr_mean.is_infinite(),
            psnr_infinite_count: psnrs.len() - finite.len(),
            psnr_mean_finite: (!finite.is_empty())
                .then(|| finite.iter().sum::<f64>() / finite.len() as f64),
            ssim_mean: per_file.iter().map(|f| f.ssim).sum::<f64>() / n,
            per_file,
        }
    }
}

pub(super) fn print_image_table(r: &ImageReport) {
    println!(
        "PSNR/SSIM: {} image pairs, {}-bit, data range {}, SSIM window {}",
        r.per_file.len(),
        r.bit_depth,
        r.data_range,
        r.ssim_window
    );
    println!(
        "PSNR mean  {} dB{}",
        fmt_value(r.psnr_mean, r.psnr_mean_infinite, 3),
        if r.psnr_infinite_count > 0 {
            format!(
                " ({} identical pair(s) with infinite PSNR; mean of the others {} dB)",
                r.psnr_infinite_count,
                fmt_value(r.psnr_mean_finite, false, 3)
            )
        } else {
            String::new()
        }
    );
    println!("SSIM mean  {:.5}", r.ssim_mean);
}
