//! `F.grid_sample(input, grid, mode="bilinear", padding_mode="zeros", align_corners)` with
//! gradients for both the input and the grid (ATen `GridSampler.h`, §3.2 of the design notes).
//!
//! Two implementations with the same semantics: [`GridSampleCpu`], a candle custom op with an
//! explicit forward and backward for CPU tensors (f32/f64), and [`grid_sample_composed`], built
//! from candle ops (floor, clamp, gather, pad) so that it runs and differentiates on any device.
//! [`grid_sample`] picks the custom op on CPU and the composition elsewhere.

use candle_core::{
    backend::BackendStorage, CpuStorage, CustomOp2, CustomOp3, DType, Layout, Shape, Tensor,
    WithDType,
};
use num_traits::Float;

use crate::{MhvaeError, Result};

/// Bilinear sampling of `input` (N, C, H, W) at `grid` (N, Ho, Wo, 2) normalised (x, y)
/// locations, with zeros outside the image; returns (N, C, Ho, Wo). Differentiable in both.
pub fn grid_sample(input: &Tensor, grid: &Tensor, align_corners: bool) -> Result<Tensor> {
    check_shapes(input, grid)?;
    if input.device().is_cpu() && matches!(input.dtype(), DType::F32 | DType::F64) {
        let grid = grid.to_dtype(input.dtype())?.contiguous()?;
        Ok(input
            .contiguous()?
            .apply_op2(&grid, GridSampleCpu { align_corners })?)
    } else {
        grid_sample_composed(input, grid, align_corners)
    }
}

fn check_shapes(input: &Tensor, grid: &Tensor) -> Result<()> {
    let (i, g) = (input.dims(), grid.dims());
    if i.len() != 4 {
        return Err(MhvaeError::BadShape {
            what: "grid_sample input",
            shape: i.to_vec(),
            expected: "(N, C, H, W)".into(),
        });
    }
    if g.len() != 4 || g[3] != 2 || g[0] != i[0] {
        return Err(MhvaeError::BadShape {
            what: "grid_sample grid",
            shape: g.to_vec(),
            expected: format!("({}, Ho, Wo, 2) for an input of {:?}", i[0], i),
        });
    }
    Ok(())
}

/// Normalised coordinate → pixel index, exactly as ATen's `grid_sampler_unnormalize` (same
/// operation order, so floors agree with torch at exact pixel positions).
#[inline]
fn unnormalize<T: Float>(coord: T, size: usize, align_corners: bool) -> T {
    let one = T::one();
    let two = one + one;
    let size = T::from(size).unwrap_or_else(T::zero);
    if align_corners {
        ((coord + one) / two) * (size - one)
    } else {
        ((coord + one) * size - one) / two
    }
}

/// d(index)/d(coordinate) of [`unnormalize`].
fn unnormalize_scale(size: usize, align_corners: bool) -> f64 {
    if align_corners {
        (size as f64 - 1.0) / 2.0
    } else {
        size as f64 / 2.0
    }
}

/// The four bilinear corners of one sample point: flat input offsets (`None` when outside the
/// image, which reads as zero) and weights, in the order (y0,x0), (y0,x1), (y1,x0), (y1,x1).
struct Corners<T> {
    offset: [Option<usize>; 4],
    weight: [T; 4],
    /// Fractional parts (ix − x0, iy − y0), which the grid gradient needs.
    frac: (T, T),
}

#[inline]
fn corners<T: Float>(ix: T, iy: T, h: usize, w: usize) -> Corners<T> {
    let (x0, y0) = (ix.floor(), iy.floor());
    let (fx, fy) = (ix - x0, iy - y0);
    let one = T::one();
    let index = |v: T, delta: i64, size: usize| -> Option<usize> {
        // Non-finite or huge coordinates are simply outside the image.
        let v = v.to_i64()?.checked_add(delta)?;
        (v >= 0 && (v as u64) < size as u64).then_some(v as usize)
    };
    let (xa, xb) = (index(x0, 0, w), index(x0, 1, w));
    let (ya, yb) = (index(y0, 0, h), index(y0, 1, h));
    let at = |y: Option<usize>, x: Option<usize>| Some(y? * w + x?);
    Corners {
        offset: [at(ya, xa), at(ya, xb), at(yb, xa), at(yb, xb)],
        weight: [
            (one - fx) * (one - fy),
            fx * (one - fy),
            (one - fx) * fy,
            fx * fy,
        ],
        frac: (fx, fy),
    }
}

struct Dims {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    ho: usize,
    wo: usize,
}

impl Dims {
    fn of(input: &Layout, grid: &Layout) -> candle_core::Result<Self> {
        let (i, g) = (input.dims(), grid.dims());
        if i.len() != 4 || g.len() != 4 || g[3] != 2 || g[0] != i[0] {
            candle_core::bail!("grid_sample: input {i:?} and grid {g:?} do not fit");
        }
        Ok(Dims {
            n: i[0],
            c: i[1],
            h: i[2],
            w: i[3],
            ho: g[1],
            wo: g[2],
        })
    }
}

/// The contiguous elements of a CPU tensor as `T`.
fn contiguous<'a, T: WithDType>((storage, layout): Arg<'a>) -> candle_core::Result<&'a [T]> {
    let data = storage.as_slice::<T>()?;
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("grid_sample: the CPU op needs contiguous tensors"),
    }
}

type Arg<'a> = (&'a CpuStorage, &'a Layout);

fn run_forward<T: WithDType + Float>(
    input: Arg,
    grid: Arg,
    d: &Dims,
    ac: bool,
) -> candle_core::Result<CpuStorage> {
    Ok(T::to_cpu_storage_owned(forward(
        contiguous::<T>(input)?,
        contiguous::<T>(grid)?,
        d,
        ac,
    )))
}

fn run_backward<T: WithDType + Float>(
    input: Arg,
    grid: Arg,
    grad_out: Arg,
    d: &Dims,
    ac: bool,
) -> candle_core::Result<CpuStorage> {
    let v = backward(
        contiguous::<T>(input)?,
        contiguous::<T>(grid)?,
        contiguous::<T>(grad_out)?,
        d,
        ac,
    );
    Ok(T::to_cpu_storage_owned(v))
}

fn forward<T: Float>(input: &[T], grid: &[T], d: &Dims, align_corners: bool) -> Vec<T> {
    let points = d.ho * d.wo;
    let plane = d.h * d.w;
    let mut out = vec![T::zero(); d.n * d.c * points];
    for n in 0..d.n {
        for p in 0..points {
            let g = (n * points + p) * 2;
            let ix = unnormalize(grid[g], d.w, align_corners);
            let iy = unnormalize(grid[g + 1], d.h, align_corners);
            let k = corners(ix, iy, d.h, d.w);
            for c in 0..d.c {
                let base = (n * d.c + c) * plane;
                let mut acc = T::zero();
                for (off, wgt) in k.offset.iter().zip(k.weight) {
                    if let Some(off) = off {
                        acc = acc + wgt * input[base + off];
                    }
                }
                out[(n * d.c + c) * points + p] = acc;
            }
        }
    }
    out
}

/// Gradients for input and grid, concatenated: `[grad_input (N·C·H·W) | grad_grid (N·Ho·Wo·2)]`.
fn backward<T: Float>(
    input: &[T],
    grid: &[T],
    grad_out: &[T],
    d: &Dims,
    align_corners: bool,
) -> Vec<T> {
    let points = d.ho * d.wo;
    let plane = d.h * d.w;
    let in_len = d.n * d.c * plane;
    let mut out = vec![T::zero(); in_len + d.n * points * 2];
    let (grad_input, grad_grid) = out.split_at_mut(in_len);
    let sx = T::from(unnormalize_scale(d.w, align_corners)).unwrap_or_else(T::zero);
    let sy = T::from(unnormalize_scale(d.h, align_corners)).unwrap_or_else(T::zero);
    let one = T::one();
    for n in 0..d.n {
        for p in 0..points {
            let g = (n * points + p) * 2;
            let ix = unnormalize(grid[g], d.w, align_corners);
            let iy = unnormalize(grid[g + 1], d.h, align_corners);
            let k = corners(ix, iy, d.h, d.w);
            let (fx, fy) = k.frac;
            let (mut gix, mut giy) = (T::zero(), T::zero());
            for c in 0..d.c {
                let base = (n * d.c + c) * plane;
                let go = grad_out[(n * d.c + c) * points + p];
                let v = k.offset.map(|o| o.map_or(T::zero(), |o| input[base + o]));
                for (off, wgt) in k.offset.iter().zip(k.weight) {
                    if let Some(off) = off {
                        grad_input[base + off] = grad_input[base + off] + wgt * go;
                    }
                }
                // d/d ix and d/d iy of the bilinear blend (zeros outside, as torch).
                gix = gix + go * ((one - fy) * (v[1] - v[0]) + fy * (v[3] - v[2]));
                giy = giy + go * ((one - fx) * (v[2] - v[0]) + fx * (v[3] - v[1]));
            }
            grad_grid[g] = gix * sx;
            grad_grid[g + 1] = giy * sy;
        }
    }
    out
}

/// The CPU custom op: `input.apply_op2(&grid, GridSampleCpu { align_corners })`. Inputs must be
/// contiguous f32 or f64 tensors of the same dtype ([`grid_sample`] arranges that).
#[derive(Debug, Clone, Copy)]
pub struct GridSampleCpu {
    pub align_corners: bool,
}

impl CustomOp2 for GridSampleCpu {
    fn name(&self) -> &'static str {
        "grid-sample-bilinear-zeros"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let d = Dims::of(l1, l2)?;
        let shape = Shape::from((d.n, d.c, d.ho, d.wo));
        let ac = self.align_corners;
        let out = match (s1.dtype(), s2.dtype()) {
            (DType::F32, DType::F32) => run_forward::<f32>((s1, l1), (s2, l2), &d, ac)?,
            (DType::F64, DType::F64) => run_forward::<f64>((s1, l1), (s2, l2), &d, ac)?,
            (a, b) => candle_core::bail!(
                "grid_sample: input {a:?} and grid {b:?} must both be f32 or both f64"
            ),
        };
        Ok((out, shape))
    }

    fn bwd(
        &self,
        input: &Tensor,
        grid: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let grad_res = grad_res.contiguous()?;
        let both = input.apply_op3_no_bwd(
            grid,
            &grad_res,
            &GridSampleCpuBackward {
                align_corners: self.align_corners,
            },
        )?;
        let in_len = input.elem_count();
        let grad_input = both.narrow(0, 0, in_len)?.reshape(input.shape())?;
        let grad_grid = both
            .narrow(0, in_len, grid.elem_count())?
            .reshape(grid.shape())?;
        Ok((Some(grad_input), Some(grad_grid)))
    }
}

/// Backward of [`GridSampleCpu`]: (input, grid, grad_out) → flat `[grad_input | grad_grid]`.
struct GridSampleCpuBackward {
    align_corners: bool,
}

impl CustomOp3 for GridSampleCpuBackward {
    fn name(&self) -> &'static str {
        "grid-sample-bilinear-zeros-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let d = Dims::of(l1, l2)?;
        let ac = self.align_corners;
        let out = match (s1.dtype(), s2.dtype(), s3.dtype()) {
            (DType::F32, DType::F32, DType::F32) => {
                run_backward::<f32>((s1, l1), (s2, l2), (s3, l3), &d, ac)?
            }
            (DType::F64, DType::F64, DType::F64) => {
                run_backward::<f64>((s1, l1), (s2, l2), (s3, l3), &d, ac)?
            }
            _ => candle_core::bail!("grid_sample backward: mixed dtypes"),
        };
        // `[grad_input | grad_grid]`, flat.
        let len = d.n * d.c * d.h * d.w + d.n * d.ho * d.wo * 2;
        Ok((out, Shape::from(len)))
    }
}

/// The same op composed from candle primitives (any device, gradients from candle's autograd):
/// unnormalise, floor (no gradient), weights from the unfloored index (carry the grid gradient),
/// corners clamped to [−1, size] and read from the input padded by one zero pixel, so every
/// out-of-range corner reads 0 while its weight still follows the true index (torch's zeros
/// padding, forward and grid gradient alike).
pub fn grid_sample_composed(input: &Tensor, grid: &Tensor, align_corners: bool) -> Result<Tensor> {
    check_shapes(input, grid)?;
    let (n, c, h, w) = input.dims4()?;
    let (_, ho, wo, _) = grid.dims4()?;
    let grid = grid.to_dtype(input.dtype())?;
    let unnorm = |coord: Tensor, size: usize| -> candle_core::Result<Tensor> {
        let size = size as f64;
        if align_corners {
            ((coord + 1.0)? / 2.0)? * (size - 1.0)
        } else {
            (((coord + 1.0)? * size)? - 1.0)? / 2.0
        }
    };
    let points = ho * wo;
    let ix = unnorm(grid.narrow(3, 0, 1)?.reshape((n, 1, points))?, w)?;
    let iy = unnorm(grid.narrow(3, 1, 1)?.reshape((n, 1, points))?, h)?;
    let x0 = ix.detach().floor()?;
    let y0 = iy.detach().floor()?;
    let fx = (&ix - &x0)?;
    let fy = (&iy - &y0)?;
    let padded = input
        .pad_with_zeros(2, 1, 1)?
        .pad_with_zeros(3, 1, 1)?
        .reshape((n, c, (h + 2) * (w + 2)))?;
    // Padded index of a corner; clamping before the cast keeps it in range (and u32-castable).
    let padded_index = |y: &Tensor, x: &Tensor| -> candle_core::Result<Tensor> {
        let x = (x.clamp(-1.0, w as f64)? + 1.0)?;
        let y = (y.clamp(-1.0, h as f64)? + 1.0)?;
        ((y * (w + 2) as f64)? + x)?
            .to_dtype(DType::U32)?
            .broadcast_as((n, c, points))?
            .contiguous()
    };
    let x1 = (&x0 + 1.0)?;
    let y1 = (&y0 + 1.0)?;
    let one_fx = (1.0 - &fx)?;
    let one_fy = (1.0 - &fy)?;
    let corners = [
        (&y0, &x0, (&one_fx * &one_fy)?),
        (&y0, &x1, (&fx * &one_fy)?),
        (&y1, &x0, (&one_fx * &fy)?),
        (&y1, &x1, (&fx * &fy)?),
    ];
    let mut out: Option<Tensor> = None;
    for (y, x, weight) in corners {
        let values = padded.gather(&padded_index(y, x)?, 2)?;
        let term = values.broadcast_mul(&weight)?;
        out = Some(match out {
            None => term,
            Some(acc) => (acc + term)?,
        });
    }
    let out = out.ok_or_else(|| MhvaeError::InvalidArgument {
        name: "grid_sample",
        value: String::new(),
        reason: "no corners".into(),
    })?;
    Ok(out.reshape((n, c, ho, wo))?)
}
