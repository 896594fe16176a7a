//! A batch of 2-D class-id maps: the input of the overlap and distance metrics.

use candle_core::{DType, Tensor, D};

use crate::error::{EvalError, Result};

/// `n` class-id maps of `height × width`, row-major, sample after sample.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelMaps {
    labels: Vec<u32>,
    samples: usize,
    height: usize,
    width: usize,
}

impl LabelMaps {
    /// Wraps `labels` laid out as `(samples, height, width)`.
    pub fn new(labels: Vec<u32>, samples: usize, height: usize, width: usize) -> Result<Self> {
        let expected = samples
            .checked_mul(height)
            .and_then(|v| v.checked_mul(width))
            .ok_or(EvalError::BadShape {
                what: "label maps",
                shape: vec![samples, height, width],
                expected: "a size that fits in memory",
            })?;
        if labels.len() != expected {
            return Err(EvalError::ShapeMismatch {
                what: "label buffer length vs samples*height*width",
                left: vec![labels.len()],
                right: vec![samples, height, width],
            });
        }
        Ok(Self {
            labels,
            samples,
            height,
            width,
        })
    }

    /// Reads an `(N, H, W)` or `(N, 1, H, W)` tensor of class ids, integer or float dtype.
    /// Float values must be exact non-negative integers (masks stored as `class` floats).
    pub fn from_tensor(t: &Tensor) -> Result<Self> {
        let (samples, height, width) = match *t.dims() {
            [n, h, w] => (n, h, w),
            [n, 1, h, w] => (n, h, w),
            _ => {
                return Err(EvalError::BadShape {
                    what: "label tensor",
                    shape: t.dims().to_vec(),
                    expected: "(N, H, W) or (N, 1, H, W)",
                })
            }
        };
        let values = t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        let labels = values
            .iter()
            .enumerate()
            .map(|(index, &v)| {
                if v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v <= f64::from(u32::MAX) {
                    Ok(v as u32)
                } else {
                    Err(EvalError::InvalidLabel {
                        what: "label tensor",
                        value: v,
                        index,
                    })
                }
            })
            .collect::<Result<Vec<u32>>>()?;
        Self::new(labels, samples, height, width)
    }

    /// Hard segmentation from `(N, C, H, W)` scores: argmax over the class dimension (first
    /// maximum on ties, like `torch.argmax`).
    pub fn from_logits(logits: &Tensor) -> Result<Self> {
        let (samples, _, height, width) = logits.dims4().map_err(|_| EvalError::BadShape {
            what: "segmentation logits",
            shape: logits.dims().to_vec(),
            expected: "(N, C, H, W)",
        })?;
        let labels = logits
            .argmax(D::Minus(3))?
            .flatten_all()?
            .to_dtype(DType::U32)?
            .to_vec1::<u32>()?;
        Self::new(labels, samples, height, width)
    }

    /// Number of maps.
    pub fn samples(&self) -> usize {
        self.samples
    }

    /// Rows per map.
    pub fn height(&self) -> usize {
        self.height
    }

    /// Columns per map.
    pub fn width(&self) -> usize {
        self.width
    }

    /// `(samples, height, width)`.
    pub fn shape(&self) -> (usize, usize, usize) {
        (self.samples, self.height, self.width)
    }

    /// The whole buffer, `(samples, height, width)` row-major.
    pub fn as_slice(&self) -> &[u32] {
        &self.labels
    }

    /// The map of sample `i`, row-major. Panics if `i >= samples()`.
    pub fn sample(&self, i: usize) -> &[u32] {
        let n = self.height * self.width;
        &self.labels[i * n..(i + 1) * n]
    }

    /// The labels as an `(N, 1, H, W)` u32 tensor.
    pub fn to_tensor(&self, device: &candle_core::Device) -> Result<Tensor> {
        Ok(Tensor::from_slice(
            &self.labels,
            (self.samples, 1, self.height, self.width),
            device,
        )?)
    }

    /// Fails with the first label `>= num_classes`.
    pub fn check_classes(&self, num_classes: usize, what: &'static str) -> Result<()> {
        match self.labels.iter().position(|&l| l as usize >= num_classes) {
            Some(index) => Err(EvalError::ClassOutOfRange {
                what,
                value: f64::from(self.labels[index]),
                index,
                num_classes,
            }),
            None => Ok(()),
        }
    }

    pub(crate) fn check_same_shape(&self, other: &Self, what: &'static str) -> Result<()> {
        if self.shape() != other.shape() {
            return Err(EvalError::ShapeMismatch {
                what,
                left: vec![self.samples, self.height, self.width],
                right: vec![other.samples, other.height, other.width],
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn reads_nchw_float_masks_and_rejects_fractions() -> Result<()> {
        let t = Tensor::new(&[[[[0f32, 1.], [2., 3.]]]], &Device::Cpu)?;
        let m = LabelMaps::from_tensor(&t)?;
        assert_eq!(m.shape(), (1, 2, 2));
        assert_eq!(m.as_slice(), &[0, 1, 2, 3]);
        let bad = Tensor::new(&[[[0.5f32, 1.]]], &Device::Cpu)?;
        assert!(matches!(
            LabelMaps::from_tensor(&bad),
            Err(EvalError::InvalidLabel { index: 0, .. })
        ));
        let neg = Tensor::new(&[[[0i64, -1]]], &Device::Cpu)?;
        assert!(matches!(
            LabelMaps::from_tensor(&neg),
            Err(EvalError::InvalidLabel { index: 1, .. })
        ));
        Ok(())
    }

    #[test]
    fn argmax_over_class_dimension() -> Result<()> {
        // (1, 3, 1, 2): pixel 0 is class 2, pixel 1 class 0 (tie 0/1 resolves to the first).
        let t = Tensor::new(&[[[[0f32, 5.]], [[1., 5.]], [[4., -1.]]]], &Device::Cpu)?;
        let m = LabelMaps::from_logits(&t)?;
        assert_eq!(m.as_slice(), &[2, 0]);
        assert!(m.check_classes(3, "pred").is_ok());
        assert!(matches!(
            m.check_classes(2, "pred"),
            Err(EvalError::ClassOutOfRange { index: 0, .. })
        ));
        Ok(())
    }
}
