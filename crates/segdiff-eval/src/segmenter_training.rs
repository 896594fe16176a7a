//! Training the auxiliary MONAI UNet segmenter of the paper (Konz et al. 2024, §4: a UNet trained
//! on the real images scores how faithfully generated images follow their masks).
//!
//! MONAI-tutorial recipe: Dice + cross-entropy loss ([`dice_ce_loss`]), AdamW (lr 1e-3, weight
//! decay 1e-5 as in MONAI's segmentation tutorials), the learning rate cosine-annealed to 0 over
//! all steps (torch `CosineAnnealingLR(T_max = steps, eta_min = 0)` stepped once per batch),
//! batch 8, 100 epochs (paper). Weight init ([`init_weights_seeded`]), shuffling and the
//! optional flips / 90° rotations all derive from one seed, so a run is bit-reproducible on a
//! given machine and thread count. The weights with the lowest validation loss are kept (the
//! last ones without a validation set).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::dice::{dice, DiceConfig};
use crate::error::{EvalError, Result};
use crate::label_maps::LabelMaps;
use crate::monai_unet::{init_weights_seeded, MonaiUNet, MonaiUNetConfig};
use crate::seg_loss::{dice_ce_loss, DiceCeLossConfig};
use crate::segmenter::{
    save_segmenter, InputNormalisation, SegmenterSpec, TrainingSummary, SPEC_FORMAT_VERSION,
};

/// Added to the user's seed for the data-order/augmentation stream, so that it differs from the
/// weight-init stream (`init_weights_seeded(seed)`) while both follow the one seed.
const DATA_STREAM_OFFSET: u64 = 0x9E37_79B9_7F4A_7C15;

/// In-memory training or validation data: images `(N, C, H, W)` (f32, expected in `[-1, 1]`)
/// with their class-id masks.
#[derive(Clone, Debug)]
pub struct SegData {
    images: Vec<f32>,
    channels: usize,
    masks: LabelMaps,
}

impl SegData {
    /// Pairs an `(N, C, H, W)` image tensor with `(N, H, W)` masks; values must be finite.
    pub fn new(images: &Tensor, masks: LabelMaps) -> Result<Self> {
        let (n, c, h, w) = images.dims4().map_err(|_| EvalError::BadShape {
            what: "segmenter training images",
            shape: images.dims().to_vec(),
            expected: "(N, C, H, W)",
        })?;
        let values = images
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        Self::from_vec(values, n, c, h, w, masks)
    }

    /// As [`new`](Self::new) from a row-major `(n, c, h, w)` buffer.
    pub fn from_vec(
        images: Vec<f32>,
        n: usize,
        c: usize,
        h: usize,
        w: usize,
        masks: LabelMaps,
    ) -> Result<Self> {
        if images.len() != n * c * h * w || c == 0 {
            return Err(EvalError::ShapeMismatch {
                what: "segmenter image buffer vs (N, C, H, W)",
                left: vec![images.len()],
                right: vec![n, c, h, w],
            });
        }
        if masks.shape() != (n, h, w) {
            return Err(EvalError::ShapeMismatch {
                what: "segmenter masks (N, H, W) vs images",
                left: vec![masks.samples(), masks.height(), masks.width()],
                right: vec![n, h, w],
            });
        }
        if let Some(index) = images.iter().position(|v| !v.is_finite()) {
            return Err(EvalError::NonFinite {
                what: "segmenter training images",
                index,
                value: f64::from(images[index]),
            });
        }
        Ok(Self {
            images,
            channels: c,
            masks,
        })
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.masks.samples()
    }

    /// True when there are no samples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Image channels C.
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// `(height, width)`.
    pub fn image_size(&self) -> (usize, usize) {
        (self.masks.height(), self.masks.width())
    }

    /// The masks.
    pub fn masks(&self) -> &LabelMaps {
        &self.masks
    }

    /// The images as an `(N, C, H, W)` f32 tensor.
    pub fn images(&self, device: &Device) -> Result<Tensor> {
        let (h, w) = self.image_size();
        Ok(Tensor::from_slice(
            &self.images,
            (self.len(), self.channels, h, w),
            device,
        )?)
    }

    /// Images and masks of `indices`, each sample transformed as `transforms` says.
    fn batch(
        &self,
        indices: &[usize],
        transforms: &[Transform],
        device: &Device,
    ) -> Result<(Tensor, LabelMaps)> {
        let (h, w) = self.image_size();
        let (c, hw) = (self.channels, h * w);
        let mut images = Vec::with_capacity(indices.len() * c * hw);
        let mut masks = Vec::with_capacity(indices.len() * hw);
        for (k, &i) in indices.iter().enumerate() {
            let t = transforms.get(k).copied().unwrap_or_default();
            for ch in 0..c {
                let start = (i * c + ch) * hw;
                images.extend(t.apply(&self.images[start..start + hw], h, w));
            }
            masks.extend(t.apply(self.masks.sample(i), h, w));
        }
        Ok((
            Tensor::from_vec(images, (indices.len(), c, h, w), device)?,
            LabelMaps::new(masks, indices.len(), h, w)?,
        ))
    }
}

/// Random augmentations applied to training batches (the same transform to image and mask).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Augmentation {
    /// Horizontal and vertical flips, each with probability 1/2.
    pub flips: bool,
    /// Rotation by 0, 90, 180 or 270° (uniform); square images only.
    pub rot90: bool,
}

/// One sample's augmentation: flips first, then `rot` counter-clockwise quarter turns
/// (`numpy.rot90` direction).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Transform {
    flip_h: bool,
    flip_v: bool,
    rot: u8,
}

impl Transform {
    fn draw(aug: &Augmentation, rng: &mut StdRng) -> Self {
        Self {
            flip_h: aug.flips && rng.random::<bool>(),
            flip_v: aug.flips && rng.random::<bool>(),
            rot: if aug.rot90 {
                rng.random_range(0..4u8)
            } else {
                0
            },
        }
    }

    /// The transformed `h × w` plane (row-major); rotations need `h == w` (checked up front).
    fn apply<T: Copy>(&self, plane: &[T], h: usize, w: usize) -> Vec<T> {
        let mut out = plane.to_vec();
        if self.flip_h {
            out.chunks_mut(w).for_each(|row| row.reverse());
        }
        if self.flip_v {
            out = out.chunks(w).rev().flatten().copied().collect();
        }
        for _ in 0..self.rot {
            // numpy.rot90: out[r][c] = in[c][n - 1 - r].
            let n = h;
            let src = out.clone();
            for r in 0..n {
                for c in 0..n {
                    out[r * n + c] = src[c * n + (n - 1 - r)];
                }
            }
        }
        out
    }
}

/// Everything [`train_segmenter`] needs besides the data.
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

/// One epoch's numbers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// 1-based.
    pub epoch: usize,
    /// Mean Dice+CE over the epoch's training samples (as the weights changed during it).
    pub train_loss: f64,
    /// Mean Dice+CE over the validation samples after the epoch.
    pub val_loss: Option<f64>,
    /// MONAI-mean Dice (no background, empty classes ignored) on the validation set.
    pub val_dice: Option<f64>,
    /// Learning rate of the epoch's last step.
    pub lr: f64,
    /// These weights are the best so far (and were kept).
    pub is_best: bool,
}

/// Progress reported while training.
#[derive(Clone, Debug, PartialEq)]
pub enum TrainEvent {
    /// After each optimiser step (steps and epochs 1-based).
    Step {
        epoch: usize,
        step: usize,
        steps_per_epoch: usize,
        global_step: usize,
        total_steps: usize,
        loss: f64,
        lr: f64,
    },
    /// After each epoch (and its validation).
    Epoch(EpochRecord),
}

/// A trained segmenter: the kept weights, a model built from them, its spec and the history.
#[derive(Clone, Debug)]
pub struct TrainedSegmenter {
    /// Inference model on the kept weights (no gradient tracking).
    pub model: MonaiUNet,
    /// The kept weights under PyTorch state-dict names.
    pub weights: HashMap<String, Tensor>,
    /// The spec to save beside them; `training` is always set.
    pub spec: SegmenterSpec,
    /// One record per completed epoch.
    pub history: Vec<EpochRecord>,
}

impl TrainedSegmenter {
    /// The 1-based epoch whose weights were kept.
    pub fn best_epoch(&self) -> usize {
        self.spec.training.as_ref().map_or(0, |t| t.best_epoch)
    }

    /// Writes the segmenter directory ([`save_segmenter`]).
    pub fn save(&self, dir: &Path) -> Result<()> {
        save_segmenter(dir, &self.weights, &self.spec)
    }
}

/// `CosineAnnealingLR` with `eta_min = 0`: the rate for 0-based `step` of `total_steps`,
/// `base · (1 + cos(π·step/total)) / 2`.
pub fn cosine_annealing_lr(base_lr: f64, step: usize, total_steps: usize) -> f64 {
    if total_steps == 0 {
        return base_lr;
    }
    base_lr * (1.0 + (std::f64::consts::PI * step as f64 / total_steps as f64).cos()) / 2.0
}

/// Trains a segmenter on `train`, selecting weights on `val` when given. See the module docs for
/// the recipe. A NaN or infinite loss stops training with [`EvalError::TrainingDiverged`],
/// which carries the best weights so far.
pub fn train_segmenter(
    train: &SegData,
    val: Option<&SegData>,
    opts: &SegmenterTrainOptions,
    mut progress: impl FnMut(TrainEvent),
) -> Result<TrainedSegmenter> {
    validate(train, val, opts)?;
    let device = &opts.device;
    let num_classes = opts.network.out_channels;
    let varmap = VarMap::new();
    let model = MonaiUNet::new(
        &opts.network,
        VarBuilder::from_varmap(&varmap, DType::F32, device),
    )?;
    init_weights_seeded(&varmap, opts.seed)?;
    let mut optimiser = AdamW::new(
        varmap.all_vars(),
        ParamsAdamW {
            lr: opts.lr,
            weight_decay: opts.weight_decay,
            ..Default::default()
        },
    )?;
    let mut rng = StdRng::seed_from_u64(opts.seed.wrapping_add(DATA_STREAM_OFFSET));
    let n = train.len();
    let steps_per_epoch = n.div_ceil(opts.batch_size);
    let total_steps = steps_per_epoch * opts.epochs;
    let mut order: Vec<usize> = (0..n).collect();
    let mut history: Vec<EpochRecord> = Vec::with_capacity(opts.epochs);
    let mut best: Option<Kept> = None;
    let mut global_step = 0;

    for epoch in 1..=opts.epochs {
        order.shuffle(&mut rng);
        let (mut loss_sum, mut lr) = (0.0, opts.lr);
        for (i, chunk) in order.chunks(opts.batch_size).enumerate() {
            lr = cosine_annealing_lr(opts.lr, global_step, total_steps);
            optimiser.set_learning_rate(lr);
            let transforms: Vec<Transform> = chunk
                .iter()
                .map(|_| Transform::draw(&opts.augmentation, &mut rng))
                .collect();
            let (x, y) = train.batch(chunk, &transforms, device)?;
            let loss = dice_ce_loss(&model.forward(&x)?, &y, &opts.loss)?.total;
            let value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            if !value.is_finite() {
                return Err(diverged(
                    epoch,
                    Some(i + 1),
                    value,
                    best,
                    history,
                    train,
                    val,
                    opts,
                ));
            }
            optimiser.backward_step(&loss)?;
            loss_sum += value * chunk.len() as f64;
            global_step += 1;
            progress(TrainEvent::Step {
                epoch,
                step: i + 1,
                steps_per_epoch,
                global_step,
                total_steps,
                loss: value,
                lr,
            });
        }
        let (val_loss, val_dice) = match val {
            Some(v) => {
                let (l, d) = evaluate(&model, v, opts, num_classes)?;
                if !l.is_finite() {
                    return Err(diverged(epoch, None, l, best, history, train, val, opts));
                }
                (Some(l), Some(d))
            }
            None => (None, None),
        };
        let is_best = match (val_loss, &best) {
            (Some(l), Some(b)) => b.val_loss.is_none_or(|bl| l < bl),
            _ => true,
        };
        if is_best {
            best = Some(Kept {
                epoch,
                val_loss,
                val_dice,
                weights: snapshot(&varmap)?,
            });
        }
        let record = EpochRecord {
            epoch,
            train_loss: loss_sum / n as f64,
            val_loss,
            val_dice,
            lr,
            is_best,
        };
        history.push(record.clone());
        progress(TrainEvent::Epoch(record));
    }
    let kept = best.ok_or(EvalError::InvalidArgument {
        name: "epochs",
        value: opts.epochs.to_string(),
        reason: "no epoch was run",
    })?;
    finish(kept, history, train, val, opts)
}

/// The weights kept so far and how they scored.
struct Kept {
    epoch: usize,
    val_loss: Option<f64>,
    val_dice: Option<f64>,
    weights: HashMap<String, Tensor>,
}

fn validate(train: &SegData, val: Option<&SegData>, opts: &SegmenterTrainOptions) -> Result<()> {
    let bad = |name: &'static str, value: String, reason: &'static str| {
        Err(EvalError::InvalidArgument {
            name,
            value,
            reason,
        })
    };
    opts.network.validate()?;
    let cfg = &opts.network;
    if cfg.out_channels < 2 {
        return bad(
            "network.out_channels",
            cfg.out_channels.to_string(),
            "the segmenter needs at least 2 classes (background and one more)",
        );
    }
    if opts.epochs == 0 {
        return bad("epochs", "0".into(), "must be at least 1");
    }
    if opts.batch_size == 0 {
        return bad("batch_size", "0".into(), "must be at least 1");
    }
    if !(opts.lr.is_finite() && opts.lr > 0.0) {
        return bad("lr", opts.lr.to_string(), "must be finite and positive");
    }
    if !(opts.weight_decay.is_finite() && opts.weight_decay >= 0.0) {
        return bad(
            "weight_decay",
            opts.weight_decay.to_string(),
            "must be finite and non-negative",
        );
    }
    if let Some(names) = &opts.class_names {
        if names.len() != cfg.out_channels {
            return bad(
                "class_names",
                format!("{} names", names.len()),
                "needs one name per class (network.out_channels)",
            );
        }
    }
    if train.is_empty() {
        return bad("training data", "0 samples".into(), "needs at least one");
    }
    if train.channels() != cfg.in_channels {
        return bad(
            "training image channels",
            train.channels().to_string(),
            "must equal network.in_channels",
        );
    }
    let (h, w) = train.image_size();
    let f = cfg.downsampling_factor();
    if h % f != 0 || w % f != 0 {
        return bad(
            "training image size",
            format!("{h}x{w}"),
            "must be a multiple of the product of network.strides",
        );
    }
    if opts.augmentation.rot90 && h != w {
        return bad(
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
            return bad("validation data", "0 samples".into(), "needs at least one");
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
    let (lo, hi) = (opts.input.pixel_min, opts.input.pixel_max);
    if !(lo.is_finite() && hi.is_finite() && hi > lo) {
        return bad(
            "input normalisation",
            format!("{lo}..{hi}"),
            "needs finite pixel_min < pixel_max",
        );
    }
    Ok(())
}

/// Mean loss over samples and MONAI-mean Dice of the hard predictions.
fn evaluate(
    model: &MonaiUNet,
    data: &SegData,
    opts: &SegmenterTrainOptions,
    num_classes: usize,
) -> Result<(f64, f64)> {
    let n = data.len();
    let (h, w) = data.image_size();
    let (mut loss_sum, mut preds) = (0.0, Vec::with_capacity(n * h * w));
    let indices: Vec<usize> = (0..n).collect();
    for chunk in indices.chunks(opts.batch_size) {
        let (x, y) = data.batch(chunk, &[], &opts.device)?;
        let logits = model.forward(&x)?.detach();
        let loss = dice_ce_loss(&logits, &y, &opts.loss)?.total;
        loss_sum += loss.to_dtype(DType::F64)?.to_scalar::<f64>()? * chunk.len() as f64;
        preds.extend_from_slice(LabelMaps::from_logits(&logits)?.as_slice());
    }
    let pred = LabelMaps::new(preds, n, h, w)?;
    let scores = dice(&pred, data.masks(), &DiceConfig::new(num_classes))?;
    Ok((loss_sum / n as f64, scores.mean()))
}

/// Deep copies of the current variable values (the optimiser updates them in place).
fn snapshot(varmap: &VarMap) -> Result<HashMap<String, Tensor>> {
    let data = crate::var_store::lock_vars(varmap)?;
    data.iter()
        .map(|(k, v)| Ok((k.clone(), v.as_tensor().copy()?)))
        .collect()
}

fn finish(
    kept: Kept,
    history: Vec<EpochRecord>,
    train: &SegData,
    val: Option<&SegData>,
    opts: &SegmenterTrainOptions,
) -> Result<TrainedSegmenter> {
    let (h, w) = train.image_size();
    let model = MonaiUNet::new(
        &opts.network,
        VarBuilder::from_tensors(kept.weights.clone(), DType::F32, &opts.device),
    )?;
    let spec = SegmenterSpec {
        format_version: SPEC_FORMAT_VERSION,
        network: opts.network.clone(),
        num_classes: opts.network.out_channels,
        class_names: opts.class_names.clone(),
        image_size: [h, w],
        input: opts.input,
        training: Some(TrainingSummary {
            epochs: history.len(),
            best_epoch: kept.epoch,
            best_val_loss: kept.val_loss,
            best_val_dice: kept.val_dice,
            seed: opts.seed,
            batch_size: opts.batch_size,
            lr: opts.lr,
            weight_decay: opts.weight_decay,
            flips: opts.augmentation.flips,
            rot90: opts.augmentation.rot90,
            train_samples: train.len(),
            val_samples: val.map_or(0, SegData::len),
        }),
    };
    Ok(TrainedSegmenter {
        model,
        weights: kept.weights,
        spec,
        history,
    })
}

#[allow(clippy::too_many_arguments)]
fn diverged(
    epoch: usize,
    step: Option<usize>,
    value: f64,
    best: Option<Kept>,
    history: Vec<EpochRecord>,
    train: &SegData,
    val: Option<&SegData>,
    opts: &SegmenterTrainOptions,
) -> EvalError {
    let best_so_far = best
        .and_then(|kept| finish(kept, history, train, val, opts).ok())
        .map(Box::new);
    EvalError::TrainingDiverged {
        epoch,
        step,
        value,
        best_so_far,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_schedule_matches_torch_closed_form() {
        assert_eq!(cosine_annealing_lr(1e-3, 0, 100), 1e-3);
        assert!((cosine_annealing_lr(1e-3, 50, 100) - 5e-4).abs() < 1e-18);
        assert!(
            (cosine_annealing_lr(1e-3, 25, 100) - 1e-3 * (1.0 + 0.5f64.sqrt()) / 2.0).abs() < 1e-18
        );
        assert!(cosine_annealing_lr(1e-3, 100, 100).abs() < 1e-18);
    }

    #[test]
    fn transforms_match_numpy() {
        // [[1,2,3],[4,5,6],[7,8,9]]
        let p: Vec<u32> = (1..=9).collect();
        let t = |flip_h, flip_v, rot| Transform {
            flip_h,
            flip_v,
            rot,
        };
        // np.fliplr, np.flipud, np.rot90 (k=1, 2).
        assert_eq!(
            t(true, false, 0).apply(&p, 3, 3),
            [3, 2, 1, 6, 5, 4, 9, 8, 7]
        );
        assert_eq!(
            t(false, true, 0).apply(&p, 3, 3),
            [7, 8, 9, 4, 5, 6, 1, 2, 3]
        );
        assert_eq!(
            t(false, false, 1).apply(&p, 3, 3),
            [3, 6, 9, 2, 5, 8, 1, 4, 7]
        );
        assert_eq!(
            t(false, false, 2).apply(&p, 3, 3),
            [9, 8, 7, 6, 5, 4, 3, 2, 1]
        );
        // np.rot90(np.flipud(np.fliplr(p))) = np.rot90(rot180(p)) = rot270(p).
        assert_eq!(
            t(true, true, 1).apply(&p, 3, 3),
            t(false, false, 3).apply(&p, 3, 3)
        );
        // Non-square flips.
        assert_eq!(
            t(true, true, 0).apply(&[1, 2, 3, 4, 5, 6], 2, 3),
            [6, 5, 4, 3, 2, 1]
        );
    }

    #[test]
    fn batches_apply_one_transform_to_image_and_mask() -> Result<()> {
        // 2 channels; channel 1 = channel 0 + 10; the mask equals channel 0.
        let mask: Vec<u32> = (0..4).collect();
        let img: Vec<f32> = (0..4).chain(10..14).map(|v| v as f32).collect();
        let data = SegData::from_vec(img, 1, 2, 2, 2, LabelMaps::new(mask, 1, 2, 2)?)?;
        let t = Transform {
            flip_h: true,
            flip_v: false,
            rot: 1,
        };
        let (x, y) = data.batch(&[0], &[t], &Device::Cpu)?;
        let x = x.flatten_all()?.to_vec1::<f32>()?;
        let want = t.apply(&[0u32, 1, 2, 3], 2, 2);
        assert_eq!(y.as_slice(), &want[..]);
        let as_f: Vec<f32> = want.iter().map(|&v| v as f32).collect();
        assert_eq!(&x[..4], &as_f[..]);
        assert_eq!(
            x[4..].to_vec(),
            as_f.iter().map(|v| v + 10.0).collect::<Vec<_>>()
        );
        Ok(())
    }

    #[test]
    fn rejects_bad_inputs() -> Result<()> {
        let masks = LabelMaps::new(vec![0; 2 * 8 * 6], 2, 8, 6)?;
        let data = SegData::from_vec(vec![0.0; 2 * 8 * 6], 2, 1, 8, 6, masks)?;
        let mut opts =
            SegmenterTrainOptions::new(MonaiUNetConfig::new(1, 3, vec![4, 8], vec![2], 0));
        opts.augmentation.rot90 = true;
        let err = train_segmenter(&data, None, &opts, |_| {}).unwrap_err();
        assert!(err.to_string().contains("rot90"), "{err}");
        opts.augmentation.rot90 = false;
        opts.lr = f64::NAN;
        assert!(train_segmenter(&data, None, &opts, |_| {}).is_err());
        let bad_masks = LabelMaps::new(vec![3; 2 * 8 * 6], 2, 8, 6)?;
        let bad = SegData::from_vec(vec![0.0; 2 * 8 * 6], 2, 1, 8, 6, bad_masks)?;
        opts.lr = 1e-3;
        assert!(matches!(
            train_segmenter(&bad, None, &opts, |_| {}),
            Err(EvalError::ClassOutOfRange { .. })
        ));
        assert!(matches!(
            SegData::from_vec(
                vec![f32::NAN; 8 * 6],
                1,
                1,
                8,
                6,
                LabelMaps::new(vec![0; 8 * 6], 1, 8, 6)?
            ),
            Err(EvalError::NonFinite { index: 0, .. })
        ));
        Ok(())
    }

    #[test]
    fn divergence_names_the_step_and_keeps_the_best_epoch() -> Result<()> {
        // A learning rate of 1e10 blows the weights up within a few updates (1e20 and more
        // overflow the instance norm already in epoch 1's validation).
        let (n, h, w) = (4, 8, 8);
        let masks: Vec<u32> = (0..n * h * w).map(|i| u32::from(i % 7 == 0)).collect();
        let img: Vec<f32> = masks.iter().map(|&m| m as f32 * 2.0 - 1.0).collect();
        let data = SegData::from_vec(img, n, 1, h, w, LabelMaps::new(masks, n, h, w)?)?;
        let mut opts =
            SegmenterTrainOptions::new(MonaiUNetConfig::new(1, 2, vec![4, 8], vec![2], 0));
        opts.batch_size = 4;
        opts.epochs = 5;
        opts.lr = 1e10;
        // Epoch 1 ends with finite (huge) weights; a later training step or validation pass
        // overflows.
        let err = train_segmenter(&data, Some(&data), &opts, |_| {}).unwrap_err();
        let text = err.to_string();
        println!("{text}");
        let EvalError::TrainingDiverged {
            epoch,
            step,
            value,
            best_so_far: Some(best),
        } = err
        else {
            panic!("expected divergence with kept weights: {text}");
        };
        assert!(epoch >= 2 && !value.is_finite());
        let at = match step {
            Some(s) => format!("training loss {value} in epoch {epoch}, step {s};"),
            None => format!("validation loss {value} in epoch {epoch};"),
        };
        assert!(text.contains(&at), "{text}");
        assert!(text.contains(&format!("weights of epoch {} kept", best.best_epoch())));
        assert!(best.best_epoch() < epoch);
        assert_eq!(best.history.len(), epoch - 1);
        for (name, t) in &best.weights {
            let v = t.flatten_all()?.to_vec1::<f32>()?;
            assert!(v.iter().all(|x| x.is_finite()), "{name} is not finite");
        }
        Ok(())
    }
}
