//! DICOM SEG (binary segmentations) → a label volume on an image's voxel grid.
//!
//! Each frame of a SEG object holds one segment on one plane (Segment Identification and Plane
//! Position functional groups). Every frame must lie exactly on a slice of the image grid (same
//! in-plane origin, directions and pixel size, within 1 % of a voxel); its set pixels receive
//! the frame's segment number, which a [`crate::LabelMapping`] then turns into a class id
//! (segment number = source value). Where segments overlap, the higher segment number wins.
//! FRACTIONAL segmentations are not supported.

use std::path::Path;

use dicom_dictionary_std::tags;
use dicom_object::{InMemDicomObject, OpenFileOptions};
use ndarray::Array3;

use crate::dicom_series::read_dicom_pixels;
use crate::error::{DataError, Result};
use crate::volume::{affine_apply, affine_inverse, lps_to_ras, Affine};

fn seg_err(path: &Path, image: &Path, detail: String) -> DataError {
    DataError::LabelGridMismatch {
        path: path.to_path_buf(),
        image: image.to_path_buf(),
        detail,
    }
}

fn f64s(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Option<Vec<f64>> {
    obj.element_opt(tag).ok().flatten()?.to_multi_float64().ok()
}

fn item(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Option<&InMemDicomObject> {
    obj.element_opt(tag).ok().flatten()?.items()?.first()
}

/// Rasterise the SEG at `path` onto the grid (`shape`, RAS `affine`) of the image at `image`.
///
/// Returns segment numbers as f32 (0 = no segment) in the image's (unreoriented) voxel order.
pub fn read_seg_labels(
    path: &Path,
    image: &Path,
    shape: [usize; 3],
    affine: &Affine,
) -> Result<Array3<f32>> {
    let parse_err = |detail: String| DataError::DicomParse {
        path: path.to_path_buf(),
        detail,
    };
    crate::dicom_series::check_dicom_lengths(path)?;
    let obj = match segdiff_io::catch_panic(|| OpenFileOptions::new().open_file(path)) {
        Ok(r) => r.map_err(|e| parse_err(e.to_string()))?,
        Err(panic) => {
            return Err(parse_err(segdiff_io::panic_detail(
                "the DICOM parser",
                &panic,
            )))
        }
    };
    let attr = |name: &'static str, detail: String| DataError::DicomAttribute {
        path: path.to_path_buf(),
        attribute: name,
        detail,
    };
    let seg_type = obj
        .element_opt(tags::SEGMENTATION_TYPE)
        .ok()
        .flatten()
        .and_then(|e| e.to_str().ok().map(|s| s.trim().to_string()))
        .unwrap_or_default();
    if seg_type != "BINARY" {
        return Err(attr(
            "SegmentationType",
            format!("`{seg_type}`: only BINARY segmentations are supported"),
        ));
    }
    let px = read_dicom_pixels(path)?;
    if (px.cols, px.rows) != (shape[0], shape[1]) {
        return Err(seg_err(
            path,
            image,
            format!(
                "frames are {}x{} (rows x columns), image slices {}x{}",
                px.rows, px.cols, shape[1], shape[0]
            ),
        ));
    }
    let top: &InMemDicomObject = &obj;
    let shared = item(top, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE);
    let per_frame = top
        .element_opt(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE)
        .ok()
        .flatten()
        .and_then(|e| e.items())
        .ok_or_else(|| attr("PerFrameFunctionalGroupsSequence", "missing".into()))?;
    if per_frame.len() != px.frames {
        return Err(attr(
            "PerFrameFunctionalGroupsSequence",
            format!("{} items for {} frames", per_frame.len(), px.frames),
        ));
    }
    let inv = affine_inverse(affine)
        .ok_or_else(|| seg_err(path, image, "image affine is singular".into()))?;
    let lookup = |pf: &InMemDicomObject, seq: dicom_core::Tag, tag: dicom_core::Tag| {
        item(pf, seq)
            .and_then(|g| f64s(g, tag))
            .or_else(|| shared.and_then(|s| item(s, seq)).and_then(|g| f64s(g, tag)))
    };
    let mut out = Array3::<f32>::zeros(shape);
    let n = px.rows * px.cols;
    for (f, pf) in per_frame.iter().enumerate() {
        let segment = item(pf, tags::SEGMENT_IDENTIFICATION_SEQUENCE)
            .and_then(|s| {
                s.element_opt(tags::REFERENCED_SEGMENT_NUMBER)
                    .ok()
                    .flatten()
            })
            .and_then(|e| e.to_int::<i64>().ok())
            .ok_or_else(|| {
                attr(
                    "ReferencedSegmentNumber",
                    format!("missing for frame {}", f + 1),
                )
            })?;
        let pos = lookup(
            pf,
            tags::PLANE_POSITION_SEQUENCE,
            tags::IMAGE_POSITION_PATIENT,
        )
        .filter(|v| v.len() == 3)
        .ok_or_else(|| {
            attr(
                "ImagePositionPatient",
                format!("missing for frame {}", f + 1),
            )
        })?;
        let iop = lookup(
            pf,
            tags::PLANE_ORIENTATION_SEQUENCE,
            tags::IMAGE_ORIENTATION_PATIENT,
        )
        .filter(|v| v.len() == 6)
        .ok_or_else(|| {
            attr(
                "ImageOrientationPatient",
                format!("missing for frame {}", f + 1),
            )
        })?;
        let ps = lookup(pf, tags::PIXEL_MEASURES_SEQUENCE, tags::PIXEL_SPACING)
            .filter(|v| v.len() == 2)
            .ok_or_else(|| attr("PixelSpacing", format!("missing for frame {}", f + 1)))?;
        // World (RAS) position of three frame corners, mapped into image voxel indices.
        let frame_lps: Affine = [
            [iop[0] * ps[1], iop[3] * ps[0], 0.0, pos[0]],
            [iop[1] * ps[1], iop[4] * ps[0], 0.0, pos[1]],
            [iop[2] * ps[1], iop[5] * ps[0], 0.0, pos[2]],
            [0.0, 0.0, 0.0, 1.0],
        ];
        let frame_ras = lps_to_ras(&frame_lps);
        let corner = |c: f64, r: f64| affine_apply(&inv, affine_apply(&frame_ras, [c, r, 0.0]));
        let (c1, r1) = ((px.cols - 1) as f64, (px.rows - 1) as f64);
        let p00 = corner(0.0, 0.0);
        let p10 = corner(c1, 0.0);
        let p01 = corner(0.0, r1);
        let k = p00[2].round();
        let ok =
            |p: [f64; 3], want: [f64; 3]| p.iter().zip(want).all(|(a, b)| (a - b).abs() < 0.01);
        if !(ok(p00, [0.0, 0.0, k]) && ok(p10, [c1, 0.0, k]) && ok(p01, [0.0, r1, k]))
            || k < 0.0
            || k >= shape[2] as f64
        {
            return Err(seg_err(
                path,
                image,
                format!(
                    "frame {} (segment {segment}) does not lie on an image slice: its corner voxel \
                     coordinates are {:?}",
                    f + 1,
                    p00.map(|v| (v * 1000.0).round() / 1000.0)
                ),
            ));
        }
        let k = k as usize;
        let frame = &px.raw[f * n..(f + 1) * n];
        for r in 0..px.rows {
            for c in 0..px.cols {
                if frame[r * px.cols + c] != 0 {
                    let v = &mut out[[c, r, k]];
                    *v = v.max(segment as f32);
                }
            }
        }
    }
    Ok(out)
}
