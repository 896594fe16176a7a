//! `segdiff metrics dice|hd95|psnr-ssim|fid` end to end on tiny PNG folders, checked against
//! segdiff-eval and hand-computable cases.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use candle_core::{Device, Tensor};
use image::{ImageBuffer, Luma};
use segdiff_eval::{dice, fid_from_features, DiceConfig, LabelMaps};
use serde_json::Value;

fn segdiff(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_segdiff"))
        .args(args)
        .output()
        .unwrap()
}

/// Runs a command that must succeed with `--json` and parses its stdout.
fn json(args: &[&str]) -> Value {
    let out = segdiff(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{args:?}: stdout is not one JSON object ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn write_l8(path: &Path, w: u32, h: u32, px: Vec<u8>) {
    ImageBuffer::<Luma<u8>, Vec<u8>>::from_raw(w, h, px)
        .unwrap()
        .save(path)
        .unwrap();
}

/// An 8x6 mask with a 3x3 square of `class` starting at column `c0`.
fn square(class: u8, c0: usize) -> Vec<u8> {
    (0..48)
        .map(|i| {
            if (1..4).contains(&(i / 8)) && (c0..c0 + 3).contains(&(i % 8)) {
                class
            } else {
                0
            }
        })
        .collect()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

struct Folders {
    _root: tempfile::TempDir,
    pred: std::path::PathBuf,
    target: std::path::PathBuf,
}

fn folders() -> Folders {
    let root = tempfile::tempdir().unwrap();
    let (pred, target) = (root.path().join("pred"), root.path().join("target"));
    std::fs::create_dir_all(&pred).unwrap();
    std::fs::create_dir_all(&target).unwrap();
    Folders {
        _root: root,
        pred,
        target,
    }
}

#[test]
fn dice_json_matches_the_library_and_identical_folders_score_one() {
    let f = folders();
    write_l8(&f.pred.join("a.png"), 8, 6, square(1, 1));
    write_l8(&f.target.join("a.png"), 8, 6, square(1, 3));
    write_l8(&f.pred.join("b.png"), 8, 6, square(2, 2));
    write_l8(&f.target.join("b.png"), 8, 6, square(2, 2));
    let v = json(&[
        "metrics",
        "dice",
        "--pred",
        s(&f.pred),
        "--target",
        s(&f.target),
        "--num-classes",
        "3",
        "--json",
    ]);
    assert_eq!(v["files"], serde_json::json!(["a.png", "b.png"]));
    assert_eq!(v["class_ids"], serde_json::json!([1, 2]));
    // a: one shared column of three -> 1/3; b: identical -> 1; absent classes null.
    let a1 = v["values"][0][0].as_f64().unwrap();
    assert!((a1 - 1.0 / 3.0).abs() < 1e-12);
    assert_eq!(v["values"][0][1], Value::Null);
    assert_eq!(v["values"][1][1].as_f64(), Some(1.0));
    let to_maps = |a: Vec<u8>, b: Vec<u8>| {
        LabelMaps::new(a.into_iter().chain(b).map(u32::from).collect(), 2, 6, 8).unwrap()
    };
    let lib = dice(
        &to_maps(square(1, 1), square(2, 2)),
        &to_maps(square(1, 3), square(2, 2)),
        &DiceConfig::new(3),
    )
    .unwrap();
    assert_eq!(v["mean"].as_f64(), Some(lib.mean()));

    let same = json(&[
        "metrics",
        "dice",
        "--pred",
        s(&f.pred),
        "--target",
        s(&f.pred),
        "--json",
    ]);
    assert_eq!(same["mean"].as_f64(), Some(1.0));

    // The readable table carries the same mean.
    let out = segdiff(&[
        "metrics",
        "dice",
        "--pred",
        s(&f.pred),
        "--target",
        s(&f.pred),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("1.0000"), "{text}");
}

#[test]
fn hd_reports_infinity_as_null_with_a_flag() {
    let f = folders();
    write_l8(&f.pred.join("a.png"), 8, 6, square(1, 1));
    write_l8(&f.target.join("a.png"), 8, 6, square(1, 3));
    write_l8(&f.pred.join("b.png"), 8, 6, vec![0; 48]);
    write_l8(&f.target.join("b.png"), 8, 6, square(1, 1));
    let base = [
        "metrics",
        "hd95",
        "--pred",
        s(&f.pred),
        "--target",
        s(&f.target),
        "--num-classes",
        "2",
        "--json",
    ];
    // HD100: squares 2 columns apart -> 2; target-only class -> +inf.
    let mut args = base.to_vec();
    args.extend(["--percentile", "100"]);
    let v = json(&args);
    assert_eq!(v["values"][0][0].as_f64(), Some(2.0));
    assert_eq!(v["values"][1][0], Value::Null);
    assert_eq!(v["infinite_entries"][0]["file"], "b.png");
    assert_eq!(v["mean"], Value::Null);
    assert_eq!(v["mean_infinite"], true);
    // HD95 with spacing: the one-sided empty case is NaN (ignored), the mean is finite.
    let mut args = base.to_vec();
    args.extend(["--spacing", "1,0.5"]);
    let v = json(&args);
    assert_eq!(v["mean_infinite"], false);
    let m = v["mean"].as_f64().unwrap();
    assert!(m > 0.0 && m <= 1.0, "{m}");
    assert_eq!(v["ignored_entries"], 1);
}

#[test]
fn psnr_ssim_of_identical_images_is_infinite_and_one() {
    let f = folders();
    let img: Vec<u8> = (0..16 * 12).map(|i| ((i * 37) % 251) as u8).collect();
    write_l8(&f.pred.join("x.png"), 16, 12, img.clone());
    write_l8(&f.target.join("x.png"), 16, 12, img);
    let v = json(&[
        "metrics",
        "psnr-ssim",
        "--pred",
        s(&f.pred),
        "--target",
        s(&f.target),
        "--json",
    ]);
    assert_eq!(v["psnr_mean"], Value::Null);
    assert_eq!(v["psnr_mean_infinite"], true);
    assert_eq!(v["per_file"][0]["psnr"], Value::Null);
    assert_eq!(v["ssim_mean"].as_f64(), Some(1.0));
    assert_eq!(v["data_range"].as_f64(), Some(255.0));
}

#[test]
fn fid_of_feature_files_matches_the_library() {
    let d = tempfile::tempdir().unwrap();
    let fa: Vec<f32> = (0..40).map(|i| ((i * 13) % 17) as f32 / 3.0).collect();
    let fb: Vec<f32> = (0..40).map(|i| ((i * 7) % 11) as f32 / 2.0).collect();
    let ta = Tensor::from_vec(fa, (10, 4), &Device::Cpu).unwrap();
    let tb = Tensor::from_vec(fb, (10, 4), &Device::Cpu).unwrap();
    let (pa, pb) = (
        d.path().join("a.safetensors"),
        d.path().join("b.safetensors"),
    );
    candle_core::safetensors::save(&HashMap::from([("f", ta.clone())]), &pa).unwrap();
    candle_core::safetensors::save(&HashMap::from([("f", tb.clone())]), &pb).unwrap();
    let v = json(&["metrics", "fid", "--a", s(&pa), "--b", s(&pb), "--json"]);
    let want = fid_from_features(&ta, &tb).unwrap();
    assert_eq!(v["fid"].as_f64(), Some(want));
}

#[test]
fn a_missing_partner_fails_naming_the_file() {
    let f = folders();
    write_l8(&f.pred.join("a.png"), 8, 6, square(1, 1));
    write_l8(&f.target.join("a.png"), 8, 6, square(1, 1));
    write_l8(&f.pred.join("lonely.png"), 8, 6, square(1, 1));
    let out = segdiff(&[
        "metrics",
        "dice",
        "--pred",
        s(&f.pred),
        "--target",
        s(&f.target),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("lonely.png"), "{err}");
}
