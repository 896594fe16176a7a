//! `segdiff model …`: look inside a denoiser checkpoint and run it on stored tensors.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Tensor};
use clap::Subcommand;
use segdiff_unet::{load_unet, parameter_count, LoadedUnet};

use crate::runtime::Runtime;

#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Lay out an official checkpoint (one `.safetensors` + one `.json` config, as the official
    /// code's Google-Drive folder ships them) as a segdiff/diffusers model directory, check that
    /// it loads, and record its mask encoding and class count in `segdiff.json`.
    Convert(ConvertArgs),
    /// Describe a model directory: its configuration in words, parameter count, FLOPs per
    /// forward at its sample size, weight file format and dtype.
    Inspect {
        /// A diffusers model directory (holding `unet/`) or the `unet` folder itself, or
        /// `hf://owner/name[@revision][/folder]`.
        dir: PathBuf,
    },
    /// Run one forward pass on tensors read from a safetensors file: `x` (N,C,H,W) and
    /// `timestep` (N values, or one scalar for the whole batch); writes `eps`. A tool for checking
    /// ports and converted weights against a reference implementation.
    Forward {
        /// A diffusers model directory (holding `unet/`) or the `unet` folder itself, or
        /// `hf://owner/name[@revision][/folder]`.
        #[arg(long)]
        model: PathBuf,
        /// safetensors file with `x` and `timestep`.
        #[arg(long)]
        input: PathBuf,
        /// safetensors file to write, holding `eps` (float32).
        #[arg(long)]
        output: PathBuf,
    },
}

pub fn run(cmd: ModelCommand, rt: &Runtime) -> Result<()> {
    match cmd {
        ModelCommand::Convert(args) => convert(&args, rt),
        ModelCommand::Inspect { dir } => inspect(&dir, rt),
        ModelCommand::Forward {
            model,
            input,
            output,
        } => forward(&model, &input, &output, rt),
    }
}

fn load(dir: &std::path::Path, rt: &Runtime) -> Result<LoadedUnet> {
    load_unet(dir, rt.dtype, &rt.device)
        .with_context(|| format!("loading the model in {}", dir.display()))
}

fn inspect(dir: &std::path::Path, rt: &Runtime) -> Result<()> {
    let m = load(dir, rt)?;
    let c = &m.config;
    let params = parameter_count(c)?;
    println!("model        {}", m.unet_dir.display());
    println!(
        "weights      {} ({}, stored as {:?})",
        m.weights_path.display(),
        m.format,
        m.stored_dtype
    );
    println!(
        "input        {} channels; output {} channels",
        c.in_channels, c.out_channels
    );
    println!("parameters   {params} ({:.2} M)", params as f64 / 1e6);
    let size = c.sample_size.unwrap_or(64);
    let flops = m.model.flops(size, size);
    println!(
        "compute      {:.2} GFLOP per forward at {size}x{size}, batch 1{}",
        flops as f64 / 1e9,
        if c.sample_size.is_none() {
            " (no sample_size in config)"
        } else {
            ""
        }
    );
    println!(
        "blocks       {} levels, {} ResNet layers per block",
        c.block_out_channels.len(),
        c.layers_per_block
    );
    for (i, (ch, (down, up))) in c
        .block_out_channels
        .iter()
        .zip(c.down_block_types.iter().zip(c.up_block_types.iter().rev()))
        .enumerate()
    {
        let res = size >> i;
        println!("  level {i}: {ch:>4} channels at {res}x{res}  down {down:<16} up {up}");
    }
    println!(
        "attention    head dim {}; mid block attention {}",
        c.attention_head_dim
            .map_or("= width".to_string(), |d| d.to_string()),
        if c.add_attention { "on" } else { "off" }
    );
    println!(
        "norm         GroupNorm {} groups, eps {}; time embedding sinusoidal {} (flip_sin_to_cos {}, shift {}) → MLP {}",
        c.groups(),
        c.norm_eps,
        c.block_out_channels[0],
        c.flip_sin_to_cos,
        c.freq_shift,
        c.time_embed_dim()
    );
    Ok(())
}

fn forward(
    model: &std::path::Path,
    input: &std::path::Path,
    output: &std::path::Path,
    rt: &Runtime,
) -> Result<()> {
    let m = load(model, rt)?;
    let tensors = candle_core::safetensors::load(input, &rt.device)
        .with_context(|| format!("reading {}", input.display()))?;
    let x = tensors.get("x").with_context(|| {
        format!(
            "{}: no tensor named `x` (expected x: N×C×H×W)",
            input.display()
        )
    })?;
    let t = tensors
        .get("timestep")
        .with_context(|| format!("{}: no tensor named `timestep`", input.display()))?;
    if x.rank() != 4 {
        bail!(
            "{}: x has shape {:?}, expected N×C×H×W",
            input.display(),
            x.dims()
        );
    }
    let eps = m
        .model
        .forward(&x.to_dtype(rt.dtype)?, t)
        .with_context(|| format!("running the model on {}", input.display()))?
        .to_dtype(DType::F32)?;
    let out: HashMap<String, Tensor> =
        HashMap::from([("eps".to_string(), eps.to_device(&candle_core::Device::Cpu)?)]);
    segdiff_unet::write_safetensors(output, &out, None)
        .with_context(|| format!("writing {}", output.display()))?;
    println!("wrote eps {:?} to {}", out["eps"].dims(), output.display());
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct ConvertArgs {
    /// The weights (`…-segguided.safetensors` or a PyTorch `.bin`).
    #[arg(long)]
    pub safetensors: PathBuf,
    /// The UNet2DModel config (`….json`).
    #[arg(long)]
    pub config: PathBuf,
    /// Output model directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Classes including background (official: `--num_segmentation_classes`), e.g. 4 for
    /// breast MRI, 6 for CT-ORG; recorded so sampling can validate masks.
    #[arg(long)]
    pub num_classes: Option<usize>,
    /// Class names, background first.
    #[arg(long, value_delimiter = ',')]
    pub class_names: Vec<String>,
    /// The model was trained with mask ablation (`--use_ablated_segmentations`; the official
    /// file names end in `-ablated`). Default: guessed from the file name.
    #[arg(long)]
    pub ablated: Option<bool>,
}

fn convert(args: &ConvertArgs, rt: &Runtime) -> Result<()> {
    use segdiff_diffusion::{save_model_dir, ConditioningMeta, DdimConfig, SchedulerConfig};
    let config = segdiff_unet::UNet2DConfig::from_file(&args.config)
        .with_context(|| format!("reading the config {}", args.config.display()))?;
    let (tensors, format) = segdiff_unet::read_weight_file(&args.safetensors)
        .with_context(|| format!("reading the weights {}", args.safetensors.display()))?;
    let (model, tensors) =
        segdiff_unet::model_from_tensors(&config, tensors, rt.dtype, &rt.device, &args.safetensors)
            .with_context(|| {
                format!(
                    "{} does not fit {}",
                    args.safetensors.display(),
                    args.config.display()
                )
            })?;
    let mut meta = ConditioningMeta::official_for(&config);
    if meta.segmentation_guided {
        if let Some(n) = args.num_classes {
            if !(2..=256).contains(&n) {
                bail!(
                    "--num-classes {n}: the official single-channel encoding holds 2..=256 classes"
                );
            }
        }
        meta.num_classes = args.num_classes;
        meta.class_names = args.class_names.clone();
        let name = args
            .safetensors
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        meta.ablation_trained = args.ablated.unwrap_or(name.contains("ablated"));
    } else if args.num_classes.is_some() {
        bail!(
            "{}: in_channels = out_channels, an unconditional model: drop --num-classes",
            args.config.display()
        );
    }
    // A quick forward on zeros proves the weights run.
    let size = config.sample_size.unwrap_or(64).min(64);
    let factor = 1usize << (config.block_out_channels.len() - 1);
    let size = size.max(factor).div_ceil(factor) * factor;
    let x = Tensor::zeros((1, config.in_channels, size, size), rt.dtype, &rt.device)?;
    model
        .forward(&x, &Tensor::new(10i64, &rt.device)?)
        .context("running the converted model")?;
    // The official code samples with diffusers' DDIMScheduler(num_train_timesteps=1000) defaults.
    let scheduler = SchedulerConfig::Ddim(DdimConfig::default());
    let tensors: HashMap<String, Tensor> = tensors
        .into_iter()
        .map(|(k, v)| Ok((k, v.to_dtype(DType::F32)?)))
        .collect::<Result<_>>()?;
    save_model_dir(&args.out, &config, &tensors, &scheduler, &meta)
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!(
        "wrote {} ({} weights from {}; {}, mask encoding {}, {} classes{})",
        args.out.display(),
        tensors.len(),
        format,
        if meta.segmentation_guided {
            "segmentation-guided"
        } else {
            "unconditional"
        },
        meta.mask_encoding,
        meta.num_classes.map_or("unknown".into(), |n| n.to_string()),
        if meta.ablation_trained {
            ", ablation-trained"
        } else {
            ""
        }
    );
    Ok(())
}
