//! `segdiff sweep-samplers` on the bundled MNI model: a tiny grid (2 masks, ddim and dpm++ at 2
//! and 3 steps) writes its report, and the numbers in it are sane.

mod common;
use common::*;

use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn sweeps_two_samplers_on_the_bundled_model() {
    let demo = workspace().join("assets/mni-demo");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("sweep");
    let run = segdiff(&[
        "sweep-samplers",
        "--model",
        demo.join("model").to_str().unwrap(),
        "--masks",
        demo.join("data/mask/all/test").to_str().unwrap(),
        "--count",
        "2",
        "--samplers",
        "ddim,dpm++",
        "--steps",
        "2,3",
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    ok(&run);
    for f in ["sweep.md", "sweep.json", "sweep.png"] {
        assert!(out.join(f).is_file(), "missing {f}");
    }
    let printed: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    let file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("sweep.json")).unwrap()).unwrap();
    assert_eq!(printed, file);
    assert_eq!(file["images"], 2);
    assert!(file["real_images"].is_null());
    let rows = file["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 4, "{file}");
    let mut seen = Vec::new();
    for r in rows {
        let dice = r["dice"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&dice), "Dice {dice} in {r}");
        let steps = r["steps"].as_u64().unwrap();
        assert_eq!(r["calls_per_image"].as_f64().unwrap(), steps as f64, "{r}");
        assert!(r["seconds_per_image"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["fid"].is_null(), "{r}");
        seen.push((r["sampler"].as_str().unwrap().to_string(), steps));
    }
    seen.sort();
    assert_eq!(
        seen,
        [
            ("ddim".into(), 2),
            ("ddim".into(), 3),
            ("dpm++".into(), 2),
            ("dpm++".into(), 3)
        ]
    );
    let calls: Vec<f64> = rows
        .iter()
        .map(|r| r["calls_per_image"].as_f64().unwrap())
        .collect();
    assert!(
        calls.windows(2).all(|w| w[0] <= w[1]),
        "not sorted by calls: {calls:?}"
    );
    assert!(rows.iter().any(|r| r["pareto"] == true), "{file}");
    let md = std::fs::read_to_string(out.join("sweep.md")).unwrap();
    assert!(md.contains("★") && md.contains("FID: not computed"), "{md}");
}

#[test]
fn a_bad_sampler_name_is_a_command_line_error() {
    let out = segdiff(&[
        "sweep-samplers",
        "--model",
        "m",
        "--masks",
        "masks",
        "--samplers",
        "ddim,nope",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nope") && err.contains("dpm++"), "{err}");
}

#[test]
fn a_missing_model_fails_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no-such-model");
    let out = segdiff(&[
        "sweep-samplers",
        "--model",
        missing.to_str().unwrap(),
        "--masks",
        tmp.path().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no-such-model"), "{err}");
}
