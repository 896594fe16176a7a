//! Decoding a series into frames (single-frame files and the frames of multi-frame objects alike)
//! and checking that they belong in one volume: one series, one size, one orientation, one pixel
//! spacing.

use std::path::{Path, PathBuf};

use dicom_dictionary_std::tags;
use rayon::prelude::*;

use super::attributes::{
    attr_f64s, attr_int, attr_str, first_item, frame_geometries, open_dicom, FrameGeometry,
};
use super::pixels::{decode_pixels, DicomReadOptions};
use crate::error::{DataError, Result};

/// One decoded frame on its way into a volume.
pub(super) struct Frame {
    pub(super) path: PathBuf,
    pub(super) frame: usize,
    pub(super) geometry: FrameGeometry,
    pub(super) instance_number: Option<i64>,
    pub(super) rows: usize,
    pub(super) cols: usize,
    pub(super) series_uid: String,
    pub(super) pixels: Vec<f32>,
}

/// The frames of one or more files, in file then frame order, with the first slice spacing and
/// modality any of them records.
pub(super) struct DecodedFrames {
    pub(super) frames: Vec<Frame>,
    pub(super) thickness: Option<f64>,
    pub(super) modality: Option<String>,
}

/// Decodes `files` in parallel; a series without any frame is [`DataError::NoImages`] at `root`.
pub(super) fn decode_series(
    files: &[PathBuf],
    root: &Path,
    opts: &DicomReadOptions,
) -> Result<DecodedFrames> {
    let loaded = files
        .par_iter()
        .map(|p| load_frames(p, opts))
        .collect::<Vec<_>>();
    let mut frames = Vec::new();
    let mut thickness = None;
    let mut modality = None;
    for l in loaded {
        let DecodedFrames {
            frames: f,
            thickness: t,
            modality: m,
        } = l?;
        thickness = thickness.or(t);
        modality = modality.or(m);
        frames.extend(f);
    }
    if frames.is_empty() {
        return Err(DataError::NoImages {
            path: root.to_path_buf(),
            detail: "series holds no frames".into(),
        });
    }
    Ok(DecodedFrames {
        frames,
        thickness,
        modality,
    })
}

fn load_frames(path: &Path, opts: &DicomReadOptions) -> Result<DecodedFrames> {
    let obj = open_dicom(path, false)?;
    let px = decode_pixels(&obj, path, opts)?;
    let geoms = frame_geometries(&obj, px.frames);
    let instance_number = attr_int(&obj, tags::INSTANCE_NUMBER);
    let series_uid = attr_str(&obj, tags::SERIES_INSTANCE_UID).unwrap_or_default();
    let thickness = attr_f64s(&obj, tags::SPACING_BETWEEN_SLICES)
        .or_else(|| {
            first_item(&obj, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE)
                .and_then(|g| first_item(g, tags::PIXEL_MEASURES_SEQUENCE))
                .and_then(|m| {
                    attr_f64s(m, tags::SPACING_BETWEEN_SLICES)
                        .or_else(|| attr_f64s(m, tags::SLICE_THICKNESS))
                })
        })
        .or_else(|| attr_f64s(&obj, tags::SLICE_THICKNESS))
        .map(|v| v[0])
        .filter(|v| *v > 0.0);
    let modality = attr_str(&obj, tags::MODALITY);
    let frames = geoms
        .into_iter()
        .enumerate()
        .map(|(f, geometry)| Frame {
            path: path.to_path_buf(),
            frame: f,
            pixels: px.rescaled_frame(f),
            geometry,
            instance_number,
            rows: px.rows,
            cols: px.cols,
            series_uid: series_uid.clone(),
        })
        .collect();
    Ok(DecodedFrames {
        frames,
        thickness,
        modality,
    })
}

pub(super) fn frame_name(f: &Frame) -> String {
    if f.frame == 0 {
        f.path.display().to_string()
    } else {
        format!("{} (frame {})", f.path.display(), f.frame + 1)
    }
}

/// Checks that every frame is of the first one's series and size, returned as `(rows, cols)`.
pub(super) fn check_same_series_and_size(frames: &[Frame]) -> Result<(usize, usize)> {
    let first = &frames[0];
    let (rows, cols, uid0) = (first.rows, first.cols, first.series_uid.clone());
    for f in frames {
        if f.series_uid != uid0 {
            return Err(DataError::MixedSeries {
                path: f.path.clone(),
                count: 2,
                detail: format!("{} and {}", uid0, f.series_uid),
            });
        }
        if (f.rows, f.cols) != (rows, cols) {
            return Err(DataError::InconsistentSeries {
                path: f.path.clone(),
                detail: format!(
                    "{} is {}x{} (rows x columns) but {} is {}x{}",
                    frame_name(f),
                    f.rows,
                    f.cols,
                    frame_name(&frames[0]),
                    rows,
                    cols
                ),
            });
        }
    }
    Ok((rows, cols))
}

/// Checks that every frame recording an orientation or a pixel spacing records the first
/// frame's (when it records one).
pub(super) fn check_same_plane(frames: &[Frame]) -> Result<()> {
    if let Some(o0) = frames[0].geometry.orientation {
        for f in frames {
            if let Some(o) = f.geometry.orientation {
                if o.iter().zip(o0.iter()).any(|(a, b)| (a - b).abs() > 1e-4) {
                    return Err(DataError::InconsistentSeries {
                        path: f.path.clone(),
                        detail: format!(
                            "ImageOrientationPatient {:?} of {} differs from {:?} of {}",
                            o,
                            frame_name(f),
                            o0,
                            frame_name(&frames[0])
                        ),
                    });
                }
            }
        }
    }
    if let Some(s0) = frames[0].geometry.pixel_spacing {
        for f in frames {
            if let Some(s) = f.geometry.pixel_spacing {
                if s.iter()
                    .zip(s0.iter())
                    .any(|(a, b)| (a - b).abs() > 1e-4 * b.abs().max(1.0))
                {
                    return Err(DataError::InconsistentSeries {
                        path: f.path.clone(),
                        detail: format!(
                            "PixelSpacing {:?} of {} differs from {:?} of {}",
                            s,
                            frame_name(f),
                            s0,
                            frame_name(&frames[0])
                        ),
                    });
                }
            }
        }
    }
    Ok(())
}
