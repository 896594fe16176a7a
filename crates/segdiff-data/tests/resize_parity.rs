//! Pillow 13 parity of the resizers (`preprocess_pil.safetensors`, `pil_resize_extra.safetensors`)
//! and of the dataset reader's resize + [-1, 1] scaling (torchvision ToTensor + Normalize).
//! Expected: bit-exact bytes and floats (max error 0).

mod common;

use common::*;
use image::GrayImage;
use segdiff_data::{resize_bilinear, resize_nearest, Dataset, DatasetOptions, Split};

fn u8_image(t: &candle_core::Tensor) -> GrayImage {
    let (h, w) = t.dims2().expect("2-D tensor");
    let v = t.flatten_all().unwrap().to_vec1::<u8>().unwrap();
    GrayImage::from_raw(w as u32, h as u32, v).unwrap()
}

fn max_abs_u8(a: &GrayImage, b: &GrayImage) -> i32 {
    assert_eq!(a.dimensions(), b.dimensions());
    a.as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| (i32::from(*x) - i32::from(*y)).abs())
        .max()
        .unwrap_or(0)
}

#[test]
fn mni_slice_resizes_like_pil() {
    let t = load_tensors(&fixtures().join("preprocess_pil.safetensors"));
    let img = u8_image(&t["image_u8"]);
    let msk = u8_image(&t["mask_u8"]);
    for s in [64u32, 128] {
        let e = max_abs_u8(
            &resize_bilinear(&img, s, s),
            &u8_image(&t[&format!("image_resized{s}_u8")]),
        );
        let m = max_abs_u8(
            &resize_nearest(&msk, s, s),
            &u8_image(&t[&format!("mask_resized{s}_u8")]),
        );
        println!("preprocess_pil {s}: bilinear max abs error {e}, nearest {m}");
        assert_eq!((e, m), (0, 0));
    }
}

#[test]
fn odd_sizes_resize_like_pil() {
    let t = load_tensors(&fixtures().join("pil_resize_extra.safetensors"));
    let mut checked = 0;
    for src in ["noise", "edges", "labels"] {
        let img = u8_image(&t[&format!("{src}.src")]);
        for (w, h) in [
            (32u32, 32u32),
            (64, 64),
            (150, 50),
            (90, 110),
            (61, 40),
            (7, 5),
        ] {
            let e = max_abs_u8(
                &resize_bilinear(&img, w, h),
                &u8_image(&t[&format!("{src}.bilinear.{w}x{h}")]),
            );
            let m = max_abs_u8(
                &resize_nearest(&img, w, h),
                &u8_image(&t[&format!("{src}.nearest.{w}x{h}")]),
            );
            println!(
                "{src} {}x{} -> {w}x{h}: bilinear {e}, nearest {m}",
                img.width(),
                img.height()
            );
            assert_eq!((e, m), (0, 0), "{src} -> {w}x{h}");
            checked += 1;
        }
    }
    assert_eq!(checked, 18);
    // 60 random size pairs covering every up/down combination and both pass orders.
    let mut vertical_first = 0;
    for i in 0..60 {
        let img = u8_image(&t[&format!("random{i}.src")]);
        let want_b = u8_image(&t[&format!("random{i}.bilinear")]);
        let want_n = u8_image(&t[&format!("random{i}.nearest")]);
        let (w, h) = want_b.dimensions();
        let (sw, sh) = img.dimensions();
        if h < sh && i64::from(sh - h) > 2 * (i64::from(sw) - i64::from(w)) {
            vertical_first += 1;
        }
        let e = max_abs_u8(&resize_bilinear(&img, w, h), &want_b);
        let m = max_abs_u8(&resize_nearest(&img, w, h), &want_n);
        assert_eq!((e, m), (0, 0), "random{i}: {sw}x{sh} -> {w}x{h}");
    }
    println!(
        "60 random sizes: bilinear and nearest max abs error 0 ({vertical_first} vertical-first)"
    );
    assert!(
        vertical_first > 5 && vertical_first < 55,
        "both pass orders are exercised"
    );
}

#[test]
fn reader_resize_and_scaling_match_torchvision() {
    let t = load_tensors(&fixtures().join("preprocess_pil.safetensors"));
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("img/train")).unwrap();
    std::fs::create_dir_all(root.join("mask/all/train")).unwrap();
    u8_image(&t["image_u8"])
        .save(root.join("img/train/z090.png"))
        .unwrap();
    u8_image(&t["mask_u8"])
        .save(root.join("mask/all/train/z090.png"))
        .unwrap();
    for s in [64u32, 128] {
        let opts = DatasetOptions {
            num_classes: Some(4),
            resize: Some(s),
            ..Default::default()
        };
        let ds = Dataset::open(root, Split::Train, &opts).unwrap();
        let sample = ds.load(0).unwrap();
        assert_eq!(
            (sample.channels, sample.height, sample.width),
            (1, s as usize, s as usize)
        );
        let want = t[&format!("image_resized{s}_norm")]
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let e = sample
            .image
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        let mask_want = t[&format!("mask_resized{s}_totensor")]
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let m = sample
            .mask
            .as_ref()
            .unwrap()
            .iter()
            .zip(&mask_want)
            .map(|(&a, b)| (f32::from(a) / 255.0 - b).abs())
            .fold(0.0f32, f32::max);
        println!("reader at {s}: image max abs error {e}, mask/255 max abs error {m}");
        assert_eq!((e, m), (0.0, 0.0));
    }
}
