//! One DICOM file, as `segdiff prepare --image FILE.dcm` reads it: the header scan, then the
//! pixel data with every decoder (uncompressed, deflate, RLE, JPEG, JPEG-LS, JPEG 2000), grey
//! and colour-to-grey; and as a DICOM SEG label object rasterised onto a small grid.
#![no_main]
use libfuzzer_sys::fuzz_target;
use segdiff_data::{read_dicom, read_dicom_pixels_with, read_seg_labels, DicomReadOptions};

#[path = "common.rs"]
mod common;

const IDENTITY: [[f64; 4]; 4] = [
    [1.0, 0.0, 0.0, 0.0],
    [0.0, 1.0, 0.0, 0.0],
    [0.0, 0.0, 1.0, 0.0],
    [0.0, 0.0, 0.0, 1.0],
];

fuzz_target!(|data: &[u8]| {
    let path = common::scratch_file("input.dcm", data);
    let _ = read_dicom(&path);
    let _ = read_dicom_pixels_with(&path, &DicomReadOptions { to_grey: true });
    let _ = read_seg_labels(&path, &path, [8, 8, 4], &IDENTITY);
});
