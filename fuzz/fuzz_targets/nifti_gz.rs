//! A `.nii.gz` file: the input is gzip-compressed by the harness (so the fuzzer explores the
//! NIfTI structure inside the stream) except when it starts with `RAW`, then written as it is
//! (damaged gzip streams).
#![no_main]
use std::io::Write;

use flate2::write::GzEncoder;
use flate2::Compression;
use libfuzzer_sys::fuzz_target;
use segdiff_data::volume_formats::{read_volume_file, read_volume_geometry};

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let bytes = match data.strip_prefix(b"RAW") {
        Some(raw) => raw.to_vec(),
        None => {
            let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
            enc.write_all(data).expect("gzip in memory");
            enc.finish().expect("gzip in memory")
        }
    };
    let path = common::scratch_file("input.nii.gz", &bytes);
    let _ = read_volume_geometry(&path, 0);
    let _ = read_volume_file(&path, 0);
});
