//! `segdiff mhvae segment | reconstruct | swap | edit | interpolate`: a trained MHVAE applied to
//! folders of PNG images (the model's size and channel count; outputs keep the input names).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Tensor};
use rand::rngs::StdRng;
use rand::SeedableRng;
use segdiff_mhvae::refiner::{EmNoise, RefinerSampler};
use segdiff_mhvae::sheet::{mask_tile, tile, viewable, SHEET_IMAGES};
use segdiff_mhvae::{Mhvae, PositionEdit};

use super::images::{
    load_model, prepare_out, read_images, rows, save_image, save_mask, stack, InputImage, BATCH,
};
use super::refiner::{shard_batches, RefineArgs, Refining};
use crate::flag_values::flag;
use crate::runtime::Runtime;

/// `--model` and `--images` of the commands that map images to images.
#[derive(Debug, clap::Args)]
pub struct ImagesArgs {
    /// Trained model folder (`segdiff mhvae train --out`).
    #[arg(long)]
    pub model: PathBuf,
    /// A PNG image or a folder of them, at the model's size.
    #[arg(long)]
    pub images: PathBuf,
    /// Output folder (files keep the input names).
    #[arg(long)]
    pub out: PathBuf,
}

/// Runs `f` on batches of the images, with a progress bar.
fn batched(
    images: &[InputImage],
    model: &Mhvae,
    what: &str,
    mut f: impl FnMut(&[&InputImage], &Tensor) -> Result<()>,
) -> Result<()> {
    let bar = crate::progress::bar(images.len() as u64, what);
    for chunk in images.chunks(BATCH) {
        let refs: Vec<&InputImage> = chunk.iter().collect();
        f(&refs, &stack(&refs, model)?)?;
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    Ok(())
}

fn needs_position(model: &Mhvae, what: &str) -> Result<()> {
    if model.position().is_none() {
        bail!("{what} needs a model with a position head; this one was trained with --warp none (the single-headed VAE)");
    }
    Ok(())
}

/// `segment`: one 0/1 PNG mask per input, the warped reference at the model's threshold.
pub fn segment(args: &ImagesArgs, rt: &Runtime) -> Result<()> {
    let model = load_model(&args.model, &rt.device)?;
    needs_position(&model, "segment")?;
    let images = read_images(&args.images, &model)?;
    prepare_out(&args.out)?;
    let s = model.config().image_size;
    batched(&images, &model, "segment", |batch, x| {
        let post = model.encode(x)?;
        let theta = &post.theta.as_ref().context("no position")?.0;
        for (img, m) in batch.iter().zip(rows(&model.segment(theta)?)?) {
            save_mask(&args.out.join(&img.name), &m, s)?;
        }
        Ok(())
    })?;
    println!("wrote {} mask(s) to {}", images.len(), args.out.display());
    Ok(())
}

/// `reconstruct`: flags.
#[derive(Debug, clap::Args)]
pub struct ReconstructArgs {
    #[command(flatten)]
    pub io: ImagesArgs,
    #[command(flatten)]
    pub refine: RefineArgs,
    /// Reconstruct only shard I of N (1-based, e.g. `--shard 2/8`) of the sorted input images;
    /// the files are those of a full run.
    #[arg(long)]
    pub shard: Option<String>,
}

/// `reconstruct`: the VAE's reconstruction of each input (posterior means), refined with
/// `--refiner`.
pub fn reconstruct(args: &ReconstructArgs, rt: &Runtime) -> Result<()> {
    let io = &args.io;
    let model = load_model(&io.model, &rt.device)?;
    let refining = Refining::from_args(&args.refine, rt)?;
    let mut images = read_images(&io.images, &model)?;
    let total = images.len();
    let batches = shard_batches(total, args.shard.as_deref())?;
    let first = batches.first().map_or(total, |b| b.start);
    let last = batches.last().map_or(total, |b| b.end);
    images.truncate(last);
    let images = images.split_off(first.min(images.len()));
    prepare_out(&io.out)?;
    let mut start = first as u64;
    batched(&images, &model, "reconstruct", |batch, x| {
        let mut out = model.reconstruct(x)?;
        if let Some(r) = &refining {
            out = r.run_seeded(&out, args.refine.seed.wrapping_add(start))?;
        }
        start += batch.len() as u64;
        for (img, r) in batch.iter().zip(rows(&out)?) {
            save_image(&io.out.join(&img.name), &r, &model)?;
        }
        Ok(())
    })?;
    println!(
        "wrote {} of {total} reconstruction(s) to {}{}",
        images.len(),
        io.out.display(),
        Refining::suffix(refining.as_ref())
    );
    Ok(())
}

/// `swap` (paper Fig. 5): decode(style of A, position of B).
#[derive(Debug, clap::Args)]
pub struct SwapArgs {
    /// Trained model folder.
    #[arg(long)]
    pub model: PathBuf,
    /// Images giving the style z (a PNG or a folder; paired with --position in name order, or
    /// one image for all).
    #[arg(long)]
    pub style: PathBuf,
    /// Images giving the position θ (the object's place and shape).
    #[arg(long)]
    pub position: PathBuf,
    /// Output folder: `STYLE__POSITION.png` per pair and `swap.png` (style | position | swap,
    /// then the refined swap with --refiner).
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub refine: RefineArgs,
}

pub fn swap(args: &SwapArgs, rt: &Runtime) -> Result<()> {
    let model = load_model(&args.model, &rt.device)?;
    needs_position(&model, "swap")?;
    let refining = Refining::from_args(&args.refine, rt)?;
    let styles = read_images(&args.style, &model)?;
    let positions = read_images(&args.position, &model)?;
    let n = match (styles.len(), positions.len()) {
        (a, b) if a == b => a,
        (1, b) => b,
        (a, 1) => a,
        (a, b) => bail!(
            "{} style image(s) and {} position image(s): give the same number, or one of either",
            a,
            b
        ),
    };
    prepare_out(&args.out)?;
    let pick = |v: &[InputImage], i: usize| if v.len() == 1 { 0 } else { i };
    let (c, s) = (model.config().image_channels, model.config().image_size);
    let cols = if refining.is_some() { 4 } else { 3 };
    let mut tiles = Vec::new();
    let bar = crate::progress::bar(n as u64, "swap");
    for start in (0..n).step_by(BATCH) {
        let idx: Vec<usize> = (start..(start + BATCH).min(n)).collect();
        let a: Vec<&InputImage> = idx.iter().map(|&i| &styles[pick(&styles, i)]).collect();
        let b: Vec<&InputImage> = idx
            .iter()
            .map(|&i| &positions[pick(&positions, i)])
            .collect();
        let z = model.encode(&stack(&a, &model)?)?.mu_z;
        let theta = model
            .encode(&stack(&b, &model)?)?
            .theta
            .context("no position")?
            .0;
        let (vae_rows, out) = Refining::rows_refined(
            refining.as_ref(),
            &model.decode(&z, Some(&theta))?,
            args.refine.seed.wrapping_add(start as u64),
        )?;
        for (((sa, pb), img), v) in a.iter().zip(&b).zip(&out).zip(&vae_rows) {
            let name = format!("{}__{}.png", stem(&sa.name), stem(&pb.name));
            save_image(&args.out.join(name), img, &model)?;
            if tiles.len() < cols * SHEET_IMAGES {
                tiles.extend([tile(&sa.chw01, c, s), tile(&pb.chw01, c, s), tile(v, c, s)]);
                if refining.is_some() {
                    tiles.push(tile(img, c, s));
                }
            }
        }
        bar.inc(idx.len() as u64);
    }
    bar.finish_and_clear();
    let sheet = args.out.join("swap.png");
    segdiff_io::picture::save_png(
        &sheet,
        &viewable(segdiff_io::picture::grid(&tiles, cols), s),
    )
    .with_context(|| format!("writing {}", sheet.display()))?;
    println!(
        "wrote {n} swap(s) to {}{} (sheet: {})",
        args.out.display(),
        Refining::suffix(refining.as_ref()),
        sheet.display()
    );
    Ok(())
}

fn stem(name: &str) -> &str {
    name.rsplit_once('.').map_or(name, |(s, _)| s)
}

/// `edit` (paper Fig. 6): each image's warp composed with a rotation / scaling / translation
/// about the predicted object centre, then decoded with the image's own style.
#[derive(Debug, clap::Args)]
pub struct EditArgs {
    #[command(flatten)]
    pub io: ImagesArgs,
    /// Rotation in degrees about the object's centre; positive turns the object clockwise on
    /// screen (image y points down).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub rotate: f64,
    /// Object scale about its centre (0.7 shrinks it to 0.49 of its area).
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
    /// Translation `DX,DY` in normalised units (the image spans [−1, 1]; +x right, +y down).
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true, num_args = 1)]
    pub translate: Vec<f64>,
    #[command(flatten)]
    pub refine: RefineArgs,
}

pub fn edit(args: &EditArgs, rt: &Runtime) -> Result<()> {
    let translate = match args.translate.as_slice() {
        [] => [0.0, 0.0],
        [dx, dy] => [*dx, *dy],
        other => bail!("--translate takes DX,DY (two numbers), got {other:?}"),
    };
    let edit = PositionEdit {
        rotate_degrees: args.rotate,
        scale: args.scale,
        translate,
    };
    edit.validate().context("the edit")?;
    let io = &args.io;
    let model = load_model(&io.model, &rt.device)?;
    needs_position(&model, "edit")?;
    let refining = Refining::from_args(&args.refine, rt)?;
    let cols = if refining.is_some() { 3 } else { 2 };
    let mut start = 0u64;
    let images = read_images(&io.images, &model)?;
    prepare_out(&io.out)?;
    let masks_dir = io.out.join("masks");
    prepare_out(&masks_dir)?;
    let (c, s) = (model.config().image_channels, model.config().image_size);
    let mut tiles = Vec::new();
    batched(&images, &model, "edit", |batch, x| {
        let post = model.encode(x)?;
        let theta = &post.theta.as_ref().context("no position")?.0;
        let grids = model.edited_grids(theta, &edit)?;
        let (vae_rows, out) = Refining::rows_refined(
            refining.as_ref(),
            &model.decode_with(&post.mu_z, Some(&grids))?,
            args.refine.seed.wrapping_add(start),
        )?;
        start += batch.len() as u64;
        let masks = rows(&model.threshold(&model.warp_reference(&grids.image)?)?)?;
        let before = rows(&model.segment(theta)?)?;
        for ((((img, o), m), b), v) in batch
            .iter()
            .zip(&out)
            .zip(&masks)
            .zip(&before)
            .zip(&vae_rows)
        {
            save_image(&io.out.join(&img.name), o, &model)?;
            save_mask(&masks_dir.join(&img.name), m, s)?;
            if tiles.len() < cols * SHEET_IMAGES {
                let ids = |v: &[f32]| v.iter().map(|&p| u8::from(p >= 0.5)).collect::<Vec<u8>>();
                tiles.push(mask_tile(&img.chw01, c, s, &ids(b), [230, 70, 60]));
                tiles.push(mask_tile(v, c, s, &ids(m), [230, 70, 60]));
                if refining.is_some() {
                    tiles.push(mask_tile(o, c, s, &ids(m), [230, 70, 60]));
                }
            }
        }
        Ok(())
    })?;
    let sheet = io.out.join("edit.png");
    segdiff_io::picture::save_png(
        &sheet,
        &viewable(segdiff_io::picture::grid(&tiles, cols), s),
    )
    .with_context(|| format!("writing {}", sheet.display()))?;
    println!(
        "wrote {} edited image(s) to {}{} (rotate {}°, scale {}, translate {:?}); their masks in {}; sheet {}",
        images.len(),
        io.out.display(),
        Refining::suffix(refining.as_ref()),
        edit.rotate_degrees,
        edit.scale,
        edit.translate,
        masks_dir.display(),
        sheet.display()
    );
    Ok(())
}

/// `interpolate` (paper Fig. 9): an n×n grid between two images; rows interpolate the style z
/// with the position fixed, columns the position θ with the style fixed (A at the top left, B at
/// the bottom right).
#[derive(Debug, clap::Args)]
pub struct InterpolateArgs {
    /// Trained model folder.
    #[arg(long)]
    pub model: PathBuf,
    /// First image (a PNG).
    #[arg(long)]
    pub a: PathBuf,
    /// Second image (a PNG).
    #[arg(long)]
    pub b: PathBuf,
    /// Grid size n (n×n images).
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// Output PNG.
    #[arg(long)]
    pub out: PathBuf,
    /// Refine every image of the grid with this refiner.
    #[arg(long)]
    pub refiner: Option<PathBuf>,
    /// With --refiner: `em` (Euler–Maruyama), `dpm-sde` or `dpm` (DPM-Solver++(2M), stochastic
    /// or deterministic; see reconstruct --help).
    #[arg(long, default_value = "em", value_parser = flag::<RefinerSampler>())]
    pub sampler: RefinerSampler,
    /// With --refiner: sampler steps (default: 100 for em, 10 for dpm and dpm-sde).
    #[arg(long)]
    pub refiner_steps: Option<usize>,
    /// With --refiner: seed of the sampler's noise (row r uses seed + r, or the one sequence
    /// of --fixed-noise).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// With --refiner: one noise sequence (drawn from --seed) reused for every image of the
    /// grid, so that only z and θ change along it (paper App. F).
    #[arg(long)]
    pub fixed_noise: bool,
}

pub fn interpolate(args: &InterpolateArgs, rt: &Runtime) -> Result<()> {
    if args.steps < 2 {
        bail!("--steps must be at least 2, got {}", args.steps);
    }
    let model = load_model(&args.model, &rt.device)?;
    needs_position(&model, "interpolate")?;
    let refining = Refining::load(
        args.refiner.as_deref(),
        args.sampler,
        args.refiner_steps,
        rt,
    )?;
    if refining.is_none() && (args.fixed_noise || args.refiner_steps.is_some()) {
        bail!("--fixed-noise and --refiner-steps need --refiner");
    }
    let one = |p: &PathBuf| -> Result<InputImage> {
        let mut v = read_images(p, &model)?;
        if v.len() != 1 {
            bail!(
                "{}: give one PNG image, not a folder of {}",
                p.display(),
                v.len()
            );
        }
        Ok(v.remove(0))
    };
    let (a, b) = (one(&args.a)?, one(&args.b)?);
    let post = model.encode(&stack(&[&a, &b], &model)?)?;
    let theta = post.theta.context("no position")?.0;
    let n = args.steps;
    let lerp = |t: &Tensor, k: usize| -> Result<Tensor> {
        let f = k as f64 / (n - 1) as f64;
        Ok(((t.narrow(0, 0, 1)? * (1.0 - f))? + (t.narrow(0, 1, 1)? * f)?)?)
    };
    let (c, s) = (model.config().image_channels, model.config().image_size);
    let fixed: Vec<Tensor> = match (&refining, args.fixed_noise) {
        (Some(r), true) => {
            let mut rng = StdRng::seed_from_u64(args.seed);
            (0..=r.steps)
                .map(|_| {
                    segdiff_diffusion::random::randn(
                        &mut rng,
                        (1, c, s, s),
                        DType::F32,
                        model.device(),
                    )
                })
                .collect::<std::result::Result<_, _>>()?
        }
        _ => Vec::new(),
    };
    let bar = crate::progress::bar(n as u64, "interpolate");
    let mut tiles = Vec::with_capacity(n * n);
    for row in 0..n {
        let z = lerp(&post.mu_z, row)?;
        let zs = Tensor::cat(&vec![&z; n], 0)?;
        let thetas = Tensor::cat(
            &(0..n)
                .map(|col| lerp(&theta, col))
                .collect::<Result<Vec<_>>>()?,
            0,
        )?;
        let mut out = model.decode(&zs, Some(&thetas))?;
        if let Some(r) = &refining {
            out = if args.fixed_noise {
                r.run(&out, EmNoise::Fixed(&fixed))?
            } else {
                r.run_seeded(&out, args.seed.wrapping_add(row as u64))?
            };
        }
        for img in rows(&out)? {
            tiles.push(tile(&img, c, s));
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        prepare_out(dir)?;
    }
    segdiff_io::picture::save_png(
        &args.out,
        &viewable(segdiff_io::picture::grid(&tiles, n), s),
    )
    .with_context(|| format!("writing {}", args.out.display()))?;
    println!(
        "wrote {}: {n}×{n} {}images, rows: style from {} to {}, columns: position from {} to {}",
        args.out.display(),
        refining
            .as_ref()
            .map(|r| format!("{} ", r.describe()))
            .unwrap_or_default(),
        a.name,
        b.name,
        a.name,
        b.name
    );
    Ok(())
}
