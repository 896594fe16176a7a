//! The scheduler trait that training, sampling and evaluation use, after diffusers' `SchedulerMixin`.

use candle_core::Tensor;
use rand::RngCore;

use crate::config::{PredictionType, SampleClipping, SchedulerConfig, SchedulerKind};
use crate::error::{DiffusionError, Result};
use crate::noise_schedule::{check_same_shape, NoiseSchedule};

/// Where a stochastic step gets its variance noise.
pub enum StepNoise<'a> {
    /// No noise: fine for deterministic steps (DDIM with eta 0, DPM-Solver++, DDPM at t = 0);
    /// a step that needs noise returns [`DiffusionError::NoiseRequired`].
    None,
    /// Use this tensor (same shape as the sample) as the standard-normal noise, like diffusers'
    /// `variance_noise`.
    Tensor(&'a Tensor),
    /// Draw standard-normal noise from this seeded generator.
    Rng(&'a mut dyn RngCore),
}

impl StepNoise<'_> {
    /// The noise for a sample shaped like `like`, or an error naming the step that needed it.
    pub(crate) fn resolve(
        self,
        like: &Tensor,
        scheduler: &'static str,
        timestep: usize,
    ) -> Result<Tensor> {
        match self {
            StepNoise::None => Err(DiffusionError::NoiseRequired {
                scheduler,
                timestep,
            }),
            StepNoise::Tensor(t) => {
                check_same_shape("variance noise", t, like)?;
                Ok(t.to_dtype(like.dtype())?)
            }
            StepNoise::Rng(rng) => {
                crate::random::randn(rng, like.shape(), like.dtype(), like.device())
            }
        }
    }
}

/// Result of one reverse step.
#[derive(Clone, Debug)]
pub struct StepOutput {
    /// x_{t_prev}: the next sample of the loop.
    pub prev_sample: Tensor,
    /// The model's x0 estimate at this step (after clipping where the scheduler clips).
    pub pred_original_sample: Tensor,
}

/// A diffusion noise scheduler: training forward process plus one reverse-step rule.
pub trait Scheduler: Send {
    /// Which diffusers class this reproduces.
    fn kind(&self) -> SchedulerKind {
        self.config().kind()
    }

    /// The config it was built from (save it next to the model as `scheduler_config.json`).
    fn config(&self) -> SchedulerConfig;

    /// The training β / ᾱ tables.
    fn noise_schedule(&self) -> &NoiseSchedule;

    /// What the model predicts.
    fn prediction_type(&self) -> PredictionType {
        self.config().prediction_type()
    }

    /// Training timesteps T.
    fn num_train_timesteps(&self) -> usize {
        self.noise_schedule().len()
    }

    /// Chooses `num_inference_steps` timesteps and resets any multistep state.
    fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<()>;

    /// The current inference timesteps, descending.
    fn timesteps(&self) -> &[usize];

    /// The timestep the model is called with at inference timestep `timestep`: the same number,
    /// except for Euler's fractional float32 timesteps (see [`crate::euler_ancestral`]).
    fn model_timestep(&self, timestep: usize) -> f64 {
        timestep as f64
    }

    /// Standard deviation of the initial noise: samplers draw x_T ~ N(0, 1) and multiply it by
    /// this, as diffusers' pipelines do (1.0 except for Euler's σ_max).
    fn init_noise_sigma(&self) -> f64 {
        1.0
    }

    /// Input scaling before the model call (identity for DDPM, DDIM and DPM-Solver++; Euler
    /// divides by sqrt(σ² + 1)).
    fn scale_model_input(&self, sample: &Tensor, _timestep: usize) -> Result<Tensor> {
        Ok(sample.clone())
    }

    /// Sets DDIM's η; the other schedulers accept only 0.
    fn set_eta(&mut self, eta: f64) -> Result<()> {
        if eta == 0.0 {
            Ok(())
        } else {
            Err(DiffusionError::InvalidEta {
                scheduler: self.kind().class_name(),
                eta,
            })
        }
    }

    /// One reverse step from `sample` at `timestep` given the model output.
    fn step(
        &mut self,
        model_output: &Tensor,
        timestep: usize,
        sample: &Tensor,
        noise: StepNoise<'_>,
    ) -> Result<StepOutput>;

    /// Forward process q(x_t | x0) with one timestep per sample (dim 0).
    fn add_noise(&self, x0: &Tensor, noise: &Tensor, timesteps: &[usize]) -> Result<Tensor> {
        self.noise_schedule().add_noise(x0, noise, timesteps)
    }

    /// The regression target for the model: ε, v (`get_velocity`) or x0, per `prediction_type`.
    fn training_target(&self, x0: &Tensor, noise: &Tensor, timesteps: &[usize]) -> Result<Tensor> {
        match self.prediction_type() {
            PredictionType::Epsilon => {
                check_same_shape("training noise", noise, x0)?;
                Ok(noise.clone())
            }
            PredictionType::Sample => Ok(x0.clone()),
            PredictionType::VPrediction => self.noise_schedule().velocity(x0, noise, timesteps),
        }
    }
}

/// `x * c` with a float32 scalar, as torch multiplies by a 0-d float32 tensor.
pub(crate) fn mul_scalar(x: &Tensor, c: f32) -> Result<Tensor> {
    Ok(x.affine(c as f64, 0.0)?)
}

/// `x / c` as a true division (not a multiplication by 1/c), as torch divides by a 0-d tensor.
pub(crate) fn div_scalar(x: &Tensor, c: f32) -> Result<Tensor> {
    let c = Tensor::new(c as f64, x.device())?.to_dtype(x.dtype())?;
    Ok(x.broadcast_div(&c)?)
}

/// x0 (and ε) from a model output, shared by DDPM and DDIM, with diffusers' float32 scalar math:
/// ε: x0 = (x − sqrt(1−ᾱ)·ε)/sqrt(ᾱ); v: x0 = sqrt(ᾱ)·x − sqrt(1−ᾱ)·v; sample: x0 = output.
pub(crate) fn predict_x0_and_eps(
    prediction_type: PredictionType,
    model_output: &Tensor,
    sample: &Tensor,
    alpha_prod_t: f32,
) -> Result<(Tensor, Tensor)> {
    let sqrt_a = alpha_prod_t.sqrt();
    let sqrt_b = (1.0f32 - alpha_prod_t).sqrt();
    Ok(match prediction_type {
        PredictionType::Epsilon => {
            let x0 = div_scalar(&(sample - mul_scalar(model_output, sqrt_b)?)?, sqrt_a)?;
            (x0, model_output.clone())
        }
        PredictionType::Sample => {
            let eps = div_scalar(&(sample - mul_scalar(model_output, sqrt_a)?)?, sqrt_b)?;
            (model_output.clone(), eps)
        }
        PredictionType::VPrediction => {
            let x0 = (mul_scalar(sample, sqrt_a)? - mul_scalar(model_output, sqrt_b)?)?;
            let eps = (mul_scalar(model_output, sqrt_a)? + mul_scalar(sample, sqrt_b)?)?;
            (x0, eps)
        }
    })
}

/// Clamps x0 to ±`clip_sample_range` when `clip_sample` is set (DDPM and DDIM).
pub(crate) fn clip_x0(x0: Tensor, clipping: &SampleClipping) -> Result<Tensor> {
    if !clipping.clip_sample {
        return Ok(x0);
    }
    let r = clipping.clip_sample_range;
    Ok(x0.clamp(-r, r)?)
}

/// Checks that the model output matches the sample it will update.
pub(crate) fn check_step_shapes(model_output: &Tensor, sample: &Tensor) -> Result<()> {
    check_same_shape("model_output", model_output, sample)
}
