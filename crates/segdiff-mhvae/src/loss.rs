//! The MHVAE's loss terms (paper §3.4, App. A): log-cosh reconstruction, soft Dice of the warped
//! reference mask, and the Gaussian KL to the N(0, I) prior.

use candle_core::{Tensor, D};

use crate::{MhvaeError, Result};

/// Mean of (1/a)·log cosh(a·(x − y)) over every element (Chen, Chen & Zhang 2019), in the stable
/// form |at| + log(1 + e^{−2|at|}) − log 2; its gradient is tanh(a·t).
pub fn log_cosh(x: &Tensor, y: &Tensor, a: f64) -> Result<Tensor> {
    if !(a.is_finite() && a > 0.0) {
        return Err(MhvaeError::InvalidArgument {
            name: "log-cosh scale",
            value: a.to_string(),
            reason: "must be positive and finite".into(),
        });
    }
    let at = ((x - y)? * a)?.abs()?;
    let soft = ((at.affine(-2.0, 0.0)?.exp()? + 1.0)?.log()? + &at)?;
    Ok(((soft - std::f64::consts::LN_2)? / a)?.mean_all()?)
}

/// Soft Dice loss 1 − (2Σpt + ε)/(Σp + Σt + ε), per sample over all but the first axis, then the
/// batch mean.
pub fn soft_dice_loss(pred: &Tensor, target: &Tensor, eps: f64) -> Result<Tensor> {
    if pred.dims() != target.dims() || pred.rank() < 2 {
        return Err(MhvaeError::BadShape {
            what: "soft Dice prediction",
            shape: pred.dims().to_vec(),
            expected: format!("(N, …) equal to the target's {:?}", target.dims()),
        });
    }
    let (p, t) = (pred.flatten_from(1)?, target.flatten_from(1)?);
    let inter = (&p * &t)?.sum(D::Minus1)?;
    let total = (p.sum(D::Minus1)? + t.sum(D::Minus1)?)?;
    let dice = ((inter * 2.0)? + eps)?.div(&(total + eps)?)?;
    Ok((1.0 - dice.mean_all()?)?)
}

/// KL(N(μ, e^{logvar}) ‖ N(0, I)) = ½ Σ (μ² + e^{logvar} − logvar − 1), summed over the latent
/// axis (the last), averaged over the batch.
pub fn kl_to_standard_normal(mu: &Tensor, logvar: &Tensor) -> Result<Tensor> {
    let terms = ((mu.sqr()? + logvar.exp()?)? - logvar)?;
    Ok(((terms - 1.0)?.sum(D::Minus1)? * 0.5)?.mean_all()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn log_cosh_is_stable_and_has_tanh_gradient() -> Result<()> {
        let dev = Device::Cpu;
        let x = Var::new(&[0.0f64, 0.05, -0.3, 1e3, -1e3], &dev)?;
        let y = Tensor::zeros(5, candle_core::DType::F64, &dev)?;
        let a = 10.0;
        let loss = log_cosh(&x, &y, a)?;
        let want: f64 = [0.0f64, 0.05, -0.3]
            .iter()
            .map(|t: &f64| (a * t).cosh().ln() / a)
            .sum::<f64>()
            + 2.0 * (1e3 - std::f64::consts::LN_2 / a);
        let got = loss.to_scalar::<f64>()? * 5.0;
        assert!((got - want).abs() < 1e-9, "{got} vs {want}");
        let grads = loss.backward()?;
        let g = grads.get(&x).expect("grad").to_vec1::<f64>()?;
        for (gi, t) in g.iter().zip([0.0f64, 0.05, -0.3, 1e3, -1e3]) {
            assert!((gi * 5.0 - (a * t).tanh()).abs() < 1e-12, "{gi} at {t}");
        }
        Ok(())
    }

    #[test]
    fn dice_and_kl_closed_forms() -> Result<()> {
        let dev = Device::Cpu;
        let p = Tensor::new(&[[1f64, 1., 0., 0.], [0.5, 0.5, 0.5, 0.5]], &dev)?;
        let t = Tensor::new(&[[1f64, 0., 0., 0.], [1., 1., 1., 1.]], &dev)?;
        let l = soft_dice_loss(&p, &t, 0.0)?.to_scalar::<f64>()?;
        // Sample 1: 2·1/(2+1) = 2/3; sample 2: 2·2/(2+4) = 2/3.
        assert!((l - (1.0 - 2.0 / 3.0)).abs() < 1e-12, "{l}");
        let mu = Tensor::new(&[[0.5f64, -1.0], [0.0, 0.0]], &dev)?;
        let lv = Tensor::new(&[[0.2f64, -0.4], [0.0, 0.0]], &dev)?;
        let kl = kl_to_standard_normal(&mu, &lv)?.to_scalar::<f64>()?;
        let one = |m: f64, v: f64| 0.5 * (m * m + v.exp() - v - 1.0);
        let want = (one(0.5, 0.2) + one(-1.0, -0.4)) / 2.0;
        assert!((kl - want).abs() < 1e-12);
        Ok(())
    }
}
