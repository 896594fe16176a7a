//! Medical volumes in, paired 2-D training data out — and read back.
//!
//! What this crate is for: turning CT/MR volumes (DICOM series or NIfTI files) and their label
//! maps (NIfTI label volumes or DICOM SEG) into the image/mask PNG dataset that segmentation-guided
//! diffusion trains on, and reading such a dataset as shuffled, augmented batches. It does not
//! know about models, noise schedules or metrics; the CLI wires [`prepare`] and [`Dataset`] to
//! those crates.
//!
//! Main types and entry points:
//! * [`prepare`] with [`PrepareOptions`] / [`InputSpec`] → [`PrepareSummary`]: the whole pipeline
//!   (read → reorient to RAS+ → 8-bit intensities → square → Pillow-exact resize → labels → split
//!   by volume → atomic write of `img/`, `mask/all/`, `manifest.csv`, `dataset.json`).
//! * Readers: [`scan_dicom`] / [`read_dicom_series`] / [`read_dicom`], [`read_nifti`],
//!   [`read_seg_labels`], all producing a [`Volume`] (voxel grid + voxel-to-RAS affine).
//! * [`volume_formats`]: [`read_volume_file`] / [`read_volume_geometry`] for every volume file
//!   format (NIfTI-1/2, `.hdr`/`.img` NIfTI pairs and Analyze 7.5, MetaImage, NRRD).
//! * [`orientation`]: RAS+ reorientation and the radiological slice conventions.
//! * [`Intensity`], [`LabelMapping`], [`SliceFilter`], [`Fit`], [`SplitRatios`]: the knobs.
//! * [`Dataset`] + [`LoaderOptions`] → [`Batches`] of [`Batch`] (plain `Vec<f32>`/`Vec<u8>` +
//!   shapes), decoded ahead on a background thread; [`DatasetClasses`], the class fields of
//!   `dataset.json` every reader uses. Images are decoded (and RGB turned grey, as Pillow does)
//!   by `segdiff-io`, the one image reader of the workspace.
//! * [`check_dataset`] with [`CheckOptions`] → [`DataReport`]: every problem of a paired dataset
//!   at once (unreadable files, colour masks and their id mapping, size mismatches, ids out of
//!   range, orphans, mixed channels or bit depths) and a [`Summary`] of what it holds.
//! * [`volume_slices`]: a label volume cut into model-sized slices exactly as [`prepare`] cuts it
//!   ([`slice_label_volume`]), and generated slices put back on its own voxel grid
//!   ([`SliceGeometry::place`]).
//! * Writers: [`write_nifti_like`] (a volume on another NIfTI file's grid, header kept) and
//!   [`write_dicom_series`] (a new, derived DICOM series on the same world grid).
//! * [`synthetic`]: a CT-like phantom and a small NIfTI writer for tests, demos and benchmarks.
//! * [`DataError`]: every failure names the file (or option) and the problem.

pub mod check;
pub mod dataset;
pub mod dicom_seg;
pub mod dicom_series;
pub mod dicom_writer;
pub mod error;
pub mod intensity;
pub mod labels;
pub mod loaded;
pub mod loader;
pub mod nifti_volume;
pub mod nifti_writer;
pub mod orientation;
pub mod prepare;
pub mod resize;
pub mod split;
pub mod synthetic;
pub mod tissue;
pub mod volume;
pub mod volume_formats;
pub mod volume_slices;

pub use check::{
    check_dataset, CheckOptions, ColourMapping, DataReport, MappingRule, Problem, ProblemKind,
    Summary,
};
pub use dataset::{Dataset, DatasetClasses, DatasetOptions, Item, Sample};
pub use dicom_seg::read_seg_labels;
pub use dicom_series::{
    read_dicom, read_dicom_pixels, read_dicom_pixels_with, read_dicom_series,
    read_dicom_series_with, read_dicom_with, scan_dicom, DicomPixels, DicomReadOptions, DicomScan,
    DicomSeriesInfo,
};
pub use dicom_writer::{write_dicom_series, DicomScaling, DicomSeriesOptions};
pub use error::{DataError, Result};
pub use intensity::{CtPreset, Intensity};
pub use labels::{LabelMapping, SliceFilter};
pub use loaded::LoadedVolume;
pub use loader::{Augment, Batch, Batches, LoaderOptions};
pub use nifti_volume::{read_nifti, read_nifti_geometry};
pub use nifti_writer::{header_for_affine, read_nifti_header, write_nifti_like, NiftiVoxels};
pub use orientation::{reorient_to_ras, SliceAxis};
pub use prepare::{
    prepare, read_manifest, training_window, DatasetInfo, InputSpec, ManifestRow, PrepareOptions,
    PrepareSummary, Progress, TrainingWindow, VolumeSummary,
};
pub use resize::{resize_bilinear, resize_nearest, Fit};
pub use split::{Split, SplitRatios};
pub use tissue::brain_tissue_labels;
pub use volume::{Affine, Volume};
pub use volume_formats::{
    is_nifti1_file, is_volume_file, read_volume_file, read_volume_geometry, volume_extension,
    VOLUME_EXTENSIONS,
};
pub use volume_slices::{
    read_label_volume, slice_label_volume, LabelSlices, LabelVolume, SliceGeometry,
};
