//! Training-loop pieces candle-nn lacks: AdamW with exportable state, warmup + cosine learning-rate
//! factor, global gradient-norm clipping and a weight EMA, each with PyTorch / diffusers semantics.

mod adamw;
mod ema;
mod grad_clip;
mod lr_schedule;

pub use adamw::{AdamW, AdamWConfig};
pub use ema::{Ema, EmaDecay};
pub use grad_clip::{clip_grad_norm, grad_norm};
pub use lr_schedule::cosine_schedule_with_warmup;

use candle_core::Var;
use candle_nn::VarMap;

/// The variables of a `VarMap` as (name, var), sorted by name so every run visits them in the same order.
pub fn named_vars(varmap: &VarMap) -> Vec<(String, Var)> {
    let data = match varmap.data().lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    };
    let mut vars: Vec<(String, Var)> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}
