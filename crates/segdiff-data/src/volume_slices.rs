//! A label volume cut into model-sized class-id slices exactly as `prepare` cuts it, and
//! generated slices put back on the label volume's own voxel grid.
//!
//! Forward ([`slice_label_volume`]): reorient to the closest RAS+ ([`crate::orientation`]), take
//! every slice along one axis in the radiological convention, make it square ([`Fit`], padding
//! with background) and resize it to the model's size with Pillow's nearest neighbour — the same
//! calls, in the same order, that `prepare` makes for its masks ([`square_and_resize`]).
//!
//! Back ([`SliceGeometry::place`]): each generated slice (float, any channel count; channels are
//! averaged) is resized bilinearly from the model's size to the squared size, the square fit is
//! undone (the padding cropped away; with [`Fit::Crop`] the cropped-off border has no generated
//! value and gets `fill`), the pixels go back to their RAS+ voxels and the reorientation is undone,
//! so the result has the label volume's shape, voxel order and affine.

use std::path::{Path, PathBuf};

use image::GrayImage;
use ndarray::Array3;

use crate::dicom_seg::read_seg_labels;
use crate::dicom_series::read_dicom;
use crate::error::{DataError, Result};
use crate::labels::LabelMapping;
use crate::orientation::{apply_orientation, io_orientation, ras_geometry, Orientation, SliceAxis};
use crate::resize::{fit_square, resize_bilinear, resize_nearest, Fit};
use crate::volume::{Affine, Volume};
use crate::volume_formats::{is_volume_file, read_volume_file};

/// A `w × h` grey image from row-major pixels (an empty image if the sizes disagree).
pub(crate) fn gray(w: usize, h: usize, data: Vec<u8>) -> GrayImage {
    GrayImage::from_raw(w as u32, h as u32, data)
        .unwrap_or_else(|| GrayImage::new(w as u32, h as u32))
}

/// `prepare`'s slice transform: fit to square (padding with 0), then resize to `size × size`
/// (nearest neighbour for masks, bilinear for images; both Pillow-exact).
pub(crate) fn square_and_resize(img: &GrayImage, fit: Fit, size: u32, nearest: bool) -> GrayImage {
    let sq = fit_square(img, fit, 0);
    if nearest {
        resize_nearest(&sq, size, size)
    } else {
        resize_bilinear(&sq, size, size)
    }
}

/// A label volume read from disk and mapped to class ids, on its own (unreoriented) voxel grid.
#[derive(Clone, Debug)]
pub struct LabelVolume {
    /// Class ids in the file's voxel order, with the file's voxel-to-RAS affine.
    pub classes: Volume<u8>,
    /// The label file.
    pub source: PathBuf,
    /// Reader warnings (missing geometry, ...), each naming the file.
    pub warnings: Vec<String>,
}

/// Whether `path` is a NIfTI-1 file (`.nii`, `.nii.gz` with a NIfTI-1 header): one whose header
/// [`crate::read_nifti_header`] reads, e.g. as the reference of an output on its grid. NIfTI-2
/// and the other volume formats ([`crate::volume_formats`]) are not.
pub fn is_nifti_path(path: &Path) -> bool {
    crate::volume_formats::is_nifti1_file(path)
}

/// Reads a label volume and maps its values to class ids with `mapping` (unlisted values are
/// background, or an error naming the value and the file when the mapping is strict).
///
/// Volume files (NIfTI, Analyze, MetaImage, NRRD: [`crate::volume_formats`]) are read as
/// `prepare` reads them (volume 0 of a 4-D file). A DICOM SEG needs the image series it segments
/// (`reference`): its segments are rasterised onto that grid.
pub fn read_label_volume(
    path: &Path,
    mapping: &LabelMapping,
    reference: Option<&Path>,
) -> Result<LabelVolume> {
    let (values, affine, warnings) = if is_volume_file(path) {
        let l = read_volume_file(path, 0)?;
        (l.volume.data, l.volume.affine, l.warnings)
    } else {
        let image = reference.ok_or_else(|| {
            DataError::option(
                "reference",
                format!(
                    "{} is not a volume file: a DICOM SEG needs the image series it segments",
                    path.display()
                ),
            )
        })?;
        let img = read_dicom(image)?;
        let shape = img.volume.shape();
        let values = read_seg_labels(path, image, shape, &img.volume.affine)?;
        (values, img.volume.affine, img.warnings)
    };
    let classes = mapping.apply(&values, path)?;
    Ok(LabelVolume {
        classes: Volume {
            data: classes,
            affine,
        },
        source: path.to_path_buf(),
        warnings: warnings
            .into_iter()
            .map(|w| format!("{}: {w}", path.display()))
            .collect(),
    })
}

/// Everything needed to put generated slices back on a label volume's voxel grid.
#[derive(Clone, Debug, PartialEq)]
pub struct SliceGeometry {
    /// Shape of the label volume (its own voxel order).
    pub shape: [usize; 3],
    /// The label volume's voxel-to-RAS affine.
    pub affine: Affine,
    /// Slicing direction.
    pub axis: SliceAxis,
    /// How slices were made square.
    pub fit: Fit,
    /// Model image size (slices are `size × size`).
    pub size: usize,
    ornt: Orientation,
    ras_shape: [usize; 3],
}

/// The class-id slices of a label volume, in slice order, and how to put results back.
#[derive(Clone, Debug)]
pub struct LabelSlices {
    /// `count × size × size` class ids, row-major, slice after slice.
    pub masks: Vec<u8>,
    /// Number of slices.
    pub count: usize,
    /// The geometry of the cut.
    pub geometry: SliceGeometry,
}

impl LabelSlices {
    /// Class ids of slice `n` (`size × size`, row-major).
    pub fn slice(&self, n: usize) -> &[u8] {
        let s = self.geometry.size * self.geometry.size;
        &self.masks[n * s..(n + 1) * s]
    }

    /// The slices from the first to the last one holding any foreground class (`None` when the
    /// volume is all background): `prepare`'s slice filter usually kept empty slices out of
    /// training, so a model has not learnt what to draw for them.
    pub fn foreground_range(&self) -> Option<std::ops::Range<usize>> {
        let has = |n: &usize| self.slice(*n).iter().any(|&c| c != 0);
        let first = (0..self.count).find(has)?;
        let last = (0..self.count).rev().find(has)?;
        Some(first..last + 1)
    }
}

/// Cuts `labels` into `size × size` class-id slices along `axis` exactly as `prepare` does.
pub fn slice_label_volume(
    labels: &Volume<u8>,
    axis: SliceAxis,
    fit: Fit,
    size: usize,
) -> Result<LabelSlices> {
    if size == 0 {
        return Err(DataError::option("size", "must be at least 1"));
    }
    let ornt = io_orientation(&labels.affine).ok_or_else(|| {
        DataError::option(
            "labels",
            format!("degenerate voxel-to-world affine {:?}", labels.affine),
        )
    })?;
    let shape = labels.shape();
    let (ras_shape, _) = ras_geometry(shape, &labels.affine, &ornt);
    let ras = apply_orientation(labels.clone(), &ornt);
    let count = axis.count(ras_shape);
    let mut masks = Vec::with_capacity(count * size * size);
    for k in 0..count {
        let (w, h, px) = axis
            .extract(ras.data.view(), k)
            .unwrap_or((0, 0, Vec::new()));
        let m = square_and_resize(&gray(w, h, px), fit, size as u32, true);
        masks.extend_from_slice(m.as_raw());
    }
    Ok(LabelSlices {
        masks,
        count,
        geometry: SliceGeometry {
            shape,
            affine: labels.affine,
            axis,
            fit,
            size,
            ornt,
            ras_shape,
        },
    })
}

impl SliceGeometry {
    /// Number of slices.
    pub fn count(&self) -> usize {
        self.axis.count(self.ras_shape)
    }

    /// Puts `count × channels × size × size` generated slices (in slice order) back on the label
    /// volume's grid (see the module docs); voxels no slice covers get `fill`.
    pub fn place(&self, slices: &[f32], channels: usize, fill: f32) -> Result<Array3<f32>> {
        let (n, s) = (self.count(), self.size);
        if channels == 0 || slices.len() != n * channels * s * s {
            return Err(DataError::option(
                "slices",
                format!(
                    "{} values for {n} slice(s) of {channels}×{s}×{s}",
                    slices.len()
                ),
            ));
        }
        let (w, h) = self.axis.slice_size(self.ras_shape);
        let mut ras = Array3::<f32>::from_elem(self.ras_shape, fill);
        for k in 0..n {
            let chw = &slices[k * channels * s * s..(k + 1) * channels * s * s];
            let grey: Vec<f32> = (0..s * s)
                .map(|i| (0..channels).map(|c| chw[c * s * s + i]).sum::<f32>() / channels as f32)
                .collect();
            let img = self.unfit(&grey, w, h, fill);
            for r in 0..h {
                for c in 0..w {
                    ras[ras_index(self.axis, self.ras_shape, k, r, c)] = img[r * w + c];
                }
            }
        }
        // Undo the reorientation: voxel `old` of the file is RAS voxel `new`, with
        // new[o] = flip ? n_j − 1 − old[j] : old[j] for (j, (o, flip)).
        let mut out = Array3::<f32>::zeros(self.shape);
        for ((i, j, k), v) in out.indexed_iter_mut() {
            let old = [i, j, k];
            let mut new = [0usize; 3];
            for (jj, &(o, flip)) in self.ornt.iter().enumerate() {
                new[o] = if flip {
                    self.shape[jj] - 1 - old[jj]
                } else {
                    old[jj]
                };
            }
            *v = ras[new];
        }
        Ok(out)
    }

    /// The inverse of [`square_and_resize`] for one generated `size × size` slice: a `w × h`
    /// image.
    fn unfit(&self, grey: &[f32], w: usize, h: usize, fill: f32) -> Vec<f32> {
        let s = self.size;
        if self.fit == Fit::Stretch || w == h {
            return resize_bilinear_f32(grey, s, s, w, h);
        }
        let sq = match self.fit {
            Fit::Pad => w.max(h),
            _ => w.min(h),
        };
        let sq_img = resize_bilinear_f32(grey, s, s, sq, sq);
        let mut out = vec![fill; w * h];
        if self.fit == Fit::Pad {
            let (ox, oy) = ((sq - w) / 2, (sq - h) / 2);
            for r in 0..h {
                for c in 0..w {
                    out[r * w + c] = sq_img[(r + oy) * sq + c + ox];
                }
            }
        } else {
            let (ox, oy) = ((w - sq) / 2, (h - sq) / 2);
            for r in 0..sq {
                for c in 0..sq {
                    out[(r + oy) * w + c + ox] = sq_img[r * sq + c];
                }
            }
        }
        out
    }
}

/// The RAS+ voxel that pixel (`r`, `c`) of slice `k` shows (the inverse of
/// [`SliceAxis::extract`]; see the table in [`crate::orientation`]).
fn ras_index(axis: SliceAxis, shape: [usize; 3], k: usize, r: usize, c: usize) -> [usize; 3] {
    let [nx, ny, nz] = shape;
    match axis {
        SliceAxis::Axial => [nx - 1 - c, ny - 1 - r, k],
        SliceAxis::Coronal => [nx - 1 - c, k, nz - 1 - r],
        SliceAxis::Sagittal => [k, ny - 1 - c, nz - 1 - r],
    }
}

/// Pillow's bilinear weights (see `resize`), in f32.
fn bilinear_weights(in_size: usize, out_size: usize) -> Vec<(usize, Vec<f32>)> {
    crate::resize::bilinear_weights(in_size, out_size)
        .into_iter()
        .map(|(lo, w)| (lo, w.into_iter().map(|v| v as f32).collect()))
        .collect()
}

/// Bilinear resize of a row-major `w × h` float image to `ow × oh` (separable, horizontal pass
/// first; an identity when the sizes agree).
pub fn resize_bilinear_f32(src: &[f32], w: usize, h: usize, ow: usize, oh: usize) -> Vec<f32> {
    if (w, h) == (ow, oh) {
        return src.to_vec();
    }
    let cx = bilinear_weights(w, ow);
    let mut tmp = vec![0.0f32; ow * h];
    for y in 0..h {
        for (x, (lo, k)) in cx.iter().enumerate() {
            tmp[y * ow + x] = k
                .iter()
                .enumerate()
                .map(|(i, &kk)| src[y * w + lo + i] * kk)
                .sum();
        }
    }
    let cy = bilinear_weights(h, oh);
    let mut out = vec![0.0f32; ow * oh];
    for (y, (lo, k)) in cy.iter().enumerate() {
        for x in 0..ow {
            out[y * ow + x] = k
                .iter()
                .enumerate()
                .map(|(i, &kk)| tmp[(lo + i) * ow + x] * kk)
                .sum();
        }
    }
    out
}

#[cfg(test)]
mod tests;
