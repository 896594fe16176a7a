//! A volume written as a new DICOM series (one single-frame file per slice), marked as derived.
//!
//! Slices follow the volume's own third voxel axis: in file `k`, column `c` and row `r` hold
//! voxel `(c, r, k)`, so ImageOrientationPatient is the (LPS) direction of the first two voxel
//! axes, PixelSpacing their spacing (row spacing first, as DICOM orders it) and
//! ImagePositionPatient the centre of voxel `(0, 0, k)`: every voxel keeps its world position.
//! Study, series, frame-of-reference and instance UIDs are `2.25.<128-bit number>` derived from a
//! caller's key (e.g. seed and input path), so a rerun writes the same UIDs and two inputs never
//! share them. ImageType is `DERIVED\SECONDARY`, BurnedInAnnotation `NO`. The folder is built
//! under a temporary sibling and swapped in whole.

use std::path::Path;

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use sha2::{Digest, Sha256};

use crate::error::{DataError, Result};
use crate::volume::{affine_zooms, lps_to_ras, Volume};

/// CT Image Storage.
pub const CT_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.2";
/// MR Image Storage.
pub const MR_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.4";
/// Secondary Capture Image Storage.
pub const SECONDARY_CAPTURE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.7";
const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";

/// How voxel values become stored 16-bit pixels: `value = stored · slope + intercept`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DicomScaling {
    /// RescaleSlope.
    pub slope: f64,
    /// RescaleIntercept.
    pub intercept: f64,
    /// Signed (PixelRepresentation 1) or unsigned stored pixels.
    pub signed: bool,
}

impl DicomScaling {
    /// Hounsfield units stored as they are (signed, slope 1, intercept 0).
    pub const HU: DicomScaling = DicomScaling {
        slope: 1.0,
        intercept: 0.0,
        signed: true,
    };

    /// Values in `[lo, hi]` spread over the unsigned 12-bit range 0..=4095.
    pub fn range(lo: f64, hi: f64) -> DicomScaling {
        let span = if hi > lo { hi - lo } else { 1.0 };
        DicomScaling {
            slope: span / 4095.0,
            intercept: lo,
            signed: false,
        }
    }

    fn store(&self, v: f32) -> u16 {
        let s = ((f64::from(v) - self.intercept) / self.slope).round();
        if self.signed {
            s.clamp(f64::from(i16::MIN), f64::from(i16::MAX)) as i16 as u16
        } else {
            s.clamp(0.0, f64::from(u16::MAX)) as u16
        }
    }
}

/// What the new series says about itself.
#[derive(Clone, Debug)]
pub struct DicomSeriesOptions {
    /// Modality (`CT`, `MR`); anything else (or none) writes Secondary Capture with modality `OT`.
    pub modality: Option<String>,
    /// SeriesDescription (cut to 64 characters).
    pub description: String,
    /// DerivationDescription: where the series came from.
    pub derivation: String,
    /// Key the UIDs are derived from (same key → same UIDs).
    pub uid_key: String,
    /// Stored pixel encoding.
    pub scaling: DicomScaling,
}

/// `2.25.<decimal>` from the first 128 bits of SHA-256(`key`/`what`) (ISO/IEC 9834-8 UUID-derived
/// UID form; at most 44 characters).
pub fn derived_uid(key: &str, what: &str) -> String {
    let mut h = Sha256::new();
    h.update(key.as_bytes());
    h.update(b"\0");
    h.update(what.as_bytes());
    let d = h.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    format!("2.25.{}", u128::from_be_bytes(b).max(1))
}

fn ds(v: &[f64]) -> PrimitiveValue {
    PrimitiveValue::from(
        v.iter()
            .map(|x| {
                // DS holds at most 16 characters.
                let s = format!("{x:.6}");
                let s = s.trim_end_matches('0').trim_end_matches('.');
                let s = if s == "-0" { "0" } else { s };
                s.chars().take(16).collect::<String>()
            })
            .collect::<Vec<_>>()
            .join("\\"),
    )
}

/// Writes `volume` (values in the units `options.scaling` describes) as a new series in the
/// folder `dir` (`0001.dcm`, `0002.dcm`, ...), replacing any folder there.
pub fn write_dicom_series(
    dir: &Path,
    volume: &Volume<f32>,
    options: &DicomSeriesOptions,
) -> Result<()> {
    let [nx, ny, nz] = volume.shape();
    if nx > usize::from(u16::MAX) || ny > usize::from(u16::MAX) || nx * ny * nz == 0 {
        return Err(DataError::option(
            "out",
            format!("{:?} voxels do not fit DICOM frames", volume.shape()),
        ));
    }
    let modality = match options.modality.as_deref().map(str::to_ascii_uppercase) {
        Some(m) if m == "CT" => ("CT", CT_IMAGE_STORAGE),
        Some(m) if m == "MR" || m == "MRI" => ("MR", MR_IMAGE_STORAGE),
        _ => ("OT", SECONDARY_CAPTURE_STORAGE),
    };
    let lps = lps_to_ras(&volume.affine);
    let z = affine_zooms(&volume.affine);
    let unit = |c: usize| [0, 1, 2].map(|r| lps[r][c] / if z[c] > 0.0 { z[c] } else { 1.0 });
    let (row_dir, col_dir) = (unit(0), unit(1));
    let study = derived_uid(&options.uid_key, "study");
    let series = derived_uid(&options.uid_key, "series");
    let frame = derived_uid(&options.uid_key, "frame-of-reference");
    let description: String = options.description.chars().take(64).collect();
    let staged = segdiff_io::temp_sibling(dir, "staging");
    let _ = std::fs::remove_dir_all(&staged);
    std::fs::create_dir_all(&staged).map_err(|e| DataError::io(&staged, "create folder", e))?;
    let guard = segdiff_io::remove_dir_on_drop(&staged);
    for k in 0..nz {
        let sop = derived_uid(&options.uid_key, &format!("instance {k}"));
        let mut obj = InMemDicomObject::new_empty();
        let mut put = |tag, vr, v: PrimitiveValue| obj.put(DataElement::new(tag, vr, v));
        let s = |v: &str| PrimitiveValue::from(v);
        put(tags::SPECIFIC_CHARACTER_SET, VR::CS, s("ISO_IR 192"));
        put(tags::IMAGE_TYPE, VR::CS, s("DERIVED\\SECONDARY"));
        put(tags::SOP_CLASS_UID, VR::UI, s(modality.1));
        put(tags::SOP_INSTANCE_UID, VR::UI, s(&sop));
        put(tags::MODALITY, VR::CS, s(modality.0));
        put(tags::PATIENT_NAME, VR::PN, s("segdiff^synthetic"));
        put(tags::PATIENT_ID, VR::LO, s("segdiff-synthetic"));
        put(tags::STUDY_INSTANCE_UID, VR::UI, s(&study));
        put(tags::SERIES_INSTANCE_UID, VR::UI, s(&series));
        put(tags::FRAME_OF_REFERENCE_UID, VR::UI, s(&frame));
        put(tags::SERIES_NUMBER, VR::IS, s("9001"));
        put(
            tags::INSTANCE_NUMBER,
            VR::IS,
            PrimitiveValue::from((k + 1).to_string()),
        );
        put(tags::SERIES_DESCRIPTION, VR::LO, s(&description));
        put(
            tags::DERIVATION_DESCRIPTION,
            VR::ST,
            s(&options.derivation.chars().take(1024).collect::<String>()),
        );
        put(tags::BURNED_IN_ANNOTATION, VR::CS, s("NO"));
        put(tags::CONVERSION_TYPE, VR::CS, s("SYN"));
        let pos = [0, 1, 2].map(|r| lps[r][2] * k as f64 + lps[r][3]);
        put(tags::IMAGE_POSITION_PATIENT, VR::DS, ds(&pos));
        put(
            tags::IMAGE_ORIENTATION_PATIENT,
            VR::DS,
            ds(&[
                row_dir[0], row_dir[1], row_dir[2], col_dir[0], col_dir[1], col_dir[2],
            ]),
        );
        put(tags::PIXEL_SPACING, VR::DS, ds(&[z[1], z[0]]));
        put(tags::SLICE_THICKNESS, VR::DS, ds(&[z[2]]));
        put(tags::SPACING_BETWEEN_SLICES, VR::DS, ds(&[z[2]]));
        put(tags::SAMPLES_PER_PIXEL, VR::US, PrimitiveValue::from(1u16));
        put(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, s("MONOCHROME2"));
        put(tags::ROWS, VR::US, PrimitiveValue::from(ny as u16));
        put(tags::COLUMNS, VR::US, PrimitiveValue::from(nx as u16));
        put(tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(16u16));
        put(tags::BITS_STORED, VR::US, PrimitiveValue::from(16u16));
        put(tags::HIGH_BIT, VR::US, PrimitiveValue::from(15u16));
        put(
            tags::PIXEL_REPRESENTATION,
            VR::US,
            PrimitiveValue::from(u16::from(options.scaling.signed)),
        );
        put(tags::RESCALE_SLOPE, VR::DS, ds(&[options.scaling.slope]));
        put(
            tags::RESCALE_INTERCEPT,
            VR::DS,
            ds(&[options.scaling.intercept]),
        );
        let mut words = Vec::with_capacity(nx * ny);
        for r in 0..ny {
            for c in 0..nx {
                words.push(options.scaling.store(volume.data[[c, r, k]]));
            }
        }
        put(tags::PIXEL_DATA, VR::OW, PrimitiveValue::U16(words.into()));
        let meta = FileMetaTableBuilder::new()
            .transfer_syntax(EXPLICIT_VR_LE)
            .media_storage_sop_class_uid(modality.1)
            .media_storage_sop_instance_uid(sop.as_str());
        let path = staged.join(format!("{:04}.dcm", k + 1));
        let file = obj.with_meta(meta).map_err(|e| DataError::DicomParse {
            path: path.clone(),
            detail: format!("cannot build the file meta table: {e}"),
        })?;
        file.write_to_file(&path)
            .map_err(|e| DataError::DicomParse {
                path: path.clone(),
                detail: format!("cannot write: {e}"),
            })?;
    }
    segdiff_io::replace_dir(&staged, dir).map_err(|e| DataError::io(dir, "replace folder", e))?;
    guard.keep();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::orientation::reorient_to_ras;
    use crate::volume::affine_max_abs_diff;
    use ndarray::Array3;

    #[test]
    fn series_reads_back_on_the_same_world_grid() {
        let dir = std::env::temp_dir().join(format!("segdiff-dcmw-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // Permuted, flipped and shifted axes (file axis 0 inferior, 1 right, 2 posterior).
        let affine = [
            [0.0, 0.8, 0.0, 17.5],
            [0.0, 0.0, -1.1, -3.25],
            [-2.5, 0.0, 0.0, 40.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        let data =
            Array3::from_shape_fn([5, 6, 4], |(i, j, k)| (i * 100 + j * 10 + k) as f32 - 300.0);
        let vol = Volume { data, affine };
        for (modality, scaling, tol) in [
            (Some("CT".to_string()), DicomScaling::HU, 0.0),
            (None, DicomScaling::range(-300.0, 200.0), 0.07),
        ] {
            let out = dir.join("series");
            let opts = DicomSeriesOptions {
                modality: modality.clone(),
                description: "segdiff synthetic test".into(),
                derivation: "test".into(),
                uid_key: "seed 0 labels.nii.gz".into(),
                scaling,
            };
            write_dicom_series(&out, &vol, &opts).unwrap();
            let back = crate::dicom_series::read_dicom(&out).unwrap();
            assert_eq!(
                back.modality.as_deref(),
                Some(if modality.is_some() { "CT" } else { "OT" })
            );
            let a = reorient_to_ras(vol.clone()).unwrap();
            let b = reorient_to_ras(back.volume).unwrap();
            assert_eq!(a.shape(), b.shape());
            let d = affine_max_abs_diff(&a.affine, &b.affine);
            assert!(
                d < 1e-4,
                "affines differ by {d}: {:?} vs {:?}",
                a.affine,
                b.affine
            );
            let worst = a
                .data
                .iter()
                .zip(b.data.iter())
                .map(|(x, y)| (x - y).abs())
                .fold(0.0f32, f32::max);
            println!("{modality:?}: affine diff {d:e}, max value error {worst}");
            assert!(worst <= tol, "max value error {worst}");
        }
        assert_eq!(derived_uid("a", "series"), derived_uid("a", "series"));
        assert_ne!(derived_uid("a", "series"), derived_uid("b", "series"));
        assert!(derived_uid("a", "series").len() <= 64);
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
