//! One planned volume read into memory: the image and its label map (mapped to class ids), both
//! reoriented to the closest RAS+, after checking that they share one world grid.

use std::path::Path;

use crate::dicom_seg::read_seg_labels;
use crate::dicom_series::read_dicom_series_with;
use crate::error::{DataError, Result};
use crate::loaded::LoadedVolume;
use crate::orientation::{apply_orientation, io_orientation, ras_geometry, Orientation};
use crate::volume::Volume;
use crate::volume_formats::{is_volume_file, read_volume_file, read_volume_geometry};

use super::plan::{ImageSource, Planned};
use super::PrepareOptions;

/// Largest difference allowed between the direction/zoom parts of image and label affines.
const AFFINE_TOL_LINEAR: f64 = 1e-3;
/// Largest difference allowed between image and label origins, in mm.
const AFFINE_TOL_MM: f64 = 1e-2;

pub(super) struct LoadedPair {
    pub(super) image: Volume<f32>,
    pub(super) labels: Option<Volume<u8>>,
    pub(super) modality: Option<String>,
    pub(super) warnings: Vec<String>,
}

pub(super) fn load_pair(p: &Planned, opts: &PrepareOptions) -> Result<LoadedPair> {
    let loaded: LoadedVolume = match &p.image {
        ImageSource::File { path, index } => read_volume_file(path, *index)?,
        ImageSource::Dicom(s) => read_dicom_series_with(s, &opts.dicom)?,
    };
    let LoadedVolume {
        volume,
        modality,
        mut warnings,
        ..
    } = loaded;
    let ornt = io_orientation(&volume.affine).ok_or_else(|| DataError::InconsistentSeries {
        path: p.source.clone(),
        detail: format!("degenerate voxel-to-world affine {:?}", volume.affine),
    })?;
    let labels = match &p.label {
        None => None,
        Some(lp) => Some(load_labels(p, lp, &volume, &ornt, opts, &mut warnings)?),
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

/// The label map `lp` of `image` (oriented by `ornt`) as class ids, reoriented to RAS+.
fn load_labels(
    p: &Planned,
    lp: &Path,
    image: &Volume<f32>,
    ornt: &Orientation,
    opts: &PrepareOptions,
    warnings: &mut Vec<String>,
) -> Result<Volume<u8>> {
    let image_path = &p.source;
    let (values, label_affine) = if is_volume_file(lp) {
        // A 4-D label map follows the image's volume index, a 3-D one is used as is.
        let want = p.volume_index_for_label();
        let idx = if want > 0 && read_volume_geometry(lp, want).is_ok() {
            want
        } else {
            0
        };
        let l = read_volume_file(lp, idx)?;
        warnings.extend(
            l.warnings
                .into_iter()
                .map(|w| format!("{}: {w}", lp.display())),
        );
        (l.volume.data, l.volume.affine)
    } else {
        (
            read_seg_labels(lp, image_path, image.shape(), &image.affine)?,
            image.affine,
        )
    };
    let label_vol = Volume {
        data: values,
        affine: label_affine,
    };
    let lornt = check_label_grid(lp, image_path, image, ornt, &label_vol)?;
    let classes = opts.labels.apply(&label_vol.data, lp)?;
    Ok(apply_orientation(
        Volume {
            data: classes,
            affine: label_vol.affine,
        },
        &lornt,
    ))
}

/// Checks that `labels` lies on `image`'s world grid and returns the labels' orientation.
fn check_label_grid(
    lp: &Path,
    image_path: &Path,
    image: &Volume<f32>,
    ornt: &Orientation,
    labels: &Volume<f32>,
) -> Result<Orientation> {
    // Compare the grids after reorientation so that a label map saved in another voxel
    // order (but on the same world grid) is accepted.
    let lornt = io_orientation(&labels.affine).ok_or_else(|| DataError::LabelGridMismatch {
        path: lp.to_path_buf(),
        image: image_path.to_path_buf(),
        detail: "degenerate label affine".into(),
    })?;
    let (ishape, iaff) = ras_geometry(image.shape(), &image.affine, ornt);
    let (lshape, laff) = ras_geometry(labels.shape(), &labels.affine, &lornt);
    if ishape != lshape {
        return Err(DataError::LabelGridMismatch {
            path: lp.to_path_buf(),
            image: image_path.to_path_buf(),
            detail: format!("shape {:?} vs image {:?}", labels.shape(), image.shape()),
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
            path: lp.to_path_buf(),
            image: image_path.to_path_buf(),
            detail: format!(
                "voxel-to-world affines differ (by {:.3e} in direction/spacing, {:.3e} mm in origin): \
                 label {:?} vs image {:?}",
                lin, trans, labels.affine, image.affine
            ),
        });
    }
    Ok(lornt)
}
