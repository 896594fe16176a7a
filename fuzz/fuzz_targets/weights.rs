//! A weight file: safetensors (the first byte even) or a PyTorch pickle `.bin` (odd), read as
//! loading a UNet's weights does.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    let name = if kind % 2 == 0 {
        "weights.safetensors"
    } else {
        "weights.bin"
    };
    let path = common::scratch_file(name, rest);
    let _ = segdiff_unet::read_weight_file(&path);
});
