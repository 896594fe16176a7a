//! The blocks of torchvision's Inception-v3: `BasicConv2d` (bias-free convolution, eval-mode
//! BatchNorm, ReLU), the pools and the Inception A–E modules.

use candle_core::{Module, Tensor};
use candle_nn::{Init, VarBuilder};

/// torchvision's `BasicConv2d` BatchNorm eps.
const BN_EPS: f64 = 1e-3;

/// Conv2d(bias=False) + eval-mode BatchNorm2d(eps=0.001) + ReLU.
#[derive(Clone, Debug)]
pub(super) struct BasicConv2d {
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
    pub(super) fn new(
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
    pub(super) fn square(
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
pub(super) fn avg_pool_3x3_same(x: &Tensor) -> candle_core::Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let p = x.pad_with_zeros(2, 1, 1)?.pad_with_zeros(3, 1, 1)?;
    let rows = ((p.narrow(2, 0, h)? + p.narrow(2, 1, h)?)? + p.narrow(2, 2, h)?)?;
    let sum = ((rows.narrow(3, 0, w)? + rows.narrow(3, 1, w)?)? + rows.narrow(3, 2, w)?)?;
    sum.affine(1.0 / 9.0, 0.0)
}

/// `F.max_pool2d(x, kernel_size=3, stride=2)` (no padding, floor mode).
pub(super) fn max_pool_3x3_s2(x: &Tensor) -> candle_core::Result<Tensor> {
    x.max_pool2d_with_stride(3, 2)
}

pub(super) fn chain(x: &Tensor, convs: &[&BasicConv2d]) -> candle_core::Result<Tensor> {
    let mut y = x.clone();
    for c in convs {
        y = c.forward(&y)?;
    }
    Ok(y)
}

/// Mixed_5b/5c/5d: 1×1 (64) | 1×1 → 5×5 (64) | 1×1 → 3×3 → 3×3 (96) | avg pool → 1×1.
#[derive(Clone, Debug)]
pub(super) struct InceptionA {
    branch1x1: BasicConv2d,
    branch5x5_1: BasicConv2d,
    branch5x5_2: BasicConv2d,
    branch3x3dbl_1: BasicConv2d,
    branch3x3dbl_2: BasicConv2d,
    branch3x3dbl_3: BasicConv2d,
    branch_pool: BasicConv2d,
}

impl InceptionA {
    pub(super) fn new(
        vb: VarBuilder,
        c_in: usize,
        pool_features: usize,
    ) -> candle_core::Result<Self> {
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
pub(super) struct InceptionB {
    branch3x3: BasicConv2d,
    branch3x3dbl_1: BasicConv2d,
    branch3x3dbl_2: BasicConv2d,
    branch3x3dbl_3: BasicConv2d,
}

impl InceptionB {
    pub(super) fn new(vb: VarBuilder, c_in: usize) -> candle_core::Result<Self> {
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
pub(super) struct InceptionC {
    branch1x1: BasicConv2d,
    branch7x7: [BasicConv2d; 3],
    branch7x7dbl: [BasicConv2d; 5],
    branch_pool: BasicConv2d,
}

impl InceptionC {
    pub(super) fn new(vb: VarBuilder, c_in: usize, c7: usize) -> candle_core::Result<Self> {
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
pub(super) struct InceptionD {
    branch3x3: [BasicConv2d; 2],
    branch7x7x3: [BasicConv2d; 4],
}

impl InceptionD {
    pub(super) fn new(vb: VarBuilder, c_in: usize) -> candle_core::Result<Self> {
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
pub(super) struct InceptionE {
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
    pub(super) fn new(vb: VarBuilder, c_in: usize) -> candle_core::Result<Self> {
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
