//! Runs the `#[ignore]`d parity tests with `SEGDIFF_SHARED_FIXTURES` pointing at the fixtures.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The one ignored test whose reference is not in `../shared/fixtures`: torchvision's
/// Inception-v3 on random weights, written by `bench/oracle/inception_oracle.py --full DIR`
/// (needs torch) and found through `SEGDIFF_INCEPTION_FIXTURE`.
const INCEPTION_TEST: &str = "random_weight_network_matches_torchvision_features";

/// Files whose absence means the fixtures folder is not the shared one.
const REQUIRED: [&str; 3] = [
    "README.md",
    "unet_small_weights.safetensors",
    "unet_small_io.safetensors",
];

pub fn run(fixtures: Option<PathBuf>) -> Result<()> {
    let root = crate::workspace_root();
    let dir = fixtures.unwrap_or_else(|| root.join("../shared/fixtures"));
    let dir = dir.canonicalize().with_context(|| {
        format!(
            "parity needs the shared fixtures, not found at {}",
            dir.display()
        )
    })?;
    for f in REQUIRED {
        if !dir.join(f).is_file() {
            bail!("parity needs {}, which is missing", dir.join(f).display());
        }
    }
    println!("parity: fixtures in {}", dir.display());
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .env("SEGDIFF_SHARED_FIXTURES", &dir)
        .args([
            "test",
            "--release",
            "--workspace",
            "--",
            "--ignored",
            "--nocapture",
        ]);
    let inception = std::env::var_os("SEGDIFF_INCEPTION_FIXTURE");
    if inception.is_none() {
        cmd.args(["--skip", INCEPTION_TEST]);
    }
    let status = cmd.status().context("running cargo test")?;
    if !status.success() {
        bail!("parity against {} failed", dir.display());
    }
    println!("parity: all fixture checks passed");
    if inception.is_none() {
        println!(
            "parity: NOT RUN: {INCEPTION_TEST} (its reference needs torch: \
             `python bench/oracle/inception_oracle.py --full DIR`, then SEGDIFF_INCEPTION_FIXTURE=DIR)"
        );
    }
    Ok(())
}
