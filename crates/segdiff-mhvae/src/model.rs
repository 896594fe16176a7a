//! The multi-headed VAE (paper §3, Fig. 1): a conv encoder with two fully connected heads (style
//! z and position θ, each a diagonal Gaussian), a segmentation head that warps the reference disc
//! R with T_θ, and an image head that decodes z to a 32×32 feature map, warps its first half of
//! channels with the same T_θ, and upsamples to the image.
//!
//! Tensor names mirror the module tree (`encoder.blocks.0.conv.weight`, `decoder.fc.weight`, …);
//! a model folder is `mhvae.json` (the [`MhvaeConfig`] and a format version) and
//! `model.safetensors`.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Linear, VarBuilder, VarMap};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use segdiff_unet::cpu_kernels::GroupNorm;
use segdiff_unet::layers::{group_norm, Conv2d};
use serde::{Deserialize, Serialize};

use crate::config::{Backbone, MhvaeConfig, ThetaParam, WarpKind, FEATURE_SIZE};
use crate::edit::{edited_grid, mask_centroids, PositionEdit};
use crate::position::Position;
use crate::reference_mask::reference_disc_tensor;
use crate::resnet::ResNet50;
use crate::warp::{grid_sample, resize_bilinear};
use crate::{MhvaeError, Result};

/// File names of a model folder.
pub const CONFIG_FILE: &str = "mhvae.json";
pub const WEIGHTS_FILE: &str = "model.safetensors";
const FORMAT_VERSION: u32 = 1;

struct ConvBlock {
    conv: Conv2d,
    norm: GroupNorm,
}

impl ConvBlock {
    fn new(cin: usize, cout: usize, stride: usize, groups: usize, vb: VarBuilder) -> Result<Self> {
        // segdiff's fast CPU convolution and GroupNorm kernels (candle's ops on other devices).
        Ok(Self {
            conv: Conv2d::new(cin, cout, 3, stride, 1, vb.pp("conv"))?,
            norm: group_norm(groups, cout, 1e-5, vb.pp("norm"))?,
        })
    }

    fn forward(&self, x: &Tensor, slope: f64) -> Result<Tensor> {
        let h = self.norm.forward(&self.conv.forward(x)?)?;
        Ok(candle_nn::ops::leaky_relu(&h, slope)?)
    }
}

/// Linear → LeakyReLU → Linear giving (μ, log σ²) of a latent.
struct GaussianHead {
    hidden: Linear,
    out: Linear,
    dim: usize,
}

impl GaussianHead {
    fn new(input: usize, hidden: usize, dim: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            hidden: candle_nn::linear(input, hidden, vb.pp("hidden"))?,
            out: candle_nn::linear(hidden, 2 * dim, vb.pp("out"))?,
            dim,
        })
    }

    fn forward(&self, x: &Tensor, slope: f64) -> Result<(Tensor, Tensor)> {
        let h = candle_nn::ops::leaky_relu(&self.hidden.forward(x)?, slope)?;
        let o = self.out.forward(&h)?;
        Ok((
            o.narrow(1, 0, self.dim)?.contiguous()?,
            o.narrow(1, self.dim, self.dim)?.contiguous()?,
        ))
    }
}

/// T_θ as sampling grids at the image size (N, S, S, 2) and the feature size (N, 32, 32, 2).
#[derive(Debug, Clone)]
pub struct WarpGrids {
    pub image: Tensor,
    pub feature: Tensor,
}

/// The posterior of one image batch.
#[derive(Debug, Clone)]
pub struct Posterior {
    pub mu_z: Tensor,
    pub logvar_z: Tensor,
    /// `None` for the single-headed VAE.
    pub theta: Option<(Tensor, Tensor)>,
}

/// The encoder's trunk: image → feature vector.
enum Trunk {
    Small(Vec<ConvBlock>),
    Resnet50(Box<ResNet50>),
}

/// The multi-headed VAE.
pub struct Mhvae {
    config: MhvaeConfig,
    trunk: Trunk,
    z_head: GaussianHead,
    theta_head: Option<GaussianHead>,
    fc: Linear,
    up_blocks: Vec<ConvBlock>,
    out: Conv2d,
    position: Option<Position>,
    reference: Tensor,
    device: Device,
}

impl Mhvae {
    /// Builds the model on `vb` (names as in the module docs).
    pub fn new(config: &MhvaeConfig, vb: VarBuilder) -> Result<Self> {
        config.validate()?;
        let device = vb.device().clone();
        let (s, g) = (config.image_size, config.norm_groups);
        let enc_vb = vb.pp("encoder");
        let (trunk, flat) = match config.backbone {
            Backbone::Small => {
                let mut blocks = Vec::new();
                let mut cin = config.image_channels;
                for (i, &c) in config.encoder_channels.iter().enumerate() {
                    blocks.push(ConvBlock::new(cin, c, 2, g, enc_vb.pp("blocks").pp(i))?);
                    cin = c;
                }
                (Trunk::Small(blocks), cin * (s / 16) * (s / 16))
            }
            Backbone::Resnet50 => (
                Trunk::Resnet50(Box::new(ResNet50::new(
                    config.image_channels,
                    enc_vb.pp(RESNET_PREFIX),
                )?)),
                ResNet50::FEATURES,
            ),
        };
        let z_head = GaussianHead::new(flat, config.fc_hidden, config.z_dim, enc_vb.pp("z_head"))?;
        let theta_head = match config.warp {
            WarpKind::None => None,
            _ => Some(GaussianHead::new(
                flat,
                config.fc_hidden,
                config.theta_dim(),
                enc_vb.pp("theta_head"),
            )?),
        };
        let dec_vb = vb.pp("decoder");
        let c = config.feature_channels;
        let fc = candle_nn::linear(config.z_dim, c * 16, dec_vb.pp("fc"))?;
        // 4 → 32 (three doublings), then 32 → S.
        let doublings = 3 + (s / FEATURE_SIZE).trailing_zeros() as usize;
        let up_blocks = (0..doublings)
            .map(|i| ConvBlock::new(c, c, 1, g, dec_vb.pp("blocks").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        let out = Conv2d::new(c, config.image_channels, 3, 1, 1, dec_vb.pp("out"))?;
        let position = match config.warp {
            WarpKind::None => None,
            _ => Some(Position::new(config, &device)?),
        };
        let reference = reference_disc_tensor(s, s, config.soft_reference, &device)?;
        Ok(Self {
            config: config.clone(),
            trunk,
            z_head,
            theta_head,
            fc,
            up_blocks,
            out,
            position,
            reference,
            device,
        })
    }

    pub fn config(&self) -> &MhvaeConfig {
        &self.config
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The position head's warp, if the model has one.
    pub fn position(&self) -> Option<&Position> {
        self.position.as_ref()
    }

    /// q(z|x) and q(θ|x) for images x (N, C, S, S) in [0, 1].
    pub fn encode(&self, x: &Tensor) -> Result<Posterior> {
        let s = self.config.image_size;
        let dims = x.dims();
        if dims.len() != 4 || dims[1] != self.config.image_channels || dims[2] != s || dims[3] != s
        {
            return Err(MhvaeError::BadShape {
                what: "MHVAE input images",
                shape: dims.to_vec(),
                expected: format!("(N, {}, {s}, {s})", self.config.image_channels),
            });
        }
        let slope = self.config.leaky_slope;
        let h = match &self.trunk {
            Trunk::Small(blocks) => {
                // The small encoder sees images in [−1, 1].
                let mut h = x.affine(2.0, -1.0)?;
                for b in blocks {
                    h = b.forward(&h, slope)?;
                }
                h.flatten_from(1)?
            }
            // torchvision's ImageNet normalisation (grey repeated to RGB inside the trunk).
            Trunk::Resnet50(net) => net.forward(&imagenet_normalise(x)?)?,
        };
        let (mu_z, logvar_z) = self.z_head.forward(&h, slope)?;
        let theta = self
            .theta_head
            .as_ref()
            .map(|head| head.forward(&h, slope))
            .transpose()?;
        Ok(Posterior {
            mu_z,
            logvar_z,
            theta,
        })
    }

    /// T_θ's grids at the image size and at the feature size.
    pub fn grids(&self, theta: &Tensor) -> Result<WarpGrids> {
        let position = self.position.as_ref().ok_or_else(no_segmentation)?;
        Ok(WarpGrids {
            image: position.grid(theta, self.config.image_size)?,
            feature: position.grid(theta, FEATURE_SIZE)?,
        })
    }

    /// T_θ pre-composed with a position edit about each image's object centre (the centroid of
    /// its warped reference): see [`crate::edit`].
    pub fn edited_grids(&self, theta: &Tensor, edit: &PositionEdit) -> Result<WarpGrids> {
        let position = self.position.as_ref().ok_or_else(no_segmentation)?;
        let ac = self.config.align_corners;
        let centres = mask_centroids(&self.segment_soft(theta)?, ac)?;
        let grid = |size| edited_grid(position, theta, size, ac, edit, &centres);
        Ok(WarpGrids {
            image: grid(self.config.image_size)?,
            feature: grid(FEATURE_SIZE)?,
        })
    }

    /// The warped reference T_θ(R), (N, 1, S, S) in [0, 1].
    pub fn segment_soft(&self, theta: &Tensor) -> Result<Tensor> {
        let grid = self
            .position
            .as_ref()
            .ok_or_else(no_segmentation)?
            .grid(theta, self.config.image_size)?;
        self.warp_reference(&grid)
    }

    /// The reference warped by a grid (N, S, S, 2).
    pub fn warp_reference(&self, grid: &Tensor) -> Result<Tensor> {
        let n = grid.dim(0)?;
        let s = self.config.image_size;
        let r = self.reference.broadcast_as((n, 1, s, s))?.contiguous()?;
        grid_sample(&r, grid, self.config.align_corners)
    }

    /// 0/1 masks (N, 1, S, S) of θ: T_θ(R) at or above the threshold.
    pub fn segment(&self, theta: &Tensor) -> Result<Tensor> {
        self.threshold(&self.segment_soft(theta)?)
    }

    /// 0/1 masks from soft ones at the model's threshold.
    pub fn threshold(&self, soft: &Tensor) -> Result<Tensor> {
        Ok(soft.ge(self.config.mask_threshold)?.to_dtype(DType::F32)?)
    }

    /// The image head: x̂ (N, C, S, S) in [0, 1] from style z (N, z_dim) and position θ.
    pub fn decode(&self, z: &Tensor, theta: Option<&Tensor>) -> Result<Tensor> {
        let grids = theta.map(|t| self.grids(t)).transpose()?;
        self.decode_with(z, grids.as_ref())
    }

    /// The image head with explicit warp grids (`None`: no warp, the single-headed VAE).
    pub fn decode_with(&self, z: &Tensor, grids: Option<&WarpGrids>) -> Result<Tensor> {
        let slope = self.config.leaky_slope;
        let c = self.config.feature_channels;
        let n = z.dim(0)?;
        let mut h = candle_nn::ops::leaky_relu(&self.fc.forward(z)?.reshape((n, c, 4, 4))?, slope)?;
        let mut side = 4;
        for block in &self.up_blocks {
            side *= 2;
            h = block.forward(
                &resize_bilinear(&h, side, side, self.config.align_corners)?,
                slope,
            )?;
            if side == FEATURE_SIZE {
                if let Some(grids) = grids {
                    // The first half of the channels follows the object; the rest stays put.
                    let moved = grid_sample(
                        &h.narrow(1, 0, c / 2)?.contiguous()?,
                        &grids.feature,
                        self.config.align_corners,
                    )?;
                    h = Tensor::cat(&[&moved, &h.narrow(1, c / 2, c - c / 2)?], 1)?;
                }
            }
        }
        Ok(candle_nn::ops::sigmoid(&self.out.forward(&h)?)?)
    }

    /// Images x̂ from the posterior means (reconstruction without sampling).
    pub fn reconstruct(&self, x: &Tensor) -> Result<Tensor> {
        let p = self.encode(x)?;
        self.decode(&p.mu_z, p.theta.as_ref().map(|t| &t.0))
    }

    /// Writes the model folder (`mhvae.json`, `model.safetensors`), each file atomically.
    pub fn save(dir: &Path, config: &MhvaeConfig, weights: &HashMap<String, Tensor>) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| io(dir, "create", e))?;
        let meta = ModelFile {
            format_version: FORMAT_VERSION,
            model: "segdiff-mhvae".into(),
            config: config.clone(),
        };
        let text = serde_json::to_string_pretty(&meta).map_err(|e| MhvaeError::ModelFile {
            path: dir.join(CONFIG_FILE),
            message: e.to_string(),
        })?;
        let cpu: HashMap<String, Tensor> = weights
            .iter()
            .map(|(k, v)| Ok((k.clone(), v.to_device(&Device::Cpu)?.contiguous()?)))
            .collect::<Result<_>>()?;
        let st = dir.join(WEIGHTS_FILE);
        segdiff_unet::write_safetensors(&st, &cpu, None).map_err(|e| io(&st, "write", e))?;
        let js = dir.join(CONFIG_FILE);
        segdiff_io::write_bytes_atomic(&js, text.as_bytes()).map_err(|e| io(&js, "write", e))?;
        Ok(())
    }

    /// Reads a model folder written by [`Mhvae::save`].
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let (config, weights) = read_model_files(dir, device)?;
        let expected = parameter_shapes(&config)?;
        for (name, shape) in &expected {
            match weights.get(name) {
                None => {
                    return Err(MhvaeError::ModelFile {
                        path: dir.join(WEIGHTS_FILE),
                        message: format!("no tensor `{name}` (expected shape {shape:?})"),
                    })
                }
                Some(t) if t.dims() != shape.as_slice() => {
                    return Err(MhvaeError::ModelFile {
                        path: dir.join(WEIGHTS_FILE),
                        message: format!(
                            "`{name}` has shape {:?}, the config needs {shape:?}",
                            t.dims()
                        ),
                    })
                }
                Some(_) => {}
            }
        }
        let weights = weights
            .into_iter()
            .map(|(k, v)| Ok((k, v.to_dtype(DType::F32)?)))
            .collect::<Result<HashMap<_, _>>>()?;
        Self::new(
            &config,
            VarBuilder::from_tensors(weights, DType::F32, device),
        )
    }
}

/// Where the ResNet-50 trunk's tensors sit: `encoder.resnet.<torchvision name>`.
pub const RESNET_PREFIX: &str = "resnet";

/// (x − mean)/std with torchvision's ImageNet statistics, per channel (grey: the mean of the
/// three).
fn imagenet_normalise(x: &Tensor) -> Result<Tensor> {
    const MEAN: [f64; 3] = [0.485, 0.456, 0.406];
    const STD: [f64; 3] = [0.229, 0.224, 0.225];
    let c = x.dim(1)?;
    if c == 1 {
        let (m, s) = (
            MEAN.iter().sum::<f64>() / 3.0,
            STD.iter().sum::<f64>() / 3.0,
        );
        return Ok(x.affine(1.0 / s, -m / s)?);
    }
    let parts = (0..c)
        .map(|i| {
            x.narrow(1, i, 1)?
                .affine(1.0 / STD[i % 3], -MEAN[i % 3] / STD[i % 3])
        })
        .collect::<candle_core::Result<Vec<_>>>()?;
    Ok(Tensor::cat(&parts, 1)?)
}

/// Replaces the ResNet-50 trunk's tensors of `weights` by those of a torchvision / timm
/// state dict (safetensors; `fc.*` and `num_batches_tracked` ignored), e.g. ImageNet weights.
/// Every trunk tensor must be present with its shape; the error names the first that is not.
pub fn load_backbone_weights(
    weights: &mut HashMap<String, Tensor>,
    file: &Path,
    device: &Device,
) -> Result<usize> {
    let loaded = segdiff_io::catch_panic(|| candle_core::safetensors::load(file, device))
        .map_err(|p| MhvaeError::ModelFile {
            path: file.to_path_buf(),
            message: format!("the reader panicked: {p}"),
        })?
        .map_err(|e| MhvaeError::ModelFile {
            path: file.to_path_buf(),
            message: e.to_string(),
        })?;
    let shapes = crate::resnet::resnet50_parameter_shapes();
    for (name, shape) in &shapes {
        let t = loaded.get(name).ok_or_else(|| MhvaeError::ModelFile {
            path: file.to_path_buf(),
            message: format!("no tensor `{name}` (a torchvision ResNet-50 state dict is expected)"),
        })?;
        if t.dims() != shape.as_slice() {
            return Err(MhvaeError::ModelFile {
                path: file.to_path_buf(),
                message: format!(
                    "`{name}` has shape {:?}, ResNet-50 needs {shape:?}",
                    t.dims()
                ),
            });
        }
        weights.insert(
            format!("encoder.{RESNET_PREFIX}.{name}"),
            t.to_dtype(DType::F32)?,
        );
    }
    Ok(shapes.len())
}

/// `mhvae.json`.
#[derive(Debug, Serialize, Deserialize)]
struct ModelFile {
    format_version: u32,
    model: String,
    config: MhvaeConfig,
}

/// The config and raw tensors of a model folder.
pub fn read_model_files(
    dir: &Path,
    device: &Device,
) -> Result<(MhvaeConfig, HashMap<String, Tensor>)> {
    let js = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&js).map_err(|e| io(&js, "read", e))?;
    let meta: ModelFile = serde_json::from_str(&text).map_err(|e| MhvaeError::ModelFile {
        path: js.clone(),
        message: format!("not an MHVAE config: {e}"),
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
    meta.config.validate().map_err(|e| MhvaeError::ModelFile {
        path: js.clone(),
        message: e.to_string(),
    })?;
    let st = dir.join(WEIGHTS_FILE);
    let weights = segdiff_io::catch_panic(|| candle_core::safetensors::load(&st, device))
        .map_err(|p| MhvaeError::ModelFile {
            path: st.clone(),
            message: format!("the reader panicked: {p}"),
        })?
        .map_err(|e| MhvaeError::ModelFile {
            path: st.clone(),
            message: e.to_string(),
        })?;
    Ok((meta.config, weights))
}

/// Every parameter's name and shape for `config`, sorted by name.
pub fn parameter_shapes(config: &MhvaeConfig) -> Result<Vec<(String, Vec<usize>)>> {
    let varmap = VarMap::new();
    Mhvae::new(
        config,
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
    )?;
    let data = varmap
        .data()
        .lock()
        .map_err(|_| MhvaeError::InvalidArgument {
            name: "variable map",
            value: String::new(),
            reason: "lock poisoned".into(),
        })?;
    let mut out: Vec<(String, Vec<usize>)> = data
        .iter()
        .map(|(k, v)| (k.clone(), v.dims().to_vec()))
        .collect();
    out.sort();
    Ok(out)
}

/// Fresh weights drawn from `seed` in name order, as PyTorch initialises conv and linear layers
/// (uniform ±1/√fan_in for weights and biases; GroupNorm weight 1, bias 0), except the θ head's
/// output: μ_θ starts at the identity warp (zero weights) and log σ²_θ at `theta_logvar_init`.
pub fn seeded_init(
    config: &MhvaeConfig,
    seed: u64,
    device: &Device,
) -> Result<HashMap<String, Tensor>> {
    let shapes = parameter_shapes(config)?;
    let lookup: HashMap<&str, &Vec<usize>> = shapes.iter().map(|(n, s)| (n.as_str(), s)).collect();
    let mut rng = StdRng::seed_from_u64(seed);
    let theta_dim = config.theta_dim();
    let mut out = HashMap::new();
    let resnet = format!("encoder.{RESNET_PREFIX}.");
    for (name, shape) in &shapes {
        let n: usize = shape.iter().product();
        if let Some(inner) = name.strip_prefix(&resnet) {
            out.insert(name.clone(), resnet_init(inner, shape, &mut rng, device)?);
            continue;
        }
        let mut values: Vec<f32> = if name.contains(".norm.") {
            vec![if name.ends_with(".weight") { 1.0 } else { 0.0 }; n]
        } else {
            let weight = name.strip_suffix(".bias").map(|p| format!("{p}.weight"));
            let wshape = weight
                .as_deref()
                .and_then(|w| lookup.get(w).copied())
                .unwrap_or(shape);
            let fan_in: usize = wshape.iter().skip(1).product::<usize>().max(1);
            let bound = 1.0 / (fan_in as f32).sqrt();
            (0..n).map(|_| rng.random_range(-bound..bound)).collect()
        };
        if name.starts_with("encoder.theta_head.out.") {
            let per_row = if name.ends_with(".weight") {
                shape[1]
            } else {
                1
            };
            for (row, chunk) in values.chunks_mut(per_row).enumerate() {
                if row < theta_dim {
                    chunk.fill(0.0);
                } else if name.ends_with(".bias") {
                    chunk.fill(config.theta_logvar_init as f32);
                }
            }
        }
        out.insert(
            name.clone(),
            Tensor::from_vec(values, shape.clone(), device)?,
        );
    }
    if config.theta_param == ThetaParam::Absolute && config.warp != WarpKind::None {
        // μ_θ's bias is the identity's parameters, so that the start is the reference disc.
        let position = Position::new(config, device)?;
        let identity = position.identity_theta()?.flatten_all()?;
        let bias =
            out.get("encoder.theta_head.out.bias")
                .ok_or_else(|| MhvaeError::InvalidArgument {
                    name: "theta head",
                    value: String::new(),
                    reason: "missing bias".into(),
                })?;
        let rest = bias.narrow(0, theta_dim, theta_dim)?;
        let bias = Tensor::cat(&[&identity, &rest], 0)?;
        out.insert("encoder.theta_head.out.bias".into(), bias);
    }
    Ok(out)
}

/// torchvision's ResNet initialisation, drawn from `rng`: convolutions Kaiming-normal (fan_out,
/// ReLU gain), BatchNorm weight 1 (0 for each Bottleneck's last, `zero_init_residual`), bias 0,
/// running mean 0, running variance 1.
fn resnet_init(name: &str, shape: &[usize], rng: &mut StdRng, device: &Device) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let constant = |v: f32| Tensor::from_vec(vec![v; n], shape, device);
    let t = if name.ends_with("running_var") {
        constant(1.0)?
    } else if name.ends_with("running_mean") || (name.ends_with(".bias") && shape.len() == 1) {
        constant(0.0)?
    } else if shape.len() == 1 {
        // A BatchNorm weight.
        constant(if name.ends_with("bn3.weight") {
            0.0
        } else {
            1.0
        })?
    } else {
        let fan_out: usize = shape[0] * shape[2..].iter().product::<usize>();
        let std = (2.0 / fan_out as f64).sqrt();
        let normal =
            rand_distr::Normal::new(0.0, std).map_err(|e| MhvaeError::InvalidArgument {
                name: "init",
                value: std.to_string(),
                reason: e.to_string(),
            })?;
        let v: Vec<f32> = (0..n)
            .map(|_| rand_distr::Distribution::sample(&normal, rng) as f32)
            .collect();
        Tensor::from_vec(v, shape, device)?
    };
    Ok(t)
}

/// Reparameterised draw μ + e^{½ logvar}·ε with ε from `rng`.
pub fn sample_gaussian(mu: &Tensor, logvar: &Tensor, rng: &mut StdRng) -> Result<Tensor> {
    let eps = segdiff_diffusion::random::randn(rng, mu.dims(), mu.dtype(), mu.device())?;
    Ok((mu + (logvar * 0.5)?.exp()?.mul(&eps)?)?)
}

fn no_segmentation() -> MhvaeError {
    MhvaeError::InvalidArgument {
        name: "warp",
        value: "none".into(),
        reason: "the single-headed VAE (warp none) has no segmentation head".into(),
    }
}

fn io(path: &Path, what: &str, e: std::io::Error) -> MhvaeError {
    MhvaeError::ModelFile {
        path: path.to_path_buf(),
        message: format!("cannot {what}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference_mask::reference_disc;
    use crate::trainer::mhvae_loss;

    /// RGB images and both warps: shapes through encode → segment → decode, a finite loss with
    /// gradients, and a save/load round trip with identical outputs.
    #[test]
    fn rgb_models_run_and_round_trip() {
        let dev = Device::Cpu;
        for warp in [WarpKind::Affine, WarpKind::Tps, WarpKind::None] {
            let config = MhvaeConfig {
                image_size: 32,
                image_channels: 3,
                warp,
                ..MhvaeConfig::default()
            };
            let weights = seeded_init(&config, 4, &dev).unwrap();
            let model = Mhvae::new(
                &config,
                VarBuilder::from_tensors(weights.clone(), DType::F32, &dev),
            )
            .unwrap();
            let x = (Tensor::arange(0f32, (2 * 3 * 32 * 32) as f32, &dev)
                .unwrap()
                .reshape((2, 3, 32, 32))
                .unwrap()
                / (2.0 * 3.0 * 32.0 * 32.0))
                .unwrap();
            let post = model.encode(&x).unwrap();
            assert_eq!(post.mu_z.dims(), &[2, 16]);
            let recon = model.reconstruct(&x).unwrap();
            assert_eq!(recon.dims(), &[2, 3, 32, 32]);
            let y = Tensor::zeros((2, 1, 32, 32), DType::F32, &dev).unwrap();
            let mut rng = StdRng::seed_from_u64(0);
            let loss = mhvae_loss(&model, &x, &y, &mut rng).unwrap();
            let v = loss.total.to_scalar::<f32>().unwrap();
            assert!(v.is_finite(), "{warp}: {v}");
            match &post.theta {
                Some((mu, _)) => {
                    assert_eq!(mu.dims(), &[2, config.theta_dim()]);
                    // θ starts at the identity: the mask is the reference disc.
                    let m = model
                        .segment(mu)
                        .unwrap()
                        .sum_all()
                        .unwrap()
                        .to_scalar::<f32>()
                        .unwrap();
                    let disc: f32 = reference_disc(32, 32, true)
                        .iter()
                        .filter(|&&v| v >= 0.5)
                        .count() as f32;
                    assert_eq!(m, 2.0 * disc, "{warp}");
                }
                None => assert!(model
                    .segment(&Tensor::zeros((2, 6), DType::F32, &dev).unwrap())
                    .is_err()),
            }
            let dir = std::env::temp_dir().join(format!("mhvae-rgb-{warp}-{}", std::process::id()));
            Mhvae::save(&dir, &config, &weights).unwrap();
            let loaded = Mhvae::load(&dir, &dev).unwrap();
            let a = loaded
                .reconstruct(&x)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let b = recon.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert_eq!(a, b);
            std::fs::remove_dir_all(&dir).ok();
        }
    }

    #[test]
    fn a_model_folder_with_a_wrong_tensor_is_refused_naming_it() {
        let dev = Device::Cpu;
        let config = MhvaeConfig {
            image_size: 32,
            ..MhvaeConfig::default()
        };
        let mut weights = seeded_init(&config, 0, &dev).unwrap();
        weights.insert(
            "decoder.fc.weight".into(),
            Tensor::zeros((3, 3), DType::F32, &dev).unwrap(),
        );
        let dir = std::env::temp_dir().join(format!("mhvae-bad-{}", std::process::id()));
        Mhvae::save(&dir, &config, &weights).unwrap();
        let err = Mhvae::load(&dir, &dev).err().unwrap().to_string();
        assert!(
            err.contains("decoder.fc.weight") && err.contains("model.safetensors"),
            "{err}"
        );
        std::fs::write(dir.join(CONFIG_FILE), "{\"format_version\": 1}").unwrap();
        let err = Mhvae::load(&dir, &dev).err().unwrap().to_string();
        assert!(err.contains("mhvae.json"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
