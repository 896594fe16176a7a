//! The small building blocks every UNet block uses: convolution, linear, GroupNorm, nearest
//! upsampling, each loaded from a `VarBuilder` under the PyTorch module's name.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

/// A 2-D convolution with bias, NCHW, weights `[out, in, k, k]` as PyTorch stores them.
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    stride: usize,
    padding: usize,
}

impl Conv2d {
    /// Loads `{vb}.weight` and `{vb}.bias`.
    pub fn new(
        c_in: usize,
        c_out: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let fan_in = (c_in * kernel * kernel) as f64;
        let bound = 1.0 / fan_in.sqrt();
        let weight = vb.get_with_hints(
            (c_out, c_in, kernel, kernel),
            "weight",
            candle_nn::Init::Uniform {
                lo: -bound,
                up: bound,
            },
        )?;
        let bias = vb.get_with_hints(
            c_out,
            "bias",
            candle_nn::Init::Uniform {
                lo: -bound,
                up: bound,
            },
        )?;
        Ok(Self {
            weight,
            bias: Some(bias),
            stride,
            padding,
        })
    }

    /// Output side length for an input side length.
    pub fn out_size(&self, size: usize) -> usize {
        let k = self.weight.dim(3).unwrap_or(1);
        (size + 2 * self.padding - k) / self.stride + 1
    }

    /// Multiply-add FLOPs (2 per MAC) for an `h`×`w` input, batch 1.
    pub fn flops(&self, h: usize, w: usize) -> u64 {
        let dims = self.weight.dims();
        let (co, ci, kh, kw) = (dims[0], dims[1], dims[2], dims[3]);
        let oh = (h + 2 * self.padding - kh) / self.stride + 1;
        let ow = (w + 2 * self.padding - kw) / self.stride + 1;
        2 * (co * ci * kh * kw * oh * ow) as u64
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // segdiff's CPU kernels for f32/f64 on CPU, candle's conv2d elsewhere (CUDA included).
        crate::cpu_kernels::conv2d(
            x,
            &self.weight,
            self.bias.as_ref(),
            self.stride,
            self.padding,
        )
    }
}

/// `nn.Linear` (weights `[out, in]`).
#[derive(Debug, Clone)]
pub struct Linear {
    inner: candle_nn::Linear,
    c_in: usize,
    c_out: usize,
}

impl Linear {
    /// Loads `{vb}.weight` and `{vb}.bias`.
    pub fn new(c_in: usize, c_out: usize, vb: VarBuilder) -> Result<Self> {
        let bound = 1.0 / (c_in as f64).sqrt();
        let init = candle_nn::Init::Uniform {
            lo: -bound,
            up: bound,
        };
        let weight = vb.get_with_hints((c_out, c_in), "weight", init)?;
        let bias = vb.get_with_hints(c_out, "bias", init)?;
        Ok(Self {
            inner: candle_nn::Linear::new(weight, Some(bias)),
            c_in,
            c_out,
        })
    }

    /// FLOPs for `rows` input rows.
    pub fn flops(&self, rows: usize) -> u64 {
        2 * (rows * self.c_in * self.c_out) as u64
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.inner.forward(x)
    }
}

/// `nn.GroupNorm` with affine weights (PyTorch initialises them to 1 and 0), on segdiff's fused
/// CPU kernel (candle's ops on other devices and dtypes).
pub fn group_norm(
    groups: usize,
    channels: usize,
    eps: f64,
    vb: VarBuilder,
) -> Result<crate::cpu_kernels::GroupNorm> {
    let weight = vb.get_with_hints(channels, "weight", candle_nn::Init::Const(1.0))?;
    let bias = vb.get_with_hints(channels, "bias", candle_nn::Init::Const(0.0))?;
    crate::cpu_kernels::GroupNorm::new(weight, bias, channels, groups, eps)
}

/// Nearest-neighbour ×2 upsampling written with broadcast + reshape: candle's
/// `upsample_nearest2d` backward overwrites instead of accumulating when its input has other
/// consumers (audit §3), this form has a correct gradient.
pub fn upsample_nearest_2x(x: &Tensor) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    x.unsqueeze(3)?
        .unsqueeze(5)?
        .broadcast_as((b, c, h, 2, w, 2))?
        .reshape((b, c, 2 * h, 2 * w))
}
