//! `F.interpolate(mode="bilinear")` as two matmuls with fixed interpolation matrices, which makes
//! it differentiable (candle's `upsample_bilinear2d` has no backward).

use candle_core::Tensor;

use super::lattice::check_size;
use crate::{MhvaeError, Result};

/// The (out × in) matrix of 1-D linear interpolation with ATen's source index
/// (`area_pixel_compute_source_index`, scale = in/out, clamped at 0 without `align_corners`).
pub fn interpolation_matrix(input: usize, output: usize, align_corners: bool) -> Vec<f32> {
    let mut m = vec![0f32; output * input];
    for dst in 0..output {
        let src = if align_corners {
            if output > 1 {
                (input as f32 - 1.0) / (output as f32 - 1.0) * dst as f32
            } else {
                0.0
            }
        } else {
            let scale = input as f32 / output as f32;
            (scale * (dst as f32 + 0.5) - 0.5).max(0.0)
        };
        let i0 = (src.floor() as usize).min(input - 1);
        let i1 = if i0 < input - 1 { i0 + 1 } else { i0 };
        let l1 = src - i0 as f32;
        let l0 = 1.0 - l1;
        m[dst * input + i0] += l0;
        m[dst * input + i1] += l1;
    }
    m
}

/// Bilinear resize of x (N, C, H, W) to (N, C, oh, ow), as `F.interpolate(x, size=(oh, ow),
/// mode="bilinear", align_corners)`; differentiable in x.
pub fn resize_bilinear(x: &Tensor, oh: usize, ow: usize, align_corners: bool) -> Result<Tensor> {
    let dims = x.dims();
    if dims.len() != 4 || dims[2] == 0 || dims[3] == 0 {
        return Err(MhvaeError::BadShape {
            what: "bilinear resize input",
            shape: dims.to_vec(),
            expected: "(N, C, H, W) with H, W ≥ 1".into(),
        });
    }
    check_size(oh, ow)?;
    let (n, c, h, w) = (dims[0], dims[1], dims[2], dims[3]);
    let dev = x.device();
    let wx = Tensor::from_vec(interpolation_matrix(w, ow, align_corners), (ow, w), dev)?
        .to_dtype(x.dtype())?;
    let wy = Tensor::from_vec(interpolation_matrix(h, oh, align_corners), (oh, h), dev)?
        .to_dtype(x.dtype())?;
    let rows = x.reshape((n * c * h, w))?.matmul(&wx.t()?)?;
    let out = wy.broadcast_matmul(&rows.reshape((n * c, h, ow))?)?;
    Ok(out.reshape((n, c, oh, ow))?)
}
