//! `segdiff metrics fid`: the Fréchet distance (pytorch-fid formula) between two feature sets.

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use candle_core::{Device, Tensor};
use clap::Args;
use segdiff_eval::{frechet_terms, FeatureStats};
use serde::Serialize;

use super::image_encoder::ImageEncoder;

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

#[derive(Debug, Serialize)]
pub(super) struct FidReport {
    metric: &'static str,
    pub(super) fid: f64,
    /// `|μa − μb|²`.
    pub(super) mean_term: f64,
    pub(super) trace_a: f64,
    pub(super) trace_b: f64,
    /// `Tr sqrtm(Σa Σb)`.
    trace_covmean: f64,
    pub(super) a: FeatureSource,
    pub(super) b: FeatureSource,
    encoder: Option<PathBuf>,
    /// Inception-v3 weights that encoded the image folders.
    #[serde(skip_serializing_if = "Option::is_none")]
    inception_weights: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
pub(super) struct FeatureSource {
    path: PathBuf,
    /// "features" (a safetensors file) or "images" (a folder encoded by the segmenter or by
    /// Inception-v3).
    pub(super) kind: &'static str,
    /// Tensor name inside the safetensors file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) tensor: Option<String>,
    pub(super) count: usize,
    pub(super) dim: usize,
}

pub(super) fn fid_report(args: &FidArgs, device: &Device) -> Result<FidReport> {
    ensure!(args.batch_size > 0, "--batch-size must be at least 1");
    let encoder = ImageEncoder::load(
        args.encoder.as_deref(),
        args.inception_weights.as_deref(),
        device,
    )?;
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

/// N×D features from a safetensors file, or from a folder of images through the encoder.
pub(super) fn load_features(
    path: &Path,
    encoder: Option<&ImageEncoder>,
    batch_size: usize,
    device: &Device,
) -> Result<(Tensor, FeatureSource)> {
    let (features, kind, tensor) = if path.is_dir() {
        let Some(encoder) = encoder else {
            bail!(
                "{} is a folder: encoding images needs --encoder SEGMENTER_DIR or \
                 --inception-weights FILE",
                path.display()
            )
        };
        (
            encoder.encode_folder(path, batch_size, device)?,
            "images",
            None,
        )
    } else {
        let (name, t) = read_feature_file(path)?;
        (t, "features", Some(name))
    };
    let (count, dim) = features.dims2()?;
    Ok((
        features,
        FeatureSource {
            path: path.to_path_buf(),
            kind,
            tensor,
            count,
            dim,
        },
    ))
}

/// The N×D tensor of a safetensors file (its only tensor, or the one named `features`) and its
/// name.
fn read_feature_file(path: &Path) -> Result<(String, Tensor)> {
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
    t.dims2().with_context(|| {
        format!(
            "{}: tensor `{name}` has shape {:?}, expected N×D",
            path.display(),
            t.dims()
        )
    })?;
    Ok((name, t))
}

pub(super) fn print_fid(r: &FidReport) {
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
