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

/// Which process the refiner learns (design notes §3.5). Both run the same SDE toward x̂; they
/// differ in where it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Formulation {
    /// The paper's (eq. 13–15): x(0) = x₀, so y = x − x̂ starts at x₀ − x̂ and the sampler's end
    /// point is the image.
    #[default]
    Mhvae,
    /// DiffuseVAE's formulation 2 (Pandey et al. 2022), the paper's App.-G baseline: the marginal
    /// mean is α(t)x₀ + x̂, i.e. x(0) = x₀ + x̂, and x̂ is subtracted at the end. Here in
    /// continuous time on the same VP schedule; DiffuseVAE's discrete chain (T = 1000, β linear
    /// 1e-4 → 0.02) is its discretisation (Song et al.: β_i = β̄(i/T)/T with β̄ 0.1 → 20).
    Diffusevae2,
}

impl Formulation {
    /// The process's value at t = 0 for a clean image x₀.
    pub fn start(&self, x0: &Tensor, x_hat: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Self::Mhvae => x0.clone(),
            Self::Diffusevae2 => (x0 + x_hat)?,
        })
    }

    /// A data prediction ŷ₀ of y = x − x̂ with the image it implies clipped to [−1, 1].
    pub fn clip_data(&self, y0: &Tensor, x_hat: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Self::Mhvae => ((y0 + x_hat)?.clamp(-1.0, 1.0)? - x_hat)?,
            Self::Diffusevae2 => y0.clamp(-1.0, 1.0)?,
        })
    }

    /// The image from the sampler's end point.
    pub fn finish(&self, x_end: &Tensor, x_hat: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Self::Mhvae => x_end.clone(),
            Self::Diffusevae2 => (x_end - x_hat)?,
        })
    }
}

impl std::fmt::Display for Formulation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Mhvae => "mhvae",
            Self::Diffusevae2 => "diffusevae2",
        })
    }
}

/// The reverse-time samplers of the refiner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RefinerSampler {
    /// Euler–Maruyama on the reverse SDE (the paper's, eq. 15): one network call per step.
    #[default]
    EulerMaruyama,
    /// DPM-Solver++(2M) on the probability-flow ODE of y = x − x̂ (a standard VP process),
    /// deterministic after the start noise, steps uniform in log-SNR: one network call per step.
    DpmSolver,
    /// SDE-DPM-Solver++(2M): the same steps on the reverse SDE, with fresh noise each step.
    DpmSolverSde,
}

impl RefinerSampler {
    /// The usual number of steps (network calls).
    pub fn default_steps(&self) -> usize {
        match self {
            Self::EulerMaruyama => 100,
            Self::DpmSolver | Self::DpmSolverSde => 10,
        }
    }
}

impl std::fmt::Display for RefinerSampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::EulerMaruyama => "Euler–Maruyama",
            Self::DpmSolver => "DPM-Solver++(2M)",
            Self::DpmSolverSde => "SDE-DPM-Solver++(2M)",
        })
    }
}

/// Where the sampler's Gaussian noise comes from.
pub enum EmNoise<'a> {
    /// Drawn from this RNG (the start x(1) = x̂ + ε first, then one draw per E–M step).
    Rng(&'a mut StdRng),
    /// A fixed sequence: the start, then one tensor per E–M step (the deterministic sampler
    /// uses the start only). Each is shaped like x̂, or has batch size 1 and is broadcast, so
    /// one sequence is reused across images for interpolation grids (paper App. F).
    Fixed(&'a [Tensor]),
}

impl EmNoise<'_> {
    /// Draw `k` (0 = the start) shaped like `like`; `needed` names the sequence length.
    fn draw(&mut self, k: usize, like: &Tensor, needed: usize) -> Result<Tensor> {
        match self {
            EmNoise::Rng(rng) => Ok(segdiff_diffusion::random::randn(
                *rng,
                like.dims(),
                like.dtype(),
                like.device(),
            )?),
            EmNoise::Fixed(seq) => {
                let z = seq.get(k).ok_or_else(|| MhvaeError::InvalidArgument {
                    name: "fixed noise",
                    value: format!("{} tensors", seq.len()),
                    reason: format!("{needed} needed (the start and one per step)"),
                })?;
                let fits = z.rank() == like.rank()
                    && z.dims()[1..] == like.dims()[1..]
                    && (z.dim(0)? == like.dim(0)? || z.dim(0)? == 1);
                if !fits {
                    return Err(MhvaeError::BadShape {
                        what: "fixed noise",
                        shape: z.dims().to_vec(),
                        expected: format!("{:?} or batch 1", like.dims()),
                    });
                }
                Ok(z.to_dtype(like.dtype())?
                    .broadcast_as(like.dims())?
                    .contiguous()?)
            }
        }
    }
}

fn check_steps(sde: &VpSde, steps: usize, t_end: f64) -> Result<()> {
    sde.validate()?;
    if steps == 0 || !(0.0..1.0).contains(&t_end) || t_end <= 0.0 {
        return Err(MhvaeError::InvalidArgument {
            name: "steps / t_end",
            value: format!("{steps} / {t_end}"),
            reason: "at least one step, and 0 < t_end < 1".into(),
        });
    }
    Ok(())
}

/// Euler–Maruyama on the reverse SDE (eq. 15) from t = 1 to `t_end` in `steps` steps:
/// x ← x + [½β(t)(x − x̂) + β(t)·score(x, t)]Δ + √(β(t)Δ)·z, the last step without noise
/// (score_sde_pytorch's "noise removal"). `score(x, t)` is the model's (or an analytic) score.
pub fn euler_maruyama(
    sde: &VpSde,
    x_hat: &Tensor,
    steps: usize,
    t_end: f64,
    mut noise: EmNoise<'_>,
    mut score: impl FnMut(&Tensor, f64) -> Result<Tensor>,
) -> Result<Tensor> {
    check_steps(sde, steps, t_end)?;
    let dt = (1.0 - t_end) / steps as f64;
    let mut x = (x_hat + noise.draw(0, x_hat, steps + 1)?)?;
    for i in 0..steps {
        let t = 1.0 - i as f64 * dt;
        let beta = sde.beta(t);
        let s = score(&x, t)?;
        let drift = (((&x - x_hat)? * (0.5 * beta))? + (s * beta)?)?;
        let mean = (&x + (drift * dt)?)?;
        x = if i + 1 == steps {
            mean
        } else {
            (mean + (noise.draw(i + 1, x_hat, steps + 1)? * (beta * dt).sqrt())?)?
        };
    }
    Ok(x.to_dtype(DType::F32)?)
}

impl VpSde {
    /// λ(t) = log(α(t)/σ(t)), the half log signal-to-noise ratio.
    pub fn lambda(&self, t: f64) -> f64 {
        self.mean_coeff(t).ln() - self.std(t).ln()
    }

    /// The t with λ(t) = `lambda` (B(t) = ln(1 + e^{−2λ}), solved for t).
    pub fn time_of_lambda(&self, lambda: f64) -> f64 {
        let b = (-2.0 * lambda).exp().ln_1p();
        let d = self.beta_max - self.beta_min;
        if d.abs() < 1e-12 {
            return b / self.beta_min;
        }
        (-self.beta_min + (self.beta_min * self.beta_min + 2.0 * d * b).sqrt()) / d
    }
}

/// DPM-Solver++(2M) (Lu et al. 2022) on y = x − x̂, which is a standard VP process: from
/// x(1) = x̂ + ε in `steps` network calls at times uniform in λ = log(α/σ) down to `t_end`, the
/// data prediction ŷ₀ = (y − σε̂)/α, the second-order multistep correction from the second step
/// on, and the last call's ŷ₀ as the result (the step to σ = 0).
///
/// - Deterministic (`stochastic: false`): the probability-flow ODE,
///   y_t = (σ_t/σ_s)·y_s + α_t(1 − e^{−h})·D.
/// - Stochastic (`stochastic: true`, SDE-DPM-Solver++(2M)): the reverse SDE solved exactly in
///   its linear part, y_t = (σ_t/σ_s)e^{−h}·y_s + α_t(1 − e^{−2h})·D + σ_t√(1 − e^{−2h})·z, one
///   noise draw per step but the last (a fixed sequence needs `steps` tensors: the start and one
///   per step before the last).
///
/// D = ŷ₀ + ½(ŷ₀ − ŷ₀′)/r with r = h′/h, primes for the previous step. `eps(x, t)` is the
/// model's ε-prediction at x = y + x̂; `project(ŷ₀)` maps each data prediction into the data's
/// range (DDPM's x₀ clipping; see [`Formulation::clip_data`]). Near t = 1, α is 6.6·10⁻³, so
/// ŷ₀ multiplies the network's error by 150; unclipped, a trained network's first predictions
/// fall far outside the image range and the multistep update carries them on.
#[derive(Debug, Clone, Copy)]
pub struct DpmSolver {
    pub steps: usize,
    pub t_end: f64,
    pub stochastic: bool,
}

impl DpmSolver {
    pub fn run(
        &self,
        sde: &VpSde,
        x_hat: &Tensor,
        mut noise: EmNoise<'_>,
        mut eps: impl FnMut(&Tensor, f64) -> Result<Tensor>,
        project: impl Fn(&Tensor) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let (steps, t_end) = (self.steps, self.t_end);
        check_steps(sde, steps, t_end)?;
        let (l0, l1) = (sde.lambda(1.0), sde.lambda(t_end));
        // The network is called at `steps` times uniform in λ from t = 1 to t_end; the last
        // call's data prediction is the result (the step to σ = 0, as diffusers' DPM-Solver with
        // `final_sigmas_type = "zero"`), so no noise of the last step is left in the image.
        let times: Vec<f64> = (0..steps)
            .map(|i| match i {
                0 => 1.0,
                i if i + 1 == steps => t_end,
                i => sde.time_of_lambda(l0 + (l1 - l0) * i as f64 / (steps - 1) as f64),
            })
            .collect();
        let needed = if self.stochastic { steps } else { 1 };
        let mut y = noise.draw(0, x_hat, needed)?;
        let mut prev: Option<(Tensor, f64)> = None; // (ŷ₀, h) of the previous step
        for i in 0..steps {
            let s = times[i];
            let e = eps(&(&y + x_hat)?, s)?;
            let d = project(&((&y - (e * sde.std(s))?)? * (1.0 / sde.mean_coeff(s)))?)?;
            if i + 1 == steps {
                y = d;
                break;
            }
            let t = times[i + 1];
            let h = sde.lambda(t) - sde.lambda(s);
            let d_used = match &prev {
                Some((d_prev, h_prev)) => {
                    let r = h_prev / h;
                    ((&d * (1.0 + 0.5 / r))? - (d_prev * (0.5 / r))?)?
                }
                None => d.clone(),
            };
            let (a_t, sd_t, sd_s) = (sde.mean_coeff(t), sde.std(t), sde.std(s));
            y = if self.stochastic {
                let keep = (-2.0 * h).exp_m1();
                let z = noise.draw(i + 1, x_hat, needed)?;
                (((&y * (sd_t / sd_s * (-h).exp()))? - (d_used * (a_t * keep))?)?
                    + (z * (sd_t * (-keep).sqrt()))?)?
            } else {
                ((&y * (sd_t / sd_s))? - (d_used * (a_t * (-h).exp_m1()))?)?
            };
            prev = Some((d, h));
        }
        Ok((y + x_hat)?.to_dtype(DType::F32)?)
    }
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

    /// DPM-Solver++(2M), deterministic and stochastic, with the analytic ε of Gaussian data
    /// recovers it in 10 calls, for both formulations: diffusevae2's process starts at x₀ + x̂, and only its final subtraction of
    /// x̂ gives x₀ back.
    #[test]
    fn fast_sampler_with_the_analytic_eps_recovers_gaussian_data_for_both_formulations() {
        let sde = VpSde::default();
        let dev = Device::Cpu;
        let (m, s, xh) = (0.7f64, 0.3f64, 0.2f64);
        let n = 20_000;
        let x_hat = Tensor::full(xh, n, &dev).unwrap();
        for (formulation, stochastic) in [
            (Formulation::Mhvae, false),
            (Formulation::Diffusevae2, false),
            (Formulation::Mhvae, true),
        ] {
            // y(0) = x(0) − x̂ ~ N(m_y, s²).
            let x0 = Tensor::full(m, 1, &dev).unwrap();
            let xh1 = Tensor::full(xh, 1, &dev).unwrap();
            let m_y = (formulation.start(&x0, &xh1).unwrap() - &xh1)
                .unwrap()
                .to_vec1::<f64>()
                .unwrap()[0];
            let mut rng = StdRng::seed_from_u64(5);
            let solver = DpmSolver {
                steps: 10,
                t_end: 1e-3,
                stochastic,
            };
            let end = solver
                .run(
                    &sde,
                    &x_hat,
                    EmNoise::Rng(&mut rng),
                    |x, t| {
                        let (a, sd) = (sde.mean_coeff(t), sde.std(t));
                        let var = s * s * a * a + sd * sd;
                        Ok((((x - xh)? - a * m_y)? * (sd / var))?)
                    },
                    |d| Ok(d.clone()),
                )
                .unwrap();
            let (raw, _) = stats(&end);
            let out = formulation
                .finish(&end, &x_hat.to_dtype(DType::F32).unwrap())
                .unwrap();
            let (mean, var) = stats(&out);
            println!("{formulation}, stochastic {stochastic}: end mean {raw:.4}, image mean {mean:.4} (want {m}), var {var:.4} (want {})", s * s);
            assert!((mean - m).abs() < 0.01, "{formulation}: {mean}");
            assert!((var - s * s).abs() < 0.01, "{formulation}: {var}");
            if formulation == Formulation::Diffusevae2 {
                assert!(
                    (raw - (m + xh)).abs() < 0.01,
                    "before the subtraction: {raw}"
                );
            }
        }
        // λ and its inverse agree.
        for t in [1e-3, 0.2, 0.5, 1.0] {
            assert!((sde.time_of_lambda(sde.lambda(t)) - t).abs() < 1e-9);
        }
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
