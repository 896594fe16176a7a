//! The MHVAE's refiner (paper §4, App. G): a diffusion whose forward SDE pulls toward the VAE's
//! reconstruction x̂, dx = −½β(t)(x − x̂)dt + √β(t) dw, so that y = x − x̂ is Song et al.'s
//! VP-SDE. This module holds the process and its sampler; the score network and its training
//! build on them.
//!
//! - [`VpSde`]: β(t) linear (Song et al.'s 0.1 → 20), B(t) = ∫₀ᵗβ, the marginal
//!   x(t) | x₀ ~ N(x̂ + (x₀ − x̂)e^{−B/2}, (1 − e^{−B})I) (eq. 14), ε ↔ score.
//! - [`euler_maruyama`]: the reverse SDE (eq. 15) from x(1) = x̂ + ε, N steps, a noise-free last
//!   step, noise from a seed or a fixed sequence (reused across images for interpolation grids).

mod network;
mod sde;
mod trainer;

pub use network::{refiner_unet_config, Refiner, RefinerMeta, REFINER_JSON, UNET_DIR};
pub use sde::{euler_maruyama, EmNoise, VpSde};
pub use trainer::{RefinerTrainOptions, RefinerTrainer};
