//! Loading the model and the dataset subsets, checking that they fit together, and reading back
//! the images the scoring stages use.

use std::path::Path;

use candle_core::{Device, Tensor};
use segdiff_data::{Dataset, DatasetOptions, Split};
use segdiff_diffusion::{load_model_dir, SegdiffModel};

use crate::error::{EvalError, Result};
use crate::label_maps::LabelMaps;
use crate::paper_eval::config::PaperEvalConfig;
use crate::paper_eval::generation::{model_fingerprint, read_generated, GenerationJob};
use crate::paper_eval::report::{DataSummary, ModelSummary};
use crate::paper_eval::{GENERATED_TEST_DIR, GENERATED_TRAIN_DIR};
use crate::split_data::{evenly_spaced, SplitData};

/// The model, the data subsets and their sizes.
pub(super) struct Setup {
    pub(super) model: SegdiffModel,
    pub(super) fingerprint: String,
    pub(super) num_classes: usize,
    pub(super) class_names: Vec<String>,
    pub(super) channels: usize,
    pub(super) height: usize,
    pub(super) width: usize,
    pub(super) train: SplitData,
    pub(super) val: Option<SplitData>,
    pub(super) test: SplitData,
    pub(super) train_total: usize,
    pub(super) val_total: usize,
    pub(super) test_total: usize,
}

impl Setup {
    pub(super) fn guided(&self) -> bool {
        self.model.meta.segmentation_guided
    }

    pub(super) fn test_names(&self) -> Vec<String> {
        generated_names(self.test.names(), self.guided())
    }

    pub(super) fn train_names(&self) -> Vec<String> {
        generated_names(self.train.names(), self.guided())
    }

    /// The report's description of the model.
    pub(super) fn model_summary(&self, cfg: &PaperEvalConfig) -> ModelSummary {
        ModelSummary {
            path: cfg.model.display().to_string(),
            segmentation_guided: self.guided(),
            mask_encoding: self.model.meta.mask_encoding.as_str().to_string(),
            num_classes: self.num_classes,
            class_names: self.class_names.clone(),
            image_channels: self.channels,
            image_size: [self.height, self.width],
            fingerprint: self.fingerprint.clone(),
        }
    }

    /// The report's description of the data used.
    pub(super) fn data_summary(&self, cfg: &PaperEvalConfig) -> DataSummary {
        DataSummary {
            path: cfg.dataset.display().to_string(),
            train_used: self.train.len(),
            train_total: self.train_total,
            val_used: self.val.as_ref().map_or(0, SplitData::len),
            val_total: self.val_total,
            test_used: self.test.len(),
            test_total: self.test_total,
        }
    }
}

/// `condon_<mask name>` as the official sampler names guided samples; `sample_<g>.png` for
/// unconditional slots.
fn generated_names(names: &[String], guided: bool) -> Vec<String> {
    if guided {
        names.iter().map(|n| format!("condon_{n}")).collect()
    } else {
        (0..names.len())
            .map(|g| format!("sample_{g:05}.png"))
            .collect()
    }
}

/// Opens the splits, loads the model and checks they fit together (and the segmenter recipe).
pub(super) fn setup(
    cfg: &PaperEvalConfig,
    with_val: bool,
    advance: &mut dyn FnMut(usize, usize, String),
) -> Result<Setup> {
    cfg.validate()?;
    let model = load_model_dir(&cfg.model, cfg.dtype, &cfg.device)?;
    advance(1, 5, "model loaded".into());
    let fingerprint = model_fingerprint(&model)?;
    let meta = &model.meta;
    let num_classes = match (meta.num_classes, cfg.num_classes) {
        (Some(m), Some(c)) if m != c => {
            return Err(EvalError::Incompatible {
                what: cfg.model.display().to_string(),
                reason: format!("the model has {m} classes, {c} were requested"),
            })
        }
        (m, c) => m.or(c),
    };
    let opts = DatasetOptions {
        num_classes,
        force_grey: cfg.force_grey,
        resize: cfg.size.or(model.unet.config.sample_size.map(|s| s as u32)),
        require_masks: true,
    };
    let open = |split| Dataset::open(&cfg.dataset, split, &opts);
    let train_ds = open(Split::Train)?;
    let test_ds = open(Split::Test)?;
    let val_ds = if with_val && split_exists(&cfg.dataset, Split::Val) {
        Some(open(Split::Val)?).filter(|d| !d.is_empty())
    } else {
        None
    };
    let num_classes = train_ds
        .num_classes()
        .ok_or_else(|| EvalError::Incompatible {
            what: cfg.dataset.display().to_string(),
            reason: "the number of classes is unknown: the model does not record it and there is \
                 no dataset.json; give it explicitly"
                .into(),
        })?;
    for ds in [&train_ds, &test_ds] {
        if ds.is_empty() {
            return Err(EvalError::Incompatible {
                what: format!("{} ({} split)", cfg.dataset.display(), ds.split().name()),
                reason: "no image/mask pairs".into(),
            });
        }
    }
    let train = SplitData::load(&train_ds, &evenly_spaced(train_ds.len(), cfg.max_train))?;
    advance(2, 5, format!("{} training pairs", train.len()));
    let val = match &val_ds {
        Some(d) => Some(SplitData::load(d, &evenly_spaced(d.len(), cfg.max_val))?),
        None => None,
    };
    advance(3, 5, "validation pairs".into());
    let test = SplitData::load(&test_ds, &evenly_spaced(test_ds.len(), cfg.max_test))?;
    advance(4, 5, format!("{} test pairs", test.len()));

    let (channels, (height, width)) = (train.channels(), train.size());
    for (split, data) in [("val", val.as_ref()), ("test", Some(&test))] {
        if let Some(d) = data {
            if (d.channels(), d.size()) != (channels, (height, width)) {
                return Err(EvalError::Incompatible {
                    what: format!("{} ({split} split)", cfg.dataset.display()),
                    reason: format!(
                        "{}×{}×{} images, the training split has {channels}×{height}×{width}",
                        d.channels(),
                        d.size().0,
                        d.size().1
                    ),
                });
            }
        }
    }
    if channels != meta.image_channels {
        return Err(EvalError::Incompatible {
            what: cfg.dataset.display().to_string(),
            reason: format!(
                "{channels}-channel images, but the model makes {}-channel images{}",
                meta.image_channels,
                if channels == 3 {
                    " (convert RGB to grey on load)"
                } else {
                    ""
                }
            ),
        });
    }
    if !meta.segmentation_guided {
        if let Some(s) = model.unet.config.sample_size {
            if (height, width) != (s, s) {
                return Err(EvalError::Incompatible {
                    what: cfg.dataset.display().to_string(),
                    reason: format!(
                        "{height}×{width} images, the unconditional model makes {s}×{s} ones; \
                         resize on load"
                    ),
                });
            }
        }
    }
    if cfg.segmenter.is_none() {
        let network = cfg.recipe.network(channels, num_classes);
        network.validate()?;
        let f = network.downsampling_factor();
        if height % f != 0 || width % f != 0 {
            return Err(EvalError::Incompatible {
                what: "segmenter strides".into(),
                reason: format!(
                    "{height}×{width} images are not multiples of the strides' product {f}"
                ),
            });
        }
    }
    let class_names = if meta.class_names.len() == num_classes {
        meta.class_names.clone()
    } else {
        (0..num_classes).map(|k| format!("class {k}")).collect()
    };
    advance(5, 5, "data loaded".into());
    Ok(Setup {
        fingerprint,
        num_classes,
        class_names,
        channels,
        height,
        width,
        train_total: train_ds.len(),
        val_total: val_ds.as_ref().map_or(0, Dataset::len),
        test_total: test_ds.len(),
        train,
        val,
        test,
        model,
    })
}

/// Whether the dataset has an image folder for `split` (the folder names `segdiff-data` reads).
fn split_exists(root: &Path, split: Split) -> bool {
    ["img", "IMG", "images", "IMAGES"]
        .iter()
        .any(|d| root.join(d).join(split.name()).is_dir())
}

pub(super) fn jobs<'a>(cfg: &PaperEvalConfig, s: &'a Setup) -> [GenerationJob<'a>; 2] {
    let guided = s.guided();
    [
        GenerationJob {
            folder: cfg.out.join(GENERATED_TEST_DIR),
            names: s.test_names(),
            masks: if guided { s.test.masks() } else { None },
            channels: s.channels,
            height: s.height,
            width: s.width,
            seed: cfg.seed,
        },
        GenerationJob {
            folder: cfg.out.join(GENERATED_TRAIN_DIR),
            names: s.train_names(),
            masks: if guided { s.train.masks() } else { None },
            channels: s.channels,
            height: s.height,
            width: s.width,
            seed: cfg.train_seed(),
        },
    ]
}

pub(super) fn tensor(values: &[f32], n: usize, s: &Setup, device: &Device) -> Result<Tensor> {
    Ok(Tensor::from_slice(
        values,
        (n, s.channels, s.height, s.width),
        device,
    )?)
}

/// What the scoring stages read: both generated sets as saved (PNGs read back to `[-1, 1]`),
/// the generated and real test images as tensors, and the test masks.
pub(super) struct ScoringData<'a> {
    pub(super) gen_test: Vec<f32>,
    pub(super) gen_train: Vec<f32>,
    pub(super) gen_test_t: Tensor,
    pub(super) real_test_t: Tensor,
    /// File names of the generated test images.
    pub(super) test_names: Vec<String>,
    pub(super) test_masks: &'a LabelMaps,
}

impl<'a> ScoringData<'a> {
    pub(super) fn read(
        cfg: &PaperEvalConfig,
        s: &Setup,
        test_masks: &'a LabelMaps,
    ) -> Result<Self> {
        let [test_job, train_job] = jobs(cfg, s);
        let gen_test = read_generated(&test_job)?;
        let gen_train = read_generated(&train_job)?;
        let gen_test_t = tensor(&gen_test, s.test.len(), s, &cfg.device)?;
        let real_test_t = s.test.images_tensor(&cfg.device)?;
        Ok(Self {
            gen_test,
            gen_train,
            gen_test_t,
            real_test_t,
            test_names: s.test_names(),
            test_masks,
        })
    }
}
