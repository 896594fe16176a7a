//! Which volumes a run slices: inputs resolved into volumes (one per DICOM series), their ids,
//! their slice counts and their splits, before any voxel is read.

use std::path::{Path, PathBuf};

use crate::dicom_series::{mixed_series_error, scan_dicom, DicomSeriesInfo};
use crate::error::{DataError, Result};
use crate::orientation::{io_orientation, ras_geometry};
use crate::split::{assign_splits, Split};
use crate::volume::Affine;
use crate::volume_formats::{read_volume_geometry, volume_extension};

use super::{InputSpec, PrepareOptions};

pub(super) enum ImageSource {
    /// A volume file (NIfTI, Analyze, MetaImage, NRRD) and the volume index of a 4-D file.
    File {
        path: PathBuf,
        index: usize,
    },
    Dicom(DicomSeriesInfo),
}

pub(super) struct Planned {
    pub(super) id: String,
    pub(super) image: ImageSource,
    pub(super) label: Option<PathBuf>,
    pub(super) split: Split,
    forced: Option<Split>,
    pub(super) ras_shape: [usize; 3],
    pub(super) source: PathBuf,
}

impl Planned {
    pub(super) fn volume_index_for_label(&self) -> usize {
        match &self.image {
            ImageSource::File { index, .. } => *index,
            ImageSource::Dicom(_) => 0,
        }
    }
}

fn stem(p: &Path) -> String {
    let n = p
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let lower = n.to_ascii_lowercase();
    let ext =
        volume_extension(p).or_else(|| [".dcm", ".dicom"].into_iter().find(|e| lower.ends_with(e)));
    match ext {
        Some(e) => n[..n.len() - e.len()].to_string(),
        None => n,
    }
}

/// Keep ids file-name friendly: `[A-Za-z0-9._-]`, everything else becomes `_`.
pub fn sanitize_id(s: &str) -> String {
    let out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.chars().all(|c| c == '.') {
        "volume".into()
    } else {
        out
    }
}

fn ras_shape_of(shape: [usize; 3], affine: &Affine, path: &Path) -> Result<[usize; 3]> {
    let ornt = io_orientation(affine).ok_or_else(|| DataError::InconsistentSeries {
        path: path.to_path_buf(),
        detail: format!("degenerate voxel-to-world affine {affine:?}"),
    })?;
    Ok(ras_geometry(shape, affine, &ornt).0)
}

fn dicom_geometry_guess(s: &DicomSeriesInfo) -> ([usize; 3], Affine) {
    // Only the orientation matters for counting slices; spacing is irrelevant here.
    let o = s.orientation.unwrap_or([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]);
    let n = [
        o[1] * o[5] - o[2] * o[4],
        o[2] * o[3] - o[0] * o[5],
        o[0] * o[4] - o[1] * o[3],
    ];
    let lps = [
        [o[0], o[3], n[0], 0.0],
        [o[1], o[4], n[1], 0.0],
        [o[2], o[5], n[2], 0.0],
        [0.0, 0.0, 0.0, 1.0],
    ];
    (
        [s.cols as usize, s.rows as usize, s.frames],
        crate::volume::lps_to_ras(&lps),
    )
}

/// Every input as volumes with ids and splits; ids must be distinct.
pub(super) fn plan(opts: &PrepareOptions, warnings: &mut Vec<String>) -> Result<Vec<Planned>> {
    let mut planned = Vec::new();
    for spec in &opts.inputs {
        if crate::volume_formats::is_volume_file(&spec.image) {
            planned.push(plan_file(spec)?);
        } else {
            plan_dicom(spec, warnings, &mut planned).map_err(|e| unknown_format(spec, e))?;
        }
    }
    let mut seen = std::collections::BTreeMap::new();
    for p in &planned {
        if let Some(prev) = seen.insert(p.id.clone(), p.source.clone()) {
            return Err(DataError::option(
                "id",
                format!(
                    "volume id `{}` is used by both {} and {}; give the inputs distinct ids",
                    p.id,
                    prev.display(),
                    p.source.display()
                ),
            ));
        }
    }
    assign_planned_splits(&mut planned, opts);
    Ok(planned)
}

/// A file that is neither a volume file by name nor DICOM by content (no `DICM` marker, no
/// `.dcm` name) whose DICOM parse failed: say what is read instead of the parser's complaint.
fn unknown_format(spec: &InputSpec, e: DataError) -> DataError {
    let path = &spec.image;
    let parse_failed = matches!(e, DataError::DicomParse { .. } | DataError::NoImages { .. });
    if !path.is_file()
        || !parse_failed
        || crate::dicom_series::looks_like_dicom(path).unwrap_or(true)
    {
        return e;
    }
    DataError::option(
        "image",
        format!(
            "{}: not a format segdiff reads. Volume files are recognised by their name: \
             .nii/.nii.gz (NIfTI-1/2), .hdr+.img (Analyze 7.5, NIfTI pairs; also gzipped), \
             .mha/.mhd (MetaImage), .nrrd/.nhdr (NRRD); DICOM by content (a `DICM` marker) or a \
             .dcm name, as files or folders. Convert it first (e.g. with SimpleITK or nibabel)",
            path.display(),
        ),
    )
}

/// A volume file input: one volume.
fn plan_file(spec: &InputSpec) -> Result<Planned> {
    let (shape, affine) = read_volume_geometry(&spec.image, spec.volume_index)?;
    Ok(Planned {
        id: sanitize_id(spec.id.as_deref().unwrap_or(&stem(&spec.image))),
        ras_shape: ras_shape_of(shape, &affine, &spec.image)?,
        image: ImageSource::File {
            path: spec.image.clone(),
            index: spec.volume_index,
        },
        label: spec.label.clone(),
        split: Split::Train,
        forced: spec.split,
        source: spec.image.clone(),
    })
}

/// A DICOM file or folder: one volume per image series (or only the one asked for).
fn plan_dicom(
    spec: &InputSpec,
    warnings: &mut Vec<String>,
    planned: &mut Vec<Planned>,
) -> Result<()> {
    let scan = scan_dicom(&spec.image)?;
    if !scan.skipped.is_empty() {
        warnings.push(format!(
            "{}: skipped {} non-DICOM file(s), e.g. {}",
            spec.image.display(),
            scan.skipped.len(),
            scan.skipped[0].display()
        ));
    }
    let mut series = scan.series;
    if let Some(uid) = &spec.series_uid {
        series.retain(|s| &s.series_uid == uid);
        if series.is_empty() {
            return Err(DataError::NoImages {
                path: spec.image.clone(),
                detail: format!("no image series with SeriesInstanceUID {uid}"),
            });
        }
    }
    if series.len() > 1 && (spec.label.is_some() || spec.id.is_some()) {
        return Err(mixed_series_error(&spec.image, &series));
    }
    let base = spec.id.clone().unwrap_or_else(|| stem(&spec.image));
    let many = series.len() > 1;
    for (k, s) in series.into_iter().enumerate() {
        let id = if many {
            match s.series_number {
                Some(n) => format!("{base}_s{n}"),
                None => format!("{base}_{k}"),
            }
        } else {
            base.clone()
        };
        let (shape, affine) = dicom_geometry_guess(&s);
        planned.push(Planned {
            id: sanitize_id(&id),
            ras_shape: ras_shape_of(shape, &affine, &spec.image)?,
            source: if s.files.len() == 1 {
                s.files[0].clone()
            } else {
                spec.image.clone()
            },
            image: ImageSource::Dicom(s),
            label: spec.label.clone(),
            split: Split::Train,
            forced: spec.split,
        });
    }
    Ok(())
}

/// Draws the splits of the volumes without a forced one; the others keep theirs.
fn assign_planned_splits(planned: &mut [Planned], opts: &PrepareOptions) {
    let free: Vec<usize> = (0..planned.len())
        .filter(|&i| planned[i].forced.is_none())
        .collect();
    let ids: Vec<String> = free.iter().map(|&i| planned[i].id.clone()).collect();
    let splits = assign_splits(&ids, &opts.ratios, opts.seed);
    for (&i, s) in free.iter().zip(splits) {
        planned[i].split = s;
    }
    for p in planned.iter_mut() {
        if let Some(s) = p.forced {
            p.split = s;
        }
    }
}
