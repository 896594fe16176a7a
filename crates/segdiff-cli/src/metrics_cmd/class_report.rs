//! The per-sample, per-class report that Dice and Hausdorff share, as JSON and as a table.

use std::path::PathBuf;

use segdiff_eval::ClassScores;
use serde::Serialize;

use super::masks::MaskArgs;
use super::output::{finite_or_null, fmt_value};

/// Per-sample, per-class scores and their MONAI reductions, with non-finite values made explicit.
#[derive(Debug, Serialize)]
pub(super) struct ClassReport {
    /// "dice" or "hausdorff".
    metric: &'static str,
    pred_dir: PathBuf,
    target_dir: PathBuf,
    pub(super) num_classes: usize,
    include_background: bool,
    /// Dice only: classes absent from the target are ignored (NaN) rather than scored 1/0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) ignore_empty: Option<bool>,
    /// Hausdorff only: the percentile (100 = maximum).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) percentile: Option<f64>,
    /// Hausdorff only: `[row, col]` pixel size, null = pixels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) spacing: Option<Option<[f64; 2]>>,
    pub(super) files: Vec<String>,
    pub(super) class_ids: Vec<u32>,
    /// `values[sample][class]`; null when NaN (ignored) or +inf (see `infinite_entries`).
    pub(super) values: Vec<Vec<Option<f64>>>,
    /// Entries equal to +inf.
    pub(super) infinite_entries: Vec<InfiniteEntry>,
    /// Count of ignored (NaN) entries.
    pub(super) ignored_entries: usize,
    /// MONAI `MetricReduction.MEAN`: each sample's mean over its valid classes, then the mean over
    /// samples; null when infinite or when no entry is valid.
    pub(super) mean: Option<f64>,
    pub(super) mean_infinite: bool,
    /// MONAI `MEAN_BATCH`: per class, the mean over samples with a valid value; null as `mean`.
    pub(super) mean_per_class: Vec<Option<f64>>,
    pub(super) mean_per_class_infinite: Vec<bool>,
    /// Valid (non-NaN) samples per class.
    valid_per_class: Vec<usize>,
}

#[derive(Debug, Serialize)]
pub(super) struct InfiniteEntry {
    pub(super) file: String,
    class_id: u32,
}

impl ClassReport {
    pub(super) fn new(
        metric: &'static str,
        masks: &MaskArgs,
        num_classes: usize,
        files: Vec<String>,
        scores: &ClassScores,
    ) -> Self {
        let class_ids = scores.class_ids().to_vec();
        let values = (0..scores.samples())
            .map(|s| scores.row(s).iter().map(|&v| finite_or_null(v)).collect())
            .collect();
        let infinite_entries = (0..scores.samples())
            .flat_map(|s| {
                scores
                    .row(s)
                    .iter()
                    .zip(&class_ids)
                    .filter(|(v, _)| v.is_infinite())
                    .map(|(_, &class_id)| InfiniteEntry {
                        file: files[s].clone(),
                        class_id,
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        let valid_per_class: Vec<usize> = (0..class_ids.len())
            .map(|c| {
                (0..scores.samples())
                    .filter(|&s| !scores.get(s, c).is_nan())
                    .count()
            })
            .collect();
        let per_class = scores.mean_per_class();
        let mean = scores.mean();
        let any_valid = scores.count_valid() > 0;
        Self {
            metric,
            pred_dir: masks.pred.clone(),
            target_dir: masks.target.clone(),
            num_classes,
            include_background: masks.include_background,
            ignore_empty: None,
            percentile: None,
            spacing: None,
            files,
            class_ids,
            values,
            infinite_entries,
            ignored_entries: scores.as_slice().iter().filter(|v| v.is_nan()).count(),
            mean: finite_or_null(mean).filter(|_| any_valid),
            mean_infinite: mean.is_infinite(),
            mean_per_class: per_class
                .iter()
                .zip(&valid_per_class)
                .map(|(&v, &n)| finite_or_null(v).filter(|_| n > 0))
                .collect(),
            mean_per_class_infinite: per_class.iter().map(|v| v.is_infinite()).collect(),
            valid_per_class,
        }
    }
}

pub(super) fn print_class_table(r: &ClassReport) {
    let digits = if r.metric == "dice" { 4 } else { 3 };
    let what = match (r.metric, r.percentile) {
        ("dice", _) => "Dice".to_string(),
        (_, Some(p)) if p >= 100.0 => "Hausdorff distance (maximum)".to_string(),
        (_, Some(p)) => format!("HD{p}"),
        _ => "Hausdorff distance".to_string(),
    };
    let unit = match r.spacing {
        Some(Some(s)) => format!(", spacing {},{}", s[0], s[1]),
        Some(None) => ", in pixels".into(),
        None => String::new(),
    };
    println!(
        "{what}: {} file pairs, {} classes (background {}{}{unit})",
        r.files.len(),
        r.num_classes,
        if r.include_background {
            "included"
        } else {
            "excluded"
        },
        match r.ignore_empty {
            Some(true) => ", classes absent from the target ignored",
            Some(false) => ", classes absent from the target scored 1/0",
            None => "",
        }
    );
    println!(
        "{:>6}  {:>10}  {:>7}  {:>5}",
        "class", "mean", "valid", "inf"
    );
    for (i, id) in r.class_ids.iter().enumerate() {
        let infs = r
            .infinite_entries
            .iter()
            .filter(|e| e.class_id == *id)
            .count();
        println!(
            "{id:>6}  {:>10}  {:>7}  {infs:>5}",
            fmt_value(r.mean_per_class[i], r.mean_per_class_infinite[i], digits),
            format!("{}/{}", r.valid_per_class[i], r.files.len()),
        );
    }
    println!(
        "{:>6}  {:>10}  ({} ignored entries, {} infinite)",
        "mean",
        fmt_value(r.mean, r.mean_infinite, digits),
        r.ignored_entries,
        r.infinite_entries.len()
    );
}
