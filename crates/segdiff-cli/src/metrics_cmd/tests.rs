//! Unit tests of `segdiff metrics`: each report against segdiff-eval's own functions on small
//! PNG folders and feature files written here.

use std::path::{Path, PathBuf};

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use image::{ImageBuffer, Luma};
use segdiff_eval::{
    dice, hausdorff_distance, load_segmenter, psnr, ssim, DiceConfig, HausdorffConfig, InceptionV3,
    MonaiUNet, SegmenterSpec, SsimConfig,
};

use super::dice::{dice_report, DiceArgs};
use super::fid::{fid_report, load_features, FidArgs};
use super::hd95::{hausdorff_report, parse_spacing, HausdorffArgs};
use super::image_encoder::{read_image01, ImageEncoder};
use super::masks::{read_mask_pairs, MaskArgs};
use super::png_folders::{paired_names, read_grey};
use super::psnr_ssim::{image_report, ImageArgs};

/// Asserts that `result` is an error whose message (with its context) names every one of
/// `parts`.
fn assert_fails_naming<T>(result: Result<T>, parts: &[&str]) {
    let err = match result {
        Ok(_) => panic!("expected an error naming {parts:?}"),
        Err(e) => format!("{e:#}"),
    };
    assert!(parts.iter().all(|p| err.contains(p)), "{err}");
}

fn write_l8(path: &Path, w: u32, h: u32, px: Vec<u8>) {
    ImageBuffer::<Luma<u8>, Vec<u8>>::from_raw(w, h, px)
        .unwrap()
        .save(path)
        .unwrap();
}

fn write_l16(path: &Path, w: u32, h: u32, px: Vec<u16>) {
    ImageBuffer::<Luma<u16>, Vec<u16>>::from_raw(w, h, px)
        .unwrap()
        .save(path)
        .unwrap();
}

fn mask_args(pred: &Path, target: &Path, num_classes: Option<usize>) -> MaskArgs {
    MaskArgs {
        pred: pred.to_path_buf(),
        target: target.to_path_buf(),
        num_classes,
        include_background: false,
        json: true,
    }
}

/// 3x3 square of `class` at column `c0` in an 8x6 mask.
fn square(class: u8, c0: usize) -> Vec<u8> {
    (0..6 * 8)
        .map(|i| {
            if (1..4).contains(&(i / 8)) && (c0..c0 + 3).contains(&(i % 8)) {
                class
            } else {
                0
            }
        })
        .collect()
}

fn folders() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let (p, t) = (d.path().join("pred"), d.path().join("target"));
    std::fs::create_dir_all(&p).unwrap();
    std::fs::create_dir_all(&t).unwrap();
    (d, p, t)
}

#[test]
fn pairing_names_the_file_without_partner() {
    let (_d, p, t) = folders();
    write_l8(&p.join("a.png"), 2, 2, vec![0; 4]);
    write_l8(&t.join("a.png"), 2, 2, vec![0; 4]);
    std::fs::write(p.join("notes.txt"), "ignored").unwrap();
    assert_eq!(paired_names(&p, &t).unwrap(), vec!["a.png"]);
    write_l8(&t.join("b.PNG"), 2, 2, vec![0; 4]);
    assert_fails_naming(paired_names(&p, &t), &["b.PNG", "pred"]);
    write_l8(&p.join("b.PNG"), 2, 2, vec![0; 4]);
    write_l8(&p.join("c.png"), 2, 2, vec![0; 4]);
    assert_fails_naming(paired_names(&p, &t), &["c.png", "target"]);
}

#[test]
fn identical_mask_folders_give_dice_one_and_match_the_library() {
    let (_d, p, t) = folders();
    // 16-bit masks are read as class ids too.
    write_l8(&p.join("x.png"), 8, 6, square(2, 1));
    write_l8(&t.join("x.png"), 8, 6, square(2, 1));
    let a: Vec<u16> = square(1, 1).iter().map(|&v| u16::from(v)).collect();
    let b: Vec<u16> = square(1, 3).iter().map(|&v| u16::from(v)).collect();
    write_l16(&p.join("y.png"), 8, 6, a.clone());
    write_l16(&t.join("y.png"), 8, 6, b.clone());
    let args = DiceArgs {
        masks: mask_args(&p, &t, Some(3)),
        keep_empty: false,
    };
    let r = dice_report(&args).unwrap();
    assert_eq!(r.files, vec!["x.png", "y.png"]);
    assert_eq!(r.class_ids, vec![1, 2]);
    // x: class 1 absent everywhere (ignored), class 2 identical -> 1.
    // y: squares overlap in 1 column of 3 -> 2*3/(9+9) = 1/3; class 2 absent.
    assert_eq!(r.values[0], vec![None, Some(1.0)]);
    assert!((r.values[1][0].unwrap() - 1.0 / 3.0).abs() < 1e-15);
    assert_eq!(r.values[1][1], None);
    assert_eq!(r.ignored_entries, 2);
    let (pm, tm) = read_mask_pairs(&p, &t, &r.files).unwrap();
    let lib = dice(&pm, &tm, &DiceConfig::new(3)).unwrap();
    assert_eq!(r.mean, Some(lib.mean()));
    assert!((lib.mean() - (1.0 + 1.0 / 3.0) / 2.0).abs() < 1e-15);

    // --keep-empty: absent from both -> 1.
    let r = dice_report(&DiceArgs {
        keep_empty: true,
        ..args
    })
    .unwrap();
    assert_eq!(r.values[0], vec![Some(1.0), Some(1.0)]);

    // Identical folders: Dice 1 everywhere; inferred class count.
    let r = dice_report(&DiceArgs {
        masks: mask_args(&p, &p, None),
        keep_empty: false,
    })
    .unwrap();
    assert_eq!(r.num_classes, 3);
    assert_eq!(r.mean, Some(1.0));
    assert_eq!(r.mean_per_class, vec![Some(1.0), Some(1.0)]);
}

#[test]
fn class_ids_beyond_num_classes_name_the_file() {
    let (_d, p, t) = folders();
    write_l8(&p.join("x.png"), 8, 6, square(5, 1));
    write_l8(&t.join("x.png"), 8, 6, square(1, 1));
    let args = |num_classes| DiceArgs {
        masks: mask_args(&p, &t, Some(num_classes)),
        keep_empty: false,
    };
    assert_fails_naming(dice_report(&args(3)), &["x.png", "class id 5"]);
    write_l8(&p.join("y.png"), 4, 4, vec![0; 16]);
    write_l8(&t.join("y.png"), 4, 4, vec![0; 16]);
    assert_fails_naming(dice_report(&args(8)), &["y.png", "one size"]);
}

#[test]
fn hausdorff_reports_infinity_as_null_with_a_flag() {
    let (_d, p, t) = folders();
    // a: class 1 squares shifted by 2 columns -> HD 2 (1 with column spacing 0.5).
    write_l8(&p.join("a.png"), 8, 6, square(1, 1));
    write_l8(&t.join("a.png"), 8, 6, square(1, 3));
    // b: class 1 in the target only -> HD100 +inf, HD95 NaN.
    write_l8(&p.join("b.png"), 8, 6, vec![0; 48]);
    write_l8(&t.join("b.png"), 8, 6, square(1, 1));
    let args = |percentile, spacing| HausdorffArgs {
        masks: mask_args(&p, &t, Some(2)),
        percentile,
        spacing,
    };
    let r = hausdorff_report(&args(100.0, None)).unwrap();
    assert_eq!(r.values, vec![vec![Some(2.0)], vec![None]]);
    assert_eq!(r.infinite_entries.len(), 1);
    assert_eq!(r.infinite_entries[0].file, "b.png");
    assert_eq!((r.mean, r.mean_infinite), (None, true));
    assert_eq!(r.mean_per_class_infinite, vec![true]);
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["mean"], serde_json::Value::Null);
    assert_eq!(json["mean_infinite"], true);
    assert_eq!(json["values"][1][0], serde_json::Value::Null);

    let r = hausdorff_report(&args(95.0, Some([1.0, 0.5]))).unwrap();
    let (pm, tm) = read_mask_pairs(&p, &t, &r.files).unwrap();
    let lib = hausdorff_distance(
        &pm,
        &tm,
        &HausdorffConfig {
            spacing: Some([1.0, 0.5]),
            ..HausdorffConfig::hd95(2)
        },
    )
    .unwrap();
    assert_eq!(r.values[0][0], Some(lib.get(0, 0)));
    assert!(r.values[0][0].unwrap() <= 1.0);
    assert_eq!(r.values[1][0], None);
    assert_eq!((r.ignored_entries, r.infinite_entries.len()), (1, 0));
    assert_eq!((r.mean, r.mean_infinite), (Some(lib.mean()), false));
    assert!(hausdorff_report(&args(0.0, None)).is_err());
    assert!(parse_spacing("1,0").is_err() && parse_spacing("1").is_err());
    assert_eq!(parse_spacing("0.7, 2.5").unwrap(), [0.7, 2.5]);
}

#[test]
fn psnr_ssim_handles_identical_images_and_matches_the_library() {
    let (_d, p, t) = folders();
    let img: Vec<u8> = (0..16 * 12).map(|i| ((i * 37) % 251) as u8).collect();
    let shifted: Vec<u8> = img.iter().map(|&v| v.saturating_add(2).min(250)).collect();
    write_l8(&p.join("same.png"), 16, 12, img.clone());
    write_l8(&t.join("same.png"), 16, 12, img.clone());
    write_l8(&p.join("z.png"), 16, 12, img.clone());
    write_l8(&t.join("z.png"), 16, 12, shifted.clone());
    let args = ImageArgs {
        pred: p.clone(),
        target: t.clone(),
        gaussian: false,
        data_range: None,
        json: true,
    };
    let r = image_report(&args).unwrap();
    assert_eq!((r.bit_depth, r.data_range), (8, 255.0));
    assert_eq!(r.per_file[0].psnr, None);
    assert_eq!(r.per_file[0].ssim, 1.0);
    let want = psnr(&img, &shifted, 255.0).unwrap();
    assert_eq!(r.per_file[1].psnr, Some(want));
    assert_eq!((r.psnr_mean, r.psnr_mean_infinite), (None, true));
    assert_eq!((r.psnr_infinite_count, r.psnr_mean_finite), (1, Some(want)));
    let s = ssim(
        &img,
        &shifted,
        12,
        16,
        255.0,
        &SsimConfig::skimage_default(),
    )
    .unwrap();
    assert_eq!(r.ssim_mean, (1.0 + s) / 2.0);
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["psnr_mean"], serde_json::Value::Null);
    assert_eq!(json["psnr_mean_infinite"], true);

    // Gaussian SSIM needs 11x11; hand value of PSNR for a constant offset of 2 on 16-bit.
    let (_d2, p2, t2) = folders();
    let a: Vec<u16> = (0..16 * 12).map(|i| (i * 300) as u16).collect();
    let b: Vec<u16> = a.iter().map(|v| v + 2).collect();
    write_l16(&p2.join("q.png"), 16, 12, a);
    write_l16(&t2.join("q.png"), 16, 12, b);
    let r = image_report(&ImageArgs {
        pred: p2.clone(),
        target: t2.clone(),
        gaussian: true,
        ..args
    })
    .unwrap();
    assert_eq!((r.bit_depth, r.data_range), (16, 65535.0));
    let hand = 10.0 * (65535.0f64 * 65535.0 / 4.0).log10();
    assert!((r.psnr_mean.unwrap() - hand).abs() < 1e-9);
    assert_eq!(r.ssim_window, "gaussian1.5");

    // Mixed bit depths are refused, naming a file.
    write_l8(&p2.join("r.png"), 16, 12, img.clone());
    write_l8(&t2.join("r.png"), 16, 12, img);
    assert_fails_naming(
        image_report(&ImageArgs {
            pred: p2,
            target: t2,
            gaussian: false,
            data_range: None,
            json: true,
        }),
        &["r.png", "bit"],
    );
}

#[test]
fn fid_from_feature_files_matches_the_library() {
    let d = tempfile::tempdir().unwrap();
    let fa: Vec<f32> = (0..40).map(|i| ((i * 13) % 17) as f32 / 3.0).collect();
    let fb: Vec<f32> = (0..30).map(|i| ((i * 7) % 11) as f32 / 2.0).collect();
    let ta = Tensor::from_vec(fa, (10, 4), &Device::Cpu).unwrap();
    let tb = Tensor::from_vec(fb, (10, 3), &Device::Cpu).unwrap();
    let pa = d.path().join("a.safetensors");
    candle_core::safetensors::save(&std::collections::HashMap::from([("x", ta.clone())]), &pa)
        .unwrap();
    let tb4 = Tensor::cat(&[&tb, &tb.narrow(1, 0, 1).unwrap()], 1).unwrap();
    let pb = d.path().join("b.safetensors");
    candle_core::safetensors::save(
        &std::collections::HashMap::from([("features", tb4.clone()), ("other", ta.clone())]),
        &pb,
    )
    .unwrap();
    let args = FidArgs {
        a: pa.clone(),
        b: pb.clone(),
        encoder: None,
        inception_weights: None,
        batch_size: 4,
        json: true,
    };
    let r = fid_report(&args, &Device::Cpu).unwrap();
    let want = segdiff_eval::fid_from_features(&ta, &tb4).unwrap();
    assert_eq!(r.fid, want);
    assert_eq!(
        (r.b.tensor.as_deref(), r.b.count, r.b.dim),
        (Some("features"), 10, 4)
    );
    // Same file on both sides: 0 up to rounding.
    let r = fid_report(
        &FidArgs {
            b: pa.clone(),
            ..args
        },
        &Device::Cpu,
    )
    .unwrap();
    assert!(r.fid.abs() < 1e-9, "{}", r.fid);
    // Several tensors without `features`, and a folder without --encoder, are refused.
    let pc = d.path().join("c.safetensors");
    candle_core::safetensors::save(
        &std::collections::HashMap::from([("p", ta.clone()), ("q", ta)]),
        &pc,
    )
    .unwrap();
    assert_fails_naming(
        load_features(&pc, None, 4, &Device::Cpu),
        &["features", "c.safetensors"],
    );
    assert_fails_naming(
        load_features(d.path(), None, 4, &Device::Cpu),
        &["--encoder", "--inception-weights"],
    );
}

#[test]
fn fid_encodes_image_folders_with_a_segmenter() {
    use candle_nn::{VarBuilder, VarMap};
    use segdiff_eval::{init_weights_seeded, save_segmenter, MonaiUNetConfig};
    let d = tempfile::tempdir().unwrap();
    let network = MonaiUNetConfig::new(1, 2, vec![4, 6], vec![2], 0);
    let vm = VarMap::new();
    MonaiUNet::new(
        &network,
        VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu),
    )
    .unwrap();
    init_weights_seeded(&vm, 1).unwrap();
    let weights = vm
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().copy().unwrap()))
        .collect();
    let spec = SegmenterSpec::new(network, [8, 8]);
    let seg = d.path().join("seg");
    save_segmenter(&seg, &weights, &spec).unwrap();
    let (a, b) = (d.path().join("a"), d.path().join("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let mut raw = Vec::new();
    for i in 0..5u32 {
        let px: Vec<u8> = (0..64).map(|j| ((j * (i + 3) * 29) % 256) as u8).collect();
        raw.extend(px.iter().map(|&v| f32::from(v) / 127.5 - 1.0));
        write_l8(&a.join(format!("{i}.png")), 8, 8, px.clone());
        let dim: Vec<u8> = px.iter().map(|v| v / 2).collect();
        write_l8(&b.join(format!("{i}.png")), 8, 8, dim);
    }
    let args = FidArgs {
        a: a.clone(),
        b,
        encoder: Some(seg.clone()),
        inception_weights: None,
        batch_size: 2,
        json: true,
    };
    let r = fid_report(&args, &Device::Cpu).unwrap();
    assert_eq!((r.a.kind, r.a.count, r.a.dim), ("images", 5, 6));
    assert!(r.fid > 0.0);
    // Folder a, encoded by hand in one batch, gives the same features.
    let (model, _) = load_segmenter(&seg, &Device::Cpu).unwrap();
    let x = Tensor::from_vec(raw, (5, 1, 8, 8), &Device::Cpu).unwrap();
    let by_hand = segdiff_eval::encode(&model, &x, 5).unwrap();
    let encoder = ImageEncoder::Segmenter(Box::new((model, spec)));
    let (from_folder, _) = load_features(&a, Some(&encoder), 2, &Device::Cpu).unwrap();
    // Batches of 2 vs 5 change the conv tiling, hence float rounding.
    let diff = (by_hand - from_folder)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(diff < 1e-5, "max feature difference {diff}");
    // Images of another size are refused, naming the file.
    write_l8(&args.b.join("big.png"), 16, 16, vec![0; 256]);
    assert_fails_naming(fid_report(&args, &Device::Cpu), &["big.png", "8x8"]);
}

#[test]
fn fid_encodes_image_folders_with_inception() {
    use candle_nn::{VarBuilder, VarMap};
    let d = tempfile::tempdir().unwrap();
    let weights = d.path().join("inception.safetensors");
    let vm = VarMap::new();
    InceptionV3::new(VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap();
    segdiff_eval::init_inception_seeded(&vm, 5).unwrap();
    vm.save(&weights).unwrap();
    let (a, b, c) = (d.path().join("a"), d.path().join("b"), d.path().join("c"));
    for dir in [&a, &b, &c] {
        std::fs::create_dir_all(dir).unwrap();
    }
    for i in 0..2u32 {
        let px: Vec<u8> = (0..80).map(|j| ((j * (i + 3) * 29) % 256) as u8).collect();
        write_l8(&a.join(format!("{i}.png")), 10, 8, px.clone());
        write_l8(&b.join(format!("{i}.png")), 10, 8, px);
    }
    // Another size, 16-bit grey and 8-bit RGB.
    let grey16: Vec<u16> = (0..12 * 9).map(|j| (j * 601) as u16).collect();
    write_l16(&c.join("g.png"), 12, 9, grey16);
    let rgb: Vec<u8> = (0..7 * 6 * 3).map(|j| ((j * 53) % 256) as u8).collect();
    image::RgbImage::from_raw(7, 6, rgb)
        .unwrap()
        .save(c.join("rgb.png"))
        .unwrap();
    let args = |other: &Path| FidArgs {
        a: a.clone(),
        b: other.to_path_buf(),
        encoder: None,
        inception_weights: Some(weights.clone()),
        batch_size: 2,
        json: true,
    };
    let same = fid_report(&args(&b), &Device::Cpu).unwrap();
    assert_eq!((same.a.kind, same.a.count, same.a.dim), ("images", 2, 2048));
    println!(
        "identical folders: FID {:e}, Tr Σa {}",
        same.fid, same.trace_a
    );
    assert!(same.trace_a > 0.0);
    // Bit-identical features; what is left is the square root of the covariance product's
    // near-zero eigenvalues (rank 1 in 2048 dimensions).
    assert_eq!((same.mean_term, same.trace_a), (0.0, same.trace_b));
    assert!(same.fid.abs() <= 1e-4 * same.trace_a, "{}", same.fid);
    let json = serde_json::to_value(&same).unwrap();
    assert_eq!(json["inception_weights"], weights.display().to_string());
    let other = fid_report(&args(&c), &Device::Cpu).unwrap();
    println!("different folders: FID {}", other.fid);
    assert!(other.fid > 1e-3 * other.trace_a, "{}", other.fid);

    let both = FidArgs {
        encoder: Some(d.path().join("seg")),
        ..args(&b)
    };
    assert_fails_naming(fid_report(&both, &Device::Cpu), &["exclude each other"]);
    let mut bad = std::collections::HashMap::new();
    bad.insert(
        "Conv2d_1a_3x3.conv.weight".to_string(),
        Tensor::zeros((32, 3, 3, 3), DType::F32, &Device::Cpu).unwrap(),
    );
    let bad_path = d.path().join("bad.safetensors");
    candle_core::safetensors::save(&bad, &bad_path).unwrap();
    let bad_weights = FidArgs {
        inception_weights: Some(bad_path),
        ..args(&b)
    };
    assert_fails_naming(
        fid_report(&bad_weights, &Device::Cpu),
        &["bad.safetensors", "missing"],
    );
}

#[test]
fn images_for_inception_are_planar_in_zero_one() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("rgb.png");
    image::RgbImage::from_raw(2, 1, vec![255, 0, 51, 0, 102, 255])
        .unwrap()
        .save(&path)
        .unwrap();
    let (c, h, w, v) = read_image01(&path).unwrap();
    assert_eq!((c, h, w), (3, 1, 2));
    assert_eq!(v, vec![1.0, 0.0, 0.0, 0.4, 0.2, 1.0]);
    let path = d.path().join("la.png");
    image::GrayAlphaImage::from_raw(1, 1, vec![3, 4])
        .unwrap()
        .save(&path)
        .unwrap();
    assert_fails_naming(read_image01(&path), &["la.png", "alpha"]);
}

#[test]
fn colour_pngs_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("rgb.png");
    image::RgbImage::from_raw(2, 2, vec![0; 12])
        .unwrap()
        .save(&path)
        .unwrap();
    assert_fails_naming(read_grey(&path), &["rgb.png", "greyscale"]);
}
