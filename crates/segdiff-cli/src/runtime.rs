//! Where and how tensors run: `--device`, `--threads`, `--dtype`.

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};

/// Options shared by every subcommand.
#[derive(Debug, clap::Args)]
pub struct RuntimeArgs {
    /// Where to run: `cpu`, or `cuda` / `cuda:N` (needs a build with `--features cuda`).
    #[arg(long, global = true, default_value = "cpu", env = "SEGDIFF_DEVICE")]
    pub device: String,
    /// CPU threads for tensor work (default: all cores).
    #[arg(long, global = true, env = "SEGDIFF_THREADS")]
    pub threads: Option<usize>,
    /// Floating-point type of the model weights and activations: f32, bf16 or f16 (half
    /// precision needs CUDA for most operations).
    #[arg(long, global = true, default_value = "f32")]
    pub dtype: String,
    /// Read this subcommand's options from a TOML file (a `[train]`, `[sample]`, … table whose
    /// keys are the long flags); flags on the command line win.
    #[arg(long, global = true, value_name = "FILE")]
    pub options: Option<std::path::PathBuf>,
    /// Built-in settings of the paper's datasets: `breast-mri`, `ct-organ`, or `amos`.
    #[arg(long, global = true, value_name = "NAME")]
    pub preset: Option<String>,
}

/// The resolved runtime.
#[derive(Debug, Clone)]
pub struct Runtime {
    pub device: Device,
    pub dtype: DType,
}

impl Runtime {
    /// Validates the flags and configures the thread pool.
    pub fn from_args(args: &RuntimeArgs) -> Result<Self> {
        if let Some(n) = args.threads {
            if n == 0 {
                bail!("--threads must be at least 1");
            }
            // candle's CPU kernels and our own parallel loops both use rayon's global pool.
            rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build_global()
                .context("--threads: the thread pool was already started")?;
        }
        Ok(Self {
            device: parse_device(&args.device)?,
            dtype: parse_dtype(&args.dtype)?,
        })
    }
}

/// `cpu`, `cuda` or `cuda:N`.
pub fn parse_device(s: &str) -> Result<Device> {
    let s = s.trim().to_ascii_lowercase();
    if s == "cpu" {
        return Ok(Device::Cpu);
    }
    let ordinal = match s.strip_prefix("cuda") {
        Some("") => 0,
        Some(rest) => rest
            .strip_prefix(':')
            .and_then(|n| n.parse::<usize>().ok())
            .with_context(|| format!("--device {s}: expected cuda or cuda:N"))?,
        None => bail!("--device {s}: expected cpu, cuda or cuda:N"),
    };
    if !cfg!(feature = "cuda") {
        bail!("--device {s}: this segdiff was built without CUDA; rebuild with `--features cuda`");
    }
    Device::new_cuda(ordinal).with_context(|| format!("--device {s}: cannot open the GPU"))
}

/// `f32`, `bf16` or `f16`.
pub fn parse_dtype(s: &str) -> Result<DType> {
    match s.trim().to_ascii_lowercase().as_str() {
        "f32" | "float32" => Ok(DType::F32),
        "bf16" | "bfloat16" => Ok(DType::BF16),
        "f16" | "float16" | "half" => Ok(DType::F16),
        other => bail!("--dtype {other}: expected f32, bf16 or f16"),
    }
}
