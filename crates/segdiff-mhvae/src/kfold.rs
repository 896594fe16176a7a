//! k-fold training and testing, shaped like the paper's Table 1: every image of a dataset (all
//! splits pooled) lands in one of K folds (a seeded shuffle); for each fold a model trains on the
//! other folds and segments this one. Scores per image: Dice, HD95 and HD100 in pixels (MONAI
//! semantics, `segdiff-eval`), reduced to the fold's mean, then mean ± sd over folds. The baseline
//! row is segdiff's MONAI UNet segmenter trained on the same folds.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use segdiff_data::{Dataset, DatasetOptions, Split};
use segdiff_diffusion::train::{train, DatasetBatches, DiffusionBatch, RunOptions, TrainData};
use segdiff_eval::{
    binary_hausdorff, predict, train_segmenter, LabelMaps, SegData, SegmenterRecipe,
};
use serde::Serialize;

use crate::config::MhvaeConfig;
use crate::trainer::{batch_inputs, MhvaeTrainer};
use crate::{MhvaeError, Result};

/// Every pair of a dataset's splits as one indexable set.
pub struct PooledPairs {
    parts: Vec<DatasetBatches>,
    /// (part, index in part) of each pooled sample.
    map: Vec<(usize, usize)>,
}

impl PooledPairs {
    /// Opens the train, val and test splits that exist (masks required).
    pub fn open(root: &Path, opts: &DatasetOptions) -> Result<Self> {
        let mut parts = Vec::new();
        let mut map = Vec::new();
        for split in [Split::Train, Split::Val, Split::Test] {
            let Ok(data) = Dataset::open(root, split, opts) else {
                continue;
            };
            if data.is_empty() {
                continue;
            }
            let k = parts.len();
            map.extend((0..data.len()).map(|i| (k, i)));
            parts.push(DatasetBatches::new(data, true));
        }
        if map.is_empty() {
            return Err(MhvaeError::InvalidArgument {
                name: "data",
                value: root.display().to_string(),
                reason: "no image/mask pairs in any split".into(),
            });
        }
        Ok(Self { parts, map })
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The pooled samples at `indices` as one batch (in that order).
    pub fn load(&self, indices: &[usize]) -> segdiff_diffusion::Result<DiffusionBatch> {
        let mut images = Vec::with_capacity(indices.len());
        let mut masks = Vec::with_capacity(indices.len());
        for &i in indices {
            let (part, local) = self.map[i];
            let (x, m) = self.parts[part].load_pairs(&[local])?;
            images.push(x);
            masks.push(m);
        }
        Ok(DiffusionBatch {
            images: Tensor::cat(&images, 0)?,
            masks: Tensor::cat(&masks, 0)?,
            neighbours: None,
        })
    }
}

/// A subset of the pooled pairs as training data.
pub struct Subset<'a> {
    pub pairs: &'a PooledPairs,
    pub indices: Vec<usize>,
}

impl TrainData for Subset<'_> {
    type Batch = DiffusionBatch;

    fn len(&self) -> usize {
        self.indices.len()
    }

    fn load(&self, indices: &[usize]) -> segdiff_diffusion::Result<DiffusionBatch> {
        let pooled: Vec<usize> = indices.iter().map(|&i| self.indices[i]).collect();
        self.pairs.load(&pooled)
    }
}

/// K folds of `0..n` from a seeded shuffle, sizes differing by at most one.
pub fn folds(n: usize, k: usize, seed: u64) -> Result<Vec<Vec<usize>>> {
    if k < 2 || k > n {
        return Err(MhvaeError::InvalidArgument {
            name: "folds",
            value: k.to_string(),
            reason: format!("must be at least 2 and at most the number of images ({n})"),
        });
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut StdRng::seed_from_u64(seed));
    let mut out = vec![Vec::new(); k];
    for (pos, i) in order.into_iter().enumerate() {
        out[pos % k].push(i);
    }
    for f in &mut out {
        f.sort_unstable();
    }
    Ok(out)
}

/// Per-image scores of 0/1 masks (rows of S·S) against the truth.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ImageScores {
    pub dice: Vec<f64>,
    pub hd95: Vec<f64>,
    pub hd100: Vec<f64>,
}

impl ImageScores {
    /// Scores predicted masks against true ones (`s × s` each).
    pub fn score(pred: &[Vec<bool>], truth: &[Vec<bool>], s: usize) -> Result<Self> {
        let mut out = Self::default();
        for (p, t) in pred.iter().zip(truth) {
            let inter = p.iter().zip(t).filter(|(a, b)| **a && **b).count() as f64;
            let total =
                (p.iter().filter(|v| **v).count() + t.iter().filter(|v| **v).count()) as f64;
            out.dice.push(if total > 0.0 {
                2.0 * inter / total
            } else {
                1.0
            });
            out.hd95
                .push(binary_hausdorff(p, t, s, s, Some(95.0), None).map_err(eval_err)?);
            out.hd100
                .push(binary_hausdorff(p, t, s, s, None, None).map_err(eval_err)?);
        }
        Ok(out)
    }
}

fn eval_err(e: segdiff_eval::EvalError) -> MhvaeError {
    MhvaeError::InvalidArgument {
        name: "scores",
        value: String::new(),
        reason: e.to_string(),
    }
}

/// One fold's means (finite values only; an empty prediction gives an infinite Hausdorff
/// distance, counted separately).
#[derive(Debug, Clone, Serialize)]
pub struct FoldScores {
    pub fold: usize,
    pub test_images: usize,
    pub dice: f64,
    pub hd95: f64,
    pub hd100: f64,
    /// Images whose Hausdorff distance is infinite or undefined (an empty mask) — left out of
    /// the HD means.
    pub hd_undefined: usize,
}

fn finite_mean(v: &[f64]) -> f64 {
    let f: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    f.iter().sum::<f64>() / f.len().max(1) as f64
}

impl FoldScores {
    fn from(fold: usize, s: &ImageScores) -> Self {
        Self {
            fold,
            test_images: s.dice.len(),
            dice: s.dice.iter().sum::<f64>() / s.dice.len().max(1) as f64,
            hd95: finite_mean(&s.hd95),
            hd100: finite_mean(&s.hd100),
            hd_undefined: s.hd100.iter().filter(|v| !v.is_finite()).count(),
        }
    }
}

/// Mean and sample standard deviation over folds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct MeanSd {
    pub mean: f64,
    pub sd: f64,
}

impl MeanSd {
    pub fn of(v: &[f64]) -> Self {
        let n = v.len().max(1) as f64;
        let mean = v.iter().sum::<f64>() / n;
        let var = if v.len() > 1 {
            v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
        } else {
            0.0
        };
        Self {
            mean,
            sd: var.sqrt(),
        }
    }
}

/// One row of the table.
#[derive(Debug, Clone, Serialize)]
pub struct ModelRow {
    pub model: String,
    pub backbone: String,
    pub dice: MeanSd,
    pub hd95: MeanSd,
    pub hd100: MeanSd,
    pub folds: Vec<FoldScores>,
}

impl ModelRow {
    fn from(model: String, backbone: String, folds: Vec<FoldScores>) -> Self {
        let col = |f: fn(&FoldScores) -> f64| MeanSd::of(&folds.iter().map(f).collect::<Vec<_>>());
        Self {
            model,
            backbone,
            dice: col(|f| f.dice),
            hd95: col(|f| f.hd95),
            hd100: col(|f| f.hd100),
            folds,
        }
    }
}

/// Masks of a batch as rows of booleans (object = id > 0, or value ≥ 0.5).
fn bool_rows(t: &Tensor) -> Result<Vec<Vec<bool>>> {
    Ok(t.to_dtype(DType::F32)?
        .flatten_from(1)?
        .to_device(&Device::Cpu)?
        .to_vec2::<f32>()?
        .into_iter()
        .map(|r| r.into_iter().map(|v| v >= 0.5).collect())
        .collect())
}

/// What one evaluation runs.
pub struct KfoldPlan<'a> {
    pub pairs: &'a PooledPairs,
    pub folds: Vec<Vec<usize>>,
    /// MHVAE configurations to train (one row each), with their run options.
    pub models: Vec<(String, MhvaeConfig)>,
    pub run: RunOptions,
    /// The MONAI UNet baseline (`None`: no baseline row).
    pub baseline: Option<SegmenterRecipe>,
    /// Where each fold's MHVAE runs write checkpoints (`DIR/<model>/fold-<k>`).
    pub work: &'a Path,
    pub device: Device,
}

/// Progress of an evaluation.
pub enum KfoldEvent<'a> {
    /// Training `model` on fold `fold` starts.
    Training { model: &'a str, fold: usize },
    /// One optimiser step or epoch done.
    Tick,
}

/// Runs every model on every fold; rows in the plan's order, the baseline last.
pub fn run_kfold(
    plan: &KfoldPlan<'_>,
    on_event: &mut dyn FnMut(KfoldEvent<'_>),
) -> Result<Vec<ModelRow>> {
    let k = plan.folds.len();
    let mut rows = Vec::new();
    for (name, config) in &plan.models {
        let mut fold_scores = Vec::new();
        for fold in 0..k {
            on_event(KfoldEvent::Training { model: name, fold });
            let train_idx: Vec<usize> = (0..k)
                .filter(|&j| j != fold)
                .flat_map(|j| plan.folds[j].clone())
                .collect();
            let data = Subset {
                pairs: plan.pairs,
                indices: train_idx,
            };
            let mut trainer = MhvaeTrainer::new(config.clone(), plan.run.clone(), &plan.device)?;
            let out = plan.work.join(name).join(format!("fold-{}", fold + 1));
            train(&mut trainer, &data, &out, None, &mut |_| {
                on_event(KfoldEvent::Tick)
            })?;
            let model = trainer.export_model()?;
            let mut pred = Vec::new();
            let mut truth = Vec::new();
            for chunk in plan.folds[fold].chunks(32) {
                let (x, y) = batch_inputs(&plan.pairs.load(chunk)?, &plan.device)?;
                let theta = model
                    .encode(&x)?
                    .theta
                    .ok_or_else(|| MhvaeError::InvalidArgument {
                        name: "warp",
                        value: "none".into(),
                        reason: "k-fold segmentation needs a position head (affine or tps)".into(),
                    })?;
                pred.extend(bool_rows(&model.segment(&theta.0)?)?);
                truth.extend(bool_rows(&y)?);
            }
            let scores = ImageScores::score(&pred, &truth, config.image_size)?;
            fold_scores.push(FoldScores::from(fold + 1, &scores));
        }
        rows.push(ModelRow::from(
            format!("MHVAE ({name})"),
            "small conv".into(),
            fold_scores,
        ));
    }
    if let Some(recipe) = &plan.baseline {
        let mut fold_scores = Vec::new();
        for fold in 0..k {
            on_event(KfoldEvent::Training {
                model: "MONAI UNet",
                fold,
            });
            let train_idx: Vec<usize> = (0..k)
                .filter(|&j| j != fold)
                .flat_map(|j| plan.folds[j].clone())
                .collect();
            let seg = |idx: &[usize]| -> Result<(Tensor, LabelMaps)> {
                let b = plan.pairs.load(idx)?;
                let (n, h, w) = b.masks.dims3()?;
                let ids: Vec<u32> = b
                    .masks
                    .gt(0u32)?
                    .to_dtype(DType::U32)?
                    .flatten_all()?
                    .to_vec1::<u32>()?;
                Ok((b.images, LabelMaps::new(ids, n, h, w).map_err(eval_err)?))
            };
            let (images, masks) = seg(&train_idx)?;
            let channels = images.dim(1)?;
            let data = SegData::new(&images, masks).map_err(eval_err)?;
            let options = recipe.options(channels, 2, None, &plan.device);
            let trained = train_segmenter(&data, None, &options, |_| on_event(KfoldEvent::Tick))
                .map_err(eval_err)?;
            let (test_images, test_masks) = seg(&plan.folds[fold])?;
            let predicted = predict(&trained.model, &test_images.to_device(&plan.device)?, 16)
                .map_err(eval_err)?;
            let (n, h, w) = predicted.shape();
            let to_bool = |m: &LabelMaps| -> Vec<Vec<bool>> {
                (0..n)
                    .map(|i| m.sample(i).iter().map(|&v| v > 0).collect())
                    .collect()
            };
            let scores = ImageScores::score(&to_bool(&predicted), &to_bool(&test_masks), h.max(w))?;
            fold_scores.push(FoldScores::from(fold + 1, &scores));
        }
        rows.push(ModelRow::from(
            "MONAI UNet (baseline)".into(),
            format!("{:?}", recipe.channels),
            fold_scores,
        ));
    }
    Ok(rows)
}

/// The report as Markdown: the table (mean ± sd over folds) and the per-fold numbers.
pub fn markdown(rows: &[ModelRow], images: usize, k: usize, note: &str) -> String {
    let mut md = format!(
        "# MHVAE k-fold evaluation\n\n{images} images, {k} folds. HD in pixels (MONAI semantics; HD100 = the plain maximum). Mean ± sd over folds.\n\n{note}\n\n| model | backbone | HD95 ↓ | HD100 ↓ | Dice ↑ |\n|---|---|---|---|---|\n"
    );
    for r in rows {
        md.push_str(&format!(
            "| {} | {} | {:.2} ± {:.2} | {:.2} ± {:.2} | {:.3} ± {:.3} |\n",
            r.model,
            r.backbone,
            r.hd95.mean,
            r.hd95.sd,
            r.hd100.mean,
            r.hd100.sd,
            r.dice.mean,
            r.dice.sd
        ));
    }
    md.push_str("\n## Per fold\n\n| model | fold | test images | HD95 | HD100 | Dice | HD undefined |\n|---|---|---|---|---|---|---|\n");
    for r in rows {
        for f in &r.folds {
            md.push_str(&format!(
                "| {} | {} | {} | {:.2} | {:.2} | {:.3} | {} |\n",
                r.model, f.fold, f.test_images, f.hd95, f.hd100, f.dice, f.hd_undefined
            ));
        }
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_partition_and_follow_the_seed() {
        let f = folds(10, 3, 1).unwrap();
        let mut all: Vec<usize> = f.concat();
        all.sort_unstable();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
        assert!(f.iter().all(|x| x.len() == 3 || x.len() == 4));
        assert_eq!(f, folds(10, 3, 1).unwrap());
        assert_ne!(f, folds(10, 3, 2).unwrap());
        assert!(folds(3, 4, 0).is_err() && folds(3, 1, 0).is_err());
    }

    #[test]
    fn scores_and_mean_sd() {
        let s = 8;
        let square = |x0: usize| -> Vec<bool> {
            (0..s * s)
                .map(|i| (i % s) >= x0 && (i % s) < x0 + 3 && i / s >= 2 && i / s < 5)
                .collect()
        };
        let sc = ImageScores::score(&[square(1), square(1)], &[square(1), square(2)], s).unwrap();
        assert_eq!(sc.dice[0], 1.0);
        assert!((sc.dice[1] - 2.0 * 6.0 / 18.0).abs() < 1e-12);
        assert_eq!(sc.hd100[0], 0.0);
        assert_eq!(sc.hd100[1], 1.0);
        let m = MeanSd::of(&[1.0, 3.0]);
        assert_eq!(m.mean, 2.0);
        assert!((m.sd - 2f64.sqrt()).abs() < 1e-12);
    }
}
