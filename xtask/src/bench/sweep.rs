//! The sampler sweep section of BENCHMARKS.md: `segdiff sweep-samplers` on the bundled MNI model
//! (every held-out mask, steps 10/20/50, FID against the real slices), its table and plot.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::marked_section::Markers;

/// Marks the section so `cargo xtask bench --sweep` can replace it in place.
pub const MARKERS: Markers = Markers {
    start: "<!-- sweep:start -->",
    end: "<!-- sweep:end -->",
};

/// Where the plot is kept (the README shows it too), relative to the workspace root.
const PLOT: &str = "bench/sweep-mni-demo.png";

/// Runs the sweep into `target/sweep-bench` (or reads the sweep folder `from`) and replaces the
/// section of `out`; the plot is copied to `bench/sweep-mni-demo.png`.
pub fn update(out: &Path, from: Option<&Path>) -> Result<()> {
    let root = crate::workspace_root();
    let dir = match from {
        Some(d) => d.to_path_buf(),
        None => run_sweep(&root)?,
    };
    let table = std::fs::read_to_string(dir.join("sweep.md"))
        .with_context(|| format!("reading {}", dir.join("sweep.md").display()))?;
    let plot = std::fs::read(dir.join("sweep.png"))
        .with_context(|| format!("reading {}", dir.join("sweep.png").display()))?;
    segdiff_io::write_bytes_atomic(&root.join(PLOT), &plot)
        .with_context(|| format!("writing {PLOT}"))?;
    let old = std::fs::read_to_string(out).unwrap_or_default();
    let text = MARKERS.replace(&old, &section(&table));
    segdiff_io::write_bytes_atomic(out, text.as_bytes())
        .with_context(|| format!("writing {}", out.display()))?;
    println!("updated the sampler sweep section of {}", out.display());
    Ok(())
}

/// `segdiff sweep-samplers` on the bundled model, through `cargo run --release`.
fn run_sweep(root: &Path) -> Result<PathBuf> {
    let dir = root.join("target").join("sweep-bench");
    let demo = root.join("assets").join("mni-demo");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(root)
        .args([
            "run",
            "--release",
            "-p",
            "segdiff-cli",
            "--",
            "sweep-samplers",
        ])
        .arg("--model")
        .arg(demo.join("model"))
        .arg("--masks")
        .arg(demo.join("data/mask/all/test"))
        .arg("--real")
        .arg(demo.join("data/img/test"))
        .args(["--steps", "10,20,50", "--out"])
        .arg(&dir)
        .status()
        .context("running cargo")?;
    if !status.success() {
        bail!("segdiff sweep-samplers failed ({status})");
    }
    Ok(dir)
}

/// The section: how it was made, the sweep's own table (without its title) and the plot.
fn section(table: &str) -> String {
    let body = table
        .trim_start()
        .strip_prefix("# Sampler sweep")
        .unwrap_or(table)
        .trim();
    format!(
        "\n{start}\n## Sampler sweep on the bundled model\n\n\
         Written by `cargo xtask bench --sweep` (`segdiff sweep-samplers --model \
         assets/mni-demo/model --masks assets/mni-demo/data/mask/all/test --real \
         assets/mni-demo/data/img/test --steps 10,20,50`; `--sweep-from DIR` takes a sweep run \
         elsewhere). Seconds per image come from a shared 2-core machine and are only a rough \
         guide; network calls are counted.\n\n{body}\n\n![Mean Dice against network calls]({PLOT})\n{end}\n",
        start = MARKERS.start,
        end = MARKERS.end,
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_section_keeps_the_table_and_drops_its_title() {
        let s = super::section("# Sampler sweep\n\n| a |\n|---|\n| 1 |\n");
        assert!(s.contains("## Sampler sweep on the bundled model"));
        assert!(s.contains("| a |\n|---|\n| 1 |"));
        assert!(!s.contains("# Sampler sweep\n"));
        assert!(s.trim().starts_with(super::MARKERS.start));
        assert!(s.trim().ends_with(super::MARKERS.end));
    }
}
