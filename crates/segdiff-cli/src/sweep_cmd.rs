//! `segdiff sweep-samplers`: which sampler, and how many steps, for a model. Reads the masks
//! (and real images), runs segdiff-eval's sampler sweep with a progress bar and writes its
//! report.

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use candle_core::{Device, Tensor};
use segdiff_diffusion::{load_model_dir, SamplerKind};
use segdiff_eval::sampler_sweep::{run_sweep, sweep_grid, sweep_work, SweepInputs, SweepOptions};
use segdiff_eval::{load_segmenter, LabelMaps};

use crate::png_io::{png_files, read_image, read_masks_of_one_size};
use crate::runtime::Runtime;

/// Compare samplers and step counts on a model: every sampler × `--steps` generates one image
/// per mask from the same seed; each point gets its network calls and seconds per image, the mean
/// Dice of the segmenter's output against the input masks and, with `--real`, FID on the
/// segmenter's bottleneck features. Writes `sweep.md` (table sorted by calls, Pareto-best points
/// in (calls ↓, Dice ↑) marked ★), `sweep.json` and `sweep.png` (Dice against calls, log x axis).
///
/// DDPM is left out unless `--with-ddpm` is given: it runs at its 1000 steps only, which costs
/// 1000 network calls per image.
#[derive(Debug, clap::Args)]
pub struct SweepArgs {
    /// Model directory (diffusers layout), or `hf://owner/name[@revision][/folder]`.
    #[arg(long)]
    pub model: PathBuf,
    /// Folder of mask PNGs (class ids), or one mask; the first `--count` by file name are used.
    #[arg(long)]
    pub masks: PathBuf,
    /// Segmenter that scores the generated images (a folder or `hf://owner/name`; default: the
    /// bundled one when `--model` is the bundled demo model, assets/mni-demo/model).
    #[arg(long)]
    pub segmenter: Option<PathBuf>,
    /// Use only the first N masks (sorted by file name; default: all).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// Output folder.
    #[arg(long, default_value = "sweep")]
    pub out: PathBuf,
    /// Step counts to try with every sampler but DDPM.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "10,20,50",
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub steps: Vec<u64>,
    /// Samplers to compare (default: all but DDPM, which needs --with-ddpm).
    #[arg(long, value_delimiter = ',', value_parser = crate::flag_values::flag::<SamplerKind>())]
    pub samplers: Option<Vec<SamplerKind>>,
    /// Add DDPM at its 1000 steps (1000 network calls per image: the slow reference point).
    #[arg(long)]
    pub with_ddpm: bool,
    /// Real images (a folder of PNGs) for FID against the generated ones; without it no FID is
    /// computed.
    #[arg(long)]
    pub real: Option<PathBuf>,
    /// Seed: every point starts from the same noise.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Images per denoiser call.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch_size: u64,
    /// Print the report as JSON on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// The bundled demo model and its segmenter, as paths that exist from the current folder or from
/// the source checkout.
fn bundled(which: &str) -> PathBuf {
    let local = Path::new("assets/mni-demo").join(which);
    if local.exists() {
        return local;
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../assets/mni-demo")
        .join(which)
}

/// `--segmenter`, or the bundled one for the bundled model.
fn segmenter_dir(args: &SweepArgs) -> Result<PathBuf> {
    if let Some(s) = &args.segmenter {
        return Ok(s.clone());
    }
    let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same(&args.model, &bundled("model")) {
        return Ok(bundled("segmenter"));
    }
    bail!(
        "pass --segmenter DIR: {} is not the bundled demo model, whose segmenter is the default",
        args.model.display()
    )
}

/// The first `count` masks of `dir` by name, as one set of label maps of one size.
fn read_masks(dir: &Path, count: Option<usize>) -> Result<LabelMaps> {
    let mut files =
        png_files(dir).with_context(|| format!("reading the masks {}", dir.display()))?;
    files.truncate(count.unwrap_or(usize::MAX));
    let (masks, h, w) = read_masks_of_one_size(&files)?;
    let labels: Vec<u32> = masks.into_iter().flat_map(|m| m.ids).collect();
    Ok(LabelMaps::new(labels, files.len(), h, w)?)
}

/// Every PNG of `dir` in [-1, 1], (N, C, H, W), each checked to be `h`×`w`.
fn read_real(dir: &Path, channels: usize, h: usize, w: usize) -> Result<Tensor> {
    let files =
        png_files(dir).with_context(|| format!("reading the real images {}", dir.display()))?;
    let mut values = Vec::with_capacity(files.len() * channels * h * w);
    for f in &files {
        let (v, fh, fw) = read_image(f, channels)?;
        ensure!(
            (fh, fw) == (h, w),
            "{}: {fh}×{fw}, but the masks are {h}×{w}",
            f.display()
        );
        values.extend(v);
    }
    Ok(Tensor::from_vec(
        values,
        (files.len(), channels, h, w),
        &Device::Cpu,
    )?)
}

pub fn run(args: SweepArgs, rt: &Runtime) -> Result<()> {
    let samplers = match &args.samplers {
        Some(list) => {
            if list.contains(&SamplerKind::Ddpm) && !args.with_ddpm {
                clap::Error::raw(
                    clap::error::ErrorKind::ValueValidation,
                    "--samplers ddpm: DDPM runs only at its 1000 steps; add --with-ddpm\n",
                )
                .exit();
            }
            list.clone()
        }
        None => SamplerKind::ALL
            .into_iter()
            .filter(|&k| k != SamplerKind::Ddpm)
            .collect(),
    };
    let mut samplers = samplers;
    if args.with_ddpm && !samplers.contains(&SamplerKind::Ddpm) {
        samplers.push(SamplerKind::Ddpm);
    }
    let steps: Vec<usize> = args.steps.iter().map(|&s| s as usize).collect();
    let points = sweep_grid(&samplers, &steps)?;

    let dtype = rt.sampling_dtype();
    let model = load_model_dir(&args.model, dtype, &rt.device)
        .with_context(|| format!("loading the model in {}", args.model.display()))?;
    let seg_dir = segmenter_dir(&args)?;
    let (segmenter, _) = load_segmenter(&seg_dir, &Device::Cpu)
        .with_context(|| format!("loading the segmenter {}", seg_dir.display()))?;
    let masks = read_masks(&args.masks, args.count.map(|c| c as usize))?;
    let (_, h, w) = masks.shape();
    let real = args
        .real
        .as_deref()
        .map(|dir| read_real(dir, model.meta.image_channels, h, w))
        .transpose()?;

    let options = SweepOptions {
        seed: args.seed,
        batch_size: args.batch_size as usize,
        dtype,
        device: rt.device.clone(),
    };
    let bar = crate::progress::bar(sweep_work(&points, masks.samples()), "sweep");
    let report = run_sweep(
        &SweepInputs {
            model: &model,
            segmenter: &segmenter,
            masks: &masks,
            real: real.as_ref(),
        },
        &points,
        &options,
        &mut |p| {
            bar.set_message(format!(
                "{} {} steps",
                p.point.sampler.name(),
                p.point.steps
            ));
            bar.set_position(p.done);
        },
    )
    .context("running the sampler sweep")?;
    bar.finish_and_clear();
    report
        .write(&args.out)
        .with_context(|| format!("writing the sweep report to {}", args.out.display()))?;
    if args.json {
        print!("{}", report.to_json());
    } else {
        print!("{}", report.to_markdown());
        println!(
            "\nwrote {} (sweep.md, sweep.json, sweep.png)",
            args.out.display()
        );
    }
    Ok(())
}
