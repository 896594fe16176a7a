//! `segdiff metrics dice`: MONAI `DiceMetric` per sample and class.

use anyhow::{Context, Result};
use clap::Args;
use segdiff_eval::{dice, DiceConfig};

use super::class_report::ClassReport;
use super::masks::{load_masks, MaskArgs};

#[derive(Debug, Args)]
pub struct DiceArgs {
    #[command(flatten)]
    pub masks: MaskArgs,
    /// Score a class absent from the target as 1 (prediction empty too) or 0, instead of
    /// ignoring it (MONAI `ignore_empty=False`).
    #[arg(long)]
    pub keep_empty: bool,
}

pub(super) fn dice_report(args: &DiceArgs) -> Result<ClassReport> {
    let m = &args.masks;
    let (names, pred, target, num_classes) = load_masks(m)?;
    let cfg = DiceConfig {
        num_classes,
        include_background: m.include_background,
        ignore_empty: !args.keep_empty,
    };
    let scores = dice(&pred, &target, &cfg).context("computing Dice")?;
    let mut r = ClassReport::new("dice", m, num_classes, names, &scores);
    r.ignore_empty = Some(cfg.ignore_empty);
    Ok(r)
}
