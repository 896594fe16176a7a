//! `segdiff train --neighbours` end to end on tiny synthetic volumes: the adjacent-slice pairs
//! come from `manifest.csv`, the model directory records the neighbour scheme and its extra
//! input channels, resuming from a checkpoint continues the run bit for bit, and the model loads back and
//! generates a volume outward from its anchors.

mod common;
use common::*;

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use segdiff_diffusion::{
    load_model_dir, sample_volume_slices, SampleOptions, SamplerKind, UnetDenoiser,
    VolumeSampleOptions,
};

const SLICES: usize = 12;
const SIZE: usize = 16;

/// Class of voxel (slice z, row y, column x) of volume `v`: an ellipsoid (class 1) with a smaller
/// core (class 2), both shifted per volume.
fn label(v: usize, z: usize, y: usize, x: usize) -> u8 {
    let c = (5.5 + v as f64 * 0.5, 7.5 - v as f64, 7.5 + v as f64);
    let r = [
        (z as f64 - c.0) / 5.0,
        (y as f64 - c.1) / 6.0,
        (x as f64 - c.2) / 5.0,
    ];
    let d = r.iter().map(|q| q * q).sum::<f64>();
    if d < 0.3 {
        2
    } else if d < 1.0 {
        1
    } else {
        0
    }
}

/// Three 12-slice volumes (two for training, one for validation) as a prepared dataset with
/// its manifest; `with_manifest = false` leaves the manifest out.
fn write_volumes(root: &Path, with_manifest: bool) {
    let mut manifest = String::from("file,split,volume_id,source,axis,slice_index,intensity\n");
    for v in 0..3 {
        let split = if v < 2 { "train" } else { "val" };
        let img_dir = root.join("img").join(split);
        let mask_dir = root.join("mask/all").join(split);
        std::fs::create_dir_all(&img_dir).unwrap();
        std::fs::create_dir_all(&mask_dir).unwrap();
        for z in 0..SLICES {
            let name = format!("vol{v}_axial_{z:03}.png");
            let mask = image::GrayImage::from_fn(SIZE as u32, SIZE as u32, |x, y| {
                image::Luma([label(v, z, y as usize, x as usize)])
            });
            let img = image::GrayImage::from_fn(SIZE as u32, SIZE as u32, |x, y| {
                let k = mask.get_pixel(x, y).0[0] as usize;
                image::Luma([[20u8, 128, 230][k].saturating_add((z * 2) as u8)])
            });
            img.save(img_dir.join(&name)).unwrap();
            mask.save(mask_dir.join(&name)).unwrap();
            manifest +=
                &format!("img/{split}/{name},{split},vol{v},vol{v}.nii.gz,axial,{z},minmax\n");
        }
    }
    std::fs::write(
        root.join("dataset.json"),
        r#"{"num_classes": 3, "class_names": ["background", "rim", "core"]}"#,
    )
    .unwrap();
    if with_manifest {
        std::fs::write(root.join("manifest.csv"), manifest).unwrap();
    }
}

fn train_args(data: &str, out: &str, steps: &str) -> Vec<String> {
    let mut args = tiny_train_args(data, out, steps);
    args.extend(
        [
            "--checkpoint-every",
            "2",
            "--seed",
            "3",
            "--ablation",
            "--neighbours",
            "--neighbour-mask",
            "--neighbour-drop",
            "0.25",
        ]
        .map(String::from),
    );
    args
}

fn weights(dir: &Path) -> Vec<(String, Vec<f32>)> {
    let st = candle_core::safetensors::load(
        dir.join("unet/diffusion_pytorch_model.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    let mut w: Vec<(String, Vec<f32>)> = st
        .into_iter()
        .map(|(k, t)| (k, t.flatten_all().unwrap().to_vec1().unwrap()))
        .collect();
    w.sort_by(|a, b| a.0.cmp(&b.0));
    w
}

#[test]
fn train_neighbours_resume_and_sample_a_volume() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_volumes(&data, false);
    let model = tmp.path().join("model");
    let (d, m) = (data.to_str().unwrap(), model.to_str().unwrap());

    // Without a manifest there are no pairs: the error names the file.
    let out = segdiff_owned(&train_args(d, m, "4"));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("manifest.csv"), "{err}");
    std::fs::remove_dir_all(&model).ok();
    write_volumes(&data, true);

    // Flag errors.
    let mut bad = train_args(d, m, "4");
    *bad.last_mut().unwrap() = "1.5".into();
    assert_eq!(segdiff_owned(&bad).status.code(), Some(1));
    let out = segdiff(&["train", "--data", d, "--out", m, "--neighbour-mask"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--neighbours"));
    std::fs::remove_dir_all(&model).ok();

    ok(&segdiff_owned(&train_args(d, m, "4")));
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("segdiff.json")).unwrap())
            .unwrap();
    assert_eq!(
        meta["neighbours"],
        serde_json::json!({"kind": "previous_slice", "with_mask": true, "drop_p": 0.25})
    );
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("unet/config.json")).unwrap())
            .unwrap();
    // image 1 + mask 1 + neighbour image 1 + presence 1 + neighbour mask 1
    assert_eq!(config["in_channels"], 5);
    assert_eq!(config["out_channels"], 1);

    // Resuming from the step-4 checkpoint of a 6-step run ends on the same weights.
    let mut resume = train_args(d, m, "6");
    resume.push("--resume".into());
    ok(&segdiff_owned(&resume));
    let straight = weights(&model);
    std::fs::remove_dir_all(model.join("checkpoints/step-0000006")).unwrap();
    ok(&segdiff_owned(&resume));
    let resumed = weights(&model);
    assert_eq!(straight.len(), resumed.len());
    for ((ka, va), (kb, vb)) in straight.iter().zip(&resumed) {
        assert_eq!(ka, kb);
        assert_eq!(
            va, vb,
            "{ka} differs between the straight and the resumed run"
        );
    }
    let log = std::fs::read_to_string(model.join("train_log.csv")).unwrap();
    let steps: Vec<&str> = log
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap())
        .collect();
    assert_eq!(steps, ["1", "2", "3", "4", "5", "6"]);

    // The model loads back and generates a volume from a label volume.
    let loaded = load_model_dir(&model, DType::F32, &Device::Cpu).unwrap();
    let scheme = loaded.meta.neighbours.clone().unwrap();
    assert!(scheme.with_mask);
    let labels: Vec<u32> = (0..SLICES * SIZE * SIZE)
        .map(|i| {
            let (z, y, x) = (i / (SIZE * SIZE), i / SIZE % SIZE, i % SIZE);
            u32::from(label(2, z, y, x))
        })
        .collect();
    let labels = Tensor::from_vec(labels, (SLICES, SIZE, SIZE), &Device::Cpu).unwrap();
    let mut denoiser = UnetDenoiser::new(&loaded.unet.model, DType::F32);
    let options = VolumeSampleOptions {
        sample: SampleOptions {
            scheduler: SamplerKind::Ddim,
            steps: Some(3),
            seed: 4,
            ..SampleOptions::default()
        },
        independent: false,
        anchors: 2,
        ..VolumeSampleOptions::default()
    };
    let mut done = 0;
    let volume = sample_volume_slices(
        &mut denoiser,
        &loaded.scheduler,
        &loaded.meta,
        &labels,
        &options,
        &Device::Cpu,
        &mut |p| done = p.slices_done,
    )
    .unwrap();
    assert_eq!(volume.dims(), [SLICES, 1, SIZE, SIZE]);
    assert_eq!(done, SLICES);
    let v = volume.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert!(v.iter().all(|x| (0.0..=1.0).contains(x)));
}

/// `segdiff eval --volumes`: the held-out volume is generated neighbour-conditioned and slice by
/// slice, and both stacks are scored against the real one in report.md / report.json.
#[test]
fn eval_scores_whole_volumes() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_volumes(&data, true);
    // The third volume becomes the test split.
    std::fs::rename(data.join("img/val"), data.join("img/test")).unwrap();
    std::fs::rename(data.join("mask/all/val"), data.join("mask/all/test")).unwrap();
    let manifest = std::fs::read_to_string(data.join("manifest.csv")).unwrap();
    std::fs::write(
        data.join("manifest.csv"),
        manifest
            .replace("img/val/", "img/test/")
            .replace(",val,", ",test,"),
    )
    .unwrap();
    let model = tmp.path().join("model");
    let (d, m) = (data.to_str().unwrap(), model.to_str().unwrap());
    ok(&segdiff_owned(&train_args(d, m, "2")));
    let out = tmp.path().join("eval");
    ok(&segdiff(&[
        "eval",
        "--dataset",
        d,
        "--model",
        m,
        "--quick",
        "--volumes",
        "--steps",
        "2",
        "--segmenter-epochs",
        "1",
        "--out",
        out.to_str().unwrap(),
    ]));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let v = &report["volumes"];
    assert_eq!(v["axis"], "axial");
    assert_eq!(v["selection"], "volumes with slices in the test split");
    let rows = v["volumes"].as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["volume"], "vol2");
    assert_eq!(rows[0]["slices"], SLICES);
    for stack in ["real", "conditioned", "independent"] {
        let s = &rows[0][stack];
        let change = s["through_plane_change"].as_f64().unwrap();
        assert!(change > 0.0 && change < 255.0, "{stack}: {change}");
        for d in s["dice"].as_array().unwrap() {
            let d = d.as_f64().unwrap();
            assert!((0.0..=1.0).contains(&d), "{stack}: Dice {d}");
        }
        assert_eq!(s["fid"].is_null(), stack == "real", "{stack}");
    }
    // The real stack changes by the image's 2 grey levels per slice plus the anatomy's changes.
    assert!(rows[0]["real"]["through_plane_change"].as_f64().unwrap() >= 2.0);
    assert!(v["change_ratio"].as_f64().unwrap() > 0.0);
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("## Whole volumes") && md.contains("neighbour-conditioned"));
}
