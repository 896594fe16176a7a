//! Per-image random streams. Image `i` of a run (its index in mask order, counted over the whole
//! run, not the batch or shard) draws all of its noise from generators keyed by `(seed, i)`, so it
//! is reproducible alone and does not depend on which other images share its batch.

use candle_core::{DType, Device, Tensor};
use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::error::Result;
use crate::random::randn;

/// The independent noise streams of one image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NoiseStream {
    /// x_T, the starting noise.
    Initial,
    /// Variance noise of stochastic steps (DDPM, DDIM with η > 0), one draw per step.
    Step,
    /// Noise that takes the real image to t̃ for latent interpolation.
    Interpolation,
    /// Augmentation noise of the neighbour fed to a neighbour-conditioned model
    /// ([`crate::NeighbourScheme::noise`]).
    Neighbour,
}

impl NoiseStream {
    fn tag(self) -> u64 {
        match self {
            Self::Initial => 1,
            Self::Step => 2,
            Self::Interpolation => 3,
            Self::Neighbour => 4,
        }
    }
}

/// The generator of `stream` for image `image_index` of a run seeded with `seed`.
///
/// The 32-byte ChaCha key is `seed ‖ image_index ‖ stream tag ‖ "segdiff\0"` (little-endian u64s),
/// so distinct (seed, image, stream) triples never share a stream; keeping `init_noise` and
/// step noise apart means an explicit x_T leaves the other draws unchanged.
pub fn image_rng(seed: u64, image_index: usize, stream: NoiseStream) -> StdRng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&(image_index as u64).to_le_bytes());
    key[16..24].copy_from_slice(&stream.tag().to_le_bytes());
    key[24..].copy_from_slice(b"segdiff\0");
    StdRng::from_seed(key)
}

/// x_T of image `image_index`: (1, C, H, W) standard-normal f32, as the sampler draws it.
pub fn initial_noise(
    seed: u64,
    image_index: usize,
    (c, h, w): (usize, usize, usize),
    device: &Device,
) -> Result<Tensor> {
    let mut rng = image_rng(seed, image_index, NoiseStream::Initial);
    randn(&mut rng, (1, c, h, w), DType::F32, device)
}

/// One (1, C, H, W) draw per generator, stacked along dim 0.
pub(crate) fn draw_batch(
    rngs: &mut [StdRng],
    (c, h, w): (usize, usize, usize),
    device: &Device,
) -> Result<Tensor> {
    let parts = rngs
        .iter_mut()
        .map(|r| randn(r, (1, c, h, w), DType::F32, device))
        .collect::<Result<Vec<_>>>()?;
    Ok(Tensor::cat(&parts, 0)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    fn first_draws(mut r: StdRng) -> [u64; 4] {
        [r.random(), r.random(), r.random(), r.random()]
    }

    #[test]
    fn streams_differ_by_seed_image_and_stream() {
        let base = first_draws(image_rng(0, 1, NoiseStream::Initial));
        assert_eq!(base, first_draws(image_rng(0, 1, NoiseStream::Initial)));
        // seed and index must not be interchangeable (seed 1 image 0 vs seed 0 image 1)
        assert_ne!(base, first_draws(image_rng(1, 0, NoiseStream::Initial)));
        assert_ne!(base, first_draws(image_rng(0, 2, NoiseStream::Initial)));
        assert_ne!(base, first_draws(image_rng(0, 1, NoiseStream::Step)));
        assert_ne!(
            first_draws(image_rng(0, 1, NoiseStream::Step)),
            first_draws(image_rng(0, 1, NoiseStream::Interpolation))
        );
    }

    #[test]
    fn batch_draw_equals_single_draws() {
        let dev = Device::Cpu;
        let mut rngs: Vec<StdRng> = (3..6)
            .map(|i| image_rng(9, i, NoiseStream::Initial))
            .collect();
        let batch = draw_batch(&mut rngs, (2, 3, 4), &dev).unwrap();
        for (row, i) in (3..6).enumerate() {
            let alone = initial_noise(9, i, (2, 3, 4), &dev).unwrap();
            let got = batch.narrow(0, row, 1).unwrap();
            let a: Vec<f32> = got.flatten_all().unwrap().to_vec1().unwrap();
            let b: Vec<f32> = alone.flatten_all().unwrap().to_vec1().unwrap();
            assert_eq!(a, b, "image {i}");
        }
    }
}
