//! The PNG files the evaluation writes and reads back: generated images (8-bit grey or RGB, as
//! the official sampler saves them) and class-id maps (8-bit grey, 16-bit above 255 classes).
//!
//! Images go to 8 bits as `round(clamp(x, 0, 1) · 255)` and come back to `[-1, 1]` as
//! torchvision's `ToTensor` + `Normalize(0.5, 0.5)` reads them, `(v / 255 − 0.5) / 0.5`, so a
//! generated image is scored exactly as it would be after saving and reloading it.

use std::path::Path;

use image::{DynamicImage, GrayImage, ImageBuffer, Luma};

use crate::error::{EvalError, Result};

pub use segdiff_io::picture::to_u8;

/// The `[-1, 1]` value of an 8-bit pixel, as the dataset loader computes it.
pub fn from_u8(v: u8) -> f32 {
    (f32::from(v) / 255.0 - 0.5) / 0.5
}

/// Writes a CHW image in `[0, 1]` with 1 (grey) or 3 (RGB) channels as an 8-bit PNG, atomically.
pub fn write_image_png(
    path: &Path,
    chw01: &[f32],
    channels: usize,
    height: usize,
    width: usize,
) -> Result<()> {
    let hw = height * width;
    if chw01.len() != channels * hw {
        return Err(EvalError::ShapeMismatch {
            what: "image buffer vs channels*height*width",
            left: vec![chw01.len()],
            right: vec![channels, height, width],
        });
    }
    let img = segdiff_io::picture::image_from_chw01(chw01, channels, height, width).ok_or(
        EvalError::InvalidArgument {
            name: "image channels",
            value: channels.to_string(),
            reason: "PNG output supports 1 (grey) or 3 (RGB) channels",
        },
    )?;
    save(path, &img)
}

/// Reads an 8-bit PNG written by [`write_image_png`] back to CHW `[-1, 1]`, checking its size
/// and channel count.
pub fn read_image_png(
    path: &Path,
    channels: usize,
    height: usize,
    width: usize,
) -> Result<Vec<f32>> {
    let img = open(path)?;
    check_size(path, &img, height, width)?;
    match (channels, img) {
        (1, DynamicImage::ImageLuma8(g)) => Ok(g.into_raw().into_iter().map(from_u8).collect()),
        (3, DynamicImage::ImageRgb8(rgb)) => {
            let hw = height * width;
            let mut out = vec![0.0; 3 * hw];
            for (i, p) in rgb.pixels().enumerate() {
                for c in 0..3 {
                    out[c * hw + i] = from_u8(p.0[c]);
                }
            }
            Ok(out)
        }
        (_, other) => Err(EvalError::Png {
            path: path.to_path_buf(),
            detail: format!(
                "expected an 8-bit {} PNG, found {:?}",
                if channels == 1 { "grey" } else { "RGB" },
                other.color()
            ),
        }),
    }
}

/// Writes class ids as a grey PNG (8-bit when every id is below 256, else 16-bit), atomically.
pub fn write_label_png(path: &Path, labels: &[u32], height: usize, width: usize) -> Result<()> {
    if labels.len() != height * width {
        return Err(EvalError::ShapeMismatch {
            what: "label map vs height*width",
            left: vec![labels.len()],
            right: vec![height, width],
        });
    }
    let max = labels.iter().copied().max().unwrap_or(0);
    let img = if max < 256 {
        DynamicImage::ImageLuma8(GrayImage::from_fn(width as u32, height as u32, |x, y| {
            Luma([labels[y as usize * width + x as usize] as u8])
        }))
    } else if max < 65536 {
        DynamicImage::ImageLuma16(ImageBuffer::from_fn(width as u32, height as u32, |x, y| {
            Luma([labels[y as usize * width + x as usize] as u16])
        }))
    } else {
        return Err(EvalError::InvalidArgument {
            name: "class id",
            value: max.to_string(),
            reason: "a PNG label map holds ids below 65536",
        });
    };
    save(path, &img)
}

/// Reads a grey 8- or 16-bit PNG of class ids: `(ids, height, width)`.
pub fn read_label_png(path: &Path) -> Result<(Vec<u32>, usize, usize)> {
    let img = open(path)?;
    let (h, w) = (img.height() as usize, img.width() as usize);
    let ids = match img {
        DynamicImage::ImageLuma8(g) => g.into_raw().into_iter().map(u32::from).collect(),
        DynamicImage::ImageLuma16(g) => g.into_raw().into_iter().map(u32::from).collect(),
        other => {
            return Err(EvalError::Png {
                path: path.to_path_buf(),
                detail: format!(
                    "a label map must be one grey channel, found {:?}",
                    other.color()
                ),
            })
        }
    };
    Ok((ids, h, w))
}

fn open(path: &Path) -> Result<DynamicImage> {
    Ok(segdiff_io::read_image(path)?)
}

fn check_size(path: &Path, img: &DynamicImage, height: usize, width: usize) -> Result<()> {
    let (h, w) = (img.height() as usize, img.width() as usize);
    if (h, w) != (height, width) {
        return Err(EvalError::Png {
            path: path.to_path_buf(),
            detail: format!("{h}×{w} pixels, expected {height}×{width}"),
        });
    }
    Ok(())
}

fn save(path: &Path, img: &DynamicImage) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| EvalError::Write {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    Ok(segdiff_io::write_png(path, img)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_and_labels_round_trip() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|source| EvalError::Io {
            path: std::env::temp_dir(),
            source,
        })?;
        // 8-bit quantisation: values already on the 1/255 grid survive exactly.
        let grid: Vec<f32> = (0..2 * 3 * 3)
            .map(|i| (i * 13 % 256) as f32 / 255.0)
            .collect();
        let rgb: Vec<f32> = (0..3 * 2 * 3)
            .map(|i| (i * 29 % 256) as f32 / 255.0)
            .collect();
        let p = dir.path().join("a/grey.png");
        write_image_png(&p, &grid[..6], 1, 2, 3)?;
        let back = read_image_png(&p, 1, 2, 3)?;
        for (b, g) in back.iter().zip(&grid[..6]) {
            assert!((b * 0.5 + 0.5 - g).abs() < 1e-6, "{b} vs {g}");
        }
        let p = dir.path().join("rgb.png");
        write_image_png(&p, &rgb, 3, 2, 3)?;
        let back = read_image_png(&p, 3, 2, 3)?;
        for (b, g) in back.iter().zip(&rgb) {
            assert!((b * 0.5 + 0.5 - g).abs() < 1e-6, "{b} vs {g}");
        }
        // Wrong expectations name the file.
        let err = read_image_png(&p, 1, 2, 3).unwrap_err().to_string();
        assert!(err.contains("rgb.png") && err.contains("grey"), "{err}");
        let err = read_image_png(&p, 3, 3, 3).unwrap_err().to_string();
        assert!(err.contains("2×3"), "{err}");

        let labels = [0u32, 1, 2, 255, 3, 0];
        let p = dir.path().join("l8.png");
        write_label_png(&p, &labels, 2, 3)?;
        assert_eq!(read_label_png(&p)?, (labels.to_vec(), 2, 3));
        let wide = [0u32, 300, 2, 1, 1, 65535];
        write_label_png(&p, &wide, 3, 2)?;
        assert_eq!(read_label_png(&p)?, (wide.to_vec(), 3, 2));
        Ok(())
    }

    #[test]
    fn quantisation_rounds_and_clamps() {
        assert_eq!(to_u8(-0.2), 0);
        assert_eq!(to_u8(1.5), 255);
        assert_eq!(to_u8(0.5), 128);
        assert_eq!(to_u8(127.4 / 255.0), 127);
        assert_eq!(from_u8(0), -1.0);
        assert_eq!(from_u8(255), 1.0);
    }
}
