//! AdamW with `torch.optim.AdamW` semantics (amsgrad off, not maximize) whose state can be saved
//! with the checkpoint and restored on resume.

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::Var;
use candle_core::{DType, Tensor};
use candle_nn::VarMap;

use super::named_vars;
use crate::error::{DiffusionError, Result};

/// Hyper-parameters; `Default` is torch's (lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight_decay 0.01).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

impl AdamWConfig {
    fn validate(&self) -> Result<()> {
        let checks: [(&'static str, f64, bool); 5] = [
            ("lr", self.lr, self.lr >= 0.0),
            ("beta1", self.beta1, (0.0..1.0).contains(&self.beta1)),
            ("beta2", self.beta2, (0.0..1.0).contains(&self.beta2)),
            ("eps", self.eps, self.eps >= 0.0),
            ("weight_decay", self.weight_decay, self.weight_decay >= 0.0),
        ];
        for (name, value, ok) in checks {
            if !ok || !value.is_finite() {
                return Err(DiffusionError::InvalidParameter {
                    name,
                    value: value.to_string(),
                    reason: "out of range for AdamW (lr, eps, weight_decay >= 0; betas in [0, 1))",
                });
            }
        }
        Ok(())
    }
}

/// Per-variable optimiser state, as torch keeps it.
#[derive(Clone, Debug)]
struct ParamState {
    step: u64,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
}

/// AdamW over named variables. Per step, for each variable with a gradient g (torch order):
/// `p ← p·(1 − lr·wd)`; `m ← β1·m + (1−β1)·g`; `v ← β2·v + (1−β2)·g²`;
/// `p ← p − lr/(1−β1^t) · m / (sqrt(v)/sqrt(1−β2^t) + eps)`. Variables without a gradient are
/// skipped entirely (their step count does not advance), as in torch.
#[derive(Debug)]
pub struct AdamW {
    config: AdamWConfig,
    vars: Vec<(String, Var)>,
    state: Vec<ParamState>,
}

/// Key of a variable's state tensor in [`AdamW::state_tensors`].
fn state_key(name: &str, what: &str) -> String {
    format!("{name}.{what}")
}

impl AdamW {
    /// Optimises every variable of `varmap` (sorted by name).
    pub fn new(varmap: &VarMap, config: AdamWConfig) -> Result<Self> {
        Self::from_named_vars(named_vars(varmap), config)
    }

    /// Optimises the given named variables; names key the exported state.
    pub fn from_named_vars(vars: Vec<(String, Var)>, config: AdamWConfig) -> Result<Self> {
        config.validate()?;
        let mut seen = std::collections::HashSet::new();
        for (name, _) in &vars {
            if !seen.insert(name.as_str()) {
                return Err(DiffusionError::InvalidParameter {
                    name: "vars",
                    value: name.clone(),
                    reason: "duplicate variable name",
                });
            }
        }
        let state = vars
            .iter()
            .map(|(_, v)| {
                let t = v.as_tensor();
                Ok(ParamState {
                    step: 0,
                    exp_avg: t.zeros_like()?,
                    exp_avg_sq: t.zeros_like()?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            config,
            vars,
            state,
        })
    }

    /// Current hyper-parameters.
    pub fn config(&self) -> &AdamWConfig {
        &self.config
    }

    /// Current learning rate.
    pub fn learning_rate(&self) -> f64 {
        self.config.lr
    }

    /// Sets the learning rate (e.g. `base_lr * cosine_schedule_with_warmup(step, ..)`).
    pub fn set_learning_rate(&mut self, lr: f64) {
        self.config.lr = lr;
    }

    /// The optimised variables with their names.
    pub fn named_vars(&self) -> &[(String, Var)] {
        &self.vars
    }

    /// The optimised variables (e.g. for [`super::clip_grad_norm`]).
    pub fn vars(&self) -> Vec<Var> {
        self.vars.iter().map(|(_, v)| v.clone()).collect()
    }

    /// Largest per-variable step count (the number of optimiser steps taken).
    pub fn step_count(&self) -> u64 {
        self.state.iter().map(|s| s.step).max().unwrap_or(0)
    }

    /// One update from the gradients in `grads`.
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        let AdamWConfig {
            lr,
            beta1,
            beta2,
            eps,
            weight_decay,
        } = self.config;
        for ((_, var), st) in self.vars.iter().zip(self.state.iter_mut()) {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            let g = g.detach().to_dtype(var.dtype())?;
            st.step += 1;
            let theta = var.as_detached_tensor();
            // Decoupled weight decay applied first, on the pre-update parameter.
            let theta = theta.affine(1.0 - lr * weight_decay, 0.0)?;
            st.exp_avg = ((&st.exp_avg * beta1)? + (&g * (1.0 - beta1))?)?;
            st.exp_avg_sq = ((&st.exp_avg_sq * beta2)? + (g.sqr()? * (1.0 - beta2))?)?;
            let t = st.step as i32;
            let bias_correction1 = 1.0 - beta1.powi(t);
            let bias_correction2 = 1.0 - beta2.powi(t);
            let step_size = lr / bias_correction1;
            let denom = (st.exp_avg_sq.sqrt()? / bias_correction2.sqrt())?.affine(1.0, eps)?;
            let update = (st.exp_avg.div(&denom)? * step_size)?;
            var.set(&theta.sub(&update)?)?;
        }
        Ok(())
    }

    /// State for a checkpoint: `{name}.exp_avg`, `{name}.exp_avg_sq` (var dtype) and
    /// `{name}.step` (i64, shape (1,)) per variable.
    pub fn state_tensors(&self) -> Result<HashMap<String, Tensor>> {
        let mut out = HashMap::with_capacity(3 * self.vars.len());
        for ((name, var), st) in self.vars.iter().zip(&self.state) {
            out.insert(state_key(name, "exp_avg"), st.exp_avg.copy()?);
            out.insert(state_key(name, "exp_avg_sq"), st.exp_avg_sq.copy()?);
            let step = Tensor::new(&[st.step as i64], var.device())?;
            out.insert(state_key(name, "step"), step);
        }
        Ok(out)
    }

    /// Restores state written by [`AdamW::state_tensors`]; every variable's three entries must be
    /// present with matching shapes, and no other keys.
    pub fn load_state_tensors(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        let mut new_state = Vec::with_capacity(self.vars.len());
        for (name, var) in &self.vars {
            let get = |what: &str| {
                let key = state_key(name, what);
                state
                    .get(&key)
                    .ok_or_else(|| DiffusionError::InvalidState(format!("missing `{key}`")))
            };
            let mut moments = Vec::with_capacity(2);
            for what in ["exp_avg", "exp_avg_sq"] {
                let t = get(what)?;
                if t.dims() != var.dims() {
                    return Err(DiffusionError::InvalidState(format!(
                        "`{}` has shape {:?}, variable has {:?}",
                        state_key(name, what),
                        t.dims(),
                        var.dims()
                    )));
                }
                moments.push(t.to_device(var.device())?.to_dtype(var.dtype())?);
            }
            let step_t = get("step")?;
            let step = step_t
                .flatten_all()?
                .to_dtype(DType::I64)?
                .to_vec1::<i64>()?;
            let step = match step.as_slice() {
                [s] if *s >= 0 => *s as u64,
                other => {
                    return Err(DiffusionError::InvalidState(format!(
                        "`{}` must hold one non-negative count, got {other:?}",
                        state_key(name, "step")
                    )))
                }
            };
            let exp_avg_sq = moments.pop();
            let exp_avg = moments.pop();
            if let (Some(exp_avg), Some(exp_avg_sq)) = (exp_avg, exp_avg_sq) {
                new_state.push(ParamState {
                    step,
                    exp_avg,
                    exp_avg_sq,
                });
            }
        }
        let expected = 3 * self.vars.len();
        if state.len() != expected {
            let known: std::collections::HashSet<String> = self
                .vars
                .iter()
                .flat_map(|(n, _)| ["exp_avg", "exp_avg_sq", "step"].map(|w| state_key(n, w)))
                .collect();
            let mut extra: Vec<&String> = state.keys().filter(|k| !known.contains(*k)).collect();
            extra.sort();
            return Err(DiffusionError::InvalidState(format!(
                "unexpected keys (state of another model?): {extra:?}"
            )));
        }
        self.state = new_state;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Independent scalar AdamW in f64 following torch's `_single_tensor_adamw` step by step.
    struct ScalarAdamW {
        m: f64,
        v: f64,
        t: i32,
    }

    impl ScalarAdamW {
        fn step(&mut self, p: &mut f64, g: f64, c: &AdamWConfig) {
            self.t += 1;
            *p *= 1.0 - c.lr * c.weight_decay;
            self.m += (g - self.m) * (1.0 - c.beta1); // exp_avg.lerp_(grad, 1 - beta1)
            self.v = self.v * c.beta2 + (1.0 - c.beta2) * g * g;
            let bc1 = 1.0 - c.beta1.powi(self.t);
            let bc2 = 1.0 - c.beta2.powi(self.t);
            let denom = self.v.sqrt() / bc2.sqrt() + c.eps;
            *p -= c.lr / bc1 * self.m / denom;
        }
    }

    /// loss = Σ_i a_i (x_i − c_i)² ; gradient 2 a_i (x_i − c_i).
    fn quadratic_run(
        dtype: DType,
        steps: usize,
        lr_at: impl Fn(usize) -> f64,
    ) -> (Vec<f64>, Vec<f64>) {
        let a = [1.0, 3.0, 0.5, 10.0];
        let c = [2.0, -1.0, 0.25, 0.0];
        let x0 = [0.0, 0.5, -2.0, 1.5];
        let varmap = VarMap::new();
        let x = varmap
            .get(4, "x", candle_nn::Init::Const(0.0), dtype, &Device::Cpu)
            .unwrap();
        varmap.data().lock().unwrap()["x"]
            .set(
                &Tensor::new(&x0, &Device::Cpu)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap(),
            )
            .unwrap();
        let cfg = AdamWConfig {
            lr: 0.05,
            ..AdamWConfig::default()
        };
        let mut opt = AdamW::new(&varmap, cfg).unwrap();
        let at = Tensor::new(&a, &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        let ct = Tensor::new(&c, &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        let mut refs: Vec<(f64, ScalarAdamW)> = x0
            .iter()
            .map(|&p| {
                (
                    p,
                    ScalarAdamW {
                        m: 0.0,
                        v: 0.0,
                        t: 0,
                    },
                )
            })
            .collect();
        for k in 0..steps {
            let lr = lr_at(k);
            opt.set_learning_rate(lr);
            let loss = ((&x - &ct).unwrap().sqr().unwrap() * &at)
                .unwrap()
                .sum_all()
                .unwrap();
            let grads = loss.backward().unwrap();
            opt.step(&grads).unwrap();
            let c_ref = AdamWConfig { lr, ..cfg };
            for (i, (p, st)) in refs.iter_mut().enumerate() {
                let g = 2.0 * a[i] * (*p - c[i]);
                st.step(p, g, &c_ref);
            }
        }
        let got: Vec<f64> = x.to_dtype(DType::F64).unwrap().to_vec1().unwrap();
        (got, refs.into_iter().map(|(p, _)| p).collect())
    }

    #[test]
    fn matches_scalar_reference_f64() {
        let (got, want) = quadratic_run(DType::F64, 200, |k| {
            0.05 * super::super::cosine_schedule_with_warmup(k, 10, 200)
        });
        let err = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        println!("AdamW f64 vs scalar reference: max abs err {err:.3e}");
        assert!(err < 1e-12, "{got:?} vs {want:?}");
        // and it actually optimised (towards c, shrunk slightly by weight decay)
        assert!((got[0] - 2.0).abs() < 0.1, "{got:?}");
    }

    #[test]
    fn matches_scalar_reference_f32() {
        let (got, want) = quadratic_run(DType::F32, 100, |_| 0.05);
        let err = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        println!("AdamW f32 vs f64 scalar reference: max abs err {err:.3e}");
        assert!(err < 1e-4, "{got:?} vs {want:?}");
    }

    #[test]
    fn state_round_trip_resumes_identically() {
        let dev = Device::Cpu;
        let make = || {
            let vm = VarMap::new();
            let w = vm
                .get(
                    (2, 3),
                    "layer.weight",
                    candle_nn::Init::Const(0.5),
                    DType::F32,
                    &dev,
                )
                .unwrap();
            let b = vm
                .get(
                    3,
                    "layer.bias",
                    candle_nn::Init::Const(-0.1),
                    DType::F32,
                    &dev,
                )
                .unwrap();
            (vm, w, b)
        };
        let loss_of = |w: &Tensor, b: &Tensor| {
            let x = Tensor::new(&[[1.0f32, 2.0], [0.5, -1.0]], &dev).unwrap();
            (x.matmul(w).unwrap().broadcast_add(b).unwrap() - 1.0)
                .unwrap()
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
        };
        let (vm_a, wa, ba) = make();
        let mut opt_a = AdamW::new(&vm_a, AdamWConfig::default()).unwrap();
        for _ in 0..3 {
            opt_a.step(&loss_of(&wa, &ba).backward().unwrap()).unwrap();
        }
        let state = opt_a.state_tensors().unwrap();
        assert_eq!(state.len(), 6);
        assert_eq!(
            state["layer.weight.step"].to_vec1::<i64>().unwrap(),
            vec![3]
        );

        let (vm_b, wb, bb) = make();
        let mut weights = HashMap::new();
        for (name, var) in named_vars(&vm_a) {
            weights.insert(name, var.as_tensor().copy().unwrap());
        }
        vm_b.data()
            .lock()
            .unwrap()
            .iter()
            .for_each(|(k, v)| v.set(&weights[k]).unwrap());
        let mut opt_b = AdamW::new(&vm_b, AdamWConfig::default()).unwrap();
        opt_b.load_state_tensors(&state).unwrap();
        assert_eq!(opt_b.step_count(), 3);
        for _ in 0..2 {
            opt_a.step(&loss_of(&wa, &ba).backward().unwrap()).unwrap();
            opt_b.step(&loss_of(&wb, &bb).backward().unwrap()).unwrap();
        }
        let diff = (wa.as_ref() - wb.as_ref())
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap();
        assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0);

        let mut bad = state.clone();
        bad.remove("layer.bias.exp_avg");
        assert!(opt_b
            .load_state_tensors(&bad)
            .unwrap_err()
            .to_string()
            .contains("layer.bias.exp_avg"));
        let mut extra = state.clone();
        extra.insert(
            "other.exp_avg".into(),
            Tensor::zeros(1, DType::F32, &dev).unwrap(),
        );
        assert!(opt_b
            .load_state_tensors(&extra)
            .unwrap_err()
            .to_string()
            .contains("other.exp_avg"));
    }

    #[test]
    fn vars_without_gradient_are_skipped() {
        let vm = VarMap::new();
        let used = vm
            .get(
                2,
                "used",
                candle_nn::Init::Const(1.0),
                DType::F32,
                &Device::Cpu,
            )
            .unwrap();
        let _unused = vm
            .get(
                2,
                "unused",
                candle_nn::Init::Const(1.0),
                DType::F32,
                &Device::Cpu,
            )
            .unwrap();
        let mut opt = AdamW::new(&vm, AdamWConfig::default()).unwrap();
        let grads = used.sum_all().unwrap().backward().unwrap();
        opt.step(&grads).unwrap();
        let s = opt.state_tensors().unwrap();
        assert_eq!(s["used.step"].to_vec1::<i64>().unwrap(), vec![1]);
        assert_eq!(s["unused.step"].to_vec1::<i64>().unwrap(), vec![0]);
        let unused: Vec<f32> = vm.data().lock().unwrap()["unused"]
            .as_tensor()
            .to_vec1()
            .unwrap();
        assert_eq!(unused, vec![1.0, 1.0]);
    }
}
