//! `segdiff sample-volume` end to end: a tiny model trained here generates a volume from a label
//! NIfTI stored with permuted axes and a shifted, flipped affine; the output lies on the labels'
//! grid (NIfTI and DICOM), the planes picture is written, and label errors and shards behave.

mod common;
use common::*;

use std::path::Path;

use segdiff_data::synthetic::{phantom, write_nifti_i16};
use segdiff_data::{read_nifti, read_nifti_geometry, reorient_to_ras, Volume};

fn write_dataset(root: &Path) {
    write_squares_dataset(root, &[("train", 8), ("val", 1), ("test", 1)], 7);
}

fn train(data: &Path, model: &Path) {
    let mut args = tiny_train_args(data.to_str().unwrap(), model.to_str().unwrap(), "2");
    args.extend(["--checkpoint-every", "2", "--seed", "3"].map(String::from));
    ok(&segdiff_owned(&args));
}

/// The phantom's labels (classes 0..=3) stored with voxel axes permuted (file axis 0 = z,
/// 1 = x, 2 = y), the first one running inferior, and the origin shifted; `extra` sets one
/// voxel to another value.
fn write_labels(path: &Path, extra: Option<i16>) -> Volume<i16> {
    let (_, lab) = phantom([14, 12, 9], [1.0, 1.0, 1.0]);
    let mut data = lab
        .data
        .permuted_axes([2, 0, 1])
        .as_standard_layout()
        .mapv(i16::from);
    if let Some(v) = extra {
        data[[4, 6, 6]] = v;
    }
    let affine = [
        [0.0, 0.9, 0.0, -20.5],
        [0.0, 0.0, 1.2, 13.0],
        [-2.0, 0.0, 0.0, 31.25],
        [0.0, 0.0, 0.0, 1.0],
    ];
    let vol = Volume { data, affine };
    write_nifti_i16(path, &vol).unwrap();
    vol
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn sample_volume_writes_on_the_label_grid() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, model) = (tmp.path().join("data"), tmp.path().join("model"));
    write_dataset(&data);
    train(&data, &model);
    let m = model.to_str().unwrap();
    let labels = tmp.path().join("case_a.nii.gz");
    let vol = write_labels(&labels, None);
    let l = labels.to_str().unwrap();

    // NIfTI, [0, 1] float32, along the coronal axis.
    let out = tmp.path().join("gen/a.nii.gz");
    let run = segdiff(&[
        "sample-volume",
        "--model",
        m,
        "--labels",
        l,
        "--out",
        out.to_str().unwrap(),
        "--independent",
        "--steps",
        "2",
        "--seed",
        "5",
        "--axis",
        "coronal",
        "--json",
    ]);
    ok(&run);
    let report: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(report[0]["slices"], 12);
    let generated = report[0]["generated"].as_u64().unwrap();
    assert!((1..=12).contains(&generated), "{generated}");
    assert_eq!(
        read_nifti_geometry(&out, 0).unwrap(),
        read_nifti_geometry(&labels, 0).unwrap()
    );
    let gen = read_nifti(&out, 0).unwrap().volume;
    assert_eq!(gen.shape(), vol.shape());
    assert!(gen.data.iter().all(|v| (0.0..=1.0).contains(v)));
    let planes = tmp.path().join("gen/a_planes.png");
    assert!(planes.is_file());
    assert_eq!(report[0]["planes"], planes.to_str().unwrap());
    let names: Vec<_> = std::fs::read_dir(tmp.path().join("gen")).unwrap().collect();
    assert_eq!(names.len(), 2, "only the volume and its picture: {names:?}");

    // A DICOM series in a window: the same world grid once reoriented.
    let dcm = tmp.path().join("dcm");
    ok(&segdiff(&[
        "sample-volume",
        "--model",
        m,
        "--labels",
        l,
        "--out",
        dcm.to_str().unwrap(),
        "--independent",
        "--steps",
        "2",
        "--intensity",
        "window",
        "--window",
        "-100,300",
    ]));
    let back = segdiff_data::read_dicom(&dcm).unwrap();
    assert!(back
        .volume
        .data
        .iter()
        .all(|v| (-100.5..=300.5).contains(v)));
    let a = reorient_to_ras(back.volume).unwrap();
    let b = reorient_to_ras(read_nifti(&labels, 0).unwrap().volume).unwrap();
    assert_eq!(a.shape(), b.shape());
    let d = segdiff_data::volume::affine_max_abs_diff(&a.affine, &b.affine);
    assert!(d < 1e-3, "affines differ by {d}");
    assert!(tmp.path().join("dcm_planes.png").is_file());

    // A window needs a record or --window, and says so.
    let bad = segdiff(&[
        "sample-volume",
        "--model",
        m,
        "--labels",
        l,
        "--out",
        tmp.path().join("w.nii").to_str().unwrap(),
        "--intensity",
        "window",
        "--steps",
        "1",
    ]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(stderr(&bad).contains("--window"), "{}", stderr(&bad));
    assert!(!tmp.path().join("w.nii").exists());

    // Class 3 and value 9 are not among the model's classes: an error when strict.
    let odd = tmp.path().join("odd.nii.gz");
    write_labels(&odd, Some(9));
    let strict = segdiff(&[
        "sample-volume",
        "--model",
        m,
        "--labels",
        odd.to_str().unwrap(),
        "--out",
        tmp.path().join("s.nii").to_str().unwrap(),
        "--steps",
        "1",
        "--strict-labels",
        "--label-map",
        "1=a,2=b,3=b",
    ]);
    assert_eq!(strict.status.code(), Some(1));
    let e = stderr(&strict);
    assert!(e.contains('9') && e.contains("odd.nii.gz"), "{e}");
    assert!(!tmp.path().join("s.nii").exists());

    // The neighbour window and gate are checked flags (exit 2, naming the accepted values);
    // a valid pair runs.
    for (flag, value, says) in [
        ("--neighbour-window", "0.5,0.5", "FROM < UNTIL"),
        ("--neighbour-window", "1,2", "FROM < UNTIL"),
        ("--neighbour-gate", "sometimes", "agreeing"),
    ] {
        let out = tmp.path().join("flag.nii");
        let bad = segdiff(&[
            "sample-volume",
            "--model",
            m,
            "--labels",
            l,
            "--out",
            out.to_str().unwrap(),
            flag,
            value,
        ]);
        assert_eq!(bad.status.code(), Some(2), "{flag} {value}");
        assert!(stderr(&bad).contains(says), "{}", stderr(&bad));
        assert!(!out.exists());
    }
    let windowed = tmp.path().join("windowed.nii.gz");
    ok(&segdiff(&[
        "sample-volume",
        "--model",
        m,
        "--labels",
        l,
        "--out",
        windowed.to_str().unwrap(),
        "--steps",
        "2",
        "--neighbour-window",
        "0.5,1",
        "--neighbour-gate",
        "everywhere",
    ]));
    assert!(windowed.is_file());

    // Shards split the list of volumes; each volume is named after its labels.
    let many = tmp.path().join("many");
    ok(&segdiff(&[
        "sample-volume",
        "--model",
        m,
        "--labels",
        l,
        odd.to_str().unwrap(),
        "--out",
        many.to_str().unwrap(),
        "--steps",
        "1",
        "--independent",
        "--shard",
        "2/2",
    ]));
    assert!(many.join("odd_synthetic.nii.gz").is_file());
    assert!(many.join("odd_synthetic_planes.png").is_file());
    assert!(!many.join("case_a_synthetic.nii.gz").exists());
}
