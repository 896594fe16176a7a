//! The demo's MHVAE section: the bundled multi-headed VAE (segdiff-mhvae) on the held-out MNI
//! slices, with the brain (every tissue class) as the single object — segmentation by the warped
//! reference disc with its Dice, a style swap, and a 45° rotation edit whose re-segmented object
//! is measured.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::{DType, Tensor};
use segdiff_data::{Dataset, DatasetOptions, Split};
use segdiff_diffusion::train::{DatasetBatches, TrainData};
use segdiff_io::picture;
use segdiff_mhvae::sheet::{mask_tile, reconstruction_sheet, tile, viewable};
use segdiff_mhvae::trainer::batch_inputs;
use segdiff_mhvae::{Mhvae, PositionEdit};

use crate::runtime::Runtime;

/// Images in the segmentation sheet, pairs in the swap sheet, images in the edit sheet.
const SHEET: usize = 6;
const PAIRS: usize = 4;
const EDITED: usize = 4;
/// The rotation of the edit, degrees (clockwise on screen).
pub const ROTATION: f64 = 45.0;

/// What the section reports.
pub struct MhvaeSection {
    pub model: PathBuf,
    pub images: usize,
    pub dice_mean: f64,
    pub dice_min: f64,
    /// Mean turn of the re-segmented objects' principal axes after the rotation edit, degrees,
    /// over the elongated ones (and how many).
    pub turn_mean: f64,
    pub turned: usize,
    pub seconds: f64,
}

fn rows(t: &Tensor) -> Result<Vec<Vec<f32>>> {
    Ok(t.to_dtype(DType::F32)?.flatten_from(1)?.to_vec2::<f32>()?)
}

fn dice(a: &[f32], b: &[f32]) -> f64 {
    let inter: f64 = a.iter().zip(b).map(|(x, y)| f64::from(x * y)).sum();
    let total: f64 = a.iter().chain(b).map(|&x| f64::from(x)).sum();
    if total > 0.0 {
        2.0 * inter / total
    } else {
        1.0
    }
}

/// Principal-axis angle (degrees, y down, in [0, 180)) and elongation of a 0/1 mask.
fn axis(mask: &[f32], s: usize) -> (f64, f64) {
    let (mut n, mut sx, mut sy) = (0.0, 0.0, 0.0);
    for (k, &v) in mask.iter().enumerate() {
        n += f64::from(v);
        sx += f64::from(v) * (k % s) as f64;
        sy += f64::from(v) * (k / s) as f64;
    }
    let (cx, cy) = (sx / n.max(1.0), sy / n.max(1.0));
    let (mut a, mut b, mut c) = (0.0, 0.0, 0.0);
    for (k, &v) in mask.iter().enumerate() {
        let (dx, dy) = ((k % s) as f64 - cx, (k / s) as f64 - cy);
        a += f64::from(v) * dx * dx;
        b += f64::from(v) * dy * dy;
        c += f64::from(v) * dx * dy;
    }
    let angle = (0.5 * (2.0 * c).atan2(a - b))
        .to_degrees()
        .rem_euclid(180.0);
    let disc = ((a - b).powi(2) + 4.0 * c * c).sqrt();
    (angle, (a + b + disc) / (a + b - disc).max(1e-9))
}

/// Runs the section, writing `mhvae_segment.png`, `mhvae_swap.png` and `mhvae_edit.png` to
/// `out`.
pub fn run(model_dir: &Path, data: &Path, rt: &Runtime, out: &Path) -> Result<MhvaeSection> {
    let started = Instant::now();
    let model = Mhvae::load(model_dir, &rt.device)
        .with_context(|| format!("loading the MHVAE {}", model_dir.display()))?;
    let cfg = model.config();
    let (c, s) = (cfg.image_channels, cfg.image_size);
    let opts = DatasetOptions {
        force_grey: c == 1,
        resize: Some(s as u32),
        require_masks: true,
        ..DatasetOptions::default()
    };
    let test = Dataset::open(data, Split::Test, &opts)
        .with_context(|| format!("opening the held-out slices of {}", data.display()))?;
    let all: Vec<usize> = (0..test.len()).collect();
    let batch = DatasetBatches::new(test, true).load(&all)?;
    let (x, y) = batch_inputs(&batch, &rt.device)?;
    let post = model.encode(&x)?;
    let theta = post
        .theta
        .as_ref()
        .context("the bundled MHVAE has no position head")?
        .0
        .clone();
    let predicted = rows(&model.segment(&theta)?)?;
    let truth = rows(&y)?;
    let scores: Vec<f64> = predicted
        .iter()
        .zip(&truth)
        .map(|(p, t)| dice(p, t))
        .collect();
    let n = scores.len();
    let dice_mean = scores.iter().sum::<f64>() / n.max(1) as f64;
    let dice_min = scores.iter().copied().fold(f64::INFINITY, f64::min);

    // Evenly spaced picks (the held-out slices run through the three axes in order).
    let pick = |k: usize, m: usize| k * n / m.max(1);
    let sel = |t: &Tensor, idx: &[usize]| -> Result<Tensor> {
        let idx = Tensor::new(
            idx.iter().map(|&i| i as u32).collect::<Vec<_>>(),
            t.device(),
        )?;
        Ok(t.index_select(&idx, 0)?)
    };
    let sheet_idx: Vec<usize> = (0..SHEET.min(n)).map(|k| pick(k, SHEET.min(n))).collect();
    let sheet = reconstruction_sheet(&model, &sel(&x, &sheet_idx)?, &sel(&y, &sheet_idx)?)?;
    picture::save_png(&out.join("mhvae_segment.png"), &sheet)?;

    // Style swap: style of A, position of B, for pairs across the held-out set.
    let xs = rows(&x)?;
    let (a_idx, b_idx): (Vec<usize>, Vec<usize>) = (0..PAIRS.min(n))
        .map(|k| (pick(2 * k, 2 * PAIRS), pick(2 * k + 1, 2 * PAIRS)))
        .unzip();
    let swapped = rows(&model.decode(&sel(&post.mu_z, &a_idx)?, Some(&sel(&theta, &b_idx)?))?)?;
    let mut tiles = Vec::new();
    for (k, img) in swapped.iter().enumerate() {
        tiles.extend([
            tile(&xs[a_idx[k]], c, s),
            tile(&xs[b_idx[k]], c, s),
            tile(img, c, s),
        ]);
    }
    picture::save_png(
        &out.join("mhvae_swap.png"),
        &viewable(picture::grid(&tiles, 3), s),
    )?;

    // Rotation edit, re-segmented.
    let edit = PositionEdit {
        rotate_degrees: ROTATION,
        ..PositionEdit::default()
    };
    let grids = model.edited_grids(&theta, &edit)?;
    let edited = model.decode_with(&post.mu_z, Some(&grids))?;
    let resegmented =
        rows(&model.segment(&model.encode(&edited)?.theta.context("no position")?.0)?)?;
    let edited = rows(&edited)?;
    let mut turns = Vec::new();
    for (before, after) in predicted.iter().zip(&resegmented) {
        let ((a0, e0), (a1, _)) = (axis(before, s), axis(after, s));
        if e0 > 1.5 {
            // The turn folded into (−90°, 90°].
            let mut d = (a1 - a0).rem_euclid(180.0);
            if d > 90.0 {
                d -= 180.0;
            }
            turns.push(d);
        }
    }
    let ids = |v: &[f32]| v.iter().map(|&p| u8::from(p >= 0.5)).collect::<Vec<u8>>();
    let mut tiles = Vec::new();
    for k in 0..EDITED.min(n) {
        let i = pick(k, EDITED.min(n));
        tiles.push(mask_tile(&xs[i], c, s, &ids(&predicted[i]), [230, 70, 60]));
        tiles.push(mask_tile(
            &edited[i],
            c,
            s,
            &ids(&resegmented[i]),
            [230, 70, 60],
        ));
    }
    picture::save_png(
        &out.join("mhvae_edit.png"),
        &viewable(picture::grid(&tiles, 4), s),
    )?;
    Ok(MhvaeSection {
        model: model_dir.to_path_buf(),
        images: n,
        dice_mean,
        dice_min,
        turn_mean: turns.iter().sum::<f64>() / turns.len().max(1) as f64,
        turned: turns.len(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The section's HTML.
pub fn html(h: &mut String, m: &MhvaeSection) -> Result<()> {
    writeln!(h, "<h2>5. The multi-headed VAE</h2><p>segdiff's second method: the multi-headed VAE (<code>segdiff mhvae</code>, model <code>{}</code>) segments by warping a reference disc with the position θ it predicts (here a thin-plate spline), and decodes the image from a style z and the same θ — so style and position can be swapped and edited. Object: the brain (every tissue class). On the {} held-out slices its masks reach mean Dice <b>{:.3}</b> (lowest {:.3}). Columns: slice with its true brain mask (green) | reconstruction | slice with the predicted mask (red).</p><img src=\"mhvae_segment.png\">", m.model.display(), m.images, m.dice_mean, m.dice_min)?;
    writeln!(h, "<p><b>Style swap</b> (paper Fig. 5). Columns: style from | position from | decoded with the first one's style and the second one's position.</p><img src=\"mhvae_swap.png\">")?;
    writeln!(h, "<p><b>Position edit</b> (paper Fig. 6): each slice's warp composed with a {ROTATION}° rotation (clockwise on screen) about the object's centre, decoded with the slice's own style, then segmented again. Pairs: slice with its predicted mask | edited image with its re-segmented mask. Over the {} elongated objects the re-segmented principal axis turned by {:.1}° on average. ({:.0} s)</p><img src=\"mhvae_edit.png\">", m.turned, m.turn_mean, m.seconds)?;
    Ok(())
}
