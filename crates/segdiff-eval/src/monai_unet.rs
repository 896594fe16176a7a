//! MONAI `UNet` (2-D) in candle: the segmenter that scores how faithfully generated images follow
//! their masks, and whose bottleneck features feed FID.
//!
//! Mirrors `monai.networks.nets.UNet` with `Convolution`/`ResidualUnit` blocks: each level is
//! `Sequential(down, SkipConnection(sub), up)`, so weights live under `model.0` (down),
//! `model.1.submodule…` (the next level, or the bottom layer) and `model.2` (up). A `Convolution`
//! is `conv` + `adn` with ADN ordering "NDA": InstanceNorm (no affine, eps 1e-5), Dropout (p = 0),
//! PReLU with one shared slope (`adn.A.weight`). Down convs have stride `strides[i]` and
//! padding `(k−1)/2`; up convs are `ConvTranspose2d` (weights `[in, out, k, k]`) with
//! `output_padding = stride − 1`; the skip concat is `[down output, sub-block output]`. With
//! `num_res_units = 0` the top up-conv is conv-only; otherwise every up layer is
//! `Sequential(up-conv, ResidualUnit(1 subunit))` and the top one's last conv is conv-only.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Conv2dConfig, ConvTranspose2dConfig, VarBuilder, VarMap};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use segdiff_unet::cpu_kernels;
use serde::{Deserialize, Serialize};

use crate::error::{EvalError, Result};
use crate::label_maps::LabelMaps;

/// PyTorch `InstanceNorm2d` default eps.
const INSTANCE_NORM_EPS: f64 = 1e-5;
/// PyTorch `PReLU` initial slope.
const PRELU_INIT: f64 = 0.25;

/// `UNet(...)` arguments, named as MONAI names them, with MONAI's defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MonaiUNetConfig {
    /// Only 2 is supported.
    #[serde(default = "default_spatial_dims")]
    pub spatial_dims: usize,
    pub in_channels: usize,
    pub out_channels: usize,
    /// Channels per level, top first; the last one is the bottom layer.
    pub channels: Vec<usize>,
    /// One stride per down level: `len(channels) − 1` entries.
    pub strides: Vec<usize>,
    #[serde(default = "default_kernel_size")]
    pub kernel_size: usize,
    #[serde(default = "default_kernel_size")]
    pub up_kernel_size: usize,
    #[serde(default)]
    pub num_res_units: usize,
    /// Only "PRELU" (one shared slope).
    #[serde(default = "default_act")]
    pub act: String,
    /// Only "INSTANCE" (no affine).
    #[serde(default = "default_norm")]
    pub norm: String,
    /// Only 0.
    #[serde(default)]
    pub dropout: f64,
    #[serde(default = "default_bias")]
    pub bias: bool,
    /// Only "NDA".
    #[serde(default = "default_adn_ordering")]
    pub adn_ordering: String,
}

fn default_spatial_dims() -> usize {
    2
}
fn default_kernel_size() -> usize {
    3
}
fn default_act() -> String {
    "PRELU".into()
}
fn default_norm() -> String {
    "INSTANCE".into()
}
fn default_bias() -> bool {
    true
}
fn default_adn_ordering() -> String {
    "NDA".into()
}

impl MonaiUNetConfig {
    /// A 2-D UNet with MONAI's defaults for everything but the listed arguments.
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        channels: Vec<usize>,
        strides: Vec<usize>,
        num_res_units: usize,
    ) -> Self {
        Self {
            spatial_dims: 2,
            in_channels,
            out_channels,
            channels,
            strides,
            kernel_size: 3,
            up_kernel_size: 3,
            num_res_units,
            act: default_act(),
            norm: default_norm(),
            dropout: 0.0,
            bias: true,
            adn_ordering: default_adn_ordering(),
        }
    }

    /// Reads and validates a JSON config.
    pub fn from_json_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| EvalError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let cfg: Self = serde_json::from_str(&text).map_err(|source| EvalError::Json {
            path: path.to_path_buf(),
            source,
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Rejects values this implementation does not reproduce, naming the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &'static str, value: String, reason: &str| {
            Err(EvalError::UnsupportedConfig {
                field,
                value,
                reason: reason.to_string(),
            })
        };
        if self.spatial_dims != 2 {
            return bad("spatial_dims", self.spatial_dims.to_string(), "only 2-D");
        }
        if self.in_channels == 0 || self.out_channels == 0 {
            return bad(
                "in_channels/out_channels",
                format!("{}/{}", self.in_channels, self.out_channels),
                "must be positive",
            );
        }
        if self.channels.len() < 2 || self.channels.contains(&0) {
            return bad(
                "channels",
                format!("{:?}", self.channels),
                "needs at least two positive entries",
            );
        }
        if self.strides.len() != self.channels.len() - 1 || self.strides.contains(&0) {
            return bad(
                "strides",
                format!("{:?}", self.strides),
                "needs len(channels) - 1 positive entries",
            );
        }
        for (field, k) in [
            ("kernel_size", self.kernel_size),
            ("up_kernel_size", self.up_kernel_size),
        ] {
            if k % 2 == 0 {
                return bad(
                    field,
                    k.to_string(),
                    "MONAI same-padding needs an odd kernel",
                );
            }
        }
        if !self.act.eq_ignore_ascii_case("prelu") {
            return bad("act", self.act.clone(), "only PRELU");
        }
        if !self.norm.eq_ignore_ascii_case("instance") {
            return bad("norm", self.norm.clone(), "only INSTANCE");
        }
        if self.dropout != 0.0 {
            return bad("dropout", self.dropout.to_string(), "only 0");
        }
        if self.adn_ordering != "NDA" {
            return bad("adn_ordering", self.adn_ordering.clone(), "only NDA");
        }
        Ok(())
    }

    /// Product of the strides: input height and width must be multiples of it.
    pub fn downsampling_factor(&self) -> usize {
        self.strides.iter().product()
    }
}

/// Instance normalisation without affine parameters (biased variance): GroupNorm with one
/// group per channel, on segdiff's fused CPU kernel (candle's ops elsewhere). With
/// `prelu_slope`, followed by that PReLU in the same pass, without gradients (inference).
fn instance_norm(x: &Tensor, prelu_slope: Option<f64>) -> candle_core::Result<Tensor> {
    let c = x.dim(1)?;
    let ones = Tensor::ones(c, x.dtype(), x.device())?;
    let zeros = Tensor::zeros(c, x.dtype(), x.device())?;
    match prelu_slope {
        None => cpu_kernels::group_norm(x, &ones, &zeros, c, INSTANCE_NORM_EPS, false),
        Some(slope) => {
            cpu_kernels::group_norm_prelu_inference(x, &ones, &zeros, c, INSTANCE_NORM_EPS, slope)
        }
    }
}

/// `PReLU(x) = max(0, x) + a·min(0, x)` with one slope, from ops that all have gradients: the
/// training path. (A stand-alone single-pass PReLU op was slower than these: its fresh output
/// was faulted in while candle's thread pool spun. Inference folds PReLU into the norm's output
/// pass instead, see [`Adn::forward`].)
fn prelu(x: &Tensor, slope: &Tensor) -> candle_core::Result<Tensor> {
    let pos = x.relu()?;
    let neg = (x - &pos)?;
    pos + neg.broadcast_mul(slope)?
}

/// MONAI `ADN` with ordering "NDA": InstanceNorm, Dropout(0), PReLU.
#[derive(Debug, Clone)]
struct Adn {
    slope: Tensor,
}

impl Adn {
    fn new(vb: VarBuilder) -> candle_core::Result<Self> {
        let slope = vb
            .pp("A")
            .get_with_hints(1, "weight", candle_nn::Init::Const(PRELU_INIT))?;
        Ok(Self { slope })
    }

    /// Without gradients (inference: loaded weights, untracked input) the norm and PReLU run
    /// as one pass of the fused kernel, with the same values; PReLU as four candle ops was
    /// about a third of a segmenter forward.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if !x.track_op() && !self.slope.track_op() {
            let slope = self
                .slope
                .flatten_all()?
                .to_dtype(DType::F64)?
                .to_vec1::<f64>()?;
            return instance_norm(x, Some(slope.first().copied().unwrap_or(PRELU_INIT)));
        }
        prelu(&instance_norm(x, None)?, &self.slope)
    }
}

/// A (transposed) convolution's parameters, run on segdiff's CPU kernels (candle's ops on other
/// devices). The layers are created by candle-nn, so names and initialisation are candle-nn's.
#[derive(Debug, Clone)]
struct ConvOp {
    weight: Tensor,
    bias: Option<Tensor>,
    stride: usize,
    padding: usize,
    /// `Some(output_padding)` for a transposed convolution.
    transposed: Option<usize>,
}

impl ConvOp {
    fn conv(c: candle_nn::Conv2d, stride: usize, padding: usize) -> Self {
        Self {
            weight: c.weight().clone(),
            bias: c.bias().cloned(),
            stride,
            padding,
            transposed: None,
        }
    }

    /// A transposed convolution with `output_padding = stride − 1` (MONAI's up-sampling).
    fn transposed(c: candle_nn::ConvTranspose2d, stride: usize, padding: usize) -> Self {
        Self {
            weight: c.weight().clone(),
            bias: c.bias().cloned(),
            stride,
            padding,
            transposed: Some(stride - 1),
        }
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let b = self.bias.as_ref();
        match self.transposed {
            None => cpu_kernels::conv2d(x, &self.weight, b, self.stride, self.padding),
            Some(op) => {
                cpu_kernels::conv_transpose2d(x, &self.weight, b, self.stride, self.padding, op)
            }
        }
    }
}

/// MONAI `Convolution`: a (transposed) conv, then ADN unless conv-only.
#[derive(Debug, Clone)]
struct Convolution {
    conv: ConvOp,
    adn: Option<Adn>,
}

struct ConvSpec {
    in_ch: usize,
    out_ch: usize,
    kernel: usize,
    stride: usize,
    transposed: bool,
    conv_only: bool,
    bias: bool,
}

impl Convolution {
    fn new(s: ConvSpec, vb: VarBuilder) -> candle_core::Result<Self> {
        let padding = (s.kernel - 1) / 2;
        let conv = if s.transposed {
            let cfg = ConvTranspose2dConfig {
                padding,
                output_padding: s.stride - 1,
                stride: s.stride,
                dilation: 1,
            };
            let vbc = vb.pp("conv");
            let layer = if s.bias {
                candle_nn::conv_transpose2d(s.in_ch, s.out_ch, s.kernel, cfg, vbc)?
            } else {
                candle_nn::conv_transpose2d_no_bias(s.in_ch, s.out_ch, s.kernel, cfg, vbc)?
            };
            ConvOp::transposed(layer, s.stride, padding)
        } else {
            conv2d(
                s.in_ch,
                s.out_ch,
                s.kernel,
                padding,
                s.stride,
                s.bias,
                vb.pp("conv"),
            )?
        };
        let adn = if s.conv_only {
            None
        } else {
            Some(Adn::new(vb.pp("adn"))?)
        };
        Ok(Self { conv, adn })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let y = self.conv.forward(x)?;
        match &self.adn {
            Some(adn) => adn.forward(&y),
            None => Ok(y),
        }
    }
}

fn conv2d(
    in_ch: usize,
    out_ch: usize,
    kernel: usize,
    padding: usize,
    stride: usize,
    bias: bool,
    vb: VarBuilder,
) -> candle_core::Result<ConvOp> {
    let cfg = Conv2dConfig {
        padding,
        stride,
        ..Default::default()
    };
    let layer = if bias {
        candle_nn::conv2d(in_ch, out_ch, kernel, cfg, vb)?
    } else {
        candle_nn::conv2d_no_bias(in_ch, out_ch, kernel, cfg, vb)?
    };
    Ok(ConvOp::conv(layer, stride, padding))
}

/// MONAI `ResidualUnit`: `subunits` Convolutions under `conv.unit{i}` plus a residual that is
/// the identity, or a conv (`kernel` with stride when strided, 1×1 when only channels change).
#[derive(Debug, Clone)]
struct ResidualUnit {
    units: Vec<Convolution>,
    residual: Option<ConvOp>,
}

struct ResidualSpec {
    in_ch: usize,
    out_ch: usize,
    stride: usize,
    kernel: usize,
    subunits: usize,
    last_conv_only: bool,
    bias: bool,
}

impl ResidualUnit {
    fn new(s: ResidualSpec, vb: VarBuilder) -> candle_core::Result<Self> {
        let subunits = s.subunits.max(1);
        let units = (0..subunits)
            .map(|i| {
                Convolution::new(
                    ConvSpec {
                        in_ch: if i == 0 { s.in_ch } else { s.out_ch },
                        out_ch: s.out_ch,
                        kernel: s.kernel,
                        stride: if i == 0 { s.stride } else { 1 },
                        transposed: false,
                        conv_only: s.last_conv_only && i + 1 == subunits,
                        bias: s.bias,
                    },
                    vb.pp("conv").pp(format!("unit{i}")),
                )
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let residual = if s.stride != 1 || s.in_ch != s.out_ch {
            let (k, pad) = if s.stride == 1 {
                (1, 0)
            } else {
                (s.kernel, (s.kernel - 1) / 2)
            };
            Some(conv2d(
                s.in_ch,
                s.out_ch,
                k,
                pad,
                s.stride,
                s.bias,
                vb.pp("residual"),
            )?)
        } else {
            None
        };
        Ok(Self { units, residual })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let res = match &self.residual {
            Some(conv) => conv.forward(x)?,
            None => x.clone(),
        };
        let mut y = x.clone();
        for unit in &self.units {
            y = unit.forward(&y)?;
        }
        y + res
    }
}

/// A down or bottom layer: a Convolution without residual units, a ResidualUnit with them.
#[derive(Debug, Clone)]
enum EncoderLayer {
    Plain(Convolution),
    Residual(ResidualUnit),
}

impl EncoderLayer {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Self::Plain(c) => c.forward(x),
            Self::Residual(r) => r.forward(x),
        }
    }
}

/// An up layer: the transposed Convolution, followed by a ResidualUnit when `num_res_units > 0`.
#[derive(Debug, Clone)]
struct DecoderLayer {
    up: Convolution,
    refine: Option<ResidualUnit>,
}

impl DecoderLayer {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let y = self.up.forward(x)?;
        match &self.refine {
            Some(r) => r.forward(&y),
            None => Ok(y),
        }
    }
}

#[derive(Debug, Clone)]
struct Level {
    down: EncoderLayer,
    up: DecoderLayer,
}

/// MONAI `UNet` for 2-D inputs `(N, in_channels, H, W)` → logits `(N, out_channels, H, W)`.
#[derive(Debug, Clone)]
pub struct MonaiUNet {
    levels: Vec<Level>,
    bottom: EncoderLayer,
    config: MonaiUNetConfig,
}

impl MonaiUNet {
    /// Builds the network, reading (or, from a `VarMap`, creating) weights under the PyTorch
    /// state-dict names.
    pub fn new(config: &MonaiUNetConfig, vb: VarBuilder) -> Result<Self> {
        config.validate()?;
        let cfg = config;
        let n_levels = cfg.channels.len() - 1;
        let encoder = |in_ch: usize, out_ch: usize, stride: usize, vb: VarBuilder| {
            if cfg.num_res_units > 0 {
                ResidualUnit::new(
                    ResidualSpec {
                        in_ch,
                        out_ch,
                        stride,
                        kernel: cfg.kernel_size,
                        subunits: cfg.num_res_units,
                        last_conv_only: false,
                        bias: cfg.bias,
                    },
                    vb,
                )
                .map(EncoderLayer::Residual)
            } else {
                Convolution::new(
                    ConvSpec {
                        in_ch,
                        out_ch,
                        kernel: cfg.kernel_size,
                        stride,
                        transposed: false,
                        conv_only: false,
                        bias: cfg.bias,
                    },
                    vb,
                )
                .map(EncoderLayer::Plain)
            }
        };
        let mut levels = Vec::with_capacity(n_levels);
        let mut level_vb = vb.pp("model");
        for i in 0..n_levels {
            let is_top = i == 0;
            let (inc, outc) = if is_top {
                (cfg.in_channels, cfg.out_channels)
            } else {
                (cfg.channels[i - 1], cfg.channels[i - 1])
            };
            let c = cfg.channels[i];
            let stride = cfg.strides[i];
            // The sub-block returns c channels (an inner level's up layer) or the bottom's.
            let upc = if i + 1 < n_levels {
                2 * c
            } else {
                c + cfg.channels[n_levels]
            };
            let down = encoder(inc, c, stride, level_vb.pp("0"))?;
            let up_vb = level_vb.pp("2");
            let up = if cfg.num_res_units > 0 {
                DecoderLayer {
                    up: Convolution::new(up_spec(upc, outc, stride, cfg, false), up_vb.pp("0"))?,
                    refine: Some(ResidualUnit::new(
                        ResidualSpec {
                            in_ch: outc,
                            out_ch: outc,
                            stride: 1,
                            kernel: cfg.kernel_size,
                            subunits: 1,
                            last_conv_only: is_top,
                            bias: cfg.bias,
                        },
                        up_vb.pp("1"),
                    )?),
                }
            } else {
                DecoderLayer {
                    up: Convolution::new(up_spec(upc, outc, stride, cfg, is_top), up_vb)?,
                    refine: None,
                }
            };
            levels.push(Level { down, up });
            level_vb = level_vb.pp("1").pp("submodule");
        }
        let bottom = encoder(
            cfg.channels[n_levels - 1],
            cfg.channels[n_levels],
            1,
            level_vb,
        )?;
        Ok(Self {
            levels,
            bottom,
            config: config.clone(),
        })
    }

    /// Loads weights from a PyTorch-named safetensors file (e.g. a converted `state_dict`).
    pub fn load(config: &MonaiUNetConfig, weights: &Path, device: &Device) -> Result<Self> {
        let tensors: HashMap<String, Tensor> = candle_core::safetensors::load(weights, device)
            .map_err(|source| EvalError::Weights {
                path: weights.to_path_buf(),
                source,
            })?;
        let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
        Self::new(config, vb).map_err(|e| match e {
            EvalError::Candle(source) => EvalError::Weights {
                path: weights.to_path_buf(),
                source,
            },
            other => other,
        })
    }

    /// The configuration the network was built from.
    pub fn config(&self) -> &MonaiUNetConfig {
        &self.config
    }

    /// Length of the [`encode_features`](Self::encode_features) vectors: `channels.last()`.
    pub fn feature_dim(&self) -> usize {
        self.config.channels[self.config.channels.len() - 1]
    }

    fn check_input(&self, x: &Tensor) -> candle_core::Result<()> {
        let (_, c, h, w) = x.dims4()?;
        let f = self.config.downsampling_factor();
        if c != self.config.in_channels || h % f != 0 || w % f != 0 {
            candle_core::bail!(
                "MONAI UNet input {:?}: needs {} channels and H, W multiples of {f}",
                x.dims(),
                self.config.in_channels
            );
        }
        Ok(())
    }

    /// Global-average-pooled bottom-layer activations `(N, channels.last())`: the FID features.
    pub fn encode_features(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.check_input(x)?;
        let mut h = x.clone();
        for level in &self.levels {
            h = level.down.forward(&h)?;
        }
        self.bottom.forward(&h)?.mean((2, 3))
    }

    /// Hard segmentation: argmax of the logits over classes.
    pub fn segment(&self, x: &Tensor) -> Result<LabelMaps> {
        LabelMaps::from_logits(&self.forward(x)?)
    }
}

fn up_spec(
    upc: usize,
    outc: usize,
    stride: usize,
    cfg: &MonaiUNetConfig,
    conv_only: bool,
) -> ConvSpec {
    ConvSpec {
        in_ch: upc,
        out_ch: outc,
        kernel: cfg.up_kernel_size,
        stride,
        transposed: true,
        conv_only,
        bias: cfg.bias,
    }
}

impl Module for MonaiUNet {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.check_input(x)?;
        let mut skips = Vec::with_capacity(self.levels.len());
        let mut h = x.clone();
        for level in &self.levels {
            h = level.down.forward(&h)?;
            skips.push(h.clone());
        }
        h = self.bottom.forward(&h)?;
        for (level, skip) in self.levels.iter().zip(skips).rev() {
            // MONAI SkipConnection: cat([x, submodule(x)], dim=1).
            h = level.up.forward(&Tensor::cat(&[&skip, &h], 1)?)?;
        }
        Ok(h)
    }
}

/// Overwrites every variable of `varmap` as PyTorch initialises a fresh MONAI UNet, drawing from
/// `StdRng::seed_from_u64(seed)` in sorted-name order: conv weights (and their biases)
/// `U(±1/√fan_in)` with `fan_in = weight.shape[1]·k·k` (kaiming-uniform with a = √5, also for
/// transposed weights as torch computes it), PReLU slopes 0.25.
pub fn init_weights_seeded(varmap: &VarMap, seed: u64) -> Result<()> {
    let data = crate::var_store::lock_vars(varmap)?;
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    let fan_in = |weight: &str| -> Option<usize> {
        let dims = data.get(weight)?.as_tensor().dims().to_vec();
        (dims.len() == 4).then(|| dims[1] * dims[2] * dims[3])
    };
    let mut rng = StdRng::seed_from_u64(seed);
    for name in names {
        let var = &data[name];
        let shape = var.as_tensor().shape().clone();
        let n = shape.elem_count();
        let values: Vec<f64> = if name.ends_with("adn.A.weight") {
            vec![PRELU_INIT; n]
        } else {
            let fan = if let Some(stem) = name.strip_suffix(".bias") {
                fan_in(&format!("{stem}.weight"))
            } else {
                fan_in(name)
            };
            let Some(fan) = fan else {
                return Err(EvalError::InvalidArgument {
                    name: "varmap variable",
                    value: name.clone(),
                    reason: "no MONAI UNet init rule for it",
                });
            };
            let bound = 1.0 / (fan as f64).sqrt();
            (0..n)
                .map(|_| bound * (2.0 * rng.random::<f64>() - 1.0))
                .collect()
        };
        let t = Tensor::from_vec(values, shape, var.as_tensor().device())?
            .to_dtype(var.as_tensor().dtype())?;
        var.set(&t)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradient_check::{check_gradients, GradCase};

    fn build(cfg: &MonaiUNetConfig, dtype: DType) -> Result<(VarMap, MonaiUNet)> {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, dtype, &Device::Cpu);
        let net = MonaiUNet::new(cfg, vb)?;
        init_weights_seeded(&vm, 3)?;
        Ok((vm, net))
    }

    fn seeded_input(shape: (usize, usize, usize, usize), seed: u64) -> candle_core::Result<Tensor> {
        let mut rng = StdRng::seed_from_u64(seed);
        let n = shape.0 * shape.1 * shape.2 * shape.3;
        let v: Vec<f64> = (0..n).map(|_| 2.0 * rng.random::<f64>() - 1.0).collect();
        Tensor::from_vec(v, shape, &Device::Cpu)
    }

    #[test]
    fn instance_norm_and_prelu_values() -> Result<()> {
        let x = Tensor::new(&[[[[1f64, 3.], [5., 7.]]]], &Device::Cpu)?;
        // mean 4, biased var 5.
        let y = instance_norm(&x, None)?.flatten_all()?.to_vec1::<f64>()?;
        let s = (5.0f64 + 1e-5).sqrt();
        for (got, raw) in y.iter().zip([1.0, 3.0, 5.0, 7.0]) {
            assert!((got - (raw - 4.0) / s).abs() < 1e-12);
        }
        let slope = Tensor::new(&[0.25f64], &Device::Cpu)?;
        let p = prelu(&Tensor::new(&[-2f64, 0.5], &Device::Cpu)?, &slope)?.to_vec1::<f64>()?;
        assert_eq!(p, vec![-0.5, 0.5]);
        Ok(())
    }

    /// Loaded weights (nothing tracks gradients) take the fused norm + PReLU kernel; trainable
    /// ones the differentiable ops. Both give the same network.
    #[test]
    fn fused_inference_path_matches_the_trainable_one() -> Result<()> {
        let dir = tempfile::tempdir().expect("temporary folder");
        for nru in [0, 2] {
            let cfg = MonaiUNetConfig::new(2, 3, vec![4, 6, 8], vec![2, 2], nru);
            let (vm, trainable) = build(&cfg, DType::F32)?;
            let path = dir.path().join(format!("nru{nru}.safetensors"));
            vm.save(&path)?;
            let loaded = MonaiUNet::load(&cfg, &path, &Device::Cpu)?;
            let x = seeded_input((2, 2, 16, 12), 5)?.to_dtype(DType::F32)?;
            let (a, b) = (trainable.forward(&x)?, loaded.forward(&x)?);
            assert!(
                a.track_op() && !b.track_op(),
                "the two paths were not taken"
            );
            let diff = (a - b)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(diff < 1e-5, "nru {nru}: {diff:e}");
        }
        Ok(())
    }

    #[test]
    fn forward_shapes_and_features_for_odd_strides() -> Result<()> {
        // Strides 2 and 3 exercise output_padding = stride - 1.
        let cfg = MonaiUNetConfig::new(2, 3, vec![4, 6, 8], vec![2, 3], 1);
        let (_, net) = build(&cfg, DType::F32)?;
        let x = seeded_input((2, 2, 12, 18), 1)?.to_dtype(DType::F32)?;
        assert_eq!(net.forward(&x)?.dims(), &[2, 3, 12, 18]);
        let f = net.encode_features(&x)?;
        assert_eq!(f.dims(), &[2, 8]);
        assert!(net
            .forward(&seeded_input((1, 2, 12, 16), 1)?.to_dtype(DType::F32)?)
            .is_err());
        assert_eq!(net.segment(&x)?.shape(), (2, 12, 18));
        Ok(())
    }

    #[test]
    fn seeded_init_is_reproducible_and_follows_fan_in() -> Result<()> {
        let cfg = MonaiUNetConfig::new(1, 2, vec![4, 8], vec![2], 0);
        let (a, _) = build(&cfg, DType::F32)?;
        let (b, _) = build(&cfg, DType::F32)?;
        let get = |vm: &VarMap, name: &str| -> Result<Vec<f32>> {
            let data = vm.data().lock().map_err(|_| EvalError::InvalidArgument {
                name: "varmap",
                value: String::new(),
                reason: "poisoned",
            })?;
            Ok(data[name].as_tensor().flatten_all()?.to_vec1::<f32>()?)
        };
        let wa = get(&a, "model.0.conv.weight")?;
        assert_eq!(wa, get(&b, "model.0.conv.weight")?);
        // fan_in = 1 * 3 * 3 -> bound 1/3.
        assert!(wa.iter().all(|v| v.abs() <= 1.0 / 3.0));
        assert!(wa.iter().any(|v| v.abs() > 0.2));
        assert_eq!(get(&a, "model.0.adn.A.weight")?, vec![0.25]);
        Ok(())
    }

    #[test]
    fn rejects_unsupported_config() {
        let mut cfg = MonaiUNetConfig::new(1, 2, vec![4, 8], vec![2], 0);
        cfg.dropout = 0.1;
        assert!(matches!(
            cfg.validate(),
            Err(EvalError::UnsupportedConfig {
                field: "dropout",
                ..
            })
        ));
        let mut cfg = MonaiUNetConfig::new(1, 2, vec![4, 8], vec![2, 2], 0);
        assert!(matches!(
            cfg.validate(),
            Err(EvalError::UnsupportedConfig {
                field: "strides",
                ..
            })
        ));
        cfg.strides = vec![2];
        cfg.norm = "batch".into();
        assert!(matches!(
            cfg.validate(),
            Err(EvalError::UnsupportedConfig { field: "norm", .. })
        ));
    }

    #[test]
    fn config_json_defaults_match_monai() -> Result<()> {
        let cfg: MonaiUNetConfig = serde_json::from_str(
            r#"{"in_channels":1,"out_channels":4,"channels":[16,32,64,128,256],"strides":[2,2,2,2]}"#,
        )
        .map_err(|source| EvalError::Json {
            path: "<inline>".into(),
            source,
        })?;
        assert_eq!(
            cfg,
            MonaiUNetConfig::new(1, 4, vec![16, 32, 64, 128, 256], vec![2, 2, 2, 2], 0)
        );
        Ok(())
    }

    /// f64 finite differences through every building block, for the input and the weights.
    #[test]
    fn gradients_match_finite_differences() -> Result<()> {
        for nru in [0, 2] {
            let cfg = MonaiUNetConfig::new(2, 3, vec![3, 4, 5], vec![2, 2], nru);
            let (vm, net) = build(&cfg, DType::F64)?;
            let x = candle_core::Var::from_tensor(&seeded_input((2, 2, 8, 8), 5)?)?;
            let weights = seeded_input((2, 3, 8, 8), 6)?;
            let worst = check_gradients(&GradCase {
                loss: &|| (net.forward(x.as_tensor())? * &weights)?.sum_all(),
                vars: vm.all_vars().into_iter().chain([x.clone()]).collect(),
                samples_per_var: 3,
                seed: 11,
            })?;
            println!("nru {nru}: worst relative FD error {worst:.2e}");
            assert!(worst < 1e-4, "nru {nru}: worst relative FD error {worst}");
            // The feature extractor (bottom layer + pooling) too.
            let worst = check_gradients(&GradCase {
                loss: &|| (net.encode_features(x.as_tensor())?.sqr()?).sum_all(),
                vars: vec![x.clone()],
                samples_per_var: 8,
                seed: 12,
            })?;
            println!("nru {nru} features: worst relative FD error {worst:.2e}");
            assert!(
                worst < 1e-4,
                "nru {nru} features: worst relative FD error {worst}"
            );
        }
        Ok(())
    }
}
