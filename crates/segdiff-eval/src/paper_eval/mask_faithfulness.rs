//! Table 2 (mask faithfulness): the real-trained segmenter segments the generated and the real
//! test images (both saved as label PNGs), and the segmentations of the generated images are
//! scored against their input masks and against the segmentations of the real images.

use crate::dice::{dice, DiceConfig};
use crate::error::Result;
use crate::label_maps::LabelMaps;
use crate::monai_unet::MonaiUNet;
use crate::paper_eval::config::PaperEvalConfig;
use crate::paper_eval::report::{ClassTable, MaskFaithfulness};
use crate::paper_eval::setup::{ScoringData, Setup};
use crate::paper_eval::{SEGMENTATIONS_GENERATED_DIR, SEGMENTATIONS_REAL_DIR};
use crate::png_files::write_label_png;
use crate::segmenter::predict;

/// The real-trained segmenter's view of the test images, and Table 2.
pub(super) struct Segmentations {
    /// Of the generated test images.
    pub(super) generated: LabelMaps,
    /// Of the real test images.
    pub(super) real: LabelMaps,
    /// Table 2 (guided models only).
    pub(super) table: Option<MaskFaithfulness>,
    /// Mean Dice of each generated image's segmentation against its input mask.
    pub(super) dice_vs_mask: Vec<Option<f64>>,
}

/// Segments the generated and real test images with `segmenter`, saves the segmentations and
/// scores them (guided models; unconditional ones have no input masks).
pub(super) fn mask_faithfulness(
    cfg: &PaperEvalConfig,
    s: &Setup,
    segmenter: &MonaiUNet,
    data: &ScoringData<'_>,
    advance: &mut dyn FnMut(usize, usize, String),
) -> Result<Segmentations> {
    let ibs = cfg.inference_batch_size;
    let generated = predict(segmenter, &data.gen_test_t, ibs)?;
    advance(1, 3, "segmented generated images".into());
    let real = predict(segmenter, &data.real_test_t, ibs)?;
    advance(2, 3, "segmented real images".into());
    write_segmentations(cfg, s, &data.test_names, &generated, &real)?;
    let (table, dice_vs_mask) = if s.guided() {
        let (table, per_sample) = score(s, &generated, &real, data.test_masks)?;
        (Some(table), per_sample)
    } else {
        (None, vec![None; s.test.len()])
    };
    advance(3, 3, "scored".into());
    Ok(Segmentations {
        generated,
        real,
        table,
        dice_vs_mask,
    })
}

/// Label PNGs of both segmentations: the generated images' under their own names, the real
/// images' under the pairs' names.
fn write_segmentations(
    cfg: &PaperEvalConfig,
    s: &Setup,
    test_names: &[String],
    generated: &LabelMaps,
    real: &LabelMaps,
) -> Result<()> {
    let (h, w) = (s.height, s.width);
    for (i, name) in test_names.iter().enumerate() {
        write_label_png(
            &cfg.out.join(SEGMENTATIONS_GENERATED_DIR).join(name),
            generated.sample(i),
            h,
            w,
        )?;
    }
    for (i, name) in s.test.names().iter().enumerate() {
        write_label_png(
            &cfg.out.join(SEGMENTATIONS_REAL_DIR).join(name),
            real.sample(i),
            h,
            w,
        )?;
    }
    Ok(())
}

/// Table 2 and each generated image's mean Dice against its input mask.
fn score(
    s: &Setup,
    generated: &LabelMaps,
    real: &LabelMaps,
    test_masks: &LabelMaps,
) -> Result<(MaskFaithfulness, Vec<Option<f64>>)> {
    let dice_cfg = DiceConfig::new(s.num_classes);
    let vs_mask = dice(generated, test_masks, &dice_cfg)?;
    let vs_real = dice(generated, real, &dice_cfg)?;
    let reference = dice(real, test_masks, &dice_cfg)?;
    let per_sample: Vec<Option<f64>> = (0..s.test.len())
        .map(|i| row_mean(vs_mask.row(i)))
        .collect();
    let table = MaskFaithfulness {
        vs_input_mask: ClassTable::from_scores(&vs_mask, &s.class_names),
        vs_segmentation_of_real: ClassTable::from_scores(&vs_real, &s.class_names),
        real_reference: ClassTable::from_scores(&reference, &s.class_names),
    };
    Ok((table, per_sample))
}

/// Mean of a sample's non-NaN values.
fn row_mean(row: &[f64]) -> Option<f64> {
    let valid: Vec<f64> = row.iter().copied().filter(|v| !v.is_nan()).collect();
    (!valid.is_empty()).then(|| valid.iter().sum::<f64>() / valid.len() as f64)
}
