//! Shuffled, augmented batches decoded ahead of the consumer: [`Dataset::batches`].
//!
//! A background thread walks the epoch's order and decodes each batch with rayon, sending finished
//! batches through a bounded channel (`prefetch` batches deep), so the trainer rarely waits on PNG
//! decoding. Everything random is derived from [`LoaderOptions::seed`]: the epoch order from
//! `(seed, epoch)`, each sample's flips/rotation from `(seed, epoch, position in the epoch)`, so the
//! result does not depend on thread timing.
//!
//! Batches are plain vectors: `images` is NCHW f32 in [-1, 1] (`image_shape = [n, c, h, w]`),
//! `masks` NHW class ids as u8 (`mask_shape = [n, 1, h, w]`). With candle:
//! `Tensor::from_vec(batch.images, batch.image_shape, &device)`.

use std::sync::mpsc::{sync_channel, Receiver};
use std::thread::JoinHandle;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;

use crate::dataset::{load_item, Dataset, Sample};
use crate::error::{DataError, Result};

/// Random flips and 90° rotations, applied identically to image and mask.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Augment {
    /// Mirror left-right with probability ½.
    pub hflip: bool,
    /// Mirror top-bottom with probability ½.
    pub vflip: bool,
    /// Rotate by a uniformly drawn multiple of 90° (square images only).
    pub rot90: bool,
}

/// How batches are drawn.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoaderOptions {
    /// Samples per batch.
    pub batch_size: usize,
    /// Shuffle the order each epoch.
    pub shuffle: bool,
    /// Seed of the order and of the augmentations.
    pub seed: u64,
    /// Drop the last batch when it is smaller than `batch_size`.
    pub drop_last: bool,
    /// Augmentations.
    pub augment: Augment,
    /// Batches decoded ahead of the consumer (at least 1).
    pub prefetch: usize,
}

impl Default for LoaderOptions {
    fn default() -> Self {
        LoaderOptions {
            batch_size: 8,
            shuffle: true,
            seed: 0,
            drop_last: false,
            augment: Augment::default(),
            prefetch: 2,
        }
    }
}

/// A batch of decoded samples.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// File names, in batch order.
    pub names: Vec<String>,
    /// NCHW images in [-1, 1].
    pub images: Vec<f32>,
    /// `[n, c, h, w]`.
    pub image_shape: [usize; 4],
    /// NHW class ids, when the dataset has masks.
    pub masks: Option<Vec<u8>>,
    /// `[n, 1, h, w]`.
    pub mask_shape: [usize; 4],
}

/// splitmix64: decorrelates nearby seeds.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The order of the dataset's items in `epoch`.
pub fn epoch_order(len: usize, shuffle: bool, seed: u64, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    if shuffle {
        let mut rng = StdRng::seed_from_u64(mix(seed ^ mix(epoch)));
        order.shuffle(&mut rng);
    }
    order
}

/// Flip/rotate a CHW plane set and an HW mask in place, as drawn from `rng`.
fn augment_sample(s: &mut Sample, aug: &Augment, rng: &mut StdRng) {
    let hflip = aug.hflip && rng.random_bool(0.5);
    let vflip = aug.vflip && rng.random_bool(0.5);
    let rot = if aug.rot90 && s.width == s.height {
        rng.random_range(0..4u32)
    } else {
        0
    };
    if !hflip && !vflip && rot == 0 {
        return;
    }
    let (w, h) = (s.width, s.height);
    // Source pixel for destination (r, c): flips first, then `rot` quarter turns anticlockwise.
    let src = |r: usize, c: usize| -> usize {
        let (mut r, mut c) = (r, c);
        for _ in 0..rot {
            // Inverse of an anticlockwise quarter turn of a square image.
            let (nr, nc) = (c, w - 1 - r);
            r = nr;
            c = nc;
        }
        if vflip {
            r = h - 1 - r;
        }
        if hflip {
            c = w - 1 - c;
        }
        r * w + c
    };
    let map: Vec<usize> = (0..h * w).map(|i| src(i / w, i % w)).collect();
    for ch in 0..s.channels {
        let plane = &mut s.image[ch * w * h..(ch + 1) * w * h];
        let old = plane.to_vec();
        for (d, &si) in plane.iter_mut().zip(&map) {
            *d = old[si];
        }
    }
    if let Some(m) = &mut s.mask {
        let old = m.clone();
        for (d, &si) in m.iter_mut().zip(&map) {
            *d = old[si];
        }
    }
}

fn stack(samples: Vec<Sample>, ds: &Dataset) -> Result<Batch> {
    let first = samples.first().ok_or_else(|| DataError::Worker {
        detail: "empty batch".into(),
    })?;
    let (c, h, w) = (first.channels, first.height, first.width);
    let first_name = first.name.clone();
    let n = samples.len();
    let has_masks = first.mask.is_some();
    let mut images = Vec::with_capacity(n * c * h * w);
    let mut masks = has_masks.then(|| Vec::with_capacity(n * h * w));
    let mut names = Vec::with_capacity(n);
    let img_path = |name: &str| {
        ds.items()
            .iter()
            .find(|i| i.name == name)
            .map(|i| i.image.clone())
            .unwrap_or_else(|| name.into())
    };
    for s in samples {
        if (s.height, s.width) != (h, w) {
            return Err(DataError::SizeMismatch {
                path: img_path(&s.name),
                got: (s.width as u32, s.height as u32),
                other: img_path(&first_name),
                expected: (w as u32, h as u32),
            });
        }
        if s.channels != c {
            return Err(DataError::Png {
                path: img_path(&s.name),
                detail: format!("has {} channel(s) but {} has {c}", s.channels, first_name),
            });
        }
        images.extend_from_slice(&s.image);
        if let (Some(all), Some(m)) = (masks.as_mut(), s.mask.as_ref()) {
            all.extend_from_slice(m);
        }
        names.push(s.name);
    }
    Ok(Batch {
        names,
        images,
        image_shape: [n, c, h, w],
        masks,
        mask_shape: [n, 1, h, w],
    })
}

/// Iterator over the batches of one epoch (see the module docs). Dropping it stops the worker.
pub struct Batches {
    rx: Option<Receiver<Result<Batch>>>,
    worker: Option<JoinHandle<()>>,
    remaining: usize,
}

impl Batches {
    /// Number of batches still to come.
    pub fn remaining(&self) -> usize {
        self.remaining
    }
}

impl Iterator for Batches {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Result<Batch>> {
        if self.remaining == 0 {
            return None;
        }
        let rx = self.rx.as_ref()?;
        match rx.recv() {
            Ok(b) => {
                self.remaining -= 1;
                if b.is_err() {
                    self.remaining = 0;
                }
                Some(b)
            }
            Err(_) => {
                self.remaining = 0;
                Some(Err(DataError::Worker {
                    detail: "the decoding thread ended early".into(),
                }))
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl Drop for Batches {
    fn drop(&mut self) {
        // Closing the channel first makes a blocked `send` fail, so the worker exits.
        self.rx.take();
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

impl Dataset {
    /// Number of batches one epoch yields with `opts`.
    pub fn batch_count(&self, opts: &LoaderOptions) -> usize {
        let bs = opts.batch_size.max(1);
        if opts.drop_last {
            self.len() / bs
        } else {
            self.len().div_ceil(bs)
        }
    }

    /// Batches of `epoch`, decoded ahead on a background thread (see the module docs).
    pub fn batches(&self, opts: &LoaderOptions, epoch: u64) -> Result<Batches> {
        if opts.batch_size == 0 {
            return Err(DataError::option("batch_size", "must be at least 1"));
        }
        let order = epoch_order(self.len(), opts.shuffle, opts.seed, epoch);
        let count = self.batch_count(opts);
        let (tx, rx) = sync_channel::<Result<Batch>>(opts.prefetch.max(1));
        let ds = self.clone();
        let opts = opts.clone();
        let worker = std::thread::Builder::new()
            .name("segdiff-data-loader".into())
            .spawn(move || {
                for b in 0..count {
                    let positions: Vec<usize> = (b * opts.batch_size
                        ..((b + 1) * opts.batch_size).min(order.len()))
                        .collect();
                    let samples = positions
                        .par_iter()
                        .map(|&pos| {
                            let item = &ds.inner.items[order[pos]];
                            let mut s = load_item(item, ds.inner.num_classes, &ds.inner.opts)?;
                            let mut rng = StdRng::seed_from_u64(mix(
                                opts.seed ^ mix(epoch ^ mix(pos as u64))
                            ));
                            augment_sample(&mut s, &opts.augment, &mut rng);
                            Ok(s)
                        })
                        .collect::<Result<Vec<Sample>>>();
                    let batch = samples.and_then(|s| stack(s, &ds));
                    let failed = batch.is_err();
                    if tx.send(batch).is_err() || failed {
                        return;
                    }
                }
            })
            .map_err(|e| DataError::Worker {
                detail: e.to_string(),
            })?;
        Ok(Batches {
            rx: Some(rx),
            worker: Some(worker),
            remaining: count,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(w: usize, h: usize) -> Sample {
        Sample {
            name: "s".into(),
            channels: 1,
            height: h,
            width: w,
            image: (0..w * h).map(|v| v as f32).collect(),
            mask: Some((0..w * h).map(|v| v as u8).collect()),
        }
    }

    fn run(aug: Augment, seed: u64) -> (Sample, bool, bool, u32) {
        // Replay the draws to know what was chosen.
        let mut rng = StdRng::seed_from_u64(seed);
        let h = aug.hflip && rng.random_bool(0.5);
        let v = aug.vflip && rng.random_bool(0.5);
        let r = if aug.rot90 {
            rng.random_range(0..4u32)
        } else {
            0
        };
        let mut s = sample(3, 3);
        augment_sample(&mut s, &aug, &mut StdRng::seed_from_u64(seed));
        (s, h, v, r)
    }

    #[test]
    fn flips_and_rotations_move_image_and_mask_together() {
        let all = Augment {
            hflip: true,
            vflip: true,
            rot90: true,
        };
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..64 {
            let (s, h, v, r) = run(all, seed);
            seen.insert((h, v, r));
            for (a, b) in s.image.iter().zip(s.mask.as_ref().unwrap()) {
                assert_eq!(*a as u8, *b);
            }
            let mut sorted = s.image.clone();
            sorted.sort_by(f32::total_cmp);
            assert_eq!(sorted, (0..9).map(|v| v as f32).collect::<Vec<_>>());
        }
        assert!(seen.len() > 8, "draws cover the combinations: {seen:?}");
        // Pure horizontal flip of [[0,1,2],[3,4,5],[6,7,8]].
        let only_h = Augment {
            hflip: true,
            ..Default::default()
        };
        let seed = (0..64).find(|&s| run(only_h, s).1).unwrap();
        assert_eq!(
            run(only_h, seed).0.image,
            vec![2.0, 1.0, 0.0, 5.0, 4.0, 3.0, 8.0, 7.0, 6.0]
        );
        // One anticlockwise quarter turn: the top row becomes the right column read upwards.
        let only_r = Augment {
            rot90: true,
            ..Default::default()
        };
        let seed = (0..64).find(|&s| run(only_r, s).3 == 1).unwrap();
        assert_eq!(
            run(only_r, seed).0.image,
            vec![2.0, 5.0, 8.0, 1.0, 4.0, 7.0, 0.0, 3.0, 6.0]
        );
    }

    #[test]
    fn epoch_order_is_a_seeded_permutation() {
        let a = epoch_order(50, true, 3, 0);
        assert_eq!(a, epoch_order(50, true, 3, 0));
        assert_ne!(a, epoch_order(50, true, 3, 1));
        assert_ne!(a, epoch_order(50, true, 4, 0));
        let mut s = a.clone();
        s.sort();
        assert_eq!(s, (0..50).collect::<Vec<_>>());
        assert_eq!(epoch_order(5, false, 3, 9), vec![0, 1, 2, 3, 4]);
    }
}
