//! `dataset.json`: what a prepared dataset holds and how it was made ([`DatasetInfo`]).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::intensity::Intensity;
use crate::labels::SliceFilter;
use crate::orientation::SliceAxis;
use crate::resize::Fit;
use crate::split::{Split, SplitRatios};

use super::{write_file_atomic, PrepareOptions, VolumeSummary, DATASET_JSON};

/// Contents of `dataset.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DatasetInfo {
    /// Layout/format tag (`segdiff-dataset/1`).
    pub format: String,
    /// Number of classes including background.
    pub num_classes: usize,
    /// Class names by id.
    pub class_names: Vec<String>,
    /// RGB colour per class, if given.
    pub class_colors: Option<Vec<[u8; 3]>>,
    /// Whether masks were written.
    pub has_masks: bool,
    /// Image width = height.
    pub size: u32,
    /// Image channels (1).
    pub channels: usize,
    /// Modality (CT, MR, ...) or null.
    pub modality: Option<String>,
    /// Slicing directions.
    pub axes: Vec<SliceAxis>,
    /// Fit mode.
    pub fit: Fit,
    /// Intensity transform.
    pub intensity: Intensity,
    /// Label mapping (textual).
    pub label_mapping: String,
    /// Slice filter.
    pub slice_filter: SliceFilter,
    /// Split ratios and seed.
    pub split_ratios: SplitRatios,
    /// Seed of the split draw.
    pub seed: u64,
    /// Volume ids per split.
    pub volumes: BTreeMap<String, Vec<String>>,
    /// Slice counts per split.
    pub slices: BTreeMap<String, usize>,
    /// The command that made the dataset.
    pub command: String,
}

impl DatasetInfo {
    /// The description of a run of `opts` that wrote `volumes`, `slices` slices per split
    /// (train, val, test); `modalities` are the readers' per volume.
    pub(super) fn new(
        opts: &PrepareOptions,
        volumes: &[VolumeSummary],
        slices: [usize; 3],
        modalities: &[Option<String>],
        has_masks: bool,
    ) -> Self {
        DatasetInfo {
            format: "segdiff-dataset/1".into(),
            num_classes: opts.labels.num_classes(),
            class_names: opts.labels.class_names.clone(),
            class_colors: opts.class_colors.clone(),
            has_masks,
            size: opts.size,
            channels: 1,
            modality: opts
                .modality
                .clone()
                .or_else(|| common_modality(modalities)),
            axes: opts.axes.clone(),
            fit: opts.fit,
            intensity: opts.intensity,
            label_mapping: opts.labels.describe(),
            slice_filter: opts.slice_filter,
            split_ratios: opts.ratios,
            seed: opts.seed,
            volumes: volume_ids_per_split(volumes),
            slices: Split::ALL
                .iter()
                .map(|s| (s.name().to_string(), slices[*s as usize]))
                .collect(),
            command: opts.command.clone(),
        }
    }
}

/// The modality all volumes agree on, if they do.
fn common_modality(modalities: &[Option<String>]) -> Option<String> {
    let first = modalities.first().cloned().flatten();
    modalities
        .iter()
        .all(|m| *m == first)
        .then_some(first)
        .flatten()
}

/// Sorted volume ids by split name, every split present.
fn volume_ids_per_split(volumes: &[VolumeSummary]) -> BTreeMap<String, Vec<String>> {
    let mut vol_ids: BTreeMap<String, Vec<String>> = Split::ALL
        .iter()
        .map(|s| (s.name().to_string(), Vec::new()))
        .collect();
    for v in volumes {
        vol_ids
            .entry(v.split.name().to_string())
            .or_default()
            .push(v.id.clone());
    }
    for ids in vol_ids.values_mut() {
        ids.sort();
    }
    vol_ids
}

/// Writes `info` as `dataset.json` into the staging folder `dir`.
pub(super) fn write_dataset_json(dir: &Path, info: &DatasetInfo) -> Result<()> {
    let json = serde_json::to_vec_pretty(info)
        .map_err(|e| DataError::io(dir, "encode JSON", std::io::Error::other(e)))?;
    write_file_atomic(&dir.join(DATASET_JSON), &json)
}

/// The intensity range `[lo, hi]` that grey levels 0 and 255 stand for in a prepared dataset, when
/// one range holds for all of it.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainingWindow {
    /// Value of grey level 0.
    pub lo: f64,
    /// Value of grey level 255.
    pub hi: f64,
    /// The dataset's modality (`dataset.json`), if recorded.
    pub modality: Option<String>,
}

impl DatasetInfo {
    /// Reads `dataset.json` of the prepared dataset in `dir`.
    pub fn read(dir: &Path) -> Result<DatasetInfo> {
        let path = dir.join(DATASET_JSON);
        let text = std::fs::read_to_string(&path).map_err(|e| DataError::io(&path, "read", e))?;
        serde_json::from_str(&text).map_err(|e| DataError::Layout {
            path,
            detail: e.to_string(),
        })
    }
}

/// The window of the prepared dataset in `dir`: the fixed window (or CT preset) of its
/// `dataset.json`; for percentile scaling, the range `manifest.csv` records when every volume
/// has the same one. `Ok(None)` when the ranges differ between volumes (no single window).
pub fn training_window(dir: &Path) -> Result<Option<TrainingWindow>> {
    let info = DatasetInfo::read(dir)?;
    let modality = info.modality.clone();
    let (lo, hi) = match info.intensity {
        Intensity::Window { lo, hi } => (lo, hi),
        Intensity::CtPreset { preset } => preset.range(),
        Intensity::Percentile { .. } => {
            let rows = super::read_manifest(&dir.join(super::MANIFEST))?;
            let mut ranges = rows.iter().map(|r| percentile_range(&r.intensity));
            let Some(Some(first)) = ranges.next() else {
                return Ok(None);
            };
            if !ranges.all(|r| r == Some(first)) {
                return Ok(None);
            }
            first
        }
    };
    Ok(Some(TrainingWindow { lo, hi, modality }))
}

/// The `[lo, hi]` of a manifest's `percentile[p,q]=[lo,hi]` intensity description.
fn percentile_range(desc: &str) -> Option<(f64, f64)> {
    let (_, r) = desc.split_once("=[")?;
    let (lo, hi) = r.strip_suffix(']')?.split_once(',')?;
    Some((lo.trim().parse().ok()?, hi.trim().parse().ok()?))
}

#[cfg(test)]
mod window_tests {
    use super::*;

    #[test]
    fn percentile_ranges_parse() {
        assert_eq!(
            percentile_range("percentile[1,99]=[0,225]"),
            Some((0.0, 225.0))
        );
        assert_eq!(
            percentile_range("percentile[0.5,99.5]=[-12.5,3e3]"),
            Some((-12.5, 3000.0))
        );
        assert_eq!(percentile_range("window[-1,1]"), None);
    }
}
