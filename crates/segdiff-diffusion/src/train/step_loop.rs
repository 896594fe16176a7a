//! The optimisation loop every trainer runs: prefetched micro-batches, gradient accumulation,
//! the per-step seeded RNG, clipping, AdamW, EMA, the NaN stop and checkpoints on a cadence.
//! A method supplies its loss and its model files ([`Method`]); everything else is here.

use std::path::{Path, PathBuf};

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};
use rand::rngs::StdRng;
use serde::Serialize;

use super::batches::{step_rng, BatchPlan};
use super::checkpoint::{write_checkpoint, write_checkpoint_folder, TrainingState};
use super::optimisation::Optimisation;
use super::options::RunOptions;
use crate::{DiffusionError, Result};

/// A training set the loop can index; `load` may be called from a background thread.
pub trait TrainData: Sync {
    /// What one micro-batch is.
    type Batch: Send;
    /// Number of samples.
    fn len(&self) -> usize;
    /// `true` when there is nothing to train on.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Loads the samples at `indices` as one batch.
    fn load(&self, indices: &[usize]) -> Result<Self::Batch>;
}

/// The loss of one micro-batch.
pub struct Loss {
    /// A scalar with a graph to the trainable variables.
    pub total: Tensor,
    /// Values of the method's [`Method::term_names`], for the log.
    pub terms: Vec<f64>,
}

impl Loss {
    /// A loss with no separately logged terms.
    pub fn total(total: Tensor) -> Self {
        Self {
            total,
            terms: Vec::new(),
        }
    }
}

/// The shared state of a run: its options, trainable state and step.
pub struct TrainCore {
    pub run: RunOptions,
    pub optimisation: Optimisation,
    /// Optimiser steps done.
    pub step: usize,
}

/// What a trainable method supplies to the shared loop.
pub trait Method {
    /// What one micro-batch is.
    type Batch: Send;
    /// The options recorded in a checkpoint (the [`RunOptions`] flattened into the method's).
    type Options: Serialize;

    fn core(&self) -> &TrainCore;
    fn core_mut(&mut self) -> &mut TrainCore;
    /// The options to record in a checkpoint.
    fn options(&self) -> Self::Options;
    /// The loss of one micro-batch; every random draw comes from `rng`.
    fn loss(&self, batch: &Self::Batch, rng: &mut StdRng) -> Result<Loss>;
    /// Names of the extra loss terms logged beside the total.
    fn term_names(&self) -> Vec<&'static str> {
        Vec::new()
    }
    /// Writes the method's model files (with the weights to export) into `dir`.
    fn write_model(&self, dir: &Path) -> Result<()>;
}

/// One line of the loss log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepLog {
    pub step: usize,
    pub epoch: usize,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    /// Values of the method's [`Method::term_names`], summed over the micro-batches.
    pub terms: Vec<f64>,
}

/// Progress reported to the caller.
pub enum TrainEvent<'a, M> {
    /// An optimiser step finished; `trainer` holds the live weights after it.
    Step { log: &'a StepLog, trainer: &'a M },
    /// A checkpoint was written (its directory).
    Checkpoint(&'a Path),
}

/// Runs optimiser steps of `method` until its `total_steps` (or `stop_at`), checkpointing into
/// `out/checkpoints/` and reporting through `on_event`. Stops with an error, leaving the last
/// checkpoint intact, if the loss or the gradient norm becomes NaN or infinite.
pub fn train<M: Method>(
    method: &mut M,
    data: &dyn TrainData<Batch = M::Batch>,
    out: &Path,
    stop_at: Option<usize>,
    on_event: &mut dyn FnMut(TrainEvent<'_, M>),
) -> Result<()> {
    if data.is_empty() {
        return Err(DiffusionError::InvalidParameter {
            name: "dataset",
            value: "0 samples".into(),
            reason: "nothing to train on",
        });
    }
    let run = method.core().run.clone();
    let plan = plan(&run, data.len());
    let end = stop_at.unwrap_or(run.total_steps).min(run.total_steps);
    let schedule: Vec<(usize, usize)> = (method.core().step..end)
        .flat_map(|s| (0..run.grad_accumulation).map(move |k| (s, k)))
        .collect();
    // The next micro-batches are decoded on another thread while this one trains.
    std::thread::scope(|scope| -> Result<()> {
        let (tx_req, rx_req) = std::sync::mpsc::channel::<Vec<usize>>();
        let (tx_out, rx_out) = std::sync::mpsc::sync_channel::<Result<M::Batch>>(2);
        scope.spawn(move || {
            for idx in rx_req {
                if tx_out.send(data.load(&idx)).is_err() {
                    break;
                }
            }
        });
        let loader_stopped = || DiffusionError::train_data("the data loader stopped");
        let mut requested = 0usize;
        let mut request_next = || -> Result<()> {
            if let Some(&(s, k)) = schedule.get(requested) {
                tx_req
                    .send(plan.batch(s, k).1)
                    .map_err(|_| loader_stopped())?;
                requested += 1;
            }
            Ok(())
        };
        request_next()?;
        request_next()?;
        while method.core().step < end {
            let s = method.core().step;
            let vars = method.core().optimisation.vars();
            let mut grads: Option<GradStore> = None;
            let mut loss_sum = 0.0f64;
            let mut terms: Vec<f64> = Vec::new();
            for k in 0..run.grad_accumulation {
                let batch = rx_out.recv().map_err(|_| loader_stopped())??;
                request_next()?;
                let mut rng = step_rng(run.seed, s, k);
                let loss = method.loss(&batch, &mut rng)?;
                let scaled = (loss.total / run.grad_accumulation as f64)?;
                let value = scaled.to_dtype(DType::F64)?.to_scalar::<f64>()?;
                if !value.is_finite() {
                    return Err(DiffusionError::NonFiniteLoss { step: s, value });
                }
                loss_sum += value;
                terms.resize(loss.terms.len(), 0.0);
                for (sum, t) in terms.iter_mut().zip(&loss.terms) {
                    *sum += t / run.grad_accumulation as f64;
                }
                let g = scaled.backward()?;
                grads = Some(match grads {
                    None => g,
                    Some(acc) => accumulate(acc, &g, &vars)?,
                });
            }
            let mut grads = grads.ok_or_else(|| DiffusionError::InvalidParameter {
                name: "grad_accumulation",
                value: "0".into(),
                reason: "must be at least 1",
            })?;
            let applied = method.core_mut().optimisation.apply(&mut grads, s, &run)?;
            method.core_mut().step += 1;
            let step = method.core().step;
            let log = StepLog {
                step,
                epoch: plan.batch(s, run.grad_accumulation - 1).0,
                loss: loss_sum,
                lr: applied.lr,
                grad_norm: applied.grad_norm,
                terms,
            };
            on_event(TrainEvent::Step {
                log: &log,
                trainer: method,
            });
            let every = run.checkpoint_every;
            if step == end || (every > 0 && step.is_multiple_of(every)) {
                let dir = save_checkpoint(method, out, data.len())?;
                on_event(TrainEvent::Checkpoint(&dir));
            }
        }
        Ok(())
    })
}

/// Writes `method`'s checkpoint for its current step (see [`write_checkpoint`]).
pub fn save_checkpoint<M: Method>(method: &M, out: &Path, dataset_len: usize) -> Result<PathBuf> {
    let (state, tensors) = checkpoint_contents(method, dataset_len)?;
    write_checkpoint(
        out,
        &state,
        &tensors,
        method.core().run.keep_checkpoints,
        |dir| method.write_model(dir),
    )
}

/// Writes `method`'s checkpoint for its current step into the folder `dir` (any name; never
/// pruned), with `extra` adding files of the caller's before the folder is swapped in.
pub fn save_checkpoint_at<M: Method>(
    method: &M,
    dir: &Path,
    dataset_len: usize,
    extra: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    let (state, tensors) = checkpoint_contents(method, dataset_len)?;
    write_checkpoint_folder(dir, &state, &tensors, |staged| {
        method.write_model(staged)?;
        extra(staged)
    })
}

type Contents<O> = (TrainingState<O>, std::collections::HashMap<String, Tensor>);

fn checkpoint_contents<M: Method>(method: &M, dataset_len: usize) -> Result<Contents<M::Options>> {
    let core = method.core();
    let state = TrainingState {
        step: core.step,
        options: method.options(),
        rng: format!("StdRng re-derived from seed {} and the step", core.run.seed),
        epoch: plan(&core.run, dataset_len).epochs_done(core.step),
        dataset_len,
    };
    Ok((state, core.optimisation.state_tensors()?))
}

fn plan(run: &RunOptions, len: usize) -> BatchPlan {
    BatchPlan {
        seed: run.seed,
        len,
        batch_size: run.batch_size,
        grad_accumulation: run.grad_accumulation,
    }
}

/// `acc + g` for every variable (gradient accumulation over micro-batches).
fn accumulate(mut acc: GradStore, g: &GradStore, vars: &[Var]) -> Result<GradStore> {
    for v in vars {
        if let Some(new) = g.get(v.as_tensor()) {
            let sum = match acc.get(v.as_tensor()) {
                Some(old) => (old + new)?,
                None => new.clone(),
            };
            acc.insert(v.as_tensor(), sum);
        }
    }
    Ok(acc)
}
