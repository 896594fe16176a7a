//! The paper's evaluation of a trained model on a prepared dataset (Konz et al. 2024, §4), as
//! one pipeline:
//!
//! 1. a MONAI UNet segmenter is trained on the real training split (weights kept by validation
//!    loss on the val split), or loaded;
//! 2. one image is generated per test mask, and one per training mask (per-image seeds; see
//!    [`SamplingSettings`]), into PNG folders that later runs and shards reuse;
//! 3. Table 2: Dice of the segmentation of each generated test image against its input mask
//!    and against the segmentation of the real image of that mask;
//! 4. Table 1: a fresh segmenter trained only on the generated training images (same recipe,
//!    same validation split) against the real-trained one, both scored on the real test split;
//! 5. FID in the real-trained segmenter's pooled bottleneck feature space (generated vs real
//!    test images), and, when weights are given ([`PaperEvalConfig::inception_weights`]), FID
//!    in Inception-v3's pool feature space ([`crate::InceptionV3`]); PSNR/SSIM against the
//!    paired real images, HD95 of the segmentations.
//!
//! Generated images are scored as they are saved: 8-bit PNGs read back to `[-1, 1]`.
//! Unconditional models get FID and Table 1 (their generated training images are labelled by
//! the real-trained segmenter); Table 2, PSNR/SSIM and HD95 need a mask per image and are
//! skipped, which the report says.
//!
//! [`run_paper_eval`] runs everything and returns a [`PaperEvalReport`] (written with
//! [`PaperEvalReport::write`]) and the data of a contact sheet; [`generate_shard`] runs only
//! step 2 for one shard, so generation can be spread over processes.

mod config;
mod generation;
mod report;
mod segmenters;
mod setup;
mod sheet;
mod stages;

use std::path::Path;
use std::time::Instant;

use candle_core::Tensor;

use segdiff_diffusion::sampler::{Shard, UnetDenoiser};

use crate::class_scores::ClassScores;
use crate::dice::{dice, DiceConfig};
use crate::error::{EvalError, Result};
use crate::fid::{frechet_distance, FeatureStats};
use crate::hausdorff::{hausdorff_distance, HausdorffConfig};
use crate::image_quality::{psnr, ssim, SsimConfig};
use crate::inception::{InceptionV3, INCEPTION_FEATURE_DIM};
use crate::png_files::write_label_png;
use crate::segmenter::{encode, predict};
use crate::segmenter_training::SegData;
use crate::split_data::SplitData;

pub use config::{PaperEvalConfig, QUICK_MAX_IMAGES, QUICK_SAMPLING_STEPS, QUICK_SEGMENTER_EPOCHS};
use generation::{generate, read_generated, Generator};
pub use generation::{scheduler_name, GenerationCount, SamplingSettings, GENERATION_FILE};
pub use report::{
    ClassTable, ClassValue, DataSummary, FidSummary, ImageSimilarity, InceptionFidSummary,
    MaskFaithfulness, ModelSummary, PaperEvalReport, SampleRecord, SamplingSummary,
    SegmenterSummary, StageTiming, SyntheticTraining, REPORT_JSON, REPORT_MD,
};
use segmenters::{real_segmenter, recipe_differences, train_into};
use setup::{jobs, setup, tensor, Setup};
pub use sheet::{SheetData, SheetRow, SHEET_ROWS};
use stages::Stages;
pub use stages::{EvalProgress, Stage};

/// The real-trained segmenter, inside the output folder.
pub const REAL_SEGMENTER_DIR: &str = "segmenter-real";
/// The segmenter trained on generated images, inside the output folder.
pub const SYNTHETIC_SEGMENTER_DIR: &str = "segmenter-generated";
/// Images generated from the test masks, inside the output folder.
pub const GENERATED_TEST_DIR: &str = "generated/test";
/// Images generated from the training masks (Table 1's training set), inside the output folder.
pub const GENERATED_TRAIN_DIR: &str = "generated/train";
/// Segmentations of the generated test images, inside the output folder (same file names).
pub const SEGMENTATIONS_GENERATED_DIR: &str = "segmentations/generated";
/// Segmentations of the real test images, inside the output folder (the pairs' file names).
pub const SEGMENTATIONS_REAL_DIR: &str = "segmentations/real";

/// The report and the sheet of a full evaluation.
#[derive(Clone, Debug)]
pub struct PaperEvalRun {
    pub report: PaperEvalReport,
    pub sheet: SheetData,
}

/// What one [`generate_shard`] call did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardSummary {
    pub shard: Shard,
    pub test: GenerationCount,
    pub train: GenerationCount,
}

/// Generates both image sets (only `shard`'s batches when given).
fn generate_sets(
    cfg: &PaperEvalConfig,
    s: &Setup,
    shard: Option<Shard>,
    stages: &mut Stages<'_>,
) -> Result<[GenerationCount; 2]> {
    let mut denoiser = UnetDenoiser::new(&s.model.unet.model, cfg.dtype);
    let mut generator = Generator {
        denoiser: &mut denoiser,
        training: &s.model.scheduler,
        meta: &s.model.meta,
        device: &cfg.device,
        fingerprint: &s.fingerprint,
        dtype: cfg.dtype,
    };
    let [test_job, train_job] = jobs(cfg, s);
    let test = stages.run(Stage::GenerateTest, |advance| {
        generate(
            &mut generator,
            &test_job,
            &cfg.sampling,
            shard,
            &mut |d, t| advance(d, t, String::new()),
        )
    })?;
    let train = stages.run(Stage::GenerateTrain, |advance| {
        generate(
            &mut generator,
            &train_job,
            &cfg.sampling,
            shard,
            &mut |d, t| advance(d, t, String::new()),
        )
    })?;
    Ok([test, train])
}

/// Runs only the generation step for `shard` (both image sets), so that several processes can
/// share it; a later [`run_paper_eval`] into the same output folder reuses their images.
pub fn generate_shard(
    cfg: &PaperEvalConfig,
    shard: Shard,
    progress: &mut dyn FnMut(&EvalProgress),
) -> Result<ShardSummary> {
    let mut stages = Stages {
        progress,
        timings: Vec::new(),
    };
    let s = stages.run(Stage::Load, |advance| setup(cfg, false, advance))?;
    let [test, train] = generate_sets(cfg, &s, Some(shard), &mut stages)?;
    Ok(ShardSummary { shard, test, train })
}

/// Mean of a sample's non-NaN values.
fn row_mean(row: &[f64]) -> Option<f64> {
    let valid: Vec<f64> = row.iter().copied().filter(|v| !v.is_nan()).collect();
    (!valid.is_empty()).then(|| valid.iter().sum::<f64>() / valid.len() as f64)
}

/// `[-1, 1]` back to the 8-bit value it was decoded from.
fn to_u8_value(v: f32) -> f64 {
    f64::from(((v * 0.5 + 0.5).clamp(0.0, 1.0) * 255.0).round())
}

/// Runs the whole evaluation (see the module docs); writes the segmenters, generated images and
/// segmentations under `cfg.out`, and returns the report for the caller to write.
pub fn run_paper_eval(
    cfg: &PaperEvalConfig,
    progress: &mut dyn FnMut(&EvalProgress),
) -> Result<PaperEvalRun> {
    let started = Instant::now();
    // Read before any long stage, so that a bad weight file fails at once.
    let inception = match &cfg.inception_weights {
        Some(path) => Some((InceptionV3::load(path, &cfg.device)?, path)),
        None => None,
    };
    let mut stages = Stages {
        progress,
        timings: Vec::new(),
    };
    let s = stages.run(Stage::Load, |advance| setup(cfg, true, advance))?;
    let guided = s.guided();
    let k = s.num_classes;
    let ibs = cfg.inference_batch_size;
    let device = &cfg.device;
    let test_masks = s.test.masks().ok_or_else(|| EvalError::Incompatible {
        what: cfg.dataset.display().to_string(),
        reason: "the test split has no masks".into(),
    })?;
    let mut skipped = Vec::new();
    let mut notes = Vec::new();

    let real = stages.run(Stage::RealSegmenter, |advance| {
        real_segmenter(cfg, &s, advance)
    })?;
    let [test_count, train_count] = generate_sets(cfg, &s, None, &mut stages)?;
    let [test_job, train_job] = jobs(cfg, &s);
    let gen_test = read_generated(&test_job)?;
    let gen_train = read_generated(&train_job)?;
    let n_test = s.test.len();
    let gen_test_t = tensor(&gen_test, n_test, &s, device)?;
    let real_test_t = s.test.images_tensor(device)?;
    let test_names = s.test_names();

    // Table 2.
    let (seg_gen, seg_real, table2, per_sample_dice) =
        stages.run(Stage::MaskFaithfulness, |advance| {
            let seg_gen = predict(&real.model, &gen_test_t, ibs)?;
            advance(1, 3, "segmented generated images".into());
            let seg_real = predict(&real.model, &real_test_t, ibs)?;
            advance(2, 3, "segmented real images".into());
            let (h, w) = (s.height, s.width);
            for (i, name) in test_names.iter().enumerate() {
                write_label_png(
                    &cfg.out.join(SEGMENTATIONS_GENERATED_DIR).join(name),
                    seg_gen.sample(i),
                    h,
                    w,
                )?;
            }
            for (i, name) in s.test.names().iter().enumerate() {
                write_label_png(
                    &cfg.out.join(SEGMENTATIONS_REAL_DIR).join(name),
                    seg_real.sample(i),
                    h,
                    w,
                )?;
            }
            let dice_cfg = DiceConfig::new(k);
            let (table2, per_sample) = if guided {
                let vs_mask = dice(&seg_gen, test_masks, &dice_cfg)?;
                let vs_real = dice(&seg_gen, &seg_real, &dice_cfg)?;
                let reference = dice(&seg_real, test_masks, &dice_cfg)?;
                let per_sample: Vec<Option<f64>> =
                    (0..n_test).map(|i| row_mean(vs_mask.row(i))).collect();
                let table = MaskFaithfulness {
                    vs_input_mask: ClassTable::from_scores(&vs_mask, &s.class_names),
                    vs_segmentation_of_real: ClassTable::from_scores(&vs_real, &s.class_names),
                    real_reference: ClassTable::from_scores(&reference, &s.class_names),
                };
                (Some(table), per_sample)
            } else {
                (None, vec![None; n_test])
            };
            advance(3, 3, "scored".into());
            Ok((seg_gen, seg_real, table2, per_sample))
        })?;
    if !guided {
        skipped.push(
            "Table 2, PSNR/SSIM and HD95: the model is unconditional, so its images have no \
             input mask and no paired real image."
                .into(),
        );
    }

    // Table 1.
    let (synthetic, table1) = stages.run(Stage::SyntheticSegmenter, |advance| {
        let n_train = s.train.len();
        let (labels, source) = if guided {
            let m = s
                .train
                .masks()
                .cloned()
                .ok_or_else(|| EvalError::Incompatible {
                    what: cfg.dataset.display().to_string(),
                    reason: "the training split has no masks".into(),
                })?;
            (m, "their input masks")
        } else {
            let t = tensor(&gen_train, n_train, &s, device)?;
            (
                predict(&real.model, &t, ibs)?,
                "the real-trained segmenter's predictions (pseudo-labels: the model is \
                 unconditional)",
            )
        };
        let data = SegData::from_vec(
            gen_train.clone(),
            n_train,
            s.channels,
            s.height,
            s.width,
            labels,
        )?;
        let syn = train_into(
            cfg,
            &s,
            &data,
            &cfg.out.join(SYNTHETIC_SEGMENTER_DIR),
            advance,
        )?;
        let dice_cfg = DiceConfig::new(k);
        let syn_pred = predict(&syn.model, &real_test_t, ibs)?;
        let table = SyntheticTraining {
            real_trained: ClassTable::from_scores(
                &dice(&seg_real, test_masks, &dice_cfg)?,
                &s.class_names,
            ),
            synthetic_trained: ClassTable::from_scores(
                &dice(&syn_pred, test_masks, &dice_cfg)?,
                &s.class_names,
            ),
            synthetic_labels: source.into(),
            synthetic_images: n_train,
        };
        Ok((syn.summary, table))
    })?;

    // FID, PSNR/SSIM, HD95.
    let (fid, ifid, similarity, hd95, per_pair) = stages.run(Stage::ImageQuality, |advance| {
        let fid = if n_test >= 2 {
            let a = FeatureStats::from_tensor(&encode(&real.model, &gen_test_t, ibs)?)?;
            let b = FeatureStats::from_tensor(&encode(&real.model, &real_test_t, ibs)?)?;
            let value = frechet_distance(&a, &b)?;
            Some(FidSummary {
                fid: Some(value).filter(|v| v.is_finite()),
                feature_dim: a.dim(),
                generated: a.count(),
                real: b.count(),
            })
        } else {
            None
        };
        let ifid = match &inception {
            Some((net, path)) if n_test >= 2 => {
                Some(inception_fid(net, path, &gen_test_t, &real_test_t, ibs)?)
            }
            _ => None,
        };
        advance(1, 3, "FID".into());
        let (similarity, per_pair) = if guided {
            let (summary, per_pair) = paired_similarity(&gen_test, &s)?;
            (Some(summary), per_pair)
        } else {
            (None, vec![(None, None); n_test])
        };
        advance(2, 3, "PSNR/SSIM".into());
        let hd95 = if guided {
            let scores: ClassScores =
                hausdorff_distance(&seg_gen, test_masks, &HausdorffConfig::hd95(k))?;
            Some(ClassTable::from_scores(&scores, &s.class_names))
        } else {
            None
        };
        advance(3, 3, "HD95".into());
        Ok((fid, ifid, similarity, hd95, per_pair))
    })?;
    if fid.is_none() {
        skipped.push(format!(
            "FID: needs at least 2 test images, {n_test} were used."
        ));
    }
    if guided && (s.height < 7 || s.width < 7) {
        skipped.push(format!(
            "SSIM: {}×{} images are smaller than its 7×7 window.",
            s.height, s.width
        ));
    }

    if cfg.quick {
        notes.push(
            "Quick run: a few images per split, short segmenter training and few sampling \
             steps. The numbers check that the pipeline works; they are not the paper's."
                .into(),
        );
    }
    notes.push("Generated images are scored as saved: 8-bit PNGs read back to [-1, 1].".into());
    if let Some(f) = &fid {
        if f.generated.min(f.real) <= f.feature_dim {
            notes.push(format!(
                "FID from {} generated and {} real images in {} dimensions: the covariances are \
                 rank-deficient and the value is biased upward; compare FIDs only at equal \
                 image counts.",
                f.generated, f.real, f.feature_dim
            ));
        }
    }
    if let Some(f) = &ifid {
        notes.push(format!(
            "The Inception FID uses torchvision's Inception-v3 with the weights in {}: with \
             torchvision's ImageNet weights it is not pytorch-fid's TensorFlow-Inception FID, so \
             compare it only with FIDs computed the same way{}.",
            f.weights,
            if f.generated.min(f.real) <= f.feature_dim {
                format!(
                    "; from {} generated and {} real images in {} dimensions it is biased upward \
                     (rank-deficient covariances)",
                    f.generated, f.real, f.feature_dim
                )
            } else {
                String::new()
            }
        ));
    }
    match &s.val {
        Some(v) => notes.push(format!(
            "Both segmenters keep the weights of their epoch with the lowest loss on the same {} \
             real validation images.",
            v.len()
        )),
        None => notes.push(
            "The dataset has no validation split: both segmenters keep their last epoch.".into(),
        ),
    }
    if let Some(spec) = &real.loaded_spec {
        let differences = recipe_differences(spec, &cfg.seeded_recipe());
        if !differences.is_empty() {
            notes.push(format!(
                "The real-image segmenter was loaded and was not trained with the recipe of the \
                 generated-image one ({}): Table 1 compares different recipes.",
                differences.join(", ")
            ));
        }
    }

    let samples = (0..n_test)
        .map(|i| SampleRecord {
            name: if guided {
                s.test.names()[i].clone()
            } else {
                test_names[i].clone()
            },
            generated: format!("{GENERATED_TEST_DIR}/{}", test_names[i]),
            segmentation: format!("{SEGMENTATIONS_GENERATED_DIR}/{}", test_names[i]),
            dice_vs_mask: per_sample_dice[i],
            psnr: per_pair[i].0,
            ssim: per_pair[i].1,
        })
        .collect();
    let sheet = sheet::sheet(&s, &gen_test, &seg_gen);
    let meta = &s.model.meta;
    let report = PaperEvalReport {
        segdiff_version: env!("CARGO_PKG_VERSION").into(),
        command: cfg.command.clone(),
        seed: cfg.seed,
        quick: cfg.quick,
        model: ModelSummary {
            path: cfg.model.display().to_string(),
            segmentation_guided: guided,
            mask_encoding: meta.mask_encoding.clone(),
            num_classes: k,
            class_names: s.class_names.clone(),
            image_channels: s.channels,
            image_size: [s.height, s.width],
            fingerprint: s.fingerprint.clone(),
        },
        data: DataSummary {
            path: cfg.dataset.display().to_string(),
            train_used: s.train.len(),
            train_total: s.train_total,
            val_used: s.val.as_ref().map_or(0, SplitData::len),
            val_total: s.val_total,
            test_used: n_test,
            test_total: s.test_total,
        },
        sampling: SamplingSummary {
            scheduler: scheduler_name(cfg.sampling.scheduler).into(),
            steps: cfg.sampling.resolved_steps(),
            eta: cfg.sampling.eta,
            batch_size: cfg.sampling.batch_size,
            dtype: format!("{:?}", cfg.dtype).to_lowercase(),
            test_seed: cfg.seed,
            train_seed: cfg.train_seed(),
            test_images: test_count,
            train_images: train_count,
        },
        real_segmenter: real.summary,
        synthetic_segmenter: Some(synthetic),
        table2,
        table1,
        fid,
        inception_fid: ifid,
        image_similarity: similarity,
        hd95,
        samples,
        skipped,
        notes,
        timings: stages.timings,
        total_seconds: started.elapsed().as_secs_f64(),
    };
    Ok(PaperEvalRun { report, sheet })
}

/// FID of generated vs real test images (`[-1, 1]`, as the segmenters see them) in
/// Inception-v3's pool feature space, `batch_size` images per forward pass.
fn inception_fid(
    net: &InceptionV3,
    weights: &Path,
    generated: &Tensor,
    real: &Tensor,
    batch_size: usize,
) -> Result<InceptionFidSummary> {
    // Inception-v3 takes images in [0, 1].
    let stats = |t: &Tensor| {
        FeatureStats::from_tensor(&net.features_batched(&t.affine(0.5, 0.5)?, batch_size)?)
    };
    let a = stats(generated)?;
    let b = stats(real)?;
    let value = frechet_distance(&a, &b)?;
    Ok(InceptionFidSummary {
        fid: Some(value).filter(|v| v.is_finite()),
        weights: weights.display().to_string(),
        feature_dim: INCEPTION_FEATURE_DIM,
        generated: a.count(),
        real: b.count(),
    })
}

/// PSNR and SSIM of each generated test image against its real image, at 8 bits.
#[allow(clippy::type_complexity)]
fn paired_similarity(
    gen_test: &[f32],
    s: &Setup,
) -> Result<(ImageSimilarity, Vec<(Option<f64>, Option<f64>)>)> {
    let (c, h, w) = (s.channels, s.height, s.width);
    let n = c * h * w;
    let ssim_cfg = SsimConfig::skimage_default();
    let ssim_fits = h >= 7 && w >= 7;
    let mut per_pair = Vec::with_capacity(s.test.len());
    for i in 0..s.test.len() {
        let g: Vec<f64> = gen_test[i * n..(i + 1) * n]
            .iter()
            .map(|&v| to_u8_value(v))
            .collect();
        let r: Vec<f64> = s.test.image(i).iter().map(|&v| to_u8_value(v)).collect();
        let p = psnr(&g, &r, 255.0)?;
        let q = if ssim_fits {
            let mut sum = 0.0;
            for ch in 0..c {
                let plane = ch * h * w..(ch + 1) * h * w;
                sum += ssim(&g[plane.clone()], &r[plane], h, w, 255.0, &ssim_cfg)?;
            }
            Some(sum / c as f64)
        } else {
            None
        };
        per_pair.push((Some(p), q));
    }
    let finite: Vec<f64> = per_pair
        .iter()
        .filter_map(|(p, _)| p.filter(|v| v.is_finite()))
        .collect();
    let ssims: Vec<f64> = per_pair.iter().filter_map(|(_, q)| *q).collect();
    let mean = |v: &[f64]| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
    let summary = ImageSimilarity {
        psnr: mean(&finite),
        psnr_infinite: per_pair.len() - finite.len(),
        ssim: mean(&ssims),
        pairs: per_pair.len(),
    };
    let per_pair = per_pair
        .into_iter()
        .map(|(p, q)| (p.filter(|v| v.is_finite()), q))
        .collect();
    Ok((summary, per_pair))
}
