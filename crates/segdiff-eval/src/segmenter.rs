//! A trained segmenter on disk and its use: a directory holding `model.safetensors` (the MONAI
//! UNet state dict under PyTorch names) and `segmenter.json` ([`SegmenterSpec`]: network config,
//! classes, image size, input normalisation, how it was trained), plus batched [`predict`] (hard
//! masks) and [`encode`] (pooled bottleneck features for FID).
//!
//! Training lives in [`crate::segmenter_training`].

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use serde::{Deserialize, Serialize};

use crate::atomic_write::write_atomic;
use crate::error::{EvalError, Result};
use crate::label_maps::LabelMaps;
use crate::monai_unet::{MonaiUNet, MonaiUNetConfig};

/// File name of the spec inside a segmenter directory.
pub const SPEC_FILE: &str = "segmenter.json";
/// File name of the weights inside a segmenter directory.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// The only `format_version` written and read.
pub const SPEC_FORMAT_VERSION: u32 = 1;

/// How raw pixel values become network input: `[pixel_min, pixel_max]` maps linearly onto
/// `[-1, 1]` (the diffusion model's image range).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct InputNormalisation {
    pub pixel_min: f64,
    pub pixel_max: f64,
}

impl InputNormalisation {
    /// 8-bit images: 0 → −1, 255 → 1.
    pub fn eight_bit() -> Self {
        Self {
            pixel_min: 0.0,
            pixel_max: 255.0,
        }
    }

    /// The network input for a raw pixel value.
    pub fn apply(&self, raw: f64) -> f32 {
        ((raw - self.pixel_min) / (self.pixel_max - self.pixel_min) * 2.0 - 1.0) as f32
    }

    fn validate(&self) -> std::result::Result<(), String> {
        if self.pixel_min.is_finite()
            && self.pixel_max.is_finite()
            && self.pixel_max > self.pixel_min
        {
            Ok(())
        } else {
            Err(format!(
                "input normalisation needs finite pixel_min < pixel_max, got {} and {}",
                self.pixel_min, self.pixel_max
            ))
        }
    }
}

impl Default for InputNormalisation {
    fn default() -> Self {
        Self::eight_bit()
    }
}

/// How a segmenter was trained (recorded for provenance; not needed to run it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainingSummary {
    /// Epochs run.
    pub epochs: usize,
    /// Epoch (1-based) whose weights were kept: lowest validation loss, or the last one.
    pub best_epoch: usize,
    /// Validation loss of the kept weights; `None` without a validation set.
    pub best_val_loss: Option<f64>,
    /// Mean Dice (no background, empty classes ignored) of the kept weights on the validation set.
    pub best_val_dice: Option<f64>,
    /// Seed of weight init, shuffling and augmentation.
    pub seed: u64,
    pub batch_size: usize,
    /// Initial AdamW learning rate (cosine-annealed to 0 over all steps).
    pub lr: f64,
    pub weight_decay: f64,
    /// Random horizontal/vertical flips were applied.
    pub flips: bool,
    /// Random 90° rotations were applied.
    pub rot90: bool,
    pub train_samples: usize,
    pub val_samples: usize,
}

/// `segmenter.json`: everything needed to rebuild and feed the network.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SegmenterSpec {
    /// Layout version of this file; only [`SPEC_FORMAT_VERSION`] is understood.
    pub format_version: u32,
    /// The MONAI `UNet` arguments.
    pub network: MonaiUNetConfig,
    /// Number of classes including background (= `network.out_channels`).
    pub num_classes: usize,
    /// Optional names, one per class id.
    #[serde(default)]
    pub class_names: Option<Vec<String>>,
    /// `[height, width]` of the training images.
    pub image_size: [usize; 2],
    /// Raw pixel range mapped to the network's `[-1, 1]` input.
    #[serde(default)]
    pub input: InputNormalisation,
    /// How it was trained, when it was trained by segdiff.
    #[serde(default)]
    pub training: Option<TrainingSummary>,
}

impl SegmenterSpec {
    /// A spec for `network` run on `[height, width]` 8-bit images, without names or training
    /// record (e.g. for converted PyTorch weights).
    pub fn new(network: MonaiUNetConfig, image_size: [usize; 2]) -> Self {
        Self {
            format_version: SPEC_FORMAT_VERSION,
            num_classes: network.out_channels,
            network,
            class_names: None,
            image_size,
            input: InputNormalisation::eight_bit(),
            training: None,
        }
    }

    /// Checks the fields against each other; the message names the offending field.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.format_version != SPEC_FORMAT_VERSION {
            return Err(format!(
                "format_version {} is not supported (expected {SPEC_FORMAT_VERSION})",
                self.format_version
            ));
        }
        self.network.validate().map_err(|e| e.to_string())?;
        if self.num_classes < 2 || self.num_classes != self.network.out_channels {
            return Err(format!(
                "num_classes {} must be at least 2 and equal network.out_channels {}",
                self.num_classes, self.network.out_channels
            ));
        }
        if let Some(names) = &self.class_names {
            if names.len() != self.num_classes {
                return Err(format!(
                    "class_names has {} entries for {} classes",
                    names.len(),
                    self.num_classes
                ));
            }
        }
        let f = self.network.downsampling_factor();
        let [h, w] = self.image_size;
        if h == 0 || w == 0 || h % f != 0 || w % f != 0 {
            return Err(format!(
                "image_size {h}x{w} must be positive multiples of the strides' product {f}"
            ));
        }
        self.input.validate()
    }
}

/// Writes `dir/model.safetensors` then `dir/segmenter.json` (creating `dir`), each through a
/// temporary file that is synced and renamed, so a present spec means complete weights.
/// `weights` must build `spec.network` exactly (checked before anything is written).
pub fn save_segmenter(
    dir: &Path,
    weights: &HashMap<String, Tensor>,
    spec: &SegmenterSpec,
) -> Result<()> {
    let spec_path = dir.join(SPEC_FILE);
    spec.validate().map_err(|reason| EvalError::InvalidSpec {
        path: spec_path.clone(),
        reason,
    })?;
    let cpu: HashMap<String, Tensor> = weights
        .iter()
        .map(|(k, t)| Ok((k.clone(), t.to_device(&Device::Cpu)?.to_dtype(DType::F32)?)))
        .collect::<Result<_>>()?;
    check_weights_fit(&spec.network, &cpu)?;
    std::fs::create_dir_all(dir).map_err(|source| EvalError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let weights_path = dir.join(WEIGHTS_FILE);
    segdiff_unet::write_safetensors(&weights_path, &cpu, None).map_err(|source| {
        EvalError::Write {
            path: weights_path.clone(),
            source,
        }
    })?;
    let text = serde_json::to_string_pretty(spec).map_err(|source| EvalError::Json {
        path: spec_path.clone(),
        source,
    })?;
    write_atomic(&spec_path, |tmp| std::fs::write(tmp, text.as_bytes()))
}

/// Fails unless `weights` are exactly the network's tensors with the right shapes: a missing or
/// misshapen one would fail on load, an extra one would be silently ignored there.
fn check_weights_fit(network: &MonaiUNetConfig, weights: &HashMap<String, Tensor>) -> Result<()> {
    MonaiUNet::new(
        network,
        VarBuilder::from_tensors(weights.clone(), DType::F32, &Device::Cpu),
    )?;
    let fresh = VarMap::new();
    MonaiUNet::new(
        network,
        VarBuilder::from_varmap(&fresh, DType::F32, &Device::Cpu),
    )?;
    let names = crate::var_store::lock_vars(&fresh)?;
    match weights.keys().find(|k| !names.contains_key(*k)) {
        Some(extra) => Err(EvalError::InvalidArgument {
            name: "segmenter weights",
            value: extra.clone(),
            reason: "not a tensor of the network in the spec",
        }),
        None => Ok(()),
    }
}

/// Reads a segmenter directory written by [`save_segmenter`] onto `device` (f32).
pub fn load_segmenter(dir: &Path, device: &Device) -> Result<(MonaiUNet, SegmenterSpec)> {
    if !dir.is_dir() {
        return Err(EvalError::Io {
            path: dir.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "not a segmenter directory (no such folder)",
            ),
        });
    }
    let spec_path = dir.join(SPEC_FILE);
    let text = std::fs::read_to_string(&spec_path).map_err(|source| EvalError::Io {
        path: spec_path.clone(),
        source,
    })?;
    let spec: SegmenterSpec = serde_json::from_str(&text).map_err(|source| EvalError::Json {
        path: spec_path.clone(),
        source,
    })?;
    spec.validate().map_err(|reason| EvalError::InvalidSpec {
        path: spec_path.clone(),
        reason,
    })?;
    let weights_path = dir.join(WEIGHTS_FILE);
    if !weights_path.is_file() {
        return Err(EvalError::Io {
            path: weights_path,
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "weights file missing"),
        });
    }
    let model = MonaiUNet::load(&spec.network, &weights_path, device)?;
    Ok((model, spec))
}

/// Hard masks of `(N, C, H, W)` images in `[-1, 1]`, run `batch_size` images at a time.
pub fn predict(model: &MonaiUNet, images: &Tensor, batch_size: usize) -> Result<LabelMaps> {
    let (n, _, h, w) = batch_dims(images, batch_size)?;
    let mut labels = Vec::with_capacity(n * h * w);
    for start in (0..n).step_by(batch_size) {
        let len = batch_size.min(n - start);
        let maps = model.segment(&images.narrow(0, start, len)?)?;
        labels.extend_from_slice(maps.as_slice());
    }
    LabelMaps::new(labels, n, h, w)
}

/// Pooled bottleneck features `(N, D)` (see [`MonaiUNet::encode_features`]) of `(N, C, H, W)`
/// images, run `batch_size` images at a time; f32 on the images' device.
pub fn encode(model: &MonaiUNet, images: &Tensor, batch_size: usize) -> Result<Tensor> {
    let (n, _, _, _) = batch_dims(images, batch_size)?;
    if n == 0 {
        return Ok(Tensor::zeros(
            (0, model.feature_dim()),
            DType::F32,
            images.device(),
        )?);
    }
    let parts = (0..n)
        .step_by(batch_size)
        .map(|start| {
            let len = batch_size.min(n - start);
            model
                .encode_features(&images.narrow(0, start, len)?)?
                .to_dtype(DType::F32)
        })
        .collect::<candle_core::Result<Vec<_>>>()?;
    Ok(Tensor::cat(&parts, 0)?)
}

fn batch_dims(images: &Tensor, batch_size: usize) -> Result<(usize, usize, usize, usize)> {
    if batch_size == 0 {
        return Err(EvalError::InvalidArgument {
            name: "batch_size",
            value: "0".into(),
            reason: "must be at least 1",
        });
    }
    images.dims4().map_err(|_| EvalError::BadShape {
        what: "segmenter images",
        shape: images.dims().to_vec(),
        expected: "(N, C, H, W)",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> Result<(HashMap<String, Tensor>, SegmenterSpec)> {
        let network = MonaiUNetConfig::new(1, 3, vec![4, 8], vec![2], 1);
        let vm = VarMap::new();
        MonaiUNet::new(
            &network,
            VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu),
        )?;
        crate::monai_unet::init_weights_seeded(&vm, 5)?;
        let weights = vm
            .data()
            .lock()
            .map_err(|_| EvalError::InvalidArgument {
                name: "varmap",
                value: String::new(),
                reason: "poisoned",
            })?
            .iter()
            .map(|(k, v)| Ok((k.clone(), v.as_tensor().copy()?)))
            .collect::<Result<_>>()?;
        let spec = SegmenterSpec {
            class_names: Some(vec!["bg".into(), "a".into(), "b".into()]),
            ..SegmenterSpec::new(network, [8, 8])
        };
        assert_eq!(spec.num_classes, 3);
        Ok((weights, spec))
    }

    #[test]
    fn normalisation_maps_the_range_to_minus_one_one() {
        let n = InputNormalisation::eight_bit();
        assert_eq!(n.apply(0.0), -1.0);
        assert_eq!(n.apply(255.0), 1.0);
        assert_eq!(n.apply(127.5), 0.0);
    }

    #[test]
    fn spec_validation_names_the_field() -> Result<()> {
        let (_, spec) = tiny()?;
        assert!(spec.validate().is_ok());
        let mut s = spec.clone();
        s.num_classes = 4;
        assert!(s.validate().unwrap_err().contains("num_classes"));
        let mut s = spec.clone();
        s.image_size = [9, 8];
        assert!(s.validate().unwrap_err().contains("image_size"));
        let mut s = spec.clone();
        s.class_names = Some(vec!["x".into()]);
        assert!(s.validate().unwrap_err().contains("class_names"));
        let mut s = spec;
        s.format_version = 2;
        assert!(s.validate().unwrap_err().contains("format_version"));
        Ok(())
    }

    #[test]
    fn save_load_round_trip_and_errors_name_the_file() -> Result<()> {
        let (weights, spec) = tiny()?;
        let holder = tempfile::tempdir().map_err(|source| EvalError::Io {
            path: std::env::temp_dir(),
            source,
        })?;
        let tmp = holder.path();
        let dir = tmp.join("seg");
        save_segmenter(&dir, &weights, &spec)?;
        let (model, back) = load_segmenter(&dir, &Device::Cpu)?;
        assert_eq!(back, spec);
        // No temporary files are left behind.
        let names: Vec<String> = std::fs::read_dir(&dir)
            .map_err(|source| EvalError::Io {
                path: dir.clone(),
                source,
            })?
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        let x = Tensor::from_vec(
            (0..3 * 64)
                .map(|i| ((i * 7) % 13) as f32 / 6.5 - 1.0)
                .collect(),
            (3, 1, 8, 8),
            &Device::Cpu,
        )?;
        let original = MonaiUNet::new(
            &spec.network,
            VarBuilder::from_tensors(weights.clone(), DType::F32, &Device::Cpu),
        )?;
        // 3 images in batches of 2 vs all at once: the same masks, and features equal up to the
        // rounding that a different conv tiling brings.
        let want = original.segment(&x)?;
        assert_eq!(predict(&model, &x, 2)?, want);
        let f_all = original.encode_features(&x)?;
        let f_batched = encode(&model, &x, 2)?;
        assert_eq!(f_batched.dims(), &[3, 8]);
        let diff = (f_batched - f_all)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-5, "max feature difference {diff}");

        // Weights that do not fit the spec are refused before writing.
        let mut wrong = weights.clone();
        wrong.insert("extra".into(), Tensor::zeros(1, DType::F32, &Device::Cpu)?);
        assert!(save_segmenter(&tmp.join("other"), &wrong, &spec).is_err());
        assert!(!tmp.join("other").exists());

        std::fs::remove_file(dir.join(WEIGHTS_FILE)).map_err(|source| EvalError::Io {
            path: dir.clone(),
            source,
        })?;
        let err = load_segmenter(&dir, &Device::Cpu).unwrap_err().to_string();
        assert!(err.contains(WEIGHTS_FILE), "{err}");
        std::fs::write(dir.join(SPEC_FILE), "{").map_err(|source| EvalError::Io {
            path: dir.clone(),
            source,
        })?;
        let err = load_segmenter(&dir, &Device::Cpu).unwrap_err().to_string();
        assert!(err.contains(SPEC_FILE), "{err}");
        let err = load_segmenter(&tmp.join("missing"), &Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing"), "{err}");
        Ok(())
    }
}
