//! Evaluation for segdiff: how good and how mask-faithful generated images are.
//!
//! - Mask faithfulness: a MONAI `UNet` segmenter ([`MonaiUNet`], trained with [`dice_ce_loss`])
//!   segments generated images; its output is scored against the conditioning masks with
//!   [`dice()`] and [`hausdorff_distance`] (MONAI `DiceMetric` / `HausdorffDistanceMetric`
//!   semantics) on [`LabelMaps`], giving per-sample, per-class [`ClassScores`].
//! - Image quality: [`psnr`] and [`ssim`] (scikit-image semantics), and FID
//!   ([`frechet_distance`] on [`FeatureStats`], pytorch-fid's formula) over features such as
//!   [`MonaiUNet::encode_features`] or, optionally, torchvision's Inception-v3 pool features
//!   ([`InceptionV3`], loaded from torchvision-named safetensors; preprocessing in
//!   [`inception_input`]).
//! - The segmenter itself: [`train_segmenter`] (Dice+CE, AdamW, cosine lr, seeded) on in-memory
//!   [`SegData`], saved as a directory ([`save_segmenter`] / [`load_segmenter`], described by a
//!   [`SegmenterSpec`]) and used through batched [`predict`] and [`encode`].
//! - The paper's whole evaluation of a trained model on a dataset ([`paper_eval`]): segmenter on
//!   real images, images generated from the test and training masks, Table 2 (mask
//!   faithfulness), Table 1 (segmenter trained on generated images), FID, PSNR/SSIM, HD95, as a
//!   [`paper_eval::PaperEvalReport`]. It drives segdiff-diffusion's sampler and reads the
//!   dataset through segdiff-data ([`SplitData`]); generated images and label maps go to disk
//!   through [`png_files`].
//! - Choosing a sampler ([`sampler_sweep`]): every sampler × step count on the same masks and
//!   seed, scored by network calls, time, Dice and FID, with the Pareto front in (calls, Dice).
//! - Whole volumes ([`volume_eval`]): through-plane change, Dice on the stack's reslices and
//!   per-plane FID of neighbour-conditioned and independent generation against the real stack.
//! - Mask faithfulness during training ([`MaskFaithfulness`]): the diffusion trainer's monitor,
//!   Dice of the segmented images generated from fixed validation masks, and a sample sheet.
//!
//! Not here: the sampling loop itself (segdiff-diffusion), decoding datasets (segdiff-data), the
//! diffusion training loop, progress bars and CLI wiring. Errors are [`EvalError`].

mod atomic_write;
mod class_scores;
pub mod dice;
mod error;
pub mod fid;
#[cfg(test)]
mod gradient_check;
pub mod hausdorff;
pub mod image_quality;
pub mod inception;
mod label_maps;
pub mod mask_monitor;
pub mod monai_unet;
pub mod paper_eval;
pub mod png_files;
pub mod sampler_sweep;
pub mod seg_loss;
pub mod segmenter;
pub mod segmenter_training;
pub mod split_data;
mod var_store;
pub mod volume_eval;
pub mod volume_metrics;

pub use class_scores::ClassScores;
pub use dice::{dice, DiceConfig};
pub use error::{EvalError, MisShapedTensor, Result, WeightProblems};
pub use fid::{fid_from_features, frechet_distance, frechet_terms, FeatureStats, FrechetTerms};
pub use hausdorff::{binary_hausdorff, hausdorff_distance, HausdorffConfig};
pub use image_quality::{psnr, ssim, SsimConfig, SsimWindow};
pub use inception::{
    inception_input, init_inception_seeded, resize_bilinear, InceptionV3, INCEPTION_FEATURE_DIM,
    INCEPTION_INPUT_SIZE,
};
pub use label_maps::LabelMaps;
pub use mask_monitor::{MaskFaithfulness, MaskScores, MonitorSampling};
pub use monai_unet::{init_weights_seeded, MonaiUNet, MonaiUNetConfig};
pub use seg_loss::{dice_ce_loss, one_hot, DiceCeLoss, DiceCeLossConfig};
pub use segmenter::{
    encode, load_segmenter, predict, save_segmenter, InputNormalisation, SegmenterSpec,
    TrainingSummary,
};
pub use segmenter_training::{
    cosine_annealing_lr, train_segmenter, Augmentation, EpochRecord, SegData, SegmenterRecipe,
    SegmenterTrainOptions, TrainEvent, TrainedSegmenter,
};
pub use split_data::{evenly_spaced, SplitData};
pub use volume_eval::{
    evaluate_volumes, load_volume_stacks, VolumeEvalOptions, VolumeReport, VolumeStack,
};
pub use volume_metrics::{through_plane_change, SliceStack};
