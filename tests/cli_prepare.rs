//! `segdiff prepare` end to end: MNI T1 + tissue maps along three axes, NIfTI with a label map,
//! and the errors a user meets.

mod common;
use common::*;

use std::path::{Path, PathBuf};

fn data_fixture(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../segdiff-data/tests/fixtures")
        .join(p)
}

fn count_png(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "png")
            })
            .count()
        })
        .unwrap_or(0)
}

#[test]
fn mni_tissue_maps_along_three_axes() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("mni");
    let t1 = data_fixture("mni_small/mni_t1_sub3.nii.gz");
    let maps = format!(
        "{},{}",
        data_fixture("mni_small/mni_gm_sub3.nii.gz").display(),
        data_fixture("mni_small/mni_wm_sub3.nii.gz").display()
    );
    let o = segdiff(&[
        "prepare",
        "--image",
        t1.to_str().unwrap(),
        "--tissue-maps",
        &maps,
        "--modality",
        "mri",
        "--axes",
        "axial,coronal,sagittal",
        "--size",
        "32",
        "--min-pixels",
        "16",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("dataset.json")).unwrap()).unwrap();
    assert_eq!(info["num_classes"], 4);
    assert_eq!(info["class_names"][3], "white_matter");
    assert_eq!(info["size"], 32);
    assert!(info["command"].as_str().unwrap().contains("--tissue-maps"));
    let manifest = std::fs::read_to_string(out.join("manifest.csv")).unwrap();
    for axis in ["axial", "coronal", "sagittal"] {
        assert!(manifest.contains(&format!(",{axis},")), "no {axis} slices");
    }
    let rows = manifest.lines().count() - 1;
    // One volume: every slice lands in train (splits are by volume).
    assert_eq!(count_png(&out.join("img/train")), rows);
    assert_eq!(count_png(&out.join("mask/all/train")), rows);
    let mask = image::open(
        out.join("mask/all/train").join(
            std::fs::read_dir(out.join("mask/all/train"))
                .unwrap()
                .next()
                .unwrap()
                .unwrap()
                .file_name(),
        ),
    )
    .unwrap()
    .to_luma8();
    assert_eq!(mask.dimensions(), (32, 32));
    assert!(mask.pixels().all(|p| p.0[0] < 4));
    // The dataset trains as it is.
    let o = segdiff(&[
        "train",
        "--data",
        out.to_str().unwrap(),
        "--out",
        tmp.path().join("m").to_str().unwrap(),
        "--channels",
        "8,16",
        "--norm-groups",
        "4",
        "--layers-per-block",
        "1",
        "--batch-size",
        "4",
        "--steps",
        "1",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn bad_inputs_are_clear_errors_with_no_output() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("x");
    let junk = tmp.path().join("junk.nii");
    std::fs::write(&junk, b"definitely not nifti").unwrap();
    let o = segdiff(&[
        "prepare",
        "--image",
        junk.to_str().unwrap(),
        "--num-classes",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("junk.nii"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!out.exists());
    let img = data_fixture("nifti/anatomical.nii");
    let o = segdiff(&[
        "prepare",
        "--image",
        img.to_str().unwrap(),
        "--modality",
        "ct",
        "--num-classes",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--ct-window"));
    let o = segdiff(&[
        "prepare",
        "--image",
        img.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(!out.exists());
}
