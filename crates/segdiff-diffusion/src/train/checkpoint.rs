//! Checkpoint folders, `OUT/checkpoints/step-NNNNNNN/`: the method's model files, the trainable
//! state in `training_state.safetensors` and the step and options in `training_state.json`.
//! Each folder is built under a temporary name and swapped in whole, so a killed process or a
//! full disk never leaves a partial checkpoint, and the previous ones stay intact.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::{DiffusionError, Result};

/// File of a checkpoint holding optimiser moments, live and EMA weights.
pub const STATE_TENSORS: &str = "training_state.safetensors";
/// File of a checkpoint holding the step, options and RNG description.
pub const STATE_JSON: &str = "training_state.json";

/// What a checkpoint's `training_state.json` holds beside the tensors; `O` is the method's
/// options (the shared [`super::RunOptions`] flattened into its own).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingState<O> {
    /// Optimiser steps completed.
    pub step: usize,
    pub options: O,
    /// The RNG is re-derived from (seed, step); stored for the record.
    pub rng: String,
    pub epoch: usize,
    pub dataset_len: usize,
}

/// Writes checkpoint `step` under `out/checkpoints/` (see the module docs): `write_model` fills
/// the folder with the method's own files, then the state is added, and the folder is moved
/// into place. The oldest checkpoints beyond `keep` (at least 1) are removed afterwards.
pub fn write_checkpoint<O: Serialize>(
    out: &Path,
    state: &TrainingState<O>,
    tensors: &HashMap<String, Tensor>,
    keep: usize,
    write_model: impl FnOnce(&Path) -> Result<()>,
) -> Result<PathBuf> {
    let final_dir = out
        .join("checkpoints")
        .join(format!("step-{:07}", state.step));
    write_checkpoint_folder(&final_dir, state, tensors, write_model)?;
    let mut all = list_checkpoints(out)?;
    while all.len() > keep.max(1) {
        let (_, old) = all.remove(0);
        std::fs::remove_dir_all(&old).map_err(|e| io(&old, e))?;
    }
    Ok(final_dir)
}

/// Writes a checkpoint folder at `final_dir` (any name; [`write_checkpoint`] uses
/// `step-NNNNNNN`, the training monitor `best`): built under a temporary sibling name, then
/// swapped in whole, so the folder there before stays intact until the new one is complete.
pub fn write_checkpoint_folder<O: Serialize>(
    final_dir: &Path,
    state: &TrainingState<O>,
    tensors: &HashMap<String, Tensor>,
    write_model: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    if let Some(root) = final_dir.parent() {
        std::fs::create_dir_all(root).map_err(|e| io(root, e))?;
    }
    let staged = segdiff_io::temp_sibling(final_dir, "tmp");
    if staged.exists() {
        std::fs::remove_dir_all(&staged).map_err(|e| io(&staged, e))?;
    }
    std::fs::create_dir_all(&staged).map_err(|e| io(&staged, e))?;
    let guard = segdiff_io::remove_dir_on_drop(&staged);
    write_model(&staged)?;
    let st_path = staged.join(STATE_TENSORS);
    segdiff_unet::write_safetensors(&st_path, tensors, None).map_err(|e| io(&st_path, e))?;
    let js_path = staged.join(STATE_JSON);
    let text = serde_json::to_string_pretty(state).map_err(|e| DiffusionError::ModelDir {
        path: js_path.clone(),
        message: format!("encoding the training state: {e}"),
    })?;
    segdiff_io::write_bytes_atomic(&js_path, text.as_bytes()).map_err(|e| io(&js_path, e))?;
    segdiff_io::replace_dir(&staged, final_dir).map_err(|e| io(final_dir, e))?;
    guard.keep();
    Ok(())
}

/// Reads a checkpoint folder written by [`write_checkpoint`]: its state and tensors.
pub fn read_checkpoint<O: DeserializeOwned>(
    dir: &Path,
    device: &Device,
) -> Result<(TrainingState<O>, HashMap<String, Tensor>)> {
    let js_path = dir.join(STATE_JSON);
    let text = std::fs::read_to_string(&js_path).map_err(|e| io(&js_path, e))?;
    let state: TrainingState<O> =
        serde_json::from_str(&text).map_err(|e| DiffusionError::ModelDir {
            path: js_path.clone(),
            message: e.to_string(),
        })?;
    let st_path = dir.join(STATE_TENSORS);
    let tensors =
        candle_core::safetensors::load(&st_path, device).map_err(|e| DiffusionError::ModelDir {
            path: st_path.clone(),
            message: e.to_string(),
        })?;
    Ok((state, tensors))
}

/// Checkpoints under `out/checkpoints`, oldest first (folders without a state file, such as an
/// interrupted write, are not checkpoints).
pub fn list_checkpoints(out: &Path) -> Result<Vec<(usize, PathBuf)>> {
    let root = out.join("checkpoints");
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(&root) else {
        return Ok(found);
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(n) = name
            .strip_prefix("step-")
            .and_then(|s| s.parse::<usize>().ok())
        {
            if e.path().join(STATE_JSON).is_file() {
                found.push((n, e.path()));
            }
        }
    }
    found.sort();
    Ok(found)
}

pub(super) fn io(path: &Path, e: std::io::Error) -> DiffusionError {
    DiffusionError::ModelDir {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}
