//! Volumes → the paired 2-D PNG dataset of the paper's code, in one call: [`prepare`].
//!
//! Output layout (`OUT` = [`PrepareOptions::out_dir`]):
//!
//! ```text
//! OUT/img/{train,val,test}/<name>.png        8-bit grey slices
//! OUT/mask/all/{train,val,test}/<name>.png   8-bit class ids (pixel value = class id)
//! OUT/manifest.csv                           file,split,volume_id,source,axis,slice_index,intensity
//! OUT/dataset.json                           classes, size, modality, command, ... (DatasetInfo)
//! ```
//!
//! `<name>` is `<volume id>_<axis>_<slice index, 4 digits>`, the index counting along the RAS+
//! axis (see [`crate::orientation`]). Per volume: read → map labels → reorient image and labels to
//! the closest RAS+ → compute the intensity range over the whole volume → 8-bit → for each slice:
//! fit to square (background 0) → Pillow-exact resize (bilinear image, nearest mask) → slice
//! filter → PNG. Splits are per volume ([`crate::split`]).
//!
//! Slices are cut on the voxel grid: anisotropic voxels are not resampled, so e.g. a coronal slice
//! of a 5 mm CT is short in height (after padding to square). Resample such volumes beforehand if
//! physical proportions matter.
//!
//! Everything is written into a temporary folder beside `OUT` that replaces `OUT` only when the
//! whole run succeeded; a failed run leaves `OUT` as it was and nothing else behind. An existing
//! `OUT` is only replaced if it is empty or holds a `dataset.json` (a previous run).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use image::GrayImage;
use ndarray::{Array3, ArrayView3};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::dicom_seg::read_seg_labels;
use crate::dicom_series::{mixed_series_error, read_dicom_series, scan_dicom, DicomSeriesInfo};
use crate::error::{DataError, Result};
use crate::intensity::{to_u8, Intensity};
use crate::labels::{LabelMapping, SliceFilter};
use crate::loaded::LoadedVolume;
use crate::nifti_volume::{read_nifti, read_nifti_geometry};
use crate::orientation::{apply_orientation, io_orientation, ras_geometry, SliceAxis};
use crate::resize::{fit_square, resize_bilinear, resize_nearest, Fit};
use crate::split::{assign_splits, Split, SplitRatios};
use crate::volume::{Affine, Volume};

/// Folder of images under the output root.
pub const IMG_DIR: &str = "img";
/// Folder of masks under the output root (masks live in `mask/all/<split>`).
pub const MASK_DIR: &str = "mask";
/// Name of the per-slice manifest.
pub const MANIFEST: &str = "manifest.csv";
/// Name of the dataset description.
pub const DATASET_JSON: &str = "dataset.json";

/// Largest difference allowed between the direction/zoom parts of image and label affines.
const AFFINE_TOL_LINEAR: f64 = 1e-3;
/// Largest difference allowed between image and label origins, in mm.
const AFFINE_TOL_MM: f64 = 1e-2;

/// One volume to slice: an image and, optionally, its label map.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct InputSpec {
    /// NIfTI file (`.nii`, `.nii.gz`), DICOM file or DICOM folder (one volume per series).
    pub image: PathBuf,
    /// NIfTI label map or DICOM SEG file on the image's grid.
    pub label: Option<PathBuf>,
    /// Volume id used in file names and for splitting; default from the file/folder name.
    pub id: Option<String>,
    /// Take only this series of a DICOM folder.
    pub series_uid: Option<String>,
    /// Volume of a 4-D NIfTI image (labels that are 4-D use the same index).
    pub volume_index: usize,
    /// Put this volume in this split instead of drawing it.
    pub split: Option<Split>,
}

/// Everything [`prepare`] needs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PrepareOptions {
    /// The volumes.
    pub inputs: Vec<InputSpec>,
    /// Output root (replaced atomically).
    pub out_dir: PathBuf,
    /// Slicing directions (default axial).
    pub axes: Vec<SliceAxis>,
    /// Output width = height in pixels (default 256).
    pub size: u32,
    /// How non-square slices become square (default pad).
    pub fit: Fit,
    /// Intensity → 8-bit transform (default percentile 1, 99).
    pub intensity: Intensity,
    /// Label values → class ids and names.
    pub labels: LabelMapping,
    /// Which slices to keep.
    pub slice_filter: SliceFilter,
    /// Train/val/test ratios by volume (default 70/15/15).
    pub ratios: SplitRatios,
    /// Seed of the split draw.
    pub seed: u64,
    /// Modality written to dataset.json; default: the DICOM Modality when all inputs agree.
    pub modality: Option<String>,
    /// The command line that produced the dataset, recorded in dataset.json.
    pub command: String,
    /// Optional RGB colour per class (length = number of classes), for previews.
    pub class_colors: Option<Vec<[u8; 3]>>,
}

impl PrepareOptions {
    /// Defaults for everything but the inputs, output folder and labels.
    pub fn new(inputs: Vec<InputSpec>, out_dir: impl Into<PathBuf>, labels: LabelMapping) -> Self {
        PrepareOptions {
            inputs,
            out_dir: out_dir.into(),
            axes: vec![SliceAxis::Axial],
            size: 256,
            fit: Fit::Pad,
            intensity: Intensity::default(),
            labels,
            slice_filter: SliceFilter::default(),
            ratios: SplitRatios::default(),
            seed: 0,
            modality: None,
            command: String::new(),
            class_colors: None,
        }
    }
}

/// Progress reports of [`prepare`] (called from worker threads).
#[derive(Clone, Debug, PartialEq)]
pub enum Progress {
    /// Inputs resolved: `volumes` volumes with `slices` candidate slices in total.
    Planned { volumes: usize, slices: usize },
    /// One more candidate slice handled (written or filtered out).
    Slice { done: usize, total: usize },
    /// A volume is finished.
    VolumeDone {
        id: String,
        done: usize,
        total: usize,
    },
    /// Files are complete and the output folder is being put in place.
    Finishing,
}

/// What [`prepare`] did for one volume.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VolumeSummary {
    /// Volume id.
    pub id: String,
    /// Its split.
    pub split: Split,
    /// Image source.
    pub source: PathBuf,
    /// Label source.
    pub label: Option<PathBuf>,
    /// RAS+ shape that was sliced.
    pub shape: [usize; 3],
    /// Slices written.
    pub written: usize,
    /// Slices left out by the slice filter.
    pub filtered: usize,
    /// Intensity transform with the range actually used.
    pub intensity: String,
}

/// Result of a successful [`prepare`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PrepareSummary {
    /// The output root.
    pub out_dir: PathBuf,
    /// Per-volume results, in input order.
    pub volumes: Vec<VolumeSummary>,
    /// Slices written per split (train, val, test).
    pub slices: [usize; 3],
    /// Reader assumptions worth telling the user (missing geometry, skipped files, ...).
    pub warnings: Vec<String>,
}

/// Contents of `dataset.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DatasetInfo {
    /// Layout/format tag (`segdiff-dataset/1`).
    pub format: String,
    /// Number of classes including background.
    pub num_classes: usize,
    /// Class names by id.
    pub class_names: Vec<String>,
    /// RGB colour per class, if given.
    pub class_colors: Option<Vec<[u8; 3]>>,
    /// Whether masks were written.
    pub has_masks: bool,
    /// Image width = height.
    pub size: u32,
    /// Image channels (1).
    pub channels: usize,
    /// Modality (CT, MR, ...) or null.
    pub modality: Option<String>,
    /// Slicing directions.
    pub axes: Vec<SliceAxis>,
    /// Fit mode.
    pub fit: Fit,
    /// Intensity transform.
    pub intensity: Intensity,
    /// Label mapping (textual).
    pub label_mapping: String,
    /// Slice filter.
    pub slice_filter: SliceFilter,
    /// Split ratios and seed.
    pub split_ratios: SplitRatios,
    /// Seed of the split draw.
    pub seed: u64,
    /// Volume ids per split.
    pub volumes: std::collections::BTreeMap<String, Vec<String>>,
    /// Slice counts per split.
    pub slices: std::collections::BTreeMap<String, usize>,
    /// The command that made the dataset.
    pub command: String,
}

enum ImageSource {
    Nifti { path: PathBuf, index: usize },
    Dicom(DicomSeriesInfo),
}

struct Planned {
    id: String,
    image: ImageSource,
    label: Option<PathBuf>,
    split: Split,
    forced: Option<Split>,
    ras_shape: [usize; 3],
    source: PathBuf,
}

fn is_nifti(p: &Path) -> bool {
    let n = p
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    n.ends_with(".nii") || n.ends_with(".nii.gz")
}

fn stem(p: &Path) -> String {
    let n = p
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let lower = n.to_ascii_lowercase();
    for ext in [".nii.gz", ".nii", ".dcm", ".dicom"] {
        if lower.ends_with(ext) {
            return n[..n.len() - ext.len()].to_string();
        }
    }
    n
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

fn plan(opts: &PrepareOptions, warnings: &mut Vec<String>) -> Result<Vec<Planned>> {
    let mut planned = Vec::new();
    for spec in &opts.inputs {
        if is_nifti(&spec.image) {
            let (shape, affine) = read_nifti_geometry(&spec.image, spec.volume_index)?;
            planned.push(Planned {
                id: sanitize_id(spec.id.as_deref().unwrap_or(&stem(&spec.image))),
                ras_shape: ras_shape_of(shape, &affine, &spec.image)?,
                image: ImageSource::Nifti {
                    path: spec.image.clone(),
                    index: spec.volume_index,
                },
                label: spec.label.clone(),
                split: Split::Train,
                forced: spec.split,
                source: spec.image.clone(),
            });
            continue;
        }
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
    let free: Vec<usize> = (0..planned.len())
        .filter(|&i| planned[i].forced.is_none())
        .collect();
    let ids: Vec<String> = free.iter().map(|&i| planned[i].id.clone()).collect();
    let splits = assign_splits(&ids, &opts.ratios, opts.seed);
    for (&i, s) in free.iter().zip(splits) {
        planned[i].split = s;
    }
    for p in &mut planned {
        if let Some(s) = p.forced {
            p.split = s;
        }
    }
    Ok(planned)
}

fn validate(opts: &PrepareOptions) -> Result<()> {
    if opts.inputs.is_empty() {
        return Err(DataError::option("inputs", "no input volumes"));
    }
    if opts.axes.is_empty() {
        return Err(DataError::option(
            "axes",
            "at least one slicing axis is needed",
        ));
    }
    if opts.size == 0 || opts.size > 16384 {
        return Err(DataError::option(
            "size",
            format!("{} is not in 1..=16384", opts.size),
        ));
    }
    opts.intensity.validate()?;
    opts.labels.validate()?;
    opts.ratios.validate()?;
    let with_labels = opts.inputs.iter().filter(|i| i.label.is_some()).count();
    if with_labels != 0 && with_labels != opts.inputs.len() {
        return Err(DataError::option(
            "label",
            format!(
                "{with_labels} of {} inputs have a label map: give every input one, or none",
                opts.inputs.len()
            ),
        ));
    }
    if let Some(c) = &opts.class_colors {
        if c.len() != opts.labels.num_classes() {
            return Err(DataError::option(
                "class_colors",
                format!(
                    "{} colours for {} classes",
                    c.len(),
                    opts.labels.num_classes()
                ),
            ));
        }
    }
    Ok(())
}

/// Check `out` can be replaced: missing, empty, or a previous dataset.
fn check_out_dir(out: &Path) -> Result<()> {
    match std::fs::metadata(out) {
        Err(_) => Ok(()),
        Ok(m) if !m.is_dir() => Err(DataError::Layout {
            path: out.to_path_buf(),
            detail: "exists and is not a folder".into(),
        }),
        Ok(_) => {
            let mut rd =
                std::fs::read_dir(out).map_err(|e| DataError::io(out, "list folder", e))?;
            if rd.next().is_none() || out.join(DATASET_JSON).is_file() {
                Ok(())
            } else {
                Err(DataError::Layout {
                    path: out.to_path_buf(),
                    detail: format!(
                        "exists, is not empty and holds no {DATASET_JSON}: refusing to replace it"
                    ),
                })
            }
        }
    }
}

/// A uniquely named sibling of `out` (`.NAME.KIND-PID-NANOS`).
fn sibling(out: &Path, kind: &str) -> PathBuf {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "dataset".into());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    parent.join(format!(".{name}.{kind}-{}-{nanos}", std::process::id()))
}

/// Removes the temporary folder unless disarmed.
struct TempDirGuard {
    path: PathBuf,
    armed: bool,
}

impl Drop for TempDirGuard {
    fn drop(&mut self) {
        if self.armed {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

struct LoadedPair {
    image: Volume<f32>,
    labels: Option<Volume<u8>>,
    modality: Option<String>,
    warnings: Vec<String>,
}

fn load_pair(p: &Planned, opts: &PrepareOptions) -> Result<LoadedPair> {
    let loaded: LoadedVolume = match &p.image {
        ImageSource::Nifti { path, index } => read_nifti(path, *index)?,
        ImageSource::Dicom(s) => read_dicom_series(s)?,
    };
    let image_path = p.source.clone();
    let LoadedVolume {
        volume,
        modality,
        mut warnings,
        ..
    } = loaded;
    let ornt = io_orientation(&volume.affine).ok_or_else(|| DataError::InconsistentSeries {
        path: image_path.clone(),
        detail: format!("degenerate voxel-to-world affine {:?}", volume.affine),
    })?;
    let labels = match &p.label {
        None => None,
        Some(lp) => {
            let (values, label_affine) = if is_nifti(lp) {
                // A 4-D label map follows the image's volume index, a 3-D one is used as is.
                let want = p.volume_index_for_label();
                let idx = if want > 0 && read_nifti_geometry(lp, want).is_ok() {
                    want
                } else {
                    0
                };
                let l = read_nifti(lp, idx)?;
                warnings.extend(
                    l.warnings
                        .into_iter()
                        .map(|w| format!("{}: {w}", lp.display())),
                );
                (l.volume.data, l.volume.affine)
            } else {
                (
                    read_seg_labels(lp, &image_path, volume.shape(), &volume.affine)?,
                    volume.affine,
                )
            };
            let label_vol = Volume {
                data: values,
                affine: label_affine,
            };
            // Compare the grids after reorientation so that a label map saved in another voxel
            // order (but on the same world grid) is accepted.
            let lornt =
                io_orientation(&label_vol.affine).ok_or_else(|| DataError::LabelGridMismatch {
                    path: lp.clone(),
                    image: image_path.clone(),
                    detail: "degenerate label affine".into(),
                })?;
            let (ishape, iaff) = ras_geometry(volume.shape(), &volume.affine, &ornt);
            let (lshape, laff) = ras_geometry(label_vol.shape(), &label_vol.affine, &lornt);
            if ishape != lshape {
                return Err(DataError::LabelGridMismatch {
                    path: lp.clone(),
                    image: image_path.clone(),
                    detail: format!(
                        "shape {:?} vs image {:?}",
                        label_vol.shape(),
                        volume.shape()
                    ),
                });
            }
            let mut lin = 0.0f64;
            let mut trans = 0.0f64;
            for r in 0..3 {
                for c in 0..3 {
                    lin = lin.max((iaff[r][c] - laff[r][c]).abs());
                }
                trans = trans.max((iaff[r][3] - laff[r][3]).abs());
            }
            if lin > AFFINE_TOL_LINEAR || trans > AFFINE_TOL_MM {
                return Err(DataError::LabelGridMismatch {
                    path: lp.clone(),
                    image: image_path.clone(),
                    detail: format!(
                        "voxel-to-world affines differ (by {:.3e} in direction/spacing, {:.3e} mm in origin): \
                         label {:?} vs image {:?}",
                        lin,
                        trans,
                        label_vol.affine,
                        volume.affine
                    ),
                });
            }
            let classes = opts.labels.apply(&label_vol.data, lp)?;
            Some(apply_orientation(
                Volume {
                    data: classes,
                    affine: label_vol.affine,
                },
                &lornt,
            ))
        }
    };
    let image = apply_orientation(volume, &ornt);
    warnings = warnings
        .into_iter()
        .map(|w| format!("{}: {w}", p.id))
        .collect();
    Ok(LoadedPair {
        image,
        labels,
        modality,
        warnings,
    })
}

impl Planned {
    fn volume_index_for_label(&self) -> usize {
        match &self.image {
            ImageSource::Nifti { index, .. } => *index,
            ImageSource::Dicom(_) => 0,
        }
    }
}

/// What one volume contributes: manifest rows, summary, DICOM modality, warnings.
type VolumeOutput = (Vec<ManifestRow>, VolumeSummary, Option<String>, Vec<String>);

/// One written slice, a row of manifest.csv.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ManifestRow {
    /// Image path relative to the output root.
    pub file: String,
    /// Split name.
    pub split: Split,
    /// Volume id.
    pub volume_id: String,
    /// Image source path.
    pub source: String,
    /// Slicing axis.
    pub axis: SliceAxis,
    /// Index along the RAS+ axis.
    pub slice_index: usize,
    /// Intensity transform with the range used.
    pub intensity: String,
}

fn gray(w: usize, h: usize, data: Vec<u8>) -> GrayImage {
    GrayImage::from_raw(w as u32, h as u32, data)
        .unwrap_or_else(|| GrayImage::new(w as u32, h as u32))
}

fn square_and_resize(img: &GrayImage, fit: Fit, size: u32, nearest: bool) -> GrayImage {
    let sq = fit_square(img, fit, 0);
    if nearest {
        resize_nearest(&sq, size, size)
    } else {
        resize_bilinear(&sq, size, size)
    }
}

fn save_png(img: &GrayImage, path: &Path) -> Result<()> {
    img.save_with_format(path, image::ImageFormat::Png)
        .map_err(|e| match e {
            image::ImageError::IoError(io) => DataError::io(path, "write PNG", io),
            other => DataError::Png {
                path: path.to_path_buf(),
                detail: other.to_string(),
            },
        })
}

struct SliceJob {
    axis: SliceAxis,
    index: usize,
}

#[allow(clippy::too_many_arguments)]
fn write_volume(
    p: &Planned,
    pair: &LoadedPair,
    opts: &PrepareOptions,
    tmp: &Path,
    counter: &AtomicUsize,
    total: usize,
    progress: &(dyn Fn(&Progress) + Sync),
) -> Result<(Vec<ManifestRow>, usize, String)> {
    // Percentiles do not care about order: use the buffer as it lies in memory when possible.
    let range = match pair.image.data.as_slice_memory_order() {
        Some(v) => opts.intensity.range(v),
        None => opts
            .intensity
            .range(&pair.image.data.iter().copied().collect::<Vec<f32>>()),
    };
    let desc = opts.intensity.describe(range);
    let img8: Array3<u8> = pair.image.data.mapv(|v| to_u8(v, range.0, range.1));
    let shape = pair.image.shape();
    let jobs: Vec<SliceJob> = opts
        .axes
        .iter()
        .flat_map(|&axis| (0..axis.count(shape)).map(move |index| SliceJob { axis, index }))
        .collect();
    let split = p.split.name();
    let source = p.source.display().to_string();
    let rows = jobs
        .par_iter()
        .map(|job| -> Result<Option<ManifestRow>> {
            let out = (|| {
                let view: ArrayView3<'_, u8> = img8.view();
                let (w, h, px) = job
                    .axis
                    .extract(view, job.index)
                    .unwrap_or((0, 0, Vec::new()));
                let img = square_and_resize(&gray(w, h, px), opts.fit, opts.size, false);
                let mask = match &pair.labels {
                    Some(l) => {
                        let (w, h, m) = job.axis.extract(l.data.view(), job.index).unwrap_or((
                            0,
                            0,
                            Vec::new(),
                        ));
                        let m = square_and_resize(&gray(w, h, m), opts.fit, opts.size, true);
                        if !opts.slice_filter.keep(m.as_raw()) {
                            return Ok(None);
                        }
                        Some(m)
                    }
                    None => None,
                };
                let name = format!("{}_{}_{:04}.png", p.id, job.axis.name(), job.index);
                save_png(&img, &tmp.join(IMG_DIR).join(split).join(&name))?;
                if let Some(m) = mask {
                    save_png(&m, &tmp.join(MASK_DIR).join("all").join(split).join(&name))?;
                }
                Ok(Some(ManifestRow {
                    file: format!("{IMG_DIR}/{split}/{name}"),
                    split: p.split,
                    volume_id: p.id.clone(),
                    source: source.clone(),
                    axis: job.axis,
                    slice_index: job.index,
                    intensity: desc.clone(),
                }))
            })();
            let done = counter.fetch_add(1, Ordering::Relaxed) + 1;
            progress(&Progress::Slice { done, total });
            out
        })
        .collect::<Vec<_>>();
    let mut kept = Vec::new();
    let mut filtered = 0;
    for r in rows {
        match r? {
            Some(row) => kept.push(row),
            None => filtered += 1,
        }
    }
    Ok((kept, filtered, desc))
}

fn write_file_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(|e| DataError::io(&tmp, "write", e))?;
    std::fs::rename(&tmp, path).map_err(|e| DataError::io(path, "rename", e))
}

fn write_manifest(path: &Path, rows: &[ManifestRow]) -> Result<()> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let io_err =
        |e: csv::Error| DataError::io(path, "write CSV", std::io::Error::other(e.to_string()));
    w.write_record([
        "file",
        "split",
        "volume_id",
        "source",
        "axis",
        "slice_index",
        "intensity",
    ])
    .map_err(io_err)?;
    for r in rows {
        w.write_record([
            r.file.as_str(),
            r.split.name(),
            r.volume_id.as_str(),
            r.source.as_str(),
            r.axis.name(),
            &r.slice_index.to_string(),
            r.intensity.as_str(),
        ])
        .map_err(io_err)?;
    }
    let bytes = w
        .into_inner()
        .map_err(|e| DataError::io(path, "write CSV", std::io::Error::other(e.to_string())))?;
    write_file_atomic(path, &bytes)
}

/// Read `manifest.csv` of a prepared dataset.
pub fn read_manifest(path: &Path) -> Result<Vec<ManifestRow>> {
    let mut r = csv::Reader::from_path(path)
        .map_err(|e| DataError::io(path, "read CSV", std::io::Error::other(e.to_string())))?;
    let mut out = Vec::new();
    for rec in r.records() {
        let rec = rec.map_err(|e| DataError::Layout {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
        let bad = |what: &str| DataError::Layout {
            path: path.to_path_buf(),
            detail: format!(
                "line {}: bad {what}",
                rec.position().map(|p| p.line()).unwrap_or(0)
            ),
        };
        if rec.len() != 7 {
            return Err(bad("column count"));
        }
        out.push(ManifestRow {
            file: rec[0].to_string(),
            split: Split::parse(&rec[1]).ok_or_else(|| bad("split"))?,
            volume_id: rec[2].to_string(),
            source: rec[3].to_string(),
            axis: SliceAxis::parse(&rec[4]).ok_or_else(|| bad("axis"))?,
            slice_index: rec[5].parse().map_err(|_| bad("slice_index"))?,
            intensity: rec[6].to_string(),
        });
    }
    Ok(out)
}

/// Turn volumes into the paired PNG dataset (see the module docs). `progress` is called from
/// worker threads; pass `&|_| {}` to ignore it.
pub fn prepare(
    opts: &PrepareOptions,
    progress: &(dyn Fn(&Progress) + Sync),
) -> Result<PrepareSummary> {
    validate(opts)?;
    check_out_dir(&opts.out_dir)?;
    let mut warnings = Vec::new();
    let planned = plan(opts, &mut warnings)?;
    let total: usize = planned
        .iter()
        .map(|p| {
            opts.axes
                .iter()
                .map(|a| a.count(p.ras_shape))
                .sum::<usize>()
        })
        .sum();
    progress(&Progress::Planned {
        volumes: planned.len(),
        slices: total,
    });
    let parent = opts
        .out_dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| DataError::io(parent, "create folder", e))?;
    let tmp = sibling(&opts.out_dir, "tmp");
    let mut guard = TempDirGuard {
        path: tmp.clone(),
        armed: true,
    };
    let has_masks = opts.inputs.iter().all(|i| i.label.is_some());
    for s in Split::ALL {
        let d = tmp.join(IMG_DIR).join(s.name());
        std::fs::create_dir_all(&d).map_err(|e| DataError::io(&d, "create folder", e))?;
        if has_masks {
            let d = tmp.join(MASK_DIR).join("all").join(s.name());
            std::fs::create_dir_all(&d).map_err(|e| DataError::io(&d, "create folder", e))?;
        }
    }
    let counter = AtomicUsize::new(0);
    let vols_done = AtomicUsize::new(0);
    let results = planned
        .par_iter()
        .map(|p| -> Result<VolumeOutput> {
            let pair = load_pair(p, opts)?;
            let (rows, filtered, desc) =
                write_volume(p, &pair, opts, &tmp, &counter, total, progress)?;
            let done = vols_done.fetch_add(1, Ordering::Relaxed) + 1;
            progress(&Progress::VolumeDone {
                id: p.id.clone(),
                done,
                total: planned.len(),
            });
            let summary = VolumeSummary {
                id: p.id.clone(),
                split: p.split,
                source: p.source.clone(),
                label: p.label.clone(),
                shape: pair.image.shape(),
                written: rows.len(),
                filtered,
                intensity: desc,
            };
            Ok((rows, summary, pair.modality, pair.warnings))
        })
        .collect::<Vec<_>>();
    let mut rows = Vec::new();
    let mut volumes = Vec::new();
    let mut modalities = Vec::new();
    for r in results {
        let (r, s, m, w) = r?;
        rows.extend(r);
        volumes.push(s);
        modalities.push(m);
        warnings.extend(w);
    }
    progress(&Progress::Finishing);
    rows.sort_by(|a, b| (a.split, &a.file).cmp(&(b.split, &b.file)));
    write_manifest(&tmp.join(MANIFEST), &rows)?;
    let modality = opts.modality.clone().or_else(|| {
        let first = modalities.first().cloned().flatten();
        modalities
            .iter()
            .all(|m| *m == first)
            .then_some(first)
            .flatten()
    });
    let mut slices = [0usize; 3];
    let mut vol_ids: std::collections::BTreeMap<String, Vec<String>> = Split::ALL
        .iter()
        .map(|s| (s.name().to_string(), Vec::new()))
        .collect();
    for v in &volumes {
        slices[v.split as usize] += v.written;
        vol_ids
            .entry(v.split.name().to_string())
            .or_default()
            .push(v.id.clone());
    }
    for ids in vol_ids.values_mut() {
        ids.sort();
    }
    let info = DatasetInfo {
        format: "segdiff-dataset/1".into(),
        num_classes: opts.labels.num_classes(),
        class_names: opts.labels.class_names.clone(),
        class_colors: opts.class_colors.clone(),
        has_masks,
        size: opts.size,
        channels: 1,
        modality,
        axes: opts.axes.clone(),
        fit: opts.fit,
        intensity: opts.intensity,
        label_mapping: opts.labels.describe(),
        slice_filter: opts.slice_filter,
        split_ratios: opts.ratios,
        seed: opts.seed,
        volumes: vol_ids,
        slices: Split::ALL
            .iter()
            .map(|s| (s.name().to_string(), slices[*s as usize]))
            .collect(),
        command: opts.command.clone(),
    };
    let json = serde_json::to_vec_pretty(&info)
        .map_err(|e| DataError::io(&tmp, "encode JSON", std::io::Error::other(e)))?;
    write_file_atomic(&tmp.join(DATASET_JSON), &json)?;
    // Swap the finished folder in: old OUT aside, new in place, old removed.
    let out = &opts.out_dir;
    let old = sibling(out, "old");
    let had_old = out.exists();
    if had_old {
        std::fs::rename(out, &old)
            .map_err(|e| DataError::io(out, "move previous output aside", e))?;
    }
    if let Err(e) = std::fs::rename(&tmp, out) {
        if had_old {
            let _ = std::fs::rename(&old, out);
        }
        return Err(DataError::io(out, "move finished output into place", e));
    }
    guard.armed = false;
    if had_old {
        let _ = std::fs::remove_dir_all(&old);
    }
    Ok(PrepareSummary {
        out_dir: out.clone(),
        volumes,
        slices,
        warnings,
    })
}
