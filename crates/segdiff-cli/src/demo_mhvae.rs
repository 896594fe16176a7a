//! The demo's MHVAE section: the bundled multi-headed VAE (segdiff-mhvae) on the held-out MNI
//! slices, with the brain (every tissue class) as the single object — segmentation by the warped
//! reference disc with its Dice, a style swap, and a 45° rotation edit whose re-segmented object
//! is measured.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::{DType, Tensor};
use rand::SeedableRng;
use segdiff_data::{Dataset, DatasetOptions, Split};
use segdiff_diffusion::train::{DatasetBatches, TrainData};
use segdiff_io::picture;
use segdiff_mhvae::refiner::{high_frequency_energy, EmNoise, Refiner, RefinerSampler};
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
    /// The refiner's part, when a refiner is given.
    pub refined: Option<RefinedSummary>,
    pub seconds: f64,
}

/// The refiner on the held-out slices: VAE reconstructions refined with [`REFINE_SAMPLER`].
pub struct RefinedSummary {
    pub refiner: PathBuf,
    /// Mean squared Laplacian (images in [0, 1]) of the real slices, the VAE's reconstructions
    /// and their refinements.
    pub hf_real: f64,
    pub hf_vae: f64,
    pub hf_refined: f64,
    /// Mean Dice of the re-segmented reconstructions (VAE, refined) with the true brain masks.
    pub dice_vae: f64,
    pub dice_refined: f64,
    pub calls: usize,
}

/// The demo's refiner sampler and its network calls (README: as good as 100 Euler–Maruyama
/// steps at a tenth of the calls).
const REFINE_SAMPLER: RefinerSampler = RefinerSampler::DpmSolverSde;
const REFINE_STEPS: usize = 10;

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

/// Mean Dice of the model's re-segmentation of `images` with `truth` rows.
fn resegmented_dice(model: &Mhvae, images: &Tensor, truth: &[Vec<f32>]) -> Result<f64> {
    let theta = model.encode(images)?.theta.context("no position")?.0;
    let masks = rows(&model.segment(&theta)?)?;
    let sum: f64 = masks.iter().zip(truth).map(|(m, t)| dice(m, t)).sum();
    Ok(sum / truth.len().max(1) as f64)
}

/// Runs the section, writing `mhvae_segment.png`, `mhvae_swap.png` and `mhvae_edit.png` (and,
/// with a refiner, `mhvae_refined.png`) to `out`.
pub fn run(
    model_dir: &Path,
    refiner_dir: Option<&Path>,
    data: &Path,
    rt: &Runtime,
    out: &Path,
) -> Result<MhvaeSection> {
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
    let swapped_t = model.decode(&sel(&post.mu_z, &a_idx)?, Some(&sel(&theta, &b_idx)?))?;
    let swapped = rows(&swapped_t)?;
    let refiner = match refiner_dir {
        Some(dir) => Some(
            Refiner::load(dir, &rt.device)
                .with_context(|| format!("loading the refiner {}", dir.display()))?,
        ),
        None => None,
    };
    let refine = |r: &Refiner, x_hat: &Tensor, seed: u64| -> Result<Tensor> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        Ok(r.refine(x_hat, REFINE_SAMPLER, REFINE_STEPS, EmNoise::Rng(&mut rng))?)
    };
    let swapped_refined = match &refiner {
        Some(r) => Some(rows(&refine(r, &swapped_t, 1)?)?),
        None => None,
    };
    let mut tiles = Vec::new();
    for (k, img) in swapped.iter().enumerate() {
        tiles.extend([
            tile(&xs[a_idx[k]], c, s),
            tile(&xs[b_idx[k]], c, s),
            tile(img, c, s),
        ]);
        if let Some(r) = &swapped_refined {
            tiles.push(tile(&r[k], c, s));
        }
    }
    let cols = if swapped_refined.is_some() { 4 } else { 3 };
    picture::save_png(
        &out.join("mhvae_swap.png"),
        &viewable(picture::grid(&tiles, cols), s),
    )?;

    // The refiner: VAE vs refined reconstructions of every held-out slice.
    let refined = match (&refiner, refiner_dir) {
        (Some(r), Some(dir)) => {
            let x_hat = model.reconstruct(&x)?;
            let x_ref = refine(r, &x_hat, 0)?;
            let (vr, rr) = (rows(&x_hat)?, rows(&x_ref)?);
            let mut tiles = Vec::new();
            for k in 0..SHEET.min(n) {
                let i = pick(k, SHEET.min(n));
                tiles.extend([tile(&xs[i], c, s), tile(&vr[i], c, s), tile(&rr[i], c, s)]);
            }
            picture::save_png(
                &out.join("mhvae_refined.png"),
                &viewable(picture::grid(&tiles, 6), s),
            )?;
            Some(RefinedSummary {
                refiner: dir.to_path_buf(),
                hf_real: high_frequency_energy(&x)?,
                hf_vae: high_frequency_energy(&x_hat)?,
                hf_refined: high_frequency_energy(&x_ref)?,
                dice_vae: resegmented_dice(&model, &x_hat, &truth)?,
                dice_refined: resegmented_dice(&model, &x_ref, &truth)?,
                calls: REFINE_STEPS,
            })
        }
        _ => None,
    };

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
        refined,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The section's HTML.
pub fn html(h: &mut String, m: &MhvaeSection) -> Result<()> {
    writeln!(h, "<h2>5. The multi-headed VAE</h2><p>segdiff's second method: the multi-headed VAE (<code>segdiff mhvae</code>, model <code>{}</code>) segments by warping a reference disc with the position θ it predicts (here a thin-plate spline), and decodes the image from a style z and the same θ — so style and position can be swapped and edited. Object: the brain (every tissue class). On the {} held-out slices its masks reach mean Dice <b>{:.3}</b> (lowest {:.3}). Columns: slice with its true brain mask (green) | reconstruction | slice with the predicted mask (red).</p><img src=\"mhvae_segment.png\">", m.model.display(), m.images, m.dice_mean, m.dice_min)?;
    let refined_col = if m.refined.is_some() {
        " | the same, refined"
    } else {
        ""
    };
    writeln!(h, "<p><b>Style swap</b> (paper Fig. 5). Columns: style from | position from | decoded with the first one's style and the second one's position{refined_col}.</p><img src=\"mhvae_swap.png\">")?;
    writeln!(h, "<p><b>Position edit</b> (paper Fig. 6): each slice's warp composed with a {ROTATION}° rotation (clockwise on screen) about the object's centre, decoded with the slice's own style, then segmented again. Pairs: slice with its predicted mask | edited image with its re-segmented mask. Over the {} elongated objects the re-segmented principal axis turned by {:.1}° on average. ({:.0} s)</p><img src=\"mhvae_edit.png\">", m.turned, m.turn_mean, m.seconds)?;
    if let Some(r) = &m.refined {
        writeln!(h, "<p><b>The diffusion refiner</b> (paper §4, model <code>{}</code>): a conditional diffusion that starts from the VAE's blurry reconstruction x̂ and sharpens it, here with SDE-DPM-Solver++(2M) in {} network calls. Triples: slice | VAE reconstruction | refined. High-frequency energy (mean squared Laplacian) of the held-out slices: real {:.5}, VAE {:.5}, refined {:.5}. The refined images keep the brain: re-segmented Dice with the true masks {:.3} (VAE reconstructions {:.3}).</p><img src=\"mhvae_refined.png\">", r.refiner.display(), r.calls, r.hf_real, r.hf_vae, r.hf_refined, r.dice_refined, r.dice_vae)?;
    }
    Ok(())
}
