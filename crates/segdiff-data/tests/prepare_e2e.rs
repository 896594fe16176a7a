//! End-to-end: volumes → `prepare` → files on disk → `Dataset` batches.
//!
//! * a synthetic phantom (committed code, no fixture) checks layout, manifest, dataset.json,
//!   split-by-volume, orientation semantics, reorientation invariance, rerun and progress;
//! * the MNI ICBM152 T1 + GM/WM maps subsampled by 3 (committed, see tests/fixtures/README.md)
//!   go through the 4-class tissue rule along all three axes and are read back;
//! * synthetic DICOM series with a NIfTI label map and with the real DICOM SEG `liver.dcm`;
//! * `#[ignore]`: the full-resolution MNI volumes of ../shared/data/real, checked against the
//!   derived PNGs that `copy_real_data.py` made with the same tissue rule.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use common::*;
use image::GrayImage;
use ndarray::{Array3, Axis};
use segdiff_data::synthetic::{phantom, write_nifti_i16, write_nifti_u8};
use segdiff_data::{
    brain_tissue_labels, prepare, read_dicom, read_manifest, read_nifti, Augment, Dataset,
    DatasetInfo, DatasetOptions, InputSpec, Intensity, LabelMapping, LoaderOptions, PrepareOptions,
    Progress, SliceAxis, SliceFilter, Split, Volume,
};

fn to_i16(v: &Volume<f32>) -> Volume<i16> {
    Volume {
        data: v.data.mapv(|x| x.round() as i16),
        affine: v.affine,
    }
}

/// The same volume stored with its first voxel axis reversed (same world grid).
fn flip_x<T: Clone>(v: &Volume<T>) -> Volume<T> {
    let mut data = v.data.clone();
    data.invert_axis(Axis(0));
    let n = v.data.shape()[0] as f64 - 1.0;
    let mut a = v.affine;
    for row in a.iter_mut().take(3) {
        row[3] += row[0] * n;
        row[0] = -row[0];
    }
    Volume {
        data: data.as_standard_layout().to_owned(),
        affine: a,
    }
}

fn png(path: &Path) -> GrayImage {
    image::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_luma8()
}

fn read_info(out: &Path) -> DatasetInfo {
    serde_json::from_str(&std::fs::read_to_string(out.join("dataset.json")).unwrap()).unwrap()
}

fn write_phantom(dir: &Path, name: &str, shape: [usize; 3], flip: bool) -> InputSpec {
    let (img, lab) = phantom(shape, [1.5, 1.0, 2.5]);
    let (img, lab) = if flip {
        (flip_x(&img), flip_x(&lab))
    } else {
        (img, lab)
    };
    let ip = dir.join(format!("{name}.nii.gz"));
    let lp = dir.join(format!("{name}_seg.nii.gz"));
    write_nifti_i16(&ip, &to_i16(&img)).unwrap();
    write_nifti_u8(&lp, &lab).unwrap();
    InputSpec {
        image: ip,
        label: Some(lp),
        ..Default::default()
    }
}

#[test]
fn synthetic_volumes_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let shape = [40, 36, 24];
    let inputs = vec![
        write_phantom(&src, "caseA", shape, false),
        write_phantom(&src, "caseB", shape, true),
        write_phantom(&src, "caseC", [30, 30, 20], false),
    ];
    let out = tmp.path().join("data");
    let labels = LabelMapping::parse("1=organ,2=cyst,3=bone", true, None).unwrap();
    let mut opts = PrepareOptions::new(inputs, &out, labels);
    opts.axes = SliceAxis::ALL.to_vec();
    opts.size = 32;
    opts.intensity = Intensity::parse("ct:abdomen").unwrap();
    opts.seed = 3;
    opts.command = "segdiff prepare --test".into();
    opts.class_colors = Some(vec![[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]]);
    let events = Mutex::new(Vec::new());
    let summary = prepare(&opts, &|p: &Progress| {
        events.lock().unwrap().push(p.clone())
    })
    .unwrap();

    // Progress: planned totals, every slice reported once, final count = total.
    let events = events.into_inner().unwrap();
    let total = 2 * (40 + 36 + 24) + (30 + 30 + 20);
    assert_eq!(
        events[0],
        Progress::Planned {
            volumes: 3,
            slices: total
        }
    );
    let slice_events = events
        .iter()
        .filter(|e| matches!(e, Progress::Slice { .. }))
        .count();
    assert_eq!(slice_events, total);
    assert!(events
        .iter()
        .any(|e| matches!(e, Progress::Slice { done, total: t } if *done == total && *t == total)));

    // Every slice written (no filter), split by volume 1/1/1.
    assert_eq!(summary.slices.iter().sum::<usize>(), total);
    let splits: Vec<Split> = summary.volumes.iter().map(|v| v.split).collect();
    let mut sorted = splits.clone();
    sorted.sort();
    assert_eq!(sorted, vec![Split::Train, Split::Val, Split::Test]);
    let rows = read_manifest(&out.join("manifest.csv")).unwrap();
    assert_eq!(rows.len(), total);
    let mut by_volume: BTreeMap<String, Vec<Split>> = BTreeMap::new();
    for r in &rows {
        by_volume
            .entry(r.volume_id.clone())
            .or_default()
            .push(r.split);
        assert!(out.join(&r.file).is_file(), "{}", r.file);
        let mask = out.join(r.file.replacen("img/", "mask/all/", 1));
        assert!(mask.is_file(), "{}", mask.display());
        assert!(
            r.intensity.starts_with("ct-abdomen[-160,240]"),
            "{}",
            r.intensity
        );
    }
    for (id, s) in &by_volume {
        assert!(
            s.iter().all(|x| *x == s[0]),
            "volume {id} spans several splits"
        );
    }
    let info = read_info(&out);
    assert_eq!(info.num_classes, 4);
    assert_eq!(
        info.class_names,
        vec!["background", "organ", "cyst", "bone"]
    );
    assert_eq!(info.size, 32);
    assert_eq!(info.command, "segdiff prepare --test");
    assert_eq!(info.class_colors.as_ref().unwrap()[3], [0, 0, 255]);
    assert!(info.has_masks);

    // Orientation semantics on the axial mid-slice of caseA: the bone cylinder is posterior
    // (bottom half), the organ sits on the patient's left (image right in radiological view).
    let split_a = summary
        .volumes
        .iter()
        .find(|v| v.id == "caseA")
        .unwrap()
        .split;
    let m = png(&out.join(format!("mask/all/{}/caseA_axial_0012.png", split_a.name())));
    let centroid = |class: u8| {
        let (mut sx, mut sy, mut n) = (0.0, 0.0, 0.0);
        for (x, y, p) in m.enumerate_pixels() {
            if p[0] == class {
                sx += f64::from(x);
                sy += f64::from(y);
                n += 1.0;
            }
        }
        assert!(n > 0.0, "class {class} missing");
        (sx / n, sy / n)
    };
    let (bx, by) = centroid(3);
    let (ox, _) = centroid(1);
    assert!(
        by > 20.0 && (bx - 15.5).abs() < 3.0,
        "bone centroid ({bx}, {by})"
    );
    assert!(ox > 18.0, "organ centroid x {ox}");
    // Sagittal slices have superior at the top: the organ ellipsoid is centred in z, the image
    // padding (24 slices → 36 wide square) puts background rows at top and bottom.
    let s = png(&out.join(format!("img/{}/caseA_sagittal_0020.png", split_a.name())));
    assert_eq!(s.dimensions(), (32, 32));

    // Reorientation invariance: caseB stores the same world grid with x reversed.
    let split_b = summary
        .volumes
        .iter()
        .find(|v| v.id == "caseB")
        .unwrap()
        .split;
    for axis in SliceAxis::ALL {
        for idx in [0usize, 5, 11] {
            for kind in ["img", "mask/all"] {
                let a = png(&out.join(format!(
                    "{kind}/{}/caseA_{}_{idx:04}.png",
                    split_a.name(),
                    axis.name()
                )));
                let b = png(&out.join(format!(
                    "{kind}/{}/caseB_{}_{idx:04}.png",
                    split_b.name(),
                    axis.name()
                )));
                assert_eq!(a.as_raw(), b.as_raw(), "{kind} {} {idx}", axis.name());
            }
        }
    }

    // Read back through the dataset reader, every split, as batches.
    let mut seen = 0;
    for split in Split::ALL {
        let ds = Dataset::open(&out, split, &DatasetOptions::default()).unwrap();
        assert_eq!(ds.num_classes(), Some(4));
        let expect = rows.iter().filter(|r| r.split == split).count();
        assert_eq!(ds.len(), expect);
        let lo = LoaderOptions {
            batch_size: 7,
            seed: 11,
            augment: Augment {
                hflip: true,
                vflip: true,
                rot90: true,
            },
            ..Default::default()
        };
        let mut n = 0;
        for b in ds.batches(&lo, 0).unwrap() {
            let b = b.unwrap();
            assert_eq!(&b.image_shape[1..], &[1, 32, 32]);
            assert_eq!(b.images.len(), b.image_shape.iter().product::<usize>());
            assert!(b.images.iter().all(|v| (-1.0..=1.0).contains(v)));
            assert!(b.masks.as_ref().unwrap().iter().all(|&m| m < 4));
            n += b.image_shape[0];
        }
        assert_eq!(n, expect);
        seen += n;
    }
    assert_eq!(seen, total);

    // A rerun with another seed replaces the dataset in place and leaves nothing beside it.
    let before: Vec<String> = dir_names(tmp.path());
    opts.seed = 4;
    opts.axes = vec![SliceAxis::Axial];
    prepare(&opts, &|_| {}).unwrap();
    assert_eq!(dir_names(tmp.path()), before);
    assert_eq!(
        read_manifest(&out.join("manifest.csv")).unwrap().len(),
        24 * 2 + 20
    );
}

#[test]
fn slice_filter_drops_empty_slices() {
    let tmp = tempfile::tempdir().unwrap();
    let inputs = vec![write_phantom(tmp.path(), "p", [20, 20, 16], false)];
    let out = tmp.path().join("out");
    let mut opts = PrepareOptions::new(inputs, &out, LabelMapping::identity_count(4).unwrap());
    opts.size = 16;
    opts.slice_filter = SliceFilter {
        min_classes: 2,
        min_pixels: 0,
    };
    let s = prepare(&opts, &|_| {}).unwrap();
    let v = &s.volumes[0];
    assert_eq!(v.written + v.filtered, 16);
    assert!(v.filtered > 0 && v.written > 0, "{v:?}");
    for r in read_manifest(&out.join("manifest.csv")).unwrap() {
        let m = png(&out.join(r.file.replacen("img/", "mask/all/", 1)));
        let mut classes: Vec<u8> = m.as_raw().iter().copied().filter(|&c| c > 0).collect();
        classes.sort();
        classes.dedup();
        assert!(
            classes.len() >= 2,
            "{} kept with classes {classes:?}",
            r.file
        );
    }
}

fn mni_small() -> [PathBuf; 3] {
    let d = fixtures().join("mni_small");
    ["t1", "gm", "wm"].map(|n| d.join(format!("mni_{n}_sub3.nii.gz")))
}

fn write_tissue_labels(t1: &Path, gm: &Path, wm: &Path, out: &Path) -> Volume<u8> {
    let (a, b, c) = (
        read_nifti(t1, 0).unwrap(),
        read_nifti(gm, 0).unwrap(),
        read_nifti(wm, 0).unwrap(),
    );
    let lab = brain_tissue_labels(&a, &b, &c).unwrap();
    write_nifti_u8(out, &lab).unwrap();
    lab
}

#[test]
fn mni_subsampled_tissue_classes_end_to_end() {
    let [t1, gm, wm] = mni_small();
    let tmp = tempfile::tempdir().unwrap();
    let lab_path = tmp.path().join("mni_labels.nii.gz");
    let lab = write_tissue_labels(&t1, &gm, &wm, &lab_path);
    // The rule gives all four classes, mostly background.
    let mut counts = [0usize; 4];
    for &v in lab.data.iter() {
        counts[usize::from(v)] += 1;
    }
    assert!(counts.iter().all(|&c| c > 0), "{counts:?}");
    assert!(counts[0] > counts[1] + counts[2] + counts[3], "{counts:?}");

    let out = tmp.path().join("mni_ds");
    let labels =
        LabelMapping::parse("1=csf_other,2=grey_matter,3=white_matter", true, None).unwrap();
    let mut opts = PrepareOptions::new(
        vec![InputSpec {
            image: t1.clone(),
            label: Some(lab_path),
            id: Some("mni".into()),
            ..Default::default()
        }],
        &out,
        labels,
    );
    opts.axes = SliceAxis::ALL.to_vec();
    opts.size = 64;
    opts.slice_filter = SliceFilter {
        min_classes: 1,
        min_pixels: 20,
    };
    let s = prepare(&opts, &|_| {}).unwrap();
    let shape = read_nifti(&t1, 0).unwrap().volume.shape();
    assert_eq!(shape, [66, 78, 63]);
    let v = &s.volumes[0];
    assert_eq!(v.written + v.filtered, 66 + 78 + 63);
    assert!(
        v.intensity.starts_with("percentile[1,99]="),
        "{}",
        v.intensity
    );
    assert_eq!(s.slices, [v.written, 0, 0], "one volume goes to train");
    let rows = read_manifest(&out.join("manifest.csv")).unwrap();
    for axis in SliceAxis::ALL {
        assert!(rows.iter().any(|r| r.axis == axis), "{axis:?}");
    }
    let ds = Dataset::open(&out, Split::Train, &DatasetOptions::default()).unwrap();
    assert_eq!(ds.len(), v.written);
    let mut class_seen = [false; 4];
    for b in ds
        .batches(
            &LoaderOptions {
                batch_size: 16,
                ..Default::default()
            },
            0,
        )
        .unwrap()
    {
        let b = b.unwrap();
        for &m in b.masks.as_ref().unwrap() {
            class_seen[usize::from(m)] = true;
        }
    }
    assert_eq!(class_seen, [true; 4]);
    // The central axial slice: brain tissue in the middle of the image, background in the corners.
    let mid = rows
        .iter()
        .filter(|r| r.axis == SliceAxis::Axial)
        .min_by_key(|r| (r.slice_index as i64 - 31).abs())
        .unwrap();
    let m = png(&out.join(mid.file.replacen("img/", "mask/all/", 1)));
    assert_eq!(m.get_pixel(0, 0)[0], 0);
    assert_ne!(m.get_pixel(32, 32)[0], 0);
}

fn dicom_series(dir: &Path, n: usize, rows: u16, cols: u16) {
    std::fs::create_dir_all(dir).unwrap();
    // Written in shuffled order with shuffled instance numbers: sorting must use positions.
    let order = [3usize, 0, 4, 1, 5, 2, 6, 7];
    for (file_no, &k) in order.iter().take(n).enumerate() {
        let mut s = SliceSpec::ct(
            "1.2.3.4.5",
            (10 - k) as i64,
            rows,
            cols,
            -20.0 + 2.5 * k as f64,
            0,
        );
        s.pixels = Some(
            (0..rows as usize * cols as usize)
                .map(|i| (k * 100 + i % 50) as i16)
                .collect(),
        );
        write_slice(&dir.join(format!("f{file_no:02}.dcm")), &s);
    }
}

#[test]
fn dicom_series_with_nifti_labels() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ct");
    dicom_series(&dir, 6, 20, 24);
    let v = read_dicom(&dir).unwrap();
    assert!(v.warnings.is_empty(), "{:?}", v.warnings);
    assert_eq!(v.volume.shape(), [24, 20, 6]);
    // Slices sorted by position: slice k holds value 100·k + (i % 50) − 1024 (rescale).
    for k in 0..6 {
        assert_eq!(v.volume.data[[0, 0, k]], (100 * k) as f32 - 1024.0);
    }
    assert!((v.volume.spacing()[2] - 2.5).abs() < 1e-9);
    // A label map on the same grid (the RAS affine of the series), class = slice parity.
    let lab = Volume {
        data: Array3::from_shape_fn(
            [24, 20, 6],
            |(i, _, k)| if i < 12 { (k % 2) as u8 + 1 } else { 0 },
        ),
        affine: v.volume.affine,
    };
    let lp = tmp.path().join("ct_seg.nii.gz");
    write_nifti_u8(&lp, &lab).unwrap();
    let out = tmp.path().join("ds");
    let mut opts = PrepareOptions::new(
        vec![InputSpec {
            image: dir.clone(),
            label: Some(lp),
            ..Default::default()
        }],
        &out,
        LabelMapping::parse("1=odd,2=even", true, None).unwrap(),
    );
    opts.size = 24;
    opts.intensity = Intensity::Window {
        lo: -1024.0,
        hi: -400.0,
    };
    let s = prepare(&opts, &|_| {}).unwrap();
    assert_eq!(s.volumes[0].written, 6);
    assert_eq!(read_info(&out).modality.as_deref(), Some("CT"));
    // Axial slice k (inferior → superior) holds class k%2+1 on the columns i < 12, which are
    // the patient's right half (DICOM columns run to the patient's left) → image left.
    for k in 0..6 {
        let m = png(&out.join(format!("mask/all/train/ct_axial_{k:04}.png")));
        assert_eq!(m.dimensions(), (24, 24));
        // 24×20 padded to 24×24: two background rows on top.
        assert_eq!(m.get_pixel(3, 0)[0], 0);
        assert_eq!(m.get_pixel(3, 5)[0], (k % 2) as u8 + 1, "slice {k}");
        assert_eq!(m.get_pixel(20, 5)[0], 0, "slice {k}");
    }
}

#[test]
fn dicom_seg_labels_on_a_matching_series() {
    // A synthetic 3-slice CT on the grid of the real SEG liver.dcm (dcmqi example: 512², 0.810547
    // mm, z = −128.69 … −126.69); the SEG frames must land on the right slices and pixels.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ct");
    std::fs::create_dir_all(&dir).unwrap();
    for k in 0..3 {
        let mut s = SliceSpec::ct("9.8.7", k as i64 + 1, 512, 512, -128.69 + k as f64, 0);
        s.position = Some([-235.2, -226.8, -128.69 + k as f64]);
        s.spacing = [0.810547, 0.810547];
        write_slice(&dir.join(format!("s{k}.dcm")), &s);
    }
    let seg = fixtures().join("dicom/liver.dcm");
    let px = segdiff_data::read_dicom_pixels(&seg).unwrap();
    let out = tmp.path().join("ds");
    let mut opts = PrepareOptions::new(
        vec![InputSpec {
            image: dir,
            label: Some(seg),
            id: Some("liver".into()),
            ..Default::default()
        }],
        &out,
        LabelMapping::parse("1=liver", true, None).unwrap(),
    );
    opts.size = 512;
    opts.intensity = Intensity::Window {
        lo: -1024.0,
        hi: 1000.0,
    };
    prepare(&opts, &|_| {}).unwrap();
    let mut fg = 0;
    for k in 0..3 {
        let m = png(&out.join(format!("mask/all/train/liver_axial_{k:04}.png")));
        // Standard axial DICOM: the radiological slice is the stored frame as displayed.
        let frame = &px.raw[k * 512 * 512..(k + 1) * 512 * 512];
        for (i, p) in m.as_raw().iter().enumerate() {
            assert_eq!(i32::from(*p), frame[i], "slice {k} pixel {i}");
        }
        fg += frame.iter().filter(|&&v| v != 0).count();
    }
    assert!(fg > 1000, "the SEG has liver pixels ({fg})");
}

#[test]
#[ignore = "needs ../shared/fixtures; run by cargo xtask parity"]
fn mni_full_resolution_matches_derived_pngs_and_prepares() {
    let real = shared_real();
    let n = |s: &str| {
        real.join(format!(
            "nifti/mni_icbm152_{s}_tal_nlin_sym_09a_converted.nii.gz"
        ))
    };
    let (t1, gm, wm) = (n("t1"), n("gm"), n("wm"));
    let tmp = tempfile::tempdir().unwrap();
    let lab_path = tmp.path().join("labels.nii.gz");
    let lab = write_tissue_labels(&t1, &gm, &wm, &lab_path);
    let t1v = read_nifti(&t1, 0).unwrap().volume;
    // copy_real_data.py wrote `t1[:, :, z].T[::-1]` (image left = patient LEFT, neurological),
    // zero-padded at (x=29, y=11); our radiological axial slice is its mirror image.
    let derived = real.join("derived/mni152_axial_256");
    let mut compared = 0;
    for split in ["train", "val", "test"] {
        for e in std::fs::read_dir(derived.join("images").join(split)).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            let z: usize = name[8..11].parse().unwrap();
            let img = png(&p);
            let msk = png(&derived.join("masks/all").join(split).join(&name));
            let (w, h, ours_img) = SliceAxis::Axial.extract(t1v.data.view(), z).unwrap();
            let (_, _, ours_msk) = SliceAxis::Axial.extract(lab.data.view(), z).unwrap();
            assert_eq!((w, h), (197, 233));
            for r in 0..h {
                for c in 0..w {
                    let (dx, dy) = ((29 + w - 1 - c) as u32, (11 + r) as u32);
                    assert_eq!(
                        img.get_pixel(dx, dy)[0] as f32,
                        ours_img[r * w + c],
                        "{name} image ({r},{c})"
                    );
                    assert_eq!(
                        msk.get_pixel(dx, dy)[0],
                        ours_msk[r * w + c],
                        "{name} mask ({r},{c})"
                    );
                }
            }
            compared += 1;
        }
    }
    assert_eq!(compared, 31);
    println!("31 derived MNI slices: image and tissue mask match exactly (max abs error 0)");

    let out = tmp.path().join("mni");
    let mut opts = PrepareOptions::new(
        vec![InputSpec {
            image: t1,
            label: Some(lab_path),
            id: Some("mni".into()),
            ..Default::default()
        }],
        &out,
        LabelMapping::parse("1=csf_other,2=grey_matter,3=white_matter", true, None).unwrap(),
    );
    opts.axes = SliceAxis::ALL.to_vec();
    let s = prepare(&opts, &|_| {}).unwrap();
    assert_eq!(s.volumes[0].written, 197 + 233 + 189);
    let ds = Dataset::open(&out, Split::Train, &DatasetOptions::default()).unwrap();
    assert_eq!(ds.len(), 197 + 233 + 189);
    let sample = ds.load(0).unwrap();
    assert_eq!(
        (sample.channels, sample.height, sample.width),
        (1, 256, 256)
    );
}

#[test]
fn images_without_labels() {
    let tmp = tempfile::tempdir().unwrap();
    let mut spec = write_phantom(tmp.path(), "u", [16, 16, 6], false);
    spec.label = None;
    let out = tmp.path().join("out");
    let mut opts = PrepareOptions::new(
        vec![spec.clone()],
        &out,
        LabelMapping::identity_count(1).unwrap(),
    );
    opts.size = 16;
    let s = prepare(&opts, &|_| {}).unwrap();
    assert_eq!(s.slices, [6, 0, 0]);
    assert!(!out.join("mask").exists());
    assert!(!read_info(&out).has_masks);
    let ds = Dataset::open(
        &out,
        Split::Train,
        &DatasetOptions {
            require_masks: false,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(ds.len(), 6);
    assert!(ds.load(0).unwrap().mask.is_none());
    // Mixing labelled and unlabelled inputs is refused up front.
    let labelled = write_phantom(tmp.path(), "l", [16, 16, 6], false);
    opts.inputs = vec![spec, labelled];
    let e = prepare(&opts, &|_| {}).unwrap_err();
    assert!(e.to_string().contains("label"), "{e}");
}
