//! A `.nii` file (NIfTI-1 or NIfTI-2, any datatype, scaling, qform/sform, 4-D volume index) as
//! every command that reads volumes opens it: geometry first, then the voxels.
#![no_main]
use libfuzzer_sys::fuzz_target;
use segdiff_data::volume_formats::{read_volume_file, read_volume_geometry};

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let path = common::scratch_file("input.nii", data);
    let _ = read_volume_geometry(&path, 0);
    let _ = read_volume_file(&path, 0);
    let _ = read_volume_file(&path, 1);
});
