//! torchvision's ResNet-50 trunk (He et al. 2016, "Deep residual learning"; torchvision's v1.5
//! variant with the stride on the 3×3 convolution of each Bottleneck), without the classifier:
//! conv1 7×7/2 → bn1 → ReLU → max pool 3×3/2 (padding 1) → layer1..layer4 of [3, 4, 6, 3]
//! Bottlenecks (expansion 4) → global average pool → (N, 2048).
//!
//! Tensor names are torchvision's (`conv1.weight`, `bn1.running_mean`, `layer1.0.conv1.weight`,
//! `layer1.0.downsample.0.weight`, `layer1.0.downsample.1.bias`, …), so an ImageNet state dict
//! loads unchanged through `VarBuilder::from_tensors` or a safetensors file (`fc.*` and
//! `num_batches_tracked` are simply never asked for). [`resnet50_parameter_shapes`] lists them.
//!
//! Design:
//! - **Frozen BatchNorm** (detectron2's `FrozenBatchNorm2d`): y = (x − running_mean) /
//!   sqrt(running_var + 1e-5) · weight + bias, with eval-mode semantics in training and inference
//!   alike. `weight`/`bias` train; `running_mean`/`running_var` are constants: fetched with the
//!   VarBuilder (so they load and save with the rest, and on a VarMap-backed builder they do sit
//!   in the VarMap as `Var`s) but detached in the forward pass, so they get no gradient and
//!   candle's optimisers, which only step variables that have one, never change them. Small
//!   batches of medical images make batch statistics noisy; frozen statistics are what detectron2
//!   and most fine-tuning of ImageNet trunks do.
//! - **Initialisation** (a VarMap-backed builder; a tensor-backed one just loads): torchvision's
//!   scheme. Convolutions Kaiming-normal with fan_out and the ReLU gain; BatchNorm weight 1,
//!   bias 0, running mean 0, running variance 1; and `zero_init_residual` (the last BatchNorm
//!   weight of each Bottleneck is 0), so an untrained 50-layer stack starts as a chain of
//!   identities plus the projection shortcuts.
//! - **Grey input**: with `in_channels` 1 the image is repeated to 3 channels before conv1, so the
//!   weights stay 3-channel and ImageNet weights load unchanged.
//! - Convolutions run on segdiff's CPU kernels ([`segdiff_unet::cpu_kernels::conv2d`], candle's
//!   conv elsewhere); torchvision's convolutions have no bias.
//! - The 3×3/2 max pool is composed from `maximum` over strided views of a −∞-padded input
//!   (`max_pool_3x3_s2_p1`): candle's `max_pool2d` has no backward when kernel ≠ stride.

use std::collections::BTreeMap;

use candle_core::{Tensor, D};
use candle_nn::init::{FanInOut, NonLinearity, NormalOrUniform};
use candle_nn::{Init, VarBuilder};
use segdiff_unet::cpu_kernels::conv2d;

use crate::{MhvaeError, Result};

/// torchvision's BatchNorm epsilon.
const BN_EPS: f64 = 1e-5;
/// Bottlenecks per stage (layer1..layer4) and each stage's bottleneck width.
const BLOCKS: [usize; 4] = [3, 4, 6, 3];
const WIDTHS: [usize; 4] = [64, 128, 256, 512];
const EXPANSION: usize = 4;
const STEM_CHANNELS: usize = 64;

/// torchvision's `kaiming_normal_(mode="fan_out", nonlinearity="relu")`.
const CONV_INIT: Init = Init::Kaiming {
    dist: NormalOrUniform::Normal,
    fan: FanInOut::FanOut,
    non_linearity: NonLinearity::ReLU,
};

/// One Bottleneck's geometry: the single description both [`ResNet50::new`] and
/// [`resnet50_parameter_shapes`] walk.
#[derive(Debug, Clone, Copy)]
struct BlockSpec {
    stage: usize,
    index: usize,
    in_channels: usize,
    width: usize,
    stride: usize,
}

impl BlockSpec {
    fn out_channels(&self) -> usize {
        self.width * EXPANSION
    }

    /// torchvision adds the 1×1 projection shortcut where the shape changes.
    fn has_downsample(&self) -> bool {
        self.stride != 1 || self.in_channels != self.out_channels()
    }

    fn prefix(&self) -> String {
        format!("layer{}.{}", self.stage + 1, self.index)
    }
}

fn block_specs() -> Vec<BlockSpec> {
    let mut specs = Vec::new();
    let mut in_channels = STEM_CHANNELS;
    for (stage, (&count, &width)) in BLOCKS.iter().zip(&WIDTHS).enumerate() {
        for index in 0..count {
            let stride = if stage > 0 && index == 0 { 2 } else { 1 };
            specs.push(BlockSpec {
                stage,
                index,
                in_channels,
                width,
                stride,
            });
            in_channels = width * EXPANSION;
        }
    }
    specs
}

/// A bias-free convolution (torchvision's `conv1x1`/`conv3x3`/the 7×7 stem).
struct Conv {
    weight: Tensor,
    stride: usize,
    padding: usize,
}

impl Conv {
    fn new(
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        padding: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        Ok(Self {
            weight: vb.get_with_hints((cout, cin, k, k), "weight", CONV_INIT)?,
            stride,
            padding,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(conv2d(x, &self.weight, None, self.stride, self.padding)?)
    }
}

/// detectron2's `FrozenBatchNorm2d` (see the module docs).
struct FrozenBatchNorm {
    weight: Tensor,
    bias: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
}

impl FrozenBatchNorm {
    /// `zero_weight`: torchvision's `zero_init_residual` for a Bottleneck's last norm.
    fn new(channels: usize, zero_weight: bool, vb: VarBuilder) -> Result<Self> {
        let w_init = Init::Const(if zero_weight { 0.0 } else { 1.0 });
        Ok(Self {
            weight: vb.get_with_hints(channels, "weight", w_init)?,
            bias: vb.get_with_hints(channels, "bias", Init::Const(0.0))?,
            running_mean: vb.get_with_hints(channels, "running_mean", Init::Const(0.0))?,
            running_var: vb.get_with_hints(channels, "running_var", Init::Const(1.0))?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // y = x·scale + shift with scale = w / sqrt(var + ε), shift = b − mean·scale: the
        // statistics are constants, detached so no gradient reaches them.
        let c = self.weight.dim(0)?;
        let inv_std = (self.running_var.detach() + BN_EPS)?.sqrt()?.recip()?;
        let scale = (&self.weight * inv_std)?;
        let shift = (&self.bias - (self.running_mean.detach() * &scale)?)?;
        let (scale, shift) = (scale.reshape((1, c, 1, 1))?, shift.reshape((1, c, 1, 1))?);
        Ok(x.broadcast_mul(&scale)?.broadcast_add(&shift)?)
    }
}

/// torchvision's `Bottleneck` (v1.5: stride on conv2).
struct Bottleneck {
    conv1: Conv,
    bn1: FrozenBatchNorm,
    conv2: Conv,
    bn2: FrozenBatchNorm,
    conv3: Conv,
    bn3: FrozenBatchNorm,
    downsample: Option<(Conv, FrozenBatchNorm)>,
}

impl Bottleneck {
    fn new(spec: &BlockSpec, vb: VarBuilder) -> Result<Self> {
        let (cin, w, cout) = (spec.in_channels, spec.width, spec.out_channels());
        let downsample = if spec.has_downsample() {
            let ds = vb.pp("downsample");
            Some((
                Conv::new(cin, cout, 1, spec.stride, 0, ds.pp("0"))?,
                FrozenBatchNorm::new(cout, false, ds.pp("1"))?,
            ))
        } else {
            None
        };
        Ok(Self {
            conv1: Conv::new(cin, w, 1, 1, 0, vb.pp("conv1"))?,
            bn1: FrozenBatchNorm::new(w, false, vb.pp("bn1"))?,
            conv2: Conv::new(w, w, 3, spec.stride, 1, vb.pp("conv2"))?,
            bn2: FrozenBatchNorm::new(w, false, vb.pp("bn2"))?,
            conv3: Conv::new(w, cout, 1, 1, 0, vb.pp("conv3"))?,
            bn3: FrozenBatchNorm::new(cout, true, vb.pp("bn3"))?,
            downsample,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.bn1.forward(&self.conv1.forward(x)?)?.relu()?;
        let h = self.bn2.forward(&self.conv2.forward(&h)?)?.relu()?;
        let h = self.bn3.forward(&self.conv3.forward(&h)?)?;
        let identity = match &self.downsample {
            Some((conv, bn)) => bn.forward(&conv.forward(x)?)?,
            None => x.clone(),
        };
        Ok((h + identity)?.relu()?)
    }
}

/// torchvision's resnet50 trunk (no `fc`): conv1 7×7/2 + bn1 + ReLU + maxpool 3×3/2 (padding 1),
/// layer1..layer4 of Bottleneck blocks [3, 4, 6, 3] with expansion 4 (stride on conv2,
/// torchvision v1.5), global average pool → (N, 2048).
pub struct ResNet50 {
    in_channels: usize,
    conv1: Conv,
    bn1: FrozenBatchNorm,
    blocks: Vec<Bottleneck>,
}

impl ResNet50 {
    /// Width of the pooled features.
    pub const FEATURES: usize = 2048;

    /// Builds on `vb` with torchvision names (`conv1.weight`, `bn1.weight|bias|running_mean|
    /// running_var`, `layer1.0.conv1.weight`, `layer1.0.bn1.*`, `layer1.0.downsample.0.weight`,
    /// `layer1.0.downsample.1.*`, …). `in_channels` 1 repeats a grey image to 3 channels before
    /// conv1 (the weights stay 3-channel, so ImageNet weights load unchanged).
    pub fn new(in_channels: usize, vb: VarBuilder) -> Result<Self> {
        if in_channels != 1 && in_channels != 3 {
            return Err(MhvaeError::InvalidArgument {
                name: "in_channels",
                value: in_channels.to_string(),
                reason: "the ResNet-50 trunk takes grey (1) or RGB (3) images".into(),
            });
        }
        let blocks = block_specs()
            .iter()
            .map(|s| Bottleneck::new(s, vb.pp(s.prefix())))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            in_channels,
            conv1: Conv::new(3, STEM_CHANNELS, 7, 2, 3, vb.pp("conv1"))?,
            bn1: FrozenBatchNorm::new(STEM_CHANNELS, false, vb.pp("bn1"))?,
            blocks,
        })
    }

    /// (N, C, H, W) images, C = `in_channels`, → (N, 2048) pooled features.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims();
        if dims.len() != 4 || dims[1] != self.in_channels || dims[2] == 0 || dims[3] == 0 {
            return Err(MhvaeError::BadShape {
                what: "ResNet-50 input images",
                shape: dims.to_vec(),
                expected: format!("(N, {}, H, W)", self.in_channels),
            });
        }
        let x = if self.in_channels == 1 {
            x.repeat((1, 3, 1, 1))?
        } else {
            x.clone()
        };
        let h = self.bn1.forward(&self.conv1.forward(&x)?)?.relu()?;
        let mut h = max_pool_3x3_s2_p1(&h)?;
        for block in &self.blocks {
            h = block.forward(&h)?;
        }
        Ok(h.mean(D::Minus1)?.mean(D::Minus1)?)
    }
}

/// Every parameter name and shape of the trunk (sorted), for seeded init and weight checks.
pub fn resnet50_parameter_shapes() -> Vec<(String, Vec<usize>)> {
    fn bn(out: &mut BTreeMap<String, Vec<usize>>, prefix: &str, c: usize) {
        for name in ["weight", "bias", "running_mean", "running_var"] {
            out.insert(format!("{prefix}.{name}"), vec![c]);
        }
    }
    let mut out = BTreeMap::new();
    out.insert("conv1.weight".to_string(), vec![STEM_CHANNELS, 3, 7, 7]);
    bn(&mut out, "bn1", STEM_CHANNELS);
    for s in block_specs() {
        let (p, cin, w, cout) = (s.prefix(), s.in_channels, s.width, s.out_channels());
        out.insert(format!("{p}.conv1.weight"), vec![w, cin, 1, 1]);
        bn(&mut out, &format!("{p}.bn1"), w);
        out.insert(format!("{p}.conv2.weight"), vec![w, w, 3, 3]);
        bn(&mut out, &format!("{p}.bn2"), w);
        out.insert(format!("{p}.conv3.weight"), vec![cout, w, 1, 1]);
        bn(&mut out, &format!("{p}.bn3"), cout);
        if s.has_downsample() {
            out.insert(format!("{p}.downsample.0.weight"), vec![cout, cin, 1, 1]);
            bn(&mut out, &format!("{p}.downsample.1"), cout);
        }
    }
    out.into_iter().collect()
}

/// `F.max_pool2d(x, 3, stride=2, padding=1)` on (N, C, H, W), differentiable: the input padded
/// with −∞ (as torch pads), then the maximum of the three stride-2 row views, then of the three
/// stride-2 column views (a 3×3 max is separable). Ties split the gradient (candle's `maximum`)
/// where torch gives it all to one element.
fn max_pool_3x3_s2_p1(x: &Tensor) -> Result<Tensor> {
    let (h, w) = (x.dim(2)?, x.dim(3)?);
    let rows = max_of_strided_views(x, 2, (h - 1) / 2 + 1)?;
    max_of_strided_views(&rows, 3, (w - 1) / 2 + 1)
}

/// Along `dim`, out[i] = max(p[2i], p[2i+1], p[2i+2]) for i < `out_len`, with p the input padded
/// by one −∞ in front and enough behind for the reshape (to length 2·out_len + 2).
fn max_of_strided_views(x: &Tensor, dim: usize, out_len: usize) -> Result<Tensor> {
    let len = x.dim(dim)?;
    let padded_len = 2 * out_len + 2;
    let pad = |n: usize| -> Result<Tensor> {
        let mut shape = x.dims().to_vec();
        shape[dim] = n;
        Ok(Tensor::full(f32::NEG_INFINITY, shape, x.device())?.to_dtype(x.dtype())?)
    };
    let p = Tensor::cat(&[&pad(1)?, x, &pad(padded_len - len - 1)?], dim)?;
    // narrow(d, 2·out_len) reshaped to (…, out_len, 2, …) and index 0 of the pair = p[2i + d].
    let view = |d: usize| -> Result<Tensor> {
        let mut shape = x.dims().to_vec();
        shape[dim] = out_len;
        shape.insert(dim + 1, 2);
        Ok(p.narrow(dim, d, 2 * out_len)?
            .reshape(shape)?
            .narrow(dim + 1, 0, 1)?
            .squeeze(dim + 1)?)
    };
    Ok(view(0)?.maximum(&view(1)?)?.maximum(&view(2)?)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};
    use candle_nn::VarMap;

    fn varmap_model(in_channels: usize) -> Result<(VarMap, ResNet50)> {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let model = ResNet50::new(in_channels, vb)?;
        Ok((vm, model))
    }

    #[test]
    fn resnet_output_shapes_grey_and_rgb() -> Result<()> {
        for c in [1, 3] {
            let (_vm, model) = varmap_model(c)?;
            let x = Tensor::rand(0f32, 1f32, (2, c, 64, 64), &Device::Cpu)?;
            let y = model.forward(&x)?;
            assert_eq!(y.dims(), &[2, ResNet50::FEATURES]);
            let v = y.flatten_all()?.to_vec1::<f32>()?;
            assert!(v.iter().all(|a| a.is_finite() && *a >= 0.0));
            assert!(v.iter().any(|a| *a > 0.0), "all pooled features are 0");
        }
        Ok(())
    }

    #[test]
    fn resnet_grey_equals_repeated_rgb() -> Result<()> {
        let (vm, grey) = varmap_model(1)?;
        let rgb = ResNet50::new(3, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu))?;
        let x = Tensor::rand(0f32, 1f32, (1, 1, 40, 36), &Device::Cpu)?;
        let a = grey.forward(&x)?;
        let b = rgb.forward(&Tensor::cat(&[&x, &x, &x], 1)?)?;
        let diff = (a - b)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert_eq!(diff, 0.0);
        Ok(())
    }

    #[test]
    fn resnet_rejects_bad_channels() {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        assert!(matches!(
            ResNet50::new(2, vb),
            Err(MhvaeError::InvalidArgument {
                name: "in_channels",
                ..
            })
        ));
    }

    #[test]
    fn resnet_zero_init_residual_and_frozen_statistics() -> Result<()> {
        let (vm, model) = varmap_model(3)?;
        let data = vm.data().lock().expect("varmap lock");
        let sum = |n: &str| -> f32 {
            data[n]
                .as_tensor()
                .sum_all()
                .and_then(|t| t.to_scalar())
                .unwrap()
        };
        assert_eq!(sum("layer3.5.bn3.weight"), 0.0);
        assert_eq!(sum("layer1.0.bn2.weight"), 64.0);
        assert_eq!(sum("layer1.0.downsample.1.weight"), 256.0);
        assert_eq!(sum("layer4.2.bn3.running_var"), 2048.0);
        // Kaiming normal, fan_out: std sqrt(2 / (64·7·7)) ≈ 0.0253.
        let w = data["conv1.weight"].as_tensor().flatten_all()?;
        let std = w.sqr()?.mean_all()?.sqrt()?.to_scalar::<f32>()?;
        assert!((std - 0.0253).abs() < 0.002, "conv1 std {std}");
        // A gradient reaches weight and bias, never the running statistics.
        let x = Tensor::rand(0f32, 1f32, (2, 3, 32, 32), &Device::Cpu)?;
        let grads = model.forward(&x)?.sum_all()?.backward()?;
        assert!(grads.get(data["bn1.weight"].as_tensor()).is_some());
        assert!(grads.get(data["bn1.bias"].as_tensor()).is_some());
        for (name, var) in data.iter() {
            if name.contains("running_") {
                assert!(
                    grads.get(var.as_tensor()).is_none(),
                    "{name} has a gradient"
                );
            }
        }
        Ok(())
    }

    #[test]
    fn resnet_parameter_shapes_match_torchvision() {
        let text = include_str!("../tests/fixtures/resnet50_state_dict.txt");
        let mut expected: Vec<(String, Vec<usize>)> = text
            .lines()
            .map(|l| {
                let (name, shape) = l.split_once(' ').expect("`name shape` line");
                let shape = shape.split(',').map(|d| d.parse().expect("dim")).collect();
                (name.to_string(), shape)
            })
            .collect();
        expected.sort();
        assert_eq!(expected.len(), 265);
        assert_eq!(resnet50_parameter_shapes(), expected);
    }

    /// torch's max_pool2d(3, 2, padding 1) by definition.
    fn naive_max_pool(x: &[f64], (n, c, h, w): (usize, usize, usize, usize)) -> Vec<f64> {
        let (ho, wo) = ((h - 1) / 2 + 1, (w - 1) / 2 + 1);
        let mut out = vec![f64::NEG_INFINITY; n * c * ho * wo];
        for nc in 0..n * c {
            for i in 0..ho {
                for j in 0..wo {
                    for di in 0..3 {
                        for dj in 0..3 {
                            let (y, x_) = ((2 * i + di) as isize - 1, (2 * j + dj) as isize - 1);
                            if y < 0 || x_ < 0 || y >= h as isize || x_ >= w as isize {
                                continue;
                            }
                            let v = x[nc * h * w + y as usize * w + x_ as usize];
                            let o = &mut out[nc * ho * wo + i * wo + j];
                            *o = o.max(v);
                        }
                    }
                }
            }
        }
        out
    }

    #[test]
    fn resnet_max_pool_forward_matches_naive() -> Result<()> {
        for (h, w) in [(8, 8), (7, 9), (1, 2), (5, 1), (16, 13)] {
            let dims = (2, 3, h, w);
            let x = Tensor::randn(0f64, 1f64, dims, &Device::Cpu)?;
            let ours = max_pool_3x3_s2_p1(&x)?;
            assert_eq!(ours.dims(), &[2, 3, (h - 1) / 2 + 1, (w - 1) / 2 + 1]);
            let expected = naive_max_pool(&x.flatten_all()?.to_vec1()?, dims);
            assert_eq!(ours.flatten_all()?.to_vec1::<f64>()?, expected, "{h}×{w}");
            // f32 as well (the padding value is converted).
            let ours32 = max_pool_3x3_s2_p1(&x.to_dtype(DType::F32)?)?;
            let diff = (ours32.to_dtype(DType::F64)? - &ours)?.abs()?.max_all()?;
            assert!(diff.to_scalar::<f64>()? < 1e-6);
        }
        Ok(())
    }

    #[test]
    fn resnet_max_pool_gradient_matches_finite_differences() -> Result<()> {
        // Random continuous values have no ties, where the max is piecewise linear.
        let dims = (1, 2, 7, 6);
        let x = Var::randn(0f64, 1f64, dims, &Device::Cpu)?;
        let wts = Tensor::randn(0f64, 1f64, (1, 2, 4, 3), &Device::Cpu)?;
        let loss =
            |t: &Tensor| -> Result<Tensor> { Ok((max_pool_3x3_s2_p1(t)? * &wts)?.sum_all()?) };
        let grad = loss(x.as_tensor())?.backward()?;
        let grad = grad.get(x.as_tensor()).expect("gradient").flatten_all()?;
        let grad = grad.to_vec1::<f64>()?;
        let base = x.as_tensor().flatten_all()?.to_vec1::<f64>()?;
        let eps = 1e-6;
        for (k, g) in grad.iter().enumerate() {
            let f = |s: f64| -> Result<f64> {
                let mut v = base.clone();
                v[k] += s;
                let t = Tensor::from_vec(v, dims, &Device::Cpu)?;
                Ok(loss(&t)?.to_scalar::<f64>()?)
            };
            let fd = (f(eps)? - f(-eps)?) / (2.0 * eps);
            assert!(
                (fd - g).abs() < 1e-6,
                "element {k}: fd {fd} vs backward {g}"
            );
        }
        assert!(grad.iter().filter(|g| **g != 0.0).count() >= 12);
        Ok(())
    }
}
