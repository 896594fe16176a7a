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

use candle_core::Tensor;
use rand::rngs::StdRng;
use rand::SeedableRng;
use segdiff_data::{Dataset, Split};
use segdiff_diffusion::train::{DatasetBatches, TrainData};
use segdiff_eval::{frechet_distance, FeatureStats};
use segdiff_mhvae::refiner::{EmNoise, RefinerSampler};

use super::images::load_model;
use super::refiner::Refining;
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
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

/// The pure-sampling FID section (paper App. G): prior → VAE → refiner, against the real test
/// images (`--folds 0` runs it alone).
#[derive(Debug, clap::Args)]
pub struct SamplingArgs {
    /// The trained MHVAE the refiners belong to (needed with --refiner).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Adds FID of pure samples refined by this refiner vs the real test images, beside the
    /// VAE's unrefined samples and real training images (the floor).
    #[arg(long)]
    pub refiner: Option<PathBuf>,
    /// A second refiner of the same VAE, trained with `--formulation diffusevae2`: the paper's
    /// App.-G comparison, on the same prior draws.
    #[arg(long)]
    pub baseline_refiner: Option<PathBuf>,
    /// Samples per FID row (the paper used 5000).
    #[arg(long, default_value_t = 256)]
    pub samples: usize,
    /// Refiner sampler: `em`, `dpm` or `dpm-sde`.
    #[arg(long, default_value = "em", value_parser = flag::<RefinerSampler>())]
    pub sampler: RefinerSampler,
    /// Refiner sampler steps (default: 100 for em, 10 for dpm and dpm-sde).
    #[arg(long)]
    pub sampler_steps: Option<usize>,
    /// FID in this segmenter's bottleneck feature space (`segdiff segmenter train`; trained on
    /// real images of this size), as `segdiff eval`.
    #[arg(long)]
    pub segmenter: Option<PathBuf>,
    /// FID in Inception-v3's pool feature space too (torchvision weights as .safetensors; see
    /// `segdiff eval --help`).
    #[arg(long, value_name = "FILE")]
    pub inception_weights: Option<PathBuf>,
}

/// One row of the sampling table.
#[derive(Debug, Serialize)]
pub struct FidRow {
    pub images: String,
    pub count: usize,
    pub fid_segmenter: Option<f64>,
    pub fid_inception: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct SamplingReport {
    pub model: String,
    pub sampler: String,
    pub steps: usize,
    pub real_test_images: usize,
    pub rows: Vec<FidRow>,
}

/// Feature extractors of the FID section.
struct Encoders {
    segmenter: Option<segdiff_eval::MonaiUNet>,
    inception: Option<segdiff_eval::InceptionV3>,
}

impl Encoders {
    /// Feature statistics of images in [0, 1] in each space.
    fn stats(&self, images01: &Tensor) -> Result<[Option<FeatureStats>; 2]> {
        let seg = match &self.segmenter {
            Some(m) => Some(FeatureStats::from_tensor(&segdiff_eval::encode(
                m,
                &images01.affine(2.0, -1.0)?,
                16,
            )?)?),
            None => None,
        };
        let inc = match &self.inception {
            Some(net) => Some(FeatureStats::from_tensor(
                &net.features_batched(images01, 16)?,
            )?),
            None => None,
        };
        Ok([seg, inc])
    }
}

fn sampling_fid(
    data: &std::path::Path,
    a: &SamplingArgs,
    seed: u64,
    rt: &Runtime,
) -> Result<SamplingReport> {
    let model_dir = a
        .model
        .as_ref()
        .context("--refiner needs --model (the VAE it was trained for)")?;
    if a.segmenter.is_none() && a.inception_weights.is_none() {
        bail!("the FID section needs an encoder: --segmenter DIR and/or --inception-weights FILE");
    }
    if a.samples < 2 {
        bail!("--samples must be at least 2 (FID needs a covariance)");
    }
    let vae = load_model(model_dir, &rt.device)?;
    let (c, s) = (vae.config().image_channels, vae.config().image_size);
    let refiners = [
        (a.refiner.as_deref(), "refined"),
        (a.baseline_refiner.as_deref(), "baseline: refined"),
    ]
    .into_iter()
    .filter_map(|(p, what)| p.map(|p| (p, what)))
    .map(|(p, what)| {
        let r = Refining::load(Some(p), a.sampler, a.sampler_steps, rt)?.context("refiner")?;
        Ok((r, what, p))
    })
    .collect::<Result<Vec<_>>>()?;
    let segmenter = match &a.segmenter {
        Some(dir) => {
            let (m, spec) = segdiff_eval::load_segmenter(dir, &rt.device)
                .with_context(|| format!("loading the segmenter {}", dir.display()))?;
            if spec.image_size != [s, s] {
                bail!(
                    "{}: the segmenter was trained on {}×{} images, the MHVAE's are {s}×{s}",
                    dir.display(),
                    spec.image_size[0],
                    spec.image_size[1]
                );
            }
            if spec.network.in_channels != c {
                bail!(
                    "{}: the segmenter takes {} channel(s), the MHVAE's images have {c}",
                    dir.display(),
                    spec.network.in_channels
                );
            }
            Some(m)
        }
        None => None,
    };
    let inception = match &a.inception_weights {
        Some(p) => Some(
            segdiff_eval::InceptionV3::load(p, &rt.device)
                .with_context(|| format!("loading Inception-v3 weights {}", p.display()))?,
        ),
        None => None,
    };
    let enc = Encoders {
        segmenter,
        inception,
    };
    let opts = DatasetOptions {
        force_grey: c == 1,
        resize: Some(s as u32),
        require_masks: false,
        ..DatasetOptions::default()
    };
    let real = |split: Split, limit: usize| -> Result<Tensor> {
        let set = Dataset::open(data, split, &opts)
            .with_context(|| format!("opening the {split:?} split of {}", data.display()))?;
        let batches = DatasetBatches::new(set, false);
        let idx: Vec<usize> = (0..batches.len().min(limit)).collect();
        if idx.len() < 2 {
            bail!(
                "{}: the {split:?} split has {} image(s); FID needs at least 2",
                data.display(),
                idx.len()
            );
        }
        Ok(((batches.load(&idx)?.images + 1.0)? * 0.5)?.to_device(&rt.device)?)
    };
    let test = real(Split::Test, usize::MAX)?;
    let reference = enc.stats(&test)?;
    let fid = |images01: &Tensor, name: String| -> Result<FidRow> {
        let st = enc.stats(images01)?;
        let f = |i: usize| -> Result<Option<f64>> {
            Ok(match (&st[i], &reference[i]) {
                (Some(x), Some(y)) => Some(frechet_distance(x, y)?).filter(|v| v.is_finite()),
                _ => None,
            })
        };
        Ok(FidRow {
            images: name,
            count: images01.dim(0)?,
            fid_segmenter: f(0)?,
            fid_inception: f(1)?,
        })
    };
    let mut rows = vec![fid(
        &real(Split::Train, a.samples)?,
        "real training images (the floor)".into(),
    )?];
    let batches = super::refiner::shard_batches(a.samples, None)?;
    let bar = crate::progress::bar((a.samples * (1 + refiners.len())) as u64, "FID samples");
    let mut vae_out = Vec::new();
    let mut refined: Vec<Vec<Tensor>> = vec![Vec::new(); refiners.len()];
    for b in &batches {
        let batch_seed = seed.wrapping_add(b.start as u64);
        let mut rng = StdRng::seed_from_u64(batch_seed);
        let x_hat = super::refiner::prior_decode(&vae, b.len(), &mut rng, rt)?;
        bar.inc(b.len() as u64);
        // Each refiner continues the prior draws' stream from the same state (so its noise is
        // `mhvae sample`'s for this seed, and the same for every refiner).
        for (k, (r, _, _)) in refiners.iter().enumerate() {
            refined[k].push(r.run(&x_hat, EmNoise::Rng(&mut rng.clone()))?);
            bar.inc(b.len() as u64);
        }
        vae_out.push(x_hat);
    }
    bar.finish_and_clear();
    rows.push(fid(
        &Tensor::cat(&vae_out, 0)?,
        "VAE prior samples, unrefined".into(),
    )?);
    for ((r, what, p), parts) in refiners.iter().zip(&refined) {
        rows.push(fid(
            &Tensor::cat(parts, 0)?,
            format!(
                "{what} by {} ({} formulation)",
                p.display(),
                r.refiner.meta.formulation
            ),
        )?);
    }
    let first = &refiners.first().context("a refiner")?.0;
    Ok(SamplingReport {
        model: model_dir.display().to_string(),
        sampler: first.sampler.to_string(),
        steps: first.steps,
        real_test_images: test.dim(0)?,
        rows,
    })
}

fn sampling_markdown(r: &SamplingReport, seed: u64) -> String {
    let fmt = |v: Option<f64>| v.map_or("–".into(), |v| format!("{v:.4}"));
    let mut md = format!(
        "## Pure sampling (paper App. G)\n\nFID against the {} real test images; prior draws from seed {seed} shared by every row; refiners sampled with {} in {} network calls. Model: {}.\n\n| images | n | FID (segmenter features) | FID (Inception-v3) |\n|---|---|---|---|\n",
        r.real_test_images, r.sampler, r.steps, r.model
    );
    for row in &r.rows {
        md += &format!(
            "| {} | {} | {} | {} |\n",
            row.images,
            row.count,
            fmt(row.fid_segmenter),
            fmt(row.fid_inception)
        );
    }
    md
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
    #[serde(skip_serializing_if = "Option::is_none")]
    sampling: Option<SamplingReport>,
}

pub fn run(args: &EvalArgs, rt: &Runtime) -> Result<()> {
    let sampling_args = &args.sampling;
    if args.folds == 0 && sampling_args.refiner.is_none() {
        bail!("--folds 0 leaves nothing to evaluate: give --refiner (the sampling FID) or at least 2 folds");
    }
    if sampling_args.refiner.is_none() && sampling_args.baseline_refiner.is_some() {
        bail!("--baseline-refiner is compared with --refiner: give both");
    }
    if args.warp.contains(&WarpKind::None) {
        bail!("--warp none has no segmentation to score; evaluate affine and/or tps");
    }
    let started = Instant::now();
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    segdiff_io::remove_stale_temps_tree(&args.out)?;
    let (rows, images, mut md) = if args.folds > 0 {
        kfold_section(args, rt)?
    } else {
        (Vec::new(), 0, String::new())
    };
    let sampling = match &sampling_args.refiner {
        Some(_) => {
            let r = sampling_fid(&args.data, sampling_args, args.seed, rt)?;
            if !md.is_empty() {
                md.push('\n');
            }
            md += &sampling_markdown(&r, args.seed);
            Some(r)
        }
        None => None,
    };
    let report = Report {
        data: args.data.display().to_string(),
        images,
        folds: args.folds,
        seed: args.seed,
        mhvae_steps: args.steps,
        baseline_epochs: args.baseline_epochs,
        hausdorff_units: "pixels",
        rows: &rows,
        sampling,
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

/// The k-fold table: its rows, the pooled image count and its markdown.
fn kfold_section(
    args: &EvalArgs,
    rt: &Runtime,
) -> Result<(Vec<segdiff_mhvae::kfold::ModelRow>, usize, String)> {
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
    Ok((rows, pairs.len(), md))
}
