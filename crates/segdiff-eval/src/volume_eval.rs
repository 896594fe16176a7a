//! Whole-volume evaluation: is a generated stack of slices a consistent volume?
//!
//! Each volume of a prepared dataset (its `manifest.csv` gives volume, axis and slice index) is
//! stacked from its slices along one axis; its masks are generated twice — neighbour-conditioned
//! (when the model has a neighbour scheme) and independently, slice by slice — and compared with
//! the real stack on three figures:
//! - through-plane change: the mean absolute change from one slice to the next inside the body
//!   ([`through_plane_change`]), in grey levels (0–255); independent slices flicker;
//! - Dice of the segmenter on the stack's own slices and on its two orthogonal reslices (rows
//!   and columns of the stack, resized to the model's size): a flickering stack segments poorly
//!   across the slices. The reslices are stretched to square (slice spacing is not in-plane
//!   spacing), so the real stack's Dice there is the reference to read the others against;
//! - FID on the segmenter's bottleneck features, per plane, against the real stack.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use segdiff_data::{read_manifest, resize_nearest, ManifestRow, SliceAxis, Split};
use segdiff_diffusion::sampler::SampleOptions;
use segdiff_diffusion::{
    sample_volume_slices, NeighbourGate, SamplerKind, SegdiffModel, UnetDenoiser,
    VolumeSampleOptions,
};
use serde::{Deserialize, Serialize};

use crate::error::{EvalError, Result};
use crate::volume_metrics::{through_plane_change, SliceStack};
use crate::{dice, encode, fid_from_features, predict, DiceConfig, LabelMaps, MonaiUNet};

/// One volume's slices along an axis, in slice order: real images in [0, 1] and class ids.
#[derive(Clone, Debug)]
pub struct VolumeStack {
    pub name: String,
    /// Slices are `size`×`size`.
    pub size: usize,
    pub slices: usize,
    pub real: Vec<f32>,
    pub masks: Vec<u8>,
}

/// Reslices with fewer body pixels than this are left out (nothing to segment there).
const MIN_BODY_PIXELS: usize = 16;

/// The volumes of a prepared dataset along `axis`: those with a slice in `split` (all volumes
/// when `split` holds none), each stacked from its slices of every split in slice order (a file
/// the manifest names under one split folder is also looked for under the others). At most
/// `max_volumes`, by name.
pub fn load_volume_stacks(
    root: &Path,
    axis: SliceAxis,
    split: Split,
    max_volumes: Option<usize>,
) -> Result<(Vec<VolumeStack>, bool)> {
    let manifest = root.join("manifest.csv");
    let rows = read_manifest(&manifest).map_err(|e| EvalError::Incompatible {
        what: manifest.display().to_string(),
        reason: format!("whole-volume evaluation needs the dataset's manifest: {e}"),
    })?;
    let mut volumes: BTreeMap<&str, Vec<&ManifestRow>> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.axis == axis) {
        volumes.entry(r.volume_id.as_str()).or_default().push(r);
    }
    let in_split: Vec<&str> = volumes
        .iter()
        .filter(|(_, rs)| rs.iter().any(|r| r.split == split))
        .map(|(v, _)| *v)
        .collect();
    let from_split = !in_split.is_empty();
    let chosen: Vec<&str> = if from_split {
        in_split
    } else {
        volumes.keys().copied().collect()
    };
    let mut stacks = Vec::new();
    for v in chosen.into_iter().take(max_volumes.unwrap_or(usize::MAX)) {
        let mut rs = volumes[v].clone();
        rs.sort_by_key(|r| r.slice_index);
        let (mut real, mut masks, mut size) = (Vec::new(), Vec::new(), 0);
        for r in &rs {
            let image = locate(root, &r.file)?;
            let mask = mask_of(root, &image)?;
            let img = segdiff_io::grey8(&segdiff_io::read_image(&image)?);
            let m = segdiff_io::read_grey_samples(&mask)?;
            let (w, h) = img.dimensions();
            if w != h || (size != 0 && w as usize != size) || m.pixels.len() != (w * h) as usize {
                return Err(EvalError::Incompatible {
                    what: image.display().to_string(),
                    reason: format!("slices of a volume must be square, of one size, with a mask of that size (got {w}×{h})"),
                });
            }
            size = w as usize;
            real.extend(img.as_raw().iter().map(|&p| f32::from(p) / 255.0));
            masks.extend(m.pixels.iter().map(|&v| v.min(255) as u8));
        }
        stacks.push(VolumeStack {
            name: v.to_string(),
            size,
            slices: rs.len(),
            real,
            masks,
        });
    }
    Ok((stacks, from_split))
}

/// The manifest's `file` (e.g. `img/train/x.png`), or the same name under another split folder.
fn locate(root: &Path, file: &str) -> Result<PathBuf> {
    let direct = root.join(file);
    if direct.is_file() {
        return Ok(direct);
    }
    let name = Path::new(file).file_name().unwrap_or_default();
    Split::ALL
        .iter()
        .map(|s| root.join("img").join(s.name()).join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| EvalError::Incompatible {
            what: root.join("manifest.csv").display().to_string(),
            reason: format!("{file}: no such image under img/{{train,val,test}}"),
        })
}

/// `img/<split>/x.png` → `mask/all/<split>/x.png`.
fn mask_of(root: &Path, image: &Path) -> Result<PathBuf> {
    let split = image.parent().and_then(Path::file_name).unwrap_or_default();
    let mask = root
        .join("mask/all")
        .join(split)
        .join(image.file_name().unwrap_or_default());
    if mask.is_file() {
        Ok(mask)
    } else {
        Err(EvalError::Incompatible {
            what: image.display().to_string(),
            reason: format!("no mask {}", mask.display()),
        })
    }
}

/// Which plane of a stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Plane {
    /// The stack's own slices.
    Slices,
    /// Fixed row of every slice: (slices × size), slice index running up.
    Rows,
    /// Fixed column of every slice.
    Columns,
}

/// The images (resized bilinearly) and masks (nearest) of `plane`, each `size`×`size`, keeping
/// only those with at least [`MIN_BODY_PIXELS`] body pixels.
fn plane_images(
    images: &[f32],
    masks: &[u8],
    n: usize,
    s: usize,
    plane: Plane,
) -> (Vec<f32>, Vec<u8>, usize) {
    let (mut out_i, mut out_m, mut count) = (Vec::new(), Vec::new(), 0);
    let planes = if plane == Plane::Slices { n } else { s };
    for fixed in 0..planes {
        // Gather an (rows × cols) image: for reslices, rows = slices from the top (last) down.
        let (rows, cols) = match plane {
            Plane::Slices => (s, s),
            _ => (n, s),
        };
        let at = |r: usize, c: usize| -> usize {
            match plane {
                Plane::Slices => fixed * s * s + r * s + c,
                Plane::Rows => (n - 1 - r) * s * s + fixed * s + c,
                Plane::Columns => (n - 1 - r) * s * s + c * s + fixed,
            }
        };
        let img: Vec<f32> = (0..rows * cols)
            .map(|i| images[at(i / cols, i % cols)])
            .collect();
        let m: Vec<u8> = (0..rows * cols)
            .map(|i| masks[at(i / cols, i % cols)])
            .collect();
        if m.iter().filter(|&&v| v > 0).count() < MIN_BODY_PIXELS {
            continue;
        }
        let img = segdiff_data::volume_slices::resize_bilinear_f32(&img, cols, rows, s, s);
        let m = image::GrayImage::from_raw(cols as u32, rows as u32, m)
            .map(|g| resize_nearest(&g, s as u32, s as u32).into_raw())
            .unwrap_or_default();
        out_i.extend(img);
        out_m.extend(m);
        count += 1;
    }
    (out_i, out_m, count)
}

/// The figures of one stack (real or generated).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StackScores {
    /// Mean |slice k+1 − slice k| inside the body, grey levels 0–255.
    pub through_plane_change: Option<f64>,
    /// Mean Dice of the segmenter on the slices, on the row reslices and on the column
    /// reslices (axial stacks: axial, coronal, sagittal).
    pub dice: [f64; 3],
    /// FID against the real stack per plane (absent for the real stack itself).
    pub fid: Option<[f64; 3]>,
}

/// One volume's evaluation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VolumeRow {
    pub volume: String,
    pub slices: usize,
    pub real: StackScores,
    /// Absent when the model has no neighbour scheme.
    pub conditioned: Option<StackScores>,
    pub independent: StackScores,
}

/// The whole-volume section of the evaluation report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VolumeReport {
    pub axis: String,
    /// The planes of `dice` / `fid`, in order.
    pub planes: [String; 3],
    pub sampler: String,
    pub steps: usize,
    pub seed: u64,
    pub anchors: usize,
    /// The part of the steps in which a conditioned slice saw its neighbour
    /// ([`VolumeSampleOptions::neighbour_window`]; reports written before it: the whole).
    #[serde(default = "whole_trajectory")]
    pub neighbour_window: (f64, f64),
    /// Where conditioned slices used the neighbour ([`VolumeSampleOptions::neighbour_gate`];
    /// reports written before it: everywhere).
    #[serde(default = "everywhere")]
    pub neighbour_gate: NeighbourGate,
    /// Which volumes: those with a test slice, or all when the test split has none.
    pub selection: String,
    pub volumes: Vec<VolumeRow>,
    /// Mean through-plane change of conditioned over independent generation.
    pub change_ratio: Option<f64>,
}

fn whole_trajectory() -> (f64, f64) {
    (0.0, 1.0)
}

fn everywhere() -> NeighbourGate {
    NeighbourGate::Everywhere
}

/// How the volumes are generated.
#[derive(Clone, Debug)]
pub struct VolumeEvalOptions {
    pub axis: SliceAxis,
    pub sampler: SamplerKind,
    pub steps: usize,
    pub seed: u64,
    pub anchors: usize,
    /// [`VolumeSampleOptions::neighbour_window`].
    pub neighbour_window: (f64, f64),
    /// [`VolumeSampleOptions::neighbour_gate`].
    pub neighbour_gate: NeighbourGate,
    pub batch_size: usize,
    /// Every slice draws the same noise ([`SampleOptions::shared_noise`]), in both modes.
    pub shared_noise: bool,
    pub dtype: DType,
    pub device: Device,
}

/// Evaluates every stack (see the module docs); `progress(volume, what)` names each stage.
pub fn evaluate_volumes(
    model: &SegdiffModel,
    segmenter: &MonaiUNet,
    stacks: &[VolumeStack],
    from_test_split: bool,
    options: &VolumeEvalOptions,
    progress: &mut dyn FnMut(&str, &str),
) -> Result<VolumeReport> {
    let num_classes = model
        .meta
        .num_classes
        .ok_or_else(|| EvalError::Incompatible {
            what: model.dir.display().to_string(),
            reason: "whole-volume evaluation needs a segmentation-guided model with a class count"
                .into(),
        })?;
    let planes = match options.axis {
        SliceAxis::Axial => ["axial", "coronal", "sagittal"],
        SliceAxis::Coronal => ["coronal", "axial", "sagittal"],
        SliceAxis::Sagittal => ["sagittal", "axial", "coronal"],
    };
    let mut rows = Vec::new();
    for stack in stacks {
        let (n, s) = (stack.slices, stack.size);
        let masks = Tensor::from_vec(
            stack
                .masks
                .iter()
                .map(|&v| u32::from(v))
                .collect::<Vec<_>>(),
            (n, s, s),
            &Device::Cpu,
        )?;
        let real = score(
            segmenter,
            &stack.real,
            &stack.masks,
            n,
            s,
            num_classes,
            None,
        )?;
        let generate = |independent: bool| -> Result<Vec<f32>> {
            let mut unet = UnetDenoiser::new(&model.unet.model, options.dtype);
            let out = sample_volume_slices(
                &mut unet,
                &model.scheduler,
                &model.meta,
                &masks,
                &VolumeSampleOptions {
                    sample: SampleOptions {
                        scheduler: options.sampler,
                        steps: Some(options.steps),
                        seed: options.seed,
                        batch_size: options.batch_size,
                        shared_noise: options.shared_noise,
                        ..SampleOptions::default()
                    },
                    independent,
                    anchors: options.anchors,
                    neighbour_window: options.neighbour_window,
                    neighbour_gate: options.neighbour_gate,
                },
                &options.device,
                &mut |_| {},
            )?;
            Ok(out
                .to_dtype(DType::F32)?
                .narrow(1, 0, 1)?
                .flatten_all()?
                .to_vec1::<f32>()?)
        };
        let conditioned = match model.meta.neighbours {
            Some(_) => {
                progress(&stack.name, "neighbour-conditioned generation");
                let g = generate(false)?;
                Some(score(
                    segmenter,
                    &g,
                    &stack.masks,
                    n,
                    s,
                    num_classes,
                    Some(&stack.real),
                )?)
            }
            None => None,
        };
        progress(&stack.name, "independent generation");
        let g = generate(true)?;
        let independent = score(
            segmenter,
            &g,
            &stack.masks,
            n,
            s,
            num_classes,
            Some(&stack.real),
        )?;
        rows.push(VolumeRow {
            volume: stack.name.clone(),
            slices: n,
            real,
            conditioned,
            independent,
        });
    }
    let mean = |f: &dyn Fn(&VolumeRow) -> Option<f64>| -> Option<f64> {
        let v: Vec<f64> = rows.iter().filter_map(f).collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    };
    let cond = mean(&|r| r.conditioned.as_ref().and_then(|c| c.through_plane_change));
    let indep = mean(&|r| r.independent.through_plane_change);
    Ok(VolumeReport {
        axis: options.axis.name().to_string(),
        planes: planes.map(String::from),
        sampler: options.sampler.name().to_string(),
        steps: options.steps,
        seed: options.seed,
        anchors: options.anchors,
        neighbour_window: options.neighbour_window,
        neighbour_gate: options.neighbour_gate,
        selection: if from_test_split {
            "volumes with slices in the test split".into()
        } else {
            "all volumes (the test split has none)".into()
        },
        volumes: rows,
        change_ratio: cond.zip(indep).map(|(c, i)| c / i),
    })
}

/// The figures of `images` (a stack in [0, 1]) against its masks, and FID against `real`.
fn score(
    segmenter: &MonaiUNet,
    images: &[f32],
    masks: &[u8],
    n: usize,
    s: usize,
    num_classes: usize,
    real: Option<&[f32]>,
) -> Result<StackScores> {
    let body: Vec<bool> = masks.iter().map(|&v| v > 0).collect();
    let change = through_plane_change(&SliceStack {
        values: images,
        body: &body,
        slices: n,
        height: s,
        width: s,
    })?
    .map(|c| c * 255.0);
    let mut dice_v = [0.0; 3];
    let mut fid = [0.0; 3];
    for (k, plane) in [Plane::Slices, Plane::Rows, Plane::Columns]
        .into_iter()
        .enumerate()
    {
        let (imgs, ms, count) = plane_images(images, masks, n, s, plane);
        if count == 0 {
            continue;
        }
        let t = to_input(&imgs, count, s)?;
        let seg = predict(segmenter, &t, 8)?;
        let target = LabelMaps::new(ms.iter().map(|&v| u32::from(v)).collect(), count, s, s)?;
        dice_v[k] = dice(&seg, &target, &DiceConfig::new(num_classes))?.mean();
        if let Some(real) = real {
            let (r_imgs, _, r_count) = plane_images(real, masks, n, s, plane);
            if count >= 2 && r_count >= 2 {
                fid[k] = fid_from_features(
                    &encode(segmenter, &t, 8)?,
                    &encode(segmenter, &to_input(&r_imgs, r_count, s)?, 8)?,
                )?;
            }
        }
    }
    Ok(StackScores {
        through_plane_change: change,
        dice: dice_v,
        fid: real.map(|_| fid),
    })
}

/// `(count, 1, s, s)` in [-1, 1], the segmenter's input.
fn to_input(images01: &[f32], count: usize, s: usize) -> Result<Tensor> {
    let t = Tensor::from_slice(images01, (count, 1, s, s), &Device::Cpu)?;
    Ok(((t * 2.0)? - 1.0)?)
}

impl VolumeReport {
    /// The report section in Markdown.
    pub fn to_markdown(&self) -> String {
        let mut s = String::from("## Whole volumes\n\n");
        s.push_str(&format!(
            "{} stacks of {} slices ({}), generated from their masks with {} in {} steps, seed {}: \
             neighbour-conditioned ({} anchor(s), the neighbour used at {} pixels{}) and \
             independently. Through-plane change: mean \
             |slice k+1 − slice k| inside the body, grey levels. Dice: the segmenter on the {} \
             slices and on the {} / {} reslices of the stack (stretched to square: read them \
             against the real stack's). FID: segmenter features per plane against the real stack.\n\n",
            self.volumes.len(),
            self.axis,
            self.selection,
            self.sampler,
            self.steps,
            self.seed,
            self.anchors,
            match self.neighbour_gate {
                NeighbourGate::Agreeing => "the mask-agreeing",
                NeighbourGate::Everywhere => "all",
            },
            match self.neighbour_window {
                (from, until) if (from, until) != (0.0, 1.0) => format!(
                    "; the neighbour fed in the steps from {from} to {until} of the trajectory"
                ),
                _ => String::new(),
            },
            self.planes[0],
            self.planes[1],
            self.planes[2]
        ));
        s.push_str(&format!(
            "| volume | stack | through-plane change | Dice {} | Dice {} | Dice {} | FID {} | FID {} | FID {} |\n|---|---|---:|---:|---:|---:|---:|---:|---:|\n",
            self.planes[0], self.planes[1], self.planes[2], self.planes[0], self.planes[1], self.planes[2]
        ));
        let f = |v: Option<f64>, d: usize| v.map_or("—".into(), |x| format!("{x:.d$}"));
        for r in &self.volumes {
            let mut line = |what: &str, sc: &StackScores| {
                s.push_str(&format!(
                    "| {} | {what} | {} | {:.3} | {:.3} | {:.3} | {} | {} | {} |\n",
                    r.volume,
                    f(sc.through_plane_change, 2),
                    sc.dice[0],
                    sc.dice[1],
                    sc.dice[2],
                    f(sc.fid.map(|x| x[0]), 3),
                    f(sc.fid.map(|x| x[1]), 3),
                    f(sc.fid.map(|x| x[2]), 3),
                ));
            };
            line("real", &r.real);
            if let Some(c) = &r.conditioned {
                line("neighbour-conditioned", c);
            }
            line("independent", &r.independent);
        }
        if let Some(ratio) = self.change_ratio {
            s.push_str(&format!(
                "\nThrough-plane change of conditioned over independent generation: {ratio:.2}×.\n"
            ));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reslices_run_through_the_slices_with_the_last_one_on_top() {
        // 6 slices of 4×4, each constant at its slice index, all body except slice 0's row 3.
        let (n, s) = (6usize, 4usize);
        let images: Vec<f32> = (0..n * s * s).map(|i| (i / (s * s)) as f32).collect();
        let mut masks = vec![1u8; n * s * s];
        masks[3 * s..4 * s].fill(0);
        // Slice 0 keeps 12 body pixels, under MIN_BODY_PIXELS: left out.
        let (own, own_masks, count) = plane_images(&images, &masks, n, s, Plane::Slices);
        assert_eq!(count, n - 1);
        assert_eq!(own, images[s * s..]);
        assert_eq!(own_masks, masks[s * s..]);
        for plane in [Plane::Rows, Plane::Columns] {
            let (img, m, count) = plane_images(&images, &masks, n, s, plane);
            assert_eq!(count, s, "one reslice per row/column");
            // Each reslice (6 slices × 4) is resized to 4×4: values fall from the top (last
            // slice) to the bottom (first), constant along each row.
            for r in 0..s {
                let row = &img[r * s..(r + 1) * s];
                assert!(row.iter().all(|&v| (v - row[0]).abs() < 1e-5), "{row:?}");
            }
            assert!(img[0] > 4.0 && img[3 * s] < 1.0, "{img:?}");
            assert_eq!(m.len(), s * s * s);
        }
        // Row 3 of the row reslices: slice 0's row 3 is background, at the bottom of the picture.
        let (_, m, _) = plane_images(&images, &masks, n, s, Plane::Rows);
        assert_eq!(&m[3 * 16 + 12..3 * 16 + 16], &[0, 0, 0, 0]);
        assert!(m[3 * 16..3 * 16 + 12].iter().all(|&v| v == 1));
    }
}
