//! What the evaluation is asked to do: [`PaperEvalConfig`], with the paper's protocol and the
//! `--quick` variant.

use std::path::PathBuf;

use candle_core::{DType, Device};

use crate::error::{EvalError, Result};
use crate::paper_eval::generation::SamplingSettings;
use crate::segmenter_training::SegmenterRecipe;

/// `--quick`: at most this many training, validation and test pairs.
pub const QUICK_MAX_IMAGES: usize = 8;
/// `--quick`: segmenter epochs.
pub const QUICK_SEGMENTER_EPOCHS: usize = 10;
/// `--quick`: sampling steps.
pub const QUICK_SAMPLING_STEPS: usize = 10;

/// Everything the evaluation needs. [`PaperEvalConfig::new`] gives the paper's protocol,
/// [`PaperEvalConfig::quick`] a small run.
#[derive(Clone, Debug)]
pub struct PaperEvalConfig {
    /// Prepared dataset root (`img/{train,val,test}`, `mask/all/{split}`).
    pub dataset: PathBuf,
    /// Model directory (diffusers layout, with or without `segdiff.json`).
    pub model: PathBuf,
    /// Output folder.
    pub out: PathBuf,
    /// Use this segmenter directory instead of training one on the real images.
    pub segmenter: Option<PathBuf>,
    /// Classes including background when neither the model nor `dataset.json` says.
    pub num_classes: Option<usize>,
    /// Convert RGB dataset images to grey.
    pub force_grey: bool,
    /// Resize dataset pairs to `size × size` on load; `None`: the model's `sample_size`.
    pub size: Option<u32>,
    /// Use at most this many training pairs (for both segmenters and Table 1's generated set),
    /// validation pairs and test pairs, spread evenly over each split.
    pub max_train: Option<usize>,
    pub max_val: Option<usize>,
    pub max_test: Option<usize>,
    pub sampling: SamplingSettings,
    /// Seeds everything: test images use `(seed, g)`, training-mask images `(seed + 1, g)`, both
    /// segmenters `seed` (their recipe's own seed is replaced).
    pub seed: u64,
    /// How both segmenters are trained.
    pub recipe: SegmenterRecipe,
    /// Also compute FID in Inception-v3's pool feature space, with torchvision-named weights
    /// from this `.safetensors` file (see [`crate::InceptionV3::load`]).
    pub inception_weights: Option<PathBuf>,
    /// Images per segmenter (and Inception-v3) forward pass when predicting and encoding.
    pub inference_batch_size: usize,
    /// Weight dtype of the diffusion model (segmenters always run in f32).
    pub dtype: DType,
    pub device: Device,
    /// Recorded in the report.
    pub quick: bool,
    /// The command line, recorded in the report.
    pub command: String,
}

impl PaperEvalConfig {
    /// The paper's protocol: all pairs, DDIM 50 steps, 100 segmenter epochs, on the CPU in f32.
    pub fn new(dataset: PathBuf, model: PathBuf, out: PathBuf) -> Self {
        Self {
            dataset,
            model,
            out,
            segmenter: None,
            num_classes: None,
            force_grey: false,
            size: None,
            max_train: None,
            max_val: None,
            max_test: None,
            sampling: SamplingSettings::paper(),
            seed: 0,
            recipe: SegmenterRecipe::default(),
            inception_weights: None,
            inference_batch_size: 16,
            dtype: DType::F32,
            device: Device::Cpu,
            quick: false,
            command: String::new(),
        }
    }

    /// A run of minutes on a CPU: [`QUICK_MAX_IMAGES`] pairs per split,
    /// [`QUICK_SEGMENTER_EPOCHS`] epochs, [`QUICK_SAMPLING_STEPS`] sampling steps.
    pub fn quick(mut self) -> Self {
        self.max_train = Some(QUICK_MAX_IMAGES);
        self.max_val = Some(QUICK_MAX_IMAGES);
        self.max_test = Some(QUICK_MAX_IMAGES);
        self.recipe.epochs = QUICK_SEGMENTER_EPOCHS;
        self.sampling.steps = Some(QUICK_SAMPLING_STEPS);
        self.quick = true;
        self
    }

    /// The segmenter recipe with [`seed`](Self::seed) as its seed.
    pub fn seeded_recipe(&self) -> SegmenterRecipe {
        SegmenterRecipe {
            seed: self.seed,
            ..self.recipe.clone()
        }
    }

    /// Seed of the images generated from the training masks.
    pub fn train_seed(&self) -> u64 {
        self.seed.wrapping_add(1)
    }

    pub(super) fn validate(&self) -> Result<()> {
        let bad = |name: &'static str, value: String, reason: &'static str| {
            Err(EvalError::InvalidArgument {
                name,
                value,
                reason,
            })
        };
        for (name, v) in [
            ("max_train", self.max_train),
            ("max_val", self.max_val),
            ("max_test", self.max_test),
        ] {
            if v == Some(0) {
                return bad(name, "0".into(), "must be at least 1");
            }
        }
        if self.sampling.batch_size == 0 {
            return bad("sampling batch size", "0".into(), "must be at least 1");
        }
        if self.inference_batch_size == 0 {
            return bad("inference batch size", "0".into(), "must be at least 1");
        }
        if self.recipe.epochs == 0 {
            return bad("segmenter epochs", "0".into(), "must be at least 1");
        }
        if self.recipe.batch_size == 0 {
            return bad("segmenter batch size", "0".into(), "must be at least 1");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_shrinks_the_run_and_zero_limits_are_refused() {
        let cfg = PaperEvalConfig::new("d".into(), "m".into(), "o".into());
        assert_eq!(cfg.recipe.epochs, 100);
        assert_eq!(cfg.sampling.resolved_steps(), 50);
        let quick = cfg.clone().quick();
        assert!(quick.quick);
        assert_eq!(quick.max_test, Some(QUICK_MAX_IMAGES));
        assert_eq!(quick.recipe.epochs, QUICK_SEGMENTER_EPOCHS);
        assert_eq!(quick.sampling.resolved_steps(), QUICK_SAMPLING_STEPS);
        assert!(quick.validate().is_ok());
        let seeded = PaperEvalConfig { seed: 9, ..cfg };
        assert_eq!(seeded.seeded_recipe().seed, 9);
        assert_eq!(seeded.train_seed(), 10);
        let zero = PaperEvalConfig {
            max_train: Some(0),
            ..quick
        };
        assert!(zero
            .validate()
            .unwrap_err()
            .to_string()
            .contains("max_train"));
    }
}
