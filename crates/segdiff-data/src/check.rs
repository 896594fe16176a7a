//! Checking a paired PNG dataset before training: [`check_dataset`] → [`DataReport`].
//!
//! Every image and mask of every split (the layout [`crate::Dataset`] reads) is decoded once, in
//! parallel, and every problem is collected rather than stopping at the first, each naming its
//! file(s): unreadable files, colour masks, image/mask size mismatches, class ids not below the
//! number of classes, images without masks and masks without images, a mix of grey and RGB images
//! or of 8- and 16-bit images, and `manifest.csv` rows naming missing files. The [`Summary`] gives
//! pairs per split, the per-class pixel share and slice presence, the share of empty masks and the
//! image intensity range.
//!
//! Colour masks (RGB, palette or grey+alpha PNGs) get one dataset-wide colour → id mapping
//! ([`ColourMapping`]), chosen by the first rule that applies:
//! 1. `dataset.json`'s `class_colors`, when they list every colour found (colour i → id i);
//! 2. grey colours (R = G = B) only, all below the number of classes: the grey value is the id
//!    (an id map saved as RGB);
//! 3. otherwise black → 0, then the other colours by increasing Pillow luma
//!    (`(19595 R + 38470 G + 7471 B + 2¹⁵) >> 16`), ties by R, then G, then B → 1, 2, 3, ….
//!
//! The mapping depends only on the set of colours, not on file order. With
//! [`CheckOptions::convert_colour_masks`] each colour mask is rewritten in place (atomically) as
//! an 8-bit id PNG with that mapping and the dataset is checked again.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use image::{DynamicImage, GrayImage};
use rayon::prelude::*;
use serde::Serialize;

use crate::dataset::{first_existing, DatasetClasses, IMG_NAMES, MASK_NAMES};
use crate::error::{DataError, Result};
use crate::prepare::{read_manifest, DATASET_JSON, MANIFEST};
use crate::split::Split;

// The folder names `Dataset::open` accepts, in its order of preference.
/// More distinct colours than this in one mask: not a label map.
const MAX_MASK_COLOURS: usize = 256;

/// What [`check_dataset`] checks and does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckOptions {
    /// Number of classes (ids `0..n`); `None` reads `num_classes` from `dataset.json`.
    pub num_classes: Option<usize>,
    /// Rewrite colour masks in place as 8-bit id PNGs (see the module docs), then check again.
    pub convert_colour_masks: bool,
    /// A dataset without a mask folder is a problem (unconditional training needs none).
    pub require_masks: bool,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            num_classes: None,
            convert_colour_masks: false,
            require_masks: true,
        }
    }
}

/// Grey or colour, as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelKind {
    /// One channel (alpha ignored).
    Grey,
    /// RGB or palette (alpha ignored).
    Rgb,
}

impl ChannelKind {
    fn name(self) -> &'static str {
        match self {
            ChannelKind::Grey => "grey",
            ChannelKind::Rgb => "RGB",
        }
    }
}

/// One thing wrong with the dataset, naming the file(s) at fault.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Problem {
    /// A folder of the layout is missing or empty.
    Layout { path: PathBuf, detail: String },
    /// `dataset.json` cannot be read or holds an unusable value.
    DatasetJson { path: PathBuf, detail: String },
    /// `manifest.csv` cannot be read.
    Manifest { path: PathBuf, detail: String },
    /// `manifest.csv` lists a file that does not exist.
    ManifestMissing { path: PathBuf, manifest: PathBuf },
    /// The file cannot be read or decoded as PNG.
    Unreadable { path: PathBuf, detail: String },
    /// An image without its mask.
    OrphanImage {
        path: PathBuf,
        expected_mask: PathBuf,
    },
    /// A mask without its image.
    OrphanMask {
        path: PathBuf,
        expected_image: PathBuf,
    },
    /// A mask stored in colour instead of class ids; `colours` distinct colours (saturates above
    /// 256, with `too_many`: then it is no label map and is not converted).
    ColourMask {
        path: PathBuf,
        colours: usize,
        too_many: bool,
    },
    /// Image and mask sizes (width, height) differ.
    SizeMismatch {
        image: PathBuf,
        mask: PathBuf,
        image_size: [u32; 2],
        mask_size: [u32; 2],
    },
    /// Mask ids not below the number of classes: the ids and how many pixels hold them.
    ClassOutOfRange {
        path: PathBuf,
        ids: Vec<u32>,
        pixels: u64,
        num_classes: usize,
    },
    /// An image whose channels differ from the dataset's majority.
    MixedChannels {
        path: PathBuf,
        channels: ChannelKind,
        majority: ChannelKind,
    },
    /// An image whose bit depth differs from the dataset's majority.
    MixedBitDepth {
        path: PathBuf,
        bit_depth: u8,
        majority: u8,
    },
}

/// The kinds of [`Problem`], in the order a report lists them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    Layout,
    DatasetJson,
    Manifest,
    Unreadable,
    OrphanImage,
    OrphanMask,
    ColourMask,
    SizeMismatch,
    ClassOutOfRange,
    MixedChannels,
    MixedBitDepth,
}

impl ProblemKind {
    /// Every kind, in report order.
    pub const ALL: [ProblemKind; 11] = [
        ProblemKind::Layout,
        ProblemKind::DatasetJson,
        ProblemKind::Manifest,
        ProblemKind::Unreadable,
        ProblemKind::OrphanImage,
        ProblemKind::OrphanMask,
        ProblemKind::ColourMask,
        ProblemKind::SizeMismatch,
        ProblemKind::ClassOutOfRange,
        ProblemKind::MixedChannels,
        ProblemKind::MixedBitDepth,
    ];

    /// The heading of this kind in a report.
    pub fn title(self) -> &'static str {
        match self {
            ProblemKind::Layout => "dataset layout",
            ProblemKind::DatasetJson => "dataset.json",
            ProblemKind::Manifest => "manifest.csv",
            ProblemKind::Unreadable => "unreadable files",
            ProblemKind::OrphanImage => "images without masks",
            ProblemKind::OrphanMask => "masks without images",
            ProblemKind::ColourMask => "colour masks (class ids expected)",
            ProblemKind::SizeMismatch => "image/mask size mismatches",
            ProblemKind::ClassOutOfRange => "class ids not below the number of classes",
            ProblemKind::MixedChannels => "grey and RGB images mixed",
            ProblemKind::MixedBitDepth => "8- and 16-bit images mixed",
        }
    }
}

impl Problem {
    /// Its kind.
    pub fn kind(&self) -> ProblemKind {
        match self {
            Problem::Layout { .. } => ProblemKind::Layout,
            Problem::DatasetJson { .. } => ProblemKind::DatasetJson,
            Problem::Manifest { .. } | Problem::ManifestMissing { .. } => ProblemKind::Manifest,
            Problem::Unreadable { .. } => ProblemKind::Unreadable,
            Problem::OrphanImage { .. } => ProblemKind::OrphanImage,
            Problem::OrphanMask { .. } => ProblemKind::OrphanMask,
            Problem::ColourMask { .. } => ProblemKind::ColourMask,
            Problem::SizeMismatch { .. } => ProblemKind::SizeMismatch,
            Problem::ClassOutOfRange { .. } => ProblemKind::ClassOutOfRange,
            Problem::MixedChannels { .. } => ProblemKind::MixedChannels,
            Problem::MixedBitDepth { .. } => ProblemKind::MixedBitDepth,
        }
    }

    /// The file (or folder) at fault; for a size mismatch, the mask.
    pub fn path(&self) -> &Path {
        match self {
            Problem::Layout { path, .. }
            | Problem::DatasetJson { path, .. }
            | Problem::Manifest { path, .. }
            | Problem::ManifestMissing { path, .. }
            | Problem::Unreadable { path, .. }
            | Problem::OrphanImage { path, .. }
            | Problem::OrphanMask { path, .. }
            | Problem::ColourMask { path, .. }
            | Problem::ClassOutOfRange { path, .. }
            | Problem::MixedChannels { path, .. }
            | Problem::MixedBitDepth { path, .. } => path,
            Problem::SizeMismatch { mask, .. } => mask,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Layout { path, detail }
            | Problem::DatasetJson { path, detail }
            | Problem::Manifest { path, detail }
            | Problem::Unreadable { path, detail } => write!(f, "{}: {detail}", path.display()),
            Problem::ManifestMissing { path, manifest } => write!(
                f,
                "{}: listed in {} but missing",
                path.display(),
                manifest.display()
            ),
            Problem::OrphanImage {
                path,
                expected_mask,
            } => write!(f, "{}: no mask {}", path.display(), expected_mask.display()),
            Problem::OrphanMask {
                path,
                expected_image,
            } => write!(
                f,
                "{}: no image {}",
                path.display(),
                expected_image.display()
            ),
            Problem::ColourMask {
                path,
                colours,
                too_many,
            } => {
                if *too_many {
                    write!(
                        f,
                        "{}: more than {MAX_MASK_COLOURS} colours (not a label map)",
                        path.display()
                    )
                } else {
                    write!(f, "{}: {colours} colours", path.display())
                }
            }
            Problem::SizeMismatch {
                image,
                mask,
                image_size,
                mask_size,
            } => write!(
                f,
                "{}: {}×{}, image {} is {}×{}",
                mask.display(),
                mask_size[0],
                mask_size[1],
                image.display(),
                image_size[0],
                image_size[1]
            ),
            Problem::ClassOutOfRange {
                path,
                ids,
                pixels,
                num_classes,
            } => {
                let ids: Vec<String> = ids.iter().map(u32::to_string).collect();
                write!(
                    f,
                    "{}: id {} in {pixels} pixels (classes 0..{})",
                    path.display(),
                    ids.join(", "),
                    num_classes.saturating_sub(1)
                )
            }
            Problem::MixedChannels {
                path,
                channels,
                majority,
            } => write!(
                f,
                "{}: {} among {} images",
                path.display(),
                channels.name(),
                majority.name()
            ),
            Problem::MixedBitDepth {
                path,
                bit_depth,
                majority,
            } => write!(
                f,
                "{}: {bit_depth}-bit among {majority}-bit images",
                path.display()
            ),
        }
    }
}

/// Which rule of the module docs chose the colour → id mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MappingRule {
    /// `dataset.json`'s `class_colors`: colour i → id i.
    DatasetColours,
    /// Every colour is grey, below the number of classes, and its grey value is the id.
    GreyValues,
    /// Black → 0, then the other colours by increasing luma (ties by R, G, B).
    Luma,
}

/// One colour and the class id it becomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ColourId {
    /// The colour (R, G, B; 16-bit colours by their high byte, alpha ignored).
    pub rgb: [u8; 3],
    /// Its class id.
    pub id: u32,
}

/// The dataset-wide colour → id mapping of colour masks (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ColourMapping {
    /// The rule that chose it.
    pub rule: MappingRule,
    /// Every colour found, by id.
    pub colours: Vec<ColourId>,
}

impl ColourMapping {
    /// The mapping of `colours` (a set; order does not matter), given `dataset.json`'s
    /// `class_colors` when it has them and the number of classes when it is known.
    pub fn from_colours(
        colours: &[[u8; 3]],
        palette: Option<&[[u8; 3]]>,
        num_classes: Option<usize>,
    ) -> ColourMapping {
        let mut set: Vec<[u8; 3]> = colours.to_vec();
        set.sort_unstable();
        set.dedup();
        if let Some(p) = palette {
            let ids: Option<Vec<ColourId>> = set
                .iter()
                .map(|c| {
                    p.iter().position(|q| q == c).map(|i| ColourId {
                        rgb: *c,
                        id: i as u32,
                    })
                })
                .collect();
            if let Some(mut ids) = ids {
                ids.sort_by_key(|c| c.id);
                return ColourMapping {
                    rule: MappingRule::DatasetColours,
                    colours: ids,
                };
            }
        }
        // A grey 0/255 mask is two classes, not ids 0 and 255: grey values are ids only when
        // every one is a valid id; otherwise the luma rule ranks them in grey order.
        let grey_ids = num_classes.is_some_and(|n| {
            set.iter()
                .all(|c| c[0] == c[1] && c[1] == c[2] && usize::from(c[0]) < n)
        });
        if grey_ids {
            return ColourMapping {
                rule: MappingRule::GreyValues,
                colours: set
                    .iter()
                    .map(|c| ColourId {
                        rgb: *c,
                        id: u32::from(c[0]),
                    })
                    .collect(),
            };
        }
        let black = [0u8; 3];
        let mut others: Vec<[u8; 3]> = set.iter().copied().filter(|c| *c != black).collect();
        others.sort_by_key(|c| (segdiff_io::pil_luma(c[0], c[1], c[2]), *c));
        let mut out = Vec::with_capacity(set.len());
        if set.contains(&black) {
            out.push(ColourId { rgb: black, id: 0 });
        }
        out.extend(others.iter().enumerate().map(|(i, c)| ColourId {
            rgb: *c,
            id: i as u32 + 1,
        }));
        ColourMapping {
            rule: MappingRule::Luma,
            colours: out,
        }
    }

    /// The id of `rgb`, if the mapping holds it.
    pub fn id_of(&self, rgb: [u8; 3]) -> Option<u32> {
        self.colours.iter().find(|c| c.rgb == rgb).map(|c| c.id)
    }
}

impl ColourMapping {
    /// The rule and at most `max` colour → id pairs (then how many more), as text.
    pub fn describe(&self, max: usize) -> String {
        let rule = match self.rule {
            MappingRule::DatasetColours => "dataset.json class_colors",
            MappingRule::GreyValues => "grey palette: the grey value is the id",
            MappingRule::Luma => "black → 0, then by increasing luma",
        };
        let mut pairs: Vec<String> = self
            .colours
            .iter()
            .take(max)
            .map(|c| {
                format!(
                    "#{:02x}{:02x}{:02x} → {}",
                    c.rgb[0], c.rgb[1], c.rgb[2], c.id
                )
            })
            .collect();
        if self.colours.len() > max {
            pairs.push(format!("… and {} more", self.colours.len() - max));
        }
        format!("({rule}) {}", pairs.join(", "))
    }
}

impl fmt::Display for ColourMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe(usize::MAX))
    }
}

/// Counts of one split.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SplitCounts {
    /// The split.
    pub split: Split,
    /// Image/mask pairs (both files present).
    pub pairs: usize,
    /// Image files.
    pub images: usize,
    /// Mask files.
    pub masks: usize,
}

/// How often one class occurs in the masks that hold class ids.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClassStats {
    /// Class id.
    pub id: u32,
    /// Its name from `dataset.json`, if given.
    pub name: Option<String>,
    /// Pixels holding it.
    pub pixels: u64,
    /// `pixels` over all mask pixels.
    pub pixel_share: f64,
    /// Masks in which it occurs.
    pub masks: usize,
    /// `masks` over all masks (slice presence).
    pub presence: f64,
}

/// Files of one pixel format.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FormatCount {
    /// Grey or RGB.
    pub channels: ChannelKind,
    /// 8 or 16.
    pub bit_depth: u8,
    /// Number of files.
    pub count: usize,
}

/// Images of one size.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SizeCount {
    pub width: u32,
    pub height: u32,
    pub count: usize,
}

/// Intensity range of the images of one bit depth, on their grey (Pillow luma) values.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct IntensityRange {
    /// 8 or 16.
    pub bit_depth: u8,
    pub min: u16,
    pub max: u16,
    pub mean: f64,
}

/// What the dataset holds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    /// The declared number of classes, if known.
    pub num_classes: Option<usize>,
    /// Where it came from: `option`, `dataset.json`, or null.
    pub num_classes_from: Option<&'static str>,
    /// Pairs, images and masks per split (all three splits, in order).
    pub splits: Vec<SplitCounts>,
    /// Image pixel formats.
    pub image_formats: Vec<FormatCount>,
    /// Mask pixel formats (RGB: colour masks).
    pub mask_formats: Vec<FormatCount>,
    /// Image sizes, most frequent first.
    pub image_sizes: Vec<SizeCount>,
    /// Intensity range per image bit depth.
    pub intensity: Vec<IntensityRange>,
    /// Masks read as class ids (the statistics below are over these).
    pub id_masks: usize,
    /// Masks whose every pixel is 0.
    pub empty_masks: usize,
    /// `empty_masks / id_masks`.
    pub empty_mask_share: f64,
    /// Per class id: `0..num_classes`, extended to the highest id found.
    pub classes: Vec<ClassStats>,
}

impl Summary {
    /// Image/mask pairs over all splits.
    pub fn pairs(&self) -> usize {
        self.splits.iter().map(|s| s.pairs).sum()
    }
}

/// The result of [`check_dataset`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DataReport {
    /// The dataset root.
    pub root: PathBuf,
    /// Every problem, in split and file order (dataset-wide ones first).
    pub problems: Vec<Problem>,
    /// What the dataset holds.
    pub summary: Summary,
    /// The colour → id mapping of the colour masks found (or converted), if any.
    pub colour_mapping: Option<ColourMapping>,
    /// Masks rewritten as id PNGs by [`CheckOptions::convert_colour_masks`].
    pub converted: Vec<PathBuf>,
}

impl DataReport {
    /// Whether nothing is wrong.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// `Ok(self)` when nothing is wrong, else [`DataError::DatasetProblems`] naming the first
    /// problem (for callers that stop on a bad dataset).
    pub fn ensure_ok(self) -> Result<DataReport> {
        match self.problems.first() {
            None => Ok(self),
            Some(first) => Err(DataError::DatasetProblems {
                path: self.root.clone(),
                count: self.problems.len(),
                first: first.to_string(),
            }),
        }
    }

    /// The problems of `kind`.
    pub fn problems_of(&self, kind: ProblemKind) -> impl Iterator<Item = &Problem> {
        self.problems.iter().filter(move |p| p.kind() == kind)
    }

    /// The report as text: problems grouped by kind, at most `max_per_kind` listed per kind
    /// (then "… and N more"), and the summary.
    pub fn render(&self, max_per_kind: usize) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let sum = &self.summary;
        let splits: Vec<String> = sum
            .splits
            .iter()
            .map(|c| format!("{} {}", c.split.name(), c.pairs))
            .collect();
        let _ = writeln!(
            s,
            "dataset {}: {} pairs ({})",
            self.root.display(),
            sum.pairs(),
            splits.join(", ")
        );
        let classes = match (sum.num_classes, sum.num_classes_from) {
            (Some(n), Some(from)) => format!("{n} (from {from})"),
            (Some(n), None) => n.to_string(),
            _ => "unknown (no dataset.json, no number given)".into(),
        };
        let _ = writeln!(s, "classes: {classes}");
        let formats = |f: &[FormatCount], rgb: &str| -> String {
            let v: Vec<String> = f
                .iter()
                .map(|c| {
                    let ch = match c.channels {
                        ChannelKind::Grey => "grey",
                        ChannelKind::Rgb => rgb,
                    };
                    format!("{} {ch} {}-bit", c.count, c.bit_depth)
                })
                .collect();
            if v.is_empty() {
                "none".into()
            } else {
                v.join(", ")
            }
        };
        let sizes: Vec<String> = sum
            .image_sizes
            .iter()
            .map(|z| format!("{}×{} ({})", z.width, z.height, z.count))
            .collect();
        let _ = writeln!(
            s,
            "images: {}; sizes {}",
            formats(&sum.image_formats, "RGB"),
            if sizes.is_empty() {
                "-".into()
            } else {
                sizes.join(", ")
            }
        );
        for r in &sum.intensity {
            let _ = writeln!(
                s,
                "intensity ({}-bit): min {}, max {}, mean {:.1}",
                r.bit_depth, r.min, r.max, r.mean
            );
        }
        let _ = writeln!(
            s,
            "masks: {}; empty {} of {} ({:.1}%)",
            formats(&sum.mask_formats, "colour"),
            sum.empty_masks,
            sum.id_masks,
            100.0 * sum.empty_mask_share
        );
        if !sum.classes.is_empty() {
            let _ = writeln!(
                s,
                "  {:>5}  {:<20} {:>8} {:>9}",
                "class", "name", "pixels", "in masks"
            );
            for c in &sum.classes {
                let _ = writeln!(
                    s,
                    "  {:>5}  {:<20} {:>7.2}% {:>8.1}%",
                    c.id,
                    match (c.name.as_deref(), sum.num_classes) {
                        (_, Some(n)) if c.id as usize >= n => "(not a class)",
                        (Some(name), _) => name,
                        (None, _) => "-",
                    },
                    100.0 * c.pixel_share,
                    100.0 * c.presence
                );
            }
        }
        if !self.converted.is_empty() {
            let _ = writeln!(
                s,
                "converted {} colour masks to id PNGs",
                self.converted.len()
            );
            list(
                &mut s,
                self.converted.iter().map(|p| p.display()),
                max_per_kind,
            );
            if let Some(m) = &self.colour_mapping {
                let _ = writeln!(s, "  with the mapping {}", m.describe(max_per_kind));
            }
        }
        if self.is_ok() {
            let _ = writeln!(s, "no problems found");
            return s;
        }
        let _ = writeln!(s, "{} problems:", self.problems.len());
        for kind in ProblemKind::ALL {
            let of: Vec<&Problem> = self.problems_of(kind).collect();
            if of.is_empty() {
                continue;
            }
            let _ = writeln!(s, "{} ({}):", kind.title(), of.len());
            list(&mut s, of.iter(), max_per_kind);
            if let (ProblemKind::ColourMask, Some(m)) = (kind, &self.colour_mapping) {
                let _ = writeln!(s, "  mapping to ids: {}", m.describe(max_per_kind));
            }
        }
        s
    }
}

/// Lists `items`, one per line, at most `max` of them.
fn list<T: fmt::Display>(s: &mut String, items: impl ExactSizeIterator<Item = T>, max: usize) {
    use std::fmt::Write as _;
    let n = items.len();
    for it in items.take(max) {
        let _ = writeln!(s, "  {it}");
    }
    if n > max {
        let _ = writeln!(s, "  … and {} more", n - max);
    }
}

impl fmt::Display for DataReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render(20))
    }
}

/// Checks the dataset at `dir` (see the module docs); `progress(done, total)` is called as files
/// are read, from several threads. Problems in the data are in the report; an `Err` means the
/// check could not run (no image folder, a bad option, a failed conversion write).
pub fn check_dataset(
    dir: &Path,
    opts: &CheckOptions,
    progress: impl Fn(usize, usize) + Sync,
) -> Result<DataReport> {
    if let Some(n) = opts.num_classes {
        if n == 0 || n > 65536 {
            return Err(DataError::option(
                "num_classes",
                format!("{n} is not in 1..=65536"),
            ));
        }
    }
    let report = scan(dir, opts, &progress)?;
    let Some(mapping) = report.colour_mapping.clone() else {
        return Ok(report);
    };
    if !opts.convert_colour_masks {
        return Ok(report);
    }
    let targets: Vec<&PathBuf> = report
        .problems
        .iter()
        .filter_map(|p| match p {
            Problem::ColourMask {
                path,
                too_many: false,
                ..
            } => Some(path),
            _ => None,
        })
        .collect();
    if mapping.colours.iter().any(|c| c.id > 255) {
        return Err(DataError::option(
            "convert_colour_masks",
            "the colour mapping needs ids above 255, which an 8-bit id PNG cannot hold",
        ));
    }
    let converted: Vec<PathBuf> = targets
        .par_iter()
        .map(|p| convert_mask(p, &mapping).map(|()| (*p).clone()))
        .collect::<Result<_>>()?;
    let mut again = scan(dir, opts, &progress)?;
    again.converted = converted;
    again.colour_mapping = Some(mapping);
    Ok(again)
}

/// Rewrites one colour mask as an 8-bit id PNG with `mapping`.
fn convert_mask(path: &Path, mapping: &ColourMapping) -> Result<()> {
    let rgb = segdiff_io::read_image(path)?.to_rgb8();
    let lookup: std::collections::HashMap<[u8; 3], u8> = mapping
        .colours
        .iter()
        .map(|c| (c.rgb, c.id as u8))
        .collect();
    let mut ids = Vec::with_capacity((rgb.width() * rgb.height()) as usize);
    for p in rgb.pixels() {
        // Every colour of every converted mask is in the mapping: it was built from them.
        let id = lookup.get(&p.0).copied().ok_or_else(|| DataError::Png {
            path: path.to_path_buf(),
            detail: format!(
                "colour #{:02x}{:02x}{:02x} is not in the mapping (was the file changed?)",
                p[0], p[1], p[2]
            ),
        })?;
        ids.push(id);
    }
    let grey =
        GrayImage::from_raw(rgb.width(), rgb.height(), ids).ok_or_else(|| DataError::Png {
            path: path.to_path_buf(),
            detail: "id buffer does not match the image size".into(),
        })?;
    segdiff_io::write_png(path, &DynamicImage::ImageLuma8(grey))?;
    Ok(())
}

/// One name of one split: its image and/or mask.
struct Job {
    image: Option<PathBuf>,
    mask: Option<PathBuf>,
}

/// What reading an image found.
struct ImageFacts {
    size: [u32; 2],
    channels: ChannelKind,
    bit_depth: u8,
    min: u16,
    max: u16,
    sum: f64,
    count: u64,
}

/// What reading one name's image and mask found (a problem instead when unreadable).
type PairFacts = (
    Option<std::result::Result<ImageFacts, Problem>>,
    Option<std::result::Result<MaskFacts, Problem>>,
);

/// What reading a mask found.
enum MaskFacts {
    Ids {
        size: [u32; 2],
        bit_depth: u8,
        /// Pixels per id, up to the highest id present.
        counts: Vec<u64>,
    },
    Colour {
        size: [u32; 2],
        bit_depth: u8,
        colours: Vec<[u8; 3]>,
        too_many: bool,
    },
}

fn unreadable(path: &Path, e: segdiff_io::ImageFileError) -> Problem {
    use segdiff_io::ImageFileError as E;
    let detail = match &e {
        E::Io { action, source, .. } => format!("{action}: {source}"),
        E::Decode { source, .. } => format!("not a readable image: {source}"),
        other => other.to_string(),
    };
    Problem::Unreadable {
        path: path.to_path_buf(),
        detail,
    }
}

fn read_image_facts(path: &Path) -> std::result::Result<ImageFacts, Problem> {
    let img = segdiff_io::read_image(path).map_err(|e| unreadable(path, e))?;
    let size = [img.width(), img.height()];
    let channels = if img.color().has_color() {
        ChannelKind::Rgb
    } else {
        ChannelKind::Grey
    };
    let bit_depth = if img.color().bytes_per_pixel() / img.color().channel_count() >= 2 {
        16
    } else {
        8
    };
    let (mut min, mut max, mut sum, mut count) = (u16::MAX, 0u16, 0u64, 0u64);
    let mut add = |v: u16| {
        min = min.min(v);
        max = max.max(v);
        sum += u64::from(v);
        count += 1;
    };
    match segdiff_io::grey16(&img) {
        Some(g) => g.into_iter().for_each(&mut add),
        None => segdiff_io::grey8(&img)
            .into_raw()
            .into_iter()
            .for_each(|v| add(u16::from(v))),
    }
    Ok(ImageFacts {
        size,
        channels,
        bit_depth,
        min,
        max,
        sum: sum as f64,
        count,
    })
}

fn read_mask_facts(path: &Path) -> std::result::Result<MaskFacts, Problem> {
    let img = segdiff_io::read_image(path).map_err(|e| unreadable(path, e))?;
    let size = [img.width(), img.height()];
    let histogram = |ids: &mut dyn Iterator<Item = u16>| -> Vec<u64> {
        let mut counts = vec![0u64; 256];
        for v in ids {
            let v = usize::from(v);
            if v >= counts.len() {
                counts.resize(v + 1, 0);
            }
            counts[v] += 1;
        }
        let top = counts.iter().rposition(|&c| c > 0).map_or(0, |i| i + 1);
        counts.truncate(top);
        counts
    };
    Ok(match img {
        DynamicImage::ImageLuma8(g) => MaskFacts::Ids {
            size,
            bit_depth: 8,
            counts: histogram(&mut g.as_raw().iter().map(|&v| u16::from(v))),
        },
        DynamicImage::ImageLuma16(g) => MaskFacts::Ids {
            size,
            bit_depth: 16,
            counts: histogram(&mut g.as_raw().iter().copied()),
        },
        other => {
            let c = other.color();
            let bit_depth = if c.bytes_per_pixel() / c.channel_count() >= 2 {
                16
            } else {
                8
            };
            let mut seen: HashSet<[u8; 3]> = HashSet::new();
            let mut too_many = false;
            for p in other.to_rgb8().pixels() {
                if seen.insert(p.0) && seen.len() > MAX_MASK_COLOURS {
                    too_many = true;
                    break;
                }
            }
            let mut colours: Vec<[u8; 3]> = seen.into_iter().collect();
            colours.sort_unstable();
            MaskFacts::Colour {
                size,
                bit_depth,
                colours,
                too_many,
            }
        }
    })
}

/// Sorted `*.png` names in `dir`; none when `dir` does not exist.
fn list_pngs(dir: &Path) -> Result<Vec<String>> {
    if dir.is_dir() {
        crate::dataset::list_pngs(dir)
    } else {
        Ok(Vec::new())
    }
}

/// The majority of `counts` (ties: the smallest key) and the keys that are not it.
fn majority<K: Ord + Copy>(counts: &BTreeMap<K, usize>) -> Option<K> {
    counts
        .iter()
        .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
        .map(|(k, _)| *k)
}

fn scan(
    dir: &Path,
    opts: &CheckOptions,
    progress: &(impl Fn(usize, usize) + Sync),
) -> Result<DataReport> {
    if !dir.is_dir() {
        return Err(DataError::Layout {
            path: dir.to_path_buf(),
            detail: "not a folder".into(),
        });
    }
    let img_root = first_existing(dir, &IMG_NAMES).ok_or_else(|| DataError::Layout {
        path: dir.to_path_buf(),
        detail: format!("no image folder (one of {})", IMG_NAMES.join(", ")),
    })?;
    let mut problems = Vec::new();

    // The declared classes: the option wins over dataset.json.
    let classes = match DatasetClasses::read(dir) {
        Ok(c) => c,
        Err(e) => {
            problems.push(Problem::DatasetJson {
                path: dir.join(DATASET_JSON),
                detail: e.to_string(),
            });
            None
        }
    };
    let (num_classes, num_classes_from) = match (opts.num_classes, &classes) {
        (Some(n), _) => (Some(n), Some("option")),
        (None, Some(c)) if c.num_classes == 0 => {
            problems.push(Problem::DatasetJson {
                path: dir.join(DATASET_JSON),
                detail: "num_classes is 0".into(),
            });
            (None, None)
        }
        (None, Some(c)) => (Some(c.num_classes), Some("dataset.json")),
        (None, None) => (None, None),
    };

    let mask_all = match first_existing(dir, &MASK_NAMES) {
        Some(m) => {
            let all = ["all", "ALL"]
                .iter()
                .map(|a| m.join(a))
                .find(|p| p.is_dir());
            if all.is_none() {
                problems.push(Problem::Layout {
                    path: m.clone(),
                    detail: "mask folder has no `all` sub-folder".into(),
                });
            }
            all
        }
        None => {
            if opts.require_masks {
                problems.push(Problem::Layout {
                    path: dir.to_path_buf(),
                    detail: format!("no mask folder (one of {})", MASK_NAMES.join(", ")),
                });
            }
            None
        }
    };

    let manifest = dir.join(MANIFEST);
    if manifest.is_file() {
        match read_manifest(&manifest) {
            Ok(rows) => problems.extend(
                rows.iter()
                    .map(|r| dir.join(&r.file))
                    .filter(|p| !p.is_file())
                    .map(|path| Problem::ManifestMissing {
                        path,
                        manifest: manifest.clone(),
                    }),
            ),
            Err(e) => problems.push(Problem::Manifest {
                path: manifest.clone(),
                detail: e.to_string(),
            }),
        }
    }

    // Pair by file name within each split.
    let mut jobs: Vec<Job> = Vec::new();
    let mut splits = Vec::new();
    for split in Split::ALL {
        let img_dir = img_root.join(split.name());
        let images = list_pngs(&img_dir)?;
        let (mask_dir, masks) = match &mask_all {
            Some(m) => {
                let d = m.join(split.name());
                let names = list_pngs(&d)?;
                (Some(d), names)
            }
            None => (None, Vec::new()),
        };
        let mut names: Vec<&String> = images.iter().chain(masks.iter()).collect();
        names.sort();
        names.dedup();
        let mut pairs = 0;
        for n in names {
            let has_image = images.binary_search(n).is_ok();
            let has_mask = masks.binary_search(n).is_ok();
            pairs += usize::from(has_image && has_mask);
            jobs.push(Job {
                image: has_image.then(|| img_dir.join(n)),
                mask: match &mask_dir {
                    Some(d) if has_mask => Some(d.join(n)),
                    _ => None,
                },
            });
        }
        splits.push(SplitCounts {
            split,
            pairs,
            images: images.len(),
            masks: masks.len(),
        });
    }

    let total = jobs
        .iter()
        .map(|j| j.image.is_some() as usize + j.mask.is_some() as usize)
        .sum();
    let done = AtomicUsize::new(0);
    progress(0, total);
    let tick = |n: usize| progress(done.fetch_add(n, Ordering::Relaxed) + n, total);
    let results: Vec<PairFacts> = jobs
        .par_iter()
        .map(|j| {
            let image = j.image.as_deref().map(read_image_facts);
            let mask = j.mask.as_deref().map(read_mask_facts);
            tick(j.image.is_some() as usize + j.mask.is_some() as usize);
            (image, mask)
        })
        .collect();

    // Per-pair problems, in split and file order, and the tallies of the summary.
    let mut image_formats: BTreeMap<(ChannelKind, u8), usize> = BTreeMap::new();
    let mut mask_formats: BTreeMap<(ChannelKind, u8), usize> = BTreeMap::new();
    let mut sizes: BTreeMap<[u32; 2], usize> = BTreeMap::new();
    let mut intensity: BTreeMap<u8, (u16, u16, f64, u64)> = BTreeMap::new();
    let mut class_pixels: Vec<u64> = Vec::new();
    let mut class_masks: Vec<usize> = Vec::new();
    let (mut id_masks, mut empty_masks) = (0usize, 0usize);
    let mut colours: Vec<[u8; 3]> = Vec::new();
    for (job, (image, mask)) in jobs.iter().zip(&results) {
        match (&job.image, &job.mask) {
            (Some(i), None) => {
                // Without a mask folder there is one layout problem, not one per image.
                if let Some(m) = &mask_all {
                    problems.push(Problem::OrphanImage {
                        path: i.clone(),
                        expected_mask: m.join(relative_split_name(i)),
                    })
                }
            }
            (None, Some(m)) => problems.push(Problem::OrphanMask {
                path: m.clone(),
                expected_image: img_root.join(relative_split_name(m)),
            }),
            _ => {}
        }
        let image_facts = match image {
            Some(Ok(f)) => Some(f),
            Some(Err(p)) => {
                problems.push(p.clone());
                None
            }
            None => None,
        };
        if let Some(f) = image_facts {
            *image_formats.entry((f.channels, f.bit_depth)).or_default() += 1;
            *sizes.entry(f.size).or_default() += 1;
            let e = intensity
                .entry(f.bit_depth)
                .or_insert((u16::MAX, 0, 0.0, 0));
            e.0 = e.0.min(f.min);
            e.1 = e.1.max(f.max);
            e.2 += f.sum;
            e.3 += f.count;
        }
        let Some(mask) = mask else { continue };
        let mask_path = job.mask.as_ref().expect("a mask result has a mask path");
        let facts = match mask {
            Ok(f) => f,
            Err(p) => {
                problems.push(p.clone());
                continue;
            }
        };
        let (mask_size, kind, bit_depth) = match facts {
            MaskFacts::Ids {
                size, bit_depth, ..
            } => (*size, ChannelKind::Grey, *bit_depth),
            MaskFacts::Colour {
                size, bit_depth, ..
            } => (*size, ChannelKind::Rgb, *bit_depth),
        };
        *mask_formats.entry((kind, bit_depth)).or_default() += 1;
        if let (Some(f), Some(i)) = (image_facts, &job.image) {
            if f.size != mask_size {
                problems.push(Problem::SizeMismatch {
                    image: i.clone(),
                    mask: mask_path.clone(),
                    image_size: f.size,
                    mask_size,
                });
            }
        }
        match facts {
            MaskFacts::Colour {
                colours: c,
                too_many,
                ..
            } => {
                if !too_many {
                    colours.extend_from_slice(c);
                }
                problems.push(Problem::ColourMask {
                    path: mask_path.clone(),
                    colours: c.len(),
                    too_many: *too_many,
                });
            }
            MaskFacts::Ids { counts, .. } => {
                id_masks += 1;
                let total_pixels: u64 = counts.iter().sum();
                if counts.first().copied().unwrap_or(0) == total_pixels {
                    empty_masks += 1;
                }
                if class_pixels.len() < counts.len() {
                    class_pixels.resize(counts.len(), 0);
                    class_masks.resize(counts.len(), 0);
                }
                for (id, &c) in counts.iter().enumerate() {
                    class_pixels[id] += c;
                    class_masks[id] += usize::from(c > 0);
                }
                if let Some(n) = num_classes {
                    let bad: Vec<u32> = (n..counts.len())
                        .filter(|&id| counts[id] > 0)
                        .map(|id| id as u32)
                        .collect();
                    if !bad.is_empty() {
                        problems.push(Problem::ClassOutOfRange {
                            path: mask_path.clone(),
                            pixels: bad.iter().map(|&id| counts[id as usize]).sum(),
                            ids: bad,
                            num_classes: n,
                        });
                    }
                }
            }
        }
    }

    // Dataset-wide: images that differ from the majority's channels or bit depth.
    let channel_counts: BTreeMap<ChannelKind, usize> =
        image_formats
            .iter()
            .fold(BTreeMap::new(), |mut m, ((c, _), n)| {
                *m.entry(*c).or_default() += n;
                m
            });
    let depth_counts: BTreeMap<u8, usize> =
        image_formats
            .iter()
            .fold(BTreeMap::new(), |mut m, ((_, d), n)| {
                *m.entry(*d).or_default() += n;
                m
            });
    let main_channels = majority(&channel_counts).filter(|_| channel_counts.len() > 1);
    let main_depth = majority(&depth_counts).filter(|_| depth_counts.len() > 1);
    if main_channels.is_some() || main_depth.is_some() {
        for (job, (image, _)) in jobs.iter().zip(&results) {
            let (Some(path), Some(Ok(f))) = (&job.image, image) else {
                continue;
            };
            if let Some(m) = main_channels.filter(|&m| m != f.channels) {
                problems.push(Problem::MixedChannels {
                    path: path.clone(),
                    channels: f.channels,
                    majority: m,
                });
            }
            if let Some(m) = main_depth.filter(|&m| m != f.bit_depth) {
                problems.push(Problem::MixedBitDepth {
                    path: path.clone(),
                    bit_depth: f.bit_depth,
                    majority: m,
                });
            }
        }
    }
    let empty = match mask_all {
        Some(_) => splits.iter().all(|s| s.pairs == 0),
        None => splits.iter().all(|s| s.images == 0),
    };
    if empty {
        problems.push(Problem::Layout {
            path: dir.to_path_buf(),
            detail: format!(
                "no {} in any split ({})",
                if mask_all.is_some() {
                    "image/mask pairs"
                } else {
                    "images"
                },
                Split::ALL.map(Split::name).join(", ")
            ),
        });
    }

    let colour_mapping = (!colours.is_empty()).then(|| {
        ColourMapping::from_colours(
            &colours,
            classes.as_ref().and_then(|c| c.class_colors.as_deref()),
            num_classes,
        )
    });
    let n_ids = class_pixels.len().max(num_classes.unwrap_or(0));
    class_pixels.resize(n_ids, 0);
    class_masks.resize(n_ids, 0);
    let all_pixels: u64 = class_pixels.iter().sum();
    let share = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    let names = classes.map(|c| c.class_names).unwrap_or_default();
    let class_stats = (0..n_ids)
        .map(|id| ClassStats {
            id: id as u32,
            name: names.get(id).cloned(),
            pixels: class_pixels[id],
            pixel_share: share(class_pixels[id] as f64, all_pixels as f64),
            masks: class_masks[id],
            presence: share(class_masks[id] as f64, id_masks as f64),
        })
        .collect();
    let mut image_sizes: Vec<SizeCount> = sizes
        .into_iter()
        .map(|(s, count)| SizeCount {
            width: s[0],
            height: s[1],
            count,
        })
        .collect();
    image_sizes.sort_by_key(|s| std::cmp::Reverse(s.count));
    let formats = |m: BTreeMap<(ChannelKind, u8), usize>| -> Vec<FormatCount> {
        m.into_iter()
            .map(|((channels, bit_depth), count)| FormatCount {
                channels,
                bit_depth,
                count,
            })
            .collect()
    };
    Ok(DataReport {
        root: dir.to_path_buf(),
        problems,
        summary: Summary {
            num_classes,
            num_classes_from,
            splits,
            image_formats: formats(image_formats),
            mask_formats: formats(mask_formats),
            image_sizes,
            intensity: intensity
                .into_iter()
                .map(|(bit_depth, (min, max, sum, n))| IntensityRange {
                    bit_depth,
                    min,
                    max,
                    mean: share(sum, n as f64),
                })
                .collect(),
            id_masks,
            empty_masks,
            empty_mask_share: share(empty_masks as f64, id_masks as f64),
            classes: class_stats,
        },
        colour_mapping,
        converted: Vec::new(),
    })
}

/// `split/NAME.png` of a file in a split folder.
fn relative_split_name(path: &Path) -> PathBuf {
    let name = path.file_name().unwrap_or_default();
    match path.parent().and_then(Path::file_name) {
        Some(split) => Path::new(split).join(name),
        None => PathBuf::from(name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageBuffer, Luma, Rgb, RgbImage};

    const N: u32 = 8;

    /// An 8×8 mask: id `(x / 2) % 4` on rows below `k`, background elsewhere.
    fn mask(k: u32) -> GrayImage {
        GrayImage::from_fn(N, N, |x, y| {
            Luma([if y < k { ((x / 2) % 4) as u8 } else { 0 }])
        })
    }

    fn image(seed: u32) -> GrayImage {
        GrayImage::from_fn(N, N, |x, y| Luma([(10 + x * 20 + y + seed) as u8]))
    }

    /// A clean dataset: 3 train pairs (one with an empty mask), 1 val, 1 test; 4 classes.
    fn clean() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for (split, n) in [("train", 3u32), ("val", 1), ("test", 1)] {
            std::fs::create_dir_all(root.join("img").join(split)).unwrap();
            std::fs::create_dir_all(root.join("mask/all").join(split)).unwrap();
            for i in 0..n {
                let name = format!("{split}_{i}.png");
                image(i)
                    .save(root.join("img").join(split).join(&name))
                    .unwrap();
                mask(if split == "train" { i * 3 } else { 4 })
                    .save(root.join("mask/all").join(split).join(&name))
                    .unwrap();
            }
        }
        std::fs::write(
            root.join(DATASET_JSON),
            r#"{"num_classes": 4, "class_names": ["bg", "a", "b", "c"]}"#,
        )
        .unwrap();
        dir
    }

    fn check(root: &Path) -> DataReport {
        check_dataset(root, &CheckOptions::default(), |_, _| {}).unwrap()
    }

    fn kinds(r: &DataReport) -> Vec<ProblemKind> {
        let mut k: Vec<ProblemKind> = r.problems.iter().map(Problem::kind).collect();
        k.dedup();
        k
    }

    fn train(root: &Path, kind: &str, name: &str) -> PathBuf {
        match kind {
            "img" => root.join("img/train").join(name),
            _ => root.join("mask/all/train").join(name),
        }
    }

    /// Colours of a mask: black background, red and green blocks.
    fn colour_mask() -> RgbImage {
        RgbImage::from_fn(N, N, |x, _| match x / 3 {
            0 => Rgb([0, 0, 0]),
            1 => Rgb([255, 0, 0]),
            _ => Rgb([0, 255, 0]),
        })
    }

    #[test]
    fn a_clean_dataset_is_ok_and_summarised() {
        let dir = clean();
        let mut calls = Vec::new();
        let m = std::sync::Mutex::new(&mut calls);
        let r = check_dataset(dir.path(), &CheckOptions::default(), |d, t| {
            m.lock().unwrap().push((d, t))
        })
        .unwrap();
        assert!(r.is_ok(), "{r}");
        let s = &r.summary;
        assert_eq!(s.num_classes, Some(4));
        assert_eq!(s.num_classes_from, Some("dataset.json"));
        let pairs: Vec<usize> = s.splits.iter().map(|c| c.pairs).collect();
        assert_eq!(pairs, [3, 1, 1]);
        assert_eq!((s.id_masks, s.empty_masks), (5, 1));
        assert!((s.empty_mask_share - 0.2).abs() < 1e-12);
        assert_eq!(s.classes.len(), 4);
        assert_eq!(s.classes[1].name.as_deref(), Some("a"));
        let total: f64 = s.classes.iter().map(|c| c.pixel_share).sum();
        assert!((total - 1.0).abs() < 1e-9);
        // Class 1 is in every mask with at least one labelled row: 4 of 5.
        assert!((s.classes[1].presence - 0.8).abs() < 1e-12);
        assert_eq!(s.classes[0].presence, 1.0);
        // Rows 0..3 of train_1 (3 rows) + 6 (train_2) + 4 + 4: 17 rows × 2 pixels of id 1.
        assert_eq!(s.classes[1].pixels, 17 * 2);
        assert_eq!(s.intensity.len(), 1);
        assert_eq!(
            (s.intensity[0].min, s.intensity[0].max),
            (10, 10 + 140 + 7 + 2)
        );
        assert_eq!(s.image_sizes.len(), 1);
        assert_eq!(s.image_sizes[0].count, 5);
        assert!(r.to_string().contains("no problems found"));
        let calls = m.into_inner().unwrap();
        assert!(
            calls.contains(&(10, 10)) && calls.contains(&(0, 10)),
            "{calls:?}"
        );
        assert!(r.clone().ensure_ok().is_ok());
    }

    #[test]
    fn an_unreadable_file_is_named() {
        let dir = clean();
        let bad = train(dir.path(), "img", "train_1.png");
        std::fs::write(&bad, b"not a png").unwrap();
        let r = check(dir.path());
        assert_eq!(kinds(&r), [ProblemKind::Unreadable]);
        assert_eq!(r.problems[0].path(), bad);
        assert!(
            r.to_string().contains("train_1.png: not a readable image"),
            "{r}"
        );
        let err = r.ensure_ok().unwrap_err();
        assert!(
            matches!(err, DataError::DatasetProblems { count: 1, .. }),
            "{err}"
        );
    }

    #[test]
    fn colour_masks_are_reported_with_a_luma_ordered_mapping() {
        let dir = clean();
        let p = train(dir.path(), "mask", "train_2.png");
        colour_mask().save(&p).unwrap();
        let r = check(dir.path());
        assert_eq!(
            r.problems,
            [Problem::ColourMask {
                path: p,
                colours: 3,
                too_many: false
            }]
        );
        let m = r.colour_mapping.as_ref().unwrap();
        assert_eq!(m.rule, MappingRule::Luma);
        // Luma: red 76, green 150.
        let ids: Vec<(u8, u8, u8, u32)> = m
            .colours
            .iter()
            .map(|c| (c.rgb[0], c.rgb[1], c.rgb[2], c.id))
            .collect();
        assert_eq!(ids, [(0, 0, 0, 0), (255, 0, 0, 1), (0, 255, 0, 2)]);
        assert!(r.to_string().contains("#ff0000 → 1"), "{r}");
        assert_eq!(r.summary.id_masks, 4);
    }

    #[test]
    fn the_mapping_prefers_dataset_colours_then_grey_values() {
        let (r, g, b, k) = ([255, 0, 0], [0, 255, 0], [0, 0, 255], [0, 0, 0]);
        let m = ColourMapping::from_colours(&[g, r, k, b], Some(&[k, g, r, b]), None);
        assert_eq!(m.rule, MappingRule::DatasetColours);
        assert_eq!(
            (m.id_of(g), m.id_of(r), m.id_of(b)),
            (Some(1), Some(2), Some(3))
        );
        // A palette that misses a colour is not used.
        let m = ColourMapping::from_colours(&[g, r, k, b], Some(&[k, g]), Some(4));
        assert_eq!(m.rule, MappingRule::Luma);
        assert_eq!(
            (m.id_of(b), m.id_of(r), m.id_of(g)),
            (Some(1), Some(2), Some(3))
        );
        // No black: ids still start at 1.
        let m = ColourMapping::from_colours(&[g, r], None, None);
        assert_eq!(
            (m.id_of(r), m.id_of(g), m.id_of(k)),
            (Some(1), Some(2), None)
        );
        let greys = [[3, 3, 3], [0, 0, 0], [1, 1, 1]];
        let m = ColourMapping::from_colours(&greys, None, Some(4));
        assert_eq!(m.rule, MappingRule::GreyValues);
        assert_eq!(m.id_of([3, 3, 3]), Some(3));
        assert!(m.to_string().contains("grey value is the id"));
        // Grey values that are no valid ids (or an unknown class count): ranked by grey.
        for n in [Some(3), None] {
            let m = ColourMapping::from_colours(&greys, None, n);
            assert_eq!(m.rule, MappingRule::Luma);
            assert_eq!(m.id_of([3, 3, 3]), Some(2));
        }
        let m = ColourMapping::from_colours(&[[255, 255, 255], [0, 0, 0]], None, Some(2));
        assert_eq!(m.id_of([255, 255, 255]), Some(1));
    }

    #[test]
    fn size_mismatches_name_both_files() {
        let dir = clean();
        let p = train(dir.path(), "mask", "train_0.png");
        GrayImage::new(N, N + 1).save(&p).unwrap();
        let r = check(dir.path());
        assert_eq!(
            r.problems,
            [Problem::SizeMismatch {
                image: train(dir.path(), "img", "train_0.png"),
                mask: p,
                image_size: [N, N],
                mask_size: [N, N + 1],
            }]
        );
    }

    #[test]
    fn ids_not_below_the_classes_are_reported_and_the_option_overrides() {
        let dir = clean();
        let p = train(dir.path(), "mask", "train_1.png");
        let mut m = mask(4);
        m.put_pixel(0, 7, Luma([7]));
        m.put_pixel(1, 7, Luma([4]));
        m.save(&p).unwrap();
        let r = check(dir.path());
        assert_eq!(
            r.problems,
            [Problem::ClassOutOfRange {
                path: p,
                ids: vec![4, 7],
                pixels: 2,
                num_classes: 4
            }]
        );
        assert_eq!(r.summary.classes.len(), 8);
        let opts = CheckOptions {
            num_classes: Some(8),
            ..CheckOptions::default()
        };
        let r = check_dataset(dir.path(), &opts, |_, _| {}).unwrap();
        assert!(r.is_ok(), "{r}");
        assert_eq!(r.summary.num_classes_from, Some("option"));
        let zero = CheckOptions {
            num_classes: Some(0),
            ..CheckOptions::default()
        };
        assert!(check_dataset(dir.path(), &zero, |_, _| {}).is_err());
    }

    #[test]
    fn orphans_on_both_sides_are_reported() {
        let dir = clean();
        let img = train(dir.path(), "img", "only_image.png");
        image(0).save(&img).unwrap();
        let m = dir.path().join("mask/all/val/only_mask.png");
        mask(2).save(&m).unwrap();
        let r = check(dir.path());
        assert_eq!(
            r.problems,
            [
                Problem::OrphanImage {
                    path: img,
                    expected_mask: dir.path().join("mask/all/train/only_image.png"),
                },
                Problem::OrphanMask {
                    path: m,
                    expected_image: dir.path().join("img/val/only_mask.png"),
                }
            ]
        );
        assert_eq!(r.summary.splits[0].images, 4);
        assert_eq!(r.summary.splits[0].pairs, 3);
    }

    #[test]
    fn a_minority_of_rgb_or_16_bit_images_is_reported() {
        let dir = clean();
        let rgb = train(dir.path(), "img", "train_0.png");
        RgbImage::from_pixel(N, N, Rgb([10, 20, 30]))
            .save(&rgb)
            .unwrap();
        let deep = dir.path().join("img/test/test_0.png");
        ImageBuffer::<Luma<u16>, Vec<u16>>::from_pixel(N, N, Luma([1000]))
            .save(&deep)
            .unwrap();
        let r = check(dir.path());
        assert_eq!(
            r.problems,
            [
                Problem::MixedChannels {
                    path: rgb,
                    channels: ChannelKind::Rgb,
                    majority: ChannelKind::Grey
                },
                Problem::MixedBitDepth {
                    path: deep,
                    bit_depth: 16,
                    majority: 8
                }
            ]
        );
        let depths: Vec<u8> = r.summary.intensity.iter().map(|i| i.bit_depth).collect();
        assert_eq!(depths, [8, 16]);
        assert_eq!(r.summary.intensity[1].max, 1000);
    }

    #[test]
    fn converting_colour_masks_writes_ids_and_rechecks() {
        let dir = clean();
        let p = train(dir.path(), "mask", "train_2.png");
        colour_mask().save(&p).unwrap();
        let opts = CheckOptions {
            convert_colour_masks: true,
            ..CheckOptions::default()
        };
        let r = check_dataset(dir.path(), &opts, |_, _| {}).unwrap();
        assert!(r.is_ok(), "{r}");
        assert_eq!(r.converted, std::slice::from_ref(&p));
        assert_eq!(r.colour_mapping.as_ref().unwrap().rule, MappingRule::Luma);
        let back = segdiff_io::read_grey_samples(&p).unwrap();
        assert_eq!(back.bit_depth, 8);
        let want: Vec<u16> = (0..N * N)
            .map(|i| match (i % N) / 3 {
                0 => 0,
                1 => 1,
                _ => 2,
            })
            .collect();
        assert_eq!(back.pixels, want);
        assert_eq!(r.summary.id_masks, 5);
        assert!(r.to_string().contains("converted 1 colour masks"), "{r}");
        // Nothing is left to convert: a second run changes nothing.
        let again = check_dataset(dir.path(), &opts, |_, _| {}).unwrap();
        assert!(again.converted.is_empty() && again.colour_mapping.is_none());
    }

    #[test]
    fn every_problem_is_reported_at_once_and_lists_are_capped() {
        let dir = clean();
        std::fs::write(train(dir.path(), "mask", "train_0.png"), b"garbage").unwrap();
        colour_mask()
            .save(train(dir.path(), "mask", "train_1.png"))
            .unwrap();
        for i in 0..25 {
            image(i)
                .save(train(dir.path(), "img", &format!("z{i:02}.png")))
                .unwrap();
        }
        std::fs::write(
            dir.path().join(MANIFEST),
            "file,split,volume_id,source,axis,slice_index,intensity\n\
             img/train/gone.png,train,v,s,axial,0,x\n",
        )
        .unwrap();
        let r = check(dir.path());
        assert_eq!(r.problems.len(), 1 + 1 + 1 + 25, "{r}");
        let mut k = kinds(&r);
        k.sort();
        k.dedup();
        assert_eq!(
            k,
            [
                ProblemKind::Manifest,
                ProblemKind::Unreadable,
                ProblemKind::OrphanImage,
                ProblemKind::ColourMask
            ]
        );
        let text = r.render(20);
        assert!(text.contains("images without masks (25):"), "{text}");
        assert!(text.contains("… and 5 more"), "{text}");
        assert!(text.contains("gone.png: listed in"), "{text}");
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["problems"].as_array().unwrap().len(), 28);
        assert_eq!(json["problems"][0]["kind"], "manifest_missing");
    }

    #[test]
    fn layout_problems_and_masks_not_required() {
        let dir = clean();
        std::fs::remove_dir_all(dir.path().join("mask")).unwrap();
        let r = check(dir.path());
        assert_eq!(kinds(&r), [ProblemKind::Layout]);
        assert_eq!(r.problems.len(), 1, "{r}");
        let opts = CheckOptions {
            require_masks: false,
            ..CheckOptions::default()
        };
        let r = check_dataset(dir.path(), &opts, |_, _| {}).unwrap();
        assert!(r.is_ok(), "{r}");
        std::fs::remove_dir_all(dir.path().join("img")).unwrap();
        assert!(matches!(
            check_dataset(dir.path(), &opts, |_, _| {}),
            Err(DataError::Layout { .. })
        ));
    }
}
