//! Exponential moving average of model weights (diffusers `EMAModel` update rule). The paper's
//! official training does not use one; it is offered for longer runs.

use std::collections::HashMap;

use candle_core::Tensor;
use candle_core::Var;
use candle_nn::VarMap;

use super::named_vars;
use crate::error::{DiffusionError, Result};

/// Decay used at each update.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum EmaDecay {
    /// The same decay at every update.
    Constant(f64),
    /// diffusers `EMAModel` default (no `use_ema_warmup`): at update n (1-based),
    /// `0` for n = 1 (copy), then `min(max_decay, (1 + s) / (10 + s))` with s = n − 1.
    DiffusersWarmup { max_decay: f64 },
}

impl EmaDecay {
    /// Decay for the `n`-th update (1-based).
    pub fn at(self, n: u64) -> f64 {
        match self {
            Self::Constant(d) => d,
            Self::DiffusersWarmup { max_decay } => {
                let s = n.saturating_sub(1);
                if s == 0 {
                    0.0
                } else {
                    let s = s as f64;
                    ((1.0 + s) / (10.0 + s)).min(max_decay).max(0.0)
                }
            }
        }
    }

    fn validate(self) -> Result<()> {
        let d = match self {
            Self::Constant(d) => d,
            Self::DiffusersWarmup { max_decay } => max_decay,
        };
        if !(0.0..=1.0).contains(&d) {
            return Err(DiffusionError::InvalidParameter {
                name: "ema decay",
                value: d.to_string(),
                reason: "must be in [0, 1]",
            });
        }
        Ok(())
    }
}

/// Shadow copies of named variables, updated as `shadow ← shadow − (1 − decay)·(shadow − param)`.
#[derive(Debug)]
pub struct Ema {
    decay: EmaDecay,
    names: Vec<String>,
    shadow: Vec<Tensor>,
    num_updates: u64,
}

impl Ema {
    /// Starts from a copy of the current values of every variable in `varmap`.
    pub fn new(varmap: &VarMap, decay: EmaDecay) -> Result<Self> {
        Self::from_named_vars(&named_vars(varmap), decay)
    }

    /// Starts from a copy of the given named variables.
    pub fn from_named_vars(vars: &[(String, Var)], decay: EmaDecay) -> Result<Self> {
        decay.validate()?;
        let names = vars.iter().map(|(n, _)| n.clone()).collect();
        let shadow = vars
            .iter()
            .map(|(_, v)| Ok(v.as_tensor().detach().copy()?))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            decay,
            names,
            shadow,
            num_updates: 0,
        })
    }

    /// Number of updates so far.
    pub fn num_updates(&self) -> u64 {
        self.num_updates
    }

    /// Folds the current values of `vars` (same names as at construction) into the average.
    pub fn update(&mut self, vars: &[(String, Var)]) -> Result<()> {
        if vars.len() != self.names.len() {
            return Err(DiffusionError::InvalidState(format!(
                "EMA tracks {} variables, update got {}",
                self.names.len(),
                vars.len()
            )));
        }
        self.num_updates += 1;
        let one_minus = 1.0 - self.decay.at(self.num_updates);
        for ((name, var), (own, shadow)) in vars
            .iter()
            .zip(self.names.iter().zip(self.shadow.iter_mut()))
        {
            if name != own {
                return Err(DiffusionError::InvalidState(format!(
                    "EMA variable order changed: expected `{own}`, got `{name}`"
                )));
            }
            let p = var.as_tensor().detach();
            *shadow = (&*shadow - ((&*shadow - &p)? * one_minus)?)?;
        }
        Ok(())
    }

    /// [`Ema::update`] from a `VarMap`.
    pub fn update_from(&mut self, varmap: &VarMap) -> Result<()> {
        self.update(&named_vars(varmap))
    }

    /// The averaged weights by variable name (e.g. to save as the EMA checkpoint).
    pub fn weights(&self) -> HashMap<String, Tensor> {
        self.names
            .iter()
            .cloned()
            .zip(self.shadow.iter().cloned())
            .collect()
    }

    /// Writes the averaged weights into the variables of `varmap` (e.g. before sampling).
    pub fn copy_to(&self, varmap: &VarMap) -> Result<()> {
        let data = match varmap.data().lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        for (name, shadow) in self.names.iter().zip(&self.shadow) {
            let var = data.get(name).ok_or_else(|| {
                DiffusionError::InvalidState(format!("no variable `{name}` to copy EMA into"))
            })?;
            var.set(&shadow.to_dtype(var.dtype())?)?;
        }
        Ok(())
    }

    /// Replaces the averaged weights (resume), checking names and shapes; `num_updates` restores the count.
    pub fn load_weights(
        &mut self,
        weights: &HashMap<String, Tensor>,
        num_updates: u64,
    ) -> Result<()> {
        let mut new = Vec::with_capacity(self.names.len());
        for (name, cur) in self.names.iter().zip(&self.shadow) {
            let t = weights.get(name).ok_or_else(|| {
                DiffusionError::InvalidState(format!("EMA weights miss `{name}`"))
            })?;
            if t.dims() != cur.dims() {
                return Err(DiffusionError::InvalidState(format!(
                    "EMA `{name}` has shape {:?}, variable has {:?}",
                    t.dims(),
                    cur.dims()
                )));
            }
            new.push(t.to_device(cur.device())?.to_dtype(cur.dtype())?);
        }
        self.shadow = new;
        self.num_updates = num_updates;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn constant_decay_matches_closed_form() {
        let vm = VarMap::new();
        let _ = vm
            .get(
                3,
                "w",
                candle_nn::Init::Const(0.0),
                DType::F64,
                &Device::Cpu,
            )
            .unwrap();
        let vars = named_vars(&vm);
        let mut ema = Ema::new(&vm, EmaDecay::Constant(0.9)).unwrap();
        // param jumps to 1 and stays: shadow_n = 1 - 0.9^n
        vars[0]
            .1
            .set(&Tensor::ones(3, DType::F64, &Device::Cpu).unwrap())
            .unwrap();
        for _ in 0..5 {
            ema.update(&vars).unwrap();
        }
        let w: Vec<f64> = ema.weights()["w"].to_vec1().unwrap();
        let want = 1.0 - 0.9f64.powi(5);
        assert!(
            w.iter().all(|x| (x - want).abs() < 1e-12),
            "{w:?} vs {want}"
        );
        // copy_to overwrites the live weights
        ema.copy_to(&vm).unwrap();
        let live: Vec<f64> = vars[0].1.as_tensor().to_vec1().unwrap();
        assert!((live[0] - want).abs() < 1e-12);
    }

    #[test]
    fn diffusers_warmup_decay() {
        let d = EmaDecay::DiffusersWarmup { max_decay: 0.9999 };
        assert_eq!(d.at(1), 0.0);
        assert!((d.at(2) - 2.0 / 11.0).abs() < 1e-15);
        assert!((d.at(11) - 11.0 / 20.0).abs() < 1e-15);
        assert_eq!(d.at(10_000_000), 0.9999);
    }
}
