//! `segdiff-unet`: the denoising network of segmentation-guided diffusion, a diffusers-exact
//! `UNet2DModel` in candle.
//!
//! It builds the model from a diffusers `config.json` ([`UNet2DConfig`]), loads and saves
//! diffusers model directories ([`load_unet`], [`save_unet`]; safetensors or PyTorch `.bin`,
//! legacy attention names accepted), and runs the forward pass ([`UNet2DModel::forward`]) with
//! the same numbers as diffusers. It is not a scheduler, sampler or trainer: those live in
//! `segdiff-diffusion`, which drives this model.

mod atomic;
mod attention;
mod blocks;
mod config;
pub mod cpu_kernels;
mod embeddings;
mod layers;
mod resnet;
mod trace;
mod unet2d;
mod weight_check;
mod weights;

pub use atomic::{temp_sibling, write_atomic};
pub use config::UNet2DConfig;
pub use embeddings::timestep_features;
pub use trace::Trace;
pub use unet2d::UNet2DModel;
pub use weight_check::{build_checked, MisShaped, WeightReport};
pub use weights::{
    expected_parameters, load_unet, model_from_tensors, modern_key, parameter_count,
    read_weight_file, resolve_unet_dir, save_unet, LoadedUnet, WeightFormat, BIN_NAME, CONFIG_NAME,
    SAFETENSORS_NAME,
};

use std::path::PathBuf;

/// Everything that can go wrong building, loading or saving a UNet.
#[derive(Debug, thiserror::Error)]
pub enum UnetError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not a valid config.json: {source}", path.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "config".into()))]
    ConfigParse {
        path: Option<PathBuf>,
        source: serde_json::Error,
    },
    #[error("unsupported config value {field} = {value}: {why}")]
    UnsupportedConfig {
        field: String,
        value: String,
        why: String,
    },
    #[error(
        "{dir}: not a diffusers model directory (no config.json in it or in its unet/ folder)"
    )]
    NotAModelDir { dir: PathBuf },
    #[error("{dir}: no diffusion_pytorch_model.safetensors or diffusion_pytorch_model.bin")]
    MissingWeights { dir: PathBuf },
    #[error("{path}: cannot read weights: {source}")]
    WeightsRead {
        path: PathBuf,
        source: candle_core::Error,
    },
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
