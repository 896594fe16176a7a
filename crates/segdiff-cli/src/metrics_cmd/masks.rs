//! Two folders of class-id masks, read as `LabelMaps` of one size with a resolved class count.

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use clap::Args;
use segdiff_eval::LabelMaps;

use super::png_folders::{paired_names, read_grey};

/// Two folders of masks paired by file name.
#[derive(Debug, Args)]
pub struct MaskArgs {
    /// Folder of predicted masks (PNG, 8- or 16-bit grey, pixel value = class id).
    #[arg(long, value_name = "DIR")]
    pub pred: PathBuf,
    /// Folder of reference masks with the same file names.
    #[arg(long, value_name = "DIR")]
    pub target: PathBuf,
    /// Classes are 0..C with 0 the background (default: the largest id found, plus one).
    #[arg(long, value_name = "C")]
    pub num_classes: Option<usize>,
    /// Score the background class (0) too.
    #[arg(long)]
    pub include_background: bool,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Masks of `names` from both folders as two `LabelMaps` of one common size.
pub(super) fn read_mask_pairs(
    pred: &Path,
    target: &Path,
    names: &[String],
) -> Result<(LabelMaps, LabelMaps)> {
    let mut size: Option<(usize, usize, PathBuf)> = None;
    let mut p_all = Vec::new();
    let mut t_all = Vec::new();
    for name in names {
        for (dir, all) in [(pred, &mut p_all), (target, &mut t_all)] {
            let path = dir.join(name);
            let g = read_grey(&path)?;
            match &size {
                None => size = Some((g.height, g.width, path.clone())),
                Some((h, w, first)) => ensure!(
                    (g.height, g.width) == (*h, *w),
                    "{} is {}x{} but {} is {h}x{w}: all masks must share one size",
                    path.display(),
                    g.height,
                    g.width,
                    first.display()
                ),
            }
            all.extend(g.pixels.into_iter().map(u32::from));
        }
    }
    let (h, w, _) = size.context("no masks to read")?;
    Ok((
        LabelMaps::new(p_all, names.len(), h, w)?,
        LabelMaps::new(t_all, names.len(), h, w)?,
    ))
}

/// `--num-classes`, or the largest id found plus one; ids beyond it are an error naming the file.
fn resolve_classes(
    given: Option<usize>,
    pred: &LabelMaps,
    target: &LabelMaps,
    names: &[String],
    dirs: [&Path; 2],
) -> Result<usize> {
    let max_id = pred
        .as_slice()
        .iter()
        .chain(target.as_slice())
        .copied()
        .max()
        .unwrap_or(0) as usize;
    let Some(c) = given else {
        let c = (max_id + 1).max(2);
        eprintln!("note: --num-classes not given; using {c} (largest class id found + 1)");
        return Ok(c);
    };
    ensure!(c >= 1, "--num-classes must be at least 1");
    for (maps, dir) in [(pred, dirs[0]), (target, dirs[1])] {
        for (s, name) in names.iter().enumerate() {
            if let Some(&bad) = maps.sample(s).iter().find(|&&v| v as usize >= c) {
                bail!(
                    "{}: class id {bad} is not below --num-classes {c}",
                    dir.join(name).display()
                );
            }
        }
    }
    Ok(c)
}

/// The paired file names, both folders' masks and the number of classes.
pub(super) fn load_masks(masks: &MaskArgs) -> Result<(Vec<String>, LabelMaps, LabelMaps, usize)> {
    let names = paired_names(&masks.pred, &masks.target)?;
    let (pred, target) = read_mask_pairs(&masks.pred, &masks.target, &names)?;
    let c = resolve_classes(
        masks.num_classes,
        &pred,
        &target,
        &names,
        [&masks.pred, &masks.target],
    )?;
    Ok((names, pred, target, c))
}
