//! `cargo xtask weights <repo-id>[@revision][/folder] [--file F]…`: fetch a model (or single
//! files) from the Hugging Face Hub into the standard cache and print the local paths.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use segdiff_cli::hub::{Hub, HubOptions, HubRef};

/// Where and how to reach the Hub, shared by `weights` and `eval`.
#[derive(Debug, clap::Args)]
pub struct HubArgs {
    /// Cache folder (default: `HF_HUB_CACHE`, else `$HF_HOME/hub`, else
    /// `~/.cache/huggingface/hub`).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Answer from the cache only, never the network (also `HF_HUB_OFFLINE=1`).
    #[arg(long)]
    pub offline: bool,
    /// Give up on a network call after this many seconds without progress (also
    /// `SEGDIFF_HUB_TIMEOUT`).
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<f64>,
}

impl HubArgs {
    pub fn hub(&self) -> Result<Hub> {
        let mut o = HubOptions::from_env();
        o.cache_dir = self.cache_dir.clone().or(o.cache_dir);
        o.offline |= self.offline;
        if let Some(t) = self.timeout {
            anyhow::ensure!(
                t.is_finite() && t > 0.0,
                "--timeout must be a positive number of seconds, not {t}"
            );
            o.stall_timeout = Duration::from_secs_f64(t);
        }
        Ok(Hub::new(o)?)
    }
}

#[derive(Debug, clap::Args)]
pub struct WeightsArgs {
    /// `owner/name`, optionally `@revision` (branch, tag or commit) and `/folder`; `hf://` may
    /// prefix it.
    #[arg(value_name = "REPO_ID")]
    pub repo: String,
    /// Fetch only these files (paths inside the repository, below the folder); without it, the
    /// model folder's configs, safetensors weights, cards and notices.
    #[arg(long = "file", value_name = "PATH")]
    pub files: Vec<String>,
    #[command(flatten)]
    pub hub: HubArgs,
}

pub fn run(args: &WeightsArgs) -> Result<()> {
    let r: HubRef = args.repo.parse()?;
    let hub = args.hub.hub()?;
    eprintln!("cache: {}", hub.cache_dir().display());
    if args.files.is_empty() {
        let dir = hub
            .model_dir(&r)
            .with_context(|| format!("fetching {}", r.uri()))?;
        println!("{}", dir.display());
    } else {
        for f in &args.files {
            let p = hub
                .file(&r, f)
                .with_context(|| format!("fetching {f} of {}", r.uri()))?;
            println!("{}", p.display());
        }
    }
    Ok(())
}
