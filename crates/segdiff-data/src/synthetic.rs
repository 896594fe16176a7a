//! A synthetic CT-like phantom and a small NIfTI writer, for tests, examples and the benchmark.
//!
//! The phantom is an elliptic "body" (≈ 40 HU) in air (−1000 HU) holding three organs: a large
//! ellipsoid (class 1, ≈ 60 HU), a sphere (class 2, ≈ −20 HU) and a bright cylinder along z
//! (class 3, ≈ 700 HU, "bone"), plus a deterministic ripple so that slices differ. It is not a
//! model of anatomy; it exercises every step of the pipeline with known geometry.

use std::path::Path;

use ndarray::Array3;
use nifti::writer::WriterOptions;

use crate::error::{DataError, Result};
use crate::volume::Volume;

/// Phantom image (HU) and its label volume on a grid of `shape` voxels with `spacing` mm,
/// RAS+-aligned and centred on the origin.
pub fn phantom(shape: [usize; 3], spacing: [f64; 3]) -> (Volume<f32>, Volume<u8>) {
    let [nx, ny, nz] = shape;
    let centre =
        |i: usize, n: usize| (i as f64 - (n as f64 - 1.0) / 2.0) / (n as f64 / 2.0).max(0.5);
    let mut img = Array3::<f32>::zeros(shape);
    let mut lab = Array3::<u8>::zeros(shape);
    for ((i, j, k), v) in img.indexed_iter_mut() {
        let (x, y, z) = (centre(i, nx), centre(j, ny), centre(k, nz));
        let mut hu = -1000.0;
        let mut class = 0u8;
        if (x / 0.9).powi(2) + (y / 0.7).powi(2) < 1.0 {
            hu = 40.0;
            if ((x + 0.35) / 0.35).powi(2) + ((y - 0.1) / 0.3).powi(2) + (z / 0.8).powi(2) < 1.0 {
                hu = 60.0;
                class = 1;
            }
            if (x - 0.4).powi(2) + (y + 0.2).powi(2) + (z - 0.2).powi(2) < 0.2f64.powi(2) {
                hu = -20.0;
                class = 2;
            }
            if x.powi(2) + (y + 0.5).powi(2) < 0.12f64.powi(2) {
                hu = 700.0;
                class = 3;
            }
            hu += 15.0 * ((7.0 * x).sin() * (5.0 * y).cos() + (3.0 * z).sin());
        }
        *v = hu as f32;
        lab[[i, j, k]] = class;
    }
    let mut affine = [[0.0; 4]; 4];
    for d in 0..3 {
        affine[d][d] = spacing[d];
        affine[d][3] = -(shape[d] as f64 - 1.0) / 2.0 * spacing[d];
    }
    affine[3][3] = 1.0;
    (Volume { data: img, affine }, Volume { data: lab, affine })
}

fn nifti_write_err(path: &Path, e: nifti::NiftiError) -> DataError {
    match e {
        nifti::NiftiError::Io(source) => DataError::io(path, "write NIfTI", source),
        other => DataError::Nifti {
            path: path.to_path_buf(),
            detail: format!("cannot write: {other}"),
        },
    }
}

/// Write `vol` as an int16 NIfTI-1 (sform = its affine); `.nii.gz` paths are gzipped.
pub fn write_nifti_i16(path: &Path, vol: &Volume<i16>) -> Result<()> {
    let h = crate::nifti_writer::header_for_affine(&vol.affine);
    let gz = path.to_string_lossy().ends_with(".gz");
    WriterOptions::new(path)
        .reference_header(&h)
        .compress(gz)
        .write_nifti(&vol.data)
        .map_err(|e| nifti_write_err(path, e))
}

/// Write `vol` as a uint8 NIfTI-1 (sform = its affine); `.nii.gz` paths are gzipped.
pub fn write_nifti_u8(path: &Path, vol: &Volume<u8>) -> Result<()> {
    let h = crate::nifti_writer::header_for_affine(&vol.affine);
    let gz = path.to_string_lossy().ends_with(".gz");
    WriterOptions::new(path)
        .reference_header(&h)
        .compress(gz)
        .write_nifti(&vol.data)
        .map_err(|e| nifti_write_err(path, e))
}

/// Write `vol` as a float32 NIfTI-1 (sform = its affine); `.nii.gz` paths are gzipped.
pub fn write_nifti_f32(path: &Path, vol: &Volume<f32>) -> Result<()> {
    let h = crate::nifti_writer::header_for_affine(&vol.affine);
    let gz = path.to_string_lossy().ends_with(".gz");
    WriterOptions::new(path)
        .reference_header(&h)
        .compress(gz)
        .write_nifti(&vol.data)
        .map_err(|e| nifti_write_err(path, e))
}
