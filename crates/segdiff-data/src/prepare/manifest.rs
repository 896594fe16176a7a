//! `manifest.csv`: one row per written slice, and reading it back.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::orientation::SliceAxis;
use crate::split::Split;

use super::write_file_atomic;

/// One written slice, a row of manifest.csv.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ManifestRow {
    /// Image path relative to the output root.
    pub file: String,
    /// Split name.
    pub split: Split,
    /// Volume id.
    pub volume_id: String,
    /// Image source path.
    pub source: String,
    /// Slicing axis.
    pub axis: SliceAxis,
    /// Index along the RAS+ axis.
    pub slice_index: usize,
    /// Intensity transform with the range used.
    pub intensity: String,
}

pub(super) fn write_manifest(path: &Path, rows: &[ManifestRow]) -> Result<()> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let io_err =
        |e: csv::Error| DataError::io(path, "write CSV", std::io::Error::other(e.to_string()));
    w.write_record([
        "file",
        "split",
        "volume_id",
        "source",
        "axis",
        "slice_index",
        "intensity",
    ])
    .map_err(io_err)?;
    for r in rows {
        w.write_record([
            r.file.as_str(),
            r.split.name(),
            r.volume_id.as_str(),
            r.source.as_str(),
            r.axis.name(),
            &r.slice_index.to_string(),
            r.intensity.as_str(),
        ])
        .map_err(io_err)?;
    }
    let bytes = w
        .into_inner()
        .map_err(|e| DataError::io(path, "write CSV", std::io::Error::other(e.to_string())))?;
    write_file_atomic(path, &bytes)
}

/// Read `manifest.csv` of a prepared dataset.
pub fn read_manifest(path: &Path) -> Result<Vec<ManifestRow>> {
    let mut r = csv::Reader::from_path(path)
        .map_err(|e| DataError::io(path, "read CSV", std::io::Error::other(e.to_string())))?;
    let mut out = Vec::new();
    for rec in r.records() {
        let rec = rec.map_err(|e| DataError::Layout {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
        let bad = |what: &str| DataError::Layout {
            path: path.to_path_buf(),
            detail: format!(
                "line {}: bad {what}",
                rec.position().map(|p| p.line()).unwrap_or(0)
            ),
        };
        if rec.len() != 7 {
            return Err(bad("column count"));
        }
        out.push(ManifestRow {
            file: rec[0].to_string(),
            split: Split::parse(&rec[1]).ok_or_else(|| bad("split"))?,
            volume_id: rec[2].to_string(),
            source: rec[3].to_string(),
            axis: SliceAxis::parse(&rec[4]).ok_or_else(|| bad("axis"))?,
            slice_index: rec[5].parse().map_err(|_| bad("slice_index"))?,
            intensity: rec[6].to_string(),
        });
    }
    Ok(out)
}
