//! Forward parity of the tiny config against diffusers 0.42 (fixtures copied from
//! `shared/fixtures`, see `fixtures/README.md`), and the structural facts of the paper config.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use segdiff_unet::{
    expected_parameters, load_unet, model_from_tensors, parameter_count, Trace, UNet2DConfig,
};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn tiny_model() -> segdiff_unet::UNet2DModel {
    let cfg = UNet2DConfig::from_file(&fixture("unet_tiny_config.json")).unwrap();
    let tensors =
        candle_core::safetensors::load(fixture("unet_tiny_weights.safetensors"), &Device::Cpu)
            .unwrap();
    let (model, _) =
        model_from_tensors(&cfg, tensors, DType::F32, &Device::Cpu, Path::new("tiny")).unwrap();
    model
}

/// Tolerance from fixtures/README.md: one forward, atol 1e-4.
const ATOL: f32 = 1e-4;

#[test]
fn tiny_forward_matches_diffusers_all_cases() {
    let model = tiny_model();
    let io =
        candle_core::safetensors::load(fixture("unet_tiny_io.safetensors"), &Device::Cpu).unwrap();
    for case in ["a", "b", "c"] {
        let x = &io[&format!("{case}.x")];
        let t = &io[&format!("{case}.t")];
        // Case c is diffusers' 0-d float timestep (stored as a 1-element vector): feed it as a scalar.
        let t = if case == "c" {
            t.squeeze(0).unwrap()
        } else {
            t.clone()
        };
        let out = model.forward(x, &t).unwrap();
        let err = max_abs_diff(&out, &io[&format!("{case}.out")]);
        println!("tiny case {case}: max abs err {err:.3e} (atol {ATOL:.0e})");
        assert!(err <= ATOL, "case {case}: max abs err {err}");
    }
}

#[test]
fn tiny_every_block_intermediate_matches() {
    let model = tiny_model();
    let io =
        candle_core::safetensors::load(fixture("unet_tiny_io.safetensors"), &Device::Cpu).unwrap();
    let reference = candle_core::safetensors::load(
        fixture("unet_tiny_intermediates_a.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    let mut trace = Trace::on();
    model
        .forward_traced(&io["a.x"], &io["a.t"], &mut trace)
        .unwrap();
    let records: HashMap<String, Tensor> = trace.into_records().into_iter().collect();
    let mut worst = 0f32;
    for (name, want) in &reference {
        let got = records
            .get(name)
            .unwrap_or_else(|| panic!("no intermediate named {name} recorded"));
        let err = max_abs_diff(got, want);
        worst = worst.max(err);
        assert!(err <= ATOL, "{name}: max abs err {err}");
    }
    println!(
        "{} intermediates, worst max abs err {worst:.3e}",
        reference.len()
    );
    assert_eq!(
        reference.len(),
        67,
        "the fixture has one entry per block output"
    );
}

#[test]
fn tiny_loads_from_a_model_directory_and_counts_flops() {
    let dir = tempfile::tempdir().unwrap();
    let unet = dir.path().join("unet");
    std::fs::create_dir_all(&unet).unwrap();
    std::fs::copy(fixture("unet_tiny_config.json"), unet.join("config.json")).unwrap();
    std::fs::copy(
        fixture("unet_tiny_weights.safetensors"),
        unet.join("diffusion_pytorch_model.safetensors"),
    )
    .unwrap();
    let loaded = load_unet(dir.path(), DType::F32, &Device::Cpu).unwrap();
    assert_eq!(loaded.unet_dir, unet);
    assert_eq!(parameter_count(&loaded.config).unwrap(), 450_601);
    // torch.utils.flop_counter total of the fixture (unet_tiny_meta.json).
    assert_eq!(loaded.model.flops(32, 32), 30_733_952);
    // The `unet` folder itself is accepted too.
    let again = load_unet(&unet, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(again.weights_path, loaded.weights_path);
}

#[test]
fn paper_config_has_the_papers_parameters_names_and_flops() {
    let cfg = UNet2DConfig::from_file(&fixture("unet_paper_config.json")).unwrap();
    assert_eq!(
        cfg,
        UNet2DConfig {
            diffusers_version: cfg.diffusers_version.clone(),
            ..UNet2DConfig::paper(256, 2, 1)
        }
    );
    let params = expected_parameters(&cfg).unwrap();
    let listing = std::fs::read_to_string(fixture("unet_paper_weights.txt")).unwrap();
    let want: Vec<(String, Vec<usize>)> = listing
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let mut f = l.split('\t');
            let name = f.next().unwrap().to_string();
            let shape: Vec<usize> = serde_json::from_str(f.next().unwrap()).unwrap();
            (name, shape)
        })
        .collect();
    assert_eq!(want.len(), 450);
    let mut got = params.clone();
    got.sort();
    let mut want_sorted = want.clone();
    want_sorted.sort();
    assert_eq!(got, want_sorted);
    let total: u64 = params
        .iter()
        .map(|(_, s)| s.iter().product::<usize>() as u64)
        .sum();
    assert_eq!(total, 113_669_761);
    // The FLOP count needs a model; build it on zero-cost placeholders (no 455 MB allocation).
    let vb = candle_nn::VarBuilder::zeros(DType::F32, &Device::Cpu);
    let model = segdiff_unet::UNet2DModel::new(&cfg, vb).unwrap();
    assert_eq!(model.flops(256, 256), 496_574_529_536);
}
