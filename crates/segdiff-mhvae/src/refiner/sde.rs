//! The refiner's SDE (paper eq. 13–15; design notes §1.6, §3.6).

use candle_core::{DType, Tensor};
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

use crate::{MhvaeError, Result};

/// The variance-preserving process in y = x − x̂ with a linear β(t) on t ∈ [0, 1].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct VpSde {
    pub beta_min: f64,
    pub beta_max: f64,
}

impl Default for VpSde {
    /// Song et al.'s VP-SDE (score_sde_pytorch): β from 0.1 to 20.
    fn default() -> Self {
        Self {
            beta_min: 0.1,
            beta_max: 20.0,
        }
    }
}

impl VpSde {
    /// Rejects a β that is not positive and increasing.
    pub fn validate(&self) -> Result<()> {
        if !(self.beta_min > 0.0 && self.beta_max >= self.beta_min && self.beta_max.is_finite()) {
            return Err(MhvaeError::InvalidArgument {
                name: "beta",
                value: format!("{} → {}", self.beta_min, self.beta_max),
                reason: "β(t) must be positive and non-decreasing".into(),
            });
        }
        Ok(())
    }

    /// β(t).
    pub fn beta(&self, t: f64) -> f64 {
        self.beta_min + t * (self.beta_max - self.beta_min)
    }

    /// B(t) = ∫₀ᵗ β(s) ds.
    pub fn integral(&self, t: f64) -> f64 {
        self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t * t
    }

    /// e^{−B(t)/2}: how much of x₀ − x̂ is left at t.
    pub fn mean_coeff(&self, t: f64) -> f64 {
        (-0.5 * self.integral(t)).exp()
    }

    /// σ(t) = √(1 − e^{−B(t)}).
    pub fn std(&self, t: f64) -> f64 {
        (-(-self.integral(t)).exp_m1()).sqrt()
    }

    /// x(t) = x̂ + (x₀ − x̂)e^{−B/2} + σ(t)ε (eq. 14), for one t per batch row.
    pub fn marginal_sample(
        &self,
        x0: &Tensor,
        x_hat: &Tensor,
        eps: &Tensor,
        t: &[f64],
    ) -> Result<Tensor> {
        let n = x0.dim(0)?;
        if t.len() != n {
            return Err(MhvaeError::BadShape {
                what: "SDE times",
                shape: vec![t.len()],
                expected: format!("one per batch row ({n})"),
            });
        }
        let per_row = |f: &dyn Fn(f64) -> f64| -> Result<Tensor> {
            let mut shape = vec![n];
            shape.extend(std::iter::repeat_n(1, x0.rank() - 1));
            let v: Vec<f32> = t.iter().map(|&t| f(t) as f32).collect();
            Ok(Tensor::from_vec(v, shape, x0.device())?.to_dtype(x0.dtype())?)
        };
        let a = per_row(&|t| self.mean_coeff(t))?;
        let s = per_row(&|t| self.std(t))?;
        let drift = (x0 - x_hat)?.broadcast_mul(&a)?;
        Ok(((x_hat + drift)? + eps.broadcast_mul(&s)?)?)
    }

    /// The score from an ε-prediction: ∇ log p_t = −ε̂/σ(t).
    pub fn score_from_eps(&self, eps: &Tensor, t: f64) -> Result<Tensor> {
        Ok((eps * (-1.0 / self.std(t).max(1e-12)))?)
    }

    /// The ε-prediction of a score: ε̂ = −σ(t)·score.
    pub fn eps_from_score(&self, score: &Tensor, t: f64) -> Result<Tensor> {
        Ok((score * (-self.std(t)))?)
    }
}

/// Where the sampler's Gaussian noise comes from.
pub enum EmNoise<'a> {
    /// Drawn from this RNG (the start x(1) = x̂ + ε first, then one draw per step).
    Rng(&'a mut StdRng),
    /// A fixed sequence: `steps + 1` tensors shaped like x̂ (start, then per step), reused
    /// across images for interpolation grids (paper App. F).
    Fixed(&'a [Tensor]),
}

/// Euler–Maruyama on the reverse SDE (eq. 15) from t = 1 to `t_end` in `steps` steps:
/// x ← x + [½β(t)(x − x̂) + β(t)·score(x, t)]Δ + √(β(t)Δ)·z, the last step without noise
/// (score_sde_pytorch's "noise removal"). `score(x, t)` is the model's (or an analytic) score.
pub fn euler_maruyama(
    sde: &VpSde,
    x_hat: &Tensor,
    steps: usize,
    t_end: f64,
    noise: EmNoise<'_>,
    mut score: impl FnMut(&Tensor, f64) -> Result<Tensor>,
) -> Result<Tensor> {
    sde.validate()?;
    if steps == 0 || !(0.0..1.0).contains(&t_end) {
        return Err(MhvaeError::InvalidArgument {
            name: "steps / t_end",
            value: format!("{steps} / {t_end}"),
            reason: "at least one step, and 0 ≤ t_end < 1".into(),
        });
    }
    let mut noise = noise;
    let mut draw = |k: usize| -> Result<Tensor> {
        match &mut noise {
            EmNoise::Rng(rng) => Ok(segdiff_diffusion::random::randn(
                *rng,
                x_hat.dims(),
                x_hat.dtype(),
                x_hat.device(),
            )?),
            EmNoise::Fixed(seq) => {
                let z = seq.get(k).ok_or_else(|| MhvaeError::InvalidArgument {
                    name: "fixed noise",
                    value: format!("{} tensors", seq.len()),
                    reason: format!("{} needed (the start and one per step)", steps + 1),
                })?;
                if z.dims() != x_hat.dims() {
                    return Err(MhvaeError::BadShape {
                        what: "fixed noise",
                        shape: z.dims().to_vec(),
                        expected: format!("{:?}", x_hat.dims()),
                    });
                }
                Ok(z.to_dtype(x_hat.dtype())?)
            }
        }
    };
    let dt = (1.0 - t_end) / steps as f64;
    let mut x = (x_hat + draw(0)?)?;
    for i in 0..steps {
        let t = 1.0 - i as f64 * dt;
        let beta = sde.beta(t);
        let s = score(&x, t)?;
        let drift = (((&x - x_hat)? * (0.5 * beta))? + (s * beta)?)?;
        let mean = (&x + (drift * dt)?)?;
        x = if i + 1 == steps {
            mean
        } else {
            (mean + (draw(i + 1)? * (beta * dt).sqrt())?)?
        };
    }
    Ok(x.to_dtype(DType::F32)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use rand::SeedableRng;

    fn stats(t: &Tensor) -> (f64, f64) {
        let v = t
            .to_dtype(DType::F64)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        let n = v.len() as f64;
        let m = v.iter().sum::<f64>() / n;
        (
            m,
            v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0),
        )
    }

    /// Eq. 14's mean and variance against a fine-step Euler–Maruyama simulation of eq. 13.
    #[test]
    fn marginals_match_a_fine_simulation_of_the_forward_sde() {
        let sde = VpSde::default();
        let dev = Device::Cpu;
        let n = 20_000;
        let (x0, x_hat) = (1.5f64, -0.5f64);
        let mut rng = StdRng::seed_from_u64(1);
        for t_end in [0.1, 0.3, 1.0] {
            let steps = (t_end * 2000.0) as usize;
            let dt = t_end / steps as f64;
            let mut x = Tensor::full(x0, n, &dev).unwrap();
            for i in 0..steps {
                let t = i as f64 * dt;
                let z = segdiff_diffusion::random::randn(&mut rng, n, DType::F64, &dev).unwrap();
                let drift = ((&x - x_hat).unwrap() * (-0.5 * sde.beta(t) * dt)).unwrap();
                x = ((&x + drift).unwrap() + (z * (sde.beta(t) * dt).sqrt()).unwrap()).unwrap();
            }
            let (m, v) = stats(&x);
            let (m_want, v_want) = (
                x_hat + (x0 - x_hat) * sde.mean_coeff(t_end),
                sde.std(t_end).powi(2),
            );
            let se_m = (v_want / n as f64).sqrt();
            let se_v = v_want * (2.0 / (n as f64 - 1.0)).sqrt();
            println!("t={t_end}: mean {m:.4} vs {m_want:.4}, var {v:.4} vs {v_want:.4}");
            assert!(
                (m - m_want).abs() < 4.0 * se_m + 2e-3,
                "mean {m} vs {m_want}"
            );
            assert!(
                (v - v_want).abs() < 4.0 * se_v + 2e-3,
                "var {v} vs {v_want}"
            );
        }
    }

    /// The reverse sampler with the analytic score of Gaussian data x₀ ~ N(m, s²) recovers that
    /// Gaussian (no network involved).
    #[test]
    fn reverse_sampler_with_the_analytic_score_recovers_gaussian_data() {
        let sde = VpSde::default();
        let dev = Device::Cpu;
        let (m, s, xh) = (0.7f64, 0.3f64, 0.2f64);
        let n = 20_000;
        let x_hat = Tensor::full(xh, n, &dev).unwrap();
        let mut rng = StdRng::seed_from_u64(3);
        let out = euler_maruyama(&sde, &x_hat, 500, 1e-3, EmNoise::Rng(&mut rng), |x, t| {
            let a = sde.mean_coeff(t);
            let mu = xh + (m - xh) * a;
            let var = s * s * a * a + 1.0 - a * a;
            Ok(((x - mu)? * (-1.0 / var))?)
        })
        .unwrap();
        let (mean, var) = stats(&out);
        println!(
            "recovered mean {mean:.4} (want {m}), var {var:.4} (want {})",
            s * s
        );
        assert!((mean - m).abs() < 0.01, "{mean}");
        assert!((var - s * s).abs() < 0.01, "{var}");
    }

    #[test]
    fn eps_and_score_convert_both_ways_and_fixed_noise_is_reused() {
        let sde = VpSde::default();
        let dev = Device::Cpu;
        let eps = Tensor::new(&[0.5f64, -1.0], &dev).unwrap();
        let back = sde
            .eps_from_score(&sde.score_from_eps(&eps, 0.4).unwrap(), 0.4)
            .unwrap();
        assert!(
            (back - &eps)
                .unwrap()
                .abs()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
                < 1e-12
        );
        // The same fixed noise gives the same sample; a different x̂ shifts it.
        let x_hat = Tensor::zeros(4, DType::F32, &dev).unwrap();
        let mut rng = StdRng::seed_from_u64(0);
        let seq: Vec<Tensor> = (0..11)
            .map(|_| segdiff_diffusion::random::randn(&mut rng, 4, DType::F32, &dev).unwrap())
            .collect();
        let run = |xh: &Tensor| {
            euler_maruyama(&sde, xh, 10, 1e-3, EmNoise::Fixed(&seq), |x, t| {
                Ok((x * (-1.0 / sde.std(t).powi(2).max(1e-3)))?)
            })
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
        };
        assert_eq!(run(&x_hat), run(&x_hat));
        assert!(euler_maruyama(
            &sde,
            &x_hat,
            10,
            1e-3,
            EmNoise::Fixed(&seq[..5]),
            |x, _| Ok(x.clone())
        )
        .is_err());
        assert!(VpSde {
            beta_min: 0.0,
            beta_max: 1.0
        }
        .validate()
        .is_err());
    }
}
