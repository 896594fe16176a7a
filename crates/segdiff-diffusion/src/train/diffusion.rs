//! Segmentation-guided diffusion as a [`Method`] (Konz et al. 2024, §2): ε-prediction MSE on
//! noised images with the (optionally ablated) mask concatenated as extra channels.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use segdiff_unet::{expected_parameters, UNet2DConfig, UNet2DModel};
use serde::{Deserialize, Serialize};

use super::checkpoint::read_checkpoint;
use super::optimisation::Optimisation;
use super::options::RunOptions;
use super::step_loop::{Loss, Method, TrainCore, TrainData, TrainEvent};
use crate::config::SchedulerConfig;
use crate::mask_conditioning::{encode_mask, AblationMode, MaskAblation};
use crate::model_dir::{save_model_dir, ConditioningMeta};
use crate::neighbours::{draw_neighbours, neighbour_channels, NeighbourScheme};
use crate::random::{randn, sample_timesteps};
use crate::{DiffusionError, Result};

/// Options of a diffusion run: the shared [`RunOptions`] and the mask ablation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct TrainOptions {
    #[serde(flatten)]
    pub run: RunOptions,
    /// Mask ablation: probability of removing each class; `None` = off.
    pub ablation_p: Option<f64>,
    /// `true`: one ablation draw per batch (the official code); `false`: per sample (paper).
    pub ablation_per_batch: bool,
}

/// A diffusion batch: images (N, C, H, W) f32 in [-1, 1] and class-id masks (N, H, W) u32.
pub type ImageMaskBatch = (Tensor, Tensor);

/// What [`Trainer`] trains on: images and masks, and for a neighbour-conditioned model the
/// slices adjacent to each sample ([`super::NeighbourBatches`]).
#[derive(Debug, Clone)]
pub struct DiffusionBatch {
    /// (N, C, H, W) f32 in [-1, 1].
    pub images: Tensor,
    /// (N, H, W) u32 class ids.
    pub masks: Tensor,
    /// The slices before (`slice_index − 1`) and after (`+ 1`) each sample; `None` for plain 2-D
    /// data.
    pub neighbours: Option<[AdjacentSlices; 2]>,
}

/// One adjacent slice per sample of a batch (or its absence).
#[derive(Debug, Clone)]
pub struct AdjacentSlices {
    /// (N, C, H, W) f32 in [-1, 1]; rows without a neighbour hold anything.
    pub images: Tensor,
    /// (N, H, W) u32 class ids; rows without a neighbour hold anything.
    pub masks: Tensor,
    /// Whether each sample has this neighbour.
    pub present: Vec<bool>,
}

impl From<ImageMaskBatch> for DiffusionBatch {
    fn from((images, masks): ImageMaskBatch) -> Self {
        Self {
            images,
            masks,
            neighbours: None,
        }
    }
}

/// Plain (images, masks) data as [`DiffusionBatch`]es.
struct PlainBatches<'a, B>(&'a dyn TrainData<Batch = B>);

impl<B: Into<DiffusionBatch> + Send> TrainData for PlainBatches<'_, B> {
    type Batch = DiffusionBatch;

    fn len(&self) -> usize {
        self.0.len()
    }

    fn load(&self, indices: &[usize]) -> Result<DiffusionBatch> {
        Ok(self.0.load(indices)?.into())
    }
}

/// The trainer: the denoiser, its schedule and conditioning, and the shared trainable state.
pub struct Trainer {
    pub unet_config: UNet2DConfig,
    pub meta: ConditioningMeta,
    pub scheduler: SchedulerConfig,
    core: TrainCore,
    model: UNet2DModel,
    ablation: Option<MaskAblation>,
    ablation_p: Option<f64>,
    ablation_per_batch: bool,
    device: Device,
}

/// Parameters initialised as PyTorch initialises diffusers' `UNet2DModel` (uniform ±1/√fan_in for
/// convolution and linear weights and biases, GroupNorm weight 1 and bias 0), drawn from `seed`
/// in name order.
pub fn seeded_unet_init(
    config: &UNet2DConfig,
    seed: u64,
    device: &Device,
) -> Result<HashMap<String, Tensor>> {
    let params = expected_parameters(config)?;
    let shapes: HashMap<&str, &Vec<usize>> = params.iter().map(|(n, s)| (n.as_str(), s)).collect();
    let mut names: Vec<&String> = params.iter().map(|(n, _)| n).collect();
    names.sort();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = HashMap::with_capacity(names.len());
    for name in names {
        let shape = shapes[name.as_str()];
        let n: usize = shape.iter().product();
        let is_norm = name.contains("norm");
        let values: Vec<f32> = if is_norm {
            vec![if name.ends_with(".weight") { 1.0 } else { 0.0 }; n]
        } else {
            // A bias takes the fan-in of its layer's weight.
            let weight_name = name.strip_suffix(".bias").map(|p| format!("{p}.weight"));
            let wshape = weight_name
                .as_deref()
                .and_then(|w| shapes.get(w).copied())
                .unwrap_or(shape);
            let fan_in: usize = wshape.iter().skip(1).product::<usize>().max(1);
            let bound = 1.0 / (fan_in as f32).sqrt();
            (0..n).map(|_| rng.random_range(-bound..bound)).collect()
        };
        out.insert(
            name.clone(),
            Tensor::from_vec(values, shape.clone(), device)?,
        );
    }
    Ok(out)
}

impl Trainer {
    /// A fresh model initialised from `options.run.seed`.
    pub fn new(
        unet_config: UNet2DConfig,
        meta: ConditioningMeta,
        scheduler: SchedulerConfig,
        options: TrainOptions,
        device: &Device,
    ) -> Result<Self> {
        let init = seeded_unet_init(&unet_config, options.run.seed, device)?;
        Self::from_weights(unet_config, meta, scheduler, options, init, device)
    }

    /// A model starting from given weights (fine-tuning, or a checkpoint).
    pub fn from_weights(
        unet_config: UNet2DConfig,
        meta: ConditioningMeta,
        scheduler: SchedulerConfig,
        options: TrainOptions,
        weights: HashMap<String, Tensor>,
        device: &Device,
    ) -> Result<Self> {
        options.run.validate()?;
        meta.check_against(&unet_config, Path::new(crate::model_dir::META_NAME))?;
        if meta.segmentation_guided && meta.num_classes.is_none() {
            return Err(DiffusionError::InvalidParameter {
                name: "num_classes",
                value: "unknown".into(),
                reason: "a segmentation-guided model needs its class count",
            });
        }
        if let Some(scheme) = &meta.neighbours {
            scheme.validate()?;
            if scheme.with_mask && !meta.segmentation_guided {
                return Err(DiffusionError::InvalidParameter {
                    name: "neighbours.with_mask",
                    value: "true".into(),
                    reason: "an unconditional model has no mask to feed for the neighbour",
                });
            }
        }
        let varmap = Optimisation::varmap_from(weights, device)?;
        let model = UNet2DModel::new(
            &unet_config,
            VarBuilder::from_varmap(&varmap, DType::F32, device),
        )?;
        let optimisation = Optimisation::new(varmap, &options.run)?;
        let expected = expected_parameters(&unet_config)?.len();
        if optimisation.num_tensors() != expected {
            return Err(DiffusionError::InvalidParameter {
                name: "weights",
                value: format!(
                    "{} tensors where the UNet config has {expected}",
                    optimisation.num_tensors()
                ),
                reason: "the weights do not fit the UNet config",
            });
        }
        let ablation = match (meta.segmentation_guided, options.ablation_p) {
            (true, Some(p)) => Some(MaskAblation::new(
                meta.num_classes.unwrap_or(1),
                p,
                if options.ablation_per_batch {
                    AblationMode::PerBatch
                } else {
                    AblationMode::PerSample
                },
            )?),
            _ => None,
        };
        Ok(Self {
            unet_config,
            meta,
            scheduler,
            core: TrainCore {
                run: options.run,
                optimisation,
                step: 0,
            },
            model,
            ablation,
            ablation_p: options.ablation_p,
            ablation_per_batch: options.ablation_per_batch,
            device: device.clone(),
        })
    }

    /// Restores a trainer from a checkpoint folder written during [`Trainer::train`].
    pub fn resume(
        checkpoint: &Path,
        unet_config: UNet2DConfig,
        meta: ConditioningMeta,
        scheduler: SchedulerConfig,
        device: &Device,
    ) -> Result<Self> {
        let (state, tensors) = read_checkpoint::<TrainOptions>(checkpoint, device)?;
        let live = Optimisation::live_from_state(&tensors);
        let mut t = Self::from_weights(unet_config, meta, scheduler, state.options, live, device)?;
        t.core.optimisation.load_state_tensors(&tensors)?;
        t.core.step = state.step;
        Ok(t)
    }

    /// Optimiser steps done so far.
    pub fn step(&self) -> usize {
        self.core.step
    }

    /// The run's options.
    pub fn train_options(&self) -> TrainOptions {
        self.options()
    }

    /// The device the model trains on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The live model (its weights are the trainable variables).
    pub fn model(&self) -> &UNet2DModel {
        &self.model
    }

    /// Current weights (the EMA weights when EMA is on, as diffusers exports them).
    pub fn export_weights(&self) -> HashMap<String, Tensor> {
        self.core.optimisation.export_weights()
    }

    /// A model with the exportable weights (the EMA weights when EMA is on): what a checkpoint
    /// written now would sample with.
    pub fn export_model(&self) -> Result<UNet2DModel> {
        let vb = VarBuilder::from_tensors(self.export_weights(), DType::F32, &self.device);
        Ok(UNet2DModel::new(&self.unet_config, vb)?)
    }

    /// Replaces the run length (e.g. to extend a finished run when resuming).
    pub fn set_total_steps(&mut self, total: usize) {
        self.core.run.total_steps = total;
    }

    /// Writes the exportable model (diffusers layout + `segdiff.json`) to `dir`.
    pub fn save_model(&self, dir: &Path) -> Result<()> {
        save_model_dir(
            dir,
            &self.unet_config,
            &self.export_weights(),
            &self.scheduler,
            &self.meta,
        )
    }

    /// Runs optimiser steps (see [`super::train`]) on [`ImageMaskBatch`]es or
    /// [`DiffusionBatch`]es.
    pub fn train<B: Into<DiffusionBatch> + Send>(
        &mut self,
        data: &dyn TrainData<Batch = B>,
        out: &Path,
        stop_at: Option<usize>,
        on_event: &mut dyn FnMut(TrainEvent<'_, Self>),
    ) -> Result<()> {
        super::step_loop::train(self, &PlainBatches(data), out, stop_at, on_event)
    }

    /// The neighbour channels of a batch: per sample, a direction (before/after) drawn from
    /// `rng`, falling back to the other side at a volume's end, then the neighbour dropped with
    /// probability `drop_p` (drawn from `rng` too, so resume stays exact). The neighbour's mask
    /// is not ablated.
    fn neighbour_input(
        &self,
        scheme: &NeighbourScheme,
        batch: &DiffusionBatch,
        rng: &mut StdRng,
    ) -> Result<Tensor> {
        let Some([before, after]) = &batch.neighbours else {
            return Err(DiffusionError::train_data(
                "a neighbour-conditioned model needs batches with the adjacent slices",
            ));
        };
        let sides = draw_neighbours(scheme.drop_p, &before.present, &after.present, rng);
        let mut rows = Vec::with_capacity(sides.len());
        for (i, side) in sides.iter().enumerate() {
            // An absent neighbour's row is a placeholder, zeroed by its presence flag.
            let side = [before, after][side.unwrap_or(0)];
            rows.push((side.images.narrow(0, i, 1)?, side.masks.narrow(0, i, 1)?));
        }
        let present: Vec<bool> = sides.iter().map(Option::is_some).collect();
        let images = Tensor::cat(&rows.iter().map(|r| &r.0).collect::<Vec<_>>(), 0)?;
        // Augmentation draws come after the side/drop draws, and only when noise > 0, so
        // models without it keep their streams (and their exact resumes).
        let images = scheme
            .augment(&images, || {
                randn(rng, images.dims(), DType::F32, &Device::Cpu)
            })?
            .to_device(&self.device)?;
        let masks = if scheme.with_mask {
            let ids = Tensor::cat(&rows.iter().map(|r| &r.1).collect::<Vec<_>>(), 0)?;
            let num_classes = self.meta.num_classes.unwrap_or(1);
            Some(encode_mask(&ids, num_classes, self.meta.encoding())?.to_device(&self.device)?)
        } else {
            None
        };
        neighbour_channels(scheme, &images, masks.as_ref(), &present)
    }

    /// Writes a checkpoint of the current step (see [`super::save_checkpoint`]).
    pub fn save_checkpoint(&self, out: &Path, dataset_len: usize) -> Result<PathBuf> {
        super::step_loop::save_checkpoint(self, out, dataset_len)
    }
}

impl Method for Trainer {
    type Batch = DiffusionBatch;
    type Options = TrainOptions;

    fn core(&self) -> &TrainCore {
        &self.core
    }

    fn core_mut(&mut self) -> &mut TrainCore {
        &mut self.core
    }

    fn options(&self) -> TrainOptions {
        TrainOptions {
            run: self.core.run.clone(),
            ablation_p: self.ablation_p,
            ablation_per_batch: self.ablation_per_batch,
        }
    }

    /// The ε-prediction (or v / sample) MSE of one micro-batch.
    fn loss(&self, batch: &DiffusionBatch, rng: &mut StdRng) -> Result<Loss> {
        let (images, masks) = (&batch.images, &batch.masks);
        let images = images.to_device(&self.device)?;
        let (n, c, h, w) = images.dims4()?;
        if c != self.meta.image_channels {
            return Err(DiffusionError::InvalidParameter {
                name: "images",
                value: format!("{c} channels"),
                reason: "the model's image channel count differs",
            });
        }
        let sched = self.scheduler.build()?;
        let noise = randn(rng, (n, c, h, w), DType::F32, &self.device)?;
        let timesteps = sample_timesteps(rng, n, sched.num_train_timesteps())?;
        let noisy = sched.add_noise(&images, &noise, &timesteps)?;
        let target = sched.training_target(&images, &noise, &timesteps)?;
        let input = if self.meta.segmentation_guided {
            let num_classes = self.meta.num_classes.unwrap_or(1);
            let masks = match &self.ablation {
                Some(a) => a.apply(masks, rng)?.0,
                None => masks.clone(),
            };
            let enc =
                encode_mask(&masks, num_classes, self.meta.encoding())?.to_device(&self.device)?;
            Tensor::cat(&[&noisy, &enc], 1)?
        } else {
            noisy
        };
        let input = match &self.meta.neighbours {
            Some(scheme) => {
                let nb = self.neighbour_input(scheme, batch, rng)?;
                Tensor::cat(&[&input, &nb], 1)?
            }
            None => input,
        };
        let t = crate::noise_schedule::timesteps_tensor(&timesteps, &self.device)?;
        let pred = self.model.forward(&input, &t)?;
        Ok(Loss::total((pred - target)?.sqr()?.mean_all()?))
    }

    fn write_model(&self, dir: &Path) -> Result<()> {
        self.save_model(dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mask_conditioning::MaskEncoding;
    use segdiff_unet::{DownBlockType, UpBlockType};

    fn trainer(drop_p: f64) -> Trainer {
        noisy_trainer(drop_p, 0.0)
    }

    fn noisy_trainer(drop_p: f64, noise: f64) -> Trainer {
        let scheme = NeighbourScheme {
            with_mask: true,
            drop_p,
            noise,
            ..NeighbourScheme::default()
        };
        let meta = ConditioningMeta {
            segmentation_guided: true,
            mask_encoding: MaskEncoding::Single,
            num_classes: Some(3),
            class_names: Vec::new(),
            image_channels: 1,
            ablation_trained: false,
            class_colors: None,
            neighbours: Some(scheme),
        };
        let config = UNet2DConfig {
            sample_size: Some(8),
            in_channels: 5,
            out_channels: 1,
            block_out_channels: vec![8, 16],
            down_block_types: vec![DownBlockType::DownBlock2D; 2],
            up_block_types: vec![UpBlockType::UpBlock2D; 2],
            layers_per_block: 1,
            norm_num_groups: Some(4),
            ..UNet2DConfig::default()
        };
        let options = TrainOptions::default();
        Trainer::new(
            config,
            meta,
            SchedulerConfig::default(),
            options,
            &Device::Cpu,
        )
        .unwrap()
    }

    fn batch(neighbour_value: f32) -> DiffusionBatch {
        let dev = Device::Cpu;
        let images = Tensor::ones((2, 1, 8, 8), DType::F32, &dev).unwrap() * 0.25;
        let masks = Tensor::ones((2, 8, 8), DType::U32, &dev).unwrap();
        let side = |present: bool| AdjacentSlices {
            images: (Tensor::ones((2, 1, 8, 8), DType::F32, &dev).unwrap()
                * f64::from(neighbour_value))
            .unwrap(),
            masks: Tensor::zeros((2, 8, 8), DType::U32, &dev).unwrap(),
            present: vec![present; 2],
        };
        DiffusionBatch {
            images: images.unwrap(),
            masks,
            neighbours: Some([side(true), side(false)]),
        }
    }

    fn loss(t: &Trainer, b: &DiffusionBatch, seed: u64) -> f32 {
        let mut rng = StdRng::seed_from_u64(seed);
        t.loss(b, &mut rng)
            .unwrap()
            .total
            .to_scalar::<f32>()
            .unwrap()
    }

    /// The loss reads the neighbour (unless it is always dropped), and is a function of the
    /// step RNG; a neighbour model refuses plain batches.
    #[test]
    fn loss_feeds_the_neighbour_channels() {
        let kept = trainer(0.0);
        let (a, b) = (batch(0.5), batch(-0.5));
        assert_eq!(loss(&kept, &a, 1), loss(&kept, &a, 1));
        assert_ne!(loss(&kept, &a, 1), loss(&kept, &b, 1));
        let dropped = trainer(1.0);
        assert_eq!(loss(&dropped, &a, 1), loss(&dropped, &b, 1));
        let plain = DiffusionBatch {
            neighbours: None,
            ..batch(0.0)
        };
        let mut rng = StdRng::seed_from_u64(1);
        assert!(kept.loss(&plain, &mut rng).is_err());
    }

    /// Neighbour augmentation noise is drawn from the step RNG (same seed, same loss), changes
    /// what the network sees, and does not reach a dropped neighbour's (zeroed) channels.
    #[test]
    fn neighbour_noise_is_seeded_and_gated() {
        let a = batch(0.5);
        let noisy = noisy_trainer(0.0, 0.3);
        assert_eq!(loss(&noisy, &a, 4), loss(&noisy, &a, 4));
        assert_ne!(loss(&noisy, &a, 4), loss(&trainer(0.0), &a, 4));
        let dropped = noisy_trainer(1.0, 0.3);
        assert_eq!(loss(&dropped, &a, 4), loss(&dropped, &batch(-0.5), 4));
    }
}
