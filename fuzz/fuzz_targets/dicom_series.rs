//! A DICOM series folder of up to four files (the input split at `@@@@`): grouping by series,
//! frame ordering by position, stacking, as `segdiff prepare --image FOLDER` reads it.
#![no_main]
use libfuzzer_sys::fuzz_target;
use segdiff_data::{read_dicom, scan_dicom};

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let dir = common::scratch("series");
    std::fs::create_dir_all(&dir).expect("series folder");
    for (i, part) in common::split_parts(data, b"@@@@", 4).iter().enumerate() {
        std::fs::write(dir.join(format!("{i}.dcm")), part).expect("write part");
    }
    let _ = scan_dicom(&dir);
    let _ = read_dicom(&dir);
});
