//! Training: one machinery every trainer shares, and segmentation-guided diffusion on it.
//!
//! The machinery (method-agnostic; a new method adds its loss and model files through
//! [`Method`] and reuses the rest):
//! - [`RunOptions`]: optimiser, schedule, batches, seed, checkpoint cadence.
//! - [`train`]: the loop — prefetched micro-batches ([`TrainData`]), gradient accumulation,
//!   AdamW with warm-up + cosine learning rate, grad-norm clipping, EMA ([`Optimisation`]), the
//!   NaN stop, checkpoints on a cadence.
//! - [`batches`]: every random draw of optimiser step `s` comes from an RNG seeded by
//!   `(seed, s)`, and the data order of epoch `e` from `(seed, e)`, so a run is a pure function
//!   of its seed and resuming from any checkpoint continues bit for bit.
//! - [`checkpoint`]: atomic checkpoint folders, their listing and reading.
//! - [`Session`]: progress bar, `train_log.csv`, previews, `loss.png`.
//!
//! Segmentation-guided diffusion (Konz et al. 2024, §2) on it: [`Trainer`] (ε-prediction MSE
//! with the optionally ablated mask as extra channels), [`DatasetBatches`] (a prepared dataset
//! as its batches) and [`DiffusionPreview`] (previews through the library sampler).

pub mod batches;
pub mod checkpoint;
mod dataset_batches;
mod diffusion;
mod optimisation;
mod options;
mod preview;
mod run_log;
mod session;
mod step_loop;

pub use batches::{epoch_order, step_rng, BatchPlan};
pub use checkpoint::{
    list_checkpoints, read_checkpoint, write_checkpoint, TrainingState, STATE_JSON, STATE_TENSORS,
};
pub use dataset_batches::DatasetBatches;
pub use diffusion::{seeded_unet_init, ImageMaskBatch, TrainOptions, Trainer};
pub use optimisation::{AppliedStep, Optimisation};
pub use options::RunOptions;
pub use preview::DiffusionPreview;
pub use run_log::{write_loss_curve, LossLog};
pub use session::{PreviewFn, Session, SessionFiles};
pub use step_loop::{
    save_checkpoint, train, Loss, Method, StepLog, TrainCore, TrainData, TrainEvent,
};
