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
//! deflated explicit VR little endian and RLE lossless. Anything else is an error naming the file
//! and the syntax.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use dicom_core::VR;
use dicom_dictionary_std::tags;
use dicom_object::mem::InMemElement;
use dicom_object::{FileDicomObject, InMemDicomObject, OpenFileOptions};
use dicom_pixeldata::{PixelDecoder, PixelRepresentation};
use ndarray::{Array3, ShapeBuilder};
use rayon::prelude::*;

use crate::error::{DataError, Result};
use crate::loaded::LoadedVolume;
use crate::volume::{lps_to_ras, Affine, Volume};

type DicomFile = FileDicomObject<InMemDicomObject>;

const TS_IMPLICIT_LE: &str = "1.2.840.10008.1.2";
const TS_EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";
const TS_DEFLATED_LE: &str = "1.2.840.10008.1.2.1.99";
const TS_EXPLICIT_BE: &str = "1.2.840.10008.1.2.2";
const TS_RLE: &str = "1.2.840.10008.1.2.5";

/// Relative tolerance on the spread of slice gaps before a series is called inconsistent.
const GAP_REL_TOL: f64 = 0.05;
/// Absolute part of the slice-gap tolerance, in mm.
const GAP_ABS_TOL: f64 = 1e-3;

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

/// Pixel values of one DICOM object before any rescale, as pydicom's `pixel_array` gives them.
#[derive(Clone, Debug)]
pub struct DicomPixels {
    /// Rows per frame.
    pub rows: usize,
    /// Columns per frame.
    pub cols: usize,
    /// Number of frames.
    pub frames: usize,
    /// Frame-major, row-major raw values.
    pub raw: Vec<i32>,
    /// (slope, intercept) of each frame.
    pub rescale: Vec<(f64, f64)>,
    /// PhotometricInterpretation was MONOCHROME1.
    pub monochrome1: bool,
    /// Smallest and largest raw value BitsStored/PixelRepresentation allow.
    pub raw_range: (i64, i64),
}

impl DicomPixels {
    /// Frame `f` after the modality rescale, computed in f32 (`f32(raw)·f32(slope) + f32(intercept)`).
    pub fn rescaled_frame(&self, f: usize) -> Vec<f32> {
        let n = self.rows * self.cols;
        let (slope, inter) = self.rescale.get(f).copied().unwrap_or((1.0, 0.0));
        let (s, i) = (slope as f32, inter as f32);
        let mut out: Vec<f32> = self.raw[f * n..(f + 1) * n]
            .iter()
            .map(|&v| v as f32 * s + i)
            .collect();
        if self.monochrome1 {
            let a = self.raw_range.0 as f32 * s + i;
            let b = self.raw_range.1 as f32 * s + i;
            let sum = a + b;
            for v in &mut out {
                *v = sum - *v;
            }
        }
        out
    }
}

/// Geometry of one frame, from the top level or the functional groups.
#[derive(Clone, Debug, Default)]
struct FrameGeometry {
    position: Option<[f64; 3]>,
    orientation: Option<[f64; 6]>,
    pixel_spacing: Option<[f64; 2]>,
    rescale: (f64, f64),
}

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

fn attr_str(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Option<String> {
    let e = obj.element_opt(tag).ok().flatten()?;
    let s = match un_text(e) {
        Some(t) => t,
        None => e.to_str().ok()?.to_string(),
    };
    let s = clean_text(&s);
    (!s.is_empty()).then(|| s.to_string())
}

fn attr_f64s(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Option<Vec<f64>> {
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

fn attr_int(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Option<i64> {
    let e = obj.element_opt(tag).ok().flatten()?;
    match un_text(e) {
        Some(t) => clean_text(&t).parse::<i64>().ok(),
        None => e.to_int::<i64>().ok(),
    }
}

fn first_item(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Option<&InMemDicomObject> {
    obj.element_opt(tag).ok().flatten()?.items()?.first()
}

fn uint_attr(
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
fn frame_count(obj: &DicomFile, path: &Path) -> Result<usize> {
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
fn frame_geometries(obj: &DicomFile, frames: usize) -> Vec<FrameGeometry> {
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

fn transfer_syntax_name(uid: &str) -> &'static str {
    match uid {
        TS_IMPLICIT_LE => "Implicit VR Little Endian",
        TS_EXPLICIT_LE => "Explicit VR Little Endian",
        TS_DEFLATED_LE => "Deflated Explicit VR Little Endian",
        TS_EXPLICIT_BE => "Explicit VR Big Endian",
        TS_RLE => "RLE Lossless",
        "1.2.840.10008.1.2.4.50" => "JPEG Baseline",
        "1.2.840.10008.1.2.4.51" => "JPEG Extended",
        "1.2.840.10008.1.2.4.57" => "JPEG Lossless",
        "1.2.840.10008.1.2.4.70" => "JPEG Lossless SV1",
        "1.2.840.10008.1.2.4.80" => "JPEG-LS Lossless",
        "1.2.840.10008.1.2.4.81" => "JPEG-LS Near-Lossless",
        "1.2.840.10008.1.2.4.90" => "JPEG 2000 Lossless",
        "1.2.840.10008.1.2.4.91" => "JPEG 2000",
        "1.2.840.10008.1.2.4.201" => "HTJ2K Lossless",
        "1.2.840.10008.1.2.4.202" => "HTJ2K Lossless RPCL",
        "1.2.840.10008.1.2.4.203" => "HTJ2K",
        "1.2.840.10008.1.2.4.100" | "1.2.840.10008.1.2.4.101" => "MPEG-2",
        "1.2.840.10008.1.2.4.102" | "1.2.840.10008.1.2.4.103" => "MPEG-4",
        _ => "unknown transfer syntax",
    }
}

fn is_supported_syntax(uid: &str) -> bool {
    matches!(
        uid,
        TS_IMPLICIT_LE | TS_EXPLICIT_LE | TS_DEFLATED_LE | TS_EXPLICIT_BE | TS_RLE
    )
}

fn clean_uid(s: &str) -> String {
    s.trim_matches(|c: char| c.is_whitespace() || c == '\0')
        .to_string()
}

fn open_dicom(path: &Path, headers_only: bool) -> Result<DicomFile> {
    let opts = OpenFileOptions::new();
    let opts = if headers_only {
        opts.read_until(tags::PIXEL_DATA)
    } else {
        opts
    };
    opts.open_file(path).map_err(|e| DataError::DicomParse {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })
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
        || matches!(modality.as_deref(), Some("SR" | "KO" | "PR" | "REG"))
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
        let files = list_files(path)?;
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
        (cand, skip)
    } else {
        (vec![path.to_path_buf()], Vec::new())
    };
    let headers = candidates
        .par_iter()
        .map(|p| read_header(p))
        .collect::<Vec<_>>();
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
    if series.is_empty() {
        let detail = if meta.is_dir() {
            format!(
                "no DICOM image files found ({} files skipped as not DICOM, {} DICOM SEG)",
                skipped.len(),
                segmentations.len()
            )
        } else {
            "is not a DICOM image (it is a segmentation or a non-image object)".to_string()
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

/// Decode the pixel data of an opened DICOM object into raw integers (pydicom 3 semantics).
fn decode_pixels(obj: &DicomFile, path: &Path) -> Result<DicomPixels> {
    let ts = clean_uid(obj.meta().transfer_syntax());
    if !is_supported_syntax(&ts) {
        return Err(DataError::UnsupportedTransferSyntax {
            path: path.to_path_buf(),
            name: transfer_syntax_name(&ts),
            uid: ts,
        });
    }
    if obj.element_opt(tags::PIXEL_DATA).ok().flatten().is_none() {
        return Err(DataError::NoPixelData {
            path: path.to_path_buf(),
        });
    }
    let pixel_err = |detail: String| DataError::PixelData {
        path: path.to_path_buf(),
        detail,
    };
    let decoded = obj
        .decode_pixel_data()
        .map_err(|e| pixel_err(e.to_string()))?;
    if decoded.samples_per_pixel() != 1 {
        return Err(pixel_err(format!(
            "{} samples per pixel ({}); only greyscale images are supported",
            decoded.samples_per_pixel(),
            decoded.photometric_interpretation().as_str()
        )));
    }
    let photometric = decoded.photometric_interpretation().as_str().to_string();
    if photometric != "MONOCHROME1" && photometric != "MONOCHROME2" {
        return Err(pixel_err(format!(
            "photometric interpretation {photometric} is not greyscale"
        )));
    }
    let rows = decoded.rows() as usize;
    let cols = decoded.columns() as usize;
    let frames = decoded.number_of_frames() as usize;
    let alloc = decoded.bits_allocated();
    let stored = decoded.bits_stored().clamp(1, alloc.max(1));
    let signed = decoded.pixel_representation() == PixelRepresentation::Signed;
    let n = rows * cols * frames;
    let data = decoded.data();
    let bytes_per = match alloc {
        1 | 8 => 1,
        16 => 2,
        32 => 4,
        other => return Err(pixel_err(format!("BitsAllocated {other} is not supported"))),
    };
    if data.len() < n * bytes_per {
        return Err(pixel_err(format!(
            "holds {} bytes, {} frames of {}x{} need {}",
            data.len(),
            frames,
            rows,
            cols,
            n * bytes_per
        )));
    }
    // pydicom 3 shifts native values left then right by (allocated - stored) bits: unsigned values
    // lose their unused high bits, signed ones are sign-extended from BitsStored.
    let fix = |v: u32, bits: u32| -> i32 {
        let shift = bits - stored as u32;
        if shift == 0 {
            return if signed && bits < 32 {
                ((v << (32 - bits)) as i32) >> (32 - bits)
            } else {
                v as i32
            };
        }
        if signed {
            ((v << (32 - stored as u32)) as i32) >> (32 - stored as u32)
        } else {
            (v & ((1u32 << stored) - 1)) as i32
        }
    };
    let raw: Vec<i32> = match alloc {
        1 => data[..n].iter().map(|&b| i32::from(b != 0)).collect(),
        8 => data[..n].iter().map(|&b| fix(u32::from(b), 8)).collect(),
        16 => data[..2 * n]
            .chunks_exact(2)
            .map(|c| fix(u32::from(u16::from_le_bytes([c[0], c[1]])), 16))
            .collect(),
        _ => {
            if !signed && stored == 32 {
                return Err(pixel_err(
                    "unsigned 32-bit samples are not supported".into(),
                ));
            }
            data[..4 * n]
                .chunks_exact(4)
                .map(|c| fix(u32::from_le_bytes([c[0], c[1], c[2], c[3]]), 32))
                .collect()
        }
    };
    let raw_range = if alloc == 1 {
        (0, 1)
    } else if signed {
        (-(1i64 << (stored - 1)), (1i64 << (stored - 1)) - 1)
    } else {
        (0, (1i64 << stored) - 1)
    };
    let rescale = frame_geometries(obj, frames)
        .into_iter()
        .map(|g| g.rescale)
        .collect();
    Ok(DicomPixels {
        rows,
        cols,
        frames,
        raw,
        rescale,
        monochrome1: photometric == "MONOCHROME1",
        raw_range,
    })
}

/// Read and decode the pixel data of one DICOM file (all frames), without rescale.
pub fn read_dicom_pixels(path: &Path) -> Result<DicomPixels> {
    let obj = open_dicom(path, false)?;
    decode_pixels(&obj, path)
}

/// One decoded frame on its way into a volume.
struct Frame {
    path: PathBuf,
    frame: usize,
    geometry: FrameGeometry,
    instance_number: Option<i64>,
    rows: usize,
    cols: usize,
    series_uid: String,
    pixels: Vec<f32>,
}

fn load_frames(path: &Path) -> Result<(Vec<Frame>, Option<f64>, Option<String>)> {
    let obj = open_dicom(path, false)?;
    let px = decode_pixels(&obj, path)?;
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
    Ok((frames, thickness, modality))
}

fn frame_name(f: &Frame) -> String {
    if f.frame == 0 {
        f.path.display().to_string()
    } else {
        format!("{} (frame {})", f.path.display(), f.frame + 1)
    }
}

fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

/// Decode every file of a series and stack its frames into a volume (see the module docs).
///
/// Errors name the offending file: unreadable or undecodable files, frames of different sizes,
/// orientations or series, two frames at one position, uneven slice gaps.
pub fn read_dicom_series(series: &DicomSeriesInfo) -> Result<LoadedVolume> {
    let root = series.files.first().cloned().unwrap_or_default();
    let loaded = series
        .files
        .par_iter()
        .map(|p| load_frames(p))
        .collect::<Vec<_>>();
    let mut frames = Vec::new();
    let mut thickness = None;
    let mut modality = None;
    for l in loaded {
        let (f, t, m) = l?;
        thickness = thickness.or(t);
        modality = modality.or(m);
        frames.extend(f);
    }
    let mut warnings = Vec::new();
    let first = frames.first().ok_or_else(|| DataError::NoImages {
        path: root.clone(),
        detail: "series holds no frames".into(),
    })?;
    let (rows, cols, uid0) = (first.rows, first.cols, first.series_uid.clone());
    for f in &frames {
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
    let geometric = frames
        .iter()
        .all(|f| f.geometry.position.is_some() && f.geometry.orientation.is_some());
    let iop = frames[0].geometry.orientation;
    let spacing = frames[0].geometry.pixel_spacing;
    if let Some(o0) = iop {
        for f in &frames {
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
    if let Some(s0) = spacing {
        for f in &frames {
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
    let [row_ps, col_ps] = spacing.unwrap_or_else(|| {
        warnings.push("PixelSpacing missing: assuming 1 mm pixels".to_string());
        [1.0, 1.0]
    });
    let o = iop.unwrap_or_else(|| {
        warnings.push("ImageOrientationPatient missing: assuming an axial acquisition".to_string());
        [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    });
    let xdir = [o[0], o[1], o[2]];
    let ydir = [o[3], o[4], o[5]];
    let normal = cross(xdir, ydir);
    let n = frames.len();
    let slice_vec: [f64; 3];
    let origin: [f64; 3];
    if geometric {
        let key = |f: &Frame| f.geometry.position.map(|p| dot(p, normal)).unwrap_or(0.0);
        frames.sort_by(|a, b| {
            key(a)
                .total_cmp(&key(b))
                .then(a.instance_number.cmp(&b.instance_number))
                .then(a.path.cmp(&b.path))
                .then(a.frame.cmp(&b.frame))
        });
        let d: Vec<f64> = frames.iter().map(key).collect();
        let gaps: Vec<f64> = d.windows(2).map(|w| w[1] - w[0]).collect();
        for (i, g) in gaps.iter().enumerate() {
            if g.abs() < 1e-4 {
                return Err(DataError::InconsistentSeries {
                    path: frames[i + 1].path.clone(),
                    detail: format!(
                        "{} and {} lie at the same position ({:.4} mm along the slice normal); \
                         the series holds more than one stack (echoes, phases or repeats)",
                        frame_name(&frames[i]),
                        frame_name(&frames[i + 1]),
                        d[i]
                    ),
                });
            }
        }
        if !gaps.is_empty() {
            let mut sorted = gaps.clone();
            sorted.sort_by(f64::total_cmp);
            let median = sorted[sorted.len() / 2];
            for (i, g) in gaps.iter().enumerate() {
                if (g - median).abs() > GAP_REL_TOL * median + GAP_ABS_TOL {
                    return Err(DataError::InconsistentSeries {
                        path: frames[i + 1].path.clone(),
                        detail: format!(
                            "inconsistent slice spacing: the gap between {} and {} is {:.4} mm, \
                             the typical gap is {:.4} mm (missing or extra slice?)",
                            frame_name(&frames[i]),
                            frame_name(&frames[i + 1]),
                            g,
                            median
                        ),
                    });
                }
            }
        }
        let p0 = frames[0].geometry.position.unwrap_or_default();
        origin = p0;
        slice_vec = if n > 1 {
            let pl = frames[n - 1].geometry.position.unwrap_or_default();
            let k = (n - 1) as f64;
            [
                (pl[0] - p0[0]) / k,
                (pl[1] - p0[1]) / k,
                (pl[2] - p0[2]) / k,
            ]
        } else {
            let t = thickness.unwrap_or(1.0);
            [normal[0] * t, normal[1] * t, normal[2] * t]
        };
    } else {
        if n > 1 {
            if frames.iter().all(|f| f.instance_number.is_some())
                && frames.iter().all(|f| f.frame == 0)
            {
                frames.sort_by(|a, b| {
                    a.instance_number
                        .cmp(&b.instance_number)
                        .then(a.path.cmp(&b.path))
                });
                warnings.push(format!(
                    "{}: ImagePositionPatient/ImageOrientationPatient missing: slices sorted by InstanceNumber",
                    root.display()
                ));
            } else {
                warnings.push(format!(
                    "{}: ImagePositionPatient/ImageOrientationPatient missing: slices kept in file/frame order",
                    root.display()
                ));
            }
        }
        let t = thickness.unwrap_or_else(|| {
            if n > 1 {
                warnings.push("slice spacing unknown: assuming 1 mm".to_string());
            }
            1.0
        });
        origin = frames[0].geometry.position.unwrap_or_default();
        slice_vec = [normal[0] * t, normal[1] * t, normal[2] * t];
    }
    let lps: Affine = [
        [xdir[0] * col_ps, ydir[0] * row_ps, slice_vec[0], origin[0]],
        [xdir[1] * col_ps, ydir[1] * row_ps, slice_vec[1], origin[1]],
        [xdir[2] * col_ps, ydir[2] * row_ps, slice_vec[2], origin[2]],
        [0.0, 0.0, 0.0, 1.0],
    ];
    let mut values = Vec::with_capacity(rows * cols * n);
    for f in &frames {
        values.extend_from_slice(&f.pixels);
    }
    // Frames are row-major (column index fastest), so the stack is (column, row, slice) in
    // Fortran order.
    let data =
        Array3::from_shape_vec((cols, rows, n).f(), values).map_err(|e| DataError::PixelData {
            path: root.clone(),
            detail: e.to_string(),
        })?;
    Ok(LoadedVolume {
        volume: Volume {
            data,
            affine: lps_to_ras(&lps),
        },
        source: if series.files.len() == 1 {
            root
        } else {
            series
                .files
                .first()
                .and_then(|p| p.parent())
                .map(Path::to_path_buf)
                .unwrap_or(root)
        },
        modality,
        warnings,
    })
}

/// Read a DICOM folder or file that must hold exactly one image series.
pub fn read_dicom(path: &Path) -> Result<LoadedVolume> {
    let scan = scan_dicom(path)?;
    if scan.series.len() > 1 {
        return Err(mixed_series_error(path, &scan.series));
    }
    let mut v = read_dicom_series(&scan.series[0])?;
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
