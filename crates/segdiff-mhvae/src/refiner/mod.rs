//! The MHVAE's refiner (paper §4, App. G): a diffusion whose forward SDE pulls toward the VAE's
//! reconstruction x̂, dx = −½β(t)(x − x̂)dt + √β(t) dw, so that y = x − x̂ is Song et al.'s
//! VP-SDE.
//!
//! - [`VpSde`]: β(t) linear (Song et al.'s 0.1 → 20), B(t) = ∫₀ᵗβ, the marginal
//!   x(t) | x₀ ~ N(x̂ + (x₀ − x̂)e^{−B/2}, (1 − e^{−B})I) (eq. 14), ε ↔ score, λ = log(α/σ).
//! - [`Formulation`]: the paper's process (x(0) = x₀) or DiffuseVAE's formulation 2 (x(0) =
//!   x₀ + x̂, x̂ subtracted at the end), the paper's App.-G baseline.
//! - Samplers ([`RefinerSampler`]), all from x(1) = x̂ + ε with noise from a seed or a fixed
//!   sequence (reused across images for interpolation grids):
//!   - [`euler_maruyama`]: the paper's, the reverse SDE (eq. 15), a noise-free last step;
//!   - [`DpmSolver`]: DPM-Solver++(2M) on y = x − x̂, deterministic (probability-flow ODE) or
//!     stochastic (SDE-DPM-Solver++(2M)), steps uniform in λ;
//!   - every sampler makes the network's ε consistent with the implied image clipped to
//!     [−1, 1] (DDPM's `clip_denoised`).
//! - [`Refiner`]: the score network (a diffusers `UNet2DModel` on x_t ⊕ x̂) with its metadata;
//!   [`RefinerTrainer`]: its training against a frozen VAE on the shared machinery.

mod network;
mod sde;
mod trainer;

pub use network::{refiner_unet_config, Refiner, RefinerMeta, REFINER_JSON, UNET_DIR};
pub use sde::{euler_maruyama, DpmSolver, EmNoise, Formulation, RefinerSampler, VpSde};
pub use trainer::{RefinerTrainOptions, RefinerTrainer};

/// Mean squared discrete Laplacian (4-neighbour, interior pixels) of (N, C, H, W) images: the
/// high-frequency energy a VAE blurs away and the refiner should bring back (in the images'
/// own units; compare it between sets of the same range).
pub fn high_frequency_energy(images: &candle_core::Tensor) -> crate::Result<f64> {
    let (_, _, h, w) = images.dims4()?;
    if h < 3 || w < 3 {
        return Err(crate::MhvaeError::BadShape {
            what: "images for the Laplacian",
            shape: images.dims().to_vec(),
            expected: "at least 3×3 pixels".into(),
        });
    }
    let x = images.to_dtype(candle_core::DType::F64)?;
    let at = |dy: usize, dx: usize| -> crate::Result<candle_core::Tensor> {
        Ok(x.narrow(2, dy, h - 2)?.narrow(3, dx, w - 2)?)
    };
    let lap = ((((at(1, 1)? * 4.0)? - at(0, 1)?)? - at(2, 1)?)? - at(1, 0)?)?;
    let lap = (lap - at(1, 2)?)?;
    Ok(lap.sqr()?.mean_all()?.to_scalar::<f64>()?)
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    #[test]
    fn high_frequency_energy_of_flat_ramp_and_checkerboard_images() {
        let dev = Device::Cpu;
        let img = |f: &dyn Fn(usize, usize) -> f32| {
            let v: Vec<f32> = (0..36).map(|k| f(k / 6, k % 6)).collect();
            Tensor::from_vec(v, (1, 1, 6, 6), &dev).unwrap()
        };
        let e = |t: &Tensor| super::high_frequency_energy(t).unwrap();
        assert_eq!(e(&img(&|_, _| 0.3)), 0.0);
        assert!(
            e(&img(&|y, x| (x + 2 * y) as f32)).abs() < 1e-12,
            "a ramp has no curvature"
        );
        // 0/1 checkerboard: every interior Laplacian is ±4.
        assert!((e(&img(&|y, x| ((x + y) % 2) as f32)) - 16.0).abs() < 1e-9);
        assert!(super::high_frequency_energy(
            &Tensor::zeros((1, 1, 2, 5), candle_core::DType::F32, &dev).unwrap()
        )
        .is_err());
    }
}
