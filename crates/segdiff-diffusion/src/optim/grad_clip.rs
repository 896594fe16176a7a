//! Global gradient-norm clipping as `torch.nn.utils.clip_grad_norm_` (norm_type 2,
//! error_if_nonfinite False).

use candle_core::backprop::GradStore;
use candle_core::DType;
use candle_core::Var;

use crate::error::{DiffusionError, Result};

/// Total L2 norm over the gradients of `vars` that have one (computed in f64).
pub fn grad_norm(grads: &GradStore, vars: &[Var]) -> Result<f64> {
    let mut sum_sq = 0f64;
    for var in vars {
        if let Some(g) = grads.get(var.as_tensor()) {
            sum_sq += g
                .to_dtype(DType::F64)?
                .sqr()?
                .sum_all()?
                .to_scalar::<f64>()?;
        }
    }
    Ok(sum_sq.sqrt())
}

/// Scales all gradients by `min(1, max_norm / (total_norm + 1e-6))` and returns the total norm
/// before clipping. As in torch, a non-finite norm is not an error: the caller should check the
/// returned value (and usually skip the step).
pub fn clip_grad_norm(grads: &mut GradStore, vars: &[Var], max_norm: f64) -> Result<f64> {
    if !(max_norm.is_finite() && max_norm > 0.0) {
        return Err(DiffusionError::InvalidParameter {
            name: "max_norm",
            value: max_norm.to_string(),
            reason: "must be positive and finite",
        });
    }
    let total = grad_norm(grads, vars)?;
    let coef = max_norm / (total + 1e-6);
    let clamped = coef.min(1.0);
    // torch multiplies by the clamped coefficient unconditionally; a factor of exactly 1 is a no-op.
    if clamped != 1.0 {
        for var in vars {
            if let Some(g) = grads.get(var.as_tensor()) {
                let scaled = g.affine(clamped, 0.0)?;
                grads.insert(var.as_tensor(), scaled);
            }
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    fn grads_for(values: &[Vec<f32>]) -> (Vec<Var>, GradStore) {
        // loss = sum_i <var_i, values_i>  =>  d loss / d var_i = values_i
        let vars: Vec<Var> = values
            .iter()
            .map(|v| Var::zeros(v.len(), DType::F32, &Device::Cpu).unwrap())
            .collect();
        let mut loss = Tensor::new(0f32, &Device::Cpu).unwrap();
        for (var, v) in vars.iter().zip(values) {
            let c = Tensor::new(v.as_slice(), &Device::Cpu).unwrap();
            loss = (loss + (var.as_tensor() * c).unwrap().sum_all().unwrap()).unwrap();
        }
        let grads = loss.backward().unwrap();
        (vars, grads)
    }

    fn grad(grads: &GradStore, v: &Var) -> Vec<f32> {
        grads.get(v.as_tensor()).unwrap().to_vec1().unwrap()
    }

    #[test]
    fn clips_a_3_4_12_example() {
        // norms: [3, 4] -> 5 and [12] -> 12; total sqrt(25 + 144) = 13
        let (vars, mut grads) = grads_for(&[vec![3.0, 4.0], vec![12.0]]);
        let total = clip_grad_norm(&mut grads, &vars, 1.0).unwrap();
        assert!((total - 13.0).abs() < 1e-9);
        let c = 1.0 / (13.0 + 1e-6);
        for (got, want) in grad(&grads, &vars[0]).iter().zip([3.0 * c, 4.0 * c]) {
            assert!((*got as f64 - want).abs() < 1e-7, "{got} vs {want}");
        }
        assert!((grad(&grads, &vars[1])[0] as f64 - 12.0 * c).abs() < 1e-7);
        let after = grad_norm(&grads, &vars).unwrap();
        assert!((after - 13.0 * c).abs() < 1e-6, "{after}");
    }

    #[test]
    fn small_norms_are_untouched() {
        let (vars, mut grads) = grads_for(&[vec![0.3, 0.4]]);
        let total = clip_grad_norm(&mut grads, &vars, 1.0).unwrap();
        assert!((total - 0.5).abs() < 1e-7);
        assert_eq!(grad(&grads, &vars[0]), vec![0.3, 0.4]);
    }

    #[test]
    fn rejects_bad_max_norm() {
        let (vars, mut grads) = grads_for(&[vec![1.0]]);
        assert!(clip_grad_norm(&mut grads, &vars, 0.0).is_err());
    }
}
