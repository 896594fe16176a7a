//! `segdiff-unet`: the denoising network of segmentation-guided diffusion, a diffusers-exact
//! `UNet2DModel` in candle.
//!
//! It builds the model from a diffusers `config.json` ([`UNet2DConfig`]), loads and saves
//! diffusers model directories ([`load_unet`], [`save_unet`]; safetensors or PyTorch `.bin`,
//! legacy attention names accepted), and runs the forward pass ([`UNet2DModel::forward`]) with
//! the same numbers as diffusers. It is not a scheduler, sampler or trainer: those live in
//! `segdiff-diffusion`, which drives this model.

mod attention;
mod blocks;
mod config;
pub mod cpu_kernels;
mod embeddings;
pub mod layers;
mod resnet;
mod trace;
mod unet2d;
mod weight_check;
mod weights;

pub use config::{DownBlockType, UNet2DConfig, UpBlockType};
pub use embeddings::timestep_features;
pub use trace::Trace;
pub use unet2d::UNet2DModel;
pub use weight_check::{build_checked, MisShaped, WeightReport};
pub use weights::{
    expected_parameters, load_unet, model_from_tensors, modern_key, parameter_count,
    read_weight_file, resolve_unet_dir, save_unet, write_safetensors, LoadedUnet, WeightFormat,
    BIN_NAME, CONFIG_NAME, SAFETENSORS_NAME,
};

use std::path::PathBuf;

/// Everything that can go wrong building, loading or saving a UNet. Variants wrapping an
/// underlying error name the file and expose the cause as `source()`, not in the message: print
/// the chain (anyhow's `{:#}`) to see both.
#[derive(Debug, thiserror::Error)]
pub enum UnetError {
    /// Reading or writing a file or folder failed.
    #[error("{path}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A `config.json` (from a file when `path` is set) is not valid JSON for [`UNet2DConfig`].
    #[error("{}: not a valid config.json", path.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "config".into()))]
    ConfigParse {
        path: Option<PathBuf>,
        source: serde_json::Error,
    },
    /// A config value diffusers accepts but this implementation does not.
    #[error("unsupported config value {field} = {value}: {why}")]
    UnsupportedConfig {
        field: String,
        value: String,
        why: String,
    },
    /// A folder with no `config.json` in it or in its `unet/` folder.
    #[error(
        "{dir}: not a diffusers model directory (no config.json in it or in its unet/ folder)"
    )]
    NotAModelDir { dir: PathBuf },
    /// A model folder without a weight file.
    #[error("{dir}: no diffusion_pytorch_model.safetensors or diffusion_pytorch_model.bin")]
    MissingWeights { dir: PathBuf },
    /// A weight file that cannot be read (or holds no tensor).
    #[error("{path}: cannot read weights")]
    WeightsRead {
        path: PathBuf,
        source: candle_core::Error,
    },
    /// Weights whose tensor names or shapes do not match the config; every problem is listed.
    #[error(
        "{path}: the weights do not match the config:{}",
        describe_mismatch(missing, unexpected, shape)
    )]
    WeightMismatch {
        path: PathBuf,
        missing: Vec<String>,
        unexpected: Vec<String>,
        shape: Vec<(String, Vec<usize>, Vec<usize>)>,
    },
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

fn describe_mismatch(
    missing: &[String],
    unexpected: &[String],
    shape: &[(String, Vec<usize>, Vec<usize>)],
) -> String {
    const SHOW: usize = 20;
    let list = |v: &[String]| {
        let mut s = v.iter().take(SHOW).cloned().collect::<Vec<_>>().join(", ");
        if v.len() > SHOW {
            s.push_str(&format!(", … ({} more)", v.len() - SHOW));
        }
        s
    };
    let mut out = String::new();
    if !missing.is_empty() {
        out.push_str(&format!("\n  {} missing: {}", missing.len(), list(missing)));
    }
    if !unexpected.is_empty() {
        out.push_str(&format!(
            "\n  {} unexpected: {}",
            unexpected.len(),
            list(unexpected)
        ));
    }
    if !shape.is_empty() {
        let s: Vec<String> = shape
            .iter()
            .take(SHOW)
            .map(|(n, want, got)| format!("{n} (expected {want:?}, found {got:?})"))
            .collect();
        out.push_str(&format!(
            "\n  {} with another shape: {}",
            shape.len(),
            s.join(", ")
        ));
    }
    out
}
