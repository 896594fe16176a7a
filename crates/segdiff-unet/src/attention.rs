//! diffusers spatial self-attention (`Attention` built from the deprecated attention block:
//! GroupNorm, q/k/v/out projections, residual connection).

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::VarBuilder;

use crate::layers::{group_norm, Linear};

/// Self-attention over the H·W positions of a feature map with `heads` heads.
#[derive(Debug, Clone)]
pub struct SpatialAttention {
    group_norm: crate::cpu_kernels::GroupNorm,
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    heads: usize,
    channels: usize,
    rescale_output_factor: f64,
}

impl SpatialAttention {
    /// Loads `group_norm`, `to_q`, `to_k`, `to_v` and `to_out.0` under `vb` (legacy
    /// `query`/`key`/`value`/`proj_attn` names are renamed when the weights are read).
    pub fn new(
        channels: usize,
        head_dim: usize,
        groups: usize,
        eps: f64,
        rescale_output_factor: f64,
        vb: VarBuilder,
    ) -> Result<Self> {
        Ok(Self {
            group_norm: group_norm(groups, channels, eps, vb.pp("group_norm"))?,
            to_q: Linear::new(channels, channels, vb.pp("to_q"))?,
            to_k: Linear::new(channels, channels, vb.pp("to_k"))?,
            to_v: Linear::new(channels, channels, vb.pp("to_v"))?,
            to_out: Linear::new(channels, channels, vb.pp("to_out").pp("0"))?,
            heads: channels / head_dim,
            channels,
            rescale_output_factor,
        })
    }

    /// FLOPs for an `h`×`w` map, batch 1: projections plus the two attention products.
    pub fn flops(&self, h: usize, w: usize) -> u64 {
        let n = h * w;
        4 * self.to_q.flops(n) + 2 * 2 * (n * n * self.channels) as u64
    }
}

impl Module for SpatialAttention {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let n = h * w;
        let head_dim = c / self.heads;
        let hs = self
            .group_norm
            .forward(x)?
            .reshape((b, c, n))?
            .transpose(1, 2)?
            // candle's batched matmul mishandles this transposed view when b > 1.
            .contiguous()?;
        // (B, N, C) → (B, heads, N, head_dim)
        let split = |t: Tensor| -> Result<Tensor> {
            t.reshape((b, n, self.heads, head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = split(self.to_q.forward(&hs)?)?;
        let k = split(self.to_k.forward(&hs)?)?;
        let v = split(self.to_v.forward(&hs)?)?;
        let scale = 1.0 / (head_dim as f64).sqrt();
        let scores = (q.matmul(&k.transpose(2, 3)?.contiguous()?)? * scale)?;
        // The composed softmax keeps its gradient (softmax_last_dim has none, audit §3);
        // diffusers upcasts the softmax to f32 (`upcast_softmax=True`); f32/f64 stay as they are.
        let dtype = scores.dtype();
        let probs = match dtype {
            DType::F16 | DType::BF16 => {
                candle_nn::ops::softmax(&scores.to_dtype(DType::F32)?, D::Minus1)?
                    .to_dtype(dtype)?
            }
            _ => candle_nn::ops::softmax(&scores, D::Minus1)?,
        };
        let out = probs.matmul(&v)?.transpose(1, 2)?.reshape((b, n, c))?;
        let out = self
            .to_out
            .forward(&out)?
            .transpose(1, 2)?
            .reshape((b, c, h, w))?;
        let out = (out + x)?;
        if self.rescale_output_factor == 1.0 {
            Ok(out)
        } else {
            out / self.rescale_output_factor
        }
    }
}
