//! One split of a prepared dataset held in memory for evaluation: images in `[-1, 1]` (as the
//! diffusion model and the segmenter see them) with their class-id masks, decoded by
//! `segdiff-data` (so resizing and scaling match training exactly).

use candle_core::{Device, Tensor};
use rayon::prelude::*;
use segdiff_data::Dataset;

use crate::error::{EvalError, Result};
use crate::label_maps::LabelMaps;
use crate::segmenter_training::SegData;

/// At most `max` indices of `0..len`, spread evenly (`⌊i·len/max⌋`) so that a subset of a
/// slice-ordered dataset covers the whole range of slices; all of them when `max` is `None` or
/// not below `len`.
pub fn evenly_spaced(len: usize, max: Option<usize>) -> Vec<usize> {
    match max {
        Some(m) if m < len => (0..m).map(|i| i * len / m).collect(),
        _ => (0..len).collect(),
    }
}

/// Decoded pairs of one split, all of one size.
#[derive(Clone, Debug)]
pub struct SplitData {
    names: Vec<String>,
    channels: usize,
    height: usize,
    width: usize,
    images: Vec<f32>,
    masks: Option<LabelMaps>,
}

impl SplitData {
    /// Decodes the pairs `indices` of `dataset` (in parallel). Every image must have the first
    /// one's channels and size; masks must be present for all pairs or for none.
    pub fn load(dataset: &Dataset, indices: &[usize]) -> Result<Self> {
        let samples = indices
            .par_iter()
            .map(|&i| dataset.load(i))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let Some(first) = samples.first() else {
            return Err(EvalError::Incompatible {
                what: format!(
                    "{} ({} split)",
                    dataset.root().display(),
                    dataset.split().name()
                ),
                reason: "no image/mask pairs selected".into(),
            });
        };
        let (c, h, w) = (first.channels, first.height, first.width);
        let with_masks = first.mask.is_some();
        let mut names = Vec::with_capacity(samples.len());
        let mut images = Vec::with_capacity(samples.len() * c * h * w);
        let mut masks = Vec::with_capacity(if with_masks { samples.len() * h * w } else { 0 });
        for (s, &i) in samples.iter().zip(indices) {
            let path = || {
                dataset
                    .items()
                    .get(i)
                    .map_or_else(|| s.name.clone(), |item| item.image.display().to_string())
            };
            if (s.channels, s.height, s.width) != (c, h, w) {
                return Err(EvalError::Incompatible {
                    what: path(),
                    reason: format!(
                        "{}×{}×{} (channels × height × width) differs from {}: {c}×{h}×{w}; \
                         resize on load (--size)",
                        s.channels, s.height, s.width, first.name
                    ),
                });
            }
            match (&s.mask, with_masks) {
                (Some(m), true) => masks.extend(m.iter().map(|&v| u32::from(v))),
                (None, false) => {}
                _ => {
                    return Err(EvalError::Incompatible {
                        what: path(),
                        reason: "some pairs of the split have masks and others do not".into(),
                    })
                }
            }
            names.push(s.name.clone());
            images.extend_from_slice(&s.image);
        }
        let masks = if with_masks {
            Some(LabelMaps::new(masks, names.len(), h, w)?)
        } else {
            None
        };
        Ok(Self {
            names,
            channels: c,
            height: h,
            width: w,
            images,
            masks,
        })
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// True when there are none (never, for a loaded split).
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// File names, in load order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Image channels.
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// `(height, width)`.
    pub fn size(&self) -> (usize, usize) {
        (self.height, self.width)
    }

    /// Image `i` in CHW order, in `[-1, 1]`. Panics when out of range.
    pub fn image(&self, i: usize) -> &[f32] {
        let n = self.channels * self.height * self.width;
        &self.images[i * n..(i + 1) * n]
    }

    /// All images, row-major `(N, C, H, W)`.
    pub fn images(&self) -> &[f32] {
        &self.images
    }

    /// The images as an `(N, C, H, W)` f32 tensor.
    pub fn images_tensor(&self, device: &Device) -> Result<Tensor> {
        Ok(Tensor::from_slice(
            &self.images,
            (self.len(), self.channels, self.height, self.width),
            device,
        )?)
    }

    /// The masks, when the dataset has them.
    pub fn masks(&self) -> Option<&LabelMaps> {
        self.masks.as_ref()
    }

    /// Images and masks as segmenter training data; fails without masks.
    pub fn seg_data(&self) -> Result<SegData> {
        let masks = self.masks.clone().ok_or_else(|| EvalError::Incompatible {
            what: "segmenter training data".into(),
            reason: "the split has no masks".into(),
        })?;
        SegData::from_vec(
            self.images.clone(),
            self.len(),
            self.channels,
            self.height,
            self.width,
            masks,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evenly_spaced_covers_the_range() {
        assert_eq!(evenly_spaced(10, Some(4)), [0, 2, 5, 7]);
        assert_eq!(evenly_spaced(3, Some(8)), [0, 1, 2]);
        assert_eq!(evenly_spaced(3, None), [0, 1, 2]);
        assert_eq!(evenly_spaced(5, Some(5)), [0, 1, 2, 3, 4]);
        assert!(evenly_spaced(5, Some(0)).is_empty());
    }
}
