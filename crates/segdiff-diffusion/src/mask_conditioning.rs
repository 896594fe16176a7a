//! Mask conditioning of the denoiser: class-id maps to input channels, and the paper's mask
//! ablation (Algorithm 1) used to train models that accept partial masks.
//!
//! Encodings: `Single` is the official code's one channel holding `class_id / 255` (a uint8 mask
//! through `ToTensor()`); `OneHot` gives C−1 binary channels, background having none.

use candle_core::{DType, Tensor};
use rand::Rng;

use crate::error::{DiffusionError, Result};

/// How class ids become conditioning channels (`single` / `onehot` in `segdiff.json`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum MaskEncoding {
    /// One channel, `class_id / 255` in f32 (official implementation).
    #[serde(rename = "single")]
    Single,
    /// `num_classes − 1` channels; channel k−1 is 1 where the class is k.
    #[serde(rename = "onehot", alias = "one-hot", alias = "one_hot")]
    OneHot,
}

impl MaskEncoding {
    /// Number of conditioning channels for `num_classes` classes (background included).
    pub fn num_channels(self, num_classes: usize) -> usize {
        match self {
            Self::Single => 1,
            Self::OneHot => num_classes.saturating_sub(1),
        }
    }

    /// "single" / "onehot".
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Single => "single",
            Self::OneHot => "onehot",
        }
    }

    /// Parses "single" / "onehot" (also "one-hot", "one_hot").
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "single" => Some(Self::Single),
            "onehot" | "one-hot" | "one_hot" => Some(Self::OneHot),
            _ => None,
        }
    }
}

impl std::fmt::Display for MaskEncoding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Class ids of an (N, H, W) or (N, 1, H, W) u8 / u32 / i64 tensor as (dims (N, H, W), ids),
/// each checked to be `< num_classes`.
pub fn class_ids(mask: &Tensor, num_classes: usize) -> Result<((usize, usize, usize), Vec<u32>)> {
    let dims = match mask.dims() {
        &[n, h, w] => (n, h, w),
        &[n, 1, h, w] => (n, h, w),
        other => {
            return Err(DiffusionError::InvalidMask(format!(
                "expected (N, H, W) or (N, 1, H, W), got {other:?}"
            )))
        }
    };
    let flat = mask.flatten_all()?;
    let ids: Vec<u32> = match mask.dtype() {
        DType::U8 => flat.to_vec1::<u8>()?.into_iter().map(u32::from).collect(),
        DType::U32 => flat.to_vec1::<u32>()?,
        DType::I64 => {
            let v = flat.to_vec1::<i64>()?;
            let mut out = Vec::with_capacity(v.len());
            for (index, x) in v.into_iter().enumerate() {
                let id = u32::try_from(x).map_err(|_| {
                    DiffusionError::InvalidMask(format!(
                        "class id {x} at flat index {index} is negative or too large"
                    ))
                })?;
                out.push(id);
            }
            out
        }
        other => {
            return Err(DiffusionError::InvalidMask(format!(
                "class ids must be u8, u32 or i64, got {other:?}"
            )))
        }
    };
    validate_class_ids(&ids, num_classes)?;
    Ok((dims, ids))
}

/// Errors on the first id that is not `< num_classes`, naming it and its flat index.
pub fn validate_class_ids(ids: &[u32], num_classes: usize) -> Result<()> {
    if let Some((index, &value)) = ids
        .iter()
        .enumerate()
        .find(|(_, &v)| v as usize >= num_classes)
    {
        return Err(DiffusionError::MaskClassOutOfRange {
            value,
            index,
            num_classes,
        });
    }
    Ok(())
}

/// Encodes class ids (N, H, W) as f32 conditioning channels (N, C_cond, H, W) on the mask's device.
pub fn encode_mask(mask: &Tensor, num_classes: usize, encoding: MaskEncoding) -> Result<Tensor> {
    if num_classes == 0 {
        return Err(DiffusionError::InvalidParameter {
            name: "num_classes",
            value: "0".into(),
            reason: "must include background (>= 1)",
        });
    }
    let ((n, h, w), ids) = class_ids(mask, num_classes)?;
    let device = mask.device();
    let out = match encoding {
        MaskEncoding::Single => {
            // torchvision ToTensor on a uint8 image: float32(k) / 255 in f32.
            let v: Vec<f32> = ids.iter().map(|&k| k as f32 / 255.0f32).collect();
            Tensor::from_vec(v, (n, 1, h, w), device)?
        }
        MaskEncoding::OneHot => {
            let c = num_classes - 1;
            let plane = h * w;
            let mut v = vec![0f32; n * c * plane];
            for (flat, &k) in ids.iter().enumerate() {
                if k > 0 {
                    let (sample, pixel) = (flat / plane, flat % plane);
                    v[(sample * c + (k as usize - 1)) * plane + pixel] = 1.0;
                }
            }
            Tensor::from_vec(v, (n, c, h, w), device)?
        }
    };
    Ok(out)
}

/// Whether each sample of a batch gets its own ablation draw.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AblationMode {
    /// Paper's Algorithm 1: an independent subset of removed classes per sample.
    PerSample,
    /// Official code (`ablate_masks`): one subset drawn per batch and applied to every sample.
    PerBatch,
}

/// Random removal of foreground classes from training masks (paper Algorithm 1).
///
/// Each class 1..C−1 is removed (set to background 0) independently with probability `p_remove`;
/// with the default 0.5 all 2^(C−1) subsets are equally likely.
#[derive(Clone, Debug, PartialEq)]
pub struct MaskAblation {
    num_classes: usize,
    p_remove: f64,
    mode: AblationMode,
}

impl MaskAblation {
    /// Validates `num_classes >= 1` and `p_remove` in [0, 1].
    pub fn new(num_classes: usize, p_remove: f64, mode: AblationMode) -> Result<Self> {
        if num_classes == 0 {
            return Err(DiffusionError::InvalidParameter {
                name: "num_classes",
                value: "0".into(),
                reason: "must include background (>= 1)",
            });
        }
        if !(0.0..=1.0).contains(&p_remove) {
            return Err(DiffusionError::InvalidParameter {
                name: "p_remove",
                value: p_remove.to_string(),
                reason: "must be a probability in [0, 1]",
            });
        }
        Ok(Self {
            num_classes,
            p_remove,
            mode,
        })
    }

    /// The paper's setting: p = 0.5, per sample.
    pub fn paper(num_classes: usize) -> Result<Self> {
        Self::new(num_classes, 0.5, AblationMode::PerSample)
    }

    /// Number of classes, background included.
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// Removal probability per class.
    pub fn p_remove(&self) -> f64 {
        self.p_remove
    }

    /// Per-sample or per-batch draws.
    pub fn mode(&self) -> AblationMode {
        self.mode
    }

    /// Draws `removed[sample][k − 1]` (true = class k removed) for a batch.
    pub fn draw<R: Rng + ?Sized>(&self, batch: usize, rng: &mut R) -> Vec<Vec<bool>> {
        let one = |rng: &mut R| -> Vec<bool> {
            (1..self.num_classes)
                .map(|_| rng.random::<f64>() < self.p_remove)
                .collect()
        };
        match self.mode {
            AblationMode::PerSample => (0..batch).map(|_| one(rng)).collect(),
            AblationMode::PerBatch => {
                let shared = one(rng);
                vec![shared; batch]
            }
        }
    }

    /// Draws removals and applies them to a class-id mask (N, H, W) or (N, 1, H, W); returns the
    /// ablated mask (same shape and dtype) and the draw.
    pub fn apply<R: Rng + ?Sized>(
        &self,
        mask: &Tensor,
        rng: &mut R,
    ) -> Result<(Tensor, Vec<Vec<bool>>)> {
        let batch = mask.dims().first().copied().unwrap_or(0);
        let removed = self.draw(batch, rng);
        let out = remove_classes(mask, self.num_classes, &removed)?;
        Ok((out, removed))
    }
}

/// Sets class k to background in sample i wherever `removed[i][k − 1]` is true.
pub fn remove_classes(mask: &Tensor, num_classes: usize, removed: &[Vec<bool>]) -> Result<Tensor> {
    let ((n, h, w), mut ids) = class_ids(mask, num_classes)?;
    if removed.len() != n
        || removed
            .iter()
            .any(|r| r.len() != num_classes.saturating_sub(1))
    {
        return Err(DiffusionError::InvalidParameter {
            name: "removed",
            value: format!("{} rows", removed.len()),
            reason: "need one row of num_classes − 1 flags per sample",
        });
    }
    let plane = h * w;
    for (flat, id) in ids.iter_mut().enumerate() {
        if *id > 0 && removed[flat / plane][*id as usize - 1] {
            *id = 0;
        }
    }
    let out = match mask.dtype() {
        DType::U8 => {
            let v: Vec<u8> = ids.iter().map(|&k| k as u8).collect();
            Tensor::from_vec(v, mask.shape(), mask.device())?
        }
        DType::I64 => {
            let v: Vec<i64> = ids.iter().map(|&k| k as i64).collect();
            Tensor::from_vec(v, mask.shape(), mask.device())?
        }
        _ => Tensor::from_vec(ids, mask.shape(), mask.device())?,
    };
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use rand::SeedableRng;

    fn mask_u8(n: usize, h: usize, w: usize, f: impl Fn(usize, usize, usize) -> u8) -> Tensor {
        let mut v = Vec::new();
        for i in 0..n {
            for y in 0..h {
                for x in 0..w {
                    v.push(f(i, y, x));
                }
            }
        }
        Tensor::from_vec(v, (n, h, w), &Device::Cpu).unwrap()
    }

    #[test]
    fn single_encoding_is_id_over_255() {
        let m = mask_u8(1, 2, 3, |_, y, x| (y * 3 + x) as u8 % 4);
        let e = encode_mask(&m, 4, MaskEncoding::Single).unwrap();
        assert_eq!(e.dims(), &[1, 1, 2, 3]);
        let v: Vec<f32> = e.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(
            v,
            vec![0.0, 1.0 / 255.0, 2.0 / 255.0, 3.0 / 255.0, 0.0, 1.0 / 255.0]
        );
    }

    #[test]
    fn onehot_has_no_background_channel() {
        let m = mask_u8(
            2,
            1,
            4,
            |i, _, x| if i == 0 { x as u8 } else { 3 - x as u8 },
        );
        let e = encode_mask(&m, 4, MaskEncoding::OneHot).unwrap();
        assert_eq!(e.dims(), &[2, 3, 1, 4]);
        let s0: Vec<f32> = e.get(0).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        // channels = classes 1, 2, 3 over pixels with ids 0,1,2,3
        assert_eq!(s0, vec![0., 1., 0., 0., 0., 0., 1., 0., 0., 0., 0., 1.]);
        let s1: Vec<f32> = e.get(1).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(s1, vec![0., 0., 1., 0., 0., 1., 0., 0., 1., 0., 0., 0.]);
    }

    #[test]
    fn out_of_range_id_is_named() {
        let m = mask_u8(1, 2, 2, |_, y, x| if y == 1 && x == 0 { 7 } else { 1 });
        let err = encode_mask(&m, 4, MaskEncoding::Single).unwrap_err();
        assert!(matches!(
            err,
            DiffusionError::MaskClassOutOfRange {
                value: 7,
                index: 2,
                num_classes: 4
            }
        ));
        assert!(err.to_string().contains('7'));
        let f = Tensor::zeros((1, 2, 2), DType::F32, &Device::Cpu).unwrap();
        assert!(matches!(
            encode_mask(&f, 4, MaskEncoding::Single),
            Err(DiffusionError::InvalidMask(_))
        ));
    }

    /// χ² goodness of fit of the 2^(C−1) removal subsets for C = 4, and per-class rates.
    #[test]
    fn per_sample_subsets_are_uniform() {
        let abl = MaskAblation::paper(4).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(2024);
        let draws = abl.draw(16_000, &mut rng);
        let mut counts = [0usize; 8];
        let mut per_class = [0usize; 3];
        for d in &draws {
            let code = d
                .iter()
                .enumerate()
                .fold(0, |acc, (k, &r)| acc | ((r as usize) << k));
            counts[code] += 1;
            for (k, &r) in d.iter().enumerate() {
                per_class[k] += r as usize;
            }
        }
        let expected = 16_000.0 / 8.0;
        let chi2: f64 = counts
            .iter()
            .map(|&c| (c as f64 - expected).powi(2) / expected)
            .sum();
        // 7 degrees of freedom: P(chi2 > 24.32) = 0.001
        assert!(chi2 < 24.32, "chi2 = {chi2}, counts {counts:?}");
        for (k, &c) in per_class.iter().enumerate() {
            let rate = c as f64 / 16_000.0;
            // sd of the rate = sqrt(0.25/16000) = 0.004
            assert!((rate - 0.5).abs() < 0.016, "class {} rate {rate}", k + 1);
        }
        // samples differ within a batch
        assert!(draws.windows(2).any(|w| w[0] != w[1]));
    }

    #[test]
    fn removal_rate_follows_p() {
        let abl = MaskAblation::new(3, 0.2, AblationMode::PerSample).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let draws = abl.draw(20_000, &mut rng);
        let removed = draws.iter().flatten().filter(|&&r| r).count() as f64 / 40_000.0;
        // sd = sqrt(0.16/40000) = 0.002
        assert!((removed - 0.2).abs() < 0.008, "rate {removed}");
    }

    #[test]
    fn per_batch_mode_shares_one_subset() {
        let abl = MaskAblation::new(4, 0.5, AblationMode::PerBatch).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let d = abl.draw(6, &mut rng);
            assert!(d.iter().all(|r| r == &d[0]));
            seen.insert(d[0].clone());
        }
        assert_eq!(seen.len(), 8, "all subsets should occur across batches");
    }

    #[test]
    fn apply_sets_removed_classes_to_background() {
        let m = mask_u8(2, 1, 4, |_, _, x| x as u8);
        let removed = vec![vec![true, false, true], vec![false, false, false]];
        let out = remove_classes(&m, 4, &removed).unwrap();
        assert_eq!(out.dtype(), DType::U8);
        let v: Vec<u8> = out.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(v, vec![0, 0, 2, 0, 0, 1, 2, 3]);
        let abl = MaskAblation::new(4, 1.0, AblationMode::PerSample).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        let (all_gone, _) = abl.apply(&m, &mut rng).unwrap();
        let v: Vec<u8> = all_gone.flatten_all().unwrap().to_vec1().unwrap();
        assert!(v.iter().all(|&k| k == 0));
    }

    #[test]
    fn rejects_bad_probability() {
        assert!(MaskAblation::new(4, 1.5, AblationMode::PerSample).is_err());
        assert!(MaskAblation::new(4, f64::NAN, AblationMode::PerSample).is_err());
    }
}
