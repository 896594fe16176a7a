//! The evaluation's results: [`PaperEvalReport`] (serialised as `report.json`) and its Markdown
//! rendering (`report.md`, tables laid out as in the paper).
//!
//! JSON has no NaN or infinity: a value that is not finite is `null`, and `infinite` says when
//! that null stands for +inf rather than "nothing to average".

use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::atomic_write::write_atomic;
use crate::class_scores::ClassScores;
use crate::error::{EvalError, Result};
use crate::paper_eval::generation::GenerationCount;

/// File names written by [`PaperEvalReport::write`].
pub const REPORT_JSON: &str = "report.json";
/// See [`REPORT_JSON`].
pub const REPORT_MD: &str = "report.md";

/// One class's value of a metric table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassValue {
    pub id: u32,
    pub name: String,
    /// Mean over the samples where the class is scored (MONAI `MEAN_BATCH` without its
    /// zero-filling); `None` when no sample scores it, or when infinite.
    pub value: Option<f64>,
    /// Samples that score the class (NaN entries are ignored, as MONAI ignores them).
    pub samples: usize,
    /// The mean is +inf.
    pub infinite: bool,
}

/// A per-class metric with its overall mean.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassTable {
    pub classes: Vec<ClassValue>,
    /// MONAI `MEAN` (each sample's mean over its scored classes, then over samples); `None` when
    /// nothing is scored, or when infinite.
    pub mean: Option<f64>,
    pub mean_infinite: bool,
    /// Samples in the table.
    pub samples: usize,
}

impl ClassTable {
    /// Reduces per-sample scores; `names[id]` names class `id` (else `class <id>`).
    pub fn from_scores(scores: &ClassScores, names: &[String]) -> Self {
        let classes = scores
            .class_ids()
            .iter()
            .enumerate()
            .map(|(col, &id)| {
                let valid: Vec<f64> = (0..scores.samples())
                    .map(|s| scores.get(s, col))
                    .filter(|v| !v.is_nan())
                    .collect();
                let mean =
                    (!valid.is_empty()).then(|| valid.iter().sum::<f64>() / valid.len() as f64);
                ClassValue {
                    id,
                    name: names
                        .get(id as usize)
                        .cloned()
                        .unwrap_or_else(|| format!("class {id}")),
                    value: mean.filter(|v| v.is_finite()),
                    samples: valid.len(),
                    infinite: mean.is_some_and(f64::is_infinite),
                }
            })
            .collect();
        let mean = (scores.count_valid() > 0).then(|| scores.mean());
        Self {
            classes,
            mean: mean.filter(|v| v.is_finite()),
            mean_infinite: mean.is_some_and(f64::is_infinite),
            samples: scores.samples(),
        }
    }
}

/// What was evaluated.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelSummary {
    pub path: String,
    pub segmentation_guided: bool,
    pub mask_encoding: String,
    pub num_classes: usize,
    pub class_names: Vec<String>,
    pub image_channels: usize,
    /// `[height, width]` of the evaluated images.
    pub image_size: [usize; 2],
    /// SHA-256 of the weights, training schedule and conditioning metadata.
    pub fingerprint: String,
}

/// The dataset subsets used.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DataSummary {
    pub path: String,
    /// Training pairs used / in the split.
    pub train_used: usize,
    pub train_total: usize,
    pub val_used: usize,
    pub val_total: usize,
    pub test_used: usize,
    pub test_total: usize,
}

/// How images were sampled.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SamplingSummary {
    pub scheduler: String,
    pub steps: usize,
    pub eta: f64,
    pub batch_size: usize,
    pub dtype: String,
    /// Seed of the images generated from the test masks (image g uses `(seed, g)`).
    pub test_seed: u64,
    /// Seed of the images generated from the training masks (Table 1's synthetic set).
    pub train_seed: u64,
    pub test_images: GenerationCount,
    pub train_images: GenerationCount,
}

/// A segmenter used by the evaluation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SegmenterSummary {
    /// Its directory (written by this run, or loaded).
    pub dir: String,
    /// Trained by this run (`false`: loaded with `--segmenter`).
    pub trained_here: bool,
    pub channels: Vec<usize>,
    pub strides: Vec<usize>,
    pub num_res_units: usize,
    /// Epochs run, and the 1-based epoch kept (selected on the validation split).
    pub epochs: Option<usize>,
    pub best_epoch: Option<usize>,
    pub best_val_dice: Option<f64>,
    pub train_samples: Option<usize>,
}

/// Table 2 of the paper: how faithfully generated test images follow their masks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MaskFaithfulness {
    /// Dice(seg(generated), input mask).
    pub vs_input_mask: ClassTable,
    /// Dice(seg(generated), seg(real image of that mask)).
    pub vs_segmentation_of_real: ClassTable,
    /// Dice(seg(real image), mask): the segmenter's own accuracy, the ceiling for the rows above.
    pub real_reference: ClassTable,
}

/// Table 1 of the paper: segmenters trained on real vs on generated images, Dice on the real
/// test split.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SyntheticTraining {
    pub real_trained: ClassTable,
    pub synthetic_trained: ClassTable,
    /// Where the synthetic set's labels came from: the input masks, or (unconditional model)
    /// the real-trained segmenter's predictions.
    pub synthetic_labels: String,
    pub synthetic_images: usize,
}

/// FID between generated and real test images in the segmenter's feature space.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FidSummary {
    pub fid: Option<f64>,
    /// Pooled bottleneck features of the real-trained segmenter.
    pub feature_dim: usize,
    pub generated: usize,
    pub real: usize,
}

/// FID between generated and real test images in Inception-v3's pool feature space
/// (torchvision's architecture, weights from [`weights`](Self::weights)).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InceptionFidSummary {
    pub fid: Option<f64>,
    /// The `.safetensors` file the Inception-v3 weights came from.
    pub weights: String,
    /// 2048: the pool output.
    pub feature_dim: usize,
    pub generated: usize,
    pub real: usize,
}

impl InceptionFidSummary {
    /// Its row in the report's image-quality table.
    fn markdown_row(&self) -> String {
        row([
            format!(
                "FID (Inception-v3 pool, {} features, weights `{}`; {} generated vs {} real)",
                self.feature_dim, self.weights, self.generated, self.real
            ),
            fmt(self.fid, 3),
        ])
    }
}

/// Paired image similarity of generated and real test images (8-bit, data range 255).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageSimilarity {
    /// Mean PSNR in dB over the pairs with a finite value.
    pub psnr: Option<f64>,
    /// Pairs that are identical (infinite PSNR, left out of the mean).
    pub psnr_infinite: usize,
    /// Mean SSIM (scikit-image defaults: 7×7 uniform window; RGB: mean over channels).
    pub ssim: Option<f64>,
    pub pairs: usize,
}

/// One evaluated test image and the files that show it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SampleRecord {
    /// Test pair name (the mask and real image file name); for an unconditional model, the
    /// generated file's name.
    pub name: String,
    /// The generated image, relative to the output folder.
    pub generated: String,
    /// Its segmentation by the real-trained segmenter, relative to the output folder.
    pub segmentation: String,
    /// Mean Dice of that segmentation vs the input mask (guided models).
    pub dice_vs_mask: Option<f64>,
    pub psnr: Option<f64>,
    pub ssim: Option<f64>,
}

/// Seconds spent in one stage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StageTiming {
    pub stage: String,
    pub seconds: f64,
}

/// Everything the evaluation measured, with the settings that produced it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PaperEvalReport {
    pub segdiff_version: String,
    /// The command line, as the caller gave it.
    pub command: String,
    pub seed: u64,
    pub quick: bool,
    pub model: ModelSummary,
    pub data: DataSummary,
    pub sampling: SamplingSummary,
    pub real_segmenter: SegmenterSummary,
    pub synthetic_segmenter: Option<SegmenterSummary>,
    pub table2: Option<MaskFaithfulness>,
    pub table1: SyntheticTraining,
    pub fid: Option<FidSummary>,
    /// Only when Inception-v3 weights were given (absent from `report.json` otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inception_fid: Option<InceptionFidSummary>,
    pub image_similarity: Option<ImageSimilarity>,
    /// HD95 in pixels of seg(generated) vs the input mask.
    pub hd95: Option<ClassTable>,
    pub samples: Vec<SampleRecord>,
    /// What was not computed, and why.
    pub skipped: Vec<String>,
    /// Caveats about the numbers.
    pub notes: Vec<String>,
    pub timings: Vec<StageTiming>,
    pub total_seconds: f64,
    /// The whole-volume section, when asked for (`segdiff eval --volumes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<crate::volume_eval::VolumeReport>,
}

fn fmt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "—".into(), |x| format!("{x:.digits$}"))
}

fn fmt_class(c: &ClassValue, digits: usize) -> String {
    if c.infinite {
        "∞".into()
    } else {
        fmt(c.value, digits)
    }
}

/// A Markdown table row.
fn row(cells: impl IntoIterator<Item = String>) -> String {
    let cells: Vec<String> = cells.into_iter().collect();
    format!("| {} |\n", cells.join(" | "))
}

/// Header + separator of a table whose first column is `first` and then one column per class
/// of `table` and a mean.
fn class_header(first: &str, table: &ClassTable) -> String {
    let mut head = vec![first.to_string()];
    head.extend(table.classes.iter().map(|c| c.name.clone()));
    head.push("mean".into());
    let sep = vec!["---".to_string(); head.len()];
    row(head) + &row(sep)
}

fn class_row(label: &str, table: &ClassTable, digits: usize) -> String {
    let mut cells = vec![label.to_string()];
    cells.extend(table.classes.iter().map(|c| fmt_class(c, digits)));
    cells.push(if table.mean_infinite {
        "∞".into()
    } else {
        fmt(table.mean, digits)
    });
    row(cells)
}

impl PaperEvalReport {
    /// `report.md`: the setup, Tables 2 and 1, image quality, what was skipped, timings.
    pub fn to_markdown(&self) -> String {
        let mut md = String::new();
        let m = &self.model;
        let d = &self.data;
        let s = &self.sampling;
        let _ = writeln!(md, "# segdiff evaluation\n");
        let _ = writeln!(md, "```\n{}\n```\n", self.command);
        let _ = writeln!(
            md,
            "Seed {} · {} · segdiff {} · total {:.1} s\n",
            self.seed,
            if self.quick {
                "quick run (subsets, short training and sampling: not the paper's protocol)"
            } else {
                "full protocol"
            },
            self.segdiff_version,
            self.total_seconds
        );
        md.push_str("## Setup\n\n| | |\n| --- | --- |\n");
        md.push_str(&row([
            "model".into(),
            format!(
                "`{}`: {}, {} image channel(s), {}×{}, {} classes",
                m.path,
                if m.segmentation_guided {
                    format!("segmentation-guided ({} mask encoding)", m.mask_encoding)
                } else {
                    "unconditional".into()
                },
                m.image_channels,
                m.image_size[0],
                m.image_size[1],
                m.num_classes
            ),
        ]));
        md.push_str(&row([
            "dataset".into(),
            format!(
                "`{}`: train {} of {}, val {} of {}, test {} of {}",
                d.path,
                d.train_used,
                d.train_total,
                d.val_used,
                d.val_total,
                d.test_used,
                d.test_total
            ),
        ]));
        md.push_str(&row([
            "sampling".into(),
            format!(
                "{} {} steps, η = {}, batch {}, {}; seeds: test {}, train {}; images generated / \
                 reused: test {} / {}, train {} / {}",
                s.scheduler.to_uppercase(),
                s.steps,
                s.eta,
                s.batch_size,
                s.dtype,
                s.test_seed,
                s.train_seed,
                s.test_images.generated,
                s.test_images.reused,
                s.train_images.generated,
                s.train_images.reused
            ),
        ]));
        for (label, seg) in [
            ("segmenter (real images)", Some(&self.real_segmenter)),
            (
                "segmenter (generated images)",
                self.synthetic_segmenter.as_ref(),
            ),
        ] {
            if let Some(seg) = seg {
                md.push_str(&row([label.into(), segmenter_text(seg)]));
            }
        }
        md.push('\n');

        md.push_str("## Table 2: mask faithfulness of images generated from the test masks\n\n");
        match &self.table2 {
            Some(t) => {
                md.push_str("Dice of the real-trained segmenter's segmentation of each generated image.\n\n");
                md.push_str(&class_header("Dice", &t.vs_input_mask));
                md.push_str(&class_row(
                    "seg(generated) vs input mask",
                    &t.vs_input_mask,
                    4,
                ));
                md.push_str(&class_row(
                    "seg(generated) vs seg(real image)",
                    &t.vs_segmentation_of_real,
                    4,
                ));
                md.push_str(&class_row(
                    "seg(real image) vs mask (reference)",
                    &t.real_reference,
                    4,
                ));
                md.push('\n');
            }
            None => md.push_str("Not computed (see Skipped).\n\n"),
        }

        let t1 = &self.table1;
        md.push_str("## Table 1: segmenters trained on real vs generated images\n\n");
        let _ = writeln!(
            md,
            "Dice on the real test split ({} images). The generated training set has {} images \
             made from the training masks, labelled by {}.\n",
            t1.real_trained.samples, t1.synthetic_images, t1.synthetic_labels
        );
        md.push_str(&class_header("training images", &t1.real_trained));
        md.push_str(&class_row("real", &t1.real_trained, 4));
        md.push_str(&class_row("generated", &t1.synthetic_trained, 4));
        md.push('\n');

        md.push_str("## Image quality of images generated from the test masks\n\n");
        md.push_str("| metric | value |\n| --- | --- |\n");
        match &self.fid {
            Some(f) => md.push_str(&row([
                format!(
                    "FID (segmenter bottleneck, {} features; {} generated vs {} real)",
                    f.feature_dim, f.generated, f.real
                ),
                fmt(f.fid, 3),
            ])),
            None => md.push_str("| FID | not computed |\n"),
        }
        if let Some(f) = &self.inception_fid {
            md.push_str(&f.markdown_row());
        }
        match &self.image_similarity {
            Some(q) => {
                md.push_str(&row([
                    format!("PSNR (dB) vs the paired real image, {} pairs", q.pairs),
                    fmt(q.psnr, 3)
                        + &if q.psnr_infinite > 0 {
                            format!(" ({} identical pairs left out)", q.psnr_infinite)
                        } else {
                            String::new()
                        },
                ]));
                md.push_str(&row([
                    "SSIM vs the paired real image".into(),
                    fmt(q.ssim, 4),
                ]));
            }
            None => md.push_str("| PSNR / SSIM | not computed |\n"),
        }
        md.push('\n');
        if let Some(h) = &self.hd95 {
            md.push_str(&class_header("HD95 (pixels)", h));
            md.push_str(&class_row("seg(generated) vs input mask", h, 2));
            let counts: Vec<String> = h
                .classes
                .iter()
                .map(|c| format!("{} {} of {}", c.name, c.samples, h.samples))
                .collect();
            let _ = writeln!(
                md,
                "\nImages scored per class: {}. As in MONAI, an image whose segmentation or mask \
                 lacks the class is not scored for it.\n",
                counts.join(", ")
            );
        }

        if !self.skipped.is_empty() {
            md.push_str("## Skipped\n\n");
            for s in &self.skipped {
                let _ = writeln!(md, "- {s}");
            }
            md.push('\n');
        }
        if !self.notes.is_empty() {
            md.push_str("## Notes\n\n");
            for n in &self.notes {
                let _ = writeln!(md, "- {n}");
            }
            md.push('\n');
        }
        if let Some(v) = &self.volumes {
            md.push_str(&v.to_markdown());
            md.push('\n');
        }
        md.push_str("## Timings\n\n| stage | seconds |\n| --- | --- |\n");
        for t in &self.timings {
            md.push_str(&row([t.stage.clone(), format!("{:.1}", t.seconds)]));
        }
        md.push_str(&row(["total".into(), format!("{:.1}", self.total_seconds)]));
        md
    }

    /// Writes `dir/report.json` and `dir/report.md`, each atomically.
    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|source| EvalError::Write {
            path: dir.to_path_buf(),
            source,
        })?;
        let json_path = dir.join(REPORT_JSON);
        let json = serde_json::to_string_pretty(self).map_err(|source| EvalError::Json {
            path: json_path.clone(),
            source,
        })? + "\n";
        write_atomic(&json_path, |tmp| std::fs::write(tmp, json.as_bytes()))?;
        let md = self.to_markdown();
        write_atomic(&dir.join(REPORT_MD), |tmp| {
            std::fs::write(tmp, md.as_bytes())
        })
    }
}

fn segmenter_text(s: &SegmenterSummary) -> String {
    let arch = format!(
        "MONAI UNet channels {:?}, strides {:?}, {} residual units",
        s.channels, s.strides, s.num_res_units
    );
    let how = if s.trained_here {
        "trained here"
    } else {
        "loaded"
    };
    let training = match (s.best_epoch, s.epochs) {
        (Some(b), Some(e)) => format!(
            "; kept epoch {b} of {e} (val Dice {}){}",
            fmt(s.best_val_dice, 4),
            s.train_samples
                .map_or(String::new(), |n| format!(", {n} training images"))
        ),
        _ => String::new(),
    };
    format!("`{}` ({how}): {arch}{training}", s.dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_tables_ignore_nan_and_flag_infinity() {
        // Class 1: 0.5 and NaN -> 0.5 over 1 sample; class 2: 1.0 and inf -> infinite.
        let scores = ClassScores::new(vec![0.5, 1.0, f64::NAN, f64::INFINITY], 2, vec![1, 2]);
        let t = ClassTable::from_scores(&scores, &["bg".into(), "liver".into()]);
        assert_eq!(t.classes[0].name, "liver");
        assert_eq!(t.classes[0].value, Some(0.5));
        assert_eq!(t.classes[0].samples, 1);
        assert_eq!(t.classes[1].name, "class 2");
        assert_eq!((t.classes[1].value, t.classes[1].infinite), (None, true));
        assert_eq!((t.mean, t.mean_infinite), (None, true));
        let empty = ClassTable::from_scores(&ClassScores::new(vec![f64::NAN], 1, vec![1]), &[]);
        assert_eq!((empty.mean, empty.mean_infinite), (None, false));
        assert_eq!(empty.classes[0].samples, 0);
        let md = class_header("x", &t) + &class_row("row", &t, 2);
        assert!(md.contains("| row | 0.50 | ∞ | ∞ |"), "{md}");
    }

    #[test]
    fn inception_fid_row_names_features_weights_and_counts() {
        let f = InceptionFidSummary {
            fid: Some(12.34567),
            weights: "inc.safetensors".into(),
            feature_dim: 2048,
            generated: 3,
            real: 4,
        };
        assert_eq!(
            f.markdown_row(),
            "| FID (Inception-v3 pool, 2048 features, weights `inc.safetensors`; 3 generated vs \
             4 real) | 12.346 |\n"
        );
        let none = InceptionFidSummary { fid: None, ..f };
        assert!(none.markdown_row().ends_with("| — |\n"));
    }
}
