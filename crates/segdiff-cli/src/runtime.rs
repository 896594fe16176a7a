//! Where and how tensors run: `--device`, `--threads`, `--dtype`.

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};

use crate::flag_values::{flag, parse_device, DeviceFlag, DtypeFlag};

/// Options shared by every subcommand.
#[derive(Debug, clap::Args)]
pub struct RuntimeArgs {
    /// Where to run: `cpu`, or `cuda` / `cuda:N` (needs a build with `--features cuda`).
    #[arg(long, global = true, default_value = "cpu", env = "SEGDIFF_DEVICE", value_parser = parse_device)]
    pub device: DeviceFlag,
    /// CPU threads for tensor work (default: all cores).
    #[arg(long, global = true, env = "SEGDIFF_THREADS")]
    pub threads: Option<usize>,
    /// Floating-point type of the denoiser's weights and activations: `auto` (f32 on the CPU;
    /// on CUDA, bf16 for sampling and evaluation, as the official code's autocast does), f32,
    /// bf16 or f16. Training always runs in f32; candle's CPU backend has no bf16 matmul.
    #[arg(long, global = true, default_value = "auto", value_parser = flag::<DtypeFlag>())]
    pub dtype: DtypeFlag,
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
        let dtype = match args.dtype {
            DtypeFlag::Auto => None,
            DtypeFlag::F32 => Some(DType::F32),
            DtypeFlag::Bf16 => Some(DType::BF16),
            DtypeFlag::F16 => Some(DType::F16),
        };
        Ok(Self {
            device: open_device(args.device)?,
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

/// Opens the device `--device` names.
pub fn open_device(device: DeviceFlag) -> Result<Device> {
    let ordinal = match device {
        DeviceFlag::Cpu => return Ok(Device::Cpu),
        DeviceFlag::Cuda(n) => n,
    };
    if !cfg!(feature = "cuda") {
        bail!("--device cuda:{ordinal}: this segdiff was built without CUDA; rebuild with `--features cuda`");
    }
    Device::new_cuda(ordinal)
        .with_context(|| format!("--device cuda:{ordinal}: cannot open the GPU"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_dtype_is_f32_on_the_cpu() {
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
