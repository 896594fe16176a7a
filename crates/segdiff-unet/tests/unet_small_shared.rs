//! Parity of the `small` config (28 MB of weights, too large to commit): read from
//! `shared/fixtures`, run by `cargo xtask parity` (which passes `--ignored`).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use segdiff_unet::{model_from_tensors, UNet2DConfig};

fn shared_fixtures() -> PathBuf {
    let dir = std::env::var_os("SEGDIFF_SHARED_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures"));
    assert!(
        dir.join("unet_small_weights.safetensors").is_file(),
        "shared fixtures not found at {} (set SEGDIFF_SHARED_FIXTURES)",
        dir.display()
    );
    dir
}

#[test]
#[ignore = "needs ../shared/fixtures; run by cargo xtask parity"]
fn small_forward_matches_diffusers_all_cases_and_blocks() {
    let dir = shared_fixtures();
    let cfg =
        UNet2DConfig::from_file(&dir.join("unet_small_diffusers_config/config.json")).unwrap();
    let tensors =
        candle_core::safetensors::load(dir.join("unet_small_weights.safetensors"), &Device::Cpu)
            .unwrap();
    let (model, _) = model_from_tensors(&cfg, tensors, DType::F32, &Device::Cpu, &dir).unwrap();
    assert_eq!(segdiff_unet::parameter_count(&cfg).unwrap(), 7_125_409);
    assert_eq!(model.flops(32, 32), 486_310_400);
    let io = candle_core::safetensors::load(dir.join("unet_small_io.safetensors"), &Device::Cpu)
        .unwrap();
    let max_err = |a: &Tensor, b: &Tensor| -> f32 {
        assert_eq!(a.dims(), b.dims());
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    };
    for case in ["a", "b", "c"] {
        let t = &io[&format!("{case}.t")];
        let t = if case == "c" {
            t.squeeze(0).unwrap()
        } else {
            t.clone()
        };
        let out = model.forward(&io[&format!("{case}.x")], &t).unwrap();
        let err = max_err(&out, &io[&format!("{case}.out")]);
        println!("small case {case}: max abs err {err:.3e} (atol 1e-4)");
        assert!(err <= 1e-4, "case {case}: {err}");
    }
    let reference = candle_core::safetensors::load(
        dir.join("unet_small_intermediates_a.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    let mut trace = segdiff_unet::Trace::on();
    model
        .forward_traced(&io["a.x"], &io["a.t"], &mut trace)
        .unwrap();
    let got: std::collections::HashMap<_, _> = trace.into_records().into_iter().collect();
    let mut worst = 0f32;
    for (name, want) in &reference {
        let err = max_err(&got[name], want);
        worst = worst.max(err);
        assert!(err <= 1e-4, "{name}: {err}");
    }
    println!(
        "small: {} intermediates, worst {worst:.3e}",
        reference.len()
    );
}
