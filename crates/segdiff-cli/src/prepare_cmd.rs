//! `segdiff prepare`: DICOM series / NIfTI volumes and their label maps, or folders of 2-D images
//! and masks, → the paired 2-D PNG dataset that `segdiff train` and the official code read.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use segdiff_data::prepare::{prepare_2d, Folders2d, MaskFolder};
use segdiff_data::{
    brain_tissue_labels, prepare, read_volume_file, Fit, InputSpec, Intensity, LabelMapping,
    PrepareOptions, PrepareSummary, Progress, SliceAxis, SliceFilter, SplitRatios,
};

use crate::flag_values::flag;

/// Turn 3-D medical volumes into a 2-D training dataset.
///
/// Writes `OUT/img/{train,val,test}/<name>.png` and `OUT/mask/all/{split}/<name>.png` (8-bit,
/// class ids as pixel values), `OUT/manifest.csv` (one row per slice) and `OUT/dataset.json`.
/// Volumes are reoriented to RAS+ and sliced in the radiological convention; the split is by
/// volume (never by slice) and deterministic from --seed. A failed run leaves nothing behind.
///
/// 2-D datasets (ISIC 2018, HC18, RIM-ONE DL): --images-2d DIR with --masks-2d DIR (and
/// --mask-suffix, --fill-outline, --mask-threshold); each image is one item, split by --split.
#[derive(Debug, clap::Args)]
pub struct PrepareArgs {
    /// Image volume: a NIfTI file (.nii/.nii.gz) or a DICOM folder/file. Repeat for more volumes.
    #[arg(long = "image")]
    pub images: Vec<PathBuf>,
    /// Label volume for the preceding --image: NIfTI label map or DICOM SEG. Give one per --image.
    #[arg(long = "label")]
    pub labels_files: Vec<PathBuf>,
    /// Instead of --label: grey- and white-matter probability maps (GM,WM NIfTI files) on the
    /// image's grid, turned into 4 classes: 0 background (T1/255 ≤ 0.2), 1 CSF/other, 2 grey
    /// matter, 3 white matter (argmax inside the brain). For the MNI ICBM152 template.
    #[arg(long = "tissue-maps", value_delimiter = ',')]
    pub tissue_maps: Vec<PathBuf>,
    /// CSV file of `image,label` lines (instead of --image/--label).
    #[arg(long)]
    pub pairs: Option<PathBuf>,
    /// `ct` or `mri`: chooses the default intensity transform and is recorded in dataset.json.
    #[arg(long)]
    pub modality: Option<String>,
    /// Slicing directions: any of axial, coronal, sagittal.
    #[arg(long, value_delimiter = ',', default_value = "axial", value_parser = flag::<SliceAxis>())]
    pub axes: Vec<SliceAxis>,
    /// CT window in HU, `LO,HI` (the AMOS work used -256,256), or a preset: abdomen, lung, bone, brain.
    #[arg(long, allow_hyphen_values = true)]
    pub ct_window: Option<String>,
    /// MRI percentile clipping over the whole volume, `LO,HI`.
    #[arg(long, default_value = "1,99")]
    pub mri_percentiles: String,
    /// Output size in pixels (square).
    #[arg(long, default_value_t = 256)]
    pub size: u32,
    /// How non-square slices become square: pad (with background), crop, or stretch.
    #[arg(long, default_value = "pad", value_parser = flag::<Fit>())]
    pub fit: Fit,
    /// Label values → classes, e.g. `1=liver,2=bladder` (ids in order) or `5=1:liver`. Values not
    /// listed become background. Default: label values are class ids.
    #[arg(long)]
    pub labels: Option<String>,
    /// Number of classes (with background) when --labels is not given.
    #[arg(long)]
    pub num_classes: Option<usize>,
    /// Make unlisted label values an error instead of background.
    #[arg(long)]
    pub strict_labels: bool,
    /// Keep only slices with at least this many foreground classes.
    #[arg(long, default_value_t = 0)]
    pub min_classes: usize,
    /// Keep only slices with at least this many foreground pixels.
    #[arg(long, default_value_t = 0)]
    pub min_pixels: usize,
    /// Train/val/test percentages, by volume (by image with --images-2d).
    #[arg(long, default_value = "70,15,15")]
    pub split: String,
    /// Seed of the split.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Volume index of 4-D NIfTI images.
    #[arg(long, default_value_t = 0)]
    pub volume_index: usize,
    /// Convert colour DICOM images (RGB, YBR; 3 samples per pixel) to grey instead of refusing
    /// them: RGB as Pillow's `convert("L")` weighs it, YBR by its Y (luma) sample. With
    /// --images-2d: write grey images (Pillow's `convert("L")`) instead of keeping RGB.
    #[arg(long)]
    pub to_grey: bool,
    /// Folder of 2-D images (png, jpg/jpeg, tif/tiff, bmp; subfolders included) instead of
    /// volumes. Each image is paired with its mask in every --masks-2d folder by file stem, fit to
    /// --size like a slice and split by --split (per image) from --seed; RGB images stay RGB (the
    /// dataset has 3 channels when any image has colour) unless --to-grey.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["images", "labels_files", "pairs", "tissue_maps"])]
    pub images_2d: Option<PathBuf>,
    /// Folder of masks for --images-2d (subfolders included; may be the image folder). Repeat for
    /// more classes: the k-th folder is label value k, i.e. class k unless --labels maps it
    /// (`--labels 1=disc,2=cup`); later folders are painted over earlier ones. Default classes:
    /// background and `object` (one folder) or class_1..class_k.
    #[arg(long = "masks-2d", value_name = "DIR", requires = "images_2d")]
    pub masks_2d: Vec<PathBuf>,
    /// The mask's file stem is the image's stem followed by this (`_segmentation` for ISIC 2018,
    /// `_Annotation` for HC18); give one for every --masks-2d or one per --masks-2d, in order.
    /// Default: the same stem.
    #[arg(
        long = "mask-suffix",
        value_name = "STR",
        allow_hyphen_values = true,
        requires = "masks_2d"
    )]
    pub mask_suffixes: Vec<String>,
    /// Fill closed outlines in the masks (HC18's ellipses): pixels the background cannot reach
    /// from the image border (4-neighbours) become object.
    #[arg(long, requires = "masks_2d")]
    pub fill_outline: bool,
    /// A mask pixel above this grey level is object (masks stored 0/255 become 0/1).
    #[arg(long, value_name = "N", default_value_t = 0, requires = "masks_2d")]
    pub mask_threshold: u8,
    /// Leave images without a mask (and masks without an image) out with a warning instead of
    /// failing.
    #[arg(long, requires = "images_2d")]
    pub skip_unpaired: bool,
    /// Output folder (replaced atomically when it already holds a dataset).
    #[arg(long)]
    pub out: PathBuf,
}

fn intensity(args: &PrepareArgs) -> Result<Intensity> {
    let ct = args
        .modality
        .as_deref()
        .map(|m| m.eq_ignore_ascii_case("ct"))
        .unwrap_or(false);
    let spec = match &args.ct_window {
        Some(w) if w.contains(',') => format!("window:{w}"),
        Some(p) => format!("ct:{p}"),
        None if ct => {
            bail!("--modality ct needs --ct-window LO,HI or a preset (abdomen, lung, bone, brain)")
        }
        None => format!("percentile:{}", args.mri_percentiles),
    };
    Ok(Intensity::parse(&spec)?)
}

/// The mask folders of --masks-2d with their --mask-suffix.
fn mask_folders(args: &PrepareArgs) -> Result<Vec<MaskFolder>> {
    let (n, s) = (args.masks_2d.len(), args.mask_suffixes.len());
    if s > 1 && s != n {
        bail!("{s} --mask-suffix for {n} --masks-2d: give one suffix for all, or one per folder");
    }
    Ok(args
        .masks_2d
        .iter()
        .enumerate()
        .map(|(i, dir)| MaskFolder {
            dir: dir.clone(),
            suffix: args
                .mask_suffixes
                .get(if s == 1 { 0 } else { i })
                .cloned()
                .unwrap_or_default(),
        })
        .collect())
}

/// The --images-2d branch: folders of 2-D images and masks.
fn run_2d(args: &PrepareArgs, images: PathBuf, command_line: String) -> Result<()> {
    let masks = mask_folders(args)?;
    let labels = match (&args.labels, args.num_classes) {
        (Some(spec), n) => LabelMapping::parse(spec, args.strict_labels, n)?,
        (None, Some(n)) => LabelMapping::identity_count(n)?,
        (None, None) if masks.len() == 1 => LabelMapping::identity(&["object".to_string()])?,
        (None, None) => LabelMapping::identity_count(masks.len() + 1)?,
    };
    let folders = Folders2d {
        images,
        masks,
        fill_outline: args.fill_outline,
        mask_threshold: args.mask_threshold,
        to_grey: args.to_grey,
        skip_unpaired: args.skip_unpaired,
    };
    let opts = shared_options(args, Vec::new(), labels, command_line)?;
    let summary = with_progress(|p| prepare_2d(&folders, &opts, p))
        .with_context(|| format!("preparing {}", args.out.display()))?;
    report(&summary, "image(s)");
    Ok(())
}

/// The options volumes and 2-D folders share.
fn shared_options(
    args: &PrepareArgs,
    inputs: Vec<InputSpec>,
    labels: LabelMapping,
    command_line: String,
) -> Result<PrepareOptions> {
    let mut opts = PrepareOptions::new(inputs, &args.out, labels);
    opts.axes = args.axes.clone();
    opts.size = args.size;
    opts.fit = args.fit;
    opts.slice_filter = SliceFilter {
        min_classes: args.min_classes,
        min_pixels: args.min_pixels,
    };
    opts.ratios = SplitRatios::parse(&args.split)?;
    opts.seed = args.seed;
    opts.modality = args.modality.clone();
    opts.command = command_line;
    opts.dicom.to_grey = args.to_grey;
    Ok(opts)
}

/// Runs `f` with a progress bar fed by its [`Progress`] reports.
fn with_progress<T>(f: impl FnOnce(&(dyn Fn(&Progress) + Sync)) -> T) -> T {
    let bar = crate::progress::bar(0, "prepare");
    let out = f(&|p| match p {
        Progress::Planned { slices, .. } => bar.set_length(*slices as u64),
        Progress::Slice { done, .. } => bar.set_position(*done as u64),
        Progress::VolumeDone { id, done, total } => {
            bar.set_message(format!("{id} ({done}/{total} volumes)"))
        }
        Progress::Finishing => bar.set_message("writing"),
    });
    bar.finish_and_clear();
    out
}

/// Prints the warnings and what was written from how many `sources`.
fn report(summary: &PrepareSummary, sources: &str) {
    for w in &summary.warnings {
        eprintln!("warning: {w}");
    }
    println!(
        "wrote {} slices (train {}, val {}, test {}) from {} {sources} to {}",
        summary.slices.iter().sum::<usize>(),
        summary.slices[0],
        summary.slices[1],
        summary.slices[2],
        summary.volumes.len(),
        summary.out_dir.display()
    );
}

pub fn run(args: PrepareArgs, command_line: String) -> Result<()> {
    if let Some(images) = args.images_2d.clone() {
        return run_2d(&args, images, command_line);
    }
    let mut inputs: Vec<InputSpec> = Vec::new();
    let mut tissue_dir = None;
    if let Some(csv) = &args.pairs {
        if !args.images.is_empty() {
            bail!("give either --pairs or --image/--label, not both");
        }
        let text =
            std::fs::read_to_string(csv).with_context(|| format!("reading {}", csv.display()))?;
        let base = csv.parent().map(PathBuf::from).unwrap_or_default();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty()
                || line.starts_with('#')
                || (i == 0 && line.eq_ignore_ascii_case("image,label"))
            {
                continue;
            }
            let (img, lab) = line.split_once(',').with_context(|| {
                format!("{} line {}: expected image,label", csv.display(), i + 1)
            })?;
            inputs.push(InputSpec {
                image: base.join(img.trim()),
                label: Some(base.join(lab.trim())),
                volume_index: args.volume_index,
                ..InputSpec::default()
            });
        }
    } else if !args.tissue_maps.is_empty() {
        if args.tissue_maps.len() != 2 {
            bail!(
                "--tissue-maps takes two files, GM,WM (got {})",
                args.tissue_maps.len()
            );
        }
        if args.images.len() != 1 || !args.labels_files.is_empty() {
            bail!("--tissue-maps GM,WM goes with exactly one --image (the T1) and no --label");
        }
        let dir =
            tempfile::tempdir().context("creating a temporary folder for the tissue labels")?;
        let t1 = read_volume_file(&args.images[0], args.volume_index)?;
        let gm = read_volume_file(&args.tissue_maps[0], 0)?;
        let wm = read_volume_file(&args.tissue_maps[1], 0)?;
        let labels = brain_tissue_labels(&t1, &gm, &wm)?;
        let path = dir.path().join("tissue_labels.nii");
        segdiff_data::synthetic::write_nifti_u8(&path, &labels).with_context(|| {
            format!(
                "writing the tissue label volume to the temporary folder {}",
                dir.path().display()
            )
        })?;
        inputs.push(InputSpec {
            image: args.images[0].clone(),
            label: Some(path),
            volume_index: args.volume_index,
            ..InputSpec::default()
        });
        tissue_dir = Some(dir);
    } else {
        if args.images.is_empty() {
            bail!("nothing to prepare: give --image (with --label) or --pairs");
        }
        if !args.labels_files.is_empty() && args.labels_files.len() != args.images.len() {
            bail!(
                "{} --image but {} --label: give one label volume per image (or none)",
                args.images.len(),
                args.labels_files.len()
            );
        }
        for (i, img) in args.images.iter().enumerate() {
            inputs.push(InputSpec {
                image: img.clone(),
                label: args.labels_files.get(i).cloned(),
                volume_index: args.volume_index,
                ..InputSpec::default()
            });
        }
    }
    let labels = match (&args.labels, args.num_classes, tissue_dir.is_some()) {
        (Some(spec), n, _) => LabelMapping::parse(spec, args.strict_labels, n)?,
        (None, _, true) => LabelMapping::identity(
            &segdiff_data::tissue::TISSUE_CLASSES[1..]
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
        )?,
        (None, Some(n), false) => LabelMapping::identity_count(n)?,
        (None, None, false) => {
            bail!("say how label values map to classes: --labels 1=liver,2=… or --num-classes N")
        }
    };
    let mut opts = shared_options(&args, inputs, labels, command_line)?;
    opts.intensity = intensity(&args)?;
    let summary = with_progress(|p| prepare(&opts, p))
        .with_context(|| format!("preparing {}", args.out.display()))?;
    drop(tissue_dir);
    report(&summary, "volume(s)");
    Ok(())
}
