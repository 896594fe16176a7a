//! The two segmenters of the evaluation: the one trained on (or loaded for) real images and the
//! one trained on generated images, with the same recipe; Table 1 compares them.

use std::path::Path;

use crate::dice::{dice, DiceConfig};
use crate::error::{EvalError, Result};
use crate::label_maps::LabelMaps;
use crate::monai_unet::MonaiUNet;
use crate::paper_eval::config::PaperEvalConfig;
use crate::paper_eval::report::{ClassTable, SegmenterSummary, SyntheticTraining};
use crate::paper_eval::setup::{tensor, ScoringData, Setup};
use crate::paper_eval::{REAL_SEGMENTER_DIR, SYNTHETIC_SEGMENTER_DIR};
use crate::segmenter::{load_segmenter, predict, SegmenterSpec};
use crate::segmenter_training::{train_segmenter, SegData, SegmenterRecipe, TrainEvent};
use crate::split_data::SplitData;

/// A segmenter and how it came to be.
pub(super) struct UsedSegmenter {
    pub(super) model: MonaiUNet,
    pub(super) summary: SegmenterSummary,
    /// The spec of a segmenter loaded with `--segmenter`.
    pub(super) loaded_spec: Option<SegmenterSpec>,
}

/// How a loaded segmenter's network and training differ from `recipe`, as
/// `"name loaded vs recipe"` items (training fields count as different when unrecorded).
pub(super) fn recipe_differences(spec: &SegmenterSpec, recipe: &SegmenterRecipe) -> Vec<String> {
    let mut out = Vec::new();
    let mut cmp = |name: &str, loaded: String, wanted: String| {
        if loaded != wanted {
            out.push(format!("{name} {loaded} vs {wanted}"));
        }
    };
    let n = &spec.network;
    cmp(
        "channels",
        format!("{:?}", n.channels),
        format!("{:?}", recipe.channels),
    );
    cmp(
        "strides",
        format!("{:?}", n.strides),
        format!("{:?}", recipe.strides),
    );
    cmp(
        "residual units",
        n.num_res_units.to_string(),
        recipe.num_res_units.to_string(),
    );
    let t = spec.training.as_ref();
    let recorded = |v: Option<String>| v.unwrap_or_else(|| "unrecorded".into());
    cmp(
        "epochs",
        recorded(t.map(|t| t.epochs.to_string())),
        recipe.epochs.to_string(),
    );
    cmp(
        "batch size",
        recorded(t.map(|t| t.batch_size.to_string())),
        recipe.batch_size.to_string(),
    );
    cmp(
        "lr",
        recorded(t.map(|t| t.lr.to_string())),
        recipe.lr.to_string(),
    );
    cmp(
        "weight decay",
        recorded(t.map(|t| t.weight_decay.to_string())),
        recipe.weight_decay.to_string(),
    );
    cmp(
        "flips",
        recorded(t.map(|t| t.flips.to_string())),
        recipe.augmentation.flips.to_string(),
    );
    cmp(
        "rot90",
        recorded(t.map(|t| t.rot90.to_string())),
        recipe.augmentation.rot90.to_string(),
    );
    out
}

fn summary_of(dir: &Path, spec: &SegmenterSpec, trained_here: bool) -> SegmenterSummary {
    let t = spec.training.as_ref();
    SegmenterSummary {
        dir: dir.display().to_string(),
        trained_here,
        channels: spec.network.channels.clone(),
        strides: spec.network.strides.clone(),
        num_res_units: spec.network.num_res_units,
        epochs: t.map(|t| t.epochs),
        best_epoch: t.map(|t| t.best_epoch),
        best_val_dice: t.and_then(|t| t.best_val_dice),
        train_samples: t.map(|t| t.train_samples),
    }
}

/// Trains a segmenter on `train`, selecting on `val`, and saves it in `dir`.
pub(super) fn train_into(
    cfg: &PaperEvalConfig,
    s: &Setup,
    train: &SegData,
    dir: &Path,
    advance: &mut dyn FnMut(usize, usize, String),
) -> Result<UsedSegmenter> {
    let val = s.val.as_ref().map(SplitData::seg_data).transpose()?;
    let opts = cfg.seeded_recipe().options(
        s.channels,
        s.num_classes,
        Some(s.class_names.clone()),
        &cfg.device,
    );
    let epochs = opts.epochs;
    let trained = train_segmenter(train, val.as_ref(), &opts, |event| match event {
        TrainEvent::Step {
            epoch,
            global_step,
            total_steps,
            loss,
            ..
        } => advance(
            global_step,
            total_steps,
            format!("epoch {epoch}/{epochs} loss {loss:.4}"),
        ),
        TrainEvent::Epoch(_) => {}
    })?;
    trained.save(dir)?;
    Ok(UsedSegmenter {
        summary: summary_of(dir, &trained.spec, true),
        model: trained.model,
        loaded_spec: None,
    })
}

pub(super) fn real_segmenter(
    cfg: &PaperEvalConfig,
    s: &Setup,
    advance: &mut dyn FnMut(usize, usize, String),
) -> Result<UsedSegmenter> {
    let Some(dir) = &cfg.segmenter else {
        return train_into(
            cfg,
            s,
            &s.train.seg_data()?,
            &cfg.out.join(REAL_SEGMENTER_DIR),
            advance,
        );
    };
    let (model, spec) = load_segmenter(dir, &cfg.device)?;
    let mismatch = |reason: String| {
        Err(EvalError::Incompatible {
            what: dir.display().to_string(),
            reason,
        })
    };
    if spec.num_classes != s.num_classes {
        return mismatch(format!(
            "the segmenter has {} classes, the data {}",
            spec.num_classes, s.num_classes
        ));
    }
    if spec.network.in_channels != s.channels {
        return mismatch(format!(
            "the segmenter takes {}-channel images, the data has {}",
            spec.network.in_channels, s.channels
        ));
    }
    if spec.image_size != [s.height, s.width] {
        return mismatch(format!(
            "the segmenter was trained on {}×{} images, the data is {}×{}",
            spec.image_size[0], spec.image_size[1], s.height, s.width
        ));
    }
    advance(1, 1, "loaded".into());
    Ok(UsedSegmenter {
        model,
        summary: summary_of(dir, &spec, false),
        loaded_spec: Some(spec),
    })
}

/// Table 1: trains a segmenter on the generated training images, labelled by their input masks
/// (or, for unconditional models, by the real-trained segmenter), and scores it and the
/// real-trained one (`seg_real`: its segmentations of the real test images) on the real test
/// split.
pub(super) fn synthetic_segmenter(
    cfg: &PaperEvalConfig,
    s: &Setup,
    real: &MonaiUNet,
    data: &ScoringData<'_>,
    seg_real: &LabelMaps,
    advance: &mut dyn FnMut(usize, usize, String),
) -> Result<(SegmenterSummary, SyntheticTraining)> {
    let ibs = cfg.inference_batch_size;
    let n_train = s.train.len();
    let (labels, source) = if s.guided() {
        let m = s
            .train
            .masks()
            .cloned()
            .ok_or_else(|| EvalError::Incompatible {
                what: cfg.dataset.display().to_string(),
                reason: "the training split has no masks".into(),
            })?;
        (m, "their input masks")
    } else {
        let t = tensor(&data.gen_train, n_train, s, &cfg.device)?;
        (
            predict(real, &t, ibs)?,
            "the real-trained segmenter's predictions (pseudo-labels: the model is \
             unconditional)",
        )
    };
    let train = SegData::from_vec(
        data.gen_train.clone(),
        n_train,
        s.channels,
        s.height,
        s.width,
        labels,
    )?;
    let syn = train_into(
        cfg,
        s,
        &train,
        &cfg.out.join(SYNTHETIC_SEGMENTER_DIR),
        advance,
    )?;
    let dice_cfg = DiceConfig::new(s.num_classes);
    let syn_pred = predict(&syn.model, &data.real_test_t, ibs)?;
    let table = SyntheticTraining {
        real_trained: ClassTable::from_scores(
            &dice(seg_real, data.test_masks, &dice_cfg)?,
            &s.class_names,
        ),
        synthetic_trained: ClassTable::from_scores(
            &dice(&syn_pred, data.test_masks, &dice_cfg)?,
            &s.class_names,
        ),
        synthetic_labels: source.into(),
        synthetic_images: n_train,
    };
    Ok((syn.summary, table))
}
