//! `cargo xtask …`: developer tooling for segdiff (not shipped to users).
//!
//! - `parity`: runs every test that compares against the large reference fixtures in
//!   `../shared/fixtures` (the `#[ignore]`d ones); fails loudly when the fixtures are missing.
//! - `bench`: times the denoiser and data preparation on the CPU and writes `BENCHMARKS.md`.

mod bench;
mod data_bench;
mod parity;

use std::path::PathBuf;

use anyhow::Result;
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
    match Cli::parse().command {
        Command::Parity { fixtures } => parity::run(fixtures),
        Command::Bench {
            data_only: true,
            out,
            ..
        } => data_bench::update(&workspace_root().join(out)),
        Command::Bench {
            runs, quick, out, ..
        } => bench::run(runs, quick, &workspace_root().join(out)),
    }
}
