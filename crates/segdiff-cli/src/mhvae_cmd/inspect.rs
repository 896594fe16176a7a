//! `segdiff mhvae inspect`: what the position head predicts for each image — θ, the affine matrix
//! or the TPS source points, the object's centre and area — and a picture of the deformation
//! (paper Fig. 2): iso-lines of the warp over the image, the warped reference's outline and, for
//! a TPS, the control points.

use std::path::PathBuf;

use anyhow::{Context, Result};
use image::{Rgb, RgbImage};
use segdiff_mhvae::edit::{edited_grid, mask_centroids};
use segdiff_mhvae::sheet::tile;
use segdiff_mhvae::{PositionEdit, WarpKind};
use serde::Serialize;

use super::images::{load_model, prepare_out, read_images, rows, stack, BATCH};
use crate::runtime::Runtime;

/// Pictures are drawn this many times larger than the image.
const ZOOM: usize = 4;

#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// Trained model folder.
    #[arg(long)]
    pub model: PathBuf,
    /// A PNG image or a folder of them.
    #[arg(long)]
    pub images: PathBuf,
    /// Output folder: `NAME` pictures and `inspect.json`.
    #[arg(long)]
    pub out: PathBuf,
    /// Print the JSON report on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct Entry {
    name: String,
    /// Posterior mean of θ.
    theta: Vec<f32>,
    /// The 2×3 matrix mapping output to source points (affine warps).
    affine: Option<[[f32; 3]; 2]>,
    /// TPS source points (x, y) per control point, and the fixed targets.
    tps_sources: Option<Vec<[f32; 2]>>,
    tps_targets: Option<Vec<[f64; 2]>>,
    /// Centroid of the predicted mask (normalised, x right, y down).
    centre: [f64; 2],
    /// Pixels of the predicted mask.
    area_pixels: usize,
}

pub fn run(args: &InspectArgs, rt: &Runtime) -> Result<()> {
    let model = load_model(&args.model, &rt.device)?;
    let Some(position) = model.position() else {
        anyhow::bail!(
            "inspect needs a model with a position head; this one was trained with --warp none"
        );
    };
    let images = read_images(&args.images, &model)?;
    prepare_out(&args.out)?;
    let cfg = model.config();
    let (c, s, ac) = (cfg.image_channels, cfg.image_size, cfg.align_corners);
    let big = s * ZOOM;
    let mut entries = Vec::new();
    for chunk in images.chunks(BATCH) {
        let refs: Vec<_> = chunk.iter().collect();
        let post = model.encode(&stack(&refs, &model)?)?;
        let theta = post.theta.context("no position")?.0;
        let soft = model.segment_soft(&theta)?;
        let centres = mask_centroids(&soft, ac)?;
        let masks = rows(&model.threshold(&soft)?)?;
        let params = rows(&position.warp_parameters(&theta)?)?;
        let grid = rows(&edited_grid(
            position,
            &theta,
            big,
            ac,
            &PositionEdit::default(),
            &centres,
        )?)?;
        for (i, img) in chunk.iter().enumerate() {
            let t = rows(&theta.narrow(0, i, 1)?)?.remove(0);
            let p = &params[i];
            let (affine, tps_sources, tps_targets) = match position.kind() {
                WarpKind::Affine => (Some([[p[0], p[1], p[2]], [p[3], p[4], p[5]]]), None, None),
                _ => (
                    None,
                    Some(p.chunks(2).map(|q| [q[0], q[1]]).collect()),
                    position.tps().map(|t| t.targets().to_vec()),
                ),
            };
            let picture = draw(
                &tile(&img.chw01, c, s),
                &grid[i],
                &masks[i],
                s,
                tps_targets.as_deref(),
                ac,
            );
            let path = args.out.join(&img.name);
            segdiff_io::picture::save_png(&path, &picture)
                .with_context(|| format!("writing {}", path.display()))?;
            entries.push(Entry {
                name: img.name.clone(),
                theta: t,
                affine,
                tps_sources,
                tps_targets,
                centre: centres[i],
                area_pixels: masks[i].iter().filter(|&&v| v >= 0.5).count(),
            });
        }
    }
    let json = serde_json::to_string_pretty(&entries)?;
    let report = args.out.join("inspect.json");
    segdiff_io::write_bytes_atomic(&report, json.as_bytes())
        .with_context(|| format!("writing {}", report.display()))?;
    if args.json {
        println!("{json}");
    } else {
        println!(
            "{:<24} {:>16} {:>8}  warp",
            "image", "centre (x, y)", "area px"
        );
        for e in &entries {
            let warp = match &e.affine {
                Some(a) => format!(
                    "A = [{:.3} {:.3} {:.3}; {:.3} {:.3} {:.3}]",
                    a[0][0], a[0][1], a[0][2], a[1][0], a[1][1], a[1][2]
                ),
                None => format!(
                    "TPS, {} control points",
                    e.tps_sources.as_ref().map_or(0, Vec::len)
                ),
            };
            println!(
                "{:<24} ({:>6.3}, {:>6.3}) {:>8}  {warp}",
                e.name, e.centre[0], e.centre[1], e.area_pixels
            );
        }
        println!("pictures and inspect.json in {}", args.out.display());
    }
    Ok(())
}

/// The image zoomed, with iso-lines of the warp's source coordinates every 0.25 (cyan), the
/// outline of the warped reference (red) and the TPS target control points (yellow).
fn draw(
    image: &RgbImage,
    grid: &[f32],
    mask: &[f32],
    s: usize,
    targets: Option<&[[f64; 2]]>,
    align_corners: bool,
) -> RgbImage {
    let big = s * ZOOM;
    let mut out = image::imageops::resize(
        image,
        big as u32,
        big as u32,
        image::imageops::FilterType::Nearest,
    );
    let cell = |v: f32| (v * 4.0).floor() as i64;
    let at = |x: usize, y: usize, k: usize| grid[(y * big + x) * 2 + k];
    for y in 0..big {
        for x in 0..big {
            let line = (x + 1 < big
                && (cell(at(x, y, 0)) != cell(at(x + 1, y, 0))
                    || cell(at(x, y, 1)) != cell(at(x + 1, y, 1))))
                || (y + 1 < big
                    && (cell(at(x, y, 0)) != cell(at(x, y + 1, 0))
                        || cell(at(x, y, 1)) != cell(at(x, y + 1, 1))));
            if line {
                out.put_pixel(x as u32, y as u32, Rgb([60, 200, 230]));
            }
        }
    }
    let inside = |x: usize, y: usize| mask[(y / ZOOM) * s + x / ZOOM] >= 0.5;
    for y in 0..big {
        for x in 0..big {
            let edge = inside(x, y)
                && ((x == 0 || !inside(x - 1, y))
                    || (x + 1 == big || !inside(x + 1, y))
                    || (y == 0 || !inside(x, y - 1))
                    || (y + 1 == big || !inside(x, y + 1)));
            if edge {
                out.put_pixel(x as u32, y as u32, Rgb([230, 60, 50]));
            }
        }
    }
    for p in targets.unwrap_or(&[]) {
        // Normalised → zoomed pixel (the inverse of the lattice's unnormalisation).
        let to_px = |v: f64| {
            let px = if align_corners {
                (v + 1.0) / 2.0 * (s as f64 - 1.0)
            } else {
                ((v + 1.0) * s as f64 - 1.0) / 2.0
            };
            ((px + 0.5) * ZOOM as f64) as i64
        };
        let (cx, cy) = (to_px(p[0]), to_px(p[1]));
        for dy in -2..=2 {
            for dx in -2..=2 {
                let (x, y) = (cx + dx, cy + dy);
                if x >= 0 && y >= 0 && (x as usize) < big && (y as usize) < big {
                    out.put_pixel(x as u32, y as u32, Rgb([250, 220, 40]));
                }
            }
        }
    }
    out
}
