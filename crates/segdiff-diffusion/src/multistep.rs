//! What diffusers' multistep solvers in log-SNR share (DPM-Solver++ in both forms, UniPC): the σ
//! tables, the step index that follows the schedule, the history of converted model outputs,
//! and the VP-process scalars, all in float32 as diffusers computes them on 0-d tensors.

use candle_core::Tensor;

use crate::config::{FinalSigmasType, PredictionType};
use crate::error::{DiffusionError, Result};
use crate::noise_schedule::NoiseSchedule;
use crate::scheduler::{div_scalar, mul_scalar};

/// (α_t, σ_t) of the VP process from the ratio σ = σ_t/α_t (diffusers `_sigma_to_alpha_sigma_t`).
pub(crate) fn alpha_sigma(sigma: f32) -> (f32, f32) {
    let alpha = 1.0f32 / (sigma * sigma + 1.0f32).sqrt();
    (alpha, sigma * alpha)
}

/// log-SNR λ = log α − log σ (+∞ for σ = 0).
pub(crate) fn lambda(alpha: f32, sigma: f32) -> f32 {
    alpha.ln() - sigma.ln()
}

/// The x0 prediction from a model output at (α_t, σ_t) (diffusers `convert_model_output`'s
/// data form; these solvers use α and σ from the σ table, not from √ᾱ).
pub(crate) fn x0_from_output(
    prediction_type: PredictionType,
    model_output: &Tensor,
    sample: &Tensor,
    alpha_t: f32,
    sigma_t: f32,
) -> Result<Tensor> {
    Ok(match prediction_type {
        PredictionType::Epsilon => {
            div_scalar(&(sample - mul_scalar(model_output, sigma_t)?)?, alpha_t)?
        }
        PredictionType::Sample => model_output.clone(),
        PredictionType::VPrediction => {
            (mul_scalar(sample, alpha_t)? - mul_scalar(model_output, sigma_t)?)?
        }
    })
}

/// The schedule state of a multistep solver: σ per training timestep, the inference timesteps
/// and their σ (plus the final σ), the step index, and the last converted outputs.
#[derive(Clone, Debug)]
pub(crate) struct MultistepState {
    /// Scheduler class name, for errors.
    name: &'static str,
    /// σ_t = sqrt((1−ᾱ_t)/ᾱ_t) per training timestep, in f32 as diffusers computes it.
    pub train_sigmas: Vec<f32>,
    pub timesteps: Vec<usize>,
    /// σ of each inference timestep plus the final σ (len = timesteps + 1).
    pub sigmas: Vec<f32>,
    pub num_inference_steps: Option<usize>,
    /// The last `order` converted model outputs, oldest first.
    pub model_outputs: Vec<Option<Tensor>>,
    pub lower_order_nums: usize,
    pub step_index: Option<usize>,
}

impl MultistepState {
    /// Tables of `schedule` for a solver of `order`; timesteps must be set before stepping.
    pub fn new(name: &'static str, schedule: &NoiseSchedule, order: usize) -> Self {
        Self {
            name,
            train_sigmas: schedule
                .alphas_cumprod()
                .iter()
                .map(|&a| ((1.0f32 - a) / a).sqrt())
                .collect(),
            timesteps: (0..schedule.alphas_cumprod().len()).rev().collect(),
            sigmas: Vec::new(),
            num_inference_steps: None,
            model_outputs: vec![None; order],
            lower_order_nums: 0,
            step_index: None,
        }
    }

    /// Installs `timesteps` with their σ and the final σ, and forgets the history.
    pub fn set_timesteps(&mut self, timesteps: Vec<usize>, final_sigmas_type: FinalSigmasType) {
        let sigma_last = match final_sigmas_type {
            FinalSigmasType::Zero => 0.0,
            FinalSigmasType::SigmaMin => self.train_sigmas[0],
        };
        self.sigmas = timesteps
            .iter()
            .map(|&t| self.train_sigmas[t])
            .chain(std::iter::once(sigma_last))
            .collect();
        self.num_inference_steps = Some(timesteps.len());
        self.timesteps = timesteps;
        let order = self.model_outputs.len();
        self.model_outputs = vec![None; order];
        self.lower_order_nums = 0;
        self.step_index = None;
    }

    /// The number of inference steps and the index of the step at `timestep`: diffusers'
    /// `index_for_timestep` on the first step (the second match if the timestep repeats), then
    /// the running index, which must agree with `timestep` (a mismatch is a caller bug).
    pub fn step_at(&self, timestep: usize) -> Result<(usize, usize)> {
        let n = self
            .num_inference_steps
            .ok_or(DiffusionError::TimestepsNotSet(self.name))?;
        let idx = match self.step_index {
            Some(i) => i,
            None => {
                let mut matches = self
                    .timesteps
                    .iter()
                    .enumerate()
                    .filter(|(_, &x)| x == timestep);
                match (matches.next(), matches.next()) {
                    (None, _) => {
                        return Err(DiffusionError::TimestepNotInSchedule {
                            scheduler: self.name,
                            timestep,
                            expected: None,
                        })
                    }
                    (Some((only, _)), None) => only,
                    (Some(_), Some((second, _))) => second,
                }
            }
        };
        if self.timesteps.get(idx) != Some(&timestep) {
            return Err(DiffusionError::TimestepNotInSchedule {
                scheduler: self.name,
                timestep,
                expected: self.timesteps.get(idx).copied(),
            });
        }
        Ok((n, idx))
    }

    /// Ends the step at `idx`: one more output for the warm-up (up to the history's length), and
    /// the next step's index.
    pub fn finish_step(&mut self, idx: usize) {
        if self.lower_order_nums < self.model_outputs.len() {
            self.lower_order_nums += 1;
        }
        self.step_index = Some(idx + 1);
    }

    /// Stores `output` as the newest of the history.
    pub fn push_output(&mut self, output: Tensor) {
        self.model_outputs.rotate_left(1);
        if let Some(newest) = self.model_outputs.last_mut() {
            *newest = Some(output);
        }
    }
}
