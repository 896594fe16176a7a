//! `segdiff data check`: exit 0 on a clean dataset, 1 with problems, 2 on a wrong command line;
//! `--json` is one parseable report; `--convert-colour-masks` fixes colour masks.

use std::path::Path;
use std::process::{Command, Output};

use image::{GrayImage, Luma, Rgb, RgbImage};

fn segdiff(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_segdiff"))
        .args(args)
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Two train pairs and one test pair of 8×8 PNGs, 3 classes.
fn clean(root: &Path) {
    for (split, n) in [("train", 2), ("test", 1)] {
        std::fs::create_dir_all(root.join("img").join(split)).unwrap();
        std::fs::create_dir_all(root.join("mask/all").join(split)).unwrap();
        for i in 0..n {
            let name = format!("s{i}.png");
            GrayImage::from_fn(8, 8, |x, y| Luma([(x * 30 + y) as u8]))
                .save(root.join("img").join(split).join(&name))
                .unwrap();
            GrayImage::from_fn(8, 8, |x, _| Luma([(x / 3) as u8]))
                .save(root.join("mask/all").join(split).join(&name))
                .unwrap();
        }
    }
    std::fs::write(root.join("dataset.json"), r#"{"num_classes": 3}"#).unwrap();
}

#[test]
fn a_clean_dataset_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    clean(dir.path());
    let data = dir.path().to_str().unwrap();
    let out = segdiff(&["data", "check", "--data", data]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("3 pairs (train 2, val 0, test 1)"),
        "{stdout}"
    );
    assert!(stdout.contains("no problems found"), "{stdout}");

    let out = segdiff(&["data", "check", "--data", data, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["problems"].as_array().unwrap().len(), 0);
    assert_eq!(json["summary"]["num_classes"], 3);
    assert_eq!(json["summary"]["classes"].as_array().unwrap().len(), 3);
}

#[test]
fn problems_exit_1_and_are_all_in_the_json() {
    let dir = tempfile::tempdir().unwrap();
    clean(dir.path());
    let data = dir.path().to_str().unwrap();
    let colour = dir.path().join("mask/all/train/s1.png");
    RgbImage::from_fn(8, 8, |x, _| {
        Rgb(if x < 4 { [0, 0, 0] } else { [255, 0, 0] })
    })
    .save(&colour)
    .unwrap();
    GrayImage::new(8, 8)
        .save(dir.path().join("img/test/orphan.png"))
        .unwrap();
    let out = segdiff(&["data", "check", "--data", data, "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let kinds: Vec<&str> = json["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["colour_mask", "orphan_image"]);
    assert_eq!(json["colour_mapping"]["rule"], "luma");

    let out = segdiff(&["data", "check", "--data", data]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("#ff0000 → 1"), "{stdout}");
    assert!(stdout.contains("orphan.png"), "{stdout}");

    // Converting fixes the colour mask; the orphan still fails the check.
    let out = segdiff(&[
        "data",
        "check",
        "--data",
        data,
        "--convert-colour-masks",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["converted"].as_array().unwrap().len(), 1);
    assert_eq!(json["problems"].as_array().unwrap().len(), 1);
    let ids = image::open(&colour).unwrap();
    assert_eq!(ids.color(), image::ColorType::L8);
    assert_eq!(ids.to_luma8().get_pixel(7, 0).0, [1]);
}

#[test]
fn a_wrong_command_line_exits_2() {
    let out = segdiff(&["data", "check", "--data", "d", "--bogus"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = segdiff(&["data", "check", "--data", "d", "--num-classes", "0"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = segdiff(&["data", "check"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

#[test]
fn a_missing_dataset_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let out = segdiff(&["data", "check", "--data", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope"));
}
