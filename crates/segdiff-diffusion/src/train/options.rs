//! The hyper-parameters every trainer shares: optimiser, schedule, batches, seed, checkpoints.

use serde::{Deserialize, Serialize};

use crate::{DiffusionError, Result};

/// Optimisation and bookkeeping settings of a run; the defaults are the segmentation-guided
/// diffusion paper's (AdamW lr 1e-4, weight decay 0.01, 500 warm-up steps then cosine decay,
/// grad-norm clip 1.0, batch 16).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunOptions {
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
    pub seed: u64,
    /// Write a checkpoint every this many optimiser steps (0 = only at the end).
    pub checkpoint_every: usize,
    /// Checkpoints kept (oldest removed first; at least 1).
    pub keep_checkpoints: usize,
}

impl Default for RunOptions {
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
            seed: 0,
            checkpoint_every: 0,
            keep_checkpoints: 3,
        }
    }
}

impl RunOptions {
    /// Rejects settings the loop cannot run with, naming the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |name: &'static str, value: String, reason: &'static str| {
            Err(DiffusionError::InvalidParameter {
                name,
                value,
                reason,
            })
        };
        if self.batch_size == 0 {
            return bad("batch_size", "0".into(), "must be at least 1");
        }
        if self.grad_accumulation == 0 {
            return bad("grad_accumulation", "0".into(), "must be at least 1");
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad("lr", self.lr.to_string(), "must be positive");
        }
        if !(self.max_grad_norm.is_finite() && self.max_grad_norm > 0.0) {
            return bad(
                "max_grad_norm",
                self.max_grad_norm.to_string(),
                "must be positive",
            );
        }
        Ok(())
    }
}
