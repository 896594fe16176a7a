//! DDPM ancestral sampler (Ho et al. 2020) as diffusers' `DDPMScheduler`: the paper's training
//! scheduler and its "DDPM" 1000-step sampler.

use candle_core::Tensor;

use crate::config::{DdpmConfig, SchedulerConfig, VarianceType};
use crate::error::{DiffusionError, Result};
use crate::noise_schedule::NoiseSchedule;
use crate::scheduler::{
    check_step_shapes, clip_x0, mul_scalar, predict_x0_and_eps, Scheduler, StepNoise, StepOutput,
};
use crate::timestep_spacing::ddpm_ddim_timesteps;

const NAME: &str = "DDPMScheduler";

/// diffusers `DDPMScheduler`.
#[derive(Clone, Debug)]
pub struct DdpmScheduler {
    config: DdpmConfig,
    schedule: NoiseSchedule,
    timesteps: Vec<usize>,
}

impl DdpmScheduler {
    /// Builds the tables; timesteps start as the full `T-1..=0` chain, as in diffusers.
    pub fn new(config: DdpmConfig) -> Result<Self> {
        let schedule = config.schedule.noise_schedule()?;
        let timesteps = (0..config.schedule.num_train_timesteps).rev().collect();
        Ok(Self {
            config,
            schedule,
            timesteps,
        })
    }

    /// The config (typed).
    pub fn ddpm_config(&self) -> &DdpmConfig {
        &self.config
    }

    /// The timestep after `t` in the current schedule, `None` past the end
    /// (diffusers `previous_timestep`).
    pub fn previous_timestep(&self, t: usize) -> Result<Option<usize>> {
        let idx = self.timesteps.iter().position(|&x| x == t).ok_or(
            DiffusionError::TimestepNotInSchedule {
                scheduler: NAME,
                timestep: t,
                expected: None,
            },
        )?;
        Ok(self.timesteps.get(idx + 1).copied())
    }

    /// Variance of the step from `t` (diffusers `_get_variance` for the fixed variance types).
    pub fn variance(&self, t: usize) -> Result<f32> {
        let c = self.step_coefficients(t)?;
        Ok(match self.config.variance_type {
            VarianceType::FixedSmall | VarianceType::FixedSmallLog => c.posterior_variance,
            VarianceType::FixedLarge => c.current_beta,
        })
    }

    /// Scalars of the step from `t`, in float32 with torch's operation order: diffusers computes
    /// them on 0-d float32 tensors, and `1 − ᾱ_t/ᾱ_prev` cancels badly enough near t = 0 that
    /// f64 arithmetic would move the result by ~5e-5.
    fn step_coefficients(&self, t: usize) -> Result<StepCoefficients> {
        let prev = self.previous_timestep(t)?;
        let a_t = self.schedule.alpha_cumprod(t)?;
        let a_prev = match prev {
            Some(p) => self.schedule.alpha_cumprod(p)?,
            None => 1.0f32,
        };
        let current_alpha = a_t / a_prev;
        let current_beta = 1.0f32 - current_alpha;
        let posterior_variance = ((1.0f32 - a_prev) / (1.0f32 - a_t) * current_beta).max(1e-20);
        Ok(StepCoefficients {
            a_t,
            a_prev,
            current_alpha,
            current_beta,
            posterior_variance,
        })
    }
}

struct StepCoefficients {
    a_t: f32,
    a_prev: f32,
    current_alpha: f32,
    current_beta: f32,
    posterior_variance: f32,
}

impl Scheduler for DdpmScheduler {
    fn config(&self) -> SchedulerConfig {
        SchedulerConfig::Ddpm(self.config.clone())
    }

    fn noise_schedule(&self) -> &NoiseSchedule {
        &self.schedule
    }

    fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<()> {
        self.timesteps = ddpm_ddim_timesteps(
            self.config.timestep_spacing,
            self.config.schedule.num_train_timesteps,
            num_inference_steps,
            self.config.schedule.steps_offset,
        )?;
        Ok(())
    }

    fn timesteps(&self) -> &[usize] {
        &self.timesteps
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        timestep: usize,
        sample: &Tensor,
        noise: StepNoise<'_>,
    ) -> Result<StepOutput> {
        check_step_shapes(model_output, sample)?;
        let t = timestep;
        let c = self.step_coefficients(t)?;
        let beta_prod_t = 1.0f32 - c.a_t;
        let beta_prod_prev = 1.0f32 - c.a_prev;

        let (x0, _) = predict_x0_and_eps(
            self.config.schedule.prediction_type,
            model_output,
            sample,
            c.a_t,
        )?;
        let x0 = clip_x0(x0, &self.config.clipping)?;

        // Eq. (7) of the DDPM paper: posterior mean of q(x_{t-1} | x_t, x0).
        let x0_coeff = c.a_prev.sqrt() * c.current_beta / beta_prod_t;
        let sample_coeff = c.current_alpha.sqrt() * beta_prod_prev / beta_prod_t;
        let mut prev = (mul_scalar(&x0, x0_coeff)? + mul_scalar(sample, sample_coeff)?)?;

        // diffusers adds no noise at t = 0 (and draws none).
        if t > 0 {
            let z = noise.resolve(model_output, NAME, t)?;
            let std = self.variance(t)?.sqrt();
            prev = (prev + mul_scalar(&z, std)?)?;
        }
        Ok(StepOutput {
            prev_sample: prev,
            pred_original_sample: x0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PredictionType;
    use crate::random::randn;
    use candle_core::{DType, Device};
    use rand::SeedableRng;

    fn max_abs(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar()
            .unwrap()
    }

    /// Fed the exact training target, every prediction type recovers x0.
    #[test]
    fn exact_targets_recover_x0_for_each_prediction_type() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let x0 = (randn(&mut rng, (2, 1, 4, 4), DType::F32, &Device::Cpu).unwrap() * 0.5).unwrap();
        let noise = randn(&mut rng, (2, 1, 4, 4), DType::F32, &Device::Cpu).unwrap();
        for pred in [
            PredictionType::Epsilon,
            PredictionType::VPrediction,
            PredictionType::Sample,
        ] {
            let s = DdpmScheduler::new(DdpmConfig {
                schedule: crate::config::TrainSchedule {
                    prediction_type: pred,
                    ..Default::default()
                },
                clipping: crate::config::SampleClipping {
                    clip_sample: false,
                    ..Default::default()
                },
                ..DdpmConfig::default()
            })
            .unwrap();
            for t in [10usize, 400] {
                let xt = s.add_noise(&x0, &noise, &[t, t]).unwrap();
                let target = s.training_target(&x0, &noise, &[t, t]).unwrap();
                let mut s2 = s.clone();
                let out = s2.step(&target, t, &xt, StepNoise::Tensor(&noise)).unwrap();
                let err = max_abs(&out.pred_original_sample, &x0);
                assert!(err < 2e-4, "{pred} t={t}: {err}");
            }
        }
    }

    #[test]
    fn fixed_large_variance_is_beta() {
        let s = DdpmScheduler::new(DdpmConfig {
            variance_type: VarianceType::FixedLarge,
            ..DdpmConfig::default()
        })
        .unwrap();
        for t in [1usize, 500, 999] {
            let rel = (s.variance(t).unwrap() / s.noise_schedule().betas()[t] - 1.0).abs();
            assert!(rel < 1e-3, "t={t}: rel {rel}");
        }
        // fixed_small is the posterior variance β̃_t = (1−ᾱ_{t−1})/(1−ᾱ_t)·β_t < β_t
        let small = DdpmScheduler::new(DdpmConfig::default()).unwrap();
        let ac = small.noise_schedule().alphas_cumprod();
        let b = small.noise_schedule().betas()[500] as f64;
        let want = (1.0 - ac[499] as f64) / (1.0 - ac[500] as f64) * b;
        assert!((small.variance(500).unwrap() as f64 / want - 1.0).abs() < 1e-3);
    }

    #[test]
    fn strided_schedule_steps_to_the_next_listed_timestep() {
        let mut s = DdpmScheduler::new(DdpmConfig::default()).unwrap();
        s.set_timesteps(10).unwrap();
        assert_eq!(
            s.timesteps(),
            &[900, 800, 700, 600, 500, 400, 300, 200, 100, 0]
        );
        assert_eq!(s.previous_timestep(500).unwrap(), Some(400));
        assert_eq!(s.previous_timestep(0).unwrap(), None);
        assert!(s.previous_timestep(450).is_err());
    }
}
