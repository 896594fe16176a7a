//! Inception-v3 image features for FID: torchvision's `inception_v3` in eval mode, up to its
//! global average pool (N×2048), with pytorch-fid's preprocessing.
//!
//! The architecture follows `torchvision/models/inception.py`: `BasicConv2d` is a bias-free
//! convolution, BatchNorm (eps 0.001, running statistics) and ReLU; the stem's max pools are 3×3
//! with stride 2; the pooling branches of Mixed_5b..Mixed_7c average 3×3 windows with stride 1,
//! padding 1 and the padding counted (`count_include_pad=True`). No `fc`, no `AuxLogits`, no
//! dropout (identity in eval mode). VarBuilder paths are torchvision's `state_dict` names
//! (`Conv2d_1a_3x3.conv.weight`, `Mixed_5b.branch5x5_1.bn.running_var`, …), so torchvision's
//! IMAGENET1K_V1 weights and timm's `inception_v3.tv_in1k` `model.safetensors` (same names)
//! load unchanged through [`InceptionV3::load`].
//!
//! Preprocessing ([`inception_input`]): images in `[0, 1]` are resized to 299×299 (bilinear,
//! `align_corners=False`, no antialias: torch's `F.interpolate`, as pytorch-fid calls it), grey
//! images are replicated to three channels, and values are mapped to `[-1, 1]` by `2x − 1`. For
//! the IMAGENET1K_V1 weights torchvision sets `transform_input=True`, which turns an
//! ImageNet-normalised input `(x − m)/s` back into `(x − m)/s · s/0.5 + (m − 0.5)/0.5 = 2x − 1`:
//! the same network input.
//!
//! These are torchvision's ImageNet weights, not the TensorFlow FID weights
//! (`pt_inception-2015-12-05`, with FID-specific pooling) that pytorch-fid loads, so the
//! distances are comparable with each other but not with published FID values.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Init, VarBuilder, VarMap};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use segdiff_unet::build_checked;

use crate::error::{EvalError, Result, WeightProblems};

/// Side of the square network input.
pub const INCEPTION_INPUT_SIZE: usize = 299;
/// Length of the pooled feature vector.
pub const INCEPTION_FEATURE_DIM: usize = 2048;
/// The smallest input side the network can take (Mixed_7a's output is then 1×1).
pub const INCEPTION_MIN_INPUT_SIZE: usize = 75;
/// torchvision's `BasicConv2d` BatchNorm eps.
const BN_EPS: f64 = 1e-3;
/// What this network is called in weight-mismatch errors.
const NETWORK: &str = "torchvision inception_v3";

/// Conv2d(bias=False) + eval-mode BatchNorm2d(eps=0.001) + ReLU.
#[derive(Clone, Debug)]
struct BasicConv2d {
    weight: Tensor,
    gamma: Tensor,
    beta: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
    stride: usize,
    /// (rows, columns), as torchvision's `padding=(ph, pw)`.
    padding: (usize, usize),
}

impl BasicConv2d {
    fn new(
        vb: VarBuilder,
        c_in: usize,
        c_out: usize,
        kernel: (usize, usize),
        stride: usize,
        padding: (usize, usize),
    ) -> candle_core::Result<Self> {
        let conv = vb.pp("conv");
        let bn = vb.pp("bn");
        Ok(Self {
            weight: conv.get_with_hints(
                (c_out, c_in, kernel.0, kernel.1),
                "weight",
                candle_nn::init::DEFAULT_KAIMING_NORMAL,
            )?,
            gamma: bn.get_with_hints(c_out, "weight", Init::Const(1.0))?,
            beta: bn.get_with_hints(c_out, "bias", Init::Const(0.0))?,
            running_mean: bn.get_with_hints(c_out, "running_mean", Init::Const(0.0))?,
            running_var: bn.get_with_hints(c_out, "running_var", Init::Const(1.0))?,
            stride,
            padding,
        })
    }

    /// A square kernel with equal padding on all sides.
    fn square(
        vb: VarBuilder,
        c_in: usize,
        c_out: usize,
        k: usize,
        stride: usize,
        padding: usize,
    ) -> candle_core::Result<Self> {
        Self::new(vb, c_in, c_out, (k, k), stride, (padding, padding))
    }
}

impl Module for BasicConv2d {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        // Eval-mode BatchNorm is a per-channel affine map; its scale is folded into the kernel
        // at each call (not at construction) so that a VarMap edited later is seen.
        let c = self.gamma.dim(0)?;
        let scale = (&self.gamma / (&self.running_var + BN_EPS)?.sqrt()?)?;
        let shift = (&self.beta - (&self.running_mean * &scale)?)?;
        let kernel = self.weight.broadcast_mul(&scale.reshape((c, 1, 1, 1))?)?;
        let (ph, pw) = self.padding;
        let y = if ph == pw {
            x.conv2d(&kernel, ph, self.stride, 1, 1)?
        } else {
            // candle pads both spatial sides equally; 1×7 / 7×1 kernels pad one side only.
            let mut padded = x.clone();
            if ph > 0 {
                padded = padded.pad_with_zeros(2, ph, ph)?;
            }
            if pw > 0 {
                padded = padded.pad_with_zeros(3, pw, pw)?;
            }
            padded.conv2d(&kernel, 0, self.stride, 1, 1)?
        };
        y.broadcast_add(&shift.reshape((1, c, 1, 1))?)?.relu()
    }
}

/// `F.avg_pool2d(x, kernel_size=3, stride=1, padding=1)` with the zero padding counted
/// (`count_include_pad=True`, torch's default): every window's sum over the zero-padded input
/// divided by 9. The sum is taken separably (rows, then columns), several times faster than
/// candle's direct pooling loop.
fn avg_pool_3x3_same(x: &Tensor) -> candle_core::Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let p = x.pad_with_zeros(2, 1, 1)?.pad_with_zeros(3, 1, 1)?;
    let rows = ((p.narrow(2, 0, h)? + p.narrow(2, 1, h)?)? + p.narrow(2, 2, h)?)?;
    let sum = ((rows.narrow(3, 0, w)? + rows.narrow(3, 1, w)?)? + rows.narrow(3, 2, w)?)?;
    sum.affine(1.0 / 9.0, 0.0)
}

/// `F.max_pool2d(x, kernel_size=3, stride=2)` (no padding, floor mode).
fn max_pool_3x3_s2(x: &Tensor) -> candle_core::Result<Tensor> {
    x.max_pool2d_with_stride(3, 2)
}

fn chain(x: &Tensor, convs: &[&BasicConv2d]) -> candle_core::Result<Tensor> {
    let mut y = x.clone();
    for c in convs {
        y = c.forward(&y)?;
    }
    Ok(y)
}

/// Mixed_5b/5c/5d: 1×1 (64) | 1×1 → 5×5 (64) | 1×1 → 3×3 → 3×3 (96) | avg pool → 1×1.
#[derive(Clone, Debug)]
struct InceptionA {
    branch1x1: BasicConv2d,
    branch5x5_1: BasicConv2d,
    branch5x5_2: BasicConv2d,
    branch3x3dbl_1: BasicConv2d,
    branch3x3dbl_2: BasicConv2d,
    branch3x3dbl_3: BasicConv2d,
    branch_pool: BasicConv2d,
}

impl InceptionA {
    fn new(vb: VarBuilder, c_in: usize, pool_features: usize) -> candle_core::Result<Self> {
        Ok(Self {
            branch1x1: BasicConv2d::square(vb.pp("branch1x1"), c_in, 64, 1, 1, 0)?,
            branch5x5_1: BasicConv2d::square(vb.pp("branch5x5_1"), c_in, 48, 1, 1, 0)?,
            branch5x5_2: BasicConv2d::square(vb.pp("branch5x5_2"), 48, 64, 5, 1, 2)?,
            branch3x3dbl_1: BasicConv2d::square(vb.pp("branch3x3dbl_1"), c_in, 64, 1, 1, 0)?,
            branch3x3dbl_2: BasicConv2d::square(vb.pp("branch3x3dbl_2"), 64, 96, 3, 1, 1)?,
            branch3x3dbl_3: BasicConv2d::square(vb.pp("branch3x3dbl_3"), 96, 96, 3, 1, 1)?,
            branch_pool: BasicConv2d::square(vb.pp("branch_pool"), c_in, pool_features, 1, 1, 0)?,
        })
    }
}

impl Module for InceptionA {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let b1 = self.branch1x1.forward(x)?;
        let b5 = chain(x, &[&self.branch5x5_1, &self.branch5x5_2])?;
        let b3 = chain(
            x,
            &[
                &self.branch3x3dbl_1,
                &self.branch3x3dbl_2,
                &self.branch3x3dbl_3,
            ],
        )?;
        let bp = self.branch_pool.forward(&avg_pool_3x3_same(x)?)?;
        Tensor::cat(&[b1, b5, b3, bp], 1)
    }
}

/// Mixed_6a (grid reduction): 3×3/2 (384) | 1×1 → 3×3 → 3×3/2 (96) | max pool 3×3/2.
#[derive(Clone, Debug)]
struct InceptionB {
    branch3x3: BasicConv2d,
    branch3x3dbl_1: BasicConv2d,
    branch3x3dbl_2: BasicConv2d,
    branch3x3dbl_3: BasicConv2d,
}

impl InceptionB {
    fn new(vb: VarBuilder, c_in: usize) -> candle_core::Result<Self> {
        Ok(Self {
            branch3x3: BasicConv2d::square(vb.pp("branch3x3"), c_in, 384, 3, 2, 0)?,
            branch3x3dbl_1: BasicConv2d::square(vb.pp("branch3x3dbl_1"), c_in, 64, 1, 1, 0)?,
            branch3x3dbl_2: BasicConv2d::square(vb.pp("branch3x3dbl_2"), 64, 96, 3, 1, 1)?,
            branch3x3dbl_3: BasicConv2d::square(vb.pp("branch3x3dbl_3"), 96, 96, 3, 2, 0)?,
        })
    }
}

impl Module for InceptionB {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let b3 = self.branch3x3.forward(x)?;
        let bd = chain(
            x,
            &[
                &self.branch3x3dbl_1,
                &self.branch3x3dbl_2,
                &self.branch3x3dbl_3,
            ],
        )?;
        let bp = max_pool_3x3_s2(x)?;
        Tensor::cat(&[b3, bd, bp], 1)
    }
}

/// Mixed_6b..6e: factorised 7×7 convolutions (1×7 and 7×1) with `channels_7x7` inner width.
#[derive(Clone, Debug)]
struct InceptionC {
    branch1x1: BasicConv2d,
    branch7x7: [BasicConv2d; 3],
    branch7x7dbl: [BasicConv2d; 5],
    branch_pool: BasicConv2d,
}

impl InceptionC {
    fn new(vb: VarBuilder, c_in: usize, c7: usize) -> candle_core::Result<Self> {
        let row = (1, 7);
        let col = (7, 1);
        let (pad_row, pad_col) = ((0, 3), (3, 0));
        let conv = |name: &str, i, o, k, p| BasicConv2d::new(vb.pp(name), i, o, k, 1, p);
        Ok(Self {
            branch1x1: conv("branch1x1", c_in, 192, (1, 1), (0, 0))?,
            branch7x7: [
                conv("branch7x7_1", c_in, c7, (1, 1), (0, 0))?,
                conv("branch7x7_2", c7, c7, row, pad_row)?,
                conv("branch7x7_3", c7, 192, col, pad_col)?,
            ],
            branch7x7dbl: [
                conv("branch7x7dbl_1", c_in, c7, (1, 1), (0, 0))?,
                conv("branch7x7dbl_2", c7, c7, col, pad_col)?,
                conv("branch7x7dbl_3", c7, c7, row, pad_row)?,
                conv("branch7x7dbl_4", c7, c7, col, pad_col)?,
                conv("branch7x7dbl_5", c7, 192, row, pad_row)?,
            ],
            branch_pool: conv("branch_pool", c_in, 192, (1, 1), (0, 0))?,
        })
    }
}

impl Module for InceptionC {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let b1 = self.branch1x1.forward(x)?;
        let b7 = chain(x, &self.branch7x7.iter().collect::<Vec<_>>())?;
        let bd = chain(x, &self.branch7x7dbl.iter().collect::<Vec<_>>())?;
        let bp = self.branch_pool.forward(&avg_pool_3x3_same(x)?)?;
        Tensor::cat(&[b1, b7, bd, bp], 1)
    }
}

/// Mixed_7a (grid reduction): 1×1 → 3×3/2 (320) | 1×1 → 1×7 → 7×1 → 3×3/2 (192) | max pool.
#[derive(Clone, Debug)]
struct InceptionD {
    branch3x3: [BasicConv2d; 2],
    branch7x7x3: [BasicConv2d; 4],
}

impl InceptionD {
    fn new(vb: VarBuilder, c_in: usize) -> candle_core::Result<Self> {
        let conv = |name: &str, i, o, k, s, p| BasicConv2d::new(vb.pp(name), i, o, k, s, p);
        Ok(Self {
            branch3x3: [
                conv("branch3x3_1", c_in, 192, (1, 1), 1, (0, 0))?,
                conv("branch3x3_2", 192, 320, (3, 3), 2, (0, 0))?,
            ],
            branch7x7x3: [
                conv("branch7x7x3_1", c_in, 192, (1, 1), 1, (0, 0))?,
                conv("branch7x7x3_2", 192, 192, (1, 7), 1, (0, 3))?,
                conv("branch7x7x3_3", 192, 192, (7, 1), 1, (3, 0))?,
                conv("branch7x7x3_4", 192, 192, (3, 3), 2, (0, 0))?,
            ],
        })
    }
}

impl Module for InceptionD {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let b3 = chain(x, &self.branch3x3.iter().collect::<Vec<_>>())?;
        let b7 = chain(x, &self.branch7x7x3.iter().collect::<Vec<_>>())?;
        let bp = max_pool_3x3_s2(x)?;
        Tensor::cat(&[b3, b7, bp], 1)
    }
}

/// Mixed_7b/7c: 1×1 (320) | 1×1 → [1×3, 3×1] (768) | 1×1 → 3×3 → [1×3, 3×1] (768) |
/// avg pool → 1×1 (192).
#[derive(Clone, Debug)]
struct InceptionE {
    branch1x1: BasicConv2d,
    branch3x3_1: BasicConv2d,
    branch3x3_2a: BasicConv2d,
    branch3x3_2b: BasicConv2d,
    branch3x3dbl_1: BasicConv2d,
    branch3x3dbl_2: BasicConv2d,
    branch3x3dbl_3a: BasicConv2d,
    branch3x3dbl_3b: BasicConv2d,
    branch_pool: BasicConv2d,
}

impl InceptionE {
    fn new(vb: VarBuilder, c_in: usize) -> candle_core::Result<Self> {
        let conv = |name: &str, i, o, k, p| BasicConv2d::new(vb.pp(name), i, o, k, 1, p);
        Ok(Self {
            branch1x1: conv("branch1x1", c_in, 320, (1, 1), (0, 0))?,
            branch3x3_1: conv("branch3x3_1", c_in, 384, (1, 1), (0, 0))?,
            branch3x3_2a: conv("branch3x3_2a", 384, 384, (1, 3), (0, 1))?,
            branch3x3_2b: conv("branch3x3_2b", 384, 384, (3, 1), (1, 0))?,
            branch3x3dbl_1: conv("branch3x3dbl_1", c_in, 448, (1, 1), (0, 0))?,
            branch3x3dbl_2: conv("branch3x3dbl_2", 448, 384, (3, 3), (1, 1))?,
            branch3x3dbl_3a: conv("branch3x3dbl_3a", 384, 384, (1, 3), (0, 1))?,
            branch3x3dbl_3b: conv("branch3x3dbl_3b", 384, 384, (3, 1), (1, 0))?,
            branch_pool: conv("branch_pool", c_in, 192, (1, 1), (0, 0))?,
        })
    }
}

impl Module for InceptionE {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let b1 = self.branch1x1.forward(x)?;
        let b3 = self.branch3x3_1.forward(x)?;
        let b3a = self.branch3x3_2a.forward(&b3)?;
        let b3b = self.branch3x3_2b.forward(&b3)?;
        let bd = chain(x, &[&self.branch3x3dbl_1, &self.branch3x3dbl_2])?;
        let bda = self.branch3x3dbl_3a.forward(&bd)?;
        let bdb = self.branch3x3dbl_3b.forward(&bd)?;
        let bp = self.branch_pool.forward(&avg_pool_3x3_same(x)?)?;
        Tensor::cat(&[b1, b3a, b3b, bda, bdb, bp], 1)
    }
}

/// torchvision's Inception-v3 up to the global average pool: `forward` maps an `N×3×H×W`
/// network input (see [`inception_input`]; H, W ≥ [`INCEPTION_MIN_INPUT_SIZE`]) to `N×2048`.
#[derive(Clone, Debug)]
pub struct InceptionV3 {
    conv2d_1a_3x3: BasicConv2d,
    conv2d_2a_3x3: BasicConv2d,
    conv2d_2b_3x3: BasicConv2d,
    conv2d_3b_1x1: BasicConv2d,
    conv2d_4a_3x3: BasicConv2d,
    mixed_5: [InceptionA; 3],
    mixed_6a: InceptionB,
    mixed_6: [InceptionC; 4],
    mixed_7a: InceptionD,
    mixed_7: [InceptionE; 2],
}

impl InceptionV3 {
    /// Builds the network from a VarBuilder whose paths are torchvision's `state_dict` names.
    /// Built from a [`VarMap`], the variables are created (conv weights Kaiming-normal,
    /// BatchNorm at the identity; see [`init_inception_seeded`] for reproducible values).
    pub fn new(vb: VarBuilder) -> Result<Self> {
        let sq = BasicConv2d::square;
        Ok(Self {
            conv2d_1a_3x3: sq(vb.pp("Conv2d_1a_3x3"), 3, 32, 3, 2, 0)?,
            conv2d_2a_3x3: sq(vb.pp("Conv2d_2a_3x3"), 32, 32, 3, 1, 0)?,
            conv2d_2b_3x3: sq(vb.pp("Conv2d_2b_3x3"), 32, 64, 3, 1, 1)?,
            conv2d_3b_1x1: sq(vb.pp("Conv2d_3b_1x1"), 64, 80, 1, 1, 0)?,
            conv2d_4a_3x3: sq(vb.pp("Conv2d_4a_3x3"), 80, 192, 3, 1, 0)?,
            mixed_5: [
                InceptionA::new(vb.pp("Mixed_5b"), 192, 32)?,
                InceptionA::new(vb.pp("Mixed_5c"), 256, 64)?,
                InceptionA::new(vb.pp("Mixed_5d"), 288, 64)?,
            ],
            mixed_6a: InceptionB::new(vb.pp("Mixed_6a"), 288)?,
            mixed_6: [
                InceptionC::new(vb.pp("Mixed_6b"), 768, 128)?,
                InceptionC::new(vb.pp("Mixed_6c"), 768, 160)?,
                InceptionC::new(vb.pp("Mixed_6d"), 768, 160)?,
                InceptionC::new(vb.pp("Mixed_6e"), 768, 192)?,
            ],
            mixed_7a: InceptionD::new(vb.pp("Mixed_7a"), 768)?,
            mixed_7: [
                InceptionE::new(vb.pp("Mixed_7b"), 1280)?,
                InceptionE::new(vb.pp("Mixed_7c"), 2048)?,
            ],
        })
    }

    /// Loads torchvision-named weights from a `.safetensors` file (any float dtype, computed in
    /// f32) onto `device`. `fc.*`, `AuxLogits.*` and `*.num_batches_tracked` are ignored; any
    /// other missing, mis-shaped or unexpected tensor is an [`EvalError::WeightMismatch`] that
    /// names them all.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let all = candle_core::safetensors::load(path, &Device::Cpu).map_err(|source| {
            EvalError::Weights {
                path: path.to_path_buf(),
                source,
            }
        })?;
        let tensors = all.into_iter().filter(|(k, _)| !is_ignored(k)).collect();
        Self::from_checked_tensors(tensors, device, path)
    }

    /// Builds the network from a name → tensor map, checking it against the architecture.
    fn from_checked_tensors(
        tensors: HashMap<String, Tensor>,
        device: &Device,
        source: &Path,
    ) -> Result<Self> {
        let (model, report, _) = build_checked(tensors, DType::F32, device, Self::new)?;
        if report.is_clean() {
            return Ok(model);
        }
        Err(EvalError::WeightMismatch {
            path: source.to_path_buf(),
            network: NETWORK,
            problems: Box::new(WeightProblems {
                missing: report.missing,
                mis_shaped: report.mis_shaped,
                unexpected: report.unexpected,
            }),
        })
    }

    /// The tensors the network reads, as (torchvision `state_dict` name, shape), in
    /// construction order; no weights are allocated.
    pub fn expected_tensors() -> Result<Vec<(String, Vec<usize>)>> {
        let (_, report, _) = build_checked(HashMap::new(), DType::F32, &Device::Cpu, Self::new)?;
        Ok(report.requested)
    }

    /// `N×2048` features of images in `[0, 1]` (`N×C×H×W`, C = 1 or 3, any size): the pool
    /// output for [`inception_input`] of them.
    pub fn features(&self, images01: &Tensor) -> Result<Tensor> {
        Ok(self.forward(&inception_input(images01)?)?)
    }

    /// [`features`](Self::features) of many images, `batch_size` at a time (preprocessing
    /// included, so that only one batch is held at 299×299).
    pub fn features_batched(&self, images01: &Tensor, batch_size: usize) -> Result<Tensor> {
        if batch_size == 0 {
            return Err(EvalError::InvalidArgument {
                name: "batch_size",
                value: "0".into(),
                reason: "must be at least 1",
            });
        }
        let n = images01.dim(0)?;
        let mut parts = Vec::with_capacity(n.div_ceil(batch_size));
        for start in (0..n).step_by(batch_size) {
            let len = batch_size.min(n - start);
            parts.push(self.features(&images01.narrow(0, start, len)?)?);
        }
        if parts.is_empty() {
            return Ok(Tensor::zeros(
                (0, INCEPTION_FEATURE_DIM),
                DType::F32,
                images01.device(),
            )?);
        }
        Ok(Tensor::cat(&parts, 0)?)
    }
}

impl Module for InceptionV3 {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (_, c, h, w) = x.dims4()?;
        if c != 3 || h < INCEPTION_MIN_INPUT_SIZE || w < INCEPTION_MIN_INPUT_SIZE {
            candle_core::bail!(
                "Inception-v3 input {:?}: needs N×3×H×W with H, W >= {INCEPTION_MIN_INPUT_SIZE} \
                 (use inception_input for images)",
                x.dims()
            );
        }
        let x = x.to_dtype(DType::F32)?;
        let mut y = chain(
            &x,
            &[
                &self.conv2d_1a_3x3,
                &self.conv2d_2a_3x3,
                &self.conv2d_2b_3x3,
            ],
        )?;
        y = max_pool_3x3_s2(&y)?;
        y = chain(&y, &[&self.conv2d_3b_1x1, &self.conv2d_4a_3x3])?;
        y = max_pool_3x3_s2(&y)?;
        for block in &self.mixed_5 {
            y = block.forward(&y)?;
        }
        y = self.mixed_6a.forward(&y)?;
        for block in &self.mixed_6 {
            y = block.forward(&y)?;
        }
        y = self.mixed_7a.forward(&y)?;
        for block in &self.mixed_7 {
            y = block.forward(&y)?;
        }
        // AdaptiveAvgPool2d((1, 1)) then flatten; dropout is the identity in eval mode.
        y.mean((2, 3))
    }
}

/// Tensors of a torchvision/timm checkpoint that the feature extractor does not use.
fn is_ignored(name: &str) -> bool {
    name.starts_with("fc.")
        || name.starts_with("AuxLogits.")
        || name.ends_with(".num_batches_tracked")
}

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
fn interpolation_matrix(out: usize, inp: usize) -> Vec<f32> {
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

/// Overwrites every variable of a VarMap filled by [`InceptionV3::new`] with values drawn from
/// `StdRng::seed_from_u64(seed)` in sorted-name order: conv weights `U(±√(6/fan_in))` (He scale,
/// so activations stay of order one through the depth), BatchNorm weight 1, bias 0, running
/// mean 0, running variance 1. For tests and untrained baselines; not torchvision's init.
pub fn init_inception_seeded(varmap: &VarMap, seed: u64) -> Result<()> {
    let data = crate::var_store::lock_vars(varmap)?;
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    let mut rng = StdRng::seed_from_u64(seed);
    for name in names {
        let var = &data[name];
        let shape = var.as_tensor().shape().clone();
        let n = shape.elem_count();
        let values: Vec<f32> = if name.ends_with("conv.weight") && shape.rank() == 4 {
            let fan_in = shape.dims()[1..].iter().product::<usize>();
            let bound = (6.0 / fan_in as f64).sqrt();
            (0..n)
                .map(|_| (bound * (2.0 * rng.random::<f64>() - 1.0)) as f32)
                .collect()
        } else if name.ends_with("bn.weight") || name.ends_with("bn.running_var") {
            vec![1.0; n]
        } else if name.ends_with("bn.bias") || name.ends_with("bn.running_mean") {
            vec![0.0; n]
        } else {
            return Err(EvalError::InvalidArgument {
                name: "varmap variable",
                value: name.clone(),
                reason: "no Inception-v3 init rule for it",
            });
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
    use std::collections::BTreeMap;

    /// Tolerance of the block parities (f32 on both sides).
    const PARTS_ATOL: f64 = 1e-4;
    /// Tolerance of the resize parities (a few float32 ulps of values in [0, 1]).
    const RESIZE_ATOL: f64 = 1e-6;

    fn parts() -> HashMap<String, Tensor> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/inception_v3_parts.safetensors");
        match candle_core::safetensors::load(&path, &Device::Cpu) {
            Ok(t) => t,
            Err(e) => panic!("cannot read {}: {e}", path.display()),
        }
    }

    fn get<'a>(t: &'a HashMap<String, Tensor>, key: &str) -> &'a Tensor {
        t.get(key)
            .unwrap_or_else(|| panic!("fixture has no tensor `{key}`"))
    }

    /// The tensors under `prefix.` with the prefix removed.
    fn block_vb(t: &HashMap<String, Tensor>, prefix: &str) -> VarBuilder<'static> {
        let p = format!("{prefix}.");
        let sub: HashMap<String, Tensor> = t
            .iter()
            .filter_map(|(k, v)| k.strip_prefix(&p).map(|s| (s.to_string(), v.clone())))
            .collect();
        VarBuilder::from_tensors(sub, DType::F32, &Device::Cpu)
    }

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
        assert_eq!(a.dims(), b.dims());
        (a.to_dtype(DType::F64).unwrap() - b.to_dtype(DType::F64).unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    }

    fn check_within(what: &str, got: &Tensor, want: &Tensor, atol: f64) {
        let err = max_abs_diff(got, want);
        println!("{what}: max abs err {err:.3e} (atol {atol:e})");
        assert!(err <= atol, "{what}: max abs err {err}");
    }

    fn check(what: &str, got: &Tensor, want: &Tensor) {
        check_within(what, got, want, PARTS_ATOL);
    }

    #[test]
    fn interpolation_weights_follow_torch_by_hand() {
        // 2 -> 4: sources -0.25 (clamped to 0), 0.25, 0.75, 1.25 (upper index clamped).
        let m = interpolation_matrix(4, 2);
        assert_eq!(m, vec![1.0, 0.0, 0.75, 0.25, 0.25, 0.75, 0.0, 1.0]);
        // 4 -> 2: sources 0.5 and 2.5, no antialias.
        let m = interpolation_matrix(2, 4);
        assert_eq!(m, vec![0.5, 0.5, 0.0, 0.0, 0.0, 0.0, 0.5, 0.5]);
        assert_eq!(interpolation_matrix(2, 2), vec![1.0, 0.0, 0.0, 1.0]);
        // 1 -> 3: every output copies the single input.
        assert_eq!(interpolation_matrix(3, 1), vec![1.0; 3]);
    }

    #[test]
    fn resize_and_preprocessing_match_torch() -> Result<()> {
        let t = parts();
        let x = get(&t, "resize.x");
        for name in ["up", "down", "mixed", "same"] {
            let want = get(&t, &format!("resize.{name}"));
            let (_, _, h, w) = want.dims4()?;
            let got = resize_bilinear(x, h, w)?;
            check_within(&format!("resize {name}"), &got, want, RESIZE_ATOL);
        }
        let pre = inception_input(get(&t, "preprocess.x"))?;
        assert_eq!(pre.dims(), &[1, 3, 299, 299]);
        let want = get(&t, "preprocess.channel0");
        for c in 0..3 {
            let got = pre.narrow(1, c, 1)?;
            check_within(&format!("preprocess channel {c}"), &got, want, RESIZE_ATOL);
        }
        assert!(inception_input(&Tensor::zeros((1, 2, 8, 8), DType::F32, &Device::Cpu)?).is_err());
        Ok(())
    }

    #[test]
    fn stem_and_blocks_match_torchvision() -> Result<()> {
        let t = parts();
        let vb = block_vb(&t, "stem");
        let stem = [
            BasicConv2d::square(vb.pp("Conv2d_1a_3x3"), 3, 32, 3, 2, 0)?,
            BasicConv2d::square(vb.pp("Conv2d_2a_3x3"), 32, 32, 3, 1, 0)?,
            BasicConv2d::square(vb.pp("Conv2d_2b_3x3"), 32, 64, 3, 1, 1)?,
        ];
        let y = max_pool_3x3_s2(&chain(get(&t, "stem.x"), &stem.iter().collect::<Vec<_>>())?)?;
        check("stem (Conv2d_1a..2b, max pool)", &y, get(&t, "stem.out"));

        let a = InceptionA::new(block_vb(&t, "inception_a"), 5, 6)?;
        let y = a.forward(get(&t, "inception_a.x"))?;
        check(
            "InceptionA(5, pool_features=6)",
            &y,
            get(&t, "inception_a.out"),
        );

        let c = InceptionC::new(block_vb(&t, "inception_c"), 6, 7)?;
        let y = c.forward(get(&t, "inception_c.x"))?;
        check(
            "InceptionC(6, channels_7x7=7)",
            &y,
            get(&t, "inception_c.out"),
        );
        Ok(())
    }

    /// `name -> shape` and the learnable-parameter total of the committed torchvision listing.
    fn torchvision_listing() -> (BTreeMap<String, Vec<usize>>, usize) {
        let text = include_str!("../tests/fixtures/inception_v3_tensors.txt");
        let mut names = BTreeMap::new();
        let mut total = None;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# total_params\t") {
                total = Some(rest.trim().parse::<usize>().unwrap());
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let cols: Vec<&str> = line.split('\t').collect();
            assert_eq!(cols.len(), 3, "bad line: {line}");
            let dims = cols[1]
                .trim_matches(|c| c == '[' || c == ']')
                .split(", ")
                .map(|d| d.parse::<usize>().unwrap())
                .collect();
            names.insert(cols[0].to_string(), dims);
        }
        (names, total.expect("no total_params line"))
    }

    #[test]
    fn requested_tensors_match_the_torchvision_state_dict() -> Result<()> {
        let requested = InceptionV3::expected_tensors()?;
        let ours: BTreeMap<String, Vec<usize>> = requested.iter().cloned().collect();
        assert_eq!(ours.len(), requested.len(), "a name was requested twice");
        let (reference, total) = torchvision_listing();
        assert_eq!(ours, reference);
        let learnable: usize = ours
            .iter()
            .filter(|(k, _)| !k.ends_with("running_mean") && !k.ends_with("running_var"))
            .map(|(_, d)| d.iter().product::<usize>())
            .sum();
        println!("{} tensors, {learnable} learnable parameters", ours.len());
        assert_eq!(learnable, total);
        Ok(())
    }

    /// Zero-cost stand-ins for every tensor the network reads.
    fn placeholder_weights() -> Result<HashMap<String, Tensor>> {
        let mut map = HashMap::new();
        for (name, dims) in InceptionV3::expected_tensors()? {
            let t = Tensor::zeros((), DType::F32, &Device::Cpu)?.broadcast_as(dims)?;
            map.insert(name, t);
        }
        Ok(map)
    }

    #[test]
    fn weight_check_names_every_problem_and_ignores_the_classifier() -> Result<()> {
        let src = Path::new("w.safetensors");
        let dev = Device::Cpu;
        let mut w = placeholder_weights()?;
        let zero = Tensor::zeros(3, DType::F32, &dev)?;
        for extra in [
            "fc.weight",
            "AuxLogits.conv0.conv.weight",
            "Mixed_5b.branch1x1.bn.num_batches_tracked",
        ] {
            w.insert(extra.into(), zero.clone());
        }
        let filtered = |w: &HashMap<String, Tensor>| {
            w.iter()
                .filter(|(k, _)| !is_ignored(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<HashMap<_, _>>()
        };
        assert!(InceptionV3::from_checked_tensors(filtered(&w), &dev, src).is_ok());

        w.remove("Mixed_6c.branch7x7dbl_3.conv.weight");
        w.insert("Mixed_7c.branch_pool.bn.running_var".into(), zero.clone());
        w.insert("Mixed_8a.conv.weight".into(), zero);
        let err = InceptionV3::from_checked_tensors(filtered(&w), &dev, src).unwrap_err();
        match &err {
            EvalError::WeightMismatch { problems, .. } => {
                assert_eq!(problems.missing, ["Mixed_6c.branch7x7dbl_3.conv.weight"]);
                assert_eq!(
                    problems.mis_shaped,
                    [(
                        "Mixed_7c.branch_pool.bn.running_var".to_string(),
                        vec![192],
                        vec![3]
                    )]
                );
                assert_eq!(problems.unexpected, ["Mixed_8a.conv.weight"]);
            }
            other => panic!("unexpected error {other:?}"),
        }
        let text = err.to_string();
        assert!(
            text.contains("w.safetensors") && text.contains("expected [192], found [3]"),
            "{text}"
        );
        Ok(())
    }

    #[test]
    fn seeded_network_gives_pooled_features_and_treats_grey_as_rgb() -> Result<()> {
        let vm = VarMap::new();
        let net = InceptionV3::new(VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu))?;
        init_inception_seeded(&vm, 3)?;
        // Smallest input the network takes, a grey image and its RGB replica.
        let grey: Vec<f32> = (0..80 * 75)
            .map(|i| ((i * 37) % 101) as f32 / 100.0)
            .collect();
        let grey = Tensor::from_vec(grey, (1, 1, 80, 75), &Device::Cpu)?;
        let small = net.forward(&grey.repeat((1, 3, 1, 1))?.affine(2.0, -1.0)?)?;
        assert_eq!(small.dims(), &[1, INCEPTION_FEATURE_DIM]);
        assert!(net
            .forward(&Tensor::zeros((1, 3, 74, 80), DType::F32, &Device::Cpu)?)
            .is_err());
        let rgb = grey.repeat((1, 3, 1, 1))?;
        let both = Tensor::cat(&[&grey.repeat((1, 3, 1, 1))?, &rgb.affine(0.5, 0.25)?], 0)?;
        let f = net.features_batched(&both, 1)?;
        assert_eq!(f.dims(), &[2, INCEPTION_FEATURE_DIM]);
        let f_grey = net.features(&grey)?;
        let diff = max_abs_diff(&f.narrow(0, 0, 1)?, &f_grey);
        assert!(diff < 1e-5, "grey vs replicated RGB: {diff}");
        let values = f.flatten_all()?.to_vec1::<f32>()?;
        assert!(values.iter().all(|v| v.is_finite() && *v >= 0.0));
        // Post-ReLU means: some features differ between the two images.
        assert!(max_abs_diff(&f.narrow(0, 0, 1)?, &f.narrow(0, 1, 1)?) > 1e-3);
        // Re-seeding with the same seed reproduces the features; another seed changes them.
        init_inception_seeded(&vm, 3)?;
        assert_eq!(max_abs_diff(&net.features(&grey)?, &f_grey), 0.0);
        init_inception_seeded(&vm, 4)?;
        assert!(max_abs_diff(&net.features(&grey)?, &f_grey) > 1e-3);
        Ok(())
    }
}
