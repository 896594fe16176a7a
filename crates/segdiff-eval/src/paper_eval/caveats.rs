//! What the report says besides its numbers: the metrics it skipped and why, and the notes a
//! reader needs to compare its values.

use crate::paper_eval::config::PaperEvalConfig;
use crate::paper_eval::quality::QualityScores;
use crate::paper_eval::segmenters::recipe_differences;
use crate::paper_eval::setup::Setup;
use crate::segmenter::SegmenterSpec;

/// The metrics that could not be computed, in the order of the stages.
pub(super) fn skipped(s: &Setup, quality: &QualityScores) -> Vec<String> {
    let guided = s.guided();
    let n_test = s.test.len();
    let mut skipped = Vec::new();
    if !guided {
        skipped.push(
            "Table 2, PSNR/SSIM and HD95: the model is unconditional, so its images have no \
             input mask and no paired real image."
                .into(),
        );
    }
    if quality.fid.is_none() {
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
    skipped
}

/// How to read the numbers: quick runs, 8-bit scoring, biased FIDs, the Inception weights, the
/// segmenters' weight selection and a loaded segmenter's recipe (`loaded_spec`).
pub(super) fn notes(
    cfg: &PaperEvalConfig,
    s: &Setup,
    quality: &QualityScores,
    loaded_spec: Option<&SegmenterSpec>,
) -> Vec<String> {
    let mut notes = Vec::new();
    if cfg.quick {
        notes.push(
            "Quick run: a few images per split, short segmenter training and few sampling \
             steps. The numbers check that the pipeline works; they are not the paper's."
                .into(),
        );
    }
    notes.push("Generated images are scored as saved: 8-bit PNGs read back to [-1, 1].".into());
    notes.extend(fid_notes(quality));
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
    if let Some(spec) = loaded_spec {
        let differences = recipe_differences(spec, &cfg.seeded_recipe());
        if !differences.is_empty() {
            notes.push(format!(
                "The real-image segmenter was loaded and was not trained with the recipe of the \
                 generated-image one ({}): Table 1 compares different recipes.",
                differences.join(", ")
            ));
        }
    }
    notes
}

/// Caveats of the two FIDs: rank-deficient covariances, and Inception weights that are not
/// pytorch-fid's.
fn fid_notes(quality: &QualityScores) -> Vec<String> {
    let mut notes = Vec::new();
    if let Some(f) = &quality.fid {
        if f.generated.min(f.real) <= f.feature_dim {
            notes.push(format!(
                "FID from {} generated and {} real images in {} dimensions: the covariances are \
                 rank-deficient and the value is biased upward; compare FIDs only at equal \
                 image counts.",
                f.generated, f.real, f.feature_dim
            ));
        }
    }
    if let Some(f) = &quality.inception_fid {
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
    notes
}
