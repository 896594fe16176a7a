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

fn png_size(path: &Path) -> (u32, u32) {
    image::image_dimensions(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn count_pngs(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "png")
        })
        .count()
}

/// synth → train (a few steps) → every command on the model; resume continues bit for bit.
#[test]
fn mhvae_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name);
    let data = p("data");
    ok(&segdiff(&[
        "mhvae",
        "synth",
        "--kind",
        "blobs",
        "--n",
        "30",
        "--size",
        "32",
        "--out",
        s(&data),
    ]));
    assert_eq!(count_pngs(&data.join("img/train")), 24);
    assert_eq!(count_pngs(&data.join("mask/all/test")), 3);
    assert!(data.join("truth.jsonl").is_file());

    let train = |out: &Path, steps: &str, extra: &[&str]| {
        let mut args = vec![
            "mhvae",
            "train",
            "--data",
            s(&data),
            "--out",
            s(out),
            "--warp",
            "tps",
            "--steps",
            steps,
            "--batch-size",
            "4",
            "--checkpoint-every",
            "5",
            "--seed",
            "3",
            "--preview-every",
            "5",
        ];
        args.extend_from_slice(extra);
        segdiff(&args)
    };
    let model = p("model");
    ok(&train(&model, "10", &[]));
    for f in [
        "mhvae.json",
        "model.safetensors",
        "train_log.csv",
        "loss.png",
        "reconstructions.png",
        "previews/step-0000005.png",
    ] {
        assert!(model.join(f).is_file(), "{f}");
    }
    // A fresh run into a folder with checkpoints is refused; --resume continues exactly.
    let resumed = p("resumed");
    ok(&train(&resumed, "5", &[]));
    let again = train(&resumed, "10", &[]);
    assert_eq!(again.status.code(), Some(1));
    ok(&train(&resumed, "10", &["--resume"]));
    assert_eq!(
        std::fs::read(model.join("model.safetensors")).unwrap(),
        std::fs::read(resumed.join("model.safetensors")).unwrap(),
        "resumed run differs from the uninterrupted one"
    );

    let test = data.join("img/test");
    let m = s(&model);
    ok(&segdiff(&[
        "mhvae",
        "segment",
        "--model",
        m,
        "--images",
        s(&test),
        "--out",
        s(&p("seg")),
    ]));
    assert_eq!(count_pngs(&p("seg")), 3);
    let mask = image::open(p("seg/00027.png")).unwrap().to_luma8();
    assert_eq!(mask.dimensions(), (32, 32));
    assert!(mask.pixels().all(|v| v.0[0] <= 1), "masks hold 0/1 ids");
    ok(&segdiff(&[
        "mhvae",
        "reconstruct",
        "--model",
        m,
        "--images",
        s(&test),
        "--out",
        s(&p("rec")),
    ]));
    assert_eq!(png_size(&p("rec/00028.png")), (32, 32));
    ok(&segdiff(&[
        "mhvae",
        "swap",
        "--model",
        m,
        "--style",
        s(&test.join("00027.png")),
        "--position",
        s(&test),
        "--out",
        s(&p("swap")),
    ]));
    assert!(p("swap/00027__00029.png").is_file() && p("swap/swap.png").is_file());
    ok(&segdiff(&[
        "mhvae",
        "edit",
        "--model",
        m,
        "--images",
        s(&test),
        "--rotate",
        "-45",
        "--scale",
        "0.7",
        "--translate",
        "-0.1,0.2",
        "--out",
        s(&p("edit")),
    ]));
    assert_eq!(count_pngs(&p("edit/masks")), 3);
    assert!(p("edit/00029.png").is_file());
    ok(&segdiff(&[
        "mhvae",
        "interpolate",
        "--model",
        m,
        "--a",
        s(&test.join("00027.png")),
        "--b",
        s(&test.join("00028.png")),
        "--steps",
        "3",
        "--out",
        s(&p("interp.png")),
    ]));
    let (w, h) = png_size(&p("interp.png"));
    assert_eq!(
        (w, h),
        (3 * 128 + 2 * 2 * 4, 3 * 128 + 2 * 2 * 4),
        "3×3 tiles of 32 px, zoomed ×4"
    );
    let inspect = segdiff(&[
        "mhvae",
        "inspect",
        "--model",
        m,
        "--images",
        s(&test),
        "--out",
        s(&p("insp")),
        "--json",
    ]);
    ok(&inspect);
    let report: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(report.as_array().unwrap().len(), 3);
    assert_eq!(report[0]["tps_sources"].as_array().unwrap().len(), 20);

    // Errors: a bad flag value exits 2; a missing model or a malformed image exits 1 naming it.
    let bad = segdiff(&[
        "mhvae",
        "train",
        "--data",
        s(&data),
        "--out",
        s(&p("x")),
        "--warp",
        "spline",
    ]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("affine"));
    let missing = segdiff(&[
        "mhvae",
        "segment",
        "--model",
        s(&p("nope")),
        "--images",
        s(&test),
        "--out",
        s(&p("o1")),
    ]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("nope"));
    let broken = p("broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("x.png"), b"not a png").unwrap();
    let bad_img = segdiff(&[
        "mhvae",
        "reconstruct",
        "--model",
        m,
        "--images",
        s(&broken),
        "--out",
        s(&p("o2")),
    ]);
    assert_eq!(bad_img.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad_img.stderr).contains("x.png"));
    assert!(!p("o2").join("x.png").exists());
}

/// k-fold evaluation: rows for each warp and the MONAI baseline, mean ± sd over folds.
#[test]
fn mhvae_eval_k_fold_table() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    ok(&segdiff(&[
        "mhvae",
        "synth",
        "--kind",
        "ellipses",
        "--n",
        "20",
        "--size",
        "32",
        "--out",
        s(&data),
    ]));
    let out = dir.path().join("eval");
    let run = segdiff(&[
        "mhvae",
        "eval",
        "--data",
        s(&data),
        "--folds",
        "2",
        "--warp",
        "affine,tps",
        "--steps",
        "15",
        "--batch-size",
        "4",
        "--baseline-epochs",
        "1",
        "--out",
        s(&out),
        "--json",
    ]);
    ok(&run);
    let report: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(report["images"], 20);
    let rows = report["rows"].as_array().unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r["model"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["MHVAE (affine)", "MHVAE (tps)", "MONAI UNet (baseline)"]
    );
    for r in rows {
        assert_eq!(r["folds"].as_array().unwrap().len(), 2);
        let d = r["dice"]["mean"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&d), "{r}");
        let test_images: u64 = r["folds"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["test_images"].as_u64().unwrap())
            .sum();
        assert_eq!(test_images, 20, "every image is tested once");
    }
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("| MHVAE (tps) |") && md.contains("HD95"));
    let bad = segdiff(&[
        "mhvae",
        "eval",
        "--data",
        s(&data),
        "--warp",
        "none",
        "--out",
        s(&out),
    ]);
    assert_eq!(bad.status.code(), Some(1));
    let too_many = segdiff(&[
        "mhvae",
        "eval",
        "--data",
        s(&data),
        "--folds",
        "50",
        "--out",
        s(&out),
    ]);
    assert_eq!(too_many.status.code(), Some(1));
}

/// The ResNet-50 backbone trains, and `--backbone-weights` loads a torchvision-named state dict
/// into it (here the trunk of a first run, renamed as torchvision names it).
#[test]
fn mhvae_resnet50_backbone_and_its_weights() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name);
    let data = p("data");
    ok(&segdiff(&[
        "mhvae",
        "synth",
        "--kind",
        "ellipses",
        "--n",
        "12",
        "--size",
        "32",
        "--out",
        s(&data),
    ]));
    let common = [
        "--warp",
        "affine",
        "--backbone",
        "resnet50",
        "--steps",
        "1",
        "--batch-size",
        "2",
        "--seed",
        "1",
    ];
    let first = p("first");
    let mut args = vec!["mhvae", "train", "--data", s(&data), "--out", s(&first)];
    args.extend(common);
    ok(&segdiff(&args));
    let weights =
        candle_core::safetensors::load(first.join("model.safetensors"), &Device::Cpu).unwrap();
    let trunk: HashMap<String, Tensor> = weights
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix("encoder.resnet.")
                .map(|n| (n.to_string(), v.clone()))
        })
        .collect();
    assert_eq!(
        trunk.len(),
        265,
        "torchvision's ResNet-50 state dict without fc / num_batches_tracked"
    );
    // Running statistics unlike the initial ones (mean 0, variance 1), to see them loaded and kept.
    let mut trunk = trunk;
    let stat = "layer2.1.bn2.running_var";
    let changed = (trunk[stat].ones_like().unwrap() * 2.5).unwrap();
    trunk.insert(stat.to_string(), changed);
    let state_dict = p("resnet50.safetensors");
    candle_core::safetensors::save(&trunk, &state_dict).unwrap();
    let second = p("second");
    let mut args = vec![
        "mhvae",
        "train",
        "--data",
        s(&data),
        "--out",
        s(&second),
        "--backbone-weights",
        s(&state_dict),
    ];
    args.extend(common);
    let run = segdiff(&args);
    ok(&run);
    assert!(String::from_utf8_lossy(&run.stderr).contains("265 ResNet-50 tensors"));
    // Frozen BatchNorm: the running statistics are the loaded ones, still after training.
    let after =
        candle_core::safetensors::load(second.join("model.safetensors"), &Device::Cpu).unwrap();
    let name = "encoder.resnet.layer2.1.bn2.running_var";
    assert_eq!(
        after[name].flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        vec![2.5f32; 128]
    );
    // A state dict missing a tensor is refused, naming it.
    let mut partial = trunk.clone();
    partial.remove("layer3.0.conv2.weight");
    candle_core::safetensors::save(&partial, &state_dict).unwrap();
    let third = p("third");
    let mut args = vec![
        "mhvae",
        "train",
        "--data",
        s(&data),
        "--out",
        s(&third),
        "--backbone-weights",
        s(&state_dict),
    ];
    args.extend(common);
    let bad = segdiff(&args);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("layer3.0.conv2.weight"));
}

/// The refiner's mechanics (its quality: `crates/segdiff-mhvae/tests/functional.rs`): training
/// against a frozen VAE resumes bit-exactly, both formulations train, refined reconstructions are
/// byte-identical for one seed and differ for another, sharded sampling and reconstruction
/// reproduce the full runs byte for byte, swap / edit / interpolate refine, and eval reports the
/// sampling FID of both refiners.
#[test]
fn mhvae_refiner_mechanics() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name);
    let data = p("data");
    ok(&segdiff(&[
        "mhvae",
        "synth",
        "--kind",
        "ellipses",
        "--n",
        "20",
        "--size",
        "32",
        "--out",
        s(&data),
    ]));
    let vae = p("vae");
    ok(&segdiff(&[
        "mhvae",
        "train",
        "--data",
        s(&data),
        "--out",
        s(&vae),
        "--warp",
        "affine",
        "--steps",
        "2",
        "--batch-size",
        "4",
    ]));
    let refiner = |out: &Path, steps: &str, extra: &[&str]| {
        let mut args = vec![
            "mhvae",
            "train-refiner",
            "--vae",
            s(&vae),
            "--data",
            s(&data),
            "--out",
            s(out),
            "--steps",
            steps,
            "--batch-size",
            "2",
            "--channels",
            "16,32",
            "--checkpoint-every",
            "1",
            "--seed",
            "5",
        ];
        args.extend_from_slice(extra);
        segdiff(&args)
    };
    let (straight, resumed) = (p("r1"), p("r2"));
    ok(&refiner(&straight, "2", &[]));
    ok(&refiner(&resumed, "1", &[]));
    ok(&refiner(&resumed, "2", &["--resume"]));
    let weights =
        |d: &Path| std::fs::read(d.join("unet/diffusion_pytorch_model.safetensors")).unwrap();
    assert_eq!(
        weights(&straight),
        weights(&resumed),
        "a resumed refiner differs"
    );
    assert!(straight.join("refiner.json").is_file());

    let test = data.join("img/test");
    let recon = |out: &str, seed: &str| {
        ok(&segdiff(&[
            "mhvae",
            "reconstruct",
            "--model",
            s(&vae),
            "--refiner",
            s(&straight),
            "--steps",
            "3",
            "--seed",
            seed,
            "--images",
            s(&test),
            "--out",
            s(&p(out)),
        ]));
        std::fs::read(p(out).join("00018.png")).unwrap()
    };
    assert_eq!(recon("a", "1"), recon("b", "1"));
    assert_ne!(recon("a", "1"), recon("c", "2"));
    ok(&segdiff(&[
        "mhvae",
        "sample",
        "--model",
        s(&vae),
        "--refiner",
        s(&straight),
        "--n",
        "2",
        "--steps",
        "3",
        "--out",
        s(&p("samples")),
    ]));
    assert_eq!(count_pngs(&p("samples")), 4, "sample_*.png and vae_*.png");

    // DiffuseVAE's formulation 2 trains and is recorded.
    let dvae2 = p("dvae2");
    ok(&refiner(&dvae2, "1", &["--formulation", "diffusevae2"]));
    let meta = std::fs::read_to_string(dvae2.join("refiner.json")).unwrap();
    assert!(meta.contains("\"diffusevae2\""), "{meta}");

    // Shards of sample and reconstruct write exactly the files of a full run.
    let sample = |out: &str, extra: &[&str]| {
        let mut args = vec![
            "mhvae",
            "sample",
            "--model",
            s(&vae),
            "--refiner",
            s(&straight),
            "--n",
            "20",
            "--sampler",
            "dpm-sde",
            "--steps",
            "2",
            "--seed",
            "3",
            "--out",
        ];
        let o = p(out);
        args.push(s(&o));
        args.extend_from_slice(extra);
        ok(&segdiff(&args));
    };
    sample("full", &[]);
    sample("sharded", &["--shard", "2/2"]);
    assert_eq!(
        count_pngs(&p("sharded")),
        8,
        "shard 2/2 is the second batch of 16"
    );
    sample("sharded", &["--shard", "1/2"]);
    let files = |d: &str| {
        let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(p(d))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|f| f.extension().is_some_and(|x| x == "png"))
            .map(|f| {
                (
                    f.file_name().unwrap().to_string_lossy().into_owned(),
                    std::fs::read(&f).unwrap(),
                )
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(files("full"), files("sharded"));
    let train_images = data.join("img/train");
    let recon_shard = |out: &str, extra: &[&str]| {
        let o = p(out);
        let mut args = vec![
            "mhvae",
            "reconstruct",
            "--model",
            s(&vae),
            "--refiner",
            s(&straight),
            "--sampler",
            "dpm",
            "--steps",
            "2",
            "--images",
            s(&train_images),
            "--out",
            s(&o),
        ];
        args.extend_from_slice(extra);
        ok(&segdiff(&args));
    };
    recon_shard("rfull", &[]);
    recon_shard("rshard", &["--shard", "1/2"]);
    recon_shard("rshard", &["--shard", "2/2"]);
    assert!(!files("rfull").is_empty());
    assert_eq!(files("rfull"), files("rshard"));

    // swap, edit and interpolate take the refiner.
    let one = test.join("00018.png");
    ok(&segdiff(&[
        "mhvae",
        "swap",
        "--model",
        s(&vae),
        "--style",
        s(&one),
        "--position",
        s(&test),
        "--refiner",
        s(&straight),
        "--sampler",
        "dpm-sde",
        "--steps",
        "2",
        "--out",
        s(&p("swap")),
    ]));
    assert!(p("swap/swap.png").is_file());
    ok(&segdiff(&[
        "mhvae",
        "edit",
        "--model",
        s(&vae),
        "--images",
        s(&test),
        "--rotate",
        "30",
        "--refiner",
        s(&straight),
        "--steps",
        "2",
        "--out",
        s(&p("edit")),
    ]));
    assert!(p("edit/edit.png").is_file() && p("edit/masks/00018.png").is_file());
    let interp = |out: &str, seed: &str| {
        ok(&segdiff(&[
            "mhvae",
            "interpolate",
            "--model",
            s(&vae),
            "--a",
            s(&one),
            "--b",
            s(&train_images.join("00000.png")),
            "--steps",
            "2",
            "--refiner",
            s(&straight),
            "--refiner-steps",
            "2",
            "--fixed-noise",
            "--seed",
            seed,
            "--out",
            s(&p(out)),
        ]));
        std::fs::read(p(out)).unwrap()
    };
    assert_eq!(interp("i1.png", "4"), interp("i2.png", "4"));
    assert_ne!(interp("i1.png", "4"), interp("i3.png", "5"));
    let bad = segdiff(&[
        "mhvae",
        "interpolate",
        "--model",
        s(&vae),
        "--a",
        s(&one),
        "--b",
        s(&one),
        "--fixed-noise",
        "--out",
        s(&p("i4.png")),
    ]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("need --refiner"));

    // eval: the sampling FID of both refiners against the real test images.
    let seg = p("seg");
    ok(&segdiff(&[
        "segmenter",
        "train",
        "--data",
        s(&data),
        "--out",
        s(&seg),
        "--epochs",
        "1",
    ]));
    let out = segdiff(&[
        "mhvae",
        "eval",
        "--data",
        s(&data),
        "--folds",
        "0",
        "--model",
        s(&vae),
        "--refiner",
        s(&straight),
        "--baseline-refiner",
        s(&dvae2),
        "--samples",
        "4",
        "--sampler",
        "dpm",
        "--segmenter",
        s(&seg),
        "--json",
        "--out",
        s(&p("eval")),
    ]);
    ok(&out);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = report["sampling"]["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 4, "{report}");
    assert!(rows[3]["images"].as_str().unwrap().contains("diffusevae2"));
    assert!(rows
        .iter()
        .all(|r| r["fid_segmenter"].as_f64().is_some_and(|f| f >= 0.0)));
    assert!(p("eval/report.md").is_file());
}
