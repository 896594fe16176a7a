//! A volume written as NIfTI-1 on another file's grid: the reference header is kept field by
//! field (dim, pixdim, qform/sform codes and parameters, xyzt units, ...), only what describes
//! the voxel values changes (datatype, bitpix, scaling, calibration range, intent, description).
//!
//! `.nii.gz` paths are gzipped. Files are written to a temporary sibling and renamed into place.

use std::path::Path;

use ndarray::Array3;
use nifti::writer::WriterOptions;
use nifti::NiftiHeader;

use crate::error::{DataError, Result};
use crate::volume::{affine_zooms, Affine};

/// Voxel values to write, with their NIfTI datatype.
#[derive(Clone, Debug, PartialEq)]
pub enum NiftiVoxels {
    /// FLOAT32 voxels (e.g. intensities in [0, 1]).
    F32(Array3<f32>),
    /// INT16 voxels (e.g. Hounsfield units).
    I16(Array3<i16>),
}

impl NiftiVoxels {
    fn shape(&self) -> [usize; 3] {
        let s = match self {
            NiftiVoxels::F32(a) => a.shape(),
            NiftiVoxels::I16(a) => a.shape(),
        };
        [s[0], s[1], s[2]]
    }
}

fn nifti_err(path: &Path, detail: impl Into<String>) -> DataError {
    DataError::Nifti {
        path: path.to_path_buf(),
        detail: detail.into(),
    }
}

/// The header of the NIfTI file at `path` (the grid an output should keep).
pub fn read_nifti_header(path: &Path) -> Result<NiftiHeader> {
    NiftiHeader::from_file(path).map_err(|e| nifti_err(path, e.to_string()))
}

/// A minimal header for a grid known only by its affine (sform, millimetres), e.g. a DICOM SEG's.
pub fn header_for_affine(affine: &Affine) -> NiftiHeader {
    let z = affine_zooms(affine);
    let row = |r: usize| [0, 1, 2, 3].map(|c| affine[r][c] as f32);
    NiftiHeader {
        sform_code: 1,
        qform_code: 0,
        pixdim: [
            1.0,
            z[0] as f32,
            z[1] as f32,
            z[2] as f32,
            1.0,
            0.0,
            0.0,
            0.0,
        ],
        srow_x: row(0),
        srow_y: row(1),
        srow_z: row(2),
        xyzt_units: 2,
        ..NiftiHeader::default()
    }
}

/// Writes `voxels` to `path` with `reference`'s geometry (see the module docs); the spatial
/// shape must be the reference's. `description` goes into `descrip` (cut to 79 bytes).
pub fn write_nifti_like(
    path: &Path,
    reference: &NiftiHeader,
    voxels: &NiftiVoxels,
    description: &str,
) -> Result<()> {
    let want = [1, 2, 3].map(|d| usize::from(reference.dim[d].max(1)));
    if voxels.shape() != want {
        return Err(nifti_err(
            path,
            format!(
                "voxel shape {:?} differs from the reference grid {want:?}",
                voxels.shape()
            ),
        ));
    }
    let mut h = reference.clone();
    h.intent_code = 0;
    h.intent_p1 = 0.0;
    h.intent_p2 = 0.0;
    h.intent_p3 = 0.0;
    h.intent_name = [0; 16];
    h.cal_min = 0.0;
    h.cal_max = 0.0;
    h.glmin = 0;
    h.glmax = 0;
    let mut d = description.as_bytes().to_vec();
    d.truncate(79);
    h.set_description(d)
        .map_err(|e| nifti_err(path, e.to_string()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let gz = name.ends_with(".gz");
    // The nifti crate rewrites the extension of the path it is given, so the temporary name
    // carries the final extension and no other dot.
    let tmp_name = format!(
        ".segdiff-nifti-{}{}",
        std::process::id(),
        if gz { ".nii.gz" } else { ".nii" }
    );
    let tmp = match path.parent() {
        Some(p) => p.join(tmp_name),
        None => tmp_name.into(),
    };
    segdiff_io::write_atomic(path, |atomic_tmp| {
        let opts = WriterOptions::new(&tmp).reference_header(&h).compress(gz);
        let written = match voxels {
            NiftiVoxels::F32(a) => opts.write_nifti(a),
            NiftiVoxels::I16(a) => opts.write_nifti(a),
        };
        let moved = written
            .map_err(std::io::Error::other)
            .and_then(|()| std::fs::rename(&tmp, atomic_tmp));
        if moved.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        moved
    })
    .map_err(|e| DataError::io(path, "write NIfTI", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nifti_volume::{read_nifti, read_nifti_geometry};
    use crate::volume::Volume;

    #[test]
    fn keeps_the_reference_geometry_for_nii_and_nii_gz() {
        let dir = std::env::temp_dir().join(format!("segdiff-niiw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let src = dir.join("labels.nii.gz");
        let affine = [
            [0.0, 0.8, 0.0, 17.5],
            [0.0, 0.0, -1.1, -3.25],
            [-2.5, 0.0, 0.0, 40.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        let labels = Volume {
            data: Array3::<u8>::from_shape_fn([4, 5, 3], |(i, j, k)| ((i + j + k) % 3) as u8),
            affine,
        };
        crate::synthetic::write_nifti_u8(&src, &labels).unwrap();
        let mut reference = read_nifti_header(&src).unwrap();
        reference.qform_code = 1;
        reference.quatern_x = 17.5;
        reference.xyzt_units = 10;
        let f =
            Array3::<f32>::from_shape_fn([4, 5, 3], |(i, j, k)| (i * 15 + j * 3 + k) as f32 / 60.0);
        let hu = f.mapv(|v| (v * 1000.0 - 500.0) as i16);
        for (name, vox) in [
            ("out.nii", NiftiVoxels::F32(f.clone())),
            ("out.nii.gz", NiftiVoxels::I16(hu.clone())),
        ] {
            let out = dir.join(name);
            write_nifti_like(&out, &reference, &vox, "segdiff synthetic").unwrap();
            let (shape, a) = read_nifti_geometry(&out, 0).unwrap();
            assert_eq!(shape, [4, 5, 3]);
            assert_eq!(a, read_nifti_geometry(&src, 0).unwrap().1);
            let h = read_nifti_header(&out).unwrap();
            assert_eq!(
                (
                    h.qform_code,
                    h.sform_code,
                    h.xyzt_units,
                    h.pixdim,
                    h.quatern_x
                ),
                (1, reference.sform_code, 10, reference.pixdim, 17.5)
            );
            assert_eq!(h.datatype, if name.ends_with(".gz") { 4 } else { 16 });
            let back = read_nifti(&out, 0).unwrap().volume.data;
            match vox {
                NiftiVoxels::F32(a) => assert_eq!(back, a),
                NiftiVoxels::I16(a) => assert_eq!(back, a.mapv(f32::from)),
            }
        }
        // Only the finished files are left (no temporary siblings).
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["labels.nii.gz", "out.nii", "out.nii.gz"]);
        let bad = NiftiVoxels::F32(Array3::zeros([4, 5, 2]));
        assert!(write_nifti_like(&dir.join("bad.nii"), &reference, &bad, "x").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
