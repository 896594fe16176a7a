//! `segdiff metrics …`: score folders of PNG masks or images, or feature sets, with segdiff-eval.
//!
//! Masks and images are paired by file name (`*.png`, case-insensitive, not recursive); a file
//! without a partner in the other folder is an error. Masks are 8- or 16-bit greyscale PNGs whose
//! pixel values are class ids (0 = background); all masks of a run share one size. Images for
//! PSNR/SSIM are 8- or 16-bit greyscale PNGs of one bit depth; the data range is 255 for 8-bit and
//! 65535 for 16-bit (scikit-image's default for uint8/uint16 arrays) unless `--data-range` says
//! otherwise.
//!
//! JSON output (`--json`) is one object on stdout. JSON has no NaN or infinity, so a non-finite
//! value is written as `null` and explained beside it: for `dice`/`hd95`, `values[s][c]` is null
//! when the entry is ignored (NaN: class empty in the target, or for HD also empty in the
//! prediction) or +inf (listed in `infinite_entries`); `mean` / `mean_per_class` are null when
//! infinite (`mean_infinite` / `mean_per_class_infinite`) or when nothing was valid. For
//! `psnr-ssim`, a null `psnr` means identical images (infinite PSNR).

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use candle_core::{DType, Device, Module, Tensor};
use clap::{Args, Subcommand};
use segdiff_eval::{
    dice, frechet_terms, hausdorff_distance, inception_input, load_segmenter, psnr, ssim,
    ClassScores, DiceConfig, FeatureStats, HausdorffConfig, InceptionV3, LabelMaps, MonaiUNet,
    SegmenterSpec, SsimConfig,
};
use serde::Serialize;

use crate::runtime::Runtime;

#[derive(Debug, Subcommand)]
pub enum MetricsCommand {
    /// Dice per sample and class (MONAI `DiceMetric`) between two folders of PNG masks.
    Dice(DiceArgs),
    /// Hausdorff distance at a percentile (MONAI `HausdorffDistanceMetric`; 95 by default,
    /// `--percentile 100` for the plain maximum) between two folders of PNG masks.
    Hd95(HausdorffArgs),
    /// PSNR and SSIM (scikit-image) between two folders of greyscale PNG images.
    PsnrSsim(ImageArgs),
    /// Fréchet distance (pytorch-fid formula) between two feature sets: safetensors files holding
    /// an N×D tensor, or folders of PNG images encoded by a segmenter (`--encoder`) or by
    /// Inception-v3 (`--inception-weights`).
    Fid(FidArgs),
}

/// Two folders of masks paired by file name.
#[derive(Debug, Args)]
pub struct MaskArgs {
    /// Folder of predicted masks (PNG, 8- or 16-bit grey, pixel value = class id).
    #[arg(long, value_name = "DIR")]
    pub pred: PathBuf,
    /// Folder of reference masks with the same file names.
    #[arg(long, value_name = "DIR")]
    pub target: PathBuf,
    /// Classes are 0..C with 0 the background (default: the largest id found, plus one).
    #[arg(long, value_name = "C")]
    pub num_classes: Option<usize>,
    /// Score the background class (0) too.
    #[arg(long)]
    pub include_background: bool,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DiceArgs {
    #[command(flatten)]
    pub masks: MaskArgs,
    /// Score a class absent from the target as 1 (prediction empty too) or 0, instead of
    /// ignoring it (MONAI `ignore_empty=False`).
    #[arg(long)]
    pub keep_empty: bool,
}

#[derive(Debug, Args)]
pub struct HausdorffArgs {
    #[command(flatten)]
    pub masks: MaskArgs,
    /// Percentile of the surface distances, in (0, 100]; 100 is the plain Hausdorff distance
    /// (MONAI `percentile=None`: +inf where only one of the two masks is empty; with a percentile
    /// below 100 that case is NaN and ignored, as MONAI computes it).
    #[arg(long, default_value_t = 95.0)]
    pub percentile: f64,
    /// Pixel size as ROW,COL (e.g. mm); distances are in pixels without it.
    #[arg(long, value_name = "ROW,COL", value_parser = parse_spacing)]
    pub spacing: Option<[f64; 2]>,
}

#[derive(Debug, Args)]
pub struct ImageArgs {
    /// Folder of generated images (PNG, 8- or 16-bit grey).
    #[arg(long, value_name = "DIR")]
    pub pred: PathBuf,
    /// Folder of reference images with the same file names.
    #[arg(long, value_name = "DIR")]
    pub target: PathBuf,
    /// SSIM with the 11-tap Gaussian window (σ = 1.5, population covariance) of Wang et al.
    /// 2004 instead of scikit-image's default 7×7 uniform window.
    #[arg(long)]
    pub gaussian: bool,
    /// Data range for PSNR and SSIM (default: 255 for 8-bit, 65535 for 16-bit images).
    #[arg(long, value_name = "R")]
    pub data_range: Option<f64>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct FidArgs {
    /// First feature set: a safetensors file (its only tensor, or the one named `features`,
    /// N×D) or a folder of PNG images (needs `--encoder` or `--inception-weights`).
    #[arg(long, value_name = "FEATS_OR_DIR")]
    pub a: PathBuf,
    /// Second feature set, as `--a`.
    #[arg(long, value_name = "FEATS_OR_DIR")]
    pub b: PathBuf,
    /// Segmenter directory whose pooled bottleneck encodes image folders (always run in f32).
    #[arg(
        long,
        value_name = "SEGMENTER_DIR",
        conflicts_with = "inception_weights"
    )]
    pub encoder: Option<PathBuf>,
    /// Encode image folders with Inception-v3 instead: torchvision's `inception_v3` up to its
    /// 2048-d average pool, weights from a `.safetensors` file with torchvision's state_dict
    /// names (torchvision's IMAGENET1K_V1 converted to safetensors, or timm's
    /// `inception_v3.tv_in1k` model.safetensors; `fc.*` and `AuxLogits.*` are ignored). PNGs
    /// (8- or 16-bit, grey or RGB, any size) are scaled to [0, 1], resized to 299×299 (bilinear,
    /// as pytorch-fid) and mapped to [-1, 1]. These are not pytorch-fid's TF-Inception weights:
    /// compare the values only with FIDs computed the same way.
    #[arg(long, value_name = "FILE")]
    pub inception_weights: Option<PathBuf>,
    /// Images per encoder forward pass.
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(cmd: MetricsCommand, rt: &Runtime) -> Result<()> {
    match cmd {
        MetricsCommand::Dice(args) => {
            let json = args.masks.json;
            let report = dice_report(&args)?;
            emit(&report, json, print_class_table)
        }
        MetricsCommand::Hd95(args) => {
            let json = args.masks.json;
            let report = hausdorff_report(&args)?;
            emit(&report, json, print_class_table)
        }
        MetricsCommand::PsnrSsim(args) => {
            let report = image_report(&args)?;
            emit(&report, args.json, print_image_table)
        }
        MetricsCommand::Fid(args) => {
            let report = fid_report(&args, &rt.device)?;
            emit(&report, args.json, print_fid)
        }
    }
}

fn emit<T: Serialize>(report: &T, json: bool, table: fn(&T)) -> Result<()> {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(report).context("serialising the report")?
        );
    } else {
        table(report);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Files

/// `ROW,COL`, both finite and positive.
fn parse_spacing(s: &str) -> std::result::Result<[f64; 2], String> {
    let parts: Vec<&str> = s.split(',').map(str::trim).collect();
    let parsed: Vec<f64> = parts.iter().filter_map(|p| p.parse().ok()).collect();
    match parsed[..] {
        [r, c] if parts.len() == 2 && [r, c].iter().all(|v| v.is_finite() && *v > 0.0) => {
            Ok([r, c])
        }
        _ => Err(format!("`{s}`: expected ROW,COL with two positive numbers")),
    }
}

/// Names of the `*.png` files directly inside `dir`, sorted.
fn png_names(dir: &Path) -> Result<Vec<String>> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("reading the folder {}", dir.display()))?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_png = Path::new(&name)
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("png"));
        if is_png && entry.path().is_file() {
            names.push(name);
        }
    }
    names.sort();
    ensure!(!names.is_empty(), "{}: no .png files", dir.display());
    Ok(names)
}

/// File names present in both folders; any file without a partner is an error naming it.
fn paired_names(pred: &Path, target: &Path) -> Result<Vec<String>> {
    let a = png_names(pred)?;
    let b = png_names(target)?;
    for (names, others, dir, other_dir) in [(&a, &b, pred, target), (&b, &a, target, pred)] {
        if let Some(lonely) = names.iter().find(|n| others.binary_search(n).is_err()) {
            bail!(
                "{} has no partner for {}: every file must exist in both folders",
                other_dir.display(),
                dir.join(lonely).display()
            );
        }
    }
    Ok(a)
}

/// A greyscale PNG, 8- or 16-bit, pixel values widened to u16.
#[derive(Debug, Clone, PartialEq)]
struct Grey {
    width: usize,
    height: usize,
    bit_depth: u8,
    pixels: Vec<u16>,
}

fn read_grey(path: &Path) -> Result<Grey> {
    let img = image::ImageReader::open(path)
        .with_context(|| format!("opening {}", path.display()))?
        .with_guessed_format()
        .with_context(|| format!("reading {}", path.display()))?
        .decode()
        .with_context(|| format!("decoding {}", path.display()))?;
    let (width, height) = (img.width() as usize, img.height() as usize);
    let (bit_depth, pixels) = match img {
        image::DynamicImage::ImageLuma8(b) => {
            (8, b.into_raw().into_iter().map(u16::from).collect())
        }
        image::DynamicImage::ImageLuma16(b) => (16, b.into_raw()),
        other => bail!(
            "{}: {:?} image; expected an 8- or 16-bit greyscale PNG",
            path.display(),
            other.color()
        ),
    };
    Ok(Grey {
        width,
        height,
        bit_depth,
        pixels,
    })
}

/// Masks of `names` from both folders as two `LabelMaps` of one common size.
fn read_mask_pairs(pred: &Path, target: &Path, names: &[String]) -> Result<(LabelMaps, LabelMaps)> {
    let mut size: Option<(usize, usize, PathBuf)> = None;
    let mut p_all = Vec::new();
    let mut t_all = Vec::new();
    for name in names {
        for (dir, all) in [(pred, &mut p_all), (target, &mut t_all)] {
            let path = dir.join(name);
            let g = read_grey(&path)?;
            match &size {
                None => size = Some((g.height, g.width, path.clone())),
                Some((h, w, first)) => ensure!(
                    (g.height, g.width) == (*h, *w),
                    "{} is {}x{} but {} is {h}x{w}: all masks must share one size",
                    path.display(),
                    g.height,
                    g.width,
                    first.display()
                ),
            }
            all.extend(g.pixels.into_iter().map(u32::from));
        }
    }
    let (h, w, _) = size.context("no masks to read")?;
    Ok((
        LabelMaps::new(p_all, names.len(), h, w)?,
        LabelMaps::new(t_all, names.len(), h, w)?,
    ))
}

/// `--num-classes`, or the largest id found plus one; ids beyond it are an error naming the file.
fn resolve_classes(
    given: Option<usize>,
    pred: &LabelMaps,
    target: &LabelMaps,
    names: &[String],
    dirs: [&Path; 2],
) -> Result<usize> {
    let max_id = pred
        .as_slice()
        .iter()
        .chain(target.as_slice())
        .copied()
        .max()
        .unwrap_or(0) as usize;
    let Some(c) = given else {
        let c = (max_id + 1).max(2);
        eprintln!("note: --num-classes not given; using {c} (largest class id found + 1)");
        return Ok(c);
    };
    ensure!(c >= 1, "--num-classes must be at least 1");
    for (maps, dir) in [(pred, dirs[0]), (target, dirs[1])] {
        for (s, name) in names.iter().enumerate() {
            if let Some(&bad) = maps.sample(s).iter().find(|&&v| v as usize >= c) {
                bail!(
                    "{}: class id {bad} is not below --num-classes {c}",
                    dir.join(name).display()
                );
            }
        }
    }
    Ok(c)
}

// ---------------------------------------------------------------------------------------------
// Dice and Hausdorff

/// Per-sample, per-class scores and their MONAI reductions, with non-finite values made explicit.
#[derive(Debug, Serialize)]
struct ClassReport {
    /// "dice" or "hausdorff".
    metric: &'static str,
    pred_dir: PathBuf,
    target_dir: PathBuf,
    num_classes: usize,
    include_background: bool,
    /// Dice only: classes absent from the target are ignored (NaN) rather than scored 1/0.
    #[serde(skip_serializing_if = "Option::is_none")]
    ignore_empty: Option<bool>,
    /// Hausdorff only: the percentile (100 = maximum).
    #[serde(skip_serializing_if = "Option::is_none")]
    percentile: Option<f64>,
    /// Hausdorff only: `[row, col]` pixel size, null = pixels.
    #[serde(skip_serializing_if = "Option::is_none")]
    spacing: Option<Option<[f64; 2]>>,
    files: Vec<String>,
    class_ids: Vec<u32>,
    /// `values[sample][class]`; null when NaN (ignored) or +inf (see `infinite_entries`).
    values: Vec<Vec<Option<f64>>>,
    /// Entries equal to +inf.
    infinite_entries: Vec<InfiniteEntry>,
    /// Count of ignored (NaN) entries.
    ignored_entries: usize,
    /// MONAI `MetricReduction.MEAN`: each sample's mean over its valid classes, then the mean over
    /// samples; null when infinite or when no entry is valid.
    mean: Option<f64>,
    mean_infinite: bool,
    /// MONAI `MEAN_BATCH`: per class, the mean over samples with a valid value; null as `mean`.
    mean_per_class: Vec<Option<f64>>,
    mean_per_class_infinite: Vec<bool>,
    /// Valid (non-NaN) samples per class.
    valid_per_class: Vec<usize>,
}

#[derive(Debug, Serialize)]
struct InfiniteEntry {
    file: String,
    class_id: u32,
}

fn finite_or_null(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

impl ClassReport {
    fn new(
        metric: &'static str,
        masks: &MaskArgs,
        num_classes: usize,
        files: Vec<String>,
        scores: &ClassScores,
    ) -> Self {
        let class_ids = scores.class_ids().to_vec();
        let values = (0..scores.samples())
            .map(|s| scores.row(s).iter().map(|&v| finite_or_null(v)).collect())
            .collect();
        let infinite_entries = (0..scores.samples())
            .flat_map(|s| {
                scores
                    .row(s)
                    .iter()
                    .zip(&class_ids)
                    .filter(|(v, _)| v.is_infinite())
                    .map(|(_, &class_id)| InfiniteEntry {
                        file: files[s].clone(),
                        class_id,
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        let valid_per_class: Vec<usize> = (0..class_ids.len())
            .map(|c| {
                (0..scores.samples())
                    .filter(|&s| !scores.get(s, c).is_nan())
                    .count()
            })
            .collect();
        let per_class = scores.mean_per_class();
        let mean = scores.mean();
        let any_valid = scores.count_valid() > 0;
        Self {
            metric,
            pred_dir: masks.pred.clone(),
            target_dir: masks.target.clone(),
            num_classes,
            include_background: masks.include_background,
            ignore_empty: None,
            percentile: None,
            spacing: None,
            files,
            class_ids,
            values,
            infinite_entries,
            ignored_entries: scores.as_slice().iter().filter(|v| v.is_nan()).count(),
            mean: finite_or_null(mean).filter(|_| any_valid),
            mean_infinite: mean.is_infinite(),
            mean_per_class: per_class
                .iter()
                .zip(&valid_per_class)
                .map(|(&v, &n)| finite_or_null(v).filter(|_| n > 0))
                .collect(),
            mean_per_class_infinite: per_class.iter().map(|v| v.is_infinite()).collect(),
            valid_per_class,
        }
    }
}

fn load_masks(masks: &MaskArgs) -> Result<(Vec<String>, LabelMaps, LabelMaps, usize)> {
    let names = paired_names(&masks.pred, &masks.target)?;
    let (pred, target) = read_mask_pairs(&masks.pred, &masks.target, &names)?;
    let c = resolve_classes(
        masks.num_classes,
        &pred,
        &target,
        &names,
        [&masks.pred, &masks.target],
    )?;
    Ok((names, pred, target, c))
}

fn dice_report(args: &DiceArgs) -> Result<ClassReport> {
    let m = &args.masks;
    let (names, pred, target, num_classes) = load_masks(m)?;
    let cfg = DiceConfig {
        num_classes,
        include_background: m.include_background,
        ignore_empty: !args.keep_empty,
    };
    let scores = dice(&pred, &target, &cfg).context("computing Dice")?;
    let mut r = ClassReport::new("dice", m, num_classes, names, &scores);
    r.ignore_empty = Some(cfg.ignore_empty);
    Ok(r)
}

fn hausdorff_report(args: &HausdorffArgs) -> Result<ClassReport> {
    let p = args.percentile;
    ensure!(
        p.is_finite() && p > 0.0 && p <= 100.0,
        "--percentile {p}: must lie in (0, 100]"
    );
    let m = &args.masks;
    let (names, pred, target, num_classes) = load_masks(m)?;
    let cfg = HausdorffConfig {
        num_classes,
        include_background: m.include_background,
        // MONAI's HD100 is `percentile=None` (the maximum, +inf for a one-sided empty mask).
        percentile: (p < 100.0).then_some(p),
        spacing: args.spacing,
    };
    let scores = hausdorff_distance(&pred, &target, &cfg).context("computing Hausdorff")?;
    let mut r = ClassReport::new("hausdorff", m, num_classes, names, &scores);
    r.percentile = Some(p);
    r.spacing = Some(args.spacing);
    Ok(r)
}

fn fmt_value(v: Option<f64>, infinite: bool, digits: usize) -> String {
    match (v, infinite) {
        (_, true) => "inf".into(),
        (Some(v), _) => format!("{v:.digits$}"),
        (None, _) => "-".into(),
    }
}

fn print_class_table(r: &ClassReport) {
    let digits = if r.metric == "dice" { 4 } else { 3 };
    let what = match (r.metric, r.percentile) {
        ("dice", _) => "Dice".to_string(),
        (_, Some(p)) if p >= 100.0 => "Hausdorff distance (maximum)".to_string(),
        (_, Some(p)) => format!("HD{p}"),
        _ => "Hausdorff distance".to_string(),
    };
    let unit = match r.spacing {
        Some(Some(s)) => format!(", spacing {},{}", s[0], s[1]),
        Some(None) => ", in pixels".into(),
        None => String::new(),
    };
    println!(
        "{what}: {} file pairs, {} classes (background {}{}{unit})",
        r.files.len(),
        r.num_classes,
        if r.include_background {
            "included"
        } else {
            "excluded"
        },
        match r.ignore_empty {
            Some(true) => ", classes absent from the target ignored",
            Some(false) => ", classes absent from the target scored 1/0",
            None => "",
        }
    );
    println!(
        "{:>6}  {:>10}  {:>7}  {:>5}",
        "class", "mean", "valid", "inf"
    );
    for (i, id) in r.class_ids.iter().enumerate() {
        let infs = r
            .infinite_entries
            .iter()
            .filter(|e| e.class_id == *id)
            .count();
        println!(
            "{id:>6}  {:>10}  {:>7}  {infs:>5}",
            fmt_value(r.mean_per_class[i], r.mean_per_class_infinite[i], digits),
            format!("{}/{}", r.valid_per_class[i], r.files.len()),
        );
    }
    println!(
        "{:>6}  {:>10}  ({} ignored entries, {} infinite)",
        "mean",
        fmt_value(r.mean, r.mean_infinite, digits),
        r.ignored_entries,
        r.infinite_entries.len()
    );
}

// ---------------------------------------------------------------------------------------------
// PSNR and SSIM

#[derive(Debug, Serialize)]
struct ImageReport {
    metric: &'static str,
    pred_dir: PathBuf,
    target_dir: PathBuf,
    bit_depth: u8,
    data_range: f64,
    /// "uniform7" (scikit-image default) or "gaussian1.5" (Wang et al. 2004).
    ssim_window: &'static str,
    per_file: Vec<ImageScores>,
    /// Mean PSNR in dB over all files; null when infinite (some pair is identical).
    psnr_mean: Option<f64>,
    psnr_mean_infinite: bool,
    /// Files whose PSNR is infinite (identical images).
    psnr_infinite_count: usize,
    /// Mean PSNR over the files with finite PSNR; null when there are none.
    psnr_mean_finite: Option<f64>,
    ssim_mean: f64,
}

#[derive(Debug, Serialize)]
struct ImageScores {
    file: String,
    /// dB; null = infinite (identical images).
    psnr: Option<f64>,
    ssim: f64,
}

fn image_report(args: &ImageArgs) -> Result<ImageReport> {
    let names = paired_names(&args.pred, &args.target)?;
    let cfg = if args.gaussian {
        SsimConfig::gaussian_wang2004()
    } else {
        SsimConfig::skimage_default()
    };
    if let Some(r) = args.data_range {
        ensure!(
            r.is_finite() && r > 0.0,
            "--data-range {r}: must be positive"
        );
    }
    let mut depth: Option<(u8, PathBuf)> = None;
    let mut per_file = Vec::with_capacity(names.len());
    let mut psnrs = Vec::with_capacity(names.len());
    for name in &names {
        let (pp, tp) = (args.pred.join(name), args.target.join(name));
        let (p, t) = (read_grey(&pp)?, read_grey(&tp)?);
        ensure!(
            (p.height, p.width) == (t.height, t.width),
            "{} is {}x{} but {} is {}x{}",
            pp.display(),
            p.height,
            p.width,
            tp.display(),
            t.height,
            t.width
        );
        for (g, path) in [(&p, &pp), (&t, &tp)] {
            match &depth {
                None => depth = Some((g.bit_depth, path.clone())),
                Some((d, first)) => ensure!(
                    g.bit_depth == *d,
                    "{} is {}-bit but {} is {d}-bit: all images must share one bit depth",
                    path.display(),
                    g.bit_depth,
                    first.display()
                ),
            }
        }
        let range = args
            .data_range
            .unwrap_or(if p.bit_depth == 8 { 255.0 } else { 65535.0 });
        let v = psnr(&p.pixels, &t.pixels, range).with_context(|| format!("PSNR of {name}"))?;
        let s = ssim(&p.pixels, &t.pixels, p.height, p.width, range, &cfg)
            .with_context(|| format!("SSIM of {name} ({}x{})", p.height, p.width))?;
        psnrs.push(v);
        per_file.push(ImageScores {
            file: name.clone(),
            psnr: finite_or_null(v),
            ssim: s,
        });
    }
    let bit_depth = depth.map_or(8, |(d, _)| d);
    let n = per_file.len() as f64;
    let psnr_mean = psnrs.iter().sum::<f64>() / n;
    let finite: Vec<f64> = psnrs.iter().copied().filter(|v| v.is_finite()).collect();
    Ok(ImageReport {
        metric: "psnr-ssim",
        pred_dir: args.pred.clone(),
        target_dir: args.target.clone(),
        bit_depth,
        data_range: args
            .data_range
            .unwrap_or(if bit_depth == 8 { 255.0 } else { 65535.0 }),
        ssim_window: if args.gaussian {
            "gaussian1.5"
        } else {
            "uniform7"
        },
        psnr_mean: finite_or_null(psnr_mean),
        psnr_mean_infinite: psnr_mean.is_infinite(),
        psnr_infinite_count: psnrs.len() - finite.len(),
        psnr_mean_finite: (!finite.is_empty())
            .then(|| finite.iter().sum::<f64>() / finite.len() as f64),
        ssim_mean: per_file.iter().map(|f| f.ssim).sum::<f64>() / n,
        per_file,
    })
}

fn print_image_table(r: &ImageReport) {
    println!(
        "PSNR/SSIM: {} image pairs, {}-bit, data range {}, SSIM window {}",
        r.per_file.len(),
        r.bit_depth,
        r.data_range,
        r.ssim_window
    );
    println!(
        "PSNR mean  {} dB{}",
        fmt_value(r.psnr_mean, r.psnr_mean_infinite, 3),
        if r.psnr_infinite_count > 0 {
            format!(
                " ({} identical pair(s) with infinite PSNR; mean of the others {} dB)",
                r.psnr_infinite_count,
                fmt_value(r.psnr_mean_finite, false, 3)
            )
        } else {
            String::new()
        }
    );
    println!("SSIM mean  {:.5}", r.ssim_mean);
}

// ---------------------------------------------------------------------------------------------
// FID

#[derive(Debug, Serialize)]
struct FidReport {
    metric: &'static str,
    fid: f64,
    /// `|μa − μb|²`.
    mean_term: f64,
    trace_a: f64,
    trace_b: f64,
    /// `Tr sqrtm(Σa Σb)`.
    trace_covmean: f64,
    a: FeatureSource,
    b: FeatureSource,
    encoder: Option<PathBuf>,
    /// Inception-v3 weights that encoded the image folders.
    #[serde(skip_serializing_if = "Option::is_none")]
    inception_weights: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
struct FeatureSource {
    path: PathBuf,
    /// "features" (a safetensors file) or "images" (a folder encoded by the segmenter or by
    /// Inception-v3).
    kind: &'static str,
    /// Tensor name inside the safetensors file.
    #[serde(skip_serializing_if = "Option::is_none")]
    tensor: Option<String>,
    count: usize,
    dim: usize,
}

fn fid_report(args: &FidArgs, device: &Device) -> Result<FidReport> {
    ensure!(args.batch_size > 0, "--batch-size must be at least 1");
    let encoder = match (&args.encoder, &args.inception_weights) {
        (Some(_), Some(_)) => {
            bail!("--encoder and --inception-weights exclude each other: give one of them")
        }
        (Some(dir), None) => {
            let segmenter = load_segmenter(dir, device)
                .with_context(|| format!("loading the encoder {}", dir.display()))?;
            Some(ImageEncoder::Segmenter(Box::new(segmenter)))
        }
        (None, Some(file)) => Some(ImageEncoder::Inception(Box::new(
            InceptionV3::load(file, device)
                .with_context(|| format!("loading Inception-v3 weights {}", file.display()))?,
        ))),
        (None, None) => None,
    };
    let (fa, sa) = load_features(&args.a, encoder.as_ref(), args.batch_size, device)?;
    let (fb, sb) = load_features(&args.b, encoder.as_ref(), args.batch_size, device)?;
    let stats_a = FeatureStats::from_tensor(&fa)
        .with_context(|| format!("features of {}", args.a.display()))?;
    let stats_b = FeatureStats::from_tensor(&fb)
        .with_context(|| format!("features of {}", args.b.display()))?;
    let t = frechet_terms(&stats_a, &stats_b).with_context(|| {
        format!(
            "Fréchet distance between {} and {}",
            args.a.display(),
            args.b.display()
        )
    })?;
    Ok(FidReport {
        metric: "fid",
        fid: t.fid,
        mean_term: t.mean_term,
        trace_a: t.trace_s1,
        trace_b: t.trace_s2,
        trace_covmean: t.trace_covmean,
        a: sa,
        b: sb,
        encoder: args.encoder.clone(),
        inception_weights: args.inception_weights.clone(),
    })
}

/// What turns a folder of images into features (boxed: both are large structs of tensor
/// handles).
enum ImageEncoder {
    /// A segmenter's pooled bottleneck.
    Segmenter(Box<(MonaiUNet, SegmenterSpec)>),
    /// Inception-v3's 2048-d pool output.
    Inception(Box<InceptionV3>),
}

/// N×D features from a safetensors file, or from a folder of images through the encoder.
fn load_features(
    path: &Path,
    encoder: Option<&ImageEncoder>,
    batch_size: usize,
    device: &Device,
) -> Result<(Tensor, FeatureSource)> {
    if path.is_dir() {
        let features = match encoder {
            Some(ImageEncoder::Segmenter(segmenter)) => {
                let (model, spec) = segmenter.as_ref();
                encode_folder(path, model, spec, batch_size, device)?
            }
            Some(ImageEncoder::Inception(net)) => {
                encode_folder_inception(path, net, batch_size, device)?
            }
            None => bail!(
                "{} is a folder: encoding images needs --encoder SEGMENTER_DIR or \
                 --inception-weights FILE",
                path.display()
            ),
        };
        let (count, dim) = features.dims2()?;
        return Ok((
            features,
            FeatureSource {
                path: path.to_path_buf(),
                kind: "images",
                tensor: None,
                count,
                dim,
            },
        ));
    }
    let tensors = candle_core::safetensors::load(path, &Device::Cpu)
        .with_context(|| format!("reading features from {}", path.display()))?;
    let (name, t) = match tensors.len() {
        1 => tensors.into_iter().next().context("empty map")?,
        0 => bail!("{}: no tensors", path.display()),
        _ => {
            let mut keys: Vec<&String> = tensors.keys().collect();
            keys.sort();
            let t = tensors.get("features").with_context(|| {
                format!(
                    "{} holds several tensors ({keys:?}) and none is named `features`",
                    path.display()
                )
            })?;
            ("features".to_string(), t.clone())
        }
    };
    let (count, dim) = t.dims2().with_context(|| {
        format!(
            "{}: tensor `{name}` has shape {:?}, expected N×D",
            path.display(),
            t.dims()
        )
    })?;
    Ok((
        t,
        FeatureSource {
            path: path.to_path_buf(),
            kind: "features",
            tensor: Some(name),
            count,
            dim,
        },
    ))
}

/// Pooled bottleneck features of every PNG in `dir` (sorted by name), read and encoded
/// `batch_size` images at a time.
fn encode_folder(
    dir: &Path,
    model: &MonaiUNet,
    spec: &SegmenterSpec,
    batch_size: usize,
    device: &Device,
) -> Result<Tensor> {
    ensure!(
        spec.network.in_channels == 1,
        "the encoder takes {} channels; only greyscale image folders are supported",
        spec.network.in_channels
    );
    let names = png_names(dir)?;
    let [h, w] = spec.image_size;
    let mut parts = Vec::new();
    for chunk in names.chunks(batch_size) {
        let mut values = Vec::with_capacity(chunk.len() * h * w);
        for name in chunk {
            let path = dir.join(name);
            let g = read_grey(&path)?;
            ensure!(
                (g.height, g.width) == (h, w),
                "{} is {}x{} but the encoder was trained on {h}x{w} images",
                path.display(),
                g.height,
                g.width
            );
            let max = g.pixels.iter().copied().max().unwrap_or(0);
            ensure!(
                f64::from(max) <= spec.input.pixel_max,
                "{} has pixel value {max} above the encoder's input range {}..{}",
                path.display(),
                spec.input.pixel_min,
                spec.input.pixel_max
            );
            values.extend(g.pixels.iter().map(|&v| spec.input.apply(f64::from(v))));
        }
        let x = Tensor::from_vec(values, (chunk.len(), 1, h, w), device)?;
        let f = segdiff_eval::encode(model, &x, batch_size)
            .with_context(|| format!("encoding images of {}", dir.display()))?;
        parts.push(f.to_device(&Device::Cpu)?.to_dtype(DType::F32)?);
    }
    Ok(Tensor::cat(&parts, 0)?)
}

/// A PNG as `C×H×W` values in [0, 1] (8-bit / 255, 16-bit / 65535), C = 1 (grey) or 3 (RGB).
fn read_image01(path: &Path) -> Result<(usize, usize, usize, Vec<f32>)> {
    let img = image::ImageReader::open(path)
        .with_context(|| format!("opening {}", path.display()))?
        .with_guessed_format()
        .with_context(|| format!("reading {}", path.display()))?
        .decode()
        .with_context(|| format!("decoding {}", path.display()))?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    let planar = |interleaved: Vec<f32>| -> Vec<f32> {
        (0..3)
            .flat_map(|c| (0..h * w).map(move |i| (c, i)))
            .map(|(c, i)| interleaved[i * 3 + c])
            .collect()
    };
    // 8- and 16-bit samples scaled to [0, 1].
    fn unit<T: Copy + Into<f32>>(raw: Vec<T>, max: f32) -> Vec<f32> {
        raw.into_iter().map(|v| v.into() / max).collect()
    }
    Ok(match img {
        image::DynamicImage::ImageLuma8(b) => (1, h, w, unit(b.into_raw(), 255.0)),
        image::DynamicImage::ImageLuma16(b) => (1, h, w, unit(b.into_raw(), 65535.0)),
        image::DynamicImage::ImageRgb8(b) => (3, h, w, planar(unit(b.into_raw(), 255.0))),
        image::DynamicImage::ImageRgb16(b) => (3, h, w, planar(unit(b.into_raw(), 65535.0))),
        other => bail!(
            "{}: {:?} image; expected an 8- or 16-bit grey or RGB PNG without alpha",
            path.display(),
            other.color()
        ),
    })
}

/// Inception-v3 pool features of every PNG in `dir` (sorted by name), `batch_size` images per
/// forward pass; each image is resized to 299×299 on its own, so sizes may differ.
fn encode_folder_inception(
    dir: &Path,
    net: &InceptionV3,
    batch_size: usize,
    device: &Device,
) -> Result<Tensor> {
    let names = png_names(dir)?;
    let mut parts = Vec::new();
    for chunk in names.chunks(batch_size) {
        let mut inputs = Vec::with_capacity(chunk.len());
        for name in chunk {
            let path = dir.join(name);
            let (c, h, w, values) = read_image01(&path)?;
            let x = Tensor::from_vec(values, (1, c, h, w), device)?;
            inputs.push(
                inception_input(&x)
                    .with_context(|| format!("preparing {} for Inception-v3", path.display()))?,
            );
        }
        let f = net
            .forward(&Tensor::cat(&inputs, 0)?)
            .with_context(|| format!("encoding images of {} with Inception-v3", dir.display()))?;
        parts.push(f.to_device(&Device::Cpu)?.to_dtype(DType::F32)?);
    }
    Ok(Tensor::cat(&parts, 0)?)
}

fn print_fid(r: &FidReport) {
    for (label, s) in [("a", &r.a), ("b", &r.b)] {
        println!(
            "{label}: {} ({} {}, {} × {})",
            s.path.display(),
            s.kind,
            s.tensor
                .as_deref()
                .map_or_else(String::new, |t| format!("`{t}`")),
            s.count,
            s.dim
        );
    }
    println!(
        "FID {:.6}  (|Δμ|² {:.6}, Tr Σa {:.6}, Tr Σb {:.6}, Tr sqrt(ΣaΣb) {:.6})",
        r.fid, r.mean_term, r.trace_a, r.trace_b, r.trace_covmean
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageBuffer, Luma};

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
        let err = format!("{:#}", paired_names(&p, &t).unwrap_err());
        assert!(err.contains("b.PNG") && err.contains("pred"), "{err}");
        write_l8(&p.join("b.PNG"), 2, 2, vec![0; 4]);
        write_l8(&p.join("c.png"), 2, 2, vec![0; 4]);
        let err = format!("{:#}", paired_names(&p, &t).unwrap_err());
        assert!(err.contains("c.png") && err.contains("target"), "{err}");
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
        let err = format!(
            "{:#}",
            dice_report(&DiceArgs {
                masks: mask_args(&p, &t, Some(3)),
                keep_empty: false,
            })
            .unwrap_err()
        );
        assert!(err.contains("x.png") && err.contains("class id 5"), "{err}");
        write_l8(&p.join("y.png"), 4, 4, vec![0; 16]);
        write_l8(&t.join("y.png"), 4, 4, vec![0; 16]);
        let err = format!(
            "{:#}",
            dice_report(&DiceArgs {
                masks: mask_args(&p, &t, Some(8)),
                keep_empty: false,
            })
            .unwrap_err()
        );
        assert!(err.contains("y.png") && err.contains("one size"), "{err}");
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
        let err = format!(
            "{:#}",
            image_report(&ImageArgs {
                pred: p2,
                target: t2,
                gaussian: false,
                data_range: None,
                json: true,
            })
            .unwrap_err()
        );
        assert!(err.contains("r.png") && err.contains("bit"), "{err}");
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
        let err = format!(
            "{:#}",
            load_features(&pc, None, 4, &Device::Cpu).unwrap_err()
        );
        assert!(
            err.contains("features") && err.contains("c.safetensors"),
            "{err}"
        );
        let err = format!(
            "{:#}",
            load_features(d.path(), None, 4, &Device::Cpu).unwrap_err()
        );
        assert!(
            err.contains("--encoder") && err.contains("--inception-weights"),
            "{err}"
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
        let r = fid_report(
            &FidArgs {
                a: a.clone(),
                b: b.clone(),
                encoder: Some(seg.clone()),
                inception_weights: None,
                batch_size: 2,
                json: true,
            },
            &Device::Cpu,
        )
        .unwrap();
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
        write_l8(&b.join("big.png"), 16, 16, vec![0; 256]);
        let err = format!(
            "{:#}",
            fid_report(
                &FidArgs {
                    a,
                    b,
                    encoder: Some(seg),
                    inception_weights: None,
                    batch_size: 2,
                    json: true,
                },
                &Device::Cpu,
            )
            .unwrap_err()
        );
        assert!(err.contains("big.png") && err.contains("8x8"), "{err}");
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
        let err = format!("{:#}", fid_report(&both, &Device::Cpu).unwrap_err());
        assert!(err.contains("exclude each other"), "{err}");
        let mut bad = std::collections::HashMap::new();
        bad.insert(
            "Conv2d_1a_3x3.conv.weight".to_string(),
            Tensor::zeros((32, 3, 3, 3), DType::F32, &Device::Cpu).unwrap(),
        );
        let bad_path = d.path().join("bad.safetensors");
        candle_core::safetensors::save(&bad, &bad_path).unwrap();
        let err = format!(
            "{:#}",
            fid_report(
                &FidArgs {
                    inception_weights: Some(bad_path),
                    ..args(&b)
                },
                &Device::Cpu
            )
            .unwrap_err()
        );
        assert!(
            err.contains("bad.safetensors") && err.contains("missing"),
            "{err}"
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
        let err = format!("{:#}", read_image01(&path).unwrap_err());
        assert!(err.contains("la.png") && err.contains("alpha"), "{err}");
    }

    #[test]
    fn colour_pngs_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("rgb.png");
        image::RgbImage::from_raw(2, 2, vec![0; 12])
            .unwrap()
            .save(&path)
            .unwrap();
        let err = format!("{:#}", read_grey(&path).unwrap_err());
        assert!(
            err.contains("rgb.png") && err.contains("greyscale"),
            "{err}"
        );
    }
}
