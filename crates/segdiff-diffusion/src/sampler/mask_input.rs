//! Class-id masks → the conditioning channels a model expects, after the user's edits
//! (classes kept, or an empty mask) and validated against the model's class count.

use candle_core::{Device, Tensor};

use crate::error::{DiffusionError, Result};
use crate::mask_conditioning::{class_ids, encode_mask, MaskEncoding};
use crate::model_dir::ConditioningMeta;

/// Class ids a `single`-encoded model without a known class count accepts: the official code
/// stores masks as uint8 and feeds `id / 255`.
const SINGLE_MAX_CLASSES: usize = 256;

/// Edits applied to every mask before encoding.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct MaskEdit<'a> {
    /// Foreground classes to keep; the others become background.
    pub keep_classes: Option<&'a [u32]>,
    /// All background.
    pub empty: bool,
}

/// Encoded masks (M, C_cond, H, W) f32 on `device` and their spatial size.
#[derive(Debug)]
pub(crate) struct Conditions {
    pub encoded: Tensor,
    pub count: usize,
    pub height: usize,
    pub width: usize,
}

/// The class count masks are validated against (`num_classes`, or 256 for an official `single`
/// model whose count is unknown).
pub(crate) fn class_limit(meta: &ConditioningMeta) -> Result<usize> {
    match (meta.encoding(), meta.num_classes) {
        (_, Some(n)) => Ok(n),
        (MaskEncoding::Single, None) => Ok(SINGLE_MAX_CLASSES),
        (MaskEncoding::OneHot, None) => Err(DiffusionError::InvalidParameter {
            name: "num_classes",
            value: "unknown".into(),
            reason: "onehot conditioning needs num_classes in segdiff.json",
        }),
    }
}

/// Validates, edits and encodes `masks` ((M, H, W) or (M, 1, H, W), u8/u32/i64 class ids).
pub(crate) fn prepare_conditions(
    meta: &ConditioningMeta,
    masks: &Tensor,
    edit: MaskEdit<'_>,
    device: &Device,
) -> Result<Conditions> {
    let limit = class_limit(meta)?;
    if edit.empty && edit.keep_classes.is_some() {
        return Err(DiffusionError::InvalidParameter {
            name: "keep_classes",
            value: format!("{:?}", edit.keep_classes.unwrap_or_default()),
            reason: "cannot be combined with empty_mask",
        });
    }
    if let Some(&bad) = edit
        .keep_classes
        .unwrap_or_default()
        .iter()
        .find(|&&k| k as usize >= limit)
    {
        return Err(DiffusionError::InvalidParameter {
            name: "keep_classes",
            value: bad.to_string(),
            reason: "class id is not < the model's num_classes",
        });
    }
    let ((count, height, width), mut ids) = class_ids(masks, limit)?;
    if count == 0 || height == 0 || width == 0 {
        return Err(DiffusionError::InvalidMask(format!(
            "empty mask batch {:?}",
            masks.dims()
        )));
    }
    if edit.empty {
        ids.iter_mut().for_each(|k| *k = 0);
    } else if let Some(keep) = edit.keep_classes {
        for k in ids.iter_mut() {
            if *k != 0 && !keep.contains(k) {
                *k = 0;
            }
        }
    }
    let ids = Tensor::from_vec(ids, (count, height, width), &Device::Cpu)?;
    let encoded = encode_mask(&ids, limit, meta.encoding())?.to_device(device)?;
    Ok(Conditions {
        encoded,
        count,
        height,
        width,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(encoding: &str, num_classes: Option<usize>) -> ConditioningMeta {
        ConditioningMeta {
            segmentation_guided: true,
            mask_encoding: MaskEncoding::parse(encoding).unwrap(),
            num_classes,
            class_names: Vec::new(),
            image_channels: 1,
            ablation_trained: true,
            class_colors: None,
            neighbours: None,
        }
    }

    fn mask() -> Tensor {
        Tensor::from_vec(vec![0u8, 1, 2, 3, 3, 2, 1, 0], (2, 2, 2), &Device::Cpu).unwrap()
    }

    fn values(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn keep_classes_sets_the_others_to_background() {
        let m = meta("single", Some(4));
        let edit = MaskEdit {
            keep_classes: Some(&[3, 1]),
            empty: false,
        };
        let c = prepare_conditions(&m, &mask(), edit, &Device::Cpu).unwrap();
        assert_eq!(c.encoded.dims(), &[2, 1, 2, 2]);
        let want: Vec<f32> = [0u8, 1, 0, 3, 3, 0, 1, 0]
            .iter()
            .map(|&k| k as f32 / 255.0)
            .collect();
        assert_eq!(values(&c.encoded), want);
    }

    #[test]
    fn empty_mask_encodes_to_zeros_in_both_encodings() {
        for (enc, ch) in [("single", 1), ("onehot", 3)] {
            let edit = MaskEdit {
                keep_classes: None,
                empty: true,
            };
            let c = prepare_conditions(&meta(enc, Some(4)), &mask(), edit, &Device::Cpu).unwrap();
            assert_eq!(c.encoded.dims(), &[2, ch, 2, 2]);
            assert!(values(&c.encoded).iter().all(|&v| v == 0.0));
        }
    }

    #[test]
    fn class_ids_are_checked_against_the_model() {
        let err = prepare_conditions(
            &meta("single", Some(3)),
            &mask(),
            MaskEdit::default(),
            &Device::Cpu,
        )
        .unwrap_err();
        assert!(
            matches!(err, DiffusionError::MaskClassOutOfRange { value: 3, .. }),
            "{err}"
        );
        let edit = MaskEdit {
            keep_classes: Some(&[4]),
            empty: false,
        };
        assert!(prepare_conditions(&meta("single", Some(4)), &mask(), edit, &Device::Cpu).is_err());
        let both = MaskEdit {
            keep_classes: Some(&[1]),
            empty: true,
        };
        assert!(prepare_conditions(&meta("single", Some(4)), &mask(), both, &Device::Cpu).is_err());
        // official single-channel models: ids up to 255, onehot needs a class count
        let big = Tensor::from_vec(vec![255u32, 256], (1, 1, 2), &Device::Cpu).unwrap();
        assert!(matches!(
            prepare_conditions(
                &meta("single", None),
                &big,
                MaskEdit::default(),
                &Device::Cpu
            ),
            Err(DiffusionError::MaskClassOutOfRange { value: 256, .. })
        ));
        assert!(prepare_conditions(
            &meta("onehot", None),
            &mask(),
            MaskEdit::default(),
            &Device::Cpu
        )
        .is_err());
    }
}
