//! Evaluation for segdiff: how good and how mask-faithful generated images are.
//!
//! - Mask faithfulness: a MONAI `UNet` segmenter ([`MonaiUNet`], trained with [`dice_ce_loss`])
//!   segments generated images; its output is scored against the conditioning masks with
//!   [`dice`] and [`hausdorff_distance`] (MONAI `DiceMetric` / `HausdorffDistanceMetric`
//!   semantics) on [`LabelMaps`], giving per-sample, per-class [`ClassScores`].
//! - Image quality: [`psnr`] and [`ssim`] (scikit-image semantics), and FID
//!   ([`frechet_distance`] on [`FeatureStats`], pytorch-fid's formula) over features such as
//!   [`MonaiUNet::encode_features`].
//!
//! Not here: sampling images (segdiff-diffusion), data loading (segdiff-data), the training loop
//! and CLI wiring. Errors are [`EvalError`].

mod class_scores;
pub mod dice;
mod error;
pub mod fid;
#[cfg(test)]
mod gradient_check;
pub mod hausdorff;
pub mod image_quality;
mod label_maps;
pub mod monai_unet;
pub mod seg_loss;

pub use class_scores::ClassScores;
pub use dice::{dice, DiceConfig};
pub use error::{EvalError, Result};
pub use fid::{fid_from_features, frechet_distance, frechet_terms, FeatureStats, FrechetTerms};
pub use hausdorff::{binary_hausdorff, hausdorff_distance, HausdorffConfig};
pub use image_quality::{psnr, ssim, SsimConfig, SsimWindow};
pub use label_maps::LabelMaps;
pub use monai_unet::{init_weights_seeded, MonaiUNet, MonaiUNetConfig};
pub use seg_loss::{dice_ce_loss, one_hot, DiceCeLoss, DiceCeLossConfig};
