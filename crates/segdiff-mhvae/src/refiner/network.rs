//! The refiner's score network: segdiff's diffusers `UNet2DModel` taking x_t ⊕ x̂ (2C channels)
//! and the continuous time as the noise label 999·t, predicting ε (score = −ε̂/σ(t)). A refiner
//! folder is `refiner.json` ([`RefinerMeta`]) and `unet/` (diffusers layout).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use segdiff_unet::{UNet2DConfig, UNet2DModel};
use serde::{Deserialize, Serialize};

use super::sde::{euler_maruyama, DpmSolver, EmNoise, Formulation, RefinerSampler, VpSde};
use crate::{MhvaeError, Result};

pub const REFINER_JSON: &str = "refiner.json";
pub const UNET_DIR: &str = "unet";
const FORMAT_VERSION: u32 = 1;

/// What a refiner records beside its UNet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefinerMeta {
    pub format_version: u32,
    pub sde: VpSde,
    /// The paper's process, or DiffuseVAE's formulation 2 (absent in older files: the paper's).
    #[serde(default)]
    pub formulation: Formulation,
    /// Smallest training time (t ~ U(t_eps, 1)).
    pub t_eps: f64,
    pub image_channels: usize,
    pub image_size: usize,
}

impl RefinerMeta {
    pub fn new(image_channels: usize, image_size: usize) -> Self {
        Self {
            format_version: FORMAT_VERSION,
            sde: VpSde::default(),
            formulation: Formulation::default(),
            t_eps: 1e-5,
            image_channels,
            image_size,
        }
    }
}

/// A UNet for the refiner: 2C in, C out, the given widths, one ResNet layer per block,
/// attention at the first level of at most 16².
pub fn refiner_unet_config(
    size: usize,
    channels: usize,
    widths: &[usize],
    groups: usize,
) -> Result<UNet2DConfig> {
    let cfg = UNet2DConfig {
        layers_per_block: 1,
        ..UNet2DConfig::with_channels(size, 2 * channels, channels, widths, groups)
    }
    .with_attention_level(Some(UNet2DConfig::default_attention_level(
        size,
        widths.len(),
    )));
    cfg.validate().map_err(|e| MhvaeError::InvalidArgument {
        name: "refiner UNet",
        value: format!("{widths:?} at {size}²"),
        reason: e.to_string(),
    })?;
    Ok(cfg)
}

fn check(meta: &RefinerMeta, unet_config: &UNet2DConfig) -> Result<()> {
    if unet_config.in_channels != 2 * meta.image_channels
        || unet_config.out_channels != meta.image_channels
    {
        return Err(MhvaeError::InvalidArgument {
            name: "refiner UNet channels",
            value: format!(
                "{} in, {} out",
                unet_config.in_channels, unet_config.out_channels
            ),
            reason: format!(
                "x_t ⊕ x̂ needs {} in and {} out",
                2 * meta.image_channels,
                meta.image_channels
            ),
        });
    }
    meta.sde.validate()
}

/// The score network with its metadata.
pub struct Refiner {
    pub meta: RefinerMeta,
    pub unet_config: UNet2DConfig,
    unet: UNet2DModel,
    device: Device,
}

impl Refiner {
    pub fn new(meta: RefinerMeta, unet_config: UNet2DConfig, vb: VarBuilder) -> Result<Self> {
        check(&meta, &unet_config)?;
        let device = vb.device().clone();
        let unet = UNet2DModel::new(&unet_config, vb)?;
        Ok(Self {
            meta,
            unet_config,
            unet,
            device,
        })
    }

    /// ε̂(x_t, t | x̂) for images in [−1, 1] and one time per batch row.
    pub fn eps(&self, x_t: &Tensor, x_hat: &Tensor, t: &[f64]) -> Result<Tensor> {
        let labels: Vec<f32> = t.iter().map(|&t| (999.0 * t) as f32).collect();
        let n = labels.len();
        let labels = Tensor::from_vec(labels, n, &self.device)?;
        let input = Tensor::cat(&[x_t, x_hat], 1)?;
        self.unet.forward(&input, &labels).map_err(MhvaeError::from)
    }

    /// Refines VAE outputs `x_hat01` (N, C, S, S) in [0, 1] with `sampler` in `steps` network
    /// calls, down to t = 10⁻³; the result in [0, 1].
    pub fn refine(
        &self,
        x_hat01: &Tensor,
        sampler: RefinerSampler,
        steps: usize,
        noise: EmNoise<'_>,
    ) -> Result<Tensor> {
        let x_hat = x_hat01.affine(2.0, -1.0)?;
        let n = x_hat.dim(0)?;
        let sde = self.meta.sde;
        let f = self.meta.formulation;
        let eps = |x: &Tensor, t: f64| self.eps(x, &x_hat, &vec![t; n]);
        let end = match sampler {
            RefinerSampler::EulerMaruyama => {
                euler_maruyama(&sde, &x_hat, steps, 1e-3, noise, |x, t| {
                    // ε̂ made consistent with the clipped data prediction, as DDPM's
                    // clip_denoised: ε̂′ = (y − α·clip(ŷ₀))/σ.
                    let (a, sd) = (sde.mean_coeff(t), sde.std(t));
                    let y = (x - &x_hat)?;
                    let y0 = ((&y - (eps(x, t)? * sd)?)? * (1.0 / a))?;
                    let e = ((y - (f.clip_data(&y0, &x_hat)? * a)?)? * (1.0 / sd))?;
                    sde.score_from_eps(&e, t)
                })?
            }
            RefinerSampler::DpmSolver | RefinerSampler::DpmSolverSde => {
                let solver = DpmSolver {
                    steps,
                    t_end: 1e-3,
                    stochastic: sampler == RefinerSampler::DpmSolverSde,
                };
                solver.run(&sde, &x_hat, noise, eps, |d| f.clip_data(d, &x_hat))?
            }
        };
        let x = self.meta.formulation.finish(&end, &x_hat)?;
        Ok(((x + 1.0)? * 0.5)?.clamp(0.0, 1.0)?)
    }

    /// Writes `refiner.json` and `unet/`.
    pub fn save(
        dir: &Path,
        meta: &RefinerMeta,
        unet_config: &UNet2DConfig,
        weights: &HashMap<String, Tensor>,
    ) -> Result<()> {
        let io = |e: std::io::Error| MhvaeError::ModelFile {
            path: dir.to_path_buf(),
            message: e.to_string(),
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        segdiff_unet::save_unet(&dir.join(UNET_DIR), unet_config, weights).map_err(|e| {
            MhvaeError::ModelFile {
                path: dir.join(UNET_DIR),
                message: e.to_string(),
            }
        })?;
        let text = serde_json::to_string_pretty(meta).map_err(|e| MhvaeError::ModelFile {
            path: dir.join(REFINER_JSON),
            message: e.to_string(),
        })?;
        segdiff_io::write_bytes_atomic(&dir.join(REFINER_JSON), text.as_bytes()).map_err(io)
    }

    /// Reads a refiner folder.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let js = dir.join(REFINER_JSON);
        let text = std::fs::read_to_string(&js).map_err(|e| MhvaeError::ModelFile {
            path: js.clone(),
            message: format!("cannot read: {e}"),
        })?;
        let meta: RefinerMeta = serde_json::from_str(&text).map_err(|e| MhvaeError::ModelFile {
            path: js.clone(),
            message: format!("not a refiner config: {e}"),
        })?;
        if meta.format_version != FORMAT_VERSION {
            return Err(MhvaeError::ModelFile {
                path: js,
                message: format!(
                    "format_version {} (this build reads {FORMAT_VERSION})",
                    meta.format_version
                ),
            });
        }
        let loaded =
            segdiff_unet::load_unet(&dir.join(UNET_DIR), DType::F32, device).map_err(|e| {
                MhvaeError::ModelFile {
                    path: dir.join(UNET_DIR),
                    message: e.to_string(),
                }
            })?;
        check(&meta, &loaded.config)?;
        Ok(Self {
            meta,
            unet_config: loaded.config,
            unet: loaded.model,
            device: device.clone(),
        })
    }
}
