//! The segmentation-guided sampling loop of the paper's `SegGuidedDDIMPipeline` /
//! `SegGuidedDDPMPipeline`: at each timestep concatenate the mask channels to the current image,
//! call the ε-model, drop the mask, and take a scheduler step; finally map to [0, 1]. As in
//! diffusers' Stable Diffusion pipelines, x_T is scaled by the scheduler's `init_noise_sigma` and
//! the model input goes through `scale_model_input` (both identities except for Euler).

use candle_core::Tensor;
use rand::RngCore;

use crate::error::{DiffusionError, Result};
use crate::scheduler::{Scheduler, StepNoise};

/// The denoising network as the sampling loop sees it.
pub trait EpsModel {
    /// Model output for `input` = cat[x_t, condition] along channels (N, C_img + C_cond, H, W) at
    /// diffusion timestep `timestep` (the same for the whole batch; [`Scheduler::model_timestep`],
    /// a whole number except for Euler's fractional timesteps); returns (N, C_img, H, W).
    fn predict(&mut self, input: &Tensor, timestep: f64) -> candle_core::Result<Tensor>;
}

impl<F> EpsModel for F
where
    F: FnMut(&Tensor, f64) -> candle_core::Result<Tensor>,
{
    fn predict(&mut self, input: &Tensor, timestep: f64) -> candle_core::Result<Tensor> {
        self(input, timestep)
    }
}

/// Settings of one sampling run.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingOptions {
    /// Number of inference steps (`set_timesteps`).
    pub num_inference_steps: usize,
    /// DDIM η (must be 0 for the other schedulers). The paper samples with η = 0.
    pub eta: f64,
    /// Keep x after every step (memory: steps × sample size).
    pub record_trajectory: bool,
}

impl Default for SamplingOptions {
    /// The paper's DDIM setting: 50 steps, η = 0, no trajectory.
    fn default() -> Self {
        Self {
            num_inference_steps: 50,
            eta: 0.0,
            record_trajectory: false,
        }
    }
}

/// Result of a sampling run.
#[derive(Clone, Debug)]
pub struct GuidedSample {
    /// x_0 as the scheduler returns it (nominally in [-1, 1]).
    pub final_sample: Tensor,
    /// `(x/2 + 0.5).clamp(0, 1)`, the pipeline's output image.
    pub image01: Tensor,
    /// x after each step concatenated along dim 0: (steps·N, C, H, W), as `torch.cat(traj)`.
    pub trajectory: Option<Tensor>,
}

/// Runs the guided reverse process from the standard-normal draw `x_t` (N, C, H, W), scaled by
/// the scheduler's `init_noise_sigma`, with mask channels `condition` (N, C_cond, H, W) or none
/// (unconditional model). `rng` feeds stochastic steps (DDPM, DDIM η > 0);
/// deterministic runs may pass `None`.
pub fn guided_sample(
    scheduler: &mut dyn Scheduler,
    model: &mut dyn EpsModel,
    x_t: &Tensor,
    condition: Option<&Tensor>,
    options: &SamplingOptions,
    rng: Option<&mut dyn RngCore>,
) -> Result<GuidedSample> {
    guided_sample_with_progress(
        scheduler,
        model,
        x_t,
        condition,
        options,
        rng,
        &mut |_, _| {},
    )
}

/// [`guided_sample`] calling `progress(step_index, timestep)` after each step.
pub fn guided_sample_with_progress(
    scheduler: &mut dyn Scheduler,
    model: &mut dyn EpsModel,
    x_t: &Tensor,
    condition: Option<&Tensor>,
    options: &SamplingOptions,
    mut rng: Option<&mut dyn RngCore>,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<GuidedSample> {
    if x_t.rank() != 4 {
        return Err(DiffusionError::ShapeMismatch {
            what: "x_T (expected N, C, H, W)",
            got: x_t.dims().to_vec(),
            expected: vec![],
        });
    }
    if let Some(c) = condition {
        let (n, _, h, w) = x_t.dims4()?;
        let (cn, _, ch, cw) = c.dims4()?;
        if (cn, ch, cw) != (n, h, w) {
            return Err(DiffusionError::ShapeMismatch {
                what: "condition (N, C_cond, H, W) vs x_T",
                got: c.dims().to_vec(),
                expected: x_t.dims().to_vec(),
            });
        }
    }
    scheduler.set_timesteps(options.num_inference_steps)?;
    scheduler.set_eta(options.eta)?;
    let condition = match condition {
        Some(c) => Some(c.to_dtype(x_t.dtype())?),
        None => None,
    };
    let timesteps = scheduler.timesteps().to_vec();
    let mut x = scale_initial_noise(scheduler, x_t)?;
    let mut trajectory = Vec::with_capacity(if options.record_trajectory {
        timesteps.len()
    } else {
        0
    });
    for (i, &t) in timesteps.iter().enumerate() {
        let scaled = scheduler.scale_model_input(&x, t)?;
        let input = match &condition {
            Some(c) => Tensor::cat(&[&scaled, c], 1)?,
            None => scaled,
        };
        let eps = model.predict(&input, scheduler.model_timestep(t))?;
        if eps.dims() != x.dims() {
            return Err(DiffusionError::ShapeMismatch {
                what: "model output (must match the image, without mask channels)",
                got: eps.dims().to_vec(),
                expected: x.dims().to_vec(),
            });
        }
        let noise = match rng.as_deref_mut() {
            Some(r) => StepNoise::Rng(r),
            None => StepNoise::None,
        };
        x = scheduler.step(&eps, t, &x, noise)?.prev_sample;
        if options.record_trajectory {
            trajectory.push(x.clone());
        }
        progress(i, t);
    }
    let image01 = to_image01(&x)?;
    let trajectory = if options.record_trajectory {
        Some(Tensor::cat(&trajectory, 0)?)
    } else {
        None
    };
    Ok(GuidedSample {
        final_sample: x,
        image01,
        trajectory,
    })
}

/// x_T = `init_noise_sigma`·z for a standard-normal `z`, as diffusers' `latents *
/// scheduler.init_noise_sigma` (a float32 product; `z` itself when the sigma is 1).
pub(crate) fn scale_initial_noise(scheduler: &dyn Scheduler, z: &Tensor) -> Result<Tensor> {
    let sigma = scheduler.init_noise_sigma();
    if sigma == 1.0 {
        return Ok(z.clone());
    }
    crate::scheduler::mul_scalar(z, sigma as f32)
}

/// `(x/2 + 0.5).clamp(0, 1)`: diffusers pipelines' map from [-1, 1] to [0, 1].
pub fn to_image01(x: &Tensor) -> Result<Tensor> {
    Ok(x.affine(0.5, 0.5)?.clamp(0.0, 1.0)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DdpmConfig, SchedulerConfig};
    use crate::random::randn;
    use candle_core::{DType, Device};
    use rand::SeedableRng;

    fn eps_model(input: &Tensor, _t: f64) -> candle_core::Result<Tensor> {
        input.narrow(1, 0, 1)? * 0.1
    }

    fn ddpm() -> Box<dyn Scheduler> {
        SchedulerConfig::Ddpm(DdpmConfig::default())
            .build()
            .unwrap()
    }

    #[test]
    fn stochastic_sampling_is_reproducible_per_seed() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        let x_t = randn(&mut rng, (2, 1, 4, 4), DType::F32, &Device::Cpu).unwrap();
        let cond = Tensor::ones((2, 1, 4, 4), DType::F32, &Device::Cpu).unwrap();
        let opts = SamplingOptions {
            num_inference_steps: 20,
            ..SamplingOptions::default()
        };
        let run = |seed: u64| {
            let mut r = rand::rngs::StdRng::seed_from_u64(seed);
            let mut m = eps_model;
            guided_sample(
                ddpm().as_mut(),
                &mut m,
                &x_t,
                Some(&cond),
                &opts,
                Some(&mut r),
            )
            .unwrap()
        };
        let (a, b, c) = (run(1), run(1), run(2));
        let diff = |x: &Tensor, y: &Tensor| -> f32 {
            (x - y)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar()
                .unwrap()
        };
        assert_eq!(diff(&a.final_sample, &b.final_sample), 0.0);
        assert!(diff(&a.final_sample, &c.final_sample) > 1e-3);
        let img_min: f32 = a.image01.min_all().unwrap().to_scalar().unwrap();
        let img_max: f32 = a.image01.max_all().unwrap().to_scalar().unwrap();
        assert!((0.0..=1.0).contains(&img_min) && (0.0..=1.0).contains(&img_max));
        assert!(a.trajectory.is_none());
    }

    #[test]
    fn stochastic_scheduler_without_rng_is_an_error() {
        let x_t = Tensor::zeros((1, 1, 4, 4), DType::F32, &Device::Cpu).unwrap();
        let mut m = eps_model;
        let opts = SamplingOptions {
            num_inference_steps: 5,
            ..SamplingOptions::default()
        };
        let err = guided_sample(ddpm().as_mut(), &mut m, &x_t, None, &opts, None).unwrap_err();
        assert!(matches!(err, DiffusionError::NoiseRequired { .. }), "{err}");
    }

    #[test]
    fn model_output_with_mask_channels_is_rejected() {
        let x_t = Tensor::zeros((1, 1, 4, 4), DType::F32, &Device::Cpu).unwrap();
        let cond = Tensor::zeros((1, 1, 4, 4), DType::F32, &Device::Cpu).unwrap();
        let mut identity = |input: &Tensor, _t: f64| Ok(input.clone());
        let mut sched = SchedulerConfig::Ddim(Default::default()).build().unwrap();
        let err = guided_sample(
            sched.as_mut(),
            &mut identity,
            &x_t,
            Some(&cond),
            &SamplingOptions::default(),
            None,
        )
        .unwrap_err();
        assert!(matches!(err, DiffusionError::ShapeMismatch { .. }), "{err}");
        // eta on a scheduler without one is refused
        let opts = SamplingOptions {
            eta: 0.5,
            ..SamplingOptions::default()
        };
        let mut m = eps_model;
        assert!(guided_sample(ddpm().as_mut(), &mut m, &x_t, None, &opts, None).is_err());
    }
}
