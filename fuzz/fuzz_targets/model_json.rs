//! The JSON files of a model folder: `unet/config.json`, `scheduler/scheduler_config.json` and
//! `segdiff.json`, parsed and validated as loading a model does; and a whole model folder with
//! that `segdiff.json` and config (weights absent), loaded.
#![no_main]
use candle_core::{DType, Device};
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(c) = segdiff_unet::UNet2DConfig::from_json_str(text) {
        let _ = c.validate();
    }
    let _ = segdiff_diffusion::SchedulerConfig::from_json_str(text);
    let _ = serde_json::from_str::<segdiff_diffusion::ConditioningMeta>(text);
    let dir = common::scratch("model");
    std::fs::create_dir_all(dir.join("unet")).expect("model folder");
    std::fs::write(dir.join("segdiff.json"), text).expect("write");
    std::fs::write(dir.join("unet/config.json"), text).expect("write");
    let _ = segdiff_diffusion::load_model_dir(&dir, DType::F32, &Device::Cpu);
});
