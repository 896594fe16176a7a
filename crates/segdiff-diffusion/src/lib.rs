//! The diffusion "science core" of segdiff: diffusers-0.42-compatible noise schedulers, the
//! segmentation-guided sampling loop, mask conditioning with the paper's mask ablation, and the
//! training machinery every segdiff trainer shares.
//!
//! Not here: the denoising network (`segdiff-unet`, plugged in through [`EpsModel`]), data
//! loading from disk (`segdiff-data`) and the CLI.
//!
//! Main types:
//! - [`SchedulerConfig`] reads/writes `scheduler/scheduler_config.json` for `DDPMScheduler`,
//!   `DDIMScheduler`, `DPMSolverMultistepScheduler`, `EulerAncestralDiscreteScheduler` and
//!   `UniPCMultistepScheduler`; [`SchedulerConfig::build`] gives a [`Scheduler`]
//!   ([`DdpmScheduler`], [`DdimScheduler`], [`DpmSolverMultistepScheduler`],
//!   [`EulerAncestralScheduler`], [`UniPcMultistepScheduler`]).
//! - [`guided_sample`] runs concat-mask → ε-model → step to an image in [0, 1]; [`sampler`] is
//!   the full sampler of the paper (per-image seeds, ablated/empty masks, latent interpolation,
//!   mask guidance, shards).
//! - [`train`]: the training machinery every method reuses ([`train::Method`], [`train::train`]:
//!   per-step seeded RNG, AdamW/EMA/clipping, atomic checkpoints and exact resume, the NaN stop,
//!   [`train::Session`] for progress, loss log and plot, previews) and segmentation-guided
//!   diffusion on it ([`train::Trainer`], [`train::DatasetBatches`], [`train::DiffusionPreview`]).
//! - [`model_dir`]: model directories (diffusers layout + `segdiff.json` conditioning metadata).
//! - [`neighbours`]: neighbour conditioning for consistent volumes ([`NeighbourScheme`], its
//!   training pairs [`train::NeighbourBatches`]) and [`sample_volume_slices`], which generates a
//!   whole volume from a 3-D label map outward from anchor slices (or slice by slice).
//! - [`encode_mask`] / [`MaskEncoding`] and [`MaskAblation`] (Algorithm 1 of Konz et al. 2024).
//! - [`optim`]: [`optim::AdamW`] with exportable state, [`optim::cosine_schedule_with_warmup`],
//!   [`optim::clip_grad_norm`], [`optim::Ema`].
//! - [`random`]: seeded noise and timestep draws (candle's CPU RNG cannot be seeded).

pub mod config;
pub mod ddim;
pub mod ddpm;
pub mod dpm_solver;
pub mod error;
pub mod euler_ancestral;
pub mod mask_conditioning;
pub mod model_dir;
mod multistep;
pub mod neighbours;
pub mod noise_schedule;
pub mod optim;
pub mod random;
pub mod sampler;
pub mod scheduler;
mod timestep_spacing;
pub mod train;
pub mod unipc;

pub use config::{
    AlgorithmType, BetaSchedule, DdimConfig, DdpmConfig, DpmSolverMultistepConfig,
    EulerAncestralConfig, FinalSigmasType, Off, PredictionType, SampleClipping, SchedulerConfig,
    SchedulerKind, SolverType, TimestepSpacing, TrainSchedule, UniPcMultistepConfig,
    UniPcSolverType, VarianceType,
};
pub use ddim::DdimScheduler;
pub use ddpm::DdpmScheduler;
pub use dpm_solver::DpmSolverMultistepScheduler;
pub use error::{DiffusionError, Result};
pub use euler_ancestral::EulerAncestralScheduler;
pub use mask_conditioning::{encode_mask, AblationMode, MaskAblation, MaskEncoding};
pub use model_dir::{load_model_dir, save_model_dir, ConditioningMeta, SegdiffModel};
pub use neighbours::{neighbour_channels, NeighbourKind, NeighbourScheme};
pub use noise_schedule::NoiseSchedule;
pub use sampler::guided_loop::{guided_sample, EpsModel, GuidedSample, SamplingOptions};
pub use sampler::volume::{
    anchor_slices, generation_order, neighbour_step_window, sample_volume_slices, NeighbourGate,
    PlannedSlice, VolumeSampleOptions, VolumeSampleProgress,
};
pub use sampler::{
    sample, sample_images, LatentInterpolation, MixPoint, SampleInput, SampleOptions, SampleOutput,
    SampleProgress, SamplerKind, Shard, UnetDenoiser,
};
pub use scheduler::{Scheduler, StepNoise, StepOutput};
pub use unipc::UniPcMultistepScheduler;
