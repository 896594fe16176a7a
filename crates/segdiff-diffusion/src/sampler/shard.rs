//! Splitting a sampling run across processes. A shard is a contiguous run of whole batches, and
//! batches are always cut at multiples of `batch_size` in the global image order, so every image
//! is computed in exactly the same batch whether the run is sharded or not: N shards together
//! reproduce the single run bit for bit (same `batch_size` everywhere), even on backends whose
//! kernels are not batch-invariant.

use std::ops::Range;

use crate::error::{DiffusionError, Result};

/// Shard `index` of `count`, 0-based (`index < count`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// Checks `count >= 1` and `index < count`.
    pub fn new(index: usize, count: usize) -> Result<Self> {
        let s = Self { index, count };
        s.validate()?;
        Ok(s)
    }

    fn validate(&self) -> Result<()> {
        if self.count == 0 || self.index >= self.count {
            return Err(DiffusionError::InvalidParameter {
                name: "shard",
                value: format!("{} of {}", self.index, self.count),
                reason: "need count >= 1 and a 0-based index < count",
            });
        }
        Ok(())
    }

    /// The global image indices of this shard: batches `[⌊index·B/count⌋, ⌊(index+1)·B/count⌋)`
    /// of the `B = ⌈total/batch_size⌉` batches. Shards may be empty when `count > B`.
    pub fn image_range(&self, total: usize, batch_size: usize) -> Result<Range<usize>> {
        self.validate()?;
        let bs = batch_size.max(1);
        let batches = total.div_ceil(bs);
        let b0 = self.index * batches / self.count;
        let b1 = (self.index + 1) * batches / self.count;
        Ok((b0 * bs).min(total)..(b1 * bs).min(total))
    }
}

/// The batches of `range`, cut at global multiples of `batch_size`.
pub(crate) fn batches(range: Range<usize>, batch_size: usize) -> Vec<Range<usize>> {
    let bs = batch_size.max(1);
    let mut out = Vec::new();
    let mut start = range.start;
    while start < range.end {
        let end = ((start / bs + 1) * bs).min(range.end);
        out.push(start..end);
        start = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_partition_the_run_on_batch_boundaries() {
        for total in [0usize, 1, 5, 7, 16, 17] {
            for bs in [1usize, 2, 3, 8] {
                for count in 1..=6 {
                    let mut next = 0;
                    for index in 0..count {
                        let r = Shard::new(index, count)
                            .unwrap()
                            .image_range(total, bs)
                            .unwrap();
                        assert_eq!(r.start, next, "total {total} bs {bs} {index}/{count}");
                        assert!(r.start.is_multiple_of(bs) || r.start == total);
                        next = r.end;
                    }
                    assert_eq!(next, total);
                }
            }
        }
    }

    #[test]
    fn shard_sizes_differ_by_at_most_one_batch() {
        let sizes: Vec<usize> = (0..3)
            .map(|i| Shard::new(i, 3).unwrap().image_range(10, 1).unwrap().len())
            .collect();
        assert_eq!(sizes, vec![3, 3, 4]);
    }

    #[test]
    fn batches_are_cut_at_global_multiples() {
        assert_eq!(batches(3..11, 4), vec![3..4, 4..8, 8..11]);
        assert_eq!(batches(0..0, 4), Vec::<Range<usize>>::new());
    }

    #[test]
    fn invalid_shards_are_rejected() {
        assert!(Shard::new(2, 2).is_err());
        assert!(Shard::new(0, 0).is_err());
    }
}
