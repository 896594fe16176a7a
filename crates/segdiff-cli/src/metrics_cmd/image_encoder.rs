//! What turns a folder of PNG images into FID features: a segmenter's pooled bottleneck or
//! Inception-v3's pool output.

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use candle_core::{DType, Device, Module, Tensor};
use segdiff_eval::{inception_input, load_segmenter, InceptionV3, MonaiUNet, SegmenterSpec};

use super::png_folders::{png_names, read_grey};

/// What turns a folder of images into features (boxed: both are large structs of tensor
/// handles).
pub(super) enum ImageEncoder {
    /// A segmenter's pooled bottleneck.
    Segmenter(Box<(MonaiUNet, SegmenterSpec)>),
    /// Inception-v3's 2048-d pool output.
    Inception(Box<InceptionV3>),
}

impl ImageEncoder {
    /// The encoder that `--encoder SEGMENTER_DIR` or `--inception-weights FILE` names, if either.
    pub(super) fn load(
        segmenter_dir: Option<&Path>,
        inception_weights: Option<&Path>,
        device: &Device,
    ) -> Result<Option<Self>> {
        Ok(match (segmenter_dir, inception_weights) {
            (Some(_), Some(_)) => {
                bail!("--encoder and --inception-weights exclude each other: give one of them")
            }
            (Some(dir), None) => {
                let segmenter = load_segmenter(dir, device)
                    .with_context(|| format!("loading the encoder {}", dir.display()))?;
                Some(ImageEncoder::Segmenter(Box::new(segmenter)))
            }
            (None, Some(file)) => Some(ImageEncoder::Inception(Box::new(
                InceptionV3::load(file, device)
                    .with_context(|| format!("loading Inception-v3 weights {}", file.display()))?,
            ))),
            (None, None) => None,
        })
    }

    /// N×D features of every PNG in `dir` (sorted by name), `batch_size` images at a time.
    pub(super) fn encode_folder(
        &self,
        dir: &Path,
        batch_size: usize,
        device: &Device,
    ) -> Result<Tensor> {
        match self {
            ImageEncoder::Segmenter(segmenter) => {
                let (model, spec) = segmenter.as_ref();
                encode_folder_segmenter(dir, model, spec, batch_size, device)
            }
            ImageEncoder::Inception(net) => encode_folder_inception(dir, net, batch_size, device),
        }
    }
}

/// Every PNG in `dir` (sorted by name), handed to `encode` `batch_size` paths at a time; the
/// features of all batches gathered on the CPU in f32.
fn encode_in_batches(
    dir: &Path,
    batch_size: usize,
    mut encode: impl FnMut(&[PathBuf]) -> Result<Tensor>,
) -> Result<Tensor> {
    let names = png_names(dir)?;
    let mut parts = Vec::new();
    for chunk in names.chunks(batch_size) {
        let paths: Vec<PathBuf> = chunk.iter().map(|name| dir.join(name)).collect();
        parts.push(
            encode(&paths)?
                .to_device(&Device::Cpu)?
                .to_dtype(DType::F32)?,
        );
    }
    Ok(Tensor::cat(&parts, 0)?)
}

/// Pooled bottleneck features of every PNG in `dir` (sorted by name), read and encoded
/// `batch_size` images at a time.
fn encode_folder_segmenter(
    dir: &Path,
    model: &MonaiUNet,
    spec: &SegmenterSpec,
    batch_size: usize,
    device: &Device,
) -> Result<Tensor> {
    ensure!(
        spec.network.in_channels == 1,
        "the encoder takes {} channels; only greyscale image folders are supported",
        spec.network.in_channels
    );
    let [h, w] = spec.image_size;
    encode_in_batches(dir, batch_size, |paths| {
        let mut values = Vec::with_capacity(paths.len() * h * w);
        for path in paths {
            let g = read_grey(path)?;
            ensure!(
                (g.height, g.width) == (h, w),
                "{} is {}x{} but the encoder was trained on {h}x{w} images",
                path.display(),
                g.height,
                g.width
            );
            let max = g.pixels.iter().copied().max().unwrap_or(0);
            ensure!(
                f64::from(max) <= spec.input.pixel_max,
                "{} has pixel value {max} above the encoder's input range {}..{}",
                path.display(),
                spec.input.pixel_min,
                spec.input.pixel_max
            );
            values.extend(g.pixels.iter().map(|&v| spec.input.apply(f64::from(v))));
        }
        let x = Tensor::from_vec(values, (paths.len(), 1, h, w), device)?;
        segdiff_eval::encode(model, &x, batch_size)
            .with_context(|| format!("encoding images of {}", dir.display()))
    })
}

/// A PNG as `C×H×W` values in [0, 1] (8-bit / 255, 16-bit / 65535), C = 1 (grey) or 3 (RGB).
pub(super) fn read_image01(path: &Path) -> Result<(usize, usize, usize, Vec<f32>)> {
    Ok(segdiff_io::read_chw01(
        path,
        segdiff_io::Channels::AsStored,
    )?)
}

/// Inception-v3 pool features of every PNG in `dir` (sorted by name), `batch_size` images per
/// forward pass; each image is resized to 299×299 on its own, so sizes may differ.
fn encode_folder_inception(
    dir: &Path,
    net: &InceptionV3,
    batch_size: usize,
    device: &Device,
) -> Result<Tensor> {
    encode_in_batches(dir, batch_size, |paths| {
        let mut inputs = Vec::with_capacity(paths.len());
        for path in paths {
            let (c, h, w, values) = read_image01(path)?;
            let x = Tensor::from_vec(values, (1, c, h, w), device)?;
            inputs.push(
                inception_input(&x)
                    .with_context(|| format!("preparing {} for Inception-v3", path.display()))?,
            );
        }
        net.forward(&Tensor::cat(&inputs, 0)?)
            .with_context(|| format!("encoding images of {} with Inception-v3", dir.display()))
    })
}
