//! Train/val/test assignment by volume (never by slice), deterministic from a seed.
//!
//! Volume ids are sorted, shuffled with `StdRng::seed_from_u64(seed)` (rand 0.9), and cut in
//! that order into train, val, test. Counts follow the ratios by largest remainder; then every
//! split with a non-zero ratio gets at least one volume when there are enough volumes (taken from
//! the largest split). The result depends only on the set of ids, the ratios and the seed.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};

/// One of the three dataset splits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// Training slices.
    Train,
    /// Validation slices.
    Val,
    /// Test slices.
    Test,
}

impl Split {
    /// All splits in layout order.
    pub const ALL: [Split; 3] = [Split::Train, Split::Val, Split::Test];

    /// Folder name (`train`, `val`, `test`).
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
        }
    }

    /// Parse `train`, `val` or `test` (case-insensitive; `valid`/`validation` accepted).
    pub fn parse(s: &str) -> Option<Split> {
        match s.to_ascii_lowercase().as_str() {
            "train" => Some(Split::Train),
            "val" | "valid" | "validation" => Some(Split::Val),
            "test" => Some(Split::Test),
            _ => None,
        }
    }
}

/// Fractions of volumes going to train, val and test (normalised by their sum).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct SplitRatios {
    /// Share of train volumes.
    pub train: f64,
    /// Share of validation volumes.
    pub val: f64,
    /// Share of test volumes.
    pub test: f64,
}

impl Default for SplitRatios {
    fn default() -> Self {
        SplitRatios {
            train: 0.70,
            val: 0.15,
            test: 0.15,
        }
    }
}

impl SplitRatios {
    /// Parse `TRAIN,VAL,TEST` (e.g. `70,15,15` or `0.8,0.1,0.1`).
    pub fn parse(s: &str) -> Result<SplitRatios> {
        let v: Vec<f64> = s
            .split(',')
            .map(|t| t.trim().parse::<f64>())
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| {
                DataError::option(
                    "split",
                    format!("`{s}`: expected three numbers TRAIN,VAL,TEST"),
                )
            })?;
        if v.len() != 3 {
            return Err(DataError::option(
                "split",
                format!("`{s}`: expected three numbers TRAIN,VAL,TEST"),
            ));
        }
        let r = SplitRatios {
            train: v[0],
            val: v[1],
            test: v[2],
        };
        r.validate()?;
        Ok(r)
    }

    /// Ratios must be finite, non-negative and not all zero.
    pub fn validate(&self) -> Result<()> {
        let v = [self.train, self.val, self.test];
        if v.iter().any(|x| !x.is_finite() || *x < 0.0) || v.iter().sum::<f64>() <= 0.0 {
            return Err(DataError::option(
                "split",
                format!("ratios {v:?} must be non-negative and not all zero"),
            ));
        }
        Ok(())
    }

    /// Number of volumes per split for `n` volumes (see the module docs).
    pub fn counts(&self, n: usize) -> [usize; 3] {
        let r = [self.train, self.val, self.test];
        let sum: f64 = r.iter().sum();
        let exact: Vec<f64> = r.iter().map(|x| x / sum * n as f64).collect();
        let mut c: [usize; 3] = [0; 3];
        for i in 0..3 {
            c[i] = exact[i].floor() as usize;
        }
        let mut left = n - c.iter().sum::<usize>();
        let mut order = [0usize, 1, 2];
        order.sort_by(|&a, &b| {
            (exact[b] - exact[b].floor()).total_cmp(&(exact[a] - exact[a].floor()))
        });
        for &i in order.iter().cycle() {
            if left == 0 {
                break;
            }
            if r[i] > 0.0 {
                c[i] += 1;
                left -= 1;
            }
        }
        let wanted = r.iter().filter(|&&x| x > 0.0).count();
        if n >= wanted {
            for i in 0..3 {
                if r[i] > 0.0 && c[i] == 0 {
                    // Take one from the largest split that can spare it.
                    if let Some(j) = (0..3)
                        .filter(|&j| c[j] > 1)
                        .max_by_key(|&j| (c[j], std::cmp::Reverse(j)))
                    {
                        c[j] -= 1;
                        c[i] += 1;
                    }
                }
            }
        }
        c
    }
}

/// Split of each id in `ids` (same order), deterministic from `seed`; ids must be unique.
pub fn assign_splits(ids: &[String], ratios: &SplitRatios, seed: u64) -> Vec<Split> {
    let mut order: Vec<usize> = (0..ids.len()).collect();
    order.sort_by(|&a, &b| ids[a].cmp(&ids[b]));
    let mut rng = StdRng::seed_from_u64(seed);
    order.shuffle(&mut rng);
    let [nt, nv, _] = ratios.counts(ids.len());
    let mut out = vec![Split::Train; ids.len()];
    for (rank, &i) in order.iter().enumerate() {
        out[i] = if rank < nt {
            Split::Train
        } else if rank < nt + nv {
            Split::Val
        } else {
            Split::Test
        };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_follow_ratios_with_minimum_one() {
        let r = SplitRatios::default();
        assert_eq!(r.counts(1), [1, 0, 0]);
        assert_eq!(r.counts(3), [1, 1, 1]);
        assert_eq!(r.counts(10), [7, 2, 1]);
        assert_eq!(r.counts(20), [14, 3, 3]);
        assert_eq!(r.counts(100), [70, 15, 15]);
        let only = SplitRatios {
            train: 1.0,
            val: 0.0,
            test: 0.0,
        };
        assert_eq!(only.counts(5), [5, 0, 0]);
        for n in 0..50 {
            assert_eq!(r.counts(n).iter().sum::<usize>(), n);
        }
    }

    #[test]
    fn assignment_is_deterministic_and_order_free() {
        let ids: Vec<String> = (0..20).map(|i| format!("vol{i:02}")).collect();
        let a = assign_splits(&ids, &SplitRatios::default(), 7);
        let b = assign_splits(&ids, &SplitRatios::default(), 7);
        assert_eq!(a, b);
        let mut rev = ids.clone();
        rev.reverse();
        let c = assign_splits(&rev, &SplitRatios::default(), 7);
        for (i, id) in ids.iter().enumerate() {
            let j = rev.iter().position(|x| x == id).unwrap();
            assert_eq!(a[i], c[j]);
        }
        assert_eq!(a.iter().filter(|&&s| s == Split::Train).count(), 14);
        let d = assign_splits(&ids, &SplitRatios::default(), 8);
        assert_ne!(a, d);
    }
}
