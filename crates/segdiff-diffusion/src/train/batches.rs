//! Which samples each micro-batch holds, and the RNG of each step: both pure functions of the
//! seed, so a run can be resumed from any step and continue bit for bit.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

/// The RNG of micro-batch `micro` of optimiser step `step`.
pub fn step_rng(seed: u64, step: usize, micro: usize) -> StdRng {
    // SplitMix-style mixing so neighbouring steps get unrelated streams.
    let mut z = seed
        .wrapping_add(0x9E37_79B9_7F4A_7C15u64.wrapping_mul(step as u64 + 1))
        .wrapping_add((micro as u64) << 48);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    StdRng::seed_from_u64(z ^ (z >> 31))
}

/// The sample order of `epoch`: a permutation of `0..len` from `(seed, epoch)`.
pub fn epoch_order(seed: u64, epoch: usize, len: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    let mut rng = step_rng(seed ^ 0xDA7A_0DE5, epoch, 7);
    order.shuffle(&mut rng);
    order
}

/// How a data set of `len` samples is cut into micro-batches, epoch after epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchPlan {
    pub seed: u64,
    pub len: usize,
    pub batch_size: usize,
    pub grad_accumulation: usize,
}

impl BatchPlan {
    /// Micro-batches per epoch actually used (a multiple of the accumulation count).
    pub fn micro_per_epoch(&self) -> usize {
        let micro = self.len.div_ceil(self.batch_size);
        (micro / self.grad_accumulation).max(1) * self.grad_accumulation
    }

    /// The epoch of micro-batch `k` of optimiser step `step`, and its sample indices.
    pub fn batch(&self, step: usize, k: usize) -> (usize, Vec<usize>) {
        let bs = self.batch_size;
        let micro_per_epoch = self.len.div_ceil(bs);
        let usable = self.micro_per_epoch();
        let global = step * self.grad_accumulation + k;
        let epoch = global / usable;
        // With fewer micro-batches than the accumulation count the epoch's batches repeat.
        let pos = (global % usable) % micro_per_epoch;
        let order = epoch_order(self.seed, epoch, self.len);
        let start = pos * bs;
        let end = (start + bs).min(self.len);
        (epoch, order[start..end].to_vec())
    }

    /// Epochs completed after `step` optimiser steps.
    pub fn epochs_done(&self, step: usize) -> usize {
        step * self.grad_accumulation / self.micro_per_epoch()
    }
}
