//! `segdiff`: segmentation-guided diffusion for medical images, from the command line.
//!
//! This crate only parses arguments, wires the library crates together and reports; the science
//! lives in `segdiff-unet`, `segdiff-diffusion`, `segdiff-data` and `segdiff-eval`.
//!
//! Exit codes: 0 success, 1 the command failed (the message names the file or value at fault),
//! 2 the command line itself was wrong.

mod loss_plot;
mod metrics_cmd;
mod model_cmd;
mod options_file;
mod pictures;
mod png_io;
mod progress;
mod runtime;
mod sample_cmd;
mod train_cmd;

use clap::{Parser, Subcommand};

/// Segmentation-guided diffusion (Konz et al., MICCAI 2024) for anatomically controllable
/// medical image generation.
#[derive(Debug, Parser)]
#[command(name = "segdiff", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    runtime: runtime::RuntimeArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Inspect, run and convert denoiser checkpoints (diffusers `UNet2DModel` directories).
    #[command(subcommand)]
    Model(model_cmd::ModelCommand),
    /// Train a segmentation-guided (or unconditional) diffusion model on a prepared dataset.
    Train(train_cmd::TrainArgs),
    /// Generate images from segmentation masks (or unconditionally) with a trained model.
    Sample(sample_cmd::SampleArgs),
    /// Dice, HD95, PSNR/SSIM and FID between folders of images or masks.
    #[command(subcommand)]
    Metrics(metrics_cmd::MetricsCommand),
}

fn main() -> std::process::ExitCode {
    let args = match options_file::expand(std::env::args_os().collect()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    let cli = Cli::parse_from(args);
    let result = runtime::Runtime::from_args(&cli.runtime).and_then(|rt| match cli.command {
        Command::Model(cmd) => model_cmd::run(cmd, &rt),
        Command::Train(args) => train_cmd::run(args, &rt),
        Command::Sample(args) => sample_cmd::run(args, &rt),
        Command::Metrics(cmd) => metrics_cmd::run(cmd, &rt),
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
