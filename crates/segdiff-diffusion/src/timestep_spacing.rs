//! Inference timestep selection ("leading" / "trailing" / "linspace", Table 2 of Lin et al. 2023)
//! reproducing the numpy expressions of diffusers' `set_timesteps`, rounding included
//! (`np.round` rounds half to even; `np.arange` with a float step fills `start + i·δ` where
//! `δ = (start + step) − start`).

use crate::config::TimestepSpacing;
use crate::error::{DiffusionError, Result};

/// `np.linspace(0, stop, num)` (endpoint included).
fn np_linspace_from_zero(stop: f64, num: usize) -> Vec<f64> {
    if num == 1 {
        return vec![0.0];
    }
    let step = stop / (num - 1) as f64;
    let mut y: Vec<f64> = (0..num)
        .map(|i| if step == 0.0 { 0.0 } else { i as f64 * step })
        .collect();
    y[num - 1] = stop;
    y
}

/// `np.arange(start, 0, -step)` for a positive float `step`.
fn np_arange_down_to_zero(start: f64, step: f64) -> Vec<f64> {
    let len = ((0.0 - start) / -step).ceil().max(0.0) as usize;
    let delta = (start - step) - start;
    (0..len).map(|i| start + i as f64 * delta).collect()
}

/// Rounds half to even and converts to an integer timestep (values here are never negative).
fn round_to_timestep(x: f64) -> i64 {
    x.round_ties_even() as i64
}

/// Converts signed timesteps to usize, checking the training range.
fn checked(timesteps: Vec<i64>, num_train_timesteps: usize) -> Result<Vec<usize>> {
    timesteps
        .into_iter()
        .map(|t| {
            if t < 0 || t as usize >= num_train_timesteps {
                Err(DiffusionError::TimestepOutOfRange {
                    timestep: t.max(0) as usize,
                    num_train_timesteps,
                })
            } else {
                Ok(t as usize)
            }
        })
        .collect()
}

fn check_steps(n: usize, num_train_timesteps: usize) -> Result<()> {
    if n == 0 || n > num_train_timesteps {
        return Err(DiffusionError::InvalidInferenceSteps {
            requested: n,
            num_train_timesteps,
        });
    }
    Ok(())
}

/// DDPMScheduler / DDIMScheduler `set_timesteps(n)`: `n` descending timesteps.
pub(crate) fn ddpm_ddim_timesteps(
    spacing: TimestepSpacing,
    num_train_timesteps: usize,
    n: usize,
    steps_offset: usize,
) -> Result<Vec<usize>> {
    check_steps(n, num_train_timesteps)?;
    let ts: Vec<i64> = match spacing {
        TimestepSpacing::Linspace => np_linspace_from_zero((num_train_timesteps - 1) as f64, n)
            .into_iter()
            .rev()
            .map(round_to_timestep)
            .collect(),
        TimestepSpacing::Leading => {
            let ratio = num_train_timesteps / n;
            (0..n)
                .rev()
                .map(|i| (i * ratio + steps_offset) as i64)
                .collect()
        }
        TimestepSpacing::Trailing => {
            let ratio = num_train_timesteps as f64 / n as f64;
            np_arange_down_to_zero(num_train_timesteps as f64, ratio)
                .into_iter()
                .map(|x| round_to_timestep(x) - 1)
                .collect()
        }
    };
    checked(ts, num_train_timesteps)
}

/// DPMSolverMultistepScheduler `set_timesteps(n)`; `last_timestep` is `num_train_timesteps` minus
/// the number of steps cut by `lambda_min_clipped`.
pub(crate) fn dpm_solver_timesteps(
    spacing: TimestepSpacing,
    num_train_timesteps: usize,
    last_timestep: usize,
    n: usize,
    steps_offset: usize,
) -> Result<Vec<usize>> {
    check_steps(n, num_train_timesteps)?;
    let ts: Vec<i64> = match spacing {
        TimestepSpacing::Linspace => {
            let mut v: Vec<i64> = np_linspace_from_zero(last_timestep as f64 - 1.0, n + 1)
                .into_iter()
                .rev()
                .map(round_to_timestep)
                .collect();
            v.pop();
            v
        }
        TimestepSpacing::Leading => {
            let ratio = last_timestep / (n + 1);
            (1..=n)
                .rev()
                .map(|i| (i * ratio + steps_offset) as i64)
                .collect()
        }
        TimestepSpacing::Trailing => {
            let ratio = num_train_timesteps as f64 / n as f64;
            np_arange_down_to_zero(last_timestep as f64, ratio)
                .into_iter()
                .map(|x| round_to_timestep(x) - 1)
                .collect()
        }
    };
    checked(ts, num_train_timesteps)
}

/// EulerAncestralDiscreteScheduler `set_timesteps(n)`: `n` descending float32 timesteps, as
/// diffusers computes them in numpy ("linspace" ones are fractional: `linspace(0, T-1, n)`).
pub(crate) fn euler_timesteps(
    spacing: TimestepSpacing,
    num_train_timesteps: usize,
    n: usize,
    steps_offset: usize,
) -> Result<Vec<f32>> {
    check_steps(n, num_train_timesteps)?;
    let ts: Vec<f32> = match spacing {
        TimestepSpacing::Linspace => np_linspace_from_zero((num_train_timesteps - 1) as f64, n)
            .into_iter()
            .rev()
            .map(|t| t as f32)
            .collect(),
        TimestepSpacing::Leading => {
            let ratio = num_train_timesteps / n;
            (0..n)
                .rev()
                .map(|i| (i * ratio) as f32 + steps_offset as f32)
                .collect()
        }
        TimestepSpacing::Trailing => {
            let ratio = num_train_timesteps as f64 / n as f64;
            np_arange_down_to_zero(num_train_timesteps as f64, ratio)
                .into_iter()
                .map(|x| x.round_ties_even() as f32 - 1.0f32)
                .collect()
        }
    };
    // diffusers' `np.interp` would clamp a timestep past the table ("leading" with an offset);
    // like DDIM here, we refuse it.
    match ts
        .iter()
        .find(|&&t| t as f64 > (num_train_timesteps - 1) as f64)
    {
        Some(&t) => Err(DiffusionError::TimestepOutOfRange {
            timestep: t.round_ties_even() as usize,
            num_train_timesteps,
        }),
        None => Ok(ts),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ddim_spacings_match_diffusers_tables() {
        // Values from diffusers' docstring table (Lin et al. 2023, Table 2) for T=1000, n=10.
        let lead = ddpm_ddim_timesteps(TimestepSpacing::Leading, 1000, 10, 1).unwrap();
        assert_eq!(lead, vec![901, 801, 701, 601, 501, 401, 301, 201, 101, 1]);
        let trail = ddpm_ddim_timesteps(TimestepSpacing::Trailing, 1000, 10, 0).unwrap();
        assert_eq!(trail, vec![999, 899, 799, 699, 599, 499, 399, 299, 199, 99]);
        let lin = ddpm_ddim_timesteps(TimestepSpacing::Linspace, 1000, 10, 0).unwrap();
        assert_eq!(lin, vec![999, 888, 777, 666, 555, 444, 333, 222, 111, 0]);
    }

    #[test]
    fn trailing_with_non_integer_ratio() {
        // np.round(np.arange(1000, 0, -1000/3)) - 1 == [999, 666, 332]
        let t = ddpm_ddim_timesteps(TimestepSpacing::Trailing, 1000, 3, 0).unwrap();
        assert_eq!(t, vec![999, 666, 332]);
    }

    #[test]
    fn round_half_even_like_numpy() {
        // np.linspace(0, 999, 21).round(): 49.95*k; k=10 gives exactly 499.5 -> 500 (even).
        let v = np_linspace_from_zero(999.0, 21);
        assert_eq!(round_to_timestep(v[10]), 500);
        assert_eq!(round_to_timestep(2.5), 2);
        assert_eq!(round_to_timestep(3.5), 4);
    }

    #[test]
    fn euler_linspace_timesteps_are_fractional_float32() {
        // diffusers: np.linspace(0, 999, 20, dtype=np.float32)[::-1]
        let t = euler_timesteps(TimestepSpacing::Linspace, 1000, 20, 0).unwrap();
        assert_eq!(&t[..3], &[999.0, 946.4211, 893.8421]);
        assert_eq!(t[19], 0.0);
        let lead = euler_timesteps(TimestepSpacing::Leading, 1000, 10, 1).unwrap();
        assert_eq!(lead[0], 901.0);
        assert_eq!(lead[9], 1.0);
        let trail = euler_timesteps(TimestepSpacing::Trailing, 1000, 3, 0).unwrap();
        assert_eq!(trail, vec![999.0, 666.0, 332.0]);
        assert!(euler_timesteps(TimestepSpacing::Leading, 1000, 1000, 1).is_err());
    }

    #[test]
    fn rejects_bad_step_counts_and_offsets() {
        assert!(ddpm_ddim_timesteps(TimestepSpacing::Leading, 1000, 0, 0).is_err());
        assert!(ddpm_ddim_timesteps(TimestepSpacing::Leading, 1000, 1001, 0).is_err());
        // leading with offset 1 and 1000 steps reaches t = 1000
        assert!(matches!(
            ddpm_ddim_timesteps(TimestepSpacing::Leading, 1000, 1000, 1),
            Err(DiffusionError::TimestepOutOfRange { timestep: 1000, .. })
        ));
    }
}
