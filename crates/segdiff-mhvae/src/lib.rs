//! The multi-headed VAE (MHVAE) of segdiff: the second generation method of our sources
//! (*"Enhancing medical image generation with anatomical precision: a multi-headed VAE-based
//! diffusion model"*). Its segmentation head has no pixel classifier: it warps a fixed reference
//! shape (a centred disc) with a spatial transform T_θ predicted from the image, either affine or a
//! thin-plate spline (TPS), so that the object's position θ and the image's style z are separate
//! latents one can swap and edit.
//!
//! This crate holds the science; the CLI (`segdiff mhvae …`) only parses and wires.
//! Not here: the diffusers UNet (`segdiff-unet`), the shared training machinery
//! (`segdiff-diffusion::train`, which [`trainer::MhvaeTrainer`] plugs into), metrics
//! (`segdiff-eval`).
//!
//! Main items:
//! - [`Mhvae`] ([`model`]) with its [`MhvaeConfig`] (every choice the paper leaves open, recorded
//!   in `mhvae.json`): encoder trunk (small conv or [`resnet::ResNet50`]) and Gaussian heads for
//!   style z and position θ; [`Position`] turns θ into warp grids; the segmentation head warps
//!   the reference disc, the image head half of its 32×32 features.
//! - [`trainer`]: the loss (log-cosh + soft Dice + KL) and [`trainer::MhvaeTrainer`], a
//!   `segdiff_diffusion::train::Method`; [`edit`]: rotate / scale / move the object about its
//!   centre ([`PositionEdit`]); [`kfold`]: k-fold evaluation with the MONAI UNet baseline;
//!   [`synth`]: synthetic single-object data with ground-truth style and shape; [`sheet`]:
//!   pictures.
//! - [`refiner`]: the diffusion refiner (paper §4): its SDE toward x̂, the paper's and
//!   DiffuseVAE's formulations, the score network, its training against the frozen VAE, and the
//!   samplers (Euler–Maruyama, DPM-Solver++(2M) deterministic and stochastic).
//! - [`warp`]: the spatial-transformer ops candle lacks, differentiable in both arguments:
//!   [`warp::grid_sample`] (bilinear, zero padding, both `align_corners`, with torch's semantics; a
//!   CPU custom op with explicit backward and a device-agnostic composition for CUDA),
//!   [`warp::affine_grid`], the thin-plate-spline grid [`warp::TpsWarp`] (the paper's App. B
//!   system, inverted once per resolution), its control-point layouts [`warp::ControlPoints`], and
//!   differentiable bilinear resizing [`warp::resize_bilinear`].
//! - [`loss`]: log-cosh reconstruction, soft Dice, Gaussian KL.
//! - [`reference_mask`]: the reference shape R (a disc at the centre, radius H/4).
//! - [`resnet`]: torchvision's ResNet-50 trunk [`resnet::ResNet50`] (frozen BatchNorm,
//!   torchvision's tensor names).
//! - [`MhvaeError`]: the crate's typed error.

pub mod config;
pub mod edit;
pub mod error;
pub mod kfold;
pub mod loss;
pub mod model;
pub mod position;
pub mod reference_mask;
pub mod refiner;
pub mod resnet;
pub mod sheet;
pub mod synth;
pub mod trainer;
pub mod warp;

pub use config::{Backbone, LossWeights, MhvaeConfig, PositionAugment, ThetaParam, WarpKind};
pub use edit::PositionEdit;
pub use error::{MhvaeError, Result};
pub use model::{Mhvae, Posterior, WarpGrids};
pub use position::Position;
