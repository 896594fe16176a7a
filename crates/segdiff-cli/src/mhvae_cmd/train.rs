//! `segdiff mhvae train`: a prepared dataset → the MHVAE trainer of segdiff-mhvae, on the
//! training session every segdiff trainer shares (progress bar, loss log and plot, previews,
//! atomic checkpoints, exact resume, the NaN stop).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use segdiff_data::{Dataset, DatasetOptions, Split};
use segdiff_diffusion::train::{DatasetBatches, PreviewFn, Session, TrainData};
use segdiff_mhvae::model::{load_backbone_weights, seeded_init};
use segdiff_mhvae::sheet::reconstruction_sheet;
use segdiff_mhvae::trainer::{batch_inputs, MhvaeTrainOptions, MhvaeTrainer};
use segdiff_mhvae::warp::ControlPoints;
use segdiff_mhvae::{Backbone, LossWeights, MhvaeConfig, PositionAugment, ThetaParam, WarpKind};

use crate::flag_values::flag;
use crate::run_args::{open_training_split, RunArgs};
use crate::runtime::Runtime;

/// Train the multi-headed VAE on a prepared dataset (`img/{train,val,test}`,
/// `mask/all/{split}`; any mask id > 0 is the object).
#[derive(Debug, clap::Args)]
pub struct MhvaeTrainArgs {
    /// Prepared dataset (as written by `segdiff prepare` or `segdiff mhvae synth`).
    #[arg(long)]
    pub data: PathBuf,
    /// Output model folder (`mhvae.json`, `model.safetensors`; checkpoints under
    /// `checkpoints/`).
    #[arg(long)]
    pub out: PathBuf,
    /// Position warp: `affine` (6 parameters; masks are ellipses), `tps` (thin-plate spline) or
    /// `none` (the single-headed VAE baseline: no segmentation).
    #[arg(long, value_parser = flag::<WarpKind>())]
    pub warp: WarpKind,
    /// Train at this size (images resized on load; 32·2^k; default: as stored).
    #[arg(long)]
    pub size: Option<u32>,
    /// TPS control points: `circular:N` (two rings, radius 0.5 and 1) or `uniform:NxN`.
    #[arg(long, default_value = "circular:20")]
    pub control_points: ControlPoints,
    /// θ as an offset from the identity warp (`offset`) or as the matrix / source points
    /// themselves (`absolute`, the paper's literal wording).
    #[arg(long, default_value = "offset", value_parser = flag::<ThetaParam>())]
    pub theta_param: ThetaParam,
    /// Encoder trunk: `small` (four stride-2 conv blocks; minutes on a CPU) or `resnet50`
    /// (torchvision's ResNet-50 with frozen BatchNorm, the paper's backbone).
    #[arg(long, default_value = "small", value_parser = flag::<Backbone>())]
    pub backbone: Backbone,
    /// ImageNet (or other) weights for `--backbone resnet50`: a torchvision / timm ResNet-50
    /// state dict in safetensors, a folder holding `model.safetensors`, or `hf://owner/name`
    /// (e.g. `hf://timm/resnet50.tv_in1k`). Default: torchvision's random initialisation.
    #[arg(long)]
    pub backbone_weights: Option<PathBuf>,
    /// Size of the style latent z.
    #[arg(long, default_value_t = 16)]
    pub z_dim: usize,
    /// Channels of the decoder's feature maps (the first half is warped at 32×32).
    #[arg(long, default_value_t = 16)]
    pub feature_channels: usize,
    /// Widths of the encoder's four stride-2 conv blocks.
    #[arg(long, value_delimiter = ',', default_value = "16,32,64,64")]
    pub encoder_channels: Vec<usize>,
    /// Width of the hidden layer of the fully connected heads.
    #[arg(long, default_value_t = 256)]
    pub fc_hidden: usize,
    /// GroupNorm groups.
    #[arg(long, default_value_t = 4)]
    pub norm_groups: usize,
    /// Weight of the log-cosh reconstruction loss.
    #[arg(long, default_value_t = 1.0)]
    pub reconstruction_weight: f64,
    /// Weight of the soft Dice loss of the warped reference.
    #[arg(long, default_value_t = 1.0)]
    pub dice_weight: f64,
    /// Weight of KL(q(z|x) ‖ N(0, I)).
    #[arg(long, default_value_t = 1e-3)]
    pub kl_z: f64,
    /// Weight of KL(q(θ|x) ‖ N(0, I)).
    #[arg(long, default_value_t = 1e-3)]
    pub kl_theta: f64,
    /// Count KL_θ twice, as the paper's eq. 20 taken literally does.
    #[arg(long)]
    pub kl_theta_double: bool,
    /// Scale a of the log-cosh loss (1/a)·log cosh(a·t).
    #[arg(long, default_value_t = 10.0)]
    pub log_cosh_scale: f64,
    /// A binary reference disc (the default has a one-pixel linear edge, which gives the Dice
    /// loss wider gradients).
    #[arg(long)]
    pub hard_reference: bool,
    /// Convert RGB images to greyscale on load.
    #[arg(long)]
    pub grey: bool,
    /// Move each training image and its mask together by a random rotation, scale and shift
    /// (drawn from the step's seed), so the position head learns positions the data lacks
    /// (e.g. a template whose slices are all centred). Recorded in mhvae.json.
    #[arg(long)]
    pub augment_position: bool,
    /// With --augment-position: largest rotation, degrees (either way).
    #[arg(long, default_value_t = 45.0)]
    pub augment_rotation: f64,
    /// With --augment-position: scale range `MIN,MAX` (drawn log-uniformly).
    #[arg(long, value_delimiter = ',', default_value = "0.8,1.2")]
    pub augment_scale: Vec<f64>,
    /// With --augment-position: largest shift per axis, normalised units (the image spans
    /// [−1, 1]).
    #[arg(long, default_value_t = 0.15)]
    pub augment_shift: f64,
    /// Optimiser, schedule, seed, checkpoints and previews (MHVAE defaults: lr 2e-3, 100 warm-up
    /// steps, no weight decay).
    #[command(flatten)]
    pub run: RunArgs,
}

/// Validation images shown in each preview sheet.
const PREVIEW_IMAGES: usize = 6;

pub fn run(args: MhvaeTrainArgs, rt: &Runtime) -> Result<()> {
    let guided = args.warp != WarpKind::None;
    let opts = DatasetOptions {
        num_classes: None,
        force_grey: args.grey,
        resize: args.size,
        require_masks: guided,
    };
    let (train, first) = open_training_split(&args.data, &opts, "the MHVAE")?;
    let config = MhvaeConfig {
        image_size: first.height,
        image_channels: first.channels,
        warp: args.warp,
        control_points: args.control_points,
        theta_param: args.theta_param,
        backbone: args.backbone,
        encoder_channels: args.encoder_channels.clone(),
        fc_hidden: args.fc_hidden,
        z_dim: args.z_dim,
        feature_channels: args.feature_channels,
        norm_groups: args.norm_groups,
        soft_reference: !args.hard_reference,
        loss: LossWeights {
            reconstruction: args.reconstruction_weight,
            dice: args.dice_weight,
            kl_z: args.kl_z,
            kl_theta: args.kl_theta,
            kl_theta_double: args.kl_theta_double,
            log_cosh_scale: args.log_cosh_scale,
            ..LossWeights::default()
        },
        augment: augment(&args)?,
        ..MhvaeConfig::default()
    };
    config.validate().with_context(|| {
        format!(
            "the model for {}×{} images (--size)",
            first.height, first.width
        )
    })?;
    let run = args
        .run
        .run_options(train.len(), &MhvaeTrainOptions::default_run());
    let total = run.total_steps;
    let mut trainer = match args.run.checkpoint_to_resume(&args.out)? {
        Some((_, ckpt)) => {
            let mut t = MhvaeTrainer::resume(&ckpt, &rt.device)
                .with_context(|| format!("resuming from {}", ckpt.display()))?;
            if t.config() != &config {
                bail!(
                    "{}: the checkpoint's model differs from the one these flags ask for; resume with the flags of the first run",
                    ckpt.display()
                );
            }
            t.set_total_steps(total);
            t
        }
        None => {
            let mut init = seeded_init(&config, run.seed, &rt.device)?;
            if let Some(path) = &args.backbone_weights {
                if config.backbone != Backbone::Resnet50 {
                    bail!("--backbone-weights needs --backbone resnet50");
                }
                let file = if path.is_dir() {
                    path.join("model.safetensors")
                } else {
                    path.clone()
                };
                let n = load_backbone_weights(&mut init, &file, &rt.device)
                    .with_context(|| format!("loading backbone weights from {}", file.display()))?;
                eprintln!("backbone: {n} ResNet-50 tensors from {}", file.display());
            }
            MhvaeTrainer::from_weights(config.clone(), run, init, &rt.device)?
        }
    };
    let data = DatasetBatches::new(train.clone(), guided);
    eprintln!(
        "training the MHVAE ({} warp): {} images of {}², {total} steps, seed {}",
        args.warp,
        train.len(),
        config.image_size,
        args.run.seed
    );
    let preview_data = preview_batch(&args.data, &opts, guided)?;
    let render = |t: &MhvaeTrainer, path: &Path| -> segdiff_diffusion::Result<()> {
        let failed = |e: segdiff_mhvae::MhvaeError| {
            segdiff_diffusion::DiffusionError::method("drawing a preview", e)
        };
        let model = t.export_model().map_err(failed)?;
        let (x, y) = batch_inputs(&preview_data, &rt.device).map_err(failed)?;
        let sheet = reconstruction_sheet(&model, &x, &y).map_err(failed)?;
        segdiff_io::picture::save_png(path, &sheet)?;
        Ok(())
    };
    let render: &PreviewFn<'_, MhvaeTrainer> = &render;
    let session = Session {
        out: &args.out,
        loss_title: "MHVAE loss (log-cosh + Dice + KL)".into(),
        preview_every: args.run.preview_every,
        preview: Some(render),
        monitor: None,
    };
    let started = Instant::now();
    let bar = crate::progress::bar(total as u64, "train");
    let files = session
        .run(&mut trainer, &data, &bar)
        .context("training stopped")?;
    trainer
        .save_model(&args.out)
        .with_context(|| format!("writing the model to {}", args.out.display()))?;
    let sheet_path = args.out.join("reconstructions.png");
    render(&trainer, &sheet_path).with_context(|| format!("writing {}", sheet_path.display()))?;
    eprintln!(
        "done in {:.1} min: model in {}, loss log {}, loss curve {}, reconstructions {}",
        started.elapsed().as_secs_f64() / 60.0,
        args.out.display(),
        files.log.display(),
        files.loss_curve.display(),
        sheet_path.display()
    );
    Ok(())
}

fn augment(args: &MhvaeTrainArgs) -> Result<Option<PositionAugment>> {
    if !args.augment_position {
        return Ok(None);
    }
    let &[min, max] = args.augment_scale.as_slice() else {
        bail!(
            "--augment-scale takes MIN,MAX, got {:?}",
            args.augment_scale
        );
    };
    Ok(Some(PositionAugment {
        max_rotation_degrees: args.augment_rotation,
        scale: [min, max],
        max_shift: args.augment_shift,
    }))
}

/// A few validation images (training images without a validation split) for the preview sheets.
fn preview_batch(
    root: &Path,
    opts: &DatasetOptions,
    guided: bool,
) -> Result<segdiff_diffusion::train::DiffusionBatch> {
    let split = match Dataset::open(root, Split::Val, opts) {
        Ok(v) if !v.is_empty() => v,
        _ => Dataset::open(root, Split::Train, opts)?,
    };
    let n = split.len().min(PREVIEW_IMAGES);
    let indices = segdiff_eval::evenly_spaced(split.len(), Some(n));
    DatasetBatches::new(split, guided)
        .load(&indices)
        .context("reading the preview images")
}
