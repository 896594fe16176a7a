//! Helpers shared by the workspace's CLI tests: run the `segdiff` binary, check it succeeded.

#![allow(dead_code)]

use std::process::{Command, Output};

/// Runs `segdiff` with `args`.
pub fn segdiff(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_segdiff"))
        .args(args)
        .output()
        .unwrap()
}

/// Panics with the command's output unless it succeeded.
pub fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The test datasets' deterministic generator (a 64-bit LCG): `next(m)` is in `0..m`.
pub struct Lcg(u64);

impl Lcg {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next(&mut self, m: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % m
    }
}

/// Writes a dataset in segdiff's layout (`img/<split>`, `mask/all/<split>`, `dataset.json`):
/// for each `(split, count)`, `count` pairs named by `name(split, i)` with the mask drawn by
/// `mask` and the image derived from it by `image`.
pub fn write_pair_dataset(
    root: &std::path::Path,
    splits: &[(&str, usize)],
    dataset_json: &str,
    name: impl Fn(&str, usize) -> String,
    mut mask: impl FnMut(&mut Lcg) -> image::GrayImage,
    image: impl Fn(&image::GrayImage) -> image::GrayImage,
    rng: &mut Lcg,
) {
    for &(split, n) in splits {
        let img_dir = root.join("img").join(split);
        let mask_dir = root.join("mask/all").join(split);
        std::fs::create_dir_all(&img_dir).unwrap();
        std::fs::create_dir_all(&mask_dir).unwrap();
        for i in 0..n {
            let m = mask(rng);
            let file = name(split, i);
            image(&m).save(img_dir.join(&file)).unwrap();
            m.save(mask_dir.join(&file)).unwrap();
        }
    }
    std::fs::write(root.join("dataset.json"), dataset_json).unwrap();
}

/// The workspace tests' small guided dataset: per split, 16×16 pairs holding a 6×6 square of
/// class 1 and one of class 2 (placed from `seed`), the image grey level set by the class;
/// `dataset.json` declares 3 classes (`background`, `a`, `b`). Files are `<split>_<i>.png`.
pub fn write_squares_dataset(root: &std::path::Path, splits: &[(&str, usize)], seed: u64) {
    write_pair_dataset(
        root,
        splits,
        r#"{"num_classes": 3, "class_names": ["background", "a", "b"]}"#,
        |split, i| format!("{split}_{i}.png"),
        |rng| {
            let mut mask = image::GrayImage::new(16, 16);
            for class in 1..3u8 {
                let (r0, c0) = (rng.next(9) as u32, rng.next(9) as u32);
                for r in r0..r0 + 6 {
                    for c in c0..c0 + 6 {
                        mask.put_pixel(c, r, image::Luma([class]));
                    }
                }
            }
            mask
        },
        |mask| {
            image::GrayImage::from_fn(16, 16, |x, y| {
                image::Luma([[20u8, 128, 230][mask.get_pixel(x, y).0[0] as usize]])
            })
        },
        &mut Lcg::new(seed),
    );
}

/// `segdiff train` arguments for a tiny model (widths 8,16, one layer per block, 4 groups,
/// batch 4, one warm-up step) on [`write_squares_dataset`] data; callers add the rest.
pub fn tiny_train_args(data: &str, out: &str, steps: &str) -> Vec<String> {
    [
        "train",
        "--data",
        data,
        "--out",
        out,
        "--channels",
        "8,16",
        "--norm-groups",
        "4",
        "--layers-per-block",
        "1",
        "--batch-size",
        "4",
        "--steps",
        steps,
        "--warmup-steps",
        "1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Runs `segdiff` with owned arguments.
pub fn segdiff_owned(args: &[String]) -> Output {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    segdiff(&refs)
}
