//! The variance-preserving training noise schedule (β, α, ᾱ tables) shared by every scheduler.
//!
//! diffusers keeps these tables as torch float32 tensors, and the fixtures show the exact arithmetic:
//! `torch.linspace` on CPU is evaluated per element as one fused multiply-add in f32 from the nearer
//! end, `1 - β` in f32, and `torch.cumprod` accumulates in f64 (CPU `acc_type<float>`) before rounding
//! each entry to f32. We reproduce those tables bit for bit; the schedulers then derive their step
//! scalars in f32 with torch's operation order (diffusers works on 0-d float32 tensors), which the
//! fixtures match bit for bit.

use candle_core::Tensor;

use crate::config::BetaSchedule;
use crate::error::{DiffusionError, Result};

/// β / α / ᾱ tables of a VP noise schedule, stored as f32 exactly as diffusers holds them.
#[derive(Clone, Debug)]
pub struct NoiseSchedule {
    betas: Vec<f32>,
    alphas: Vec<f32>,
    alphas_cumprod: Vec<f32>,
}

/// `torch.linspace(start, end, steps, dtype=float32)` on CPU: the lower half is `fma(step, i, start)`,
/// the upper half `fma(-step, steps-1-i, end)`, with `step` rounded to f32.
pub(crate) fn torch_linspace_f32(start: f64, end: f64, steps: usize) -> Vec<f32> {
    let start = start as f32;
    let end = end as f32;
    if steps == 1 {
        return vec![start];
    }
    let step = (end - start) / (steps - 1) as f32;
    let halfway = steps / 2;
    (0..steps)
        .map(|i| {
            if i < halfway {
                step.mul_add(i as f32, start)
            } else {
                (-step).mul_add((steps - 1 - i) as f32, end)
            }
        })
        .collect()
}

/// Nichol & Dhariwal's cosine schedule as diffusers' `betas_for_alpha_bar` computes it (Python floats,
/// then float32). candle-transformers divides integers here and gets it wrong; we divide in f64.
fn squaredcos_cap_v2_betas(num_train_timesteps: usize) -> Vec<f32> {
    let alpha_bar = |t: f64| {
        ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0)
            .cos()
            .powi(2)
    };
    let n = num_train_timesteps as f64;
    (0..num_train_timesteps)
        .map(|i| {
            let t1 = i as f64 / n;
            let t2 = (i + 1) as f64 / n;
            (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999) as f32
        })
        .collect()
}

impl NoiseSchedule {
    /// Builds the tables for `num_train_timesteps` steps of the given β schedule.
    pub fn new(
        num_train_timesteps: usize,
        beta_start: f64,
        beta_end: f64,
        schedule: BetaSchedule,
    ) -> Result<Self> {
        if num_train_timesteps == 0 {
            return Err(DiffusionError::InvalidParameter {
                name: "num_train_timesteps",
                value: "0".into(),
                reason: "must be at least 1",
            });
        }
        let betas = match schedule {
            BetaSchedule::Linear => torch_linspace_f32(beta_start, beta_end, num_train_timesteps),
            BetaSchedule::ScaledLinear => {
                torch_linspace_f32(beta_start.sqrt(), beta_end.sqrt(), num_train_timesteps)
                    .into_iter()
                    .map(|b| b * b)
                    .collect()
            }
            BetaSchedule::SquaredcosCapV2 => squaredcos_cap_v2_betas(num_train_timesteps),
        };
        Ok(Self::from_betas(betas))
    }

    fn from_betas(betas: Vec<f32>) -> Self {
        let alphas: Vec<f32> = betas.iter().map(|&b| 1.0f32 - b).collect();
        let mut acc = 1.0f64;
        let alphas_cumprod = alphas
            .iter()
            .map(|&a| {
                acc *= a as f64;
                acc as f32
            })
            .collect();
        Self {
            betas,
            alphas,
            alphas_cumprod,
        }
    }

    /// Number of training timesteps.
    pub fn len(&self) -> usize {
        self.betas.len()
    }

    /// Always false: a schedule has at least one step.
    pub fn is_empty(&self) -> bool {
        self.betas.is_empty()
    }

    /// β_t for t in 0..len.
    pub fn betas(&self) -> &[f32] {
        &self.betas
    }

    /// α_t = 1 − β_t.
    pub fn alphas(&self) -> &[f32] {
        &self.alphas
    }

    /// ᾱ_t = ∏_{s≤t} α_s.
    pub fn alphas_cumprod(&self) -> &[f32] {
        &self.alphas_cumprod
    }

    /// ᾱ_t, checked against the table length.
    pub fn alpha_cumprod(&self, t: usize) -> Result<f32> {
        self.alphas_cumprod
            .get(t)
            .copied()
            .ok_or(DiffusionError::TimestepOutOfRange {
                timestep: t,
                num_train_timesteps: self.len(),
            })
    }

    /// Per-sample `(sqrt(ᾱ_t), sqrt(1 − ᾱ_t))`, validated against the batch size.
    fn per_sample_coefficients(
        &self,
        x: &Tensor,
        timesteps: &[usize],
    ) -> Result<(Vec<f64>, Vec<f64>)> {
        let batch = x.dim(0)?;
        if timesteps.len() != batch {
            return Err(DiffusionError::TimestepCountMismatch {
                timesteps: timesteps.len(),
                batch,
            });
        }
        let mut a = Vec::with_capacity(batch);
        let mut b = Vec::with_capacity(batch);
        for &t in timesteps {
            // f32 arithmetic, as diffusers does on its float32 table.
            let ac = self.alpha_cumprod(t)?;
            a.push(ac.sqrt() as f64);
            b.push((1.0f32 - ac).sqrt() as f64);
        }
        Ok((a, b))
    }

    /// Forward process `sqrt(ᾱ_t)·x0 + sqrt(1−ᾱ_t)·noise` with one timestep per sample (dim 0).
    pub fn add_noise(&self, x0: &Tensor, noise: &Tensor, timesteps: &[usize]) -> Result<Tensor> {
        check_same_shape("add_noise noise", noise, x0)?;
        let (a, b) = self.per_sample_coefficients(x0, timesteps)?;
        let a = per_sample_column(&a, x0)?;
        let b = per_sample_column(&b, x0)?;
        Ok(x0.broadcast_mul(&a)?.add(&noise.broadcast_mul(&b)?)?)
    }

    /// v-prediction target `sqrt(ᾱ_t)·noise − sqrt(1−ᾱ_t)·x0` (diffusers `get_velocity`).
    pub fn velocity(&self, x0: &Tensor, noise: &Tensor, timesteps: &[usize]) -> Result<Tensor> {
        check_same_shape("velocity noise", noise, x0)?;
        let (a, b) = self.per_sample_coefficients(x0, timesteps)?;
        let a = per_sample_column(&a, x0)?;
        let b = per_sample_column(&b, x0)?;
        Ok(noise.broadcast_mul(&a)?.sub(&x0.broadcast_mul(&b)?)?)
    }
}

/// A (N, 1, 1, ...) tensor of per-sample scalars in `like`'s dtype and device.
pub(crate) fn per_sample_column(values: &[f64], like: &Tensor) -> Result<Tensor> {
    let mut shape = vec![1usize; like.rank()];
    shape[0] = values.len();
    let t = Tensor::from_slice(values, values.len(), like.device())?
        .to_dtype(like.dtype())?
        .reshape(shape)?;
    Ok(t)
}

pub(crate) fn check_same_shape(what: &'static str, got: &Tensor, expected: &Tensor) -> Result<()> {
    if got.dims() != expected.dims() {
        return Err(DiffusionError::ShapeMismatch {
            what,
            got: got.dims().to_vec(),
            expected: expected.dims().to_vec(),
        });
    }
    Ok(())
}

/// Timesteps as an i64 (N,) tensor, the form diffusers' UNet expects.
pub fn timesteps_tensor(timesteps: &[usize], device: &candle_core::Device) -> Result<Tensor> {
    let v: Vec<i64> = timesteps.iter().map(|&t| t as i64).collect();
    Ok(Tensor::from_vec(v, timesteps.len(), device)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;

    #[test]
    fn cosine_schedule_is_not_the_integer_division_bug() {
        let s = NoiseSchedule::new(1000, 1e-4, 0.02, BetaSchedule::SquaredcosCapV2).unwrap();
        // With integer division every β but the last would be 0; the true first β is ≈ 4e-5.
        let b0 = s.betas()[0] as f64;
        assert!(b0 > 1e-5 && b0 < 1e-4, "beta_0 = {b0}");
        assert_eq!(s.betas()[999], 0.999);
        let t1 = 0.001f64;
        let ab = |t: f64| {
            ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0)
                .cos()
                .powi(2)
        };
        let expect = 1.0 - ab(t1) / ab(0.0);
        assert!((b0 - expect).abs() < 1e-9);
        assert!(s.betas().windows(2).all(|w| w[1] >= w[0]));
    }

    #[test]
    fn scaled_linear_endpoints() {
        let s = NoiseSchedule::new(1000, 0.00085, 0.012, BetaSchedule::ScaledLinear).unwrap();
        assert!((s.betas()[0] as f64 - 0.00085).abs() < 1e-9);
        assert!((s.betas()[999] as f64 - 0.012).abs() < 1e-8);
        let mid =
            (0.00085f64.sqrt() + (0.012f64.sqrt() - 0.00085f64.sqrt()) * 500.0 / 999.0).powi(2);
        assert!((s.betas()[500] as f64 - mid).abs() < 1e-8);
    }

    #[test]
    fn add_noise_rejects_wrong_timestep_count() {
        let s = NoiseSchedule::new(10, 1e-4, 0.02, BetaSchedule::Linear).unwrap();
        let x = Tensor::zeros((2, 1, 2, 2), DType::F32, &candle_core::Device::Cpu).unwrap();
        assert!(matches!(
            s.add_noise(&x, &x, &[1]),
            Err(DiffusionError::TimestepCountMismatch { .. })
        ));
        assert!(matches!(
            s.add_noise(&x, &x, &[1, 10]),
            Err(DiffusionError::TimestepOutOfRange { timestep: 10, .. })
        ));
    }
}
