//! A scalar 3-D volume on a voxel grid with its voxel-to-world affine.
//!
//! Convention (the NIfTI / nibabel one): `data[[i, j, k]]` is the voxel at index `(i, j, k)` and
//! `affine · (i, j, k, 1)ᵀ` is its centre in world millimetres, RAS+: +x towards the patient's
//! right, +y anterior, +z superior. DICOM patient coordinates are LPS (+x left, +y posterior),
//! see [`lps_to_ras`].

use ndarray::Array3;

/// Row-major 4×4 homogeneous matrix mapping voxel indices to world millimetres.
pub type Affine = [[f64; 4]; 4];

/// The 4×4 identity affine.
pub const IDENTITY_AFFINE: Affine = [
    [1.0, 0.0, 0.0, 0.0],
    [0.0, 1.0, 0.0, 0.0],
    [0.0, 0.0, 1.0, 0.0],
    [0.0, 0.0, 0.0, 1.0],
];

/// A 3-D volume: values indexed `[i, j, k]` plus the affine taking `(i, j, k)` to RAS+ mm.
#[derive(Clone, Debug, PartialEq)]
pub struct Volume<T> {
    /// Voxel values; any memory layout (NIfTI data arrive in Fortran order).
    pub data: Array3<T>,
    /// Voxel-to-world (RAS+, millimetres) affine.
    pub affine: Affine,
}

impl<T> Volume<T> {
    /// Number of voxels along each of the three array axes.
    pub fn shape(&self) -> [usize; 3] {
        let s = self.data.shape();
        [s[0], s[1], s[2]]
    }

    /// Voxel size along each array axis (length of the affine's columns), in mm.
    pub fn spacing(&self) -> [f64; 3] {
        affine_zooms(&self.affine)
    }

    /// The voxel-to-patient affine in DICOM's LPS convention.
    pub fn lps_affine(&self) -> Affine {
        lps_to_ras(&self.affine)
    }

    /// The patient (LPS, mm) to voxel-index affine; `None` for a degenerate grid.
    pub fn lps_to_voxel(&self) -> Option<Affine> {
        affine_inverse(&self.lps_affine())
    }
}

/// Length of each of the first three columns of an affine (the voxel size along each axis).
pub fn affine_zooms(a: &Affine) -> [f64; 3] {
    let mut z = [0.0; 3];
    for (j, zj) in z.iter_mut().enumerate() {
        *zj = (a[0][j] * a[0][j] + a[1][j] * a[1][j] + a[2][j] * a[2][j]).sqrt();
    }
    z
}

/// Matrix product `a · b` of two affines.
pub fn affine_mul(a: &Affine, b: &Affine) -> Affine {
    let mut out = [[0.0; 4]; 4];
    for (r, row) in out.iter_mut().enumerate() {
        for (c, v) in row.iter_mut().enumerate() {
            *v = (0..4).map(|k| a[r][k] * b[k][c]).sum();
        }
    }
    out
}

/// Largest absolute element-wise difference between two affines.
pub fn affine_max_abs_diff(a: &Affine, b: &Affine) -> f64 {
    let mut m = 0.0f64;
    for r in 0..4 {
        for c in 0..4 {
            m = m.max((a[r][c] - b[r][c]).abs());
        }
    }
    m
}

/// Turn an LPS (DICOM patient) affine into the RAS+ one by negating the first two world axes.
pub fn lps_to_ras(a: &Affine) -> Affine {
    let mut out = *a;
    for c in 0..4 {
        out[0][c] = -a[0][c];
        out[1][c] = -a[1][c];
    }
    out
}

/// Inverse of an affine (`None` when its 3×3 part is singular).
pub fn affine_inverse(a: &Affine) -> Option<Affine> {
    let m = [
        [a[0][0], a[0][1], a[0][2]],
        [a[1][0], a[1][1], a[1][2]],
        [a[2][0], a[2][1], a[2][2]],
    ];
    let c00 = m[1][1] * m[2][2] - m[1][2] * m[2][1];
    let c01 = m[1][2] * m[2][0] - m[1][0] * m[2][2];
    let c02 = m[1][0] * m[2][1] - m[1][1] * m[2][0];
    let det = m[0][0] * c00 + m[0][1] * c01 + m[0][2] * c02;
    if !det.is_finite() || det.abs() < 1e-12 {
        return None;
    }
    let d = 1.0 / det;
    let inv = [
        [
            c00 * d,
            (m[0][2] * m[2][1] - m[0][1] * m[2][2]) * d,
            (m[0][1] * m[1][2] - m[0][2] * m[1][1]) * d,
        ],
        [
            c01 * d,
            (m[0][0] * m[2][2] - m[0][2] * m[2][0]) * d,
            (m[0][2] * m[1][0] - m[0][0] * m[1][2]) * d,
        ],
        [
            c02 * d,
            (m[0][1] * m[2][0] - m[0][0] * m[2][1]) * d,
            (m[0][0] * m[1][1] - m[0][1] * m[1][0]) * d,
        ],
    ];
    let mut out = [[0.0; 4]; 4];
    for r in 0..3 {
        for c in 0..3 {
            out[r][c] = inv[r][c];
        }
        out[r][3] = -(inv[r][0] * a[0][3] + inv[r][1] * a[1][3] + inv[r][2] * a[2][3]);
    }
    out[3][3] = 1.0;
    Some(out)
}

/// Apply an affine to a point.
pub fn affine_apply(a: &Affine, p: [f64; 3]) -> [f64; 3] {
    let mut out = [0.0; 3];
    for (r, o) in out.iter_mut().enumerate() {
        *o = a[r][0] * p[0] + a[r][1] * p[1] + a[r][2] * p[2] + a[r][3];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inverse_round_trips() {
        let a = [
            [0.0, -3.0, 0.5, 5.0],
            [2.0, 0.0, 0.0, 6.0],
            [0.1, 0.0, 4.0, 7.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        let inv = affine_inverse(&a).unwrap();
        let id = affine_mul(&a, &inv);
        assert!(affine_max_abs_diff(&id, &IDENTITY_AFFINE) < 1e-12);
        let p = [1.0, -2.0, 3.5];
        let q = affine_apply(&inv, affine_apply(&a, p));
        assert!(p.iter().zip(q).all(|(x, y)| (x - y).abs() < 1e-12));
        assert!(affine_inverse(&[[0.0; 4]; 4]).is_none());
    }

    #[test]
    fn lps_affine_negates_x_and_y() {
        let v = Volume {
            data: ndarray::Array3::<u8>::zeros([2, 2, 2]),
            affine: [
                [0.5, 0.0, 0.0, 1.0],
                [0.0, 0.7, 0.0, 2.0],
                [0.0, 0.0, 2.0, 3.0],
                [0.0, 0.0, 0.0, 1.0],
            ],
        };
        let l = v.lps_affine();
        assert_eq!(
            (l[0][0], l[0][3], l[1][1], l[1][3], l[2][3]),
            (-0.5, -1.0, -0.7, -2.0, 3.0)
        );
        let back = v.lps_to_voxel().unwrap();
        let p = affine_apply(&back, affine_apply(&l, [1.0, 0.0, 1.0]));
        assert!((p[0] - 1.0).abs() < 1e-12 && p[1].abs() < 1e-12 && (p[2] - 1.0).abs() < 1e-12);
    }
}
