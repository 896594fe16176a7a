//! Writes the four-class brain tissue label volume that `segdiff prepare --tissue-maps` builds
//! (see `segdiff_data::tissue`) as a NIfTI on the T1's grid, e.g. as input to
//! `segdiff sample-volume`:
//!
//! `cargo run --release -p segdiff-data --example tissue_labels -- T1 GM WM OUT.nii.gz`

use std::path::PathBuf;

use segdiff_data::{
    brain_tissue_labels, read_nifti, read_nifti_header, write_nifti_like, NiftiVoxels,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [t1, gm, wm, out] = args.as_slice() else {
        return Err("usage: tissue_labels T1 GM WM OUT.nii.gz".into());
    };
    let labels = brain_tissue_labels(
        &read_nifti(t1, 0)?,
        &read_nifti(gm, 0)?,
        &read_nifti(wm, 0)?,
    )?;
    let voxels = NiftiVoxels::I16(labels.data.mapv(i16::from));
    write_nifti_like(
        out,
        &read_nifti_header(t1)?,
        &voxels,
        "segdiff tissue classes 0-3",
    )?;
    println!("wrote {} ({:?} voxels)", out.display(), labels.shape());
    Ok(())
}
