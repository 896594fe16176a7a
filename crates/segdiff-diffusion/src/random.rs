//! Seeded random draws as tensors. candle's CPU RNG cannot be seeded, so every draw in segdiff goes
//! through a caller-owned `rand` generator (e.g. `StdRng::seed_from_u64(seed)`).

use candle_core::{DType, Device, Shape, Tensor};
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::error::{DiffusionError, Result};

/// A tensor of i.i.d. N(0, 1) values drawn from `rng` (drawn in f64 for F64, else in f32).
pub fn randn<R: Rng + ?Sized>(
    rng: &mut R,
    shape: impl Into<Shape>,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    let shape: Shape = shape.into();
    let n = shape.elem_count();
    let t = if dtype == DType::F64 {
        let v: Vec<f64> = (0..n).map(|_| StandardNormal.sample(rng)).collect();
        Tensor::from_vec(v, shape, device)?
    } else {
        let v: Vec<f32> = (0..n).map(|_| StandardNormal.sample(rng)).collect();
        Tensor::from_vec(v, shape, device)?.to_dtype(dtype)?
    };
    Ok(t)
}

/// `batch` training timesteps drawn uniformly from `0..num_train_timesteps`
/// (the paper's `torch.randint(0, T, (bs,))`).
pub fn sample_timesteps<R: Rng + ?Sized>(
    rng: &mut R,
    batch: usize,
    num_train_timesteps: usize,
) -> Result<Vec<usize>> {
    if num_train_timesteps == 0 {
        return Err(DiffusionError::InvalidParameter {
            name: "num_train_timesteps",
            value: "0".into(),
            reason: "must be at least 1",
        });
    }
    Ok((0..batch)
        .map(|_| rng.random_range(0..num_train_timesteps))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn randn_is_seeded_and_standard() {
        let mut a = rand::rngs::StdRng::seed_from_u64(7);
        let mut b = rand::rngs::StdRng::seed_from_u64(7);
        let x = randn(&mut a, (200, 50), DType::F32, &Device::Cpu).unwrap();
        let y = randn(&mut b, (200, 50), DType::F32, &Device::Cpu).unwrap();
        let diff: f32 = (&x - &y)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        assert_eq!(diff, 0.0);
        let v: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
        let mean = v.iter().map(|&z| z as f64).sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|&z| (z as f64 - mean).powi(2)).sum::<f64>() / v.len() as f64;
        // 10k draws: standard error of the mean 0.01, of the variance ~0.014
        assert!(mean.abs() < 0.04, "mean {mean}");
        assert!((var - 1.0).abs() < 0.06, "var {var}");
    }

    #[test]
    fn timesteps_cover_range() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let t = sample_timesteps(&mut rng, 5000, 10).unwrap();
        assert!(t.iter().all(|&x| x < 10));
        for k in 0..10 {
            let c = t.iter().filter(|&&x| x == k).count();
            assert!((400..600).contains(&c), "class {k}: {c}");
        }
    }
}
