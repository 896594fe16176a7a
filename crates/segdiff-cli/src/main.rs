//! `segdiff`: segmentation-guided diffusion for medical images, from the command line.
//!
//! This crate only parses arguments, wires the library crates together and reports; the science
//! lives in `segdiff-unet`, `segdiff-diffusion`, `segdiff-data` and `segdiff-eval`.
//!
//! Exit codes: 0 success, 1 the command failed (the message names the file or value at fault),
//! 2 the command line itself was wrong.

mod data_cmd;
mod demo_cmd;
mod demo_mhvae;
mod eval_cmd;
mod flag_values;
mod metrics_cmd;
mod mhvae_cmd;
mod model_cmd;
use segdiff_cli::options_file;
mod png_io;
mod prepare_cmd;
mod progress;
mod run_args;
mod runtime;
mod sample_cmd;
mod sample_volume_cmd;
mod segmenter_cmd;
mod sweep_cmd;
mod train_cmd;

use clap::{Parser, Subcommand};

// Tensor code allocates and frees large buffers at a high rate; glibc's allocator returns them to
// the kernel each time (mmap/munmap + page faults: over a third of the demo's time went there).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// The tour on the bundled brain model: generation from held-out masks, ablated and empty
    /// masks, latent interpolation, segmentation and Dice; writes demo/report.html.
    Demo(demo_cmd::DemoArgs),
    /// Turn DICOM/NIfTI volumes and label maps into a paired 2-D PNG dataset.
    Prepare(prepare_cmd::PrepareArgs),
    /// Check a prepared dataset: every problem at once (unreadable files, colour masks, size
    /// mismatches, ids out of range, orphans, mixed formats) and a summary of what it holds.
    #[command(subcommand)]
    Data(data_cmd::DataCommand),
    /// Train a segmentation-guided (or unconditional) diffusion model on a prepared dataset.
    Train(train_cmd::TrainArgs),
    /// Generate images from segmentation masks (or unconditionally) with a trained model.
    Sample(sample_cmd::SampleArgs),
    /// A whole image volume from a 3-D label volume (NIfTI or DICOM SEG), slice by slice, written
    /// on the label volume's own grid (NIfTI or a new DICOM series) with a three-plane picture.
    SampleVolume(sample_volume_cmd::SampleVolumeArgs),
    /// Which sampler and how many steps for a model: every sampler × step count, scored by
    /// network calls, seconds and Dice per image (FID with --real), Pareto-best points marked;
    /// writes sweep.md/json/png. DDPM (1000 calls per image) only with --with-ddpm.
    SweepSamplers(sweep_cmd::SweepArgs),
    /// Dice, HD95, PSNR/SSIM and FID between folders of images or masks.
    #[command(subcommand)]
    Metrics(metrics_cmd::MetricsCommand),
    /// Evaluate a trained model as the paper does: mask faithfulness (Table 2), segmenters
    /// trained on generated images (Table 1), FID, PSNR/SSIM and HD95.
    Eval(eval_cmd::EvalArgs),
    /// Train the MONAI UNet segmenter used for evaluation, or segment images with one.
    #[command(subcommand)]
    Segmenter(segmenter_cmd::SegmenterCommand),
    /// The multi-headed VAE (segmentation by warping a reference shape; style and position you
    /// can swap and edit): its warp ops.
    #[command(subcommand)]
    Mhvae(mhvae_cmd::MhvaeCommand),
}

fn main() -> std::process::ExitCode {
    segdiff_cli::allocator::keep_freed_memory();
    let args = match options_file::expand(std::env::args_os().collect()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    let mut cli = Cli::parse_from(args);
    let result = resolve_hub_locations(&mut cli.command)
        .and_then(|()| runtime::Runtime::from_args(&cli.runtime))
        .and_then(|rt| match cli.command {
            Command::Model(cmd) => model_cmd::run(cmd, &rt),
            Command::Demo(args) => demo_cmd::run(args, &rt),
            Command::Prepare(args) => prepare_cmd::run(args, command_line()),
            Command::Data(cmd) => data_cmd::run(cmd),
            Command::Train(args) => train_cmd::run(args, &rt),
            Command::Sample(args) => sample_cmd::run(args, &rt),
            Command::SampleVolume(args) => sample_volume_cmd::run(args, &rt),
            Command::SweepSamplers(args) => sweep_cmd::run(args, &rt),
            Command::Metrics(cmd) => metrics_cmd::run(cmd, &rt),
            Command::Eval(args) => eval_cmd::run(args, &rt),
            Command::Segmenter(cmd) => segmenter_cmd::run(cmd, &rt),
            Command::Mhvae(cmd) => mhvae_cmd::run(cmd, &rt),
        });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}

/// Replaces every `hf://owner/name[@revision][/folder]` model or segmenter location by its folder
/// in the Hugging Face cache, fetching it first when it is not there (and the Hub is reachable).
fn resolve_hub_locations(command: &mut Command) -> anyhow::Result<()> {
    use anyhow::Context;
    use segdiff_cli::hub::HubRef;
    let fix = |p: &mut std::path::PathBuf| -> anyhow::Result<()> {
        *p = segdiff_cli::hub::resolve_model_location(p)
            .with_context(|| format!("resolving {}", p.display()))?;
        Ok(())
    };
    match command {
        Command::Model(model_cmd::ModelCommand::Inspect { dir }) => fix(dir),
        Command::Model(model_cmd::ModelCommand::Forward { model, .. }) => fix(model),
        Command::Model(model_cmd::ModelCommand::Convert(_)) => Ok(()),
        Command::Demo(a) => fix(&mut a.model).and_then(|()| fix(&mut a.segmenter)),
        Command::Sample(a) => fix(&mut a.model),
        Command::SampleVolume(a) => fix(&mut a.model),
        Command::SweepSamplers(a) => {
            fix(&mut a.model)?;
            a.segmenter.as_mut().map_or(Ok(()), fix)
        }
        Command::Eval(a) => {
            // The default output is named after the model folder: for a Hub model, after the
            // repository rather than the snapshot's commit hash.
            if a.out.is_none() && HubRef::from_location(&a.model).is_some() {
                a.out = Some(segdiff_cli::default_eval_out(&a.model));
            }
            fix(&mut a.model)?;
            a.segmenter.as_mut().map_or(Ok(()), fix)
        }
        Command::Metrics(metrics_cmd::MetricsCommand::Fid(a)) => {
            a.encoder.as_mut().map_or(Ok(()), fix)
        }
        Command::Segmenter(segmenter_cmd::SegmenterCommand::Predict(a)) => fix(&mut a.segmenter),
        Command::Train(a) => a.segmenter.as_mut().map_or(Ok(()), fix),
        Command::Mhvae(mhvae_cmd::MhvaeCommand::Train(a)) => {
            a.backbone_weights.as_mut().map_or(Ok(()), fix)
        }
        Command::Metrics(_)
        | Command::Prepare(_)
        | Command::Data(_)
        | Command::Segmenter(_)
        | Command::Mhvae(_) => Ok(()),
    }
}

/// The command line as typed, for the records datasets and reports keep.
fn command_line() -> String {
    std::env::args().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every key of every built-in preset is a real flag of its subcommand.
    #[test]
    fn presets_parse_for_their_subcommands() {
        let required: [(&str, &[&str]); 3] = [
            (
                "prepare",
                &["--image", "v.nii", "--num-classes", "2", "--out", "o"],
            ),
            ("train", &["--data", "d", "--out", "o"]),
            ("sample", &["--model", "m", "--out", "o"]),
        ];
        for (preset, _) in options_file::PRESETS {
            for (sub, req) in required {
                let mut argv = vec![
                    "segdiff".to_string(),
                    sub.to_string(),
                    "--preset".into(),
                    preset.into(),
                ];
                argv.extend(req.iter().map(|s| s.to_string()));
                let expanded = options_file::expand(argv.iter().map(Into::into).collect()).unwrap();
                if let Err(e) = Cli::try_parse_from(expanded) {
                    panic!("preset {preset}, {sub}: {e}");
                }
            }
        }
    }
}
