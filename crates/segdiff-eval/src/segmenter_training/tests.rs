//! Unit tests of segmenter training: the lr schedule, augmentation against numpy, batches,
//! input checks and divergence.

use candle_core::Device;

use super::*;
use crate::monai_unet::MonaiUNetConfig;

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
    let mut opts = SegmenterTrainOptions::new(MonaiUNetConfig::new(1, 3, vec![4, 8], vec![2], 0));
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
    let mut opts = SegmenterTrainOptions::new(MonaiUNetConfig::new(1, 2, vec![4, 8], vec![2], 0));
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
