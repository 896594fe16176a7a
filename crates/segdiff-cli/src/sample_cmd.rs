//! `segdiff sample`: generate images from masks (or unconditionally) with a trained model.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use segdiff_diffusion::sampler::{
    sample, LatentInterpolation, MixPoint, SampleInput, SampleOptions, Shard,
};
use segdiff_diffusion::{load_model_dir, SamplerKind};

use crate::png_io::{png_files, read_image, read_masks_of_one_size};
use crate::runtime::Runtime;
use segdiff_io::picture;

/// Generate images with a trained model, conditioned on segmentation masks.
///
/// One PNG per sample named after its mask (`condon_<mask name>`, as the official code names
/// them), a sheet `grid.png` (mask | sample), and `samples.safetensors` holding `images01`
/// (N×C×H×W float32 in [0, 1], in mask order).
#[derive(Debug, clap::Args)]
pub struct SampleArgs {
    /// Model directory (diffusers layout; official checkpoints work as they are), or
    /// `hf://owner/name[@revision][/folder]` on the Hugging Face Hub.
    #[arg(long)]
    pub model: PathBuf,
    /// A mask PNG (class ids) or a folder of them.
    #[arg(long)]
    pub masks: Option<PathBuf>,
    /// Images to draw from an unconditional model (instead of --masks).
    #[arg(long)]
    pub count: Option<usize>,
    /// Output folder.
    #[arg(long)]
    pub out: PathBuf,
    /// Sampler, steps, η, seed and batch size.
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Samples generated per mask.
    #[arg(long, default_value_t = 1)]
    pub samples_per_mask: usize,
    /// x_T for every image (safetensors with tensor `x_T`, N×C×H×W) for exact reproduction.
    #[arg(long)]
    pub init_noise: Option<PathBuf>,
    /// Keep only these foreground classes of each mask; the model fills in the rest
    /// (needs an ablation-trained model to be meaningful).
    #[arg(long, value_delimiter = ',')]
    pub keep_classes: Option<Vec<u32>>,
    /// Condition on empty masks: unconditional generation from an ablation-trained model.
    #[arg(long)]
    pub empty_mask: bool,
    /// Mask guidance scale w: ε = ε(x|∅) + w·(ε(x|m) − ε(x|∅)) (beyond the paper; w = 1 is plain).
    #[arg(long)]
    pub guidance_scale: Option<f64>,
    /// Real images (a folder with the masks' file names, or one file) for latent interpolation.
    #[arg(long)]
    pub real: Option<PathBuf>,
    /// Interpolation weight λ toward the real image: 0 = independent sample, 1 = closest.
    #[arg(long, default_value_t = 0.5)]
    pub lambda: f64,
    /// Where to mix: the fraction of the inference steps run before mixing (t̃), in [0, 1).
    #[arg(long, default_value_t = 0.5)]
    pub mix_at: f64,
    /// Generate only shard I of N (1-based, e.g. `--shard 2/8`); files match a full run's.
    #[arg(long)]
    pub shard: Option<String>,
}

/// The sampling flags `segdiff sample` and `segdiff sample-volume` share.
#[derive(Debug, clap::Args)]
pub struct SamplingArgs {
    /// Sampler: `ddim` (paper), `ddpm`, `dpm++` (DPM-Solver++ 2M: similar quality in 15–25 steps),
    /// `dpm++sde` (SDE-DPM-Solver++ 2M: stochastic, closer to the masks at the same steps),
    /// `euler-a` (diffusers' Euler ancestral: stochastic) or `unipc` (UniPC bh2: deterministic
    /// predictor-corrector).
    #[arg(long, default_value = "ddim", value_parser = crate::flag_values::flag::<SamplerKind>())]
    pub scheduler: SamplerKind,
    /// Inference steps (default: 50 for ddim, 1000 for ddpm, 20 for dpm++, dpm++sde and unipc,
    /// 30 for euler-a).
    #[arg(long)]
    pub steps: Option<usize>,
    /// DDIM η (0 = deterministic, the paper's setting).
    #[arg(long, default_value_t = 0.0)]
    pub eta: f64,
    /// Seed: image (or slice) i of a run is reproducible on its own from (seed, i).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Images (slices) per denoiser call.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Every image (slice) draws the same noise, that of image 0: images of similar masks come
    /// out alike. For whole volumes this is what makes adjacent slices agree (see the README's
    /// whole-volume figures); the images are then no longer independent samples.
    #[arg(long)]
    pub shared_noise: bool,
}

impl SamplingArgs {
    /// These flags as sampling options, everything else at its default.
    pub fn options(&self) -> SampleOptions {
        SampleOptions {
            scheduler: self.scheduler,
            steps: self.steps,
            eta: self.eta,
            seed: self.seed,
            batch_size: self.batch_size,
            shared_noise: self.shared_noise,
            ..SampleOptions::default()
        }
    }
}

/// Parses `I/N` (1-based).
pub fn parse_shard(s: &str) -> Result<Shard> {
    let (i, n) = s
        .split_once('/')
        .with_context(|| format!("--shard {s}: expected I/N, e.g. 1/4"))?;
    let i: usize = i
        .trim()
        .parse()
        .with_context(|| format!("--shard {s}: I is not a number"))?;
    let n: usize = n
        .trim()
        .parse()
        .with_context(|| format!("--shard {s}: N is not a number"))?;
    if n == 0 || i == 0 || i > n {
        bail!("--shard {s}: need 1 ≤ I ≤ N");
    }
    Ok(Shard::new(i - 1, n)?)
}

pub fn run(args: SampleArgs, rt: &Runtime) -> Result<()> {
    let model = load_model_dir(&args.model, rt.sampling_dtype(), &rt.device)
        .with_context(|| format!("loading the model in {}", args.model.display()))?;
    let meta = &model.meta;
    let mut names: Vec<String> = Vec::new();
    let mut mask_maps: Vec<Vec<u32>> = Vec::new();
    let (h, w);
    let masks_tensor;
    let input = if meta.segmentation_guided {
        let dir = args
            .masks
            .as_ref()
            .context("this model is segmentation-guided: pass --masks FILE_OR_DIR")?;
        if args.count.is_some() {
            bail!("--count is for unconditional models; this one takes --masks");
        }
        let files = png_files(dir)?;
        let (masks, mh, mw) = read_masks_of_one_size(&files)?;
        for (f, m) in files.iter().zip(masks) {
            if let Some(c) = meta.num_classes {
                if let Some(bad) = m.ids.iter().find(|&&v| v as usize >= c) {
                    bail!("{}: class id {bad} ≥ the model's {c} classes", f.display());
                }
            }
            names.push(file_name(f));
            mask_maps.push(m.ids);
        }
        (h, w) = (mh, mw);
        let flat: Vec<u32> = mask_maps.iter().flatten().copied().collect();
        masks_tensor = Tensor::from_vec(flat, (mask_maps.len(), h, w), &Device::Cpu)?;
        SampleInput::Masks(&masks_tensor)
    } else {
        if args.masks.is_some() {
            bail!("this model is unconditional: drop --masks and pass --count N");
        }
        let count = args
            .count
            .context("this model is unconditional: pass --count N")?;
        let size = model
            .unet
            .config
            .sample_size
            .context("the model's config has no sample_size")?;
        (h, w) = (size, size);
        names = (0..count).map(|i| format!("{i:04}.png")).collect();
        SampleInput::Unconditional {
            count,
            height: h,
            width: w,
        }
    };

    let init_noise = match &args.init_noise {
        Some(p) => {
            let t = candle_core::safetensors::load(p, &rt.device)
                .with_context(|| format!("reading {}", p.display()))?;
            Some(
                t.get("x_T")
                    .cloned()
                    .with_context(|| format!("{}: no tensor named x_T", p.display()))?,
            )
        }
        None => None,
    };
    let interpolation = match &args.real {
        Some(real) => Some(LatentInterpolation {
            real_images: read_real_images(real, &names, meta.image_channels, h, w)?,
            lambda: args.lambda,
            at: MixPoint::Fraction(args.mix_at),
        }),
        None => None,
    };
    let options = SampleOptions {
        samples_per_mask: args.samples_per_mask,
        guidance_scale: args.guidance_scale,
        keep_classes: args.keep_classes.clone(),
        empty_mask: args.empty_mask,
        shard: args.shard.as_deref().map(parse_shard).transpose()?,
        init_noise,
        interpolation,
        ..args.sampling.options()
    };
    let total = names.len() * args.samples_per_mask.max(1);
    let bar = crate::progress::bar(total as u64, "sample");
    let out = sample(&model, input, &options, &mut |p| {
        bar.set_position(p.images_done as u64);
        bar.set_message(format!("step {}/{}", p.step, p.steps));
    })
    .context("sampling")?;
    bar.finish_and_clear();

    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    segdiff_io::remove_stale_temps(&args.out)
        .with_context(|| format!("removing stale temporary files in {}", args.out.display()))?;
    let (c, hh, ww) = (meta.image_channels, h, w);
    let px = out.images01.flatten_all()?.to_vec1::<f32>()?;
    let num_classes = meta.num_classes.unwrap_or(256);
    let colors = picture::class_colors(num_classes.min(256), meta.class_colors.as_deref());
    let mut tiles = Vec::new();
    for (row, (&g, &m)) in out.image_indices.iter().zip(&out.mask_indices).enumerate() {
        let img = &px[row * c * hh * ww..(row + 1) * c * hh * ww];
        let name = output_name(
            &names[m],
            g % args.samples_per_mask.max(1),
            args.samples_per_mask,
            meta.segmentation_guided,
        );
        let grey: Vec<f32> = if c == 1 {
            img.to_vec()
        } else {
            (0..hh * ww)
                .map(|i| (img[i] + img[hh * ww + i] + img[2 * hh * ww + i]) / 3.0)
                .collect()
        };
        if c == 1 {
            picture::save_grey_png(&args.out.join(&name), img, hh, ww)?;
        } else {
            picture::save_rgb_png(&args.out.join(&name), img, hh, ww)?;
        }
        if tiles.len() < 64 {
            if let Some(mask) = mask_maps.get(m) {
                let m8: Vec<u8> = mask.iter().map(|&v| v.min(255) as u8).collect();
                tiles.push(picture::mask_to_rgb(&m8, hh, ww, &colors));
            }
            tiles.push(picture::overlay(
                &grey,
                &vec![0u8; hh * ww],
                hh,
                ww,
                &colors,
                0.0,
            ));
        }
    }
    let sharded = options.shard.is_some();
    let suffix = args
        .shard
        .as_deref()
        .map(|s| format!("-shard-{}", s.replace('/', "-of-")))
        .unwrap_or_default();
    if !tiles.is_empty() {
        let cols = if meta.segmentation_guided { 2 } else { 1 } * 4;
        picture::save_png(
            &args.out.join(format!("grid{suffix}.png")),
            &picture::grid(&tiles, cols),
        )?;
    }
    let st_path = args.out.join(format!("samples{suffix}.safetensors"));
    let mut tensors = HashMap::from([("images01".to_string(), out.images01.clone())]);
    if sharded {
        let idx: Vec<i64> = out.image_indices.iter().map(|&i| i as i64).collect();
        let n = idx.len();
        tensors.insert(
            "image_indices".into(),
            Tensor::from_vec(idx, n, &Device::Cpu)?,
        );
    }
    segdiff_unet::write_safetensors(&st_path, &tensors, None)
        .with_context(|| format!("writing {}", st_path.display()))?;
    println!(
        "wrote {} image(s) of {} to {} ({}, {}{})",
        out.image_indices.len(),
        out.total_images,
        args.out.display(),
        st_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        format_args!("grid{suffix}.png"),
        if sharded { ", sharded" } else { "" }
    );
    Ok(())
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// `condon_<mask>` for guided samples (the official code's naming), with `_s<k>` before the
/// extension when several samples are drawn per mask.
fn output_name(mask_name: &str, k: usize, per_mask: usize, guided: bool) -> String {
    let base = if guided {
        format!("condon_{mask_name}")
    } else {
        mask_name.to_string()
    };
    if per_mask <= 1 {
        return base;
    }
    match base.rsplit_once('.') {
        Some((stem, ext)) => format!("{stem}_s{k}.{ext}"),
        None => format!("{base}_s{k}"),
    }
}

fn read_real_images(
    real: &Path,
    names: &[String],
    channels: usize,
    h: usize,
    w: usize,
) -> Result<Tensor> {
    let mut values = Vec::with_capacity(names.len() * channels * h * w);
    for name in names {
        let path = if real.is_file() {
            real.to_path_buf()
        } else {
            real.join(name)
        };
        if !path.is_file() {
            bail!("--real: no image {} for mask {name}", path.display());
        }
        let (v, ih, iw) = read_image(&path, channels)?;
        if (ih, iw) != (h, w) {
            bail!(
                "{}: {ih}×{iw} differs from the masks' {h}×{w}",
                path.display()
            );
        }
        values.extend(v);
    }
    Ok(Tensor::from_vec(
        values,
        (names.len(), channels, h, w),
        &Device::Cpu,
    )?)
}
