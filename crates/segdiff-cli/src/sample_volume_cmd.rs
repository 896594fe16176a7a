//! `segdiff sample-volume`: a whole image volume from a 3-D label volume, written on the label
//! volume's own grid (NIfTI or a new DICOM series), plus a three-plane picture.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use segdiff_data::{
    read_label_volume, reorient_to_ras, slice_label_volume, training_window, write_dicom_series,
    write_nifti_like, DicomScaling, DicomSeriesOptions, Fit, LabelMapping, LabelSlices,
    NiftiVoxels, SliceAxis, Volume,
};
use segdiff_diffusion::sampler::Shard;
use segdiff_diffusion::{
    load_model_dir, sample_volume_slices, NeighbourGate, SegdiffModel, UnetDenoiser,
    VolumeSampleOptions,
};
use segdiff_io::picture;

use crate::runtime::Runtime;
use crate::sample_cmd::parse_shard;

/// Generate an image volume from a label volume, slice by slice along one axis, and write it on
/// the label volume's grid (same shape, affine and voxel order) so that it overlays the labels.
///
/// The label volume is reoriented and sliced exactly as `segdiff prepare` does (closest RAS+,
/// radiological slices, square fit, nearest-neighbour resize to the model's size); the generated
/// slices are resized back bilinearly. Also writes `<out stem>_planes.png`: axial, coronal and
/// sagittal planes through the centre, the result beside the labels.
#[derive(Debug, clap::Args)]
pub struct SampleVolumeArgs {
    /// Model directory (diffusers layout), or `hf://owner/name[@revision][/folder]`.
    #[arg(long)]
    pub model: PathBuf,
    /// Label volume(s): NIfTI-1/2 (`.nii`, `.nii.gz`), `.hdr`/`.img` pair, MetaImage (`.mha`,
    /// `.mhd`), NRRD (`.nrrd`, `.nhdr`), or DICOM SEG (with --reference). With several, --out is a
    /// folder.
    #[arg(long, num_args = 1.., required = true)]
    pub labels: Vec<PathBuf>,
    /// Output: `OUT.nii` / `OUT.nii.gz`, or a folder for a DICOM series (or for several inputs).
    #[arg(long)]
    pub out: PathBuf,
    /// Output format (default: NIfTI for a `.nii`/`.nii.gz` --out or several inputs, else DICOM).
    #[arg(long, value_parser = ["nifti", "dicom"])]
    pub format: Option<String>,
    /// Slicing axis: axial, coronal or sagittal.
    #[arg(long, default_value = "axial", value_parser = crate::flag_values::flag::<SliceAxis>())]
    pub axis: SliceAxis,
    /// Generate every slice alone, even with a neighbour-conditioned model.
    #[arg(long)]
    pub independent: bool,
    /// Anchor slices from which neighbour-conditioned generation proceeds outward.
    #[arg(long, default_value_t = 1)]
    pub anchors: usize,
    /// The part of the denoising steps in which a conditioned slice sees its neighbour, as
    /// `FROM,UNTIL` fractions of the steps from the first (noisiest): `0,0.5` feeds it for the
    /// first half and generates the rest as an anchor. Default: the whole trajectory.
    #[arg(long, value_name = "FROM,UNTIL", default_value = "0,1", value_parser = parse_neighbour_window)]
    pub neighbour_window: (f64, f64),
    /// Where a conditioned slice uses its neighbour: `agreeing` (the pixels where the slice's and
    /// the neighbour's masks have the same class; elsewhere it is generated as an anchor, from
    /// its own mask alone; two network calls per step) or `everywhere` (one call).
    #[arg(long, default_value = "agreeing", value_parser = crate::flag_values::flag::<NeighbourGate>())]
    pub neighbour_gate: NeighbourGate,
    /// Sampler, steps, η, seed (slice i of a volume is reproducible from (seed, i)) and slices
    /// per denoiser call, as for `segdiff sample`.
    #[command(flatten)]
    pub sampling: crate::sample_cmd::SamplingArgs,
    /// Label values → classes, in `segdiff prepare --labels` syntax (`1=liver,2=kidney` or
    /// `5=1:liver`). Named --label-map here because --labels is the input. Default: values are
    /// the model's class ids.
    #[arg(long)]
    pub label_map: Option<String>,
    /// Unmapped label values are an error (naming the value and file) instead of background.
    #[arg(long)]
    pub strict_labels: bool,
    /// The image series a DICOM SEG input segments (its grid is the output grid).
    #[arg(long)]
    pub reference: Option<PathBuf>,
    /// Slices beyond the first and last one holding any label: `blank` (not generated; the
    /// output's low end, 0 in [0, 1]) or `generate` (the model draws them from empty masks,
    /// which it rarely saw in training).
    #[arg(long, default_value = "blank", value_parser = ["blank", "generate"])]
    pub empty_slices: String,
    /// How slices were made square when the training data were prepared: pad, crop or stretch.
    #[arg(long, default_value = "pad", value_parser = crate::flag_values::flag::<Fit>())]
    pub fit: Fit,
    /// Output intensities: `unit` (the model's [0, 1], float32) or `window` (mapped linearly back
    /// to the training data's window: int16 HU for CT, float32 otherwise).
    #[arg(long, default_value = "unit", value_parser = ["unit", "window"])]
    pub intensity: String,
    /// The window `LO,HI` for --intensity window (default: the training dataset's record).
    #[arg(long, allow_hyphen_values = true)]
    pub window: Option<String>,
    /// The prepared dataset the model was trained on (its dataset.json / manifest.csv record the
    /// window and modality; default: a dataset.json in the model folder).
    #[arg(long)]
    pub dataset: Option<PathBuf>,
    /// Generate only shard I of N (1-based) of the label volumes.
    #[arg(long)]
    pub shard: Option<String>,
    /// Print a JSON summary.
    #[arg(long)]
    pub json: bool,
}

/// What 0 and 1 of the model's output stand for, and how the result is stored.
struct OutputScale {
    lo: f64,
    hi: f64,
    /// Stored as int16 Hounsfield units (CT window).
    hu: bool,
    modality: Option<String>,
}

impl OutputScale {
    fn map(&self, v01: f32) -> f32 {
        (self.lo + f64::from(v01.clamp(0.0, 1.0)) * (self.hi - self.lo)) as f32
    }
}

/// `FROM,UNTIL` with 0 ≤ FROM < UNTIL ≤ 1 (`--neighbour-window`).
pub fn parse_neighbour_window(s: &str) -> Result<(f64, f64), String> {
    let pair = s
        .split_once(',')
        .and_then(|(a, b)| Some((a.trim().parse::<f64>().ok()?, b.trim().parse::<f64>().ok()?)));
    // the library's rule for a window (checked on any step count)
    match pair.filter(|&w| segdiff_diffusion::neighbour_step_window(w, 1).is_ok()) {
        Some(window) => Ok(window),
        None => Err(format!(
            "{s:?}: expected FROM,UNTIL, fractions of the denoising steps with 0 ≤ FROM < UNTIL ≤ 1"
        )),
    }
}

fn parse_window(s: &str) -> Result<(f64, f64)> {
    let (lo, hi) = s
        .split_once(',')
        .with_context(|| format!("--window {s}: expected LO,HI"))?;
    let lo: f64 = lo
        .trim()
        .parse()
        .with_context(|| format!("--window {s}: LO"))?;
    let hi: f64 = hi
        .trim()
        .parse()
        .with_context(|| format!("--window {s}: HI"))?;
    if !(lo.is_finite() && hi.is_finite() && hi > lo) {
        bail!("--window {s}: need finite LO < HI");
    }
    Ok((lo, hi))
}

fn output_scale(args: &SampleVolumeArgs) -> Result<OutputScale> {
    let dataset = args.dataset.clone().or_else(|| {
        let d = args.model.join("dataset.json");
        d.is_file().then(|| args.model.clone())
    });
    let recorded = match &dataset {
        Some(d) => training_window(d)
            .with_context(|| format!("reading the intensity record of {}", d.display()))?,
        None => None,
    };
    let modality = recorded.as_ref().and_then(|w| w.modality.clone());
    let is_ct = modality
        .as_deref()
        .is_some_and(|m| m.eq_ignore_ascii_case("ct"));
    if args.intensity == "unit" {
        if args.window.is_some() {
            bail!("--window only applies with --intensity window");
        }
        return Ok(OutputScale {
            lo: 0.0,
            hi: 1.0,
            hu: false,
            modality,
        });
    }
    let (lo, hi) = match (&args.window, &recorded) {
        (Some(w), _) => parse_window(w)?,
        (None, Some(w)) => (w.lo, w.hi),
        (None, None) => match &dataset {
            Some(d) => bail!(
                "--intensity window: {} records no single intensity window (its volumes were \
                 scaled by different percentile ranges); pass --window LO,HI",
                d.display()
            ),
            None => bail!(
                "--intensity window: the model folder {} records no training window (no \
                 dataset.json); pass --window LO,HI, or --dataset DIR (the prepared dataset the \
                 model was trained on)",
                args.model.display()
            ),
        },
    };
    Ok(OutputScale {
        lo,
        hi,
        hu: is_ct,
        modality,
    })
}

/// Label values → the model's classes.
fn label_mapping(args: &SampleVolumeArgs, model: &SegdiffModel) -> Result<LabelMapping> {
    let num_classes = model
        .meta
        .num_classes
        .context("the model records no number of classes (segdiff.json num_classes)")?;
    let mapping = match &args.label_map {
        Some(spec) => LabelMapping::parse(spec, args.strict_labels, None)
            .with_context(|| format!("--label-map {spec}"))?,
        None => model_class_mapping(model, args.strict_labels)?,
    };
    if mapping.num_classes() > num_classes {
        bail!(
            "--label-map uses {} classes but the model has {num_classes}",
            mapping.num_classes()
        );
    }
    Ok(mapping)
}

/// Label values are the model's class ids; other values are background (or, `strict`, an error),
/// as with an explicit mapping.
pub(crate) fn model_class_mapping(model: &SegdiffModel, strict: bool) -> Result<LabelMapping> {
    let num_classes = model
        .meta
        .num_classes
        .context("the model records no number of classes (segdiff.json num_classes)")?;
    let mut names = model.meta.class_names.clone();
    names.resize_with(num_classes, String::new);
    for (i, n) in names.iter_mut().enumerate() {
        if n.is_empty() {
            *n = if i == 0 {
                "background".into()
            } else {
                format!("class_{i}")
            };
        }
    }
    let m = LabelMapping {
        pairs: (1..num_classes.min(256))
            .map(|i| (i as i64, i as u8))
            .collect(),
        class_names: names,
        strict,
        identity: false,
    };
    m.validate()?;
    Ok(m)
}

/// `case1_seg` for `dir/case1_seg.nii.gz` (any volume file extension; or a DICOM SEG file / folder).
fn stem(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "labels".into());
    let lower = name.to_ascii_lowercase();
    let ext = segdiff_data::volume_extension(path).or((lower.ends_with(".dcm")).then_some(".dcm"));
    match ext {
        Some(ext) => name[..name.len() - ext.len()].to_string(),
        None => name,
    }
}

fn is_nifti_out(path: &Path) -> bool {
    let n = path.to_string_lossy().to_ascii_lowercase();
    n.ends_with(".nii") || n.ends_with(".nii.gz")
}

/// `<out stem>_planes.png` beside the output.
fn planes_path(out: &Path) -> PathBuf {
    let name = stem(out);
    let parent = out.parent().unwrap_or(Path::new(""));
    parent.join(format!("{name}_planes.png"))
}

/// One volume's output location and format.
struct Target {
    labels: PathBuf,
    out: PathBuf,
    dicom: bool,
}

fn targets(args: &SampleVolumeArgs) -> Result<Vec<Target>> {
    let dicom = match args.format.as_deref() {
        Some(f) => f == "dicom",
        None => args.labels.len() == 1 && !is_nifti_out(&args.out),
    };
    if args.labels.len() == 1 {
        if !dicom && !is_nifti_out(&args.out) {
            bail!(
                "--out {}: a NIfTI output must end in .nii or .nii.gz",
                args.out.display()
            );
        }
        if dicom && is_nifti_out(&args.out) {
            bail!(
                "--out {}: a DICOM series is written to a folder, not a .nii file",
                args.out.display()
            );
        }
        return Ok(vec![Target {
            labels: args.labels[0].clone(),
            out: args.out.clone(),
            dicom,
        }]);
    }
    if is_nifti_out(&args.out) {
        bail!(
            "--out {}: with several --labels, --out is a folder",
            args.out.display()
        );
    }
    let mut seen = std::collections::HashSet::new();
    args.labels
        .iter()
        .map(|l| {
            let s = stem(l);
            if !seen.insert(s.clone()) {
                bail!("two label volumes are named {s}: their outputs would collide");
            }
            let name = if dicom {
                format!("{s}_synthetic")
            } else {
                format!("{s}_synthetic.nii.gz")
            };
            Ok(Target {
                labels: l.clone(),
                out: args.out.join(name),
                dicom,
            })
        })
        .collect()
}

#[derive(serde::Serialize)]
struct VolumeReport {
    labels: String,
    out: String,
    planes: String,
    format: &'static str,
    shape: [usize; 3],
    axis: &'static str,
    slices: usize,
    generated: usize,
    seconds: f64,
}

pub fn run(args: SampleVolumeArgs, rt: &Runtime) -> Result<()> {
    let all = targets(&args)?;
    let range = match args.shard.as_deref() {
        Some(s) => {
            let shard: Shard = parse_shard(s)?;
            shard.image_range(all.len(), 1)?
        }
        None => 0..all.len(),
    };
    let model = load_model_dir(&args.model, rt.sampling_dtype(), &rt.device)
        .with_context(|| format!("loading the model in {}", args.model.display()))?;
    if !model.meta.segmentation_guided {
        bail!("this model is unconditional: sample-volume needs a segmentation-guided model");
    }
    let size = model
        .unet
        .config
        .sample_size
        .context("the model's config has no sample_size")?;
    let mapping = label_mapping(&args, &model)?;
    let scale = output_scale(&args)?;
    let options = VolumeSampleOptions {
        sample: args.sampling.options(),
        independent: args.independent,
        anchors: args.anchors,
        neighbour_window: args.neighbour_window,
        neighbour_gate: args.neighbour_gate,
    };
    let mut reports = Vec::new();
    for t in &all[range] {
        let started = Instant::now();
        let r = sample_one(&args, rt, &model, &mapping, &scale, &options, size, t)
            .with_context(|| format!("generating a volume for {}", t.labels.display()))?;
        let report = VolumeReport {
            seconds: started.elapsed().as_secs_f64(),
            ..r
        };
        if !args.json {
            println!(
                "{} → {} ({} {} slices, {} generated, {:.1} s; {})",
                report.labels,
                report.out,
                report.slices,
                report.axis,
                report.generated,
                report.seconds,
                report.planes
            );
        }
        reports.push(report);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn sample_one(
    args: &SampleVolumeArgs,
    rt: &Runtime,
    model: &SegdiffModel,
    mapping: &LabelMapping,
    scale: &OutputScale,
    options: &VolumeSampleOptions,
    size: usize,
    t: &Target,
) -> Result<VolumeReport> {
    let labels = read_label_volume(&t.labels, mapping, args.reference.as_deref())?;
    for w in &labels.warnings {
        eprintln!("warning: {w}");
    }
    let slices = slice_label_volume(&labels.classes, args.axis, args.fit, size)?;
    let n = slices.count;
    let range = if args.empty_slices == "blank" {
        slices.foreground_range().unwrap_or(0..0)
    } else {
        0..n
    };
    let generated = range.len();
    let unit = generate_volume(model, rt, &slices, range, options, &stem(&t.labels))?
        .unit
        .data;
    let affine = slices.geometry.affine;

    let description = format!(
        "segdiff synthetic {} from {}",
        args.axis.name(),
        file_name(&t.labels)
    );
    let dir = t.out.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(dir) = dir {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let dir = dir.unwrap_or(Path::new("."));
    segdiff_io::remove_stale_temps(dir)
        .with_context(|| format!("removing stale temporary files in {}", dir.display()))?;
    if t.dicom {
        let values = unit.mapv(|v| scale.map(v));
        let opts = DicomSeriesOptions {
            modality: scale.modality.clone(),
            description: format!("segdiff synthetic ({})", args.axis.name()),
            derivation: format!(
                "{description}: generated by segdiff sample-volume with model {}, seed {}; not \
                 an acquired image",
                args.model.display(),
                args.sampling.seed
            ),
            uid_key: format!(
                "segdiff sample-volume\0{}\0{}\0{}\0{}",
                t.labels.display(),
                args.model.display(),
                args.axis.name(),
                args.sampling.seed
            ),
            scaling: if scale.hu {
                DicomScaling::HU
            } else {
                DicomScaling::range(scale.lo, scale.hi)
            },
        };
        write_dicom_series(
            &t.out,
            &Volume {
                data: values,
                affine,
            },
            &opts,
        )?;
    } else {
        let reference = if segdiff_data::volume_slices::is_nifti_path(&t.labels) {
            segdiff_data::read_nifti_header(&t.labels)?
        } else {
            segdiff_data::header_for_affine(&affine)
        };
        let voxels = if scale.hu {
            NiftiVoxels::I16(unit.mapv(|v| scale.map(v).round() as i16))
        } else {
            NiftiVoxels::F32(unit.mapv(|v| scale.map(v)))
        };
        write_nifti_like(&t.out, &reference, &voxels, &description)?;
    }
    let planes = planes_path(&t.out);
    let colors = picture::class_colors(
        mapping
            .num_classes()
            .max(model.meta.num_classes.unwrap_or(0))
            .min(256),
        model.meta.class_colors.as_deref(),
    );
    picture::save_png(
        &planes,
        &three_planes(&[&Volume { data: unit, affine }], &labels.classes, &colors),
    )?;
    Ok(VolumeReport {
        labels: t.labels.display().to_string(),
        out: t.out.display().to_string(),
        planes: planes.display().to_string(),
        format: if t.dicom { "dicom" } else { "nifti" },
        shape: slices.geometry.shape,
        axis: args.axis.name(),
        slices: n,
        generated,
        seconds: 0.0,
    })
}

/// Slices generated from a label volume and put back on its grid.
pub(crate) struct GeneratedVolume {
    /// All `count` slices, (count, channels, size, size) in [0, 1], in slice order; slices
    /// outside the generated range are 0.
    pub slices01: Vec<f32>,
    /// Image channels.
    pub channels: usize,
    /// The channel mean on the label volume's grid (its shape and affine), in [0, 1].
    pub unit: Volume<f32>,
}

/// Generates the slices `range` of `slices` with `model` (the others stay 0, the output's low
/// end) and puts them back on the label grid; `what` names the progress bar.
pub(crate) fn generate_volume(
    model: &SegdiffModel,
    rt: &Runtime,
    slices: &LabelSlices,
    range: std::ops::Range<usize>,
    options: &VolumeSampleOptions,
    what: &str,
) -> Result<GeneratedVolume> {
    let (n, s) = (slices.count, slices.geometry.size);
    let generated = range.len();
    if generated == 0 {
        return Ok(GeneratedVolume {
            slices01: vec![0.0; n * s * s],
            channels: 1,
            unit: Volume {
                data: slices.geometry.place(&vec![0.0; n * s * s], 1, 0.0)?,
                affine: slices.geometry.affine,
            },
        });
    }
    let masks: Vec<u32> = slices.masks[range.start * s * s..range.end * s * s]
        .iter()
        .map(|&v| u32::from(v))
        .collect();
    let masks = Tensor::from_vec(masks, (generated, s, s), &Device::Cpu)?;
    let bar = crate::progress::bar(generated as u64, what);
    let mut denoiser = UnetDenoiser::new(&model.unet.model, rt.sampling_dtype());
    let images = sample_volume_slices(
        &mut denoiser,
        &model.scheduler,
        &model.meta,
        &masks,
        options,
        &rt.device,
        &mut |p| {
            bar.set_position(p.slices_done as u64);
            bar.set_message(format!("step {}/{}", p.step, p.steps));
        },
    )
    .context("sampling")?;
    bar.finish_and_clear();
    let channels = images.dim(1)?;
    let mut px = vec![0.0f32; n * channels * s * s];
    px[range.start * channels * s * s..range.end * channels * s * s]
        .copy_from_slice(&images.flatten_all()?.to_vec1::<f32>()?);
    let unit = Volume {
        data: slices.geometry.place(&px, channels, 0.0)?,
        affine: slices.geometry.affine,
    };
    Ok(GeneratedVolume {
        slices01: px,
        channels,
        unit,
    })
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Axial, coronal and sagittal planes through the centre (radiological display), one row each:
/// the images (in [0, 1], on the labels' grid), then the labels in their class colours. Tiles are
/// centred on squares of one size (voxels shown square) and enlarged to at least 128 pixels.
pub(crate) fn three_planes(
    images01: &[&Volume<f32>],
    labels: &Volume<u8>,
    colors: &[[u8; 3]],
) -> image::RgbImage {
    let imgs: Option<Vec<Volume<f32>>> = images01
        .iter()
        .map(|v| reorient_to_ras((*v).clone()))
        .collect();
    let (Some(imgs), Some(lab)) = (imgs, reorient_to_ras(labels.clone())) else {
        return image::RgbImage::new(1, 1);
    };
    let shape = lab.shape();
    let mut tiles = Vec::new();
    for axis in SliceAxis::ALL {
        let k = axis.count(shape) / 2;
        let Some((w, h, m)) = axis.extract(lab.data.view(), k) else {
            continue;
        };
        for img in &imgs {
            let g = axis
                .extract(img.data.view(), k)
                .map_or_else(|| vec![0.0; w * h], |(_, _, g)| g);
            tiles.push(picture::overlay(&g, &vec![0u8; w * h], h, w, colors, 0.0));
        }
        tiles.push(picture::mask_to_rgb(&m, h, w, colors));
    }
    let side = tiles
        .iter()
        .map(|t| t.width().max(t.height()))
        .max()
        .unwrap_or(1);
    let zoom = (128 / side).max(1);
    let squared: Vec<image::RgbImage> = tiles
        .iter()
        .map(|t| {
            let mut sq = image::RgbImage::from_pixel(side, side, image::Rgb([0, 0, 0]));
            let (ox, oy) = ((side - t.width()) / 2, (side - t.height()) / 2);
            image::imageops::replace(&mut sq, t, i64::from(ox), i64::from(oy));
            image::imageops::resize(
                &sq,
                side * zoom,
                side * zoom,
                image::imageops::FilterType::Nearest,
            )
        })
        .collect();
    picture::grid(&squared, images01.len() + 1)
}
