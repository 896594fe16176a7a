//! `cargo xtask eval`: the paper's full evaluation (`segdiff eval`) with models fetched from the
//! Hugging Face Hub, Inception-v3 FID weights fetched on request, and the GPU used when present.
//!
//! The evaluation itself is the `segdiff` binary's: this task resolves `hf://` locations (so the
//! report names the local snapshot and the download shows a progress bar before the long run
//! starts), picks the device, builds `segdiff` with the `cuda` feature when it runs on a GPU, and
//! passes everything else through.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};
use segdiff_cli::hub::HubRef;

use crate::weights::HubArgs;

/// torchvision's ImageNet Inception-v3 weights in safetensors (timm's copy, same tensor names).
pub const INCEPTION_REPO: &str = "timm/inception_v3.tv_in1k";
/// The weights file in that repository.
pub const INCEPTION_FILE: &str = "model.safetensors";

#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// Prepared dataset (`segdiff prepare` layout or the official code's).
    #[arg(long, value_name = "DIR")]
    pub dataset: PathBuf,
    /// Model folder or `hf://owner/name[@revision][/folder]`.
    #[arg(long, value_name = "DIR_OR_HF")]
    pub model: PathBuf,
    /// Trained segmenter folder or `hf://…` (default: train one on the real images).
    #[arg(long, value_name = "DIR_OR_HF")]
    pub segmenter: Option<PathBuf>,
    /// Output folder (default: `eval-<model name>` where this task was started; for a Hub model
    /// the repository's name).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// `segdiff eval --quick`: the whole pipeline on a small subset, minutes on a CPU.
    #[arg(long)]
    pub quick: bool,
    /// Also report FID on Inception-v3 features, with weights fetched from this Hub repository.
    #[arg(long, value_name = "REPO_ID", num_args = 0..=1, default_missing_value = INCEPTION_REPO)]
    pub inception: Option<String>,
    /// `auto` (CUDA when `nvidia-smi` lists a GPU, else CPU), `cpu`, or `cuda[:N]`. CUDA builds
    /// `segdiff` with `--features cuda` (needs nvcc; see the README's GPU section).
    #[arg(long, default_value = "auto")]
    pub device: String,
    #[command(flatten)]
    pub hub: HubArgs,
    /// Further `segdiff eval` flags, after `--` (for example `-- --steps 50 --seed 1`).
    #[arg(last = true)]
    pub rest: Vec<String>,
}

/// Whether `nvidia-smi -L` lists at least one GPU.
fn gpu_present() -> bool {
    Command::new("nvidia-smi")
        .arg("-L")
        .output()
        .map(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains("GPU"))
        .unwrap_or(false)
}

pub fn run(args: &EvalArgs) -> Result<()> {
    let device = match args.device.as_str() {
        "auto" if gpu_present() => "cuda".to_string(),
        "auto" => "cpu".to_string(),
        d if d == "cpu" || d == "cuda" || d.starts_with("cuda:") => d.to_string(),
        other => bail!("--device {other}: expected auto, cpu or cuda[:N]"),
    };
    let cuda = device.starts_with("cuda");
    eprintln!("device: {device}");
    let hub = args.hub.hub()?;
    let model = hub
        .resolve_location(&args.model)
        .with_context(|| format!("fetching the model {}", args.model.display()))?;
    let segmenter = args
        .segmenter
        .as_ref()
        .map(|s| {
            hub.resolve_location(s)
                .with_context(|| format!("fetching the segmenter {}", s.display()))
        })
        .transpose()?;
    let inception = match &args.inception {
        Some(repo) => {
            let r: HubRef = repo.parse()?;
            let path = hub
                .file(&r, INCEPTION_FILE)
                .with_context(|| format!("fetching Inception-v3 weights from {}", r.uri()))?;
            eprintln!("inception weights: {}", path.display());
            Some(path)
        }
        None => None,
    };

    // `cargo run` below starts in the workspace root: paths given relative to where this task
    // was started are made absolute first.
    let abs = |p: &std::path::Path| {
        std::path::absolute(p).with_context(|| format!("resolving {}", p.display()))
    };
    let (dataset, model) = (abs(&args.dataset)?, abs(&model)?);
    let segmenter = segmenter.as_deref().map(abs).transpose()?;
    // segdiff eval's default output, but where this task was started and, for a Hub model,
    // named after the repository (segdiff only sees the resolved snapshot folder).
    let out = abs(&args
        .out
        .clone()
        .unwrap_or_else(|| segdiff_cli::default_eval_out(&args.model)))?;
    let root = crate::workspace_root();
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(&root)
        .args(["run", "--release", "-p", "segdiff-cli"]);
    if cuda {
        cmd.args(["--features", "cuda"]);
    }
    cmd.args(["--", "--device", &device, "eval", "--dataset"])
        .arg(&dataset)
        .arg("--model")
        .arg(&model);
    if let Some(s) = &segmenter {
        cmd.arg("--segmenter").arg(s);
    }
    cmd.arg("--out").arg(&out);
    if args.quick {
        cmd.arg("--quick");
    }
    if let Some(p) = &inception {
        cmd.arg("--inception-weights").arg(p);
    }
    cmd.args(&args.rest);
    eprintln!("running: {cmd:?}");
    let status = cmd.status().context("starting cargo")?;
    if !status.success() {
        bail!("segdiff eval failed ({status})");
    }
    Ok(())
}
