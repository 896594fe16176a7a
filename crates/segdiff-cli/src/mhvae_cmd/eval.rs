//! `segdiff mhvae eval`: k-fold training and testing of MHVAE warps and the MONAI UNet baseline,
//! as a table shaped like the paper's Table 1 (segdiff-mhvae's `kfold`).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use segdiff_data::DatasetOptions;
use segdiff_eval::SegmenterRecipe;
use segdiff_mhvae::kfold::{folds, markdown, run_kfold, KfoldEvent, KfoldPlan, PooledPairs};
use segdiff_mhvae::trainer::MhvaeTrainOptions;
use segdiff_mhvae::warp::ControlPoints;
use segdiff_mhvae::{MhvaeConfig, WarpKind};
use serde::Serialize;

use crate::flag_values::flag;
use crate::runtime::Runtime;

#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// Prepared dataset; every split is pooled, then cut into folds.
    #[arg(long)]
    pub data: PathBuf,
    /// Number of folds.
    #[arg(long, default_value_t = 5)]
    pub folds: usize,
    /// Warps to evaluate, one table row each (`affine`, `tps`).
    #[arg(long, value_delimiter = ',', default_value = "affine,tps", value_parser = flag::<WarpKind>())]
    pub warp: Vec<WarpKind>,
    /// Resize images to this size on load (32·2^k; default: as stored).
    #[arg(long)]
    pub size: Option<u32>,
    /// TPS control points.
    #[arg(long, default_value = "circular:20")]
    pub control_points: ControlPoints,
    /// Optimiser steps of each fold's MHVAE.
    #[arg(long, default_value_t = 1000)]
    pub steps: usize,
    /// Batch size of the MHVAE runs.
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// Epochs of each fold's MONAI UNet baseline (0: no baseline row).
    #[arg(long, default_value_t = 30)]
    pub baseline_epochs: usize,
    /// Seed of the folds and of every training run.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output folder: report.md, report.json, and each fold's run under runs/.
    #[arg(long, default_value = "mhvae-eval")]
    pub out: PathBuf,
    /// Print the JSON report on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Report<'a> {
    data: String,
    images: usize,
    folds: usize,
    seed: u64,
    mhvae_steps: usize,
    baseline_epochs: usize,
    hausdorff_units: &'static str,
    rows: &'a [segdiff_mhvae::kfold::ModelRow],
}

pub fn run(args: &EvalArgs, rt: &Runtime) -> Result<()> {
    if args.warp.contains(&WarpKind::None) {
        bail!("--warp none has no segmentation to score; evaluate affine and/or tps");
    }
    let started = Instant::now();
    let opts = DatasetOptions {
        resize: args.size,
        require_masks: true,
        ..DatasetOptions::default()
    };
    let pairs = PooledPairs::open(&args.data, &opts)
        .with_context(|| format!("opening {}", args.data.display()))?;
    let first = pairs.load(&[0]).context("reading the first pair")?;
    let (_, c, h, w) = first.images.dims4()?;
    if h != w {
        bail!("images are {h}×{w}; the MHVAE needs square images (use --size)");
    }
    let fold_sets = folds(pairs.len(), args.folds, args.seed)?;
    let models = args
        .warp
        .iter()
        .map(|&warp| {
            let config = MhvaeConfig {
                image_size: h,
                image_channels: c,
                warp,
                control_points: args.control_points,
                ..MhvaeConfig::default()
            };
            config
                .validate()
                .context("the model for these images (--size)")?;
            Ok((warp.to_string(), config))
        })
        .collect::<Result<Vec<_>>>()?;
    let run = segdiff_diffusion::train::RunOptions {
        total_steps: args.steps,
        batch_size: args.batch_size,
        seed: args.seed,
        ..MhvaeTrainOptions::default_run()
    };
    run.validate()?;
    let baseline = (args.baseline_epochs > 0).then(|| SegmenterRecipe {
        epochs: args.baseline_epochs,
        seed: args.seed,
        ..SegmenterRecipe::default()
    });
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    segdiff_io::remove_stale_temps_tree(&args.out)?;
    let work = args.out.join("runs");
    if work.exists() {
        std::fs::remove_dir_all(&work).with_context(|| format!("clearing {}", work.display()))?;
    }
    let plan = KfoldPlan {
        pairs: &pairs,
        folds: fold_sets,
        models,
        run,
        baseline,
        work: &work,
        device: rt.device.clone(),
    };
    let runs = (plan.models.len() + usize::from(plan.baseline.is_some())) * args.folds;
    let bar = crate::progress::bar(runs as u64, "k-fold");
    let mut started_runs = 0;
    let rows = run_kfold(&plan, &mut |e| {
        if let KfoldEvent::Training { model, fold } = e {
            if started_runs > 0 {
                bar.inc(1);
            }
            started_runs += 1;
            bar.set_message(format!("{model}, fold {}/{}", fold + 1, args.folds));
        }
    })?;
    bar.finish_and_clear();
    let note = format!(
        "MHVAE: {} steps per fold (batch {}, seed {}); baseline: segdiff's MONAI UNet segmenter, {} epochs per fold. Data: {}.",
        args.steps,
        args.batch_size,
        args.seed,
        args.baseline_epochs,
        args.data.display()
    );
    let md = markdown(&rows, pairs.len(), args.folds, &note);
    let report = Report {
        data: args.data.display().to_string(),
        images: pairs.len(),
        folds: args.folds,
        seed: args.seed,
        mhvae_steps: args.steps,
        baseline_epochs: args.baseline_epochs,
        hausdorff_units: "pixels",
        rows: &rows,
    };
    let json = serde_json::to_string_pretty(&report)?;
    segdiff_io::write_bytes_atomic(&args.out.join("report.md"), md.as_bytes())?;
    segdiff_io::write_bytes_atomic(&args.out.join("report.json"), json.as_bytes())?;
    if args.json {
        println!("{json}");
    } else {
        println!("{md}");
        println!(
            "report: {} and report.json ({:.1} min)",
            args.out.join("report.md").display(),
            started.elapsed().as_secs_f64() / 60.0
        );
    }
    Ok(())
}
