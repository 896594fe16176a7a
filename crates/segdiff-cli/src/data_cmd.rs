//! `segdiff data check`: every problem of a prepared dataset at once (segdiff-data's
//! `check_dataset` does the work; this module shows progress and reports).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use segdiff_data::{check_dataset, CheckOptions, ProblemKind};

#[derive(Debug, clap::Subcommand)]
pub enum DataCommand {
    /// Check a prepared dataset before training: read every image and mask of every split once
    /// and report all problems, each naming its file, and a summary.
    ///
    /// Layout: DIR/img/{train,val,test}/*.png paired by file name with
    /// DIR/mask/all/{train,val,test}/*.png (class ids as pixel values), as `segdiff prepare`
    /// writes it and `segdiff train` reads it. Reported problems: unreadable files; colour masks
    /// (with the colour → id mapping below); image/mask size mismatches; mask ids not below the
    /// number of classes; images without masks and masks without images; grey and RGB images
    /// mixed; 8- and 16-bit images mixed; manifest.csv rows naming missing files. The summary
    /// gives pairs per split, each class's pixel share and presence (share of masks holding it),
    /// the share of empty masks, image formats, sizes and the intensity range.
    ///
    /// Colour → id mapping of colour masks (one for the whole dataset, from the set of colours
    /// found, whatever the file order): dataset.json's class_colors when they list every colour
    /// (colour i → id i); else, when every colour is grey (R = G = B) and below the number of
    /// classes, the grey value is the id;
    /// else black → 0 and the other colours by increasing luma (0.299 R + 0.587 G + 0.114 B,
    /// Pillow's), ties by R, then G, then B → 1, 2, 3, ….
    ///
    /// Exit codes: 0 no problem, 1 problems found (or the dataset could not be read), 2 a wrong
    /// command line.
    Check(DataCheckArgs),
}

#[derive(Debug, clap::Args)]
pub struct DataCheckArgs {
    /// The dataset root (holding img/ and mask/all/).
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    /// Number of classes, ids 0..N-1 (default: num_classes of DIR/dataset.json; given, it wins).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub num_classes: Option<u32>,
    /// Rewrite each colour mask in place (atomically) as an 8-bit id PNG with the mapping above,
    /// then check the dataset again; the report lists the converted files.
    #[arg(long)]
    pub convert_colour_masks: bool,
    /// Print the whole report as one JSON object on stdout (every problem, no cap).
    #[arg(long)]
    pub json: bool,
    /// Problems listed per kind in the text report (the rest are counted).
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub max_listed: usize,
}

pub fn run(cmd: DataCommand) -> Result<()> {
    match cmd {
        DataCommand::Check(args) => check(&args),
    }
}

fn check(args: &DataCheckArgs) -> Result<()> {
    if args.convert_colour_masks {
        // Masks are rewritten in place: what a killed conversion left half-written goes.
        segdiff_io::remove_stale_temps_tree(&args.data).with_context(|| {
            format!("removing stale temporary files in {}", args.data.display())
        })?;
    }
    let opts = CheckOptions {
        num_classes: args.num_classes.map(|n| n as usize),
        convert_colour_masks: args.convert_colour_masks,
        ..CheckOptions::default()
    };
    let start = std::time::Instant::now();
    let bar = crate::progress::bar(0, "check");
    let report = check_dataset(&args.data, &opts, |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })
    .with_context(|| format!("checking {}", args.data.display()))?;
    bar.finish_and_clear();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).context("serialising the report")?
        );
    } else {
        print!("{}", report.render(args.max_listed));
        if report.problems_of(ProblemKind::ColourMask).next().is_some() {
            println!(
                "convert colour masks to ids with --convert-colour-masks (rewrites them in place)"
            );
        }
        let files: usize = report
            .summary
            .splits
            .iter()
            .map(|s| s.images + s.masks)
            .sum();
        eprintln!(
            "checked {files} files in {:.2} s",
            start.elapsed().as_secs_f64()
        );
    }
    if !report.is_ok() {
        bail!(
            "{} problem(s) in {}",
            report.problems.len(),
            args.data.display()
        );
    }
    Ok(())
}
