//! DPM-Solver++ multistep (Lu et al. 2022, "2M" for order 2) as diffusers'
//! `DPMSolverMultistepScheduler(algorithm_type="dpmsolver++")`, a fast deterministic sampler,
//! and its stochastic form `algorithm_type="sde-dpmsolver++"` (SDE-DPM-Solver++ 2M), whose steps
//! add fresh noise: `x_t = (σ_t/σ_s)e^{−h}·x_s + α_t(1−e^{−2h})·x0 + σ_t√(1−e^{−2h})·z`.
//!
//! Stateful like diffusers: it remembers the previous x0 prediction and its step index, so steps
//! must be taken in schedule order after `set_timesteps`.

use candle_core::Tensor;

use crate::config::{
    AlgorithmType, DpmSolverMultistepConfig, FinalSigmasType, SchedulerConfig, SolverType,
};
use crate::error::{DiffusionError, Result};
use crate::multistep::{alpha_sigma, lambda, x0_from_output, MultistepState};
use crate::noise_schedule::NoiseSchedule;
use crate::scheduler::{check_step_shapes, mul_scalar, Scheduler, StepNoise, StepOutput};
use crate::timestep_spacing::dpm_solver_timesteps;

const NAME: &str = "DPMSolverMultistepScheduler";

/// diffusers `DPMSolverMultistepScheduler` with `algorithm_type` `"dpmsolver++"` or
/// `"sde-dpmsolver++"`, order 1 or 2.
#[derive(Clone, Debug)]
pub struct DpmSolverMultistepScheduler {
    config: DpmSolverMultistepConfig,
    schedule: NoiseSchedule,
    /// σ tables, step index and output history.
    state: MultistepState,
}

// Scalars are float32 throughout, as diffusers computes them on 0-d float32 tensors.

impl DpmSolverMultistepScheduler {
    /// Builds the tables; `set_timesteps` must be called before `step`.
    pub fn new(config: DpmSolverMultistepConfig) -> Result<Self> {
        let schedule = config.schedule.noise_schedule()?;
        let state = MultistepState::new(NAME, &schedule, config.solver_order);
        Ok(Self {
            config,
            schedule,
            state,
        })
    }

    /// The config (typed).
    pub fn dpm_config(&self) -> &DpmSolverMultistepConfig {
        &self.config
    }

    /// σ of each inference timestep followed by the final σ.
    pub fn sigmas(&self) -> &[f32] {
        &self.state.sigmas
    }

    /// Index of the next step in `timesteps()`, once the first step was taken.
    pub fn step_index(&self) -> Option<usize> {
        self.state.step_index
    }

    /// Timesteps after dropping those whose λ is below `lambda_min_clipped`
    /// (diffusers' `searchsorted` on the flipped λ table).
    fn last_timestep(&self) -> usize {
        let clip = self.config.lambda_min_clipped;
        let clipped = self
            .schedule
            .alphas_cumprod()
            .iter()
            .filter(|&&a| (lambda(a.sqrt(), (1.0f32 - a).sqrt()) as f64) < clip)
            .count();
        self.config.schedule.num_train_timesteps - clipped
    }

    /// Converts the model output to the x0 prediction DPM-Solver++ integrates.
    fn convert_model_output(
        &self,
        model_output: &Tensor,
        sample: &Tensor,
        sigma: f32,
    ) -> Result<Tensor> {
        let (alpha_t, sigma_t) = alpha_sigma(sigma);
        x0_from_output(
            self.config.schedule.prediction_type,
            model_output,
            sample,
            alpha_t,
            sigma_t,
        )
    }

    /// The SDE step's terms that differ from the ODE's: the sample coefficient, the x0
    /// coefficient α_t(1−e^{−2h}), and the added noise σ_t√(1−e^{−2h})·z (diffusers' f32 order).
    fn sde_terms(
        sigma_t: f32,
        sigma_s: f32,
        alpha_t: f32,
        h: f32,
        noise: &Tensor,
    ) -> Result<(f32, f32, Tensor)> {
        let decay = 1.0f32 - (-2.0f32 * h).exp();
        Ok((
            sigma_t / sigma_s * (-h).exp(),
            alpha_t * decay,
            mul_scalar(noise, sigma_t * decay.sqrt())?,
        ))
    }

    fn first_order_update(
        &self,
        x0: &Tensor,
        sample: &Tensor,
        idx: usize,
        noise: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (alpha_t, sigma_t) = alpha_sigma(self.state.sigmas[idx + 1]);
        let (alpha_s, sigma_s) = alpha_sigma(self.state.sigmas[idx]);
        let h = lambda(alpha_t, sigma_t) - lambda(alpha_s, sigma_s);
        if let Some(z) = noise {
            let (sample_coeff, x0_coeff, noise_term) =
                Self::sde_terms(sigma_t, sigma_s, alpha_t, h, z)?;
            return Ok(
                ((mul_scalar(sample, sample_coeff)? + mul_scalar(x0, x0_coeff)?)? + noise_term)?,
            );
        }
        let sample_coeff = sigma_t / sigma_s;
        let x0_coeff = alpha_t * ((-h).exp() - 1.0f32);
        Ok((mul_scalar(sample, sample_coeff)? - mul_scalar(x0, x0_coeff)?)?)
    }

    fn second_order_update(
        &self,
        sample: &Tensor,
        idx: usize,
        noise: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (Some(Some(m1)), Some(Some(m0))) = (
            self.state
                .model_outputs
                .len()
                .checked_sub(2)
                .map(|i| &self.state.model_outputs[i]),
            self.state.model_outputs.last(),
        ) else {
            return Err(DiffusionError::InvalidState(
                "DPM-Solver++ second-order step without a previous model output".into(),
            ));
        };
        let (alpha_t, sigma_t) = alpha_sigma(self.state.sigmas[idx + 1]);
        let (alpha_s0, sigma_s0) = alpha_sigma(self.state.sigmas[idx]);
        let (alpha_s1, sigma_s1) = alpha_sigma(self.state.sigmas[idx - 1]);
        let lambda_t = lambda(alpha_t, sigma_t);
        let lambda_s0 = lambda(alpha_s0, sigma_s0);
        let lambda_s1 = lambda(alpha_s1, sigma_s1);
        let h = lambda_t - lambda_s0;
        let h_0 = lambda_s0 - lambda_s1;
        let r0 = h_0 / h;
        let d1 = mul_scalar(&(m0 - m1)?, 1.0f32 / r0)?;
        if let Some(z) = noise {
            let (sample_coeff, x0_coeff, noise_term) =
                Self::sde_terms(sigma_t, sigma_s0, alpha_t, h, z)?;
            let x = (mul_scalar(sample, sample_coeff)? + mul_scalar(m0, x0_coeff)?)?;
            let d1_coeff = match self.config.solver_type {
                SolverType::Midpoint => 0.5f32 * x0_coeff,
                SolverType::Heun => {
                    alpha_t * ((1.0f32 - (-2.0f32 * h).exp()) / (-2.0f32 * h) + 1.0f32)
                }
            };
            return Ok(((x + mul_scalar(&d1, d1_coeff)?)? + noise_term)?);
        }
        let phi = alpha_t * ((-h).exp() - 1.0f32);
        let x = (mul_scalar(sample, sigma_t / sigma_s0)? - mul_scalar(m0, phi)?)?;
        Ok(match self.config.solver_type {
            SolverType::Midpoint => (x - mul_scalar(&d1, 0.5f32 * phi)?)?,
            SolverType::Heun => {
                let c = alpha_t * (((-h).exp() - 1.0f32) / h + 1.0f32);
                (x + mul_scalar(&d1, c)?)?
            }
        })
    }
}

impl Scheduler for DpmSolverMultistepScheduler {
    fn config(&self) -> SchedulerConfig {
        SchedulerConfig::DpmSolverMultistep(self.config.clone())
    }

    fn noise_schedule(&self) -> &NoiseSchedule {
        &self.schedule
    }

    fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<()> {
        let timesteps = dpm_solver_timesteps(
            self.config.timestep_spacing,
            self.config.schedule.num_train_timesteps,
            self.last_timestep(),
            num_inference_steps,
            self.config.schedule.steps_offset,
        )?;
        self.state
            .set_timesteps(timesteps, self.config.final_sigmas_type);
        Ok(())
    }

    fn timesteps(&self) -> &[usize] {
        &self.state.timesteps
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        timestep: usize,
        sample: &Tensor,
        noise: StepNoise<'_>,
    ) -> Result<StepOutput> {
        check_step_shapes(model_output, sample)?;
        let (n, idx) = self.state.step_at(timestep)?;
        let lower_order_final = idx == n - 1
            && (self.config.euler_at_final
                || (self.config.lower_order_final && n < 15)
                || self.config.final_sigmas_type == FinalSigmasType::Zero);

        let noise = match self.config.algorithm_type {
            AlgorithmType::DpmSolverPlusPlus => None,
            AlgorithmType::SdeDpmSolverPlusPlus => Some(noise.resolve(sample, NAME, timestep)?),
        };
        let x0 = self.convert_model_output(model_output, sample, self.state.sigmas[idx])?;
        self.state.push_output(x0.clone());

        let prev = if self.config.solver_order == 1
            || self.state.lower_order_nums < 1
            || lower_order_final
        {
            self.first_order_update(&x0, sample, idx, noise.as_ref())?
        } else {
            self.second_order_update(sample, idx, noise.as_ref())?
        };
        self.state.finish_step(idx);
        Ok(StepOutput {
            prev_sample: prev,
            pred_original_sample: x0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    fn full(v: f32) -> Tensor {
        Tensor::full(v, (1, 1, 2, 2), &Device::Cpu).unwrap()
    }

    /// First-order DPM-Solver++ is DDIM: x' = sqrt(ᾱ')·x0 + sqrt(1−ᾱ')·ε̂, ε̂ = (x − sqrt(ᾱ)·x0)/sqrt(1−ᾱ).
    #[test]
    fn first_order_step_is_ddim_in_closed_form() {
        let mut s = DpmSolverMultistepScheduler::new(DpmSolverMultistepConfig {
            solver_order: 1,
            ..DpmSolverMultistepConfig::default()
        })
        .unwrap();
        s.set_timesteps(10).unwrap();
        let ts = s.timesteps().to_vec();
        let ac = s.noise_schedule().alphas_cumprod().to_vec();
        let (x, eps) = (0.7f64, -0.4f64);
        let mut sample = full(x as f32);
        // two steps: 999 -> 899 -> 799
        let mut xv = x;
        for i in 0..2 {
            let (a, a_next) = (ac[ts[i]] as f64, ac[ts[i + 1]] as f64);
            let x0 = (xv - (1.0 - a).sqrt() * eps) / a.sqrt();
            xv = a_next.sqrt() * x0 + (1.0 - a_next).sqrt() * eps;
            let out = s
                .step(&full(eps as f32), ts[i], &sample, StepNoise::None)
                .unwrap();
            sample = out.prev_sample;
        }
        let got: Vec<f32> = sample.flatten_all().unwrap().to_vec1().unwrap();
        assert!((got[0] as f64 - xv).abs() < 1e-5, "{} vs {xv}", got[0]);
    }

    #[test]
    fn final_step_with_zero_sigma_returns_x0() {
        let mut s = DpmSolverMultistepScheduler::new(DpmSolverMultistepConfig::default()).unwrap();
        s.set_timesteps(3).unwrap();
        let ts = s.timesteps().to_vec();
        assert_eq!(*s.sigmas().last().unwrap(), 0.0);
        let mut x = full(0.3);
        let eps = full(0.1);
        let mut last = None;
        for &t in &ts {
            let out = s.step(&eps, t, &x, StepNoise::None).unwrap();
            x = out.prev_sample.clone();
            last = Some(out);
        }
        let last = last.unwrap();
        let d: f32 = (&last.prev_sample - &last.pred_original_sample)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        assert_eq!(d, 0.0);
    }

    #[test]
    fn steps_must_follow_the_schedule() {
        let mut s = DpmSolverMultistepScheduler::new(DpmSolverMultistepConfig::default()).unwrap();
        let x = Tensor::zeros((1, 1, 2, 2), DType::F32, &Device::Cpu).unwrap();
        assert!(matches!(
            s.step(&x, 999, &x, StepNoise::None),
            Err(DiffusionError::TimestepsNotSet(_))
        ));
        s.set_timesteps(10).unwrap();
        assert!(s.step(&x, 555, &x, StepNoise::None).is_err());
        s.step(&x, 999, &x, StepNoise::None).unwrap();
        assert!(matches!(
            s.step(&x, 999, &x, StepNoise::None),
            Err(DiffusionError::TimestepNotInSchedule {
                expected: Some(899),
                ..
            })
        ));
        // set_timesteps resets the multistep state
        s.set_timesteps(10).unwrap();
        assert!(s.step(&x, 999, &x, StepNoise::None).is_ok());
    }

    #[test]
    fn lambda_min_clipped_drops_low_snr_timesteps() {
        let cfg = DpmSolverMultistepConfig {
            schedule: crate::config::TrainSchedule {
                beta_schedule: crate::config::BetaSchedule::SquaredcosCapV2,
                ..Default::default()
            },
            lambda_min_clipped: -5.1,
            ..DpmSolverMultistepConfig::default()
        };
        let mut s = DpmSolverMultistepScheduler::new(cfg).unwrap();
        s.set_timesteps(10).unwrap();
        let first = s.timesteps()[0];
        let ac = s.noise_schedule().alphas_cumprod()[first] as f64;
        let lam = 0.5 * (ac / (1.0 - ac)).ln();
        assert!(
            first < 999,
            "cosine schedule should lose its last timesteps, got {first}"
        );
        assert!(lam >= -5.1 - 1e-3, "λ({first}) = {lam}");
    }
}
