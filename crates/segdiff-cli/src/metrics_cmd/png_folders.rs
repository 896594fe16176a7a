//! Folders of PNG files paired by name, and the greyscale PNGs they hold.

use std::path::Path;

use anyhow::{bail, ensure, Context, Result};

/// Names of the `*.png` files directly inside `dir`, sorted.
pub(super) fn png_names(dir: &Path) -> Result<Vec<String>> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("reading the folder {}", dir.display()))?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_png = Path::new(&name)
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("png"));
        if is_png && entry.path().is_file() {
            names.push(name);
        }
    }
    names.sort();
    ensure!(!names.is_empty(), "{}: no .png files", dir.display());
    Ok(names)
}

/// File names present in both folders; any file without a partner is an error naming it.
pub(super) fn paired_names(pred: &Path, target: &Path) -> Result<Vec<String>> {
    let a = png_names(pred)?;
    let b = png_names(target)?;
    for (names, others, dir, other_dir) in [(&a, &b, pred, target), (&b, &a, target, pred)] {
        if let Some(lonely) = names.iter().find(|n| others.binary_search(n).is_err()) {
            bail!(
                "{} has no partner for {}: every file must exist in both folders",
                other_dir.display(),
                dir.join(lonely).display()
            );
        }
    }
    Ok(a)
}

/// A greyscale PNG, 8- or 16-bit, pixel values widened to u16.
pub(super) type Grey = segdiff_io::GreySamples;

pub(super) fn read_grey(path: &Path) -> Result<Grey> {
    Ok(segdiff_io::read_grey_samples(path)?)
}
