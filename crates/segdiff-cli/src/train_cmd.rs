//! `segdiff train`: parses the flags and wires a prepared dataset to the diffusion trainer of
//! `segdiff-diffusion` (its training session does the progress bar, loss log, previews and
//! checkpoints).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::DType;
use segdiff_data::{
    check_dataset, CheckOptions, Dataset, DatasetClasses, DatasetOptions, ProblemKind, Split,
};
use segdiff_diffusion::train::{
    DatasetBatches, DiffusionBatch, DiffusionPreview, EvaluateFn, Evaluation, Monitor,
    NeighbourBatches, PreviewFn, Session, TrainData, TrainOptions, Trainer,
};
use segdiff_diffusion::{
    ConditioningMeta, DdpmConfig, DiffusionError, MaskEncoding, NeighbourKind, NeighbourScheme,
    PredictionType, SamplerKind, SchedulerConfig, TrainSchedule,
};
use segdiff_eval::{
    evenly_spaced, load_segmenter, train_segmenter, MaskFaithfulness, MonitorSampling,
    SegmenterRecipe, SplitData,
};
use segdiff_unet::UNet2DConfig;

use crate::flag_values::flag;
use crate::run_args::{open_training_split, RunArgs};
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
    /// The training monitor (segmentation-guided models): every N optimiser steps, generate
    /// from fixed validation masks with the EMA weights, segment the images and log `val_dice`
    /// (mean over the foreground classes) and `dice_<class>` in `train_log.csv`, draw it on
    /// `loss.png`, refresh `training.html` and keep the best checkpoint in `checkpoints/best/`
    /// (0 = off).
    #[arg(long, default_value_t = 0)]
    pub eval_every: usize,
    /// Segmenter of the monitor (a `segdiff segmenter train` folder, or `hf://…`); default: one
    /// trained on the training split at the start (kept in `OUT/monitor-segmenter/` and reused
    /// by `--resume`).
    #[arg(long)]
    pub segmenter: Option<PathBuf>,
    /// Masks the monitor generates from, evenly spaced over the validation split (the training
    /// split when there is none).
    #[arg(long, default_value_t = 8)]
    pub eval_count: usize,
    /// Sampler of the monitor (fixed seeds: the run's --seed).
    #[arg(long, default_value = "euler-a", value_parser = flag::<SamplerKind>())]
    pub eval_scheduler: SamplerKind,
    /// Sampling steps of the monitor.
    #[arg(long, default_value_t = 10)]
    pub eval_steps: usize,
    /// Epochs of the segmenter trained at the start when --segmenter is not given.
    #[arg(long, default_value_t = 30)]
    pub eval_segmenter_epochs: usize,
    /// Evaluations in a row without a new best `val_dice` before a warning.
    #[arg(long, default_value_t = 5)]
    pub eval_patience: usize,
    /// Neighbour conditioning for consistent volumes: the network also receives the adjacent
    /// slice (a dataset prepared from volumes: its `manifest.csv` pairs the slices), so whole
    /// volumes can be generated slice after slice from a 3-D label map.
    #[arg(long)]
    pub neighbours: bool,
    /// With --neighbours: rate at which the neighbour is dropped in training, so the first
    /// slice of a volume can be generated without one.
    #[arg(long, default_value_t = NeighbourScheme::DEFAULT_DROP_P)]
    pub neighbour_drop: f64,
    /// With --neighbours: also feed the neighbour's mask (encoded like the mask).
    #[arg(long)]
    pub neighbour_mask: bool,
    /// With --neighbours: standard deviation of Gaussian noise added to the neighbour's image
    /// (in the [-1, 1] scale) in training and in sampling (conditioning augmentation), so a
    /// generated neighbour's artefacts do not propagate along the stack. Recorded in
    /// segdiff.json.
    #[arg(long, default_value_t = 0.0)]
    pub neighbour_noise: f64,
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
    check_before_training(&args, guided)?;
    let opts = DatasetOptions {
        num_classes: args.num_classes,
        force_grey: args.grey,
        resize: args.size,
        require_masks: guided,
    };
    let (train, first) = open_training_split(&args.data, &opts, "training")?;
    let size = first.height;
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
        neighbours: neighbour_scheme(&args, guided)?,
    };
    let data: Box<dyn TrainData<Batch = DiffusionBatch>> = if args.neighbours {
        let pairs = NeighbourBatches::new(train.clone(), guided)
            .with_context(|| format!("pairing adjacent slices of {}", args.data.display()))?;
        eprintln!(
            "neighbour conditioning: {} of {} training slices have an adjacent slice, dropped at rate {}{}{}",
            pairs.paired(),
            train.len(),
            args.neighbour_drop,
            if args.neighbour_mask { ", with its mask" } else { "" },
            if args.neighbour_noise > 0.0 {
                format!(", its image noised with σ {}", args.neighbour_noise)
            } else {
                String::new()
            }
        );
        Box::new(pairs)
    } else {
        Box::new(DatasetBatches::new(train.clone(), guided))
    };
    let cond_ch = meta.condition_channels()?;
    let unet = unet_config(&args, size, first.channels + cond_ch, first.channels)?;
    let run = args.run.run_options(
        train.len(),
        &segdiff_diffusion::train::RunOptions::default(),
    );
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
    let monitor = if args.eval_every > 0 {
        if !guided {
            bail!("--eval-every measures mask faithfulness: it needs a segmentation-guided model (drop --unconditional)");
        }
        Some(mask_monitor(&args, &opts, &meta, rt)?)
    } else {
        None
    };
    let evaluate = |t: &Trainer, sheet: &Path| -> segdiff_diffusion::Result<Evaluation> {
        let Some(m) = &monitor else {
            return Err(DiffusionError::train_data("no monitor"));
        };
        let failed = |e: Box<dyn std::error::Error + Send + Sync>| DiffusionError::Monitor {
            step: t.step(),
            source: e,
        };
        let model = t.export_model()?;
        let scores = m
            .evaluate(&model, &t.scheduler, &t.meta, t.device(), sheet)
            .map_err(|e| failed(Box::new(e)))?;
        Ok(Evaluation {
            score: scores.mean,
            details: scores.per_class,
        })
    };
    let evaluate: &EvaluateFn<'_, Trainer> = &evaluate;
    let session = Session {
        out: &args.out,
        loss_title: format!(
            "training loss ({} MSE)",
            trainer.scheduler.prediction_type().as_str()
        ),
        preview_every: args.run.preview_every,
        preview: preview.is_some().then_some(render),
        monitor: monitor.as_ref().map(|m| Monitor {
            every: args.eval_every,
            score_name: "val_dice".into(),
            detail_columns: (1..num_classes.unwrap_or(2))
                .map(|c| format!("dice_{}", column_name(&meta.class_names, c)))
                .collect(),
            evaluate,
            patience: args.eval_patience,
            stall_advice: STALL_ADVICE.into(),
            description: format!(
                "{} masks, {} in {} steps (seed {}), EMA weights, segmented by {}",
                m.len(),
                m.sampling().sampler,
                m.sampling().steps,
                m.sampling().seed,
                args.segmenter.as_ref().map_or_else(
                    || args.out.join(MONITOR_SEGMENTER).display().to_string(),
                    |s| s.display().to_string()
                )
            ),
        }),
    };
    let started = Instant::now();
    let bar = crate::progress::bar(total as u64, "train");
    let files = session
        .run(&mut trainer, data.as_ref(), &bar)
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
    if let Some(best) = &files.best {
        eprintln!(
            "training monitor: best val_dice {:.4} at step {} (checkpoints/best); evaluations took {:.1} s of {:.1} s ({:.1} %); {}",
            best.score,
            best.step,
            files.eval_seconds,
            files.total_seconds,
            100.0 * files.eval_seconds / files.total_seconds.max(1e-9),
            args.out.join(segdiff_diffusion::train::monitor::PAGE).display()
        );
    }
    Ok(())
}

/// `segdiff data check` on the dataset before step 1: problems that would break or silently
/// spoil training stop the run here, listed all at once; the rest are noted.
fn check_before_training(args: &TrainArgs, guided: bool) -> Result<()> {
    let started = Instant::now();
    let bar = crate::progress::bar(0, "data check");
    let options = CheckOptions {
        num_classes: args.num_classes,
        convert_colour_masks: false,
        require_masks: guided,
    };
    let report = check_dataset(&args.data, &options, |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })
    .with_context(|| format!("checking the dataset {}", args.data.display()))?;
    bar.finish_and_clear();
    let blocks = |kind: ProblemKind| match kind {
        // Provenance only: training reads the folders, not the manifest (except to pair
        // adjacent slices for --neighbours).
        ProblemKind::Manifest => args.neighbours,
        ProblemKind::MixedChannels => !args.grey,
        ProblemKind::OrphanImage
        | ProblemKind::OrphanMask
        | ProblemKind::ColourMask
        | ProblemKind::SizeMismatch
        | ProblemKind::ClassOutOfRange => guided,
        _ => true,
    };
    for kind in ProblemKind::ALL.into_iter().filter(|&k| !blocks(k)) {
        let n = report.problems_of(kind).count();
        if n > 0 {
            eprintln!(
                "note: {n} {} problem(s) in {} do not affect training (`segdiff data check --data {}` lists them)",
                kind.title(),
                args.data.display(),
                args.data.display()
            );
        }
    }
    let blocking = report.problems.iter().filter(|p| blocks(p.kind())).count();
    if blocking > 0 {
        eprint!("{}", report.render(20));
        bail!(
            "{}: {blocking} problem(s) in the dataset (listed above; `segdiff data check --data {}` \
             gives the full report, `--convert-colour-masks` converts colour masks); training not started",
            args.data.display(),
            args.data.display()
        );
    }
    eprintln!(
        "data check: {} pairs, {} ({:.1} s)",
        report.summary.pairs(),
        if report.is_ok() {
            "no problems"
        } else {
            "no problem that affects training"
        },
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The neighbour scheme of --neighbours / --neighbour-drop / --neighbour-mask /
/// --neighbour-noise.
fn neighbour_scheme(args: &TrainArgs, guided: bool) -> Result<Option<NeighbourScheme>> {
    if !args.neighbours {
        if args.neighbour_mask
            || args.neighbour_drop != NeighbourScheme::DEFAULT_DROP_P
            || args.neighbour_noise != 0.0
        {
            bail!("--neighbour-mask / --neighbour-drop / --neighbour-noise need --neighbours");
        }
        return Ok(None);
    }
    if args.neighbour_mask && !guided {
        bail!("--neighbour-mask feeds the neighbour's mask: it needs a segmentation-guided model (drop --unconditional)");
    }
    let scheme = NeighbourScheme {
        kind: NeighbourKind::PreviousSlice,
        with_mask: args.neighbour_mask,
        drop_p: args.neighbour_drop,
        noise: args.neighbour_noise,
    };
    scheme
        .validate()
        .context("--neighbour-drop / --neighbour-noise")?;
    Ok(Some(scheme))
}

/// Folder of the monitor's own segmenter inside `--out`.
const MONITOR_SEGMENTER: &str = "monitor-segmenter";

/// What the stall warning advises (after the original code's troubleshooting advice).
const STALL_ADVICE: &str = "If the samples stay noisy or ignore their masks: train longer \
    (diffusion models keep improving long after the loss flattens), lower --lr (e.g. halve it) \
    if the loss curve is jagged, raise --batch-size or --grad-accumulation if it is noisy, and \
    run `segdiff data check` on the dataset to rule out mask problems.";

/// A class's name for a column: its name from dataset.json, or its id.
fn column_name(names: &[String], class: usize) -> String {
    names
        .get(class)
        .map(|n| n.trim().replace([',', ' '], "_"))
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| class.to_string())
}

/// The training monitor: its masks (validation split, else training split), its segmenter
/// (given, reused from an earlier sitting, or trained now on the training split), its sampler.
fn mask_monitor(
    args: &TrainArgs,
    opts: &DatasetOptions,
    meta: &ConditioningMeta,
    rt: &Runtime,
) -> Result<MaskFaithfulness> {
    let num_classes = meta.num_classes.unwrap_or(2);
    if args.eval_count == 0 {
        bail!("--eval-count must be at least 1");
    }
    let val = Dataset::open(&args.data, Split::Val, opts)
        .ok()
        .filter(|d| !d.is_empty());
    let (mask_ds, split) = match val {
        Some(v) => (v, "validation"),
        None => (
            Dataset::open(&args.data, Split::Train, opts)
                .with_context(|| format!("opening {}", args.data.display()))?,
            "training",
        ),
    };
    let picked = SplitData::load(
        &mask_ds,
        &evenly_spaced(mask_ds.len(), Some(args.eval_count)),
    )
    .with_context(|| {
        format!(
            "reading the monitor's {split} masks from {}",
            args.data.display()
        )
    })?;
    let masks = picked
        .masks()
        .cloned()
        .with_context(|| format!("{}: the {split} split has no masks", args.data.display()))?;
    let own = args.out.join(MONITOR_SEGMENTER);
    let seg_dir = match &args.segmenter {
        Some(dir) => dir.clone(),
        None if own.join("segmenter.json").is_file() => {
            eprintln!(
                "training monitor: reusing the segmenter in {}",
                own.display()
            );
            own
        }
        None => {
            train_monitor_segmenter(args, opts, num_classes, &meta.class_names, rt, &own)?;
            own
        }
    };
    let (segmenter, spec) = load_segmenter(&seg_dir, &rt.device)
        .with_context(|| format!("loading the monitor's segmenter {}", seg_dir.display()))?;
    let sampling = MonitorSampling {
        sampler: args.eval_scheduler,
        steps: args.eval_steps,
        seed: args.run.seed,
        ..MonitorSampling::default()
    };
    let monitor = MaskFaithfulness::new(
        masks,
        segmenter,
        &spec,
        num_classes,
        meta.class_colors.as_deref(),
        sampling,
    )
    .with_context(|| format!("setting up the training monitor with {}", seg_dir.display()))?;
    eprintln!(
        "training monitor: every {} steps, {} {split} masks, {} in {} steps",
        args.eval_every,
        monitor.len(),
        sampling.sampler,
        sampling.steps
    );
    Ok(monitor)
}

/// Trains the monitor's segmenter on the training split (validated on the validation split
/// when there is one) and saves it in `dir`, saying how long it took.
fn train_monitor_segmenter(
    args: &TrainArgs,
    opts: &DatasetOptions,
    num_classes: usize,
    class_names: &[String],
    rt: &Runtime,
    dir: &Path,
) -> Result<()> {
    let started = Instant::now();
    let load = |split: Split| -> Result<Option<SplitData>> {
        let Ok(ds) = Dataset::open(&args.data, split, opts) else {
            return Ok(None);
        };
        if ds.is_empty() {
            return Ok(None);
        }
        let data = SplitData::load(&ds, &evenly_spaced(ds.len(), None))
            .with_context(|| format!("reading the {split:?} split of {}", args.data.display()))?;
        Ok(Some(data))
    };
    let train = load(Split::Train)?.context("the training split holds no images")?;
    let val = load(Split::Val)?;
    let recipe = SegmenterRecipe {
        epochs: args.eval_segmenter_epochs,
        seed: args.run.seed,
        ..SegmenterRecipe::default()
    };
    let names = (!class_names.is_empty()).then(|| class_names.to_vec());
    let seg_opts = recipe.options(train.channels(), num_classes, names, &rt.device);
    let bar = crate::progress::bar(0, "monitor segmenter");
    let trained = train_segmenter(
        &train.seg_data()?,
        val.as_ref().map(SplitData::seg_data).transpose()?.as_ref(),
        &seg_opts,
        |event| {
            if let segdiff_eval::TrainEvent::Step {
                global_step,
                total_steps,
                epoch,
                loss,
                ..
            } = event
            {
                bar.set_length(total_steps as u64);
                bar.set_position(global_step as u64);
                bar.set_message(format!("epoch {epoch} loss {loss:.4}"));
            }
        },
    )
    .context("training the monitor's segmenter")?;
    bar.finish_and_clear();
    trained
        .save(dir)
        .with_context(|| format!("saving the monitor's segmenter to {}", dir.display()))?;
    let best = trained
        .spec
        .training
        .as_ref()
        .and_then(|t| t.best_val_dice)
        .map_or(String::new(), |d| format!(", validation Dice {d:.3}"));
    eprintln!(
        "training monitor: trained its segmenter on {} training images in {:.1} s ({} epochs{best}) → {}",
        train.len(),
        started.elapsed().as_secs_f64(),
        args.eval_segmenter_epochs,
        dir.display()
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
