//! `cargo xtask …`: developer tooling for segdiff (not shipped to users).
//!
//! - `parity`: runs every test that compares against the large reference fixtures in
//!   `../shared/fixtures` (the `#[ignore]`d ones); fails loudly when the fixtures are missing.
//! - `weights`: fetches a model or files from the Hugging Face Hub into the standard cache.
//! - `eval`: the paper's evaluation on Hub or local models, CUDA when present.
//! - `bench`: times the denoiser, data preparation, sampler sweep and whole volumes on the CPU and
//!   writes `BENCHMARKS.md`.

mod bench;
mod data_bench;
mod eval;
mod parity;
mod weights;

use std::path::PathBuf;

use anyhow::Result;

// The allocator the `segdiff` binary ships with, so that benchmarks time what users run: with
// glibc's, page faults from returning large tensor buffers to the kernel took a third of the
// MONAI segmenter's forward.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Parity against `../shared/fixtures` (the reference outputs too large to commit).
    Parity {
        /// The fixtures folder (default: `../shared/fixtures` beside the checkout).
        #[arg(long, env = "SEGDIFF_SHARED_FIXTURES")]
        fixtures: Option<PathBuf>,
    },
    /// Download a model (or single files) from the Hugging Face Hub into the standard cache and
    /// print the local path; answers from the cache when offline.
    Weights(weights::WeightsArgs),
    /// The paper's evaluation (`segdiff eval`) with `hf://` models fetched, optional
    /// Inception-v3 FID, and CUDA when a GPU is present.
    Eval(eval::EvalArgs),
    /// CPU benchmarks of the denoiser; writes BENCHMARKS.md at the workspace root.
    Bench {
        /// Timed runs per case (after one warm-up); the median is reported.
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Skip the paper-size model (about 25 s per forward on 2 cores before optimisation).
        #[arg(long)]
        quick: bool,
        /// Where to write the report.
        #[arg(long, default_value = "BENCHMARKS.md")]
        out: PathBuf,
        /// Only re-measure data preparation and replace that section of the report.
        #[arg(long)]
        data_only: bool,
        /// Also compare with PyTorch + diffusers / MONAI, run by this Python (see bench/README.md).
        #[arg(long, value_name = "PYTHON")]
        torch: Option<PathBuf>,
        /// Only re-measure the PyTorch comparison and replace that section of the report.
        #[arg(long, requires = "torch")]
        torch_only: bool,
        /// Timed rounds of the heavy PyTorch-comparison cases (paper batch-4 forward and
        /// training step), at most `--runs`.
        #[arg(long, default_value_t = 3)]
        torch_heavy_runs: usize,
        /// Only the PyTorch-comparison cases whose name contains this text, printed instead of
        /// written to the report (to check one change quickly).
        #[arg(long, requires = "torch", value_name = "TEXT")]
        torch_case: Option<String>,
        /// Only run the sampler sweep on the bundled model (`segdiff sweep-samplers`, ~10 min on
        /// 2 cores) and replace that section of the report (and bench/sweep-mni-demo.png).
        #[arg(long)]
        sweep: bool,
        /// With --sweep: take the sweep folder DIR (sweep.md, sweep.png) instead of running it.
        #[arg(long, requires = "sweep", value_name = "DIR")]
        sweep_from: Option<PathBuf>,
        /// Only time whole volumes (`segdiff sample-volume` on the bundled 64² model, the
        /// paper's 256² UNet extrapolated from a short stack) and replace that section.
        #[arg(long)]
        volumes: bool,
        /// With --volumes: also time the 64² model on this 1 mm label volume (NIfTI).
        #[arg(long, requires = "volumes", value_name = "FILE")]
        volumes_1mm: Option<PathBuf>,
        /// Only time the MHVAE refiner's samplers (Euler–Maruyama vs DPM-Solver++ on the bundled
        /// MNI refiner) and replace that section.
        #[arg(long)]
        refiner: bool,
        /// Internal: peak RSS of loading MODEL and two forwards on INPUTS, in a fresh process.
        #[arg(long, hide = true, num_args = 2, value_names = ["MODEL", "INPUTS"])]
        peak_rss_child: Option<Vec<PathBuf>>,
    },
}

/// The workspace root (the parent of this crate's folder).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn main() -> Result<()> {
    segdiff_cli::allocator::keep_freed_memory();
    match Cli::parse().command {
        Command::Parity { fixtures } => parity::run(fixtures),
        Command::Weights(args) => weights::run(&args),
        Command::Eval(args) => eval::run(&args),
        Command::Bench {
            peak_rss_child: Some(paths),
            ..
        } => match paths.as_slice() {
            [model, inputs] => bench::torch::peak_rss_child(model, inputs),
            _ => anyhow::bail!("--peak-rss-child takes MODEL and INPUTS"),
        },
        Command::Bench {
            data_only: true,
            out,
            ..
        } => data_bench::update(&workspace_root().join(out)),
        Command::Bench {
            sweep: true,
            sweep_from,
            out,
            ..
        } => bench::sweep::update(&workspace_root().join(out), sweep_from.as_deref()),
        Command::Bench {
            refiner: true, out, ..
        } => bench::refiner::update(&workspace_root().join(out)),
        Command::Bench {
            volumes: true,
            volumes_1mm,
            out,
            ..
        } => bench::volumes::update(&workspace_root().join(out), volumes_1mm.as_deref()),
        Command::Bench {
            runs,
            quick,
            out,
            torch,
            torch_only,
            torch_heavy_runs,
            torch_case,
            ..
        } => {
            let torch_runs = bench::torch::Runs {
                runs: runs.max(1),
                heavy: torch_heavy_runs,
            };
            let out = workspace_root().join(out);
            match torch {
                Some(python) if torch_case.is_some() => bench::torch::print_cases(
                    &python,
                    torch_runs,
                    torch_case.as_deref().unwrap_or_default(),
                ),
                Some(python) if torch_only => bench::torch::update(&python, torch_runs, &out),
                python => bench::run(
                    runs,
                    quick,
                    python.as_deref().map(|p| (p, torch_runs)),
                    &out,
                ),
            }
        }
    }
}
