//! Image quality of the generated test images: FID in the real-trained segmenter's feature space
//! (and Inception-v3's, when its weights are given), PSNR/SSIM against the paired real images at
//! 8 bits, and HD95 of their segmentations against the input masks.

use std::path::Path;

use candle_core::Tensor;

use crate::class_scores::ClassScores;
use crate::error::Result;
use crate::fid::{frechet_distance, FeatureStats};
use crate::hausdorff::{hausdorff_distance, HausdorffConfig};
use crate::image_quality::{psnr, ssim, SsimConfig};
use crate::inception::{InceptionV3, INCEPTION_FEATURE_DIM};
use crate::label_maps::LabelMaps;
use crate::monai_unet::MonaiUNet;
use crate::paper_eval::config::PaperEvalConfig;
use crate::paper_eval::report::{ClassTable, FidSummary, ImageSimilarity, InceptionFidSummary};
use crate::paper_eval::setup::{ScoringData, Setup};
use crate::segmenter::encode;

/// PSNR and SSIM of one generated image against its real image.
pub(super) type PairScores = (Option<f64>, Option<f64>);

/// What the image-quality stage measured.
pub(super) struct QualityScores {
    /// None with fewer than 2 test images.
    pub(super) fid: Option<FidSummary>,
    pub(super) inception_fid: Option<InceptionFidSummary>,
    /// Guided models only.
    pub(super) similarity: Option<ImageSimilarity>,
    /// Guided models only.
    pub(super) hd95: Option<ClassTable>,
    /// One per test image (all `None` for unconditional models).
    pub(super) per_pair: Vec<PairScores>,
}

/// FID (segmenter features, and Inception-v3 features when `inception` is given), PSNR/SSIM and
/// HD95 of the generated test images; `seg_gen` are their segmentations.
pub(super) fn image_quality(
    cfg: &PaperEvalConfig,
    s: &Setup,
    segmenter: &MonaiUNet,
    data: &ScoringData<'_>,
    seg_gen: &LabelMaps,
    inception: Option<&(InceptionV3, &Path)>,
    advance: &mut dyn FnMut(usize, usize, String),
) -> Result<QualityScores> {
    let ibs = cfg.inference_batch_size;
    let n_test = s.test.len();
    let guided = s.guided();
    let fid = if n_test >= 2 {
        Some(segmenter_fid(segmenter, data, ibs)?)
    } else {
        None
    };
    let inception_fid = match inception {
        Some((net, path)) if n_test >= 2 => Some(inception_fid(
            net,
            path,
            &data.gen_test_t,
            &data.real_test_t,
            ibs,
        )?),
        _ => None,
    };
    advance(1, 3, "FID".into());
    let (similarity, per_pair) = if guided {
        let (summary, per_pair) = paired_similarity(&data.gen_test, s)?;
        (Some(summary), per_pair)
    } else {
        (None, vec![(None, None); n_test])
    };
    advance(2, 3, "PSNR/SSIM".into());
    let hd95 = if guided {
        let scores: ClassScores = hausdorff_distance(
            seg_gen,
            data.test_masks,
            &HausdorffConfig::hd95(s.num_classes),
        )?;
        Some(ClassTable::from_scores(&scores, &s.class_names))
    } else {
        None
    };
    advance(3, 3, "HD95".into());
    Ok(QualityScores {
        fid,
        inception_fid,
        similarity,
        hd95,
        per_pair,
    })
}

/// FID of generated vs real test images in the segmenter's pooled bottleneck feature space.
fn segmenter_fid(segmenter: &MonaiUNet, data: &ScoringData<'_>, ibs: usize) -> Result<FidSummary> {
    let a = FeatureStats::from_tensor(&encode(segmenter, &data.gen_test_t, ibs)?)?;
    let b = FeatureStats::from_tensor(&encode(segmenter, &data.real_test_t, ibs)?)?;
    let value = frechet_distance(&a, &b)?;
    Ok(FidSummary {
        fid: Some(value).filter(|v| v.is_finite()),
        feature_dim: a.dim(),
        generated: a.count(),
        real: b.count(),
    })
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
fn paired_similarity(gen_test: &[f32], s: &Setup) -> Result<(ImageSimilarity, Vec<PairScores>)> {
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

/// `[-1, 1]` back to the 8-bit value it was decoded from.
fn to_u8_value(v: f32) -> f64 {
    f64::from(((v * 0.5 + 0.5).clamp(0.0, 1.0) * 255.0).round())
}
