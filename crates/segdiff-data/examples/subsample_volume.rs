//! Writes every `STEP`-th voxel along each axis of a NIfTI volume as a new NIfTI on the coarser
//! grid (nearest: no interpolation, so class ids stay class ids; the affine's columns are scaled
//! by `STEP`, voxel 0 keeps its position). With `--percentile LO,HI` the values are first mapped
//! to 8-bit grey levels exactly as `segdiff prepare --intensity percentile:LO,HI` maps the whole
//! full-resolution volume, so the coarse volume holds the grey levels the model was trained on.
//! Used for the demo's 2 mm MNI volumes (`assets/mni-demo/build.sh`):
//!
//! `cargo run --release -p segdiff-data --example subsample_volume -- IN OUT.nii.gz STEP [--percentile LO,HI]`

use std::path::PathBuf;

use ndarray::s;
use segdiff_data::intensity::to_u8;
use segdiff_data::{read_nifti, read_nifti_header, write_nifti_like, Intensity, NiftiVoxels};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: subsample_volume IN OUT.nii.gz STEP [--percentile LO,HI]";
    let (input, out, step, percentile) = match args.as_slice() {
        [i, o, st] => (i, o, st, None),
        [i, o, st, flag, p] if flag == "--percentile" => (i, o, st, Some(p)),
        _ => return Err(usage.into()),
    };
    let step: usize = step
        .parse()
        .ok()
        .filter(|&v| v >= 1)
        .ok_or_else(|| format!("STEP `{step}`: expected an integer ≥ 1"))?;
    let (input, out) = (PathBuf::from(input), PathBuf::from(out));
    let vol = read_nifti(&input, 0)?.volume;
    let coarse = vol.data.slice(s![..;step, ..;step, ..;step]);
    let (voxels, what) = match percentile {
        Some(p) => {
            let intensity = Intensity::parse(&format!("percentile:{p}"))?;
            let all: Vec<f32> = vol.data.iter().copied().collect();
            let (lo, hi) = intensity.range(&all);
            let grey = coarse.mapv(|v| i16::from(to_u8(v, lo, hi)));
            (grey, format!("grey 0-255 (p{p} = {lo:.3},{hi:.3})"))
        }
        None => (coarse.mapv(|v| v.round() as i16), "values".to_string()),
    };
    // The source header with the grid scaled: qform (its pixdim) and sform (its rows) both keep
    // voxel 0 where it was, and codes, units and orientation stay the source's.
    let mut header = read_nifti_header(&input)?;
    let shape = voxels.shape();
    header.dim = [3, 1, 1, 1, 1, 1, 1, 1];
    for (d, &n) in shape.iter().enumerate() {
        header.dim[d + 1] = u16::try_from(n)?;
        header.pixdim[d + 1] *= step as f32;
        header.srow_x[d] *= step as f32;
        header.srow_y[d] *= step as f32;
        header.srow_z[d] *= step as f32;
    }
    write_nifti_like(
        &out,
        &header,
        &NiftiVoxels::I16(voxels.to_owned()),
        &format!(
            "segdiff: {}, subsampled by {step}",
            input.file_name().unwrap_or_default().to_string_lossy()
        ),
    )?;
    println!(
        "wrote {} ({:?} voxels of {:?} mm; {what})",
        out.display(),
        shape,
        &header.pixdim[1..4]
    );
    Ok(())
}
