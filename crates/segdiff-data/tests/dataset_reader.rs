//! The dataset reader and the prefetching batch loader.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use image::{GrayImage, ImageBuffer, Luma, RgbImage};
use segdiff_data::{Augment, Dataset, DatasetOptions, LoaderOptions, Split};

fn opts4() -> DatasetOptions {
    DatasetOptions {
        num_classes: Some(4),
        ..Default::default()
    }
}

/// `n` pairs in `ROOT/{img_name}/train` + `ROOT/{mask_name}/all/train`; image i is filled with
/// value i, its mask with i % 4.
fn make_dataset(root: &Path, img_name: &str, mask_name: &str, n: usize) {
    std::fs::create_dir_all(root.join(img_name).join("train")).unwrap();
    std::fs::create_dir_all(root.join(mask_name).join("all/train")).unwrap();
    for i in 0..n {
        let name = format!("s{i:03}.png");
        GrayImage::from_pixel(6, 6, Luma([i as u8]))
            .save(root.join(img_name).join("train").join(&name))
            .unwrap();
        GrayImage::from_pixel(6, 6, Luma([(i % 4) as u8]))
            .save(root.join(mask_name).join("all/train").join(&name))
            .unwrap();
    }
}

/// Image index encoded in a sample (its constant value).
fn index_of(v: f32) -> usize {
    ((v * 0.5 + 0.5) * 255.0).round() as usize
}

#[test]
fn accepts_upper_case_and_paper_folder_names() {
    for (img, mask) in [("img", "mask"), ("IMG", "MASK"), ("images", "masks")] {
        let tmp = tempfile::tempdir().unwrap();
        make_dataset(tmp.path(), img, mask, 3);
        let ds = Dataset::open(tmp.path(), Split::Train, &opts4()).unwrap();
        assert_eq!(ds.len(), 3, "{img}/{mask}");
        let s = ds.load(2).unwrap();
        assert_eq!(index_of(s.image[0]), 2);
        assert_eq!(s.mask.unwrap()[0], 2);
        // Missing split folder is a layout error naming it.
        let e = Dataset::open(tmp.path(), Split::Val, &opts4()).unwrap_err();
        assert!(e.to_string().contains("val"), "{e}");
    }
}

#[test]
fn rgb_sixteen_bit_and_grey_conversion() {
    let t = load_tensors(&fixtures().join("pil_resize_extra.safetensors"));
    let src = t["rgb.src"].flatten_all().unwrap().to_vec1::<u8>().unwrap();
    let want_l = t["rgb.L"].flatten_all().unwrap().to_vec1::<u8>().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    std::fs::create_dir_all(root.join("img/train")).unwrap();
    std::fs::create_dir_all(root.join("mask/all/train")).unwrap();
    RgbImage::from_raw(7, 5, src.clone())
        .unwrap()
        .save(root.join("img/train/rgb.png"))
        .unwrap();
    GrayImage::new(7, 5)
        .save(root.join("mask/all/train/rgb.png"))
        .unwrap();
    let deep: ImageBuffer<Luma<u16>, Vec<u16>> =
        ImageBuffer::from_fn(7, 5, |x, y| Luma([(x * 9000 + y * 100) as u16]));
    deep.save(root.join("img/train/deep.png")).unwrap();
    GrayImage::new(7, 5)
        .save(root.join("mask/all/train/deep.png"))
        .unwrap();

    let ds = Dataset::open(root, Split::Train, &opts4()).unwrap();
    let names: Vec<&str> = ds.items().iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["deep.png", "rgb.png"]);
    // RGB keeps three planes (CHW), each scaled like torchvision.
    let rgb = ds.load(1).unwrap();
    assert_eq!(rgb.channels, 3);
    for c in 0..3 {
        for p in 0..35 {
            let want = (f32::from(src[p * 3 + c]) / 255.0 - 0.5) / 0.5;
            assert_eq!(rgb.image[c * 35 + p], want);
        }
    }
    // 16-bit grey scales by 65535.
    let d = ds.load(0).unwrap();
    assert_eq!(d.channels, 1);
    assert_eq!(d.image[1], (9000.0f32 / 65535.0 - 0.5) / 0.5);
    // force_grey: Pillow's convert("L"), exactly.
    let grey = Dataset::open(
        root,
        Split::Train,
        &DatasetOptions {
            force_grey: true,
            ..opts4()
        },
    )
    .unwrap()
    .load(1)
    .unwrap();
    assert_eq!(grey.channels, 1);
    let got: Vec<u8> = grey
        .image
        .iter()
        .map(|&v| ((v * 0.5 + 0.5) * 255.0).round() as u8)
        .collect();
    assert_eq!(got, want_l);
    // Mixed channel counts cannot share a batch: a clear error, not a panic.
    let e = ds
        .batches(
            &LoaderOptions {
                batch_size: 2,
                shuffle: false,
                ..Default::default()
            },
            0,
        )
        .unwrap()
        .next()
        .unwrap()
        .unwrap_err();
    assert!(e.to_string().contains("channel"), "{e}");
}

#[test]
fn batches_are_seeded_complete_and_prefetched() {
    let tmp = tempfile::tempdir().unwrap();
    make_dataset(tmp.path(), "img", "mask", 23);
    let ds = Dataset::open(tmp.path(), Split::Train, &opts4()).unwrap();
    let lo = LoaderOptions {
        batch_size: 5,
        seed: 42,
        prefetch: 3,
        augment: Augment {
            hflip: true,
            vflip: false,
            rot90: true,
        },
        ..Default::default()
    };
    assert_eq!(ds.batch_count(&lo), 5);
    let collect = |epoch: u64| -> Vec<usize> {
        let mut order = Vec::new();
        for b in ds.batches(&lo, epoch).unwrap() {
            let b = b.unwrap();
            let [n, c, h, w] = b.image_shape;
            assert_eq!((c, h, w), (1, 6, 6));
            for i in 0..n {
                let idx = index_of(b.images[i * 36]);
                assert_eq!(b.names[i], format!("s{idx:03}.png"));
                assert_eq!(b.masks.as_ref().unwrap()[i * 36], (idx % 4) as u8);
                order.push(idx);
            }
            // Slow consumer: the worker keeps at most `prefetch` batches ready meanwhile.
            std::thread::sleep(Duration::from_millis(5));
        }
        order
    };
    let a = collect(0);
    assert_eq!(a, collect(0), "same seed and epoch, same order");
    assert_ne!(a, collect(1), "another epoch, another order");
    let mut sorted = a.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        (0..23).collect::<Vec<_>>(),
        "every item exactly once"
    );
    // drop_last drops the short final batch.
    let dl = LoaderOptions {
        drop_last: true,
        ..lo.clone()
    };
    assert_eq!(ds.batches(&dl, 0).unwrap().count(), 4);
    // Dropping the iterator early stops the worker (this must not hang).
    let mut it = ds.batches(&lo, 2).unwrap();
    assert!(it.next().unwrap().is_ok());
    assert_eq!(it.remaining(), 4);
    drop(it);
    assert!(ds
        .batches(
            &LoaderOptions {
                batch_size: 0,
                ..lo
            },
            0
        )
        .is_err());
}

#[test]
fn images_without_masks_when_allowed() {
    let tmp = tempfile::tempdir().unwrap();
    make_dataset(tmp.path(), "img", "mask", 2);
    std::fs::remove_dir_all(tmp.path().join("mask")).unwrap();
    assert!(Dataset::open(tmp.path(), Split::Train, &opts4()).is_err());
    let ds = Dataset::open(
        tmp.path(),
        Split::Train,
        &DatasetOptions {
            require_masks: false,
            ..Default::default()
        },
    )
    .unwrap();
    let b = ds
        .batches(&LoaderOptions::default(), 0)
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    assert!(b.masks.is_none());
    assert_eq!(b.image_shape, [2, 1, 6, 6]);
}

#[test]
#[ignore = "needs ../shared/fixtures; run by cargo xtask parity"]
fn reads_the_shared_derived_mni_dataset() {
    let root = shared_real().join("derived/mni152_axial_256");
    let mut total = 0;
    for (split, n) in [(Split::Train, 21), (Split::Val, 5), (Split::Test, 5)] {
        let ds = Dataset::open(&root, split, &opts4()).unwrap();
        assert_eq!(ds.len(), n);
        for b in ds.batches(&LoaderOptions::default(), 0).unwrap() {
            let b = b.unwrap();
            assert_eq!(&b.image_shape[1..], &[1, 256, 256]);
            total += b.image_shape[0];
        }
    }
    assert_eq!(total, 31);
}
