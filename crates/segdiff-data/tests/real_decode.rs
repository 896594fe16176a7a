//! Pixel-exact agreement with pydicom 3.0.2 / nibabel 5.4.2 (`real_decode.safetensors`).
//!
//! Committed tests use the small files copied into tests/fixtures; the `#[ignore]` ones read every
//! file of ../shared/data/real and the full reference (run by `cargo xtask parity`).

mod common;

use std::path::Path;

use common::*;
use segdiff_data::{read_dicom, read_dicom_pixels, read_nifti, DataError};

/// sha256 of raw values written in the dtype pydicom returned, little-endian.
fn raw_sha(raw: &[i32], dtype: &str) -> String {
    let mut bytes = Vec::with_capacity(raw.len() * 2);
    match dtype {
        "uint8" => bytes.extend(raw.iter().map(|&v| v as u8)),
        "int16" | ">i2" => raw
            .iter()
            .for_each(|&v| bytes.extend((v as i16).to_le_bytes())),
        "uint16" => raw
            .iter()
            .for_each(|&v| bytes.extend((v as u16).to_le_bytes())),
        other => panic!("unexpected dtype {other}"),
    }
    sha256_hex(&bytes)
}

fn max_abs(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "length");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

/// Check one DICOM file against the reference: hash of the whole array, stored values or crop.
fn check_dicom(
    dicom: &Path,
    key: &str,
    meta_path: &Path,
    tensors: &std::collections::HashMap<String, candle_core::Tensor>,
) {
    let meta = decode_meta(meta_path, key);
    let px = read_dicom_pixels(dicom).unwrap_or_else(|e| panic!("{key}: {e}"));
    let shape: Vec<usize> = meta["pixel_array_shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let (rows, cols) = (shape[shape.len() - 2], shape[shape.len() - 1]);
    let frames = if shape.len() == 3 { shape[0] } else { 1 };
    assert_eq!(
        (px.frames, px.rows, px.cols),
        (frames, rows, cols),
        "{key}: shape"
    );
    let sha = raw_sha(&px.raw, meta["pixel_array_dtype"].as_str().unwrap());
    assert_eq!(
        sha,
        meta["raw_sha256"].as_str().unwrap(),
        "{key}: sha256 of the decoded array"
    );
    let raw_f: Vec<f64> = px.raw.iter().map(|&v| f64::from(v)).collect();
    if let Some(t) = tensors.get(&format!("{key}.raw")) {
        let e = max_abs(&raw_f, &values_f64(t));
        println!("{key}: raw max abs error {e}");
        assert_eq!(e, 0.0, "{key}: raw values");
    }
    if let Some(t) = tensors.get(&format!("{key}.raw_center64")) {
        let mut crop = Vec::new();
        for f in 0..frames {
            for r in rows / 2 - 32..rows / 2 + 32 {
                for c in cols / 2 - 32..cols / 2 + 32 {
                    crop.push(raw_f[(f * rows + r) * cols + c]);
                }
            }
        }
        let e = max_abs(&crop, &values_f64(t));
        println!("{key}: centre crop max abs error {e}");
        assert_eq!(e, 0.0, "{key}: centre crop");
    }
    if let Some(t) = tensors.get(&format!("{key}.rescaled")) {
        let ours: Vec<f64> = (0..frames)
            .flat_map(|f| px.rescaled_frame(f))
            .map(f64::from)
            .collect();
        let e = max_abs(&ours, &values_f64(t));
        println!("{key}: rescaled max abs error {e}");
        assert_eq!(e, 0.0, "{key}: rescaled values");
    }
}

#[test]
fn committed_dicoms_decode_like_pydicom() {
    let fx = fixtures();
    let meta = fx.join("real_decode_meta.json");
    let t = load_tensors(&fx.join("real_decode_subset.safetensors"));
    for key in [
        "CT_small",
        "MR_small",
        "MR_small_implicit",
        "MR_small_bigendian",
        "MR_small_RLE",
        "liver_1frame",
        "emri_small",
        "liver",
    ] {
        check_dicom(&fx.join(format!("dicom/{key}.dcm")), key, &meta, &t);
    }
    // The three re-encodings of MR_small hold the very same pixels.
    let base = read_dicom_pixels(&fx.join("dicom/MR_small.dcm"))
        .unwrap()
        .raw;
    for v in ["MR_small_implicit", "MR_small_bigendian", "MR_small_RLE"] {
        assert_eq!(
            read_dicom_pixels(&fx.join(format!("dicom/{v}.dcm")))
                .unwrap()
                .raw,
            base,
            "{v}"
        );
    }
}

#[test]
fn ct_volume_has_hu_and_lps_geometry() {
    let fx = fixtures();
    let t = load_tensors(&fx.join("real_decode_subset.safetensors"));
    let v = read_dicom(&fx.join("dicom/CT_small.dcm")).unwrap();
    assert_eq!(v.modality.as_deref(), Some("CT"));
    assert_eq!(v.volume.shape(), [128, 128, 1]);
    let want = values_f64(&t["CT_small.rescaled"]);
    let mut e = 0.0f64;
    for r in 0..128 {
        for c in 0..128 {
            e = e.max((f64::from(v.volume.data[[c, r, 0]]) - want[r * 128 + c]).abs());
        }
    }
    println!("CT_small volume vs pydicom HU: max abs error {e}");
    assert_eq!(e, 0.0);
    // Affine from the header values: IPP, PixelSpacing, identity orientation; LPS → RAS.
    let m = decode_meta(&fx.join("real_decode_meta.json"), "CT_small");
    let ipp: Vec<f64> = m["ImagePositionPatient"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    let ps: Vec<f64> = m["PixelSpacing"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    let a = v.volume.affine;
    assert!(
        (a[0][0] + ps[1]).abs() < 1e-9 && (a[1][1] + ps[0]).abs() < 1e-9,
        "{a:?}"
    );
    assert!(
        (a[0][3] + ipp[0]).abs() < 1e-9
            && (a[1][3] + ipp[1]).abs() < 1e-9
            && (a[2][3] - ipp[2]).abs() < 1e-9
    );
    // Single slice: slice direction = normal × SliceThickness (5 mm).
    assert!((a[2][2] - 5.0).abs() < 1e-9, "{a:?}");
}

#[test]
fn enhanced_multiframe_without_geometry_keeps_frame_order_with_warning() {
    let fx = fixtures();
    let v = read_dicom(&fx.join("dicom/emri_small.dcm")).unwrap();
    assert_eq!(v.volume.shape(), [64, 64, 10]);
    assert!(
        v.warnings
            .iter()
            .any(|w| w.contains("ImagePositionPatient")),
        "{:?}",
        v.warnings
    );
    // Raw frames (checked against pydicom's sha256 in committed_dicoms_decode_like_pydicom), no
    // rescale: the volume must hold them in stored frame order.
    let px = read_dicom_pixels(&fx.join("dicom/emri_small.dcm")).unwrap();
    let mut e = 0.0f64;
    for f in 0..10 {
        for r in 0..64 {
            for c in 0..64 {
                e = e.max(
                    (f64::from(v.volume.data[[c, r, f]])
                        - f64::from(px.raw[(f * 64 + r) * 64 + c]))
                    .abs(),
                );
            }
        }
    }
    println!("emri_small volume vs pydicom: max abs error {e}");
    assert_eq!(e, 0.0);
    // SpacingBetweenSlices 1.2 mm is used for the slice axis.
    assert!(
        (v.volume.spacing()[2] - 1.2).abs() < 1e-9,
        "{:?}",
        v.volume.affine
    );
}

#[test]
fn segmentation_objects_are_not_images() {
    let fx = fixtures();
    let err = read_dicom(&fx.join("dicom/liver.dcm")).unwrap_err();
    assert!(matches!(err, DataError::NoImages { .. }), "{err}");
    assert!(err.to_string().contains("liver.dcm"), "{err}");
}

fn check_nifti_sha_i16(vol: &segdiff_data::Volume<f32>, want: &str) {
    let mut bytes = Vec::new();
    for &v in vol.data.iter() {
        bytes.extend((v as i16).to_le_bytes());
    }
    assert_eq!(sha256_hex(&bytes), want);
}

#[test]
fn big_endian_nifti_matches_nibabel() {
    let fx = fixtures();
    let t = load_tensors(&fx.join("real_decode_subset.safetensors"));
    let v = read_nifti(&fx.join("nifti/anatomical.nii"), 0).unwrap();
    assert_eq!(v.volume.shape(), [33, 41, 25]);
    // ndarray iterates in logical C order, as numpy's tobytes of nibabel's array does.
    let ours: Vec<f64> = v.volume.data.iter().map(|&x| f64::from(x)).collect();
    let e = max_abs(&ours, &values_f64(&t["anatomical.data"]));
    println!("anatomical.nii data max abs error {e}");
    assert_eq!(e, 0.0);
    let want_aff = values_f64(&t["anatomical.affine"]);
    let ours_aff: Vec<f64> = v.volume.affine.iter().flatten().copied().collect();
    let ea = max_abs(&ours_aff, &want_aff);
    println!("anatomical.nii affine max abs error {ea}");
    assert_eq!(ea, 0.0);
    let m = decode_meta(&fx.join("real_decode_meta.json"), "anatomical");
    check_nifti_sha_i16(&v.volume, m["sha256_native_order"].as_str().unwrap());
}

#[test]
fn four_d_nifti_selects_volume_and_matches_nibabel() {
    let fx = fixtures();
    let p = fx.join("nifti/example4d.nii.gz");
    let t = load_tensors(&fx.join("real_decode_subset.safetensors"));
    let v0 = read_nifti(&p, 0).unwrap();
    let v1 = read_nifti(&p, 1).unwrap();
    assert_eq!(v0.volume.shape(), [128, 96, 24]);
    let mid: Vec<f64> = v0
        .volume
        .data
        .index_axis(ndarray::Axis(2), 12)
        .iter()
        .map(|&x| f64::from(x))
        .collect();
    let e = max_abs(&mid, &values_f64(&t["example4d.slice_mid"]));
    println!("example4d slice 12 max abs error {e}");
    assert_eq!(e, 0.0);
    let aff: Vec<f64> = v0.volume.affine.iter().flatten().copied().collect();
    let ea = max_abs(&aff, &values_f64(&t["example4d.affine"]));
    println!("example4d affine max abs error {ea}");
    assert_eq!(ea, 0.0);
    // The whole 4-D array, C order (x, y, z, t), hashed as nibabel's int16.
    let m = decode_meta(&fx.join("real_decode_meta.json"), "example4d");
    let mut c_order = Vec::new();
    let [nx, ny, nz] = v0.volume.shape();
    for x in 0..nx {
        for y in 0..ny {
            for z in 0..nz {
                c_order.extend((v0.volume.data[[x, y, z]] as i16).to_le_bytes());
                c_order.extend((v1.volume.data[[x, y, z]] as i16).to_le_bytes());
            }
        }
    }
    assert_eq!(
        sha256_hex(&c_order),
        m["sha256_native_order"].as_str().unwrap()
    );
    let err = read_nifti(&p, 2).unwrap_err();
    assert!(
        err.to_string().contains("example4d") && err.to_string().contains("2 volume"),
        "{err}"
    );
}

#[test]
#[ignore = "needs ../shared/fixtures; run by cargo xtask parity"]
fn all_shared_dicoms_decode_like_pydicom() {
    let sf = shared_fixtures();
    let real = shared_real();
    let meta = sf.join("real_decode_meta.json");
    let t = load_tensors(&sf.join("real_decode.safetensors"));
    let files = [
        ("CT_small", "CT_small.dcm"),
        ("MR_small", "MR_small.dcm"),
        ("MR_small_implicit", "MR_small_implicit.dcm"),
        ("MR_small_bigendian", "MR_small_bigendian.dcm"),
        ("MR_small_RLE", "MR_small_RLE.dcm"),
        ("liver_1frame", "liver_1frame.dcm"),
        ("693_UNCR", "693_UNCR.dcm"),
        (
            "explicit_VR-UN_uncompressed",
            "derived/explicit_VR-UN_uncompressed.dcm",
        ),
        (
            "MR-SIEMENS-DICOM-WithOverlays",
            "MR-SIEMENS-DICOM-WithOverlays.dcm",
        ),
        ("MR2_UNCR", "MR2_UNCR.dcm"),
        ("emri_small", "emri_small.dcm"),
        ("liver", "liver.dcm"),
        ("eCT_Supplemental", "eCT_Supplemental.dcm"),
    ];
    for (key, rel) in files {
        check_dicom(&real.join("dicom").join(rel), key, &meta, &t);
    }
    // JPEG 2000 lossless (.4.90) is decoded: pydicom's sha256 (the meta stores the hash only) and
    // the very same values as its uncompressed copy, whose full array is stored.
    check_dicom(
        &real.join("dicom/explicit_VR-UN.dcm"),
        "explicit_VR-UN",
        &meta,
        &t,
    );
    let j2k = read_dicom_pixels(&real.join("dicom/explicit_VR-UN.dcm"))
        .unwrap_or_else(|e| panic!("explicit_VR-UN.dcm: {e}"));
    let plain =
        read_dicom_pixels(&real.join("dicom/derived/explicit_VR-UN_uncompressed.dcm")).unwrap();
    assert_eq!(
        j2k.raw, plain.raw,
        "explicit_VR-UN: J2K vs uncompressed copy"
    );
    let e = max_abs(
        &j2k.raw.iter().map(|&v| f64::from(v)).collect::<Vec<_>>(),
        &values_f64(&t["explicit_VR-UN_uncompressed.raw"]),
    );
    println!("explicit_VR-UN (JPEG 2000) vs pydicom raw: max abs error {e}");
    assert_eq!(e, 0.0);
}

#[test]
#[ignore = "needs ../shared/fixtures; run by cargo xtask parity"]
fn enhanced_ct_rescale_comes_from_functional_groups() {
    let sf = shared_fixtures();
    let real = shared_real();
    let t = load_tensors(&sf.join("real_decode.safetensors"));
    let v = read_dicom(&real.join("dicom/eCT_Supplemental.dcm")).unwrap();
    assert_eq!(v.volume.shape(), [512, 512, 2]);
    // Shared Pixel Value Transformation: slope 1, intercept -1024. Frames are sorted by position
    // along the normal (IOP row −x, column +y → normal −z): frame 2 (z = −149) comes first.
    let crop = values_f64(&t["eCT_Supplemental.raw_center64"]);
    let normal_spacing = v.volume.spacing()[2];
    assert!(
        (normal_spacing - 10.0).abs() < 1e-6,
        "{:?}",
        v.volume.affine
    );
    let mut e = 0.0f64;
    let pos = read_dicom_pixels(&real.join("dicom/eCT_Supplemental.dcm")).unwrap();
    assert_eq!(pos.rescale, vec![(1.0, -1024.0), (1.0, -1024.0)]);
    for (f, k) in [(0usize, 1usize), (1, 0)] {
        for r in 0..64 {
            for c in 0..64 {
                let ours = f64::from(v.volume.data[[224 + c, 224 + r, k]]);
                e = e.max((ours - (crop[(f * 64 + r) * 64 + c] - 1024.0)).abs());
            }
        }
    }
    println!("eCT_Supplemental HU vs raw-1024: max abs error {e}");
    assert_eq!(e, 0.0);
}

#[test]
#[ignore = "needs ../shared/fixtures; run by cargo xtask parity"]
fn mni_niftis_match_nibabel() {
    let sf = shared_fixtures();
    let real = shared_real();
    let t = load_tensors(&sf.join("real_decode.safetensors"));
    let meta = sf.join("real_decode_meta.json");
    for key in [
        "mni_icbm152_t1_tal_nlin_sym_09a_converted",
        "mni_icbm152_gm_tal_nlin_sym_09a_converted",
    ] {
        let v = read_nifti(&real.join(format!("nifti/{key}.nii.gz")), 0).unwrap();
        assert_eq!(v.volume.shape(), [197, 233, 189]);
        let mid: Vec<f64> = v
            .volume
            .data
            .index_axis(ndarray::Axis(2), 94)
            .iter()
            .map(|&x| f64::from(x))
            .collect();
        let e = max_abs(&mid, &values_f64(&t[&format!("{key}.slice_mid")]));
        let aff: Vec<f64> = v.volume.affine.iter().flatten().copied().collect();
        let ea = max_abs(&aff, &values_f64(&t[&format!("{key}.affine")]));
        println!("{key}: slice max abs error {e}, affine {ea}");
        assert_eq!((e, ea), (0.0, 0.0));
        let bytes: Vec<u8> = v.volume.data.iter().map(|&x| x as u8).collect();
        assert_eq!(
            sha256_hex(&bytes),
            decode_meta(&meta, key)["sha256_native_order"]
                .as_str()
                .unwrap()
        );
    }
}
