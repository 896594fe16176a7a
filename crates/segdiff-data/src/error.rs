//! The one error type of this crate. Every variant names the file (or option) at fault and the
//! problem; a wrapped OS error is the `source()`, not part of the message, so print the chain
//! (anyhow's `{:#}`) to see it.

use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T, E = DataError> = std::result::Result<T, E>;

/// Everything that can go wrong while reading volumes, preparing a dataset or reading it back.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// An operating-system level read/write failure (the OS error is the `source()`).
    #[error("{path}: {action}")]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The file could not be parsed as DICOM (truncated, not DICOM, broken header).
    #[error("{path}: not a readable DICOM file: {detail}")]
    DicomParse { path: PathBuf, detail: String },
    /// A DICOM attribute needed to build the volume is absent or malformed.
    #[error("{path}: DICOM attribute {attribute}: {detail}")]
    DicomAttribute {
        path: PathBuf,
        attribute: &'static str,
        detail: String,
    },
    /// The DICOM object has no Pixel Data element.
    #[error("{path}: no pixel data (Pixel Data element 7FE0,0010 is missing)")]
    NoPixelData { path: PathBuf },
    /// The pixel data is compressed with a transfer syntax we do not decode.
    #[error(
        "{path}: transfer syntax {uid} ({name}) is not supported; supported are uncompressed \
         (implicit/explicit VR little endian, explicit VR big endian), deflated, RLE lossless, \
         JPEG baseline/extended/lossless, JPEG-LS and JPEG 2000"
    )]
    UnsupportedTransferSyntax {
        path: PathBuf,
        uid: String,
        name: &'static str,
    },
    /// The pixel data could not be decoded or has a layout we do not handle.
    #[error("{path}: pixel data: {detail}")]
    PixelData { path: PathBuf, detail: String },
    /// Files of one series disagree (size, orientation, spacing, duplicate positions, ...).
    #[error("{path}: inconsistent series: {detail}")]
    InconsistentSeries { path: PathBuf, detail: String },
    /// One input was expected to hold one series but holds several.
    #[error("{path}: holds {count} DICOM series ({detail}); select one with a series UID")]
    MixedSeries {
        path: PathBuf,
        count: usize,
        detail: String,
    },
    /// A folder (or file list) holds no usable image.
    #[error("{path}: {detail}")]
    NoImages { path: PathBuf, detail: String },
    /// The file could not be read as NIfTI-1.
    #[error("{path}: not a readable NIfTI-1 file: {detail}")]
    Nifti { path: PathBuf, detail: String },
    /// The file could not be read as a NIfTI-2, NIfTI-1 pair, Analyze 7.5, MetaImage or NRRD
    /// volume (`format` names which).
    #[error("{path}: not a readable {format} file: {detail}")]
    VolumeFormat {
        path: PathBuf,
        format: &'static str,
        detail: String,
    },
    /// A label volume does not share the image's voxel grid.
    #[error("{path}: label volume does not match image {image}: {detail}")]
    LabelGridMismatch {
        path: PathBuf,
        image: PathBuf,
        detail: String,
    },
    /// A label value is not an integer, or not listed in a strict mapping.
    #[error("{path}: label value {value}: {detail}")]
    LabelValue {
        path: PathBuf,
        value: f64,
        detail: String,
    },
    /// A class id is not below the declared number of classes.
    #[error("{path}: class id {value} is not below the declared number of classes {num_classes}")]
    ClassOutOfRange {
        path: PathBuf,
        value: i64,
        num_classes: usize,
    },
    /// A user option is invalid.
    #[error("option {option}: {detail}")]
    InvalidOption { option: String, detail: String },
    /// An image file could not be read or decoded.
    #[error(transparent)]
    Image(#[from] segdiff_io::ImageFileError),
    /// A PNG has an unsupported pixel format or content.
    #[error("{path}: cannot decode PNG: {detail}")]
    Png { path: PathBuf, detail: String },
    /// An image has no mask partner or vice versa.
    #[error("{path}: has no partner: expected {partner}")]
    MissingPartner { path: PathBuf, partner: PathBuf },
    /// Two files that must agree in size do not.
    #[error("{path}: size {got:?} (width, height) differs from {other} with {expected:?}")]
    SizeMismatch {
        path: PathBuf,
        got: (u32, u32),
        other: PathBuf,
        expected: (u32, u32),
    },
    /// The dataset layout on disk is not the expected one.
    #[error("{path}: {detail}")]
    Layout { path: PathBuf, detail: String },
    /// The background decoding thread of a loader stopped unexpectedly.
    #[error("data loader worker stopped: {detail}")]
    Worker { detail: String },
    /// A dataset check found problems (see [`crate::check::DataReport`] for all of them).
    #[error("{path}: {count} problem(s) in the dataset, the first: {first}")]
    DatasetProblems {
        path: PathBuf,
        count: usize,
        first: String,
    },
}

impl DataError {
    pub(crate) fn io(
        path: impl Into<PathBuf>,
        action: &'static str,
        source: std::io::Error,
    ) -> Self {
        DataError::Io {
            path: path.into(),
            action,
            source,
        }
    }

    pub(crate) fn option(option: impl Into<String>, detail: impl Into<String>) -> Self {
        DataError::InvalidOption {
            option: option.into(),
            detail: detail.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_os_error_is_the_source_not_part_of_the_message() {
        let e = DataError::io("/d/a.dcm", "open", std::io::Error::other("disk on fire"));
        let top: &dyn std::error::Error = &e;
        let chain: Vec<String> = std::iter::successors(Some(top), |e| e.source())
            .map(|e| e.to_string())
            .collect();
        assert_eq!(chain, ["/d/a.dcm: open", "disk on fire"]);
    }
}
