//! `segdiff eval`: the paper's evaluation of a trained model (segdiff-eval's `paper_eval` does
//! the work; this module turns flags into its config, shows a progress bar per stage, draws the
//! contact sheet and writes the report).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use image::{imageops, Rgb, RgbImage};
use indicatif::ProgressBar;
use segdiff_data::SliceAxis;
use segdiff_diffusion::load_model_dir;
use segdiff_diffusion::{NeighbourGate, SamplerKind};
use segdiff_eval::paper_eval::REAL_SEGMENTER_DIR;
use segdiff_eval::paper_eval::{
    generate_shard, run_paper_eval, EvalProgress, PaperEvalConfig, PaperEvalReport, SheetData,
    REPORT_MD,
};
use segdiff_eval::{
    evaluate_volumes, load_segmenter, load_volume_stacks, Augmentation, VolumeEvalOptions,
    VolumeReport,
};

use crate::runtime::Runtime;
use segdiff_io::picture;

/// File name of the contact sheet in the output folder.
pub const SHEET_PNG: &str = "sheet.png";

/// What `segdiff eval --help` explains beyond the one-line summary.
const EVAL_GUIDE: &str = r#"1. A MONAI UNet segmenter is trained on the dataset's real training images, keeping the
   epoch with the lowest validation loss (or loaded with --segmenter).
2. One image is generated per test mask and one per training mask (image g of a set uses the
   seed pair (seed, g): test images --seed, training-mask images --seed + 1).
3. Table 2: Dice between the segmentation of each generated test image and its input mask,
   and between it and the segmentation of the real image of that mask.
4. Table 1: a fresh segmenter trained only on the generated training images, against the
   real-trained one, both scored by Dice on the real test split.
5. FID in the real-trained segmenter's bottleneck feature space (generated vs real test
   images), and with --inception-weights also in Inception-v3's pool feature space; PSNR and
   SSIM against the paired real images, HD95 of the segmentations.

Writes into --out: `report.md` and `report.json` (the same numbers, with the command, seed
and stage timings), `sheet.png` (rows: mask | real | generated | segmentation of generated),
`generated/{test,train}/` (the images, `condon_<mask name>`), `segmentations/{generated,real}/`
(class-id PNGs) and the segmenters `segmenter-real/` and `segmenter-generated/`.

Generated images are kept and reused by later runs into the same --out with the same
settings; `--shard I/N` generates only shard I (run all N, then once without --shard to
evaluate). Unconditional models get FID and Table 1 (their generated training images are
labelled by the real-trained segmenter); Table 2, PSNR/SSIM and HD95 need masks and are
skipped, as the report says."#;

/// Arguments of `segdiff eval` (see [`EVAL_GUIDE`]).
#[derive(Debug, clap::Args)]
#[command(long_about = None, after_long_help = EVAL_GUIDE)]
pub struct EvalArgs {
    /// Prepared dataset: `img/{train,val,test}/*.png` with class-id masks in
    /// `mask/all/{split}` (as `segdiff prepare` writes it, or the official code's layout).
    #[arg(long, value_name = "DIR")]
    pub dataset: PathBuf,
    /// Model folder (diffusers layout; official checkpoints work as they are), or
    /// `hf://owner/name[@revision][/folder]` on the Hugging Face Hub.
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// Use this trained segmenter (`segdiff segmenter train`; a folder or `hf://owner/name`)
    /// instead of training one on the real images.
    #[arg(long, value_name = "DIR")]
    pub segmenter: Option<PathBuf>,
    /// A small run that takes minutes on a CPU: at most 8 pairs per split, 10 segmenter epochs,
    /// 10 sampling steps (flags given explicitly still win). Checks the pipeline; its numbers are
    /// not the paper's.
    #[arg(long)]
    pub quick: bool,
    /// Output folder (default: `eval-<model folder name>` in the current folder).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Seed of everything: sampling noise and both segmenters' initialisation, order and
    /// augmentation.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Sampler: `ddim` (the paper), `ddpm`, `dpm++` (DPM-Solver++ 2M), `dpm++sde` (its
    /// stochastic form), `euler-a` (Euler ancestral, stochastic) or `unipc` (UniPC bh2).
    #[arg(long, default_value = "ddim", value_parser = crate::flag_values::flag::<SamplerKind>())]
    pub scheduler: SamplerKind,
    /// Sampling steps (default: 50 for ddim, 1000 for ddpm, 20 for dpm++, dpm++sde and unipc,
    /// 30 for euler-a; 10 with --quick).
    #[arg(long)]
    pub steps: Option<usize>,
    /// DDIM η (0, deterministic, in the paper).
    #[arg(long, default_value_t = 0.0)]
    pub eta: f64,
    /// Images per denoiser call when sampling. Part of what the generated images depend on: keep
    /// it the same across shards and reruns.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Generate only shard I of N (1-based, e.g. `2/4`) of both image sets, then stop.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,
    /// Resize dataset pairs to N×N on load (default: the model's sample size).
    #[arg(long, value_name = "N")]
    pub size: Option<u32>,
    /// Classes including background, for models and datasets that do not record it.
    #[arg(long)]
    pub num_classes: Option<usize>,
    /// Convert RGB dataset images to grey on load.
    #[arg(long)]
    pub grey: bool,
    /// Use at most N training pairs (both segmenters and the generated training set), spread
    /// evenly over the split (default: all; 8 with --quick).
    #[arg(long, value_name = "N")]
    pub max_train: Option<usize>,
    /// Use at most N validation pairs (default: all; 8 with --quick).
    #[arg(long, value_name = "N")]
    pub max_val: Option<usize>,
    /// Use at most N test pairs (default: all; 8 with --quick).
    #[arg(long, value_name = "N")]
    pub max_test: Option<usize>,
    /// Segmenter training epochs (default: 100, the paper; 10 with --quick).
    #[arg(long)]
    pub segmenter_epochs: Option<usize>,
    /// Segmenter UNet channels per level, top first.
    #[arg(long, value_delimiter = ',', default_value = "16,32,64,128,256")]
    pub segmenter_channels: Vec<usize>,
    /// Segmenter down-sampling strides (one fewer than the channels); image sides must be
    /// multiples of their product.
    #[arg(long, value_delimiter = ',', default_value = "2,2,2,2")]
    pub segmenter_strides: Vec<usize>,
    /// Segmenter residual units per block.
    #[arg(long, default_value_t = 0)]
    pub segmenter_res_units: usize,
    /// Segmenter images per optimiser step.
    #[arg(long, default_value_t = 8)]
    pub segmenter_batch_size: usize,
    /// Segmenter initial learning rate (AdamW, cosine-annealed to 0).
    #[arg(long, default_value_t = 1e-3)]
    pub segmenter_lr: f64,
    /// Augment segmenter training with random flips.
    #[arg(long)]
    pub flips: bool,
    /// Augment segmenter training with random 90° rotations.
    #[arg(long)]
    pub rot90: bool,
    /// Also report FID in Inception-v3's 2048-d pool feature space (generated vs real test
    /// images), beside the segmenter-feature FID: torchvision's `inception_v3` with weights from
    /// this `.safetensors` file (torchvision's state_dict names, e.g. torchvision's IMAGENET1K_V1
    /// converted, or timm's `inception_v3.tv_in1k` model.safetensors; `fc.*` and `AuxLogits.*`
    /// are ignored). Images go in as pytorch-fid feeds them (299×299 bilinear, [-1, 1]), but
    /// these are not its TF-Inception weights: compare only with FIDs computed the same way.
    #[arg(long, value_name = "FILE")]
    pub inception_weights: Option<PathBuf>,
    /// Also evaluate whole volumes (a "Whole volumes" section in report.md/json): each volume of
    /// the dataset's manifest.csv with a test slice (all volumes when the test split has none)
    /// is stacked from its --volume-axis slices of every split, generated from its masks
    /// neighbour-conditioned (models trained with --neighbours) and slice by slice, and scored
    /// by the through-plane change inside the body, the segmenter's Dice on the slices and on
    /// the stack's two orthogonal reslices, and per-plane FID against the real stack.
    #[arg(long)]
    pub volumes: bool,
    /// Slicing axis of the volume stacks.
    #[arg(long, default_value = "axial", value_parser = crate::flag_values::flag::<SliceAxis>())]
    pub volume_axis: SliceAxis,
    /// Evaluate at most this many volumes (by name).
    #[arg(long, value_name = "N")]
    pub max_volumes: Option<usize>,
    /// Anchor slices of neighbour-conditioned volume generation.
    #[arg(long, default_value_t = 1)]
    pub anchors: usize,
    /// With --volumes: the part of the denoising steps in which a conditioned slice sees its
    /// neighbour (see `sample-volume --neighbour-window`).
    #[arg(long, value_name = "FROM,UNTIL", default_value = "0,1", value_parser = crate::sample_volume_cmd::parse_neighbour_window)]
    pub neighbour_window: (f64, f64),
    /// With --volumes: where a conditioned slice uses its neighbour (see `sample-volume
    /// --neighbour-gate`).
    #[arg(long, default_value = "agreeing", value_parser = crate::flag_values::flag::<NeighbourGate>())]
    pub neighbour_gate: NeighbourGate,
    /// With --volumes: every slice draws the same noise, in both the conditioned and the
    /// independent stack (see `sample-volume --shared-noise`).
    #[arg(long)]
    pub shared_noise: bool,
}

/// The command line as typed, quoted where a shell would need it.
fn command_line() -> String {
    std::env::args()
        .enumerate()
        .map(|(i, a)| {
            if i == 0 {
                "segdiff".into()
            } else {
                shell_quote(&a)
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `a` as one POSIX-shell word.
fn shell_quote(a: &str) -> String {
    if !a.is_empty() && !a.contains(|c: char| c.is_whitespace() || "'\"$`\\;&|<>*?()#~".contains(c))
    {
        a.to_string()
    } else {
        format!("'{}'", a.replace('\'', r"'\''"))
    }
}

fn config(args: &EvalArgs, rt: &Runtime) -> Result<PaperEvalConfig> {
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| segdiff_cli::default_eval_out(&args.model));
    let mut cfg = PaperEvalConfig::new(args.dataset.clone(), args.model.clone(), out);
    if args.quick {
        cfg = cfg.quick();
    }
    cfg.segmenter = args.segmenter.clone();
    cfg.num_classes = args.num_classes;
    cfg.force_grey = args.grey;
    cfg.size = args.size;
    cfg.max_train = args.max_train.or(cfg.max_train);
    cfg.max_val = args.max_val.or(cfg.max_val);
    cfg.max_test = args.max_test.or(cfg.max_test);
    cfg.sampling.scheduler = args.scheduler;
    // --quick's step count is a DDIM-sized one; other samplers keep their defaults unless given.
    cfg.sampling.steps = match (args.steps, cfg.sampling.scheduler) {
        (Some(s), _) => Some(s),
        (None, SamplerKind::Ddim) => cfg.sampling.steps,
        (None, _) => None,
    };
    if args.eta != 0.0 && cfg.sampling.scheduler != SamplerKind::Ddim {
        bail!(
            "--eta is a DDIM setting; drop it for --scheduler {}",
            crate::flag_values::flag_name(&args.scheduler)
        );
    }
    cfg.sampling.eta = args.eta;
    cfg.sampling.batch_size = args.batch_size;
    cfg.seed = args.seed;
    cfg.recipe.channels = args.segmenter_channels.clone();
    cfg.recipe.strides = args.segmenter_strides.clone();
    cfg.recipe.num_res_units = args.segmenter_res_units;
    cfg.recipe.batch_size = args.segmenter_batch_size;
    cfg.recipe.lr = args.segmenter_lr;
    cfg.recipe.epochs = args.segmenter_epochs.unwrap_or(cfg.recipe.epochs);
    cfg.recipe.augmentation = Augmentation {
        flips: args.flips,
        rot90: args.rot90,
    };
    cfg.inception_weights = args.inception_weights.clone();
    cfg.dtype = rt.sampling_dtype();
    cfg.device = rt.device.clone();
    cfg.command = command_line();
    Ok(cfg)
}

/// One progress bar per stage, and a line with its time when it ends.
fn progress_printer() -> impl FnMut(&EvalProgress) {
    let mut bar: Option<ProgressBar> = None;
    move |event| match event {
        EvalProgress::Start { stage } => {
            bar = Some(crate::progress::bar(0, stage.short()));
        }
        EvalProgress::Advance {
            done,
            total,
            message,
            ..
        } => {
            if let Some(b) = &bar {
                b.set_length(*total as u64);
                b.set_position(*done as u64);
                b.set_message(message.clone());
            }
        }
        EvalProgress::Finish { stage, seconds } => {
            if let Some(b) = bar.take() {
                b.finish_and_clear();
            }
            eprintln!("{:>9}  {} ({seconds:.1} s)", stage.short(), stage.label());
        }
        EvalProgress::Abort { .. } => {
            if let Some(b) = bar.take() {
                b.abandon();
            }
        }
    }
}

pub fn run(args: EvalArgs, rt: &Runtime) -> Result<()> {
    let cfg = config(&args, rt)?;
    segdiff_io::remove_stale_temps_tree(&cfg.out)
        .with_context(|| format!("removing stale temporary files in {}", cfg.out.display()))?;
    let mut progress = progress_printer();
    if let Some(s) = &args.shard {
        let shard = crate::sample_cmd::parse_shard(s)?;
        let done = generate_shard(&cfg, shard, &mut progress).context("generating")?;
        println!(
            "shard {s}: generated {} test-mask and {} training-mask image(s), {} already there; \
             in {}",
            done.test.generated,
            done.train.generated,
            done.test.reused + done.train.reused,
            cfg.out.display()
        );
        println!("when every shard is done, run the same command without --shard to evaluate");
        return Ok(());
    }
    let mut run = run_paper_eval(&cfg, &mut progress).context("evaluating")?;
    if args.volumes {
        run.report.volumes = Some(volume_section(&args, &cfg, rt)?);
    }
    write_sheet(&cfg.out.join(SHEET_PNG), &run.sheet)?;
    run.report
        .write(&cfg.out)
        .with_context(|| format!("writing the report into {}", cfg.out.display()))?;
    print_summary(&run.report);
    println!("report: {}", cfg.out.join(REPORT_MD).display());
    Ok(())
}

/// The whole-volume evaluation with the evaluation's sampler, seed and segmenter (the one
/// given, or the one it trained on the real images).
fn volume_section(args: &EvalArgs, cfg: &PaperEvalConfig, rt: &Runtime) -> Result<VolumeReport> {
    let started = std::time::Instant::now();
    let (stacks, from_test) = load_volume_stacks(
        &args.dataset,
        args.volume_axis,
        segdiff_data::Split::Test,
        args.max_volumes,
    )
    .context("reading the volumes")?;
    if stacks.is_empty() {
        bail!(
            "{}: the manifest lists no {} slices to stack into volumes",
            args.dataset.display(),
            args.volume_axis.name()
        );
    }
    let seg_dir = args
        .segmenter
        .clone()
        .unwrap_or_else(|| cfg.out.join(REAL_SEGMENTER_DIR));
    let (segmenter, _) = load_segmenter(&seg_dir, &rt.device)
        .with_context(|| format!("loading the segmenter {}", seg_dir.display()))?;
    let model = load_model_dir(&args.model, rt.sampling_dtype(), &rt.device)
        .with_context(|| format!("loading {}", args.model.display()))?;
    let bar = crate::progress::bar(stacks.len() as u64, "volumes");
    let report = evaluate_volumes(
        &model,
        &segmenter,
        &stacks,
        from_test,
        &VolumeEvalOptions {
            axis: args.volume_axis,
            sampler: cfg.sampling.scheduler,
            steps: cfg.sampling.resolved_steps(),
            seed: cfg.seed,
            anchors: args.anchors,
            neighbour_window: args.neighbour_window,
            neighbour_gate: args.neighbour_gate,
            batch_size: cfg.sampling.batch_size,
            shared_noise: args.shared_noise,
            dtype: rt.sampling_dtype(),
            device: rt.device.clone(),
        },
        &mut |volume, what| bar.set_message(format!("{volume}: {what}")),
    )
    .context("evaluating whole volumes")?;
    bar.finish_and_clear();
    eprintln!(
        "{:>9}  whole volumes: {} stack(s) ({:.1} s)",
        "volumes",
        report.volumes.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(report)
}

fn fmt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "—".into(), |x| format!("{x:.digits$}"))
}

fn print_summary(r: &PaperEvalReport) {
    if let Some(t) = &r.table2 {
        println!(
            "Table 2  Dice seg(generated) vs mask {}, vs seg(real) {} (seg(real) vs mask {})",
            fmt(t.vs_input_mask.mean, 4),
            fmt(t.vs_segmentation_of_real.mean, 4),
            fmt(t.real_reference.mean, 4)
        );
    }
    println!(
        "Table 1  test Dice of the segmenter trained on real images {}, on generated images {}",
        fmt(r.table1.real_trained.mean, 4),
        fmt(r.table1.synthetic_trained.mean, 4)
    );
    if let Some(f) = &r.fid {
        println!("FID      {}", fmt(f.fid, 3));
    }
    if let Some(f) = &r.inception_fid {
        println!("FID      {} (Inception-v3)", fmt(f.fid, 3));
    }
    if let Some(q) = &r.image_similarity {
        println!("PSNR     {} dB, SSIM {}", fmt(q.psnr, 3), fmt(q.ssim, 4));
    }
    if let Some(h) = &r.hd95 {
        println!("HD95     {} px", fmt(h.mean, 2));
    }
    if let Some(v) = &r.volumes {
        for row in &v.volumes {
            let change = |c: Option<f64>| fmt(c, 2);
            println!(
                "volume   {}: through-plane change real {}, conditioned {}, independent {}; coronal/sagittal Dice real {:.3}/{:.3}, independent {:.3}/{:.3}{}",
                row.volume,
                change(row.real.through_plane_change),
                change(row.conditioned.as_ref().and_then(|c| c.through_plane_change)),
                change(row.independent.through_plane_change),
                row.real.dice[1],
                row.real.dice[2],
                row.independent.dice[1],
                row.independent.dice[2],
                row.conditioned.as_ref().map_or(String::new(), |c| format!(", conditioned {:.3}/{:.3}", c.dice[1], c.dice[2])),
            );
        }
    }
    for s in &r.skipped {
        println!("skipped: {s}");
    }
}

/// A CHW image in `[-1, 1]` (1 or 3 channels) as RGB.
fn image_tile(chw: &[f32], channels: usize, h: usize, w: usize) -> RgbImage {
    let px = |c: usize, i: usize| {
        ((chw[c * h * w + i] * 0.5 + 0.5).clamp(0.0, 1.0) * 255.0).round() as u8
    };
    RgbImage::from_fn(w as u32, h as u32, |x, y| {
        let i = y as usize * w + x as usize;
        if channels == 3 {
            Rgb([px(0, i), px(1, i), px(2, i)])
        } else {
            let v = px(0, i);
            Rgb([v, v, v])
        }
    })
}

/// `sheet.png`: one row per test image, columns mask | real | generated | segmentation of the
/// generated image (mask and real left dark for unconditional models). Small images are
/// enlarged (nearest neighbour) to at least 128 pixels.
fn write_sheet(path: &Path, sheet: &SheetData) -> Result<()> {
    let (c, h, w) = (sheet.channels, sheet.height, sheet.width);
    let colors = picture::class_colors(sheet.num_classes.min(256), sheet.class_colors.as_deref());
    let ids = |m: &[u32]| -> Vec<u8> { m.iter().map(|&v| v.min(255) as u8).collect() };
    let blank = RgbImage::from_pixel(w as u32, h as u32, Rgb([24, 24, 24]));
    let scale = (128 / h.max(w)).max(1) as u32;
    let mut tiles = Vec::with_capacity(sheet.rows.len() * 4);
    for row in &sheet.rows {
        let cells = [
            row.mask.as_ref().map_or_else(
                || blank.clone(),
                |m| picture::mask_to_rgb(&ids(m), h, w, &colors),
            ),
            row.real
                .as_ref()
                .map_or_else(|| blank.clone(), |r| image_tile(r, c, h, w)),
            image_tile(&row.generated, c, h, w),
            picture::mask_to_rgb(&ids(&row.segmentation), h, w, &colors),
        ];
        tiles.extend(cells.into_iter().map(|t| {
            if scale > 1 {
                imageops::resize(
                    &t,
                    w as u32 * scale,
                    h as u32 * scale,
                    imageops::FilterType::Nearest,
                )
            } else {
                t
            }
        }));
    }
    if tiles.is_empty() {
        bail!("no test images to draw in {}", path.display());
    }
    Ok(picture::save_png(path, &picture::grid(&tiles, 4))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use segdiff_eval::paper_eval::SheetRow;

    #[test]
    fn grey_and_rgb_tiles_map_minus_one_one_to_bytes() {
        let grey = image_tile(&[-1.0, 0.0, 1.0, 0.5], 1, 2, 2);
        assert_eq!(grey.get_pixel(0, 0).0, [0, 0, 0]);
        assert_eq!(grey.get_pixel(1, 0).0, [128, 128, 128]);
        assert_eq!(grey.get_pixel(0, 1).0, [255, 255, 255]);
        let rgb = image_tile(&[1.0, -1.0, 0.0], 3, 1, 1);
        assert_eq!(rgb.get_pixel(0, 0).0, [255, 0, 128]);
    }

    #[test]
    fn sheet_has_four_columns_and_one_row_per_image() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sheet.png");
        let row = SheetRow {
            name: "a.png".into(),
            mask: Some(vec![0, 1, 2, 0]),
            real: Some(vec![0.0; 4]),
            generated: vec![0.5; 4],
            segmentation: vec![0, 1, 1, 0],
        };
        let sheet = SheetData {
            channels: 1,
            height: 2,
            width: 2,
            num_classes: 3,
            class_colors: None,
            rows: vec![
                row.clone(),
                SheetRow {
                    mask: None,
                    real: None,
                    ..row
                },
            ],
        };
        write_sheet(&path, &sheet).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        // Tiles enlarged to 128 px, 2-pixel gaps.
        assert_eq!(img.dimensions(), (4 * 128 + 3 * 2, 2 * 128 + 2));
        // Row 2's mask cell is blank.
        assert_eq!(img.get_pixel(10, 130 + 10).0, [24, 24, 24]);
    }

    #[test]
    fn quick_help_states_the_library_limits() {
        use segdiff_eval::paper_eval::{
            QUICK_MAX_IMAGES, QUICK_SAMPLING_STEPS, QUICK_SEGMENTER_EPOCHS,
        };
        let cmd = <EvalArgs as clap::Args>::augment_args(clap::Command::new("eval"));
        let help = cmd
            .get_arguments()
            .find(|a| a.get_id() == "quick")
            .and_then(|a| a.get_long_help().or(a.get_help()))
            .map(|h| h.to_string())
            .unwrap_or_default();
        let want = format!(
            "at most {QUICK_MAX_IMAGES} pairs per split, {QUICK_SEGMENTER_EPOCHS} segmenter epochs, \
             {QUICK_SAMPLING_STEPS} sampling steps"
        );
        assert!(help.replace('\n', " ").contains(&want), "{help}");
    }

    #[test]
    fn inception_weights_reach_the_config() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            eval: EvalArgs,
        }
        let rt = Runtime {
            device: candle_core::Device::Cpu,
            dtype: candle_core::DType::F32,
            dtype_auto: true,
        };
        let base = ["segdiff", "--dataset", "d", "--model", "m"];
        let plain = Cli::try_parse_from(base).unwrap();
        assert_eq!(config(&plain.eval, &rt).unwrap().inception_weights, None);
        let with = Cli::try_parse_from(
            base.iter()
                .copied()
                .chain(["--inception-weights", "inc.safetensors"]),
        )
        .unwrap();
        assert_eq!(
            config(&with.eval, &rt).unwrap().inception_weights,
            Some(PathBuf::from("inc.safetensors"))
        );
    }

    #[test]
    fn shell_quoting() {
        assert_eq!(shell_quote("--steps"), "--steps");
        assert_eq!(shell_quote("my data/x"), "'my data/x'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
        assert!(command_line().starts_with("segdiff"));
    }
}
