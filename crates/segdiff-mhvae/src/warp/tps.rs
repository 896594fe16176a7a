//! The paper's thin-plate spline (§3.2.2, App. B, eq. 21–23): fixed target control points p_k,
//! source points p′_k = θ; D(q) = a_{K+1} + a_{K+2}x + a_{K+3}y + Σ_k a_k U(|q − p_k|) with
//! U(r) = r² log r², coefficients a = ℳ⁻¹ [x′; 0 0 0] (and b likewise for y), where
//! ℳ = [[𝒦, 𝒫], [𝒫ᵀ, 0]] carries the three side conditions per coordinate.
//!
//! Since the targets are fixed, ℳ⁻¹ is inverted once (f64) and folded with the lattice into one
//! constant matrix G = L·ℳ⁻¹[:, :K] (H·W × K), so the grid is `G · P′`: linear in θ, no solve in
//! the graph.

use candle_core::{DType, Device, Tensor};
use nalgebra::DMatrix;

use super::lattice::{check_size, lattice_coords};
use crate::{MhvaeError, Result};

/// U(r) from the squared distance: r² log r², 0 at r = 0.
fn kernel(r2: f64) -> f64 {
    if r2 > 0.0 {
        r2 * r2.ln()
    } else {
        0.0
    }
}

/// A thin-plate-spline warp for one set of target points and one output lattice.
#[derive(Debug, Clone)]
pub struct TpsWarp {
    targets: Vec<[f64; 2]>,
    /// ℳ⁻¹[:, :K], (K+3) × K.
    minv: DMatrix<f64>,
    h: usize,
    w: usize,
    align_corners: bool,
    /// G on the lattice, (H·W, K) f32 on `device`.
    g: Tensor,
}

impl TpsWarp {
    /// Precomputes the spline for `targets` on the (h, w) lattice of `affine_grid` (with the
    /// given `align_corners`).
    pub fn new(
        targets: &[[f64; 2]],
        h: usize,
        w: usize,
        align_corners: bool,
        device: &Device,
    ) -> Result<Self> {
        check_size(h, w)?;
        let k = targets.len();
        if k < 3 {
            return Err(MhvaeError::SingularControlPoints {
                count: k,
                reason: "a thin-plate spline needs at least 3 control points".into(),
            });
        }
        if let Some(p) = targets
            .iter()
            .find(|p| !p[0].is_finite() || !p[1].is_finite())
        {
            return Err(MhvaeError::InvalidArgument {
                name: "control point",
                value: format!("{p:?}"),
                reason: "coordinates must be finite".into(),
            });
        }
        let mut m = DMatrix::<f64>::zeros(k + 3, k + 3);
        for i in 0..k {
            for j in 0..k {
                m[(i, j)] = kernel(dist2(targets[i], targets[j]));
            }
            let row = [1.0, targets[i][0], targets[i][1]];
            for (c, v) in row.into_iter().enumerate() {
                m[(i, k + c)] = v;
                m[(k + c, i)] = v;
            }
        }
        let singular = || MhvaeError::SingularControlPoints {
            count: k,
            reason: "repeated points, or all points on one line".into(),
        };
        let inverse = m.clone().lu().try_inverse().ok_or_else(singular)?;
        // LU "succeeds" on numerically singular systems; check the solve really is an inverse.
        let residual = (&m * &inverse - DMatrix::<f64>::identity(k + 3, k + 3)).amax();
        if !residual.is_finite() || residual > 1e-6 {
            return Err(singular());
        }
        let minv = inverse.columns(0, k).into_owned();
        let xs = lattice_coords(w, align_corners);
        let ys = lattice_coords(h, align_corners);
        let lattice: Vec<[f64; 2]> = ys
            .iter()
            .flat_map(|&y| xs.iter().map(move |&x| [x, y]))
            .collect();
        let g = lift(targets, &lattice) * &minv;
        // nalgebra is column-major; the tensor wants rows.
        let g = Tensor::from_vec(g.transpose().as_slice().to_vec(), (h * w, k), device)?
            .to_dtype(DType::F32)?;
        Ok(TpsWarp {
            targets: targets.to_vec(),
            minv,
            h,
            w,
            align_corners,
            g,
        })
    }

    /// The target control points.
    pub fn targets(&self) -> &[[f64; 2]] {
        &self.targets
    }

    /// Output lattice size (h, w) and its `align_corners`.
    pub fn lattice(&self) -> (usize, usize, bool) {
        (self.h, self.w, self.align_corners)
    }

    /// The sampling grid (N, h, w, 2) for source points (N, K, 2); differentiable in them. The
    /// result has the sources' dtype.
    pub fn grid(&self, sources: &Tensor) -> Result<Tensor> {
        let dims = sources.dims();
        let k = self.targets.len();
        if dims.len() != 3 || dims[1] != k || dims[2] != 2 {
            return Err(MhvaeError::BadShape {
                what: "TPS source points",
                shape: dims.to_vec(),
                expected: format!("(N, {k}, 2)"),
            });
        }
        let g = self
            .g
            .to_device(sources.device())?
            .to_dtype(sources.dtype())?;
        let grid = g.broadcast_matmul(sources)?;
        Ok(grid.reshape((dims[0], self.h, self.w, 2))?)
    }

    /// The sources as a tensor (1, K, 2) equal to the targets: the identity warp.
    pub fn identity_sources(&self, device: &Device) -> Result<Tensor> {
        let flat: Vec<f32> = self
            .targets
            .iter()
            .flat_map(|p| [p[0] as f32, p[1] as f32])
            .collect();
        Ok(Tensor::from_vec(flat, (1, self.targets.len(), 2), device)?)
    }

    /// The constant matrix G (P × K, f32 on `device`) of the spline at arbitrary output points:
    /// `G · sources` is the grid there (used for lattices moved by an edit).
    pub fn kernel_at(&self, points: &[[f64; 2]], device: &Device) -> Result<Tensor> {
        let g = lift(&self.targets, points) * &self.minv;
        let k = self.targets.len();
        Ok(
            Tensor::from_vec(g.transpose().as_slice().to_vec(), (points.len(), k), device)?
                .to_dtype(DType::F32)?,
        )
    }

    /// The spline in f64 at arbitrary points (for pictures and exact checks): D(q) for each q.
    pub fn map_points(&self, sources: &[[f64; 2]], points: &[[f64; 2]]) -> Result<Vec<[f64; 2]>> {
        let k = self.targets.len();
        if sources.len() != k {
            return Err(MhvaeError::BadShape {
                what: "TPS source points",
                shape: vec![sources.len(), 2],
                expected: format!("({k}, 2)"),
            });
        }
        let src = DMatrix::<f64>::from_fn(k, 2, |i, c| sources[i][c]);
        let mapped = lift(&self.targets, points) * (&self.minv * src);
        Ok((0..points.len())
            .map(|i| [mapped[(i, 0)], mapped[(i, 1)]])
            .collect())
    }
}

fn dist2(a: [f64; 2], b: [f64; 2]) -> f64 {
    (a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)
}

/// L: one row [U(|q − p_1|) … U(|q − p_K|), 1, x, y] per point q.
fn lift(targets: &[[f64; 2]], points: &[[f64; 2]]) -> DMatrix<f64> {
    let k = targets.len();
    DMatrix::from_fn(points.len(), k + 3, |i, j| {
        let q = points[i];
        match j {
            j if j < k => kernel(dist2(q, targets[j])),
            j if j == k => 1.0,
            j if j == k + 1 => q[0],
            _ => q[1],
        }
    })
}
