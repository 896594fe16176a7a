//! `segdiff mhvae …`: the multi-headed VAE (segdiff-mhvae): segmentation by warping a reference
//! disc with an affine map or a thin-plate spline, with style and position one can swap and
//! edit. This module only parses and wires.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Subcommand;
use segdiff_mhvae::synth::{draw_samples, write_dataset, ShapeKind};

use crate::flag_values::flag;
use crate::runtime::Runtime;

mod apply;
mod eval;
mod images;
mod inspect;
mod refiner;
mod train;
mod warp;

#[derive(Debug, Subcommand)]
pub enum MhvaeCommand {
    /// Synthetic single-object data with known style and shape (a dataset in segdiff's layout
    /// plus `truth.jsonl`): for trying the MHVAE, and the ground truth of its tests.
    Synth(SynthArgs),
    /// Train the MHVAE (or, with --warp none, the single-headed VAE baseline) on a prepared
    /// dataset; any mask id > 0 is the object.
    Train(Box<train::MhvaeTrainArgs>),
    /// One 0/1 PNG mask per input image: the reference disc warped by the predicted position.
    Segment(apply::ImagesArgs),
    /// The VAE's reconstruction of each input image (same file names), refined by the diffusion
    /// refiner with --refiner.
    Reconstruct(apply::ReconstructArgs),
    /// Train the diffusion refiner for a trained MHVAE (kept frozen): a conditional diffusion that
    /// turns the VAE's blurry output into a sharp image (paper §4). Images only (masks are not
    /// read). `--formulation diffusevae2` trains the paper's App.-G baseline instead.
    TrainRefiner(Box<refiner::TrainRefinerArgs>),
    /// Pure sampling (paper App. G): position and style from the prior, decoded, refined.
    Sample(refiner::SampleArgs),
    /// Decode the style of one image with the position of another (paper Fig. 5).
    Swap(apply::SwapArgs),
    /// Rotate, scale or move each image's object about its centre, keeping its style (paper
    /// Fig. 6); outputs keep the input names, their masks go to OUT/masks.
    Edit(apply::EditArgs),
    /// An n×n grid between two images: rows interpolate the style, columns the position (paper
    /// Fig. 9).
    Interpolate(apply::InterpolateArgs),
    /// θ, the affine matrix or control points, and a picture of the deformation per image
    /// (paper Fig. 2).
    Inspect(inspect::InspectArgs),
    /// k-fold training and testing: Dice, HD95 and HD100 (± sd over folds) of each warp and of
    /// segdiff's MONAI UNet segmenter on the same folds, in a table shaped like the paper's
    /// Table 1 (report.md, report.json).
    Eval(eval::EvalArgs),
    /// Apply an affine or thin-plate-spline warp to images, with torch's `affine_grid` /
    /// `grid_sample` semantics (bilinear, zero padding): a tool for checking the MHVAE's warps
    /// against other implementations. IN holds `image` (N,C,H,W) and either `affine` (N,2,3) or
    /// `tps_target` (K,2) + `tps_source` (N,K,2), in normalised (x, y) coordinates; OUT gets `grid`
    /// (N,H,W,2) and `warped` (N,C,H,W).
    Warp(warp::WarpArgs),
}

#[derive(Debug, clap::Args)]
pub struct SynthArgs {
    /// Objects: `ellipses`, `blobs` (star-convex) or `merged-circles`.
    #[arg(long, value_parser = flag::<ShapeKind>())]
    pub kind: ShapeKind,
    /// Number of images (80 % train, 10 % val, 10 % test).
    #[arg(long, default_value_t = 600)]
    pub n: usize,
    /// Image side in pixels.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Seed of every draw.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output dataset folder (replaced atomically when complete).
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(cmd: MhvaeCommand, rt: &Runtime) -> Result<()> {
    match cmd {
        MhvaeCommand::Synth(a) => {
            if a.n == 0 || a.size < 8 {
                anyhow::bail!(
                    "--n must be at least 1 and --size at least 8 (got {} and {})",
                    a.n,
                    a.size
                );
            }
            let samples = draw_samples(a.kind, a.n, a.seed);
            write_dataset(&a.out, &samples, a.size)
                .with_context(|| format!("writing the synthetic dataset {}", a.out.display()))?;
            println!(
                "wrote {} images of {}² to {} (truth.jsonl: style and shape of each)",
                a.n,
                a.size,
                a.out.display()
            );
            Ok(())
        }
        MhvaeCommand::Train(a) => train::run(*a, rt),
        MhvaeCommand::Segment(a) => apply::segment(&a, rt),
        MhvaeCommand::Reconstruct(a) => apply::reconstruct(&a, rt),
        MhvaeCommand::TrainRefiner(a) => refiner::train(&a, rt),
        MhvaeCommand::Sample(a) => refiner::sample(&a, rt),
        MhvaeCommand::Swap(a) => apply::swap(&a, rt),
        MhvaeCommand::Edit(a) => apply::edit(&a, rt),
        MhvaeCommand::Interpolate(a) => apply::interpolate(&a, rt),
        MhvaeCommand::Inspect(a) => inspect::run(&a, rt),
        MhvaeCommand::Eval(a) => eval::run(&a, rt),
        MhvaeCommand::Warp(a) => warp::run(&a),
    }
}
