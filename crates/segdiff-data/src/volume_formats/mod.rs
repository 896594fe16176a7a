//! Every volume file format `prepare`, `sample-volume` and the label readers accept, behind one
//! dispatch on the file name (and, for `.nii`, the header size):
//!
//! | extension | format | reader |
//! |---|---|---|
//! | `.nii`, `.nii.gz` (`sizeof_hdr` 348) | NIfTI-1 | [`crate::nifti_volume`] (the `nifti` crate) |
//! | `.nii`, `.nii.gz` (`sizeof_hdr` 540) | NIfTI-2 | `nifti_family` |
//! | `.hdr`, `.img` (each may be `.gz`) | NIfTI-1/2 pair (`ni1`/`ni2` magic) or Analyze 7.5 (no magic) | `nifti_family` |
//! | `.mha`, `.mhd` | ITK MetaImage | `metaimage` |
//! | `.nrrd`, `.nhdr` | NRRD | `nrrd` |
//!
//! All give a [`LoadedVolume`] on the file's own voxel grid with nibabel's voxel → RAS+ affine
//! convention ([`crate::volume`]); intensities are f32 (NIfTI scaling applied in f64).
//! Orientation conventions:
//! * NIfTI-1/2 and pairs: sform if `sform_code > 0`, else qform if `qform_code > 0`, else
//!   nibabel's centred LAS fallback; `scl_slope`/`scl_inter` as nibabel applies them.
//! * Analyze 7.5: nibabel's `AnalyzeImage` (`get_best_affine`: centred, x flipped, no scaling);
//!   SPM's `origin` field (nibabel's `Spm99AnalyzeImage`) is not used.
//! * MetaImage and NRRD: ITK's reading (SimpleITK), LPS physical space turned into RAS+;
//!   MetaImage's `TransformMatrix` is column-wise.
//!
//! Refused with a [`DataError`](crate::DataError) naming the file: unknown or complex/RGB data
//! types, more than one channel per voxel, 5-D+ data with a non-trivial extra axis, bzip2/hex NRRD
//! encodings, ASCII MetaImage data, file lists as data files, data shorter than the header
//! describes. Each format module documents its details.

mod metaimage;
mod nifti_family;
mod nrrd;
mod voxel_data;

use std::path::Path;

use crate::error::Result;
use crate::loaded::LoadedVolume;
use crate::nifti_volume::{read_nifti, read_nifti_geometry};
use crate::volume::Affine;

/// The volume file extensions this crate reads, lower case, longest first.
pub const VOLUME_EXTENSIONS: [&str; 10] = [
    ".nii.gz", ".hdr.gz", ".img.gz", ".nii", ".hdr", ".img", ".mha", ".mhd", ".nrrd", ".nhdr",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Nifti,
    Pair,
    MetaImage,
    Nrrd,
}

/// The volume extension `path` ends with (case-insensitive), as listed in [`VOLUME_EXTENSIONS`].
pub fn volume_extension(path: &Path) -> Option<&'static str> {
    let name = path.file_name()?.to_string_lossy().to_ascii_lowercase();
    VOLUME_EXTENSIONS
        .into_iter()
        .find(|e| name.ends_with(e) && name.len() > e.len())
}

/// Whether `path` names a volume file of a supported format (anything else is taken as DICOM).
pub fn is_volume_file(path: &Path) -> bool {
    volume_extension(path).is_some()
}

fn format_of(path: &Path) -> Option<Format> {
    Some(match volume_extension(path)? {
        ".nii.gz" | ".nii" => Format::Nifti,
        ".hdr.gz" | ".img.gz" | ".hdr" | ".img" => Format::Pair,
        ".mha" | ".mhd" => Format::MetaImage,
        _ => Format::Nrrd,
    })
}

fn not_a_volume(path: &Path) -> crate::DataError {
    crate::DataError::option(
        "volume",
        format!(
            "{}: not a volume file name (expected one of {})",
            path.display(),
            VOLUME_EXTENSIONS.join(", ")
        ),
    )
}

/// Whether a `.nii` / `.nii.gz` holds NIfTI-2 (`sizeof_hdr` 540) rather than NIfTI-1; an
/// unreadable file is left to the NIfTI-1 reader, which reports it as before.
fn is_nifti2(path: &Path) -> bool {
    let gz = path.to_string_lossy().to_ascii_lowercase().ends_with(".gz");
    voxel_data::read_prefix(path, gz, 4)
        .is_ok_and(|head| nifti_family::sizeof_hdr(&head) == Some(540))
}

/// Whether `path` is a `.nii` / `.nii.gz` file holding NIfTI-1 (not NIfTI-2); an unreadable
/// `.nii` counts as NIfTI-1, whose reader reports the problem.
pub fn is_nifti1_file(path: &Path) -> bool {
    format_of(path) == Some(Format::Nifti) && !is_nifti2(path)
}

/// Read the volume `volume_index` (of a 4-D file; 0 otherwise) of any supported volume file.
pub fn read_volume_file(path: &Path, volume_index: usize) -> Result<LoadedVolume> {
    match format_of(path).ok_or_else(|| not_a_volume(path))? {
        Format::Nifti if is_nifti2(path) => nifti_family::read_nifti2(path, volume_index),
        Format::Nifti => read_nifti(path, volume_index),
        Format::Pair => nifti_family::read_pair(path, volume_index),
        Format::MetaImage => metaimage::read_metaimage(path, volume_index),
        Format::Nrrd => nrrd::read_nrrd(path, volume_index),
    }
}

/// Shape and voxel → RAS+ affine of a volume file, from its header alone.
pub fn read_volume_geometry(path: &Path, volume_index: usize) -> Result<([usize; 3], Affine)> {
    match format_of(path).ok_or_else(|| not_a_volume(path))? {
        Format::Nifti if is_nifti2(path) => nifti_family::nifti2_geometry(path, volume_index),
        Format::Nifti => read_nifti_geometry(path, volume_index),
        Format::Pair => nifti_family::pair_geometry(path, volume_index),
        Format::MetaImage => metaimage::metaimage_geometry(path, volume_index),
        Format::Nrrd => nrrd::nrrd_geometry(path, volume_index),
    }
}

/// `volume_index` must be below the file's `volumes` (the size of its 4th dimension).
pub(crate) fn check_volume_index(path: &Path, volumes: usize, volume_index: usize) -> Result<()> {
    if volume_index >= volumes {
        return Err(crate::DataError::option(
            "volume_index",
            format!(
                "{} has {volumes} volume(s), index {volume_index} is out of range",
                path.display()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions_are_matched_case_insensitively_and_whole() {
        assert!(is_volume_file(Path::new("/d/a.NII.GZ")));
        assert!(is_volume_file(Path::new("a.hdr")));
        assert!(is_volume_file(Path::new("x/a.nhdr")));
        assert_eq!(volume_extension(Path::new("a.img.gz")), Some(".img.gz"));
        assert!(!is_volume_file(Path::new("a.dcm")));
        assert!(!is_volume_file(Path::new(".nii")));
        assert!(!is_volume_file(Path::new("folder")));
    }
}
