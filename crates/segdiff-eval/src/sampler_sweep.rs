//! Which sampler, and how many steps, for a model: every sampler × step count of a grid
//! generates one image per mask from the same seed, and each point is scored by its cost
//! (network calls and wall time per image) and by how faithfully the images follow their masks
//! (mean Dice of the segmenter's output against the input masks), with FID on the segmenter's
//! bottleneck features against real images when those are given.
//!
//! The answer is the Pareto front in (calls ↓, Dice ↑): the points no other point beats on both.
//! [`SweepReport`] holds the rows sorted by calls and writes `sweep.md`, `sweep.json` and
//! `sweep.png` (Dice against calls, log x axis, one line per sampler, the front ringed).

use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use segdiff_diffusion::sampler::{default_steps, sample_images, SampleInput, SampleOptions};
use segdiff_diffusion::{EpsModel, SamplerKind, SegdiffModel, UnetDenoiser};
use segdiff_io::chart::{line_chart, LineChart, Series};
use serde::{Deserialize, Serialize};

use crate::error::{EvalError, Result};
use crate::{dice, encode, fid_from_features, predict, DiceConfig, LabelMaps, MonaiUNet};

/// One point of the grid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SweepPoint {
    pub sampler: SamplerKind,
    pub steps: usize,
}

/// The grid: every sampler at every step count (sorted, duplicates dropped), except DDPM, which
/// runs only at its default 1000 steps (fewer ancestral steps are not what it is for, and more
/// points at 1000 calls per image would dominate the sweep's cost).
pub fn sweep_grid(samplers: &[SamplerKind], steps: &[usize]) -> Result<Vec<SweepPoint>> {
    let mut steps = steps.to_vec();
    steps.sort_unstable();
    steps.dedup();
    if steps.first() == Some(&0) {
        return Err(EvalError::InvalidArgument {
            name: "steps",
            value: "0".into(),
            reason: "a sampler needs at least one step",
        });
    }
    let mut points = Vec::new();
    for (i, &sampler) in samplers.iter().enumerate() {
        if samplers[..i].contains(&sampler) {
            continue;
        }
        if sampler == SamplerKind::Ddpm {
            points.push(SweepPoint {
                sampler,
                steps: default_steps(sampler),
            });
        } else {
            points.extend(steps.iter().map(|&steps| SweepPoint { sampler, steps }));
        }
    }
    if points.is_empty() {
        return Err(EvalError::InvalidArgument {
            name: "sweep grid",
            value: "empty".into(),
            reason: "needs at least one sampler and one step count",
        });
    }
    Ok(points)
}

/// What the sweep runs on.
pub struct SweepInputs<'a> {
    /// A segmentation-guided model.
    pub model: &'a SegdiffModel,
    /// The segmenter that scores mask faithfulness and gives the FID features.
    pub segmenter: &'a MonaiUNet,
    /// The conditioning masks (one image is generated per mask).
    pub masks: &'a LabelMaps,
    /// Real images in [-1, 1], (N, C, H, W) on the segmenter's device, for FID (`None`: no FID).
    pub real: Option<&'a Tensor>,
}

/// How the sweep samples.
#[derive(Clone, Debug)]
pub struct SweepOptions {
    /// Seed of every point (the same x_T for every sampler).
    pub seed: u64,
    /// Images per denoiser call (and per segmenter call).
    pub batch_size: usize,
    /// The dtype the model's weights were loaded in.
    pub dtype: DType,
    /// Where the sampling loop runs (the model's device).
    pub device: Device,
}

/// Reported after every denoising step: `done` of `total` image-steps of the whole sweep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SweepProgress {
    /// The point being run.
    pub point: SweepPoint,
    pub done: u64,
    pub total: u64,
}

/// One measured point.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SweepRow {
    /// The sampler's CLI name (`ddim`, `dpm++`, …).
    pub sampler: String,
    pub steps: usize,
    /// Network evaluations per image, counted at the denoiser (steps, ×2 with guidance).
    pub calls_per_image: f64,
    /// Wall-clock sampling seconds per image (segmentation and FID not included).
    pub seconds_per_image: f64,
    /// Mean Dice of seg(generated) against the input masks.
    pub dice: f64,
    /// FID on segmenter bottleneck features against the real images (`None` without them).
    pub fid: Option<f64>,
    /// Not dominated in (calls ↓, Dice ↑) by any other row.
    pub pareto: bool,
}

/// The sweep's result: settings and rows sorted by calls.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SweepReport {
    /// Images generated per point (one per mask).
    pub images: usize,
    pub seed: u64,
    pub batch_size: usize,
    /// Real images the FID compares with (`None`: FID not computed).
    pub real_images: Option<usize>,
    pub rows: Vec<SweepRow>,
}

/// Image-steps of the whole sweep (what [`SweepProgress::total`] counts).
pub fn sweep_work(points: &[SweepPoint], images: usize) -> u64 {
    points.iter().map(|p| (p.steps * images) as u64).sum()
}

/// Runs every point of `points` on `inputs`; rows come back sorted by calls with the Pareto
/// front marked.
pub fn run_sweep(
    inputs: &SweepInputs<'_>,
    points: &[SweepPoint],
    options: &SweepOptions,
    progress: &mut dyn FnMut(&SweepProgress),
) -> Result<SweepReport> {
    let meta = &inputs.model.meta;
    let num_classes = match (meta.segmentation_guided, meta.num_classes) {
        (true, Some(c)) => c,
        _ => {
            return Err(EvalError::Incompatible {
                what: inputs.model.dir.display().to_string(),
                reason: "the sampler sweep needs a segmentation-guided model with a class count"
                    .into(),
            })
        }
    };
    inputs.masks.check_classes(num_classes, "sweep masks")?;
    let n = inputs.masks.samples();
    if n == 0 {
        return Err(EvalError::InvalidArgument {
            name: "masks",
            value: "0".into(),
            reason: "the sweep needs at least one mask",
        });
    }
    if inputs.real.is_some() && n < 2 {
        return Err(EvalError::InvalidArgument {
            name: "masks",
            value: n.to_string(),
            reason: "FID needs at least 2 generated images",
        });
    }
    let real_features = inputs
        .real
        .map(|r| encode(inputs.segmenter, r, options.batch_size))
        .transpose()?;
    let masks = inputs.masks.to_tensor(&Device::Cpu)?;
    let dice_cfg = DiceConfig::new(num_classes);
    let total = sweep_work(points, n);
    let mut done_before = 0u64;
    let mut rows = Vec::with_capacity(points.len());
    for &point in points {
        let sample_options = SampleOptions {
            scheduler: point.sampler,
            steps: Some(point.steps),
            seed: options.seed,
            batch_size: options.batch_size,
            ..SampleOptions::default()
        };
        let mut unet = UnetDenoiser::new(&inputs.model.unet.model, options.dtype);
        let mut evaluations = 0usize;
        let started = Instant::now();
        let out = {
            let mut counted = |x: &Tensor, t| -> candle_core::Result<Tensor> {
                evaluations += x.dim(0)?;
                unet.predict(x, t)
            };
            sample_images(
                &mut counted,
                &inputs.model.scheduler,
                meta,
                SampleInput::Masks(&masks),
                &sample_options,
                &options.device,
                &mut |p| {
                    // Image-steps of this point so far: finished batches, plus this batch's steps.
                    let within = if p.step == p.steps {
                        p.images_done * p.steps
                    } else {
                        let batch = options.batch_size.min(p.images_total - p.images_done);
                        p.images_done * p.steps + batch * p.step
                    };
                    progress(&SweepProgress {
                        point,
                        done: done_before + within as u64,
                        total,
                    });
                },
            )?
        };
        let seconds = started.elapsed().as_secs_f64();
        done_before += (point.steps * n) as u64;
        let images = ((out.images01.to_dtype(DType::F32)? * 2.0)? - 1.0)?;
        let seg = predict(inputs.segmenter, &images, options.batch_size)?;
        let dice = dice(&seg, inputs.masks, &dice_cfg)?.mean();
        let fid = match &real_features {
            Some(real) => Some(fid_from_features(
                &encode(inputs.segmenter, &images, options.batch_size)?,
                real,
            )?),
            None => None,
        };
        rows.push(SweepRow {
            sampler: point.sampler.name().to_string(),
            steps: point.steps,
            calls_per_image: evaluations as f64 / n as f64,
            seconds_per_image: seconds / n as f64,
            dice,
            fid,
            pareto: false,
        });
    }
    Ok(SweepReport::new(
        n,
        options.seed,
        options.batch_size,
        inputs.real.map(|r| r.dims()[0]),
        rows,
    ))
}

/// For each `(cost, score)` point: whether no other point has cost ≤ and score ≥ with one of
/// them strict. Equal points are all on the front; a non-finite point is never on it and
/// dominates nothing.
pub fn pareto_front(points: &[(f64, f64)]) -> Vec<bool> {
    let finite = |&(c, s): &(f64, f64)| c.is_finite() && s.is_finite();
    points
        .iter()
        .map(|p| {
            finite(p)
                && !points
                    .iter()
                    .any(|q| finite(q) && q.0 <= p.0 && q.1 >= p.1 && (q.0 < p.0 || q.1 > p.1))
        })
        .collect()
}

impl SweepReport {
    /// A report of `rows` (in any order): sorted by calls (ties: by sampler in
    /// [`SamplerKind::ALL`] order, then steps), Pareto front marked.
    pub fn new(
        images: usize,
        seed: u64,
        batch_size: usize,
        real_images: Option<usize>,
        mut rows: Vec<SweepRow>,
    ) -> Self {
        let order = |name: &str| {
            SamplerKind::ALL
                .iter()
                .position(|k| k.name() == name)
                .unwrap_or(usize::MAX)
        };
        rows.sort_by(|a, b| {
            a.calls_per_image
                .total_cmp(&b.calls_per_image)
                .then(order(&a.sampler).cmp(&order(&b.sampler)))
                .then(a.sampler.cmp(&b.sampler))
                .then(a.steps.cmp(&b.steps))
        });
        let front = pareto_front(
            &rows
                .iter()
                .map(|r| (r.calls_per_image, r.dice))
                .collect::<Vec<_>>(),
        );
        for (row, on_front) in rows.iter_mut().zip(front) {
            row.pareto = on_front;
        }
        Self {
            images,
            seed,
            batch_size,
            real_images,
            rows,
        }
    }

    /// `sweep.md`: the table and what its columns mean.
    pub fn to_markdown(&self) -> String {
        let num = |v: f64, digits: usize| {
            if v.is_finite() {
                format!("{v:.digits$}")
            } else {
                "–".into()
            }
        };
        let mut md = String::from("# Sampler sweep\n\n");
        md.push_str(&format!(
            "{} images per point (one per mask, seed {}, batch {}). Dice: mean over images and \
             classes of the segmenter's output on the generated images against the input masks. \
             ",
            self.images, self.seed, self.batch_size
        ));
        match self.real_images {
            Some(r) => md.push_str(&format!(
                "FID: on the segmenter's pooled bottleneck features, against {r} real images.\n\n"
            )),
            None => md.push_str("FID: not computed (no real images given).\n\n"),
        }
        md.push_str(
            "| sampler | steps | network calls / image | s / image | Dice | FID | Pareto |\n\
             |---|---:|---:|---:|---:|---:|:---:|\n",
        );
        for r in &self.rows {
            md.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} |\n",
                r.sampler,
                r.steps,
                num(r.calls_per_image, 0),
                num(r.seconds_per_image, 3),
                num(r.dice, 3),
                r.fid.map_or("–".into(), |f| num(f, 3)),
                if r.pareto { "★" } else { "" }
            ));
        }
        md.push_str(
            "\n★ Pareto-best: no other row reaches at least its Dice with at most its network \
             calls. Pick the cheapest ★ row whose Dice is good enough.\n",
        );
        md
    }

    /// `sweep.png`: Dice against network calls per image (log x), one line per sampler, the
    /// Pareto front ringed.
    pub fn plot(&self) -> Result<image::RgbImage> {
        let mut series: Vec<Series> = Vec::new();
        for r in &self.rows {
            let i = match series.iter().position(|s| s.label == r.sampler) {
                Some(i) => i,
                None => {
                    series.push(Series {
                        label: r.sampler.clone(),
                        ..Series::default()
                    });
                    series.len() - 1
                }
            };
            series[i].points.push((r.calls_per_image, r.dice));
            series[i].highlighted.push(r.pareto);
        }
        let chart = LineChart {
            title: format!("Mask faithfulness against cost ({} images)", self.images),
            x_label: "network calls per image".into(),
            y_label: "mean Dice".into(),
            log_x: true,
            highlight_label: Some("Pareto-best".into()),
            series,
        };
        line_chart(&chart, 800, 500).map_err(|e| EvalError::Png {
            path: "sweep.png".into(),
            detail: e.to_string(),
        })
    }

    /// Writes `sweep.md`, `sweep.json` and `sweep.png` into `dir` (created if needed), each
    /// atomically.
    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|source| EvalError::Write {
            path: dir.to_path_buf(),
            source,
        })?;
        let write = |name: &str, bytes: &[u8]| {
            let path = dir.join(name);
            segdiff_io::write_bytes_atomic(&path, bytes)
                .map_err(|source| EvalError::Write { path, source })
        };
        write("sweep.md", self.to_markdown().as_bytes())?;
        write("sweep.json", self.to_json().as_bytes())?;
        let png = dir.join("sweep.png");
        segdiff_io::write_png(&png, &image::DynamicImage::ImageRgb8(self.plot()?))?;
        Ok(())
    }

    /// The report as pretty JSON (what `sweep.json` holds).
    pub fn to_json(&self) -> String {
        // Plain numbers, strings and options: serialisation cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(sampler: &str, steps: usize, dice: f64) -> SweepRow {
        SweepRow {
            sampler: sampler.into(),
            steps,
            calls_per_image: steps as f64,
            seconds_per_image: 0.1 * steps as f64,
            dice,
            fid: None,
            pareto: false,
        }
    }

    #[test]
    fn pareto_front_keeps_the_undominated_points() {
        let points = [
            (10.0, 0.60),    // front: the cheapest
            (20.0, 0.70),    // front
            (20.0, 0.65),    // dominated by (20, 0.70)
            (50.0, 0.68),    // dominated by (20, 0.70)
            (50.0, 0.75),    // front
            (50.0, 0.75),    // an equal point: also on the front
            (1000.0, 0.74),  // dominated
            (5.0, f64::NAN), // not finite: never on the front, dominates nothing
        ];
        assert_eq!(
            pareto_front(&points),
            [true, true, false, false, true, true, false, false]
        );
        assert_eq!(pareto_front(&[]), Vec::<bool>::new());
        assert_eq!(pareto_front(&[(3.0, 0.1)]), [true]);
    }

    #[test]
    fn report_rows_are_sorted_by_calls_with_the_front_marked() {
        let rows = vec![
            row("dpm++", 50, 0.74),
            row("ddim", 20, 0.60),
            row("dpm++", 20, 0.71),
            row("ddim", 50, 0.72),
            row("ddim", 10, 0.50),
            row("ddpm", 1000, 0.77),
            row("dpm++", 10, 0.65),
        ];
        let r = SweepReport::new(4, 0, 8, None, rows);
        let order: Vec<(&str, usize, bool)> = r
            .rows
            .iter()
            .map(|r| (r.sampler.as_str(), r.steps, r.pareto))
            .collect();
        assert_eq!(
            order,
            [
                ("ddim", 10, false),
                ("dpm++", 10, true),
                ("ddim", 20, false),
                ("dpm++", 20, true),
                ("ddim", 50, false),
                ("dpm++", 50, true),
                ("ddpm", 1000, true),
            ]
        );
        let md = r.to_markdown();
        let table: Vec<&str> = md.lines().filter(|l| l.starts_with("| ")).collect();
        assert_eq!(table.len(), 1 + 7, "{md}");
        assert!(table[2].starts_with("| dpm++ | 10 | 10 |") && table[2].ends_with("| ★ |"));
        assert!(md.contains("FID: not computed"), "{md}");
        let back: SweepReport = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn grid_runs_ddpm_at_its_default_steps_only() {
        let grid = sweep_grid(
            &[
                SamplerKind::DpmSolverPlusPlus,
                SamplerKind::Ddpm,
                SamplerKind::Ddim,
            ],
            &[20, 10, 20],
        )
        .unwrap();
        let pairs: Vec<(SamplerKind, usize)> = grid.iter().map(|p| (p.sampler, p.steps)).collect();
        assert_eq!(
            pairs,
            [
                (SamplerKind::DpmSolverPlusPlus, 10),
                (SamplerKind::DpmSolverPlusPlus, 20),
                (SamplerKind::Ddpm, 1000),
                (SamplerKind::Ddim, 10),
                (SamplerKind::Ddim, 20),
            ]
        );
        assert_eq!(sweep_work(&grid, 3), 3 * (10 + 20 + 1000 + 10 + 20));
        assert!(sweep_grid(&[SamplerKind::Ddim], &[0, 5]).is_err());
        assert!(sweep_grid(&[], &[5]).is_err());
    }

    #[test]
    fn plot_draws_lines_and_rings() {
        let rows = vec![
            row("ddim", 10, 0.5),
            row("ddim", 20, 0.6),
            row("dpm++", 10, 0.7),
        ];
        let img = SweepReport::new(2, 0, 8, None, rows).plot().unwrap();
        assert_eq!((img.width(), img.height()), (800, 500));
        let dark = img
            .pixels()
            .filter(|p| p.0.iter().all(|&c| c < 100))
            .count();
        assert!(dark > 500, "only {dark} dark pixels");
    }
}
