//! The paper's sampler as a library API (used by `segdiff sample`, the evaluator and the demo):
//! class-id masks in, images in [0, 1] out, with per-image seeds, ablated masks, mask guidance,
//! latent interpolation toward a real image, sharding and progress reporting.
//!
//! Every image of a run has a global index `g` in mask order: image `g` is sample
//! `g % samples_per_mask` of mask `g / samples_per_mask`. All its noise (x_T, stochastic-step
//! noise, interpolation noise) comes from generators keyed by `(seed, g)` ([`image_rng`]), so the
//! result does not depend on the batch size or on the other images of its batch, up to the
//! denoiser's rounding: convolution and matmul kernels (CPU ones included) may sum in a different
//! order for another batch shape, which moves the tiny UNet's images by ~3e-6. Batches are
//! therefore cut at global multiples of `batch_size`, which makes shards ([`Shard`]) reproduce
//! the single run bit for bit.
//!
//! The sampling scheduler is built from the model's *training* noise schedule
//! ([`sampling_scheduler_config`]); the loop is the official pipelines' concat-mask → ε → step.

pub mod guided_loop;
mod image_rng;
mod mask_input;
mod sampler_kind;
mod shard;
pub mod volume;

use candle_core::{DType, Device, Tensor};
use segdiff_unet::UNet2DModel;

use crate::config::SchedulerConfig;
use crate::error::{DiffusionError, Result};
use crate::model_dir::{ConditioningMeta, SegdiffModel};
use crate::sampler::guided_loop::{scale_initial_noise, to_image01, EpsModel};
use crate::scheduler::{Scheduler, StepNoise};

pub use image_rng::{image_rng, initial_noise, NoiseStream};
pub use sampler_kind::SamplerKind;
pub use shard::Shard;

use image_rng::draw_batch;
use mask_input::{prepare_conditions, MaskEdit};

/// Inference steps used when [`SampleOptions::steps`] is `None` (see
/// [`SamplerKind::default_steps`]).
pub fn default_steps(kind: SamplerKind) -> usize {
    kind.default_steps()
}

/// The config of the scheduler `kind` samples with (see [`SamplerKind::scheduler_config`]).
pub fn sampling_scheduler_config(training: &SchedulerConfig, kind: SamplerKind) -> SchedulerConfig {
    kind.scheduler_config(training)
}

/// Where along the schedule the latent interpolation mixes in the real image.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MixPoint {
    /// Mix before inference step `k` (0-based, `k < steps`): after `k` steps from x_T, at
    /// t̃ = `timesteps[k]`. `k = 0` mixes x_T itself.
    StepIndex(usize),
    /// Fraction `f` in [0, 1) of the inference steps run before mixing: `k = ⌊f·steps⌋`.
    Fraction(f64),
}

impl MixPoint {
    /// The step index `k` for a schedule of `steps` inference steps.
    pub fn step_index(self, steps: usize) -> Result<usize> {
        let k = match self {
            Self::StepIndex(k) => k,
            Self::Fraction(f) => {
                if !(0.0..1.0).contains(&f) {
                    return Err(DiffusionError::InvalidParameter {
                        name: "interpolation fraction",
                        value: f.to_string(),
                        reason: "must be in [0, 1)",
                    });
                }
                (f * steps as f64).floor() as usize
            }
        };
        if k >= steps {
            return Err(DiffusionError::InvalidParameter {
                name: "interpolation step",
                value: k.to_string(),
                reason: "must be below the number of inference steps",
            });
        }
        Ok(k)
    }
}

/// Latent interpolation toward real images (the paper's adjustable anatomical similarity):
/// sample from x_T down to t̃, noise the real image to t̃ with `add_noise` (noise from the image's
/// [`NoiseStream::Interpolation`]), take x̃ = (1−λ)·x_gen(t̃) + λ·x_real(t̃), denoise on to 0.
///
/// With DPM-Solver++ the step after the mix still uses the multistep history of the generated
/// trajectory, as a scheduler that is not told about the jump would. With Euler the latents live
/// in its σ parameterisation (x0 + σ·ε) and its `add_noise` noises the real image the same way.
#[derive(Clone, Debug)]
pub struct LatentInterpolation {
    /// Real images in [-1, 1], (M, C, H, W): one per mask (per unconditional slot), shared by
    /// that mask's samples.
    pub real_images: Tensor,
    /// λ in [0, 1]: 0 is the plain sample, 1 starts the rest of the way from the noised real image.
    pub lambda: f64,
    /// t̃.
    pub at: MixPoint,
}

/// Settings of a sampling run.
#[derive(Clone, Debug)]
pub struct SampleOptions {
    /// DDIM (paper default), DDPM, DPM-Solver++ 2M in its ODE or SDE form, or Euler ancestral.
    pub scheduler: SamplerKind,
    /// Inference steps; `None` = [`default_steps`] (50 / 1000 / 20 / 30).
    pub steps: Option<usize>,
    /// DDIM η (0 = deterministic, the paper's setting); must be 0 for the other schedulers.
    pub eta: f64,
    /// Seed of every random draw of the run (see [`image_rng`]).
    pub seed: u64,
    /// Images per denoiser call (a memory/speed trade-off; see the module doc on sharding).
    pub batch_size: usize,
    /// Images generated per mask (per unconditional slot).
    pub samples_per_mask: usize,
    /// Mask guidance scale w: ε = ε(x|∅) + w·(ε(x|m) − ε(x|∅)), ∅ the all-background mask.
    /// Meant for models trained with mask ablation. `None` or `Some(1.0)` is plain conditioning
    /// (one network call per step); other values cost a second call.
    pub guidance_scale: Option<f64>,
    /// Foreground classes to keep; the others are set to background before encoding (the model
    /// fills them in).
    pub keep_classes: Option<Vec<u32>>,
    /// Condition on all-background masks (cannot be combined with `keep_classes`).
    pub empty_mask: bool,
    /// Generate only this shard's images (see [`Shard::image_range`]).
    pub shard: Option<Shard>,
    /// The standard-normal draw of every image of the run, (total, C, H, W) in global order
    /// (also when sharded), replacing the seeded draw (x_T is it times the scheduler's
    /// `init_noise_sigma`); other noise still comes from the seed.
    pub init_noise: Option<Tensor>,
    /// Latent interpolation toward real images.
    pub interpolation: Option<LatentInterpolation>,
    /// Every image draws its noise from the streams of image 0 (x_T, step noise, interpolation
    /// noise) instead of its own: images of similar masks come out alike, e.g. adjacent slices
    /// of a volume, at the cost of samples that are no longer independent draws.
    pub shared_noise: bool,
}

impl Default for SampleOptions {
    /// The paper: DDIM, 50 steps, η = 0, seed 0, batch 8, one sample per mask, plain conditioning.
    fn default() -> Self {
        Self {
            scheduler: SamplerKind::Ddim,
            steps: None,
            eta: 0.0,
            seed: 0,
            batch_size: 8,
            samples_per_mask: 1,
            guidance_scale: None,
            keep_classes: None,
            empty_mask: false,
            shard: None,
            init_noise: None,
            interpolation: None,
            shared_noise: false,
        }
    }
}

/// The image whose noise streams image `g` draws from (`g`, or 0 with `shared_noise`).
pub(crate) fn noise_index(options: &SampleOptions, g: usize) -> usize {
    if options.shared_noise {
        0
    } else {
        g
    }
}

/// What is sampled.
#[derive(Clone, Copy, Debug)]
pub enum SampleInput<'a> {
    /// Class-id masks, (M, H, W) or (M, 1, H, W), u8 / u32 / i64, for segmentation-guided models.
    Masks(&'a Tensor),
    /// `count` slots of `height`×`width` for unconditional models.
    Unconditional {
        count: usize,
        height: usize,
        width: usize,
    },
}

/// Reported after every denoising step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SampleProgress {
    /// Images of this run (shard) finished, counting the current batch after its last step.
    pub images_done: usize,
    /// Images of this run (shard).
    pub images_total: usize,
    /// Steps of the current batch done (1-based).
    pub step: usize,
    /// Steps per batch.
    pub steps: usize,
}

/// Result of a sampling run.
#[derive(Clone, Debug)]
pub struct SampleOutput {
    /// `(x/2 + 0.5).clamp(0, 1)`, f32 (K, C, H, W) on the CPU, in global image order.
    pub images01: Tensor,
    /// Global index of each row (contiguous; `0..total` unless sharded).
    pub image_indices: Vec<usize>,
    /// Mask (slot) of each row: `image_index / samples_per_mask`.
    pub mask_indices: Vec<usize>,
    /// Images of the whole run (all shards).
    pub total_images: usize,
}

/// A [`UNet2DModel`] as an [`EpsModel`]: casts the input to the network's dtype, passes the
/// timestep as a 0-d f32 tensor, and returns the output in the input's dtype. (The diffusers
/// pipelines pass the scheduler's timestep tensor, i64 or, for Euler, fractional f32; the UNet's
/// sinusoidal embedding casts it to f32 either way, so whole timesteps embed as before.)
pub struct UnetDenoiser<'a> {
    unet: &'a UNet2DModel,
    dtype: DType,
}

impl<'a> UnetDenoiser<'a> {
    /// Wraps `unet` whose weights are in `dtype`.
    pub fn new(unet: &'a UNet2DModel, dtype: DType) -> Self {
        Self { unet, dtype }
    }
}

impl EpsModel for UnetDenoiser<'_> {
    fn predict(&mut self, input: &Tensor, timestep: f64) -> candle_core::Result<Tensor> {
        let t = Tensor::new(timestep as f32, input.device())?;
        let out = self.unet.forward(&input.to_dtype(self.dtype)?, &t)?;
        // Sampling never back-propagates: with trainable weights (training previews) the graph
        // would otherwise chain every step's activations to the next one and keep them alive.
        Ok(out.to_dtype(input.dtype())?.detach())
    }
}

/// Samples with a loaded model directory (its UNet, training schedule and conditioning meta).
pub fn sample(
    model: &SegdiffModel,
    input: SampleInput<'_>,
    options: &SampleOptions,
    progress: &mut dyn FnMut(&SampleProgress),
) -> Result<SampleOutput> {
    let weight =
        model
            .unet
            .tensors
            .get("conv_in.weight")
            .ok_or_else(|| DiffusionError::ModelDir {
                path: model.unet.weights_path.clone(),
                message: "no conv_in.weight among the loaded tensors".into(),
            })?;
    let (dtype, device) = (weight.dtype(), weight.device().clone());
    let mut denoiser = UnetDenoiser::new(&model.unet.model, dtype);
    sample_images(
        &mut denoiser,
        &model.scheduler,
        &model.meta,
        input,
        options,
        &device,
        progress,
    )
}

/// Samples with any ε-model: `training` is the model's training scheduler config, `meta` its
/// conditioning; the loop state lives in f32 on `device`. A neighbour-conditioned model
/// ([`crate::NeighbourScheme`]) generates every image without a neighbour, as the anchor of a
/// volume ([`volume::sample_volume_slices`] conditions slices on their neighbours).
pub fn sample_images(
    denoiser: &mut dyn EpsModel,
    training: &SchedulerConfig,
    meta: &ConditioningMeta,
    input: SampleInput<'_>,
    options: &SampleOptions,
    device: &Device,
    progress: &mut dyn FnMut(&SampleProgress),
) -> Result<SampleOutput> {
    check_counts(options)?;
    let (condition, slots, height, width) = conditions(meta, input, options, device)?;
    let condition = match &meta.neighbours {
        Some(scheme) => Some(with_absent_neighbour(
            scheme,
            meta,
            condition,
            (slots, height, width),
            device,
        )?),
        None => condition,
    };
    let mut run = SamplingRun::plan(
        training,
        options,
        condition,
        slots,
        (meta.image_channels, height, width),
        device,
    )?;
    if meta.neighbours.is_some() {
        run.guided_channels = Some(meta.mask_channels()?);
    }
    let total = slots * options.samples_per_mask;
    let range = match options.shard {
        Some(s) => s.image_range(total, options.batch_size)?,
        None => 0..total,
    };
    let images_total = range.len();
    let mut outputs = Vec::new();
    let mut images_done = 0;
    for batch in shard::batches(range.clone(), options.batch_size) {
        let n = batch.len();
        let x = run.sample_batch(denoiser, batch, &mut |step, steps| {
            progress(&SampleProgress {
                images_done: images_done + if step == steps { n } else { 0 },
                images_total,
                step,
                steps,
            })
        })?;
        images_done += n;
        outputs.push(to_image01(&x)?.to_device(&Device::Cpu)?);
    }
    let (channels, height, width) = run.image_shape;
    let images01 = if outputs.is_empty() {
        Tensor::zeros((0, channels, height, width), DType::F32, &Device::Cpu)?
    } else {
        Tensor::cat(&outputs, 0)?
    };
    let spm = options.samples_per_mask;
    Ok(SampleOutput {
        images01,
        image_indices: range.clone().collect(),
        mask_indices: range.map(|g| g / spm).collect(),
        total_images: total,
    })
}

/// Which steps and pixels of a volume batch see the neighbour
/// ([`volume::sample_volume_slices`]).
struct NeighbourSteps {
    /// Step indices that see the neighbour; the others are denoised as an anchor's.
    window: std::ops::Range<usize>,
    /// The condition channels with the neighbour absent (an anchor's).
    absent: Tensor,
    /// Inside the window, the weight (N, 1, H, W) of the neighbour-conditioned prediction per
    /// pixel, the prediction without the neighbour taking the rest; `None`: 1 everywhere.
    gate: Option<Tensor>,
}

/// One sampling run's fixed parts: its scheduler and timesteps, conditions, guidance and
/// interpolation, applied batch after batch.
struct SamplingRun<'o> {
    options: &'o SampleOptions,
    scheduler: Box<dyn Scheduler>,
    steps: usize,
    timesteps: Vec<usize>,
    /// Whether scheduler steps draw noise (DDPM, DDIM with η > 0, SDE-DPM-Solver++, Euler
    /// ancestral).
    stochastic: bool,
    /// Mask guidance scale (`None` for plain conditioning, w = 1 included).
    guidance: Option<f64>,
    /// Encoded conditions, one row per slot.
    condition: Option<Tensor>,
    /// Latent interpolation: (step index of t̃, λ, real images on the device).
    mix: Option<(usize, f64, Tensor)>,
    /// Leading condition channels that are the mask, zeroed in guidance's ∅ branch; the rest
    /// (neighbour channels) is kept in both branches. `None`: the whole condition is the mask.
    guided_channels: Option<usize>,
    image_shape: (usize, usize, usize),
    device: Device,
}

impl<'o> SamplingRun<'o> {
    /// Builds the sampling scheduler from the model's training schedule and checks the
    /// options' tensors against the run's size.
    fn plan(
        training: &SchedulerConfig,
        options: &'o SampleOptions,
        condition: Option<Tensor>,
        slots: usize,
        image_shape: (usize, usize, usize),
        device: &Device,
    ) -> Result<Self> {
        let (channels, height, width) = image_shape;
        let mut scheduler = sampling_scheduler_config(training, options.scheduler).build()?;
        let steps = options.steps.unwrap_or(default_steps(options.scheduler));
        scheduler.set_timesteps(steps)?;
        scheduler.set_eta(options.eta)?;
        let timesteps = scheduler.timesteps().to_vec();
        let stochastic = options.scheduler.is_stochastic(options.eta);
        if let Some(x) = &options.init_noise {
            expect_dims(
                "init_noise (total images, C, H, W)",
                x,
                &[slots * options.samples_per_mask, channels, height, width],
            )?;
        }
        let mix = match &options.interpolation {
            Some(interp) => {
                if !(0.0..=1.0).contains(&interp.lambda) {
                    return Err(DiffusionError::InvalidParameter {
                        name: "interpolation lambda",
                        value: interp.lambda.to_string(),
                        reason: "must be in [0, 1]",
                    });
                }
                expect_dims(
                    "interpolation real_images (masks, C, H, W)",
                    &interp.real_images,
                    &[slots, channels, height, width],
                )?;
                let real = interp.real_images.to_dtype(DType::F32)?.to_device(device)?;
                Some((interp.at.step_index(timesteps.len())?, interp.lambda, real))
            }
            None => None,
        };
        Ok(Self {
            options,
            scheduler,
            steps,
            timesteps,
            stochastic,
            // w = 1 is plain conditioning: skip the second network call.
            guidance: options.guidance_scale.filter(|&w| w != 1.0),
            condition,
            mix,
            guided_channels: None,
            image_shape,
            device: device.clone(),
        })
    }

    /// The RNGs of `stream` for the images `images` (global indices; all image 0's with
    /// `shared_noise`).
    fn rngs(&self, images: &[usize], stream: NoiseStream) -> Vec<rand::rngs::StdRng> {
        images
            .iter()
            .map(|&g| image_rng(self.options.seed, noise_index(self.options, g), stream))
            .collect()
    }

    /// Denoises the images of `batch` (global indices) from x_T to x_0, reporting each step as
    /// (step, steps).
    fn sample_batch(
        &mut self,
        denoiser: &mut dyn EpsModel,
        batch: std::ops::Range<usize>,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Tensor> {
        let spm = self.options.samples_per_mask;
        let images: Vec<usize> = batch.collect();
        let rows: Vec<u32> = images.iter().map(|&g| (g / spm) as u32).collect();
        let rows = Tensor::from_vec(rows, images.len(), &self.device)?;
        let cond = match &self.condition {
            Some(c) => Some(c.index_select(&rows, 0)?),
            None => None,
        };
        self.sample_at(denoiser, &images, &rows, cond, None, progress)
    }

    /// Guidance's ∅ condition for the condition channels `c` (the mask channels zeroed, the
    /// neighbour channels kept), or `None` without guidance.
    fn guidance_empty(&self, c: &Tensor) -> Result<Option<Tensor>> {
        if self.guidance.is_none() {
            return Ok(None);
        }
        Ok(Some(match self.guided_channels {
            Some(k) => {
                let rest = c.dim(1)? - k;
                Tensor::cat(
                    &[&c.narrow(1, 0, k)?.zeros_like()?, &c.narrow(1, k, rest)?],
                    1,
                )?
            }
            None => c.zeros_like()?,
        }))
    }

    /// The model output for `x` with the condition channels `cond`, mask guidance applied with
    /// its ∅ condition `empty`.
    fn guided_eps(
        &self,
        denoiser: &mut dyn EpsModel,
        x: &Tensor,
        cond: Option<&Tensor>,
        empty: Option<&Tensor>,
        t: usize,
    ) -> Result<Tensor> {
        let eps = predict(denoiser, self.scheduler.as_ref(), x, cond, t)?;
        match (self.guidance, empty) {
            (Some(w), Some(empty)) => {
                let eps_empty = predict(denoiser, self.scheduler.as_ref(), x, Some(empty), t)?;
                Ok((&eps_empty + (eps - &eps_empty)?.affine(w, 0.0)?)?)
            }
            _ => Ok(eps),
        }
    }

    /// Denoises the images `images` (global indices: their noise streams and rows of
    /// `init_noise`) whose slots are `rows` (u32 on the device: their rows of the
    /// interpolation's real images) with the condition channels `cond` (one row per image);
    /// `neighbour` (volume sampling) says which steps and pixels see the neighbour channels of
    /// `cond`.
    fn sample_at(
        &mut self,
        denoiser: &mut dyn EpsModel,
        images: &[usize],
        rows: &Tensor,
        cond: Option<Tensor>,
        neighbour: Option<NeighbourSteps>,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Tensor> {
        let (n, shape, device) = (images.len(), self.image_shape, self.device.clone());
        let z = match &self.options.init_noise {
            Some(x_t) => {
                let at: Vec<u32> = images.iter().map(|&g| g as u32).collect();
                let at = Tensor::from_vec(at, n, x_t.device())?;
                x_t.index_select(&at, 0)?
                    .to_dtype(DType::F32)?
                    .to_device(&device)?
            }
            None => draw_batch(&mut self.rngs(images, NoiseStream::Initial), shape, &device)?,
        };
        // Resets multistep state (DPM-Solver++) for the new batch.
        self.scheduler.set_timesteps(self.steps)?;
        let mut x = scale_initial_noise(self.scheduler.as_ref(), &z)?;
        let empty = match &cond {
            Some(c) => self.guidance_empty(c)?,
            None => None,
        };
        let absent_empty = match &neighbour {
            Some(nb) => self.guidance_empty(&nb.absent)?,
            None => None,
        };
        let mut step_rngs = if self.stochastic {
            self.rngs(images, NoiseStream::Step)
        } else {
            Vec::new()
        };
        let timesteps = self.timesteps.clone();
        for (i, &t) in timesteps.iter().enumerate() {
            if let Some((k, lambda, real)) = &self.mix {
                if i == *k {
                    let noise = draw_batch(
                        &mut self.rngs(images, NoiseStream::Interpolation),
                        shape,
                        &device,
                    )?;
                    let real = real.index_select(rows, 0)?;
                    let real_t = self.scheduler.add_noise(&real, &noise, &vec![t; n])?;
                    x = (x.affine(1.0 - lambda, 0.0)? + real_t.affine(*lambda, 0.0)?)?;
                }
            }
            let eps = match &neighbour {
                // outside the window: as an anchor
                Some(nb) if !nb.window.contains(&i) => {
                    self.guided_eps(denoiser, &x, Some(&nb.absent), absent_empty.as_ref(), t)?
                }
                Some(NeighbourSteps {
                    gate: Some(gate),
                    absent,
                    ..
                }) => {
                    let with = self.guided_eps(denoiser, &x, cond.as_ref(), empty.as_ref(), t)?;
                    let without =
                        self.guided_eps(denoiser, &x, Some(absent), absent_empty.as_ref(), t)?;
                    (&without + (with - &without)?.broadcast_mul(gate)?)?
                }
                _ => self.guided_eps(denoiser, &x, cond.as_ref(), empty.as_ref(), t)?,
            };
            let noise = if self.stochastic {
                Some(draw_batch(&mut step_rngs, shape, &device)?)
            } else {
                None
            };
            let step_noise = match &noise {
                Some(z) => StepNoise::Tensor(z),
                None => StepNoise::None,
            };
            x = self.scheduler.step(&eps, t, &x, step_noise)?.prev_sample;
            progress(i + 1, timesteps.len());
        }
        Ok(x)
    }
}

/// The model output for `x` with mask channels `cond`, checked to have the image's shape.
fn predict(
    denoiser: &mut dyn EpsModel,
    scheduler: &dyn Scheduler,
    x: &Tensor,
    cond: Option<&Tensor>,
    t: usize,
) -> Result<Tensor> {
    let scaled = scheduler.scale_model_input(x, t)?;
    let input = match cond {
        Some(c) => Tensor::cat(&[&scaled, c], 1)?,
        None => scaled,
    };
    let eps = denoiser.predict(&input, scheduler.model_timestep(t))?;
    if eps.dims() != x.dims() {
        return Err(DiffusionError::ShapeMismatch {
            what: "model output (must match the image, without mask channels)",
            got: eps.dims().to_vec(),
            expected: x.dims().to_vec(),
        });
    }
    Ok(eps)
}

/// The mask channels `condition` of `slots` images followed by neighbour channels saying
/// "no neighbour" (presence 0).
fn with_absent_neighbour(
    scheme: &crate::NeighbourScheme,
    meta: &ConditioningMeta,
    condition: Option<Tensor>,
    (slots, height, width): (usize, usize, usize),
    device: &Device,
) -> Result<Tensor> {
    let zeros = |c: usize| Tensor::zeros((slots, c, height, width), DType::F32, device);
    let masks = zeros(meta.mask_channels()?)?;
    let nb = crate::neighbours::neighbour_channels(
        scheme,
        &zeros(meta.image_channels)?,
        Some(&masks),
        &vec![false; slots],
    )?;
    Ok(match condition {
        Some(c) => Tensor::cat(&[&c, &nb], 1)?,
        None => nb,
    })
}

/// Encoded conditions (if any) and the run's slot count and image size.
fn conditions(
    meta: &ConditioningMeta,
    input: SampleInput<'_>,
    options: &SampleOptions,
    device: &Device,
) -> Result<(Option<Tensor>, usize, usize, usize)> {
    match (meta.segmentation_guided, input) {
        (true, SampleInput::Masks(masks)) => {
            let edit = MaskEdit {
                keep_classes: options.keep_classes.as_deref(),
                empty: options.empty_mask,
            };
            let c = prepare_conditions(meta, masks, edit, device)?;
            Ok((Some(c.encoded), c.count, c.height, c.width))
        }
        (
            false,
            SampleInput::Unconditional {
                count,
                height,
                width,
            },
        ) => {
            if options.keep_classes.is_some()
                || options.empty_mask
                || options.guidance_scale.is_some()
            {
                return Err(DiffusionError::InvalidParameter {
                    name: "keep_classes / empty_mask / guidance_scale",
                    value: "set".into(),
                    reason: "mask options need a segmentation-guided model",
                });
            }
            if count == 0 || height == 0 || width == 0 {
                return Err(DiffusionError::InvalidParameter {
                    name: "unconditional input",
                    value: format!("{count} × {height}×{width}"),
                    reason: "count and size must be positive",
                });
            }
            Ok((None, count, height, width))
        }
        (true, SampleInput::Unconditional { .. }) => Err(DiffusionError::InvalidParameter {
            name: "input",
            value: "unconditional".into(),
            reason: "this model is segmentation-guided: give masks",
        }),
        (false, SampleInput::Masks(_)) => Err(DiffusionError::InvalidParameter {
            name: "input",
            value: "masks".into(),
            reason: "this model is unconditional and takes no mask",
        }),
    }
}

fn check_counts(options: &SampleOptions) -> Result<()> {
    for (name, value) in [
        ("batch_size", options.batch_size),
        ("samples_per_mask", options.samples_per_mask),
    ] {
        if value == 0 {
            return Err(DiffusionError::InvalidParameter {
                name,
                value: "0".into(),
                reason: "must be at least 1",
            });
        }
    }
    if let Some(w) = options.guidance_scale {
        if !w.is_finite() {
            return Err(DiffusionError::InvalidParameter {
                name: "guidance_scale",
                value: w.to_string(),
                reason: "must be finite",
            });
        }
    }
    Ok(())
}

fn expect_dims(what: &'static str, t: &Tensor, dims: &[usize]) -> Result<()> {
    if t.dims() != dims {
        return Err(DiffusionError::ShapeMismatch {
            what,
            got: t.dims().to_vec(),
            expected: dims.to_vec(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
