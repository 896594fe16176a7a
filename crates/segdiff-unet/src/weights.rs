//! Reading and writing diffusers model directories: `config.json` plus
//! `diffusion_pytorch_model.safetensors` (or the PyTorch pickle `.bin`), with a full report of
//! missing, unexpected and mis-shaped tensors.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use crate::weight_check::build_checked;
use crate::{UNet2DConfig, UNet2DModel, UnetError};
use segdiff_io::write_atomic;

/// File name of the weights in the safetensors format.
pub const SAFETENSORS_NAME: &str = "diffusion_pytorch_model.safetensors";
/// File name of the weights as a PyTorch pickle.
pub const BIN_NAME: &str = "diffusion_pytorch_model.bin";
/// File name of the model configuration.
pub const CONFIG_NAME: &str = "config.json";

/// How the weights were stored on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightFormat {
    /// `diffusion_pytorch_model.safetensors`
    Safetensors,
    /// `diffusion_pytorch_model.bin` (PyTorch zip pickle)
    PytorchBin,
}

impl std::fmt::Display for WeightFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Safetensors => "safetensors",
            Self::PytorchBin => "PyTorch pickle (.bin)",
        })
    }
}

/// A model read from disk together with what was found there.
#[derive(Debug, Clone)]
pub struct LoadedUnet {
    pub model: UNet2DModel,
    pub config: UNet2DConfig,
    /// The folder holding `config.json` (the `unet/` sub-folder when there is one).
    pub unet_dir: PathBuf,
    pub weights_path: PathBuf,
    pub format: WeightFormat,
    /// Data type of the tensors in the file (before any cast).
    pub stored_dtype: DType,
    /// The state dict (diffusers names, converted to the requested dtype).
    pub tensors: HashMap<String, Tensor>,
}

/// The folder that holds the UNet of a diffusers model directory: `<dir>/unet` when it has a
/// `config.json`, else `<dir>` itself.
pub fn resolve_unet_dir(dir: &Path) -> Result<PathBuf, UnetError> {
    let sub = dir.join("unet");
    if sub.join(CONFIG_NAME).is_file() {
        return Ok(sub);
    }
    if dir.join(CONFIG_NAME).is_file() {
        return Ok(dir.to_path_buf());
    }
    Err(UnetError::NotAModelDir {
        dir: dir.to_path_buf(),
    })
}

/// Maps legacy attention names (`query`, `key`, `value`, `proj_attn`) to the current ones.
pub fn modern_key(name: &str) -> String {
    let parts: Vec<&str> = name.split('.').collect();
    let Some(pos) = parts.iter().position(|p| *p == "attentions") else {
        return name.to_string();
    };
    let mut out: Vec<&str> = Vec::with_capacity(parts.len() + 1);
    for (i, p) in parts.iter().enumerate() {
        if i == pos + 2 {
            match *p {
                "query" => out.push("to_q"),
                "key" => out.push("to_k"),
                "value" => out.push("to_v"),
                "proj_attn" => {
                    out.push("to_out");
                    out.push("0");
                }
                other => out.push(other),
            }
        } else {
            out.push(p);
        }
    }
    out.join(".")
}

/// Reads every tensor of a weight file, legacy names converted.
pub fn read_weight_file(path: &Path) -> Result<(HashMap<String, Tensor>, WeightFormat), UnetError> {
    let read_err = |e: candle_core::Error| UnetError::WeightsRead {
        path: path.to_path_buf(),
        source: e,
    };
    let is_bin = path
        .extension()
        .is_some_and(|e| e == "bin" || e == "pt" || e == "pth");
    // The parsers run behind a panic guard: a damaged file is an error naming it, never a crash.
    let guarded = |r: std::result::Result<candle_core::Result<HashMap<String, Tensor>>, String>| {
        r.unwrap_or_else(|panic| {
            Err(candle_core::Error::Msg(segdiff_io::panic_detail(
                "the weight-file parser",
                &panic,
            )))
        })
        .map_err(read_err)
    };
    let (raw, format) = if is_bin {
        let v = guarded(segdiff_io::catch_panic(|| {
            candle_core::pickle::read_all(path).map(|v| v.into_iter().collect())
        }))?;
        (v, WeightFormat::PytorchBin)
    } else {
        let m = guarded(segdiff_io::catch_panic(|| {
            candle_core::safetensors::load(path, &Device::Cpu)
        }))?;
        (m, WeightFormat::Safetensors)
    };
    if raw.is_empty() {
        return Err(UnetError::WeightsRead {
            path: path.to_path_buf(),
            source: candle_core::Error::Msg("the file holds no tensors".into()),
        });
    }
    let mut out = HashMap::with_capacity(raw.len());
    for (k, v) in raw {
        out.insert(modern_key(&k), v);
    }
    Ok((out, format))
}

/// Loads a diffusers model directory (`<dir>/unet/` or the `unet` folder itself) in `dtype`.
pub fn load_unet(dir: &Path, dtype: DType, device: &Device) -> Result<LoadedUnet, UnetError> {
    let unet_dir = resolve_unet_dir(dir)?;
    let config = UNet2DConfig::from_file(&unet_dir.join(CONFIG_NAME))?;
    let st = unet_dir.join(SAFETENSORS_NAME);
    let bin = unet_dir.join(BIN_NAME);
    let weights_path = if st.is_file() {
        st
    } else if bin.is_file() {
        bin
    } else {
        return Err(UnetError::MissingWeights { dir: unet_dir });
    };
    let (tensors, format) = read_weight_file(&weights_path)?;
    let stored_dtype = tensors
        .values()
        .next()
        .map(|t| t.dtype())
        .unwrap_or(DType::F32);
    let (model, tensors) = model_from_tensors(&config, tensors, dtype, device, &weights_path)?;
    Ok(LoadedUnet {
        model,
        config,
        unet_dir,
        weights_path,
        format,
        stored_dtype,
        tensors,
    })
}

/// Builds a model from a state dict, checking that names and shapes match the config exactly.
/// `source` names the file in error messages. Returns the tensors converted to `dtype`.
pub fn model_from_tensors(
    config: &UNet2DConfig,
    tensors: HashMap<String, Tensor>,
    dtype: DType,
    device: &Device,
    source: &Path,
) -> Result<(UNet2DModel, HashMap<String, Tensor>), UnetError> {
    config.validate()?;
    let (model, report, tensors) =
        build_checked(tensors, dtype, device, |vb| UNet2DModel::new(config, vb))?;
    if !report.is_clean() {
        return Err(UnetError::WeightMismatch {
            path: source.to_path_buf(),
            missing: report.missing,
            unexpected: report.unexpected,
            shape: report.mis_shaped,
        });
    }
    let mut converted = HashMap::with_capacity(tensors.len());
    for (k, v) in &tensors {
        converted.insert(k.clone(), v.to_dtype(dtype)?.to_device(device)?);
    }
    Ok((model, converted))
}

/// The parameter names and shapes a config asks for, in construction order (no weights are
/// allocated).
pub fn expected_parameters(config: &UNet2DConfig) -> Result<Vec<(String, Vec<usize>)>, UnetError> {
    config.validate()?;
    let (_, report, _) = build_checked(HashMap::new(), DType::F32, &Device::Cpu, |vb| {
        UNet2DModel::new(config, vb)
    })?;
    Ok(report.requested)
}

/// Total number of parameters of a config.
pub fn parameter_count(config: &UNet2DConfig) -> Result<u64, UnetError> {
    Ok(expected_parameters(config)?
        .iter()
        .map(|(_, s)| s.iter().product::<usize>() as u64)
        .sum())
}

/// Writes `config.json` and `diffusion_pytorch_model.safetensors` into `unet_dir` (created if
/// needed), each atomically, with diffusers' key names, so `UNet2DModel.from_pretrained` reads it.
pub fn save_unet(
    unet_dir: &Path,
    config: &UNet2DConfig,
    tensors: &HashMap<String, Tensor>,
) -> Result<(), UnetError> {
    std::fs::create_dir_all(unet_dir).map_err(|e| UnetError::Io {
        path: unet_dir.to_path_buf(),
        source: e,
    })?;
    let weights = unet_dir.join(SAFETENSORS_NAME);
    let mut contiguous = HashMap::with_capacity(tensors.len());
    for (k, v) in tensors {
        contiguous.insert(k.clone(), v.contiguous()?);
    }
    // diffusers (like transformers) tags PyTorch-written files with `format: pt`.
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    let mut entries: Vec<(&String, &Tensor)> = contiguous.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    write_safetensors(&weights, entries, Some(metadata)).map_err(|e| UnetError::Io {
        path: weights.clone(),
        source: e,
    })?;
    let cfg_path = unet_dir.join(CONFIG_NAME);
    let json = config.to_json_string();
    write_atomic(&cfg_path, |tmp| std::fs::write(tmp, json.as_bytes())).map_err(|e| UnetError::Io {
        path: cfg_path.clone(),
        source: e,
    })
}

/// Writes `tensors` as a safetensors file at `path`, crash-safe: serialised in memory, then
/// written by [`segdiff_io::write_bytes_atomic`]. (The safetensors crate's own file writer goes
/// through a randomly named temporary file with owner-only permissions, which a killed process
/// leaves behind and which our stale-temp cleanup cannot recognise.)
pub fn write_safetensors<S, V, I>(
    path: &Path,
    tensors: I,
    metadata: Option<HashMap<String, String>>,
) -> std::io::Result<()>
where
    S: AsRef<str> + Ord + std::fmt::Display,
    V: safetensors::View,
    I: IntoIterator<Item = (S, V)>,
{
    let bytes = safetensors::serialize(tensors, metadata).map_err(std::io::Error::other)?;
    segdiff_io::write_bytes_atomic(path, &bytes)
}
