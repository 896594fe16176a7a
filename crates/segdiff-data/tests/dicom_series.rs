//! DICOM series assembly on synthetic files: sort fallbacks, MONOCHROME1, grouping.

mod common;

use common::*;
use segdiff_data::{read_dicom, scan_dicom};

#[test]
fn missing_geometry_falls_back_to_instance_number_with_warning() {
    let tmp = tempfile::tempdir().unwrap();
    for (file, instance) in [("a.dcm", 3i64), ("b.dcm", 1), ("c.dcm", 2)] {
        let mut s = SliceSpec::ct("5.5", instance, 4, 4, 0.0, (instance * 10) as i16);
        s.position = None;
        s.orientation = None;
        write_slice(&tmp.path().join(file), &s);
    }
    let v = read_dicom(tmp.path()).unwrap();
    assert!(
        v.warnings
            .iter()
            .any(|w| w.contains("sorted by InstanceNumber")),
        "{:?}",
        v.warnings
    );
    for k in 0..3 {
        assert_eq!(
            v.volume.data[[0, 0, k]],
            ((k as i16 + 1) * 10) as f32 - 1024.0,
            "slice {k}"
        );
    }
}

#[test]
fn monochrome1_is_inverted_over_the_stored_range() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = SliceSpec::ct("6.6", 1, 4, 4, 0.0, 100);
    s.photometric = "MONOCHROME1";
    write_slice(&tmp.path().join("m1.dcm"), &s);
    let v = read_dicom(&tmp.path().join("m1.dcm")).unwrap();
    // Signed 16-bit stored range [-32768, 32767], rescaled by -1024: lo + hi = -2049.
    for c in 0..4 {
        let raw = 100 + (c % 7) as i32;
        assert_eq!(v.volume.data[[c, 0, 0]], (-2049 - (raw - 1024)) as f32);
    }
    // Brighter stored values become darker.
    assert!(v.volume.data[[1, 0, 0]] < v.volume.data[[0, 0, 0]]);
}

#[test]
fn folders_group_series_and_list_segmentations() {
    let tmp = tempfile::tempdir().unwrap();
    let sub = tmp.path().join("nested/deeper");
    std::fs::create_dir_all(&sub).unwrap();
    for k in 0..3 {
        write_slice(
            &sub.join(format!("a{k}.dcm")),
            &SliceSpec::ct("1.1", k + 1, 4, 4, k as f64, 0),
        );
        write_slice(
            &tmp.path().join(format!("b{k}")),
            &SliceSpec::ct("2.2", k + 1, 4, 4, k as f64, 0),
        );
    }
    std::fs::copy(
        fixtures().join("dicom/liver_1frame.dcm"),
        tmp.path().join("seg.dcm"),
    )
    .unwrap();
    let scan = scan_dicom(tmp.path()).unwrap();
    assert_eq!(scan.series.len(), 2);
    let uids: Vec<&str> = scan.series.iter().map(|s| s.series_uid.as_str()).collect();
    assert_eq!(uids, ["1.1", "2.2"]);
    assert!(scan
        .series
        .iter()
        .all(|s| s.files.len() == 3 && s.frames == 3));
    assert_eq!(scan.segmentations.len(), 1);
    // Files without extension are found through their DICM marker.
    assert!(scan.series[1].files[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .starts_with('b'));
}
