//! What a segmenter training run is given besides the data ([`SegmenterTrainOptions`], built
//! from a data-independent [`SegmenterRecipe`]), and the checks of both against the data.

use candle_core::Device;
use serde::{Deserialize, Serialize};

use super::augmentation::Augmentation;
use super::seg_data::SegData;
use crate::error::{EvalError, Result};
use crate::monai_unet::MonaiUNetConfig;
use crate::seg_loss::DiceCeLossConfig;
use crate::segmenter::InputNormalisation;

/// Everything [`train_segmenter`](super::train_segmenter) needs besides the data.
#[derive(Clone, Debug)]
pub struct SegmenterTrainOptions {
    /// The network; `out_channels` is the number of classes (background included).
    pub network: MonaiUNetConfig,
    /// Optional class names recorded in the spec, one per class.
    pub class_names: Option<Vec<String>>,
    /// Passes over the training set (paper: 100).
    pub epochs: usize,
    /// Images per step (default 8); the last batch of an epoch may be smaller.
    pub batch_size: usize,
    /// Initial AdamW learning rate (default 1e-3).
    pub lr: f64,
    /// AdamW decoupled weight decay (default 1e-5, MONAI tutorials; torch's default is 1e-2).
    pub weight_decay: f64,
    /// Seeds weight init, shuffling and augmentation.
    pub seed: u64,
    pub augmentation: Augmentation,
    /// MONAI `DiceCELoss` defaults unless changed.
    pub loss: DiceCeLossConfig,
    /// Raw pixel range the `[-1, 1]` images came from (recorded in the spec).
    pub input: InputNormalisation,
    /// Where to train.
    pub device: Device,
}

impl SegmenterTrainOptions {
    /// The defaults above for `network`, seed 0, no augmentation, on the CPU.
    pub fn new(network: MonaiUNetConfig) -> Self {
        Self {
            network,
            class_names: None,
            epochs: 100,
            batch_size: 8,
            lr: 1e-3,
            weight_decay: 1e-5,
            seed: 0,
            augmentation: Augmentation::default(),
            loss: DiceCeLossConfig::default(),
            input: InputNormalisation::eight_bit(),
            device: Device::Cpu,
        }
    }
}

/// The data-independent part of a segmenter training run: the network's widths and strides and
/// the optimisation schedule. [`SegmenterRecipe::options`] completes it for a dataset.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SegmenterRecipe {
    /// Channels per UNet level, top first (MONAI's 2-D tutorial: 16, 32, 64, 128, 256).
    pub channels: Vec<usize>,
    /// One stride per down level (`channels.len() − 1` entries).
    pub strides: Vec<usize>,
    /// Residual units per block (0: plain convolutions).
    pub num_res_units: usize,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub weight_decay: f64,
    pub augmentation: Augmentation,
    pub seed: u64,
}

impl Default for SegmenterRecipe {
    /// MONAI's 2-D UNet tutorial network without residual units, trained as
    /// [`SegmenterTrainOptions::new`] does: 100 epochs (paper), batch 8, lr 1e-3, decay 1e-5.
    fn default() -> Self {
        Self {
            channels: vec![16, 32, 64, 128, 256],
            strides: vec![2, 2, 2, 2],
            num_res_units: 0,
            epochs: 100,
            batch_size: 8,
            lr: 1e-3,
            weight_decay: 1e-5,
            augmentation: Augmentation::default(),
            seed: 0,
        }
    }
}

impl SegmenterRecipe {
    /// The network for images with `in_channels` channels and `num_classes` classes.
    pub fn network(&self, in_channels: usize, num_classes: usize) -> MonaiUNetConfig {
        MonaiUNetConfig::new(
            in_channels,
            num_classes,
            self.channels.clone(),
            self.strides.clone(),
            self.num_res_units,
        )
    }

    /// Full training options on `device` (Dice+CE with MONAI's defaults, 8-bit input range).
    pub fn options(
        &self,
        in_channels: usize,
        num_classes: usize,
        class_names: Option<Vec<String>>,
        device: &Device,
    ) -> SegmenterTrainOptions {
        SegmenterTrainOptions {
            class_names,
            epochs: self.epochs,
            batch_size: self.batch_size,
            lr: self.lr,
            weight_decay: self.weight_decay,
            seed: self.seed,
            augmentation: self.augmentation,
            device: device.clone(),
            ..SegmenterTrainOptions::new(self.network(in_channels, num_classes))
        }
    }
}

fn invalid(name: &'static str, value: String, reason: &'static str) -> Result<()> {
    Err(EvalError::InvalidArgument {
        name,
        value,
        reason,
    })
}

/// Checks `opts`, then `train` and `val` against its network, then the input range.
pub(super) fn validate(
    train: &SegData,
    val: Option<&SegData>,
    opts: &SegmenterTrainOptions,
) -> Result<()> {
    check_options(opts)?;
    check_data(train, val, opts)?;
    let (lo, hi) = (opts.input.pixel_min, opts.input.pixel_max);
    if !(lo.is_finite() && hi.is_finite() && hi > lo) {
        return invalid(
            "input normalisation",
            format!("{lo}..{hi}"),
            "needs finite pixel_min < pixel_max",
        );
    }
    Ok(())
}

/// The network, the schedule and the class names.
fn check_options(opts: &SegmenterTrainOptions) -> Result<()> {
    opts.network.validate()?;
    let cfg = &opts.network;
    if cfg.out_channels < 2 {
        return invalid(
            "network.out_channels",
            cfg.out_channels.to_string(),
            "the segmenter needs at least 2 classes (background and one more)",
        );
    }
    if opts.epochs == 0 {
        return invalid("epochs", "0".into(), "must be at least 1");
    }
    if opts.batch_size == 0 {
        return invalid("batch_size", "0".into(), "must be at least 1");
    }
    if !(opts.lr.is_finite() && opts.lr > 0.0) {
        return invalid("lr", opts.lr.to_string(), "must be finite and positive");
    }
    if !(opts.weight_decay.is_finite() && opts.weight_decay >= 0.0) {
        return invalid(
            "weight_decay",
            opts.weight_decay.to_string(),
            "must be finite and non-negative",
        );
    }
    if let Some(names) = &opts.class_names {
        if names.len() != cfg.out_channels {
            return invalid(
                "class_names",
                format!("{} names", names.len()),
                "needs one name per class (network.out_channels)",
            );
        }
    }
    Ok(())
}

/// The training and validation sets against the network and the augmentation.
fn check_data(train: &SegData, val: Option<&SegData>, opts: &SegmenterTrainOptions) -> Result<()> {
    let cfg = &opts.network;
    if train.is_empty() {
        return invalid("training data", "0 samples".into(), "needs at least one");
    }
    if train.channels() != cfg.in_channels {
        return invalid(
            "training image channels",
            train.channels().to_string(),
            "must equal network.in_channels",
        );
    }
    let (h, w) = train.image_size();
    let f = cfg.downsampling_factor();
    if h % f != 0 || w % f != 0 {
        return invalid(
            "training image size",
            format!("{h}x{w}"),
            "must be a multiple of the product of network.strides",
        );
    }
    if opts.augmentation.rot90 && h != w {
        return invalid(
            "augmentation.rot90",
            format!("{h}x{w} images"),
            "90° rotations need square images",
        );
    }
    train
        .masks()
        .check_classes(cfg.out_channels, "training masks")?;
    if let Some(v) = val {
        if v.is_empty() {
            return invalid("validation data", "0 samples".into(), "needs at least one");
        }
        if v.channels() != train.channels() || v.image_size() != train.image_size() {
            return Err(EvalError::ShapeMismatch {
                what: "validation (C, H, W) vs training",
                left: vec![v.channels(), v.image_size().0, v.image_size().1],
                right: vec![train.channels(), h, w],
            });
        }
        v.masks()
            .check_classes(cfg.out_channels, "validation masks")?;
    }
    Ok(())
}
