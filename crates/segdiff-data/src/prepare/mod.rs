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
//!
//! The steps live beside this file: resolving inputs into volumes and splits (`plan`), reading a
//! volume with its labels (`volume_pair`), cutting and writing its slices (`slicing`), and the
//! two description files (`manifest`, `dataset_json`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::intensity::Intensity;
use crate::labels::{LabelMapping, SliceFilter};
use crate::orientation::SliceAxis;
use crate::resize::Fit;
use crate::split::{Split, SplitRatios};

mod dataset_json;
mod manifest;
mod pairs_2d;
mod plan;
mod slicing;
mod volume_pair;

pub use dataset_json::{training_window, DatasetInfo, TrainingWindow};
pub use manifest::{read_manifest, ManifestRow};
pub use pairs_2d::{
    fill_outline, find_pairs, prepare_2d, threshold_mask, Folders2d, MaskFolder, Pair2d,
    IMAGE_EXTENSIONS,
};
pub use plan::sanitize_id;

use dataset_json::write_dataset_json;
use manifest::write_manifest;
use plan::{plan, Planned};
use slicing::write_volume;
use volume_pair::load_pair;

/// Folder of images under the output root.
pub const IMG_DIR: &str = "img";
/// Folder of masks under the output root (masks live in `mask/all/<split>`).
pub const MASK_DIR: &str = "mask";
/// Name of the per-slice manifest.
pub const MANIFEST: &str = "manifest.csv";
/// Name of the dataset description.
pub const DATASET_JSON: &str = "dataset.json";

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
    /// How DICOM pixel data is read (colour images to grey or refused).
    #[serde(default)]
    pub dicom: crate::dicom_series::DicomReadOptions,
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
            dicom: Default::default(),
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

fn write_file_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    segdiff_io::write_bytes_atomic(path, bytes).map_err(|e| DataError::io(path, "write", e))
}

/// The staging folder beside `OUT` with its empty split folders, removed again when the guard
/// is dropped before [`segdiff_io::DirGuard::keep`].
fn create_staging(opts: &PrepareOptions, has_masks: bool) -> Result<segdiff_io::DirGuard> {
    let parent = opts
        .out_dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| DataError::io(parent, "create folder", e))?;
    segdiff_io::remove_stale_temps(parent)
        .map_err(|e| DataError::io(parent, "remove stale temporary files", e))?;
    let tmp = segdiff_io::temp_sibling(&opts.out_dir, "tmp");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| DataError::io(&tmp, "remove stale folder", e))?;
    }
    let guard = segdiff_io::remove_dir_on_drop(&tmp);
    for s in Split::ALL {
        let d = tmp.join(IMG_DIR).join(s.name());
        std::fs::create_dir_all(&d).map_err(|e| DataError::io(&d, "create folder", e))?;
        if has_masks {
            let d = tmp.join(MASK_DIR).join("all").join(s.name());
            std::fs::create_dir_all(&d).map_err(|e| DataError::io(&d, "create folder", e))?;
        }
    }
    Ok(guard)
}

/// What one volume contributes: manifest rows, summary, DICOM modality, warnings.
type VolumeOutput = (Vec<ManifestRow>, VolumeSummary, Option<String>, Vec<String>);

/// Reads and slices every planned volume into `tmp`, in parallel; results in input order.
fn slice_volumes(
    planned: &[Planned],
    opts: &PrepareOptions,
    tmp: &Path,
    total: usize,
    progress: &(dyn Fn(&Progress) + Sync),
) -> Vec<Result<VolumeOutput>> {
    let counter = AtomicUsize::new(0);
    let vols_done = AtomicUsize::new(0);
    planned
        .par_iter()
        .map(|p| -> Result<VolumeOutput> {
            let pair = load_pair(p, opts)?;
            let (rows, filtered, desc) =
                write_volume(p, &pair, opts, tmp, &counter, total, progress)?;
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
        .collect()
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
    let has_masks = opts.inputs.iter().all(|i| i.label.is_some());
    let guard = create_staging(opts, has_masks)?;
    let tmp = guard.path();
    let mut rows = Vec::new();
    let mut volumes = Vec::new();
    let mut modalities = Vec::new();
    for r in slice_volumes(&planned, opts, tmp, total, progress) {
        let (r, s, m, w) = r?;
        rows.extend(r);
        volumes.push(s);
        modalities.push(m);
        warnings.extend(w);
    }
    progress(&Progress::Finishing);
    finish(
        guard,
        rows,
        volumes,
        warnings,
        &opts.out_dir,
        |volumes, slices| DatasetInfo::new(opts, volumes, slices, &modalities, has_masks),
    )
}

/// Writes `manifest.csv` (rows sorted by split and file) and `dataset.json` (from `info`, given
/// the volumes and the slices per split) into the staging folder, then swaps it in for `out`:
/// old OUT aside, new in place, old removed.
pub(super) fn finish(
    guard: segdiff_io::DirGuard,
    mut rows: Vec<ManifestRow>,
    volumes: Vec<VolumeSummary>,
    warnings: Vec<String>,
    out: &Path,
    info: impl FnOnce(&[VolumeSummary], [usize; 3]) -> DatasetInfo,
) -> Result<PrepareSummary> {
    let tmp = guard.path();
    rows.sort_by(|a, b| (a.split, &a.file).cmp(&(b.split, &b.file)));
    write_manifest(&tmp.join(MANIFEST), &rows)?;
    let mut slices = [0usize; 3];
    for v in &volumes {
        slices[v.split as usize] += v.written;
    }
    write_dataset_json(tmp, &info(&volumes, slices))?;
    segdiff_io::replace_dir(tmp, out)
        .map_err(|e| DataError::io(out, "move finished output into place", e))?;
    guard.keep();
    Ok(PrepareSummary {
        out_dir: out.to_path_buf(),
        volumes,
        slices,
        warnings,
    })
}
