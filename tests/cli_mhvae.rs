//! `segdiff mhvae …` end to end.

mod common;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use common::{ok, segdiff};

fn fixture(name: &str) -> Tensor {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../segdiff-mhvae/tests/fixtures/warp_oracle.safetensors");
    candle_core::safetensors::load(&path, &Device::Cpu).unwrap()[name].clone()
}

fn max_err(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
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

fn save(path: &Path, tensors: &[(&str, Tensor)]) {
    let map: HashMap<String, Tensor> = tensors
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    candle_core::safetensors::save(&map, path).unwrap();
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn warp_reproduces_torch_affine_grid_and_the_identity() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.safetensors");
    let output = dir.path().join("out.safetensors");
    let image = Tensor::arange(0f32, 2.0 * 3.0 * 16.0 * 16.0, &Device::Cpu)
        .unwrap()
        .reshape((2, 3, 16, 16))
        .unwrap()
        .affine(1.0 / 1536.0, 0.0)
        .unwrap();
    for ac in [0, 1] {
        let theta = fixture(&format!("affine_grid.ac{ac}.case1.theta"));
        save(&input, &[("image", image.clone()), ("affine", theta)]);
        let mut args = vec![
            "mhvae",
            "warp",
            "--input",
            s(&input),
            "--output",
            s(&output),
        ];
        if ac == 1 {
            args.push("--align-corners");
        }
        ok(&segdiff(&args));
        let out = candle_core::safetensors::load(&output, &Device::Cpu).unwrap();
        let err = max_err(
            &out["grid"],
            &fixture(&format!("affine_grid.ac{ac}.case1.grid")),
        );
        assert!(err < 1e-6, "ac={ac}: grid vs torch {err}");
        assert_eq!(out["warped"].dims(), &[2, 3, 16, 16]);
    }
    // Identity maps (affine and a TPS whose sources are its targets) give the image back.
    let identity = Tensor::new(&[[[1f32, 0., 0.], [0., 1., 0.]]; 2], &Device::Cpu).unwrap();
    save(&input, &[("image", image.clone()), ("affine", identity)]);
    ok(&segdiff(&[
        "mhvae",
        "warp",
        "--input",
        s(&input),
        "--output",
        s(&output),
    ]));
    let out = candle_core::safetensors::load(&output, &Device::Cpu).unwrap();
    assert!(max_err(&out["warped"], &image) < 1e-5);
    let targets = fixture("tps.circular20.32x32.targets")
        .to_dtype(candle_core::DType::F32)
        .unwrap();
    let sources = Tensor::stack(&[&targets, &targets], 0).unwrap();
    save(
        &input,
        &[
            ("image", image.clone()),
            ("tps_target", targets),
            ("tps_source", sources),
        ],
    );
    let run = segdiff(&[
        "mhvae",
        "warp",
        "--input",
        s(&input),
        "--output",
        s(&output),
    ]);
    ok(&run);
    assert!(String::from_utf8_lossy(&run.stdout).contains("20 control points"));
    let out = candle_core::safetensors::load(&output, &Device::Cpu).unwrap();
    let err = max_err(&out["warped"], &image);
    assert!(err < 1e-5, "TPS identity: {err}");
}

#[test]
fn warp_errors_name_the_file_and_leave_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out.safetensors");
    let check = |input: &Path, needle: &str| {
        let run = segdiff(&["mhvae", "warp", "--input", s(input), "--output", s(&output)]);
        let err = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(1), "{err}");
        assert!(
            err.contains("in.safetensors") || err.contains("missing"),
            "{err}"
        );
        assert!(err.contains(needle), "`{needle}` not in {err}");
        assert!(!output.exists());
        assert_eq!(
            std::fs::read_dir(dir.path())
                .unwrap()
                .filter(|e| {
                    e.as_ref()
                        .unwrap()
                        .file_name()
                        .to_string_lossy()
                        .starts_with(".out")
                })
                .count(),
            0
        );
    };
    check(
        &dir.path().join("missing.safetensors"),
        "missing.safetensors",
    );
    let input = dir.path().join("in.safetensors");
    std::fs::write(&input, b"\x08\0\0\0\0\0\0\0{\"a\":1}").unwrap();
    check(&input, "in.safetensors");
    let image = Tensor::zeros((1, 1, 4, 4), candle_core::DType::F32, &Device::Cpu).unwrap();
    save(&input, &[("image", image.clone())]);
    check(&input, "no warp");
    let theta = Tensor::zeros((2, 2, 3), candle_core::DType::F32, &Device::Cpu).unwrap();
    save(&input, &[("image", image.clone()), ("affine", theta)]);
    check(&input, "(1,2,3)");
    let repeated = Tensor::zeros((4, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
    let sources = Tensor::zeros((1, 4, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
    save(
        &input,
        &[
            ("image", image),
            ("tps_target", repeated),
            ("tps_source", sources),
        ],
    );
    check(&input, "singular");

    let bad = segdiff(&[
        "mhvae",
        "warp",
        "--input",
        s(&input),
        "--output",
        s(&output),
        "--bogus",
    ]);
    assert_eq!(bad.status.code(), Some(2));
}
