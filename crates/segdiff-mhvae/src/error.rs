//! The crate's error type.

/// Everything that can go wrong in the MHVAE crate. Variants name the value or argument at fault.
#[derive(Debug, thiserror::Error)]
pub enum MhvaeError {
    /// A tensor has a shape the function cannot take.
    #[error("bad shape for {what}: {shape:?} ({expected})")]
    BadShape {
        what: &'static str,
        shape: Vec<usize>,
        expected: String,
    },
    /// A scalar or configuration value outside its valid range.
    #[error("invalid {name} = {value}: {reason}")]
    InvalidArgument {
        name: &'static str,
        value: String,
        reason: String,
    },
    /// The thin-plate-spline system of the control points is singular (e.g. repeated or collinear
    /// points).
    #[error("the thin-plate-spline system of {count} control points is singular: {reason}")]
    SingularControlPoints { count: usize, reason: String },
    /// A model folder (`mhvae.json`, `model.safetensors`) is missing, unreadable or inconsistent.
    #[error("{path}: {message}")]
    ModelFile {
        path: std::path::PathBuf,
        message: String,
    },
    /// The shared training machinery or sampling failed.
    #[error(transparent)]
    Diffusion(#[from] segdiff_diffusion::DiffusionError),
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// The crate's result type.
pub type Result<T, E = MhvaeError> = std::result::Result<T, E>;
