//! Pictures a person looks at: masks in per-class colours, overlays on greyscale images,
//! side-by-side sheets and grids, written as PNG (atomically).

use std::path::Path;

use anyhow::{Context, Result};
use image::{Rgb, RgbImage};

/// The official code's colours for its datasets (`eval.py`), else a general palette.
pub fn class_colors(num_classes: usize, configured: Option<&[[u8; 3]]>) -> Vec<[u8; 3]> {
    if let Some(c) = configured {
        if c.len() >= num_classes {
            return c.to_vec();
        }
    }
    const PALETTE: [[u8; 3]; 16] = [
        [0, 0, 0],
        [230, 25, 75],
        [60, 180, 75],
        [0, 130, 200],
        [255, 225, 25],
        [245, 130, 48],
        [145, 30, 180],
        [70, 240, 240],
        [240, 50, 230],
        [210, 245, 60],
        [250, 190, 212],
        [0, 128, 128],
        [220, 190, 255],
        [170, 110, 40],
        [255, 250, 200],
        [128, 0, 0],
    ];
    (0..num_classes)
        .map(|i| PALETTE[i % PALETTE.len()])
        .collect()
}

/// A class-id mask in its colours.
pub fn mask_to_rgb(mask: &[u8], h: usize, w: usize, colors: &[[u8; 3]]) -> RgbImage {
    RgbImage::from_fn(w as u32, h as u32, |x, y| {
        let k = mask[y as usize * w + x as usize] as usize;
        Rgb(colors.get(k).copied().unwrap_or([255, 255, 255]))
    })
}

/// The mask blended over a greyscale image (background left as the image).
pub fn overlay(
    grey01: &[f32],
    mask: &[u8],
    h: usize,
    w: usize,
    colors: &[[u8; 3]],
    alpha: f32,
) -> RgbImage {
    RgbImage::from_fn(w as u32, h as u32, |x, y| {
        let i = y as usize * w + x as usize;
        let g = grey01[i].clamp(0.0, 1.0) * 255.0;
        let k = mask[i] as usize;
        if k == 0 {
            let v = g.round() as u8;
            return Rgb([v, v, v]);
        }
        let c = colors.get(k).copied().unwrap_or([255, 255, 255]);
        Rgb(std::array::from_fn(|j| {
            ((1.0 - alpha) * g + alpha * c[j] as f32).round() as u8
        }))
    })
}

/// Tiles laid out left to right, `cols` per row, separated by a 2-pixel gap.
pub fn grid(tiles: &[RgbImage], cols: usize) -> RgbImage {
    let Some(first) = tiles.first() else {
        return RgbImage::new(1, 1);
    };
    let (tw, th) = first.dimensions();
    let cols = cols.max(1).min(tiles.len());
    let rows = tiles.len().div_ceil(cols);
    let gap = 2;
    let mut out = RgbImage::from_pixel(
        cols as u32 * (tw + gap) - gap,
        rows as u32 * (th + gap) - gap,
        Rgb([40, 40, 40]),
    );
    for (i, t) in tiles.iter().enumerate() {
        let (r, c) = ((i / cols) as u32, (i % cols) as u32);
        image::imageops::replace(
            &mut out,
            t,
            (c * (tw + gap)) as i64,
            (r * (th + gap)) as i64,
        );
    }
    out
}

/// Writes `img` as PNG via a temporary file and rename.
pub fn save_png(path: &Path, img: &RgbImage) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    segdiff_unet::write_atomic(path, |tmp| {
        img.save_with_format(tmp, image::ImageFormat::Png)
            .map_err(std::io::Error::other)
    })
    .with_context(|| format!("writing {}", path.display()))
}

/// Writes a one-channel 8-bit PNG (e.g. a generated greyscale image) atomically.
pub fn save_grey_png(path: &Path, grey01: &[f32], h: usize, w: usize) -> Result<()> {
    let img = image::GrayImage::from_fn(w as u32, h as u32, |x, y| {
        image::Luma([(grey01[y as usize * w + x as usize].clamp(0.0, 1.0) * 255.0).round() as u8])
    });
    segdiff_unet::write_atomic(path, |tmp| {
        img.save_with_format(tmp, image::ImageFormat::Png)
            .map_err(std::io::Error::other)
    })
    .with_context(|| format!("writing {}", path.display()))
}

/// Writes a 3-channel image in [0, 1] (CHW order) as an RGB PNG, atomically.
pub fn save_rgb_png(path: &Path, chw01: &[f32], h: usize, w: usize) -> Result<()> {
    let img = RgbImage::from_fn(w as u32, h as u32, |x, y| {
        let i = y as usize * w + x as usize;
        Rgb(std::array::from_fn(|c| {
            (chw01[c * h * w + i].clamp(0.0, 1.0) * 255.0).round() as u8
        }))
    });
    save_png(path, &img)
}
