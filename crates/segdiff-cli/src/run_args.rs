//! The flags every trainer shares (optimiser, schedule, seed, checkpoints, previews), parsed once
//! and turned into the library's [`RunOptions`].

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use segdiff_data::{Dataset, DatasetOptions, Sample, Split};
use segdiff_diffusion::train::{list_checkpoints, RunOptions};

/// Optimiser, schedule, seed, checkpoint and preview flags of a training run.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Batch size (per optimiser step: batch size × --grad-accum samples).
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// Micro-batches accumulated per optimiser step.
    #[arg(long, default_value_t = 1)]
    pub grad_accum: usize,
    /// Epochs (ignored when --steps is given).
    #[arg(long, default_value_t = 400)]
    pub epochs: usize,
    /// Optimiser steps of the whole run (overrides --epochs).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Peak learning rate [default: the method's: 1e-4 for `train`, 1e-3 for `mhvae train`].
    #[arg(long)]
    pub lr: Option<f64>,
    /// Linear warm-up steps before the cosine decay [default: 500 for `train`, 100 for `mhvae
    /// train`].
    #[arg(long)]
    pub warmup_steps: Option<usize>,
    /// AdamW weight decay [default: 0.01 for `train`, 0 for `mhvae train`].
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// Global gradient-norm clip.
    #[arg(long, default_value_t = 1.0)]
    pub max_grad_norm: f64,
    /// Keep an EMA of the weights with this maximum decay (diffusers warm-up); exported weights
    /// are the EMA ones.
    #[arg(long)]
    pub ema: Option<f64>,
    /// Seed of every random draw (initial weights, data order, noise, timesteps, ablation).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Checkpoint every N optimiser steps (default: once per epoch).
    #[arg(long)]
    pub checkpoint_every: Option<usize>,
    /// Checkpoints to keep.
    #[arg(long, default_value_t = 3)]
    pub keep_checkpoints: usize,
    /// Continue from the newest checkpoint in --out (bit-exact continuation).
    #[arg(long)]
    pub resume: bool,
    /// Write a preview sheet every N steps (0 = never).
    #[arg(long, default_value_t = 0)]
    pub preview_every: usize,
}

impl RunArgs {
    /// The checkpoint to continue from: the newest in `out` with `--resume` (an error when there
    /// is none), `None` for a fresh run (an error when `out` already holds checkpoints, so a
    /// finished run is never overwritten by accident).
    pub fn checkpoint_to_resume(&self, out: &Path) -> Result<Option<(usize, PathBuf)>> {
        let found = list_checkpoints(out)?;
        if self.resume {
            let latest = found.last().cloned().with_context(|| {
                format!("--resume: no checkpoint in {}/checkpoints", out.display())
            })?;
            eprintln!("resuming from {} (step {})", latest.1.display(), latest.0);
            Ok(Some(latest))
        } else if !found.is_empty() {
            bail!(
                "{} already holds checkpoints: pass --resume to continue, or choose another --out",
                out.display()
            )
        } else {
            Ok(None)
        }
    }

    /// Optimiser steps per epoch over `dataset_len` samples.
    pub fn steps_per_epoch(&self, dataset_len: usize) -> usize {
        (dataset_len.div_ceil(self.batch_size.max(1)) / self.grad_accum.max(1)).max(1)
    }

    /// The run's options over `dataset_len` samples; flags left out take the method's
    /// `defaults`.
    pub fn run_options(&self, dataset_len: usize, defaults: &RunOptions) -> RunOptions {
        let per_epoch = self.steps_per_epoch(dataset_len);
        RunOptions {
            lr: self.lr.unwrap_or(defaults.lr),
            weight_decay: self.weight_decay.unwrap_or(defaults.weight_decay),
            warmup_steps: self.warmup_steps.unwrap_or(defaults.warmup_steps),
            total_steps: self.steps.unwrap_or(self.epochs * per_epoch),
            batch_size: self.batch_size,
            grad_accumulation: self.grad_accum,
            max_grad_norm: self.max_grad_norm,
            ema_max_decay: self.ema,
            seed: self.seed,
            checkpoint_every: self.checkpoint_every.unwrap_or(per_epoch),
            keep_checkpoints: self.keep_checkpoints,
            ..defaults.clone()
        }
    }
}

/// The training split of `data` and its first sample, which must be square (`who` names the
/// trainer in the error: "training", "the MHVAE").
pub fn open_training_split(
    data: &Path,
    opts: &DatasetOptions,
    who: &str,
) -> Result<(Dataset, Sample)> {
    let train = Dataset::open(data, Split::Train, opts)
        .with_context(|| format!("opening the training split of {}", data.display()))?;
    if train.is_empty() {
        bail!("{}: the training split holds no images", data.display());
    }
    let first = train
        .load(0)
        .with_context(|| format!("reading {}", train.items()[0].image.display()))?;
    if first.width != first.height {
        bail!(
            "{}: images are {}×{}; {who} needs square images (use --size)",
            first.name,
            first.height,
            first.width
        );
    }
    Ok((train, first))
}
