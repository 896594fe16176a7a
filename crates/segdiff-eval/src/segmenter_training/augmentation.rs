//! Training-time augmentation: random flips and 90° rotations, the same for image and mask.

use rand::rngs::StdRng;
use rand::Rng;
use serde::{Deserialize, Serialize};

/// Random augmentations applied to training batches (the same transform to image and mask).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Augmentation {
    /// Horizontal and vertical flips, each with probability 1/2.
    pub flips: bool,
    /// Rotation by 0, 90, 180 or 270° (uniform); square images only.
    pub rot90: bool,
}

/// One sample's augmentation: flips first, then `rot` counter-clockwise quarter turns
/// (`numpy.rot90` direction).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Transform {
    pub(super) flip_h: bool,
    pub(super) flip_v: bool,
    pub(super) rot: u8,
}

impl Transform {
    pub(super) fn draw(aug: &Augmentation, rng: &mut StdRng) -> Self {
        Self {
            flip_h: aug.flips && rng.random::<bool>(),
            flip_v: aug.flips && rng.random::<bool>(),
            rot: if aug.rot90 {
                rng.random_range(0..4u8)
            } else {
                0
            },
        }
    }

    /// The transformed `h × w` plane (row-major); rotations need `h == w` (checked up front).
    pub(super) fn apply<T: Copy>(&self, plane: &[T], h: usize, w: usize) -> Vec<T> {
        let mut out = plane.to_vec();
        if self.flip_h {
            out.chunks_mut(w).for_each(|row| row.reverse());
        }
        if self.flip_v {
            out = out.chunks(w).rev().flatten().copied().collect();
        }
        for _ in 0..self.rot {
            // numpy.rot90: out[r][c] = in[c][n - 1 - r].
            let n = h;
            let src = out.clone();
            for r in 0..n {
                for c in 0..n {
                    out[r * n + c] = src[c * n + (n - 1 - r)];
                }
            }
        }
        out
    }
}
