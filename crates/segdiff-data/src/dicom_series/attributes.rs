//! Reading DICOM header attributes: text and numbers that survive a lost VR (UN), required
//! integers with errors naming the file, and each frame's geometry and rescale from the top level
//! or the functional groups of enhanced multi-frame objects.

use std::path::Path;

use dicom_core::VR;
use dicom_dictionary_std::tags;
use dicom_object::mem::InMemElement;
use dicom_object::{FileDicomObject, InMemDicomObject, OpenFileOptions};

use crate::error::{DataError, Result};

pub(super) type DicomFile = FileDicomObject<InMemDicomObject>;

/// Geometry of one frame, from the top level or the functional groups.
#[derive(Clone, Debug, Default)]
pub(super) struct FrameGeometry {
    pub(super) position: Option<[f64; 3]>,
    pub(super) orientation: Option<[f64; 6]>,
    pub(super) pixel_spacing: Option<[f64; 2]>,
    pub(super) rescale: (f64, f64),
}

/// Text of an element whose VR was lost (stored as UN, e.g. by de-identification tools): the
/// tags read here are strings (DS/IS/CS/UI/LO), so their bytes are the text, as pydicom assumes
/// when it re-types UN elements from the dictionary.
fn un_text(e: &InMemElement) -> Option<String> {
    (e.vr() == VR::UN).then(|| {
        e.to_bytes()
            .ok()
            .map(|b| String::from_utf8_lossy(&b).to_string())
    })?
}

fn clean_text(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_whitespace() || c == '\0')
}

pub(super) fn attr_str(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Option<String> {
    let e = obj.element_opt(tag).ok().flatten()?;
    let s = match un_text(e) {
        Some(t) => t,
        None => e.to_str().ok()?.to_string(),
    };
    let s = clean_text(&s);
    (!s.is_empty()).then(|| s.to_string())
}

pub(super) fn attr_f64s(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Option<Vec<f64>> {
    let e = obj.element_opt(tag).ok().flatten()?;
    let v = match un_text(e) {
        Some(t) => clean_text(&t)
            .split('\\')
            .map(|p| clean_text(p).parse::<f64>().ok())
            .collect::<Option<Vec<f64>>>()?,
        None => e.to_multi_float64().ok()?,
    };
    (!v.is_empty() && v.iter().all(|x| x.is_finite())).then_some(v)
}

pub(super) fn attr_int(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Option<i64> {
    let e = obj.element_opt(tag).ok().flatten()?;
    match un_text(e) {
        Some(t) => clean_text(&t).parse::<i64>().ok(),
        None => e.to_int::<i64>().ok(),
    }
}

pub(super) fn first_item(
    obj: &InMemDicomObject,
    tag: dicom_core::Tag,
) -> Option<&InMemDicomObject> {
    obj.element_opt(tag).ok().flatten()?.items()?.first()
}

pub(super) fn uint_attr(
    obj: &DicomFile,
    path: &Path,
    tag: dicom_core::Tag,
    name: &'static str,
) -> Result<u32> {
    let e = obj
        .element_opt(tag)
        .ok()
        .flatten()
        .ok_or_else(|| DataError::DicomAttribute {
            path: path.to_path_buf(),
            attribute: name,
            detail: "missing".into(),
        })?;
    e.to_int::<u32>().map_err(|err| DataError::DicomAttribute {
        path: path.to_path_buf(),
        attribute: name,
        detail: err.to_string(),
    })
}

/// Number of frames (NumberOfFrames, default 1).
pub(super) fn frame_count(obj: &DicomFile, path: &Path) -> Result<usize> {
    match obj.element_opt(tags::NUMBER_OF_FRAMES).ok().flatten() {
        None => Ok(1),
        Some(e) => {
            let n = e.to_int::<i64>().map_err(|err| DataError::DicomAttribute {
                path: path.to_path_buf(),
                attribute: "NumberOfFrames",
                detail: err.to_string(),
            })?;
            if n < 1 {
                return Err(DataError::DicomAttribute {
                    path: path.to_path_buf(),
                    attribute: "NumberOfFrames",
                    detail: format!("{n} is not a positive frame count"),
                });
            }
            Ok(n as usize)
        }
    }
}

/// Geometry and rescale of every frame: functional groups (per-frame first, then shared) win over
/// the top-level attributes, as in enhanced multi-frame objects.
pub(super) fn frame_geometries(obj: &DicomFile, frames: usize) -> Vec<FrameGeometry> {
    let top: &InMemDicomObject = obj;
    let shared = first_item(top, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE);
    let per_frame = top
        .element_opt(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE)
        .ok()
        .flatten()
        .and_then(|e| e.items());
    let from_group =
        |group: Option<&InMemDicomObject>, seq: dicom_core::Tag, tag: dicom_core::Tag| {
            group
                .and_then(|g| first_item(g, seq))
                .and_then(|it| attr_f64s(it, tag))
        };
    (0..frames)
        .map(|f| {
            let pf = per_frame.and_then(|items| items.get(f));
            let lookup = |seq: dicom_core::Tag, tag: dicom_core::Tag| {
                from_group(pf, seq, tag)
                    .or_else(|| from_group(shared, seq, tag))
                    .or_else(|| attr_f64s(top, tag))
            };
            let position = lookup(tags::PLANE_POSITION_SEQUENCE, tags::IMAGE_POSITION_PATIENT)
                .filter(|v| v.len() == 3)
                .map(|v| [v[0], v[1], v[2]]);
            let orientation = lookup(
                tags::PLANE_ORIENTATION_SEQUENCE,
                tags::IMAGE_ORIENTATION_PATIENT,
            )
            .filter(|v| v.len() == 6)
            .map(|v| [v[0], v[1], v[2], v[3], v[4], v[5]]);
            let pixel_spacing = lookup(tags::PIXEL_MEASURES_SEQUENCE, tags::PIXEL_SPACING)
                .filter(|v| v.len() == 2 && v[0] > 0.0 && v[1] > 0.0)
                .map(|v| [v[0], v[1]]);
            let slope = lookup(
                tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE,
                tags::RESCALE_SLOPE,
            )
            .map(|v| v[0])
            .unwrap_or(1.0);
            let inter = lookup(
                tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE,
                tags::RESCALE_INTERCEPT,
            )
            .map(|v| v[0])
            .unwrap_or(0.0);
            FrameGeometry {
                position,
                orientation,
                pixel_spacing,
                rescale: (slope, inter),
            }
        })
        .collect()
}

pub(super) fn clean_uid(s: &str) -> String {
    s.trim_matches(|c: char| c.is_whitespace() || c == '\0')
        .to_string()
}

pub(super) fn open_dicom(path: &Path, headers_only: bool) -> Result<DicomFile> {
    let opts = OpenFileOptions::new();
    let opts = if headers_only {
        opts.read_until(tags::PIXEL_DATA)
    } else {
        opts
    };
    let parse_err = |detail: String| DataError::DicomParse {
        path: path.to_path_buf(),
        detail,
    };
    check_dicom_lengths(path)?;
    match segdiff_io::catch_panic(|| opts.open_file(path)) {
        Ok(r) => r.map_err(|e| parse_err(e.to_string())),
        Err(panic) => Err(parse_err(segdiff_io::panic_detail(
            "the DICOM parser",
            &panic,
        ))),
    }
}

/// Refuses a DICOM file with a value length beyond its end before dicom-rs reserves that
/// length (see [`super::length_check`]).
pub(crate) fn check_dicom_lengths(path: &Path) -> Result<()> {
    match super::length_check::check_lengths(path) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(detail)) => Err(DataError::DicomParse {
            path: path.to_path_buf(),
            detail,
        }),
        Err(e) => Err(DataError::io(path, "read", e)),
    }
}
