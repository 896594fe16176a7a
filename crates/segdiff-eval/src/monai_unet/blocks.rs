//! The MONAI building blocks of the UNet: `ADN` (InstanceNorm, Dropout(0), PReLU),
//! `Convolution`, `ResidualUnit`, and the encoder and decoder layers made of them.

use candle_core::{DType, Tensor};
use candle_nn::{Conv2dConfig, ConvTranspose2dConfig, VarBuilder};
use segdiff_unet::cpu_kernels;

use super::config::MonaiUNetConfig;

/// PyTorch `InstanceNorm2d` default eps.
const INSTANCE_NORM_EPS: f64 = 1e-5;
/// PyTorch `PReLU` initial slope.
pub(super) const PRELU_INIT: f64 = 0.25;

/// Instance normalisation without affine parameters (biased variance): GroupNorm with one
/// group per channel, on segdiff's fused CPU kernel (candle's ops elsewhere). With
/// `prelu_slope`, followed by that PReLU in the same pass, without gradients (inference).
pub(super) fn instance_norm(x: &Tensor, prelu_slope: Option<f64>) -> candle_core::Result<Tensor> {
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
pub(super) fn prelu(x: &Tensor, slope: &Tensor) -> candle_core::Result<Tensor> {
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
pub(super) struct Convolution {
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
pub(super) struct ResidualUnit {
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
pub(super) enum EncoderLayer {
    Plain(Convolution),
    Residual(ResidualUnit),
}

impl EncoderLayer {
    pub(super) fn new(
        cfg: &MonaiUNetConfig,
        in_ch: usize,
        out_ch: usize,
        stride: usize,
        vb: VarBuilder,
    ) -> candle_core::Result<Self> {
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
    }

    pub(super) fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Self::Plain(c) => c.forward(x),
            Self::Residual(r) => r.forward(x),
        }
    }
}

/// An up layer: the transposed Convolution, followed by a ResidualUnit when `num_res_units > 0`.
#[derive(Debug, Clone)]
pub(super) struct DecoderLayer {
    up: Convolution,
    refine: Option<ResidualUnit>,
}

impl DecoderLayer {
    /// The up layer of a level taking `in_ch` channels (skip and sub-block concatenated); the
    /// top one (`is_top`) ends conv-only.
    pub(super) fn new(
        cfg: &MonaiUNetConfig,
        in_ch: usize,
        out_ch: usize,
        stride: usize,
        is_top: bool,
        vb: VarBuilder,
    ) -> candle_core::Result<Self> {
        if cfg.num_res_units > 0 {
            Ok(Self {
                up: Convolution::new(up_spec(in_ch, out_ch, stride, cfg, false), vb.pp("0"))?,
                refine: Some(ResidualUnit::new(
                    ResidualSpec {
                        in_ch: out_ch,
                        out_ch,
                        stride: 1,
                        kernel: cfg.kernel_size,
                        subunits: 1,
                        last_conv_only: is_top,
                        bias: cfg.bias,
                    },
                    vb.pp("1"),
                )?),
            })
        } else {
            Ok(Self {
                up: Convolution::new(up_spec(in_ch, out_ch, stride, cfg, is_top), vb)?,
                refine: None,
            })
        }
    }

    pub(super) fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let y = self.up.forward(x)?;
        match &self.refine {
            Some(r) => r.forward(&y),
            None => Ok(y),
        }
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
