//! The normalised output lattice and `affine_grid` (ATen `AffineGridGenerator`).

use candle_core::{DType, Device, Tensor};

use crate::{MhvaeError, Result};

/// torch's `linspace_from_neg_one(n, align_corners)`: pixel centres in normalised coordinates,
/// `2j/(n−1) − 1` with `align_corners`, `(2j+1)/n − 1` without; a single pixel sits at 0.
pub fn lattice_coords(n: usize, align_corners: bool) -> Vec<f64> {
    if n <= 1 {
        return vec![0.0; n];
    }
    (0..n)
        .map(|j| {
            let linspace = -1.0 + 2.0 * j as f64 / (n - 1) as f64;
            if align_corners {
                linspace
            } else {
                linspace * (n - 1) as f64 / n as f64
            }
        })
        .collect()
}

/// The lattice as rows `(x, y, 1)`, row-major over (H, W): shape (H·W, 3).
pub(crate) fn homogeneous_lattice(h: usize, w: usize, align_corners: bool) -> Vec<f64> {
    let xs = lattice_coords(w, align_corners);
    let ys = lattice_coords(h, align_corners);
    let mut out = Vec::with_capacity(h * w * 3);
    for &y in &ys {
        for &x in &xs {
            out.extend_from_slice(&[x, y, 1.0]);
        }
    }
    out
}

/// `F.affine_grid(theta, (N, C, h, w), align_corners)`: theta (N, 2, 3) maps each output lattice
/// point (x, y, 1) to its source location; returns the grid (N, h, w, 2). Differentiable in theta.
pub fn affine_grid(theta: &Tensor, h: usize, w: usize, align_corners: bool) -> Result<Tensor> {
    let dims = theta.dims();
    if dims.len() != 3 || dims[1] != 2 || dims[2] != 3 {
        return Err(MhvaeError::BadShape {
            what: "affine theta",
            shape: dims.to_vec(),
            expected: "(N, 2, 3)".into(),
        });
    }
    check_size(h, w)?;
    let n = dims[0];
    let base = lattice_tensor(h, w, align_corners, theta.dtype(), theta.device())?;
    let grid = base.broadcast_matmul(&theta.transpose(1, 2)?)?;
    Ok(grid.reshape((n, h, w, 2))?)
}

/// The lattice rows (x, y, 1) as an (H·W, 3) tensor.
pub(crate) fn lattice_tensor(
    h: usize,
    w: usize,
    align_corners: bool,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    let base = homogeneous_lattice(h, w, align_corners);
    Ok(Tensor::from_vec(base, (h * w, 3), device)?.to_dtype(dtype)?)
}

pub(crate) fn check_size(h: usize, w: usize) -> Result<()> {
    if h == 0 || w == 0 {
        return Err(MhvaeError::InvalidArgument {
            name: "output size",
            value: format!("{h}x{w}"),
            reason: "height and width must be at least 1".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lattice_matches_torch_formulas() {
        let ac = lattice_coords(5, true);
        assert_eq!(ac, vec![-1.0, -0.5, 0.0, 0.5, 1.0]);
        let no = lattice_coords(4, false);
        for (j, v) in no.iter().enumerate() {
            assert!((v - ((2 * j + 1) as f64 / 4.0 - 1.0)).abs() < 1e-15);
        }
        assert_eq!(lattice_coords(1, false), vec![0.0]);
    }

    #[test]
    fn identity_theta_gives_the_lattice() -> Result<()> {
        let theta = Tensor::new(&[[[1f32, 0., 0.], [0., 1., 0.]]], &Device::Cpu)?;
        let g = affine_grid(&theta, 3, 4, false)?;
        assert_eq!(g.dims(), &[1, 3, 4, 2]);
        let v = g.flatten_all()?.to_vec1::<f32>()?;
        let xs = lattice_coords(4, false);
        let ys = lattice_coords(3, false);
        for i in 0..3 {
            for j in 0..4 {
                assert!((v[(i * 4 + j) * 2] as f64 - xs[j]).abs() < 1e-7);
                assert!((v[(i * 4 + j) * 2 + 1] as f64 - ys[i]).abs() < 1e-7);
            }
        }
        assert!(affine_grid(
            &Tensor::zeros((1, 3, 3), DType::F32, &Device::Cpu)?,
            2,
            2,
            false
        )
        .is_err());
        Ok(())
    }
}
