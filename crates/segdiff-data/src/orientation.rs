//! Reorientation to the closest RAS+ voxel order and 2-D slicing in radiological convention.
//!
//! [`reorient_to_ras`] reproduces nibabel's `as_closest_canonical`: only axis permutations and
//! flips, never resampling. The input axis that moves most along each world axis is found on the
//! closest rotation to the affine's direction matrix (its orthogonal polar factor, as nibabel's
//! `io_orientation` does with an SVD); ties go to the earlier world axis.
//!
//! With `a[x, y, z]` the RAS+ array of size `X × Y × Z` (x towards the patient's right, y
//! anterior, z superior), the 2-D slices are (`r` = row from the top, `c` = column from the left):
//!
//! | axis | size (w × h) | pixel | top | image left |
//! |---|---|---|---|---|
//! | axial `k` | X × Y | `img[r][c] = a[X−1−c][Y−1−r][k]` | anterior | patient right |
//! | coronal `j` | X × Z | `img[r][c] = a[X−1−c][j][Z−1−r]` | superior | patient right |
//! | sagittal `i` | Y × Z | `img[r][c] = a[i][Y−1−c][Z−1−r]` | superior | anterior |
//!
//! That is the radiological display (viewer looks at the patient's feet / face; the patient's
//! right is on the image's left) that clinical viewers and the paper's datasets use.

use ndarray::{ArrayView3, Axis};
use serde::{Deserialize, Serialize};

use crate::volume::{affine_inverse, affine_mul, affine_zooms, Affine, Volume};

/// For each array axis: the world (RAS) axis it runs along and whether it runs backwards.
pub type Orientation = [(usize, bool); 3];

/// The closest world axis of each voxel axis (nibabel `io_orientation` semantics).
///
/// Returns `None` for a degenerate affine (a zero or repeated direction).
pub fn io_orientation(affine: &Affine) -> Option<Orientation> {
    let zooms = affine_zooms(affine);
    let mut rs = [[0.0f64; 3]; 3];
    for r in 0..3 {
        for c in 0..3 {
            let z = if zooms[c] == 0.0 { 1.0 } else { zooms[c] };
            rs[r][c] = affine[r][c] / z;
        }
    }
    let mut rot = polar_rotation(&rs).unwrap_or(rs);
    let mut out = [(0usize, false); 3];
    for (in_ax, o) in out.iter_mut().enumerate() {
        let col = [rot[0][in_ax], rot[1][in_ax], rot[2][in_ax]];
        if col.iter().all(|v| v.abs() < 1e-12) {
            return None;
        }
        // First maximum wins, as numpy's argmax.
        let mut best = 0;
        for r in 1..3 {
            if col[r].abs() > col[best].abs() {
                best = r;
            }
        }
        *o = (best, col[best] < 0.0);
        rot[best] = [0.0; 3];
    }
    Some(out)
}

/// Orthogonal polar factor of a 3×3 matrix (closest orthogonal matrix), by Newton's iteration
/// `R ← (R + R⁻ᵀ) / 2`. `None` when the matrix is singular.
fn polar_rotation(m: &[[f64; 3]; 3]) -> Option<[[f64; 3]; 3]> {
    let mut r = *m;
    for _ in 0..100 {
        let inv = inverse3(&r)?;
        let mut next = [[0.0; 3]; 3];
        let mut change = 0.0f64;
        for i in 0..3 {
            for j in 0..3 {
                next[i][j] = 0.5 * (r[i][j] + inv[j][i]);
                change = change.max((next[i][j] - r[i][j]).abs());
            }
        }
        r = next;
        if change < 1e-14 {
            break;
        }
    }
    Some(r)
}

fn inverse3(m: &[[f64; 3]; 3]) -> Option<[[f64; 3]; 3]> {
    let a = [
        [m[0][0], m[0][1], m[0][2], 0.0],
        [m[1][0], m[1][1], m[1][2], 0.0],
        [m[2][0], m[2][1], m[2][2], 0.0],
        [0.0, 0.0, 0.0, 1.0],
    ];
    let inv = affine_inverse(&a)?;
    Some([
        [inv[0][0], inv[0][1], inv[0][2]],
        [inv[1][0], inv[1][1], inv[1][2]],
        [inv[2][0], inv[2][1], inv[2][2]],
    ])
}

/// Shape and affine of the RAS+ grid that [`reorient_to_ras`] produces from `shape`/`affine`.
pub fn ras_geometry(
    shape: [usize; 3],
    affine: &Affine,
    ornt: &Orientation,
) -> ([usize; 3], Affine) {
    let mut new_shape = [0usize; 3];
    // t maps new voxel indices to old ones: old[j] = flip ? n_j - 1 - new[o] : new[o].
    let mut t = [[0.0f64; 4]; 4];
    t[3][3] = 1.0;
    for (j, &(o, flip)) in ornt.iter().enumerate() {
        new_shape[o] = shape[j];
        if flip {
            t[j][o] = -1.0;
            t[j][3] = shape[j] as f64 - 1.0;
        } else {
            t[j][o] = 1.0;
        }
    }
    (new_shape, affine_mul(affine, &t))
}

/// Permute and flip the voxel axes so that they run along +R, +A, +S as closely as possible.
///
/// No copy is made: only the array's strides change. `None` for a degenerate affine.
pub fn reorient_to_ras<T>(vol: Volume<T>) -> Option<Volume<T>> {
    let ornt = io_orientation(&vol.affine)?;
    Some(apply_orientation(vol, &ornt))
}

/// Apply an orientation found by [`io_orientation`] (for label volumes sharing an image's grid).
pub fn apply_orientation<T>(vol: Volume<T>, ornt: &Orientation) -> Volume<T> {
    let (_, affine) = ras_geometry(vol.shape(), &vol.affine, ornt);
    let mut perm = [0usize; 3];
    for (j, &(o, _)) in ornt.iter().enumerate() {
        perm[o] = j;
    }
    let mut data = vol.data.permuted_axes(perm);
    for (j, &(o, flip)) in ornt.iter().enumerate() {
        if flip {
            debug_assert_eq!(perm[o], j);
            data.invert_axis(Axis(o));
        }
    }
    Volume { data, affine }
}

/// The three slicing directions of a RAS+ volume.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SliceAxis {
    /// Fixed z (inferior→superior index); image top = anterior.
    Axial,
    /// Fixed y (posterior→anterior index); image top = superior.
    Coronal,
    /// Fixed x (left→right index); image top = superior, image left = anterior.
    Sagittal,
}

impl SliceAxis {
    /// All three axes, in the order axial, coronal, sagittal.
    pub const ALL: [SliceAxis; 3] = [SliceAxis::Axial, SliceAxis::Coronal, SliceAxis::Sagittal];

    /// Lower-case name used in file names and the manifest.
    pub fn name(self) -> &'static str {
        match self {
            SliceAxis::Axial => "axial",
            SliceAxis::Coronal => "coronal",
            SliceAxis::Sagittal => "sagittal",
        }
    }

    /// Parse `axial`, `coronal` or `sagittal` (case-insensitive).
    pub fn parse(s: &str) -> Option<SliceAxis> {
        match s.to_ascii_lowercase().as_str() {
            "axial" => Some(SliceAxis::Axial),
            "coronal" => Some(SliceAxis::Coronal),
            "sagittal" => Some(SliceAxis::Sagittal),
            _ => None,
        }
    }

    /// The RAS array axis held fixed by this slicing.
    pub fn fixed_axis(self) -> usize {
        match self {
            SliceAxis::Axial => 2,
            SliceAxis::Coronal => 1,
            SliceAxis::Sagittal => 0,
        }
    }

    /// Number of slices along this axis of a RAS+ volume of `shape`.
    pub fn count(self, shape: [usize; 3]) -> usize {
        shape[self.fixed_axis()]
    }

    /// Width and height of one slice of a RAS+ volume of `shape`.
    pub fn slice_size(self, shape: [usize; 3]) -> (usize, usize) {
        match self {
            SliceAxis::Axial => (shape[0], shape[1]),
            SliceAxis::Coronal => (shape[0], shape[2]),
            SliceAxis::Sagittal => (shape[1], shape[2]),
        }
    }

    /// Pixel size (column step, row step) in mm of a slice, from the RAS+ voxel spacing.
    pub fn pixel_spacing(self, spacing: [f64; 3]) -> (f64, f64) {
        match self {
            SliceAxis::Axial => (spacing[0], spacing[1]),
            SliceAxis::Coronal => (spacing[0], spacing[2]),
            SliceAxis::Sagittal => (spacing[1], spacing[2]),
        }
    }

    /// Row-major pixels of slice `index` of a RAS+ array (see the module table); `None` when
    /// `index` is out of range.
    pub fn extract<T: Copy>(
        self,
        a: ArrayView3<'_, T>,
        index: usize,
    ) -> Option<(usize, usize, Vec<T>)> {
        let shape = [a.shape()[0], a.shape()[1], a.shape()[2]];
        if index >= self.count(shape) {
            return None;
        }
        let (w, h) = self.slice_size(shape);
        let [nx, ny, nz] = shape;
        let mut out = Vec::with_capacity(w * h);
        match self {
            SliceAxis::Axial => {
                for r in 0..h {
                    for c in 0..w {
                        out.push(a[[nx - 1 - c, ny - 1 - r, index]]);
                    }
                }
            }
            SliceAxis::Coronal => {
                for r in 0..h {
                    for c in 0..w {
                        out.push(a[[nx - 1 - c, index, nz - 1 - r]]);
                    }
                }
            }
            SliceAxis::Sagittal => {
                for r in 0..h {
                    for c in 0..w {
                        out.push(a[[index, ny - 1 - c, nz - 1 - r]]);
                    }
                }
            }
        }
        Some((w, h, out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array3;

    fn vol_with_affine(shape: [usize; 3], affine: Affine) -> Volume<u32> {
        // Each voxel stores its own (i, j, k) so moves can be traced.
        let data = Array3::from_shape_fn(shape, |(i, j, k)| (i * 10000 + j * 100 + k) as u32);
        Volume { data, affine }
    }

    fn world(a: &Affine, v: [f64; 3]) -> [f64; 3] {
        let mut w = [0.0; 3];
        for (r, wr) in w.iter_mut().enumerate() {
            *wr = a[r][0] * v[0] + a[r][1] * v[1] + a[r][2] * v[2] + a[r][3];
        }
        w
    }

    #[test]
    fn lps_like_affine_is_flipped_and_world_positions_kept() {
        // DICOM-like axial grid converted to RAS: columns run to patient left (-x), rows posterior.
        let affine = [
            [-0.5, 0.0, 0.0, 10.0],
            [0.0, -0.7, 0.0, 20.0],
            [0.0, 0.0, 2.0, -5.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        let v = vol_with_affine([4, 3, 2], affine);
        let ornt = io_orientation(&v.affine).unwrap();
        assert_eq!(ornt, [(0, true), (1, true), (2, false)]);
        let r = reorient_to_ras(v.clone()).unwrap();
        assert_eq!(r.shape(), [4, 3, 2]);
        // Every voxel of the new grid sits at the same world position as its old self.
        for i in 0..4 {
            for j in 0..3 {
                for k in 0..2 {
                    let val = r.data[[i, j, k]] as usize;
                    let old = [
                        (val / 10000) as f64,
                        ((val / 100) % 100) as f64,
                        (val % 100) as f64,
                    ];
                    let wn = world(&r.affine, [i as f64, j as f64, k as f64]);
                    let wo = world(&v.affine, old);
                    for d in 0..3 {
                        assert!((wn[d] - wo[d]).abs() < 1e-9, "{wn:?} vs {wo:?}");
                    }
                }
            }
        }
        // Diagonal is now positive.
        assert!(r.affine[0][0] > 0.0 && r.affine[1][1] > 0.0 && r.affine[2][2] > 0.0);
    }

    #[test]
    fn permuted_axes_sagittal_acquisition() {
        // Voxel axis 0 runs -y (posterior), axis 1 runs -z (inferior), axis 2 runs +x.
        let affine = [
            [0.0, 0.0, 1.2, 0.0],
            [-1.0, 0.0, 0.0, 0.0],
            [0.0, -1.0, 0.0, 0.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        let v = vol_with_affine([5, 6, 7], affine);
        let ornt = io_orientation(&v.affine).unwrap();
        assert_eq!(ornt, [(1, true), (2, true), (0, false)]);
        let r = reorient_to_ras(v.clone()).unwrap();
        assert_eq!(r.shape(), [7, 5, 6]);
        let val = r.data[[0, 0, 0]] as usize;
        // RAS origin voxel = old (i=4 (most posterior), j=5 (most inferior), k=0).
        assert_eq!(val, 4 * 10000 + 5 * 100);
        let expect = [
            [1.2, 0.0, 0.0, 0.0],
            [0.0, 1.0, 0.0, -4.0],
            [0.0, 0.0, 1.0, -5.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        assert!(crate::volume::affine_max_abs_diff(&r.affine, &expect) < 1e-12);
    }

    #[test]
    fn oblique_affine_uses_closest_axis() {
        // 30° rotation about z: axis 0 is mostly +x, axis 1 mostly +y.
        let (s, c) = (30f64.to_radians().sin(), 30f64.to_radians().cos());
        let affine = [
            [c, -s, 0.0, 0.0],
            [s, c, 0.0, 0.0],
            [0.0, 0.0, 1.0, 0.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        assert_eq!(
            io_orientation(&affine).unwrap(),
            [(0, false), (1, false), (2, false)]
        );
        // 60°: axis 0 is now mostly +y, axis 1 mostly -x.
        let (s, c) = (60f64.to_radians().sin(), 60f64.to_radians().cos());
        let affine = [
            [c, -s, 0.0, 0.0],
            [s, c, 0.0, 0.0],
            [0.0, 0.0, 1.0, 0.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        assert_eq!(
            io_orientation(&affine).unwrap(),
            [(1, false), (0, true), (2, false)]
        );
    }

    #[test]
    fn degenerate_affine_is_rejected() {
        let affine = [
            [1.0, 0.0, 0.0, 0.0],
            [0.0, 0.0, 0.0, 0.0],
            [0.0, 0.0, 0.0, 0.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        assert!(io_orientation(&affine).is_none());
    }

    #[test]
    fn slices_follow_radiological_convention() {
        // RAS array 3 (x) × 4 (y) × 5 (z); value encodes its index.
        let a = Array3::from_shape_fn((3, 4, 5), |(x, y, z)| (x * 100 + y * 10 + z) as u32);
        let (w, h, ax) = SliceAxis::Axial.extract(a.view(), 2).unwrap();
        assert_eq!((w, h), (3, 4));
        // Top-left: most anterior (y=3), most right (x=2).
        assert_eq!(ax[0], 232);
        // Bottom-right: posterior (y=0), left (x=0).
        assert_eq!(ax[w * h - 1], 2);
        let (w, h, co) = SliceAxis::Coronal.extract(a.view(), 1).unwrap();
        assert_eq!((w, h), (3, 5));
        assert_eq!(co[0], 214); // right, superior
        assert_eq!(co[w * h - 1], 10); // left, inferior
        let (w, h, sa) = SliceAxis::Sagittal.extract(a.view(), 0).unwrap();
        assert_eq!((w, h), (4, 5));
        assert_eq!(sa[0], 34); // anterior, superior
        assert_eq!(sa[w * h - 1], 0); // posterior, inferior
        assert!(SliceAxis::Sagittal.extract(a.view(), 3).is_none());
    }
}
