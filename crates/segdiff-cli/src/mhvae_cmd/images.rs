//! What the MHVAE commands share: the model, images read at its size, batches, outputs.

use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use segdiff_io::Channels;
use segdiff_mhvae::Mhvae;

use crate::png_io::png_files;

/// Images per forward pass.
pub const BATCH: usize = 16;

/// Loads a model folder, naming it on failure.
pub fn load_model(dir: &Path, device: &Device) -> Result<Mhvae> {
    Mhvae::load(dir, device).with_context(|| format!("loading the MHVAE model {}", dir.display()))
}

/// An input image: its file name and C×S×S values in [0, 1].
pub struct InputImage {
    pub name: String,
    pub chw01: Vec<f32>,
}

/// The PNGs of a folder (or one file), read with the model's channel count; every image must be
/// the model's size.
pub fn read_images(path: &Path, model: &Mhvae) -> Result<Vec<InputImage>> {
    let cfg = model.config();
    let channels = if cfg.image_channels == 3 {
        Channels::Rgb
    } else {
        Channels::Grey
    };
    let s = cfg.image_size;
    png_files(path)?
        .into_iter()
        .map(|p| {
            let (_, h, w, chw01) = segdiff_io::read_chw01(&p, channels)
                .with_context(|| format!("reading the image {}", p.display()))?;
            if (h, w) != (s, s) {
                bail!(
                    "{}: the image is {h}×{w}, the model works at {s}×{s} (resize the images, e.g. with segdiff prepare --size {s})",
                    p.display()
                );
            }
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            Ok(InputImage { name, chw01 })
        })
        .collect()
}

/// The images as one (N, C, S, S) tensor.
pub fn stack(images: &[&InputImage], model: &Mhvae) -> Result<Tensor> {
    let cfg = model.config();
    let (c, s) = (cfg.image_channels, cfg.image_size);
    let flat: Vec<f32> = images
        .iter()
        .flat_map(|i| i.chw01.iter().copied())
        .collect();
    Ok(Tensor::from_vec(
        flat,
        (images.len(), c, s, s),
        model.device(),
    )?)
}

/// Rows of an (N, …) tensor as flat f32 vectors.
pub fn rows(t: &Tensor) -> Result<Vec<Vec<f32>>> {
    Ok(t.to_dtype(DType::F32)?
        .flatten_from(1)?
        .to_device(&Device::Cpu)?
        .to_vec2::<f32>()?)
}

/// Writes a C×S×S image in [0, 1] as PNG (atomically).
pub fn save_image(path: &Path, chw01: &[f32], model: &Mhvae) -> Result<()> {
    let cfg = model.config();
    let s = cfg.image_size;
    segdiff_io::picture::save_chw01_png(path, chw01, cfg.image_channels, s, s)
        .with_context(|| format!("writing {}", path.display()))
}

/// Writes a 0/1 mask (values 0 and 1, segdiff's class-id convention) as an 8-bit PNG.
pub fn save_mask(path: &Path, mask01: &[f32], s: usize) -> Result<()> {
    let ids: Vec<u8> = mask01.iter().map(|&v| u8::from(v >= 0.5)).collect();
    let img = image::GrayImage::from_raw(s as u32, s as u32, ids).context("mask size")?;
    segdiff_io::write_png(path, &image::DynamicImage::ImageLuma8(img))
        .with_context(|| format!("writing {}", path.display()))
}

/// Creates the output folder and removes what a killed earlier run left half-written there.
pub fn prepare_out(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    segdiff_io::remove_stale_temps(dir).with_context(|| format!("cleaning {}", dir.display()))?;
    Ok(())
}
