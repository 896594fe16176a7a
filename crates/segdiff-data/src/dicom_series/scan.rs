//! Finding DICOM series: walking a folder, telling DICOM files from others, reading each file's
//! header up to the pixel data and grouping image files by SeriesInstanceUID (SEG objects apart).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use dicom_dictionary_std::tags;
use rayon::prelude::*;

use super::attributes::{
    attr_int, attr_str, clean_uid, frame_count, frame_geometries, open_dicom, uint_attr,
};
use crate::error::{DataError, Result};

/// One DICOM image series found by [`scan_dicom`].
#[derive(Clone, Debug)]
pub struct DicomSeriesInfo {
    /// SeriesInstanceUID (empty when the files lack it).
    pub series_uid: String,
    /// SeriesNumber, when present.
    pub series_number: Option<i64>,
    /// Modality of the first file.
    pub modality: Option<String>,
    /// SeriesDescription of the first file.
    pub description: Option<String>,
    /// The files of this series, sorted by path.
    pub files: Vec<PathBuf>,
    /// Total number of frames over all files.
    pub frames: usize,
    /// Rows of the first file.
    pub rows: u32,
    /// Columns of the first file.
    pub cols: u32,
    /// ImageOrientationPatient of the first file (top level or functional groups).
    pub orientation: Option<[f64; 6]>,
}

/// What [`scan_dicom`] found under a path.
#[derive(Clone, Debug)]
pub struct DicomScan {
    /// The folder or file scanned.
    pub root: PathBuf,
    /// Image series, ordered by (SeriesNumber, SeriesInstanceUID).
    pub series: Vec<DicomSeriesInfo>,
    /// DICOM SEG objects (label candidates), sorted by path.
    pub segmentations: Vec<PathBuf>,
    /// Files skipped as not DICOM (no `DICM` marker and no DICOM extension).
    pub skipped: Vec<PathBuf>,
}

/// What [`read_header`] keeps of one image file.
#[derive(Clone, Debug)]
struct FileHeader {
    path: PathBuf,
    series_uid: String,
    series_number: Option<i64>,
    modality: Option<String>,
    description: Option<String>,
    rows: u32,
    cols: u32,
    frames: usize,
    orientation: Option<[f64; 6]>,
}

/// Whether `path` looks like a DICOM file (`DICM` at byte 128 or a DICOM extension).
pub fn looks_like_dicom(path: &Path) -> Result<bool> {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    if ext == "dcm" || ext == "dicom" {
        return Ok(true);
    }
    let mut f = File::open(path).map_err(|e| DataError::io(path, "open", e))?;
    let mut buf = [0u8; 132];
    let mut got = 0;
    while got < buf.len() {
        match f.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(DataError::io(path, "read", e)),
        }
    }
    Ok(got == 132 && &buf[128..132] == b"DICM")
}

/// Regular files under `root` (recursively), sorted, hidden files and DICOMDIR left out.
fn list_files(root: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let rd = std::fs::read_dir(&dir).map_err(|e| DataError::io(&dir, "list folder", e))?;
        for entry in rd {
            let entry = entry.map_err(|e| DataError::io(&dir, "list folder", e))?;
            let name = entry.file_name().to_string_lossy().to_string();
            if name.starts_with('.') || name.eq_ignore_ascii_case("DICOMDIR") {
                continue;
            }
            let p = entry.path();
            let ft = std::fs::metadata(&p).map_err(|e| DataError::io(&p, "stat", e))?;
            if ft.is_dir() {
                stack.push(p);
            } else if ft.is_file() {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

fn read_header(path: &Path) -> Result<Option<(FileHeader, bool)>> {
    let obj = open_dicom(path, true)?;
    let sop_class = clean_uid(obj.meta().media_storage_sop_class_uid());
    // Media directory, structured reports, presentation states, key objects: not images.
    const NON_IMAGE: [&str; 2] = ["1.2.840.10008.1.3.10", "1.2.840.10008.5.1.4.1.1.11.1"];
    let modality = attr_str(&obj, tags::MODALITY);
    if NON_IMAGE.contains(&sop_class.as_str())
        || matches!(
            modality.as_deref(),
            Some("SR" | "KO" | "PR" | "REG" | "RTPLAN" | "RTSTRUCT" | "RTRECORD")
        )
        // No image matrix at all (an RT plan, a waveform, a report of another modality).
        || obj.element_opt(tags::ROWS).ok().flatten().is_none()
    {
        return Ok(None);
    }
    let is_seg = modality.as_deref() == Some("SEG") || sop_class == "1.2.840.10008.5.1.4.1.1.66.4";
    let header = FileHeader {
        path: path.to_path_buf(),
        series_uid: attr_str(&obj, tags::SERIES_INSTANCE_UID).unwrap_or_default(),
        series_number: attr_int(&obj, tags::SERIES_NUMBER),
        modality,
        description: attr_str(&obj, tags::SERIES_DESCRIPTION),
        rows: uint_attr(&obj, path, tags::ROWS, "Rows")?,
        cols: uint_attr(&obj, path, tags::COLUMNS, "Columns")?,
        frames: frame_count(&obj, path)?,
        orientation: frame_geometries(&obj, 1)
            .first()
            .and_then(|g| g.orientation),
    };
    Ok(Some((header, is_seg)))
}

/// Find the DICOM image series (and SEG objects) under a folder or in a single file.
///
/// Errors: the path is missing, a DICOM-looking file does not parse (named), or no image
/// series is found ([`DataError::NoImages`]).
pub fn scan_dicom(path: &Path) -> Result<DicomScan> {
    let meta = std::fs::metadata(path).map_err(|e| DataError::io(path, "open", e))?;
    let (candidates, skipped) = if meta.is_dir() {
        dicom_candidates(path)?
    } else {
        (vec![path.to_path_buf()], Vec::new())
    };
    let headers = candidates
        .par_iter()
        .map(|p| read_header(p))
        .collect::<Vec<_>>();
    let (series, segmentations) = group_series(headers)?;
    if series.is_empty() {
        let detail = if meta.is_dir() {
            format!(
                "no DICOM image files found ({} files skipped as not DICOM, {} DICOM SEG)",
                skipped.len(),
                segmentations.len()
            )
        } else {
            "is not a DICOM image (it is a segmentation or a non-image object: a structured \
             report, RT plan or structure set, waveform, DICOMDIR…)"
                .to_string()
        };
        return Err(DataError::NoImages {
            path: path.to_path_buf(),
            detail,
        });
    }
    Ok(DicomScan {
        root: path.to_path_buf(),
        series,
        segmentations,
        skipped,
    })
}

/// The files under `folder` that look like DICOM, and the others.
fn dicom_candidates(folder: &Path) -> Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    let files = list_files(folder)?;
    let flags = files
        .par_iter()
        .map(|p| looks_like_dicom(p))
        .collect::<Vec<_>>();
    let mut cand = Vec::new();
    let mut skip = Vec::new();
    for (p, f) in files.into_iter().zip(flags) {
        if f? {
            cand.push(p);
        } else {
            skip.push(p);
        }
    }
    Ok((cand, skip))
}

/// Image series ordered by (SeriesNumber, SeriesInstanceUID), and the SEG objects, from the
/// files' headers.
fn group_series(
    headers: Vec<Result<Option<(FileHeader, bool)>>>,
) -> Result<(Vec<DicomSeriesInfo>, Vec<PathBuf>)> {
    let mut groups: BTreeMap<String, Vec<FileHeader>> = BTreeMap::new();
    let mut segmentations = Vec::new();
    for h in headers {
        match h? {
            None => {}
            Some((h, true)) => segmentations.push(h.path),
            Some((h, false)) => groups.entry(h.series_uid.clone()).or_default().push(h),
        }
    }
    let mut series: Vec<DicomSeriesInfo> = groups
        .into_iter()
        .map(|(uid, hs)| {
            let first = &hs[0];
            DicomSeriesInfo {
                series_uid: uid,
                series_number: first.series_number,
                modality: first.modality.clone(),
                description: first.description.clone(),
                rows: first.rows,
                cols: first.cols,
                orientation: first.orientation,
                frames: hs.iter().map(|h| h.frames).sum(),
                files: hs.iter().map(|h| h.path.clone()).collect(),
            }
        })
        .collect();
    series.sort_by(|a, b| {
        (a.series_number.unwrap_or(i64::MAX), &a.series_uid)
            .cmp(&(b.series_number.unwrap_or(i64::MAX), &b.series_uid))
    });
    Ok((series, segmentations))
}
