//! Reading a prepared (or the paper's) paired PNG dataset: [`Dataset`].
//!
//! Layout: `ROOT/<img>/<split>/NAME.png` paired by file name with
//! `ROOT/<mask>/all/<split>/NAME.png`, where `<img>` is `img`, `IMG`, `images` or `IMAGES` and
//! `<mask>` is `mask`, `MASK`, `masks` or `MASKS` (the first that exists). An image without its
//! mask, or a mask without its image, is an error naming the file and the missing partner.
//!
//! Decoding ([`Dataset::load`]):
//! * images: 8- or 16-bit grey (alpha dropped) → 1 channel; RGB(A) → 3 channels, or 1 channel with
//!   [`DatasetOptions::force_grey`] using Pillow's `convert("L")` weights
//!   (`(19595 R + 38470 G + 7471 B + 2¹⁵) >> 16` for 8-bit);
//! * optional resize to `resize × resize` with Pillow-exact bilinear (8-bit only, per channel) and
//!   nearest for masks, as the paper's torchvision `Resize` does;
//! * scaling to [-1, 1] exactly as torchvision's `ToTensor` + `Normalize(0.5, 0.5)`:
//!   `(v / 255 − 0.5) / 0.5` in f32 (`/ 65535` for 16-bit);
//! * masks: one 8/16-bit grey channel holding class ids; an id `>= num_classes` is an error naming
//!   the file and the value; a mask whose size differs from its image is an error.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use image::{DynamicImage, GrayImage};
use serde::Deserialize;

use crate::error::{DataError, Result};
use crate::prepare::DATASET_JSON;
use crate::resize::{resize_bilinear, resize_nearest};
use crate::split::Split;

pub(crate) const IMG_NAMES: [&str; 4] = ["img", "IMG", "images", "IMAGES"];
pub(crate) const MASK_NAMES: [&str; 4] = ["mask", "MASK", "masks", "MASKS"];

/// How to open a dataset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatasetOptions {
    /// Number of classes; `None` reads `num_classes` from `ROOT/dataset.json`.
    pub num_classes: Option<usize>,
    /// Convert RGB images to one grey channel.
    pub force_grey: bool,
    /// Resize images and masks to `n × n` on load (Pillow semantics).
    pub resize: Option<u32>,
    /// Fail when the dataset has no mask folder (otherwise images are read alone).
    pub require_masks: bool,
}

impl Default for DatasetOptions {
    fn default() -> Self {
        DatasetOptions {
            num_classes: None,
            force_grey: false,
            resize: None,
            require_masks: true,
        }
    }
}

/// One image/mask pair on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    /// File name (shared by image and mask).
    pub name: String,
    /// Image path.
    pub image: PathBuf,
    /// Mask path, when the dataset has masks.
    pub mask: Option<PathBuf>,
}

/// One decoded pair.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// File name.
    pub name: String,
    /// Channels (1 or 3).
    pub channels: usize,
    /// Height in pixels.
    pub height: usize,
    /// Width in pixels.
    pub width: usize,
    /// Image in CHW order, scaled to [-1, 1].
    pub image: Vec<f32>,
    /// Mask class ids in HW order.
    pub mask: Option<Vec<u8>>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) root: PathBuf,
    pub(crate) split: Split,
    pub(crate) items: Vec<Item>,
    pub(crate) num_classes: Option<usize>,
    pub(crate) opts: DatasetOptions,
}

/// The pairs of one split of a dataset; cheap to clone (shared).
#[derive(Clone, Debug)]
pub struct Dataset {
    pub(crate) inner: Arc<Inner>,
}

/// The class fields of `ROOT/dataset.json` that readers use; lenient, so a hand-written file
/// may hold `num_classes` alone. (`segdiff prepare` writes the full [`crate::DatasetInfo`].)
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct DatasetClasses {
    /// Number of classes including background.
    pub num_classes: usize,
    /// Class names by id.
    #[serde(default)]
    pub class_names: Vec<String>,
    /// RGB colour per class, if given.
    #[serde(default)]
    pub class_colors: Option<Vec<[u8; 3]>>,
}

impl DatasetClasses {
    /// Reads `root/dataset.json`: `Ok(None)` when there is none, an error naming the file when
    /// it cannot be read or parsed.
    pub fn read(root: &Path) -> Result<Option<Self>> {
        let p = root.join(DATASET_JSON);
        let text = match std::fs::read_to_string(&p) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(DataError::io(&p, "read", e)),
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| DataError::Layout {
                path: p.clone(),
                detail: format!("cannot read num_classes: {e}"),
            })
    }
}

/// The first of `names` that is a folder under `root`.
pub(crate) fn first_existing(root: &Path, names: &[&str]) -> Option<PathBuf> {
    names.iter().map(|n| root.join(n)).find(|p| p.is_dir())
}

/// Sorted `*.png` names in `dir` (not hidden, not recursive).
pub(crate) fn list_pngs(dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let rd = std::fs::read_dir(dir).map_err(|e| DataError::io(dir, "list folder", e))?;
    for e in rd {
        let e = e.map_err(|e| DataError::io(dir, "list folder", e))?;
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with('.') || !name.to_ascii_lowercase().ends_with(".png") {
            continue;
        }
        if e.path().is_file() {
            out.push(name);
        }
    }
    out.sort();
    Ok(out)
}

impl Dataset {
    /// Open one split of the dataset at `root` (see the module docs for the layout).
    pub fn open(root: &Path, split: Split, opts: &DatasetOptions) -> Result<Dataset> {
        let img_root = first_existing(root, &IMG_NAMES).ok_or_else(|| DataError::Layout {
            path: root.to_path_buf(),
            detail: format!("no image folder (one of {})", IMG_NAMES.join(", ")),
        })?;
        let img_dir = img_root.join(split.name());
        if !img_dir.is_dir() {
            return Err(DataError::Layout {
                path: img_dir,
                detail: "split folder is missing".into(),
            });
        }
        let mask_dir = match first_existing(root, &MASK_NAMES) {
            Some(m) => {
                let all = ["all", "ALL"]
                    .iter()
                    .map(|a| m.join(a))
                    .find(|p| p.is_dir())
                    .ok_or_else(|| DataError::Layout {
                        path: m.clone(),
                        detail: "mask folder has no `all` sub-folder".into(),
                    })?;
                let d = all.join(split.name());
                if !d.is_dir() {
                    return Err(DataError::Layout {
                        path: d,
                        detail: "split folder is missing".into(),
                    });
                }
                Some(d)
            }
            None if opts.require_masks => {
                return Err(DataError::Layout {
                    path: root.to_path_buf(),
                    detail: format!("no mask folder (one of {})", MASK_NAMES.join(", ")),
                })
            }
            None => None,
        };
        let images = list_pngs(&img_dir)?;
        let mut items = Vec::with_capacity(images.len());
        if let Some(md) = &mask_dir {
            let masks = list_pngs(md)?;
            let mset: std::collections::BTreeSet<&String> = masks.iter().collect();
            let iset: std::collections::BTreeSet<&String> = images.iter().collect();
            for n in &images {
                if !mset.contains(n) {
                    return Err(DataError::MissingPartner {
                        path: img_dir.join(n),
                        partner: md.join(n),
                    });
                }
            }
            for n in &masks {
                if !iset.contains(n) {
                    return Err(DataError::MissingPartner {
                        path: md.join(n),
                        partner: img_dir.join(n),
                    });
                }
            }
        }
        for n in images {
            items.push(Item {
                image: img_dir.join(&n),
                mask: mask_dir.as_ref().map(|d| d.join(&n)),
                name: n,
            });
        }
        let num_classes = match opts.num_classes {
            Some(n) => Some(n),
            None if mask_dir.is_some() => {
                let classes = DatasetClasses::read(root)?.ok_or_else(|| {
                    DataError::option(
                        "num_classes",
                        format!(
                            "not given and {} cannot be read",
                            root.join(DATASET_JSON).display()
                        ),
                    )
                })?;
                Some(classes.num_classes)
            }
            None => None,
        };
        if let Some(n) = num_classes {
            if n == 0 || n > 256 {
                return Err(DataError::option(
                    "num_classes",
                    format!("{n} is not in 1..=256"),
                ));
            }
        }
        if let Some(r) = opts.resize {
            if r == 0 {
                return Err(DataError::option("resize", "must be at least 1"));
            }
        }
        Ok(Dataset {
            inner: Arc::new(Inner {
                root: root.to_path_buf(),
                split,
                items,
                num_classes,
                opts: opts.clone(),
            }),
        })
    }

    /// Dataset root.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// The split this dataset reads.
    pub fn split(&self) -> Split {
        self.inner.split
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.inner.items.len()
    }

    /// Whether there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.inner.items.is_empty()
    }

    /// The pairs, sorted by name.
    pub fn items(&self) -> &[Item] {
        &self.inner.items
    }

    /// Number of classes (when masks are read).
    pub fn num_classes(&self) -> Option<usize> {
        self.inner.num_classes
    }

    /// Decode pair `index` (see the module docs); out-of-range indices are an option error.
    pub fn load(&self, index: usize) -> Result<Sample> {
        let item = self.inner.items.get(index).ok_or_else(|| {
            DataError::option(
                "index",
                format!("{index} is out of range for {} items", self.len()),
            )
        })?;
        load_item(item, self.inner.num_classes, &self.inner.opts)
    }
}

fn read_png(path: &Path) -> Result<DynamicImage> {
    Ok(segdiff_io::read_image(path)?)
}

/// Planes of 8-bit or 16-bit samples, one per channel.
enum Planes {
    U8(Vec<GrayImage>),
    U16(Vec<Vec<u16>>),
}

fn image_planes(img: DynamicImage, force_grey: bool, path: &Path) -> Result<(Planes, u32, u32)> {
    let (w, h) = (img.width(), img.height());
    let split8 = |raw: &[u8], ch: usize, take: usize| -> Vec<GrayImage> {
        (0..take)
            .map(|c| {
                let data: Vec<u8> = raw.chunks_exact(ch).map(|p| p[c]).collect();
                GrayImage::from_raw(w, h, data).unwrap_or_else(|| GrayImage::new(w, h))
            })
            .collect()
    };
    let split16 = |raw: &[u16], ch: usize, take: usize| -> Vec<Vec<u16>> {
        (0..take)
            .map(|c| raw.chunks_exact(ch).map(|p| p[c]).collect())
            .collect()
    };
    let unsupported = |color: image::ColorType| DataError::Png {
        path: path.to_path_buf(),
        detail: format!("unsupported pixel format {color:?}"),
    };
    // Grey (one channel, or RGB converted as the official code's Pillow does) or RGB planes.
    let planes = if force_grey || img.color().channel_count() <= 2 {
        let eight_bit = matches!(
            img,
            DynamicImage::ImageLuma8(_)
                | DynamicImage::ImageLumaA8(_)
                | DynamicImage::ImageRgb8(_)
                | DynamicImage::ImageRgba8(_)
        );
        match segdiff_io::grey16(&img) {
            Some(g) => Planes::U16(vec![g]),
            None if eight_bit => Planes::U8(vec![segdiff_io::grey8(&img)]),
            None => return Err(unsupported(img.color())),
        }
    } else {
        match img {
            DynamicImage::ImageRgb8(i) => Planes::U8(split8(i.as_raw(), 3, 3)),
            DynamicImage::ImageRgba8(i) => Planes::U8(split8(i.as_raw(), 4, 3)),
            DynamicImage::ImageRgb16(i) => Planes::U16(split16(i.as_raw(), 3, 3)),
            DynamicImage::ImageRgba16(i) => Planes::U16(split16(i.as_raw(), 4, 3)),
            other => return Err(unsupported(other.color())),
        }
    };
    Ok((planes, w, h))
}

pub(crate) fn load_item(
    item: &Item,
    num_classes: Option<usize>,
    opts: &DatasetOptions,
) -> Result<Sample> {
    let img = read_png(&item.image)?;
    let (planes, w, h) = image_planes(img, opts.force_grey, &item.image)?;
    let (ow, oh) = opts.resize.map(|s| (s, s)).unwrap_or((w, h));
    let (channels, image) = match planes {
        Planes::U8(ps) => {
            let mut out = Vec::with_capacity(ps.len() * (ow * oh) as usize);
            for p in &ps {
                let p = if (ow, oh) != (w, h) {
                    resize_bilinear(p, ow, oh)
                } else {
                    p.clone()
                };
                // torchvision ToTensor (v / 255) then Normalize(0.5, 0.5), in f32.
                out.extend(
                    p.as_raw()
                        .iter()
                        .map(|&v| (f32::from(v) / 255.0 - 0.5) / 0.5),
                );
            }
            (ps.len(), out)
        }
        Planes::U16(ps) => {
            if (ow, oh) != (w, h) {
                return Err(DataError::option(
                    "resize",
                    format!(
                        "{}: resizing 16-bit images is not supported",
                        item.image.display()
                    ),
                ));
            }
            let mut out = Vec::with_capacity(ps.len() * (w * h) as usize);
            for p in &ps {
                out.extend(p.iter().map(|&v| (f32::from(v) / 65535.0 - 0.5) / 0.5));
            }
            (ps.len(), out)
        }
    };
    let mask = match &item.mask {
        None => None,
        Some(mp) => {
            let m = read_png(mp)?;
            let (mw, mh) = (m.width(), m.height());
            if (mw, mh) != (w, h) {
                return Err(DataError::SizeMismatch {
                    path: mp.clone(),
                    got: (mw, mh),
                    other: item.image.clone(),
                    expected: (w, h),
                });
            }
            let ids: Vec<u16> = match m {
                DynamicImage::ImageLuma8(i) => i.into_raw().into_iter().map(u16::from).collect(),
                DynamicImage::ImageLuma16(i) => i.into_raw(),
                other => {
                    return Err(DataError::Png {
                        path: mp.clone(),
                        detail: format!(
                            "mask must be single-channel grey, found {:?}",
                            other.color()
                        ),
                    })
                }
            };
            let n = num_classes.unwrap_or(256);
            if let Some(&bad) = ids.iter().find(|&&v| usize::from(v) >= n) {
                return Err(DataError::ClassOutOfRange {
                    path: mp.clone(),
                    value: i64::from(bad),
                    num_classes: n,
                });
            }
            let m8 = GrayImage::from_raw(w, h, ids.into_iter().map(|v| v as u8).collect())
                .unwrap_or_else(|| GrayImage::new(w, h));
            let m8 = if (ow, oh) != (w, h) {
                resize_nearest(&m8, ow, oh)
            } else {
                m8
            };
            Some(m8.into_raw())
        }
    };
    Ok(Sample {
        name: item.name.clone(),
        channels,
        height: oh as usize,
        width: ow as usize,
        image,
        mask,
    })
}
