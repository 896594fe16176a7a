//! `segdiff train` → `segdiff sample` end to end on a tiny synthetic dataset: checkpoints,
//! resume, loss log and curve, previews, outputs, shards that reproduce the full run, and errors.

mod common;
use common::*;

use std::path::Path;

use candle_core::Device;

fn write_dataset(root: &Path) {
    write_squares_dataset(root, &[("train", 8), ("val", 2), ("test", 3)], 12345);
}

fn train_args(data: &str, out: &str, steps: &str) -> Vec<String> {
    let mut args = tiny_train_args(data, out, steps);
    args.extend(
        [
            "--checkpoint-every",
            "2",
            "--preview-every",
            "2",
            "--seed",
            "3",
            "--ablation",
        ]
        .map(String::from),
    );
    args
}

#[test]
fn train_resume_sample_and_shards() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_dataset(&data);
    let model = tmp.path().join("model");
    let (d, m) = (data.to_str().unwrap(), model.to_str().unwrap());

    ok(&segdiff_owned(&train_args(d, m, "4")));
    for f in [
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "scheduler/scheduler_config.json",
        "model_index.json",
        "segdiff.json",
        "checkpoints/step-0000004/training_state.json",
        "loss.png",
        "previews/step-0000002.png",
        "previews/step-0000004.png",
    ] {
        assert!(model.join(f).is_file(), "missing {f}");
    }
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("segdiff.json")).unwrap())
            .unwrap();
    assert_eq!(meta["num_classes"], 3);
    assert_eq!(meta["ablation_trained"], true);
    assert_eq!(meta["class_names"][2], "b");

    // A second run into the same folder must not silently restart; --resume continues.
    let again = segdiff_owned(&train_args(d, m, "4"));
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--resume"));
    let mut resume = train_args(d, m, "6");
    resume.push("--resume".into());
    ok(&segdiff_owned(&resume));
    let log = std::fs::read_to_string(model.join("train_log.csv")).unwrap();
    let steps: Vec<&str> = log
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap())
        .collect();
    assert_eq!(steps, ["1", "2", "3", "4", "5", "6"]);

    let masks = data.join("mask/all/test");
    let full = tmp.path().join("full");
    ok(&segdiff(&[
        "sample",
        "--model",
        m,
        "--masks",
        masks.to_str().unwrap(),
        "--out",
        full.to_str().unwrap(),
        "--steps",
        "4",
        "--batch-size",
        "1",
        "--seed",
        "9",
    ]));
    let st =
        candle_core::safetensors::load(full.join("samples.safetensors"), &Device::Cpu).unwrap();
    let images = &st["images01"];
    assert_eq!(images.dims(), [3, 1, 16, 16]);
    let v = images.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert!(v.iter().all(|x| (0.0..=1.0).contains(x)));
    assert!(full.join("grid.png").is_file());

    // Two shards write exactly the full run's files.
    let sharded = tmp.path().join("sharded");
    for s in ["1/2", "2/2"] {
        ok(&segdiff(&[
            "sample",
            "--model",
            m,
            "--masks",
            masks.to_str().unwrap(),
            "--out",
            sharded.to_str().unwrap(),
            "--steps",
            "4",
            "--batch-size",
            "1",
            "--seed",
            "9",
            "--shard",
            s,
        ]));
    }
    for i in 0..3 {
        let name = format!("condon_test_{i}.png");
        assert_eq!(
            std::fs::read(full.join(&name)).unwrap(),
            std::fs::read(sharded.join(&name)).unwrap(),
            "{name}"
        );
    }
    let mut rows = Vec::new();
    for s in ["1-of-2", "2-of-2"] {
        let t = candle_core::safetensors::load(
            sharded.join(format!("samples-shard-{s}.safetensors")),
            &Device::Cpu,
        )
        .unwrap();
        rows.extend(t["image_indices"].to_vec1::<i64>().unwrap());
        let part = t["images01"]
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        for (k, &g) in t["image_indices"]
            .to_vec1::<i64>()
            .unwrap()
            .iter()
            .enumerate()
        {
            let want = &v[g as usize * 256..(g as usize + 1) * 256];
            let got = &part[k * 256..(k + 1) * 256];
            assert!(
                want.iter()
                    .zip(got)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "image {g} differs"
            );
        }
    }
    rows.sort();
    assert_eq!(rows, [0, 1, 2]);

    // Ablated and empty-mask sampling run; a bad class id is a clear error.
    ok(&segdiff(&[
        "sample",
        "--model",
        m,
        "--masks",
        masks.to_str().unwrap(),
        "--out",
        tmp.path().join("kept").to_str().unwrap(),
        "--steps",
        "2",
        "--keep-classes",
        "1",
    ]));
    ok(&segdiff(&[
        "sample",
        "--model",
        m,
        "--masks",
        masks.to_str().unwrap(),
        "--out",
        tmp.path().join("empty").to_str().unwrap(),
        "--steps",
        "2",
        "--empty-mask",
    ]));
    let bad = tmp.path().join("bad.png");
    image::GrayImage::from_pixel(16, 16, image::Luma([7u8]))
        .save(&bad)
        .unwrap();
    let out = segdiff(&[
        "sample",
        "--model",
        m,
        "--masks",
        bad.to_str().unwrap(),
        "--out",
        tmp.path().join("x").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.png") && err.contains('7'), "{err}");
    assert!(!tmp.path().join("x").exists(), "no output for a failed run");
}
