//! `segdiff train --eval-every`: the training monitor's `val_dice` columns, the best checkpoint
//! it keeps, `training.html`, and a resumed run that keeps the evaluation schedule and the best.

mod common;
use common::*;

use std::path::Path;

fn write_dataset(root: &Path) {
    write_squares_dataset(root, &[("train", 8), ("val", 3)], 777);
}

fn train_args(data: &str, out: &str, steps: &'static str) -> Vec<String> {
    let mut args = tiny_train_args(data, out, steps);
    args.extend(
        [
            "--lr",
            "3e-3",
            "--checkpoint-every",
            "2",
            "--keep-checkpoints",
            "10",
            "--seed",
            "5",
            "--eval-every",
            "2",
            "--eval-count",
            "3",
            "--eval-steps",
            "3",
            "--eval-segmenter-epochs",
            "2",
        ]
        .map(String::from),
    );
    args
}

fn run(args: &[String]) -> String {
    let out = segdiff_owned(args);
    ok(&out);
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `(step, val_dice, per-class)` of every logged evaluation.
fn evaluations(model: &Path) -> Vec<(usize, f64, Vec<f64>)> {
    let text = std::fs::read_to_string(model.join("train_log.csv")).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let at = header.iter().position(|h| *h == "val_dice").unwrap();
    assert_eq!(&header[at + 1..], ["dice_a", "dice_b"]);
    lines
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (!f[at].is_empty()).then(|| {
                (
                    f[0].parse().unwrap(),
                    f[at].parse().unwrap(),
                    f[at + 1..].iter().map(|v| v.parse().unwrap()).collect(),
                )
            })
        })
        .collect()
}

fn best_step(model: &Path) -> (usize, f64) {
    let record: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(model.join("checkpoints/best/evaluation.json")).unwrap(),
    )
    .unwrap();
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(model.join("checkpoints/best/training_state.json")).unwrap(),
    )
    .unwrap();
    let step = record["step"].as_u64().unwrap() as usize;
    assert_eq!(state["step"].as_u64().unwrap() as usize, step);
    (step, record["score"].as_f64().unwrap())
}

/// The first step with the highest `val_dice` (a later equal score is not a new best).
fn logged_best(evals: &[(usize, f64, Vec<f64>)]) -> (usize, f64) {
    evals.iter().fold(
        (0, f64::MIN),
        |(s, b), &(step, v, _)| {
            if v > b {
                (step, v)
            } else {
                (s, b)
            }
        },
    )
}

#[test]
fn monitor_logs_dice_keeps_the_best_and_survives_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_dataset(&data);
    let (full, split) = (tmp.path().join("full"), tmp.path().join("split"));
    let d = data.to_str().unwrap();

    let log = run(&train_args(d, full.to_str().unwrap(), "8"));
    assert!(
        log.contains("trained its segmenter on 8 training images in"),
        "{log}"
    );
    let evals = evaluations(&full);
    assert_eq!(
        evals.iter().map(|e| e.0).collect::<Vec<_>>(),
        [2, 4, 6, 8],
        "an evaluation every 2 steps"
    );
    for (step, mean, per_class) in &evals {
        assert!((0.0..=1.0).contains(mean), "step {step}: val_dice {mean}");
        assert_eq!(per_class.len(), 2);
        assert!(per_class.iter().all(|v| (0.0..=1.0).contains(v)));
    }
    let (step, score) = best_step(&full);
    let (logged_step, logged_score) = logged_best(&evals);
    assert_eq!(
        step, logged_step,
        "the best checkpoint is the logged best step"
    );
    assert!(
        (score - logged_score).abs() <= 5e-7,
        "{score} vs {logged_score} (6 decimals)"
    );
    assert!(full
        .join("checkpoints/best/unet/diffusion_pytorch_model.safetensors")
        .is_file());
    for s in [2, 4, 6, 8] {
        assert!(full.join(format!("eval/step-{s:07}.png")).is_file());
    }
    let page = std::fs::read_to_string(full.join("training.html")).unwrap();
    assert!(page.contains("eval/step-0000008.png") && page.contains("loss.png"));

    // A run killed after step 8's evaluation with only its step-4 checkpoint on disk (the later
    // ones removed), resumed: the log loses the rows after step 4 and regains them, the
    // evaluations land on the same steps with the same values, the monitor's segmenter is
    // reused and the best checkpoint stays the same.
    copy_dir(&full, &split);
    for s in [6, 8] {
        std::fs::remove_dir_all(split.join(format!("checkpoints/step-{s:07}"))).unwrap();
    }
    let mut resume = train_args(d, split.to_str().unwrap(), "8");
    resume.push("--resume".into());
    let log = run(&resume);
    assert!(log.contains("reusing the segmenter"), "{log}");
    assert!(
        log.contains("resuming") || log.contains("step-0000004"),
        "{log}"
    );
    assert_eq!(evaluations(&split), evals);
    assert_eq!(best_step(&split), (step, score));
    let rows = std::fs::read_to_string(split.join("train_log.csv")).unwrap();
    assert_eq!(
        rows,
        std::fs::read_to_string(full.join("train_log.csv")).unwrap()
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

#[test]
fn monitor_refuses_what_it_cannot_measure() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_dataset(&data);
    let d = data.to_str().unwrap();
    let out = tmp.path().join("m");
    let mut args = train_args(d, out.to_str().unwrap(), "2");
    args.push("--unconditional".into());
    let r = segdiff_owned(&args);
    assert_eq!(r.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&r.stderr).contains("segmentation-guided"));
    // A segmenter for other classes is refused before training starts.
    let seg = tmp.path().join("seg");
    let r = segdiff(&[
        "segmenter",
        "train",
        "--data",
        d,
        "--out",
        seg.to_str().unwrap(),
        "--epochs",
        "1",
        "--num-classes",
        "4",
    ]);
    ok(&r);
    let mut args = train_args(d, out.to_str().unwrap(), "2");
    args.extend(["--segmenter".to_string(), seg.display().to_string()]);
    let r = segdiff_owned(&args);
    assert_eq!(r.status.code(), Some(1));
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(err.contains("segments 4 classes"), "{err}");
    assert!(!out.join("checkpoints").exists(), "nothing trained");
}

#[test]
fn train_refuses_a_broken_dataset_before_step_1() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_dataset(&data);
    // A colour mask and a mask with class id 7 of 3 classes.
    let colour = data.join("mask/all/train/train_1.png");
    image::RgbImage::from_fn(16, 16, |x, _| {
        image::Rgb(if x < 8 { [0, 0, 0] } else { [255, 0, 0] })
    })
    .save(&colour)
    .unwrap();
    let high = data.join("mask/all/val/val_0.png");
    image::GrayImage::from_pixel(16, 16, image::Luma([7u8]))
        .save(&high)
        .unwrap();
    let out = tmp.path().join("m");
    let args = train_args(data.to_str().unwrap(), out.to_str().unwrap(), "2");
    let r = segdiff_owned(&args);
    assert_eq!(r.status.code(), Some(1));
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(err.contains("training not started"), "{err}");
    assert!(
        err.contains("train_1.png") && err.contains("val_0.png"),
        "{err}"
    );
    assert!(!out.join("checkpoints").exists() && !out.join("train_log.csv").exists());
    // The same data trains once the masks are fixed.
    write_dataset(&data);
    ok(&segdiff_owned(&args));
}
