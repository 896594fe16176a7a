//! pytorch-fid's preprocessing for Inception-v3: torch's bilinear resize to 299×299, grey to RGB,
//! `[0, 1]` to `[-1, 1]`.

use candle_core::{DType, Tensor};

use super::INCEPTION_INPUT_SIZE;
use crate::error::{EvalError, Result};

/// The network input for images in `[0, 1]` (`N×C×H×W`, C = 1 or 3, any H, W ≥ 1): resized to
/// 299×299 by [`resize_bilinear`], grey replicated to RGB, mapped to `[-1, 1]` by `2x − 1`
/// (pytorch-fid's order: resize, then scale). This equals torchvision's input for the
/// IMAGENET1K_V1 weights (ImageNet normalisation undone by `transform_input=True`). Values are
/// not clamped or checked.
pub fn inception_input(images01: &Tensor) -> Result<Tensor> {
    let (_, c, _, _) = images01.dims4().map_err(|_| EvalError::BadShape {
        what: "Inception-v3 images",
        shape: images01.dims().to_vec(),
        expected: "N×C×H×W",
    })?;
    if c != 1 && c != 3 {
        return Err(EvalError::BadShape {
            what: "Inception-v3 images",
            shape: images01.dims().to_vec(),
            expected: "1 (grey) or 3 (RGB) channels",
        });
    }
    let x =
        resize_bilinear(images01, INCEPTION_INPUT_SIZE, INCEPTION_INPUT_SIZE)?.affine(2.0, -1.0)?;
    Ok(if c == 1 { x.repeat((1, 3, 1, 1))? } else { x })
}

/// Bilinear resize of `N×C×H×W` to `out_h × out_w` with torch's `F.interpolate(mode="bilinear",
/// align_corners=False, antialias=False)` semantics, in f32: two interpolation matrices
/// applied by matmul (candle's own bilinear upsampling does not follow torch when shrinking).
pub fn resize_bilinear(x: &Tensor, out_h: usize, out_w: usize) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4().map_err(|_| EvalError::BadShape {
        what: "bilinear resize input",
        shape: x.dims().to_vec(),
        expected: "N×C×H×W",
    })?;
    if h == 0 || w == 0 || out_h == 0 || out_w == 0 {
        return Err(EvalError::BadShape {
            what: "bilinear resize input or output size",
            shape: vec![h, w, out_h, out_w],
            expected: "all sides at least 1",
        });
    }
    let dev = x.device();
    let rows = Tensor::from_vec(interpolation_matrix(out_h, h), (out_h, h), dev)?;
    let cols_t = Tensor::from_vec(interpolation_matrix(out_w, w), (out_w, w), dev)?.t()?;
    let x = x.to_dtype(DType::F32)?.reshape((n * c * h, w))?;
    let x = x
        .matmul(&cols_t.contiguous()?)?
        .reshape((n * c, h, out_w))?;
    let x = rows.broadcast_matmul(&x)?;
    Ok(x.reshape((n, c, out_h, out_w))?)
}

/// Row-major `out × inp` matrix of torch's linear interpolation weights (`align_corners=False`):
/// source `max((o + 0.5)·inp/out − 0.5, 0)`, lower index clamped to `inp − 1`, upper index the
/// next one unless at the edge; the identity when the sizes are equal. f32 arithmetic, as torch
/// uses for float tensors.
pub(super) fn interpolation_matrix(out: usize, inp: usize) -> Vec<f32> {
    let mut m = vec![0.0f32; out * inp];
    if out == inp {
        for i in 0..out {
            m[i * inp + i] = 1.0;
        }
        return m;
    }
    let scale = inp as f32 / out as f32;
    for o in 0..out {
        let src = (scale * (o as f32 + 0.5) - 0.5).max(0.0);
        let i0 = (src.floor() as usize).min(inp - 1);
        let lambda1 = (src - i0 as f32).clamp(0.0, 1.0);
        let i1 = if i0 < inp - 1 { i0 + 1 } else { i0 };
        m[o * inp + i0] += 1.0 - lambda1;
        m[o * inp + i1] += lambda1;
    }
    m
}
