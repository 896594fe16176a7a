//! Per-sample, per-class metric values and MONAI's NaN-aware reductions over them.

use serde::Serialize;

/// A `(samples, classes)` table of metric values; NaN marks an entry MONAI ignores.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClassScores {
    values: Vec<f64>,
    samples: usize,
    class_ids: Vec<u32>,
}

impl ClassScores {
    pub(crate) fn new(values: Vec<f64>, samples: usize, class_ids: Vec<u32>) -> Self {
        debug_assert_eq!(values.len(), samples * class_ids.len());
        Self {
            values,
            samples,
            class_ids,
        }
    }

    /// Number of samples (rows).
    pub fn samples(&self) -> usize {
        self.samples
    }

    /// The class id of each column (background excluded when the metric excludes it).
    pub fn class_ids(&self) -> &[u32] {
        &self.class_ids
    }

    /// Value of `sample` at column `column` (not class id). Panics when out of range.
    pub fn get(&self, sample: usize, column: usize) -> f64 {
        self.values[sample * self.class_ids.len() + column]
    }

    /// All columns of one sample. Panics when out of range.
    pub fn row(&self, sample: usize) -> &[f64] {
        let c = self.class_ids.len();
        &self.values[sample * c..(sample + 1) * c]
    }

    /// The table, row-major `(samples, classes)`.
    pub fn as_slice(&self) -> &[f64] {
        &self.values
    }

    /// Number of non-NaN entries.
    pub fn count_valid(&self) -> usize {
        self.values.iter().filter(|v| !v.is_nan()).count()
    }

    /// MONAI `MetricReduction.MEAN`: each sample's NaN-ignoring mean over classes, then the mean
    /// over samples that have at least one value. 0 when nothing is valid (as MONAI returns).
    pub fn mean(&self) -> f64 {
        let (sum, n) = (0..self.samples)
            .filter_map(|s| nan_mean(self.row(s).iter().copied()))
            .fold((0.0, 0usize), |(sum, n), v| (sum + v, n + 1));
        if n == 0 {
            0.0
        } else {
            sum / n as f64
        }
    }

    /// MONAI `MetricReduction.MEAN_BATCH`: for each class, the NaN-ignoring mean over samples
    /// (0 for a class with no valid sample, as MONAI returns).
    pub fn mean_per_class(&self) -> Vec<f64> {
        (0..self.class_ids.len())
            .map(|c| nan_mean((0..self.samples).map(|s| self.get(s, c))).unwrap_or(0.0))
            .collect()
    }
}

fn nan_mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (sum, n) = values
        .filter(|v| !v.is_nan())
        .fold((0.0, 0usize), |(sum, n), v| (sum + v, n + 1));
    (n > 0).then(|| sum / n as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monai_mean_is_mean_of_sample_means() {
        // Row means: (1+3)/2 = 2, 5, row 2 all NaN (dropped) -> (2+5)/2 = 3.5.
        // A flat NaN-mean would give (1+3+5)/3 = 3.
        let s = ClassScores::new(
            vec![1.0, 3.0, f64::NAN, 5.0, f64::NAN, f64::NAN],
            3,
            vec![1, 2],
        );
        assert_eq!(s.mean(), 3.5);
        assert_eq!(s.mean_per_class(), vec![1.0, 4.0]);
        assert_eq!(s.count_valid(), 3);
        let empty = ClassScores::new(vec![f64::NAN], 1, vec![1]);
        assert_eq!(empty.mean(), 0.0);
    }
}
