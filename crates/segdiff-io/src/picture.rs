//! Pictures a person looks at: masks in per-class colours, overlays on greyscale images,
//! side-by-side sheets and grids, written as PNG (atomically).

use std::path::Path;

use image::{DynamicImage, GrayImage, Luma, Rgb, RgbImage};

use crate::image_file::{write_png, ImageFileError, ImageFileResult};

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

/// `round(clamp(x, 0, 1) · 255)`: how a [0, 1] value becomes an 8-bit pixel (as the official
/// sampler saves its images).
pub fn to_u8(x01: f32) -> u8 {
    (x01.clamp(0.0, 1.0) * 255.0).round() as u8
}

/// A `C×H×W` image in [0, 1] with 1 (grey) or 3 (RGB) channels as an 8-bit image; `None` for
/// another channel count or a buffer of the wrong length.
pub fn image_from_chw01(
    chw01: &[f32],
    channels: usize,
    h: usize,
    w: usize,
) -> Option<DynamicImage> {
    let hw = h * w;
    if chw01.len() != channels * hw {
        return None;
    }
    match channels {
        1 => Some(DynamicImage::ImageLuma8(GrayImage::from_fn(
            w as u32,
            h as u32,
            |x, y| Luma([to_u8(chw01[y as usize * w + x as usize])]),
        ))),
        3 => Some(DynamicImage::ImageRgb8(RgbImage::from_fn(
            w as u32,
            h as u32,
            |x, y| {
                let i = y as usize * w + x as usize;
                Rgb(std::array::from_fn(|c| to_u8(chw01[c * hw + i])))
            },
        ))),
        _ => None,
    }
}

/// Writes a picture as PNG (atomically), creating its folder first.
pub fn save_png(path: &Path, img: &RgbImage) -> ImageFileResult<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| ImageFileError::Io {
            path: dir.to_path_buf(),
            action: "creating the folder",
            source,
        })?;
    }
    write_png(path, &DynamicImage::ImageRgb8(img.clone()))
}

/// Writes a one-channel image in [0, 1] as an 8-bit grey PNG, atomically.
pub fn save_grey_png(path: &Path, grey01: &[f32], h: usize, w: usize) -> ImageFileResult<()> {
    save_chw01_png(path, grey01, 1, h, w)
}

/// Writes a 3-channel image in [0, 1] (CHW order) as an RGB PNG, atomically.
pub fn save_rgb_png(path: &Path, chw01: &[f32], h: usize, w: usize) -> ImageFileResult<()> {
    save_chw01_png(path, chw01, 3, h, w)
}

/// Writes a `C×H×W` image in [0, 1] (C = 1 or 3) as an 8-bit PNG, atomically.
pub fn save_chw01_png(
    path: &Path,
    chw01: &[f32],
    channels: usize,
    h: usize,
    w: usize,
) -> ImageFileResult<()> {
    let img = image_from_chw01(chw01, channels, h, w).ok_or(ImageFileError::Shape {
        path: path.to_path_buf(),
        values: chw01.len(),
        channels,
        height: h,
        width: w,
    })?;
    write_png(path, &img)
}
