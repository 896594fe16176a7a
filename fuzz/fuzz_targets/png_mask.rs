//! A PNG image or mask as the dataset reader, `segdiff data check` and the CLI read it: decoded
//! (any bit depth, palette, RGB) and turned grey.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let path = common::scratch_file("input.png", data);
    if let Ok(img) = segdiff_io::decode_image(data, &path) {
        // Only small images: the grey conversion allocates width × height.
        if u64::from(img.width()) * u64::from(img.height()) <= 1 << 22 {
            let _ = segdiff_io::grey8(&img);
            let _ = segdiff_io::read_grey_samples(&path);
        }
    }
});
