//! 2-D image/mask folders → the same dataset layout as volumes: [`prepare_2d`].
//!
//! For datasets that are already 2-D (ISIC 2018 dermoscopy, HC18 ultrasound, RIM-ONE DL fundus
//! photographs). Images (`png`, `jpg`/`jpeg`, `tif`/`tiff`, `bmp`; case-insensitive) are found
//! under [`Folders2d::images`], subfolders included; each is paired by file stem with one mask per
//! [`MaskFolder`]: the mask's stem is the image's stem followed by [`MaskFolder::suffix`]
//! (`ISIC_0000000.jpg` ↔ `ISIC_0000000_segmentation.png`), anywhere under that folder. Hidden
//! files (`.…`, e.g. macOS `._` forks) are ignored, and files that are masks are never images, so
//! images and masks may share a folder (HC18). An image without a mask, or a mask without an
//! image, is an error naming the file and the partner expected, or a warning and left out with
//! [`Folders2d::skip_unpaired`].
//!
//! Masks are read as grey (Pillow's `convert("L")`); a pixel above
//! [`Folders2d::mask_threshold`] is object (0/255 masks become 0/1). With
//! [`Folders2d::fill_outline`] a closed outline (HC18's ellipse) is filled: every pixel that the
//! background cannot reach from the image border, stepping over 4-neighbours, is object — an
//! 8-connected curve therefore closes, while an open curve, or one cut by the image edge, stays a
//! curve. The k-th mask folder gives label value k, mapped to a class id by
//! [`PrepareOptions::labels`] (identity: class k); later folders are painted over earlier ones
//! (give the optic disc before the cup).
//!
//! Then as for a volume's slices: fit to square (pad with black) and Pillow-exact
//! resize (bilinear images, per channel; nearest masks), the slice filter, one PNG per image and
//! mask, `manifest.csv` and `dataset.json` written by the same code as for volumes, the split
//! drawn per image from [`PrepareOptions::seed`]. Images stay 8-bit as stored (recorded as the
//! intensity `window[0,255]`); the dataset is RGB (`channels: 3`) when any image has colour,
//! grey images then repeated in three channels, unless [`Folders2d::to_grey`] (Pillow's luma).
//! Each image is its own "volume" in `dataset.json` and `manifest.csv` (axis `axial`, index 0).

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use image::{DynamicImage, GrayImage, RgbImage};
use rayon::prelude::*;

use crate::error::{DataError, Result};
use crate::intensity::Intensity;
use crate::orientation::SliceAxis;
use crate::split::{assign_splits, Split};
use crate::volume_slices::square_and_resize;

use super::dataset_json::DatasetInfo;
use super::manifest::ManifestRow;
use super::{
    check_out_dir, create_staging, finish, sanitize_id, PrepareOptions, PrepareSummary, Progress,
    VolumeSummary, IMG_DIR, MASK_DIR,
};

/// File extensions read as 2-D images (lower case).
pub const IMAGE_EXTENSIONS: [&str; 6] = ["png", "jpg", "jpeg", "tif", "tiff", "bmp"];

/// 8-bit images are kept as stored: grey level v stands for v.
const AS_STORED: Intensity = Intensity::Window { lo: 0.0, hi: 255.0 };

/// One folder of masks: the mask of image `STEM.ext` is `STEM<suffix>.ext'` under `dir`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MaskFolder {
    /// Folder searched, subfolders included.
    pub dir: PathBuf,
    /// Appended to the image's stem (`_segmentation` for ISIC, `_Annotation` for HC18).
    pub suffix: String,
}

/// Where the 2-D images and masks are, and how a mask becomes object pixels.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Folders2d {
    /// Folder of images, subfolders included.
    pub images: PathBuf,
    /// Mask folders; the k-th (from 1) gives label value k. Empty: images only.
    pub masks: Vec<MaskFolder>,
    /// Fill closed outlines (see the module docs).
    pub fill_outline: bool,
    /// A mask pixel above this grey level is object.
    pub mask_threshold: u8,
    /// Write grey images even when the inputs have colour.
    pub to_grey: bool,
    /// Leave unpaired images and masks out with a warning instead of failing.
    pub skip_unpaired: bool,
}

/// One image with its masks (one per [`MaskFolder`], in order).
#[derive(Clone, Debug, PartialEq)]
pub struct Pair2d {
    /// Output name (the sanitised image stem).
    pub id: String,
    /// Image file.
    pub image: PathBuf,
    /// Mask files, one per mask folder.
    pub masks: Vec<PathBuf>,
}

fn is_image_file(path: &Path) -> bool {
    path.extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.as_str()))
}

/// Image files under `dir`, subfolders included, hidden entries skipped, sorted.
fn list_images(dir: &Path) -> Result<Vec<PathBuf>> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
        let rd = std::fs::read_dir(dir).map_err(|e| DataError::io(dir, "list folder", e))?;
        for entry in rd {
            let entry = entry.map_err(|e| DataError::io(dir, "list folder", e))?;
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let path = entry.path();
            let ft = entry
                .file_type()
                .map_err(|e| DataError::io(&path, "read file type", e))?;
            // Symlinked folders are not followed (no cycles); symlinked files are read.
            if ft.is_dir() {
                walk(&path, out)?;
            } else if is_image_file(&path) && path.is_file() {
                out.push(path);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, &mut out)?;
    out.sort();
    Ok(out)
}

fn stem_of(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Same-stem files are ambiguous: the error names both.
fn duplicate(path: &Path, first: &Path, what: &str) -> DataError {
    DataError::Layout {
        path: path.to_path_buf(),
        detail: format!(
            "{what} `{}` is also {}: pairing by name needs distinct names",
            stem_of(path),
            first.display()
        ),
    }
}

/// Key (image stem) → mask file of one folder.
fn index_masks(folder: &MaskFolder) -> Result<BTreeMap<String, PathBuf>> {
    let mut by_key: BTreeMap<String, PathBuf> = BTreeMap::new();
    for path in list_images(&folder.dir)? {
        let stem = stem_of(&path);
        let Some(key) = stem.strip_suffix(folder.suffix.as_str()) else {
            continue;
        };
        if key.is_empty() {
            continue;
        }
        if let Some(first) = by_key.get(key) {
            return Err(duplicate(&path, first, "mask stem"));
        }
        by_key.insert(key.to_string(), path);
    }
    Ok(by_key)
}

/// Where the partner of a file was looked for: `dir/<stem>.*` (any image extension).
fn expected(dir: &Path, stem: &str) -> PathBuf {
    dir.join(format!("{stem}.*"))
}

/// Pairs every image under `folders.images` with its masks (see the module docs), sorted by
/// name; unpaired files are errors, or `warnings` with [`Folders2d::skip_unpaired`].
pub fn find_pairs(folders: &Folders2d, warnings: &mut Vec<String>) -> Result<Vec<Pair2d>> {
    let masks: Vec<BTreeMap<String, PathBuf>> = folders
        .masks
        .iter()
        .map(index_masks)
        .collect::<Result<_>>()?;
    let canonical = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let mask_files: HashSet<PathBuf> = masks
        .iter()
        .flat_map(|m| m.values())
        .map(|p| canonical(p))
        .collect();
    let mut images: BTreeMap<String, PathBuf> = BTreeMap::new();
    for path in list_images(&folders.images)? {
        if mask_files.contains(&canonical(&path)) {
            continue;
        }
        let key = stem_of(&path);
        if let Some(first) = images.get(&key) {
            return Err(duplicate(&path, first, "image stem"));
        }
        images.insert(key, path);
    }
    if images.is_empty() {
        return Err(DataError::NoImages {
            path: folders.images.clone(),
            detail: format!(
                "no images ({}) apart from masks",
                IMAGE_EXTENSIONS.join(", ")
            ),
        });
    }
    let mut unpaired = |e: DataError| -> Result<()> {
        if folders.skip_unpaired {
            warnings.push(format!("{e}; left out"));
            Ok(())
        } else {
            Err(e)
        }
    };
    for (key, path) in masks.iter().flatten() {
        if !images.contains_key(key) {
            unpaired(DataError::MissingPartner {
                path: path.clone(),
                partner: expected(&folders.images, key),
            })?;
        }
    }
    let mut pairs = Vec::with_capacity(images.len());
    let mut ids: BTreeMap<String, PathBuf> = BTreeMap::new();
    'images: for (key, image) in images {
        let mut found = Vec::with_capacity(masks.len());
        for (m, folder) in masks.iter().zip(&folders.masks) {
            match m.get(&key) {
                Some(p) => found.push(p.clone()),
                None => {
                    unpaired(DataError::MissingPartner {
                        path: image.clone(),
                        partner: expected(&folder.dir, &format!("{key}{}", folder.suffix)),
                    })?;
                    continue 'images;
                }
            }
        }
        let id = sanitize_id(&key);
        if let Some(first) = ids.insert(id.clone(), image.clone()) {
            return Err(DataError::option(
                "images",
                format!(
                    "{} and {} both become `{id}.png`; rename one",
                    first.display(),
                    image.display()
                ),
            ));
        }
        pairs.push(Pair2d {
            id,
            image,
            masks: found,
        });
    }
    if pairs.is_empty() {
        return Err(DataError::NoImages {
            path: folders.images.clone(),
            detail: "no image has all its masks".into(),
        });
    }
    Ok(pairs)
}

/// Object pixels of a grey mask: grey level above `threshold`.
pub fn threshold_mask(mask: &GrayImage, threshold: u8) -> Vec<bool> {
    mask.as_raw().iter().map(|&v| v > threshold).collect()
}

/// Fills closed outlines in the `w × h` object map: background pixels that cannot be reached
/// from the border through background (4-neighbours) become object.
pub fn fill_outline(object: &mut [bool], w: usize, h: usize) {
    debug_assert_eq!(object.len(), w * h);
    if w == 0 || h == 0 {
        return;
    }
    let mut outside = vec![false; object.len()];
    let mut stack: Vec<usize> = (0..w)
        .flat_map(|x| [x, (h - 1) * w + x])
        .chain((0..h).flat_map(|y| [y * w, y * w + w - 1]))
        .collect();
    while let Some(i) = stack.pop() {
        if object[i] || outside[i] {
            continue;
        }
        outside[i] = true;
        let (x, y) = (i % w, i / w);
        if x > 0 {
            stack.push(i - 1);
        }
        if x + 1 < w {
            stack.push(i + 1);
        }
        if y > 0 {
            stack.push(i - w);
        }
        if y + 1 < h {
            stack.push(i + w);
        }
    }
    for (o, out) in object.iter_mut().zip(outside) {
        *o = !out;
    }
}

fn read_image(path: &Path) -> Result<DynamicImage> {
    Ok(segdiff_io::read_image(path)?)
}

/// Whether the image at `path` has colour, from its header (the pixels are not decoded).
fn has_colour(path: &Path) -> Result<bool> {
    let probe = || -> image::ImageResult<image::ColorType> {
        use image::ImageDecoder;
        Ok(image::ImageReader::open(path)?
            .with_guessed_format()?
            .into_decoder()?
            .color_type())
    };
    match segdiff_io::catch_panic(probe) {
        Ok(Ok(c)) => Ok(c.has_color()),
        Ok(Err(source)) => Err(segdiff_io::ImageFileError::Decode {
            path: path.to_path_buf(),
            source,
        }
        .into()),
        Err(panic) => Err(segdiff_io::ImageFileError::DecoderPanic {
            path: path.to_path_buf(),
            detail: segdiff_io::panic_detail("the image decoder", &panic),
        }
        .into()),
    }
}

/// The three 8-bit channels of `img` as Pillow's `convert("RGB")` gives them for the formats
/// read here: alpha dropped, grey repeated, 16-bit samples by their high byte (grey via
/// [`segdiff_io::grey8`]).
fn rgb_planes(img: &DynamicImage) -> [GrayImage; 3] {
    let (w, h) = (img.width(), img.height());
    let high_bytes = |raw: &[u16], step: usize| {
        let hi = raw
            .chunks_exact(step)
            .flat_map(|p| [p[0], p[1], p[2]].map(|v| (v >> 8) as u8))
            .collect();
        RgbImage::from_raw(w, h, hi).unwrap_or_else(|| RgbImage::new(w, h))
    };
    let rgb: RgbImage = match img {
        DynamicImage::ImageRgb8(i) => i.clone(),
        DynamicImage::ImageRgb16(i) => high_bytes(i.as_raw(), 3),
        DynamicImage::ImageRgba16(i) => high_bytes(i.as_raw(), 4),
        other if !other.color().has_color() => {
            let g = segdiff_io::grey8(other);
            return [g.clone(), g.clone(), g];
        }
        other => other.to_rgb8(),
    };
    let plane = |c: usize| {
        GrayImage::from_raw(
            w,
            h,
            rgb.as_raw().iter().skip(c).step_by(3).copied().collect(),
        )
        .unwrap_or_else(|| GrayImage::new(w, h))
    };
    [plane(0), plane(1), plane(2)]
}

/// Everything one pair needs besides itself.
struct PairWriter<'a> {
    folders: &'a Folders2d,
    opts: &'a PrepareOptions,
    /// Class id of each mask folder's object.
    class_ids: Vec<u8>,
    rgb: bool,
    tmp: &'a Path,
}

/// One written (or filtered) pair.
struct PairOutput {
    row: Option<ManifestRow>,
    summary: VolumeSummary,
    warning: Option<String>,
}

impl PairWriter<'_> {
    /// The class-id mask of `pair` at the image's size `(w, h)`.
    fn class_mask(&self, pair: &Pair2d, w: u32, h: u32) -> Result<(GrayImage, Option<String>)> {
        let mut ids = GrayImage::new(w, h);
        let mut warning = None;
        for (path, &class) in pair.masks.iter().zip(&self.class_ids) {
            let m = segdiff_io::grey8(&read_image(path)?);
            if m.dimensions() != (w, h) {
                return Err(DataError::SizeMismatch {
                    path: path.clone(),
                    got: m.dimensions(),
                    other: pair.image.clone(),
                    expected: (w, h),
                });
            }
            let mut object = threshold_mask(&m, self.folders.mask_threshold);
            if self.folders.fill_outline {
                let before = object.iter().filter(|&&o| o).count();
                fill_outline(&mut object, w as usize, h as usize);
                if before > 0 && object.iter().filter(|&&o| o).count() == before {
                    warning = Some(format!(
                        "{}: --fill-outline found no closed outline (open, or cut by the \
                         image edge?); the mask is kept as drawn",
                        path.display()
                    ));
                }
            }
            if class != 0 {
                for (v, o) in ids.iter_mut().zip(object) {
                    if o {
                        *v = class;
                    }
                }
            }
        }
        Ok((ids, warning))
    }

    fn write(&self, pair: &Pair2d, split: Split) -> Result<PairOutput> {
        let (opts, size) = (self.opts, self.opts.size);
        let img = read_image(&pair.image)?;
        let (w, h) = (img.width(), img.height());
        let (mask, warning) = match pair.masks.is_empty() {
            true => (None, None),
            false => {
                let (m, warn) = self.class_mask(pair, w, h)?;
                (Some(square_and_resize(&m, opts.fit, size, true)), warn)
            }
        };
        let mut summary = VolumeSummary {
            id: pair.id.clone(),
            split,
            source: pair.image.clone(),
            label: pair.masks.first().cloned(),
            shape: [w as usize, h as usize, 1],
            written: 0,
            filtered: 0,
            intensity: AS_STORED.describe((0.0, 255.0)),
        };
        if let Some(m) = &mask {
            if !opts.slice_filter.keep(m.as_raw()) {
                summary.filtered = 1;
                return Ok(PairOutput {
                    row: None,
                    summary,
                    warning,
                });
            }
        }
        let out_img = if self.rgb {
            let [r, g, b] = rgb_planes(&img).map(|p| square_and_resize(&p, opts.fit, size, false));
            let raw: Vec<u8> = r
                .as_raw()
                .iter()
                .zip(g.as_raw())
                .zip(b.as_raw())
                .flat_map(|((&r, &g), &b)| [r, g, b])
                .collect();
            DynamicImage::ImageRgb8(
                RgbImage::from_raw(size, size, raw).unwrap_or_else(|| RgbImage::new(size, size)),
            )
        } else {
            let g = segdiff_io::grey8(&img);
            DynamicImage::ImageLuma8(square_and_resize(&g, opts.fit, size, false))
        };
        let name = format!("{}.png", pair.id);
        let split_name = split.name();
        save_png(
            &out_img,
            &self.tmp.join(IMG_DIR).join(split_name).join(&name),
        )?;
        if let Some(m) = mask {
            let path = self
                .tmp
                .join(MASK_DIR)
                .join("all")
                .join(split_name)
                .join(&name);
            save_png(&DynamicImage::ImageLuma8(m), &path)?;
        }
        summary.written = 1;
        Ok(PairOutput {
            row: Some(ManifestRow {
                file: format!("{IMG_DIR}/{split_name}/{name}"),
                split,
                volume_id: pair.id.clone(),
                source: pair.image.display().to_string(),
                axis: SliceAxis::Axial,
                slice_index: 0,
                intensity: summary.intensity.clone(),
            }),
            summary,
            warning,
        })
    }
}

/// Writes into the staging folder (made durable and visible as a whole when it is swapped in).
fn save_png(img: &DynamicImage, path: &Path) -> Result<()> {
    let bytes = segdiff_io::encode_png(path, img)?;
    std::fs::write(path, bytes).map_err(|e| DataError::io(path, "write PNG", e))
}

/// Class id of each mask folder's label value (1, 2, …) under `opts.labels`.
fn class_ids(folders: &Folders2d, opts: &PrepareOptions) -> Result<Vec<u8>> {
    (1..=folders.masks.len())
        .map(|k| {
            opts.labels
                .class_of(k as f64, &folders.masks[k - 1].dir)
                .map_err(|_| {
                    DataError::option(
                        "labels",
                        format!(
                            "mask folder {k} ({}) has no class: {} classes ({})",
                            folders.masks[k - 1].dir.display(),
                            opts.labels.num_classes(),
                            opts.labels.describe()
                        ),
                    )
                })
        })
        .collect()
}

fn validate(folders: &Folders2d, opts: &PrepareOptions) -> Result<()> {
    if opts.size == 0 || opts.size > 16384 {
        return Err(DataError::option(
            "size",
            format!("{} is not in 1..=16384", opts.size),
        ));
    }
    opts.labels.validate()?;
    opts.ratios.validate()?;
    if let Some(c) = &opts.class_colors {
        if c.len() != opts.labels.num_classes() {
            return Err(DataError::option(
                "class_colors",
                format!(
                    "{} colours for {} classes",
                    c.len(),
                    opts.labels.num_classes()
                ),
            ));
        }
    }
    for dir in std::iter::once(&folders.images).chain(folders.masks.iter().map(|m| &m.dir)) {
        if !dir.is_dir() {
            return Err(DataError::NoImages {
                path: dir.clone(),
                detail: "is not a folder".into(),
            });
        }
    }
    if folders.fill_outline && folders.masks.is_empty() {
        return Err(DataError::option("fill_outline", "needs mask folders"));
    }
    Ok(())
}

/// Turn 2-D image/mask folders into the paired PNG dataset (see the module docs). From `opts`
/// this uses the output folder, size, fit, labels (label value k = k-th mask folder), slice
/// filter, split ratios and seed, modality, command and class colours; its inputs, axes,
/// intensity and DICOM options do not apply. `progress` is called from worker threads.
pub fn prepare_2d(
    folders: &Folders2d,
    opts: &PrepareOptions,
    progress: &(dyn Fn(&Progress) + Sync),
) -> Result<PrepareSummary> {
    validate(folders, opts)?;
    let class_ids = class_ids(folders, opts)?;
    check_out_dir(&opts.out_dir)?;
    let mut warnings = Vec::new();
    let pairs = find_pairs(folders, &mut warnings)?;
    let ids: Vec<String> = pairs.iter().map(|p| p.id.clone()).collect();
    let splits = assign_splits(&ids, &opts.ratios, opts.seed);
    progress(&Progress::Planned {
        volumes: pairs.len(),
        slices: pairs.len(),
    });
    let rgb = !folders.to_grey && {
        let colour: Vec<bool> = pairs
            .par_iter()
            .map(|p| has_colour(&p.image))
            .collect::<Result<_>>()?;
        colour.into_iter().any(|c| c)
    };
    let has_masks = !folders.masks.is_empty();
    let guard = create_staging(opts, has_masks)?;
    let writer = PairWriter {
        folders,
        opts,
        class_ids,
        rgb,
        tmp: guard.path(),
    };
    let done = AtomicUsize::new(0);
    let total = pairs.len();
    let outputs: Vec<Result<PairOutput>> = pairs
        .par_iter()
        .zip(&splits)
        .map(|(p, &s)| {
            let out = writer.write(p, s);
            let n = done.fetch_add(1, Ordering::Relaxed) + 1;
            progress(&Progress::Slice { done: n, total });
            out
        })
        .collect();
    let mut rows = Vec::new();
    let mut volumes = Vec::new();
    for out in outputs {
        let out = out?;
        rows.extend(out.row);
        volumes.push(out.summary);
        warnings.extend(out.warning);
    }
    progress(&Progress::Finishing);
    let mut recorded = opts.clone();
    recorded.axes = vec![SliceAxis::Axial];
    recorded.intensity = AS_STORED;
    finish(
        guard,
        rows,
        volumes,
        warnings,
        &opts.out_dir,
        |volumes, slices| {
            let mut info = DatasetInfo::new(&recorded, volumes, slices, &[], has_masks);
            info.channels = if rgb { 3 } else { 1 };
            info
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::LabelMapping;

    fn touch(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"").unwrap();
    }

    fn folders(images: &Path, masks: &[(&Path, &str)]) -> Folders2d {
        Folders2d {
            images: images.to_path_buf(),
            masks: masks
                .iter()
                .map(|(d, s)| MaskFolder {
                    dir: d.to_path_buf(),
                    suffix: s.to_string(),
                })
                .collect(),
            ..Folders2d::default()
        }
    }

    #[test]
    fn pairs_by_stem_and_suffix() {
        let t = tempfile::tempdir().unwrap();
        let (img, seg) = (t.path().join("img"), t.path().join("seg"));
        for i in 0..3 {
            touch(&img.join(format!("ISIC_{i:07}.jpg")));
            touch(&seg.join(format!("ISIC_{i:07}_segmentation.png")));
        }
        touch(&img.join("LICENSE.txt"));
        touch(&img.join(".hidden.jpg"));
        touch(&img.join("._ISIC_0000000.jpg"));
        let mut w = Vec::new();
        let pairs = find_pairs(&folders(&img, &[(&seg, "_segmentation")]), &mut w).unwrap();
        assert!(w.is_empty());
        assert_eq!(pairs.len(), 3);
        assert_eq!(pairs[1].id, "ISIC_0000001");
        assert_eq!(pairs[1].image, img.join("ISIC_0000001.jpg"));
        assert_eq!(pairs[1].masks, [seg.join("ISIC_0000001_segmentation.png")]);

        // HC18: images and annotations in one folder; the annotations are not images.
        let hc = t.path().join("hc");
        for i in 0..2 {
            touch(&hc.join(format!("{i:03}_HC.png")));
            touch(&hc.join(format!("{i:03}_HC_Annotation.png")));
        }
        let pairs = find_pairs(&folders(&hc, &[(&hc, "_Annotation")]), &mut w).unwrap();
        let names: Vec<&str> = pairs.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(names, ["000_HC", "001_HC"]);

        // RIM-ONE DL style: nested folders, two mask folders (disc, cup) in one tree.
        let (fundus, refs) = (t.path().join("rim/images"), t.path().join("rim/refs"));
        touch(&fundus.join("glaucoma/r1_Im001.png"));
        touch(&fundus.join("normal/r2_Im002.png"));
        for s in ["glaucoma/r1_Im001", "normal/r2_Im002"] {
            touch(&refs.join(format!("{s}-1-Disc-T.png")));
            touch(&refs.join(format!("{s}-1-Cup-T.png")));
        }
        let f = folders(&fundus, &[(&refs, "-1-Disc-T"), (&refs, "-1-Cup-T")]);
        let pairs = find_pairs(&f, &mut w).unwrap();
        assert_eq!(pairs.len(), 2);
        assert_eq!(
            pairs[0].masks,
            [
                refs.join("glaucoma/r1_Im001-1-Disc-T.png"),
                refs.join("glaucoma/r1_Im001-1-Cup-T.png")
            ]
        );
    }

    #[test]
    fn unpaired_files_are_named_or_skipped() {
        let t = tempfile::tempdir().unwrap();
        let (img, seg) = (t.path().join("img"), t.path().join("seg"));
        touch(&img.join("a.jpg"));
        touch(&img.join("b.jpg"));
        touch(&seg.join("a_segmentation.png"));
        let f = folders(&img, &[(&seg, "_segmentation")]);
        let err = find_pairs(&f, &mut Vec::new()).unwrap_err().to_string();
        assert!(err.contains("b.jpg"), "{err}");
        assert!(err.contains("b_segmentation.*"), "{err}");
        let mut w = Vec::new();
        let pairs = find_pairs(
            &Folders2d {
                skip_unpaired: true,
                ..f.clone()
            },
            &mut w,
        )
        .unwrap();
        assert_eq!(pairs.len(), 1);
        assert_eq!(w.len(), 1, "{w:?}");

        touch(&seg.join("b_segmentation.png"));
        touch(&seg.join("c_segmentation.png"));
        let err = find_pairs(&f, &mut Vec::new()).unwrap_err().to_string();
        assert!(err.contains("c_segmentation.png"), "{err}");
        assert!(
            err.contains(&format!("{}", img.join("c.*").display())),
            "{err}"
        );
    }

    #[test]
    fn thresholding_turns_0_255_into_objects() {
        let m = GrayImage::from_raw(4, 1, vec![0, 255, 0, 255]).unwrap();
        assert_eq!(threshold_mask(&m, 0), [false, true, false, true]);
        let soft = GrayImage::from_raw(4, 1, vec![0, 3, 128, 250]).unwrap();
        assert_eq!(threshold_mask(&soft, 127), [false, false, true, true]);
    }

    /// An ellipse outline drawn by dense sampling (8-connected), leaving out angles in `gap`.
    fn ellipse_outline(w: usize, h: usize, c: (f64, f64), r: (f64, f64), gap: f64) -> Vec<bool> {
        let mut o = vec![false; w * h];
        for i in 0..4000 {
            let t = i as f64 / 4000.0 * std::f64::consts::TAU;
            if t < gap {
                continue;
            }
            let x = (c.0 + r.0 * t.cos()).round() as i64;
            let y = (c.1 + r.1 * t.sin()).round() as i64;
            if (0..w as i64).contains(&x) && (0..h as i64).contains(&y) {
                o[y as usize * w + x as usize] = true;
            }
        }
        o
    }

    #[test]
    fn a_closed_outline_fills_to_the_ellipse() {
        let (w, h, c, r) = (80, 60, (41.3, 28.7), (30.0, 19.5));
        let mut filled = ellipse_outline(w, h, c, r, 0.0);
        fill_outline(&mut filled, w, h);
        let mut worst = 0f64;
        for y in 0..h {
            for x in 0..w {
                let (dx, dy) = (x as f64 - c.0, y as f64 - c.1);
                let f = (dx / r.0).powi(2) + (dy / r.1).powi(2) - 1.0;
                let grad = (2.0 * dx / (r.0 * r.0)).hypot(2.0 * dy / (r.1 * r.1));
                if filled[y * w + x] != (f <= 0.0) {
                    worst = worst.max(f.abs() / grad);
                }
            }
        }
        println!("largest distance of a wrong pixel from the ellipse: {worst:.3} px");
        assert!(worst <= 1.0, "{worst}");
        let area = filled.iter().filter(|&&v| v).count() as f64;
        let want = std::f64::consts::PI * r.0 * r.1;
        // Within a 1-px band along the ellipse (Ramanujan's perimeter).
        let band = std::f64::consts::PI
            * (3.0 * (r.0 + r.1) - ((3.0 * r.0 + r.1) * (r.0 + 3.0 * r.1)).sqrt());
        assert!((area - want).abs() < band, "{area} vs {want} ± {band}");
    }

    #[test]
    fn an_open_curve_does_not_fill() {
        let (w, h) = (80, 60);
        let curve = ellipse_outline(w, h, (40.0, 30.0), (30.0, 20.0), 0.4);
        let mut filled = curve.clone();
        fill_outline(&mut filled, w, h);
        assert_eq!(filled, curve);
        // Nor does an outline cut by the image edge.
        let cut = ellipse_outline(w, h, (40.0, 30.0), (50.0, 20.0), 0.0);
        let mut filled = cut.clone();
        fill_outline(&mut filled, w, h);
        assert!(!filled[30 * w + 40]);
    }

    #[test]
    fn rgb_and_outline_folders_become_a_dataset() {
        let t = tempfile::tempdir().unwrap();
        let (img, seg) = (t.path().join("img"), t.path().join("seg"));
        std::fs::create_dir_all(&img).unwrap();
        std::fs::create_dir_all(&seg).unwrap();
        let (w, h) = (40u32, 30u32);
        for i in 0..4 {
            let rgb = RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8 * 6, y as u8 * 8, 200]));
            rgb.save(img.join(format!("p{i}.png"))).unwrap();
            let outline = ellipse_outline(40, 30, (20.0, 15.0), (12.0, 8.0), 0.0);
            let m = GrayImage::from_raw(w, h, outline.iter().map(|&o| o as u8 * 255).collect());
            m.unwrap().save(seg.join(format!("p{i}_mask.png"))).unwrap();
        }
        let mut f = folders(&img, &[(&seg, "_mask")]);
        f.fill_outline = true;
        let labels = LabelMapping::identity(&["object".into()]).unwrap();
        let mut opts = PrepareOptions::new(Vec::new(), t.path().join("out"), labels);
        opts.size = 20;
        let s = prepare_2d(&f, &opts, &|_| {}).unwrap();
        assert_eq!(s.slices.iter().sum::<usize>(), 4);
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
        let info = DatasetInfo::read(&opts.out_dir).unwrap();
        assert_eq!((info.channels, info.num_classes, info.size), (3, 2, 20));
        let rows = super::super::read_manifest(&opts.out_dir.join(super::super::MANIFEST)).unwrap();
        let mask_path = opts.out_dir.join(rows[0].file.replacen(
            IMG_DIR,
            &format!("{MASK_DIR}/all"),
            1,
        ));
        let mask = segdiff_io::read_grey_samples(&mask_path).unwrap();
        assert!(mask.pixels.iter().all(|&v| v <= 1));
        // 40×30 padded to 40×40, then 20×20: the ellipse's area scales by 1/4.
        let area = mask.pixels.iter().filter(|&&v| v == 1).count() as f64;
        let want = std::f64::consts::PI * 12.0 * 8.0 / 4.0;
        assert!((area - want).abs() < 0.15 * want, "{area} vs {want}");
        let out = image::open(opts.out_dir.join(&rows[0].file)).unwrap();
        assert!(matches!(out, DynamicImage::ImageRgb8(_)));
    }
}
