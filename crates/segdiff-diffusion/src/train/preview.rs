//! Training previews of segmentation-guided diffusion: a few masks sampled with the live weights
//! through the library sampler (DDIM built from the training schedule), drawn as
//! mask | sample-with-outline pairs.

use std::path::Path;

use candle_core::{DType, Device, Tensor};

use super::diffusion::Trainer;
use crate::sampler::SamplerKind;
use crate::sampler::{sample_images, SampleInput, SampleOptions, UnetDenoiser};
use crate::Result;

/// Masks to preview and how to sample them.
pub struct DiffusionPreview {
    /// Class-id masks, (N, H, W) u32.
    masks: Tensor,
    options: SampleOptions,
}

impl DiffusionPreview {
    /// Previews of `masks` (each `size`×`size`, row-major class ids) sampled with DDIM in 25
    /// steps from `seed`.
    pub fn new(masks: &[Vec<u8>], size: usize, seed: u64) -> Result<Self> {
        let flat: Vec<u32> = masks.iter().flatten().map(|&v| u32::from(v)).collect();
        let masks = Tensor::from_vec(flat, (masks.len(), size, size), &Device::Cpu)?;
        Ok(Self {
            options: SampleOptions {
                scheduler: SamplerKind::Ddim,
                steps: Some(25),
                seed,
                batch_size: masks.dim(0)?.max(1),
                ..SampleOptions::default()
            },
            masks,
        })
    }

    /// Samples with `trainer`'s live weights and writes the sheet to `path`.
    pub fn render(&self, trainer: &Trainer, path: &Path) -> Result<()> {
        let meta = &trainer.meta;
        let device = trainer.device().clone();
        let mut denoiser = UnetDenoiser::new(trainer.model(), DType::F32);
        let out = sample_images(
            &mut denoiser,
            &trainer.scheduler,
            meta,
            SampleInput::Masks(&self.masks),
            &self.options,
            &device,
            &mut |_| {},
        )?;
        let (n, _, h, w) = out.images01.dims4()?;
        let grey = out
            .images01
            .narrow(1, 0, 1)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let ids = self.masks.flatten_all()?.to_vec1::<u32>()?;
        let num_classes = meta.num_classes.unwrap_or(2);
        let colors = segdiff_io::picture::class_colors(num_classes, meta.class_colors.as_deref());
        let mut tiles = Vec::with_capacity(2 * n);
        for i in 0..n {
            let m: Vec<u8> = ids[i * h * w..(i + 1) * h * w]
                .iter()
                .map(|&v| v.min(255) as u8)
                .collect();
            let g = &grey[i * h * w..(i + 1) * h * w];
            tiles.push(segdiff_io::picture::mask_to_rgb(&m, h, w, &colors));
            tiles.push(segdiff_io::picture::overlay(g, &m, h, w, &colors, 0.0));
        }
        segdiff_io::picture::save_png(path, &segdiff_io::picture::grid(&tiles, 2))?;
        Ok(())
    }
}
