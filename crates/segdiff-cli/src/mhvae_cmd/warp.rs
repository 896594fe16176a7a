//! `segdiff mhvae warp`: the warp ops on tensors from a safetensors file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use clap::Args;
use segdiff_mhvae::warp::{affine_grid, grid_sample, TpsWarp};

#[derive(Debug, Args)]
pub struct WarpArgs {
    /// safetensors file with `image` and either `affine` or `tps_target` + `tps_source`.
    #[arg(long)]
    pub input: PathBuf,
    /// safetensors file to write (`grid`, `warped`; float32), replaced atomically.
    #[arg(long)]
    pub output: PathBuf,
    /// torch's `align_corners=True` (pixel centres of the corners at ±1) for the lattice and the
    /// sampling; the default is torch's `False` (image edges at ±1).
    #[arg(long)]
    pub align_corners: bool,
}

pub fn run(args: &WarpArgs) -> Result<()> {
    let tensors = read(&args.input)?;
    let (grid, warped, how) = warp(&tensors, args.align_corners)
        .with_context(|| format!("warping with {}", args.input.display()))?;
    let out = HashMap::from([
        ("grid".to_string(), grid),
        ("warped".to_string(), warped.clone()),
    ]);
    segdiff_unet::write_safetensors(&args.output, &out, None)
        .with_context(|| format!("writing {}", args.output.display()))?;
    let d = warped.dims();
    println!(
        "warped {} image(s) of {}x{}x{} with {how} -> {}",
        d[0],
        d[1],
        d[2],
        d[3],
        args.output.display()
    );
    Ok(())
}

fn read(path: &Path) -> Result<HashMap<String, Tensor>> {
    let loaded = segdiff_io::catch_panic(|| candle_core::safetensors::load(path, &Device::Cpu))
        .map_err(|p| anyhow::anyhow!("reading {}: the reader panicked: {p}", path.display()))?;
    loaded.with_context(|| format!("reading {} (a safetensors file)", path.display()))
}

fn float(tensors: &HashMap<String, Tensor>, name: &str) -> Result<Option<Tensor>> {
    let Some(t) = tensors.get(name) else {
        return Ok(None);
    };
    if !t.dtype().is_float() {
        bail!(
            "`{name}` has dtype {:?}; a float tensor is needed",
            t.dtype()
        );
    }
    Ok(Some(t.to_dtype(DType::F32)?))
}

/// (grid, warped, a description of the warp).
fn warp(
    tensors: &HashMap<String, Tensor>,
    align_corners: bool,
) -> Result<(Tensor, Tensor, String)> {
    let image = float(tensors, "image")?.context("no `image` tensor (N,C,H,W)")?;
    let &[n, _, h, w] = image.dims() else {
        bail!("`image` has shape {:?}; (N,C,H,W) is needed", image.dims());
    };
    let affine = float(tensors, "affine")?;
    let target = float(tensors, "tps_target")?;
    let source = float(tensors, "tps_source")?;
    let (grid, how) = match (affine, target, source) {
        (Some(theta), None, None) => {
            if theta.dims() != [n, 2, 3] {
                bail!(
                    "`affine` has shape {:?}; ({n},2,3) is needed for {n} image(s)",
                    theta.dims()
                );
            }
            (
                affine_grid(&theta, h, w, align_corners)?,
                "an affine map".to_string(),
            )
        }
        (None, Some(target), Some(source)) => {
            let &[k, 2] = target.dims() else {
                bail!(
                    "`tps_target` has shape {:?}; (K,2) is needed",
                    target.dims()
                );
            };
            if source.dims() != [n, k, 2] {
                bail!(
                    "`tps_source` has shape {:?}; ({n},{k},2) is needed for {n} image(s) and {k} targets",
                    source.dims()
                );
            }
            let points: Vec<[f64; 2]> = target
                .to_dtype(DType::F64)?
                .to_vec2::<f64>()?
                .into_iter()
                .map(|p| [p[0], p[1]])
                .collect();
            let tps = TpsWarp::new(&points, h, w, align_corners, &Device::Cpu)?;
            (
                tps.grid(&source)?,
                format!("a thin-plate spline of {k} control points"),
            )
        }
        (Some(_), _, _) => bail!("give either `affine` or `tps_target` + `tps_source`, not both"),
        (None, Some(_), None) | (None, None, Some(_)) => {
            bail!("a thin-plate spline needs both `tps_target` (K,2) and `tps_source` (N,K,2)")
        }
        (None, None, None) => {
            bail!("no warp: give `affine` (N,2,3) or `tps_target` (K,2) + `tps_source` (N,K,2)")
        }
    };
    let warped = grid_sample(&image, &grid, align_corners)?;
    Ok((grid, warped, how))
}
