//! diffusers `ResnetBlock2D` with `time_embedding_norm="default"` and `pre_norm`.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::layers::{group_norm, Conv2d, Linear};

/// `norm1 → SiLU → conv1 → +time_emb_proj(SiLU(temb)) → norm2 → SiLU → conv2`, plus a 1×1
/// `conv_shortcut` when the width changes; the sum is divided by `output_scale_factor`.
#[derive(Debug, Clone)]
pub struct ResnetBlock2D {
    norm1: crate::cpu_kernels::GroupNorm,
    conv1: Conv2d,
    time_emb_proj: Linear,
    norm2: crate::cpu_kernels::GroupNorm,
    conv2: Conv2d,
    conv_shortcut: Option<Conv2d>,
    output_scale_factor: f64,
}

/// Shape parameters of one ResNet block.
#[derive(Debug, Clone, Copy)]
pub struct ResnetSpec {
    pub c_in: usize,
    pub c_out: usize,
    pub temb: usize,
    pub groups: usize,
    pub eps: f64,
    pub output_scale_factor: f64,
}

impl ResnetBlock2D {
    /// Loads the block found under `vb` (e.g. `down_blocks.0.resnets.1`).
    pub fn new(s: ResnetSpec, vb: VarBuilder) -> Result<Self> {
        let conv_shortcut = if s.c_in != s.c_out {
            Some(Conv2d::new(
                s.c_in,
                s.c_out,
                1,
                1,
                0,
                vb.pp("conv_shortcut"),
            )?)
        } else {
            None
        };
        Ok(Self {
            norm1: group_norm(s.groups, s.c_in, s.eps, vb.pp("norm1"))?,
            conv1: Conv2d::new(s.c_in, s.c_out, 3, 1, 1, vb.pp("conv1"))?,
            time_emb_proj: Linear::new(s.temb, s.c_out, vb.pp("time_emb_proj"))?,
            norm2: group_norm(s.groups, s.c_out, s.eps, vb.pp("norm2"))?,
            conv2: Conv2d::new(s.c_out, s.c_out, 3, 1, 1, vb.pp("conv2"))?,
            conv_shortcut,
            output_scale_factor: s.output_scale_factor,
        })
    }

    /// `x`: (N, C_in, H, W); `temb`: (N, temb) before its SiLU.
    pub fn forward(&self, x: &Tensor, temb: &Tensor) -> Result<Tensor> {
        let h = self.conv1.forward(&self.norm1.forward_silu(x)?)?;
        let t = self
            .time_emb_proj
            .forward(&temb.silu()?)?
            .unsqueeze(2)?
            .unsqueeze(3)?;
        let h = h.broadcast_add(&t)?;
        let h = self.conv2.forward(&self.norm2.forward_silu(&h)?)?;
        let shortcut = match &self.conv_shortcut {
            Some(c) => c.forward(x)?,
            None => x.clone(),
        };
        let out = (shortcut + h)?;
        if self.output_scale_factor == 1.0 {
            Ok(out)
        } else {
            out / self.output_scale_factor
        }
    }

    /// FLOPs of the convolutions and the projection for an `h`×`w` input, batch 1.
    pub fn flops(&self, h: usize, w: usize) -> u64 {
        self.conv1.flops(h, w)
            + self.conv2.flops(h, w)
            + self.time_emb_proj.flops(1)
            + self.conv_shortcut.as_ref().map_or(0, |c| c.flops(h, w))
    }
}
