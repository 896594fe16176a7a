//! The trainable state every trainer shares: variables, AdamW moments, the EMA of the weights,
//! the learning-rate schedule and gradient clipping, with checkpoint tensors that restore exactly.

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;

use super::options::RunOptions;
use crate::optim::{
    clip_grad_norm, cosine_schedule_with_warmup, named_vars, AdamW, AdamWConfig, Ema, EmaDecay,
};
use crate::{DiffusionError, Result};

/// Variables, optimiser and EMA of a model being trained.
pub struct Optimisation {
    varmap: VarMap,
    optimizer: AdamW,
    ema: Option<Ema>,
}

/// What one optimiser step applied.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AppliedStep {
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
}

impl Optimisation {
    /// A `VarMap` filled with `weights` (converted to f32 on `device`), ready to build a model
    /// from with `VarBuilder::from_varmap`.
    pub fn varmap_from(weights: HashMap<String, Tensor>, device: &Device) -> Result<VarMap> {
        let varmap = VarMap::new();
        {
            let mut data = varmap
                .data()
                .lock()
                .map_err(|_| DiffusionError::InvalidState("variable map lock poisoned".into()))?;
            for (name, t) in weights {
                data.insert(
                    name,
                    Var::from_tensor(&t.to_dtype(DType::F32)?.to_device(device)?)?,
                );
            }
        }
        Ok(varmap)
    }

    /// Optimises every variable of `varmap` (the model must already be built on it).
    pub fn new(varmap: VarMap, options: &RunOptions) -> Result<Self> {
        let vars = named_vars(&varmap);
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
        let ema = options
            .ema_max_decay
            .map(|d| Ema::from_named_vars(&vars, EmaDecay::DiffusersWarmup { max_decay: d }))
            .transpose()?;
        Ok(Self {
            varmap,
            optimizer,
            ema,
        })
    }

    /// Number of trainable tensors.
    pub fn num_tensors(&self) -> usize {
        self.optimizer.named_vars().len()
    }

    /// The trainable variables, in name order.
    pub fn vars(&self) -> Vec<Var> {
        self.optimizer.vars()
    }

    /// Clips `grads` to `options.max_grad_norm`, sets the warm-up + cosine learning rate of step
    /// `step` (0-based), applies AdamW and updates the EMA. A non-finite gradient norm stops
    /// before anything is changed.
    pub fn apply(
        &mut self,
        grads: &mut GradStore,
        step: usize,
        options: &RunOptions,
    ) -> Result<AppliedStep> {
        let vars = self.vars();
        let grad_norm = clip_grad_norm(grads, &vars, options.max_grad_norm)?;
        if !grad_norm.is_finite() {
            return Err(DiffusionError::NonFiniteLoss {
                step,
                value: grad_norm,
            });
        }
        let lr = options.lr
            * cosine_schedule_with_warmup(step, options.warmup_steps, options.total_steps);
        self.optimizer.set_learning_rate(lr);
        self.optimizer.step(grads)?;
        if let Some(ema) = &mut self.ema {
            ema.update(self.optimizer.named_vars())?;
        }
        Ok(AppliedStep { lr, grad_norm })
    }

    /// The trained weights as they are now.
    pub fn live_weights(&self) -> HashMap<String, Tensor> {
        named_vars(&self.varmap)
            .into_iter()
            .map(|(n, v)| (n, v.as_tensor().clone()))
            .collect()
    }

    /// The weights to export: the EMA ones when EMA is on (as diffusers exports them), else
    /// the live ones detached, so that a model built from them records no gradient graph (a
    /// sampler's hundred steps through tracked variables would keep every intermediate alive).
    pub fn export_weights(&self) -> HashMap<String, Tensor> {
        match &self.ema {
            Some(ema) => ema.weights(),
            None => self
                .live_weights()
                .into_iter()
                .map(|(n, t)| (n, t.detach()))
                .collect(),
        }
    }

    /// Everything needed to continue: AdamW moments and step, `live.<name>` weights and, with
    /// EMA, `ema.<name>` and `ema.__num_updates`; on the CPU, contiguous.
    pub fn state_tensors(&self) -> Result<HashMap<String, Tensor>> {
        let mut state = self.optimizer.state_tensors()?;
        for (k, v) in self.live_weights() {
            state.insert(format!("{LIVE}{k}"), v);
        }
        if let Some(ema) = &self.ema {
            for (k, v) in ema.weights() {
                state.insert(format!("{EMA}{k}"), v);
            }
            state.insert(
                EMA_UPDATES.into(),
                Tensor::new(&[ema.num_updates() as i64], &Device::Cpu)?,
            );
        }
        state
            .into_iter()
            .map(|(k, v)| Ok((k, v.to_device(&Device::Cpu)?.contiguous()?)))
            .collect()
    }

    /// The `live.` weights of a [`Optimisation::state_tensors`] map, to rebuild the model from.
    pub fn live_from_state(state: &HashMap<String, Tensor>) -> HashMap<String, Tensor> {
        state
            .iter()
            .filter_map(|(k, v)| k.strip_prefix(LIVE).map(|n| (n.to_string(), v.clone())))
            .collect()
    }

    /// Restores AdamW moments and the EMA from a [`Optimisation::state_tensors`] map (the live
    /// weights are already in the variables).
    pub fn load_state_tensors(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        let opt: HashMap<String, Tensor> = state
            .iter()
            .filter(|(k, _)| !k.starts_with(LIVE) && !k.starts_with(EMA))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        self.optimizer.load_state_tensors(&opt)?;
        if let Some(ema) = &mut self.ema {
            let w: HashMap<String, Tensor> = state
                .iter()
                .filter_map(|(k, v)| {
                    k.strip_prefix(EMA)
                        .filter(|n| !n.starts_with("__"))
                        .map(|n| (n.to_string(), v.clone()))
                })
                .collect();
            let n = state
                .get(EMA_UPDATES)
                .map(|v| v.to_vec1::<i64>().map(|x| x.first().copied().unwrap_or(0)))
                .transpose()?
                .unwrap_or(0);
            ema.load_weights(&w, n as u64)?;
        }
        Ok(())
    }
}

const LIVE: &str = "live.";
const EMA: &str = "ema.";
const EMA_UPDATES: &str = "ema.__num_updates";
