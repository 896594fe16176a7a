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
    /// Floating-point type of the denoiser's weights and activations: `auto` (f32 on the CPU;
    /// on CUDA, bf16 for sampling and evaluation, as the official code's autocast does), f32,
    /// bf16 or f16. Training always runs in f32; candle's CPU backend has no bf16 matmul.
    #[arg(long, global = true, default_value = "auto")]
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
    /// The explicit `--dtype`, or f32 for `auto`.
    pub dtype: DType,
    /// `--dtype auto` was in force.
    pub dtype_auto: bool,
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
        let dtype = parse_dtype(&args.dtype)?;
        Ok(Self {
            device: parse_device(&args.device)?,
            dtype: dtype.unwrap_or(DType::F32),
            dtype_auto: dtype.is_none(),
        })
    }

    /// The denoiser's dtype for generation: the explicit `--dtype`, else bf16 on CUDA and f32
    /// on the CPU.
    pub fn sampling_dtype(&self) -> DType {
        if self.dtype_auto && self.device.is_cuda() {
            DType::BF16
        } else {
            self.dtype
        }
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

/// `auto` (`None`), `f32`, `bf16` or `f16`.
pub fn parse_dtype(s: &str) -> Result<Option<DType>> {
    match s.trim().to_ascii_lowercase().as_str() {
        "auto" => Ok(None),
        "f32" | "float32" => Ok(Some(DType::F32)),
        "bf16" | "bfloat16" => Ok(Some(DType::BF16)),
        "f16" | "float16" | "half" => Ok(Some(DType::F16)),
        other => bail!("--dtype {other}: expected auto, f32, bf16 or f16"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_dtype_is_f32_on_the_cpu() {
        assert_eq!(parse_dtype("auto").unwrap(), None);
        assert_eq!(parse_dtype("BF16").unwrap(), Some(DType::BF16));
        assert!(parse_dtype("f64")
            .unwrap_err()
            .to_string()
            .contains("auto, f32"));
        let rt = Runtime {
            device: Device::Cpu,
            dtype: DType::F32,
            dtype_auto: true,
        };
        assert_eq!(rt.sampling_dtype(), DType::F32);
        let rt = Runtime {
            dtype: DType::F16,
            dtype_auto: false,
            ..rt
        };
        assert_eq!(rt.sampling_dtype(), DType::F16);
    }
}
