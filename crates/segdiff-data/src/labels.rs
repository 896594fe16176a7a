//! Label values → class ids, and which slices to keep.
//!
//! A [`LabelMapping`] turns the integer values of a label volume (or DICOM SEG segment numbers)
//! into class ids `0..num_classes` with names; class 0 is always `background`. Written as
//! `1=liver,2=bladder` (class ids follow the order in which names first appear, so a repeated
//! name merges several source values into one class) or with explicit ids `5=1:liver,6=2:kidney`.
//! Value 0 is background unless listed. Unlisted values become background, or are an error when
//! the mapping is strict. Without a mapping ([`LabelMapping::identity`]) values are the class ids
//! and any value `>= num_classes` is an error naming the file and the value.

use std::collections::BTreeMap;
use std::path::Path;

use ndarray::Array3;
use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};

/// Name of class 0.
pub const BACKGROUND: &str = "background";

/// Source label value → class id mapping with class names (see the module docs).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LabelMapping {
    /// Explicit (source value, class id) pairs; empty for the identity mapping.
    pub pairs: Vec<(i64, u8)>,
    /// Class names indexed by class id; `class_names[0] == "background"`.
    pub class_names: Vec<String>,
    /// Unlisted source values are an error instead of background (explicit mappings only).
    pub strict: bool,
    /// Source values are class ids (no `pairs`).
    pub identity: bool,
}

impl LabelMapping {
    /// Values are class ids; `names` are the foreground names (class 1, 2, ...).
    pub fn identity(names: &[String]) -> Result<LabelMapping> {
        let mut class_names = vec![BACKGROUND.to_string()];
        class_names.extend(names.iter().cloned());
        let m = LabelMapping {
            pairs: Vec::new(),
            class_names,
            strict: true,
            identity: true,
        };
        m.validate()?;
        Ok(m)
    }

    /// Identity mapping for `num_classes` classes named `class_1`, `class_2`, ...
    pub fn identity_count(num_classes: usize) -> Result<LabelMapping> {
        if num_classes < 1 {
            return Err(DataError::option("num_classes", "must be at least 1"));
        }
        let names: Vec<String> = (1..num_classes).map(|i| format!("class_{i}")).collect();
        Self::identity(&names)
    }

    /// Parse `SRC=NAME[,SRC=NAME...]` or `SRC=ID:NAME[,...]`; `num_classes` (if given) must cover
    /// every id.
    pub fn parse(spec: &str, strict: bool, num_classes: Option<usize>) -> Result<LabelMapping> {
        let bad = |detail: String| DataError::option("labels", detail);
        let mut pairs: Vec<(i64, u8)> = Vec::new();
        let mut names: BTreeMap<u8, String> = BTreeMap::new();
        names.insert(0, BACKGROUND.to_string());
        let mut next_id: u32 = 1;
        for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (src, rhs) = entry
                .split_once('=')
                .ok_or_else(|| bad(format!("`{entry}`: expected SRC=NAME or SRC=ID:NAME")))?;
            let src: i64 = src.trim().parse().map_err(|_| {
                bad(format!(
                    "`{entry}`: source value `{}` is not an integer",
                    src.trim()
                ))
            })?;
            if pairs.iter().any(|&(s, _)| s == src) {
                return Err(bad(format!("source value {src} is listed twice")));
            }
            let rhs = rhs.trim();
            let (id, name) = match rhs.split_once(':') {
                Some((id, name)) => {
                    let id: u32 = id.trim().parse().map_err(|_| {
                        bad(format!(
                            "`{entry}`: class id `{}` is not an integer",
                            id.trim()
                        ))
                    })?;
                    (Some(id), name.trim().to_string())
                }
                None => (None, rhs.to_string()),
            };
            if name.is_empty() || name.contains(['"', '\n', '\r']) {
                return Err(bad(format!(
                    "`{entry}`: class name must be non-empty plain text"
                )));
            }
            let existing = names
                .iter()
                .find(|(_, n)| **n == name)
                .map(|(&i, _)| u32::from(i));
            let id = match (id, existing) {
                (Some(i), Some(e)) if i != e => {
                    return Err(bad(format!("class `{name}` is given ids {e} and {i}")));
                }
                (Some(i), _) => i,
                (None, Some(e)) => e,
                (None, None) => {
                    while names.contains_key(&(next_id.min(255) as u8)) && next_id < 256 {
                        next_id += 1;
                    }
                    next_id
                }
            };
            if id > 255 {
                return Err(bad(format!("class id {id} does not fit in an 8-bit mask")));
            }
            let id = id as u8;
            if let Some(n) = names.get(&id) {
                if *n != name {
                    return Err(bad(format!(
                        "class id {id} is named both `{n}` and `{name}`"
                    )));
                }
            }
            names.insert(id, name);
            pairs.push((src, id));
        }
        if pairs.is_empty() {
            return Err(bad("no SRC=NAME entries".into()));
        }
        let max_id = names.keys().copied().max().unwrap_or(0) as usize;
        let n = match num_classes {
            Some(n) if n <= max_id => {
                return Err(DataError::option(
                    "num_classes",
                    format!("{n} classes declared but the mapping uses class id {max_id}"),
                ))
            }
            Some(n) => n,
            None => max_id + 1,
        };
        let class_names = (0..n)
            .map(|i| {
                names
                    .get(&(i as u8))
                    .cloned()
                    .unwrap_or_else(|| format!("class_{i}"))
            })
            .collect();
        let m = LabelMapping {
            pairs,
            class_names,
            strict,
            identity: false,
        };
        m.validate()?;
        Ok(m)
    }

    /// Number of classes including background.
    pub fn num_classes(&self) -> usize {
        self.class_names.len()
    }

    /// Check the invariants (1..=256 classes, ids in range, background first).
    pub fn validate(&self) -> Result<()> {
        let n = self.num_classes();
        if n == 0 || n > 256 {
            return Err(DataError::option(
                "labels",
                format!("{n} classes: must be 1..=256"),
            ));
        }
        if let Some(&(s, id)) = self.pairs.iter().find(|&&(_, id)| usize::from(id) >= n) {
            return Err(DataError::option(
                "labels",
                format!(
                    "source value {s} maps to class id {id}, not below the declared {n} classes"
                ),
            ));
        }
        Ok(())
    }

    /// Class id of a source value: `Ok(None)` means "unlisted" (background unless strict).
    fn lookup(&self, value: i64) -> Option<u8> {
        if self.identity {
            return u8::try_from(value)
                .ok()
                .filter(|&v| usize::from(v) < self.num_classes());
        }
        self.pairs
            .iter()
            .find(|&&(s, _)| s == value)
            .map(|&(_, id)| id)
    }

    /// Map one source value, with the errors the module docs describe; `path` names the file.
    pub fn class_of(&self, value: f64, path: &Path) -> Result<u8> {
        if !value.is_finite() || value.fract() != 0.0 {
            return Err(DataError::LabelValue {
                path: path.to_path_buf(),
                value,
                detail: "label maps must hold integer values".into(),
            });
        }
        let v = value as i64;
        if let Some(id) = self.lookup(v) {
            return Ok(id);
        }
        if self.identity {
            return Err(DataError::ClassOutOfRange {
                path: path.to_path_buf(),
                value: v,
                num_classes: self.num_classes(),
            });
        }
        if v == 0 {
            return Ok(0);
        }
        if self.strict {
            return Err(DataError::LabelValue {
                path: path.to_path_buf(),
                value,
                detail: "not listed in the strict label mapping".into(),
            });
        }
        Ok(0)
    }

    /// Map a whole label volume to class ids.
    pub fn apply(&self, labels: &Array3<f32>, path: &Path) -> Result<Array3<u8>> {
        // Labels hold few distinct values: cache the last one to keep this a tight loop.
        let mut last: Option<(u32, u8)> = None;
        let mut out = Vec::with_capacity(labels.len());
        // Iterate in memory order and rebuild with the same layout.
        let std_layout = labels.is_standard_layout();
        let view = if std_layout {
            labels.view()
        } else {
            labels.t()
        };
        for &v in view.iter() {
            let bits = v.to_bits();
            let id = match last {
                Some((b, id)) if b == bits => id,
                _ => {
                    let id = self.class_of(f64::from(v), path)?;
                    last = Some((bits, id));
                    id
                }
            };
            out.push(id);
        }
        let shape = view.raw_dim();
        let arr = Array3::from_shape_vec(shape, out).map_err(|e| DataError::LabelValue {
            path: path.to_path_buf(),
            value: f64::NAN,
            detail: e.to_string(),
        })?;
        Ok(if std_layout { arr } else { arr.reversed_axes() })
    }

    /// Textual form accepted by [`LabelMapping::parse`] (`identity` for the identity mapping).
    pub fn describe(&self) -> String {
        if self.identity {
            return "identity".into();
        }
        self.pairs
            .iter()
            .map(|&(s, id)| format!("{s}={id}:{}", self.class_names[usize::from(id)]))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Keep a slice only if its mask has at least `min_classes` distinct foreground classes and at
/// least `min_pixels` foreground pixels (after resizing, i.e. on the mask that is written).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SliceFilter {
    /// Minimum number of distinct non-zero classes.
    pub min_classes: usize,
    /// Minimum number of non-zero pixels.
    pub min_pixels: usize,
}

impl SliceFilter {
    /// Whether a mask passes the filter.
    pub fn keep(&self, mask: &[u8]) -> bool {
        if self.min_classes == 0 && self.min_pixels == 0 {
            return true;
        }
        let mut seen = [false; 256];
        let mut fg = 0usize;
        for &v in mask {
            if v != 0 {
                fg += 1;
                seen[usize::from(v)] = true;
            }
        }
        let classes = seen.iter().filter(|&&s| s).count();
        classes >= self.min_classes && fg >= self.min_pixels
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_orders_and_merges_names() {
        let m = LabelMapping::parse("1=liver,2=bladder", false, None).unwrap();
        assert_eq!(m.class_names, vec!["background", "liver", "bladder"]);
        assert_eq!(m.pairs, vec![(1, 1), (2, 2)]);
        let m = LabelMapping::parse("7=kidney, 8=kidney, 3=spleen", false, None).unwrap();
        assert_eq!(m.num_classes(), 3);
        assert_eq!(m.pairs, vec![(7, 1), (8, 1), (3, 2)]);
        let m = LabelMapping::parse("5=2:liver,6=1:bone", true, Some(4)).unwrap();
        assert_eq!(
            m.class_names,
            vec!["background", "bone", "liver", "class_3"]
        );
    }

    #[test]
    fn parse_rejects_bad_specs() {
        for (spec, n) in [
            ("1=liver,1=spleen", None),
            ("x=liver", None),
            ("1=3:liver,2=3:spleen", None),
            ("1=liver", Some(1)),
            ("1=5:liver", Some(4)),
            ("1=300:big", None),
            ("", None),
            ("1=", None),
        ] {
            assert!(LabelMapping::parse(spec, false, n).is_err(), "{spec}");
        }
    }

    #[test]
    fn class_of_handles_unlisted_strict_and_range() {
        let p = Path::new("lab.nii");
        let loose = LabelMapping::parse("1=liver,2=bladder", false, None).unwrap();
        assert_eq!(loose.class_of(2.0, p).unwrap(), 2);
        assert_eq!(loose.class_of(9.0, p).unwrap(), 0);
        assert!(matches!(
            loose.class_of(1.5, p),
            Err(DataError::LabelValue { .. })
        ));
        let strict = LabelMapping::parse("1=liver,2=bladder", true, None).unwrap();
        assert_eq!(strict.class_of(0.0, p).unwrap(), 0);
        let err = strict.class_of(9.0, p).unwrap_err().to_string();
        assert!(err.contains("lab.nii") && err.contains('9'), "{err}");
        let id = LabelMapping::identity_count(4).unwrap();
        assert_eq!(id.class_of(3.0, p).unwrap(), 3);
        let err = id.class_of(4.0, p).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::ClassOutOfRange {
                    value: 4,
                    num_classes: 4,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn apply_keeps_layout() {
        use ndarray::ShapeBuilder;
        let f = Array3::from_shape_vec((2, 3, 2).f(), (0..12).map(|v| (v % 3) as f32).collect())
            .unwrap();
        let m = LabelMapping::parse("1=a,2=b", false, None).unwrap();
        let out = m.apply(&f, Path::new("x")).unwrap();
        for (a, b) in f.iter().zip(out.iter()) {
            assert_eq!(*a as u8, *b);
        }
        assert_eq!(out.shape(), f.shape());
    }

    #[test]
    fn slice_filter_counts_classes_and_pixels() {
        let f = SliceFilter {
            min_classes: 2,
            min_pixels: 3,
        };
        assert!(f.keep(&[0, 1, 2, 2]));
        assert!(!f.keep(&[0, 1, 1, 1]));
        assert!(!f.keep(&[0, 1, 2, 0]));
        assert!(SliceFilter::default().keep(&[0, 0]));
    }
}
