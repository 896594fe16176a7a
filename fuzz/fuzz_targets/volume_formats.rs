//! The other volume formats: the first byte picks one of MetaImage (`.mha`, `.mhd` + `.raw`),
//! NRRD (`.nrrd`, `.nhdr` + `.raw`) and Analyze 7.5 / NIfTI pairs (`.hdr` + `.img`); for the
//! two-file forms the rest is split at `@@@@` into header and data file.
#![no_main]
use libfuzzer_sys::fuzz_target;
use segdiff_data::volume_formats::{read_volume_file, read_volume_geometry};

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    let parts = common::split_parts(rest, b"@@@@", 2);
    let (header, payload) = (parts[0], parts.get(1).copied().unwrap_or(&[]));
    let path = match kind % 5 {
        0 => common::scratch_file("input.mha", rest),
        1 => common::scratch_file("input.nrrd", rest),
        2 => {
            common::scratch_file("input.raw", payload);
            common::scratch_file("input.mhd", header)
        }
        3 => {
            common::scratch_file("input.raw", payload);
            common::scratch_file("input.nhdr", header)
        }
        _ => {
            common::scratch_file("input.img", payload);
            common::scratch_file("input.hdr", header)
        }
    };
    let _ = read_volume_geometry(&path, 0);
    let _ = read_volume_file(&path, 0);
});
