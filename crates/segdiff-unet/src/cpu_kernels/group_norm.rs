//! [`group_norm`]: PyTorch's `GroupNorm` (biased variance, affine), optionally followed by
//! SiLU, in one custom op with a fused backward.
//!
//! Each (image, group) block is contiguous in NCHW and, at the UNets' sizes, at most a couple
//! of MiB: its mean, variance and output are computed in three passes while it sits in L2, so
//! memory sees one read and one write, against about ten full passes (and as many temporary
//! tensors) for candle's composed GroupNorm + SiLU. The backward recomputes the statistics and
//! needs two more passes.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp3, Error, Layout, Module, Result, Shape, Tensor};
use rayon::prelude::*;

use super::vector_math::simd_dispatch;
use super::{assume_init, contiguous, runs_here, uninit, Element};
use std::mem::MaybeUninit;

/// GroupNorm of `x` (`[N, C, …]`) in `groups` groups with per-channel `weight` and `bias`
/// (`[C]`) and `eps`, then SiLU when `silu`; differentiable with respect to all three.
/// The same numbers as `torch.nn.GroupNorm` (+ `F.silu`) up to f32 rounding.
pub fn group_norm(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    groups: usize,
    eps: f64,
    silu: bool,
) -> Result<Tensor> {
    let channels = x.dim(1)?;
    if !runs_here(x) || weight.dtype() != x.dtype() || bias.dtype() != x.dtype() {
        let y = candle_nn::GroupNorm::new(weight.clone(), bias.clone(), channels, groups, eps)?
            .forward(x)?;
        return if silu { y.silu() } else { Ok(y) };
    }
    check_groups(x, groups)?;
    x.apply_op3(weight, bias, GroupNormOp::new(groups, eps, silu, None))
}

/// `x` is `[N, C, …]` with C divisible by `groups`, as the fused kernel needs.
fn check_groups(x: &Tensor, groups: usize) -> Result<()> {
    if groups == 0 || x.rank() < 3 || !x.dim(1)?.is_multiple_of(groups) {
        return Err(Error::Msg(format!(
            "group_norm: {groups} groups for input {:?} (need [N, C, …] with C divisible)",
            x.dims()
        )));
    }
    Ok(())
}

/// `PReLU(group_norm(x))` with one slope shared by all channels (`PReLU(z) = z` for `z > 0`,
/// `slope·z` otherwise), in the same single pass as the norm, and without gradients: for
/// inference, e.g. MONAI's InstanceNorm → PReLU. The values are those of [`group_norm`]
/// followed by `relu(z) + slope·(z − relu(z))`, exactly (up to the sign of a zero).
pub fn group_norm_prelu_inference(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    groups: usize,
    eps: f64,
    slope: f64,
) -> Result<Tensor> {
    if !runs_here(x) || weight.dtype() != x.dtype() || bias.dtype() != x.dtype() {
        let z = group_norm(x, weight, bias, groups, eps, false)?.detach();
        let pos = z.relu()?;
        return pos.clone() + ((z - pos)? * slope)?;
    }
    check_groups(x, groups)?;
    x.apply_op3_no_bwd(
        weight,
        bias,
        &GroupNormOp::new(groups, eps, false, Some(slope)),
    )
}

/// A drop-in for `candle_nn::GroupNorm` that runs [`group_norm`], with
/// [`forward_silu`](Self::forward_silu) for the `norm → SiLU` pairs of the ResNet blocks.
#[derive(Debug, Clone)]
pub struct GroupNorm {
    weight: Tensor,
    bias: Tensor,
    groups: usize,
    eps: f64,
}

impl GroupNorm {
    /// Same arguments as `candle_nn::GroupNorm::new`.
    pub fn new(
        weight: Tensor,
        bias: Tensor,
        num_channels: usize,
        num_groups: usize,
        eps: f64,
    ) -> Result<Self> {
        if num_groups == 0 || !num_channels.is_multiple_of(num_groups) {
            return Err(Error::Msg(format!(
                "GroupNorm: num_groups ({num_groups}) must divide num_channels ({num_channels})"
            )));
        }
        Ok(Self {
            weight,
            bias,
            groups: num_groups,
            eps,
        })
    }

    /// `silu(group_norm(x))` in one pass.
    pub fn forward_silu(&self, x: &Tensor) -> Result<Tensor> {
        group_norm(x, &self.weight, &self.bias, self.groups, self.eps, true)
    }
}

impl Module for GroupNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        group_norm(x, &self.weight, &self.bias, self.groups, self.eps, false)
    }
}

/// Shape of one call: images of `channels` channels of `plane` elements each.
#[derive(Debug, Clone, Copy)]
struct Dims {
    channels: usize,
    plane: usize,
    groups: usize,
}

impl Dims {
    fn new(x: &Layout, affine: &[&Layout], groups: usize) -> Result<Self> {
        let dims = x.dims();
        if dims.len() < 3 || groups == 0 || !dims[1].is_multiple_of(groups) {
            return Err(Error::Msg(format!(
                "group_norm: {groups} groups for input {dims:?}"
            )));
        }
        for l in affine {
            if l.dims() != [dims[1]] {
                return Err(Error::Msg(format!(
                    "group_norm: weight/bias of shape {:?} for {} channels",
                    l.dims(),
                    dims[1]
                )));
            }
        }
        Ok(Self {
            channels: dims[1],
            plane: dims[2..].iter().product(),
            groups,
        })
    }

    /// Elements of one (image, group) block.
    fn block(&self) -> usize {
        self.channels / self.groups * self.plane
    }
}

/// Σ f(x) over `xs`, in 16 lanes of `T` per 1024 elements (so it vectorises) and f64 across.
#[inline(always)]
fn lane_sum<T: Element>(xs: &[T], f: impl Fn(T) -> T) -> f64 {
    let mut total = 0f64;
    for chunk in xs.chunks(1024) {
        let mut lanes = [T::zero(); 16];
        let mut it = chunk.chunks_exact(16);
        for c in &mut it {
            for (l, &v) in lanes.iter_mut().zip(c) {
                *l += f(v);
            }
        }
        for (l, &v) in lanes.iter_mut().zip(it.remainder()) {
            *l += f(v);
        }
        total += lanes.iter().map(|l| l.to_f64()).sum::<f64>();
    }
    total
}

/// Mean and 1/√(var + eps) of one block (two passes: the centred variance does not cancel).
#[inline(always)]
fn moments<T: Element>(block: &[T], eps: f64) -> (f64, f64) {
    let n = block.len().max(1) as f64;
    let mean = lane_sum(block, |v| v) / n;
    let m = T::from_f64(mean);
    let var = lane_sum(block, |v| (v - m) * (v - m)) / n;
    (mean, 1.0 / (var + eps).sqrt())
}

#[inline(always)]
fn forward_block<T: Element>(
    x: &[T],
    y: &mut [MaybeUninit<T>],
    affine: (&[T], &[T]),
    eps: f64,
    (silu, prelu): (bool, Option<f64>),
    plane: usize,
) -> (f64, f64) {
    let (weight, bias) = affine;
    let (mean, rstd) = moments(x, eps);
    for (c, (xs, ys)) in x.chunks(plane).zip(y.chunks_mut(plane)).enumerate() {
        let a = weight[c].to_f64() * rstd;
        let (a, b) = (T::from_f64(a), T::from_f64(bias[c].to_f64() - mean * a));
        if silu {
            for (o, &v) in ys.iter_mut().zip(xs) {
                let z = a * v + b;
                o.write(z * z.sigmoid());
            }
        } else if let Some(slope) = prelu {
            let slope = T::from_f64(slope);
            for (o, &v) in ys.iter_mut().zip(xs) {
                let z = a * v + b;
                o.write(if z > T::zero() { z } else { z * slope });
            }
        } else {
            for (o, &v) in ys.iter_mut().zip(xs) {
                o.write(a * v + b);
            }
        }
    }
    (mean, rstd)
}

/// Gradients of one block: writes `dx` and returns (Σ dz·x̂, Σ dz) per channel, the block's
/// shares of the weight and bias gradients (dz = gradient at the GroupNorm output).
#[inline(always)]
fn backward_block<T: Element>(
    x: &[T],
    dy: &[T],
    dx: &mut [MaybeUninit<T>],
    affine: (&[T], &[T]),
    (eps, cached): (f64, Option<(f64, f64)>),
    silu: bool,
    plane: usize,
) -> Vec<(f64, f64)> {
    let (weight, bias) = affine;
    let (mean, rstd) = cached.unwrap_or_else(|| moments(x, eps));
    let coeffs: Vec<(T, T)> = (0..weight.len())
        .map(|c| {
            let a = weight[c].to_f64() * rstd;
            (T::from_f64(a), T::from_f64(bias[c].to_f64() - mean * a))
        })
        .collect();
    let dz = |z: T, g: T| -> T {
        if silu {
            let s = z.sigmoid();
            g * s * (T::one() + z * (T::one() - s))
        } else {
            g
        }
    };
    // Pass 1: per channel Σ dz and Σ dz·x (in 16 lanes per 1024 elements, f64 across).
    let mut sums = Vec::with_capacity(weight.len());
    for (c, (xs, gs)) in x.chunks(plane).zip(dy.chunks(plane)).enumerate() {
        let (a, b) = coeffs[c];
        let (mut s_dz, mut s_dzx) = (0f64, 0f64);
        for (xc, gc) in xs.chunks(1024).zip(gs.chunks(1024)) {
            let mut l_dz = [T::zero(); 16];
            let mut l_dzx = [T::zero(); 16];
            let (mut xi, mut gi) = (xc.chunks_exact(16), gc.chunks_exact(16));
            for (xv, gv) in (&mut xi).zip(&mut gi) {
                for ((sd, sdx), (&xl, &gl)) in
                    l_dz.iter_mut().zip(&mut l_dzx).zip(xv.iter().zip(gv))
                {
                    let d = dz(a * xl + b, gl);
                    *sd += d;
                    *sdx += d * xl;
                }
            }
            for (l, (&xv, &gv)) in xi.remainder().iter().zip(gi.remainder()).enumerate() {
                let d = dz(a * xv + b, gv);
                l_dz[l] += d;
                l_dzx[l] += d * xv;
            }
            s_dz += l_dz.iter().map(|v| v.to_f64()).sum::<f64>();
            s_dzx += l_dzx.iter().map(|v| v.to_f64()).sum::<f64>();
        }
        // Σ dz·x̂ = rstd·(Σ dz·x − mean·Σ dz).
        sums.push((rstd * (s_dzx - mean * s_dz), s_dz));
    }
    // dx = rstd·(γ·dz − mean(γ·dz) − x̂·mean(γ·dz·x̂)) over the block.
    let m = x.len().max(1) as f64;
    let (mut m1, mut m2) = (0f64, 0f64);
    for (c, &(dzx, dz_sum)) in sums.iter().enumerate() {
        let g = weight[c].to_f64();
        m1 += g * dz_sum;
        m2 += g * dzx;
    }
    let (m1, m2) = (m1 / m, m2 / m);
    let beta = T::from_f64(-rstd * rstd * m2);
    let c0 = T::from_f64(-rstd * m1 + mean * rstd * rstd * m2);
    for (c, ((xs, gs), out)) in x
        .chunks(plane)
        .zip(dy.chunks(plane))
        .zip(dx.chunks_mut(plane))
        .enumerate()
    {
        let (a, b) = coeffs[c];
        let alpha = T::from_f64(rstd * weight[c].to_f64());
        for ((o, &xv), &gv) in out.iter_mut().zip(xs).zip(gs) {
            o.write(alpha * dz(a * xv + b, gv) + beta * xv + c0);
        }
    }
    sums
}

simd_dispatch! {
    fn forward_block_simd<T: Element>(
        x: &[T], y: &mut [MaybeUninit<T>], affine: (&[T], &[T]), eps: f64,
        act: (bool, Option<f64>), plane: usize,
    ) -> (f64, f64) => forward_block
}

simd_dispatch! {
    fn backward_block_simd<T: Element>(
        x: &[T], dy: &[T], dx: &mut [MaybeUninit<T>], affine: (&[T], &[T]),
        eps: (f64, Option<(f64, f64)>), silu: bool, plane: usize,
    ) -> Vec<(f64, f64)> => backward_block
}

/// GroupNorm (+ SiLU, or + PReLU without gradients) forward, CustomOp3 over (x, weight, bias).
#[derive(Debug)]
struct GroupNormOp {
    groups: usize,
    eps: f64,
    silu: bool,
    /// A PReLU slope: only through [`group_norm_prelu_inference`], which has no backward.
    prelu: Option<f64>,
    /// Mean and 1/std of every (image, group) block, kept by the forward for the backward
    /// (candle hands the backward this same op), which so reads `x` twice instead of four
    /// times.
    moments: std::sync::Mutex<Vec<(f64, f64)>>,
}

impl GroupNormOp {
    fn new(groups: usize, eps: f64, silu: bool, prelu: Option<f64>) -> Self {
        Self {
            groups,
            eps,
            silu,
            prelu,
            moments: std::sync::Mutex::new(Vec::new()),
        }
    }
}

impl GroupNormOp {
    fn run<T: Element>(
        &self,
        (s1, l1): (&CpuStorage, &Layout),
        (s2, l2): (&CpuStorage, &Layout),
        (s3, l3): (&CpuStorage, &Layout),
    ) -> Result<(CpuStorage, Shape)> {
        let d = Dims::new(l1, &[l2, l3], self.groups)?;
        let x = contiguous::<T>(s1, l1)?;
        let w = contiguous::<T>(s2, l2)?;
        let b = contiguous::<T>(s3, l3)?;
        let mut y = uninit::<T>(x.len());
        let per_group = d.channels / d.groups;
        let moments: Vec<(f64, f64)> = y
            .par_chunks_mut(d.block().max(1))
            .zip(x.par_chunks(d.block().max(1)))
            .enumerate()
            .map(|(i, (yb, xb))| {
                let c0 = (i % d.groups) * per_group;
                let affine = (&w[c0..c0 + per_group], &b[c0..c0 + per_group]);
                let act = (self.silu, self.prelu);
                forward_block_simd(xb, yb, affine, self.eps, act, d.plane)
            })
            .collect();
        if let Ok(mut m) = self.moments.lock() {
            *m = moments;
        }
        // SAFETY: the blocks cover y, and forward_block writes every element of its block.
        let y = unsafe { assume_init(y) };
        Ok((T::to_cpu_storage_owned(y), l1.shape().clone()))
    }
}

impl CustomOp3 for GroupNormOp {
    fn name(&self) -> &'static str {
        "segdiff-group-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        by_element_type!(self.name(), s1.dtype(), T => self.run::<T>((s1, l1), (s2, l2), (s3, l3)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        if self.prelu.is_some() {
            return Err(Error::Msg(
                "group_norm with PReLU has no backward (group_norm_prelu_inference)".into(),
            ));
        }
        let affine = Tensor::stack(&[weight.detach(), bias.detach()], 0)?;
        let packed = x.apply_op3_no_bwd(dy, &affine, &GroupNormGrad(self))?;
        let (n, c) = (x.elem_count(), x.dim(1)?);
        let dx = x
            .track_op()
            .then(|| packed.narrow(0, 0, n)?.reshape(x.shape()))
            .transpose()?;
        let dw = weight
            .track_op()
            .then(|| packed.narrow(0, n, c))
            .transpose()?;
        let db = bias
            .track_op()
            .then(|| packed.narrow(0, n + c, c))
            .transpose()?;
        Ok((dx, dw, db))
    }
}

impl GroupNormOp {
    /// The backward as a no-grad op over (x, dy, [weight; bias]): returns `dx` flattened,
    /// followed by `dweight` and `dbias`.
    fn run_backward<T: Element>(
        &self,
        (s1, l1): (&CpuStorage, &Layout),
        (s2, l2): (&CpuStorage, &Layout),
        (s3, l3): (&CpuStorage, &Layout),
    ) -> Result<(CpuStorage, Shape)> {
        let d = Dims::new(l1, &[], self.groups)?;
        if l2.dims() != l1.dims() || l3.dims() != [2, d.channels] {
            return Err(Error::Msg(format!(
                "group_norm backward: dy {:?} / affine {:?} for input {:?}",
                l2.dims(),
                l3.dims(),
                l1.dims()
            )));
        }
        let x = contiguous::<T>(s1, l1)?;
        let dy = contiguous::<T>(s2, l2)?;
        let affine = contiguous::<T>(s3, l3)?;
        let (w, b) = affine.split_at(d.channels);
        let n = x.len();
        let mut out = uninit::<T>(n + 2 * d.channels);
        let per_group = d.channels / d.groups;
        let block = d.block().max(1);
        // The forward's moments, when this op ran the forward of this x (same block count).
        let cached = self.moments.lock().map(|m| m.clone()).unwrap_or_default();
        let cached = (cached.len() == n / block).then_some(cached);
        let sums: Vec<Vec<(f64, f64)>> = out[..n]
            .par_chunks_mut(block)
            .zip(x.par_chunks(block).zip(dy.par_chunks(block)))
            .enumerate()
            .map(|(i, (dxb, (xb, gb)))| {
                let c0 = (i % d.groups) * per_group;
                let affine = (&w[c0..c0 + per_group], &b[c0..c0 + per_group]);
                let eps = (self.eps, cached.as_ref().map(|m| m[i]));
                backward_block_simd(xb, gb, dxb, affine, eps, self.silu, d.plane)
            })
            .collect();
        // SAFETY: the blocks cover out[..n], and backward_block writes every element of its
        // block; the 2·channels after it are zeroed here.
        let mut out = unsafe {
            out[n..].iter_mut().for_each(|v| {
                v.write(T::zero());
            });
            assume_init(out)
        };
        // Blocks are ordered (image, group): sum the images in order for each channel.
        let (dw, db) = out[n..].split_at_mut(d.channels);
        for (i, s) in sums.iter().enumerate() {
            let c0 = (i % d.groups) * per_group;
            for (j, &(dzx, dz)) in s.iter().enumerate() {
                dw[c0 + j] += T::from_f64(dzx);
                db[c0 + j] += T::from_f64(dz);
            }
        }
        Ok((
            T::to_cpu_storage_owned(out),
            Shape::from(n + 2 * d.channels),
        ))
    }
}

/// The backward op: same parameters, applied with `apply_op3_no_bwd` to (x, dy, affine).
struct GroupNormGrad<'a>(&'a GroupNormOp);

impl CustomOp3 for GroupNormGrad<'_> {
    fn name(&self) -> &'static str {
        "segdiff-group-norm-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        by_element_type!(self.name(), s1.dtype(), T => self.0.run_backward::<T>((s1, l1), (s2, l2), (s3, l3)))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Var};

    use super::*;

    fn values(n: usize, seed: u64, scale: f64, offset: f64) -> Vec<f64> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                ((s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) * scale + offset
            })
            .collect()
    }

    fn tensor(shape: &[usize], seed: u64, scale: f64, offset: f64, dtype: DType) -> Tensor {
        let n = shape.iter().product();
        Tensor::from_vec(values(n, seed, scale, offset), shape, &Device::Cpu)
            .and_then(|t| t.to_dtype(dtype))
            .unwrap()
    }

    fn reference(x: &Tensor, w: &Tensor, b: &Tensor, groups: usize, silu: bool) -> Tensor {
        let y = candle_nn::GroupNorm::new(w.clone(), b.clone(), x.dim(1).unwrap(), groups, 1e-5)
            .unwrap()
            .forward(x)
            .unwrap();
        if silu {
            y.silu().unwrap()
        } else {
            y
        }
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        assert_eq!(a.dims(), b.dims());
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    }

    /// (shape, groups): odd planes, 3-D input, one channel per group, large offset (tests the
    /// centred variance).
    const CASES: &[(&[usize], usize, f64)] = &[
        (&[2, 8, 5, 7], 4, 0.0),
        (&[1, 32, 16, 16], 8, 3.0),
        (&[3, 6, 9], 3, 0.0),
        (&[2, 4, 3, 3], 4, -50.0),
        (&[1, 64, 33, 31], 32, 1.0),
    ];

    #[test]
    fn prelu_inference_matches_group_norm_then_prelu() {
        let x = Tensor::randn(0f32, 2.0, (3, 8, 5, 7), &Device::Cpu).unwrap();
        let w = Tensor::ones(8, DType::F32, &Device::Cpu).unwrap();
        let b = Tensor::zeros(8, DType::F32, &Device::Cpu).unwrap();
        for (groups, slope) in [(8, 0.25), (2, -0.7)] {
            let got = group_norm_prelu_inference(&x, &w, &b, groups, 1e-5, slope).unwrap();
            let z = group_norm(&x, &w, &b, groups, 1e-5, false).unwrap();
            let pos = z.relu().unwrap();
            let want = (&pos + ((&z - &pos).unwrap() * slope).unwrap()).unwrap();
            assert_eq!(max_diff(&got, &want), 0.0, "groups {groups} slope {slope}");
            let negatives = z.lt(0f32).unwrap().to_dtype(DType::F32).unwrap();
            assert!(negatives.sum_all().unwrap().to_scalar::<f32>().unwrap() > 10.0);
        }
    }

    #[test]
    fn forward_matches_candle_group_norm_and_silu() {
        let mut worst = 0f64;
        for (i, &(shape, groups, offset)) in CASES.iter().enumerate() {
            let c = shape[1];
            let x = tensor(shape, i as u64, 2.0, offset, DType::F32);
            let w = tensor(&[c], 100 + i as u64, 0.5, 1.0, DType::F32);
            let b = tensor(&[c], 200 + i as u64, 0.5, 0.0, DType::F32);
            for silu in [false, true] {
                let got = group_norm(&x, &w, &b, groups, 1e-5, silu).unwrap();
                let err = max_diff(&got, &reference(&x, &w, &b, groups, silu));
                worst = worst.max(err);
                assert!(err < 2e-5, "case {i} silu {silu}: {err:.2e}");
            }
        }
        println!("group_norm forward vs candle: worst abs error {worst:.2e} (outputs O(1))");
    }

    #[test]
    fn backward_matches_candle_autograd() {
        let mut worst = 0f64;
        for (i, &(shape, groups, offset)) in CASES.iter().enumerate() {
            let c = shape[1];
            let x = Var::from_tensor(&tensor(shape, i as u64, 2.0, offset, DType::F32)).unwrap();
            let w = Var::from_tensor(&tensor(&[c], 100 + i as u64, 0.5, 1.0, DType::F32)).unwrap();
            let b = Var::from_tensor(&tensor(&[c], 200 + i as u64, 0.5, 0.0, DType::F32)).unwrap();
            let r = tensor(shape, 300 + i as u64, 1.0, 0.0, DType::F32);
            for silu in [false, true] {
                let loss = |y: Tensor| (y * &r).unwrap().sum_all().unwrap();
                let fast = loss(group_norm(&x, &w, &b, groups, 1e-5, silu).unwrap())
                    .backward()
                    .unwrap();
                let slow = loss(reference(&x, &w, &b, groups, silu))
                    .backward()
                    .unwrap();
                for (name, v) in [("x", &x), ("w", &w), ("b", &b)] {
                    let (g1, g2) = (fast.get(v).unwrap(), slow.get(v).unwrap());
                    let scale = g2.abs().unwrap().flatten_all().unwrap().max(0).unwrap();
                    let scale = scale.to_scalar::<f32>().unwrap().max(1.0) as f64;
                    let err = max_diff(g1, g2) / scale;
                    worst = worst.max(err);
                    assert!(err < 1e-4, "case {i} silu {silu} d{name}: {err:.2e}");
                }
            }
        }
        println!("group_norm backward vs candle autograd: worst relative error {worst:.2e}");
    }

    #[test]
    fn drop_in_type_matches_candle_nn() {
        let x = tensor(&[2, 16, 7, 9], 5, 1.0, 0.5, DType::F32);
        let w = tensor(&[16], 6, 0.5, 1.0, DType::F32);
        let b = tensor(&[16], 7, 0.5, 0.0, DType::F32);
        let gn = GroupNorm::new(w.clone(), b.clone(), 16, 4, 1e-5).unwrap();
        let err = max_diff(&gn.forward(&x).unwrap(), &reference(&x, &w, &b, 4, false));
        assert!(err < 2e-5, "plain: {err:.2e}");
        let err = max_diff(
            &gn.forward_silu(&x).unwrap(),
            &reference(&x, &w, &b, 4, true),
        );
        assert!(err < 2e-5, "silu: {err:.2e}");
        assert!(GroupNorm::new(w, b, 16, 5, 1e-5).is_err());
    }

    #[test]
    fn gradients_match_finite_differences_f64() {
        let shape = [2, 6, 3, 4];
        let x = tensor(&shape, 1, 1.5, 0.3, DType::F64);
        let w = tensor(&[6], 2, 0.5, 1.0, DType::F64);
        let b = tensor(&[6], 3, 0.5, 0.0, DType::F64);
        let r = tensor(&shape, 4, 1.0, 0.0, DType::F64);
        for silu in [false, true] {
            let loss = |x: &Tensor, w: &Tensor, b: &Tensor| -> f64 {
                (group_norm(x, w, b, 3, 1e-5, silu).unwrap() * &r)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f64>()
                    .unwrap()
            };
            let (xv, wv, bv) = (
                Var::from_tensor(&x).unwrap(),
                Var::from_tensor(&w).unwrap(),
                Var::from_tensor(&b).unwrap(),
            );
            let g = (group_norm(&xv, &wv, &bv, 3, 1e-5, silu).unwrap() * &r)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let eps = 1e-6;
            let mut worst = 0f64;
            for (arg, base, var) in [(0, &x, &xv), (1, &w, &wv), (2, &b, &bv)] {
                let flat = base.flatten_all().unwrap().to_vec1::<f64>().unwrap();
                let analytic = g
                    .get(var)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f64>()
                    .unwrap();
                for idx in (0..flat.len()).step_by(5) {
                    let shifted = |d: f64| {
                        let mut v = flat.clone();
                        v[idx] += d;
                        Tensor::from_vec(v, base.dims(), &Device::Cpu).unwrap()
                    };
                    let (p, m) = (shifted(eps), shifted(-eps));
                    let numeric = match arg {
                        0 => (loss(&p, &w, &b) - loss(&m, &w, &b)) / (2.0 * eps),
                        1 => (loss(&x, &p, &b) - loss(&x, &m, &b)) / (2.0 * eps),
                        _ => (loss(&x, &w, &p) - loss(&x, &w, &m)) / (2.0 * eps),
                    };
                    let err = (numeric - analytic[idx]).abs();
                    worst = worst.max(err);
                    assert!(
                        err < 1e-6 * analytic[idx].abs().max(1.0),
                        "silu {silu} arg {arg} index {idx}: numeric {numeric} analytic {}",
                        analytic[idx]
                    );
                }
            }
            println!("group_norm finite differences (silu {silu}): worst abs error {worst:.2e}");
        }
    }
}
