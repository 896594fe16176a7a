//! Sinusoidal timestep features and the time-embedding MLP (diffusers `Timesteps`,
//! `TimestepEmbedding`).

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::layers::Linear;

/// diffusers `get_timestep_embedding` with `max_period` 10000 and scale 1, computed in f32:
/// `exponent = -ln(10000)·i / (half − freq_shift)`, `[sin, cos]` (swapped with `flip_sin_to_cos`).
pub fn timestep_features(
    timesteps: &Tensor,
    dim: usize,
    flip_sin_to_cos: bool,
    freq_shift: f64,
) -> Result<Tensor> {
    let half = dim / 2;
    let dev = timesteps.device();
    let exponents: Vec<f32> = (0..half)
        .map(|i| {
            // diffusers computes arange in float32 and divides in float32.
            let e = -(10000f32.ln()) * (i as f32);
            (e / (half as f32 - freq_shift as f32)).exp()
        })
        .collect();
    let freqs = Tensor::from_vec(exponents, (1, half), dev)?;
    let t = timesteps.to_dtype(DType::F32)?.unsqueeze(1)?;
    let args = t.broadcast_mul(&freqs)?;
    let (sin, cos) = (args.sin()?, args.cos()?);
    let emb = if flip_sin_to_cos {
        Tensor::cat(&[&cos, &sin], 1)?
    } else {
        Tensor::cat(&[&sin, &cos], 1)?
    };
    if dim % 2 == 1 {
        emb.pad_with_zeros(1, 0, 1)
    } else {
        Ok(emb)
    }
}

/// Turns a timestep input (0-d scalar or `(N,)`, any numeric dtype) into an `(N,)` f32 vector.
pub fn broadcast_timesteps(timesteps: &Tensor, batch: usize, dev: &Device) -> Result<Tensor> {
    let t = timesteps.to_device(dev)?.to_dtype(DType::F32)?;
    match t.rank() {
        0 => t.reshape(1)?.broadcast_as(batch)?.contiguous(),
        1 if t.dim(0)? == batch => Ok(t),
        1 if t.dim(0)? == 1 => t.broadcast_as(batch)?.contiguous(),
        _ => candle_core::bail!(
            "timestep must be a scalar or a vector of length {batch} (the batch size), got shape {:?}",
            t.dims()
        ),
    }
}

/// diffusers `TimestepEmbedding`: `linear_1` → SiLU → `linear_2`.
#[derive(Debug, Clone)]
pub struct TimestepEmbedding {
    linear_1: Linear,
    linear_2: Linear,
}

impl TimestepEmbedding {
    /// Loads `{vb}.linear_1` and `{vb}.linear_2`.
    pub fn new(in_dim: usize, dim: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            linear_1: Linear::new(in_dim, dim, vb.pp("linear_1"))?,
            linear_2: Linear::new(dim, dim, vb.pp("linear_2"))?,
        })
    }

    /// FLOPs for a batch of one.
    pub fn flops(&self) -> u64 {
        self.linear_1.flops(1) + self.linear_2.flops(1)
    }
}

impl Module for TimestepEmbedding {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.linear_2.forward(&self.linear_1.forward(x)?.silu()?)
    }
}
