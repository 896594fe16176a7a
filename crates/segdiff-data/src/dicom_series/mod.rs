//! DICOM folders → series → volumes.
//!
//! [`scan_dicom`] walks a folder (recursively), reads every file's header up to the pixel data and
//! groups image files by SeriesInstanceUID; DICOM SEG objects are listed apart. A file counts as
//! DICOM when it has the `DICM` marker at byte 128 or a `.dcm`/`.dicom` extension; such a file
//! that does not parse is an error naming it, other files (README, thumbnails) are skipped and
//! listed. [`read_dicom_series`] decodes the pixels and builds a [`LoadedVolume`]:
//!
//! * frames (single-frame files and the frames of enhanced multi-frame objects alike) are sorted by
//!   ImagePositionPatient projected on the slice normal from ImageOrientationPatient; when a frame
//!   lacks that geometry they are sorted by InstanceNumber (then file order) and a warning says so;
//! * raw values follow pydicom 3 (unused high bits of native data are masked, signed values
//!   sign-extended from BitsStored), then `f32(raw)·f32(slope) + f32(intercept)` as pydicom users
//!   write it, with RescaleSlope/Intercept taken from the frame's Pixel Value Transformation
//!   functional group (per-frame, then shared) or the top level;
//! * MONOCHROME1 is inverted to MONOCHROME2 as `lo + hi − v` over the rescaled range of the stored
//!   bits, so brighter always means a larger value;
//! * the affine maps `(column, row, slice)` to patient LPS and is then converted to RAS+.
//!
//! Supported transfer syntaxes: implicit/explicit VR little endian, explicit VR big endian,
//! deflated explicit VR little endian, RLE lossless, JPEG baseline and extended (8/12-bit), JPEG
//! lossless (process 14 and SV1), JPEG-LS lossless and near-lossless (greyscale), and JPEG 2000
//! (lossless and lossy) — all decoded in pure Rust (dicom-rs with jpeg-decoder and openjp2;
//! `jpegls` for JPEG-LS). Anything else (HTJ2K, MPEG, JPEG XL) is an error naming the file and
//! the syntax. Colour images are refused unless [`DicomReadOptions::to_grey`]; objects without
//! pixel data (structured reports, RT plans, DICOMDIR) are an error naming the file. Every
//! parser and decoder call runs behind [`segdiff_io::catch_panic`].

mod attributes;
pub(crate) use attributes::check_dicom_lengths;
mod frames;
mod jpeg12;
mod length_check;
mod pixels;
mod scan;
mod stack;

use std::path::{Path, PathBuf};

use crate::error::{DataError, Result};
use crate::loaded::LoadedVolume;
use crate::volume::{lps_to_ras, Volume};

use frames::{check_same_plane, check_same_series_and_size, decode_series, DecodedFrames};
pub use pixels::{read_dicom_pixels, read_dicom_pixels_with, DicomPixels, DicomReadOptions};
pub use scan::{looks_like_dicom, scan_dicom, DicomScan, DicomSeriesInfo};
use stack::{order_slices, stack_frames, Plane};

/// Decode every file of a series and stack its frames into a volume (see the module docs).
///
/// Errors name the offending file: unreadable or undecodable files, frames of different sizes,
/// orientations or series, two frames at one position, uneven slice gaps.
pub fn read_dicom_series(series: &DicomSeriesInfo) -> Result<LoadedVolume> {
    read_dicom_series_with(series, &DicomReadOptions::default())
}

/// [`read_dicom_series`] with pixel-reading options (colour to grey).
pub fn read_dicom_series_with(
    series: &DicomSeriesInfo,
    opts: &DicomReadOptions,
) -> Result<LoadedVolume> {
    let root = series.files.first().cloned().unwrap_or_default();
    let DecodedFrames {
        mut frames,
        thickness,
        modality,
    } = decode_series(&series.files, &root, opts)?;
    let (rows, cols) = check_same_series_and_size(&frames)?;
    check_same_plane(&frames)?;
    let mut warnings = Vec::new();
    let plane = Plane::of(&frames[0], &mut warnings);
    let axis = order_slices(&mut frames, &plane, thickness, &root, &mut warnings)?;
    let data = stack_frames(&frames, rows, cols, &root)?;
    Ok(LoadedVolume {
        volume: Volume {
            data,
            affine: lps_to_ras(&plane.lps_affine(&axis)),
        },
        source: series_source(series, root),
        modality,
        warnings,
    })
}

/// The file of a single-file series, else the folder of its first file.
fn series_source(series: &DicomSeriesInfo, root: PathBuf) -> PathBuf {
    if series.files.len() == 1 {
        root
    } else {
        series
            .files
            .first()
            .and_then(|p| p.parent())
            .map(Path::to_path_buf)
            .unwrap_or(root)
    }
}

/// Read a DICOM folder or file that must hold exactly one image series.
pub fn read_dicom(path: &Path) -> Result<LoadedVolume> {
    read_dicom_with(path, &DicomReadOptions::default())
}

/// [`read_dicom`] with pixel-reading options (colour to grey).
pub fn read_dicom_with(path: &Path, opts: &DicomReadOptions) -> Result<LoadedVolume> {
    let scan = scan_dicom(path)?;
    if scan.series.len() > 1 {
        return Err(mixed_series_error(path, &scan.series));
    }
    let mut v = read_dicom_series_with(&scan.series[0], opts)?;
    v.source = path.to_path_buf();
    Ok(v)
}

/// The error for a path that holds several series where one was expected.
pub(crate) fn mixed_series_error(path: &Path, series: &[DicomSeriesInfo]) -> DataError {
    let detail = series
        .iter()
        .map(|s| {
            format!(
                "{} with {} file(s), e.g. {}",
                s.series_uid,
                s.files.len(),
                s.files
                    .first()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    DataError::MixedSeries {
        path: path.to_path_buf(),
        count: series.len(),
        detail,
    }
}
