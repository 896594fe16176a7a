//! `segdiff model inspect|forward` end to end, on the tiny diffusers fixture.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{Device, Tensor};

fn unet_fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../segdiff-unet/tests/fixtures")
        .join(name)
}

fn tiny_model_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let unet = dir.path().join("unet");
    std::fs::create_dir_all(&unet).unwrap();
    std::fs::copy(
        unet_fixture("unet_tiny_config.json"),
        unet.join("config.json"),
    )
    .unwrap();
    std::fs::copy(
        unet_fixture("unet_tiny_weights.safetensors"),
        unet.join("diffusion_pytorch_model.safetensors"),
    )
    .unwrap();
    dir
}

#[test]
fn inspect_reports_parameters_and_flops() {
    let dir = tiny_model_dir();
    let out = segdiff(&["model", "inspect", dir.path().to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("450601"), "{text}");
    assert!(text.contains("0.03 GFLOP"), "{text}");
    assert!(text.contains("AttnDownBlock2D"), "{text}");
}

#[test]
fn forward_writes_eps_matching_diffusers() {
    let dir = tiny_model_dir();
    let io = candle_core::safetensors::load(unet_fixture("unet_tiny_io.safetensors"), &Device::Cpu)
        .unwrap();
    let input = dir.path().join("in.safetensors");
    let output = dir.path().join("out.safetensors");
    let tensors = std::collections::HashMap::from([
        ("x".to_string(), io["b.x"].clone()),
        ("timestep".to_string(), io["b.t"].clone()),
    ]);
    candle_core::safetensors::save(&tensors, &input).unwrap();
    let out = segdiff(&[
        "model",
        "forward",
        "--model",
        dir.path().to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let eps = candle_core::safetensors::load(&output, &Device::Cpu).unwrap();
    let err = (&eps["eps"] - &io["b.out"])
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(err <= 1e-4, "max abs err {err}");
}

#[test]
fn forward_errors_name_the_problem_and_write_nothing() {
    let dir = tiny_model_dir();
    let input = dir.path().join("in.safetensors");
    let output = dir.path().join("out.safetensors");
    let x = Tensor::zeros((1, 3, 32, 32), candle_core::DType::F32, &Device::Cpu).unwrap();
    let t = Tensor::new(5i64, &Device::Cpu).unwrap();
    let tensors = std::collections::HashMap::from([("x".to_string(), x), ("t".to_string(), t)]);
    candle_core::safetensors::save(&tensors, &input).unwrap();
    let args = |m: &str| {
        vec![
            "model".to_string(),
            "forward".into(),
            "--model".into(),
            m.to_string(),
            "--input".into(),
            input.to_str().unwrap().into(),
            "--output".into(),
            output.to_str().unwrap().into(),
        ]
    };
    let run = |a: Vec<String>| {
        Command::new(env!("CARGO_BIN_EXE_segdiff"))
            .args(a)
            .output()
            .unwrap()
    };
    let out = run(args(dir.path().to_str().unwrap()));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("timestep"));
    let out = run(args("/nonexistent/model"));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/model"));
    assert!(!output.exists());
    // A wrong flag is a usage error (exit code 2).
    assert_eq!(
        segdiff(&["model", "inspect", "--bogus"]).status.code(),
        Some(2)
    );
}

#[test]
fn convert_lays_out_an_official_checkpoint_that_samples() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ddim-brain-32-segguided-ablated");
    let st = unet_fixture("unet_tiny_weights.safetensors");
    let cfg = unet_fixture("unet_tiny_config.json");
    let o = segdiff(&[
        "model",
        "convert",
        "--safetensors",
        st.to_str().unwrap(),
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--num-classes",
        "4",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("segdiff.json")).unwrap()).unwrap();
    assert_eq!(meta["mask_encoding"], "single");
    assert_eq!(meta["num_classes"], 4);
    let sched: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("scheduler/scheduler_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(sched["_class_name"], "DDIMScheduler");
    // The converted weights are the official ones, bit for bit.
    let a = candle_core::safetensors::load(&st, &Device::Cpu).unwrap();
    let b = candle_core::safetensors::load(
        out.join("unet/diffusion_pytorch_model.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    assert_eq!(a.len(), b.len());
    for (k, v) in &a {
        let d = (v - &b[k])
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_eq!(d, 0.0, "{k}");
    }
    // It samples from a mask, and rejects class ids beyond the recorded count.
    let mask = dir.path().join("m.png");
    image::GrayImage::from_fn(32, 32, |x, _| image::Luma([(x / 8) as u8]))
        .save(&mask)
        .unwrap();
    let o = segdiff(&[
        "sample",
        "--model",
        out.to_str().unwrap(),
        "--masks",
        mask.to_str().unwrap(),
        "--out",
        dir.path().join("s").to_str().unwrap(),
        "--steps",
        "2",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(dir.path().join("s/condon_m.png").is_file());
    // A config that does not fit the weights is an error naming both files.
    let bad_cfg = dir.path().join("bad.json");
    std::fs::write(
        &bad_cfg,
        std::fs::read_to_string(&cfg)
            .unwrap()
            .replace("\"in_channels\": 2", "\"in_channels\": 3"),
    )
    .unwrap();
    let o = segdiff(&[
        "model",
        "convert",
        "--safetensors",
        st.to_str().unwrap(),
        "--config",
        bad_cfg.to_str().unwrap(),
        "--out",
        dir.path().join("bad").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("bad.json") && err.contains("conv_in.weight"),
        "{err}"
    );
}

#[test]
fn a_malformed_config_names_the_file_and_its_cause_once() {
    let dir = tiny_model_dir();
    let config = dir.path().join("unet/config.json");
    std::fs::write(&config, r#"{"a":"#).unwrap();
    let out = segdiff(&["model", "inspect", dir.path().to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&config.display().to_string()), "{err}");
    assert_eq!(err.matches("EOF while parsing").count(), 1, "{err}");
}
