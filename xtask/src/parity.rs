//! Runs the `#[ignore]`d parity tests with `SEGDIFF_SHARED_FIXTURES` pointing at the fixtures.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};

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
    let status = Command::new(cargo)
        .current_dir(&root)
        .env("SEGDIFF_SHARED_FIXTURES", &dir)
        .args([
            "test",
            "--release",
            "--workspace",
            "--",
            "--ignored",
            "--nocapture",
        ])
        .status()
        .context("running cargo test")?;
    if !status.success() {
        bail!("parity against {} failed", dir.display());
    }
    println!("parity: all fixture checks passed");
    Ok(())
}
