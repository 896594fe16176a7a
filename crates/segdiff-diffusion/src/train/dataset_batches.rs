//! A prepared dataset (`segdiff-data`'s layout) as diffusion training batches.

use candle_core::{Device, Tensor};
use rayon::prelude::*;
use segdiff_data::Dataset;

use super::diffusion::{DiffusionBatch, ImageMaskBatch};
use super::step_loop::TrainData;
use crate::{DiffusionError, Result};

/// The pairs of a dataset split, decoded in parallel into (images, masks) batches; a missing
/// mask is the all-background mask for an unconditional run and an error for a guided one.
pub struct DatasetBatches {
    data: Dataset,
    guided: bool,
}

impl DatasetBatches {
    /// Batches of `data`; `guided` runs need every mask.
    pub fn new(data: Dataset, guided: bool) -> Self {
        Self { data, guided }
    }

    /// The dataset split.
    pub fn dataset(&self) -> &Dataset {
        &self.data
    }

    /// The samples at `indices` as (images, masks).
    pub fn load_pairs(&self, indices: &[usize]) -> Result<ImageMaskBatch> {
        let samples: Vec<_> = indices
            .par_iter()
            .map(|&i| self.data.load(i))
            .collect::<std::result::Result<_, _>>()
            .map_err(DiffusionError::train_data)?;
        let Some(first) = samples.first() else {
            return Err(DiffusionError::train_data("an empty batch"));
        };
        let (c, h, w) = (first.channels, first.height, first.width);
        let mut images = Vec::with_capacity(samples.len() * c * h * w);
        let mut masks = Vec::with_capacity(samples.len() * h * w);
        for s in &samples {
            if (s.channels, s.height, s.width) != (c, h, w) {
                return Err(DiffusionError::train_data(format!(
                    "{}: {}×{}×{} differs from {}: {c}×{h}×{w} (use --size)",
                    s.name, s.channels, s.height, s.width, first.name
                )));
            }
            images.extend_from_slice(&s.image);
            match (&s.mask, self.guided) {
                (Some(m), _) => masks.extend(m.iter().map(|&v| u32::from(v))),
                (None, false) => masks.extend(std::iter::repeat_n(0u32, h * w)),
                (None, true) => {
                    return Err(DiffusionError::train_data(format!(
                        "{}: no mask for a segmentation-guided run",
                        s.name
                    )))
                }
            }
        }
        let n = samples.len();
        Ok((
            Tensor::from_vec(images, (n, c, h, w), &Device::Cpu)?,
            Tensor::from_vec(masks, (n, h, w), &Device::Cpu)?,
        ))
    }
}

impl TrainData for DatasetBatches {
    type Batch = DiffusionBatch;

    fn len(&self) -> usize {
        self.data.len()
    }

    fn load(&self, indices: &[usize]) -> Result<DiffusionBatch> {
        Ok(self.load_pairs(indices)?.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use segdiff_data::{DatasetOptions, Split};

    /// A mask that fails to load mid-training is a training-data error naming the mask file
    /// (it once read "optimiser state: <mask>").
    #[test]
    fn an_unreadable_mask_is_a_training_data_error_naming_it() {
        let tmp = tempfile::tempdir().unwrap();
        let (img, mask) = (
            tmp.path().join("img/train"),
            tmp.path().join("mask/all/train"),
        );
        std::fs::create_dir_all(&img).unwrap();
        std::fs::create_dir_all(&mask).unwrap();
        image::GrayImage::new(8, 8).save(img.join("a.png")).unwrap();
        std::fs::write(mask.join("a.png"), b"not a png").unwrap();
        std::fs::write(tmp.path().join("dataset.json"), r#"{"num_classes": 2}"#).unwrap();
        let data = Dataset::open(tmp.path(), Split::Train, &DatasetOptions::default()).unwrap();
        let err = DatasetBatches::new(data, true).load(&[0]).err().unwrap();
        assert!(matches!(err, DiffusionError::TrainData { .. }), "{err:?}");
        let chain = format!("{err}: {}", std::error::Error::source(&err).unwrap());
        assert!(chain.starts_with("training data: "), "{chain}");
        assert!(chain.contains("mask/all/train/a.png"), "{chain}");
        assert!(!chain.contains("optimiser"), "{chain}");
    }
}
