//! f64 central finite differences against candle's backward pass (test support).

use candle_core::{Tensor, Var};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::error::{EvalError, Result};

/// A scalar loss and the variables to probe.
pub struct GradCase<'a> {
    /// Recomputes the scalar loss from the current variable values.
    pub loss: &'a dyn Fn() -> candle_core::Result<Tensor>,
    pub vars: Vec<Var>,
    /// Coordinates probed per variable (all of them when the variable is smaller).
    pub samples_per_var: usize,
    pub seed: u64,
}

const STEP: f64 = 1e-6;

/// Worst `|analytic − numeric| / max(|analytic|, |numeric|, 1e-3)` over the probed coordinates.
/// Fails when a variable gets no gradient at all (a silently detached graph).
pub fn check_gradients(case: &GradCase) -> Result<f64> {
    let grads = (case.loss)()?.backward()?;
    let mut rng = StdRng::seed_from_u64(case.seed);
    let mut worst: f64 = 0.0;
    for (vi, var) in case.vars.iter().enumerate() {
        let grad = grads
            .get(var.as_tensor())
            .ok_or(EvalError::InvalidArgument {
                name: "gradient",
                value: format!("variable #{vi} {:?}", var.dims()),
                reason: "missing: the graph is detached",
            })?
            .flatten_all()?
            .to_vec1::<f64>()?;
        let base = var.as_tensor().flatten_all()?.to_vec1::<f64>()?;
        let shape = var.as_tensor().shape().clone();
        let n = base.len();
        let picks: Vec<usize> = if n <= case.samples_per_var {
            (0..n).collect()
        } else {
            (0..case.samples_per_var)
                .map(|_| rng.random_range(0..n))
                .collect()
        };
        for i in picks {
            let at = |delta: f64| -> Result<f64> {
                let mut v = base.clone();
                v[i] += delta;
                var.set(&Tensor::from_vec(v, shape.clone(), var.device())?)?;
                Ok((case.loss)()?.to_scalar::<f64>()?)
            };
            let numeric = (at(STEP)? - at(-STEP)?) / (2.0 * STEP);
            var.set(&Tensor::from_vec(
                base.clone(),
                shape.clone(),
                var.device(),
            )?)?;
            let analytic = grad[i];
            let err = (analytic - numeric).abs() / analytic.abs().max(numeric.abs()).max(1e-3);
            worst = worst.max(err);
        }
    }
    Ok(worst)
}
