//! `segdiff prepare --images-2d`: tiny ISIC-like (RGB JPEG + `_segmentation` PNG, 0/255) and
//! HC18-like (grey PNG + `_Annotation` ellipse outline) folders become datasets, and unpaired
//! files are named.

mod common;
use common::{ok, segdiff};

use std::f64::consts::PI;
use std::path::Path;

/// Sorted file names in `dir`.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn dataset_json(out: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("dataset.json")).unwrap()).unwrap()
}

/// Checks the layout (every image has its mask, `size × size`), that masks hold only ids 0 and 1,
/// and returns the mean object area of the masks and the number of images per split.
fn check_layout(out: &Path, size: u32) -> (f64, [usize; 3]) {
    let mut area = 0usize;
    let mut counts = [0usize; 3];
    for (i, split) in ["train", "val", "test"].into_iter().enumerate() {
        let imgs = names(&out.join("img").join(split));
        assert_eq!(imgs, names(&out.join("mask/all").join(split)), "{split}");
        counts[i] = imgs.len();
        for name in imgs {
            let img = image::open(out.join("img").join(split).join(&name)).unwrap();
            assert_eq!((img.width(), img.height()), (size, size), "{name}");
            let mask = image::open(out.join("mask/all").join(split).join(&name)).unwrap();
            let mask = mask.as_luma8().expect("masks are 8-bit grey").clone();
            assert_eq!(mask.dimensions(), (size, size), "{name}");
            assert!(
                mask.pixels().all(|p| p[0] <= 1),
                "{name}: ids other than 0, 1"
            );
            area += mask.pixels().filter(|p| p[0] == 1).count();
        }
    }
    let n = counts.iter().sum::<usize>();
    let rows = std::fs::read_to_string(out.join("manifest.csv"))
        .unwrap()
        .lines()
        .count();
    assert_eq!(rows, n + 1, "one manifest row per image");
    (area as f64 / n as f64, counts)
}

/// ISIC-like: `n` RGB JPEGs of `w × h` with a red disc of radius `r` at the centre, and 0/255
/// PNG masks of the disc.
fn isic_like(root: &Path, n: usize, (w, h): (u32, u32), r: f64) {
    let (img, seg) = (root.join("images"), root.join("masks"));
    std::fs::create_dir_all(&img).unwrap();
    std::fs::create_dir_all(&seg).unwrap();
    std::fs::write(img.join("LICENSE.txt"), "not an image").unwrap();
    let inside = |x: u32, y: u32| {
        (x as f64 + 0.5 - w as f64 / 2.0).hypot(y as f64 + 0.5 - h as f64 / 2.0) <= r
    };
    for i in 0..n {
        let stem = format!("ISIC_{i:07}");
        let rgb = image::RgbImage::from_fn(w, h, |x, y| {
            if inside(x, y) {
                image::Rgb([200, 40, 30])
            } else {
                image::Rgb([90, 160, 210 - 10 * i as u8])
            }
        });
        rgb.save(img.join(format!("{stem}.jpg"))).unwrap();
        let mask = image::GrayImage::from_fn(w, h, |x, y| image::Luma([255 * inside(x, y) as u8]));
        mask.save(seg.join(format!("{stem}_segmentation.png")))
            .unwrap();
    }
}

#[test]
fn isic_like_rgb_jpegs_with_segmentation_masks() {
    let tmp = tempfile::tempdir().unwrap();
    isic_like(tmp.path(), 6, (48, 36), 10.0);
    let out = tmp.path().join("isic");
    let o = segdiff(&[
        "prepare",
        "--images-2d",
        tmp.path().join("images").to_str().unwrap(),
        "--masks-2d",
        tmp.path().join("masks").to_str().unwrap(),
        "--mask-suffix",
        "_segmentation",
        "--size",
        "32",
        "--split",
        "4,1,1",
        "--seed",
        "3",
        "--out",
        out.to_str().unwrap(),
    ]);
    ok(&o);
    let (area, counts) = check_layout(&out, 32);
    assert_eq!(counts, [4, 1, 1]);
    // 48×36 padded to 48×48, then 32×32: lengths scale by 2/3.
    let want = PI * 10.0 * 10.0 * (2.0f64 / 3.0).powi(2);
    assert!((area - want).abs() < 0.15 * want, "area {area} vs {want}");
    let info = dataset_json(&out);
    assert_eq!(info["channels"], 3);
    assert_eq!(info["num_classes"], 2);
    assert_eq!(info["class_names"][1], "object");
    assert_eq!(info["size"], 32);
    let name = &names(&out.join("img/train"))[0];
    assert!(
        name.starts_with("ISIC_") && name.ends_with(".png"),
        "{name}"
    );
    let img = image::open(out.join("img/train").join(name)).unwrap();
    assert!(img.as_rgb8().is_some(), "RGB stays RGB");
}

/// An 8-connected outline of the ellipse at `c` with radii `r`, 255 on 0.
fn ellipse_outline(w: u32, h: u32, c: (f64, f64), r: (f64, f64)) -> image::GrayImage {
    let mut m = image::GrayImage::new(w, h);
    for i in 0..4000 {
        let t = i as f64 / 4000.0 * 2.0 * PI;
        let x = (c.0 + r.0 * t.cos()).round() as u32;
        let y = (c.1 + r.1 * t.sin()).round() as u32;
        m.put_pixel(x, y, image::Luma([255]));
    }
    m
}

#[test]
fn hc18_like_outlines_are_filled() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("training_set");
    std::fs::create_dir_all(&dir).unwrap();
    let (w, h, r) = (60, 40, (20.0, 12.0));
    for i in 0..5u32 {
        let c = (29.0 + i as f64, 19.5);
        let us = image::GrayImage::from_fn(w, h, |x, y| {
            image::Luma([((x * 3 + y * 2 + i) % 256) as u8])
        });
        us.save(dir.join(format!("{i:03}_HC.png"))).unwrap();
        ellipse_outline(w, h, c, r)
            .save(dir.join(format!("{i:03}_HC_Annotation.png")))
            .unwrap();
    }
    let run = |out: &Path, fill: bool| {
        let mut args = vec![
            "prepare",
            "--images-2d",
            dir.to_str().unwrap(),
            "--masks-2d",
            dir.to_str().unwrap(),
            "--mask-suffix",
            "_Annotation",
            "--size",
            "40",
            "--modality",
            "US",
            "--out",
            out.to_str().unwrap(),
        ];
        if fill {
            args.push("--fill-outline");
        }
        segdiff(&args)
    };
    let out = tmp.path().join("hc18");
    ok(&run(&out, true));
    let (area, counts) = check_layout(&out, 40);
    assert_eq!(
        counts.iter().sum::<usize>(),
        5,
        "annotations are not images"
    );
    // 60×40 padded to 60×60, then 40×40: lengths scale by 2/3.
    let want = PI * r.0 * r.1 * (2.0f64 / 3.0).powi(2);
    assert!(
        (area - want).abs() < 0.15 * want,
        "filled area {area} vs {want}"
    );
    let info = dataset_json(&out);
    assert_eq!(info["channels"], 1);
    assert_eq!(info["modality"], "US");
    assert!(info["command"].as_str().unwrap().contains("--fill-outline"));
    // Without --fill-outline only the thin curve is object.
    let outline = tmp.path().join("hc18_outline");
    ok(&run(&outline, false));
    let (curve, _) = check_layout(&outline, 40);
    assert!(curve < 0.5 * want, "unfilled area {curve}");
}

#[test]
fn a_missing_mask_exits_1_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    isic_like(tmp.path(), 3, (20, 20), 5.0);
    std::fs::remove_file(tmp.path().join("masks/ISIC_0000001_segmentation.png")).unwrap();
    let out = tmp.path().join("isic");
    let args = |extra: &[&'static str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "prepare",
            "--images-2d",
            tmp.path().join("images").to_str().unwrap(),
            "--masks-2d",
            tmp.path().join("masks").to_str().unwrap(),
            "--mask-suffix",
            "_segmentation",
            "--size",
            "16",
            "--out",
            out.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let argv = args(&[]);
    let o = segdiff(&argv.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("ISIC_0000001.jpg"), "{err}");
    assert!(err.contains("ISIC_0000001_segmentation.*"), "{err}");
    assert!(!out.exists(), "a failed run leaves nothing behind");

    let argv = args(&["--skip-unpaired"]);
    let o = segdiff(&argv.iter().map(String::as_str).collect::<Vec<_>>());
    ok(&o);
    assert!(String::from_utf8_lossy(&o.stderr).contains("ISIC_0000001.jpg"));
    let (_, counts) = check_layout(&out, 16);
    assert_eq!(counts.iter().sum::<usize>(), 2);
}
