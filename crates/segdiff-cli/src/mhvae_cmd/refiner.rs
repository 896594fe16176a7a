//! `segdiff mhvae train-refiner` and `segdiff mhvae sample`: the MHVAE's diffusion refiner
//! (segdiff-mhvae's `refiner`), trained against a frozen VAE on images alone.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use rand::rngs::StdRng;
use rand::SeedableRng;
use segdiff_data::DatasetOptions;
use segdiff_diffusion::train::{DatasetBatches, Session};
use segdiff_mhvae::refiner::{refiner_unet_config, EmNoise, Refiner, RefinerMeta, RefinerTrainer};

use super::images::{load_model, prepare_out, rows, save_image};
use crate::run_args::{open_training_split, RunArgs};
use crate::runtime::Runtime;

/// Train the refiner: a conditional diffusion that turns the (frozen) VAE's blurry output into a
/// sharp image (paper §4). Needs images only (masks are not read).
#[derive(Debug, clap::Args)]
pub struct TrainRefinerArgs {
    /// The trained MHVAE (`segdiff mhvae train --out`), kept frozen.
    #[arg(long)]
    pub vae: PathBuf,
    /// Prepared dataset (its `img/train`), at the VAE's size.
    #[arg(long)]
    pub data: PathBuf,
    /// Output refiner folder (`refiner.json`, `unet/`; checkpoints under `checkpoints/`).
    #[arg(long)]
    pub out: PathBuf,
    /// UNet widths per level.
    #[arg(long, value_delimiter = ',', default_value = "32,64,64")]
    pub channels: Vec<usize>,
    /// GroupNorm groups of the UNet.
    #[arg(long, default_value_t = 8)]
    pub norm_groups: usize,
    /// β(t) of the VP-SDE, `MIN,MAX` (Song et al.: 0.1,20).
    #[arg(long, value_delimiter = ',', default_value = "0.1,20")]
    pub beta: Vec<f64>,
    #[command(flatten)]
    pub run: RunArgs,
}

pub fn train(args: &TrainRefinerArgs, rt: &Runtime) -> Result<()> {
    let vae = load_model(&args.vae, &rt.device)?;
    let (c, s) = (vae.config().image_channels, vae.config().image_size);
    let opts = DatasetOptions {
        force_grey: c == 1,
        resize: Some(s as u32),
        require_masks: false,
        ..DatasetOptions::default()
    };
    let (train, _) = open_training_split(&args.data, &opts, "the refiner")?;
    let &[beta_min, beta_max] = args.beta.as_slice() else {
        bail!("--beta takes MIN,MAX, got {:?}", args.beta);
    };
    let mut meta = RefinerMeta::new(c, s);
    meta.sde = segdiff_mhvae::refiner::VpSde { beta_min, beta_max };
    meta.sde.validate().context("--beta")?;
    let unet = refiner_unet_config(s, c, &args.channels, args.norm_groups)
        .context("--channels / --norm-groups")?;
    let defaults = segdiff_diffusion::train::RunOptions {
        lr: 2e-4,
        warmup_steps: 100,
        ..Default::default()
    };
    let run = args.run.run_options(train.len(), &defaults);
    let total = run.total_steps;
    let mut trainer = match args.run.checkpoint_to_resume(&args.out)? {
        Some((_, ckpt)) => {
            let mut t = RefinerTrainer::resume(vae, &ckpt, &rt.device)
                .with_context(|| format!("resuming from {}", ckpt.display()))?;
            t.set_total_steps(total);
            t
        }
        None => RefinerTrainer::new(vae, meta, unet, run, &rt.device)?,
    };
    let data = DatasetBatches::new(train.clone(), false);
    eprintln!(
        "training the refiner for {}: {} images of {s}², {total} steps, seed {}",
        args.vae.display(),
        train.len(),
        args.run.seed
    );
    let session = Session {
        out: &args.out,
        loss_title: "refiner loss (ε MSE)".into(),
        preview_every: 0,
        preview: None,
        monitor: None,
    };
    let started = Instant::now();
    let bar = crate::progress::bar(total as u64, "train");
    let files = session
        .run(&mut trainer, &data, &bar)
        .context("training stopped")?;
    trainer
        .save(&args.out)
        .with_context(|| format!("writing the refiner to {}", args.out.display()))?;
    eprintln!(
        "done in {:.1} min: refiner in {}, loss log {}, loss curve {}",
        started.elapsed().as_secs_f64() / 60.0,
        args.out.display(),
        files.log.display(),
        files.loss_curve.display()
    );
    Ok(())
}

/// Loads a refiner folder, naming it on failure.
pub fn load_refiner(dir: &Path, rt: &Runtime) -> Result<Refiner> {
    Refiner::load(dir, &rt.device).with_context(|| format!("loading the refiner {}", dir.display()))
}

/// Refines a batch of VAE outputs with noise from `seed` (one stream per call).
pub fn refine(refiner: &Refiner, x_hat01: &Tensor, steps: usize, seed: u64) -> Result<Tensor> {
    let mut rng = StdRng::seed_from_u64(seed);
    Ok(refiner.refine(x_hat01, steps, EmNoise::Rng(&mut rng))?)
}

/// Pure sampling (paper App. G): θ, z ~ N(0, I) → x̂ → refined.
#[derive(Debug, clap::Args)]
pub struct SampleArgs {
    /// The trained MHVAE.
    #[arg(long)]
    pub model: PathBuf,
    /// The refiner trained for it.
    #[arg(long)]
    pub refiner: PathBuf,
    /// Number of images.
    #[arg(long, default_value_t = 8)]
    pub n: usize,
    /// Euler–Maruyama steps.
    #[arg(long, default_value_t = 100)]
    pub steps: usize,
    /// Seed of the latents and of every step's noise (image i uses seed + i).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output folder: `sample_NNNN.png` and `vae_NNNN.png` (before refinement).
    #[arg(long)]
    pub out: PathBuf,
}

pub fn sample(args: &SampleArgs, rt: &Runtime) -> Result<()> {
    let vae = load_model(&args.model, &rt.device)?;
    let refiner = load_refiner(&args.refiner, rt)?;
    prepare_out(&args.out)?;
    let cfg = vae.config();
    let bar = crate::progress::bar(args.n as u64, "sample");
    for i in 0..args.n {
        let seed = args.seed.wrapping_add(i as u64);
        let mut rng = StdRng::seed_from_u64(seed);
        let z = segdiff_diffusion::random::randn(
            &mut rng,
            (1, cfg.z_dim),
            candle_core::DType::F32,
            &rt.device,
        )?;
        let theta = match vae.position() {
            Some(_) => Some(segdiff_diffusion::random::randn(
                &mut rng,
                (1, cfg.theta_dim()),
                candle_core::DType::F32,
                &rt.device,
            )?),
            None => None,
        };
        let x_hat = vae.decode(&z, theta.as_ref())?;
        let refined = refiner.refine(&x_hat, args.steps, EmNoise::Rng(&mut rng))?;
        save_image(
            &args.out.join(format!("vae_{i:04}.png")),
            &rows(&x_hat)?[0],
            &vae,
        )?;
        save_image(
            &args.out.join(format!("sample_{i:04}.png")),
            &rows(&refined)?[0],
            &vae,
        )?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    println!(
        "wrote {} sample(s) to {} ({} Euler–Maruyama steps, seed {})",
        args.n,
        args.out.display(),
        args.steps,
        args.seed
    );
    Ok(())
}
