//! `segdiff demo`: the tour of segmentation-guided diffusion on the bundled MNI brain model —
//! generation from held-out masks, ablated-class and empty-mask generation, latent interpolation
//! toward a real slice, segmentation of the results and a Dice table, and a whole brain volume
//! generated from the MNI tissue label volume by the neighbour-conditioned model (and slice by
//! slice, independently, for comparison), as an HTML report.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use segdiff_data::resize::fit_square;
use segdiff_data::volume::affine_max_abs_diff;
use segdiff_data::{
    read_label_volume, read_nifti, read_nifti_header, reorient_to_ras, resize_bilinear,
    slice_label_volume, write_nifti_like, Dataset, DatasetOptions, Fit, NiftiVoxels, SliceAxis,
    Split, Volume,
};
use segdiff_diffusion::sampler::{
    sample, LatentInterpolation, MixPoint, SampleInput, SampleOptions,
};
use segdiff_diffusion::{load_model_dir, SamplerKind, SegdiffModel, VolumeSampleOptions};
use segdiff_eval::{
    dice, load_segmenter, predict, through_plane_change, DiceConfig, LabelMaps, MonaiUNet,
    SliceStack,
};

use crate::runtime::Runtime;
use crate::sample_volume_cmd::{generate_volume, model_class_mapping, three_planes};
use segdiff_io::picture;

/// Run the demo on the bundled model: writes `demo/report.html` and PNG sheets.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// The segmentation-guided model (a folder or `hf://owner/name`).
    #[arg(long, default_value = "assets/mni-demo/model")]
    pub model: PathBuf,
    /// The segmenter used to check the generated anatomy (a folder or `hf://owner/name`).
    #[arg(long, default_value = "assets/mni-demo/segmenter")]
    pub segmenter: PathBuf,
    /// The multi-headed VAE of the demo's last section (`segdiff mhvae train --out`).
    #[arg(long, default_value = "assets/mni-demo/mhvae")]
    pub mhvae: PathBuf,
    /// The MHVAE's diffusion refiner (`segdiff mhvae train-refiner --out`); the section skips
    /// the refined pictures when this folder does not exist.
    #[arg(long, default_value = "assets/mni-demo/mhvae-refiner")]
    pub mhvae_refiner: PathBuf,
    /// Held-out slices (dataset layout; the `test` split is used).
    #[arg(long, default_value = "assets/mni-demo/data")]
    pub data: PathBuf,
    /// Output folder.
    #[arg(long, default_value = "demo")]
    pub out: PathBuf,
    /// Held-out masks to generate from.
    #[arg(long, default_value_t = 6)]
    pub count: usize,
    /// Sampler. The default, Euler ancestral, is the sampler sweep's best mask faithfulness per
    /// network call on the bundled model (`segdiff sweep-samplers`; README). The latent
    /// interpolation strip always uses a deterministic sampler (this one when it is
    /// deterministic, else dpm++): fresh noise at every step would wash out the real image
    /// mixed in half-way.
    #[arg(long, default_value = "euler-a", value_parser = crate::flag_values::flag::<SamplerKind>())]
    pub scheduler: SamplerKind,
    /// Inference steps.
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The neighbour-conditioned model of the whole-volume section.
    #[arg(long, default_value = "assets/mni-demo/volume-model")]
    pub volume_model: PathBuf,
    /// The label volume generated from (class ids; NIfTI).
    #[arg(long, default_value = "assets/mni-demo/data/labels_2mm.nii.gz")]
    pub volume_labels: PathBuf,
    /// The real image on the label volume's grid (8-bit grey levels as `prepare` makes them),
    /// the reference of the through-plane consistency figure.
    #[arg(long, default_value = "assets/mni-demo/data/t1_2mm.nii.gz")]
    pub volume_real: PathBuf,
    /// Anchor slices of the neighbour-conditioned volume.
    #[arg(long, default_value_t = VOLUME_ANCHORS)]
    pub volume_anchors: usize,
    /// Inference steps per slice of the whole-volume section (same sampler as --scheduler).
    #[arg(long, default_value_t = VOLUME_STEPS)]
    pub volume_steps: usize,
}

/// Defaults of the whole-volume section, chosen so that the whole demo stays under two minutes
/// on 2 CPU cores.
const VOLUME_ANCHORS: usize = 1;
const VOLUME_STEPS: usize = 10;

/// A bundled path: as given when it exists, else relative to the source checkout.
fn resolve(p: &Path) -> PathBuf {
    if p.exists() || p.is_absolute() {
        return p.to_path_buf();
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(p);
    if repo.exists() {
        repo
    } else {
        p.to_path_buf()
    }
}

struct Held {
    names: Vec<String>,
    masks: Vec<Vec<u8>>,
    /// Real images in [-1, 1], (N, 1, H, W).
    real: Tensor,
    size: usize,
}

fn load_held_out(dir: &Path, count: usize, num_classes: usize) -> Result<Held> {
    let ds = Dataset::open(
        dir,
        Split::Test,
        &DatasetOptions {
            num_classes: Some(num_classes),
            ..DatasetOptions::default()
        },
    )
    .with_context(|| format!("opening the held-out slices in {}", dir.display()))?;
    if ds.is_empty() {
        bail!("{}: no held-out slices", dir.display());
    }
    // Spread the picks over the split (it is sorted by axis, then slice).
    let n = count.clamp(1, ds.len());
    let picks: Vec<usize> = (0..n)
        .map(|i| i * ds.len() / n + ds.len() / (2 * n))
        .collect();
    let mut names = Vec::new();
    let mut masks = Vec::new();
    let mut real = Vec::new();
    let mut size = 0;
    for i in picks {
        let s = ds.load(i)?;
        size = s.height;
        names.push(s.name.clone());
        masks.push(s.mask.with_context(|| format!("{}: no mask", s.name))?);
        real.extend(s.image);
    }
    let real = Tensor::from_vec(real, (names.len(), 1, size, size), &Device::Cpu)?;
    Ok(Held {
        names,
        masks,
        real,
        size,
    })
}

fn px(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.to_device(&Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?)
}

/// The sampler of the latent-interpolation strip: `chosen` when its steps add no fresh noise,
/// else DPM-Solver++ (with the ancestral samplers the mixed-in real image fades: on the bundled
/// model the mean change from the λ = 0 image grows only 4.6 → 14.8 grey levels along the strip
/// with euler-a, against 12.8 → 21.7 with dpm++).
fn interpolation_sampler(chosen: SamplerKind) -> SamplerKind {
    if chosen.is_stochastic(0.0) {
        SamplerKind::DpmSolverPlusPlus
    } else {
        chosen
    }
}

pub fn run(args: DemoArgs, rt: &Runtime) -> Result<()> {
    let started = Instant::now();
    let model_dir = resolve(&args.model);
    let seg_dir = resolve(&args.segmenter);
    let data_dir = resolve(&args.data);
    let model = load_model_dir(&model_dir, rt.sampling_dtype(), &rt.device)
        .with_context(|| format!("loading the bundled model {}", model_dir.display()))?;
    let num_classes = model
        .meta
        .num_classes
        .context("the demo model records no class count")?;
    let (segmenter, _) = load_segmenter(&seg_dir, &Device::Cpu)
        .with_context(|| format!("loading the bundled segmenter {}", seg_dir.display()))?;
    let held = load_held_out(&data_dir, args.count, num_classes)?;
    let s = held.size;
    let base = SampleOptions {
        scheduler: args.scheduler,
        steps: Some(args.steps),
        seed: args.seed,
        batch_size: 8,
        ..SampleOptions::default()
    };
    let n = held.names.len();
    let n_small = n.min(3);
    let lambdas = [0.0, 0.25, 0.5, 0.75, 1.0];
    let total_images = n + 2 * n_small + n_small + lambdas.len();
    let bar = crate::progress::bar((total_images * args.steps) as u64, "demo");
    let mut done_before = 0usize;
    let mut run_sampler =
        |input: SampleInput, opts: &SampleOptions, what: &str| -> Result<Tensor> {
            bar.set_message(what.to_string());
            let out = sample(&model, input, opts, &mut |p| {
                bar.set_position(
                    ((done_before + p.images_done.saturating_sub(1)) * args.steps + p.step) as u64,
                );
            })
            .with_context(|| format!("sampling ({what})"))?;
            done_before += out.image_indices.len();
            Ok(out.images01)
        };
    let mask_tensor = |masks: &[Vec<u8>]| -> Result<Tensor> {
        let flat: Vec<u8> = masks.iter().flatten().copied().collect();
        Ok(Tensor::from_vec(flat, (masks.len(), s, s), &Device::Cpu)?)
    };
    let all_masks = mask_tensor(&held.masks)?;
    let generated = run_sampler(SampleInput::Masks(&all_masks), &base, "from held-out masks")?;
    let first_masks = mask_tensor(&held.masks[..n_small])?;
    let keep_wm = run_sampler(
        SampleInput::Masks(&first_masks),
        &SampleOptions {
            keep_classes: Some(vec![3]),
            ..base.clone()
        },
        "white matter only",
    )?;
    let keep_gm = run_sampler(
        SampleInput::Masks(&first_masks),
        &SampleOptions {
            keep_classes: Some(vec![2]),
            ..base.clone()
        },
        "grey matter only",
    )?;
    let empty = run_sampler(
        SampleInput::Masks(&first_masks),
        &SampleOptions {
            empty_mask: true,
            seed: args.seed + 1,
            ..base.clone()
        },
        "empty masks",
    )?;
    // Interpolate toward the held-out slice with the most brain in it.
    let interp_idx = (0..n)
        .max_by_key(|&i| held.masks[i].iter().filter(|&&v| v > 0).count())
        .unwrap_or(0);
    let one_mask = mask_tensor(&held.masks[interp_idx..interp_idx + 1])?;
    let interp_sampler = interpolation_sampler(args.scheduler);
    let mut interp = Vec::new();
    for &lambda in &lambdas {
        interp.push(run_sampler(
            SampleInput::Masks(&one_mask),
            &SampleOptions {
                keep_classes: Some(vec![3]),
                seed: args.seed + 2,
                interpolation: Some(LatentInterpolation {
                    real_images: held.real.narrow(0, interp_idx, 1)?,
                    lambda,
                    at: MixPoint::Fraction(0.5),
                }),
                scheduler: interp_sampler,
                ..base.clone()
            },
            "latent interpolation",
        )?);
    }
    bar.finish_and_clear();

    // Segment what was generated and the real slices with the bundled segmenter.
    let to_input = |images01: &Tensor| -> Result<Tensor> {
        Ok(((images01.to_device(&Device::Cpu)? * 2.0)? - 1.0)?)
    };
    let seg_gen = segment(&segmenter, &to_input(&generated)?)?;
    let seg_real = segment(&segmenter, &held.real)?;
    let target = LabelMaps::new(
        held.masks.iter().flatten().map(|&v| v as u32).collect(),
        n,
        s,
        s,
    )?;
    let cfg = DiceConfig::new(num_classes);
    let d_gen = dice(&seg_gen, &target, &cfg)?;
    let d_real = dice(&seg_real, &target, &cfg)?;

    let out = &args.out;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let colors = picture::class_colors(num_classes, model.meta.class_colors.as_deref());
    let real01: Vec<f32> = px(&held.real)?.iter().map(|v| v * 0.5 + 0.5).collect();
    let gen01 = px(&generated)?;
    let plane = s * s;
    let seg_gen_u8: Vec<u8> = seg_gen.as_slice().iter().map(|&v| v as u8).collect();
    let mut rows = Vec::new();
    for i in 0..n {
        let m = &held.masks[i];
        rows.push(picture::mask_to_rgb(m, s, s, &colors));
        rows.push(picture::overlay(
            &real01[i * plane..(i + 1) * plane],
            m,
            s,
            s,
            &colors,
            0.35,
        ));
        rows.push(picture::overlay(
            &real01[i * plane..(i + 1) * plane],
            &vec![0; plane],
            s,
            s,
            &colors,
            0.0,
        ));
        rows.push(picture::overlay(
            &gen01[i * plane..(i + 1) * plane],
            &vec![0; plane],
            s,
            s,
            &colors,
            0.0,
        ));
        rows.push(picture::mask_to_rgb(
            &seg_gen_u8[i * plane..(i + 1) * plane],
            s,
            s,
            &colors,
        ));
    }
    picture::save_png(
        &out.join("generated.png"),
        &upscale(&picture::grid(&rows, 5)),
    )?;
    let mut abl = Vec::new();
    let (wm, gm, em) = (px(&keep_wm)?, px(&keep_gm)?, px(&empty)?);
    for i in 0..n_small {
        let m = &held.masks[i];
        let only = |k: u8| -> Vec<u8> { m.iter().map(|&v| if v == k { v } else { 0 }).collect() };
        let blank = vec![0u8; plane];
        abl.push(picture::mask_to_rgb(&only(3), s, s, &colors));
        abl.push(picture::overlay(
            &wm[i * plane..(i + 1) * plane],
            &blank,
            s,
            s,
            &colors,
            0.0,
        ));
        abl.push(picture::mask_to_rgb(&only(2), s, s, &colors));
        abl.push(picture::overlay(
            &gm[i * plane..(i + 1) * plane],
            &blank,
            s,
            s,
            &colors,
            0.0,
        ));
        abl.push(picture::mask_to_rgb(&blank, s, s, &colors));
        abl.push(picture::overlay(
            &em[i * plane..(i + 1) * plane],
            &blank,
            s,
            s,
            &colors,
            0.0,
        ));
    }
    picture::save_png(&out.join("ablated.png"), &upscale(&picture::grid(&abl, 6)))?;
    let mut strip = vec![picture::overlay(
        &real01[interp_idx * plane..(interp_idx + 1) * plane],
        &vec![0; plane],
        s,
        s,
        &colors,
        0.0,
    )];
    for t in &interp {
        strip.push(picture::overlay(
            &px(t)?,
            &vec![0; plane],
            s,
            s,
            &colors,
            0.0,
        ));
    }
    picture::save_png(
        &out.join("interpolation.png"),
        &upscale(&picture::grid(&strip, strip.len())),
    )?;

    let volume = whole_volumes(&args, rt, out)?;
    println!(
        "whole volume: {} of {} axial slices of {} generated ({} {} steps, {}): through-plane \
         change inside the brain, grey levels — conditioned {:.2}, independent {:.2}, real T1 \
         {:.2}; conditioned / independent {:.2}",
        volume.generated,
        volume.slices,
        volume.labels.display(),
        crate::flag_values::flag_name(&args.scheduler),
        args.volume_steps,
        volume.anchors_text(),
        volume.change_conditioned,
        volume.change_independent,
        volume.change_real,
        volume.change_conditioned / volume.change_independent
    );
    println!(
        "whole volume pictures: {} (conditioned volume: {})",
        out.join("volume.png").display(),
        out.join("volume_conditioned.nii.gz").display()
    );

    let mhvae_dir = resolve(&args.mhvae);
    let refiner_dir = resolve(&args.mhvae_refiner);
    let mhvae = crate::demo_mhvae::run(
        &mhvae_dir,
        refiner_dir.is_dir().then_some(refiner_dir.as_path()),
        &resolve(&args.data),
        rt,
        out,
    )
    .context("the MHVAE section")?;
    println!(
        "multi-headed VAE: brain masks on {} held-out slices, mean Dice {:.3} (lowest {:.3}); \
         rotation edit of {}°: re-segmented objects turned by {:.1}° on average; pictures {}, {}, {}",
        mhvae.images,
        mhvae.dice_mean,
        mhvae.dice_min,
        crate::demo_mhvae::ROTATION,
        mhvae.turn_mean,
        out.join("mhvae_segment.png").display(),
        out.join("mhvae_swap.png").display(),
        out.join("mhvae_edit.png").display()
    );
    if let Some(r) = &mhvae.refined {
        println!(
            "refiner: high-frequency energy real {:.5}, VAE {:.5}, refined {:.5} ({} network calls); re-segmented Dice refined {:.3}, VAE {:.3}; picture {}",
            r.hf_real,
            r.hf_vae,
            r.hf_refined,
            r.calls,
            r.dice_refined,
            r.dice_vae,
            out.join("mhvae_refined.png").display()
        );
    }

    let mut html = report_html(
        &model,
        &held,
        &d_gen,
        &d_real,
        &lambdas,
        &args,
        started.elapsed().as_secs_f64(),
    )?;
    volume_html(&mut html, &volume, &args)?;
    crate::demo_mhvae::html(&mut html, &mhvae)?;
    report_footer(&mut html, &args)?;
    let report = out.join("report.html");
    segdiff_io::write_atomic(&report, |tmp| std::fs::write(tmp, html.as_bytes()))
        .with_context(|| format!("writing {}", report.display()))?;
    println!(
        "demo report: {} (mean Dice of generated images vs their masks {:.3}; {:.0} s)",
        report.display(),
        d_gen.mean(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// What section 4 (whole volumes) reports.
struct VolumeSection {
    model_dir: PathBuf,
    labels: PathBuf,
    shape: [usize; 3],
    spacing: [f64; 3],
    /// The model's slice size.
    size: usize,
    /// Axial slices of the label volume, and those in its labelled range (generated).
    slices: usize,
    generated: usize,
    anchors: usize,
    /// Mean |slice k+1 − slice k| inside the brain, in grey levels (×255).
    change_conditioned: f64,
    change_independent: f64,
    change_real: f64,
    seconds_conditioned: f64,
    seconds_independent: f64,
}

impl VolumeSection {
    fn anchors_text(&self) -> String {
        match self.anchors {
            1 => "neighbour-conditioned from 1 anchor slice, where the masks agree".into(),
            a => format!("neighbour-conditioned from {a} anchor slices, where the masks agree"),
        }
    }
}

/// Section 4: the axial stack of the label volume generated twice with the same seed —
/// neighbour-conditioned and independently — as `segdiff sample-volume` does (slices outside the
/// labelled range stay blank), the three planes through the centre beside the real T1 and the
/// labels, the conditioned volume as NIfTI, and the through-plane change of both and of the
/// real T1 sliced the same way.
fn whole_volumes(args: &DemoArgs, rt: &Runtime, out: &Path) -> Result<VolumeSection> {
    let model_dir = resolve(&args.volume_model);
    let labels_path = resolve(&args.volume_labels);
    let real_path = resolve(&args.volume_real);
    let model = load_model_dir(&model_dir, rt.sampling_dtype(), &rt.device)
        .with_context(|| format!("loading the bundled volume model {}", model_dir.display()))?;
    if model.meta.neighbours.is_none() {
        bail!(
            "{}: not a neighbour-conditioned model (segdiff.json has no neighbour scheme)",
            model_dir.display()
        );
    }
    let size = model
        .unet
        .config
        .sample_size
        .context("the volume model's config has no sample_size")?;
    let mapping = model_class_mapping(&model, false)?;
    let labels = read_label_volume(&labels_path, &mapping, None)
        .with_context(|| format!("reading the label volume {}", labels_path.display()))?;
    let slices = slice_label_volume(&labels.classes, SliceAxis::Axial, Fit::Pad, size)?;
    let range = slices
        .foreground_range()
        .with_context(|| format!("{}: no labelled voxel", labels_path.display()))?;
    let conditioned = VolumeSampleOptions {
        sample: SampleOptions {
            scheduler: args.scheduler,
            steps: Some(args.volume_steps),
            seed: args.seed,
            batch_size: 8,
            ..SampleOptions::default()
        },
        independent: false,
        anchors: args.volume_anchors,
        ..VolumeSampleOptions::default()
    };
    let independent = VolumeSampleOptions {
        independent: true,
        ..conditioned.clone()
    };
    let t = Instant::now();
    let cond = generate_volume(&model, rt, &slices, range.clone(), &conditioned, "volume")?;
    let seconds_conditioned = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let indep = generate_volume(&model, rt, &slices, range.clone(), &independent, "volume")?;
    let seconds_independent = t.elapsed().as_secs_f64();

    let real = read_nifti(&real_path, 0)
        .with_context(|| format!("reading the real volume {}", real_path.display()))?
        .volume;
    if real.shape() != labels.classes.shape()
        || affine_max_abs_diff(&real.affine, &labels.classes.affine) > 1e-3
    {
        bail!(
            "{}: not on the grid of {} (shape {:?} vs {:?})",
            real_path.display(),
            labels_path.display(),
            real.shape(),
            labels.classes.shape()
        );
    }
    let real01 = Volume {
        data: real.data.mapv(|v| (v / 255.0).clamp(0.0, 1.0)),
        affine: real.affine,
    };
    let real_slices = grey_slices(&real, SliceAxis::Axial, Fit::Pad, size)?;

    // Through-plane change over the labelled range only (the blank slices outside it are not
    // generated), inside the brain of either slice.
    let plane = size * size;
    let span = range.start * plane..range.end * plane;
    let body: Vec<bool> = slices.masks[span.clone()].iter().map(|&v| v > 0).collect();
    let change = |values: &[f32], what: &str| -> Result<f64> {
        through_plane_change(&SliceStack {
            values,
            body: &body,
            slices: range.len(),
            height: size,
            width: size,
        })?
        .map(|v| v * 255.0)
        .with_context(|| format!("{what}: no adjacent slices inside the brain"))
    };
    for g in [&cond, &indep] {
        if g.channels != 1 {
            bail!(
                "the volume model makes {} channels, not grey images",
                g.channels
            );
        }
    }
    let change_conditioned = change(&cond.slices01[span.clone()], "conditioned")?;
    let change_independent = change(&indep.slices01[span.clone()], "independent")?;
    let change_real = change(&real_slices[span], "real")?;

    let colors = picture::class_colors(
        model.meta.num_classes.unwrap_or(mapping.num_classes()),
        model.meta.class_colors.as_deref(),
    );
    picture::save_png(
        &out.join("volume.png"),
        &three_planes(
            &[&real01, &cond.unit, &indep.unit],
            &labels.classes,
            &colors,
        ),
    )?;
    let nifti = out.join("volume_conditioned.nii.gz");
    write_nifti_like(
        &nifti,
        &read_nifti_header(&labels_path)?,
        &NiftiVoxels::F32(cond.unit.data.clone()),
        "segdiff demo: synthetic T1 in [0,1], neighbour-conditioned",
    )
    .with_context(|| format!("writing {}", nifti.display()))?;
    Ok(VolumeSection {
        model_dir,
        labels: args.volume_labels.clone(),
        shape: labels.classes.shape(),
        spacing: labels.classes.spacing(),
        size,
        slices: slices.count,
        generated: range.len(),
        anchors: args.volume_anchors,
        change_conditioned,
        change_independent,
        change_real,
        seconds_conditioned,
        seconds_independent,
    })
}

/// `volume` (8-bit grey levels) cut into `size × size` slices along `axis` in [0, 1], with
/// `prepare`'s image transform (closest RAS+, radiological slices, square fit padded with 0,
/// Pillow-exact bilinear resize), slice-major.
fn grey_slices(volume: &Volume<f32>, axis: SliceAxis, fit: Fit, size: usize) -> Result<Vec<f32>> {
    let ras = reorient_to_ras(volume.clone()).context("degenerate voxel-to-world affine")?;
    let count = axis.count(ras.shape());
    let mut out = Vec::with_capacity(count * size * size);
    for k in 0..count {
        let (w, h, px) = axis
            .extract(ras.data.view(), k)
            .context("slice outside the volume")?;
        let grey: Vec<u8> = px
            .iter()
            .map(|&v| v.round().clamp(0.0, 255.0) as u8)
            .collect();
        let img = image::GrayImage::from_raw(w as u32, h as u32, grey)
            .context("slice of the wrong size")?;
        let sized = resize_bilinear(&fit_square(&img, fit, 0), size as u32, size as u32);
        out.extend(sized.as_raw().iter().map(|&v| f32::from(v) / 255.0));
    }
    Ok(out)
}

fn segment(model: &MonaiUNet, images: &Tensor) -> Result<LabelMaps> {
    Ok(predict(
        model,
        &images.to_dtype(DType::F32)?.to_device(&Device::Cpu)?,
        8,
    )?)
}

fn fmt2(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.2}")
    } else {
        "–".into()
    }
}

/// Nearest-neighbour ×3 so 64-pixel slices are visible in a browser.
fn upscale(img: &image::RgbImage) -> image::RgbImage {
    image::imageops::resize(
        img,
        img.width() * 3,
        img.height() * 3,
        image::imageops::FilterType::Nearest,
    )
}

fn report_html(
    model: &SegdiffModel,
    held: &Held,
    d_gen: &segdiff_eval::ClassScores,
    d_real: &segdiff_eval::ClassScores,
    lambdas: &[f64],
    args: &DemoArgs,
    seconds: f64,
) -> Result<String> {
    let names = &model.meta.class_names;
    let class_name = |k: u32| {
        names
            .get(k as usize)
            .cloned()
            .unwrap_or_else(|| format!("class {k}"))
    };
    let mut h = String::new();
    let fmt = |v: f64| {
        if v.is_finite() {
            format!("{v:.3}")
        } else {
            "–".into()
        }
    };
    writeln!(
        h,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>segdiff demo</title>"
    )?;
    writeln!(h, "<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}}img{{max-width:100%;image-rendering:pixelated}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 10px;text-align:right}}caption{{text-align:left;font-weight:bold}}</style></head><body>")?;
    writeln!(h, "<h1>Segmentation-guided diffusion: demo</h1>")?;
    writeln!(
        h,
        "<p>Model <code>{}</code> ({} classes: {}), {} sampler with {} steps, seed {}; {} held-out MNI ICBM152 slices from <code>{}</code>. Ran in {:.0} s.</p>",
        model.dir.display(),
        model.meta.num_classes.unwrap_or(0),
        names.join(", "),
        crate::flag_values::flag_name(&args.scheduler),
        args.steps,
        args.seed,
        held.names.len(),
        args.data.display(),
        seconds
    )?;
    writeln!(h, "<h2>1. Generation from held-out masks</h2><p>Columns: mask | real slice with mask overlay | real slice | generated | segmentation of the generated image by the bundled segmenter.</p><img src=\"generated.png\">")?;
    writeln!(h, "<table><caption>Dice with the input mask (segmenter on the image; background excluded, empty classes ignored)</caption><tr><th>image</th>")?;
    for &k in d_gen.class_ids() {
        writeln!(h, "<th>{}</th>", class_name(k))?;
    }
    writeln!(h, "<th>mean</th></tr>")?;
    for (label, scores) in [("generated", d_gen), ("real (reference)", d_real)] {
        writeln!(h, "<tr><td style=\"text-align:left\">{label}</td>")?;
        for v in scores.mean_per_class() {
            writeln!(h, "<td>{}</td>", fmt(v))?;
        }
        writeln!(h, "<td><b>{}</b></td></tr>", fmt(scores.mean()))?;
    }
    writeln!(h, "</table><p>Per image:</p><table><tr><th>mask</th><th>generated mean Dice</th><th>real mean Dice</th></tr>")?;
    for (i, name) in held.names.iter().enumerate() {
        let row_mean = |sc: &segdiff_eval::ClassScores| {
            let r: Vec<f64> = sc
                .row(i)
                .iter()
                .copied()
                .filter(|v| v.is_finite())
                .collect();
            if r.is_empty() {
                f64::NAN
            } else {
                r.iter().sum::<f64>() / r.len() as f64
            }
        };
        writeln!(
            h,
            "<tr><td style=\"text-align:left\">{name}</td><td>{}</td><td>{}</td></tr>",
            fmt(row_mean(d_gen)),
            fmt(row_mean(d_real))
        )?;
    }
    writeln!(h, "</table>")?;
    writeln!(h, "<h2>2. Ablated masks and empty masks</h2><p>The model was trained with mask ablation, so classes left out of the mask are filled in by the model. Columns, in pairs: white matter only → generated | grey matter only → generated | empty mask → generated.</p><img src=\"ablated.png\">")?;
    writeln!(h, "<h2>3. Adjustable anatomical similarity (latent interpolation)</h2><p>Conditioned on the white matter of the real slice's mask only, the real slice (left) is noised to the step half-way through the schedule and mixed with the generated latent, x̃ = (1−λ)·x_gen + λ·x_real, then denoised on with {} (deterministic, so the mixed-in image is not washed out by fresh noise): λ = {} from left to right. Larger λ keeps more of the real anatomy.</p><img src=\"interpolation.png\">", crate::flag_values::flag_name(&interpolation_sampler(args.scheduler)), lambdas.iter().map(|l| l.to_string()).collect::<Vec<_>>().join(", "))?;
    Ok(h)
}

/// Section 4 of the report: the whole volumes.
fn volume_html(h: &mut String, v: &VolumeSection, args: &DemoArgs) -> Result<()> {
    writeln!(h, "<h2>4. Whole volumes</h2><p>A whole brain volume generated from the MNI tissue label volume <code>{}</code> ({}×{}×{} voxels of {:.0}×{:.0}×{:.0} mm) by the neighbour-conditioned model <code>{}</code>, axial slice by axial slice as <code>segdiff sample-volume</code> does: the {} axial slices holding labels are generated ({} {} steps, seed {}), the {} others stay blank; the slices are put back on the label grid. <b>Conditioned</b>: {}, each further slice conditioned on its generated neighbour toward the anchor at the pixels where the two slices' masks agree, its own mask alone drawing the rest (the default <code>--neighbour-gate agreeing</code>; {:.0} s). <b>Independent</b>: every slice alone, same seed ({:.0} s). Columns: real T1 | conditioned | independent | labels; rows: the axial, coronal and sagittal planes through the centre (radiological display). Slice-to-slice flicker shows in the coronal and sagittal planes.</p><img src=\"volume.png\">",
        v.labels.display(), v.shape[0], v.shape[1], v.shape[2], v.spacing[0], v.spacing[1], v.spacing[2],
        v.model_dir.display(), v.generated, crate::flag_values::flag_name(&args.scheduler), args.volume_steps, args.seed,
        v.slices - v.generated, v.anchors_text(), v.seconds_conditioned, v.seconds_independent)?;
    writeln!(h, "<table><caption>Through-plane change: mean |slice k+1 − slice k| over the pixels that are brain in either slice, in grey levels (0–255), over the generated {}² axial slices</caption><tr><th>volume</th><th>change</th></tr>", v.size)?;
    for (label, c) in [
        ("conditioned", v.change_conditioned),
        ("independent", v.change_independent),
        ("real T1 (same slicing)", v.change_real),
    ] {
        writeln!(
            h,
            "<tr><td style=\"text-align:left\">{label}</td><td>{}</td></tr>",
            fmt2(c)
        )?;
    }
    writeln!(h, "<tr><td style=\"text-align:left\">conditioned / independent</td><td><b>{}</b></td></tr></table><p>The conditioned volume, on the label grid: <code>volume_conditioned.nii.gz</code> (values in [0, 1]; open it in any NIfTI viewer over the labels).</p>", fmt2(v.change_conditioned / v.change_independent))?;
    Ok(())
}

fn report_footer(h: &mut String, args: &DemoArgs) -> Result<()> {
    writeln!(h, "<p>Reproduce: <code>segdiff demo --seed {} --steps {} --scheduler {} --volume-steps {} --volume-anchors {}</code>. Data: MNI ICBM152 2009a template (see <code>assets/mni-demo/data/MNI_ICBM152_NOTICE.txt</code>).</p></body></html>", args.seed, args.steps, crate::flag_values::flag_name(&args.scheduler), args.volume_steps, args.volume_anchors)?;
    Ok(())
}
