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

mod blocks;
mod preprocess;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{VarBuilder, VarMap};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use segdiff_unet::build_checked;

use crate::error::{EvalError, Result, WeightProblems};
use blocks::{
    chain, max_pool_3x3_s2, BasicConv2d, InceptionA, InceptionB, InceptionC, InceptionD, InceptionE,
};
pub use preprocess::{inception_input, resize_bilinear};

/// Side of the square network input.
pub const INCEPTION_INPUT_SIZE: usize = 299;
/// Length of the pooled feature vector.
pub const INCEPTION_FEATURE_DIM: usize = 2048;
/// The smallest input side the network can take (Mixed_7a's output is then 1×1).
pub const INCEPTION_MIN_INPUT_SIZE: usize = 75;
/// What this network is called in weight-mismatch errors.
const NETWORK: &str = "torchvision inception_v3";

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
mod tests;
