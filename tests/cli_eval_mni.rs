//! `segdiff eval --quick` end to end on real MRI: the MNI ICBM152 axial slices (256², resized to
//! 32² on load) with a tiny model trained for a few steps by `segdiff train`.

mod common;
use common::*;

use std::path::Path;

#[test]
fn quick_eval_on_mni_slices() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/mni152_axial_256");
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    let out = tmp.path().join("eval");
    let d = data.to_str().unwrap();
    ok(&segdiff(&[
        "train",
        "--data",
        d,
        "--out",
        model.to_str().unwrap(),
        "--size",
        "32",
        "--num-classes",
        "4",
        "--channels",
        "8,16,16",
        "--norm-groups",
        "4",
        "--layers-per-block",
        "1",
        "--batch-size",
        "4",
        "--steps",
        "3",
        "--ablation",
    ]));
    ok(&segdiff(&[
        "eval",
        "--dataset",
        d,
        "--model",
        model.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--quick",
        "--size",
        "32",
        "--num-classes",
        "4",
        "--steps",
        "3",
        "--segmenter-epochs",
        "2",
        "--segmenter-channels",
        "8,16,32",
        "--segmenter-strides",
        "2,2",
    ]));
    for f in ["report.md", "report.json", "sheet.png"] {
        assert!(out.join(f).is_file(), "missing {f}");
    }
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let text = report.to_string();
    assert!(text.contains("fid"), "{text}");
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("Table 1") && md.contains("Table 2"), "{md}");
}
