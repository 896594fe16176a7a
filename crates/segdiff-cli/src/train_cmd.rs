//! `segdiff train`: parses the flags and wires a prepared dataset to the diffusion trainer of
//! `segdiff-diffusion` (its training session does the progress bar, loss log, previews and
//! checkpoints).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::DType;
use segdiff_data::{Dataset, DatasetClasses, DatasetOptions, Split};
use segdiff_diffusion::train::{
    DatasetBatches, DiffusionPreview, PreviewFn, Session, TrainOptions, Trainer,
};
use segdiff_diffusion::{
    ConditioningMeta, DdpmConfig, MaskEncoding, PredictionType, SchedulerConfig, TrainSchedule,
};
use segdiff_unet::UNet2DConfig;

use crate::flag_values::flag;
use crate::run_args::RunArgs;
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
    #[arg(long, default_value = "single", value_parser = flag::<MaskEncoding>())]
    pub mask_encoding: MaskEncoding,
    /// What the network predicts: `epsilon` (the paper), `v_prediction` or `sample`.
    #[arg(long, default_value = "epsilon", value_parser = flag::<PredictionType>())]
    pub prediction_type: PredictionType,
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
    /// Optimiser, schedule, seed, checkpoints and previews.
    #[command(flatten)]
    pub run: RunArgs,
    /// Convert RGB images to greyscale on load.
    #[arg(long)]
    pub grey: bool,
}

/// The paper's UNet layout with the requested widths, attention at `--attention-level` (default:
/// [`UNet2DConfig::default_attention_level`]).
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
    let attn = args
        .attention_level
        .unwrap_or_else(|| UNet2DConfig::default_attention_level(size, n));
    if attn >= n {
        bail!("--attention-level {attn} is beyond the {n} levels of --channels");
    }
    let cfg = UNet2DConfig {
        layers_per_block: args.layers_per_block,
        ..UNet2DConfig::with_channels(
            size,
            in_channels,
            out_channels,
            &args.channels,
            args.norm_groups,
        )
    }
    .with_attention_level(Some(attn));
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
    let info = DatasetClasses::read(&args.data)?;
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
    let meta = ConditioningMeta {
        segmentation_guided: guided,
        mask_encoding: args.mask_encoding,
        num_classes,
        class_names,
        image_channels: first.channels,
        ablation_trained: guided && args.ablation,
        class_colors: info.and_then(|i| i.class_colors),
    };
    let mask_ch = meta.mask_channels()?;
    let unet = unet_config(&args, size, first.channels + mask_ch, first.channels)?;
    let run = args.run.run_options(train.len());
    let (total, steps_per_epoch) = (run.total_steps, args.run.steps_per_epoch(train.len()));
    let options = TrainOptions {
        run,
        ablation_p: (guided && args.ablation).then_some(args.ablation_p),
        ablation_per_batch: args.ablation_per_batch,
    };
    let scheduler = SchedulerConfig::Ddpm(DdpmConfig {
        schedule: TrainSchedule {
            prediction_type: args.prediction_type,
            ..Default::default()
        },
        ..DdpmConfig::default()
    });
    let mut trainer = match args.run.checkpoint_to_resume(&args.out)? {
        Some((_, ckpt)) => {
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
        }
        None => Trainer::new(unet.clone(), meta.clone(), scheduler, options, &rt.device)?,
    };
    let params = segdiff_unet::parameter_count(&unet)?;
    eprintln!(
        "training {} model: {} images of {size}², {:.2} M parameters, {total} steps ({steps_per_epoch} per epoch), seed {}",
        if guided { "segmentation-guided" } else { "unconditional" },
        train.len(),
        params as f64 / 1e6,
        args.run.seed
    );
    let preview = if args.run.preview_every > 0 && guided {
        let (masks, size) = preview_masks(&args, &opts)?;
        Some(DiffusionPreview::new(&masks, size, args.run.seed)?)
    } else {
        None
    };
    let render = |t: &Trainer, path: &Path| preview.as_ref().map_or(Ok(()), |p| p.render(t, path));
    let render: &PreviewFn<'_, Trainer> = &render;
    let session = Session {
        out: &args.out,
        loss_title: format!(
            "training loss ({} MSE)",
            trainer.scheduler.prediction_type().as_str()
        ),
        preview_every: args.run.preview_every,
        preview: preview.is_some().then_some(render),
    };
    let started = Instant::now();
    let bar = crate::progress::bar(total as u64, "train");
    let files = session
        .run(&mut trainer, &DatasetBatches::new(train, guided), &bar)
        .context("training stopped")?;
    // Export the final model at the root of --out.
    trainer
        .save_model(&args.out)
        .with_context(|| format!("writing the model to {}", args.out.display()))?;
    eprintln!(
        "done in {:.1} min: model in {}, loss log {}, loss curve {}",
        started.elapsed().as_secs_f64() / 60.0,
        args.out.display(),
        files.log.display(),
        files.loss_curve.display()
    );
    Ok(())
}

/// Up to four validation masks (training masks when there is no validation split) to preview.
fn preview_masks(args: &TrainArgs, opts: &DatasetOptions) -> Result<(Vec<Vec<u8>>, usize)> {
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
    Ok((masks, size))
}
