//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong while evaluating or building the segmenter. Variants wrapping an
/// underlying error name what was being done and expose the cause as `source()` (print the
/// chain, e.g. anyhow's `{:#}`, to see both).
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// Two inputs that must agree in shape do not.
    #[error("shape mismatch for {what}: {left:?} vs {right:?}")]
    ShapeMismatch {
        what: &'static str,
        left: Vec<usize>,
        right: Vec<usize>,
    },
    /// A tensor or buffer has a shape the function cannot take.
    #[error("bad shape for {what}: {shape:?} ({expected})")]
    BadShape {
        what: &'static str,
        shape: Vec<usize>,
        expected: &'static str,
    },
    /// A class id outside `0..num_classes`.
    #[error("{what}: class id {value} at flat index {index} is outside 0..{num_classes}")]
    ClassOutOfRange {
        what: &'static str,
        value: f64,
        index: usize,
        num_classes: usize,
    },
    /// A label value that is not a non-negative integer.
    #[error("{what}: value {value} at flat index {index} is not a non-negative integer class id")]
    InvalidLabel {
        what: &'static str,
        value: f64,
        index: usize,
    },
    /// A scalar argument outside its valid range.
    #[error("invalid {name} = {value}: {reason}")]
    InvalidArgument {
        name: &'static str,
        value: String,
        reason: &'static str,
    },
    /// A NaN or infinity where finite numbers are required.
    #[error("non-finite value {value} in {what} at flat index {index}")]
    NonFinite {
        what: &'static str,
        index: usize,
        value: f64,
    },
    /// A MONAI UNet config value this implementation does not support.
    #[error("unsupported MONAI UNet config `{field}` = {value}: {reason}")]
    UnsupportedConfig {
        field: &'static str,
        value: String,
        reason: String,
    },
    /// Reading a file failed.
    #[error("reading {path}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A config file is not valid JSON for the expected struct.
    #[error("parsing {path}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    /// Loading a weight file failed.
    #[error("loading weights {path}")]
    Weights {
        path: PathBuf,
        source: candle_core::Error,
    },
    /// A weight file whose tensors do not match the network; every problem is listed.
    #[error("{path}: the tensors do not match {network}: {problems}")]
    WeightMismatch {
        path: PathBuf,
        network: &'static str,
        /// Boxed: the lists would make every `Result` of this crate larger.
        problems: Box<WeightProblems>,
    },
    /// Writing a file or folder failed.
    #[error("writing {path}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A segmenter spec whose fields disagree or are unsupported.
    #[error("{path}: {reason}")]
    InvalidSpec { path: PathBuf, reason: String },
    /// Segmenter training met a NaN or infinite loss. `best_so_far` holds the weights of the
    /// best completed epoch (none when the first epoch did not complete).
    #[error(
        "segmenter training diverged: {} loss {value} in epoch {epoch}{}; {}",
        if step.is_some() { "training" } else { "validation" },
        step.map_or(String::new(), |s| format!(", step {s}")),
        best_so_far.as_ref().map_or(
            "no epoch completed, no weights kept".to_string(),
            |b| format!("weights of epoch {} kept", b.best_epoch())
        )
    )]
    TrainingDiverged {
        /// 1-based epoch.
        epoch: usize,
        /// 1-based step within the epoch; `None` for the validation pass.
        step: Option<usize>,
        value: f64,
        best_so_far: Option<Box<crate::segmenter_training::TrainedSegmenter>>,
    },
    /// Decoding or encoding a PNG failed, or it has the wrong size or pixel format.
    #[error("{path}: {detail}")]
    Png { path: PathBuf, detail: String },
    /// Generated images in an output folder were made with other settings than this run's.
    #[error(
        "{path}: the images there were generated with {field} = {recorded}, this run asks for \
         {requested}; use another output folder or delete that one"
    )]
    StaleGeneration {
        path: PathBuf,
        field: &'static str,
        recorded: String,
        requested: String,
    },
    /// Inputs of the evaluation that do not fit together (dataset, model, segmenter).
    #[error("{what}: {reason}")]
    Incompatible { what: String, reason: String },
    /// Reading the dataset failed (the message names the file). Boxed: the other crates' errors
    /// are large, and every `Result` of this crate would carry their size.
    /// An image file could not be read or written.
    #[error(transparent)]
    Image(#[from] segdiff_io::ImageFileError),
    #[error(transparent)]
    Data(Box<segdiff_data::DataError>),
    /// Loading the diffusion model or sampling failed.
    #[error(transparent)]
    Diffusion(Box<segdiff_diffusion::DiffusionError>),
    /// An error from candle (tensor ops, missing weights, ...).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl From<segdiff_data::DataError> for EvalError {
    fn from(e: segdiff_data::DataError) -> Self {
        Self::Data(Box::new(e))
    }
}

impl From<segdiff_diffusion::DiffusionError> for EvalError {
    fn from(e: segdiff_diffusion::DiffusionError) -> Self {
        Self::Diffusion(Box::new(e))
    }
}

/// A tensor whose shape differs from the network's: (name, expected shape, shape found).
pub type MisShapedTensor = (String, Vec<usize>, Vec<usize>);

/// What is wrong with a weight file, by tensor name (sorted within each list).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WeightProblems {
    /// Tensors the network needs that the file lacks.
    pub missing: Vec<String>,
    pub mis_shaped: Vec<MisShapedTensor>,
    /// Tensors of the file that the network does not use (and does not knowingly ignore).
    pub unexpected: Vec<String>,
}

impl WeightProblems {
    /// No problem at all.
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.mis_shaped.is_empty() && self.unexpected.is_empty()
    }
}

impl std::fmt::Display for WeightProblems {
    /// The counts, with the first few names of each kind.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const SHOWN: usize = 5;
        let list = |names: Vec<String>| {
            let more = names.len().saturating_sub(SHOWN);
            let mut text = names.into_iter().take(SHOWN).collect::<Vec<_>>().join(", ");
            if more > 0 {
                text.push_str(&format!(" and {more} more"));
            }
            text
        };
        let mut parts = Vec::new();
        if !self.missing.is_empty() {
            let names = list(self.missing.clone());
            parts.push(format!("{} missing ({names})", self.missing.len()));
        }
        if !self.mis_shaped.is_empty() {
            let shown = self
                .mis_shaped
                .iter()
                .map(|(n, want, got)| format!("{n}: expected {want:?}, found {got:?}"))
                .collect();
            parts.push(format!(
                "{} mis-shaped ({})",
                self.mis_shaped.len(),
                list(shown)
            ));
        }
        if !self.unexpected.is_empty() {
            let names = list(self.unexpected.clone());
            parts.push(format!("{} unexpected ({names})", self.unexpected.len()));
        }
        f.write_str(&parts.join("; "))
    }
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, EvalError>;
