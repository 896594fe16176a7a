//! Reading the PNG files users point the CLI at: class-id masks and greyscale/RGB images.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use segdiff_io::Channels;

/// A class-id mask read from an 8- or 16-bit greyscale PNG.
pub struct MaskPng {
    pub ids: Vec<u32>,
    pub height: usize,
    pub width: usize,
}

/// Reads a mask PNG (one channel of class ids).
pub fn read_mask(path: &Path) -> Result<MaskPng> {
    let grey = segdiff_io::read_grey_samples(path)?;
    Ok(MaskPng {
        ids: grey.pixels.into_iter().map(u32::from).collect(),
        height: grey.height,
        width: grey.width,
    })
}

/// The masks of `files`, which must all have one size; returns them with (height, width).
pub fn read_masks_of_one_size(files: &[PathBuf]) -> Result<(Vec<MaskPng>, usize, usize)> {
    let mut masks: Vec<MaskPng> = Vec::with_capacity(files.len());
    for f in files {
        let m = read_mask(f).with_context(|| format!("reading the mask {}", f.display()))?;
        if let Some(first) = masks.first() {
            if (first.height, first.width) != (m.height, m.width) {
                bail!(
                    "{}: {}×{} differs from the first mask's {}×{}",
                    f.display(),
                    m.height,
                    m.width,
                    first.height,
                    first.width
                );
            }
        }
        masks.push(m);
    }
    let (h, w) = masks
        .first()
        .map(|m| (m.height, m.width))
        .context("no masks")?;
    Ok((masks, h, w))
}

/// Reads an image PNG scaled to [-1, 1] as torchvision's `ToTensor` + `Normalize(0.5, 0.5)`:
/// `channels` = 1 converts to grey (as Pillow's `convert("L")`), 3 to RGB. Returns CHW values
/// and (height, width).
pub fn read_image(path: &Path, channels: usize) -> Result<(Vec<f32>, usize, usize)> {
    let wanted = match channels {
        1 => Channels::Grey,
        3 => Channels::Rgb,
        _ => bail!(
            "{}: {channels} image channels are not supported (1 or 3)",
            path.display()
        ),
    };
    let (_, h, w, values) = segdiff_io::read_chw01(path, wanted)?;
    Ok((values.into_iter().map(|v| (v - 0.5) / 0.5).collect(), h, w))
}

/// The PNG files of a folder (sorted by name), or the file itself.
pub fn png_files(path: &Path) -> Result<Vec<PathBuf>> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let entries = std::fs::read_dir(path).with_context(|| format!("listing {}", path.display()))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e.eq_ignore_ascii_case("png")))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("{}: no .png files", path.display());
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../segdiff-io/tests/fixtures")
            .join(name)
    }

    /// `[-1, 1]` values back to the 8-bit pixels they came from.
    fn bytes(values: &[f32]) -> Vec<u16> {
        values
            .iter()
            .map(|&v| ((v * 0.5 + 0.5) * 255.0).round() as u16)
            .collect()
    }

    /// An RGB file read as grey by `sample --real` / `segmenter predict` (this reader) and by
    /// `train` / `eval` / `segmenter train` (the dataset reader) gives the same bytes, Pillow's.
    #[test]
    fn every_reader_makes_the_same_grey_as_pillow() {
        for name in ["rgb", "rgba", "palette"] {
            let pillow = segdiff_io::read_grey_samples(&fixture(&format!("{name}.pillow_L.png")))
                .unwrap()
                .pixels;
            let (cli, h, w) = super::read_image(&fixture(&format!("{name}.png")), 1).unwrap();
            assert_eq!((h, w), (7, 9));
            assert_eq!(bytes(&cli), pillow, "{name}: CLI reader");

            let root = tempfile::tempdir().unwrap();
            std::fs::create_dir_all(root.path().join("img/train")).unwrap();
            std::fs::copy(
                fixture(&format!("{name}.png")),
                root.path().join("img/train/x.png"),
            )
            .unwrap();
            let opts = segdiff_data::DatasetOptions {
                force_grey: true,
                require_masks: false,
                ..Default::default()
            };
            let ds = segdiff_data::Dataset::open(root.path(), segdiff_data::Split::Train, &opts)
                .unwrap();
            let sample = ds.load(0).unwrap();
            assert_eq!(sample.channels, 1);
            assert_eq!(bytes(&sample.image), pillow, "{name}: dataset reader");
        }
    }
}
