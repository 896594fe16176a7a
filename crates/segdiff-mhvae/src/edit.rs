//! Position edits (paper Fig. 6, 8; App. E): compose an image's warp with a rotation, scaling and
//! translation about the object's centre, so that the decoded object (and its mask) moves while
//! the style stays.
//!
//! The warp maps output points to source points (backward warping). To make the object appear
//! transformed by T(p) = c + s·R(φ)(p − c) + d, the new warp is D′(q) = D_θ(T⁻¹ q): the output
//! lattice is pre-composed with T⁻¹, which works for affine and TPS warps alike.
//!
//! **Sign convention.** Coordinates are the image's: x to the right, y *down*. R(φ) =
//! [[cos φ, −sin φ], [sin φ, cos φ]] in those coordinates, so a positive angle turns the object
//! **clockwise on screen**. A scale below 1 shrinks the object (0.7 → area × 0.49). A translation
//! (dx, dy) is in normalised units (the image spans [−1, 1]; +dx moves right, +dy down).

use candle_core::Tensor;

use crate::config::WarpKind;
use crate::position::Position;
use crate::warp::{affine_grid, lattice_coords};
use crate::{MhvaeError, Result};

/// A similarity transform of the object about its centre.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PositionEdit {
    /// Degrees, clockwise on screen.
    pub rotate_degrees: f64,
    /// Object scale (> 0).
    pub scale: f64,
    /// Normalised translation (x right, y down).
    pub translate: [f64; 2],
}

impl Default for PositionEdit {
    fn default() -> Self {
        Self {
            rotate_degrees: 0.0,
            scale: 1.0,
            translate: [0.0, 0.0],
        }
    }
}

impl PositionEdit {
    /// Checks the values, naming the flag at fault.
    pub fn validate(&self) -> Result<()> {
        let bad = |name: &'static str, v: String, r: &str| {
            Err(MhvaeError::InvalidArgument {
                name,
                value: v,
                reason: r.into(),
            })
        };
        if !(self.scale.is_finite() && self.scale > 0.0) {
            return bad(
                "scale",
                self.scale.to_string(),
                "must be positive and finite",
            );
        }
        if !self.rotate_degrees.is_finite() || !self.translate.iter().all(|v| v.is_finite()) {
            return bad(
                "rotate / translate",
                format!("{} / {:?}", self.rotate_degrees, self.translate),
                "must be finite",
            );
        }
        Ok(())
    }

    /// T⁻¹ as (M, m): T⁻¹(q) = M q + m, for the object centre `c`.
    pub fn inverse_about(&self, c: [f64; 2]) -> ([[f64; 2]; 2], [f64; 2]) {
        let phi = self.rotate_degrees.to_radians();
        let (cos, sin) = (phi.cos(), phi.sin());
        // (s R(φ))⁻¹ = R(−φ)/s.
        let m = [
            [cos / self.scale, sin / self.scale],
            [-sin / self.scale, cos / self.scale],
        ];
        // T⁻¹(q) = M (q − c − d) + c.
        let shifted = [c[0] + self.translate[0], c[1] + self.translate[1]];
        let offset = [
            c[0] - (m[0][0] * shifted[0] + m[0][1] * shifted[1]),
            c[1] - (m[1][0] * shifted[0] + m[1][1] * shifted[1]),
        ];
        (m, offset)
    }
}

/// Centroid (x, y) of each soft mask (N, 1, S, S) in normalised coordinates (the lattice of
/// `align_corners`); the image centre for an empty mask.
pub fn mask_centroids(masks: &Tensor, align_corners: bool) -> Result<Vec<[f64; 2]>> {
    let (n, _, h, w) = masks.dims4()?;
    let xs = lattice_coords(w, align_corners);
    let ys = lattice_coords(h, align_corners);
    let rows = masks
        .flatten_from(1)?
        .to_dtype(candle_core::DType::F64)?
        .to_vec2::<f64>()?;
    Ok((0..n)
        .map(|i| {
            let (mut sx, mut sy, mut sw) = (0.0, 0.0, 0.0);
            for (k, &v) in rows[i].iter().enumerate() {
                sx += v * xs[k % w];
                sy += v * ys[k / w];
                sw += v;
            }
            if sw > 0.0 {
                [sx / sw, sy / sw]
            } else {
                [0.0, 0.0]
            }
        })
        .collect())
}

/// The grid (N, size, size, 2) of θ with each row's lattice pre-composed with the edit about
/// that row's centre.
pub fn edited_grid(
    position: &Position,
    theta: &Tensor,
    size: usize,
    align_corners: bool,
    edit: &PositionEdit,
    centres: &[[f64; 2]],
) -> Result<Tensor> {
    edit.validate()?;
    let n = theta.dim(0)?;
    if centres.len() != n {
        return Err(MhvaeError::BadShape {
            what: "edit centres",
            shape: vec![centres.len()],
            expected: format!("one per image ({n})"),
        });
    }
    let params = position.warp_parameters(theta)?;
    let device = theta.device();
    let mut rows = Vec::with_capacity(n);
    for (i, &c) in centres.iter().enumerate() {
        let (m, off) = edit.inverse_about(c);
        let p = params.narrow(0, i, 1)?;
        let grid = match position.kind() {
            WarpKind::Affine => {
                // D′(q) = A (M q + m) + t = (A M) q + (A m + t).
                let a = p
                    .reshape((2, 3))?
                    .to_dtype(candle_core::DType::F64)?
                    .to_vec2::<f64>()?;
                let mut out = [[0f64; 3]; 2];
                for r in 0..2 {
                    for col in 0..2 {
                        out[r][col] = a[r][0] * m[0][col] + a[r][1] * m[1][col];
                    }
                    out[r][2] = a[r][0] * off[0] + a[r][1] * off[1] + a[r][2];
                }
                let flat: Vec<f32> = out.iter().flatten().map(|&v| v as f32).collect();
                let theta = Tensor::from_vec(flat, (1, 2, 3), device)?.to_dtype(theta.dtype())?;
                affine_grid(&theta, size, size, align_corners)?
            }
            WarpKind::Tps => {
                let tps = position.tps().ok_or_else(|| MhvaeError::InvalidArgument {
                    name: "warp",
                    value: "tps".into(),
                    reason: "no TPS precomputed".into(),
                })?;
                let coords = lattice_coords(size, align_corners);
                let moved: Vec<[f64; 2]> = coords
                    .iter()
                    .flat_map(|&y| coords.iter().map(move |&x| [x, y]))
                    .map(|q| {
                        [
                            m[0][0] * q[0] + m[0][1] * q[1] + off[0],
                            m[1][0] * q[0] + m[1][1] * q[1] + off[1],
                        ]
                    })
                    .collect();
                let g = tps.kernel_at(&moved, device)?.to_dtype(theta.dtype())?;
                let k = tps.targets().len();
                g.matmul(&p.reshape((k, 2))?)?.reshape((1, size, size, 2))?
            }
            WarpKind::None => {
                return Err(MhvaeError::InvalidArgument {
                    name: "warp",
                    value: "none".into(),
                    reason: "the single-headed VAE has no position to edit".into(),
                })
            }
        };
        rows.push(grid);
    }
    Ok(Tensor::cat(&rows, 0)?)
}
