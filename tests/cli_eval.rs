//! `segdiff segmenter train|predict` and `segdiff eval --quick` end to end on a tiny synthetic
//! dataset and a diffusion model trained for a few steps: the report files, their numbers
//! against recomputations from the written files, the generated images against `segdiff
//! sample`, sharded generation reused by the full run, and errors that name their file.

mod common;
use common::{write_pair_dataset, Lcg};

use std::path::Path;
use std::process::{Command, Output};

use segdiff_eval::{dice, DiceConfig, LabelMaps};
use serde_json::Value;

const SIZE: u32 = 32;
const CLASSES: usize = 3;

fn segdiff(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_segdiff"))
        .args(args)
        .env("SEGDIFF_THREADS", "2")
        .output()
        .unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = segdiff(args);
    assert!(
        out.status.success(),
        "{args:?}\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// 32×32 pairs: a disc of class 1 and a rectangle of class 2 on background, each class with its
/// own intensity plus a little deterministic texture.
fn write_dataset(root: &Path) {
    write_pair_dataset(
        root,
        &[("train", 10), ("val", 3), ("test", 4)],
        r#"{"num_classes": 3, "class_names": ["background", "disc", "box"]}"#,
        |split, i| format!("{split}_{i:02}.png"),
        |rng| {
            let (cy, cx, r) = (
                8 + rng.next(16) as i64,
                8 + rng.next(16) as i64,
                4 + rng.next(4) as i64,
            );
            let (ry, rx) = (rng.next(20) as u32, rng.next(20) as u32);
            let (rh, rw) = (6 + rng.next(6) as u32, 6 + rng.next(6) as u32);
            image::GrayImage::from_fn(SIZE, SIZE, |x, y| {
                let (dy, dx) = (y as i64 - cy, x as i64 - cx);
                let class = if (ry..ry + rh).contains(&y) && (rx..rx + rw).contains(&x) {
                    2
                } else if dy * dy + dx * dx <= r * r {
                    1
                } else {
                    0
                };
                image::Luma([class])
            })
        },
        |mask| {
            image::GrayImage::from_fn(SIZE, SIZE, |x, y| {
                let base = [30u8, 140, 220][mask.get_pixel(x, y).0[0] as usize];
                image::Luma([base.saturating_add(((x * 7 + y * 13) % 17) as u8)])
            })
        },
        &mut Lcg::new(987654321),
    );
}

fn read_labels(path: &Path) -> Vec<u32> {
    let img = image::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_luma8();
    assert_eq!(img.dimensions(), (SIZE, SIZE), "{}", path.display());
    img.into_raw().into_iter().map(u32::from).collect()
}

fn label_maps(paths: &[std::path::PathBuf]) -> LabelMaps {
    let all: Vec<u32> = paths.iter().flat_map(|p| read_labels(p)).collect();
    LabelMaps::new(all, paths.len(), SIZE as usize, SIZE as usize).unwrap()
}

fn finite(v: &Value, what: &str) -> f64 {
    let x = v
        .as_f64()
        .unwrap_or_else(|| panic!("{what} is not a number: {v}"));
    assert!(x.is_finite(), "{what} = {x}");
    x
}

fn as_strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// A number, or `None` for JSON null; panics on anything else or a non-finite number.
fn number(v: &Value, what: &str) -> Option<f64> {
    if v.is_null() {
        return None;
    }
    Some(finite(v, what))
}

/// The report's class table equals `dice(pred, target)` recomputed here: per class the mean
/// over the samples where the class is in the target (null when it is in none), overall MONAI's
/// mean of per-sample means (null when nothing is scored).
fn assert_table_matches(table: &Value, pred: &LabelMaps, target: &LabelMaps, what: &str) {
    let scores = dice(pred, target, &DiceConfig::new(CLASSES)).unwrap();
    let mean = number(&table["mean"], what);
    println!("{what}: report {mean:?}, recomputed {}", scores.mean());
    match mean {
        Some(m) => assert!((m - scores.mean()).abs() < 1e-12, "{what}"),
        None => assert_eq!(scores.count_valid(), 0, "{what}"),
    }
    let classes = table["classes"].as_array().unwrap();
    assert_eq!(classes.len(), CLASSES - 1, "{what}");
    for (col, c) in classes.iter().enumerate() {
        let valid: Vec<f64> = (0..scores.samples())
            .map(|s| scores.get(s, col))
            .filter(|v| !v.is_nan())
            .collect();
        assert_eq!(c["samples"], valid.len(), "{what} {c}");
        match number(&c["value"], what) {
            Some(v) => {
                let want = valid.iter().sum::<f64>() / valid.len() as f64;
                assert!((v - want).abs() < 1e-12, "{what} {c}");
            }
            None => assert!(valid.is_empty(), "{what} {c}"),
        }
    }
}

#[test]
fn segmenter_and_quick_eval_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_dataset(&data);
    let d = data.to_str().unwrap();

    // The segmenter on its own.
    let seg = tmp.path().join("seg");
    let s = seg.to_str().unwrap();
    let stdout = ok(&[
        "segmenter",
        "train",
        "--data",
        d,
        "--out",
        s,
        "--epochs",
        "2",
        "--channels",
        "8,16,32",
        "--strides",
        "2,2",
        "--seed",
        "1",
        "--flips",
    ]);
    assert!(stdout.contains("best epoch"), "{stdout}");
    for f in ["model.safetensors", "segmenter.json", "history.csv"] {
        assert!(seg.join(f).is_file(), "missing {f}");
    }
    let history = std::fs::read_to_string(seg.join("history.csv")).unwrap();
    assert_eq!(history.lines().count(), 3, "{history}");
    let pred = tmp.path().join("pred");
    ok(&[
        "segmenter",
        "predict",
        "--segmenter",
        s,
        "--images",
        &format!("{d}/img/test"),
        "--out",
        pred.to_str().unwrap(),
    ]);
    for i in 0..4 {
        let labels = read_labels(&pred.join(format!("test_{i:02}.png")));
        assert!(labels.iter().all(|&v| (v as usize) < CLASSES));
    }
    // A wrong-size image is refused, naming the file.
    let odd = tmp.path().join("odd.png");
    image::GrayImage::new(20, 20).save(&odd).unwrap();
    let out = segdiff(&[
        "segmenter",
        "predict",
        "--segmenter",
        s,
        "--images",
        odd.to_str().unwrap(),
        "--out",
        pred.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("odd.png") && err.contains("20×20"), "{err}");

    // A tiny guided model, trained for a few steps.
    let model = tmp.path().join("model");
    let m = model.to_str().unwrap();
    ok(&[
        "train",
        "--data",
        d,
        "--out",
        m,
        "--channels",
        "8,16",
        "--norm-groups",
        "4",
        "--layers-per-block",
        "1",
        "--batch-size",
        "4",
        "--steps",
        "3",
        "--warmup-steps",
        "1",
        "--checkpoint-every",
        "3",
        "--seed",
        "3",
    ]);

    let out_dir = tmp.path().join("eval");
    let o = out_dir.to_str().unwrap();
    let eval_args = |extra: &[&'static str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "eval",
            "--dataset",
            d,
            "--model",
            m,
            "--quick",
            "--out",
            o,
            "--seed",
            "5",
            "--steps",
            "4",
            "--batch-size",
            "3",
            "--segmenter-epochs",
            "3",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };

    // Shard 1 of 2 generates only its batches; the full run reuses them.
    let stdout = ok(&as_strs(&eval_args(&["--shard", "1/2"])));
    assert!(stdout.contains("without --shard"), "{stdout}");
    assert!(!out_dir.join("report.json").exists());
    let stdout = ok(&as_strs(&eval_args(&[])));
    assert!(
        stdout.contains("Table 1") && stdout.contains("report.md"),
        "{stdout}"
    );

    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("report.json")).unwrap())
            .unwrap();
    let md = std::fs::read_to_string(out_dir.join("report.md")).unwrap();
    for heading in [
        "## Table 2",
        "## Table 1",
        "FID",
        "PSNR",
        "HD95",
        "## Timings",
        "--seed 5",
    ] {
        assert!(md.contains(heading), "report.md lacks {heading}:\n{md}");
    }
    assert_eq!(report["seed"], 5);
    assert_eq!(report["quick"], true);
    assert!(report["command"]
        .as_str()
        .unwrap()
        .contains("eval --dataset"));
    // Quick subsets: 8 of 10 training pairs, all 3 val and 4 test pairs.
    assert_eq!(report["data"]["train_used"], 8);
    assert_eq!(report["data"]["train_total"], 10);
    assert_eq!(report["data"]["test_used"], 4);
    // 4 test images in batches of 3: shard 1/2 made batch [0, 3), the full run the rest.
    assert_eq!(report["sampling"]["test_images"]["reused"], 3);
    assert_eq!(report["sampling"]["test_images"]["generated"], 1);
    assert_eq!(report["sampling"]["steps"], 4);
    for t in report["timings"].as_array().unwrap() {
        assert!(finite(&t["seconds"], "timing") >= 0.0);
    }
    assert_eq!(report["timings"].as_array().unwrap().len(), 7);
    finite(&report["fid"]["fid"], "FID");
    finite(&report["image_similarity"]["psnr"], "PSNR");
    let ssim = finite(&report["image_similarity"]["ssim"], "SSIM");
    assert!((-1.0..=1.0).contains(&ssim));
    assert!(report["skipped"].as_array().unwrap().is_empty());
    for f in [
        "segmenter-real/segmenter.json",
        "segmenter-generated/segmenter.json",
        "sheet.png",
    ] {
        assert!(out_dir.join(f).is_file(), "missing {f}");
    }
    let sheet = image::open(out_dir.join("sheet.png")).unwrap();
    // 4 rows × 4 columns of 128-pixel tiles (32² enlarged 4×) with 2-pixel gaps.
    assert_eq!((sheet.width(), sheet.height()), (4 * 128 + 6, 4 * 128 + 6));

    // Table 2 and HD95 from the written segmentations and the dataset's masks.
    let names: Vec<String> = report["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        names,
        ["test_00.png", "test_01.png", "test_02.png", "test_03.png"]
    );
    let seg_gen = label_maps(
        &names
            .iter()
            .map(|n| {
                out_dir
                    .join("segmentations/generated")
                    .join(format!("condon_{n}"))
            })
            .collect::<Vec<_>>(),
    );
    let seg_real = label_maps(
        &names
            .iter()
            .map(|n| out_dir.join("segmentations/real").join(n))
            .collect::<Vec<_>>(),
    );
    let masks = label_maps(
        &names
            .iter()
            .map(|n| data.join("mask/all/test").join(n))
            .collect::<Vec<_>>(),
    );
    let t2 = &report["table2"];
    assert_table_matches(
        &t2["vs_input_mask"],
        &seg_gen,
        &masks,
        "Dice(seg(gen), mask)",
    );
    assert_table_matches(
        &t2["vs_segmentation_of_real"],
        &seg_gen,
        &seg_real,
        "Dice(seg(gen), seg(real))",
    );
    assert_table_matches(
        &t2["real_reference"],
        &seg_real,
        &masks,
        "Dice(seg(real), mask)",
    );
    assert_table_matches(
        &report["table1"]["real_trained"],
        &seg_real,
        &masks,
        "Table 1 real",
    );
    finite(
        &report["table1"]["synthetic_trained"]["mean"],
        "Table 1 generated",
    );
    let per_sample = dice(&seg_gen, &masks, &DiceConfig::new(CLASSES)).unwrap();
    for (i, s) in report["samples"].as_array().unwrap().iter().enumerate() {
        let valid: Vec<f64> = per_sample
            .row(i)
            .iter()
            .copied()
            .filter(|v| !v.is_nan())
            .collect();
        let want = valid.iter().sum::<f64>() / valid.len() as f64;
        assert!((finite(&s["dice_vs_mask"], "sample Dice") - want).abs() < 1e-12);
        assert_eq!(
            s["generated"],
            format!("generated/test/condon_{}", names[i])
        );
    }

    // The generated test images are those `segdiff sample` makes with the same settings.
    let sampled = tmp.path().join("sampled");
    ok(&[
        "sample",
        "--model",
        m,
        "--masks",
        &format!("{d}/mask/all/test"),
        "--out",
        sampled.to_str().unwrap(),
        "--steps",
        "4",
        "--batch-size",
        "3",
        "--seed",
        "5",
    ]);
    for n in &names {
        let name = format!("condon_{n}");
        let a = image::open(sampled.join(&name)).unwrap().to_luma8();
        let b = image::open(out_dir.join("generated/test").join(&name))
            .unwrap()
            .to_luma8();
        assert_eq!(a.as_raw(), b.as_raw(), "{name}");
    }

    // Rerunning with other sampling settings into the same folder is refused, naming the file.
    let mut other = eval_args(&[]);
    let steps_at = other.iter().position(|a| a == "--steps").unwrap();
    other[steps_at + 1] = "6".into();
    let out = segdiff(&as_strs(&other));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("generation.json") && err.contains("steps"),
        "{err}"
    );

    // An unconditional model with the segmenter trained above: FID and Table 1 (on
    // pseudo-labels); what needs masks is skipped and said so.
    let unc = tmp.path().join("unconditional");
    let u = unc.to_str().unwrap();
    ok(&[
        "train",
        "--data",
        d,
        "--out",
        u,
        "--unconditional",
        "--channels",
        "8,16",
        "--norm-groups",
        "4",
        "--layers-per-block",
        "1",
        "--batch-size",
        "4",
        "--steps",
        "2",
        "--warmup-steps",
        "1",
        "--checkpoint-every",
        "2",
        "--seed",
        "4",
    ]);
    let unc_out = tmp.path().join("eval-unconditional");
    ok(&[
        "eval",
        "--dataset",
        d,
        "--model",
        u,
        "--segmenter",
        s,
        "--quick",
        "--out",
        unc_out.to_str().unwrap(),
        "--steps",
        "3",
        "--segmenter-epochs",
        "2",
        "--segmenter-channels",
        "8,16,32",
        "--segmenter-strides",
        "2,2",
    ]);
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(unc_out.join("report.json")).unwrap())
            .unwrap();
    for key in ["table2", "image_similarity", "hd95"] {
        assert!(report[key].is_null(), "{key}: {}", report[key]);
    }
    let skipped = report["skipped"].to_string();
    assert!(
        skipped.contains("Table 2") && skipped.contains("unconditional"),
        "{skipped}"
    );
    finite(&report["fid"]["fid"], "unconditional FID");
    finite(&report["table1"]["real_trained"]["mean"], "Table 1 real");
    assert!(report["table1"]["synthetic_labels"]
        .as_str()
        .unwrap()
        .contains("pseudo-labels"));
    assert_eq!(report["real_segmenter"]["trained_here"], false);
    assert_eq!(report["real_segmenter"]["dir"], s);
    // The loaded segmenter was trained with flips, the generated-image one without: same
    // network and epochs, so only that difference is noted.
    let notes = report["notes"].to_string();
    assert!(notes.contains("flips true vs false"), "{notes}");
    assert!(
        !notes.contains("epochs") && !notes.contains("channels"),
        "{notes}"
    );
    assert_eq!(report["synthetic_segmenter"]["epochs"], 2);
    assert!(unc_out.join("generated/test/sample_00000.png").is_file());
    assert!(unc_out
        .join("segmentations/generated/sample_00003.png")
        .is_file());
    assert!(!unc_out.join("segmenter-real").exists());
    let md = std::fs::read_to_string(unc_out.join("report.md")).unwrap();
    assert!(
        md.contains("## Skipped") && md.contains("unconditional"),
        "{md}"
    );
}
