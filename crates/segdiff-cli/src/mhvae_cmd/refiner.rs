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
use segdiff_mhvae::refiner::{
    refiner_unet_config, EmNoise, Formulation, Refiner, RefinerMeta, RefinerSampler, RefinerTrainer,
};

use super::images::{load_model, prepare_out, rows, save_image, BATCH};
use crate::flag_values::flag;
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
    /// `mhvae` (the paper's process, x(0) = x₀) or `diffusevae2` (DiffuseVAE's formulation 2,
    /// x(0) = x₀ + x̂ and x̂ subtracted at the end: the paper's App.-G baseline).
    #[arg(long, default_value = "mhvae", value_parser = flag::<Formulation>())]
    pub formulation: Formulation,
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
    meta.formulation = args.formulation;
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
        "training the refiner ({} formulation) for {}: {} images of {s}², {total} steps, seed {}",
        trainer.formulation(),
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

/// The refiner flags of `reconstruct`, `swap` and `edit` (`interpolate` names its step count
/// `--refiner-steps`, as its `--steps` is the grid size).
#[derive(Debug, Clone, clap::Args)]
pub struct RefineArgs {
    /// Refine the VAE's outputs with this refiner (`segdiff mhvae train-refiner`).
    #[arg(long)]
    pub refiner: Option<PathBuf>,
    /// With --refiner: `em` (Euler–Maruyama on the reverse SDE, the paper's), `dpm-sde`
    /// (SDE-DPM-Solver++(2M): E–M's quality in a tenth of the calls, README) or `dpm` (its
    /// deterministic probability-flow form, grainier with a short-trained refiner).
    #[arg(long, default_value = "em", value_parser = flag::<RefinerSampler>())]
    pub sampler: RefinerSampler,
    /// With --refiner: sampler steps, one network call each (default: 100 for em, 10 for dpm and dpm-sde).
    #[arg(long)]
    pub steps: Option<usize>,
    /// With --refiner: seed of the sampler's noise (batch k of 16 images uses seed + 16k).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// One image as a flat C×S×S row.
pub type ImageRow = Vec<f32>;

/// A loaded refiner with its sampler settings.
pub struct Refining {
    pub refiner: Refiner,
    pub sampler: RefinerSampler,
    pub steps: usize,
}

impl Refining {
    /// The refiner of `refiner`, if any; `steps` defaults per sampler.
    pub fn load(
        refiner: Option<&Path>,
        sampler: RefinerSampler,
        steps: Option<usize>,
        rt: &Runtime,
    ) -> Result<Option<Self>> {
        let Some(dir) = refiner else {
            return Ok(None);
        };
        let steps = steps.unwrap_or_else(|| sampler.default_steps());
        if steps == 0 {
            bail!("--steps must be at least 1");
        }
        Ok(Some(Self {
            refiner: load_refiner(dir, rt)?,
            sampler,
            steps,
        }))
    }

    /// From the shared flags.
    pub fn from_args(args: &RefineArgs, rt: &Runtime) -> Result<Option<Self>> {
        Self::load(args.refiner.as_deref(), args.sampler, args.steps, rt)
    }

    /// Refines a batch of VAE outputs in [0, 1].
    pub fn run(&self, x_hat01: &Tensor, noise: EmNoise<'_>) -> Result<Tensor> {
        self.refiner
            .refine(x_hat01, self.sampler, self.steps, noise)
            .context("refining")
    }

    /// Refines a batch with noise from `seed` (one stream per call).
    pub fn run_seeded(&self, x_hat01: &Tensor, seed: u64) -> Result<Tensor> {
        let mut rng = StdRng::seed_from_u64(seed);
        self.run(x_hat01, EmNoise::Rng(&mut rng))
    }

    /// "refined (DPM-Solver++(2M), 10 network calls)".
    pub fn describe(&self) -> String {
        format!("refined ({}, {} network calls)", self.sampler, self.steps)
    }

    /// ", refined (…)" for a command's summary line, empty without a refiner.
    pub fn suffix(refining: Option<&Self>) -> String {
        refining
            .map(|r| format!(", {}", r.describe()))
            .unwrap_or_default()
    }

    /// The rows of decoded VAE images, and of their refinements (noise from `seed`) when a
    /// refiner is given, else the same rows.
    pub fn rows_refined(
        refining: Option<&Self>,
        decoded: &Tensor,
        seed: u64,
    ) -> Result<(Vec<ImageRow>, Vec<ImageRow>)> {
        let vae = rows(decoded)?;
        let out = match refining {
            Some(r) => rows(&r.run_seeded(decoded, seed)?)?,
            None => vae.clone(),
        };
        Ok((vae, out))
    }
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
    /// `em` (Euler–Maruyama, the paper's), `dpm-sde` (SDE-DPM-Solver++(2M), E–M's quality in a
    /// tenth of the calls) or `dpm` (deterministic DPM-Solver++(2M)).
    #[arg(long, default_value = "em", value_parser = flag::<RefinerSampler>())]
    pub sampler: RefinerSampler,
    /// Sampler steps, one network call each (default: 100 for em, 10 for dpm and dpm-sde).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Seed of the latents and of the sampler's noise (batch k of 16 images uses seed + 16k).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Generate only shard I of N (1-based, e.g. `--shard 2/8`) of the N images; the files are
    /// those of a full run.
    #[arg(long)]
    pub shard: Option<String>,
    /// Output folder: `sample_NNNN.png` and `vae_NNNN.png` (before refinement).
    #[arg(long)]
    pub out: PathBuf,
}

/// Draws `n` prior samples (z, θ) from `seed` and decodes them: x̂ in [0, 1].
pub fn prior_decode(
    vae: &segdiff_mhvae::Mhvae,
    n: usize,
    rng: &mut StdRng,
    rt: &Runtime,
) -> Result<Tensor> {
    let cfg = vae.config();
    let z =
        segdiff_diffusion::random::randn(rng, (n, cfg.z_dim), candle_core::DType::F32, &rt.device)?;
    let theta = match vae.position() {
        Some(_) => Some(segdiff_diffusion::random::randn(
            rng,
            (n, cfg.theta_dim()),
            candle_core::DType::F32,
            &rt.device,
        )?),
        None => None,
    };
    Ok(vae.decode(&z, theta.as_ref())?)
}

/// The images of a sampling run of `n` (shard `spec` of them when given), in batches at global
/// multiples of [`BATCH`]: every image comes out the same whether the run is sharded or not.
pub fn shard_batches(n: usize, spec: Option<&str>) -> Result<Vec<std::ops::Range<usize>>> {
    let range = match spec {
        Some(s) => crate::sample_cmd::parse_shard(s)?.image_range(n, BATCH)?,
        None => 0..n,
    };
    Ok(range
        .clone()
        .step_by(BATCH)
        .map(|s| s..(s + BATCH).min(range.end))
        .collect())
}

pub fn sample(args: &SampleArgs, rt: &Runtime) -> Result<()> {
    let vae = load_model(&args.model, &rt.device)?;
    let refining = Refining::load(Some(&args.refiner), args.sampler, args.steps, rt)?
        .context("a refiner is needed")?;
    let batches = shard_batches(args.n, args.shard.as_deref())?;
    prepare_out(&args.out)?;
    let count: usize = batches.iter().map(|b| b.len()).sum();
    let bar = crate::progress::bar(count as u64, "sample");
    for batch in batches {
        let mut rng = StdRng::seed_from_u64(args.seed.wrapping_add(batch.start as u64));
        let x_hat = prior_decode(&vae, batch.len(), &mut rng, rt)?;
        let refined = refining.run(&x_hat, EmNoise::Rng(&mut rng))?;
        for ((i, v), r) in batch.clone().zip(rows(&x_hat)?).zip(rows(&refined)?) {
            save_image(&args.out.join(format!("vae_{i:04}.png")), &v, &vae)?;
            save_image(&args.out.join(format!("sample_{i:04}.png")), &r, &vae)?;
        }
        bar.inc(batch.len() as u64);
    }
    bar.finish_and_clear();
    println!(
        "wrote {count} sample(s) of {} to {}, {}, seed {}",
        args.n,
        args.out.display(),
        refining.describe(),
        args.seed
    );
    Ok(())
}
