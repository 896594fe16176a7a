//! A segdiff model directory: the diffusers pipeline layout (`unet/`, `scheduler/`,
//! `model_index.json`) plus `segdiff.json`, which records how masks are fed to the network so
//! that sampling can never use the wrong encoding.
//!
//! A plain diffusers directory without `segdiff.json` (every official checkpoint) is read with the
//! official code's conventions: one mask channel holding `class_id/255` when
//! `in_channels = out_channels + 1`, unconditional when they are equal.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use segdiff_unet::{load_unet, save_unet, LoadedUnet, UNet2DConfig};
use serde::{Deserialize, Serialize};

use crate::config::{DdpmConfig, SchedulerConfig};
use crate::mask_conditioning::MaskEncoding;
use crate::neighbours::NeighbourScheme;
use crate::{DiffusionError, Result};

/// File name of segdiff's conditioning metadata at the model root.
pub const META_NAME: &str = "segdiff.json";

/// How the model is conditioned on segmentation masks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConditioningMeta {
    /// `false` for the paper's unconditional baseline (Unc-Diff).
    pub segmentation_guided: bool,
    /// `single` (official: one channel, `class_id/255`) or `onehot` (C−1 channels of 0/1).
    pub mask_encoding: MaskEncoding,
    /// Number of classes including background; `None` when unknown (official checkpoints).
    pub num_classes: Option<usize>,
    /// One name per class id, background first (may be empty).
    #[serde(default)]
    pub class_names: Vec<String>,
    /// Image channels (1 grey, 3 RGB).
    pub image_channels: usize,
    /// Whether the model was trained with mask ablation (Algorithm 1), i.e. accepts masks with
    /// missing classes, including empty masks.
    #[serde(default)]
    pub ablation_trained: bool,
    /// Optional RGB colour per class for overlays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_colors: Option<Vec<[u8; 3]>>,
    /// Neighbour conditioning for whole volumes (extra input channels after the mask); `None`
    /// for a plain 2-D model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub neighbours: Option<NeighbourScheme>,
}

impl ConditioningMeta {
    /// What the official code implies for a UNet config (no metadata file).
    pub fn official_for(config: &UNet2DConfig) -> Self {
        let guided = config.in_channels == config.out_channels + 1;
        Self {
            segmentation_guided: guided,
            mask_encoding: MaskEncoding::Single,
            num_classes: None,
            class_names: Vec::new(),
            image_channels: config.out_channels,
            ablation_trained: false,
            class_colors: None,
            neighbours: None,
        }
    }

    /// The mask encoding.
    pub fn encoding(&self) -> MaskEncoding {
        self.mask_encoding
    }

    /// Mask channels the network expects (0 for an unconditional model).
    pub fn mask_channels(&self) -> Result<usize> {
        if !self.segmentation_guided {
            return Ok(0);
        }
        match self.encoding() {
            MaskEncoding::Single => Ok(1),
            MaskEncoding::OneHot => {
                self.num_classes
                    .map(|c| c.saturating_sub(1))
                    .ok_or_else(|| DiffusionError::ModelDir {
                        path: PathBuf::from(META_NAME),
                        message: "onehot encoding needs num_classes".into(),
                    })
            }
        }
    }

    /// Neighbour channels the network expects after the mask channels (0 without a
    /// [`NeighbourScheme`]).
    pub fn neighbour_channels(&self) -> Result<usize> {
        Ok(match &self.neighbours {
            Some(scheme) => scheme.channels(self.image_channels, self.mask_channels()?),
            None => 0,
        })
    }

    /// All channels concatenated to the noisy image: mask + neighbour channels.
    pub fn condition_channels(&self) -> Result<usize> {
        Ok(self.mask_channels()? + self.neighbour_channels()?)
    }

    /// Checks the metadata against the network's channel counts.
    pub fn check_against(&self, config: &UNet2DConfig, path: &Path) -> Result<()> {
        let mask = self.mask_channels()?;
        let neighbour = self.neighbour_channels()?;
        if self.image_channels != config.out_channels
            || self.image_channels + mask + neighbour != config.in_channels
        {
            return Err(DiffusionError::ModelDir {
                path: path.to_path_buf(),
                message: format!(
                    "{} image channel(s) + {mask} mask channel(s) ({} encoding) + {neighbour} neighbour channel(s) do not match the UNet's in_channels {} / out_channels {}",
                    self.image_channels, self.mask_encoding, config.in_channels, config.out_channels
                ),
            });
        }
        Ok(())
    }
}

/// A model directory loaded for sampling.
#[derive(Debug, Clone)]
pub struct SegdiffModel {
    pub dir: PathBuf,
    pub unet: LoadedUnet,
    /// The training noise schedule (`scheduler/scheduler_config.json`; DDPM defaults if absent).
    pub scheduler: SchedulerConfig,
    pub meta: ConditioningMeta,
    /// `true` when `segdiff.json` was present (otherwise the official conventions were assumed).
    pub has_meta: bool,
}

/// Loads `dir` (a diffusers pipeline folder, or a bare `unet` folder) in `dtype` on `device`.
pub fn load_model_dir(dir: &Path, dtype: DType, device: &Device) -> Result<SegdiffModel> {
    let unet = load_unet(dir, dtype, device)?;
    let sched_path = dir
        .join("scheduler")
        .join(crate::config::SCHEDULER_CONFIG_NAME);
    let scheduler = if sched_path.is_file() {
        SchedulerConfig::load(&sched_path)?
    } else {
        SchedulerConfig::Ddpm(DdpmConfig::default())
    };
    let meta_path = dir.join(META_NAME);
    let (meta, has_meta) = if meta_path.is_file() {
        let text = std::fs::read_to_string(&meta_path).map_err(|e| DiffusionError::ModelDir {
            path: meta_path.clone(),
            message: e.to_string(),
        })?;
        let meta: ConditioningMeta =
            serde_json::from_str(&text).map_err(|e| DiffusionError::ModelDir {
                path: meta_path.clone(),
                message: e.to_string(),
            })?;
        (meta, true)
    } else {
        (ConditioningMeta::official_for(&unet.config), false)
    };
    meta.check_against(&unet.config, if has_meta { &meta_path } else { dir })?;
    Ok(SegdiffModel {
        dir: dir.to_path_buf(),
        unet,
        scheduler,
        meta,
        has_meta,
    })
}

/// Writes a complete model directory into `dir`: `unet/` (config + safetensors),
/// `scheduler/scheduler_config.json`, `model_index.json` and `segdiff.json`, each file atomically.
pub fn save_model_dir(
    dir: &Path,
    unet_config: &UNet2DConfig,
    tensors: &HashMap<String, Tensor>,
    scheduler: &SchedulerConfig,
    meta: &ConditioningMeta,
) -> Result<()> {
    meta.check_against(unet_config, &dir.join(META_NAME))?;
    save_unet(&dir.join("unet"), unet_config, tensors)?;
    let sched_dir = dir.join("scheduler");
    std::fs::create_dir_all(&sched_dir).map_err(|e| io_err(&sched_dir, e))?;
    scheduler.save(sched_dir.join(crate::config::SCHEDULER_CONFIG_NAME))?;
    let pipeline = match scheduler.kind() {
        crate::SchedulerKind::Ddim => "DDIMPipeline",
        _ => "DDPMPipeline",
    };
    let index = serde_json::json!({
        "_class_name": pipeline,
        "_diffusers_version": "0.42.1",
        "scheduler": ["diffusers", scheduler.kind().class_name()],
        "unet": ["diffusers", "UNet2DModel"],
    });
    write_json(&dir.join("model_index.json"), &index)?;
    write_json(
        &dir.join(META_NAME),
        &serde_json::to_value(meta).map_err(|e| DiffusionError::ModelDir {
            path: dir.join(META_NAME),
            message: e.to_string(),
        })?,
    )
}

fn io_err(path: &Path, e: std::io::Error) -> DiffusionError {
    DiffusionError::ModelDir {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value).unwrap_or_default() + "\n";
    segdiff_io::write_atomic(path, |tmp| std::fs::write(tmp, text.as_bytes()))
        .map_err(|e| io_err(path, e))
}
