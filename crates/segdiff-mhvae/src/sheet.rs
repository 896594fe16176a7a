//! Pictures of what the model does, for previews during training and the commands' reports: one
//! row per image — the input with its true mask, the reconstruction, the input with the
//! predicted mask (the warped reference).

use candle_core::{DType, Tensor};
use image::RgbImage;
use segdiff_io::picture::{grid, image_from_chw01, overlay};

use crate::model::Mhvae;
use crate::Result;

const TRUE_COLOUR: [u8; 3] = [60, 200, 90];
const PREDICTED_COLOUR: [u8; 3] = [230, 70, 60];

/// The grey version of a C×S×S image in [0, 1] (ITU-R 601 luma for RGB).
fn grey(chw: &[f32], channels: usize, hw: usize) -> Vec<f32> {
    if channels == 1 {
        return chw[..hw].to_vec();
    }
    (0..hw)
        .map(|i| 0.299 * chw[i] + 0.587 * chw[hw + i] + 0.114 * chw[2 * hw + i])
        .collect()
}

/// An image tile (RGB) of a C×S×S image in [0, 1].
pub fn tile(chw: &[f32], channels: usize, s: usize) -> RgbImage {
    image_from_chw01(chw, channels, s, s)
        .map(|d| d.to_rgb8())
        .unwrap_or_else(|| RgbImage::new(s as u32, s as u32))
}

/// An image with a 0/1 mask blended over it.
pub fn mask_tile(chw: &[f32], channels: usize, s: usize, mask: &[u8], colour: [u8; 3]) -> RgbImage {
    overlay(
        &grey(chw, channels, s * s),
        mask,
        s,
        s,
        &[[0, 0, 0], colour],
        0.45,
    )
}

/// The sheet for images `x01` (N, C, S, S) and their true 0/1 masks `y` (N, 1, S, S): columns
/// input + true mask (green), reconstruction, input + predicted mask (red; absent for the
/// single-headed VAE).
pub fn reconstruction_sheet(model: &Mhvae, x01: &Tensor, y: &Tensor) -> Result<RgbImage> {
    let (n, c, s, _) = x01.dims4()?;
    let post = model.encode(x01)?;
    let theta = post.theta.as_ref().map(|t| &t.0);
    let recon = model.decode(&post.mu_z, theta)?;
    let predicted = theta.map(|t| model.segment(t)).transpose()?;
    let rows = |t: &Tensor| -> Result<Vec<Vec<f32>>> {
        Ok(t.to_dtype(DType::F32)?.flatten_from(1)?.to_vec2::<f32>()?)
    };
    let (xs, ys, rs) = (rows(x01)?, rows(y)?, rows(&recon)?);
    let ps = predicted.as_ref().map(rows).transpose()?;
    let as_mask = |v: &[f32]| v.iter().map(|&m| u8::from(m >= 0.5)).collect::<Vec<u8>>();
    let mut tiles = Vec::new();
    for i in 0..n {
        tiles.push(mask_tile(&xs[i], c, s, &as_mask(&ys[i]), TRUE_COLOUR));
        tiles.push(tile(&rs[i], c, s));
        if let Some(ps) = &ps {
            tiles.push(mask_tile(&xs[i], c, s, &as_mask(&ps[i]), PREDICTED_COLOUR));
        }
    }
    let cols = if ps.is_some() { 3 } else { 2 };
    Ok(viewable(grid(&tiles, cols), s))
}

/// Sheets shown to people: at most this many images.
pub const SHEET_IMAGES: usize = 16;

/// A picture enlarged (nearest neighbour) so that tiles of small images are at least 128 pixels
/// wide.
pub fn viewable(picture: RgbImage, image_size: usize) -> RgbImage {
    let zoom = (128 / image_size.max(1)).max(1) as u32;
    if zoom == 1 {
        return picture;
    }
    let (w, h) = picture.dimensions();
    image::imageops::resize(
        &picture,
        w * zoom,
        h * zoom,
        image::imageops::FilterType::Nearest,
    )
}
