//! Error type of the crate: every variant carries the value (and, for files, the path) at fault.

use std::path::PathBuf;

/// Errors raised by schedulers, config loading, sampling, mask conditioning and optimisation.
#[derive(Debug, thiserror::Error)]
pub enum DiffusionError {
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    /// An image file (a preview, a loss curve) could not be read or written.
    #[error(transparent)]
    Image(#[from] segdiff_io::ImageFileError),

    /// A scheduler config file could not be read or written (the cause is the `source()`).
    #[error("scheduler config {path}")]
    ConfigIo {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A scheduler config is not valid JSON or not a JSON object.
    #[error("scheduler config{}: {message}", path_suffix(.path))]
    ConfigParse {
        path: Option<PathBuf>,
        message: String,
    },

    /// A config field holds a value this crate cannot use: the wrong JSON type, an invalid value,
    /// or one diffusers accepts but this crate does not implement.
    #[error("scheduler config{} field `{field}` of {class}: {problem}", path_suffix(.path))]
    UnsupportedConfigValue {
        path: Option<PathBuf>,
        class: String,
        field: String,
        problem: String,
    },

    /// `_class_name` names a scheduler this crate does not implement.
    #[error("scheduler config: unsupported _class_name {0:?} (expected DDPMScheduler, DDIMScheduler or DPMSolverMultistepScheduler)")]
    UnsupportedScheduler(String),

    /// `set_timesteps` was asked for an impossible number of inference steps.
    #[error("num_inference_steps {requested} must be in 1..={num_train_timesteps}")]
    InvalidInferenceSteps {
        requested: usize,
        num_train_timesteps: usize,
    },

    /// `step` was called before `set_timesteps` on a scheduler that needs it.
    #[error("{0}: call set_timesteps before step")]
    TimestepsNotSet(&'static str),

    /// A timestep is outside the training range.
    #[error("timestep {timestep} out of range 0..{num_train_timesteps}")]
    TimestepOutOfRange {
        timestep: usize,
        num_train_timesteps: usize,
    },

    /// `step` got a timestep that is not the one the scheduler expects next.
    #[error(
        "{scheduler}: timestep {timestep} is not in the current schedule (expected {expected:?})"
    )]
    TimestepNotInSchedule {
        scheduler: &'static str,
        timestep: usize,
        expected: Option<usize>,
    },

    /// A stochastic step was requested without a noise source.
    #[error("{scheduler} step at t={timestep} needs variance noise: pass StepNoise::Tensor or StepNoise::Rng")]
    NoiseRequired {
        scheduler: &'static str,
        timestep: usize,
    },

    /// `eta` is negative, non-finite, or was set on a scheduler that has no eta.
    #[error("{scheduler}: invalid eta {eta}")]
    InvalidEta { scheduler: &'static str, eta: f64 },

    /// Two tensors that must agree in shape do not.
    #[error("{what}: shape {got:?} does not match expected {expected:?}")]
    ShapeMismatch {
        what: &'static str,
        got: Vec<usize>,
        expected: Vec<usize>,
    },

    /// `add_noise` got a number of timesteps different from the batch size.
    #[error("add_noise: {timesteps} timesteps for a batch of {batch}")]
    TimestepCountMismatch { timesteps: usize, batch: usize },

    /// A mask holds a class id that is not below `num_classes`.
    #[error("mask class id {value} at flat index {index} is not < num_classes {num_classes}")]
    MaskClassOutOfRange {
        value: u32,
        index: usize,
        num_classes: usize,
    },

    /// A mask tensor has an unsupported dtype or rank.
    #[error("mask tensor: {0}")]
    InvalidMask(String),

    /// A parameter of a mask, sampling or optimisation routine is out of range.
    #[error("invalid {name}: {value} ({reason})")]
    InvalidParameter {
        name: &'static str,
        value: String,
        reason: &'static str,
    },

    /// Optimiser or EMA state does not fit the variables it is restored into.
    #[error("optimiser state: {0}")]
    InvalidState(String),

    /// A [`TrainData`](crate::train::TrainData) source could not deliver a batch; the cause (a
    /// data-crate error, or a plain message) is the `source()`. Build it with
    /// [`DiffusionError::train_data`].
    #[error("training data")]
    TrainData {
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// A training method's own computation (its loss, its model files) failed; the cause (the
    /// method crate's error) is the `source()`. Build it with [`DiffusionError::method`].
    #[error("{what}")]
    Method {
        what: &'static str,
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// The training monitor's evaluation failed at a step; the cause is the `source()`.
    #[error("evaluating the model at step {step} (training monitor)")]
    Monitor {
        step: usize,
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// The denoiser could not be built, loaded or saved.
    #[error(transparent)]
    Unet(#[from] segdiff_unet::UnetError),

    /// Training produced a NaN or infinite loss (or gradient norm).
    #[error("training diverged at step {step}: loss {value} is not finite (the last checkpoint is intact; lower --lr or check the data)")]
    NonFiniteLoss { step: usize, value: f64 },

    /// A model directory (or its `segdiff.json`) is missing, unreadable or inconsistent.
    #[error("{path}: {message}")]
    ModelDir { path: PathBuf, message: String },
}

impl DiffusionError {
    /// A [`DiffusionError::Method`]: `what` the method was doing, and the cause.
    pub fn method(
        what: &'static str,
        cause: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::Method {
            what,
            source: cause.into(),
        }
    }

    /// A [`DiffusionError::TrainData`] from an error (kept whole as the source) or a message.
    pub fn train_data(cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::TrainData {
            source: cause.into(),
        }
    }
}

fn path_suffix(path: &Option<PathBuf>) -> String {
    match path {
        Some(p) => format!(" {}", p.display()),
        None => String::new(),
    }
}

/// Result alias of the crate.
pub type Result<T, E = DiffusionError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    /// The message and every source, joined as anyhow's `{:#}` prints them.
    fn chain(e: &DiffusionError) -> String {
        let top: &dyn std::error::Error = e;
        std::iter::successors(Some(top), |e| e.source())
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join(": ")
    }

    #[test]
    fn wrapped_causes_appear_once_in_the_chain() {
        let e = DiffusionError::ConfigIo {
            path: PathBuf::from("/m/scheduler_config.json"),
            source: std::io::Error::other("disk on fire"),
        };
        assert_eq!(
            chain(&e),
            "scheduler config /m/scheduler_config.json: disk on fire"
        );
        // An error is kept whole as the source, a message becomes one.
        let e = DiffusionError::train_data(e);
        assert_eq!(
            chain(&e),
            "training data: scheduler config /m/scheduler_config.json: disk on fire"
        );
        let e = DiffusionError::train_data(format!("{}: no mask", "b.png"));
        assert_eq!(chain(&e), "training data: b.png: no mask");
    }
}
