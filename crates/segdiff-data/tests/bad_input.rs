//! Bad input: every case must give an error naming the file (or option) and the problem, never a
//! panic, and `prepare` must leave no output and no temporary folder behind.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use ndarray::Array3;
use segdiff_data::synthetic::{phantom, write_nifti_u8};
use segdiff_data::{
    prepare, read_dicom, read_dicom_pixels, DataError, Dataset, DatasetOptions, InputSpec,
    LabelMapping, PrepareOptions, Split, Volume,
};

/// Run `prepare` expecting failure; check the message mentions every `needles` item and that the
/// output folder's parent holds only `keep`.
fn prepare_fails(opts: &PrepareOptions, needles: &[&str]) -> DataError {
    let parent = opts.out_dir.parent().unwrap().to_path_buf();
    let before = dir_names(&parent);
    let err = prepare(opts, &|_| {}).expect_err("prepare should fail");
    let msg = err.to_string();
    for n in needles {
        assert!(msg.contains(n), "error `{msg}` should mention `{n}`");
    }
    assert!(!opts.out_dir.exists(), "no output after a failure: {msg}");
    assert_eq!(
        dir_names(&parent),
        before,
        "nothing left beside the output: {msg}"
    );
    err
}

fn opts_for(image: &Path, label: Option<PathBuf>, out: &Path) -> PrepareOptions {
    let mut o = PrepareOptions::new(
        vec![InputSpec {
            image: image.to_path_buf(),
            label,
            ..Default::default()
        }],
        out,
        LabelMapping::identity_count(4).unwrap(),
    );
    o.size = 16;
    o
}

fn ct_folder(dir: &Path, zs: &[f64]) {
    std::fs::create_dir_all(dir).unwrap();
    for (i, z) in zs.iter().enumerate() {
        write_slice(
            &dir.join(format!("s{i}.dcm")),
            &SliceSpec::ct("1.2.3", i as i64 + 1, 8, 8, *z, 40),
        );
    }
}

#[test]
fn truncated_and_non_dicom_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ct");
    std::fs::create_dir_all(&dir).unwrap();
    let good = std::fs::read(fixtures().join("dicom/CT_small.dcm")).unwrap();
    std::fs::write(dir.join("cut.dcm"), &good[..good.len() / 2]).unwrap();
    let e = prepare_fails(&opts_for(&dir, None, &tmp.path().join("out")), &["cut.dcm"]);
    assert!(
        matches!(
            e,
            DataError::PixelData { .. } | DataError::DicomParse { .. }
        ),
        "{e}"
    );

    let dir2 = tmp.path().join("ct2");
    std::fs::create_dir_all(&dir2).unwrap();
    std::fs::write(dir2.join("notes.dcm"), b"this is not a DICOM file at all").unwrap();
    let e = prepare_fails(
        &opts_for(&dir2, None, &tmp.path().join("out")),
        &["notes.dcm", "not a readable DICOM"],
    );
    assert!(matches!(e, DataError::DicomParse { .. }), "{e}");
    // Header cut inside the meta group.
    std::fs::write(dir2.join("notes.dcm"), &good[..200]).unwrap();
    prepare_fails(
        &opts_for(&dir2, None, &tmp.path().join("out")),
        &["notes.dcm"],
    );
    // A stray README next to good files is skipped with a warning, not an error.
    let dir3 = tmp.path().join("ct3");
    ct_folder(&dir3, &[0.0, 1.0, 2.0]);
    std::fs::write(dir3.join("README.txt"), b"hello").unwrap();
    let s = prepare(&opts_for(&dir3, None, &tmp.path().join("ok")), &|_| {}).unwrap();
    assert!(
        s.warnings.iter().any(|w| w.contains("README.txt")),
        "{:?}",
        s.warnings
    );
}

#[test]
fn missing_pixel_data() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ct");
    std::fs::create_dir_all(&dir).unwrap();
    let mut s = SliceSpec::ct("1.2.3", 1, 8, 8, 0.0, 0);
    s.pixels = None;
    write_slice(&dir.join("empty.dcm"), &s);
    let e = prepare_fails(
        &opts_for(&dir, None, &tmp.path().join("out")),
        &["empty.dcm", "no pixel data"],
    );
    assert!(matches!(e, DataError::NoPixelData { .. }), "{e}");
}

#[test]
fn unsupported_compression_names_file_and_syntax() {
    // JPEG, JPEG-LS and JPEG 2000 are decoded; HTJ2K (High-Throughput JPEG 2000) is not.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ct");
    std::fs::create_dir_all(&dir).unwrap();
    let mut s = SliceSpec::ct("1.2.3", 1, 8, 8, 0.0, 0);
    s.transfer_syntax = "1.2.840.10008.1.2.4.201";
    write_slice(&dir.join("htj2k.dcm"), &s);
    let e = read_dicom_pixels(&dir.join("htj2k.dcm")).unwrap_err();
    assert!(
        matches!(e, DataError::UnsupportedTransferSyntax { .. }),
        "{e}"
    );
    prepare_fails(
        &opts_for(&dir, None, &tmp.path().join("out")),
        &["htj2k.dcm", "1.2.840.10008.1.2.4.201", "HTJ2K Lossless"],
    );
}

#[test]
fn mixed_series_and_mismatched_slices() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ct");
    ct_folder(&dir, &[0.0, 1.0, 2.0]);
    write_slice(
        &dir.join("other.dcm"),
        &SliceSpec::ct("9.9.9", 1, 8, 8, 0.0, 0),
    );
    // Two series are fine as two volumes, but not with one label map or one id.
    let lab = tmp.path().join("lab.nii.gz");
    let e = prepare_fails(
        &opts_for(&dir, Some(lab), &tmp.path().join("out")),
        &["2 DICOM series", "9.9.9", "1.2.3"],
    );
    assert!(matches!(e, DataError::MixedSeries { .. }), "{e}");
    assert!(read_dicom(&dir).is_err());

    // Same series UID, different matrix size.
    let dir2 = tmp.path().join("ct2");
    ct_folder(&dir2, &[0.0, 1.0]);
    write_slice(
        &dir2.join("big.dcm"),
        &SliceSpec::ct("1.2.3", 3, 16, 8, 2.0, 0),
    );
    let e = prepare_fails(
        &opts_for(&dir2, None, &tmp.path().join("out")),
        &["big.dcm", "16x8"],
    );
    assert!(matches!(e, DataError::InconsistentSeries { .. }), "{e}");

    // Two slices at one position (e.g. two echoes in one series).
    let dir3 = tmp.path().join("ct3");
    ct_folder(&dir3, &[0.0, 1.0, 1.0, 2.0]);
    prepare_fails(
        &opts_for(&dir3, None, &tmp.path().join("out")),
        &["same position"],
    );
}

#[test]
fn inconsistent_slice_spacing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ct");
    ct_folder(&dir, &[0.0, 1.0, 2.0, 4.0, 5.0]);
    let e = prepare_fails(
        &opts_for(&dir, None, &tmp.path().join("out")),
        &["inconsistent slice spacing", "s3.dcm", "2.0000 mm"],
    );
    assert!(matches!(e, DataError::InconsistentSeries { .. }), "{e}");
}

#[test]
fn label_volume_with_other_shape_or_affine() {
    let tmp = tempfile::tempdir().unwrap();
    let (img, lab) = phantom([12, 10, 8], [1.0, 1.0, 2.0]);
    let ip = tmp.path().join("img.nii.gz");
    segdiff_data::synthetic::write_nifti_f32(&ip, &img).unwrap();
    // Other shape.
    let small = Volume {
        data: Array3::<u8>::zeros([12, 10, 7]),
        affine: lab.affine,
    };
    let lp = tmp.path().join("small_seg.nii.gz");
    write_nifti_u8(&lp, &small).unwrap();
    let e = prepare_fails(
        &opts_for(&ip, Some(lp), &tmp.path().join("out")),
        &["small_seg.nii.gz", "img.nii.gz", "shape"],
    );
    assert!(matches!(e, DataError::LabelGridMismatch { .. }), "{e}");
    // Same shape, shifted origin.
    let mut moved = lab.clone();
    moved.affine[0][3] += 5.0;
    let lp = tmp.path().join("moved_seg.nii.gz");
    write_nifti_u8(&lp, &moved).unwrap();
    let e = prepare_fails(
        &opts_for(&ip, Some(lp), &tmp.path().join("out")),
        &["moved_seg.nii.gz", "affines differ"],
    );
    assert!(matches!(e, DataError::LabelGridMismatch { .. }), "{e}");
    // Same world grid but stored with a flipped axis: accepted.
    let mut flipped = lab.clone();
    flipped.data.invert_axis(ndarray::Axis(1));
    for row in flipped.affine.iter_mut().take(3) {
        row[3] += row[1] * 9.0;
        row[1] = -row[1];
    }
    let flipped = Volume {
        data: flipped.data.as_standard_layout().to_owned(),
        affine: flipped.affine,
    };
    let lp = tmp.path().join("flipped_seg.nii.gz");
    write_nifti_u8(&lp, &flipped).unwrap();
    prepare(&opts_for(&ip, Some(lp), &tmp.path().join("ok")), &|_| {}).unwrap();
}

#[test]
fn class_ids_above_declared_count() {
    let tmp = tempfile::tempdir().unwrap();
    let (img, mut lab) = phantom([12, 10, 8], [1.0, 1.0, 1.0]);
    lab.data[[3, 3, 3]] = 7;
    let ip = tmp.path().join("img.nii.gz");
    let lp = tmp.path().join("lab.nii.gz");
    segdiff_data::synthetic::write_nifti_f32(&ip, &img).unwrap();
    write_nifti_u8(&lp, &lab).unwrap();
    let e = prepare_fails(
        &opts_for(&ip, Some(lp.clone()), &tmp.path().join("out")),
        &["lab.nii.gz", "class id 7", "4"],
    );
    assert!(
        matches!(
            e,
            DataError::ClassOutOfRange {
                value: 7,
                num_classes: 4,
                ..
            }
        ),
        "{e}"
    );
    // A strict mapping rejects the unlisted value; a loose one maps it to background.
    let mut strict = opts_for(&ip, Some(lp.clone()), &tmp.path().join("out"));
    strict.labels = LabelMapping::parse("1=a,2=b,3=c", true, None).unwrap();
    prepare_fails(&strict, &["lab.nii.gz", "label value 7", "strict"]);
    let mut loose = strict.clone();
    loose.labels = LabelMapping::parse("1=a,2=b,3=c", false, None).unwrap();
    loose.out_dir = tmp.path().join("ok");
    prepare(&loose, &|_| {}).unwrap();
    // A mapping naming an id above the declared count is an option error.
    assert!(LabelMapping::parse("1=a,2=5:b", false, Some(4)).is_err());
}

#[test]
fn empty_folder_and_missing_path() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("empty");
    std::fs::create_dir_all(&dir).unwrap();
    let e = prepare_fails(
        &opts_for(&dir, None, &tmp.path().join("out")),
        &["empty", "no DICOM image files"],
    );
    assert!(matches!(e, DataError::NoImages { .. }), "{e}");
    let e = prepare_fails(
        &opts_for(&tmp.path().join("nope"), None, &tmp.path().join("out")),
        &["nope"],
    );
    assert!(matches!(e, DataError::Io { .. }), "{e}");
    // A truncated NIfTI.
    let (img, _) = phantom([12, 10, 8], [1.0, 1.0, 1.0]);
    let ip = tmp.path().join("cut.nii");
    segdiff_data::synthetic::write_nifti_f32(&ip, &img).unwrap();
    let bytes = std::fs::read(&ip).unwrap();
    std::fs::write(&ip, &bytes[..bytes.len() - 100]).unwrap();
    let e = prepare_fails(
        &opts_for(&ip, None, &tmp.path().join("out")),
        &["cut.nii", "NIfTI"],
    );
    assert!(matches!(e, DataError::Nifti { .. }), "{e}");
}

#[test]
fn refuses_to_replace_a_foreign_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ct");
    ct_folder(&dir, &[0.0, 1.0]);
    let out = tmp.path().join("home");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("precious.txt"), b"keep me").unwrap();
    let e = prepare(&opts_for(&dir, None, &out), &|_| {}).unwrap_err();
    assert!(e.to_string().contains("refusing to replace"), "{e}");
    assert!(out.join("precious.txt").is_file());
}

fn write_pair(root: &Path, name: &str, img: &image::GrayImage, mask: &image::GrayImage) {
    std::fs::create_dir_all(root.join("img/train")).unwrap();
    std::fs::create_dir_all(root.join("mask/all/train")).unwrap();
    img.save(root.join("img/train").join(name)).unwrap();
    mask.save(root.join("mask/all/train").join(name)).unwrap();
}

fn opts4() -> DatasetOptions {
    DatasetOptions {
        num_classes: Some(4),
        ..Default::default()
    }
}

#[test]
fn reader_rejects_unreadable_png() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let g = image::GrayImage::new(8, 8);
    write_pair(root, "a.png", &g, &g);
    std::fs::write(root.join("img/train/a.png"), b"\x89PNG\r\n\x1a\ngarbage").unwrap();
    let ds = Dataset::open(root, Split::Train, &opts4()).unwrap();
    let e = ds.load(0).unwrap_err();
    assert!(matches!(e, DataError::Image(_)), "{e}");
    assert!(e.to_string().contains("a.png"), "{e}");
    // The loader surfaces the same error instead of panicking.
    let first = ds.batches(&Default::default(), 0).unwrap().next().unwrap();
    assert!(first.unwrap_err().to_string().contains("a.png"));
}

#[test]
fn reader_rejects_size_mismatch_and_bad_class_and_orphans() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    write_pair(
        root,
        "a.png",
        &image::GrayImage::new(8, 8),
        &image::GrayImage::new(8, 6),
    );
    let ds = Dataset::open(root, Split::Train, &opts4()).unwrap();
    let e = ds.load(0).unwrap_err();
    assert!(matches!(e, DataError::SizeMismatch { .. }), "{e}");
    assert!(
        e.to_string().contains("a.png") && e.to_string().contains("(8, 6)"),
        "{e}"
    );

    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let mut m = image::GrayImage::new(8, 8);
    m.put_pixel(2, 3, image::Luma([9]));
    write_pair(root, "b.png", &image::GrayImage::new(8, 8), &m);
    let e = Dataset::open(root, Split::Train, &opts4())
        .unwrap()
        .load(0)
        .unwrap_err();
    assert!(
        matches!(
            e,
            DataError::ClassOutOfRange {
                value: 9,
                num_classes: 4,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("b.png"));

    // Image without mask and mask without image.
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let g = image::GrayImage::new(4, 4);
    write_pair(root, "c.png", &g, &g);
    g.save(root.join("img/train/lonely.png")).unwrap();
    let e = Dataset::open(root, Split::Train, &opts4()).unwrap_err();
    assert!(matches!(e, DataError::MissingPartner { .. }), "{e}");
    assert!(
        e.to_string().contains("lonely.png") && e.to_string().contains("mask"),
        "{e}"
    );
    std::fs::remove_file(root.join("img/train/lonely.png")).unwrap();
    g.save(root.join("mask/all/train/ghost.png")).unwrap();
    let e = Dataset::open(root, Split::Train, &opts4()).unwrap_err();
    assert!(e.to_string().contains("ghost.png"), "{e}");
    // No num_classes and no dataset.json.
    std::fs::remove_file(root.join("mask/all/train/ghost.png")).unwrap();
    let e = Dataset::open(root, Split::Train, &DatasetOptions::default()).unwrap_err();
    assert!(e.to_string().contains("num_classes"), "{e}");
}
