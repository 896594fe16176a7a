//! UniPC (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling of
//! Diffusion Models") as diffusers' `UniPCMultistepScheduler`: a deterministic multistep solver
//! of the probability-flow ODE in log-SNR λ. Each step first corrects the sample the previous
//! step predicted (UniC, using the model output just computed at that sample, which costs no
//! extra network call), then predicts the next sample (UniP, order p from the last p outputs).
//! Both updates are `x_t = (σ_t/σ_s)·x_s − α_t(e^{−h}−1)·x0_s − α_t·B(h)·Σ ρ_k·D_k` in the data
//! form (`predict_x0`), with D_k the scaled differences of earlier x0 predictions and ρ solving
//! the order conditions `R·ρ = b` (B(h) = h for "bh1", e^{−h}−1 for "bh2").
//!
//! Stateful like diffusers: it remembers the last outputs, the last corrected sample and the
//! order of the last prediction, so steps must be taken in schedule order after `set_timesteps`,
//! which resets that state. Scalars are float32, as diffusers computes them on 0-d tensors.

use candle_core::Tensor;

use crate::config::{PredictionType, SchedulerConfig, UniPcMultistepConfig, UniPcSolverType};
use crate::error::{DiffusionError, Result};
use crate::multistep::{alpha_sigma, lambda, x0_from_output, MultistepState};
use crate::noise_schedule::NoiseSchedule;
use crate::scheduler::{
    check_step_shapes, div_scalar, mul_scalar, Scheduler, StepNoise, StepOutput,
};
use crate::timestep_spacing::dpm_solver_timesteps;

const NAME: &str = "UniPCMultistepScheduler";

/// diffusers `UniPCMultistepScheduler` (no `solver_p`, default σ spacing).
#[derive(Clone, Debug)]
pub struct UniPcMultistepScheduler {
    config: UniPcMultistepConfig,
    schedule: NoiseSchedule,
    /// σ tables, step index and output history.
    state: MultistepState,
    /// The sample the last prediction started from (after its correction).
    last_sample: Option<Tensor>,
    /// Order of the last prediction: the order of the next correction.
    this_order: usize,
}

/// Solves the small dense system `a·x = b` by Gaussian elimination with partial pivoting in
/// float32, as LAPACK's `sgesv` behind `torch.linalg.solve`. Singular systems give non-finite
/// values, as there.
fn solve(mut a: Vec<Vec<f32>>, mut b: Vec<f32>) -> Vec<f32> {
    let n = b.len();
    for col in 0..n {
        let pivot = (col..n)
            .max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))
            .unwrap_or(col);
        a.swap(col, pivot);
        b.swap(col, pivot);
        for row in col + 1..n {
            let (upper, lower) = a.split_at_mut(row);
            let (pivot_row, this_row) = (&upper[col], &mut lower[0]);
            let f = this_row[col] / pivot_row[col];
            for (x, p) in this_row[col..].iter_mut().zip(&pivot_row[col..]) {
                *x -= f * p;
            }
            b[row] -= f * b[col];
        }
    }
    let mut x = vec![0.0f32; n];
    for row in (0..n).rev() {
        let s = (row + 1..n).fold(b[row], |s, k| s - a[row][k] * x[k]);
        x[row] = s / a[row][row];
    }
    x
}

/// The scalars of one UniP or UniC update from σ index `s0` to `t`.
struct UpdateTerms {
    /// Coefficient of the starting sample: σ_t/σ_s0 (data form) or α_t/α_s0 (noise form).
    sample_coeff: f32,
    /// Coefficient of the latest output m0: α_t·hφ₁(h) (data form) or σ_t·hφ₁(h).
    m0_coeff: f32,
    /// Coefficient of the ρ-weighted differences: α_t·B(h) (data form) or σ_t·B(h).
    res_coeff: f32,
    /// r_k = (λ_{s_k} − λ_{s0})/h of the earlier outputs, newest first.
    rks: Vec<f32>,
    /// The matrix R (rows r^{i−1}, the last column for r = 1) and right side b of the order
    /// conditions.
    r: Vec<Vec<f32>>,
    b: Vec<f32>,
}

impl UniPcMultistepScheduler {
    /// Builds the tables; `set_timesteps` must be called before `step`.
    pub fn new(config: UniPcMultistepConfig) -> Result<Self> {
        let schedule = config.schedule.noise_schedule()?;
        let state = MultistepState::new(NAME, &schedule, config.solver_order);
        Ok(Self {
            config,
            schedule,
            state,
            last_sample: None,
            this_order: 1,
        })
    }

    /// The config (typed).
    pub fn unipc_config(&self) -> &UniPcMultistepConfig {
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

    /// The output the solver integrates, x0 (`predict_x0`) or ε, at σ index `idx`
    /// (diffusers `convert_model_output`), and the x0 prediction for [`StepOutput`].
    fn convert_model_output(
        &self,
        model_output: &Tensor,
        sample: &Tensor,
        idx: usize,
    ) -> Result<(Tensor, Tensor)> {
        let (alpha_t, sigma_t) = alpha_sigma(self.state.sigmas[idx]);
        let x0 = x0_from_output(
            self.config.schedule.prediction_type,
            model_output,
            sample,
            alpha_t,
            sigma_t,
        )?;
        if self.config.predict_x0 {
            return Ok((x0.clone(), x0));
        }
        let eps = match self.config.schedule.prediction_type {
            PredictionType::Epsilon => model_output.clone(),
            PredictionType::Sample => {
                div_scalar(&(sample - mul_scalar(model_output, alpha_t)?)?, sigma_t)?
            }
            PredictionType::VPrediction => {
                (mul_scalar(model_output, alpha_t)? + mul_scalar(sample, sigma_t)?)?
            }
        };
        Ok((eps, x0))
    }

    /// Scalars of an update of `order` from σ index `s0` to `t`; the earlier outputs sit at σ
    /// indices `s0 − 1`, `s0 − 2`, ….
    fn update_terms(&self, t: usize, s0: usize, order: usize) -> UpdateTerms {
        let (alpha_t, sigma_t) = alpha_sigma(self.state.sigmas[t]);
        let (alpha_s0, sigma_s0) = alpha_sigma(self.state.sigmas[s0]);
        let lambda_s0 = lambda(alpha_s0, sigma_s0);
        let h = lambda(alpha_t, sigma_t) - lambda_s0;
        let rks: Vec<f32> = (1..order)
            .map(|i| {
                let (alpha_si, sigma_si) = alpha_sigma(self.state.sigmas[s0 - i]);
                (lambda(alpha_si, sigma_si) - lambda_s0) / h
            })
            .collect();
        let hh = if self.config.predict_x0 { -h } else { h };
        let h_phi_1 = hh.exp_m1();
        let b_h = match self.config.solver_type {
            UniPcSolverType::Bh1 => hh,
            UniPcSolverType::Bh2 => hh.exp_m1(),
        };
        // b_i = i!·hφ_{i+1}(hh)/B(h), with φ by its recurrence hφ_{k+1} = hφ_k/hh − 1/k!.
        let mut h_phi_k = h_phi_1 / hh - 1.0f32;
        let mut factorial = 1u64;
        let mut b = Vec::with_capacity(order);
        let with_one: Vec<f32> = rks.iter().copied().chain(std::iter::once(1.0)).collect();
        let mut r = Vec::with_capacity(order);
        for i in 1..=order {
            r.push(with_one.iter().map(|&x| x.powi(i as i32 - 1)).collect());
            b.push(h_phi_k * factorial as f32 / b_h);
            factorial *= i as u64 + 1;
            h_phi_k = h_phi_k / hh - (1.0f64 / factorial as f64) as f32;
        }
        let (sample_coeff, m0_coeff, res_coeff) = if self.config.predict_x0 {
            (sigma_t / sigma_s0, alpha_t * h_phi_1, alpha_t * b_h)
        } else {
            (alpha_t / alpha_s0, sigma_t * h_phi_1, sigma_t * b_h)
        };
        UpdateTerms {
            sample_coeff,
            m0_coeff,
            res_coeff,
            rks,
            r,
            b,
        }
    }

    /// The stored output `back` steps before the newest (0 = newest).
    fn output(&self, back: usize) -> Result<&Tensor> {
        let i = self.state.model_outputs.len().checked_sub(back + 1);
        i.and_then(|i| self.state.model_outputs[i].as_ref())
            .ok_or_else(|| {
                DiffusionError::InvalidState(format!(
                    "{NAME}: update needs {} earlier model outputs",
                    back + 1
                ))
            })
    }

    /// `x·sample_coeff − m0·m0_coeff` and the differences D_k = (m_k − m0)/r_k, newest first.
    fn base_and_differences(
        &self,
        terms: &UpdateTerms,
        x: &Tensor,
    ) -> Result<(Tensor, Vec<Tensor>)> {
        let m0 = self.output(0)?;
        let base = (mul_scalar(x, terms.sample_coeff)? - mul_scalar(m0, terms.m0_coeff)?)?;
        let diffs = terms
            .rks
            .iter()
            .enumerate()
            .map(|(k, &rk)| div_scalar(&(self.output(k + 1)? - m0)?, rk))
            .collect::<Result<Vec<_>>>()?;
        Ok((base, diffs))
    }

    /// Σ ρ_k·D_k.
    fn weighted_sum(rhos: &[f32], diffs: &[Tensor]) -> Result<Option<Tensor>> {
        let mut sum: Option<Tensor> = None;
        for (d, &rho) in diffs.iter().zip(rhos) {
            let term = mul_scalar(d, rho)?;
            sum = Some(match sum {
                None => term,
                Some(s) => (s + term)?,
            });
        }
        Ok(sum)
    }

    /// UniP of `order` from `sample` at step `idx` to σ index `idx + 1` (diffusers
    /// `multistep_uni_p_bh_update`), with the current output already stored.
    fn predict(&self, sample: &Tensor, idx: usize, order: usize) -> Result<Tensor> {
        let terms = self.update_terms(idx + 1, idx, order);
        let (base, diffs) = self.base_and_differences(&terms, sample)?;
        // diffusers takes ρ = 1/2 for order 2 instead of solving the 1×1 system.
        let rhos = match order {
            0 | 1 => Vec::new(),
            2 => vec![0.5f32],
            _ => {
                let k = order - 1;
                let r = terms.r[..k].iter().map(|row| row[..k].to_vec()).collect();
                solve(r, terms.b[..k].to_vec())
            }
        };
        Ok(match Self::weighted_sum(&rhos, &diffs)? {
            Some(res) => (base - mul_scalar(&res, terms.res_coeff)?)?,
            None => base,
        })
    }

    /// UniC of `order`: corrects `this_sample` (the last prediction, at step `idx`) from the
    /// sample that prediction started at, using `this_output` computed at `this_sample`
    /// (diffusers `multistep_uni_c_bh_update`), before the current output is stored.
    fn correct(
        &self,
        this_output: &Tensor,
        last_sample: &Tensor,
        idx: usize,
        order: usize,
    ) -> Result<Tensor> {
        let terms = self.update_terms(idx, idx - 1, order);
        let (base, diffs) = self.base_and_differences(&terms, last_sample)?;
        // diffusers takes ρ = 1/2 for order 1 instead of solving the 1×1 system.
        let rhos = match order {
            1 => vec![0.5f32],
            _ => solve(terms.r, terms.b),
        };
        let (rho_t, rhos) = rhos.split_last().unwrap_or((&0.5, &[]));
        let d1_t = (this_output - self.output(0)?)?;
        let new_term = mul_scalar(&d1_t, *rho_t)?;
        let res = match Self::weighted_sum(rhos, &diffs)? {
            Some(corr) => (corr + new_term)?,
            None => new_term,
        };
        Ok((base - mul_scalar(&res, terms.res_coeff)?)?)
    }
}

impl Scheduler for UniPcMultistepScheduler {
    fn config(&self) -> SchedulerConfig {
        SchedulerConfig::UniPcMultistep(self.config.clone())
    }

    fn noise_schedule(&self) -> &NoiseSchedule {
        &self.schedule
    }

    fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<()> {
        // UniPC's spacings are DPM-Solver's without λ clipping.
        let t = self.config.schedule.num_train_timesteps;
        let timesteps = dpm_solver_timesteps(
            self.config.timestep_spacing,
            t,
            t,
            num_inference_steps,
            self.config.schedule.steps_offset,
        )?;
        self.state
            .set_timesteps(timesteps, self.config.final_sigmas_type);
        self.last_sample = None;
        self.this_order = 1;
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
        _noise: StepNoise<'_>,
    ) -> Result<StepOutput> {
        check_step_shapes(model_output, sample)?;
        let (n, idx) = self.state.step_at(timestep)?;
        // The output is converted at the predicted sample, before that sample is corrected.
        let (converted, x0) = self.convert_model_output(model_output, sample, idx)?;
        let sample = match &self.last_sample {
            Some(last) if idx > 0 && !self.config.disable_corrector.contains(&(idx - 1)) => {
                self.correct(&converted, last, idx, self.this_order)?
            }
            _ => sample.clone(),
        };
        self.state.push_output(converted);
        let order = self.config.solver_order;
        let this_order = if self.config.lower_order_final {
            order.min(n - idx)
        } else {
            order
        };
        // Warm-up: the order grows with the outputs available.
        self.this_order = this_order.min(self.state.lower_order_nums + 1);
        let prev = self.predict(&sample, idx, self.this_order)?;
        self.last_sample = Some(sample);
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

    fn value(t: &Tensor) -> f32 {
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap()[0]
    }

    /// A constant ε keeps the x0 prediction constant along DDIM's path, so every difference UniP
    /// and UniC take is zero and UniPC of any order is DDIM: x' = sqrt(ᾱ')·x0 + sqrt(1−ᾱ')·ε
    /// (ᾱ' = 1 after the last step).
    #[test]
    fn constant_eps_gives_ddim_in_closed_form() {
        for order in 1..=3 {
            let mut s = UniPcMultistepScheduler::new(UniPcMultistepConfig {
                solver_order: order,
                ..UniPcMultistepConfig::default()
            })
            .unwrap();
            s.set_timesteps(10).unwrap();
            let ts = s.timesteps().to_vec();
            let ac = s.noise_schedule().alphas_cumprod().to_vec();
            let (mut xv, eps) = (0.7f64, -0.4f64);
            let mut sample = full(xv as f32);
            for (i, &t) in ts.iter().enumerate() {
                let a = ac[t] as f64;
                let a_next = ts.get(i + 1).map_or(1.0, |&n| ac[n] as f64);
                let x0 = (xv - (1.0 - a).sqrt() * eps) / a.sqrt();
                xv = a_next.sqrt() * x0 + (1.0 - a_next).sqrt() * eps;
                let out = s.step(&full(eps as f32), t, &sample, StepNoise::None);
                sample = out.unwrap().prev_sample;
                let err = (value(&sample) as f64 - xv).abs();
                assert!(
                    err < 1e-5 * xv.abs().max(1.0),
                    "order {order} step {i}: {err}"
                );
            }
        }
    }

    /// With an ε that depends on x, the corrector changes the path.
    #[test]
    fn the_corrector_corrects() {
        let run = |disable_corrector: Vec<usize>| {
            let mut s = UniPcMultistepScheduler::new(UniPcMultistepConfig {
                disable_corrector,
                ..UniPcMultistepConfig::default()
            })
            .unwrap();
            s.set_timesteps(5).unwrap();
            let mut x = full(0.7);
            for t in s.timesteps().to_vec() {
                let eps = x.affine(0.5, 0.1).unwrap();
                x = s.step(&eps, t, &x, StepNoise::None).unwrap().prev_sample;
            }
            value(&x)
        };
        let (with, without) = (run(Vec::new()), run((0..5).collect()));
        assert!((with - without).abs() > 1e-3, "{with} vs {without}");
    }

    #[test]
    fn solve_matches_the_closed_form() {
        let x = solve(vec![vec![1.0, 1.0], vec![-0.8, 1.0]], vec![0.3, 0.5]);
        // x1 = 0.3 − x0, −0.8·x0 + 0.3 − x0 = 0.5
        let x0 = (0.3 - 0.5) / 1.8f32;
        assert!((x[0] - x0).abs() < 1e-6 && (x[1] - (0.3 - x0)).abs() < 1e-6);
    }

    #[test]
    fn last_step_to_zero_sigma_returns_x0() {
        let mut s = UniPcMultistepScheduler::new(UniPcMultistepConfig::default()).unwrap();
        s.set_timesteps(4).unwrap();
        let mut x = full(0.3);
        let eps = full(0.1);
        let mut last = None;
        for t in s.timesteps().to_vec() {
            let out = s.step(&eps, t, &x, StepNoise::None).unwrap();
            x = out.prev_sample.clone();
            last = Some(out);
        }
        let last = last.unwrap();
        assert_eq!(value(&last.prev_sample), value(&last.pred_original_sample));
    }

    #[test]
    fn steps_follow_the_schedule_and_set_timesteps_resets() {
        let mut s = UniPcMultistepScheduler::new(UniPcMultistepConfig::default()).unwrap();
        let x = Tensor::zeros((1, 1, 2, 2), DType::F32, &Device::Cpu).unwrap();
        assert!(matches!(
            s.step(&x, 999, &x, StepNoise::None),
            Err(DiffusionError::TimestepsNotSet(_))
        ));
        s.set_timesteps(10).unwrap();
        assert!(s.step(&x, 555, &x, StepNoise::None).is_err());
        let first = s
            .step(&full(0.2), 999, &full(0.5), StepNoise::None)
            .unwrap();
        assert!(matches!(
            s.step(&x, 999, &x, StepNoise::None),
            Err(DiffusionError::TimestepNotInSchedule {
                expected: Some(899),
                ..
            })
        ));
        s.set_timesteps(10).unwrap();
        assert!(s.last_sample.is_none() && s.step_index().is_none());
        let again = s
            .step(&full(0.2), 999, &full(0.5), StepNoise::None)
            .unwrap();
        assert_eq!(value(&first.prev_sample), value(&again.prev_sample));
    }
}
