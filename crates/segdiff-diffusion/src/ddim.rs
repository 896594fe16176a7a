//! DDIM sampler (Song et al. 2021) as diffusers' `DDIMScheduler`: the paper's 50-step, η = 0 sampler.

use candle_core::Tensor;

use crate::config::{DdimConfig, SchedulerConfig};
use crate::error::{DiffusionError, Result};
use crate::noise_schedule::NoiseSchedule;
use crate::scheduler::{
    check_step_shapes, clip_x0, mul_scalar, predict_x0_and_eps, Scheduler, StepNoise, StepOutput,
};
use crate::timestep_spacing::ddpm_ddim_timesteps;

const NAME: &str = "DDIMScheduler";

/// diffusers `DDIMScheduler`; η is held by the scheduler (see [`Scheduler::set_eta`]).
#[derive(Clone, Debug)]
pub struct DdimScheduler {
    config: DdimConfig,
    schedule: NoiseSchedule,
    final_alpha_cumprod: f32,
    timesteps: Vec<usize>,
    num_inference_steps: Option<usize>,
    eta: f64,
}

impl DdimScheduler {
    /// Builds the tables; `set_timesteps` must be called before `step`. η starts at 0.
    pub fn new(config: DdimConfig) -> Result<Self> {
        let schedule = config.schedule.noise_schedule()?;
        let final_alpha_cumprod = if config.set_alpha_to_one {
            1.0f32
        } else {
            schedule.alpha_cumprod(0)?
        };
        let timesteps = (0..config.schedule.num_train_timesteps).rev().collect();
        Ok(Self {
            config,
            schedule,
            final_alpha_cumprod,
            timesteps,
            num_inference_steps: None,
            eta: 0.0,
        })
    }

    /// The config (typed).
    pub fn ddim_config(&self) -> &DdimConfig {
        &self.config
    }

    /// Current η (0 = deterministic DDIM, 1 = DDPM-like variance).
    pub fn eta(&self) -> f64 {
        self.eta
    }

    /// ᾱ used when the previous timestep is before 0.
    pub fn final_alpha_cumprod(&self) -> f32 {
        self.final_alpha_cumprod
    }

    fn alpha_prev(&self, prev_timestep: i64) -> Result<f32> {
        if prev_timestep >= 0 {
            self.schedule.alpha_cumprod(prev_timestep as usize)
        } else {
            Ok(self.final_alpha_cumprod)
        }
    }

    /// σ_t²/η² of Eq. (16): (1−ᾱ_prev)/(1−ᾱ_t)·(1−ᾱ_t/ᾱ_prev) (diffusers `_get_variance`, in
    /// float32 with its operation order).
    pub fn variance(&self, timestep: usize, prev_timestep: i64) -> Result<f32> {
        let a_t = self.schedule.alpha_cumprod(timestep)?;
        let a_prev = self.alpha_prev(prev_timestep)?;
        Ok(((1.0f32 - a_prev) / (1.0f32 - a_t)) * (1.0f32 - a_t / a_prev))
    }
}

impl Scheduler for DdimScheduler {
    fn config(&self) -> SchedulerConfig {
        SchedulerConfig::Ddim(self.config.clone())
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
        self.num_inference_steps = Some(num_inference_steps);
        Ok(())
    }

    fn timesteps(&self) -> &[usize] {
        &self.timesteps
    }

    fn set_eta(&mut self, eta: f64) -> Result<()> {
        if !eta.is_finite() || eta < 0.0 {
            return Err(DiffusionError::InvalidEta {
                scheduler: NAME,
                eta,
            });
        }
        self.eta = eta;
        Ok(())
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        timestep: usize,
        sample: &Tensor,
        noise: StepNoise<'_>,
    ) -> Result<StepOutput> {
        let n = self
            .num_inference_steps
            .ok_or(DiffusionError::TimestepsNotSet(NAME))?;
        check_step_shapes(model_output, sample)?;
        // diffusers steps back by T // n whatever the spacing.
        let prev_timestep = timestep as i64 - (self.config.schedule.num_train_timesteps / n) as i64;
        let a_t = self.schedule.alpha_cumprod(timestep)?;
        let a_prev = self.alpha_prev(prev_timestep)?;

        let (x0, eps) = predict_x0_and_eps(
            self.config.schedule.prediction_type,
            model_output,
            sample,
            a_t,
        )?;
        // diffusers clips x0 but keeps the unclipped ε for the direction term.
        let x0 = clip_x0(x0, &self.config.clipping)?;

        // Scalars in float32 like diffusers' 0-d tensors (η is cast to float32 by torch).
        let std_dev = self.eta as f32 * self.variance(timestep, prev_timestep)?.sqrt();
        let dir_var = 1.0f32 - a_prev - std_dev * std_dev;
        if dir_var < 0.0 {
            // diffusers would produce NaN here (η too large for this jump).
            return Err(DiffusionError::InvalidEta {
                scheduler: NAME,
                eta: self.eta,
            });
        }
        let direction = mul_scalar(&eps, dir_var.sqrt())?;
        let mut prev = (mul_scalar(&x0, a_prev.sqrt())? + direction)?;
        if self.eta > 0.0 {
            let z = noise.resolve(model_output, NAME, timestep)?;
            prev = (prev + mul_scalar(&z, std_dev)?)?;
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
    use crate::config::DdpmConfig;
    use crate::ddpm::DdpmScheduler;

    /// With one-step jumps and η = 1, DDIM's σ² is DDPM's posterior variance β̃_t.
    #[test]
    fn eta_one_variance_is_ddpm_posterior_variance() {
        let ddim = DdimScheduler::new(DdimConfig::default()).unwrap();
        let mut ddpm = DdpmScheduler::new(DdpmConfig::default()).unwrap();
        ddpm.set_timesteps(1000).unwrap();
        for t in [1usize, 20, 500, 999] {
            let a = ddim.variance(t, t as i64 - 1).unwrap();
            let b = ddpm.variance(t).unwrap();
            assert!((a / b - 1.0).abs() < 1e-6, "t={t}: {a} vs {b}");
        }
    }

    #[test]
    fn set_alpha_to_one_false_uses_first_alpha() {
        let d = DdimScheduler::new(DdimConfig {
            set_alpha_to_one: false,
            ..DdimConfig::default()
        })
        .unwrap();
        assert_eq!(
            d.final_alpha_cumprod(),
            d.noise_schedule().alphas_cumprod()[0]
        );
    }

    #[test]
    fn step_needs_timesteps_and_valid_eta() {
        let mut d = DdimScheduler::new(DdimConfig::default()).unwrap();
        let x = Tensor::zeros(
            (1, 1, 2, 2),
            candle_core::DType::F32,
            &candle_core::Device::Cpu,
        )
        .unwrap();
        assert!(matches!(
            d.step(&x, 500, &x, StepNoise::None),
            Err(DiffusionError::TimestepsNotSet(_))
        ));
        assert!(d.set_eta(-0.1).is_err());
        assert!(d.set_eta(f64::NAN).is_err());
        d.set_timesteps(50).unwrap();
        // η = 3 over a 20-step jump asks for more noise than the jump has
        d.set_eta(3.0).unwrap();
        assert!(matches!(
            d.step(&x, 500, &x, StepNoise::Tensor(&x)),
            Err(DiffusionError::InvalidEta { .. })
        ));
    }
}
