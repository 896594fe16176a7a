//! Training pairs of adjacent slices for neighbour-conditioned models: a dataset prepared from
//! volumes, whose `manifest.csv` gives each slice's volume, axis and index, as
//! [`DiffusionBatch`]es carrying both neighbours of every sample. Which neighbour the model sees,
//! and whether it is dropped, is drawn in the loss from the step's RNG.

use std::collections::HashMap;
use std::path::Path;

use segdiff_data::prepare::MANIFEST;
use segdiff_data::{read_manifest, Dataset, ManifestRow};

use super::dataset_batches::DatasetBatches;
use super::diffusion::{AdjacentSlices, DiffusionBatch};
use super::step_loop::TrainData;
use crate::{DiffusionError, Result};

/// A dataset split with each sample's slices at `slice_index − 1` and `+ 1` (same volume and
/// axis, same split) when they were written.
pub struct NeighbourBatches {
    pairs: DatasetBatches,
    /// Per sample: the dataset indices of the slice before and after it.
    adjacent: Vec<[Option<usize>; 2]>,
}

impl NeighbourBatches {
    /// Reads `manifest.csv` at the dataset root; a dataset without one (not prepared from
    /// volumes) is an error naming the file.
    pub fn new(data: Dataset, guided: bool) -> Result<Self> {
        let path = data.root().join(MANIFEST);
        if !path.is_file() {
            return Err(DiffusionError::train_data(format!(
                "{}: missing; neighbour conditioning needs a dataset prepared from volumes \
                 (`segdiff prepare`), whose manifest gives each slice's volume_id, axis and \
                 slice_index",
                path.display()
            )));
        }
        let rows = read_manifest(&path).map_err(DiffusionError::train_data)?;
        Self::from_manifest(data, guided, &rows, &path)
    }

    /// Pairs the samples of `data` through manifest `rows` (read from `path`, for messages).
    /// Every sample must have a row (matched by file name within the split).
    pub fn from_manifest(
        data: Dataset,
        guided: bool,
        rows: &[ManifestRow],
        path: &Path,
    ) -> Result<Self> {
        let by_name: HashMap<&str, &ManifestRow> = rows
            .iter()
            .filter(|r| r.split == data.split())
            .filter_map(|r| {
                let name = Path::new(&r.file).file_name()?.to_str()?;
                Some((name, r))
            })
            .collect();
        let mut positions = Vec::with_capacity(data.len());
        for item in data.items() {
            let row = by_name.get(item.name.as_str()).ok_or_else(|| {
                DiffusionError::train_data(format!(
                    "{}: no row for {} ({} split)",
                    path.display(),
                    item.name,
                    data.split().name()
                ))
            })?;
            positions.push((row.volume_id.as_str(), row.axis.name(), row.slice_index));
        }
        let index: HashMap<(&str, &str, usize), usize> = positions
            .iter()
            .enumerate()
            .map(|(i, &key)| (key, i))
            .collect();
        let adjacent = positions
            .iter()
            .map(|&(volume, axis, slice)| {
                let at = |s: Option<usize>| s.and_then(|s| index.get(&(volume, axis, s)).copied());
                [at(slice.checked_sub(1)), at(slice.checked_add(1))]
            })
            .collect();
        Ok(Self {
            pairs: DatasetBatches::new(data, guided),
            adjacent,
        })
    }

    /// The dataset indices of the slices before and after sample `index`.
    pub fn adjacent(&self, index: usize) -> [Option<usize>; 2] {
        self.adjacent[index]
    }

    /// Samples with at least one neighbour.
    pub fn paired(&self) -> usize {
        self.adjacent
            .iter()
            .filter(|a| a.iter().any(Option::is_some))
            .count()
    }
}

impl TrainData for NeighbourBatches {
    type Batch = DiffusionBatch;

    fn len(&self) -> usize {
        self.adjacent.len()
    }

    fn load(&self, indices: &[usize]) -> Result<DiffusionBatch> {
        let (images, masks) = self.pairs.load_pairs(indices)?;
        let side = |k: usize| -> Result<AdjacentSlices> {
            let found: Vec<Option<usize>> = indices.iter().map(|&i| self.adjacent[i][k]).collect();
            // A missing neighbour loads the sample itself as a placeholder (gated out by its
            // presence flag), so the batch keeps one row per sample.
            let load: Vec<usize> = indices
                .iter()
                .zip(&found)
                .map(|(&i, f)| f.unwrap_or(i))
                .collect();
            let (images, masks) = self.pairs.load_pairs(&load)?;
            Ok(AdjacentSlices {
                images,
                masks,
                present: found.iter().map(Option::is_some).collect(),
            })
        };
        Ok(DiffusionBatch {
            images,
            masks,
            neighbours: Some([side(0)?, side(1)?]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use segdiff_data::{DatasetOptions, SliceAxis, Split};

    fn row(file: &str, split: Split, volume: &str, axis: SliceAxis, slice: usize) -> ManifestRow {
        ManifestRow {
            file: format!("img/{}/{file}", split.name()),
            split,
            volume_id: volume.into(),
            source: format!("{volume}.nii.gz"),
            axis,
            slice_index: slice,
            intensity: "minmax".into(),
        }
    }

    /// Adjacency is slice ± 1 within one volume, axis and split; gaps and ends have none.
    #[test]
    fn pairs_adjacent_slices_of_the_same_volume_and_axis() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, c) = (SliceAxis::Axial, SliceAxis::Coronal);
        let rows = vec![
            row("a0.png", Split::Train, "a", a, 0),
            row("a1.png", Split::Train, "a", a, 1),
            row("a2.png", Split::Train, "a", a, 2),
            row("a4.png", Split::Train, "a", a, 4),
            row("b1.png", Split::Train, "b", a, 1),
            row("b2.png", Split::Train, "b", a, 2),
            row("ac3.png", Split::Train, "a", c, 3),
            row("ac1.png", Split::Train, "a", c, 1),
            // another split's slice 3 of volume a is not a neighbour
            row("a3.png", Split::Val, "a", a, 3),
        ];
        for r in &rows {
            let path = tmp.path().join(&r.file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, b"").unwrap();
        }
        let data = Dataset::open(
            tmp.path(),
            Split::Train,
            &DatasetOptions {
                require_masks: false,
                ..DatasetOptions::default()
            },
        )
        .unwrap();
        let manifest = tmp.path().join(MANIFEST);
        let pairs = NeighbourBatches::from_manifest(data.clone(), false, &rows, &manifest).unwrap();
        let index = |name: &str| data.items().iter().position(|i| i.name == name).unwrap();
        let adjacent = |name: &str| {
            pairs
                .adjacent(index(name))
                .map(|o| o.map(|i| data.items()[i].name.clone()))
        };
        let some = |n: &str| Some(n.to_string());
        assert_eq!(adjacent("a0.png"), [None, some("a1.png")]);
        assert_eq!(adjacent("a1.png"), [some("a0.png"), some("a2.png")]);
        assert_eq!(adjacent("a2.png"), [some("a1.png"), None]);
        assert_eq!(adjacent("a4.png"), [None, None]);
        assert_eq!(adjacent("b1.png"), [None, some("b2.png")]);
        assert_eq!(adjacent("ac1.png"), [None, None]);
        assert_eq!(adjacent("ac3.png"), [None, None]);
        assert_eq!(pairs.paired(), 5);
        assert_eq!(pairs.len(), 8);
        // a slice missing from the manifest is named; no manifest at all names the file
        let err = NeighbourBatches::from_manifest(data.clone(), false, &rows[1..], &manifest)
            .err()
            .unwrap();
        assert!(format!("{:?}", err).contains("a0.png"), "{err:?}");
        let err = NeighbourBatches::new(data, false).err().unwrap();
        assert!(format!("{:?}", err).contains("manifest.csv"), "{err:?}");
    }
}
