//! MONAI `UNet` (2-D) in candle: the segmenter that scores how faithfully generated images follow
//! their masks, and whose bottleneck features feed FID.
//!
//! Mirrors `monai.networks.nets.UNet` with `Convolution`/`ResidualUnit` blocks: each level is
//! `Sequential(down, SkipConnection(sub), up)`, so weights live under `model.0` (down),
//! `model.1.submodule…` (the next level, or the bottom layer) and `model.2` (up). A `Convolution`
//! is `conv` + `adn` with ADN ordering "NDA": InstanceNorm (no affine, eps 1e-5), Dropout (p = 0),
//! PReLU with one shared slope (`adn.A.weight`). Down convs have stride `strides[i]` and
//! padding `(k−1)/2`; up convs are `ConvTranspose2d` (weights `[in, out, k, k]`) with
//! `output_padding = stride − 1`; the skip concat is `[down output, sub-block output]`. With
//! `num_res_units = 0` the top up-conv is conv-only; otherwise every up layer is
//! `Sequential(up-conv, ResidualUnit(1 subunit))` and the top one's last conv is conv-only.

mod blocks;
mod config;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{VarBuilder, VarMap};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::error::{EvalError, Result};
use crate::label_maps::LabelMaps;
use blocks::{DecoderLayer, EncoderLayer, PRELU_INIT};
pub use config::MonaiUNetConfig;

/// One level of the UNet: `Sequential(down, SkipConnection(sub), up)`.
#[derive(Debug, Clone)]
struct Level {
    down: EncoderLayer,
    up: DecoderLayer,
}

impl Level {
    /// Level `i` (0 is the top) under `vb`: its down layer at `vb.0`, its up layer at `vb.2`.
    fn new(cfg: &MonaiUNetConfig, i: usize, vb: &VarBuilder) -> candle_core::Result<Self> {
        let n_levels = cfg.channels.len() - 1;
        let is_top = i == 0;
        let (inc, outc) = if is_top {
            (cfg.in_channels, cfg.out_channels)
        } else {
            (cfg.channels[i - 1], cfg.channels[i - 1])
        };
        let c = cfg.channels[i];
        let stride = cfg.strides[i];
        // The sub-block returns c channels (an inner level's up layer) or the bottom's.
        let upc = if i + 1 < n_levels {
            2 * c
        } else {
            c + cfg.channels[n_levels]
        };
        let down = EncoderLayer::new(cfg, inc, c, stride, vb.pp("0"))?;
        let up = DecoderLayer::new(cfg, upc, outc, stride, is_top, vb.pp("2"))?;
        Ok(Self { down, up })
    }
}

/// MONAI `UNet` for 2-D inputs `(N, in_channels, H, W)` → logits `(N, out_channels, H, W)`.
#[derive(Debug, Clone)]
pub struct MonaiUNet {
    levels: Vec<Level>,
    bottom: EncoderLayer,
    config: MonaiUNetConfig,
}

impl MonaiUNet {
    /// Builds the network, reading (or, from a `VarMap`, creating) weights under the PyTorch
    /// state-dict names.
    pub fn new(config: &MonaiUNetConfig, vb: VarBuilder) -> Result<Self> {
        config.validate()?;
        let cfg = config;
        let n_levels = cfg.channels.len() - 1;
        let mut levels = Vec::with_capacity(n_levels);
        let mut level_vb = vb.pp("model");
        for i in 0..n_levels {
            levels.push(Level::new(cfg, i, &level_vb)?);
            level_vb = level_vb.pp("1").pp("submodule");
        }
        let bottom = EncoderLayer::new(
            cfg,
            cfg.channels[n_levels - 1],
            cfg.channels[n_levels],
            1,
            level_vb,
        )?;
        Ok(Self {
            levels,
            bottom,
            config: config.clone(),
        })
    }

    /// Loads weights from a PyTorch-named safetensors file (e.g. a converted `state_dict`).
    pub fn load(config: &MonaiUNetConfig, weights: &Path, device: &Device) -> Result<Self> {
        let tensors: HashMap<String, Tensor> = candle_core::safetensors::load(weights, device)
            .map_err(|source| EvalError::Weights {
                path: weights.to_path_buf(),
                source,
            })?;
        let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
        Self::new(config, vb).map_err(|e| match e {
            EvalError::Candle(source) => EvalError::Weights {
                path: weights.to_path_buf(),
                source,
            },
            other => other,
        })
    }

    /// The configuration the network was built from.
    pub fn config(&self) -> &MonaiUNetConfig {
        &self.config
    }

    /// Length of the [`encode_features`](Self::encode_features) vectors: `channels.last()`.
    pub fn feature_dim(&self) -> usize {
        self.config.channels[self.config.channels.len() - 1]
    }

    fn check_input(&self, x: &Tensor) -> candle_core::Result<()> {
        let (_, c, h, w) = x.dims4()?;
        let f = self.config.downsampling_factor();
        if c != self.config.in_channels || h % f != 0 || w % f != 0 {
            candle_core::bail!(
                "MONAI UNet input {:?}: needs {} channels and H, W multiples of {f}",
                x.dims(),
                self.config.in_channels
            );
        }
        Ok(())
    }

    /// Global-average-pooled bottom-layer activations `(N, channels.last())`: the FID features.
    pub fn encode_features(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.check_input(x)?;
        let mut h = x.clone();
        for level in &self.levels {
            h = level.down.forward(&h)?;
        }
        self.bottom.forward(&h)?.mean((2, 3))
    }

    /// Hard segmentation: argmax of the logits over classes.
    pub fn segment(&self, x: &Tensor) -> Result<LabelMaps> {
        LabelMaps::from_logits(&self.forward(x)?)
    }
}

impl Module for MonaiUNet {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.check_input(x)?;
        let mut skips = Vec::with_capacity(self.levels.len());
        let mut h = x.clone();
        for level in &self.levels {
            h = level.down.forward(&h)?;
            skips.push(h.clone());
        }
        h = self.bottom.forward(&h)?;
        for (level, skip) in self.levels.iter().zip(skips).rev() {
            // MONAI SkipConnection: cat([x, submodule(x)], dim=1).
            h = level.up.forward(&Tensor::cat(&[&skip, &h], 1)?)?;
        }
        Ok(h)
    }
}

/// Overwrites every variable of `varmap` as PyTorch initialises a fresh MONAI UNet, drawing from
/// `StdRng::seed_from_u64(seed)` in sorted-name order: conv weights (and their biases)
/// `U(±1/√fan_in)` with `fan_in = weight.shape[1]·k·k` (kaiming-uniform with a = √5, also for
/// transposed weights as torch computes it), PReLU slopes 0.25.
pub fn init_weights_seeded(varmap: &VarMap, seed: u64) -> Result<()> {
    let data = crate::var_store::lock_vars(varmap)?;
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    let fan_in = |weight: &str| -> Option<usize> {
        let dims = data.get(weight)?.as_tensor().dims().to_vec();
        (dims.len() == 4).then(|| dims[1] * dims[2] * dims[3])
    };
    let mut rng = StdRng::seed_from_u64(seed);
    for name in names {
        let var = &data[name];
        let shape = var.as_tensor().shape().clone();
        let n = shape.elem_count();
        let values: Vec<f64> = if name.ends_with("adn.A.weight") {
            vec![PRELU_INIT; n]
        } else {
            let fan = if let Some(stem) = name.strip_suffix(".bias") {
                fan_in(&format!("{stem}.weight"))
            } else {
                fan_in(name)
            };
            let Some(fan) = fan else {
                return Err(EvalError::InvalidArgument {
                    name: "varmap variable",
                    value: name.clone(),
                    reason: "no MONAI UNet init rule for it",
                });
            };
            let bound = 1.0 / (fan as f64).sqrt();
            (0..n)
                .map(|_| bound * (2.0 * rng.random::<f64>() - 1.0))
                .collect()
        };
        let t = Tensor::from_vec(values, shape, var.as_tensor().device())?
            .to_dtype(var.as_tensor().dtype())?;
        var.set(&t)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
