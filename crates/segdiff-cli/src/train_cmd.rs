//! `segdiff train`: wires a prepared dataset to the trainer of `segdiff-diffusion`, with a
//! progress bar, a loss log, preview sheets and atomic checkpoints.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;
use segdiff_data::{Dataset, DatasetOptions, Split};
use segdiff_diffusion::train::{list_checkpoints, TrainData, TrainEvent, TrainOptions, Trainer};
use segdiff_diffusion::{ConditioningMeta, DdpmConfig, SchedulerConfig};
use segdiff_unet::UNet2DConfig;

use crate::runtime::Runtime;

/// Train a segmentation-guided (or unconditional) diffusion model on a prepared dataset.
///
/// Defaults are the paper's: the 113.7 M-parameter UNet, DDPM with 1000 steps and linear β,
/// ε-prediction MSE, AdamW lr 1e-4 with 500 warm-up steps and a cosine decay, grad-norm clip 1.0.
#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// Prepared dataset: `img/{train,val,test}/*.png` + `mask/all/{split}/*.png` (as written by
    /// `segdiff prepare`, or the official code's `IMG`/`MASK` folders).
    #[arg(long)]
    pub data: PathBuf,
    /// Output model directory (diffusers layout; checkpoints under `checkpoints/`).
    #[arg(long)]
    pub out: PathBuf,
    /// Train and sample at this size (images are resized on load; default: as stored).
    #[arg(long)]
    pub size: Option<u32>,
    /// Number of classes including background (default: from the dataset's `dataset.json`).
    #[arg(long)]
    pub num_classes: Option<usize>,
    /// Class names, background first (default: from `dataset.json`).
    #[arg(long, value_delimiter = ',')]
    pub class_names: Vec<String>,
    /// Train the unconditional baseline (the paper's Unc-Diff): no mask input.
    #[arg(long)]
    pub unconditional: bool,
    /// Mask encoding: `single` (official: one channel, class_id/255) or `onehot` (C−1 channels).
    #[arg(long, default_value = "single")]
    pub mask_encoding: String,
    /// What the network predicts: `epsilon` (the paper), `v_prediction` or `sample`.
    #[arg(long, default_value = "epsilon")]
    pub prediction_type: String,
    /// Mask-ablated training (Algorithm 1): remove each class with probability --ablation-p.
    #[arg(long)]
    pub ablation: bool,
    /// Per-class removal probability for --ablation.
    #[arg(long, default_value_t = 0.5)]
    pub ablation_p: f64,
    /// Draw one ablation per batch, as the official code does, instead of per sample.
    #[arg(long)]
    pub ablation_per_batch: bool,
    /// UNet widths per level (the paper: 128,128,256,256,512,512).
    #[arg(long, value_delimiter = ',', default_value = "128,128,256,256,512,512")]
    pub channels: Vec<usize>,
    /// Level (0-based) whose blocks use self-attention; default: the first level whose maps are
    /// at most 16×16 (the paper's choice at 256²).
    #[arg(long)]
    pub attention_level: Option<usize>,
    /// ResNet layers per block.
    #[arg(long, default_value_t = 2)]
    pub layers_per_block: usize,
    /// GroupNorm groups.
    #[arg(long, default_value_t = 32)]
    pub norm_groups: usize,
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
    /// Peak learning rate.
    #[arg(long, default_value_t = 1e-4)]
    pub lr: f64,
    /// Linear warm-up steps before the cosine decay.
    #[arg(long, default_value_t = 500)]
    pub warmup_steps: usize,
    /// AdamW weight decay.
    #[arg(long, default_value_t = 0.01)]
    pub weight_decay: f64,
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
    /// Write a preview sheet (mask overlay | sample) every N steps (0 = never).
    #[arg(long, default_value_t = 0)]
    pub preview_every: usize,
    /// Convert RGB images to greyscale on load.
    #[arg(long)]
    pub grey: bool,
}

/// The dataset seen through the trainer's `TrainData` (decoded in parallel).
struct DatasetSource {
    data: Dataset,
    guided: bool,
}

impl TrainData for DatasetSource {
    fn len(&self) -> usize {
        self.data.len()
    }

    fn load(&self, indices: &[usize]) -> segdiff_diffusion::Result<(Tensor, Tensor)> {
        let samples: Vec<_> = indices
            .par_iter()
            .map(|&i| self.data.load(i))
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| segdiff_diffusion::DiffusionError::InvalidState(e.to_string()))?;
        let first = &samples[0];
        let (c, h, w) = (first.channels, first.height, first.width);
        let mut images = Vec::with_capacity(samples.len() * c * h * w);
        let mut masks = Vec::with_capacity(samples.len() * h * w);
        for s in &samples {
            if (s.channels, s.height, s.width) != (c, h, w) {
                return Err(segdiff_diffusion::DiffusionError::InvalidState(format!(
                    "{}: {}×{}×{} differs from {}: {c}×{h}×{w} (use --size)",
                    s.name, s.channels, s.height, s.width, first.name
                )));
            }
            images.extend_from_slice(&s.image);
            match (&s.mask, self.guided) {
                (Some(m), _) => masks.extend(m.iter().map(|&v| v as u32)),
                (None, false) => masks.extend(std::iter::repeat_n(0u32, h * w)),
                (None, true) => {
                    return Err(segdiff_diffusion::DiffusionError::InvalidState(format!(
                        "{}: no mask for a segmentation-guided run",
                        s.name
                    )))
                }
            }
        }
        let n = samples.len();
        Ok((
            Tensor::from_vec(images, (n, c, h, w), &Device::Cpu)?,
            Tensor::from_vec(masks, (n, h, w), &Device::Cpu)?,
        ))
    }
}

/// The paper's UNet layout with the requested widths (attention at the second-to-last level).
pub fn unet_config(
    args: &TrainArgs,
    size: usize,
    in_channels: usize,
    out_channels: usize,
) -> Result<UNet2DConfig> {
    let n = args.channels.len();
    if n < 2 {
        bail!(
            "--channels needs at least two levels, got {:?}",
            args.channels
        );
    }
    // The paper puts attention where the maps are 16×16 (level 4 of 6 at 256²); attention on
    // larger maps is quadratic in memory, so default to the first level at or below 16².
    let attn = args
        .attention_level
        .unwrap_or_else(|| (0..n).find(|&i| size >> i <= 16).unwrap_or(n - 1));
    if attn >= n {
        bail!("--attention-level {attn} is beyond the {n} levels of --channels");
    }
    let down = (0..n)
        .map(|i| {
            if i == attn {
                "AttnDownBlock2D"
            } else {
                "DownBlock2D"
            }
            .to_string()
        })
        .collect();
    let up = (0..n)
        .map(|i| {
            if n - 1 - i == attn {
                "AttnUpBlock2D"
            } else {
                "UpBlock2D"
            }
            .to_string()
        })
        .collect();
    let cfg = UNet2DConfig {
        sample_size: Some(size),
        in_channels,
        out_channels,
        block_out_channels: args.channels.clone(),
        down_block_types: down,
        up_block_types: up,
        layers_per_block: args.layers_per_block,
        norm_num_groups: Some(args.norm_groups),
        ..UNet2DConfig::default()
    };
    cfg.validate().context("the requested UNet")?;
    let factor = 1usize << (n - 1);
    if !size.is_multiple_of(factor) {
        bail!("--size {size} must be divisible by {factor} for {n} UNet levels");
    }
    Ok(cfg)
}

pub fn run(args: TrainArgs, rt: &Runtime) -> Result<()> {
    if !rt.dtype_auto && rt.dtype != DType::F32 {
        bail!("training runs in f32 (got --dtype {:?})", rt.dtype);
    }
    let guided = !args.unconditional;
    let opts = DatasetOptions {
        num_classes: args.num_classes,
        force_grey: args.grey,
        resize: args.size,
        require_masks: guided,
    };
    let train = Dataset::open(&args.data, Split::Train, &opts)
        .with_context(|| format!("opening the training split of {}", args.data.display()))?;
    if train.is_empty() {
        bail!(
            "{}: the training split holds no images",
            args.data.display()
        );
    }
    let first = train
        .load(0)
        .with_context(|| format!("reading {}", train.items()[0].image.display()))?;
    let size = first.height;
    if first.width != size {
        bail!(
            "{}: images are {}×{}; training needs square images (use --size)",
            first.name,
            first.height,
            first.width
        );
    }
    let info = read_dataset_info(&args.data);
    let num_classes = args
        .num_classes
        .or(train.num_classes())
        .or(info.as_ref().map(|i| i.num_classes));
    if guided && num_classes.is_none() {
        bail!(
            "{}: no dataset.json with num_classes; pass --num-classes",
            args.data.display()
        );
    }
    let class_names = if args.class_names.is_empty() {
        info.as_ref()
            .map(|i| i.class_names.clone())
            .unwrap_or_default()
    } else {
        args.class_names.clone()
    };
    let encoding =
        segdiff_diffusion::MaskEncoding::parse(&args.mask_encoding).with_context(|| {
            format!(
                "--mask-encoding {}: expected single or onehot",
                args.mask_encoding
            )
        })?;
    let meta = ConditioningMeta {
        segmentation_guided: guided,
        mask_encoding: encoding.as_str().to_string(),
        num_classes,
        class_names,
        image_channels: first.channels,
        ablation_trained: guided && args.ablation,
        class_colors: info.as_ref().and_then(|i| i.class_colors.clone()),
    };
    let mask_ch = meta.mask_channels()?;
    let unet = unet_config(&args, size, first.channels + mask_ch, first.channels)?;
    let steps_per_epoch = (train.len().div_ceil(args.batch_size) / args.grad_accum.max(1)).max(1);
    let total = args.steps.unwrap_or(args.epochs * steps_per_epoch);
    let options = TrainOptions {
        lr: args.lr,
        weight_decay: args.weight_decay,
        warmup_steps: args.warmup_steps,
        total_steps: total,
        batch_size: args.batch_size,
        grad_accumulation: args.grad_accum,
        max_grad_norm: args.max_grad_norm,
        ema_max_decay: args.ema,
        ablation_p: (guided && args.ablation).then_some(args.ablation_p),
        ablation_per_batch: args.ablation_per_batch,
        seed: args.seed,
        checkpoint_every: args.checkpoint_every.unwrap_or(steps_per_epoch),
        keep_checkpoints: args.keep_checkpoints,
        ..TrainOptions::default()
    };
    let prediction_type = segdiff_diffusion::PredictionType::parse(&args.prediction_type)
        .with_context(|| {
            format!(
                "--prediction-type {}: expected epsilon, v_prediction or sample",
                args.prediction_type
            )
        })?;
    let scheduler = SchedulerConfig::Ddpm(DdpmConfig {
        prediction_type,
        ..DdpmConfig::default()
    });
    let mut trainer = if args.resume {
        let (step, ckpt) = list_checkpoints(&args.out)?.pop().with_context(|| {
            format!(
                "--resume: no checkpoint in {}/checkpoints",
                args.out.display()
            )
        })?;
        eprintln!("resuming from {} (step {step})", ckpt.display());
        let mut t = Trainer::resume(
            &ckpt,
            unet.clone(),
            meta.clone(),
            scheduler.clone(),
            &rt.device,
        )
        .with_context(|| format!("resuming from {}", ckpt.display()))?;
        t.set_total_steps(total);
        t
    } else {
        if !list_checkpoints(&args.out)?.is_empty() {
            bail!(
                "{} already holds checkpoints: pass --resume to continue, or choose another --out",
                args.out.display()
            );
        }
        Trainer::new(
            unet.clone(),
            meta.clone(),
            scheduler.clone(),
            options,
            &rt.device,
        )?
    };
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let params = segdiff_unet::parameter_count(&unet)?;
    eprintln!(
        "training {} model: {} images of {size}², {:.2} M parameters, {total} steps ({steps_per_epoch} per epoch), seed {}",
        if guided { "segmentation-guided" } else { "unconditional" },
        train.len(),
        params as f64 / 1e6,
        args.seed
    );

    let log_path = args.out.join("train_log.csv");
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    if log.metadata().map(|m| m.len() == 0).unwrap_or(true) {
        writeln!(log, "step,epoch,loss,lr,grad_norm")?;
    }
    let preview = if args.preview_every > 0 && guided {
        Some(Preview::new(&args, &opts, &meta, &scheduler, &rt.device)?)
    } else {
        None
    };
    let bar = crate::progress::bar(total as u64, "train");
    bar.set_position(trainer.step() as u64);
    let started = Instant::now();
    let mut failure: Option<anyhow::Error> = None;
    let source = DatasetSource {
        data: train,
        guided,
    };
    let previews = args.out.join("previews");
    let result = trainer.train(&source, &args.out, None, &mut |event| match event {
        TrainEvent::Step { log: s, model } => {
            bar.set_position(s.step as u64);
            bar.set_message(format!("loss {:.4} lr {:.2e}", s.loss, s.lr));
            if let Err(e) = writeln!(
                log,
                "{},{},{:.6},{:.6e},{:.4}",
                s.step, s.epoch, s.loss, s.lr, s.grad_norm
            ) {
                failure.get_or_insert(e.into());
            }
            if let Some(p) = &preview {
                if s.step % args.preview_every == 0 {
                    let path = previews.join(format!("step-{:07}.png", s.step));
                    match p.render(model, &path, args.seed) {
                        Ok(()) => bar.println(format!("preview {}", path.display())),
                        Err(e) => {
                            failure.get_or_insert(e);
                        }
                    }
                }
            }
        }
        TrainEvent::Checkpoint(dir) => bar.println(format!("checkpoint {}", dir.display())),
    });
    bar.finish_and_clear();
    result.context("training stopped")?;
    if let Some(e) = failure {
        return Err(e.context(format!("writing {}", log_path.display())));
    }
    // Export the final model at the root of --out.
    segdiff_diffusion::save_model_dir(
        &args.out,
        &unet,
        &trainer.export_weights(),
        &trainer.scheduler,
        &meta,
    )
    .with_context(|| format!("writing the model to {}", args.out.display()))?;
    let title = format!(
        "training loss ({} MSE)",
        trainer.scheduler.prediction_type().as_str()
    );
    crate::loss_plot::write_loss_curve(&log_path, &args.out.join("loss.png"), &title)?;
    eprintln!(
        "done in {:.1} min: model in {}, loss log {}, loss curve {}",
        started.elapsed().as_secs_f64() / 60.0,
        args.out.display(),
        log_path.display(),
        args.out.join("loss.png").display()
    );
    Ok(())
}

/// The parts of `dataset.json` training uses (lenient: hand-written files may hold only some).
#[derive(serde::Deserialize)]
struct DatasetJson {
    num_classes: usize,
    #[serde(default)]
    class_names: Vec<String>,
    #[serde(default)]
    class_colors: Option<Vec<[u8; 3]>>,
}

fn read_dataset_info(root: &Path) -> Option<DatasetJson> {
    let text = std::fs::read_to_string(root.join("dataset.json")).ok()?;
    serde_json::from_str(&text).ok()
}

/// Four validation masks sampled with the current weights: mask overlay | sample.
struct Preview {
    masks: Vec<Vec<u8>>,
    size: usize,
    meta: ConditioningMeta,
    /// DDIM built from the training noise schedule (prediction type included).
    sampling: SchedulerConfig,
    device: Device,
}

impl Preview {
    fn new(
        args: &TrainArgs,
        opts: &DatasetOptions,
        meta: &ConditioningMeta,
        training: &SchedulerConfig,
        device: &Device,
    ) -> Result<Self> {
        let val = Dataset::open(&args.data, Split::Val, opts)
            .or_else(|_| Dataset::open(&args.data, Split::Train, opts))
            .context("opening masks for previews")?;
        let mut masks = Vec::new();
        let mut size = 0;
        for i in 0..val.len().min(4) {
            let s = val.load(i)?;
            size = s.height;
            masks.push(s.mask.unwrap_or_else(|| vec![0; s.height * s.width]));
        }
        Ok(Self {
            masks,
            size,
            meta: meta.clone(),
            sampling: segdiff_diffusion::sampler::sampling_scheduler_config(
                training,
                segdiff_diffusion::SchedulerKind::Ddim,
            ),
            device: device.clone(),
        })
    }

    fn render(&self, model: &segdiff_unet::UNet2DModel, path: &Path, seed: u64) -> Result<()> {
        use rand::SeedableRng;
        let n = self.masks.len();
        let s = self.size;
        let flat: Vec<u32> = self.masks.iter().flatten().map(|&v| v as u32).collect();
        let masks = Tensor::from_vec(flat, (n, s, s), &Device::Cpu)?;
        let num_classes = self.meta.num_classes.unwrap_or(2);
        let cond = segdiff_diffusion::encode_mask(&masks, num_classes, self.meta.encoding()?)?;
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let x_t = segdiff_diffusion::random::randn(
            &mut rng,
            (n, self.meta.image_channels, s, s),
            DType::F32,
            &Device::Cpu,
        )?;
        let mut sched = self.sampling.build()?;
        let dev = &self.device;
        let mut eps = |inp: &Tensor, t: usize| {
            model
                .forward(&inp.to_device(dev)?, &Tensor::new(t as i64, dev)?)?
                .to_device(&Device::Cpu)
        };
        let out = segdiff_diffusion::guided_sample(
            sched.as_mut(),
            &mut eps,
            &x_t,
            Some(&cond),
            &segdiff_diffusion::SamplingOptions {
                num_inference_steps: 25,
                eta: 0.0,
                record_trajectory: false,
            },
            None,
        )?;
        let px = out
            .image01
            .narrow(1, 0, 1)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let colors = crate::pictures::class_colors(num_classes, self.meta.class_colors.as_deref());
        let mut tiles = Vec::new();
        for (i, m) in self.masks.iter().enumerate() {
            let g = &px[i * s * s..(i + 1) * s * s];
            tiles.push(crate::pictures::mask_to_rgb(m, s, s, &colors));
            tiles.push(crate::pictures::overlay(g, m, s, s, &colors, 0.0));
        }
        crate::pictures::save_png(path, &crate::pictures::grid(&tiles, 2))
    }
}
