//! NIfTI-1 (`.nii`, `.nii.gz`, either byte order) → volume, following nibabel. The affine rule
//! (`forms_affine`) is shared with NIfTI-2 and NIfTI-1 pairs ([`crate::volume_formats`]).
//!
//! * Values: `scl_slope`/`scl_inter` applied as nibabel does (a slope of 0 or a non-finite slope
//!   means "no scaling"; a non-finite intercept counts as 0), computed in f64 and stored as f32.
//! * Affine (nibabel `get_best_affine`): the sform when `sform_code > 0`, else the qform when
//!   `qform_code > 0`, else nibabel's fallback (`diag(−dx, dy, dz)` centred on the volume). The
//!   qform is computed here from the raw quaternion fields; unlike nibabel (which rejects them)
//!   negative `pixdim[1..3]` are taken by absolute value, with a warning.
//! * 4-D files: one volume is taken (`volume_index`); higher dimensions must have length 1.

use std::path::Path;

use ndarray::{Axis, Ix3};
use nifti::{InMemNiftiVolume, IntoNdArray, NiftiHeader, NiftiObject, ReaderOptions};

use crate::error::{DataError, Result};
use crate::loaded::LoadedVolume;
use crate::volume::{Affine, Volume};

fn nifti_err(path: &Path, detail: impl Into<String>) -> DataError {
    DataError::Nifti {
        path: path.to_path_buf(),
        detail: detail.into(),
    }
}

/// Rotation matrix of the unit quaternion (w, x, y, z).
fn quaternion_matrix(w: f64, x: f64, y: f64, z: f64) -> [[f64; 3]; 3] {
    [
        [
            w * w + x * x - y * y - z * z,
            2.0 * (x * y - w * z),
            2.0 * (x * z + w * y),
        ],
        [
            2.0 * (x * y + w * z),
            w * w - x * x + y * y - z * z,
            2.0 * (y * z - w * x),
        ],
        [
            2.0 * (x * z - w * y),
            2.0 * (y * z + w * x),
            w * w - x * x - y * y + z * z,
        ],
    ]
}

/// The header fields that place a NIfTI (1 or 2) or NIfTI-1 pair volume in the world, widened to
/// f64 (exactly, for NIfTI-1's f32 fields), so one function gives every variant nibabel's affine.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct NiftiForms {
    pub(crate) sform_code: i64,
    pub(crate) srow: [[f64; 4]; 3],
    pub(crate) qform_code: i64,
    /// `quatern_b`, `quatern_c`, `quatern_d`.
    pub(crate) quatern: [f64; 3],
    /// `qoffset_x`, `qoffset_y`, `qoffset_z`.
    pub(crate) qoffset: [f64; 3],
    /// `pixdim[0..4]` (`pixdim[0]` is qfac).
    pub(crate) pixdim: [f64; 4],
    /// `dim[1..4]`, each at least 1.
    pub(crate) dim: [f64; 3],
}

impl NiftiForms {
    fn of_header(header: &NiftiHeader) -> Self {
        let r = |row: [f32; 4]| row.map(f64::from);
        NiftiForms {
            sform_code: i64::from(header.sform_code),
            srow: [r(header.srow_x), r(header.srow_y), r(header.srow_z)],
            qform_code: i64::from(header.qform_code),
            quatern: [header.quatern_b, header.quatern_c, header.quatern_d].map(f64::from),
            qoffset: [header.quatern_x, header.quatern_y, header.quatern_z].map(f64::from),
            pixdim: [
                header.pixdim[0],
                header.pixdim[1],
                header.pixdim[2],
                header.pixdim[3],
            ]
            .map(f64::from),
            dim: [header.dim[1], header.dim[2], header.dim[3]].map(|d| f64::from(d.max(1))),
        }
    }
}

/// The voxel-to-RAS affine nibabel would report for this header, plus warnings.
pub fn nifti_affine(header: &NiftiHeader) -> (Affine, Vec<String>) {
    forms_affine(&NiftiForms::of_header(header))
}

/// nibabel's `get_best_affine` for NIfTI-1 and NIfTI-2 alike (see the module docs).
pub(crate) fn forms_affine(f: &NiftiForms) -> (Affine, Vec<String>) {
    let mut warnings = Vec::new();
    if f.sform_code > 0 {
        return (
            [f.srow[0], f.srow[1], f.srow[2], [0.0, 0.0, 0.0, 1.0]],
            warnings,
        );
    }
    let mut zooms = [0.0f64; 3];
    for (d, z) in zooms.iter_mut().enumerate() {
        let p = f.pixdim[d + 1];
        *z = if p.is_finite() && p != 0.0 {
            p.abs()
        } else {
            1.0
        };
        if p < 0.0 {
            warnings.push(format!(
                "pixdim[{}] = {p} is negative: using its absolute value",
                d + 1
            ));
        }
    }
    if f.qform_code > 0 {
        let [b, c, d] = f.quatern;
        // The NIfTI quaternion stores b, c, d; a = sqrt(1 - b² - c² - d²), clamped at 0 for the
        // rounding noise of nearly-180° rotations.
        let a = (1.0 - (b * b + c * c + d * d)).max(0.0).sqrt();
        let rot = quaternion_matrix(a, b, c, d);
        let qfac = if f.pixdim[0] < 0.0 { -1.0 } else { 1.0 };
        let scale = [zooms[0], zooms[1], zooms[2] * qfac];
        let mut m = [[0.0; 4]; 4];
        for r in 0..3 {
            for col in 0..3 {
                m[r][col] = rot[r][col] * scale[col];
            }
            m[r][3] = f.qoffset[r];
        }
        m[3][3] = 1.0;
        return (m, warnings);
    }
    warnings.push(
        "neither sform nor qform is set: using nibabel's default (LAS, centred) affine".into(),
    );
    let z = [-zooms[0], zooms[1], zooms[2]];
    let mut m = [[0.0; 4]; 4];
    for i in 0..3 {
        m[i][i] = z[i];
        m[i][3] = -(f.dim[i] - 1.0) / 2.0 * z[i];
    }
    m[3][3] = 1.0;
    (m, warnings)
}

/// The 3-D shape of the volume that [`read_nifti`] returns, checking the dimensions and index.
fn spatial_shape(path: &Path, header: &NiftiHeader, volume_index: usize) -> Result<[usize; 3]> {
    let dims = header.dim().map_err(|e| nifti_err(path, e.to_string()))?;
    let d = |i: usize| dims.get(i).map(|&v| v as usize).unwrap_or(1);
    let n4 = d(3);
    crate::volume_formats::check_volume_index(path, n4, volume_index)?;
    if dims.len() > 4 && dims[4..].iter().any(|&v| v > 1) {
        return Err(nifti_err(
            path,
            format!("dimensions {dims:?}: only 3-D and 4-D volumes are supported"),
        ));
    }
    Ok([d(0), d(1), d(2)])
}

/// Shape and affine from the header alone (cheap; used to plan work before loading).
pub fn read_nifti_geometry(path: &Path, volume_index: usize) -> Result<([usize; 3], Affine)> {
    let header = NiftiHeader::from_file(path).map_err(|e| nifti_err(path, e.to_string()))?;
    let shape = spatial_shape(path, &header, volume_index)?;
    Ok((shape, nifti_affine(&header).0))
}

/// Read a NIfTI-1 image (see the module docs); `volume_index` selects the volume of a 4-D file.
pub fn read_nifti(path: &Path, volume_index: usize) -> Result<LoadedVolume> {
    let obj = ReaderOptions::new()
        .read_file(path)
        .map_err(|e| nifti_err(path, e.to_string()))?;
    let header = obj.header().clone();
    let shape = spatial_shape(path, &header, volume_index)?;
    let (affine, warnings) = nifti_affine(&header);
    let datatype = header
        .data_type()
        .map_err(|e| nifti_err(path, e.to_string()))?;
    let raw = obj.into_volume().into_raw_data();
    // Rebuilt with a zero slope so that the nifti crate does not scale: scaling follows nibabel.
    let unscaled =
        InMemNiftiVolume::from_raw_fields(header.dim, datatype, 0.0, 0.0, raw, header.endianness)
            .map_err(|e| nifti_err(path, e.to_string()))?;
    let arr = unscaled
        .into_ndarray::<f32>()
        .map_err(|e| nifti_err(path, format!("cannot convert voxel type {datatype:?}: {e}")))?;
    let mut arr = arr;
    while arr.ndim() > 4 {
        let last = Axis(arr.ndim() - 1);
        arr = arr.index_axis_move(last, 0);
    }
    if arr.ndim() == 4 {
        arr = arr.index_axis_move(Axis(3), volume_index);
    }
    while arr.ndim() < 3 {
        let n = Axis(arr.ndim());
        arr = arr.insert_axis(n);
    }
    let mut data = arr
        .into_dimensionality::<Ix3>()
        .map_err(|e| nifti_err(path, e.to_string()))?;
    debug_assert_eq!(data.shape(), &shape);
    let slope = f64::from(header.scl_slope);
    let inter = f64::from(header.scl_inter);
    if slope.is_finite() && slope != 0.0 {
        let inter = if inter.is_finite() { inter } else { 0.0 };
        if slope != 1.0 || inter != 0.0 {
            data.mapv_inplace(|v| (f64::from(v) * slope + inter) as f32);
        }
    }
    Ok(LoadedVolume {
        volume: Volume { data, affine },
        source: path.to_path_buf(),
        modality: None,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qform_quaternion_matches_rotation() {
        // 90° about z: quaternion (cos45, 0, 0, sin45).
        let mut h = NiftiHeader {
            qform_code: 1,
            sform_code: 0,
            quatern_b: 0.0,
            quatern_c: 0.0,
            quatern_d: std::f32::consts::FRAC_1_SQRT_2,
            pixdim: [1.0, 2.0, 3.0, 4.0, 0.0, 0.0, 0.0, 0.0],
            quatern_x: 5.0,
            quatern_y: 6.0,
            quatern_z: 7.0,
            ..NiftiHeader::default()
        };
        let (a, w) = nifti_affine(&h);
        assert!(w.is_empty());
        // Column 0 (voxel i) runs +y with 2 mm, column 1 runs −x with 3 mm, column 2 +z 4 mm.
        let expect = [
            [0.0, -3.0, 0.0, 5.0],
            [2.0, 0.0, 0.0, 6.0],
            [0.0, 0.0, 4.0, 7.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        assert!(
            crate::volume::affine_max_abs_diff(&a, &expect) < 1e-6,
            "{a:?}"
        );
        // qfac = -1 flips the third column; negative pixdim is tolerated with a warning.
        h.pixdim = [-1.0, -2.0, 3.0, 4.0, 0.0, 0.0, 0.0, 0.0];
        let (a, w) = nifti_affine(&h);
        assert_eq!(w.len(), 1);
        assert!((a[2][2] + 4.0).abs() < 1e-6 && (a[1][0] - 2.0).abs() < 1e-6);
    }

    #[test]
    fn fallback_affine_is_nibabels_centred_las() {
        let h = NiftiHeader {
            qform_code: 0,
            sform_code: 0,
            dim: [3, 5, 7, 9, 1, 1, 1, 1],
            pixdim: [1.0, 2.0, 1.0, 3.0, 0.0, 0.0, 0.0, 0.0],
            ..NiftiHeader::default()
        };
        let (a, _) = nifti_affine(&h);
        let expect = [
            [-2.0, 0.0, 0.0, 4.0],
            [0.0, 1.0, 0.0, -3.0],
            [0.0, 0.0, 3.0, -12.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        assert!(
            crate::volume::affine_max_abs_diff(&a, &expect) < 1e-12,
            "{a:?}"
        );
    }
}
