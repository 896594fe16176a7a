//! One loaded volume cut into slices: 8-bit windowing over the whole volume, then per slice fit
//! to square, Pillow-exact resize, slice filter and PNG files in the staging folder.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use image::GrayImage;
use ndarray::{Array3, ArrayView3};
use rayon::prelude::*;

use crate::error::{DataError, Result};
use crate::intensity::to_u8;
use crate::orientation::SliceAxis;
use crate::volume_slices::{gray, square_and_resize};

use super::manifest::ManifestRow;
use super::plan::Planned;
use super::volume_pair::LoadedPair;
use super::{PrepareOptions, Progress, IMG_DIR, MASK_DIR};

/// Writes a slice into the staging folder (made durable and visible as a whole when the folder
/// is swapped in).
fn save_png(img: &GrayImage, path: &Path) -> Result<()> {
    let bytes = segdiff_io::encode_png(path, &image::DynamicImage::ImageLuma8(img.clone()))?;
    std::fs::write(path, bytes).map_err(|e| DataError::io(path, "write PNG", e))
}

struct SliceJob {
    axis: SliceAxis,
    index: usize,
}

/// One volume being sliced: its plan and voxels, the options, the staging folder, and its 8-bit
/// image with the description of the intensity transform that made it.
struct VolumeSlicer<'a> {
    p: &'a Planned,
    pair: &'a LoadedPair,
    opts: &'a PrepareOptions,
    tmp: &'a Path,
    img8: Array3<u8>,
    desc: String,
    source: String,
}

/// Slices one volume into `tmp`, reporting each candidate slice through `counter` / `progress`;
/// returns the manifest rows, the number of slices filtered out and the intensity transform.
#[allow(clippy::too_many_arguments)]
pub(super) fn write_volume(
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
    let slicer = VolumeSlicer {
        p,
        pair,
        opts,
        tmp,
        img8: pair.image.data.mapv(|v| to_u8(v, range.0, range.1)),
        desc: opts.intensity.describe(range),
        source: p.source.display().to_string(),
    };
    let shape = pair.image.shape();
    let jobs: Vec<SliceJob> = opts
        .axes
        .iter()
        .flat_map(|&axis| (0..axis.count(shape)).map(move |index| SliceJob { axis, index }))
        .collect();
    let rows = jobs
        .par_iter()
        .map(|job| -> Result<Option<ManifestRow>> {
            let out = slicer.write_slice(job);
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
    Ok((kept, filtered, slicer.desc))
}

impl VolumeSlicer<'_> {
    /// Writes one slice (and its mask) and returns its manifest row, or `None` when the slice
    /// filter leaves it out.
    fn write_slice(&self, job: &SliceJob) -> Result<Option<ManifestRow>> {
        let (p, opts, tmp) = (self.p, self.opts, self.tmp);
        let view: ArrayView3<'_, u8> = self.img8.view();
        let (w, h, px) = job
            .axis
            .extract(view, job.index)
            .unwrap_or((0, 0, Vec::new()));
        let img = square_and_resize(&gray(w, h, px), opts.fit, opts.size, false);
        let mask = match &self.pair.labels {
            Some(l) => {
                let (w, h, m) =
                    job.axis
                        .extract(l.data.view(), job.index)
                        .unwrap_or((0, 0, Vec::new()));
                let m = square_and_resize(&gray(w, h, m), opts.fit, opts.size, true);
                if !opts.slice_filter.keep(m.as_raw()) {
                    return Ok(None);
                }
                Some(m)
            }
            None => None,
        };
        let split = p.split.name();
        let name = format!("{}_{}_{:04}.png", p.id, job.axis.name(), job.index);
        save_png(&img, &tmp.join(IMG_DIR).join(split).join(&name))?;
        if let Some(m) = mask {
            save_png(&m, &tmp.join(MASK_DIR).join("all").join(split).join(&name))?;
        }
        Ok(Some(ManifestRow {
            file: format!("{IMG_DIR}/{split}/{name}"),
            split: p.split,
            volume_id: p.id.clone(),
            source: self.source.clone(),
            axis: job.axis,
            slice_index: job.index,
            intensity: self.desc.clone(),
        }))
    }
}
