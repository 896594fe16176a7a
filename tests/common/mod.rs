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
