//! A volume as read from disk, with what is known about where it came from.

use std::path::PathBuf;

use crate::volume::Volume;

/// An image volume read from a DICOM series or a NIfTI file, before reorientation.
#[derive(Clone, Debug)]
pub struct LoadedVolume {
    /// Intensities after the modality rescale (HU for CT) on the file's own voxel grid.
    pub volume: Volume<f32>,
    /// The file or folder it was read from.
    pub source: PathBuf,
    /// DICOM Modality (`CT`, `MR`, ...) when known.
    pub modality: Option<String>,
    /// Things the reader had to assume (missing geometry, sort fallback, ...).
    pub warnings: Vec<String>,
}
