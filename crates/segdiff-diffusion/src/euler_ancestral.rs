//! Ancestral sampling with Euler steps (Karras et al. 2022, k-diffusion's `sample_euler_ancestral`)
//! as diffusers' `EulerAncestralDiscreteScheduler`: a stochastic sampler in the σ = sqrt((1−ᾱ)/ᾱ)
//! parameterisation, x_σ = x0 + σ·ε. Each step goes down to σ_down with an Euler step of the
//! probability-flow ODE and adds fresh noise of std σ_up, σ_up² = σ_to²(σ_from² − σ_to²)/σ_from²,
//! σ_down² = σ_to² − σ_up².
//!
//! Timesteps: diffusers' timesteps for this class are float32, and fractional for its default
//! "linspace" spacing (`linspace(0, T−1, n)`: 999, 946.42…, …), and the pipelines give the model
//! exactly those values (the UNet's sinusoidal embedding takes float timesteps). The [`Scheduler`]
//! trait keys steps by integer timesteps, so [`Scheduler::timesteps`] returns each float timestep
//! rounded half to even (distinct, since the spacing is at least 1 for n ≤ T), and
//! [`Scheduler::model_timestep`] gives the float32 value the model is called with; σ is
//! interpolated at the float timestep as diffusers does.
//!
//! Stateless: the step index is the position of the timestep in the schedule (diffusers keeps it
//! as a counter; the timesteps are distinct, so the two agree when steps are taken in order).

use candle_core::{DType, Tensor};

use crate::config::{EulerAncestralConfig, PredictionType, SchedulerConfig, TimestepSpacing};
use crate::error::{DiffusionError, Result};
use crate::noise_schedule::{check_same_shape, per_sample_column, NoiseSchedule};
use crate::scheduler::{
    check_step_shapes, div_scalar, mul_scalar, Scheduler, StepNoise, StepOutput,
};
use crate::timestep_spacing::euler_timesteps;

const NAME: &str = "EulerAncestralDiscreteScheduler";

/// diffusers `EulerAncestralDiscreteScheduler` (ε- or v-prediction).
#[derive(Clone, Debug)]
pub struct EulerAncestralScheduler {
    config: EulerAncestralConfig,
    schedule: NoiseSchedule,
    /// σ_t = sqrt((1−ᾱ_t)/ᾱ_t) per training timestep, in f32 as diffusers computes it.
    train_sigmas: Vec<f32>,
    /// diffusers' float32 timesteps, descending.
    model_timesteps: Vec<f32>,
    /// The same timesteps rounded half to even: the keys of `step`.
    timesteps: Vec<usize>,
    /// σ at each timestep followed by 0 (len = timesteps + 1).
    sigmas: Vec<f32>,
}

/// `np.interp(x, arange(len(fp)), fp)` on float32 tables, evaluated in f64 as numpy does.
fn np_interp_on_grid(x: f64, fp: &[f32]) -> f64 {
    let last = fp.len() - 1;
    if x <= 0.0 {
        return fp[0] as f64;
    }
    if x >= last as f64 {
        return fp[last] as f64;
    }
    let j = x.floor() as usize;
    if x == j as f64 {
        return fp[j] as f64;
    }
    let slope = (fp[j + 1] as f64 - fp[j] as f64) / ((j + 1) as f64 - j as f64);
    slope * (x - j as f64) + fp[j] as f64
}

impl EulerAncestralScheduler {
    /// Builds the tables with diffusers' initial schedule (every training timestep, T−1 down to
    /// 0), so `add_noise` works before `set_timesteps` as in diffusers.
    pub fn new(config: EulerAncestralConfig) -> Result<Self> {
        let schedule = config.schedule.noise_schedule()?;
        let train_sigmas = schedule
            .alphas_cumprod()
            .iter()
            .map(|&a| ((1.0f32 - a) / a).sqrt())
            .collect();
        let mut s = Self {
            config,
            schedule,
            train_sigmas,
            model_timesteps: Vec::new(),
            timesteps: Vec::new(),
            sigmas: Vec::new(),
        };
        let all = (0..s.train_sigmas.len()).rev().map(|t| t as f32).collect();
        s.use_timesteps(all);
        Ok(s)
    }

    /// The config (typed).
    pub fn euler_config(&self) -> &EulerAncestralConfig {
        &self.config
    }

    /// σ of each inference timestep followed by the final σ = 0.
    pub fn sigmas(&self) -> &[f32] {
        &self.sigmas
    }

    /// diffusers' float32 timesteps (what the model is called with).
    pub fn model_timesteps(&self) -> &[f32] {
        &self.model_timesteps
    }

    fn use_timesteps(&mut self, model_timesteps: Vec<f32>) {
        self.sigmas = model_timesteps
            .iter()
            .map(|&t| np_interp_on_grid(t as f64, &self.train_sigmas) as f32)
            .chain(std::iter::once(0.0))
            .collect();
        self.timesteps = model_timesteps
            .iter()
            .map(|&t| t.round_ties_even() as usize)
            .collect();
        self.model_timesteps = model_timesteps;
    }

    /// Position of `timestep` in the schedule.
    fn index_for_timestep(&self, timestep: usize) -> Result<usize> {
        self.timesteps.iter().position(|&t| t == timestep).ok_or(
            DiffusionError::TimestepNotInSchedule {
                scheduler: NAME,
                timestep,
                expected: None,
            },
        )
    }
}

impl Scheduler for EulerAncestralScheduler {
    fn config(&self) -> SchedulerConfig {
        SchedulerConfig::EulerAncestral(self.config.clone())
    }

    fn noise_schedule(&self) -> &NoiseSchedule {
        &self.schedule
    }

    fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<()> {
        let timesteps = euler_timesteps(
            self.config.timestep_spacing,
            self.config.schedule.num_train_timesteps,
            num_inference_steps,
            self.config.schedule.steps_offset,
        )?;
        self.use_timesteps(timesteps);
        Ok(())
    }

    fn timesteps(&self) -> &[usize] {
        &self.timesteps
    }

    fn model_timestep(&self, timestep: usize) -> f64 {
        match self.index_for_timestep(timestep) {
            Ok(i) => self.model_timesteps[i] as f64,
            Err(_) => timestep as f64,
        }
    }

    /// σ_max for "linspace" / "trailing" spacing, sqrt(σ_max² + 1) for "leading" (diffusers).
    fn init_noise_sigma(&self) -> f64 {
        let max = self.sigmas.iter().copied().fold(0.0f32, f32::max);
        match self.config.timestep_spacing {
            TimestepSpacing::Linspace | TimestepSpacing::Trailing => max as f64,
            TimestepSpacing::Leading => (max * max + 1.0f32).sqrt() as f64,
        }
    }

    /// x / sqrt(σ² + 1): the VP-scaled input the ε-model was trained on.
    fn scale_model_input(&self, sample: &Tensor, timestep: usize) -> Result<Tensor> {
        let sigma = self.sigmas[self.index_for_timestep(timestep)?];
        div_scalar(sample, (sigma * sigma + 1.0f32).sqrt())
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        timestep: usize,
        sample: &Tensor,
        noise: StepNoise<'_>,
    ) -> Result<StepOutput> {
        check_step_shapes(model_output, sample)?;
        let idx = self.index_for_timestep(timestep)?;
        let (sigma, sigma_to) = (self.sigmas[idx], self.sigmas[idx + 1]);
        // diffusers upcasts the sample to f32 and casts the result back to the model's dtype.
        let out_dtype = model_output.dtype();
        let sample = sample.to_dtype(DType::F32)?;
        let model_output = model_output.to_dtype(DType::F32)?;
        let x0 = match self.config.schedule.prediction_type {
            PredictionType::Epsilon => (&sample - mul_scalar(&model_output, sigma)?)?,
            PredictionType::VPrediction => {
                let c_out = -sigma / (sigma * sigma + 1.0f32).sqrt();
                (mul_scalar(&model_output, c_out)? + div_scalar(&sample, sigma * sigma + 1.0f32)?)?
            }
            // Rejected with the config (diffusers raises NotImplementedError in `step`).
            PredictionType::Sample => {
                return Err(DiffusionError::InvalidState(format!(
                    "{NAME}: prediction_type \"sample\" is not implemented"
                )))
            }
        };
        let (from2, to2) = (sigma * sigma, sigma_to * sigma_to);
        let sigma_up = (to2 * (from2 - to2) / from2).sqrt();
        let sigma_down = (to2 - sigma_up * sigma_up).sqrt();
        let derivative = div_scalar(&(&sample - &x0)?, sigma)?;
        let dt = sigma_down - sigma;
        let mut prev = (&sample + mul_scalar(&derivative, dt)?)?;
        // diffusers draws noise at every step; at the last one σ_up = 0 and it adds nothing.
        if sigma_up != 0.0 {
            let z = noise.resolve(&sample, NAME, timestep)?;
            prev = (prev + mul_scalar(&z, sigma_up)?)?;
        }
        Ok(StepOutput {
            prev_sample: prev.to_dtype(out_dtype)?,
            pred_original_sample: x0,
        })
    }

    /// x0 + σ_t·noise with σ at each sample's timestep in the current schedule (diffusers'
    /// `add_noise`: before `set_timesteps` that is every training timestep).
    fn add_noise(&self, x0: &Tensor, noise: &Tensor, timesteps: &[usize]) -> Result<Tensor> {
        check_same_shape("add_noise noise", noise, x0)?;
        let batch = x0.dim(0)?;
        if timesteps.len() != batch {
            return Err(DiffusionError::TimestepCountMismatch {
                timesteps: timesteps.len(),
                batch,
            });
        }
        let sigmas = timesteps
            .iter()
            .map(|&t| Ok(self.sigmas[self.index_for_timestep(t)?] as f64))
            .collect::<Result<Vec<f64>>>()?;
        let sigma = per_sample_column(&sigmas, x0)?;
        Ok((x0 + noise.broadcast_mul(&sigma)?)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn scheduler() -> EulerAncestralScheduler {
        EulerAncestralScheduler::new(EulerAncestralConfig::default()).unwrap()
    }

    #[test]
    fn integer_keys_are_distinct_and_map_to_float_timesteps() {
        let mut s = scheduler();
        for n in [1usize, 3, 20, 50, 999, 1000] {
            s.set_timesteps(n).unwrap();
            let keys = s.timesteps().to_vec();
            assert_eq!(keys.len(), n);
            assert!(keys.windows(2).all(|w| w[0] > w[1]), "n = {n}");
            for (&k, &t) in keys.iter().zip(s.model_timesteps()) {
                assert_eq!(s.model_timestep(k), t as f64);
                assert!((k as f64 - t as f64).abs() <= 0.5);
            }
        }
        s.set_timesteps(20).unwrap();
        assert_eq!(s.timesteps()[1], 946);
        assert_eq!(s.model_timestep(946), 946.4211f32 as f64);
        let x = Tensor::zeros((1, 1, 2, 2), DType::F32, &Device::Cpu).unwrap();
        assert!(matches!(
            s.step(&x, 947, &x, StepNoise::Tensor(&x)),
            Err(DiffusionError::TimestepNotInSchedule { .. })
        ));
    }

    #[test]
    fn add_noise_is_x0_plus_sigma_noise() {
        let mut s = scheduler();
        let x0 = Tensor::ones((2, 1, 2, 2), DType::F32, &Device::Cpu).unwrap();
        let noise = Tensor::full(2.0f32, (2, 1, 2, 2), &Device::Cpu).unwrap();
        // before set_timesteps every training timestep is in the schedule
        let out = s.add_noise(&x0, &noise, &[0, 999]).unwrap();
        let v: Vec<f32> = out.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(v[0], 1.0 + 2.0 * s.train_sigmas[0]);
        assert_eq!(v[4], 1.0 + 2.0 * s.train_sigmas[999]);
        s.set_timesteps(20).unwrap();
        let sigma = s.sigmas()[1];
        let out = s.add_noise(&x0, &noise, &[946, 946]).unwrap();
        let v: Vec<f32> = out.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(v[7], 1.0 + 2.0 * sigma);
        assert!(s.add_noise(&x0, &noise, &[500, 946]).is_err());
    }

    #[test]
    fn last_step_needs_no_noise_and_returns_about_x0() {
        let mut s = scheduler();
        s.set_timesteps(10).unwrap();
        let x = Tensor::full(0.5f32, (1, 1, 2, 2), &Device::Cpu).unwrap();
        let eps = Tensor::full(0.1f32, (1, 1, 2, 2), &Device::Cpu).unwrap();
        assert!(matches!(
            s.step(&eps, 999, &x, StepNoise::None),
            Err(DiffusionError::NoiseRequired { .. })
        ));
        let out = s.step(&eps, 0, &x, StepNoise::None).unwrap();
        let got: Vec<f32> = out.prev_sample.flatten_all().unwrap().to_vec1().unwrap();
        let x0: Vec<f32> = out
            .pred_original_sample
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert!((got[0] - x0[0]).abs() < 1e-6, "{got:?} vs {x0:?}");
    }

    #[test]
    fn init_noise_sigma_follows_the_spacing() {
        let mut s = scheduler();
        s.set_timesteps(10).unwrap();
        let sigma_max = s.sigmas()[0] as f64;
        assert_eq!(s.init_noise_sigma(), sigma_max);
        let mut lead = EulerAncestralScheduler::new(EulerAncestralConfig {
            timestep_spacing: TimestepSpacing::Leading,
            ..EulerAncestralConfig::default()
        })
        .unwrap();
        lead.set_timesteps(10).unwrap();
        let m = lead.sigmas()[0];
        assert_eq!(lead.init_noise_sigma(), (m * m + 1.0f32).sqrt() as f64);
    }
}
