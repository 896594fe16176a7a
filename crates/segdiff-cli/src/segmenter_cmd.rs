//! `segdiff segmenter train|predict`: the MONAI UNet segmenter that scores generated images
//! (segdiff-eval does the work; this module reads files, shows progress and reports).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use segdiff_data::{Dataset, DatasetOptions, Split};
use segdiff_eval::png_files::write_label_png;
use segdiff_eval::{
    load_segmenter, predict, train_segmenter, Augmentation, EpochRecord, SegmenterRecipe,
    SplitData, TrainEvent,
};

use crate::png_io::{png_files, read_image};
use crate::runtime::Runtime;

#[derive(Debug, clap::Subcommand)]
pub enum SegmenterCommand {
    /// Train a segmenter on a dataset's training split, keeping the epoch with the lowest loss
    /// on its validation split.
    ///
    /// The recipe is MONAI's 2-D UNet tutorial: Dice + cross-entropy loss, AdamW with weight decay
    /// 1e-5, the learning rate cosine-annealed to 0 over all steps. Weight initialisation,
    /// shuffling and augmentation all follow --seed. Writes `model.safetensors` (PyTorch
    /// state-dict names), `segmenter.json` (network, classes, image size, how it was trained)
    /// and `history.csv` (one row per epoch) into --out.
    Train(SegmenterTrainArgs),
    /// Segment PNG images with a trained segmenter.
    ///
    /// Writes one greyscale PNG per image into --out, under the image's file name, whose pixel
    /// values are class ids (0 = background). Images must have the size and channel count the
    /// segmenter was trained with.
    Predict(SegmenterPredictArgs),
}

#[derive(Debug, clap::Args)]
pub struct SegmenterTrainArgs {
    /// Prepared dataset: `img/{train,val}/*.png` with class-id masks in `mask/all/{train,val}`.
    /// Without a `val` split the last epoch is kept.
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    /// Output folder for the segmenter.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Passes over the training split (the paper trains for 100).
    #[arg(long, default_value_t = 100)]
    pub epochs: usize,
    /// Images per optimiser step.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Initial AdamW learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// AdamW decoupled weight decay.
    #[arg(long, default_value_t = 1e-5)]
    pub weight_decay: f64,
    /// Channels of each UNet level, top first; the last is the bottleneck.
    #[arg(long, value_delimiter = ',', default_value = "16,32,64,128,256")]
    pub channels: Vec<usize>,
    /// Down-sampling stride of each level but the last (one fewer than --channels). Image sides
    /// must be multiples of their product.
    #[arg(long, value_delimiter = ',', default_value = "2,2,2,2")]
    pub strides: Vec<usize>,
    /// Residual units per block (0: plain convolutions).
    #[arg(long, default_value_t = 0)]
    pub res_units: usize,
    /// Augment with random horizontal and vertical flips.
    #[arg(long)]
    pub flips: bool,
    /// Augment with random 90° rotations (square images only).
    #[arg(long)]
    pub rot90: bool,
    /// Seed of weight initialisation, data order and augmentation.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Resize images and masks to N×N on load (default: as stored).
    #[arg(long, value_name = "N")]
    pub size: Option<u32>,
    /// Classes including background (default: `num_classes` in the dataset's `dataset.json`).
    #[arg(long)]
    pub num_classes: Option<usize>,
    /// Convert RGB images to grey on load.
    #[arg(long)]
    pub grey: bool,
}

#[derive(Debug, clap::Args)]
pub struct SegmenterPredictArgs {
    /// Segmenter folder written by `segdiff segmenter train` (or `segdiff eval`), or
    /// `hf://owner/name[@revision][/folder]`.
    #[arg(long, value_name = "DIR")]
    pub segmenter: PathBuf,
    /// A PNG image or a folder of them (8- or 16-bit grey, or RGB for 3-channel segmenters).
    #[arg(long, value_name = "DIR_OR_FILE")]
    pub images: PathBuf,
    /// Output folder for the class-id PNGs.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Images per forward pass.
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
}

pub fn run(cmd: SegmenterCommand, rt: &Runtime) -> Result<()> {
    match cmd {
        SegmenterCommand::Train(args) => train(&args, rt),
        SegmenterCommand::Predict(args) => predict_files(&args, &rt.device),
    }
}

/// Decodes every pair of `ds`.
fn load_all(ds: &Dataset) -> Result<SplitData> {
    let name = ds.split().name();
    if ds.is_empty() {
        bail!(
            "{}: the {name} split has no image/mask pairs",
            ds.root().display()
        );
    }
    let indices: Vec<usize> = (0..ds.len()).collect();
    SplitData::load(ds, &indices)
        .with_context(|| format!("reading the {name} split of {}", ds.root().display()))
}

fn has_split(data: &Path, split: Split) -> bool {
    ["img", "IMG", "images", "IMAGES"]
        .iter()
        .any(|d| data.join(d).join(split.name()).is_dir())
}

fn train(args: &SegmenterTrainArgs, rt: &Runtime) -> Result<()> {
    segdiff_io::remove_stale_temps_tree(&args.out)
        .with_context(|| format!("removing stale temporary files in {}", args.out.display()))?;
    let opts = DatasetOptions {
        num_classes: args.num_classes,
        force_grey: args.grey,
        resize: args.size,
        require_masks: true,
    };
    let train_ds = Dataset::open(&args.data, Split::Train, &opts)
        .with_context(|| format!("opening the train split of {}", args.data.display()))?;
    let num_classes = train_ds.num_classes().with_context(|| {
        format!(
            "{}: the number of classes is unknown; pass --num-classes",
            args.data.display()
        )
    })?;
    let train = load_all(&train_ds)?;
    let val = if has_split(&args.data, Split::Val) {
        let ds = Dataset::open(&args.data, Split::Val, &opts)
            .with_context(|| format!("opening the val split of {}", args.data.display()))?;
        Some(load_all(&ds)?)
    } else {
        eprintln!(
            "{}: no val split; the last epoch's weights are kept",
            args.data.display()
        );
        None
    };
    let recipe = SegmenterRecipe {
        channels: args.channels.clone(),
        strides: args.strides.clone(),
        num_res_units: args.res_units,
        epochs: args.epochs,
        batch_size: args.batch_size,
        lr: args.lr,
        weight_decay: args.weight_decay,
        augmentation: Augmentation {
            flips: args.flips,
            rot90: args.rot90,
        },
        seed: args.seed,
    };
    let options = recipe.options(train.channels(), num_classes, None, &rt.device);
    let train_data = train.seg_data()?;
    let val_data = val.as_ref().map(SplitData::seg_data).transpose()?;

    let steps = args.epochs * train.len().div_ceil(args.batch_size.max(1));
    let bar = crate::progress::bar(steps as u64, "segment");
    let mut last_val = String::new();
    let trained = train_segmenter(
        &train_data,
        val_data.as_ref(),
        &options,
        |event| match event {
            TrainEvent::Step {
                epoch,
                global_step,
                loss,
                ..
            } => {
                bar.set_position(global_step as u64);
                bar.set_message(format!(
                    "epoch {epoch}/{} loss {loss:.4}{last_val}",
                    args.epochs
                ));
            }
            TrainEvent::Epoch(EpochRecord {
                val_dice: Some(d), ..
            }) => last_val = format!(" | val Dice {d:.3}"),
            TrainEvent::Epoch(_) => {}
        },
    );
    bar.finish_and_clear();
    let trained = trained.context("training the segmenter")?;
    trained
        .save(&args.out)
        .with_context(|| format!("saving the segmenter to {}", args.out.display()))?;
    write_history(&args.out.join("history.csv"), &trained.history)?;

    let summary = trained.spec.training.as_ref();
    let best = trained.best_epoch();
    match summary.and_then(|t| t.best_val_dice.zip(t.best_val_loss)) {
        Some((dice, loss)) => println!(
            "best epoch {best} of {}: val Dice {dice:.4}, val loss {loss:.4} ({} training, {} \
             validation images); saved to {}",
            args.epochs,
            train.len(),
            val.as_ref().map_or(0, SplitData::len),
            args.out.display()
        ),
        None => println!(
            "kept epoch {best} of {} ({} training images, no validation); saved to {}",
            args.epochs,
            train.len(),
            args.out.display()
        ),
    }
    Ok(())
}

/// `history.csv`: one row per epoch.
fn write_history(path: &Path, history: &[EpochRecord]) -> Result<()> {
    let opt = |v: Option<f64>| v.map_or(String::new(), |x| format!("{x}"));
    let mut text = String::from("epoch,train_loss,val_loss,val_dice,lr,kept\n");
    for r in history {
        text.push_str(&format!(
            "{},{},{},{},{},{}\n",
            r.epoch,
            r.train_loss,
            opt(r.val_loss),
            opt(r.val_dice),
            r.lr,
            r.is_best
        ));
    }
    segdiff_io::write_atomic(path, |tmp| {
        std::fs::File::create(tmp)?.write_all(text.as_bytes())
    })
    .with_context(|| format!("writing {}", path.display()))
}

fn predict_files(args: &SegmenterPredictArgs, device: &Device) -> Result<()> {
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let (model, spec) = load_segmenter(&args.segmenter, device)
        .with_context(|| format!("loading the segmenter in {}", args.segmenter.display()))?;
    let files = png_files(&args.images)?;
    let channels = spec.network.in_channels;
    let [h, w] = spec.image_size;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    segdiff_io::remove_stale_temps(&args.out)
        .with_context(|| format!("removing stale temporary files in {}", args.out.display()))?;
    let bar = crate::progress::bar(files.len() as u64, "predict");
    for chunk in files.chunks(args.batch_size) {
        let mut values = Vec::with_capacity(chunk.len() * channels * h * w);
        for f in chunk {
            let (v, ih, iw) = read_image(f, channels)?;
            if (ih, iw) != (h, w) {
                bail!(
                    "{}: {ih}×{iw} pixels, but the segmenter in {} was trained on {h}×{w} images",
                    f.display(),
                    args.segmenter.display()
                );
            }
            values.extend(v);
        }
        let x = Tensor::from_vec(values, (chunk.len(), channels, h, w), device)?;
        let maps = predict(&model, &x, args.batch_size).context("segmenting")?;
        for (i, f) in chunk.iter().enumerate() {
            let name = f.file_name().context("an image path without a file name")?;
            write_label_png(&args.out.join(name), maps.sample(i), h, w)?;
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    println!(
        "wrote {} segmentation(s) ({} classes) to {}",
        files.len(),
        spec.num_classes,
        args.out.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_csv_has_one_row_per_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.csv");
        let rows = [
            EpochRecord {
                epoch: 1,
                train_loss: 1.5,
                val_loss: Some(1.25),
                val_dice: Some(0.5),
                lr: 1e-3,
                is_best: true,
            },
            EpochRecord {
                epoch: 2,
                train_loss: 1.0,
                val_loss: None,
                val_dice: None,
                lr: 5e-4,
                is_best: false,
            },
        ];
        write_history(&path, &rows).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            "epoch,train_loss,val_loss,val_dice,lr,kept\n1,1.5,1.25,0.5,0.001,true\n2,1,,,0.0005,false\n"
        );
    }
}
