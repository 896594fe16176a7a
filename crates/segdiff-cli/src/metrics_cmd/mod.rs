//! `segdiff metrics …`: score folders of PNG masks or images, or feature sets, with segdiff-eval.
//!
//! Masks and images are paired by file name (`*.png`, case-insensitive, not recursive); a file
//! without a partner in the other folder is an error. Masks are 8- or 16-bit greyscale PNGs whose
//! pixel values are class ids (0 = background); all masks of a run share one size. Images for
//! PSNR/SSIM are 8- or 16-bit greyscale PNGs of one bit depth; the data range is 255 for 8-bit and
//! 65535 for 16-bit (scikit-image's default for uint8/uint16 arrays) unless `--data-range` says
//! otherwise.
//!
//! JSON output (`--json`) is one object on stdout. JSON has no NaN or infinity, so a non-finite
//! value is written as `null` and explained beside it: for `dice`/`hd95`, `values[s][c]` is null
//! when the entry is ignored (NaN: class empty in the target, or for HD also empty in the
//! prediction) or +inf (listed in `infinite_entries`); `mean` / `mean_per_class` are null when
//! infinite (`mean_infinite` / `mean_per_class_infinite`) or when nothing was valid. For
//! `psnr-ssim`, a null `psnr` means identical images (infinite PSNR).
//!
//! One file per metric (`dice`, `hd95`, `psnr_ssim`, `fid`), with what they share beside them:
//! pairing PNG folders (`png_folders`), reading mask pairs (`masks`), the per-class report of Dice
//! and Hausdorff (`class_report`), the image encoders of FID (`image_encoder`) and the way reports
//! reach stdout (`output`).

use anyhow::Result;
use clap::Subcommand;

use crate::runtime::Runtime;

mod class_report;
mod dice;
mod fid;
mod hd95;
mod image_encoder;
mod masks;
mod output;
mod png_folders;
mod psnr_ssim;
#[cfg(test)]
mod tests;

pub use dice::DiceArgs;
pub use fid::FidArgs;
pub use hd95::HausdorffArgs;
pub use psnr_ssim::ImageArgs;

#[derive(Debug, Subcommand)]
pub enum MetricsCommand {
    /// Dice per sample and class (MONAI `DiceMetric`) between two folders of PNG masks.
    Dice(DiceArgs),
    /// Hausdorff distance at a percentile (MONAI `HausdorffDistanceMetric`; 95 by default,
    /// `--percentile 100` for the plain maximum) between two folders of PNG masks.
    Hd95(HausdorffArgs),
    /// PSNR and SSIM (scikit-image) between two folders of greyscale PNG images.
    PsnrSsim(ImageArgs),
    /// Fréchet distance (pytorch-fid formula) between two feature sets: safetensors files holding
    /// an N×D tensor, or folders of PNG images encoded by a segmenter (`--encoder`) or by
    /// Inception-v3 (`--inception-weights`).
    Fid(FidArgs),
}

pub fn run(cmd: MetricsCommand, rt: &Runtime) -> Result<()> {
    match cmd {
        MetricsCommand::Dice(args) => {
            let json = args.masks.json;
            let report = dice::dice_report(&args)?;
            output::emit(&report, json, class_report::print_class_table)
        }
        MetricsCommand::Hd95(args) => {
            let json = args.masks.json;
            let report = hd95::hausdorff_report(&args)?;
            output::emit(&report, json, class_report::print_class_table)
        }
        MetricsCommand::PsnrSsim(args) => {
            let report = psnr_ssim::image_report(&args)?;
            output::emit(&report, args.json, psnr_ssim::print_image_table)
        }
        MetricsCommand::Fid(args) => {
            let report = fid::fid_report(&args, &rt.device)?;
            output::emit(&report, args.json, fid::print_fid)
        }
    }
}
