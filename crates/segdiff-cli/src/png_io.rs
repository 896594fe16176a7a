//! Reading the PNG files users point the CLI at: class-id masks and greyscale/RGB images.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// A class-id mask read from an 8- or 16-bit greyscale PNG.
pub struct MaskPng {
    pub ids: Vec<u32>,
    pub height: usize,
    pub width: usize,
}

/// Reads a mask PNG (one channel of class ids).
pub fn read_mask(path: &Path) -> Result<MaskPng> {
    let img = image::ImageReader::open(path)
        .with_context(|| format!("opening {}", path.display()))?
        .with_guessed_format()
        .with_context(|| format!("reading {}", path.display()))?
        .decode()
        .with_context(|| format!("{}: not a readable image", path.display()))?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    let ids: Vec<u32> = match img {
        image::DynamicImage::ImageLuma8(g) => g.into_raw().into_iter().map(u32::from).collect(),
        image::DynamicImage::ImageLuma16(g) => g.into_raw().into_iter().map(u32::from).collect(),
        other => bail!(
            "{}: a mask must be a one-channel (greyscale) PNG of class ids, found {:?}",
            path.display(),
            other.color()
        ),
    };
    Ok(MaskPng {
        ids,
        height: h,
        width: w,
    })
}

/// Reads an image PNG scaled to [-1, 1] as torchvision's `ToTensor` + `Normalize(0.5, 0.5)`:
/// `channels` = 1 converts to grey, 3 to RGB. Returns CHW values and (height, width).
pub fn read_image(path: &Path, channels: usize) -> Result<(Vec<f32>, usize, usize)> {
    let img = image::ImageReader::open(path)
        .with_context(|| format!("opening {}", path.display()))?
        .with_guessed_format()
        .with_context(|| format!("reading {}", path.display()))?
        .decode()
        .with_context(|| format!("{}: not a readable image", path.display()))?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    let scale = |v: f32, max: f32| (v / max - 0.5) / 0.5;
    let values = match (channels, &img) {
        (1, image::DynamicImage::ImageLuma16(g)) => {
            g.pixels().map(|p| scale(p.0[0] as f32, 65535.0)).collect()
        }
        (1, _) => img
            .to_luma8()
            .pixels()
            .map(|p| scale(p.0[0] as f32, 255.0))
            .collect(),
        (3, _) => {
            let rgb = img.to_rgb8();
            let mut out = vec![0f32; 3 * h * w];
            for (i, p) in rgb.pixels().enumerate() {
                for c in 0..3 {
                    out[c * h * w + i] = scale(p.0[c] as f32, 255.0);
                }
            }
            out
        }
        _ => bail!(
            "{}: {channels} image channels are not supported (1 or 3)",
            path.display()
        ),
    };
    Ok((values, h, w))
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
