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
//! - [`Monitor`]: a method's evaluation every N steps, logged, plotted, shown in
//!   `training.html`, with the best checkpoint kept in `checkpoints/best/`.
//!
//! Segmentation-guided diffusion (Konz et al. 2024, §2) on it: [`Trainer`] (ε-prediction MSE
//! with the optionally ablated mask as extra channels), [`DatasetBatches`] (a prepared dataset
//! as its batches) and [`DiffusionPreview`] (previews through the library sampler). With a
//! [`crate::NeighbourScheme`] the same [`Trainer`] also feeds an adjacent slice
//! ([`NeighbourBatches`]: pairs from a volume dataset's manifest).

pub mod batches;
pub mod checkpoint;
mod dataset_batches;
mod diffusion;
pub mod monitor;
mod neighbour_batches;
mod optimisation;
mod options;
mod preview;
mod run_log;
mod session;
mod step_loop;

pub use batches::{epoch_order, step_rng, BatchPlan};
pub use checkpoint::{
    list_checkpoints, read_checkpoint, write_checkpoint, write_checkpoint_folder, TrainingState,
    STATE_JSON, STATE_TENSORS,
};
pub use dataset_batches::DatasetBatches;
pub use diffusion::{
    seeded_unet_init, AdjacentSlices, DiffusionBatch, ImageMaskBatch, TrainOptions, Trainer,
};
pub use monitor::{BestEvaluation, EvaluateFn, Evaluation, Monitor};
pub use neighbour_batches::NeighbourBatches;
pub use optimisation::{AppliedStep, Optimisation};
pub use options::RunOptions;
pub use preview::DiffusionPreview;
pub use run_log::{write_loss_curve, LossLog};
pub use session::{PreviewFn, Session, SessionFiles};
pub use step_loop::{
    save_checkpoint, save_checkpoint_at, train, Loss, Method, StepLog, TrainCore, TrainData,
    TrainEvent,
};
