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

mod caveats;
mod config;
mod generation;
mod mask_faithfulness;
mod quality;
mod report;
mod segmenters;
mod setup;
mod sheet;
mod stages;

use std::time::Instant;

use segdiff_diffusion::sampler::{Shard, UnetDenoiser};

use crate::error::{EvalError, Result};
use crate::inception::InceptionV3;

pub use config::{PaperEvalConfig, QUICK_MAX_IMAGES, QUICK_SAMPLING_STEPS, QUICK_SEGMENTER_EPOCHS};
use generation::{generate, Generator};
pub use generation::{scheduler_name, GenerationCount, SamplingSettings, GENERATION_FILE};
use mask_faithfulness::mask_faithfulness;
use quality::{image_quality, PairScores};
pub use report::{
    ClassTable, ClassValue, DataSummary, FidSummary, ImageSimilarity, InceptionFidSummary,
    MaskFaithfulness, ModelSummary, PaperEvalReport, SampleRecord, SamplingSummary,
    SegmenterSummary, StageTiming, SyntheticTraining, REPORT_JSON, REPORT_MD,
};
use segmenters::{real_segmenter, synthetic_segmenter};
use setup::{jobs, setup, ScoringData, Setup};
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

/// The report's description of the sampling; `counts` of the test and training sets.
fn sampling_summary(cfg: &PaperEvalConfig, counts: [GenerationCount; 2]) -> SamplingSummary {
    let [test_images, train_images] = counts;
    SamplingSummary {
        scheduler: scheduler_name(cfg.sampling.scheduler).into(),
        steps: cfg.sampling.resolved_steps(),
        eta: cfg.sampling.eta,
        batch_size: cfg.sampling.batch_size,
        dtype: format!("{:?}", cfg.dtype).to_lowercase(),
        test_seed: cfg.seed,
        train_seed: cfg.train_seed(),
        test_images,
        train_images,
    }
}

/// One record per generated test image: its files and its scores.
fn sample_records(
    s: &Setup,
    test_names: &[String],
    dice_vs_mask: &[Option<f64>],
    per_pair: &[PairScores],
) -> Vec<SampleRecord> {
    (0..s.test.len())
        .map(|i| SampleRecord {
            name: if s.guided() {
                s.test.names()[i].clone()
            } else {
                test_names[i].clone()
            },
            generated: format!("{GENERATED_TEST_DIR}/{}", test_names[i]),
            segmentation: format!("{SEGMENTATIONS_GENERATED_DIR}/{}", test_names[i]),
            dice_vs_mask: dice_vs_mask[i],
            psnr: per_pair[i].0,
            ssim: per_pair[i].1,
        })
        .collect()
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
        Some(path) => Some((InceptionV3::load(path, &cfg.device)?, path.as_path())),
        None => None,
    };
    let mut stages = Stages {
        progress,
        timings: Vec::new(),
    };
    let s = stages.run(Stage::Load, |advance| setup(cfg, true, advance))?;
    let test_masks = s.test.masks().ok_or_else(|| EvalError::Incompatible {
        what: cfg.dataset.display().to_string(),
        reason: "the test split has no masks".into(),
    })?;

    let real = stages.run(Stage::RealSegmenter, |advance| {
        real_segmenter(cfg, &s, advance)
    })?;
    let counts = generate_sets(cfg, &s, None, &mut stages)?;
    let data = ScoringData::read(cfg, &s, test_masks)?;
    let segmentations = stages.run(Stage::MaskFaithfulness, |advance| {
        mask_faithfulness(cfg, &s, &real.model, &data, advance)
    })?;
    let (synthetic, table1) = stages.run(Stage::SyntheticSegmenter, |advance| {
        synthetic_segmenter(cfg, &s, &real.model, &data, &segmentations.real, advance)
    })?;
    let quality = stages.run(Stage::ImageQuality, |advance| {
        let seg_gen = &segmentations.generated;
        image_quality(
            cfg,
            &s,
            &real.model,
            &data,
            seg_gen,
            inception.as_ref(),
            advance,
        )
    })?;

    let samples = sample_records(
        &s,
        &data.test_names,
        &segmentations.dice_vs_mask,
        &quality.per_pair,
    );
    let sheet = sheet::sheet(&s, &data.gen_test, &segmentations.generated);
    let report = PaperEvalReport {
        segdiff_version: env!("CARGO_PKG_VERSION").into(),
        command: cfg.command.clone(),
        seed: cfg.seed,
        quick: cfg.quick,
        model: s.model_summary(cfg),
        data: s.data_summary(cfg),
        sampling: sampling_summary(cfg, counts),
        skipped: caveats::skipped(&s, &quality),
        notes: caveats::notes(cfg, &s, &quality, real.loaded_spec.as_ref()),
        real_segmenter: real.summary,
        synthetic_segmenter: Some(synthetic),
        table2: segmentations.table,
        table1,
        fid: quality.fid,
        inception_fid: quality.inception_fid,
        image_similarity: quality.similarity,
        hd95: quality.hd95,
        samples,
        timings: stages.timings,
        total_seconds: started.elapsed().as_secs_f64(),
        volumes: None,
    };
    Ok(PaperEvalRun { report, sheet })
}
