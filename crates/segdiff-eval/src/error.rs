//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong while evaluating or building the segmenter.
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
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A config file is not valid JSON for the expected struct.
    #[error("parsing {path}: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    /// Loading a weight file failed.
    #[error("loading weights {path}: {source}")]
    Weights {
        path: PathBuf,
        source: candle_core::Error,
    },
    /// An error from candle (tensor ops, missing weights, ...).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, EvalError>;
