//! Dice + cross-entropy training loss of the segmenter, as MONAI
//! `DiceCELoss(to_onehot_y=True, softmax=True)` computes it with its other defaults.
//!
//! Dice term: softmax over classes, one-hot target, per sample and class
//! `1 − (2·Σ p·t + smooth_nr) / (Σ p + Σ t + smooth_dr)` over pixels, averaged over samples and
//! classes. CE term: `torch.nn.CrossEntropyLoss` on the logits, mean over pixels and samples.
//! Everything is built from ops with gradients (`candle_nn::ops::softmax`/`log_softmax` on the
//! class dimension, never the gradient-less `softmax_last_dim`).

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{EvalError, Result};
use crate::label_maps::LabelMaps;

/// `DiceCELoss` arguments with MONAI's defaults.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct DiceCeLossConfig {
    /// Keep the background channel in the Dice term (MONAI default true; CE always uses all).
    pub include_background: bool,
    pub smooth_nr: f64,
    pub smooth_dr: f64,
    pub lambda_dice: f64,
    pub lambda_ce: f64,
}

impl Default for DiceCeLossConfig {
    fn default() -> Self {
        Self {
            include_background: true,
            smooth_nr: 1e-5,
            smooth_dr: 1e-5,
            lambda_dice: 1.0,
            lambda_ce: 1.0,
        }
    }
}

/// The loss and its two terms, all scalar tensors attached to the graph.
#[derive(Clone, Debug)]
pub struct DiceCeLoss {
    /// `lambda_dice·dice + lambda_ce·ce`: call `backward` on this.
    pub total: Tensor,
    pub dice: Tensor,
    pub ce: Tensor,
}

/// `(N, C, H, W)` one-hot encoding of `labels` in `dtype`.
pub fn one_hot(
    labels: &LabelMaps,
    num_classes: usize,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    labels.check_classes(num_classes, "one-hot labels")?;
    let (n, h, w) = labels.shape();
    let hw = h * w;
    let mut v = vec![0f32; n * num_classes * hw];
    for s in 0..n {
        for (p, &l) in labels.sample(s).iter().enumerate() {
            v[(s * num_classes + l as usize) * hw + p] = 1.0;
        }
    }
    Ok(Tensor::from_vec(v, (n, num_classes, h, w), device)?.to_dtype(dtype)?)
}

/// Dice + CE of `(N, C, H, W)` logits against class-id maps `(N, H, W)`.
pub fn dice_ce_loss(
    logits: &Tensor,
    target: &LabelMaps,
    cfg: &DiceCeLossConfig,
) -> Result<DiceCeLoss> {
    let (n, c, h, w) = logits.dims4().map_err(|_| EvalError::BadShape {
        what: "segmentation logits",
        shape: logits.dims().to_vec(),
        expected: "(N, C, H, W)",
    })?;
    if target.shape() != (n, h, w) {
        return Err(EvalError::ShapeMismatch {
            what: "loss target vs logits (N, H, W)",
            left: vec![target.samples(), target.height(), target.width()],
            right: vec![n, h, w],
        });
    }
    if c < 2 {
        return Err(EvalError::InvalidArgument {
            name: "logit channels",
            value: c.to_string(),
            reason: "softmax Dice/CE needs at least two classes",
        });
    }
    let onehot = one_hot(target, c, logits.dtype(), logits.device())?;

    let probs = candle_nn::ops::softmax(logits, 1)?;
    let (p, t) = if cfg.include_background {
        (probs, onehot.clone())
    } else {
        (probs.narrow(1, 1, c - 1)?, onehot.narrow(1, 1, c - 1)?)
    };
    let intersection = (&p * &t)?.sum((2, 3))?;
    let denominator = (p.sum((2, 3))? + t.sum((2, 3))?)?;
    let ratio = ((intersection * 2.0)? + cfg.smooth_nr)?.div(&(denominator + cfg.smooth_dr)?)?;
    let dice = ratio.affine(-1.0, 1.0)?.mean_all()?;

    let log_probs = candle_nn::ops::log_softmax(logits, 1)?;
    let ce = (onehot * log_probs)?.sum(1)?.mean_all()?.neg()?;

    let total = ((&dice * cfg.lambda_dice)? + (&ce * cfg.lambda_ce)?)?;
    Ok(DiceCeLoss { total, dice, ce })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradient_check::{check_gradients, GradCase};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn case(seed: u64) -> Result<(Vec<f64>, Tensor, LabelMaps)> {
        let (n, c, h, w) = (2, 4, 5, 6);
        let mut rng = StdRng::seed_from_u64(seed);
        let logits: Vec<f64> = (0..n * c * h * w)
            .map(|_| 3.0 * rng.random::<f64>() - 1.5)
            .collect();
        // Sample 1 never uses class 3, exercising the smoothing terms.
        let labels: Vec<u32> = (0..n * h * w)
            .map(|i| rng.random_range(0..if i < h * w { 4 } else { 3 }))
            .collect();
        let t = Tensor::from_vec(logits.clone(), (n, c, h, w), &Device::Cpu)?;
        Ok((logits, t, LabelMaps::new(labels, n, h, w)?))
    }

    /// The loss written out in plain f64 loops, independent of the tensor code.
    fn reference(logits: &[f64], labels: &LabelMaps, c: usize, include_bg: bool) -> (f64, f64) {
        let (n, h, w) = labels.shape();
        let hw = h * w;
        let mut dice_terms = Vec::new();
        let mut ce_sum = 0.0;
        for s in 0..n {
            let lab = labels.sample(s);
            let mut probs = vec![vec![0.0; hw]; c];
            for p in 0..hw {
                let z: Vec<f64> = (0..c).map(|k| logits[(s * c + k) * hw + p]).collect();
                let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let lse = m + z.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
                for k in 0..c {
                    probs[k][p] = (z[k] - lse).exp();
                }
                ce_sum += lse - z[lab[p] as usize];
            }
            for (k, pk) in probs.iter().enumerate().skip(usize::from(!include_bg)) {
                let t: Vec<f64> = lab
                    .iter()
                    .map(|&l| f64::from(u8::from(l as usize == k)))
                    .collect();
                let inter: f64 = pk.iter().zip(&t).map(|(p, t)| p * t).sum();
                let sp: f64 = pk.iter().sum();
                let st: f64 = t.iter().sum();
                dice_terms.push(1.0 - (2.0 * inter + 1e-5) / (sp + st + 1e-5));
            }
        }
        let dice = dice_terms.iter().sum::<f64>() / dice_terms.len() as f64;
        (dice, ce_sum / (n * hw) as f64)
    }

    #[test]
    fn value_matches_plain_f64_computation() -> Result<()> {
        let (raw, logits, labels) = case(1)?;
        for include_background in [true, false] {
            let cfg = DiceCeLossConfig {
                include_background,
                ..Default::default()
            };
            let loss = dice_ce_loss(&logits, &labels, &cfg)?;
            let (dice, ce) = reference(&raw, &labels, 4, include_background);
            let got_dice = loss.dice.to_scalar::<f64>()?;
            let got_ce = loss.ce.to_scalar::<f64>()?;
            assert!((got_dice - dice).abs() < 1e-12, "dice {got_dice} vs {dice}");
            assert!((got_ce - ce).abs() < 1e-12, "ce {got_ce} vs {ce}");
            assert!((loss.total.to_scalar::<f64>()? - (dice + ce)).abs() < 1e-12);
        }
        Ok(())
    }

    #[test]
    fn gradient_matches_finite_differences() -> Result<()> {
        let (_, logits, labels) = case(2)?;
        let var = candle_core::Var::from_tensor(&logits)?;
        for include_background in [true, false] {
            let cfg = DiceCeLossConfig {
                include_background,
                ..Default::default()
            };
            let worst = check_gradients(&GradCase {
                loss: &|| {
                    dice_ce_loss(var.as_tensor(), &labels, &cfg)
                        .map(|l| l.total)
                        .map_err(|e| candle_core::Error::Msg(e.to_string()))
                },
                vars: vec![var.clone()],
                samples_per_var: 40,
                seed: 9,
            })?;
            println!(
                "include_background {include_background}: worst relative FD error {worst:.2e}"
            );
            assert!(worst < 1e-5, "worst relative FD error {worst}");
        }
        Ok(())
    }

    #[test]
    fn rejects_mismatched_target() -> Result<()> {
        let (_, logits, _) = case(3)?;
        let small = LabelMaps::new(vec![0; 2 * 5 * 5], 2, 5, 5)?;
        assert!(matches!(
            dice_ce_loss(&logits, &small, &DiceCeLossConfig::default()),
            Err(EvalError::ShapeMismatch { .. })
        ));
        Ok(())
    }
}
