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

mod augmentation;
mod options;
mod seg_data;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Module, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::dice::{dice, DiceConfig};
use crate::error::{EvalError, Result};
use crate::label_maps::LabelMaps;
use crate::monai_unet::{init_weights_seeded, MonaiUNet};
use crate::seg_loss::dice_ce_loss;
use crate::segmenter::{save_segmenter, SegmenterSpec, TrainingSummary, SPEC_FORMAT_VERSION};
pub use augmentation::Augmentation;
use augmentation::Transform;
use options::validate;
pub use options::{SegmenterRecipe, SegmenterTrainOptions};
pub use seg_data::SegData;

/// Added to the user's seed for the data-order/augmentation stream, so that it differs from the
/// weight-init stream (`init_weights_seeded(seed)`) while both follow the one seed.
const DATA_STREAM_OFFSET: u64 = 0x9E37_79B9_7F4A_7C15;

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
    let mut run = Run::start(train, val, opts)?;
    for epoch in 1..=opts.epochs {
        let (train_loss, lr) = run.train_epoch(epoch, &mut progress)?;
        let (val_loss, val_dice) = run.validate_epoch(epoch)?;
        let record = run.record_epoch(EpochRecord {
            epoch,
            train_loss,
            val_loss,
            val_dice,
            lr,
            is_best: false,
        })?;
        progress(TrainEvent::Epoch(record));
    }
    run.finish()
}

/// The weights kept so far and how they scored.
struct Kept {
    epoch: usize,
    val_loss: Option<f64>,
    val_dice: Option<f64>,
    weights: HashMap<String, Tensor>,
}

/// A training run between epochs: the network and its optimiser, the data order, the step
/// count, the history and the weights kept so far.
struct Run<'a> {
    train: &'a SegData,
    val: Option<&'a SegData>,
    opts: &'a SegmenterTrainOptions,
    varmap: VarMap,
    model: MonaiUNet,
    optimiser: AdamW,
    rng: StdRng,
    order: Vec<usize>,
    steps_per_epoch: usize,
    total_steps: usize,
    global_step: usize,
    history: Vec<EpochRecord>,
    best: Option<Kept>,
}

impl<'a> Run<'a> {
    /// A seeded network and optimiser, before the first epoch.
    fn start(
        train: &'a SegData,
        val: Option<&'a SegData>,
        opts: &'a SegmenterTrainOptions,
    ) -> Result<Self> {
        let varmap = VarMap::new();
        let model = MonaiUNet::new(
            &opts.network,
            VarBuilder::from_varmap(&varmap, DType::F32, &opts.device),
        )?;
        init_weights_seeded(&varmap, opts.seed)?;
        let optimiser = AdamW::new(
            varmap.all_vars(),
            ParamsAdamW {
                lr: opts.lr,
                weight_decay: opts.weight_decay,
                ..Default::default()
            },
        )?;
        let n = train.len();
        let steps_per_epoch = n.div_ceil(opts.batch_size);
        Ok(Self {
            train,
            val,
            opts,
            varmap,
            model,
            optimiser,
            rng: StdRng::seed_from_u64(opts.seed.wrapping_add(DATA_STREAM_OFFSET)),
            order: (0..n).collect(),
            steps_per_epoch,
            total_steps: steps_per_epoch * opts.epochs,
            global_step: 0,
            history: Vec::with_capacity(opts.epochs),
            best: None,
        })
    }

    /// One pass over the shuffled training set: the mean loss over its samples and the last
    /// step's learning rate.
    fn train_epoch(
        &mut self,
        epoch: usize,
        progress: &mut impl FnMut(TrainEvent),
    ) -> Result<(f64, f64)> {
        let opts = self.opts;
        self.order.shuffle(&mut self.rng);
        let (mut loss_sum, mut lr) = (0.0, opts.lr);
        for (i, chunk) in self.order.chunks(opts.batch_size).enumerate() {
            lr = cosine_annealing_lr(opts.lr, self.global_step, self.total_steps);
            self.optimiser.set_learning_rate(lr);
            let transforms: Vec<Transform> = chunk
                .iter()
                .map(|_| Transform::draw(&opts.augmentation, &mut self.rng))
                .collect();
            let (x, y) = self.train.batch(chunk, &transforms, &opts.device)?;
            let loss = dice_ce_loss(&self.model.forward(&x)?, &y, &opts.loss)?.total;
            let value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            if !value.is_finite() {
                return Err(self.diverged(epoch, Some(i + 1), value));
            }
            self.optimiser.backward_step(&loss)?;
            loss_sum += value * chunk.len() as f64;
            self.global_step += 1;
            progress(TrainEvent::Step {
                epoch,
                step: i + 1,
                steps_per_epoch: self.steps_per_epoch,
                global_step: self.global_step,
                total_steps: self.total_steps,
                loss: value,
                lr,
            });
        }
        Ok((loss_sum / self.train.len() as f64, lr))
    }

    /// Validation loss and Dice after `epoch`; none without a validation set.
    fn validate_epoch(&mut self, epoch: usize) -> Result<(Option<f64>, Option<f64>)> {
        let Some(v) = self.val else {
            return Ok((None, None));
        };
        let (l, d) = evaluate(&self.model, v, self.opts, self.opts.network.out_channels)?;
        if !l.is_finite() {
            return Err(self.diverged(epoch, None, l));
        }
        Ok((Some(l), Some(d)))
    }

    /// Keeps the weights when they are the best so far (the lowest validation loss, else the
    /// latest), and records the epoch with `is_best` set accordingly.
    fn record_epoch(&mut self, mut record: EpochRecord) -> Result<EpochRecord> {
        record.is_best = match (record.val_loss, &self.best) {
            (Some(l), Some(b)) => b.val_loss.is_none_or(|bl| l < bl),
            _ => true,
        };
        if record.is_best {
            self.best = Some(Kept {
                epoch: record.epoch,
                val_loss: record.val_loss,
                val_dice: record.val_dice,
                weights: snapshot(&self.varmap)?,
            });
        }
        self.history.push(record.clone());
        Ok(record)
    }

    /// The segmenter of the kept weights.
    fn finish(self) -> Result<TrainedSegmenter> {
        let kept = self.best.ok_or(EvalError::InvalidArgument {
            name: "epochs",
            value: self.opts.epochs.to_string(),
            reason: "no epoch was run",
        })?;
        trained_segmenter(kept, self.history, self.train, self.val, self.opts)
    }

    /// The error for a non-finite loss, carrying the segmenter of the weights kept so far.
    fn diverged(&mut self, epoch: usize, step: Option<usize>, value: f64) -> EvalError {
        let history = std::mem::take(&mut self.history);
        let best_so_far = self
            .best
            .take()
            .and_then(|kept| trained_segmenter(kept, history, self.train, self.val, self.opts).ok())
            .map(Box::new);
        EvalError::TrainingDiverged {
            epoch,
            step,
            value,
            best_so_far,
        }
    }
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

/// The inference model, spec and history of the kept weights.
fn trained_segmenter(
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

#[cfg(test)]
mod tests;
