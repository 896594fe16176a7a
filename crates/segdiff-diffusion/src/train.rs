//! The training loop of segmentation-guided diffusion (Konz et al. 2024, §2): ε-prediction MSE
//! on noised images with the (optionally ablated) mask concatenated as extra channels; AdamW,
//! cosine schedule with warm-up, grad-norm clipping, optional EMA, gradient accumulation;
//! atomic checkpoints that resume exactly.
//!
//! Every random draw of optimiser step `s` (noise, timesteps, ablation) comes from an RNG seeded
//! by `(seed, s)`, and the data order of epoch `e` from `(seed, e)`, so a run is a pure function
//! of its seed and resuming from any checkpoint continues bit for bit.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use segdiff_unet::{expected_parameters, UNet2DConfig, UNet2DModel};
use serde::{Deserialize, Serialize};

use crate::config::SchedulerConfig;
use crate::mask_conditioning::{encode_mask, AblationMode, MaskAblation};
use crate::model_dir::{save_model_dir, ConditioningMeta};
use crate::optim::{
    clip_grad_norm, cosine_schedule_with_warmup, AdamW, AdamWConfig, Ema, EmaDecay,
};
use crate::random::{randn, sample_timesteps};
use crate::{DiffusionError, Result};

/// A training set the loop can index: image `i` as (C, H, W) f32 in [-1, 1] and its class-id
/// mask as (H, W) (u8 or u32). `load` may be called from a background thread.
pub trait TrainData: Sync {
    /// Number of samples.
    fn len(&self) -> usize;
    /// `true` when there is nothing to train on.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Loads the samples at `indices` as a batch: images (N, C, H, W) f32, masks (N, H, W) u32.
    fn load(&self, indices: &[usize]) -> Result<(Tensor, Tensor)>;
}

/// Hyper-parameters of a run; the defaults are the paper's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainOptions {
    pub lr: f64,
    pub adam_beta1: f64,
    pub adam_beta2: f64,
    pub adam_eps: f64,
    pub weight_decay: f64,
    pub warmup_steps: usize,
    /// Optimiser steps of the whole run (the cosine schedule's length).
    pub total_steps: usize,
    pub batch_size: usize,
    pub grad_accumulation: usize,
    pub max_grad_norm: f64,
    /// EMA of the weights (diffusers `EMAModel` warm-up, this maximum decay); `None` = off.
    pub ema_max_decay: Option<f64>,
    /// Mask ablation: probability of removing each class; `None` = off.
    pub ablation_p: Option<f64>,
    /// `true`: one ablation draw per batch (the official code); `false`: per sample (paper).
    pub ablation_per_batch: bool,
    pub seed: u64,
    /// Write a checkpoint every this many optimiser steps (0 = only at the end).
    pub checkpoint_every: usize,
    /// Checkpoints kept (oldest removed first; at least 1).
    pub keep_checkpoints: usize,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            lr: 1e-4,
            adam_beta1: 0.9,
            adam_beta2: 0.999,
            adam_eps: 1e-8,
            weight_decay: 0.01,
            warmup_steps: 500,
            total_steps: 1000,
            batch_size: 16,
            grad_accumulation: 1,
            max_grad_norm: 1.0,
            ema_max_decay: None,
            ablation_p: None,
            ablation_per_batch: false,
            seed: 0,
            checkpoint_every: 0,
            keep_checkpoints: 3,
        }
    }
}

/// What a checkpoint's `training_state.json` holds beside the tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingState {
    /// Optimiser steps completed.
    pub step: usize,
    pub options: TrainOptions,
    /// The RNG is re-derived from (seed, step); stored for the record.
    pub rng: String,
    pub epoch: usize,
    pub dataset_len: usize,
}

/// One line of the loss log.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StepLog {
    pub step: usize,
    pub epoch: usize,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
}

/// Progress reported to the caller.
pub enum TrainEvent<'a> {
    /// An optimiser step finished; `model` holds the live weights after it.
    Step {
        log: &'a StepLog,
        model: &'a UNet2DModel,
    },
    /// A checkpoint was written (its directory).
    Checkpoint(&'a Path),
}

/// The trainer: the model's variables, optimiser, EMA and schedule.
pub struct Trainer {
    pub unet_config: UNet2DConfig,
    pub meta: ConditioningMeta,
    pub scheduler: SchedulerConfig,
    pub options: TrainOptions,
    varmap: VarMap,
    model: UNet2DModel,
    optimizer: AdamW,
    ema: Option<Ema>,
    ablation: Option<MaskAblation>,
    step: usize,
    device: Device,
}

/// Parameters initialised as PyTorch initialises diffusers' `UNet2DModel` (uniform ±1/√fan_in for
/// convolution and linear weights and biases, GroupNorm weight 1 and bias 0), drawn from `seed`
/// in name order.
pub fn seeded_unet_init(
    config: &UNet2DConfig,
    seed: u64,
    device: &Device,
) -> Result<HashMap<String, Tensor>> {
    let params = expected_parameters(config)?;
    let shapes: HashMap<&str, &Vec<usize>> = params.iter().map(|(n, s)| (n.as_str(), s)).collect();
    let mut names: Vec<&String> = params.iter().map(|(n, _)| n).collect();
    names.sort();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = HashMap::with_capacity(names.len());
    for name in names {
        let shape = shapes[name.as_str()];
        let n: usize = shape.iter().product();
        let is_norm = name.contains("norm");
        let values: Vec<f32> = if is_norm {
            vec![if name.ends_with(".weight") { 1.0 } else { 0.0 }; n]
        } else {
            // A bias takes the fan-in of its layer's weight.
            let weight_name = name.strip_suffix(".bias").map(|p| format!("{p}.weight"));
            let wshape = weight_name
                .as_deref()
                .and_then(|w| shapes.get(w).copied())
                .unwrap_or(shape);
            let fan_in: usize = wshape.iter().skip(1).product::<usize>().max(1);
            let bound = 1.0 / (fan_in as f32).sqrt();
            (0..n).map(|_| rng.random_range(-bound..bound)).collect()
        };
        out.insert(
            name.clone(),
            Tensor::from_vec(values, shape.clone(), device)?,
        );
    }
    Ok(out)
}

fn step_rng(seed: u64, step: usize, micro: usize) -> StdRng {
    // SplitMix-style mixing so neighbouring steps get unrelated streams.
    let mut z = seed
        .wrapping_add(0x9E37_79B9_7F4A_7C15u64.wrapping_mul(step as u64 + 1))
        .wrapping_add((micro as u64) << 48);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    StdRng::seed_from_u64(z ^ (z >> 31))
}

/// The sample order of `epoch`: a permutation of `0..len` from `(seed, epoch)`.
pub fn epoch_order(seed: u64, epoch: usize, len: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    let mut rng = step_rng(seed ^ 0xDA7A_0DE5, epoch, 7);
    order.shuffle(&mut rng);
    order
}

impl Trainer {
    /// A fresh model initialised from `options.seed`.
    pub fn new(
        unet_config: UNet2DConfig,
        meta: ConditioningMeta,
        scheduler: SchedulerConfig,
        options: TrainOptions,
        device: &Device,
    ) -> Result<Self> {
        let init = seeded_unet_init(&unet_config, options.seed, device)?;
        Self::from_weights(unet_config, meta, scheduler, options, init, device)
    }

    /// A model starting from given weights (fine-tuning, or a checkpoint).
    pub fn from_weights(
        unet_config: UNet2DConfig,
        meta: ConditioningMeta,
        scheduler: SchedulerConfig,
        options: TrainOptions,
        weights: HashMap<String, Tensor>,
        device: &Device,
    ) -> Result<Self> {
        validate_options(&options)?;
        meta.check_against(&unet_config, Path::new(crate::model_dir::META_NAME))?;
        if meta.segmentation_guided && meta.num_classes.is_none() {
            return Err(DiffusionError::InvalidParameter {
                name: "num_classes",
                value: "unknown".into(),
                reason: "a segmentation-guided model needs its class count",
            });
        }
        let varmap = VarMap::new();
        {
            let mut data = varmap.data().lock().map_err(|_| lock_err())?;
            for (name, t) in weights {
                data.insert(
                    name,
                    Var::from_tensor(&t.to_dtype(DType::F32)?.to_device(device)?)?,
                );
            }
        }
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
        let model = UNet2DModel::new(&unet_config, vb)?;
        let vars = crate::optim::named_vars(&varmap);
        let expected = expected_parameters(&unet_config)?.len();
        if vars.len() != expected {
            return Err(DiffusionError::InvalidState(format!(
                "the weights hold {} tensors, the config needs {expected}",
                vars.len()
            )));
        }
        let optimizer = AdamW::from_named_vars(
            vars.clone(),
            AdamWConfig {
                lr: options.lr,
                beta1: options.adam_beta1,
                beta2: options.adam_beta2,
                eps: options.adam_eps,
                weight_decay: options.weight_decay,
            },
        )?;
        let ema = match options.ema_max_decay {
            Some(d) => Some(Ema::from_named_vars(
                &vars,
                EmaDecay::DiffusersWarmup { max_decay: d },
            )?),
            None => None,
        };
        let ablation = match (meta.segmentation_guided, options.ablation_p) {
            (true, Some(p)) => Some(MaskAblation::new(
                meta.num_classes.unwrap_or(1),
                p,
                if options.ablation_per_batch {
                    AblationMode::PerBatch
                } else {
                    AblationMode::PerSample
                },
            )?),
            _ => None,
        };
        Ok(Self {
            unet_config,
            meta,
            scheduler,
            options,
            varmap,
            model,
            optimizer,
            ema,
            ablation,
            step: 0,
            device: device.clone(),
        })
    }

    /// Optimiser steps done so far.
    pub fn step(&self) -> usize {
        self.step
    }

    /// The live model (its weights are the trainable variables).
    pub fn model(&self) -> &UNet2DModel {
        &self.model
    }

    /// Current weights (the EMA weights when EMA is on, as diffusers exports them).
    pub fn export_weights(&self) -> HashMap<String, Tensor> {
        match &self.ema {
            Some(ema) => ema.weights(),
            None => self.live_weights(),
        }
    }

    fn live_weights(&self) -> HashMap<String, Tensor> {
        crate::optim::named_vars(&self.varmap)
            .into_iter()
            .map(|(n, v)| (n, v.as_tensor().clone()))
            .collect()
    }

    /// Micro-batches per epoch actually used (a multiple of the accumulation count).
    fn micro_per_epoch(&self, len: usize) -> usize {
        let micro = len.div_ceil(self.options.batch_size);
        (micro / self.options.grad_accumulation).max(1) * self.options.grad_accumulation
    }

    /// Indices of micro-batch `k` of optimiser step `step`.
    fn batch_indices(&self, step: usize, k: usize, len: usize) -> (usize, Vec<usize>) {
        let bs = self.options.batch_size;
        let micro_per_epoch = len.div_ceil(bs);
        let usable = self.micro_per_epoch(len);
        let global = step * self.options.grad_accumulation + k;
        let epoch = global / usable;
        // With fewer micro-batches than the accumulation count the epoch's batches repeat.
        let pos = (global % usable) % micro_per_epoch;
        let order = epoch_order(self.options.seed, epoch, len);
        let start = pos * bs;
        let end = (start + bs).min(len);
        (epoch, order[start..end].to_vec())
    }

    /// The ε-prediction loss of one micro-batch (a scalar with a graph to the variables).
    fn micro_loss(&self, images: &Tensor, masks: &Tensor, rng: &mut StdRng) -> Result<Tensor> {
        let (n, c, h, w) = images.dims4()?;
        if c != self.meta.image_channels {
            return Err(DiffusionError::InvalidParameter {
                name: "images",
                value: format!("{c} channels"),
                reason: "the model's image channel count differs",
            });
        }
        let sched = self.scheduler.build()?;
        let noise = randn(rng, (n, c, h, w), DType::F32, &self.device)?;
        let timesteps = sample_timesteps(rng, n, sched.num_train_timesteps())?;
        let noisy = sched.add_noise(images, &noise, &timesteps)?;
        let target = sched.training_target(images, &noise, &timesteps)?;
        let input = if self.meta.segmentation_guided {
            let num_classes = self.meta.num_classes.unwrap_or(1);
            let masks = match &self.ablation {
                Some(a) => a.apply(masks, rng)?.0,
                None => masks.clone(),
            };
            let enc =
                encode_mask(&masks, num_classes, self.meta.encoding()?)?.to_device(&self.device)?;
            Tensor::cat(&[&noisy, &enc], 1)?
        } else {
            noisy
        };
        let t = crate::noise_schedule::timesteps_tensor(&timesteps, &self.device)?;
        let pred = self.model.forward(&input, &t)?;
        Ok((pred - target)?.sqr()?.mean_all()?)
    }

    /// Runs optimiser steps until `options.total_steps` (or `stop_at`), checkpointing into
    /// `out/checkpoints/` and reporting through `on_event`. Stops with an error, leaving the last
    /// checkpoint intact, if the loss becomes NaN or infinite.
    pub fn train(
        &mut self,
        data: &dyn TrainData,
        out: &Path,
        stop_at: Option<usize>,
        on_event: &mut dyn FnMut(TrainEvent<'_>),
    ) -> Result<()> {
        if data.is_empty() {
            return Err(DiffusionError::InvalidParameter {
                name: "dataset",
                value: "0 samples".into(),
                reason: "nothing to train on",
            });
        }
        let len = data.len();
        let end = stop_at
            .unwrap_or(self.options.total_steps)
            .min(self.options.total_steps);
        let accum = self.options.grad_accumulation;
        let vars: Vec<Var> = self.optimizer.vars();
        // The next step's first micro-batch is decoded on another thread while this one trains.
        std::thread::scope(|scope| -> Result<()> {
            let (tx_req, rx_req) = std::sync::mpsc::channel::<Vec<usize>>();
            let (tx_out, rx_out) = std::sync::mpsc::sync_channel::<Result<(Tensor, Tensor)>>(2);
            scope.spawn(move || {
                for idx in rx_req {
                    if tx_out.send(data.load(&idx)).is_err() {
                        break;
                    }
                }
            });
            let mut requested = 0usize;
            let schedule: Vec<(usize, usize)> = (self.step..end)
                .flat_map(|s| (0..accum).map(move |k| (s, k)))
                .collect();
            let request = |i: usize, me: &Self| -> Result<()> {
                if let Some(&(s, k)) = schedule.get(i) {
                    let (_, idx) = me.batch_indices(s, k, len);
                    tx_req
                        .send(idx)
                        .map_err(|_| DiffusionError::InvalidState("data loader stopped".into()))?;
                }
                Ok(())
            };
            request(0, self)?;
            request(1, self)?;
            requested += 2;
            while self.step < end {
                let s = self.step;
                let mut grads: Option<candle_core::backprop::GradStore> = None;
                let mut loss_sum = 0.0f64;
                let mut epoch = 0;
                for k in 0..accum {
                    let (images, masks) = rx_out.recv().map_err(|_| {
                        DiffusionError::InvalidState("data loader stopped".into())
                    })??;
                    if requested < schedule.len() {
                        request(requested, self)?;
                        requested += 1;
                    }
                    epoch = self.batch_indices(s, k, len).0;
                    let mut rng = step_rng(self.options.seed, s, k);
                    let images = images.to_device(&self.device)?;
                    let loss = (self.micro_loss(&images, &masks, &mut rng)? / accum as f64)?;
                    let value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
                    if !value.is_finite() {
                        return Err(DiffusionError::NonFiniteLoss { step: s, value });
                    }
                    loss_sum += value;
                    let g = loss.backward()?;
                    grads = Some(match grads {
                        None => g,
                        Some(mut acc) => {
                            for v in &vars {
                                if let Some(new) = g.get(v.as_tensor()) {
                                    let sum = match acc.get(v.as_tensor()) {
                                        Some(old) => (old + new)?,
                                        None => new.clone(),
                                    };
                                    acc.insert(v.as_tensor(), sum);
                                }
                            }
                            acc
                        }
                    });
                }
                let mut grads =
                    grads.ok_or_else(|| DiffusionError::InvalidState("no gradient".into()))?;
                let grad_norm = clip_grad_norm(&mut grads, &vars, self.options.max_grad_norm)?;
                if !grad_norm.is_finite() {
                    return Err(DiffusionError::NonFiniteLoss {
                        step: s,
                        value: grad_norm,
                    });
                }
                let lr = self.options.lr
                    * cosine_schedule_with_warmup(
                        s,
                        self.options.warmup_steps,
                        self.options.total_steps,
                    );
                self.optimizer.set_learning_rate(lr);
                self.optimizer.step(&grads)?;
                if let Some(ema) = &mut self.ema {
                    ema.update(self.optimizer.named_vars())?;
                }
                self.step += 1;
                let log = StepLog {
                    step: self.step,
                    epoch,
                    loss: loss_sum,
                    lr,
                    grad_norm,
                };
                on_event(TrainEvent::Step {
                    log: &log,
                    model: &self.model,
                });
                let every = self.options.checkpoint_every;
                if self.step == end || (every > 0 && self.step.is_multiple_of(every)) {
                    let dir = self.save_checkpoint(out, len)?;
                    on_event(TrainEvent::Checkpoint(&dir));
                }
            }
            Ok(())
        })
    }

    /// Writes `out/checkpoints/step-NNNNNNN/` atomically (a temporary folder renamed into place)
    /// and removes the oldest checkpoints beyond `keep_checkpoints`.
    pub fn save_checkpoint(&self, out: &Path, dataset_len: usize) -> Result<PathBuf> {
        let root = out.join("checkpoints");
        std::fs::create_dir_all(&root).map_err(|e| io(&root, e))?;
        let name = format!("step-{:07}", self.step);
        let final_dir = root.join(&name);
        let tmp = root.join(format!(".{name}.tmp-{}", std::process::id()));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
        }
        let result = (|| -> Result<()> {
            std::fs::create_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
            save_model_dir(
                &tmp,
                &self.unet_config,
                &self.export_weights(),
                &self.scheduler,
                &self.meta,
            )?;
            let mut state = self.optimizer.state_tensors()?;
            for (k, v) in self.live_weights() {
                state.insert(format!("live.{k}"), v);
            }
            if let Some(ema) = &self.ema {
                for (k, v) in ema.weights() {
                    state.insert(format!("ema.{k}"), v);
                }
                state.insert(
                    "ema.__num_updates".into(),
                    Tensor::new(&[ema.num_updates() as i64], &Device::Cpu)?,
                );
            }
            let st_path = tmp.join(STATE_TENSORS);
            let state: HashMap<String, Tensor> = state
                .into_iter()
                .map(|(k, v)| Ok((k, v.to_device(&Device::Cpu)?.contiguous()?)))
                .collect::<Result<_>>()?;
            segdiff_unet::write_atomic(&st_path, |p| {
                candle_core::safetensors::save(&state, p).map_err(std::io::Error::other)
            })
            .map_err(|e| io(&st_path, e))?;
            let info = TrainingState {
                step: self.step,
                options: self.options.clone(),
                rng: format!(
                    "StdRng re-derived from seed {} and the step",
                    self.options.seed
                ),
                epoch: self.step * self.options.grad_accumulation
                    / self.micro_per_epoch(dataset_len),
                dataset_len,
            };
            let js_path = tmp.join(STATE_JSON);
            let text = serde_json::to_string_pretty(&info).unwrap_or_default();
            segdiff_unet::write_atomic(&js_path, |p| std::fs::write(p, text.as_bytes()))
                .map_err(|e| io(&js_path, e))?;
            if final_dir.exists() {
                std::fs::remove_dir_all(&final_dir).map_err(|e| io(&final_dir, e))?;
            }
            std::fs::rename(&tmp, &final_dir).map_err(|e| io(&final_dir, e))?;
            if let Ok(d) = std::fs::File::open(&root) {
                let _ = d.sync_all();
            }
            Ok(())
        })();
        if let Err(e) = result {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        let mut all = list_checkpoints(out)?;
        let keep = self.options.keep_checkpoints.max(1);
        while all.len() > keep {
            let (_, old) = all.remove(0);
            std::fs::remove_dir_all(&old).map_err(|e| io(&old, e))?;
        }
        Ok(final_dir)
    }

    /// Restores a trainer from a checkpoint folder written by [`Trainer::save_checkpoint`].
    pub fn resume(
        checkpoint: &Path,
        unet_config: UNet2DConfig,
        meta: ConditioningMeta,
        scheduler: SchedulerConfig,
        device: &Device,
    ) -> Result<Self> {
        let js_path = checkpoint.join(STATE_JSON);
        let text = std::fs::read_to_string(&js_path).map_err(|e| io(&js_path, e))?;
        let info: TrainingState =
            serde_json::from_str(&text).map_err(|e| DiffusionError::ModelDir {
                path: js_path.clone(),
                message: e.to_string(),
            })?;
        let st_path = checkpoint.join(STATE_TENSORS);
        let state = candle_core::safetensors::load(&st_path, device).map_err(|e| {
            DiffusionError::ModelDir {
                path: st_path.clone(),
                message: e.to_string(),
            }
        })?;
        let live: HashMap<String, Tensor> = state
            .iter()
            .filter_map(|(k, v)| k.strip_prefix("live.").map(|n| (n.to_string(), v.clone())))
            .collect();
        let mut t = Self::from_weights(
            unet_config,
            meta,
            scheduler,
            info.options.clone(),
            live,
            device,
        )?;
        let opt: HashMap<String, Tensor> = state
            .iter()
            .filter(|(k, _)| !k.starts_with("live.") && !k.starts_with("ema."))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        t.optimizer.load_state_tensors(&opt)?;
        if let Some(ema) = &mut t.ema {
            let w: HashMap<String, Tensor> = state
                .iter()
                .filter_map(|(k, v)| {
                    k.strip_prefix("ema.")
                        .filter(|n| !n.starts_with("__"))
                        .map(|n| (n.to_string(), v.clone()))
                })
                .collect();
            let n = state
                .get("ema.__num_updates")
                .map(|v| v.to_vec1::<i64>().map(|x| x.first().copied().unwrap_or(0)))
                .transpose()?
                .unwrap_or(0);
            ema.load_weights(&w, n as u64)?;
        }
        t.step = info.step;
        Ok(t)
    }

    /// Replaces the run length (e.g. to extend a finished run when resuming).
    pub fn set_total_steps(&mut self, total: usize) {
        self.options.total_steps = total;
    }
}

/// File of a checkpoint holding optimiser moments, live and EMA weights.
pub const STATE_TENSORS: &str = "training_state.safetensors";
/// File of a checkpoint holding the step, options and RNG description.
pub const STATE_JSON: &str = "training_state.json";

/// Checkpoints under `out/checkpoints`, oldest first.
pub fn list_checkpoints(out: &Path) -> Result<Vec<(usize, PathBuf)>> {
    let root = out.join("checkpoints");
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(&root) else {
        return Ok(found);
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(n) = name
            .strip_prefix("step-")
            .and_then(|s| s.parse::<usize>().ok())
        {
            if e.path().join(STATE_JSON).is_file() {
                found.push((n, e.path()));
            }
        }
    }
    found.sort();
    Ok(found)
}

fn validate_options(o: &TrainOptions) -> Result<()> {
    let bad = |name: &'static str, value: String, reason: &'static str| {
        Err(DiffusionError::InvalidParameter {
            name,
            value,
            reason,
        })
    };
    if o.batch_size == 0 {
        return bad("batch_size", "0".into(), "must be at least 1");
    }
    if o.grad_accumulation == 0 {
        return bad("grad_accumulation", "0".into(), "must be at least 1");
    }
    if !(o.lr.is_finite() && o.lr > 0.0) {
        return bad("lr", o.lr.to_string(), "must be positive");
    }
    if !(o.max_grad_norm.is_finite() && o.max_grad_norm > 0.0) {
        return bad(
            "max_grad_norm",
            o.max_grad_norm.to_string(),
            "must be positive",
        );
    }
    Ok(())
}

fn io(path: &Path, e: std::io::Error) -> DiffusionError {
    DiffusionError::ModelDir {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

fn lock_err() -> DiffusionError {
    DiffusionError::InvalidState("variable map lock poisoned".into())
}
