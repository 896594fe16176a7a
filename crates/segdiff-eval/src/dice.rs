//! Per-sample, per-class Dice with MONAI `DiceMetric` semantics.
//!
//! MONAI's `DiceHelper.compute_channel`: with a non-empty target, `2|P∩T| / (|T| + |P|)`; with an
//! empty target, NaN when `ignore_empty`, else 1 if the prediction is empty too and 0 otherwise.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::class_scores::ClassScores;
use crate::error::{EvalError, Result};
use crate::label_maps::LabelMaps;

/// Which classes are scored and how empty targets count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiceConfig {
    /// Classes are `0..num_classes`, 0 is background.
    pub num_classes: usize,
    /// Score class 0 too (MONAI default true; segdiff reports without it).
    pub include_background: bool,
    /// NaN (ignored) for a class absent from the target, instead of 1/0.
    pub ignore_empty: bool,
}

impl DiceConfig {
    /// segdiff's default: no background, empty targets ignored.
    pub fn new(num_classes: usize) -> Self {
        Self {
            num_classes,
            include_background: false,
            ignore_empty: true,
        }
    }
}

/// Dice of every sample and scored class; reduce with [`ClassScores::mean`].
pub fn dice(pred: &LabelMaps, target: &LabelMaps, cfg: &DiceConfig) -> Result<ClassScores> {
    pred.check_same_shape(target, "dice prediction vs target")?;
    if cfg.num_classes < 1 || (!cfg.include_background && cfg.num_classes < 2) {
        return Err(EvalError::InvalidArgument {
            name: "num_classes",
            value: cfg.num_classes.to_string(),
            reason: "needs at least one scored class",
        });
    }
    pred.check_classes(cfg.num_classes, "dice prediction")?;
    target.check_classes(cfg.num_classes, "dice target")?;
    let first = usize::from(!cfg.include_background);
    let class_ids: Vec<u32> = (first..cfg.num_classes).map(|c| c as u32).collect();
    let rows: Vec<Vec<f64>> = (0..pred.samples())
        .into_par_iter()
        .map(|s| {
            let counts = overlap_counts(pred.sample(s), target.sample(s), cfg.num_classes);
            (first..cfg.num_classes)
                .map(|c| dice_from_counts(counts[c], cfg.ignore_empty))
                .collect()
        })
        .collect();
    Ok(ClassScores::new(rows.concat(), pred.samples(), class_ids))
}

/// `|P|`, `|T|` and `|P∩T|` of one class.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Counts {
    pred: u64,
    target: u64,
    both: u64,
}

fn overlap_counts(pred: &[u32], target: &[u32], num_classes: usize) -> Vec<Counts> {
    let mut counts = vec![Counts::default(); num_classes];
    for (&p, &t) in pred.iter().zip(target) {
        counts[p as usize].pred += 1;
        counts[t as usize].target += 1;
        if p == t {
            counts[p as usize].both += 1;
        }
    }
    counts
}

fn dice_from_counts(c: Counts, ignore_empty: bool) -> f64 {
    if c.target > 0 {
        2.0 * c.both as f64 / (c.target + c.pred) as f64
    } else if ignore_empty {
        f64::NAN
    } else if c.pred == 0 {
        1.0
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_target_rules() -> Result<()> {
        // Class 1: target empty, prediction not -> NaN / 0. Class 2: both empty -> NaN / 1.
        let pred = LabelMaps::new(vec![0, 1, 0, 0], 1, 2, 2)?;
        let target = LabelMaps::new(vec![0, 0, 0, 0], 1, 2, 2)?;
        let ignore = dice(&pred, &target, &DiceConfig::new(3))?;
        assert!(ignore.get(0, 0).is_nan() && ignore.get(0, 1).is_nan());
        let count = dice(
            &pred,
            &target,
            &DiceConfig {
                ignore_empty: false,
                ..DiceConfig::new(3)
            },
        )?;
        assert_eq!(count.row(0), &[0.0, 1.0]);
        Ok(())
    }

    #[test]
    fn hand_counted_overlap() -> Result<()> {
        // Class 1: |P| = 2, |T| = 3, overlap 1 -> 2/5.
        let pred = LabelMaps::new(vec![1, 1, 0, 0, 0, 0], 1, 2, 3)?;
        let target = LabelMaps::new(vec![1, 0, 1, 1, 0, 0], 1, 2, 3)?;
        let s = dice(&pred, &target, &DiceConfig::new(2))?;
        assert_eq!(s.class_ids(), &[1]);
        assert!((s.get(0, 0) - 0.4).abs() < 1e-15);
        Ok(())
    }

    #[test]
    fn rejects_out_of_range_class() -> Result<()> {
        let pred = LabelMaps::new(vec![0, 4], 1, 1, 2)?;
        let target = LabelMaps::new(vec![0, 1], 1, 1, 2)?;
        assert!(matches!(
            dice(&pred, &target, &DiceConfig::new(4)),
            Err(EvalError::ClassOutOfRange { index: 1, .. })
        ));
        Ok(())
    }
}
