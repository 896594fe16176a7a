//! [`SegData`]: images and masks held in memory for training and validation, and the
//! (augmented) batches drawn from them.

use candle_core::{DType, Device, Tensor};

use super::augmentation::Transform;
use crate::error::{EvalError, Result};
use crate::label_maps::LabelMaps;

/// In-memory training or validation data: images `(N, C, H, W)` (f32, expected in `[-1, 1]`)
/// with their class-id masks.
#[derive(Clone, Debug)]
pub struct SegData {
    images: Vec<f32>,
    channels: usize,
    masks: LabelMaps,
}

impl SegData {
    /// Pairs an `(N, C, H, W)` image tensor with `(N, H, W)` masks; values must be finite.
    pub fn new(images: &Tensor, masks: LabelMaps) -> Result<Self> {
        let (n, c, h, w) = images.dims4().map_err(|_| EvalError::BadShape {
            what: "segmenter training images",
            shape: images.dims().to_vec(),
            expected: "(N, C, H, W)",
        })?;
        let values = images
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        Self::from_vec(values, n, c, h, w, masks)
    }

    /// As [`new`](Self::new) from a row-major `(n, c, h, w)` buffer.
    pub fn from_vec(
        images: Vec<f32>,
        n: usize,
        c: usize,
        h: usize,
        w: usize,
        masks: LabelMaps,
    ) -> Result<Self> {
        if images.len() != n * c * h * w || c == 0 {
            return Err(EvalError::ShapeMismatch {
                what: "segmenter image buffer vs (N, C, H, W)",
                left: vec![images.len()],
                right: vec![n, c, h, w],
            });
        }
        if masks.shape() != (n, h, w) {
            return Err(EvalError::ShapeMismatch {
                what: "segmenter masks (N, H, W) vs images",
                left: vec![masks.samples(), masks.height(), masks.width()],
                right: vec![n, h, w],
            });
        }
        if let Some(index) = images.iter().position(|v| !v.is_finite()) {
            return Err(EvalError::NonFinite {
                what: "segmenter training images",
                index,
                value: f64::from(images[index]),
            });
        }
        Ok(Self {
            images,
            channels: c,
            masks,
        })
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.masks.samples()
    }

    /// True when there are no samples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Image channels C.
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// `(height, width)`.
    pub fn image_size(&self) -> (usize, usize) {
        (self.masks.height(), self.masks.width())
    }

    /// The masks.
    pub fn masks(&self) -> &LabelMaps {
        &self.masks
    }

    /// The images as an `(N, C, H, W)` f32 tensor.
    pub fn images(&self, device: &Device) -> Result<Tensor> {
        let (h, w) = self.image_size();
        Ok(Tensor::from_slice(
            &self.images,
            (self.len(), self.channels, h, w),
            device,
        )?)
    }

    /// Images and masks of `indices`, each sample transformed as `transforms` says.
    pub(super) fn batch(
        &self,
        indices: &[usize],
        transforms: &[Transform],
        device: &Device,
    ) -> Result<(Tensor, LabelMaps)> {
        let (h, w) = self.image_size();
        let (c, hw) = (self.channels, h * w);
        let mut images = Vec::with_capacity(indices.len() * c * hw);
        let mut masks = Vec::with_capacity(indices.len() * hw);
        for (k, &i) in indices.iter().enumerate() {
            let t = transforms.get(k).copied().unwrap_or_default();
            for ch in 0..c {
                let start = (i * c + ch) * hw;
                images.extend(t.apply(&self.images[start..start + hw], h, w));
            }
            masks.extend(t.apply(self.masks.sample(i), h, w));
        }
        Ok((
            Tensor::from_vec(images, (indices.len(), c, h, w), device)?,
            LabelMaps::new(masks, indices.len(), h, w)?,
        ))
    }
}
